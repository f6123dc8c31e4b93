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


# ---------------------------------------------------------------- energy per MAC

def add_energy_per_mac(report: dict, macs: int) -> dict:
    """Add ``energy_per_mac_j`` (J per dense MAC of the ANN) next to every ``energy_per_inference_j`` in ``report``.

    Walks the whole report (main result, ablations, baselines, comparison entries), so every
    design carries the same normalisation; ``None`` where a design has no energy.
    """
    def walk(node):
        if isinstance(node, dict):
            e = node.get("energy_per_inference_j")
            if isinstance(e, dict) and "total" in e:
                node["energy_per_mac_j"] = None if e["total"] is None or not macs else e["total"] / macs
            for v in list(node.values()):
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(report)
    return report


# ---------------------------------------------------------------- HTML in human units

def _num(v, scale: float = 1.0, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float)):
        v = float(v) * scale
        if v == 0 or not math.isfinite(v):
            return f"{v:g}"
        return f"{v:.{digits}g}"
    return html.escape(str(v))


def nj(v) -> str:
    return _num(v, 1e9)


def us(v) -> str:
    return _num(v, 1e6)


def pj_mac(v) -> str:
    return _num(v, 1e12)


def pct(v) -> str:
    return "-" if v is None else f"{float(v) * 100:+.1f}%"


def acc(v) -> str:
    return "-" if v is None else f"{float(v) * 100:.2f}%"


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, str) and v.startswith("<"):
        return v
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return _num(v)
    return html.escape(str(v))


def _table(header: list[str], rows: list[list]) -> str:
    """Cells are pre-formatted strings (numbers formatted with :func:`_num` if not)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c if isinstance(c, str) else _fmt(c)}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _design_row(name: str, d: dict, saving=None) -> list:
    e = d.get("energy_per_inference_j", {}).get("total")
    return [html.escape(name), acc(d.get("accuracy")), nj(e), pj_mac(d.get("energy_per_mac_j")),
            us(d.get("latency_s")), pct(saving)]


def headline(report: dict) -> list[str]:
    """The comparison that matters, first: the PE against the rate SNNs at equal accuracy, beside ASTERS."""
    parts = []
    comp = report.get("comparison")
    header = ["design", "accuracy", "energy / inference (nJ)", "energy / MAC (pJ)", "latency (us)", "PE saving"]
    if comp is None:
        rows = [_design_row("twin-column PE", report)]
        for name in ("rate_snn_crossbar_iso_accuracy", "rate_snn_crossbar"):
            b = report["baselines"].get(name)
            if b and b["energy_per_inference_j"]["total"] is not None:
                rows.append(_design_row(f"{name.replace('_', ' ')} (T = {b.get('timesteps')})", b, b.get("pe_saving")))
        parts.append("<h2>PE against the rate SNN on the same crossbar</h2>")
        parts.append(_table(header, rows))
        return parts
    pe, alt = comp["pe"], comp["pe_wakeup_toggled"]
    label = lambda w: "PE with event-driven wake-up" if w else "PE (integrators on from the start of each run)"  # noqa: E731
    rows = [_design_row(label(pe["wakeup_on_input"]), pe), _design_row(label(alt["wakeup_on_input"]), alt)]
    verdicts = []
    for method, r in comp["rate"].items():
        if r.get("energy_per_inference_j", {}).get("total") is None:
            rows.append([html.escape(f"rate SNN, {method}"), "-", "-", "-", "-", html.escape(r.get("error", "n/a"))])
            continue
        bound = r.get("pe_saving_is_lower_bound")
        reach = "" if r["reached"] else (" (target not reached; search stopped: it already costs more than the "
                                         "verdict needs)" if bound else " (target not reached)")
        rows.append(_design_row(f"rate SNN, {method}, T = {r['timesteps']}{reach}", r, r["pe_saving"]))
        verdicts.append(f"{method}: PE saving {'at least ' if bound else ''}{pct(r['pe_saving'])} "
                        f"({pct(r['pe_saving_with_wakeup_toggled'])} with "
                        f"wake-up {'off' if pe['wakeup_on_input'] else 'on'}); ASTERS's figure "
                        + ("not comparable (the rate SNN never reached the target accuracy)" if r["meets_asters"] is None
                           else "met" if r["meets_asters"] else "not met"))
    ast = comp["asters"]
    parts.append("<h2>The comparison that matters: PE against rate SNNs at equal accuracy</h2>")
    parts.append(f"<p>Each rate SNN runs on the same crossbar at the fewest steps whose accuracy is within "
                 f"{comp['accuracy_margin'] * 100:g} point of the PE's (target {acc(comp['target_accuracy'])}). "
                 f"PE saving = 1 - E<sub>PE</sub>/E<sub>rate</sub>; positive: the PE uses less.</p>")
    parts.append(_table(header, rows))
    parts.append("<p><b>Beside ASTERS</b> ({}): {}. Here: {}.</p>".format(
        html.escape(ast["source"]), html.escape(ast["claim"]), html.escape("; ".join(verdicts) or "no rate baseline")))
    m = comp["mechanisms"]
    parts.append("<h3>Where the PE's savings come from (leave-one-out from all mechanisms on)</h3>")
    mrows = [[html.escape(n.replace("_", " ")), nj(m[n].get("without_j")), nj(m[n]["saving_j"]),
              pct(m[n].get("saving_fraction")), pct(m[n]["share"])]
             for n in ("power_gating", "tta", "wakeup")]
    mrows.append(["interaction", "-", nj(m["interaction"]["saving_j"]), "-", pct(m["interaction"]["share"])])
    mrows.append(["all three", nj(m["all_off_j"]), nj(m["saving_j"]), pct(m["saving_fraction"]), "+100.0%"])
    parts.append(_table(["mechanism", "energy without it (nJ)", "saving (nJ)", "saving (% of energy without it)",
                         "share of the savings"], mrows))
    parts.append(f"<p>All three on: {nj(m['all_on_j'])} nJ per inference; all off: {nj(m['all_off_j'])} nJ.</p>")
    return parts


def calibration_section(report: dict) -> list[str]:
    cal = report.get("calibration")
    if not cal:
        return []
    mo, me, r = cal["model"], cal["measured"], cal["ratio"]
    rows = [["energy per MAC (pJ)", pj_mac(mo["energy_per_mac_j"]), pj_mac(me["energy_per_mac_j"]),
             f"{r['energy_per_mac']:.3f}"],
            ["average power (mW)", _num(mo["power_w"], 1e3), _num(me["power_w"], 1e3), f"{r['power']:.3f}"]]
    return ["<h2>Calibration: this configuration's rate-coded crossbar on the measured macro's workload</h2>",
            f"<p>Workload: {html.escape(cal['workload'])}. Measured chip: {html.escape(cal['chip'])} "
            "(the figures match by construction only for the yan-vlsi2019 preset; see docs/hardware-model.md).</p>",
            _table(["figure", "model", "measured", "model / measured"], rows)]


def render_html(report: dict, pngs: dict[str, bytes]) -> str:
    """A self-contained page in human units: headline comparison, summary, figures, tables, config."""
    e = report["energy_per_inference_j"]
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>spikec energy report</title>",
             "<style>body{font-family:sans-serif;max-width:64em;margin:auto}table{border-collapse:collapse;"
             "margin:1em 0}td,th{border:1px solid #bbb;padding:2px 6px;text-align:right}"
             "th{background:#eee}img{max-width:100%}</style></head><body>",
             "<h1>Twin-column ReRAM PE: energy report</h1>"]
    parts += headline(report)
    parts.append("<h2>Summary</h2>")
    budget = report.get("tile_budget")
    tiles = "-" if report.get("tiles") is None else _num(report["tiles"]) + ("" if budget is None else f" of {budget}")
    parts.append(_table(["accuracy", "SNN accuracy", "energy / inference (nJ)", "energy / MAC (pJ)", "latency (us)",
                         "tiles", "spikes / inference", "chips", "samples"],
                        [[acc(report["accuracy"]), acc(report["snn"]["accuracy"]), nj(e["total"]),
                          pj_mac(report.get("energy_per_mac_j")), us(report["latency_s"]), tiles,
                          _num(report["spikes_per_inference"]), _num(report["chips"]), _num(report.get("samples"))]]))
    parts.append("<h2>Energy by component (nJ per inference)</h2>")
    parts.append(_table(list(e.keys()), [[nj(v) for v in e.values()]]))
    parts += calibration_section(report)
    titles = {"energy_breakdown": "Per-layer energy breakdown", "spikes_per_layer": "Spikes per layer",
              "tta_tradeoff": "TTA trade-off", "variation": "Accuracy against sigma, with and without MFTA",
              "baselines": "Baselines"}
    for name in FIGURES:
        if name in pngs:
            data = base64.b64encode(pngs[name]).decode()
            parts.append(f"<h2>{titles[name]}</h2><img alt='{name}' src='data:image/png;base64,{data}'>")
    parts.append("<h2>Layers (energies in nJ per inference)</h2>")
    parts.append(_table(["layer", "kind", "neurons on chip", "silent, off chip", "positions", "copies", "tiles", "total", "crossbar",
                         "neuron", "driver", "buffer", "static", "latency (us)", "spikes"],
                        [[html.escape(str(l["name"])), html.escape(str(l["kind"])), _num(l["neurons"]),
                          _num(l.get("neurons_off_chip", 0)),
                          _num(l["positions"]), _num(l["tiles"]["copies"]), _num(l["tiles"]["tiles"]),
                          *[nj(l["energy_per_inference_j"][k]) for k in ("total",) + PARTS], us(l["latency_s"]),
                          _num(l["spikes_per_inference"])] for l in report["layers"]]))
    parts.append("<h2>Ablations and baselines</h2>")
    rows = [_design_row("PE", report)]
    for name, a in report["ablations"].items():
        rows.append(_design_row(name.replace("_", " "), a))
    for name, b in report["baselines"].items():
        rows.append(_design_row(name.replace("_", " "), b, b.get("pe_saving")))
    parts.append(_table(["design", "accuracy", "energy / inference (nJ)", "energy / MAC (pJ)", "latency (us)",
                         "PE saving"], rows))
    parts.append("<h2>TTA curve</h2>")
    parts.append(_table(["fraction", "accuracy", "energy (nJ)", "latency (us)"],
                        [[_num(r["fraction"]), acc(r["accuracy"]), nj(r["energy_j"]), us(r["latency_s"])]
                         for r in report["tta"]]))
    sel = report.get("tta_selection")
    if sel:  # --tta-fraction auto: what the fraction was chosen on (training inputs, not the test set)
        parts.append(f"<p>TTA fraction {sel['fraction']:g} chosen on {sel['samples']} training inputs: the smallest "
                     f"that costs at most {100 * sel['tolerance']:.1f} points against "
                     f"{acc(sel['accuracy_without_tta'])} without TTA ("
                     + ", ".join(f"{r['fraction']:g}: {acc(r['accuracy'])}" for r in sel["curve"]) + ").</p>")
    parts.append("<h2>Variation</h2>")
    parts.append(_table(["sigma", "compensation", "accuracy mean", "accuracy std", "chips"],
                        [[_num(r["sigma"]), html.escape(r["compensation"]), acc(r["accuracy_mean"]),
                          acc(r["accuracy_std"]), _num(r["chips"])] for r in report["variation"]]))
    parts.append("<h2>Configuration (SI units, as in report.json)</h2>")
    docs = {d["name"]: d for d in field_docs()}
    parts.append(_table(["parameter", "value", "unit", "source"],
                        [[html.escape(k), _fmt(v), html.escape(docs.get(k, {}).get("unit", "")),
                          html.escape(docs.get(k, {}).get("source", ""))] for k, v in report["config"].items()]))
    parts.append("</body></html>")
    return "\n".join(parts)
