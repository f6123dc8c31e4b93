"""The mapping's row budget: nominal-chip accuracy (no TTA; TTA 0.7) and tiles per ``max_row_copies``.

    python benchmarks/pe_row_budget.py runs/cifar10/resnet20_ttfs.h5 [--samples 1000]

Measured on a seeded stratified draw of *training* images (the choice of a default must not look at
the test set). Results in BENCHMARKS.md (twin-column PE at CIFAR scale).
"""
import argparse, json, time, torch
torch.set_num_threads(1)
from spikec.checkpoint import load_model
from spikec.data import load_dataset
from spikec.data.sample import stratified_tensors
from spikec.hardware.config import preset
from spikec.hardware.evaluate import PEModel
from spikec.hardware.timing import RunOptions
from spikec.hardware.study import software_reference
p = argparse.ArgumentParser()
p.add_argument("snn")
p.add_argument("--dataset", default="../shared/data/cifar10")
p.add_argument("--samples", type=int, default=1000)
p.add_argument("--json", default=None)
args = p.parse_args()
snn, _ = load_model(args.snn)
tr, te, _ = load_dataset(args.dataset)
x, y = stratified_tensors(tr.tensors, args.samples, 7)
ref = software_reference(snn, x, y, 6)["accuracy"]
print("SNN", ref, flush=True)
out = {"snn": ref}
for budget in (None, 64, 32, 16, 8):
    cfg = preset("twin-column").replace(max_row_copies=budget)
    t = time.perf_counter()
    m = PEModel.from_snn(snn, cfg)
    tiles = sum(xb.tiling.tiles for xb in m.crossbars)
    chips = m.nominal()
    opts = RunOptions.from_config(cfg)
    a0 = float((m.predict(chips, x, opts.replace(tta=False))[0] == y).double().mean())
    a7 = float((m.predict(chips, x, opts)[0] == y).double().mean())
    out[str(budget)] = {"tiles": tiles, "no_tta": a0, "tta_0.7": a7}
    print(budget, out[str(budget)], f"{time.perf_counter()-t:.0f} s", flush=True)
if args.json:
    json.dump(out, open(args.json, "w"), indent=1)
