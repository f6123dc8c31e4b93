"""Synaptic operations of the same SNN runs counted three ways: spikec, neurobench 2.3, spikingjelly 2.0.

spikec: :func:`spikec.compress.metrics.activity` (AC + MAC); neurobench: ``SynapticOperations``
(effective ACs + MACs) through :mod:`spikec.neurobench_bridge`; spikingjelly:
``op_counter.SynOpCounter`` under ``DispatchCounterMode`` (it counts spike-driven mm/conv at the
ATen level). Every counter sees the same inputs (same seed). Networks: converted MLP, converted
LeNet with max pooling, converted LeNet with average pooling (where AC/MAC splits differ,
docs/metrics.md), untrained weights converted on digits.

    python benchmarks/sop_agreement.py --samples 64 --timesteps 8
"""
from __future__ import annotations

import argparse
import json

import torch


def spikingjelly_synops(model, data, batch_size, seed) -> float | None:
    try:
        from spikingjelly.activation_based.op_counter import DispatchCounterMode, SynOpCounter
    except ImportError:
        return None
    from spikec.training import batches

    counter = SynOpCounter()
    seen = 0
    with torch.random.fork_rng(devices=[]), torch.no_grad(), DispatchCounterMode([counter]):
        torch.manual_seed(seed)
        for x, _ in batches(data, batch_size):
            model(x)
            seen += len(x)
    return counter.get_total() / seen


def main(argv=None):
    from spikec.conversion.rate import convert_rate
    from spikec.data import load_dataset
    from spikec.data.sample import stratified_subset, stratified_tensors
    from spikec.models import build_model
    from spikec.neurobench_bridge import neurobench_report

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--timesteps", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    train, test, _ = load_dataset("digits")
    calib, _ = stratified_tensors(train, 256, seed=args.seed)
    data = stratified_subset(test, args.samples, seed=args.seed)
    nets = {"mlp": ("mlp", {"hidden": (48, 24)}), "lenet_max": ("lenet", {"pool": "max"}),
            "lenet_avg": ("lenet", {"pool": "avg"})}
    rows = []
    print(f"{'network':<11}{'spikec AC':>12}{'spikec MAC':>12}{'nb ACs':>12}{'nb MACs':>12}{'sj SynOps':>12}"
          f"{'nb/spikec':>11}")
    for name, (arch, cfg) in nets.items():
        torch.manual_seed(args.seed)
        ann = build_model(arch, (1, 8, 8), 10, **cfg).eval()
        snn = convert_rate(ann, calib, timesteps=args.timesteps).eval()
        report = neurobench_report(snn, data, batch_size=args.batch_size, seed=args.seed)
        ours, ops = report["spikec"], report["neurobench"]["SynapticOperations"]
        sj = spikingjelly_synops(snn, data, args.batch_size, args.seed)
        row = {"network": name, "spikec_ac": ours["sops_per_inference"], "spikec_mac": ours["macs_per_inference"],
               "neurobench_ac": ops["Effective_ACs"], "neurobench_mac": ops["Effective_MACs"],
               "spikingjelly_synops": sj, "total_ratio": report["agreement"]["synaptic_ops_ratio"]}
        rows.append(row)
        print(f"{name:<11}{row['spikec_ac']:>12.1f}{row['spikec_mac']:>12.1f}{row['neurobench_ac']:>12.1f}"
              f"{row['neurobench_mac']:>12.1f}{'-' if sj is None else f'{sj:.1f}':>12}{row['total_ratio']:>11.6f}")
    print(json.dumps(rows))
    return rows


if __name__ == "__main__":
    main()
