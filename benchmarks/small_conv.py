"""3x3 convolutions over small maps: torch's CPU convolution against the dense product of
``spikec.kernels.small_conv`` (forward + backward), timed in turns in one process.

The shapes are the digits VGG-11 (width 0.25, 8x8 inputs) and CIFAR VGG-16 blocks at 32 time steps x
32 samples; the ratio column says how many times faster the dense product is. Maps of at most
``MAX_POSITIONS`` pixels take the dense path in training and evaluation loops.

    python benchmarks/small_conv.py                 # batch 1024, 1 thread
    python benchmarks/small_conv.py --batch 256 --threads 2 --json
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from spikec.kernels.small_conv import MAX_POSITIONS, dense_conv2d

SHAPES = [  # (in channels, out channels, map side)
    (1, 16, 8), (16, 32, 4), (32, 64, 2), (64, 64, 2), (64, 128, 1), (128, 128, 1),  # digits VGG-11 w0.25
    (128, 128, 2), (512, 512, 2),  # CIFAR VGG-16 last block, widths 0.25 and 1
]


def _time(fn, reps: int) -> float:
    fn()
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def measure(batch: int, reps: int) -> list[dict]:
    rows = []
    for cin, cout, side in SHAPES:
        g = torch.Generator().manual_seed(0)
        x = (torch.rand(batch, cin, side, side, generator=g) < 0.2).float().requires_grad_(cin > 1)  # spikes
        w = torch.randn(cout, cin, 3, 3, generator=g, requires_grad=True)
        b = torch.randn(cout, generator=g, requires_grad=True)
        grad = torch.randn(batch, cout, side, side, generator=g)

        def conv():
            F.conv2d(x, w, b, padding=1).backward(grad)

        def dense():
            dense_conv2d(x, w, b, (1, 1), (1, 1), (1, 1)).backward(grad)

        times = {"conv": [], "dense": []}
        for _ in range(reps):  # in turns: load from other processes hits both alike
            times["conv"].append(_time(conv, 1))
            times["dense"].append(_time(dense, 1))
        c, d = statistics.median(times["conv"]), statistics.median(times["dense"])
        rows.append({"in": cin, "out": cout, "map": f"{side}x{side}", "conv_ms": 1e3 * c, "dense_ms": 1e3 * d,
                     "speedup": c / d, "dense_path": side * side <= MAX_POSITIONS})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=1024, help="samples x time steps per call (default 1024)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = measure(args.batch, args.reps)
    print(f"# {datetime.date.today()} {platform.machine()} {torch.__version__}, {args.threads} thread(s), "
          f"batch {args.batch}, median of {args.reps}")
    print("| in -> out | map | conv fwd+bwd (ms) | dense fwd+bwd (ms) | conv / dense | dense path |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['in']} -> {r['out']} | {r['map']} | {r['conv_ms']:.1f} | {r['dense_ms']:.1f} | "
              f"{r['speedup']:.2f} | {'yes' if r['dense_path'] else 'no'} |")
    if args.json:
        print(json.dumps({"batch": args.batch, "threads": args.threads, "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
