"""Frozen dataclass configs of the compression verbs, loadable from and savable to TOML.

Every field is plain data (numbers, strings, tuples of strings), so a config round-trips through
``to_dict`` / ``from_dict`` and is stored as such in a compressed checkpoint.
"""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field

GRANULARITIES = ("weight", "row", "kernel", "channel")
SCOPES = ("global", "layer")
PRUNE_METHODS = ("magnitude", "dnr")
SCHEDULES = ("gradual", "oneshot")
QUANT_MODES = ("int", "binary", "binaryconnect", "ternary")
QUANT_GROUPS = ("layer", "channel")
ATTENTION_SOURCES = ("rate", "current", "latency")
FINETUNE_SIDES = ("snn", "ann")


@dataclass(frozen=True)
class LayerSelection:
    """Which Conv/Linear layers a transform touches: all, minus the first/last and any named ones."""

    skip_first: bool = False
    skip_last: bool = False
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True)
class PruneConfig:
    """Prune the selected layers to ``density`` (fraction of weights kept, over those layers).

    ``granularity``: "weight" (unstructured), "row" (1 x k rows of a convolution kernel), "kernel"
    (whole k x k kernels of a convolution; single weights of a linear layer) or "channel" (whole output channels / rows). ``scope``: "global"
    ranks all selected layers together, "layer" prunes every layer by the same fraction.
    ``schedule``: "oneshot" prunes to ``density`` before fine-tuning; "gradual" starts dense and
    lowers the density every ``interval`` optimizer steps along the cubic schedule of Zhu & Gupta
    (2018), ``d_t = d + (1 - d)(1 - t / ramp)^3``, reaching ``density`` after the ``ramp``
    fraction of the pruning phase (a network pruned at once to 10% often falls silent). ``method``
    "dnr" also lets dynamic network rewiring move connections between layers at those steps;
    "magnitude" only removes the smallest weights. ``recalibrate`` (True, False or "auto")
    restores the teacher's per-channel pre-activation mean and spread after every pruning step (see
    :mod:`spikec.compress.recalibrate`; skipped in networks with batch norm, which do it
    themselves). "auto" does it for rate/direct SNNs and ANNs but not for TTFS networks, whose
    exact ReLU-to-spike-time gradients need no help and where re-normalising every few steps can
    fight the optimizer: with it, one MLP of three fine-tuning seeds collapsed to 10% and LeNet
    and VGG gained nothing (``benchmarks/compression_unseen.py --codings ttfs --set
    prune.recalibrate=true``; at batch 64 it cost VGG, MLP and LeNet 1 to 3 points).
    """

    density: float = 0.1
    granularity: str = "weight"
    scope: str = "layer"
    method: str = "dnr"
    schedule: str = "gradual"
    ramp: float = 0.5
    interval: int = 10
    recalibrate: bool | str = "auto"
    layers: LayerSelection = field(default_factory=LayerSelection)

    def __post_init__(self):
        if not 0.0 < float(self.density) <= 1.0:
            raise ValueError(f"density must lie in (0, 1], got {self.density}")
        _check("granularity", self.granularity, GRANULARITIES)
        _check("scope", self.scope, SCOPES)
        _check("method", self.method, PRUNE_METHODS)
        _check("schedule", self.schedule, SCHEDULES)
        if not 0.0 < float(self.ramp) <= 1.0:
            raise ValueError(f"ramp must lie in (0, 1], got {self.ramp}")
        if int(self.interval) < 1:
            raise ValueError(f"interval must be >= 1, got {self.interval}")
        if self.recalibrate not in (True, False, "auto"):
            raise ValueError(f"recalibrate must be true, false or \"auto\", got {self.recalibrate!r}")


@dataclass(frozen=True)
class DNRConfig:
    """Dynamic network rewiring (Kundu et al., ASP-DAC 2021, after Dettmers & Zettlemoyer's sparse momentum).

    At every pruning step (see :class:`PruneConfig`) until the ``stop`` fraction of the pruning
    phase, each layer drops the smallest-magnitude ``prune_rate`` fraction of its active weights;
    the same total regrows, shared between layers in proportion to their mean gradient momentum,
    at the zero weights of largest momentum. The prune rate decays to zero over the phase
    (cosine). ``momentum`` is the decay of the gradient's exponential average.
    """

    prune_rate: float = 0.3
    momentum: float = 0.9
    stop: float = 0.75
    decay: str = "cosine"

    def __post_init__(self):
        if not 0.0 <= float(self.prune_rate) < 1.0:
            raise ValueError(f"prune_rate must lie in [0, 1), got {self.prune_rate}")
        if not 0.0 <= float(self.momentum) < 1.0:
            raise ValueError(f"momentum must lie in [0, 1), got {self.momentum}")
        if not 0.0 <= float(self.stop) <= 1.0:
            raise ValueError(f"stop must lie in [0, 1], got {self.stop}")
        _check("decay", self.decay, ("cosine", "linear", "constant"))


@dataclass(frozen=True)
class QuantConfig:
    """Symmetric ``bits``-bit weights (integers in ``[-(2^(bits-1)-1), 2^(bits-1)-1]`` times a scale).

    ``group``: one scale per "layer" or per output "channel". ``mode``: "int" (k-bit), "binary"
    (Binary Weight Network: ``alpha * sign(w)``, alpha = mean |w|), "binaryconnect" (``sign(w)``
    times a scale fixed when quantization starts) or "ternary" (``alpha * {-1, 0, 1}`` with the
    0.7 mean |w| cut of ternary weight networks). ``grid_thresholds`` shrinks each scale so the
    next spiking layer's threshold is a whole number of steps, and rounds biases to the same grid,
    so that an integer accumulator reproduces the network exactly.
    """

    bits: int = 4
    group: str = "layer"
    mode: str = "int"
    grid_thresholds: bool = True
    quantize_bias: bool = True
    layers: LayerSelection = field(default_factory=LayerSelection)

    def __post_init__(self):
        _check("mode", self.mode, QUANT_MODES)
        _check("group", self.group, QUANT_GROUPS)
        if self.mode == "int" and not 2 <= int(self.bits) <= 8:
            raise ValueError(f"bits must lie in 2..8, got {self.bits}")

    @property
    def weight_bits(self) -> int:
        """Bits stored per weight: k for "int", 1 for binary, 2 for ternary."""
        if self.mode == "int":
            return int(self.bits)
        return 2 if self.mode == "ternary" else 1


@dataclass(frozen=True)
class AttentionConfig:
    """Attention transfer from the uncompressed teacher: ``beta * sum_l ||A_s(l) - A_t(l)||^2``.

    ``source`` (spiking layers only): their output spikes averaged over time ("rate", the
    default), their input current averaged over time ("current", the drive of the membrane before
    thresholding), or their spikes weighted by earliness, ``sum_t s_t (T - t) / T`` ("latency", for
    time-to-first-spike networks where an early spike means a strong activation). ``layers``:
    module names; empty means every spiking layer before the last synaptic layer (every
    activation, for an ANN).
    """

    beta: float = 1.0
    p: float = 2.0
    source: str = "rate"
    layers: tuple[str, ...] = ()

    def __post_init__(self):
        _check("source", self.source, ATTENTION_SOURCES)
        if float(self.beta) < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning during pruning and quantization-aware training.

    ``epochs``: the pruning phase; ``quant_epochs``: quantization-aware training after it (-1:
    half of ``epochs``, at least one). ``relative_lr``: every parameter tensor's learning rate is
    ``lr`` times its own root-mean-square value (see :func:`spikec.compress.finetune.finetune`).
    ``timesteps`` > 0 fine-tunes a time-stepped classifier at that many steps (its own count is
    restored afterwards). ``ttfs_simulator``: how a TTFS network with a time resolution runs
    while it is fine-tuned: "analytic" (the closed form of the time-stepped simulation: the same
    spike times and the same gradients, tested equal, at a fraction of the cost) or "stepped"
    (step by step, as the hardware does it; 12x slower end to end on LeNet). ``batch_size`` 32
    (as ``spikec train``): on a small set such as digits (1437 samples) 64 leaves 230 optimizer
    steps in 10 epochs, and LeNet compressed to density 0.1 with 4-bit weights then kept 96.5%
    (rate) and 94.6% (TTFS) against 97.5% and 96.9% (mean of 3 seeds;
    ``benchmarks/compression_unseen.py --networks lenet --set finetune.batch_size=64``).
    """

    epochs: int = 10
    quant_epochs: int = -1
    lr: float = 1e-2
    batch_size: int = 32
    optimizer: str = "adam"
    relative_lr: bool = True
    seed: int = 0
    timesteps: int = 0
    ttfs_simulator: str = "analytic"

    def __post_init__(self):
        _check("ttfs_simulator", self.ttfs_simulator, ("analytic", "stepped"))
        if int(self.epochs) < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        if not float(self.lr) > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")

    @property
    def quant_phase_epochs(self) -> int:
        """Epochs of quantization-aware training (default: half the pruning epochs, at least one when epochs > 0)."""
        if int(self.quant_epochs) >= 0:
            return int(self.quant_epochs)
        return max(1, int(self.epochs) // 2) if int(self.epochs) > 0 else 0


@dataclass(frozen=True)
class CompressConfig:
    """The whole Spike-Thrift recipe: prune (DNR), then quantize, fine-tuning with attention transfer.

    ``prune`` / ``quant`` / ``attention`` may be None to skip that part.
    """

    prune: PruneConfig | None = field(default_factory=PruneConfig)
    quant: QuantConfig | None = field(default_factory=QuantConfig)
    attention: AttentionConfig | None = field(default_factory=AttentionConfig)
    dnr: DNRConfig = field(default_factory=DNRConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)


def to_dict(config) -> dict:
    """A config as nested plain dicts (tuples become lists)."""
    def plain(v):
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        return v

    return plain(config)


def from_dict(cls, data: dict | None):
    """Rebuild a config of class ``cls`` from :func:`to_dict` output; unknown keys are an error."""
    if data is None:
        return None
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(f"{cls.__name__} has no field {unknown[0]!r}")
    kwargs = {}
    for key, value in data.items():
        sub = _NESTED.get((cls, key))
        if sub is not None:
            kwargs[key] = from_dict(sub, value)
        elif isinstance(value, list):
            kwargs[key] = tuple(value)
        else:
            kwargs[key] = value
    return cls(**kwargs)


def load_toml(path: str) -> CompressConfig:
    """A :class:`CompressConfig` from a TOML file with tables [prune], [quant], [attention], [dnr], [finetune]."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    with open(path, "rb") as f:
        data = tomllib.load(f)
    for part in ("prune", "quant", "attention"):
        if data.get(part, {}).get("enabled", True) is False:
            data[part] = None
        elif part in data:
            data[part].pop("enabled", None)
    return from_dict(CompressConfig, data)


def dump_toml(config: CompressConfig) -> str:
    """TOML text of ``config`` (a disabled part is written as ``enabled = false``)."""
    lines: list[str] = []

    def table(name: str, values: dict) -> None:
        scalars = {k: v for k, v in values.items() if not isinstance(v, dict)}
        lines.append(f"[{name}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in scalars.items())
        lines.append("")
        for k, v in values.items():
            if isinstance(v, dict):
                table(f"{name}.{k}", v)

    for name, values in to_dict(config).items():
        table(name, {"enabled": False} if values is None else values)
    return "\n".join(lines)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _check(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


_NESTED = {
    (PruneConfig, "layers"): LayerSelection,
    (QuantConfig, "layers"): LayerSelection,
    (CompressConfig, "prune"): PruneConfig,
    (CompressConfig, "quant"): QuantConfig,
    (CompressConfig, "attention"): AttentionConfig,
    (CompressConfig, "dnr"): DNRConfig,
    (CompressConfig, "finetune"): FinetuneConfig,
}
