"""The twin-column processing element's parameters: one frozen dataclass, TOML in and out.

Every field carries its unit and its source (a citation, or "assumption") in its metadata, so
that the preset file and ``docs/hardware-model.md`` state where each number comes from.
:func:`load_config` reads a preset name or a TOML file; unknown keys are errors (a typo must not
silently fall back to a default).
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from spikec.errors import UsageError
from spikec.io.atomic import atomic_write_text

PRESETS = ("twin-column", "yan-vlsi2019")
_OPTIONAL_INTS = ("tta_time", "buffer_bits", "ann_input_bits", "max_row_copies", "tile_budget")

NEUROSIM = "DNN+NeuroSim V1.4, Param.cpp (Peng, Huang, Lu, Yu; IEDM 2019 / github neurosim)"
HOROWITZ = "M. Horowitz, 'Computing's energy problem', ISSCC 2014, 45 nm 0.9 V table"


def _f(default, section: str, unit: str, source: str):
    return field(default=default, metadata={"section": section, "unit": unit, "source": source})


@dataclass(frozen=True)
class HardwareConfig:
    """Parameters of the twin-column ReRAM PE and of the baselines it is compared with.

    ``None`` in ``tta_time``, ``buffer_bits`` and ``ann_input_bits`` means "derive it" (see each
    field's source). Build variants with :meth:`replace`.
    """

    # crossbar
    tile_rows: int = _f(128, "crossbar", "rows", f"{NEUROSIM}: numRowSubArray = 128")
    tile_cols: int = _f(128, "crossbar", "columns (C/2 twin pairs)", f"{NEUROSIM}: numColSubArray = 128")
    r_on_ohm: float = _f(100e3, "crossbar", "ohm", f"{NEUROSIM}: resistanceOn = 100e3")
    r_off_ohm: float = _f(1.7e6, "crossbar", "ohm", f"{NEUROSIM}: resistanceOff = 100e3*17")
    cell_levels: int = _f(16, "crossbar", "conductance levels per cell",
                          "assumption: 4-bit multi-level ReRAM cell (weights use levels-1 steps above G_off)")
    cells_per_weight: int = _f(3, "crossbar", "cells per weight and sign",
                               "issue 14 mapping: a weight's G+ (and G-) is spread over this many cells on parallel "
                               "columns into the same integrator, cells_per_weight*(cell_levels-1) levels a side (16 levels "
                               "alone lost ~4 points on a ResNet-20); "
                               "3 cells (45 levels a side) bring a 20-epoch CIFAR ResNet-20's nominal chip to its SNN on 1,000 stratified training images (2 cells: 0.5 below; 3: 0.3-0.5 above) and on the study's test draw (2 cells: 1.0-1.1 below; 3: 0.0-0.1), for 1.6x the tiles and 16% more energy per inference (benchmarks/pe_cell_precision.py)")
    max_row_copies: int | None = _f(None, "crossbar", "rows per ramp or identity-shortcut weight",
                                    "issue 14 mapping: a pair's step is coarsened until its slope-1 ramp and its "
                                    "shortcut gain each fit in this many rows; unset = no cap (a near-empty column's "
                                    "fine step can then need hundreds of ramp and copy rows)")
    v_read: float = _f(0.1, "crossbar", "V",
                       "assumption, the read voltage of the yan-vlsi2019 preset (same device): low, in the linear I-V "
                       "region; the measured 0.257 pJ/MAC bounds it (above ~0.19 V the array alone would exceed it)")
    read_pulse_s: float = _f(10e-9, "crossbar", "s per rate-coded read pulse",
                             f"{NEUROSIM}: readPulseWidth = 10e-9 (rate baselines and ADC bit planes; at most one cycle)")
    conv_copies: int = _f(1, "crossbar", "tile copies per conv layer",
                          "issue 7 default: one copy, output positions run one after another")
    tile_budget: int | None = _f(None, "crossbar", "tiles on the chip",
                                 "issue 15: the tiles left after each layer's conv_copies are spent on further copies "
                                 "of conv layers, greedily by sequential runs saved per tile (hardware/copies.py); "
                                 "unset = no budget, every conv layer keeps conv_copies")
    row_packing: bool = _f(False, "crossbar", "on/off",
                           "assumption (issue 15 option): each column tile keeps only the rows whose segment there holds a nonzero "
                           "weight, packed into its row tiles; a row address table routes input spikes, an entry (column tile, slot) "
                           "read per drive at the buffer's energy per bit "
                           "(row compression per crossbar column group, as in Sparse ReRAM Engine, Yang et al. ISCA 2019); "
                           "off = tile (r, c) holds rows r*R.. and frees only when all its cells are zero")
    # timing
    clock_hz: float = _f(50e6, "timing", "Hz",
                         "B. Yan et al., RRAM-based spiking nonvolatile CIM processing engine, VLSI 2019: 50 MHz")
    window_bits: int = _f(6, "timing", "bits (window = 2^b steps)", "assumption: 6-bit spike-time windows")
    # neuron (charge amplifier + comparator)
    opamp_power_w: float = _f(1.32e-6, "neuron", "W",
                              "derived from the yan-vlsi2019 calibration (hardware/calibration.py derive_twin_column): the calibrated neuron power 7.32 uW at 0.15 um, 1.5 V, times the analog "
                              "rule (45/150)*(0.9/1.5)")
    comparator_energy_j: float = _f(20e-15, "neuron", "J per active cycle",
                                    "assumption: clocked latch comparator, one decision per cycle")
    spike_energy_j: float = _f(50e-15, "neuron", "J per output spike", "assumption: pulse generator and latch")
    wakeup_energy_j: float = _f(26.4e-15, "neuron", "J per power-gated wake-up",
                                "derived from the yan-vlsi2019 calibration (hardware/calibration.py derive_twin_column): assumption that settling takes one clock period of opamp power (1.32 uW x 20 ns)")
    power_gating: bool = _f(True, "neuron", "on/off",
                            "ASTERS (Li et al., DAC 2022): the post-neuron module is gated off once its neuron fired")
    wakeup_on_input: bool = _f(False, "neuron", "on/off",
                               "issue 14 option (event-driven wake-up): a run's integrators stay gated off until the "
                               "first current into the crossbar (first input spike; a bias row from its start); "
                               "off = on from the start of the run, as in ASTERS")
    late_bias: int = _f(1, "neuron", "x (power of two <= window steps)",
                        "issue 14 option: the bias rows conduct only the last window_steps / late_bias steps of the "
                        "input window, with late_bias times their levels (the same charge at the window's end, rounded "
                        "to step / late_bias, so the same spike times up to that rounding), so event-driven wake-up is not forced to step 0 by the bias row; costs "
                        "more bias rows. 1 = bias rows on from the start")
    # periphery
    driver_energy_j: float = _f(1.08e-15, "periphery", "J per input spike per tile row",
                                "derived from the yan-vlsi2019 calibration (hardware/calibration.py derive_twin_column): the preset's 20 fJ (an assumption) times the digital rule (45/150)*(0.9/1.5)^2 "
                                "and the row length 128/256")
    buffer_energy_per_bit_j: float = _f(10e-12 / 64, "periphery", "J per bit written or read",
                                        f"{HOROWITZ}: 8 KB SRAM, 64-bit access 10 pJ")
    buffer_bits: int | None = _f(None, "periphery", "bits per stored spike time",
                                 "derived: window_bits when unset (one b-bit time per spike)")
    tile_leakage_w: float = _f(0.45e-6, "periphery", "W per tile",
                               "derived from the yan-vlsi2019 calibration (hardware/calibration.py derive_twin_column): the preset's 10 uW per macro (an assumption) times the analog rule and the cell "
                               "ratio 128^2/256^2")
    control_power_w: float = _f(21.6e-6, "periphery", "W",
                                "derived from the yan-vlsi2019 calibration (hardware/calibration.py derive_twin_column): the preset's 200 uW (an assumption) times the digital rule")
    # timing threshold adjustment (TTA)
    tta: bool = _f(True, "tta", "on/off",
                   "ASTERS (Li et al., DAC 2022) timing threshold adjustment; off = every run lasts its whole window")
    tta_fraction: float = _f(0.7, "tta", "fraction of a run's neurons",
                             "ASTERS TTA: a run stops once this fraction of its neurons fired; 0.7 is an assumption, "
                             "the smallest fraction without accuracy loss on the digits LeNet/VGG TTA curves")
    tta_time: int | None = _f(None, "tta", "steps after the output window opens",
                              "ASTERS TTA: optional fixed stop time; unset = none")
    tta_output_first: bool = _f(True, "tta", "on/off",
                                "assumption: the output layer stops at its first spike (first-spike readout decided)")
    # multi-level firing threshold adjustment (MFTA)
    mfta_levels: int = _f(16, "mfta", "threshold levels",
                          "derived (issue 14): a 4-bit threshold register per neuron, the smallest tried that recovers "
                          "over half the accuracy lost at sigma 0.2 on the CIFAR ResNet-20 (3 bits: 14%; "
                          "benchmarks/mfta_resolution.py)")
    mfta_step: float = _f(0.05, "mfta", "log-threshold step between levels",
                          "assumption: levels exp(step*k), k=-L//2..L-1-L//2 (covers 1 = nominal); 0.05 keeps about the "
                          "range of the former 8 levels x 0.1 (0.67 to 1.35, now 0.67 to 1.42) at half the step")
    calib_samples: int = _f(32, "mfta", "samples", "assumption: calibration reads with 32 training inputs")
    compensation: str = _f("mfta", "mfta", "none | mfta | ideal",
                           "ASTERS applies MFTA; used for the main result when the config has variation")
    # variation
    sigma: float = _f(0.0, "variation", "std of theta", "G. L. Zhang (seed talk): G' = G*exp(theta), theta~N(0, sigma^2)")
    sigma_chip: float = _f(0.0, "variation", "std of a chip-wide theta", "assumption: off by default")
    stuck_on_rate: float = _f(0.0, "variation", "fraction of cells", "assumption: no stuck-at-on cells by default")
    stuck_off_rate: float = _f(0.0, "variation", "fraction of cells", "assumption: no stuck-at-off cells by default")
    seed: int = _f(0, "variation", "integer", "assumption: Monte-Carlo seed")
    # baselines
    fp32_mult_j: float = _f(3.7e-12, "baselines", "J", f"{HOROWITZ}: 32-bit float multiply 3.7 pJ")
    fp32_add_j: float = _f(0.9e-12, "baselines", "J", f"{HOROWITZ}: 32-bit float add 0.9 pJ")
    int8_mult_j: float = _f(0.2e-12, "baselines", "J", f"{HOROWITZ}: 8-bit integer multiply 0.2 pJ")
    int8_add_j: float = _f(0.03e-12, "baselines", "J", f"{HOROWITZ}: 8-bit integer add 0.03 pJ")
    sram_energy_per_bit_j: float = _f(10e-12 / 64, "baselines", "J per bit",
                                      f"{HOROWITZ}: 8 KB SRAM, 64-bit access 10 pJ")
    adc_energy_j: float = _f(12.5e-12 / 8, "baselines", "J per conversion",
                             "ISAAC (Shafiee et al., ISCA 2016): 8-bit ADC 16 mW at 1.28 GS/s = 12.5 pJ; "
                             "assumption: scaled by 2^(5-8) to NeuroSim's 5-bit ADC (levelOutput = 32)")
    adc_columns_muxed: int = _f(8, "baselines", "columns per ADC", f"{NEUROSIM}: numColMuxed = 8")
    ann_input_bits: int | None = _f(None, "baselines", "bits of bit-serial ANN inputs",
                                    "derived: window_bits when unset (same precision as the spike times)")

    def __post_init__(self):
        _validate(self)

    # derived quantities
    @property
    def g_on(self) -> float:
        return 1.0 / self.r_on_ohm

    @property
    def g_off(self) -> float:
        return 1.0 / self.r_off_ohm

    @property
    def pairs_per_tile(self) -> int:
        return self.tile_cols // 2

    @property
    def neurons_per_tile(self) -> int:
        """Neurons one tile holds: ``2 * cells_per_weight`` columns each."""
        return self.tile_cols // (2 * self.cells_per_weight)

    @property
    def window_steps(self) -> int:
        return 2 ** self.window_bits

    @property
    def cycle_s(self) -> float:
        return 1.0 / self.clock_hz

    @property
    def spike_bits(self) -> int:
        return self.window_bits if self.buffer_bits is None else self.buffer_bits

    @property
    def ann_bits(self) -> int:
        return self.window_bits if self.ann_input_bits is None else self.ann_input_bits

    def replace(self, **changes) -> "HardwareConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """Every parameter, plain values (``None`` kept)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def to_toml(self) -> str:
        return config_to_toml(self)

    def save(self, path: str | os.PathLike) -> None:
        """Write the TOML file atomically (temporary name, then rename)."""
        atomic_write_text(Path(path), self.to_toml())


def _validate(c: HardwareConfig) -> None:
    ints_pos = ("tile_rows", "cell_levels", "conv_copies", "window_bits", "mfta_levels", "calib_samples",
                "adc_columns_muxed")
    for name in ints_pos:
        if int(getattr(c, name)) < 1:
            raise ValueError(f"hardware config: {name} must be >= 1, got {getattr(c, name)}")
    if c.tile_cols < 2 or c.tile_cols % 2:
        raise ValueError(f"hardware config: tile_cols must be even (twin columns), got {c.tile_cols}")
    if c.tile_budget is not None and c.tile_budget < 1:
        raise ValueError(f"hardware config: tile_budget must be >= 1 or unset, got {c.tile_budget}")
    if c.max_row_copies is not None and c.max_row_copies < 1:
        raise ValueError(f"hardware config: max_row_copies must be >= 1 or unset, got {c.max_row_copies}")
    if c.cells_per_weight < 1 or c.tile_cols < 2 * c.cells_per_weight:
        raise ValueError(f"hardware config: cells_per_weight must be >= 1 and fit a tile (2 * cells <= tile_cols = "
                         f"{c.tile_cols}), got {c.cells_per_weight}")
    k = c.late_bias
    if isinstance(k, bool) or int(k) != k or k < 1 or k & (k - 1) or k > 2 ** c.window_bits:
        raise ValueError(f"hardware config: late_bias must be a power of two in 1..{2 ** c.window_bits} "
                         f"(the window's steps), got {k}")
    if c.cell_levels < 2:
        raise ValueError(f"hardware config: cell_levels must be >= 2, got {c.cell_levels}")
    if not 0 < c.r_on_ohm < c.r_off_ohm:
        raise ValueError(f"hardware config: need 0 < r_on_ohm < r_off_ohm, got {c.r_on_ohm}, {c.r_off_ohm}")
    if not 0.0 < c.tta_fraction <= 1.0:
        raise ValueError(f"hardware config: tta_fraction must lie in (0, 1], got {c.tta_fraction}")
    if c.tta_time is not None and c.tta_time < 1:
        raise ValueError(f"hardware config: tta_time must be >= 1 step, got {c.tta_time}")
    for name in ("sigma", "sigma_chip", "stuck_on_rate", "stuck_off_rate", "mfta_step"):
        if getattr(c, name) < 0:
            raise ValueError(f"hardware config: {name} must be >= 0, got {getattr(c, name)}")
    if c.compensation not in ("none", "mfta", "ideal"):
        raise ValueError(f"hardware config: compensation must be none, mfta or ideal, got {c.compensation!r}")
    if c.stuck_on_rate + c.stuck_off_rate > 1:
        raise ValueError("hardware config: stuck_on_rate + stuck_off_rate must be <= 1")
    for name in ("v_read", "clock_hz"):
        if getattr(c, name) <= 0:
            raise ValueError(f"hardware config: {name} must be > 0, got {getattr(c, name)}")
    if not 0 < c.read_pulse_s <= c.cycle_s * (1 + 1e-9):
        raise ValueError(f"hardware config: read_pulse_s must lie in (0, 1/clock_hz = {c.cycle_s:g}], got {c.read_pulse_s}")
    for name in ("opamp_power_w", "comparator_energy_j", "spike_energy_j", "wakeup_energy_j", "driver_energy_j",
                 "buffer_energy_per_bit_j", "tile_leakage_w", "control_power_w"):
        if getattr(c, name) < 0:
            raise ValueError(f"hardware config: {name} must be >= 0, got {getattr(c, name)}")


def field_docs() -> list[dict]:
    """One row per parameter: name, section, default, unit, source (for docs and reports)."""
    return [
        {"name": f.name, "section": f.metadata["section"], "default": f.default,
         "unit": f.metadata["unit"], "source": f.metadata["source"]}
        for f in dataclasses.fields(HardwareConfig)
    ]


# ---------------------------------------------------------------- TOML

def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            raise ValueError(f"cannot write {v} to TOML")
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def config_to_toml(config: HardwareConfig, title: str = "spikec twin-column ReRAM PE") -> str:
    """TOML text grouped by section, each key preceded by a comment with its unit and source.

    Unset (``None``) keys are written as comments, so loading gives ``None`` back.
    """
    lines = [f"# {title}", "# Each key: unit; source (citation or 'assumption').", ""]
    section = None
    for f in dataclasses.fields(config):
        sec = f.metadata["section"]
        if sec != section:
            if section is not None:
                lines.append("")
            lines.append(f"[{sec}]")
            section = sec
        lines.append(f"# {f.metadata['unit']}; {f.metadata['source']}")
        value = getattr(config, f.name)
        if value is None:
            lines.append(f"# {f.name} = (unset)")
        else:
            lines.append(f"{f.name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def config_from_dict(data: dict, base: HardwareConfig | None = None, source: str = "config") -> HardwareConfig:
    """A config from a flat or sectioned dict (as TOML gives); unknown keys raise ``UsageError``."""
    fields = {f.name: f for f in dataclasses.fields(HardwareConfig)}
    flat: dict = {}
    for key, value in data.items():
        if isinstance(value, dict):
            for k, v in value.items():
                flat[k] = v
        else:
            flat[key] = value
    unknown = sorted(set(flat) - set(fields))
    if unknown:
        raise UsageError(f"{source}: unknown hardware parameter {unknown[0]!r}")
    values = {}
    for k, v in flat.items():
        default = fields[k].default
        if isinstance(default, bool) and not isinstance(v, bool):
            raise UsageError(f"{source}: {k} must be true or false, got {v!r}")
        if isinstance(default, str) and not isinstance(v, str):
            raise UsageError(f"{source}: {k} must be a string, got {v!r}")
        if isinstance(default, float) and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if k in _OPTIONAL_INTS and not isinstance(v, bool) and isinstance(v, (int, float)):
            if not float(v).is_integer():
                raise UsageError(f"{source}: {k} must be an integer, got {v}")
            v = int(v)
        if isinstance(default, int) and not isinstance(default, bool) and isinstance(v, float):
            if not v.is_integer():
                raise UsageError(f"{source}: {k} must be an integer, got {v}")
            v = int(v)
        values[k] = v
    try:
        return dataclasses.replace(base or HardwareConfig(), **values)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{source}: {exc}") from exc


def preset(name: str) -> HardwareConfig:
    """A shipped preset by name (``"twin-column"``)."""
    if name not in PRESETS:
        raise UsageError(f"unknown hardware preset {name!r}; choose from {', '.join(PRESETS)}")
    text = resources.files("spikec.hardware").joinpath("presets", name.replace("-", "_") + ".toml").read_text()
    return config_from_dict(tomllib.loads(text), source=f"preset {name}")


def load_config(path: str | os.PathLike, base: HardwareConfig | None = None) -> HardwareConfig:
    """Read a TOML file; keys it does not set keep ``base``'s values (default: the dataclass defaults)."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise UsageError(f"{p}: no such hardware config file") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{p}: not valid TOML: {exc}") from None
    return config_from_dict(data, base=base, source=str(p))
