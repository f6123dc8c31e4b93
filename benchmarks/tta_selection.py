"""TTA stop fraction: the preset's 0.7 against the fraction ``--tta-fraction auto`` picks on training data.

    python benchmarks/tta_selection.py runs/cifar10/resnet20_ttfs.h5 [--samples 1000] [--json OUT]

Runs :func:`spikec.hardware.tta_select.select_tta_fraction` on the study's calibration draw (512
stratified training images, the preset's seed), then scores the nominal chip on the study's test
draw (1,000 stratified test images, same seed) without TTA, at 0.7 and at the chosen fraction, beside
the TTFS SNN. It is why the CLI keeps the preset's fraction as its default (BENCHMARKS.md); the test
images play no part in the choice.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from spikec.checkpoint import load_model
from spikec.data import load_dataset
from spikec.data.sample import stratified_tensors
from spikec.hardware.config import preset
from spikec.hardware.evaluate import PEModel
from spikec.hardware.study import software_reference
from spikec.hardware.timing import RunOptions
from spikec.hardware.tta_select import chip_accuracy, select_tta_fraction


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("snn", help="TTFS checkpoint written by spikec convert --coding ttfs")
    p.add_argument("--dataset", default="../shared/data/cifar10")
    p.add_argument("--samples", type=int, default=1000, help="stratified test draw")
    p.add_argument("--calib", type=int, default=512, help="stratified training draw the fraction is chosen on")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    snn, _ = load_model(args.snn)
    train, test, _ = load_dataset(args.dataset)
    cfg = preset("twin-column")
    x, y = stratified_tensors(test.tensors, args.samples, cfg.seed)
    cx, cy = stratified_tensors(train.tensors, args.calib, cfg.seed)
    model = PEModel.from_snn(snn, cfg)
    options = RunOptions.from_config(cfg).replace(charge_dtype=torch.float32)
    t = time.perf_counter()
    selection = select_tta_fraction(model, cx, cy, options)
    select_seconds = time.perf_counter() - t
    chips = model.nominal()

    def accuracy(opts: RunOptions) -> float:
        return chip_accuracy(model, chips, x, y, opts)

    snn_acc = software_reference(snn, x, y, cfg.window_bits)["accuracy"]
    test_acc = {"without_tta": accuracy(options.replace(tta=False))}
    for f in sorted({cfg.tta_fraction, selection["fraction"]}):
        test_acc[f"tta_{f:g}"] = accuracy(options.replace(tta=True, tta_fraction=f))
    out = {"checkpoint": args.snn, "selection": selection, "select_seconds": select_seconds,
           "test_samples": len(y), "snn_accuracy": snn_acc, "nominal_chip": test_acc}
    print(json.dumps(out, indent=1))
    if args.json:
        from spikec.io.atomic import atomic_write_text

        atomic_write_text(args.json, json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
