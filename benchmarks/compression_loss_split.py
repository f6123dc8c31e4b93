"""Where a compressed ANN's accuracy goes on its way to a 4-bit TTFS SNN (the ANN-side route).

    python benchmarks/compression_loss_split.py runs/cifar10/vgg16_relu_compressed_fdf864c9cc.pt

On a stratified test draw: the compressed ANN, its float TTFS conversion, the conversion quantized
again on the SNN's own per-channel scales (as ``compress_converted_`` does), the same with the
threshold grid off, with biases on the 4-bit weight step, and with float biases. Batch-norm folding
leaves the ANN's per-channel weight grid intact but makes the biases float; the SNN rounds them to the
step the PE's cells give each column (``WeightQuantizer.bias_step``), or without a cell grid to the weight step.
"""
from __future__ import annotations

import argparse
import copy

import torch

from spikec.checkpoint import load_model
from spikec.compress import CompressConfig, PruneConfig, QuantConfig
from spikec.compress.api import compress_converted_
from spikec.conversion.ttfs import convert_ttfs
from spikec.hardware.config import preset

from cifar_draws import accuracy as score, draws


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("ann", help="a compressed ANN checkpoint (benchmarks/compression_cifar.py caches them)")
    p.add_argument("--dataset", default="../shared/data/cifar10")
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--bits", type=int, default=4)
    p.add_argument("--time-bits", type=int, default=6)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    hw = preset("twin-column")
    x, y, xc = draws(args.dataset, args.samples)
    accuracy = lambda m: score(m, x, y)  # noqa: E731

    def requantized(ann, **quant):
        snn = convert_ttfs(copy.deepcopy(ann), xc, time_bits=args.time_bits)
        settings = {"cell_levels": hw.cell_levels, "cells_per_weight": hw.cells_per_weight, **quant}
        cfg = CompressConfig(prune=PruneConfig(density=0.1), attention=None,
                             quant=QuantConfig(bits=args.bits, group="channel", **settings))
        compress_converted_(snn, cfg)
        return accuracy(snn)

    ann, _ = load_model(args.ann)
    print(f"compressed ANN                        {accuracy(ann):.2%}", flush=True)
    print(f"TTFS, float                           {accuracy(convert_ttfs(copy.deepcopy(ann), xc, time_bits=args.time_bits)):.2%}", flush=True)
    print(f"TTFS, re-quantized                    {requantized(ann):.2%}", flush=True)
    # without a cell grid the biases round to the weight step (as before 2026-12-03, 7th session)
    print(f"TTFS, re-quantized, biases on the weight step {requantized(ann, cell_levels=0, cells_per_weight=1):.2%}",
          flush=True)
    print(f"TTFS, re-quantized, no threshold grid {requantized(ann, grid_thresholds=False):.2%}", flush=True)
    print(f"TTFS, re-quantized, float biases      {requantized(ann, quantize_bias=False):.2%}", flush=True)


if __name__ == "__main__":
    main()
