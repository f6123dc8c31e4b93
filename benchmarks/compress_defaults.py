"""Wall time of `spikec compress` with default flags on the README's digits VGG rate SNN, idle and
beside a busy process (issue 15: <= 3 minutes, also when another process shares the machine).

The network is built once with the README's commands and cached under ``--workdir`` (gitignored
``runs/``): ``spikec train --model vgg --depth 11 --width 0.25 --dataset digits --epochs 10``, then
``spikec convert vgg.pt --coding rate --timesteps 32 --norm percentile:99.9 --dataset digits``. Each
compression is a fresh process with default flags and threads, as a user runs it; the busy process
is a matrix-product loop on ``--busy-threads`` threads.

    python benchmarks/compress_defaults.py                   # idle, then beside a 2-thread loop
    python benchmarks/compress_defaults.py --busy-threads 0  # idle only
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import time

CLI = [sys.executable, "-m", "spikec.cli.main"]
BUSY = ("import sys, torch\ntorch.set_num_threads(int(sys.argv[1]))\na = torch.randn(1500, 1500)\n"
        "while True:\n    a @ a\n")


def _run(args: list[str]) -> str:
    done = subprocess.run(CLI + args, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"spikec {' '.join(args)} failed:\n{done.stderr.strip()}")
    return done.stdout


def network(workdir: str) -> str:
    """The rate SNN, built with the README's commands unless cached."""
    os.makedirs(workdir, exist_ok=True)
    ann, snn = os.path.join(workdir, "vgg.pt"), os.path.join(workdir, "vgg_rate.h5")
    if not os.path.exists(ann):
        _run(["train", "--model", "vgg", "--depth", "11", "--width", "0.25", "--dataset", "digits", "--epochs", "10",
              "--out", ann])
    if not os.path.exists(snn):
        _run(["convert", ann, "--coding", "rate", "--timesteps", "32", "--norm", "percentile:99.9", "--dataset",
              "digits", "--out", snn])
    return snn


def time_compress(snn: str, out: str) -> dict:
    start = time.perf_counter()
    text = _run(["compress", snn, "--out", out])
    seconds = time.perf_counter() - start
    acc = re.search(r"^accuracy ([\d.]+)% -> ([\d.]+)%", text, re.M)
    ratio = re.search(r"compression ([\d.]+)x", text)
    tiles = re.search(r"crossbar tiles \(\w+\) (\d+) -> (\d+)", text)
    return {"seconds": seconds, "accuracy_before": float(acc.group(1)), "accuracy_after": float(acc.group(2)),
            "compression": float(ratio.group(1)), "tiles": f"{tiles.group(1)} -> {tiles.group(2)}" if tiles else None}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="runs/compress_defaults", help="cache of the network (default runs/compress_defaults)")
    ap.add_argument("--busy-threads", type=int, default=2, help="threads of the busy process (0: idle run only)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    snn = network(args.workdir)
    rows = [{"beside": "nothing", **time_compress(snn, os.path.join(args.workdir, "idle.h5"))}]
    if args.busy_threads > 0:
        busy = subprocess.Popen([sys.executable, "-c", BUSY, str(args.busy_threads)])
        try:
            time.sleep(2)
            rows.append({"beside": f"a {args.busy_threads}-thread matmul loop",
                         **time_compress(snn, os.path.join(args.workdir, "busy.h5"))})
        finally:
            busy.kill()
            busy.wait()
    print(f"# {datetime.datetime.now().isoformat(timespec='minutes')} {platform.machine()}, {os.cpu_count()} CPUs; "
          f"spikec compress vgg_rate.h5 --out ... (default flags and threads), target 180 s")
    print("| beside | wall (s) | accuracy | compression | tiles |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['beside']} | {r['seconds']:.1f} | {r['accuracy_before']:.2f}% -> {r['accuracy_after']:.2f}% | "
              f"{r['compression']:.1f}x | {r['tiles']} |")
    if args.json:
        print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
