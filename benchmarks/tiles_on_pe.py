"""Tiles and nominal-chip accuracy of a dense and a compressed ANN, both converted to TTFS, on the twin-column PE.

    python benchmarks/tiles_on_pe.py runs/cifar10/vgg16_relu.pt runs/cifar10/vgg16_relu_compressed_b04ec44ab2.pt --caps none,32

Silent neurons (channels pruned with their bias and batch norm: no weights, no positive bias) are
left off the chip with the rows that read them; ``--keep-silent`` adds a row per network with them
kept on, so the saving is measured on the same spike times. ``--same-chip`` adds a row per later
network mapped on a chip of the first (dense) network's tiles, its spare tiles holding copies of its
conv layers (``tile_budget``, :mod:`spikec.hardware.copies`): the latency and static energy a
compression buys at the same area; ``--chips 0.5`` does the same on a chip of half those tiles.
``--pack-rows`` adds a row per network with ``row_packing`` (each column tile keeps only its rows with
a nonzero weight there). ``--json`` writes every row with its energy per component.

For each ``max_row_copies`` cap: crossbar tiles the PE's own mapping occupies (and the layer that
holds most of them), the SNN's accuracy and synaptic operations, and the nominal chip's accuracy,
energy and latency per inference on a stratified test draw. A pruned
layer whose surviving columns have small weights against the threshold gets fine per-column steps and
many ramp rows; the cap coarsens those steps (``docs/hardware-model.md``).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import torch

from spikec.checkpoint import load_model
from spikec.conversion.ttfs import convert_ttfs
from spikec.errors import UsageError
from spikec.hardware.config import preset
from spikec.hardware.evaluate import PEModel
from spikec.hardware.timing import RunOptions

from cifar_draws import draws


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("anns", nargs="+", help="ANN checkpoints (dense, compressed, ...)")
    p.add_argument("--dataset", default="../shared/data/cifar10")
    p.add_argument("--caps", default="none,32", help="max_row_copies values (none: no cap)")
    p.add_argument("--samples", type=int, default=500)
    p.add_argument("--time-bits", type=int, default=6)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--keep-silent", action="store_true", help="also map each network with its silent neurons on the chip")
    p.add_argument("--same-chip", action="store_true",
                   help="also map each later network on a chip of the first network's tiles (spare tiles as conv copies)")
    p.add_argument("--chips", default="",
                   help="also map each later network on chips of these fractions of the first network's tiles, e.g. "
                        "0.5 (half the tiles freed, the spare ones of the later network holding conv copies); "
                        "--same-chip is 1")
    p.add_argument("--pack-rows", action="store_true",
                   help="add a row per network mapped with row_packing (each column tile keeps only its rows with a "
                        "nonzero weight there, packed)")
    p.add_argument("--json", default=None, help="write the rows (with energy per component) here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    hw = preset("twin-column")
    x, y, xc = draws(args.dataset, args.samples)
    caps = [None if c == "none" else int(c) for c in args.caps.split(",")]
    fractions = sorted({float(f) for f in args.chips.split(",") if f} | ({1.0} if args.same_chip else set()))
    from spikec.compress.metrics import activity

    print("| network | max_row_copies | silent neurons | chip (tiles) | neurons on chip | tiles | largest layer (tiles) | SNN "
          "| SOPs per inference | nominal chip | energy per inference (nJ) | crossbar / neurons / buffer / static (nJ) "
          "| latency (us) | seconds |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    first_tiles = {}  # cap -> tiles of the first network (its own chip)
    for path in args.anns:
        snn = convert_ttfs(load_model(path)[0], xc, time_bits=args.time_bits).eval()
        act = activity(snn, (x, y), batch_size=100, seed=0)
        snn_acc, sops = act.accuracy, act.sops_per_inference
        for cap in caps:
            cfg = dataclasses.replace(hw, max_row_copies=cap)
            variants = [(False, None, False)] + ([(True, None, False)] if args.keep_silent else [])
            budgets = [int(f * first_tiles[cap]) for f in fractions] if cap in first_tiles else []
            variants += [(False, b, False) for b in budgets]
            if args.pack_rows:
                variants += [(False, None, True)] + [(False, b, True) for b in budgets]
            for keep, budget, packed in variants:
                t0 = time.perf_counter()
                try:
                    pe = PEModel.from_snn(snn, dataclasses.replace(cfg, tile_budget=budget, row_packing=packed), keep_silent=keep)
                except UsageError as e:  # more tiles than this chip has
                    print(f"| {path} | {cap or 'none'} | | {budget} | does not fit: {e} |", flush=True)
                    continue
                layers = {xb.layer.name: xb.tiling.tiles for xb in pe.crossbars}  # tile_count's own PE count
                tiles = sum(layers.values())
                big = max(layers.items(), key=lambda kv: kv[1])
                r = pe.evaluate(pe.nominal(), x, y, RunOptions.from_config(cfg))
                neurons = sum(xb.layer.neurons * xb.layer.positions for xb in pe.crossbars)
                e = {k: 1e9 * float(v) for k, v in r.energy.items()}
                first_tiles.setdefault(cap, tiles)
                row = {"network": path, "max_row_copies": cap, "silent": "kept on" if keep else "off chip",
                       "tile_budget": budget, "row_packing": packed, "copies": {xb.layer.name: xb.tiling.copies for xb in pe.crossbars},
                       "neurons_on_chip": neurons, "tiles": tiles, "largest_layer": big, "snn_accuracy": snn_acc,
                       "sops": sops, "chip_accuracy": r.accuracy, "energy_nj": e, "latency_us": 1e6 * r.latency_s,
                       "samples": len(y), "seconds": time.perf_counter() - t0}
                rows.append(row)
                print(f"| {path} | {cap or 'none'} | {row['silent']} | {budget or 'own'}{' (rows packed)' if packed else ''} | {neurons} | {tiles} | {big[0]} ({big[1]}) "
                      f"| {snn_acc:.1%} | {sops / 1e6:.2f} M | {r.accuracy:.1%} | {e['total']:.1f} "
                      f"| {e['crossbar']:.1f} / {e['neuron']:.1f} / {e['buffer']:.1f} / {e['static']:.1f} "
                      f"| {row['latency_us']:.1f} | {row['seconds']:.0f} |", flush=True)
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"command": "python benchmarks/tiles_on_pe.py " + " ".join(sys.argv[1:]), "rows": rows}, f, indent=1)
        os.replace(tmp, args.json)


if __name__ == "__main__":
    main()
