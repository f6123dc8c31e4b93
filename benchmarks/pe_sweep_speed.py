"""The variation sweep and the nominal chip's energy run of ``spikec energy``, before and after the simulator
changes of 2026-12-03, side by side.

    python benchmarks/pe_sweep_speed.py runs/cifar10/resnet20_ttfs.h5 [--samples 100] [--chips 10]
        [--sigma 0.2] [--repeats 2] [--threads 2] [--json out.json]

One setting of the sweep (``sigma`` over ``chips`` chips, compensation none / MFTA / ideal threshold, the
preset's TTA) on a seeded stratified draw of test images, timed in one process with the three changes
switched off ("before") and on ("after"), alternating, so the ratio holds on a noisy machine:

- MFTA's least-squares scale from the calibration read's sums instead of every chip's charges on every
  calibration point (``mfta.best_scale``);
- a residual layer's replayed skip rows folded into its convolution kernel (``timing.conv_charge``);
- ``torch.kthvalue`` for the TTA stop only on positions where enough neurons fire (``timing.kth_firing_step``);
- the float64 crossbar products of a chip on its cell grid (the nominal chip of the main run and the
  TTA curve) as exact integer sums in float32 (``timing.grid_levels``); timed on the nominal chip with
  energy accounting, which must give the same accuracy and the same energy to 1e-12.

The MFTA read sums are rebuilt for every timed sweep (the study reuses them for all its sigmas), and
both variants must give the same accuracies on every chip (printed, and in the JSON).
"""
import argparse
import contextlib
import json
import os
import platform
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import spikec.hardware.mfta as mfta  # noqa: E402
import spikec.hardware.timing as timing  # noqa: E402
from spikec.checkpoint import load_model  # noqa: E402
from spikec.data import load_dataset  # noqa: E402
from spikec.data.sample import stratified_tensors  # noqa: E402
from spikec.hardware.config import preset  # noqa: E402
from spikec.hardware.evaluate import PEModel  # noqa: E402
from spikec.hardware.timing import RunOptions  # noqa: E402
from spikec.io.atomic import atomic_path  # noqa: E402


@contextlib.contextmanager
def before(model: PEModel):
    """The simulator as it was: the three changes switched off."""
    saved = mfta.best_scale, timing.kth_firing_step, timing.grid_levels
    splits = {}
    for xb in model.crossbars:
        split = timing._conv_split(xb.layer)
        splits[xb.layer.name] = split
        if split is not None:
            object.__setattr__(xb.layer, "_conv_split", (split[0], split[1], None))
    mfta.best_scale = mfta.best_scale_from_charges
    timing.kth_firing_step = lambda steps, k: torch.kthvalue(steps, k, dim=-1).values
    timing.grid_levels = lambda chip, window_steps: None
    try:
        yield
    finally:
        mfta.best_scale, timing.kth_firing_step, timing.grid_levels = saved
        for xb in model.crossbars:
            object.__setattr__(xb.layer, "_conv_split", splits[xb.layer.name])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("snn")
    p.add_argument("--dataset", default="../shared/data/cifar10")
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--chips", type=int, default=10)
    p.add_argument("--sigma", type=float, default=0.2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    snn, _ = load_model(args.snn)
    train, test, _ = load_dataset(args.dataset)
    x, y = stratified_tensors(test.tensors, args.samples, 0)
    cal_x, cal_y = stratified_tensors(train.tensors, 512, 0)
    config = preset("twin-column")
    model = PEModel.from_snn(snn, config)
    options = RunOptions.from_config(config)
    seconds = {"before": [], "after": []}
    energy_seconds = {"before": [], "after": []}
    accuracy, energy = {}, {}
    for _ in range(args.repeats):
        for variant in ("before", "after"):
            calib = model.calibrate(cal_x[:config.calib_samples])  # fresh read sums every time
            with before(model) if variant == "before" else contextlib.nullcontext():
                t = time.perf_counter()
                rows = model.variation_sweep(x, y, calib, (args.sigma,), ("none", "mfta", "ideal"), args.chips,
                                             options, progress=False)
                seconds[variant].append(time.perf_counter() - t)
            accuracy[variant] = {r["compensation"]: r["accuracy_per_chip"] for r in rows}
            with before(model) if variant == "before" else contextlib.nullcontext():
                t = time.perf_counter()
                result = model.evaluate(model.nominal(), x, y, options)
                energy_seconds[variant].append(time.perf_counter() - t)
            energy[variant] = (result.accuracy, result.energy["total"])
            print(f"  nominal chip with energy: {energy_seconds[variant][-1]:.1f} s, accuracy {result.accuracy:.4f}, "
                  f"{result.energy['total'] * 1e9:.3f} nJ", flush=True)
            print(f"{variant}: {seconds[variant][-1]:.1f} s", {k: round(sum(v) / len(v), 4) for k, v in accuracy[variant].items()},
                  flush=True)
    same = accuracy["before"] == accuracy["after"]
    ratio = min(seconds["before"]) / min(seconds["after"])
    print(f"sweep before / after: {ratio:.2f}x (best of {args.repeats}); same accuracy on every chip: {same}")
    energy_ratio = min(energy_seconds["before"]) / min(energy_seconds["after"])
    same_energy = energy["before"][0] == energy["after"][0] and \
        abs(energy["before"][1] - energy["after"][1]) <= 1e-12 * abs(energy["before"][1])
    print(f"nominal chip with energy, before / after: {energy_ratio:.2f}x; same accuracy and energy: {same_energy}")
    if args.json:
        out = {"machine": f"{platform.machine()} {os.cpu_count()} cpus", "threads": args.threads,
               "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv), "snn": args.snn,
               "samples": args.samples, "chips": args.chips, "sigma": args.sigma, "seconds": seconds,
               "ratio_best": ratio, "same_accuracy_per_chip": same, "accuracy": accuracy,
               "energy_run_seconds": energy_seconds, "energy_run_ratio_best": energy_ratio,
               "energy_run_same": same_energy, "energy_run": energy}
        with atomic_path(args.json) as tmp, open(tmp, "w") as f:
            json.dump(out, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
