"""Calibration against the measured Yan et al. macro, and the PE against rate SNNs at equal accuracy.

1. ``yan-vlsi2019``: the rate-coded crossbar model on the macro workload (docs/hardware-model.md,
   "Calibration") against the measured 0.257 pJ/MAC and 1.52 mW (target: each within 25%), its
   sensitivity to the stated input activity, and the twin-column figures derived from it.
2. Digits (LeNet, VGG-11 x0.25; the models and cache files of ``benchmarks/energy.py``): the
   twin-column PE, with and without event-driven wake-up, against percentile- and QCFS-converted
   rate SNNs on the same crossbar at the fewest steps within one point of the PE's accuracy, and
   the shares of power gating, TTA and wake-up in the PE's savings, beside ASTERS's > 34.7%.
3. Optionally TTFS checkpoints on CIFAR-10 (``--cifar SNN.pt [...] --cifar-data DIR``) on a
   seeded stratified draw of ``--samples`` test images.

Run: ``python benchmarks/energy_comparison.py [--cache DIR]`` (writes
``benchmarks/results/energy_comparison.md``).
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time

import torch

from spikec.conversion.ttfs import convert_ttfs
from spikec.data import load_dataset
from spikec.data.sample import stratified_tensors
from spikec.hardware.baselines import RateBaselineOptions
from spikec.hardware.calibration import (YAN_VLSI2019, MacroWorkload, compare_with_chip, derive_twin_column,
                                         macro_figures)
from spikec.hardware.comparison import PERuns, equal_accuracy_comparison
from spikec.hardware.config import preset
from spikec.hardware.evaluate import PEModel
from spikec.hardware.timing import RunOptions
from spikec.models import build_model
from spikec.training import evaluate, train

MODELS = {  # as in benchmarks/energy.py (same cache files)
    "lenet": dict(arch="lenet", cfg={}, epochs=30, lr=1e-3),
    "vgg": dict(arch="vgg", cfg=dict(depth=11, width=0.25, hidden=[128]), epochs=30, lr=1e-3),
}


def trained_ann(name, spec, train_data, cache, log):
    torch.manual_seed(0)
    ann = build_model(spec["arch"], (1, 8, 8), 10, **spec["cfg"])
    path = os.path.join(cache, f"energy_{name}_{spec['epochs']}ep.pt") if cache else None
    if path and os.path.exists(path):
        ann.load_state_dict(torch.load(path, weights_only=True))
        log(f"[{name}] loaded {path}")
    else:
        train(ann, train_data, epochs=spec["epochs"], lr=spec["lr"], batch_size=64, seed=0, progress=False)
        if path:
            os.makedirs(cache, exist_ok=True)
            torch.save(ann.state_dict(), path)
    return ann.eval()


def compare(name, snn, x, y, x_train, y_train, options, log) -> dict:
    config = preset("twin-column")
    model = PEModel.from_snn(snn, config)
    t = time.perf_counter()
    runs = PERuns(model, model.nominal(), x, y, RunOptions.from_config(config))
    c = equal_accuracy_comparison(model, snn, runs, x_train, y_train, options)
    c["seconds"] = time.perf_counter() - t
    c["ann_macs"] = model.program.ann_macs
    log(f"[{name}] comparison in {c['seconds']:.0f} s")
    return c


def pj(v):
    return "-" if v is None else f"{v * 1e12:.3f}"


def nj(v):
    return "-" if v is None else f"{v * 1e9:.2f}"


def pct(v):
    return "n/a" if v is None else f"{v:+.1%}"


def _verdict(rate: dict, ratio: float) -> str:
    if not rate["reached"]:
        return "not comparable (rate SNN below the target at every T)"
    return "met" if 1 - ratio >= 0.347 else "not met"


def render(cal: dict, results: list[tuple[str, dict]], args) -> str:
    c = cal["check"]
    lines = [
        "# Calibration against a measured chip, and the PE against rate SNNs at equal accuracy",
        "",
        f"Generated {datetime.date.today()} by `python benchmarks/energy_comparison.py"
        f"{' --cache ' + args.cache if args.cache else ''}` on {platform.machine()}, {os.cpu_count()} logical CPUs "
        f"(shared VM, no GPU), torch {torch.__version__}. Model and every figure: `docs/hardware-model.md`.",
        "",
        "## yan-vlsi2019: the rate-coded crossbar model against the measured macro",
        "",
        f"Workload: {c['workload']}.",
        "",
        "| figure | model | measured (Yan et al., VLSI 2019) | model / measured | target |",
        "|---|---|---|---|---|",
        f"| energy per MAC (pJ) | {pj(c['model']['energy_per_mac_j'])} | {pj(c['measured']['energy_per_mac_j'])} "
        f"| {c['ratio']['energy_per_mac']:.3f} | within 25%: {'met' if abs(c['ratio']['energy_per_mac'] - 1) <= .25 else 'not met'} (calibrated) |",
        f"| average power (mW) | {c['model']['power_w'] * 1e3:.3f} | {c['measured']['power_w'] * 1e3:.3f} "
        f"| {c['ratio']['power']:.3f} | within 25%: {'met' if abs(c['ratio']['power'] - 1) <= .25 else 'not met'} (check: MAC rate) |",
        "",
        "Split of the model's energy per MAC (pJ): " + ", ".join(
            f"{k} {v / MacroWorkload().macs * 1e12:.3f}" for k, v in c["model"]["components_j"].items() if v),
        "",
        "Sensitivity to the stated input activity (pJ/MAC): " + ", ".join(
            f"a = {a:g}: {pj(v)}" for a, v in cal["sensitivity"]),
        "",
        "Twin-column figures derived from it (45 nm, 0.9 V): " + ", ".join(
            f"`{k}` = {v:g}" for k, v in cal["derived"].items()),
        "",
        "## The PE against rate SNNs on the same crossbar at equal accuracy",
        "",
        "Twin-column preset (circuit figures derived from the calibration), nominal chip. Rate SNNs at the fewest "
        "of T = 8..256 steps within one point of the PE's accuracy. PE saving = 1 - E_PE / E_rate (positive: the PE "
        "uses less); ASTERS (DAC 2022) reports > 34.7% below existing spiking designs.",
        "",
        "| model | samples | PE acc | PE nJ (pJ/MAC) | PE + wake-up nJ | rate | T | rate acc | rate nJ (pJ/MAC) "
        "| PE saving | with wake-up | ASTERS >= 34.7% |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results:
        pe, alt = r["pe"], r["pe_wakeup_toggled"]
        macs = r["ann_macs"]
        wake_e = alt if alt["wakeup_on_input"] else pe
        base_e = pe if not pe["wakeup_on_input"] else alt
        for method, b in r["rate"].items():
            if b["energy_per_inference_j"]["total"] is None:
                lines.append(f"| {name} | {r['samples']} | | | | {method} | - | - | error: {b.get('error')} | | | |")
                continue
            e = b["energy_per_inference_j"]["total"]
            lines.append(
                f"| {name} | {r['samples']} | {pe['accuracy']:.2%} | {nj(base_e['energy_per_inference_j']['total'])} "
                f"({pj(base_e['energy_per_inference_j']['total'] / macs)}) | {nj(wake_e['energy_per_inference_j']['total'])} "
                f"| {method} | {b['timesteps']}{'' if b['reached'] else ' (not reached)'} | {b['accuracy']:.2%} "
                f"| {nj(e)} ({pj(e / macs)}) | {pct(1 - base_e['energy_per_inference_j']['total'] / e)} "
                f"| {pct(1 - wake_e['energy_per_inference_j']['total'] / e)} "
                f"| {_verdict(b, min(base_e['energy_per_inference_j']['total'], wake_e['energy_per_inference_j']['total']) / e)} |")
    lines += ["", "### Where the PE's savings come from (leave-one-out from power gating + TTA + wake-up all on)", "",
              "| model | all on nJ | all off nJ | power gating: saving / share | TTA: saving / share "
              "| wake-up: saving / share | interaction share |", "|---|---|---|---|---|---|---|"]
    for name, r in results:
        m = r["mechanisms"]
        cell = lambda k: f"{nj(m[k]['saving_j'])} nJ / {pct(m[k]['share'])}"  # noqa: E731
        lines.append(f"| {name} | {nj(m['all_on_j'])} | {nj(m['all_off_j'])} | {cell('power_gating')} | {cell('tta')} "
                     f"| {cell('wakeup')} | {pct(m['interaction']['share'])} |")
    lines += ["", "### Rate SNN step search (accuracy / nJ at each T tried)", ""]
    for name, r in results:
        for method, b in r["rate"].items():
            if "search" in b:
                lines.append(f"- {name}, {method}: " + ", ".join(
                    f"T={s['timesteps']}: {s['accuracy']:.2%} / {nj(s['energy_j'])}" for s in b["search"]))
    lines += ["", "Run times (comparison only, 1 thread): " + ", ".join(
        f"{name} {r['seconds']:.0f} s" for name, r in results), ""]
    return "\n".join(lines)


def calibration() -> dict:
    yan = preset("yan-vlsi2019")
    return {"check": compare_with_chip(yan, YAN_VLSI2019),
            "sensitivity": [(a, macro_figures(yan, MacroWorkload(input_activity=a))["energy_per_mac_j"])
                            for a in (0.1, 0.25, 0.5)],
            "derived": derive_twin_column(yan, preset("twin-column"))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", default=None, help="folder keeping the trained digits ANNs (benchmarks/energy.py's)")
    p.add_argument("--models", default="lenet,vgg")
    p.add_argument("--cifar", nargs="*", default=[], metavar="SNN", help="TTFS SNN checkpoints on CIFAR-10")
    p.add_argument("--cifar-data", default="/work/shared/data/cifar10")
    p.add_argument("--samples", type=int, default=1000, help="stratified CIFAR test draw (default 1000)")
    p.add_argument("--qcfs-epochs", type=int, default=5)
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "energy_comparison.md"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    cal = calibration()
    options = RateBaselineOptions(qcfs_epochs=args.qcfs_epochs)
    results = []
    if args.models:
        tr, te, _ = load_dataset("digits")
        x, y = te.tensors
        calib_x, _ = stratified_tensors(tr.tensors, 512, 0)
        for name in args.models.split(","):
            ann = trained_ann(name, MODELS[name], tr, args.cache, log)
            snn = convert_ttfs(ann, calib_x, time_bits=6)
            r = compare(name, snn, x, y, *tr.tensors, options, log)
            r["samples"] = int(x.shape[0])
            r["ann_accuracy"] = evaluate(ann, te)
            results.append((name, r))
    if args.cifar:
        from spikec.checkpoint import load_model

        tr, te, _ = load_dataset(args.cifar_data)
        x, y = stratified_tensors(te.tensors, args.samples, 0)
        for path in args.cifar:
            snn, _ = load_model(path)
            r = compare(os.path.basename(path), snn, x, y, *tr.tensors, options, log)
            r["samples"] = int(x.shape[0])
            results.append((os.path.basename(path), r))
    text = render(cal, results, args)
    from spikec.io.atomic import atomic_write_text

    atomic_write_text(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
