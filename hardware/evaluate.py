"""Evaluate a TTFS SNN on the twin-column PE: accuracy, energy, latency, TTA curve, variation sweep.

:class:`PEModel` holds what does not change between runs (the unrolled program, the programmed
crossbars, the config). Its methods run batches of inputs on one or many chips and reduce the
results to plain numbers for the report.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from spikec.hardware.config import HardwareConfig
from spikec.hardware.copies import program_network
from spikec.hardware.crossbar import ChipLayer, Crossbar, ideal_chip, make_chips
from spikec.hardware.energy import COMPONENTS, NEURON_PARTS
from spikec.hardware.extract import PEProgram, pe_program
from spikec.hardware.memory import release_freed_memory
from spikec.hardware.mfta import Calibration, compensate
from spikec.hardware.simulate import run_program
from spikec.hardware.timing import RunOptions

ENERGY_KEYS = COMPONENTS + NEURON_PARTS + ("row_table", "total")  # row_table: part of buffer (row packing)
# bytes the big per-batch tensors of one layer run may take (the study stays well under 8 GB)
MEMORY_BUDGET = 1.5e9
# bytes of one batch's per-position tensors (counted as float64) that keep a run fast (see PEModel.batch_size):
# accuracy-only runs and runs with energy accounting
CACHE_BUDGET = 100e6
CACHE_BUDGET_ENERGY = 30e6


@dataclass
class EnergyResult:
    """Means per inference (over samples and chips) and the per-sample data behind them."""

    accuracy: float
    chips: int
    energy: dict[str, float]  # component -> J per inference
    latency_s: float
    spikes: float  # output spikes of all layers per inference (input spikes of the encoder excluded)
    layers: dict[str, dict] = field(default_factory=dict)
    histograms: dict[str, torch.Tensor] = field(default_factory=dict)  # layer -> spikes per step
    per_sample: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> [C, B]


@dataclass
class PEModel:
    """A TTFS network mapped onto the PE."""

    program: PEProgram
    crossbars: list[Crossbar]
    config: HardwareConfig

    @staticmethod
    def from_snn(snn, config: HardwareConfig, keep_silent: bool = False) -> "PEModel":
        """``keep_silent``: silent neurons stay on the chip (see :func:`~spikec.hardware.extract.pe_program`)."""
        program = pe_program(snn, keep_silent)
        return PEModel(program, program_network(program.layers, config), config)

    @property
    def layer_names(self) -> list[str]:
        return [xb.layer.name for xb in self.crossbars]

    def chips(self, count: int = 1, sigma: float | None = None) -> list[ChipLayer]:
        """``count`` chips (variation from the config; ``sigma`` overrides its ``sigma``)."""
        return [make_chips(xb, self.config, count, i, sigma) for i, xb in enumerate(self.crossbars)]

    def nominal(self) -> list[ChipLayer]:
        """One chip without variation or faults (conductances quantized as programmed)."""
        cfg = self.config.replace(sigma=0.0, sigma_chip=0.0, stuck_on_rate=0.0, stuck_off_rate=0.0)
        return [make_chips(xb, cfg, 1, i) for i, xb in enumerate(self.crossbars)]

    def ideal(self) -> list[ChipLayer]:
        return [ideal_chip(xb, self.config) for xb in self.crossbars]

    def calibrate(self, x_cal: torch.Tensor) -> list[Calibration]:
        """Calibration reads for MFTA: each layer's inputs and ideal charges on ``x_cal``."""
        run = run_program(self.program, self.ideal(), x_cal, self.config, RunOptions(tta=False), with_energy=False, keep=True)
        return [Calibration(run.layers[n].values[0], run.layers[n].charge[0], 2 if xb.layer.readout else 1)
                for n, xb in zip(self.layer_names, self.crossbars)]

    def thresholds(self, chips: list[ChipLayer], calib: list[Calibration] | None, mode: str):
        if mode == "none" or calib is None:
            return None
        return [compensate(ch, c, self.config, mode) for ch, c in zip(chips, calib)]

    # -- runs ------------------------------------------------------------------------------------
    def batch_size(self, chips: int, with_energy: bool) -> int:
        """Samples per batch so the largest per-position tensors (unrolled input values ``[C, B, P, N]`` and
        charges ``[C, B, P, K]``, float64, a few alive at once) stay within ``MEMORY_BUDGET`` bytes: memory
        does not grow with the sample count. Bias, ramp and copy rows are never unrolled
        (:mod:`spikec.hardware.source_energy`), so they do not count."""
        widest = max(xb.layer.positions * (xb.input_rows + xb.layer.neurons) for xb in self.crossbars)
        live = 6 if with_energy else 3
        per_sample = 8 * chips * widest
        fits = int(MEMORY_BUDGET // (live * per_sample))
        # mid-sized batches run fastest: on a CIFAR ResNet-20 (2 threads), 40 samples x 10 chips took
        # 2.3 s at 2 samples a batch, 1.8 s at 4 and 8, 2.7 s at 20; one chip with energy 0.74 s at 8,
        # 0.56 s at 20, 0.50 s at 40 (benchmarks/results/pe_simulator_speed.json); larger ones fall out of
        # the CPU caches
        quick = max(2, int((CACHE_BUDGET_ENERGY if with_energy else CACHE_BUDGET) // per_sample))
        return max(1, min(512, fits, quick))

    def predict(self, chips, x, options: RunOptions, thresholds=None, batch_size: int | None = None) -> torch.Tensor:
        """Classes ``[C, B]`` the chips pick (no energy accounting)."""
        batch_size = batch_size or self.batch_size(chips[0].chips, False)
        preds = []
        for a in range(0, x.shape[0], batch_size):
            run = run_program(self.program, chips, x[a:a + batch_size], self.config, options, thresholds, with_energy=False)
            preds.append(run.predictions)
        return torch.cat(preds, dim=1)

    def evaluate(self, chips, x, y, options: RunOptions, thresholds=None, batch_size: int | None = None) -> EnergyResult:
        """Accuracy, energy, latency and spikes of ``chips`` on ``(x, y)``."""
        return self.evaluate_accountings(chips, x, y, options, thresholds, batch_size)[0]

    def evaluate_accountings(self, chips, x, y, options: RunOptions, thresholds=None,
                             batch_size: int | None = None) -> list[EnergyResult]:
        """:meth:`evaluate` under ``options`` and, from the same simulation, under each of
        ``options.extra_accountings`` (``(power_gating, wakeup_on_input)``): one result each, in that order."""
        batch_size = batch_size or self.batch_size(chips[0].chips, True)
        S = self.config.window_steps
        names = self.layer_names
        A = 1 + len(options.extra_accountings)
        keys = ENERGY_KEYS + ("latency_s", "spikes_out", "spikes_in")
        sums = [{n: {k: 0.0 for k in keys} for n in names} for _ in range(A)]
        hist = {n: torch.zeros((2 if xb.layer.readout else 1) * S, dtype=torch.float64)
                for n, xb in zip(names, self.crossbars)}
        stop_sum = {n: 0.0 for n in names}
        per_sample = [{k: [] for k in ("energy_j", "latency_s", "spikes", "correct")} for _ in range(A)]
        correct = 0
        count = 0
        C = chips[0].chips
        for a in range(0, x.shape[0], batch_size):
            xb_, yb = x[a:a + batch_size], y[a:a + batch_size]
            run = run_program(self.program, chips, xb_, self.config, options, thresholds, with_energy=True)
            ok = run.predictions == yb
            correct += int(ok.sum())
            count += ok.numel()
            for n in names:
                lr = run.layers[n]
                fired = lr.steps[torch.isfinite(lr.steps)]
                hist[n] += torch.bincount(fired.long(), minlength=hist[n].numel())[: hist[n].numel()].to(torch.float64)
                stop_sum[n] += float(lr.stop.mean(-1).sum())
            for i in range(A):
                e_tot = torch.zeros_like(ok, dtype=torch.float64)
                lat = torch.zeros_like(e_tot)
                spikes = torch.zeros_like(e_tot)
                for n in names:
                    lr = run.layers[n]
                    energy = lr.energy if i == 0 else lr.extra_energy[i - 1]
                    for k in keys:
                        sums[i][n][k] += float(energy[k].sum())
                    e_tot += energy["total"]
                    lat += energy["latency_s"]
                    spikes += energy["spikes_out"]
                per_sample[i]["energy_j"].append(e_tot)
                per_sample[i]["latency_s"].append(lat)
                per_sample[i]["spikes"].append(spikes)
                per_sample[i]["correct"].append(ok)
        return [self._result(sums[i], hist, stop_sum, per_sample[i], correct, count, C) for i in range(A)]

    def _result(self, sums, hist, stop_sum, per_sample, correct, count, C) -> EnergyResult:
        names = self.layer_names
        layers = {}
        for n, xb in zip(names, self.crossbars):
            s = sums[n]
            layer = xb.layer
            layers[n] = {
                "kind": layer.kind, "neurons": layer.neurons, "positions": layer.positions,
                "neurons_off_chip": layer.map_neurons - layer.neurons,
                "rows": {"inputs": xb.input_rows, "bias": xb.bias_rows, "ramp": xb.ramp_rows},
                "tiles": xb.tiling.as_dict(),
                "energy_per_inference_j": {k: s[k] / count for k in ENERGY_KEYS},
                "latency_s": s["latency_s"] / count,
                "spikes_per_inference": s["spikes_out"] / count,
                "input_spikes_per_inference": s["spikes_in"] / count,
                "fired_fraction": s["spikes_out"] / count / (layer.neurons * layer.positions),
                "mean_window_steps_run": stop_sum[n] / count,
                "w_max": xb.w_max,
            }
        energy = {k: sum(layers[n]["energy_per_inference_j"][k] for n in names) for k in ENERGY_KEYS}
        return EnergyResult(
            accuracy=correct / max(count, 1), chips=C, energy=energy,
            latency_s=sum(layers[n]["latency_s"] for n in names),
            spikes=sum(layers[n]["spikes_per_inference"] for n in names),
            layers=layers, histograms={n: h.clone() for n, h in hist.items()},
            per_sample={k: torch.cat(v, dim=1) for k, v in per_sample.items()},
        )

    def variation_sweep(self, x, y, calib: list[Calibration], sigmas, compensations, chips: int,
                        options: RunOptions, progress: bool = True) -> list[dict]:
        """Accuracy over ``chips`` chips for each ``sigma`` and compensation mode (same chips for every mode).

        Charges in float32 (accuracy only); a sigma without any variation simulates its one chip once.
        """
        rows = []
        total = len(sigmas) * len(compensations)
        bar = tqdm(total=total, desc="variation", unit="setting", disable=not progress)
        for sigma in sigmas:
            # without any variation every chip is the same one: simulate it once
            same = float(sigma) == 0 and self.config.sigma_chip == 0 and self.config.stuck_on_rate == 0 \
                and self.config.stuck_off_rate == 0
            chip_set = self.chips(1 if same else chips, sigma)
            for mode in compensations:
                thr = self.thresholds(chip_set, calib, mode)
                acc = (self.predict(chip_set, x, options.replace(charge_dtype=torch.float32), thr) == y)
                acc = acc.to(torch.float64).mean(1)
                acc = acc.expand(chips) if same else acc
                release_freed_memory()
                rows.append({"sigma": float(sigma), "compensation": mode, "accuracy_mean": float(acc.mean()),
                             "accuracy_std": float(acc.std(unbiased=False)), "chips": int(chips),
                             "accuracy_per_chip": [float(a) for a in acc]})
                bar.update(1)
        bar.close()
        return rows

    def tta_curve(self, x, y, fractions, options: RunOptions, progress: bool = True,
                  known: dict[float, EnergyResult] | None = None) -> list[dict]:
        """Accuracy, energy and latency on the nominal chip for each TTA fraction.

        ``known``: results already computed on the nominal chip with ``options`` at some fractions
        (the study's main run), reused instead of simulated again.
        """
        chips = self.nominal()
        rows = []
        known = known or {}
        for f in tqdm(list(fractions), desc="tta", unit="fraction", disable=not progress):
            opts = options.replace(tta=True, tta_fraction=float(f))
            r = known.get(float(f)) or self.evaluate(chips, x, y, opts)
            rows.append({"fraction": float(f), "accuracy": r.accuracy, "energy_j": r.energy["total"],
                         "latency_s": r.latency_s, "spikes": r.spikes})
        return rows
