"""Frozen dataclass configs of the compression verbs, loadable from and savable to TOML.

Every field is plain data (numbers, strings, tuples of strings), so a config round-trips through
``to_dict`` / ``from_dict`` and is stored as such in a compressed checkpoint.
"""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field

GRANULARITIES = ("weight", "row", "kernel", "channel", "tile-row", "tile-col", "tile")
STRUCTURES = ("tile-row", "tile-col", "tile")
REGULARIZERS = ("none", "group-lasso", "hoyer-square")
SCOPES = ("global", "layer")
PRUNE_METHODS = ("magnitude", "dnr")
SCHEDULES = ("gradual", "oneshot")
AUGMENTATIONS = ("auto", "crop-flip", "none")
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
    (whole k x k kernels of a convolution; single weights of a linear layer), "channel" (whole
    output channels / rows), or, aligned with the crossbar tiles of ``tile_rows`` x ``tile_cols``
    (``tile_cols / (2 * cells_per_weight)`` neurons, as ``spikec.hardware``'s ``neurons_per_tile``;
    the defaults are those of its twin-column preset), "tile-row" (one input row of one
    tile), "tile-col" (one neuron's column pair in one row tile) or "tile" (whole tiles); see
    :mod:`spikec.compress.groups`. ``regularizer`` adds ``strength`` times a sparsity-inducing
    penalty over those groups to the fine-tuning loss: "group-lasso" (Wen et al. 2016, SSL) or
    "hoyer-square" (the scale-invariant Group-Hoyer-square of Yang, Wen & H. Li, ICLR 2020); see
    :mod:`spikec.compress.regularize`. Channel pruning leaves the readout's channels (the classes)
    alone (:func:`spikec.compress.prune.pruned_layers`). ``scope``: "global"
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

    ``layer_density``: ``(layer name, density)`` pairs (a TOML inline table or list of pairs) that
    give the named layers their own density; every selected layer then keeps its own share
    (``density`` for the layers not named), ``scope`` does not apply, and DNR regrows connections
    only in the layer that lost them. A plan puts the pruning where it saves most: on the PE a
    channel removed from an early 32 x 32 convolution saves more energy per removed SOP than one
    from a late layer (``benchmarks/channel_energy_share.py``).
    """

    density: float = 0.1
    granularity: str = "weight"
    scope: str = "layer"
    method: str = "dnr"
    schedule: str = "gradual"
    ramp: float = 0.5
    interval: int = 10
    recalibrate: bool | str = "auto"
    regularizer: str = "none"
    strength: float = 1e-3
    tile_rows: int = 128
    tile_cols: int = 128
    cells_per_weight: int = 3  # as the twin-column preset's
    layers: LayerSelection = field(default_factory=LayerSelection)
    layer_density: tuple[tuple[str, float], ...] = ()

    def __post_init__(self):
        if not 0.0 < float(self.density) <= 1.0:
            raise ValueError(f"density must lie in (0, 1], got {self.density}")
        object.__setattr__(self, "layer_density", _density_plan(self.layer_density))
        _check("granularity", self.granularity, GRANULARITIES)
        _check("regularizer", self.regularizer, REGULARIZERS)
        if not float(self.strength) >= 0:
            raise ValueError(f"strength must be >= 0, got {self.strength}")
        if int(self.tile_rows) < 1 or int(self.tile_cols) < 2 or int(self.tile_cols) % 2:
            raise ValueError(f"tiles must have >= 1 row and an even number >= 2 of columns, got "
                             f"{self.tile_rows} x {self.tile_cols}")
        if int(self.cells_per_weight) < 1 or int(self.tile_cols) < 2 * int(self.cells_per_weight):
            raise ValueError(f"cells_per_weight must be >= 1 and fit a tile of {self.tile_cols} columns "
                             f"(2 per weight and cell), got {self.cells_per_weight}")
        _check("scope", self.scope, SCOPES)
        _check("method", self.method, PRUNE_METHODS)
        _check("schedule", self.schedule, SCHEDULES)
        if not 0.0 < float(self.ramp) <= 1.0:
            raise ValueError(f"ramp must lie in (0, 1], got {self.ramp}")
        if int(self.interval) < 1:
            raise ValueError(f"interval must be >= 1, got {self.interval}")
        if self.recalibrate not in (True, False, "auto"):
            raise ValueError(f"recalibrate must be true, false or \"auto\", got {self.recalibrate!r}")

    def layer_densities(self, names) -> dict[str, float] | None:
        """Each of the selected layers ``names``' density under ``layer_density`` (None without a plan)."""
        if not self.layer_density:
            return None
        names = list(names)
        plan = dict(self.layer_density)
        unknown = [n for n in plan if n not in names]
        if unknown:
            raise ValueError(f"layer_density names {unknown[0]!r}, which is not a pruned Conv/Linear layer "
                             f"(pruned: {', '.join(names)})")
        return {n: float(plan.get(n, self.density)) for n in names}

    @property
    def tile(self):
        """The crossbar tile geometry of the tile granularities."""
        from spikec.compress.groups import TileShape

        return TileShape(int(self.tile_rows), int(self.tile_cols) // (2 * int(self.cells_per_weight)))


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

    ``bits``: one width for every layer, one per quantized layer (a tuple, in layer order), or
    "auto": per layer the smallest width of ``auto_bits`` whose post-training quantization of that
    layer alone raises the cross-entropy on ``auto_samples`` stratified training samples by at most
    ``auto_tolerance`` nats (a one-layer-at-a-time sensitivity search; see
    :func:`spikec.compress.quantize.choose_bits`). ``cell_levels`` > 0: the weights are for
    crossbar cells of that many conductance levels (``spikec.hardware``'s ``cell_levels``); with
    ``cells_per_weight = m`` cells a sign, twin pairs realise ``m (L - 1)`` uniform steps a side;
    widths with more levels than that are refused, so every quantized layer maps onto the cells
    without a second rounding.
    """

    bits: int | tuple[int, ...] | str = 4
    group: str = "layer"
    mode: str = "int"
    grid_thresholds: bool = True
    quantize_bias: bool = True
    cell_levels: int = 0
    cells_per_weight: int = 1
    auto_bits: tuple[int, ...] = (2, 3, 4, 5)
    auto_tolerance: float = 0.01
    auto_samples: int = 256
    layers: LayerSelection = field(default_factory=LayerSelection)

    def __post_init__(self):
        _check("mode", self.mode, QUANT_MODES)
        _check("group", self.group, QUANT_GROUPS)
        if int(self.cell_levels) != 0 and int(self.cell_levels) < 2:
            raise ValueError(f"cell_levels must be 0 (no cell grid) or >= 2, got {self.cell_levels}")
        if isinstance(self.cells_per_weight, bool) or int(self.cells_per_weight) < 1:
            raise ValueError(f"cells_per_weight must be >= 1, got {self.cells_per_weight}")
        if self.mode != "int":
            return
        if isinstance(self.bits, str):
            if self.bits != "auto":
                raise ValueError(f"bits must be 2..8, one per layer, or \"auto\", got {self.bits!r}")
            for b in self.auto_bits:
                self._check_bits(b, "auto_bits")
            if not float(self.auto_tolerance) >= 0:
                raise ValueError(f"auto_tolerance must be >= 0, got {self.auto_tolerance}")
        else:
            for b in (self.bits if isinstance(self.bits, tuple) else (self.bits,)):
                self._check_bits(b, "bits")

    def _check_bits(self, b, name: str) -> None:
        if isinstance(b, bool) or not isinstance(b, int) or not 2 <= b <= 8:
            raise ValueError(f"{name} must lie in 2..8, got {b!r}")
        L, m = int(self.cell_levels), int(self.cells_per_weight)
        side = m * (L - 1)
        if L and 2 ** (b - 1) - 1 > side:
            cells = f"a cell of {L} levels holds" if m == 1 else f"{m} cells of {L} levels hold"
            raise ValueError(f"{name} {b}: a {b}-bit weight has {2 ** (b - 1) - 1} levels a side, but {cells} "
                             f"{side}; at most {(side + 1).bit_length()} bits map onto the cells")

    def layer_bits(self, layers: int) -> tuple[int, ...]:
        """Bit width of each of ``layers`` selected layers, in order (not for "auto": resolve it first)."""
        if isinstance(self.bits, str):
            raise ValueError("bits \"auto\" is chosen by spikec.compress.quantize.choose_bits")
        if isinstance(self.bits, tuple):
            if len(self.bits) != layers:
                raise ValueError(f"bits gives {len(self.bits)} widths for {layers} quantized layers")
            return tuple(int(b) for b in self.bits)
        return (int(self.bits),) * layers

    @property
    def weight_bits(self) -> int:
        """Bits stored per weight: k for "int" (the largest, with one width per layer), 1 for binary, 2 for ternary."""
        if self.mode == "int":
            if isinstance(self.bits, str):
                return max(int(b) for b in self.auto_bits)
            return max(self.bits) if isinstance(self.bits, tuple) else int(self.bits)
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
    ``augment``: "auto" crops and flips images of at least 16x16 pixels as ``spikec train`` does
    (none for digits and feature vectors), "crop-flip" insists, "none" turns it off. Fine-tuning
    on a CIFAR training set for several epochs without it overfits, as training does.
    ``distill`` (0 to 1) mixes knowledge distillation from the uncompressed network's scores into
    the loss at ``temperature`` (see :func:`spikec.compress.finetune.finetune`); 0 turns it off.
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
    augment: str = "auto"
    distill: float = 0.0
    temperature: float = 4.0

    def __post_init__(self):
        _check("ttfs_simulator", self.ttfs_simulator, ("analytic", "stepped"))
        if not 0.0 <= float(self.distill) <= 1.0:
            raise ValueError(f"distill must be in [0, 1], got {self.distill}")
        if not float(self.temperature) > 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        _check("augment", self.augment, AUGMENTATIONS)
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
class RobustConfig:
    """Variation-aware fine-tuning (see :mod:`spikec.compress.variation` and :mod:`spikec.compress.regularize`).

    ``sigma``: every fine-tuning step runs on a sampled chip whose cells are off by ``exp(theta)``,
    ``theta ~ N(0, sigma^2)`` (0: no variation); ``chips``: cycle over that many seeded chips (0: a
    new chip every step); ``seed``: the training chips' seed (keep it apart from the evaluation's);
    ``g_off_ratio``: ``G_off / (G_on - G_off)`` of the cells (1/16 for the twin-column preset).
    ``lipschitz``: strength of the spectral-norm penalty (0: none). ``threshold_jitter`` (TTFS
    networks): each training chip's neurons also fire with thresholds off by ``exp(u)``,
    ``u ~ U(-j, j)`` per output channel, the residual MFTA leaves (``mfta_step / 2``; see
    :class:`~spikec.compress.variation.ThresholdJitter`). Applies to every fine-tuning
    phase; with neither pruning nor quantization, ``finetune.epochs`` of variation-aware training.
    """

    sigma: float = 0.0
    chips: int = 0
    seed: int = 1000
    g_off_ratio: float = 1.0 / 16.0
    lipschitz: float = 0.0
    threshold_jitter: float = 0.0

    def __post_init__(self):
        if not 0.0 <= float(self.sigma) <= 2.0:
            raise ValueError(f"sigma must lie in [0, 2], got {self.sigma}")
        if int(self.chips) < 0:
            raise ValueError(f"chips must be >= 0, got {self.chips}")
        if not float(self.g_off_ratio) >= 0:
            raise ValueError(f"g_off_ratio must be >= 0, got {self.g_off_ratio}")
        if not float(self.lipschitz) >= 0:
            raise ValueError(f"lipschitz must be >= 0, got {self.lipschitz}")
        if not 0.0 <= float(self.threshold_jitter) <= 1.0:
            raise ValueError(f"threshold_jitter must lie in [0, 1], got {self.threshold_jitter}")


@dataclass(frozen=True)
class CompressConfig:
    """The whole Spike-Thrift recipe: prune (DNR), then quantize, fine-tuning with attention transfer.

    ``prune`` / ``quant`` / ``attention`` / ``robust`` may be None to skip that part.
    """

    prune: PruneConfig | None = field(default_factory=PruneConfig)
    quant: QuantConfig | None = field(default_factory=QuantConfig)
    attention: AttentionConfig | None = field(default_factory=AttentionConfig)
    dnr: DNRConfig = field(default_factory=DNRConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    robust: RobustConfig | None = None


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
    """A :class:`CompressConfig` from a TOML file with tables [prune], [quant], [attention], [dnr], [finetune], [robust]."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    with open(path, "rb") as f:
        data = tomllib.load(f)
    for part in ("prune", "quant", "attention", "robust"):
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


def _density_plan(plan) -> tuple[tuple[str, float], ...]:
    """``layer_density`` as ``((name, density), ...)`` from a mapping or pairs, each density in (0, 1]."""
    pairs = list(plan.items()) if isinstance(plan, dict) else list(plan)
    out, seen = [], set()
    for pair in pairs:
        if isinstance(pair, str) or len(pair) != 2:
            raise ValueError(f"layer_density takes (layer name, density) pairs, got {pair!r}")
        name, d = pair
        if not isinstance(name, str) or not name:
            raise ValueError(f"layer_density: a layer name must be a non-empty string, got {name!r}")
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0.0 < float(d) <= 1.0:
            raise ValueError(f"layer_density of {name!r} must lie in (0, 1], got {d!r}")
        if name in seen:
            raise ValueError(f"layer_density names {name!r} twice")
        seen.add(name)
        out.append((name, float(d)))
    return tuple(out)


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
    (CompressConfig, "robust"): RobustConfig,
}
