"""Where on the PE a removed channel saves energy: PE energy against SOPs when channels go, without retraining.

    python benchmarks/channel_energy_share.py runs/cifar10/vgg16_relu.pt --plans "0.25x4,0" "0.25x4,0.4" "0.4"

Each plan removes, per conv layer in order, that fraction of its output channels (smallest mean
magnitude first, by ``spikec.compress.prune_`` with a ``layer_density`` plan; weights, conv bias and
the batch norm after it set to zero, so the channel is silent and leaves the chip). ``0.25x4,0.4`` means 0.25 for the first four convolutions, then 0.4 for every
later one. The network is not retrained, so its accuracy is not the point: the rows show what share
of the PE's energy per inference and of the SNN's synaptic operations (SOPs) each plan removes, on
the network's own chip and on the dense network's tile count (``tile_budget``: spare tiles hold
conv copies, :mod:`spikec.hardware.copies`). Issue 15 asks for the energy to fall by at least the
SOPs' share.

``--compressed PATH`` applies the plans to a compressed checkpoint of the same network instead (its
zeros stay) and still measures against the dense ``ann``; ``--pack-rows`` maps with ``row_packing``:

    python benchmarks/channel_energy_share.py runs/cifar10/vgg16_relu.pt \
        --compressed runs/cifar10/vgg16_relu_compressed_0020e19221.pt --pack-rows --plans 0 "0.25x2,0" "0.5x2,0"
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import torch
from torch import nn

from spikec.checkpoint import load_model
from spikec.compress import PruneConfig, prune_
from spikec.compress.layers import synaptic_layers
from spikec.compress.masks import remove_mask_
from spikec.compress.metrics import activity
from spikec.conversion.ttfs import convert_ttfs
from spikec.errors import UsageError
from spikec.hardware.config import preset
from spikec.hardware.evaluate import PEModel
from spikec.hardware.timing import RunOptions

from cifar_draws import draws


def parse_plan(text: str) -> list[float]:
    out = []
    for part in text.split(","):
        value, _, count = part.partition("x")
        out += [float(value)] * (int(count) if count else 1)
    return out


def remove_channels_(ann: nn.Module, plan: list[float]) -> None:
    """Remove the planned fraction of each conv's output channels: ``spikec.compress.prune_`` with a
    per-layer density plan at channel granularity (smallest mean magnitude first; the conv bias and
    the batch norm after it held at zero, so the channel is silent). The masks are dropped after, the
    zeros stay."""
    layers = synaptic_layers(ann)
    convs = [n for n, m in layers.items() if isinstance(m, nn.Conv2d)]
    density = {n: 1.0 - (plan[i] if i < len(plan) else plan[-1]) for i, n in enumerate(convs)}
    prune_(ann, PruneConfig(density=1.0, granularity="channel", layer_density=density))
    for m in layers.values():
        remove_mask_(m)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("ann", help="dense ANN checkpoint (batch norm after every conv)")
    p.add_argument("--plans", nargs="+", default=["0.25x4,0", "0.25x4,0.4", "0.4"])
    p.add_argument("--dataset", default="../shared/data/cifar10")
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--max-row-copies", type=int, default=32)
    p.add_argument("--compressed", default=None, help="apply the plans to this compressed checkpoint of the same network")
    p.add_argument("--pack-rows", action="store_true", help="map with row_packing (spikec energy --pack-rows)")
    p.add_argument("--chips", default="own,1",
                   help="chips each plan is mapped on: own (the tiles it needs) or a fraction of the dense network's "
                        "tiles (its spare tiles hold conv copies); 0.5 is a chip with half the tiles freed")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    x, y, xc = draws(args.dataset, args.samples)
    hw = dataclasses.replace(preset("twin-column"), max_row_copies=args.max_row_copies, row_packing=args.pack_rows)

    def measure(plan: list[float], budget: int | None, path: str | None = None) -> dict:
        ann = load_model(path or args.ann)[0].eval()
        remove_channels_(ann, plan)
        snn = convert_ttfs(ann, xc, time_bits=6).eval()
        a = activity(snn, (x, y), batch_size=100, seed=0)
        cfg = dataclasses.replace(hw, tile_budget=budget)
        pe = PEModel.from_snn(snn, cfg)
        r = pe.evaluate(pe.nominal(), x, y, RunOptions.from_config(cfg))
        return {"tiles": sum(xb.tiling.tiles for xb in pe.crossbars), "sops": a.sops_per_inference, "snn_accuracy": a.accuracy,
                "energy_nj": 1e9 * float(r.energy["total"]), "latency_us": 1e6 * r.latency_s,
                "components_nj": {k: 1e9 * float(r.energy[k]) for k in ("crossbar", "driver", "neuron", "buffer", "static")}}

    t0 = time.perf_counter()
    dense = measure([0.0], None)
    rows = [{"plan": "dense", "chip": "own", **dense}]
    # the energy no synapse-level pruning can remove: neurons, buffer and static power of the network measured
    print("| channels removed per conv | chip | tiles used | SNN (no retraining) | SOPs share removed | energy share removed "
          "| at most, were every synapse gone | latency (us) |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| none{' (dense)' if args.compressed else ''} | own | {dense['tiles']} | {dense['snn_accuracy']:.1%} | - | - | - "
          f"| {dense['latency_us']:.0f} |")
    chips = [None if c == "own" else float(c) for c in args.chips.split(",")]
    for text in args.plans:
        for budget in (None if c is None else int(c * dense["tiles"]) for c in chips):
            try:
                m = measure(parse_plan(text), budget, args.compressed)
            except UsageError as e:  # the plan needs more tiles than this chip has
                print(f"| {text} | {budget} tiles | does not fit: {e} | | | | | |", flush=True)
                continue
            row = {"plan": text, "chip": "own" if budget is None else f"{budget} tiles", **m,
                   "sops_removed": 1 - m["sops"] / dense["sops"], "energy_removed": 1 - m["energy_nj"] / dense["energy_nj"]}
            floor = sum(m["components_nj"][k] for k in ("neuron", "buffer", "static"))
            row["removable_at_most"] = 1 - floor / dense["energy_nj"]
            rows.append(row)
            print(f"| {text} | {row['chip']} | {m['tiles']} | {m['snn_accuracy']:.1%} | {row['sops_removed']:.1%} "
                  f"| {row['energy_removed']:.1%} | {row['removable_at_most']:.1%} | {m['latency_us']:.0f} |", flush=True)
    print(f"({time.perf_counter() - t0:.0f} s)")
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"command": "python benchmarks/channel_energy_share.py " + " ".join(sys.argv[1:]), "compressed": args.compressed,
                       "samples": args.samples, "rows": rows}, f, indent=1)
        os.replace(tmp, args.json)


if __name__ == "__main__":
    main()
