"""Re-measure a QCFS network's T-step rows of ``benchmarks/cifar10.py`` on the whole CIFAR-10 test set.

    python benchmarks/cifar10_full_test.py runs/cifar10/vgg16_qcfs4_ft2.pt \
        --snn runs/cifar10/vgg16_qcfs4_hybrid_T4_e5_lr0.0003_bias.pt --timesteps 4

The benchmark's tables use a 1,000-image stratified draw; a gap near its target's line is checked here on
all 10,000 images: the ANN, its rate conversion for ``T``, the same after bias calibration (the benchmark's
512-image stratified calibration draw and 2 sweeps), and any saved SNN (e.g. the cached hybrid fine-tuned one).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))

from spikec.checkpoint import load_model
from spikec.conversion.bias_calibration import calibrate_bias
from spikec.conversion.rate import convert_rate
from spikec.data import load_dataset
from spikec.data.sample import stratified_tensors
from spikec.evaluation import evaluate_steps
from spikec.training import evaluate


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("ann", help="the (QCFS) ANN checkpoint")
    p.add_argument("--snn", action="append", default=[], help="a saved SNN checkpoint to evaluate too (repeatable)")
    p.add_argument("--timesteps", type=int, default=4)
    p.add_argument("--data", default=os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data", "cifar10")))
    p.add_argument("--calib", type=int, default=512)
    p.add_argument("--sweeps", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    T = args.timesteps
    start = time.perf_counter()
    train_data, test_data, _ = load_dataset(args.data)
    calib, _ = stratified_tensors(train_data, args.calib, seed=0)  # the benchmark's draw
    ann, _ = load_model(args.ann)
    out = {"ann": args.ann, "timesteps": T, "test_samples": len(test_data), "ann_accuracy": evaluate(ann, test_data)}
    snn = convert_rate(ann, calib, timesteps=T)
    out["converted"] = evaluate_steps(snn, test_data, [T], batch_size=100).accuracy[T]
    calibrate_bias(snn, ann, calib, T, sweeps=args.sweeps)
    out["bias_calibrated"] = evaluate_steps(snn, test_data, [T], batch_size=100).accuracy[T]
    out["saved"] = {}
    for path in args.snn:
        model, _ = load_model(path)
        ev = evaluate_steps(model, test_data, [T], batch_size=100)
        out["saved"][path] = {"accuracy": ev.accuracy[T], "spikes_per_neuron": ev.spikes_per_neuron[T]}
    out["seconds"] = time.perf_counter() - start
    print(json.dumps(out, indent=1))
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(out, f, indent=1)
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
