"""``spikec run``: the whole pipeline on one dataset, every artifact under one folder.

train ANN -> convert (rate and/or TTFS) -> compress -> twin-column energy report -> NIR export.
Each stage is the same subcommand a user would run by hand (this module only wires them), so
what ``run`` writes can be reproduced stage by stage from the commands it prints. The NIR file
holds a reset-to-zero rate SNN (``spikec convert --reset zero --finetune-epochs N``, since NIR
has no soft reset), written by ``spikec export``.
"""
from __future__ import annotations

import json
import os
import shlex
import time

from spikec.errors import UsageError

CODINGS = ("rate", "ttfs")


def add_parser(subparsers, parents):
    p = subparsers.add_parser(
        "run", parents=parents, help="the main job: train, convert, compress, energy report and NIR export",
        description="Train an ANN, convert it to rate and TTFS SNNs, compress them, write the twin-column "
        "energy report and a NIR file, all under --out.",
    )
    p.add_argument("--model", default="lenet", help="model name (default lenet)")
    p.add_argument("--dataset", default="digits", help="dataset name or path (default digits)")
    p.add_argument("--coding", default="rate,ttfs", help="codings to convert to, comma-separated (default rate,ttfs)")
    p.add_argument("--out", default=None, help="output folder (default runs/<timestamp>)")
    p.add_argument("--quick", action="store_true", help="small settings for a smoke run (CI: under 2 minutes)")
    p.add_argument("--epochs", type=int, default=None, help="ANN training epochs (default 20, --quick 6)")
    p.add_argument("--density", type=float, default=0.1, help="compression: fraction of weights kept (default 0.1)")
    p.add_argument("--bits", type=int, default=4, help="compression: weight bits (default 4)")
    p.add_argument("--chips", type=int, default=None, help="energy: Monte-Carlo chips (default 10, --quick 2)")
    p.add_argument("--seed", type=int, default=0)
    return p


def _stages(args, out: str, codings: list[str]) -> list[tuple[str, list[str]]]:
    q = args.quick
    epochs = args.epochs if args.epochs is not None else (6 if q else 20)
    chips = args.chips if args.chips is not None else (2 if q else 10)
    ann = os.path.join(out, "ann.pt")
    common = ["--dataset", args.dataset]
    stages = [("train ANN", ["train", "--model", args.model, *common, "--epochs", str(epochs), "--seed", str(args.seed),
                             "--out", ann])]
    if "rate" in codings:
        stages.append(("convert to rate SNN", ["convert", ann, "--coding", "rate", *common,
                                               "--timesteps", "8,32" if q else "4,8,16,32,64",
                                               "--calib", "256" if q else "512",
                                               "--out", os.path.join(out, "snn_rate.h5")]))
    if "rate" in codings:
        stages.append(("convert to reset-to-zero rate SNN", [
            "convert", ann, "--coding", "rate", *common, "--reset", "zero", "--timesteps", "32",
            "--calib", "256" if q else "512", "--finetune-epochs", "1" if q else "3",
            "--out", os.path.join(out, "snn_rate_zero.h5")]))
    if "ttfs" in codings:
        stages.append(("convert to TTFS SNN", ["convert", ann, "--coding", "ttfs", *common, "--time-bits", "6",
                                               "--calib", "256" if q else "512",
                                               "--out", os.path.join(out, "snn_ttfs.h5")]))
    for coding in codings:
        # TTFS fine-tunes through the analytic simulator (about 2 s an epoch on digits), so it gets a
        # longer schedule: 20 + 10 epochs lose 0.6 to 3 points at density 0.1 + 4 bits, 10 + 5 up to 4
        # (BENCHMARKS.md, compression of unseen networks)
        prune_epochs, quant_epochs = (1, 1) if q else ((20, 10) if coding == "ttfs" else (10, 5))
        # TTFS ranks weights over all layers at once: pruning every layer to the same 10% left LeNet's
        # 150-weight first convolution 15 weights and lost 1.1 to 3.1 points (mean 1.8, 5 of 6 draws
        # within 2), global ranking 0.3 to 1.7 (mean 1.1, all 6; BENCHMARKS.md, digits TTFS LeNet)
        scope = ["--scope", "global"] if coding == "ttfs" else []
        stages.append((f"compress {coding} SNN", [
            "compress", os.path.join(out, f"snn_{coding}.h5"), *common, "--density", str(args.density),
            "--bits", str(args.bits), *scope, "--attention", "--epochs", str(prune_epochs),
            "--quant-epochs", str(quant_epochs), "--out", os.path.join(out, f"snn_{coding}_compressed.h5")]))
    if "ttfs" in codings:
        energy = ["energy", os.path.join(out, "snn_ttfs.h5"), *common, "--hardware", "twin-column",
                  "--chips", str(chips), "--out", os.path.join(out, "report"), "--no-progress"]
        if "rate" in codings:
            energy += ["--rate-snn", os.path.join(out, "snn_rate.h5")]
        if q:
            energy += ["--samples", "120", "--sigmas", "0,0.2"]
        stages.append(("energy report", energy))
    if "rate" in codings:
        stages.append(("export NIR", ["export", os.path.join(out, "snn_rate_zero.h5"),
                                      "--nir", os.path.join(out, "snn_rate.nir")]))
    return stages


def run(args) -> dict:
    from spikec.cli.main import build_parser

    codings = [c.strip() for c in args.coding.split(",") if c.strip()]
    bad = [c for c in codings if c not in CODINGS]
    if bad or not codings:
        raise UsageError(f"--coding: unknown coding {', '.join(bad) or '(none)'}; choose from {', '.join(CODINGS)}")
    out = args.out or os.path.join("runs", time.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(out, exist_ok=True)
    parser = build_parser()
    stages = _stages(args, out, codings)
    results, rows = {}, []
    start = time.perf_counter()
    for i, (title, argv) in enumerate(stages, 1):
        print(f"\n[{i}/{len(stages)}] {title}: spikec {shlex.join(argv)}", flush=True)
        stage_args = parser.parse_args(argv)
        t0 = time.perf_counter()
        results[title] = stage_args._run(stage_args) or {}
        rows.append((title, time.perf_counter() - t0))
    summary = _summary(results, out, time.perf_counter() - start)
    _write_json(os.path.join(out, "summary.json"), summary)
    _print_table(summary, rows)
    return summary


def _summary(results: dict, out: str, seconds: float) -> dict:
    def get(stage, key):
        return results.get(stage, {}).get(key)

    rate, ttfs = results.get("convert to rate SNN", {}), results.get("convert to TTFS SNN", {})
    energy = results.get("energy report", {})
    return {
        "out": out,
        "seconds": seconds,
        "ann_accuracy": get("train ANN", "test_accuracy"),
        "rate_snn_accuracy": rate.get("snn_accuracy"),
        "ttfs_snn_accuracy": ttfs.get("snn_accuracy"),
        "compressed": {k.split()[1]: {kk: v.get(kk) for kk in ("accuracy_after", "density", "weight_bits", "compression_ratio")}
                       for k, v in results.items() if k.startswith("compress ")},
        "energy": energy,
        "nir": _nir_summary(results),
        "artifacts": sorted(os.listdir(out)),
    }


def _nir_summary(results: dict) -> dict:
    """The NIR file and the accuracy of the reset-to-zero network it holds, beside the soft-reset one."""
    if "export NIR" not in results:
        return {"nir": None, "skipped": "NIR export needs the rate SNN (TTFS windows have no NIR form)"}
    zero = results.get("convert to reset-to-zero rate SNN", {}).get("snn_accuracy") or {}
    soft = results.get("convert to rate SNN", {}).get("snn_accuracy") or {}
    steps = max(zero, default=None)
    return {"nir": results["export NIR"].get("nir"), "variant": "reset=zero, v_init=0, fine-tuned",
            "timesteps": steps, "accuracy": zero.get(steps), "soft_reset_accuracy": soft.get(steps)}


def _print_table(summary: dict, rows: list[tuple[str, float]]) -> None:
    def pct(v):
        return "-" if v is None else f"{100 * v:.2f}%"

    print("\n== spikec run: summary ==")
    print(f"{'stage':<24}{'seconds':>9}")
    for title, secs in rows:
        print(f"{title:<24}{secs:>9.1f}")
    print(f"ANN accuracy            {pct(summary['ann_accuracy'])}")
    rate = summary["rate_snn_accuracy"]
    if isinstance(rate, dict):
        print("rate SNN accuracy       " + ", ".join(f"T={t}: {pct(a)}" for t, a in rate.items()))
    if summary["ttfs_snn_accuracy"] is not None:
        print(f"TTFS SNN accuracy       {pct(summary['ttfs_snn_accuracy'])}")
    for coding, c in summary["compressed"].items():
        print(f"compressed {coding:<5}        {pct(c['accuracy_after'])} at density {c['density']:.3f}, "
              f"{c['weight_bits']} bits, {c['compression_ratio']:.1f}x smaller")
    e = summary["energy"]
    if e:
        print(f"energy report           {json.dumps({k: e[k] for k in list(e)[:4]}, default=str)}")
    print(f"artifacts in {summary['out']}: {', '.join(summary['artifacts'])}")


def _write_json(path: str, data: dict) -> None:
    from spikec.io.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")
