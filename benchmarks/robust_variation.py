"""Variation-aware fine-tuning against MFTA: a TTFS SNN on the twin-column PE under conductance variation.

    python benchmarks/robust_variation.py runs/cifar10/resnet20_ttfs.h5 [--train-samples 5000 --epochs 2]

Four rows per sigma (0.1, 0.2, 0.3), each the mean over ``--chips`` seeded chips on a stratified test
draw (seed 0, as the study): the plain network without compensation and with MFTA, and the same
network after variation-aware fine-tuning (``spikec.compress``: every step on a freshly sampled chip
with ``G' = G exp(theta)``, through the analytic TTFS simulator at the network's time resolution,
with per-neuron threshold errors of up to half the MFTA register's step, the residual MFTA leaves,
and optionally the spectral-norm penalty) without compensation and with MFTA. The training chips
use their own seed (1000), never the evaluation's. The fine-tuned network is cached beside the input
(``*_robust<sigma>.h5``) so a rerun only evaluates; ``--redo`` retrains.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch

from spikec.checkpoint import load_checkpoint, load_model, save_checkpoint
from spikec.compress.api import compress_
from spikec.compress.checkpoint import compressed_checkpoint
from spikec.compress.config import CompressConfig, FinetuneConfig, RobustConfig
from spikec.data import load_dataset
from spikec.data.sample import stratified_tensors
from spikec.hardware.config import preset
from spikec.hardware.evaluate import PEModel
from spikec.hardware.study import calibration_inputs
from spikec.hardware.timing import RunOptions


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("snn", help="a TTFS SNN checkpoint (.h5)")
    p.add_argument("--dataset", default="../shared/data/cifar10")
    p.add_argument("--train-sigma", type=float, default=0.2, help="sigma of the training chips (default 0.2)")
    p.add_argument("--lipschitz", type=float, default=0.0, help="spectral-norm penalty strength (default 0)")
    p.add_argument("--threshold-jitter", type=float, default=None,
                   help="per-neuron threshold jitter while training (default: half the preset's MFTA step)")
    p.add_argument("--sigmas", default="0.1,0.2,0.3")
    p.add_argument("--chips", type=int, default=10)
    p.add_argument("--samples", type=int, default=500, help="stratified test images (default 500)")
    p.add_argument("--train-samples", type=int, default=5000, help="stratified training images (default 5000)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--lr", type=float, default=3e-3, help="relative learning rate (default 3e-3)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--augment", default="none", choices=("auto", "crop-flip", "none"),
                   help="augmentation while fine-tuning (default none, as the recorded rows)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--redo", action="store_true", help="retrain the robust network even if it is cached")
    p.add_argument("--networks", default="plain,robust",
                   help="which to evaluate; rows of the others are kept from --json (default plain,robust)")
    p.add_argument("--json", default="benchmarks/results/robust_variation.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    sigmas = [float(s) for s in args.sigmas.split(",")]

    tr, te, _ = load_dataset(args.dataset)
    x, y = stratified_tensors(te.tensors, args.samples, 0)
    cx, cy = stratified_tensors(tr.tensors, 512, 0)
    cfg = preset("twin-column")
    g_off_ratio = cfg.g_off / (cfg.g_on - cfg.g_off)

    jitter = cfg.mfta_step / 2 if args.threshold_jitter is None else args.threshold_jitter
    stem = os.path.splitext(args.snn)[0]
    tag = (f"_robust{args.train_sigma:g}" + (f"_lip{args.lipschitz:g}" if args.lipschitz else "")
           + (f"_jit{jitter:g}" if jitter else "") + ("" if args.augment == "none" else f"_{args.augment}"))
    robust_path = f"{stem}{tag}.h5"
    train_seconds = None
    if args.redo or not os.path.exists(robust_path):
        model, _ = load_model(args.snn)
        xt, yt = stratified_tensors(tr.tensors, args.train_samples, 2)
        config = CompressConfig(prune=None, quant=None, attention=None, robust=RobustConfig(
            sigma=args.train_sigma, chips=0, seed=1000, g_off_ratio=g_off_ratio, lipschitz=args.lipschitz,
            threshold_jitter=jitter),
            finetune=FinetuneConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, augment=args.augment))
        t0 = time.perf_counter()
        report = compress_(model, config, (xt, yt), progress=lambda phase, r: print(
            f"  {phase} epoch {r.epoch}: loss {r.loss:.4f}, train accuracy {100 * r.train_accuracy:.2f}% "
            f"(on varied chips), {r.seconds:.0f} s", flush=True))
        train_seconds = time.perf_counter() - t0
        model.eval()
        record = {"config": {"robust": config.robust.__dict__, "finetune": config.finetune.__dict__},
                  "history": [r.__dict__ for r in report.history]}
        save_checkpoint(robust_path, compressed_checkpoint(load_checkpoint(args.snn), model, record))
        print(f"wrote {robust_path} after {train_seconds:.0f} s of fine-tuning", flush=True)

    wanted = args.networks.split(",")
    networks = [(n, p) for n, p in (("plain", args.snn), (tag.lstrip("_"), robust_path)) if n.startswith(tuple(wanted))]
    old_rows = []
    if args.json and os.path.exists(args.json):  # rows of networks not evaluated now are kept
        with open(args.json) as f:
            old_rows = [r for r in json.load(f)["rows"] if r["network"] not in dict(networks)]
    results = {"settings": vars(args), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch "
               f"{torch.__version__}, {args.threads} thread(s)", "date": time.strftime("%Y-%m-%d"),
               "train_seconds": train_seconds, "rows": old_rows}
    options = RunOptions.from_config(cfg)
    for name, path in networks:
        snn, _ = load_model(path)
        model = PEModel.from_snn(snn, cfg)
        nominal = float((model.predict(model.nominal(), x, options) == y).to(torch.float64).mean())
        calib = model.calibrate(calibration_inputs(cx, cy, cfg.calib_samples, cfg.seed))
        t0 = time.perf_counter()
        rows = model.variation_sweep(x, y, calib, sigmas, ["none", "mfta"], args.chips, options, progress=False)
        for r in rows:
            r.update(network=name, nominal=nominal, train_seconds=train_seconds if path == robust_path else None)
            r.pop("accuracy_per_chip")
            print(f"{name:>7} sigma {r['sigma']:.1f} {r['compensation']:>5}: {100 * r['accuracy_mean']:6.2f}% "
                  f"+- {100 * r['accuracy_std']:.2f} (nominal {100 * nominal:.2f}%)", flush=True)
        print(f"  {name}: {time.perf_counter() - t0:.0f} s for {len(rows)} settings", flush=True)
        results["rows"] += rows
    if args.json:
        from spikec.io.atomic import atomic_write_text

        atomic_write_text(args.json, json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
