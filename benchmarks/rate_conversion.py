"""Rate-coded ANN-to-SNN conversion on the digits data: accuracy vs T, QCFS, max pooling, fine-tuning,
calibration time, and spikingjelly's ann2snn side by side (when it is installed).

    python benchmarks/rate_conversion.py                      # full run, writes benchmarks/results/rate_conversion.md
    python benchmarks/rate_conversion.py --quick --out /tmp/r.md   # a smoke run (few epochs, few T)

Every ANN is trained here with a fixed seed, on one CPU thread (the machine is shared; one thread
is the fastest and the most repeatable). Timings are medians of interleaved repetitions in this
process, so they compare like with like.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import statistics
import sys
import time

import torch

import spikec
from spikec.conversion.finetune import finetune
from spikec.conversion.normalize import calibrate
from spikec.conversion.prepare import prepare_ann
from spikec.conversion.qcfs import QCFS
from spikec.conversion.rate import convert_rate
from spikec.data import load_dataset
from spikec.models import build_model
from spikec.training import evaluate, train

STEPS = (1, 2, 4, 8, 16, 32, 64)
NORMS = ("percentile:99.9", "max", "channel:99.9")
MODELS = {
    # name: (build_model options, epochs, learning rate)
    "lenet": ({}, 60, 1e-2),
    "vgg": ({"depth": 11, "width": 0.25}, 30, 3e-3),
    "resnet": ({"depth": 20}, 30, 3e-3),
}
TARGET_T32 = {"lenet": 1.0, "vgg": 1.0, "resnet": 1.5}
CALIB = 512


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of lenet,vgg,resnet")
    parser.add_argument("--quick", action="store_true", help="few epochs and time steps (smoke test)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "rate_conversion.md"))
    parser.add_argument("--json", default=None, help="also write the raw results here")
    parser.add_argument("--from-json", default=None, help="only rewrite the report from results saved with --json")
    args = parser.parse_args(argv)
    if args.from_json:
        with open(args.from_json) as f:
            write_markdown(args.out, _int_keys(json.load(f)))
        return 0
    torch.set_num_threads(args.threads)
    steps = (2, 8, 32) if args.quick else STEPS
    train_data, test_data, _ = load_dataset("digits")
    calib = train_data.tensors[0][:CALIB]
    results = {"steps": list(steps), "models": {}}
    started = time.perf_counter()
    for name in args.models.split(","):
        cfg, epochs, lr = MODELS[name]
        epochs = 2 if args.quick else epochs
        log(f"== {name}")
        results["models"][name] = run_model(name, cfg, epochs, lr, steps, train_data, test_data, calib)
    results["maxpool"] = run_maxpool(steps, 2 if args.quick else MODELS["lenet"][1], train_data, test_data, calib)
    results["finetune"] = run_finetune(2 if args.quick else MODELS["lenet"][1], train_data, test_data, calib)
    results["seconds"] = time.perf_counter() - started
    results["machine"] = machine()
    results["command"] = "python " + " ".join([os.path.relpath(__file__)] + (argv if argv is not None else sys.argv[1:]))
    write_markdown(args.out, results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    log(f"wrote {args.out} ({results['seconds']:.0f} s)")
    return 0


def _int_keys(obj):
    """JSON turned the integer keys (T, L) into strings; turn them back."""
    if isinstance(obj, dict):
        return {(int(k) if isinstance(k, str) and k.isdigit() else k): _int_keys(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_int_keys(v) for v in obj]
    return obj


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def trained(name, cfg, epochs, lr, train_data, act=torch.nn.ReLU):
    torch.manual_seed(0)
    model = build_model(name, (1, 8, 8), 10, act=act, **cfg)
    start = time.perf_counter()
    train(model, train_data, epochs=epochs, lr=lr, seed=0, progress=False)
    return model.eval(), time.perf_counter() - start


def curve(snn, steps, test_data) -> tuple[dict, dict]:
    """Accuracy and spikes per neuron per inference at each T."""
    acc, spikes = {}, {}
    for T in steps:
        snn.timesteps = T
        with spikec.record(snn, first_spike_times=False) as rec:
            acc[T] = evaluate(snn, test_data)
        spikes[T] = rec.spikes_per_neuron
    return acc, spikes


def run_model(name, cfg, epochs, lr, steps, train_data, test_data, calib) -> dict:
    out = {"config": cfg, "epochs": epochs, "lr": lr}
    ann, seconds = trained(name, cfg, epochs, lr, train_data)
    out["ann_accuracy"] = evaluate(ann, test_data)
    out["train_seconds"] = seconds
    log(f"ANN {out['ann_accuracy']:.4f} ({seconds:.0f} s)")
    out["norms"] = {}
    for norm in NORMS:
        snn = convert_rate(ann, calib, norm=norm)
        acc, spikes = curve(snn, steps, test_data)
        out["norms"][norm] = {"accuracy": acc, "spikes_per_neuron": spikes, "seconds": snn.conversion["seconds"]}
        log(f"{norm}: {acc}")
    snn = convert_rate(ann, calib, v_init=0.0)  # what the half-threshold initial membrane buys
    out["v_init_zero"] = curve(snn, steps, test_data)[0]
    log(f"percentile, v_init=0: {out['v_init_zero']}")
    out["calibration"] = calibration_timing(ann, calib)
    out["spikingjelly"] = spikingjelly_side_by_side(ann, calib, steps, test_data)
    out["qcfs"] = {}
    for levels in (4, 8):
        qann, qseconds = trained(name, cfg, epochs, lr, train_data, act=lambda: QCFS(levels))
        snn = convert_rate(qann, calib)
        acc, spikes = curve(snn, steps, test_data)
        out["qcfs"][levels] = {"ann_accuracy": evaluate(qann, test_data), "accuracy": acc, "spikes_per_neuron": spikes,
                               "train_seconds": qseconds}
        log(f"QCFS L={levels}: ANN {out['qcfs'][levels]['ann_accuracy']:.4f} SNN {acc}")
        if 4 in steps:  # hybrid: 2 epochs of BPTT at T=4 on top of the QCFS conversion
            start = time.perf_counter()
            finetune(snn, train_data, epochs=2, lr=1e-3, timesteps=4)
            out["qcfs"][levels]["finetuned_t4"] = {"accuracy": evaluate(snn, test_data),
                                                   "seconds": time.perf_counter() - start}
            log(f"QCFS L={levels} fine-tuned at T=4: {out['qcfs'][levels]['finetuned_t4']}")
    return out


def calibration_timing(ann, calib, repeats: int = 7, batch_size: int = 256) -> dict:
    """Median time of calibration (one pass with statistics) against one ANN inference pass, interleaved."""
    prepared = prepare_ann(ann)
    times = {"ann_pass": [], **{norm: [] for norm in NORMS}}
    for _ in range(repeats):
        start = time.perf_counter()
        with torch.no_grad():
            for batch in calib.split(batch_size):
                ann(batch)
        times["ann_pass"].append(time.perf_counter() - start)
        for norm in NORMS:
            start = time.perf_counter()
            calibrate(prepared, calib, norm, batch_size)
            times[norm].append(time.perf_counter() - start)
    median = {k: statistics.median(v) for k, v in times.items()}
    return {"seconds": median, "ratio": {norm: median[norm] / median["ann_pass"] for norm in NORMS},
            "repeats": repeats}


def spikingjelly_side_by_side(ann, calib, steps, test_data, modes=("99.9%", "Max")) -> dict:
    """spikingjelly's ann2snn on the same ANN: accuracy at each T (cumulative output) and conversion time."""
    try:
        from spikingjelly.activation_based import functional
        from spikingjelly.activation_based.ann2snn import FXConverter, RateCodingRecipe
    except Exception as exc:  # not installed, or an API this script does not know
        return {"error": f"{type(exc).__name__}: {exc}"}
    from importlib.metadata import version

    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(calib), batch_size=256)
    out = {"version": version("spikingjelly")}
    for mode in modes:
        start = time.perf_counter()
        try:
            snn = FXConverter(recipe=RateCodingRecipe(loader, mode=mode), device="cpu").convert(copy.deepcopy(ann))
        except Exception as exc:
            out[mode] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0]}"}
            continue
        seconds = time.perf_counter() - start
        correct = {T: 0 for T in steps}
        total = 0
        snn.eval()
        with torch.no_grad():
            for x, y in zip(test_data.tensors[0].split(256), test_data.tensors[1].split(256)):
                functional.reset_net(snn)
                acc_out = 0
                for t in range(1, max(steps) + 1):
                    acc_out = acc_out + snn(x)
                    if t in correct:
                        correct[t] += int((acc_out.argmax(1) == y).sum())
                total += len(y)
        out[mode] = {"accuracy": {T: c / total for T, c in correct.items()}, "seconds": seconds}
        log(f"spikingjelly {mode}: {out[mode]['accuracy']}")
    return out


def run_maxpool(steps, epochs, train_data, test_data, calib) -> dict:
    """LeNet with max pooling: the two spike max-pool rules."""
    log("== lenet with max pooling")
    ann, _ = trained("lenet", {"pool": "max"}, epochs, MODELS["lenet"][2], train_data)
    out = {"ann_accuracy": evaluate(ann, test_data), "methods": {}}
    for method in ("count", "gate"):
        snn = convert_rate(ann, calib, maxpool=method)
        out["methods"][method] = curve(snn, steps, test_data)[0]
        log(f"maxpool {method}: {out['methods'][method]}")
    return out


def run_finetune(epochs, train_data, test_data, calib) -> dict:
    """Hybrid fine-tuning of the converted LeNet at small T: accuracy before and after 2 epochs."""
    log("== fine-tuning")
    cfg, _, lr = MODELS["lenet"]
    ann, _ = trained("lenet", cfg, epochs, lr, train_data)
    out = {"ann_accuracy": evaluate(ann, test_data), "epochs": 2, "lr": 1e-3, "runs": {}}
    for T in (2, 4):
        snn = convert_rate(ann, calib, timesteps=T)
        before = evaluate(snn, test_data)
        start = time.perf_counter()
        finetune(snn, train_data, epochs=2, lr=1e-3, timesteps=T)
        out["runs"][T] = {"before": before, "after": evaluate(snn, test_data), "seconds": time.perf_counter() - start}
        log(f"fine-tune T={T}: {out['runs'][T]}")
    return out


def machine() -> dict:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "date": datetime.date.today().isoformat()}


# ------------------------------------------------------------------------------------- report


def pct(x) -> str:
    return f"{100 * x:.2f}"


def write_markdown(path: str, r: dict) -> None:
    steps = r["steps"]
    m = r["machine"]
    lines = [
        "# Rate-coded conversion on digits",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores (a shared VM), 1 torch thread; Python {m['python']}, "
        f"torch {m['torch']}; {m['date']}. Command: `{r['command']}` ({r['seconds']:.0f} s).",
        "",
        f"Digits test split (360 samples); thresholds calibrated on the first {CALIB} training samples; direct "
        "input coding, IF neurons (reset by subtraction, initial membrane = threshold/2), membrane readout. "
        "ANNs trained here with Adam (cosine schedule), seed 0. Training repeats bit for bit on one "
        "machine (checked by re-running LeNet), but the run of 2026-11-22 in git history, with the same "
        "training and conversion code on another VM, trained different weights and its rows differ from "
        "these by up to 2.8 points, so rows near a target can flip between machines.",
        "",
        "## Targets",
        "",
        "| target | model | ANN | SNN | gap (points) | met |",
        "|---|---|---|---|---|---|",
    ]
    for name, res in r["models"].items():
        if 32 in res["norms"]["percentile:99.9"]["accuracy"]:
            snn = res["norms"]["percentile:99.9"]["accuracy"][32]
            gap = 100 * (res["ann_accuracy"] - snn)
            lines.append(f"| percentile 99.9, T=32, gap <= {TARGET_T32[name]} | {name} | {pct(res['ann_accuracy'])} | "
                         f"{pct(snn)} | {gap:.2f} | {'yes' if gap <= TARGET_T32[name] else 'no'} |")
        for levels, q in res["qcfs"].items():
            for T, limit in ((8, 1.0), (4, 2.0)):
                if T in q["accuracy"]:
                    gap = 100 * (q["ann_accuracy"] - q["accuracy"][T])
                    lines.append(f"| QCFS L={levels}, T={T}, gap <= {limit} | {name} | {pct(q['ann_accuracy'])} | "
                                 f"{pct(q['accuracy'][T])} | {gap:.2f} | {'yes' if gap <= limit else 'no'} |")
        ratio = res["calibration"]["ratio"]["percentile:99.9"]
        lines.append(f"| calibration time <= 2x one ANN pass (percentile) | {name} | | | ratio {ratio:.2f} | "
                     f"{'yes' if ratio <= 2.0 else 'no'} |")
    lines += ["", "## Models", ""]
    for name, res in r["models"].items():
        lines.append(f"- {name}: `build_model({name!r}, (1, 8, 8), 10, **{res['config']})`, {res['epochs']} epochs, "
                     f"lr {res['lr']:g}; QCFS variants use `act=lambda: QCFS(L)` (initial threshold 2.0), same "
                     "training.")
    lines += [
        "",
        "Notes. A target row marked 'no' is not met in this run (one seed per model). QCFS is built to be "
        "exact in expectation at T = L, so L=8 at T=4 runs below its design point. spikingjelly's "
        "RateCodingRecipe (layer-wise, default options) starts every membrane at 0; the row 'initial membrane "
        "0' converts the same ANN with spikec but without the half-threshold start, for comparison. "
        "spikingjelly's conversion time includes its calibration pass; spikec's includes tracing, BN folding, "
        "calibration and graph rewriting.",
    ]
    lines += ["", "## Accuracy (%) vs T", ""]
    header = "| model | conversion | ANN | " + " | ".join(f"T={T}" for T in steps) + " |"
    lines += [header, "|" + "---|" * (3 + len(steps))]
    for name, res in r["models"].items():
        for norm, n in res["norms"].items():
            lines.append(f"| {name} | spikec {norm} | {pct(res['ann_accuracy'])} | "
                         + " | ".join(pct(n["accuracy"][T]) for T in steps) + " |")
        if "v_init_zero" in res:
            lines.append(f"| {name} | spikec percentile:99.9, initial membrane 0 | {pct(res['ann_accuracy'])} | "
                         + " | ".join(pct(res["v_init_zero"][T]) for T in steps) + " |")
        sj = res["spikingjelly"]
        for mode in ("99.9%", "Max"):
            if isinstance(sj.get(mode), dict) and "accuracy" in sj[mode]:
                lines.append(f"| {name} | spikingjelly {sj['version']} {mode} | {pct(res['ann_accuracy'])} | "
                             + " | ".join(pct(sj[mode]["accuracy"][T]) for T in steps) + " |")
        for levels, q in res["qcfs"].items():
            lines.append(f"| {name} | spikec QCFS L={levels} (own ANN) | {pct(q['ann_accuracy'])} | "
                         + " | ".join(pct(q["accuracy"][T]) for T in steps) + " |")
    lines += ["", "## Spikes per neuron per inference (spikec.record)", "",
              "| model | conversion | " + " | ".join(f"T={T}" for T in steps) + " |", "|" + "---|" * (2 + len(steps))]
    for name, res in r["models"].items():
        for norm, n in res["norms"].items():
            lines.append(f"| {name} | {norm} | " + " | ".join(f"{n['spikes_per_neuron'][T]:.3f}" for T in steps) + " |")
        for levels, q in res["qcfs"].items():
            lines.append(f"| {name} | QCFS L={levels} | "
                         + " | ".join(f"{q['spikes_per_neuron'][T]:.3f}" for T in steps) + " |")
    lines += ["", "## Conversion and calibration time", "",
              "Median of interleaved repetitions; calibration = one forward pass of the BN-folded graph with "
              "activation statistics over the calibration samples, batches of 256.", "",
              "| model | one ANN pass (ms) | calibration percentile (ms, ratio) | max | channel | full conversion "
              "percentile (s) | spikingjelly conversion 99.9% (s) |", "|---|---|---|---|---|---|---|"]
    for name, res in r["models"].items():
        c = res["calibration"]
        s = c["seconds"]
        sj = res["spikingjelly"].get("99.9%", {})
        sj_time = f"{sj['seconds']:.3f}" if "seconds" in sj else "n/a"
        lines.append(f"| {name} | {1e3 * s['ann_pass']:.1f} | {1e3 * s['percentile:99.9']:.1f} "
                     f"({c['ratio']['percentile:99.9']:.2f}) | {1e3 * s['max']:.1f} ({c['ratio']['max']:.2f}) | "
                     f"{1e3 * s['channel:99.9']:.1f} ({c['ratio']['channel:99.9']:.2f}) | "
                     f"{res['norms']['percentile:99.9']['seconds']:.3f} | {sj_time} |")
    mp = r["maxpool"]
    lines += ["", "## Spike-based max pooling (LeNet with max pooling, percentile 99.9)", "",
              f"ANN {pct(mp['ann_accuracy'])}%.", "",
              "| rule | " + " | ".join(f"T={T}" for T in steps) + " |", "|" + "---|" * (1 + len(steps))]
    for method, acc in mp["methods"].items():
        lines.append(f"| {method} | " + " | ".join(pct(acc[T]) for T in steps) + " |")
    lines += ["", "## QCFS conversion, then 2 epochs of hybrid fine-tuning at T=4 (Adam lr 1e-3)", "",
              "| model | L | ANN | converted T=4 | fine-tuned T=4 | seconds |", "|---|---|---|---|---|---|"]
    for name, res in r["models"].items():
        for levels, q in res["qcfs"].items():
            if "finetuned_t4" in q:
                lines.append(f"| {name} | {levels} | {pct(q['ann_accuracy'])} | {pct(q['accuracy'][4])} | "
                             f"{pct(q['finetuned_t4']['accuracy'])} | {q['finetuned_t4']['seconds']:.1f} |")
    ft = r["finetune"]
    lines += ["", f"## Hybrid fine-tuning (LeNet, {ft['epochs']} epochs, Adam lr {ft['lr']:g}, BPTT at the same T)", "",
              f"ANN {pct(ft['ann_accuracy'])}%.", "", "| T | converted | fine-tuned | seconds |", "|---|---|---|---|"]
    for T, run in ft["runs"].items():
        lines.append(f"| {T} | {pct(run['before'])} | {pct(run['after'])} | {run['seconds']:.1f} |")
    sj_err = {n: res["spikingjelly"]["error"] for n, res in r["models"].items() if "error" in res["spikingjelly"]}
    if sj_err:
        lines += ["", "spikingjelly not run: " + "; ".join(f"{n}: {e}" for n, e in sj_err.items())]
    tmp = path + ".tmp"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
