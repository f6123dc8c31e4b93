"""MFTA register resolution: accuracy at sigma 0.2 without compensation, with MFTA and with an ideal threshold.

    python benchmarks/mfta_resolution.py runs/cifar10/resnet20_ttfs.h5 [--samples 300 --chips 4]

Levels x step: 8 x 0.1 (the preset), 16 x 0.05, 32 x 0.025, 64 x 0.0125 (same range, finer steps).
Test images: a stratified draw with seed 1 (the study uses seed 0). Results in BENCHMARKS.md.
"""
import argparse, time, json, torch
torch.set_num_threads(1)
from spikec.checkpoint import load_model
from spikec.data import load_dataset
from spikec.data.sample import stratified_tensors
from spikec.hardware.config import preset
from spikec.hardware.evaluate import PEModel
from spikec.hardware.timing import RunOptions
from spikec.hardware.study import calibration_inputs
p = argparse.ArgumentParser()
p.add_argument("snn")
p.add_argument("--dataset", default="../shared/data/cifar10")
p.add_argument("--samples", type=int, default=300)
p.add_argument("--chips", type=int, default=4)
p.add_argument("--json", default=None)
args = p.parse_args()
snn, _ = load_model(args.snn)
tr, te, _ = load_dataset(args.dataset)
n = args.samples
x, y = stratified_tensors(te.tensors, n, 1)   # a different draw from the study's test draw (seed 0)
cx, cy = stratified_tensors(tr.tensors, 512, 0)
out = {}
for levels, step in ((8, 0.1), (16, 0.05), (32, 0.025), (64, 0.0125)):
    cfg = preset("twin-column").replace(mfta_levels=levels, mfta_step=step)
    model = PEModel.from_snn(snn, cfg)
    calib = model.calibrate(calibration_inputs(cx, cy, cfg.calib_samples, cfg.seed))
    t = time.perf_counter()
    rows = model.variation_sweep(x, y, calib, [0.2], ["none", "mfta", "ideal"], args.chips, RunOptions.from_config(cfg), progress=False)
    out[f"{levels}x{step}"] = {r["compensation"]: r["accuracy_mean"] for r in rows}
    print(levels, step, out[f"{levels}x{step}"], f"{time.perf_counter()-t:.0f} s", flush=True)
if args.json:
    json.dump(out, open(args.json, "w"), indent=1)
