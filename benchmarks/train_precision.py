"""Seconds per CIFAR training epoch of a ResNet-20 in float32 and under bfloat16 autocast, side by side.

    python benchmarks/train_precision.py [--threads 2] [--steps 10] [--acts relu,qcfs,qcfs-composed] [--json out.json]

Times SGD steps (Nesterov, batch 128, channels-last, as ``spikec train`` runs CIFAR) on random
32x32 inputs after 3 warm-up steps, and scales them to the 391 batches of a CIFAR-10 epoch (data
loading, augmentation and the test pass excluded). Also times ``torch.compile`` of the float32 model.
``--acts``: the activation of every layer: ReLU, QCFS (L=4) with its written-out gradient, or QCFS
composed of torch ops as it was before (``qcfs-composed``, the same values and gradients), so the
two QCFS forms are timed side by side in one run.
"""
import argparse
import json
import os
import platform
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from spikec.io.atomic import atomic_path  # noqa: E402
from spikec.models import build_model  # noqa: E402

BATCHES_PER_EPOCH = 391


def composed_qcfs(x, threshold, levels, shift=0.5):
    """QCFS as clamp, floor with an identity gradient and scalings, each a torch op (before the written-out gradient)."""
    f = torch.clamp(x / threshold, 0.0, 1.0) * levels + shift
    return (f + (torch.floor(f) - f).detach()) / levels * threshold


def epoch_seconds(mode: str, steps: int, batch: int = 128, act: str = "relu") -> float:
    import spikec.conversion.qcfs as qcfs_module

    torch.manual_seed(0)
    kw = {} if act == "relu" else {"act": lambda: qcfs_module.QCFS(4)}
    model = build_model("resnet", (3, 32, 32), 10, depth=20, **kw).to(memory_format=torch.channels_last)
    written_out = qcfs_module.qcfs
    if act == "qcfs-composed":
        qcfs_module.qcfs = composed_qcfs
    try:
        return _time_steps(model, mode, steps, batch)
    finally:
        qcfs_module.qcfs = written_out


def _time_steps(model, mode: str, steps: int, batch: int) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    net = torch.compile(model) if mode == "compile-fp32" else model

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16"):
            scores = net(x)
        loss = F.cross_entropy(scores.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t) / steps * BATCHES_PER_EPOCH


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--modes", default="fp32,bf16,compile-fp32")
    p.add_argument("--acts", default="relu", help="relu, qcfs, qcfs-composed (comma-separated)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out = {"machine": f"{platform.machine()} {os.cpu_count()} cpus", "threads": args.threads,
           "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv), "seconds_per_epoch": {}}
    for mode in args.modes.split(","):
        for act in args.acts.split(","):
            key = mode if act == "relu" else f"{mode}/{act}"
            seconds = epoch_seconds(mode, args.steps, act=act)
            out["seconds_per_epoch"].setdefault(key, []).append(seconds)  # a list: a key may be timed twice, interleaved
            print(f"{key}: {seconds:.1f} s per epoch", flush=True)
    if args.json:
        with atomic_path(args.json) as tmp, open(tmp, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
