"""``results.json`` (everything) and ``results.md`` (the tables a reader wants) under one folder, atomically."""
from __future__ import annotations

import json
import math
import os

from spikec.io.atomic import atomic_write_text

TITLES = {"correctness": "(1) Every backend against the torch reference",
          "kernels": "(2) Multi-step LIF kernels against snntorch, norse and spikingjelly",
          "train_step": "(3) One SNN training step against spikingjelly",
          "cifar": "(4) CIFAR-10 ANN training on the device, then rate conversion"}


def write(results: dict, out_dir: str) -> tuple[str, str]:
    os.makedirs(out_dir, exist_ok=True)
    json_path, md_path = os.path.join(out_dir, "results.json"), os.path.join(out_dir, "results.md")
    atomic_write_text(json_path, json.dumps(_strict(results), indent=1, default=str, allow_nan=False) + "\n")
    atomic_write_text(md_path, markdown(results))
    return json_path, md_path


def _strict(value):
    """Plain JSON: non-finite floats (an infinite error of a wrong-shaped result) become strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


def _table(header: list[str], rows: list[list]) -> list[str]:
    def cell(v):
        return "-" if v is None else str(v)

    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(cell(v) for v in row) + " |" for row in rows]


def markdown(results: dict) -> str:
    env = results["environment"]
    v = env["versions"]
    lines = ["# spikec GPU suite" + (" (smoke run on CPU: toy sizes, timings meaningless)" if results["smoke"] else ""),
             "",
             f"- Command: `{results['command']}`",
             f"- Date (UTC): {env['date_utc']}; budget {results['budget_s']:.0f} s, used {results['used_s']:.0f} s",
             f"- Device: {env['device']}" + (f", {env['gpu']} (compute capability {env.get('capability')}, "
                                            f"{env.get('gpu_memory_gib')} GiB, {env.get('multiprocessors')} SMs)"
                                            if env.get("gpu") else ""),
             f"- Driver {env.get('driver') or '-'}, CUDA (torch build) {env.get('torch_cuda') or '-'}, "
             f"torch {v.get('torch')}, Triton {v.get('triton') or '-'}, Python {env['python']}",
             f"- Peers: snntorch {v.get('snntorch') or 'absent'}, norse {v.get('norse') or 'absent'}, "
             f"spikingjelly {v.get('spikingjelly') or 'absent'}; spikec {v.get('spikec') or '-'}",
             "", "| part | status | seconds | note |", "|---|---|---|---|"]
    for name, part in results["parts"].items():
        note = part.get("reason") or part.get("truncated") or ""
        lines.append(f"| {TITLES.get(name, name)} | {part['status']} | {part.get('seconds', 0)} | {note} |")
    for name, part in results["parts"].items():
        render = RENDERERS.get(name)
        if render is not None and part["status"] not in ("skipped", "error"):
            lines += ["", f"## {TITLES[name]}", ""] + render(part)
        elif part["status"] == "error":
            lines += ["", f"## {TITLES.get(name, name)}", "", "```"] + part.get("traceback", []) + ["```"]
    return "\n".join(lines) + "\n"


def _correctness(part: dict) -> list[str]:
    rows, failures = [], []
    for b in part["backends"]:
        if b["status"] == "skipped":
            rows.append([b["backend"], b["device"], "skipped", "-", "-", b["reason"]])
            continue
        worst = {}
        for r in b["rows"]:
            if "error" in r:
                failures.append([b["backend"], b["device"], r["T"], r["neurons"], r["dtype"], r["reset"],
                                 r["detach_reset"], r["surrogate"], r["parameters"], "-", "-", r["error"]])
                continue
            for g in r["grads_judged"]:
                key = f"{r['dtype']}"
                worst[key] = max(worst.get(key, 0.0), r["grad_rel_error"][g] / r["grad_tolerance"])
            if not r["passed"]:
                failures.append([b["backend"], b["device"], r["T"], r["neurons"], r["dtype"], r["reset"],
                                 r["detach_reset"], r["surrogate"], r["parameters"], r["spike_mismatches"],
                                 f"{r['membrane_max_diff']:.3g}", r["grad_rel_error"]])
        worst_txt = ", ".join(f"{k} {v:.2f}" for k, v in worst.items())
        rows.append([b["backend"], b["device"], b["status"], f"{b['cases'] - b['failed_cases']}/{b['cases']}",
                     worst_txt, b.get("truncated", "")])
    out = ["Spikes and final membrane must equal the reference exactly; gradient errors are relative to the "
           "float64 reference and shown as a fraction of the dtype's tolerance (worst case per dtype, <= 1 passes).",
           ""] + _table(["backend", "tensors on", "status", "cases passed", "worst gradient error / tolerance", "note"],
                        rows)
    if failures:
        out += ["", "Failed cases:", ""] + _table(
            ["backend", "device", "T", "N", "dtype", "reset", "detach", "surrogate", "params", "spike mismatches",
             "membrane diff", "gradient errors (or the error raised)"], failures[:40])
    return out


def _kernels(part: dict) -> list[str]:
    out = _table(["dtype", "N", "clone ms", "copy-into ms", "copy GB/s"],
                 [[c["dtype"], f"2^{c['N'].bit_length() - 1}", c["clone_ms"], c["copy_into_ms"], c["copy_GBps"]]
                  for c in part["copies"]])
    out += ["", "GB/s counts the least traffic the update needs (forward: one copy's worth, forward+backward: "
                "three); copy fraction = that over the copy's bandwidth.", ""]
    out += _table(["dtype", "N", "mode", "method", "ms", "GB/s", "copy fraction", "time / spikec", "spike agreement"],
                  [[r["dtype"], f"2^{r['N'].bit_length() - 1}", r["mode"], r["method"], r["ms"], r["GBps"],
                    r["copy_fraction"], r["time_over_spikec"], r["spike_agreement"]] for r in part["rows"]])
    if part["skipped_methods"]:
        out += ["", "Not timed:", ""] + [f"- {k}: {v}" for k, v in part["skipped_methods"].items()]
    if part.get("targets"):
        out += ["", "Targets (at the largest N measured):", ""]
        for dtype, t in part["targets"].items():
            out.append(f"- {dtype}, N=2^{t['N'].bit_length() - 1}: " + "; ".join(
                f"{k}: {v if v is not None else 'not measured'}" for k, v in t.items() if k != "N"))
    return out


def _train_step(part: dict) -> list[str]:
    rows, errors = [], []
    for m in part["models"]:
        if "error" in m:
            errors.append(f"- {m['model']}: {m['error']}")
        for r in m["rows"]:
            rows.append([m["model"], m["batch"], m["T"], m["autocast"], r["method"], r["ms_per_step"],
                         r["images_per_s"], r["time_over_spikec"], r["peak_memory_mib"], r["last_loss"],
                         r["eval_argmax_agreement_vs_spikec"]])
    out = _table(["model", "batch", "T", "autocast", "neuron", "ms / step", "images / s", "time / spikec",
                  "peak MiB", "last loss", "eval argmax agreement"], rows)
    if errors:
        out += ["", "Failed:", ""] + errors
    if part.get("skipped"):
        out += ["", "Not run:", ""] + [f"- {k}: {v}" for k, v in part["skipped"].items()]
    return out


def _cifar(part: dict) -> list[str]:
    ann = part["ann"]
    out = [f"- Data: {part['data']} ({part['train_samples']} train / {part['test_samples']} test, "
           f"{part['input_shape']}, held on {part['data_device']}; loaded in {part['load_seconds']} s)",
           f"- ANN: {ann['model']} width {ann['width']}, {ann['epochs']} epochs of {ann['optimizer']} lr {ann['lr']} "
           f"batch {ann['batch']}: {ann['train_seconds']} s; test accuracy by epoch {ann['test_accuracy']}",
           f"- Rate conversion: {part['conversion']['calibration_samples']} calibration samples, "
           f"{part['conversion']['seconds']} s", ""]
    out += _table(["T", "SNN test accuracy", "seconds"], [[r["T"], r["test_accuracy"], r["seconds"]]
                                                          for r in part["snn"]])
    return out


RENDERERS = {"correctness": _correctness, "kernels": _kernels, "train_step": _train_step, "cifar": _cifar}
