"""How many conductance levels a weight needs: nominal-chip accuracy and tiles per cell configuration.

    python benchmarks/pe_cell_precision.py runs/cifar10/resnet20_ttfs.h5 [--samples 1000] [--json out.json]

For each (levels per cell, cells per weight and sign) the twin-column preset's nominal chip (no
variation; TTA off and at the preset's fraction) is scored on a seeded stratified draw of
*training* images, where a default may be chosen, and on the study's draw of test images (the
``spikec energy --samples 1000`` draw), where it is only reported. The SNN itself is scored on both
at the same window bits. Results in BENCHMARKS.md (twin-column PE at CIFAR scale).
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from spikec.checkpoint import load_model  # noqa: E402
from spikec.data import load_dataset  # noqa: E402
from spikec.data.sample import stratified_tensors  # noqa: E402
from spikec.hardware.config import preset  # noqa: E402
from spikec.hardware.evaluate import PEModel  # noqa: E402
from spikec.hardware.study import software_reference  # noqa: E402
from spikec.hardware.timing import RunOptions  # noqa: E402
from spikec.io.atomic import atomic_path  # noqa: E402

SETTINGS = ((16, 2), (16, 3), (16, 4), (32, 2), (64, 2), (256, 2))  # (cell_levels, cells_per_weight); (16, 2) = preset


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("snn")
    p.add_argument("--dataset", default="../shared/data/cifar10")
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    snn, _ = load_model(args.snn)
    train, test, _ = load_dataset(args.dataset)
    base = preset("twin-column")
    draws = {"train": stratified_tensors(train.tensors, args.samples, 7),
             "test": stratified_tensors(test.tensors, args.samples, base.seed)}
    out = {"snn": args.snn, "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv), "samples": args.samples,
           "snn_accuracy": {k: software_reference(snn, x, y, base.window_bits)["accuracy"] for k, (x, y) in draws.items()},
           "settings": []}
    print("SNN", out["snn_accuracy"], flush=True)
    for levels, cells in SETTINGS:
        cfg = base.replace(cell_levels=levels, cells_per_weight=cells)
        t = time.perf_counter()
        model = PEModel.from_snn(snn, cfg)
        chips = model.nominal()
        opts = RunOptions.from_config(cfg).replace(charge_dtype=torch.float32)
        row = {"cell_levels": levels, "cells_per_weight": cells, "levels_a_side": cells * (levels - 1),
               "tiles": sum(xb.tiling.tiles for xb in model.crossbars)}
        for name, (x, y) in draws.items():
            row[f"{name}_no_tta"] = float((model.predict(chips, x, opts.replace(tta=False))[0] == y).double().mean())
            row[f"{name}_tta"] = float((model.predict(chips, x, opts)[0] == y).double().mean())
        row["seconds"] = time.perf_counter() - t
        out["settings"].append(row)
        print(row, flush=True)
    if args.json:
        with atomic_path(args.json) as tmp, open(tmp, "w") as f:
            json.dump(out, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
