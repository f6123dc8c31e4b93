"""Where the default ``spikec energy`` study's time goes on a CIFAR network, and the batch sizes it runs at.

    python benchmarks/pe_simulator_speed.py runs/cifar10/resnet20_ttfs.h5 [--threads 2] [--json out.json]

Times, on the same seeded draw of test images (side by side in one process, so the ratios hold on a
noisy machine):

- the PE simulator, accuracy only (the variation sweep): 10 chips at sigma 0.2, at several samples per
  batch, and the batch :meth:`PEModel.batch_size` picks;
- the PE simulator with energy accounting (main run, TTA curve): the nominal chip, same;
- the rate baseline's step search (:func:`rate_step_counts`) at several (samples per batch, steps per
  chunk), and its default.

The defaults in ``hardware/evaluate.py`` (``CACHE_BUDGET``) and ``hardware/rate_search.py``
(``IMAGE_STEPS``) come from this script; results in BENCHMARKS.md.
"""
import argparse
import json
import os
import platform
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from spikec.checkpoint import load_model  # noqa: E402
from spikec.data import load_dataset  # noqa: E402
from spikec.data.sample import stratified_tensors  # noqa: E402
from spikec.hardware.baselines import RateBaselineOptions, rate_networks  # noqa: E402
from spikec.hardware.config import preset  # noqa: E402
from spikec.hardware.evaluate import PEModel  # noqa: E402
from spikec.hardware.rate_search import rate_step_counts  # noqa: E402
from spikec.hardware.timing import RunOptions  # noqa: E402
from spikec.io.atomic import atomic_path  # noqa: E402


def seconds(f) -> float:
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("snn")
    p.add_argument("--dataset", default="../shared/data/cifar10")
    p.add_argument("--samples", type=int, default=40, help="test images for the PE runs (default 40)")
    p.add_argument("--rate-samples", type=int, default=256, help="test images for the rate search (default 256)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    snn, _ = load_model(args.snn)
    tr, te, _ = load_dataset(args.dataset)
    x, y = stratified_tensors(te.tensors, args.samples, 1)
    cfg = preset("twin-column")
    model = PEModel.from_snn(snn, cfg)
    opts = RunOptions.from_config(cfg)
    out = {"machine": f"{platform.machine()} {os.cpu_count()} cpus", "threads": args.threads,
           "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv), "samples": args.samples}

    chips = model.chips(10, 0.2)
    fast = opts.replace(charge_dtype=torch.float32)
    model.predict(chips, x[:4], fast)  # warm-up
    rows = {}
    for bs in (2, 4, 8, 20):
        rows[bs] = seconds(lambda: model.predict(chips, x, fast, batch_size=bs))
        print(f"predict, 10 chips, {bs} samples a batch: {rows[bs]:.2f} s", flush=True)
    out["predict_10_chips"] = {"seconds_by_batch": rows, "default_batch": model.batch_size(10, False),
                               "ms_per_chip_image": {b: 1e3 * s / (10 * args.samples) for b, s in rows.items()}}
    nominal = model.nominal()
    rows = {}
    for bs in (8, 20, 40):
        rows[bs] = seconds(lambda: model.evaluate(nominal, x, y, opts, batch_size=bs))
        print(f"evaluate with energy, 1 chip, {bs} samples a batch: {rows[bs]:.2f} s", flush=True)
    out["evaluate_1_chip"] = {"seconds_by_batch": rows, "default_batch": model.batch_size(1, True)}

    xr, yr = stratified_tensors(te.tensors, args.rate_samples, 1)
    calib, _ = stratified_tensors(tr.tensors, 512, 0)
    net = rate_networks(snn, *tr.tensors, RateBaselineOptions(methods=("percentile",)), calib)["percentile"][1]
    rows = {}
    for bs, chunk in ((256, 8), (32, 8), (16, 16), (8, 32), (None, 8)):
        key = f"{bs or 'default'}x{chunk}"
        rows[key] = seconds(lambda: rate_step_counts(net, xr, yr, [32], batch_size=bs, chunk=chunk))
        print(f"rate search to T=32, {key} (samples x steps): {rows[key]:.2f} s", flush=True)
    out["rate_search_t32"] = {"seconds": rows, "samples": args.rate_samples,
                              "ms_per_image_step": {k: 1e3 * s / (32 * args.rate_samples) for k, s in rows.items()}}
    if args.json:
        with atomic_path(args.json) as tmp, open(tmp, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
