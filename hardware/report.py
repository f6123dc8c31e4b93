"""Writing an energy study to disk: ``report.json``, ``report.html``, ``figures/*.png``, ``events.h5``.

Every file is written to a temporary name in the output folder and renamed into place, so a
reader sees either the complete file or none. The HTML embeds its figures as base64 PNGs, so it
opens in a browser without a server.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from pathlib import Path

from spikec.hardware.config import field_docs
from spikec.io.atomic import atomic_path, atomic_write_bytes, atomic_write_text

FIGURES = ("energy_breakdown", "spikes_per_layer", "tta_tradeoff", "variation", "baselines")
PARTS = ("crossbar", "neuron", "driver", "buffer", "static")


def write_report(study, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write all report files of ``study`` (:class:`~spikec.hardware.study.Study`) under ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "html": out / "report.html", "events": out / "events.h5"}
    atomic_write_text(paths["json"], json.dumps(study.report, indent=2, default=_plain) + "\n")
    pngs = make_figures(study.report)
    for name, data in pngs.items():
        paths[name] = out / "figures" / f"{name}.png"
        atomic_write_bytes(paths[name], data)
    atomic_write_text(paths["html"], render_html(study.report, pngs))
    write_events(paths["events"], study.events, study.report)
    return paths


def _plain(obj):
    try:
        return float(obj)
    except (TypeError, ValueError):
        return str(obj)


# ---------------------------------------------------------------- events.h5

def write_events(path: Path, events: dict, report: dict) -> None:
    """Per-layer spike-time histograms and per-sample totals (``[chips, samples]``) as HDF5."""
    import h5py
    import numpy as np

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["window_steps"] = int(events.get("window_steps", 0))
        f.attrs["accuracy"] = float(report["accuracy"])
        f.attrs["energy_per_inference_j"] = float(report["energy_per_inference_j"]["total"])
        f.attrs["latency_s"] = float(report["latency_s"])
        g = f.create_group("layers")
        for name, hist in events.get("histograms", {}).items():
            lg = g.create_group(name)
            lg.create_dataset("spike_time_histogram", data=np.asarray(hist, dtype=np.float64))
            lg.attrs["description"] = "spikes per time step of the layer's window, summed over samples and chips"
        s = f.create_group("samples")
        for name, arr in events.get("per_sample", {}).items():
            a = np.asarray(arr.detach().cpu() if hasattr(arr, "detach") else arr)
            s.create_dataset(name, data=a.astype(np.int8) if a.dtype == bool else a.astype(np.float64))
        s.attrs["shape"] = "[chips, samples]"


# ---------------------------------------------------------------- figures

def make_figures(report: dict) -> dict[str, bytes]:
    """The report's figures as PNG bytes, keyed by :data:`FIGURES` names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = {}
    layers = report["layers"]
    names = [l["name"] for l in layers]

    fig, ax = plt.subplots(figsize=(7, 3.8))
    bottom = [0.0] * len(layers)
    for part in PARTS:
        vals = [l["energy_per_inference_j"][part] * 1e9 for l in layers]
        ax.bar(names, vals, bottom=bottom, label=part)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_ylabel("energy per inference (nJ)")
    ax.set_title("Energy per layer and component")
    ax.legend(fontsize=8)
    ax.tick_params(axis="x", rotation=30)
    figs["energy_breakdown"] = _png(fig, plt)

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(names, [l["spikes_per_inference"] for l in layers], label="PE (after TTA)")
    snn = [l.get("snn_spikes_per_inference") or 0.0 for l in layers]
    ax.plot(names, snn, "k.", label="SNN (spikec.record)")
    ax.set_ylabel("spikes per inference")
    ax.set_title("Spikes per layer")
    ax.legend(fontsize=8)
    ax.tick_params(axis="x", rotation=30)
    figs["spikes_per_layer"] = _png(fig, plt)

    tta = report["tta"]
    fr = [r["fraction"] for r in tta]
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.2))
    for ax, key, scale, label in ((axes[0], "accuracy", 1.0, "accuracy"), (axes[1], "energy_j", 1e9, "energy (nJ)"),
                                  (axes[2], "latency_s", 1e6, "latency (us)")):
        ax.plot(fr, [r[key] * scale for r in tta], "o-")
        ax.set_xlabel("TTA fraction")
        ax.set_ylabel(label)
    fig.suptitle("TTA trade-off on the nominal chip (run stops once this fraction of its neurons fired)")
    figs["tta_tradeoff"] = _png(fig, plt)

    fig, ax = plt.subplots(figsize=(7, 3.5))
    modes = sorted({r["compensation"] for r in report["variation"]}, key=["none", "mfta", "ideal"].index)
    for mode in modes:
        rows = [r for r in report["variation"] if r["compensation"] == mode]
        ax.errorbar([r["sigma"] for r in rows], [r["accuracy_mean"] for r in rows],
                    yerr=[r["accuracy_std"] for r in rows], marker="o", capsize=3, label=mode)
    ax.set_xlabel("sigma of log-normal conductance variation")
    ax.set_ylabel("accuracy")
    chips = report["variation"][0]["chips"] if report["variation"] else 0
    ax.set_title(f"Accuracy under variation ({chips} chips per point)")
    ax.legend(fontsize=8)
    figs["variation"] = _png(fig, plt)

    fig, ax = plt.subplots(figsize=(7, 3.5))
    labels, vals = _energy_bars(report)
    ax.bar(labels, [v * 1e9 for v in vals], color=["C0"] * 3 + ["C1"] * (len(vals) - 3))
    ax.set_yscale("log")
    ax.set_ylabel("energy per inference (nJ)")
    ax.set_title("Twin-column PE, ablations and baselines")
    ax.tick_params(axis="x", rotation=30)
    figs["baselines"] = _png(fig, plt)
    return figs


def _energy_bars(report: dict) -> tuple[list[str], list[float]]:
    labels = ["PE", "PE no gating", "PE no TTA"]
    vals = [report["energy_per_inference_j"]["total"],
            report["ablations"]["no_power_gating"]["energy_per_inference_j"]["total"],
            report["ablations"]["no_tta"]["energy_per_inference_j"]["total"]]
    for name, b in report["baselines"].items():
        if b["energy_per_inference_j"]["total"] is not None:
            labels.append(name.replace("_", " "))
            vals.append(b["energy_per_inference_j"]["total"])
    return labels, vals


def _png(fig, plt) -> bytes:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


# ---------------------------------------------------------------- HTML

def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        if v == 0 or not math.isfinite(v):
            return str(v)
        return f"{v:.4g}"
    return html.escape(str(v))


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(report: dict, pngs: dict[str, bytes]) -> str:
    """A self-contained page: summary, figures (inline PNG), per-layer, baselines, TTA, variation, config."""
    e = report["energy_per_inference_j"]
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>spikec energy report</title>",
             "<style>body{font-family:sans-serif;max-width:60em;margin:auto}table{border-collapse:collapse;"
             "margin:1em 0}td,th{border:1px solid #bbb;padding:2px 6px;text-align:right}"
             "th{background:#eee}img{max-width:100%}</style></head><body>",
             "<h1>Twin-column ReRAM PE: energy report</h1>"]
    parts.append(_table(["accuracy", "SNN accuracy", "energy / inference (J)", "latency (s)", "spikes / inference", "chips"],
                        [[report["accuracy"], report["snn"]["accuracy"], e["total"], report["latency_s"],
                          report["spikes_per_inference"], report["chips"]]]))
    parts.append("<h2>Energy by component (J per inference)</h2>")
    parts.append(_table(list(e.keys()), [list(e.values())]))
    titles = {"energy_breakdown": "Per-layer energy breakdown", "spikes_per_layer": "Spikes per layer",
              "tta_tradeoff": "TTA trade-off", "variation": "Accuracy against sigma, with and without MFTA",
              "baselines": "Baselines"}
    for name in FIGURES:
        if name in pngs:
            data = base64.b64encode(pngs[name]).decode()
            parts.append(f"<h2>{titles[name]}</h2><img alt='{name}' src='data:image/png;base64,{data}'>")
    parts.append("<h2>Layers</h2>")
    parts.append(_table(["layer", "kind", "neurons", "positions", "tiles", "total (J)", "crossbar", "neuron",
                         "driver", "buffer", "static", "latency (s)", "spikes"],
                        [[l["name"], l["kind"], l["neurons"], l["positions"], l["tiles"]["tiles"],
                          *[l["energy_per_inference_j"][k] for k in ("total",) + PARTS], l["latency_s"],
                          l["spikes_per_inference"]] for l in report["layers"]]))
    parts.append("<h2>Ablations and baselines</h2>")
    rows = [["PE", e["total"], report["latency_s"], report["accuracy"], "-"]]
    for name, a in report["ablations"].items():
        rows.append([name, a["energy_per_inference_j"]["total"], a["latency_s"], a["accuracy"], "-"])
    for name, b in report["baselines"].items():
        rows.append([name, b["energy_per_inference_j"]["total"], b.get("latency_s"), b.get("accuracy"), b.get("pe_saving")])
    parts.append(_table(["design", "energy (J)", "latency (s)", "accuracy", "PE saving"], rows))
    parts.append("<h2>TTA curve</h2>")
    parts.append(_table(["fraction", "accuracy", "energy (J)", "latency (s)"],
                        [[r["fraction"], r["accuracy"], r["energy_j"], r["latency_s"]] for r in report["tta"]]))
    parts.append("<h2>Variation</h2>")
    parts.append(_table(["sigma", "compensation", "accuracy mean", "accuracy std", "chips"],
                        [[r["sigma"], r["compensation"], r["accuracy_mean"], r["accuracy_std"], r["chips"]]
                         for r in report["variation"]]))
    parts.append("<h2>Configuration</h2>")
    docs = {d["name"]: d for d in field_docs()}
    parts.append(_table(["parameter", "value", "unit", "source"],
                        [[k, v, docs.get(k, {}).get("unit", ""), docs.get(k, {}).get("source", "")]
                         for k, v in report["config"].items()]))
    parts.append("</body></html>")
    return "\n".join(parts)
