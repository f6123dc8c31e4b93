"""Tiles and nominal-chip accuracy of a dense and a compressed ANN, both converted to TTFS, on the twin-column PE.

    python benchmarks/tiles_on_pe.py runs/cifar10/vgg16_relu.pt runs/cifar10/vgg16_relu_compressed_b04ec44ab2.pt --caps none,32

For each ``max_row_copies`` cap: crossbar tiles the PE's own mapping occupies (and the layer that
holds most of them), the SNN's accuracy and synaptic operations, and the nominal chip's accuracy,
energy and latency per inference on a stratified test draw. A pruned
layer whose surviving columns have small weights against the threshold gets fine per-column steps and
many ramp rows; the cap coarsens those steps (``docs/hardware-model.md``).
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from spikec.checkpoint import load_model
from spikec.compress.tiles import tile_count
from spikec.conversion.ttfs import convert_ttfs
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
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    hw = preset("twin-column")
    x, y, xc = draws(args.dataset, args.samples)
    caps = [None if c == "none" else int(c) for c in args.caps.split(",")]
    from spikec.compress.metrics import activity

    print("| network | max_row_copies | tiles | largest layer (tiles) | SNN | SOPs per inference | nominal chip "
          "| energy per inference (nJ) | latency (us) | seconds |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for path in args.anns:
        snn = convert_ttfs(load_model(path)[0], xc, time_bits=args.time_bits).eval()
        act = activity(snn, (x, y), batch_size=100, seed=0)
        snn_acc, sops = act.accuracy, act.sops_per_inference
        for cap in caps:
            cfg = dataclasses.replace(hw, max_row_copies=cap)
            t0 = time.perf_counter()
            tiles = tile_count(snn, cfg)
            big = max(tiles.layers.items(), key=lambda kv: kv[1][1])
            pe = PEModel.from_snn(snn, cfg)
            r = pe.evaluate(pe.nominal(), x, y, RunOptions.from_config(cfg))
            print(f"| {path} | {cap or 'none'} | {tiles.occupied} | {big[0]} ({big[1][1]}) | {snn_acc:.1%} | {sops / 1e6:.2f} M "
                  f"| {r.accuracy:.1%} | {1e9 * r.energy['total']:.1f} | {1e6 * r.latency_s:.1f} "
                  f"| {time.perf_counter() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    main()
