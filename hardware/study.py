"""The full energy study behind ``spikec energy``: main run, ablations, TTA curve, variation, baselines.

:func:`energy_study` wires the stages (map, simulate, account) and returns the JSON-ready report
plus the arrays ``events.h5`` stores; :mod:`spikec.hardware.report` writes the files.
"""
from __future__ import annotations

import copy
import dataclasses
import sys
import time
from dataclasses import dataclass, field

import torch

import spikec
from spikec.errors import SpikecError
from spikec.data.sample import stratified_indices
from spikec.hardware.baselines import (RateBaselineOptions, digital_energy, iso_accuracy_rate, rate_counts_energy,
                                       rate_snn_energy, reram_adc_energy, value_network)
from spikec.hardware.calibration import compare_with_chip
from spikec.hardware.comparison import ACCURACY_MARGIN, PERuns, equal_accuracy_comparison
from spikec.hardware.config import HardwareConfig
from spikec.hardware.evaluate import EnergyResult, PEModel
from spikec.hardware.memory import release_freed_memory
from spikec.hardware.report import add_energy_per_mac
from spikec.hardware.timing import RunOptions
from spikec.hardware.tta_select import TOLERANCE, select_tta_fraction

DEFAULT_SIGMAS = (0.0, 0.1, 0.2, 0.3)
DEFAULT_COMPENSATIONS = ("none", "mfta", "ideal")
DEFAULT_TTA_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
RATE_TIMESTEPS = (8, 16, 32, 64, 128, 256)
COMPONENT_KEYS = ("total", "crossbar", "neuron", "driver", "buffer", "static")


@dataclass
class Study:
    report: dict
    events: dict = field(default_factory=dict)  # arrays for events.h5


def _energy_entry(r: EnergyResult) -> dict:
    return {"energy_per_inference_j": {k: r.energy[k] for k in COMPONENT_KEYS}, "latency_s": r.latency_s,
            "accuracy": r.accuracy, "spikes_per_inference": r.spikes}


def peak_rss_bytes() -> int:
    """The process's peak resident memory so far (Linux and macOS; 0 where unknown)."""
    try:
        import resource
    except ImportError:  # Windows
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def has_variation(config: HardwareConfig) -> bool:
    return config.sigma > 0 or config.sigma_chip > 0 or config.stuck_on_rate > 0 or config.stuck_off_rate > 0


def software_reference(snn, x: torch.Tensor, y: torch.Tensor, bits: int) -> dict:
    """Accuracy and spikes (via ``spikec.record``) of the SNN itself, simulated at ``bits``-bit windows."""
    net = copy.deepcopy(snn).set_simulation("analytic", bits)
    dtype = next(net.parameters()).dtype
    with torch.no_grad(), spikec.record(net, first_spike_times=False) as rec:
        scores = net(x.to(dtype))
    return {"accuracy": float((scores.argmax(1) == y).float().mean()),
            "spikes_per_inference": rec.spikes_per_inference,
            "layers": {n.removeprefix("ops."): r.spikes_per_inference for n, r in rec.layers.items()}}


def rate_snn_for(snn, calib_x: torch.Tensor, timesteps: int):
    """A rate SNN converted (``spikec.convert``) from the ReLU network the TTFS SNN computes."""
    ann = value_network(snn)
    return spikec.convert(ann, calib_x, coding="rate", timesteps=int(timesteps))


def calibration_inputs(calib_x: torch.Tensor, calib_y: torch.Tensor | None, n: int, seed: int = 0) -> torch.Tensor:
    """The MFTA calibration reads: a seeded stratified draw of ``n`` of ``calib_x`` (a seeded
    random draw when no labels are given), never the first ``n``."""
    if calib_y is not None:
        return calib_x[stratified_indices(calib_y, n, seed)]
    if n >= calib_x.shape[0]:
        return calib_x
    gen = torch.Generator().manual_seed(int(seed))
    return calib_x[torch.randperm(calib_x.shape[0], generator=gen)[:n]]


def energy_study(
    snn,
    x: torch.Tensor,
    y: torch.Tensor,
    calib_x: torch.Tensor,
    config: HardwareConfig,
    *,
    chips: int = 10,
    sigmas=DEFAULT_SIGMAS,
    compensations=DEFAULT_COMPENSATIONS,
    tta_fractions=DEFAULT_TTA_FRACTIONS,
    rate_snn=None,
    rate_timesteps: int | None = None,
    iso_accuracy: bool = True,
    progress: bool = True,
    train: tuple[torch.Tensor, torch.Tensor] | None = None,
    calib_y: torch.Tensor | None = None,
    rate_options: RateBaselineOptions | None = None,
    auto_tta: bool = False,
    tta_tolerance: float = TOLERANCE,
) -> Study:
    """Everything ``report.json`` holds, for the TTFS ``snn`` on test data ``(x, y)``.

    ``calib_x``: training inputs for MFTA calibration reads (a seeded stratified draw of ``config.calib_samples``, with ``calib_y``) and for
    converting the rate baseline. ``rate_snn``: a rate SNN to use as the baseline (default:
    converted from the same network at ``rate_timesteps``, default ``2**window_bits`` steps).
    ``iso_accuracy`` also finds the fewest steps (of :data:`RATE_TIMESTEPS`) at which the rate SNN
    is within 1 point of the PE's accuracy, and reports that baseline too (with ``train``, the
    comparison's percentile search on the same network, run once). ``train``: training
    ``(inputs, labels)``; with it the report gets the ``comparison`` block
    (:func:`spikec.hardware.comparison.equal_accuracy_comparison`: percentile and QCFS rate SNNs
    at equal accuracy, wake-up, shares of the mechanisms) built with ``rate_options``.
    ``auto_tta``: replace ``config.tta_fraction`` by the smallest fraction that costs at most
    ``tta_tolerance`` accuracy on the calibration inputs (``calib_x, calib_y``; see
    :mod:`spikec.hardware.tta_select`); the report's ``tta_selection`` says what was measured.
    """
    t0 = last = time.perf_counter()
    stages: dict[str, float] = {}
    peaks: dict[str, int] = {}

    def lap(name: str) -> None:  # seconds and peak memory of each stage, for the report (where the study's time goes)
        nonlocal last
        release_freed_memory()
        now = time.perf_counter()
        stages[name] = now - last
        peaks[name] = peak_rss_bytes()
        last = now

    model = PEModel.from_snn(snn, config)
    options = RunOptions.from_config(config)
    calib = model.calibrate(calibration_inputs(calib_x, calib_y, config.calib_samples, config.seed))
    lap("map_and_calibrate")
    tta_selection = None
    if auto_tta and options.tta:
        if calib_y is None:
            raise ValueError("auto_tta needs the calibration labels calib_y")
        tta_selection = select_tta_fraction(model, calib_x, calib_y, options, tolerance=tta_tolerance)
        config = config.replace(tta_fraction=tta_selection["fraction"])
        model = dataclasses.replace(model, config=config)
        options = RunOptions.from_config(config)
        lap("tta_selection")
    software = software_reference(snn, x, y, config.window_bits)
    lap("snn_reference")

    varied = has_variation(config)
    main_chips = model.chips(chips) if varied else model.nominal()
    thr = model.thresholds(main_chips, calib, config.compensation) if varied else None
    # power gating and wake-up change only the accounting: every (gating, wake-up) pair the report and
    # the comparison need comes from two simulations, with TTA and without
    wake = bool(config.wakeup_on_input)
    pairs = [(options.power_gating, wake), (False, wake)]
    if train is not None:
        pairs += [p for p in ((True, True), (False, False), (True, False), (False, True)) if p not in pairs]
    with_tta = model.evaluate_accountings(main_chips, x, y, options.replace(extra_accountings=tuple(pairs[1:])), thr)
    without = model.evaluate_accountings(main_chips, x, y, options.replace(tta=False, extra_accountings=tuple(pairs[1:])), thr)
    known = {}
    for tta_on, results in ((options.tta, with_tta), (False, without)):
        for (pg, wk), r in zip(pairs, results):
            known.setdefault((pg, tta_on, wk), r)
    main, no_pg = with_tta[0], with_tta[1]
    no_tta = without[0]
    lap("main_and_ablations")
    reuse = {float(options.tta_fraction): main} if options.tta and not varied else None  # main run = nominal chip
    tta = model.tta_curve(x, y, tta_fractions, options, progress, known=reuse)
    lap("tta_curve")
    variation = model.variation_sweep(x, y, calib, sigmas, compensations, chips, options, progress)
    lap("variation_sweep")

    T = int(rate_timesteps or config.window_steps)
    comparison = None
    shared_counts = None  # the comparison's percentile run at T: the same network as the fixed-T rate baseline
    if train is not None:
        runs = PERuns(model, main_chips, x, y, options, thr, known)
        comparison = equal_accuracy_comparison(model, snn, runs, train[0], train[1],
                                               rate_options or RateBaselineOptions(), rate_snn, calib=calib_x,
                                               progress=progress, keep_counts_at={"percentile": T} if rate_snn is None else None)
        for method, entry in comparison["rate"].items():
            counts = entry.pop("counts", None)
            if method == "percentile":
                shared_counts = counts
        lap("comparison")

    baselines = {}
    rate_net = None
    try:
        if shared_counts is not None:
            baselines["rate_snn_crossbar"] = rate_counts_energy(model, shared_counts, x)
        else:
            rate_net = rate_snn if rate_snn is not None else rate_snn_for(snn, calib_x, T)
            baselines["rate_snn_crossbar"] = rate_snn_energy(model, rate_net, x, y, timesteps=None if rate_snn is not None else T)
        if iso_accuracy and rate_snn is None:
            shared = ((comparison or {}).get("rate") or {}).get("percentile")
            if shared is not None and "error" not in shared:  # the same network (calib_x) and target: searched once
                baselines["rate_snn_crossbar_iso_accuracy"] = dict(shared)
            else:
                rate_net = rate_net if rate_net is not None else rate_snn_for(snn, calib_x, T)
                baselines["rate_snn_crossbar_iso_accuracy"] = iso_accuracy_rate(
                    model, rate_net, x, y, main.accuracy - ACCURACY_MARGIN, RATE_TIMESTEPS, progress)
    except SpikecError as exc:  # e.g. a network the rate converter or the alignment cannot handle
        baselines["rate_snn_crossbar"] = {"error": str(exc), "energy_per_inference_j": {"total": None}}
    baselines["ann_digital_fp32"] = digital_energy(model, "fp32")
    baselines["ann_digital_int8"] = digital_energy(model, "int8")
    baselines["ann_reram_adc"] = reram_adc_energy(model, x)
    lap("baselines")
    total = main.energy["total"]
    for b in baselines.values():
        other = b["energy_per_inference_j"]["total"]
        b["pe_saving"] = 1.0 - total / other if other else None

    layers = []
    for name, entry in main.layers.items():
        entry = dict(entry)
        entry["name"] = name
        entry["energy_per_inference_j"] = {k: entry["energy_per_inference_j"][k] for k in COMPONENT_KEYS} | {
            "neuron_parts": {k: entry["energy_per_inference_j"][k] for k in ("opamp", "comparator", "spike", "wakeup")},
            "buffer_parts": {"row_table": entry["energy_per_inference_j"]["row_table"]}}
        entry["snn_spikes_per_inference"] = software["layers"].get(name)
        layers.append(entry)

    report = {
        "accuracy": main.accuracy,
        "energy_per_inference_j": {k: main.energy[k] for k in COMPONENT_KEYS},
        "row_table_energy_per_inference_j": main.energy["row_table"],  # part of buffer: row packing's address lookups
        "latency_s": main.latency_s,
        "spikes_per_inference": main.spikes,
        "tiles": sum(l["tiles"]["tiles"] for l in layers),
        "tile_budget": config.tile_budget,
        "layers": layers,
        "ablations": {"no_power_gating": _energy_entry(no_pg), "no_tta": _energy_entry(no_tta)},
        "baselines": baselines,
        "tta": tta,
        "variation": variation,
        "config": config.to_dict(),
        "snn": {"accuracy": software["accuracy"], "spikes_per_inference": software["spikes_per_inference"],
                "window_bits": config.window_bits},
        "chips": main.chips,
        "samples": int(x.shape[0]),
        "ann_macs": model.program.ann_macs,
        "calibration": compare_with_chip(config),
        "seconds": time.perf_counter() - t0,
        "stage_seconds": stages,
        "stage_peak_rss_bytes": peaks,  # the process's peak so far at the end of each stage (0: unknown)
    }
    if comparison is not None:
        report["comparison"] = comparison
    if tta_selection is not None:
        report["tta_selection"] = tta_selection
    add_energy_per_mac(report, model.program.ann_macs)
    events = {
        "histograms": main.histograms,
        "per_sample": main.per_sample,
        "window_steps": config.window_steps,
    }
    return Study(report, events)


def summary(report: dict, out_dir: str | None = None) -> dict:
    """The few numbers ``spikec energy`` prints (and returns for ``--json``)."""
    rate = report["baselines"]["rate_snn_crossbar"]
    out = {
        "accuracy": report["accuracy"],
        "energy_per_inference_j": report["energy_per_inference_j"]["total"],
        "row_table_energy_per_inference_j": report.get("row_table_energy_per_inference_j", 0.0),
        "latency_s": report["latency_s"],
        "tiles": report.get("tiles"),
        "spikes_per_inference": report["spikes_per_inference"],
        "saving_vs_rate_snn": rate.get("pe_saving"),
        "rate_snn_timesteps": rate.get("timesteps"),
        "chips": report["chips"],
        "energy_per_mac_j": report.get("energy_per_mac_j"),
    }
    if "comparison" in report:
        out["equal_accuracy_saving"] = {m: r.get("pe_saving") for m, r in report["comparison"]["rate"].items()}
    if out_dir is not None:
        out["out"] = str(out_dir)
    return out
