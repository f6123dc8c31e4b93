"""Calibration of the rate-coded crossbar model against a measured chip, and node scaling.

The measured chip is the RRAM spiking compute-in-memory processing engine of B. Yan et al.
(VLSI Symposium 2019, DOI 10.23919/VLSIT.2019.8776485). Public figures (see :data:`YAN_VLSI2019`):
a 64 Kb RRAM macro (256 x 256 cells) in 0.15 um CMOS, 50 MHz, 8-bit inputs, 0.257 pJ/MAC and
1.52 mW average power (the last five from Hai Li's talk, as quoted in issue 14).

The workload (:class:`MacroWorkload`) is the macro used as one fully-connected layer: 256 input
rows, 128 signed neurons on 128 column pairs (the twin-column mapping of ``mapping.py``), binary
+-1 weights (each pair has one cell at ``G_on`` and one at ``G_off``), 8-bit rate-coded inputs
(``T = 2^8`` steps) at a stated mean activity. Its energy is :func:`~spikec.hardware.energy.rate_layer_energy`
of that layer, the same function the rate baseline uses, so what is calibrated here is what the
baseline runs on.

One figure is free: :func:`calibrate_neuron_power` solves for the integrate-and-fire neuron's
analog power (``opamp_power_w``) so that the workload costs the measured pJ/MAC; every other
number of the preset cites a source or is a stated assumption. The measured power is then a
check, not a second fit: power / (J/MAC) = MACs per second, fixed by the clock, ``T`` and the
macro size.

:func:`derive_twin_column` carries the calibrated figures to the twin-column preset's node with
first-order scaling rules (:func:`scale_digital`, :func:`scale_analog`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from spikec.hardware.config import HardwareConfig
from spikec.hardware.energy import rate_layer_energy

YAN_SOURCE = ("B. Yan et al., 'RRAM-based Spiking Nonvolatile Computing-In-Memory Processing Engine with "
              "Precision-Configurable In Situ Nonlinear Activation', VLSI Symp. 2019, DOI 10.23919/VLSIT.2019.8776485")


@dataclass(frozen=True)
class MeasuredChip:
    """Published figures of a measured chip, each with where it comes from."""

    name: str
    energy_per_mac_j: float
    power_w: float
    clock_hz: float
    rows: int
    cols: int
    input_bits: int
    node_nm: float
    sources: tuple[tuple[str, str], ...]


YAN_VLSI2019 = MeasuredChip(
    name="yan-vlsi2019", energy_per_mac_j=0.257e-12, power_w=1.52e-3, clock_hz=50e6, rows=256, cols=256,
    input_bits=8, node_nm=150,
    sources=(
        ("energy_per_mac_j", "Hai Li's talk (quoted in issue 14): 0.257 pJ/MAC"),
        ("power_w", "Hai Li's talk (quoted in issue 14): 1.52 mW average"),
        ("clock_hz", "Hai Li's talk (quoted in issue 14): 50 MHz"),
        ("rows, cols", "Hai Li's talk: 256x256 macro; abstract: 64Kb RRAM macro"),
        ("input_bits", "Hai Li's talk: 8-bit inputs; abstract: activation precision configurable 1 to 8 bits"),
        ("node_nm", "Hai Li's talk: 0.15 um CMOS + HfO RRAM"),
        ("not used", "abstract: 16.9 TOPS/W (operating point not stated publicly), 99.24 MHz maximum spike frequency"),
    ),
)


@dataclass(frozen=True)
class MacroWorkload:
    """The macro as one fully-connected layer (see the module docstring); activities are assumptions.

    ``input_activity``: mean input as a fraction of full scale (an input spikes ``a * T`` times);
    ``output_activity``: mean output spikes per neuron per step.
    """

    rows: int = 256
    neurons: int = 128
    input_bits: int = 8
    input_activity: float = 0.25
    output_activity: float = 0.25

    def __post_init__(self):
        if self.rows < 1 or self.neurons < 1 or self.input_bits < 1:
            raise ValueError(f"macro workload: rows, neurons and input_bits must be >= 1, got {self}")
        for name in ("input_activity", "output_activity"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"macro workload: {name} must lie in [0, 1], got {getattr(self, name)}")

    @property
    def timesteps(self) -> int:
        return 2 ** self.input_bits

    @property
    def macs(self) -> int:
        """Dense MACs of the layer (one per signed weight)."""
        return self.rows * self.neurons

    def describe(self) -> str:
        return (f"one {self.rows}x{self.neurons} fully-connected layer (signed binary weights on twin columns), "
                f"{self.input_bits}-bit rate-coded inputs (T = {self.timesteps}) at mean activity "
                f"{self.input_activity:g}, output activity {self.output_activity:g}")


def workload_conductances(config: HardwareConfig, workload: MacroWorkload) -> tuple[torch.Tensor, torch.Tensor]:
    """``(G+, G-)`` ``[rows, neurons]`` of +-1 weights: one cell of each pair at ``G_on``, the other at ``G_off``."""
    sign = torch.ones(workload.rows, workload.neurons, dtype=torch.float64)
    sign[1::2] = -1.0  # alternate signs; the energy depends only on G+ + G-, the same for every pair
    on = torch.full_like(sign, config.g_on)  # float64: torch.where on two Python floats would give float32
    off = torch.full_like(sign, config.g_off)
    g_pos = torch.where(sign > 0, on, off)
    g_neg = torch.where(sign > 0, off, on)
    return g_pos, g_neg


def workload_energy(config: HardwareConfig, workload: MacroWorkload = MacroWorkload()) -> dict[str, float]:
    """Energy (J per inference, by component) and latency of ``workload`` on the rate-coded crossbar model."""
    g_pos, g_neg = workload_conductances(config, workload)
    T = workload.timesteps
    uses = workload.rows * workload.input_activity * T
    out = workload.neurons * workload.output_activity * T
    col_tiles = -(-workload.neurons // config.pairs_per_tile)
    row_tiles = -(-workload.rows // config.tile_rows)
    e = rate_layer_energy(g_pos, g_neg, uses, out, T, 1, config, col_tiles=col_tiles, tiles=row_tiles * col_tiles)
    return {k: float(v) for k, v in e.items()}


def macro_figures(config: HardwareConfig, workload: MacroWorkload = MacroWorkload()) -> dict:
    """pJ/MAC-style figures of the workload: ``energy_per_mac_j``, ``power_w``, ``latency_s``, components."""
    e = workload_energy(config, workload)
    return {
        "workload": workload.describe(),
        "macs": workload.macs,
        "energy_j": e["total"],
        "energy_per_mac_j": e["total"] / workload.macs,
        "latency_s": e["latency_s"],
        "power_w": e["total"] / e["latency_s"],
        "components_j": {k: e[k] for k in ("crossbar", "opamp", "comparator", "spike", "driver", "buffer", "static")},
    }


def compare_with_chip(config: HardwareConfig, chip: MeasuredChip = YAN_VLSI2019,
                      workload: MacroWorkload = MacroWorkload()) -> dict:
    """The model's figures next to the chip's, with ``model / measured`` ratios (the report's calibration block)."""
    m = macro_figures(config, workload)
    return {
        "chip": chip.name,
        "workload": m["workload"],
        "model": {"energy_per_mac_j": m["energy_per_mac_j"], "power_w": m["power_w"], "latency_s": m["latency_s"],
                  "components_j": m["components_j"]},
        "measured": {"energy_per_mac_j": chip.energy_per_mac_j, "power_w": chip.power_w},
        "ratio": {"energy_per_mac": m["energy_per_mac_j"] / chip.energy_per_mac_j,
                  "power": m["power_w"] / chip.power_w},
        "sources": dict(chip.sources),
    }


def calibrate_neuron_power(config: HardwareConfig, chip: MeasuredChip = YAN_VLSI2019,
                           workload: MacroWorkload = MacroWorkload()) -> float:
    """The neuron power ``opamp_power_w`` (W) at which ``workload`` costs ``chip.energy_per_mac_j``.

    The workload's energy is linear in the neuron power (``P * dt * T * K`` per inference), so this
    is one division. Raises ``ValueError`` if the other components alone exceed the measurement.
    """
    base = workload_energy(config.replace(opamp_power_w=0.0), workload)["total"]
    target = chip.energy_per_mac_j * workload.macs
    per_watt = config.cycle_s * workload.timesteps * workload.neurons
    if base >= target:
        raise ValueError(f"calibration: the other components already cost {base / workload.macs * 1e12:.3f} pJ/MAC, "
                         f"above the measured {chip.energy_per_mac_j * 1e12:.3f}")
    return (target - base) / per_watt


# ---------------------------------------------------------------- node scaling

@dataclass(frozen=True)
class Node:
    """A CMOS node: feature size and core supply."""

    nm: float
    vdd: float


# 0.15 um core supply: assumption (a typical 0.15 um logic core runs at 1.5 V; not stated in the public sources)
YAN_NODE = Node(150.0, 1.5)
# the twin-column preset's node: 45 nm, 0.9 V, the node of Horowitz's table its buffer and baseline figures come from
TWIN_NODE = Node(45.0, 0.9)


def scale_digital(energy: float, src: Node, dst: Node) -> float:
    """Switching energy ``C V^2`` with capacitance proportional to the feature size."""
    return energy * (dst.nm / src.nm) * (dst.vdd / src.vdd) ** 2


def scale_analog(power: float, src: Node, dst: Node) -> float:
    """Bias power ``V * I`` of an amplifier at the same bandwidth: ``I`` proportional to its load ``C``, ``C`` to the feature size."""
    return power * (dst.nm / src.nm) * (dst.vdd / src.vdd)


# which rule carries each circuit figure from the calibrated preset to the twin-column node, and how
DERIVATION = {
    "opamp_power_w": "analog rule on the calibrated neuron power",
    "wakeup_energy_j": "one clock period of the derived opamp power (the twin-column rule)",
    "driver_energy_j": "digital rule, times the ratio of row lengths (tile_cols)",
    "tile_leakage_w": "analog rule, times the ratio of tile cells",
    "control_power_w": "digital rule (same clock)",
}


def derive_twin_column(calibrated: HardwareConfig, twin: HardwareConfig, src: Node = YAN_NODE,
                       dst: Node = TWIN_NODE) -> dict[str, float]:
    """The twin-column circuit figures (:data:`DERIVATION`) from the calibrated preset, rounded to 3 digits.

    ``twin`` supplies the target geometry (tile size, clock). Figures not listed (comparator,
    spike, buffer) are not fixed by the calibration and stay as they are.
    """
    cells = (twin.tile_rows * twin.tile_cols) / (calibrated.tile_rows * calibrated.tile_cols)
    opamp = scale_analog(calibrated.opamp_power_w, src, dst)
    values = {
        "opamp_power_w": opamp,
        "wakeup_energy_j": opamp * twin.cycle_s,
        "driver_energy_j": scale_digital(calibrated.driver_energy_j, src, dst) * twin.tile_cols / calibrated.tile_cols,
        "tile_leakage_w": scale_analog(calibrated.tile_leakage_w, src, dst) * cells,
        "control_power_w": scale_digital(calibrated.control_power_w, src, dst),
    }
    return {k: float(f"{v:.3g}") for k, v in values.items()}
