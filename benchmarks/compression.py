"""Attention-guided DNR against plain magnitude pruning on a VGG-style SNN for digits (rate and TTFS).

For each coding: train a small VGG ANN on the embedded digits data, convert it (rate: IF
neurons, T steps, direct input; TTFS: one spike per neuron, 2**time_bits steps per window), then
compress copies of the SNN at densities 0.3 / 0.1 / 0.05 with 4-bit weights:

- ``dnr+at``: gradual pruning with dynamic network rewiring and attention transfer (beta);
- ``dnr``: the same without attention transfer;
- ``magnitude``: gradual magnitude pruning, no rewiring, no attention (the baseline);
- ``dnr+at/row`` and ``dnr+at/kernel``: as ``dnr+at`` but pruning whole 1x3 kernel rows or 3x3
  kernels (indices 3 or 9 times cheaper), at 0.1 only;
- ``ann-side`` (rate only): compress the ANN with DNR and attention, re-convert, then 2 epochs of
  quantization-aware fine-tuning of the SNN.

Every run gets the same fine-tuning budget (pruning phase plus quantization-aware phase). Each
row reports test accuracy, non-zero density, compression ratio (dense 32-bit weights and biases
over compressed bits including index overhead), spikes and synaptic operations per inference
and the 45 nm compute-energy estimate. Results go to JSON per coding; ``--render`` writes
``benchmarks/results/compression.md`` from whatever JSON exists.

    python benchmarks/compression.py --coding rate
    python benchmarks/compression.py --coding ttfs
    python benchmarks/compression.py --render
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import sys
import time

import torch

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
ARCH = {"layers": [32, "M", 64, "M", 128, "M"], "hidden": []}
DENSITIES = (0.3, 0.1, 0.05)


def train_ann(seed: int, epochs: int):
    from spikec.data import load_dataset
    from spikec.models import build_model
    from spikec.training import evaluate, train

    train_data, test_data, info = load_dataset("digits")
    torch.manual_seed(seed)
    ann = build_model("vgg", info.input_shape, info.num_classes, **ARCH)
    train(ann, train_data, epochs=epochs, lr=3e-3, seed=seed, progress=False)
    return ann, train_data, test_data, evaluate(ann, test_data)


def convert(ann, coding: str, train_data, timesteps: int, time_bits: int):
    x = train_data.tensors[0]
    if coding == "rate":
        from spikec.conversion.rate import convert_rate

        return convert_rate(ann, x, timesteps=timesteps)
    from spikec.conversion.ttfs import convert_ttfs

    return convert_ttfs(ann, x, time_bits=time_bits)


def configs(args):
    from spikec.compress import AttentionConfig, CompressConfig, FinetuneConfig, PruneConfig, QuantConfig

    ft = FinetuneConfig(epochs=args.epochs, quant_epochs=args.quant_epochs, lr=args.lr, seed=args.seed)
    att = AttentionConfig(beta=args.beta)
    quant = QuantConfig(bits=4)
    runs = []
    for d in DENSITIES:
        runs.append(("dnr+at", d, CompressConfig(prune=PruneConfig(density=d), quant=quant, attention=att, finetune=ft)))
        runs.append(("dnr", d, CompressConfig(prune=PruneConfig(density=d), quant=quant, attention=None, finetune=ft)))
        runs.append(("magnitude", d, CompressConfig(prune=PruneConfig(density=d, method="magnitude"), quant=quant,
                                                    attention=None, finetune=ft)))
    for gran in ("row", "kernel"):
        runs.append((f"dnr+at/{gran}", 0.1, CompressConfig(prune=PruneConfig(density=0.1, granularity=gran),
                                                           quant=quant, attention=att, finetune=ft)))
    return runs


def measure(model, test_data, seed):
    from spikec.compress.metrics import activity
    from spikec.compress.size import model_size

    a = activity(model, test_data, seed=seed)
    s = model_size(model)
    return {"accuracy": a.accuracy, "density": s.density, "compression_ratio": s.ratio,
            "compressed_bits": s.compressed_bits, "dense_bits": s.dense_bits,
            "spikes": a.spikes_per_inference, "sops": a.sops_per_inference, "snn_macs": a.snn_macs_per_inference,
            "energy_pj": a.snn_energy_pj, "ann_energy_pj": a.ann_energy_pj,
            "layer_density": {n: l.nonzero / l.weights for n, l in s.layers.items()},
            "encodings": {n: l.encoding for n, l in s.layers.items()}}


def run_coding(args) -> dict:
    from spikec.compress import FinetuneConfig, compress_, compress_via_ann

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    ann, train_data, test_data, ann_acc = train_ann(args.seed, args.ann_epochs)
    snn = convert(ann, args.coding, train_data, args.timesteps, args.time_bits)
    base = measure(snn, test_data, args.seed)
    print(f"[{args.coding}] ANN {ann_acc:.4f}, SNN {base['accuracy']:.4f}, {base['spikes']:.0f} spikes", flush=True)
    rows = []
    only = set(args.only.split(",")) if args.only else None
    wanted = {float(d) for d in args.densities.split(",")} if args.densities else None
    for method, density, cfg in configs(args):
        if (only and method not in only) or (wanted and density not in wanted):
            continue
        model = copy.deepcopy(snn)
        start = time.perf_counter()
        report = compress_(model, cfg, train_data)
        row = {"method": method, "target_density": density, "mask_density": report.mask_density,
               "seconds": time.perf_counter() - start, **measure(model, test_data, args.seed)}
        rows.append(row)
        print(f"[{args.coding}] {method:14s} d={density:<5} acc {row['accuracy']:.4f} density {row['density']:.4f} "
              f"ratio {row['compression_ratio']:.1f}x spikes {row['spikes']:.0f} SOPs {row['sops']:.0f} "
              f"({row['seconds']:.0f}s)", flush=True)
    if args.coding == "rate" and (not only or "ann-side" in only) and (not wanted or 0.1 in wanted):
        from spikec.compress import AttentionConfig, CompressConfig, FinetuneConfig, PruneConfig, QuantConfig

        cfg = CompressConfig(prune=PruneConfig(density=0.1), quant=QuantConfig(bits=4),
                             attention=AttentionConfig(beta=args.beta),
                             finetune=FinetuneConfig(epochs=args.epochs, quant_epochs=args.quant_epochs, lr=args.lr,
                                                     seed=args.seed))
        start = time.perf_counter()
        ann_c = copy.deepcopy(ann)
        snn_c, report = compress_via_ann(ann_c, cfg, train_data,
                                         lambda a: convert(a, "rate", train_data, args.timesteps, args.time_bits),
                                         snn_quant_epochs=2)
        row = {"method": "ann-side", "target_density": 0.1, "mask_density": report.mask_density,
               "seconds": time.perf_counter() - start, **measure(snn_c, test_data, args.seed)}
        rows.append(row)
        print(f"[rate] ann-side       d=0.1   acc {row['accuracy']:.4f} ratio {row['compression_ratio']:.1f}x", flush=True)
    return {
        "coding": args.coding, "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                   f"torch {torch.__version__}, {args.threads} thread(s)",
        "settings": {"arch": ARCH, "timesteps": args.timesteps, "time_bits": args.time_bits, "epochs": args.epochs,
                     "quant_epochs": args.quant_epochs, "lr": args.lr, "beta": args.beta, "seed": args.seed,
                     "ann_epochs": args.ann_epochs, "batch_size": FinetuneConfig().batch_size},
        "ann_accuracy": ann_acc, "uncompressed": base, "runs": rows, "seconds": time.perf_counter() - t0,
    }


def render() -> str:
    lines = ["# Compression (spikec.compress): attention-guided DNR vs magnitude pruning", ""]
    for coding in ("rate", "ttfs"):
        path = os.path.join(RESULTS, f"compression_{coding}.json")
        if not os.path.exists(path):
            continue
        with open(path) as f:
            r = json.load(f)
        s, base = r["settings"], r["uncompressed"]
        unit = f"T = {s['timesteps']}" if coding == "rate" else f"time_bits = {s['time_bits']}"
        lines += [f"## {coding.upper()} SNN ({unit})", "",
                  f"- Command: `{r['command']}`", f"- Date: {r['date']}", f"- Machine: {r['machine']}",
                  f"- Network: VGG {s['arch']['layers']} (batch norm folded) on digits; ANN test accuracy "
                  f"{r['ann_accuracy']:.2%}; fine-tuning {s['epochs']} pruning + {s['quant_epochs']} quantization-aware "
                  f"epochs, batch {s.get('batch_size', 64)}, relative lr {s['lr']}, attention beta {s['beta']}, seed {s['seed']}; total {r['seconds'] / 60:.0f} min.",
                  "",
                  "| method | target density | accuracy | Δ vs SNN (points) | non-zero density | compression | spikes / inf. "
                  "| SOPs / inf. | compute energy (nJ) | vs dense ANN |",
                  "|---|---|---|---|---|---|---|---|---|---|",
                  f"| uncompressed | 1.0 | {base['accuracy']:.2%} | 0.0 | {base['density']:.3f} | 1.0x | {base['spikes']:.0f} "
                  f"| {base['sops']:.0f} | {base['energy_pj'] / 1e3:.1f} | {base['ann_energy_pj'] / base['energy_pj']:.1f}x |"]
        for row in r["runs"]:
            delta = 100 * (row["accuracy"] - base["accuracy"])
            lines.append(
                f"| {row['method']} | {row['target_density']} | {row['accuracy']:.2%} | {delta:+.1f} | {row['density']:.3f} "
                f"| {row['compression_ratio']:.1f}x | {row['spikes']:.0f} | {row['sops']:.0f} | {row['energy_pj'] / 1e3:.1f} "
                f"| {row['ann_energy_pj'] / row['energy_pj']:.1f}x |")
        lines.append("")
        for d in DENSITIES:
            rows = [row for row in r["runs"] if row["target_density"] == d and "/" not in row["method"]]
            if rows:
                best = max(rows, key=lambda row: row["accuracy"])
                lines.append(f"- Density {d}: best accuracy {best['accuracy']:.2%} by {best['method']}; "
                             f"spikes per inference {best['spikes']:.0f} vs {base['spikes']:.0f} uncompressed.")
        target = [row for row in r["runs"] if row["target_density"] == 0.1]
        ok = [row["method"] for row in target
              if row["accuracy"] >= base["accuracy"] - 0.02 and row["compression_ratio"] >= 50]
        close = [f"{row['method']} ({row['accuracy']:.2%}, {row['compression_ratio']:.1f}x)" for row in target
                 if row["accuracy"] >= base["accuracy"] - 0.02]
        lines.append(f"- Target (density 0.1, 4 bits, within 2.0 points, >= 50x): met by {', '.join(ok) or 'none'}; "
                     f"within 2.0 points at density 0.1: {', '.join(close) or 'none'}.")
        lines.append("")
    lines += [
        "Notes: density is the non-zero fraction of all Conv/Linear weights in the saved network; the masks hold "
        "exactly the target, but kept weights smaller than half a 4-bit step round to zero (with DNR many are "
        "connections regrown late, which start from zero), so it falls below the target. Compression counts every layer in its cheapest "
        "decodable format (dense, bitmap, relative index with filler entries, or the same over kernel rows, kernels or "
        "channels), scales and "
        "biases at 32 bits. SOPs are input events times non-zero fan-out at every synaptic layer; the first layer of "
        "the rate network sees analog input and its multiply-accumulates are charged at E_MAC. Energy: E_AC 0.9 pJ, "
        "E_MAC 4.6 pJ (45 nm); the ANN reference does every dense MAC once. With honest index costs, unstructured "
        "10% density with 4-bit values cannot reach 50x: even the entropy bound of the positions (H(0.1) = 0.47 bit "
        "per weight) plus 0.4 bit of values is 0.87 bit per weight, 37x; 50x needs structured sparsity or a lower "
        "density. Pruning whole 1x3 kernel rows (`dnr+at/row`) cuts the index cost threefold and passes 50x with a "
        "small accuracy cost; whole 3x3 kernels cost too much accuracy. The rate and TTFS runs shared the 2-core machine, one thread "
        "each.", ""]
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--coding", choices=("rate", "ttfs"))
    p.add_argument("--render", action="store_true", help="write compression.md from the JSON results")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--quant-epochs", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--beta", type=float, default=1.0)
    p.add_argument("--timesteps", type=int, default=16)
    p.add_argument("--time-bits", type=int, default=4)
    p.add_argument("--ann-epochs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--only", default=None, help="comma-separated methods to run (default all)")
    p.add_argument("--densities", default=None, help="comma-separated target densities (default 0.3,0.1,0.05)")
    p.add_argument("--json-out", default=None, help="where to write the JSON (default results/compression_<coding>.json)")
    args = p.parse_args(argv)
    os.makedirs(RESULTS, exist_ok=True)
    if args.coding:
        result = run_coding(args)
        path = args.json_out or os.path.join(RESULTS, f"compression_{args.coding}.json")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(result, f, indent=1)
        os.replace(tmp, path)
        print(f"wrote {path}")
    if args.render or not args.coding:
        text = render()
        path = os.path.join(RESULTS, "compression.md")
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.replace(path + ".tmp", path)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
