"""Networks no recipe was tuned on, through the CLI a user runs: ``spikec train``, ``spikec convert
--coding ttfs``, ``spikec compress`` (default flags, and the tile-aware ``--structure tile-row
--pack-rows``), then ``spikec energy`` on the dense and each compressed network.

Issue 15's check: "networks you have not seen through spikec compress then spikec energy: tiles freed,
energy, accuracy, and the wall time of the defaults". Each step is a fresh process with default
threads; the ANNs are trained with a seed no other benchmark uses and cached under ``--workdir``
(gitignored ``runs/``) so reruns skip training. ``spikec energy`` runs with ``--chips 1 --sigmas 0
--no-iso-accuracy`` (the nominal chip; the variation sweep and rate baselines are other benchmarks').

    python benchmarks/compress_then_energy.py                       # mlp, lenet, vgg, resnet (~15 min)
    python benchmarks/compress_then_energy.py --networks lenet --json results.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

CLI = [sys.executable, "-m", "spikec.cli.main"]
# name: (spikec train flags, the tile-aware variant's density)
NETWORKS = {
    "mlp": (["--model", "mlp", "--epochs", "20"], 0.3),
    "lenet": (["--model", "lenet", "--epochs", "20"], 0.5),
    "vgg": (["--model", "vgg", "--depth", "11", "--width", "0.25", "--epochs", "10"], 0.1),
    "resnet": (["--model", "resnet", "--depth", "8", "--width", "0.5", "--epochs", "10"], 0.3),
}
ENERGY = ["--dataset", "digits", "--chips", "1", "--sigmas", "0", "--no-iso-accuracy", "--no-progress"]


def cli(args: list[str]) -> tuple[dict, float]:
    """Run ``spikec args --json``; returns its JSON line and the wall time."""
    start = time.perf_counter()
    done = subprocess.run(CLI + args + ["--json"], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"spikec {' '.join(args)} failed:\n{done.stderr.strip()}")
    return json.loads(done.stdout.strip().splitlines()[-1]), seconds


def dense_snn(name: str, workdir: str, seed: int) -> str:
    """The TTFS SNN of ``name``, trained and converted with the CLI unless cached."""
    ann, snn = os.path.join(workdir, f"{name}.pt"), os.path.join(workdir, f"{name}_ttfs.h5")
    if not os.path.exists(ann):
        cli(["train", *NETWORKS[name][0], "--dataset", "digits", "--seed", str(seed), "--out", ann])
    if not os.path.exists(snn):
        cli(["convert", ann, "--coding", "ttfs", "--dataset", "digits", "--out", snn])
    return snn


def energy(snn: str, out: str, pack_rows: bool) -> dict:
    r, seconds = cli(["energy", snn, *ENERGY, "--out", out] + (["--pack-rows"] if pack_rows else []))
    return {"pe_accuracy": r["accuracy"], "energy_nj": 1e9 * r["energy_per_inference_j"], "latency_us": 1e6 * r["latency_s"],
            "pe_tiles": r["tiles"], "energy_seconds": seconds}


def run_network(name: str, workdir: str, seed: int) -> list[dict]:
    snn = dense_snn(name, workdir, seed)
    rows = [{"network": name, "compression": "dense", **energy(snn, os.path.join(workdir, f"{name}_dense_report"), False)}]
    variants = [("defaults", [], False),
                ("tile-row, packed rows", ["--structure", "tile-row", "--pack-rows",
                                           "--density", str(NETWORKS[name][1])], True)]
    for label, flags, pack in variants:
        out = os.path.join(workdir, f"{name}_{'tilerow' if pack else 'defaults'}.h5")
        c, seconds = cli(["compress", snn, "--dataset", "digits", "--out", out, *flags])
        tiles = c.get("tiles") or {}
        row = {"network": name, "compression": label, "flags": " ".join(flags), "compress_seconds": seconds,
               "snn_before": c["accuracy_before"], "snn_after": c["accuracy_after"], "ratio": c["compression_ratio"],
               "density": c["density"], "sops_before": c["sops_before"], "sops_after": c["sops_after"],
               "tiles_before": tiles.get("tiles_before"), "tiles_after": tiles.get("tiles_after"),
               **energy(out, os.path.join(workdir, f"{name}_{'tilerow' if pack else 'defaults'}_report"), pack)}
        rows.append(row)
        print(f"{name} {label}: {row['snn_before']:.2%} -> {row['snn_after']:.2%}, {row['ratio']:.1f}x, "
              f"tiles {row['tiles_before']} -> {row['tiles_after']}, {row['energy_nj']:.2f} nJ ({seconds:.0f} s)",
              flush=True)
    return rows


def table(rows: list[dict]) -> str:
    dense = {r["network"]: r for r in rows if r["compression"] == "dense"}
    lines = ["| network | compression | SNN | nominal chip | compression | tiles (PE) | energy (nJ) | SOPs | "
             "latency (us) | `spikec compress` wall (s) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        d = dense[r["network"]]
        if r["compression"] == "dense":
            lines.append(f"| {r['network']} | dense | - | {r['pe_accuracy']:.2%} | - | {r['pe_tiles']} | "
                         f"{r['energy_nj']:.2f} | - | {r['latency_us']:.1f} | - |")
            continue
        sops = 1 - r["sops_after"] / r["sops_before"]
        saved = 1 - r["energy_nj"] / d["energy_nj"]
        lines.append(f"| {r['network']} | {r['compression']} | {r['snn_before']:.2%} -> {r['snn_after']:.2%} | "
                     f"{r['pe_accuracy']:.2%} | {r['ratio']:.1f}x | {d['pe_tiles']} -> {r['pe_tiles']} | "
                     f"{r['energy_nj']:.2f} ({-saved:+.1%}) | {-sops:+.1%} | {r['latency_us']:.1f} | "
                     f"{r['compress_seconds']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--networks", default=",".join(NETWORKS), help=f"comma-separated, of {', '.join(NETWORKS)}")
    ap.add_argument("--workdir", default="runs/compress_then_energy", help="cache of the networks and reports")
    ap.add_argument("--seed", type=int, default=13, help="training seed (no other benchmark uses 13)")
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args(argv)
    names = [n for n in args.networks.split(",") if n]
    unknown = [n for n in names if n not in NETWORKS]
    if unknown:
        ap.error(f"--networks: unknown network {unknown[0]!r} (choose from {', '.join(NETWORKS)})")
    os.makedirs(args.workdir, exist_ok=True)
    start = time.perf_counter()
    rows = [r for n in names for r in run_network(n, args.workdir, args.seed)]
    print(f"# {datetime.datetime.now().isoformat(timespec='minutes')} {platform.machine()}, {os.cpu_count()} CPUs; "
          f"python benchmarks/compress_then_energy.py {' '.join(argv if argv is not None else sys.argv[1:])} "
          f"({(time.perf_counter() - start) / 60:.1f} min)")
    print(table(rows))
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"command": "python benchmarks/compress_then_energy.py " + " ".join(sys.argv[1:]),
                       "date": datetime.datetime.now().isoformat(timespec="seconds"),
                       "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "rows": rows}, f, indent=1)
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
