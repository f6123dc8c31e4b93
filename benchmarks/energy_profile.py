"""Where the default PE study spends its time: the study on a TTFS-converted ResNet-20 (random weights,
CIFAR-10 calibration) under cProfile, with report.json's stage_seconds.

    python benchmarks/energy_profile.py 64 4     # test images, chips (one torch thread)

Results (before/after the simulator changes of 2026-12-02) are in BENCHMARKS.md.
"""
import cProfile
import pstats
import sys

import torch
torch.set_num_threads(1)
from spikec.models import build_model
from spikec.conversion.ttfs import convert_ttfs
from spikec.data import load_dataset
from spikec.data.sample import stratified_tensors
from spikec.hardware.config import preset
from spikec.hardware.study import energy_study
train, test, info = load_dataset(sys.argv[4] if len(sys.argv) > 4 else "../shared/data/cifar10")
torch.manual_seed(0)
ann = build_model("resnet", depth=20, input_shape=(3,32,32), num_classes=10).eval()
calib, _ = stratified_tensors(train.tensors, 256, 0)
snn = convert_ttfs(ann.double(), calib.double(), time_bits=6)
x, y = stratified_tensors(test.tensors, int(sys.argv[1]), 0)
cal_x, cal_y = stratified_tensors(train.tensors, 512, 0)
cfg = preset(sys.argv[3] if len(sys.argv) > 3 else "twin-column")
pr = cProfile.Profile(); pr.enable()
st = energy_study(snn, x, y, cal_x, cfg, calib_y=cal_y, chips=int(sys.argv[2]), progress=False, train=train.tensors)
pr.disable()
print(st.report["stage_seconds"], st.report["seconds"])
print({k: v.get("search_seconds") for k, v in st.report["comparison"]["rate"].items()}, st.report["comparison"]["rate_build_seconds"])
pstats.Stats(pr).sort_stats("cumulative").print_stats(35)
