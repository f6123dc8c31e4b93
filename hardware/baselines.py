"""Baselines with the same parameters: a rate-coded SNN and an ADC-based ANN on the same crossbar,
and the ANN on a digital 45 nm accelerator.

- **rate_snn_crossbar** (:func:`rate_snn_energy`): the rate SNN converted from the same ANN runs
  on the same tiles (same conductances, no ramp rows). Every input spike is a read pulse of
  ``read_pulse_s`` on its row, IF neurons are powered for all ``T`` steps (no power gating), spike
  counts come from ``spikec.record``. The first layer gets the analog input every step (direct
  coding), a pulse ``x * read_pulse_s`` wide. :func:`value_network` rebuilds the ANN from the TTFS
  layers (residual additions included, :class:`ProgramValues`); :func:`rate_networks` converts it
  with percentile thresholds and, fine-tuned with QCFS activations, as the QCFS baseline;
  :func:`iso_accuracy_rate` finds the fewest steps reaching a target accuracy.
- **ann_digital_fp32 / ann_digital_int8** (:func:`digital_energy`): every multiply-accumulate of
  the ANN at Horowitz's 45 nm energies, plus SRAM traffic with ideal reuse (each weight read
  once, each activation written once and read once per layer).
- **ann_reram_adc** (:func:`reram_adc_energy`): NeuroSim-style. Activations quantized to
  ``ann_bits`` bits enter bit-serially (one read cycle per bit plane, a row driven when its bit
  is 1); every column of every row tile is converted by an ADC after every bit plane
  (``adc_columns_muxed`` columns share an ADC, which sets the latency), partial sums are added
  with shift-adds.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from spikec.conversion.ttfs_layers import TTFSLayer, TTFSReadout, TTFSTimeOp
from spikec.errors import SpikecError, UsageError
from spikec.hardware.config import HardwareConfig
from spikec.hardware.copies import with_copies
from spikec.hardware.crossbar import program_crossbar
from spikec.hardware.energy import rate_layer_energy
from spikec.hardware.extract import slot_shapes, stack_sources, unroll_index, unroll_inputs
from spikec.hardware.mapping import tile_layer
from spikec.hardware.rate_search import StepCounts, rate_step_counts
from spikec.hardware.simulate import run_program
from spikec.hardware.timing import RunOptions, input_values

ENERGY_PARTS = ("crossbar", "neuron", "driver", "buffer", "static")


# ---------------------------------------------------------------- the ANN behind a TTFS network

def value_network(snn) -> nn.Module:
    """The ReLU network a TTFS network computes, in its normalised units (:class:`ProgramValues` if not a chain).

    Layer ``l`` outputs ``ReLU(W_l a + b_l)`` with the TTFS layer's own weights (activations divided
    by the window scale ``M_l``); the last layer outputs the logits (readout weights times its
    scale). Conversion to a rate SNN re-normalises thresholds, so these units are as good as the
    ANN's. Used to build the rate baseline from a TTFS checkpoint, which does not keep the ANN.
    """
    if snn.encoder.signed:
        raise SpikecError("rate baseline: TTFS networks with signed inputs are not supported")
    if not _is_chain(snn):
        return ProgramValues(snn).eval()
    modules: list[nn.Module] = []
    slot = 0
    for name, ins, out in snn.program:
        if tuple(ins) != (slot,):
            raise SpikecError(f"rate baseline: step {name!r} is not a chain step; only chain-shaped networks are supported")
        m = snn.ops[name]
        if isinstance(m, TTFSTimeOp):
            modules.append(_time_op_module(m.op))
        else:
            if len(m.synapses) != 1:
                raise SpikecError(f"rate baseline: layer {name!r} has {len(m.synapses)} synapses; not supported")
            syn = m.synapses[0]
            first = len(modules) == 0 or all(isinstance(x, (nn.Flatten, nn.Unflatten)) for x in modules)
            gain = (1.0 / snn.encoder.scale if first else 1.0) * (m.scale if isinstance(m, TTFSReadout) else 1.0)
            modules += [_linear_op_module(op) for op in syn.spec.pre]
            modules.append(_weighted_module(syn, gain, m.scale if isinstance(m, TTFSReadout) else 1.0))
            modules += [_linear_op_module(op) for op in syn.spec.post]
            if isinstance(m, TTFSLayer):
                modules.append(nn.ReLU())
        slot = out
    return nn.Sequential(*modules).eval()


def _is_chain(snn) -> bool:
    slot = 0
    for name, ins, out in snn.program:
        if tuple(ins) != (slot,):
            return False
        m = snn.ops[name]
        if not isinstance(m, TTFSTimeOp) and len(m.synapses) != 1:
            return False
        slot = out
    return True


class ProgramValues(nn.Module):
    """The ReLU network of a TTFS network of any shape: skip synapses become residual additions.

    Each program step reads its input slots; a layer adds the outputs of its synapses (each a
    weighted module with its linear pre/post ops; an identity-skip ``gain`` synapse is a 1x1
    convolution with ``gain * I``), then applies a ReLU (``act[name]``; not for the readout).
    The rate converter traces it like any ANN with residual additions.
    """

    def __init__(self, snn):
        super().__init__()
        self.syn = nn.ModuleDict()
        self.act = nn.ModuleDict()
        self.time = nn.ModuleDict()
        self.plan = []
        inputs = set(range(2 if snn.encoder.signed else 1))
        shapes = slot_shapes(snn)
        for name, ins, out in snn.program:
            m = snn.ops[name]
            key = name.replace(".", "_")
            if isinstance(m, TTFSTimeOp):
                self.time[key] = _time_op_module(m.op)
                self.plan.append(("time", key, tuple(ins), out, 1))
                continue
            readout = isinstance(m, TTFSReadout)
            for j, (syn, slot) in enumerate(zip(m.synapses, ins)):
                gain = (1.0 / snn.encoder.scale if slot in inputs else 1.0) * (m.scale if readout else 1.0)
                mods = [_linear_op_module(op) for op in syn.spec.pre]
                if syn.spec.kind == "gain":
                    mods.append(_gain_module(syn, gain, m.scale if readout else 1.0, shapes[slot]))
                else:
                    mods.append(_weighted_module(syn, gain, m.scale if readout else 1.0))
                mods += [_linear_op_module(op) for op in syn.spec.post]
                self.syn[f"{key}__{j}"] = nn.Sequential(*mods)
            if not readout:
                self.act[key] = nn.ReLU()
            self.plan.append(("readout" if readout else "layer", key, tuple(ins), out, len(m.synapses)))

    def forward(self, x):
        slots = {0: x}
        out = None
        for kind, key, ins, out, n in self.plan:
            if kind == "time":
                slots[out] = self.time[key](slots[ins[0]])
                continue
            acc = self.syn[f"{key}__0"](slots[ins[0]])
            for j in range(1, n):
                acc = acc + self.syn[f"{key}__{j}"](slots[ins[j]])
            slots[out] = self.act[key](acc) if kind == "layer" else acc
        return slots[out]


def _gain_module(syn, weight_gain: float, bias_gain: float, in_shape: tuple) -> nn.Module:
    """An identity skip ``w * x + b`` as a 1x1 convolution (or a linear layer) with ``w * I``."""
    w = float(syn.weight.detach()) * weight_gain
    b = None if syn.bias is None else syn.bias.detach().to(torch.float32) * bias_gain
    c = in_shape[0]
    mod = nn.Conv2d(c, c, 1, bias=b is not None) if len(in_shape) == 3 else nn.Linear(c, c, bias=b is not None)
    with torch.no_grad():
        mod.weight.copy_(w * torch.eye(c).reshape(mod.weight.shape))
        if b is not None:
            mod.bias.copy_(b.expand(c))
    return mod


def _weighted_module(syn, weight_gain: float, bias_gain: float) -> nn.Module:
    w = syn.weight.detach().to(torch.float32) * weight_gain
    b = None if syn.bias is None else syn.bias.detach().to(torch.float32) * bias_gain
    spec = syn.spec
    if spec.kind == "linear":
        mod = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
    elif spec.kind == "conv2d":
        mod = nn.Conv2d(w.shape[1] * spec.groups, w.shape[0], tuple(w.shape[2:]), stride=spec.stride,
                        padding=spec.padding, dilation=spec.dilation, groups=spec.groups, bias=b is not None)
    else:
        raise SpikecError(f"rate baseline: synapse kind {spec.kind!r} is not supported")
    with torch.no_grad():
        mod.weight.copy_(w)
        if b is not None:
            mod.bias.copy_(b)
    return mod


def _reshape_module(shape) -> nn.Module:
    shape = tuple(shape)
    return nn.Flatten() if len(shape) == 1 else nn.Unflatten(1, shape)


def _linear_op_module(op) -> nn.Module:
    kw = dict(op.kwargs)
    if op.name == "reshape":
        return _reshape_module(kw["shape"])
    if op.name == "avg_pool2d":
        return nn.AvgPool2d(**kw)
    if op.name == "adaptive_avg_pool2d":
        return nn.AdaptiveAvgPool2d(**kw)
    raise SpikecError(f"rate baseline: op {op.name!r} is not supported")


def _time_op_module(op) -> nn.Module:
    kw = dict(op.kwargs)
    if op.name == "reshape":
        return _reshape_module(kw["shape"])
    if op.name == "max_pool2d":
        return nn.MaxPool2d(**kw)
    if op.name == "adaptive_max_pool2d":
        return nn.AdaptiveMaxPool2d(**kw)
    raise SpikecError(f"rate baseline: spike-time op {op.name!r} is not supported")


# ---------------------------------------------------------------- rate SNN on the crossbar

def _input_tiling(xb, config: HardwareConfig, with_bias: bool):
    rows = xb.input_rows + (xb.bias_rows if with_bias else 0)
    tiling = tile_layer(rows, xb.layer.neurons, config, xb.layer.positions)
    return dataclasses.replace(tiling, copies=xb.tiling.copies)  # the TTFS mapping's copies (tile_budget)


def _producers(program) -> list[list[tuple[str, int]]]:
    """For each crossbar layer, the producer of each input slot: ``("encoder", 0)`` or ``("layer", i)``.

    Spike-time ops (max pooling, reshapes) pass their input's producer on.
    """
    producer = {i: ("encoder", 0) for i in range(program.input_slots)}
    out = []
    li = 0
    for step in program.steps:
        if step.layer is None:
            producer[step.output] = producer[step.inputs[0]]
            continue
        out.append([producer[i] for i in step.inputs])
        producer[step.output] = ("layer", li)
        li += 1
    return out


def _source_entries(layer) -> list[int]:
    """Unrolled (position, row) entries reading each source of ``layer`` (stacked in ``source_shapes`` order)."""
    idx = unroll_index(layer)
    shapes = layer.source_shapes or (layer.in_shape,)
    counts, start = [], 0
    for shape in shapes:
        n = math.prod(shape)
        counts.append(int(((idx >= start) & (idx < start + n)).sum()))
        start += n
    return counts


def rate_snn_energy(model, rate_snn, x: torch.Tensor, y: torch.Tensor, batch_size: int | None = None,
                    timesteps: int | None = None) -> dict:
    """Energy of ``rate_snn`` (IF neurons, direct input) at ``timesteps`` (default its own) on the crossbar of
    ``model`` (:class:`PEModel`).

    Runs it in time chunks (:func:`spikec.hardware.rate_search.rate_step_counts`) and accounts the
    spikes with :func:`rate_counts_energy`. Returns the report entry (accuracy, energy per
    inference, latency, timesteps).
    """
    counts = rate_step_counts(rate_snn, x, y, [int(timesteps or rate_snn.timesteps)], batch_size=batch_size)[-1]
    return rate_counts_energy(model, counts, x)


def rate_counts_energy(model, counts: StepCounts, x: torch.Tensor) -> dict:
    """The report entry of a rate SNN that spiked ``counts`` in ``counts.timesteps`` steps on inputs ``x``.

    The ``l``-th IF layer is the ``l``-th hidden TTFS layer. A crossbar layer's row drives are, per
    source it reads (the previous layer, a skip source, the analog input), the source's spikes times
    the unrolled entries reading that source per source neuron (max pooling in between: spikes of
    the layer before it).
    """
    config = model.config
    T = int(counts.timesteps)
    spiking = list(zip(counts.layer_spikes, counts.layer_neurons))
    xbs = model.crossbars
    if config.late_bias != 1:  # a rate SNN drives its bias rows every step: the crossbar without late bias
        xbs = [with_copies(program_crossbar(xb.layer, config.replace(late_bias=1)), xb.tiling.copies) for xb in xbs]
    if len(spiking) != len(xbs) - 1:
        raise SpikecError(f"rate baseline: the rate SNN has {len(spiking)} spiking layers but the TTFS network "
                          f"{len(xbs) - 1} hidden layers; cannot align them")
    layers = {}
    x_values = (x / model.program.encoder_scale).clamp(0, 1).to(torch.float64)
    for i, (xb, sources) in enumerate(zip(xbs, _producers(model.program))):
        layer = xb.layer
        entries = _source_entries(layer)
        uses = torch.zeros(x.shape[0], dtype=torch.float64)
        for j, ((kind, src), n_entries) in enumerate(zip(sources, entries)):
            if kind == "encoder":  # analog input: a pulse x * t_pulse wide every step, on every row reading it
                parts = [x_values.reshape(x.shape[0], *sh) if k == j else torch.zeros(x.shape[0], *sh, dtype=torch.float64)
                         for k, sh in enumerate(layer.source_shapes or (layer.in_shape,))]
                stacked = stack_sources(layer, parts).reshape(x.shape[0], *layer.in_shape)
                uses = uses + unroll_inputs(layer, stacked, 0.0).sum((-2, -1)) * T
            else:
                src_spikes, src_neurons = spiking[src]
                uses = uses + src_spikes.to(torch.float64) * n_entries / max(src_neurons, 1)
        uses = uses + (T * layer.positions if xb.bias_rows else 0)
        out_spikes = spiking[i][0].to(torch.float64) if i < len(spiking) else torch.zeros_like(uses)
        n_rows = xb.input_rows + xb.bias_rows
        tiling = _input_tiling(xb, config, True)
        e = rate_layer_energy(xb.g_pos[:n_rows], xb.g_neg[:n_rows], uses, out_spikes, T, layer.positions, config,
                              col_tiles=tiling.col_tiles, tiles=tiling.tiles, copies=tiling.copies)
        layers[layer.name] = {k: float(v.mean()) for k, v in e.items()}
    return _entry(layers, accuracy=counts.accuracy, timesteps=T, spikes_per_inference=counts.spikes_per_inference)


def _entry(layers: dict, **extra) -> dict:
    """Report entry from per-layer component energies (J per inference) and latencies."""
    per_layer = {}
    for n, l in layers.items():
        e = {k: float(l[k]) for k in ENERGY_PARTS}
        e["total"] = sum(e.values())
        per_layer[n] = {"energy_per_inference_j": e, "latency_s": float(l.get("latency_s", 0.0))}
    energy = {k: sum(p["energy_per_inference_j"][k] for p in per_layer.values()) for k in ENERGY_PARTS + ("total",)}
    latency = sum(p["latency_s"] for p in per_layer.values())
    return {"energy_per_inference_j": energy, "latency_s": latency, "layers": per_layer, **extra}


# ---------------------------------------------------------------- rate baselines at equal accuracy

RATE_TIMESTEPS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
RATE_METHODS = ("percentile", "qcfs")


@dataclass(frozen=True)
class RateBaselineOptions:
    """How the rate baselines are built from the TTFS network's ANN (every subset a seeded stratified draw).

    ``calib_samples``: training inputs that set the rate thresholds (percentile 99.9, spikec's
    default). QCFS (Bu et al., ICLR 2022): the ReLUs of the same ANN become QCFS activations with
    ``qcfs_levels`` steps and threshold 1 (the TTFS window scale), fine-tuned for ``qcfs_epochs``
    epochs (Adam, ``qcfs_lr``, cosine) on ``qcfs_samples`` training samples; the converted SNN keeps
    the trained thresholds (defaults: the best of 5 settings tried on the digits VGG-11, see
    ``benchmarks/results/energy_comparison.md``). ``timesteps``: the steps tried, fewest first.
    """

    methods: tuple[str, ...] = RATE_METHODS
    timesteps: tuple[int, ...] = RATE_TIMESTEPS
    calib_samples: int = 512
    qcfs_levels: int = 8
    qcfs_epochs: int = 5
    qcfs_samples: int = 2048
    qcfs_lr: float = 1e-3
    seed: int = 0
    # the search stops early once the PE saves at least this much over the rate SNN at the current T
    # (ASTERS's claim, 0.347): a larger T only costs the rate SNN more, so the verdict is settled; None
    # searches every T of the grid
    stop_saving: float | None = 0.347

    def __post_init__(self):
        unknown = [m for m in self.methods if m not in RATE_METHODS]
        if unknown or not self.methods:
            raise UsageError(f"rate baseline methods must be some of {', '.join(RATE_METHODS)}, got {unknown or 'none'}")
        if not self.timesteps or any(int(t) < 1 for t in self.timesteps):
            raise UsageError(f"rate baseline timesteps must be >= 1, got {self.timesteps}")
        for name in ("calib_samples", "qcfs_levels", "qcfs_samples"):
            if int(getattr(self, name)) < 1:
                raise UsageError(f"rate baseline {name} must be >= 1, got {getattr(self, name)}")
        if self.stop_saving is not None and not 0 <= float(self.stop_saving) < 1:
            raise UsageError(f"rate baseline stop_saving must lie in [0, 1) or be None, got {self.stop_saving}")
        if int(self.qcfs_epochs) < 0 or not self.qcfs_lr > 0:
            raise UsageError(f"rate baseline: qcfs_epochs must be >= 0 and qcfs_lr > 0, got {self.qcfs_epochs}, {self.qcfs_lr}")
        object.__setattr__(self, "timesteps", tuple(sorted(int(t) for t in self.timesteps)))


def qcfs_network(ann: nn.Sequential, x_train: torch.Tensor, y_train: torch.Tensor,
                 options: RateBaselineOptions) -> nn.Sequential:
    """A copy of ``ann`` with every ReLU replaced by QCFS, fine-tuned on a stratified draw of the training data."""
    from spikec.conversion.qcfs import QCFS
    from spikec.data.sample import stratified_tensors
    from spikec.training import train

    net = copy.deepcopy(ann)
    for parent in list(net.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(parent, child_name, QCFS(options.qcfs_levels, threshold=1.0))
    if options.qcfs_epochs > 0:
        xs, ys = stratified_tensors((x_train, y_train), options.qcfs_samples, options.seed)
        train(net, (xs.to(torch.float32), ys), epochs=options.qcfs_epochs, lr=options.qcfs_lr, batch_size=64,
              seed=options.seed, progress=False)
    return net.eval()


def rate_networks(snn, x_train: torch.Tensor, y_train: torch.Tensor, options: RateBaselineOptions,
                  calib: torch.Tensor | None = None) -> dict:
    """``{method: (ann, rate SNN)}``: each rate SNN converted once (the search picks its steps).

    ``calib``: the inputs that set the thresholds (default: a stratified draw of
    ``options.calib_samples`` training inputs).
    """
    import spikec
    from spikec.data.sample import stratified_tensors

    if calib is None:
        calib, _ = stratified_tensors((x_train, y_train), options.calib_samples, options.seed)
    calib = calib.to(torch.float32)
    base = value_network(snn)
    out = {}
    for method in options.methods:
        ann = base if method == "percentile" else qcfs_network(base, x_train, y_train, options)
        out[method] = (ann, spikec.convert(ann, calib, coding="rate", timesteps=options.timesteps[0]))
    return out


def iso_accuracy_rate(model, rate_snn, x: torch.Tensor, y: torch.Tensor, target: float,
                      timesteps=RATE_TIMESTEPS, progress: bool = False, energy_bound: float | None = None,
                      keep_counts_at: int | None = None) -> dict:
    """The rate SNN at the fewest of ``timesteps`` whose accuracy reaches ``target`` (the largest if none does).

    One run (:func:`spikec.hardware.rate_search.rate_step_counts`) that stops at the first ``T``
    reaching the target: it simulates that many steps, not the sum of all ``T`` tried. The entry is
    :func:`rate_counts_energy`'s at that ``T`` plus ``target_accuracy``, ``reached`` and ``search``
    (accuracy and energy at every ``T`` tried). ``rate_snn`` is not changed.

    ``energy_bound`` (J per inference): also stop at the first ``T`` whose energy reaches it. A rate
    SNN's energy never falls as ``T`` grows (its spikes, neuron-on time and leakage only add up), so
    whatever ``T`` it would reach the target at costs at least that much: the entry says
    ``stopped_at_energy_bound`` and its energy is a lower bound of the equal-accuracy one. The run
    goes on to at least ``keep_counts_at`` steps (one of ``timesteps``), whose :class:`StepCounts`
    the entry keeps as ``"counts"`` for a baseline at that ``T`` (not JSON: pop it before writing).
    """
    wanted = {int(t) for t in timesteps}
    keep = int(keep_counts_at) if keep_counts_at is not None else 0
    steps = sorted(wanted | ({keep} if keep else set()))
    energies: dict[int, dict] = {}
    reached, bounded = [], []  # the T at which the target, or the energy bound, was first met

    def energy_of(counts: StepCounts) -> dict:
        if counts.timesteps not in energies:
            energies[counts.timesteps] = rate_counts_energy(model, counts, x)
        return energies[counts.timesteps]

    def stop(counts: StepCounts) -> bool:  # the verdict is known, and the baseline's T simulated
        if counts.timesteps in wanted and not (reached or bounded):
            if counts.accuracy >= target - 1e-12:
                reached.append(counts.timesteps)
            elif energy_bound is not None and energy_of(counts)["energy_per_inference_j"]["total"] >= energy_bound:
                bounded.append(counts.timesteps)
        return counts.timesteps >= keep and bool(reached or bounded)

    all_counts = rate_step_counts(rate_snn, x, y, steps, progress=progress, stop=stop)
    search, best = [], None
    for counts in all_counts:
        if counts.timesteps not in wanted:
            continue
        entry = energy_of(counts)
        search.append({"timesteps": counts.timesteps, "accuracy": entry["accuracy"],
                       "energy_j": entry["energy_per_inference_j"]["total"]})
        best = entry
        if counts.timesteps in reached + bounded:
            break
    best = dict(best)
    best["target_accuracy"] = target
    best["reached"] = best["accuracy"] >= target - 1e-12
    best["search"] = search
    # a bound met at the last T of the grid stopped nothing: the whole grid was searched
    best["stopped_at_energy_bound"] = bool(bounded) and not best["reached"] and bounded[0] < max(wanted)
    if best["stopped_at_energy_bound"]:
        best["energy_bound_j"] = energy_bound
    if keep:
        best["counts"] = next(c for c in all_counts if c.timesteps == keep)
    return best


# ---------------------------------------------------------------- digital accelerator

def digital_energy(model, precision: str) -> dict:
    """The ANN on a 45 nm digital accelerator (Horowitz, ISSCC 2014) at ``"fp32"`` or ``"int8"``.

    compute = MACs * (E_mult + E_add); SRAM = bits * E_bit * (parameters + sum over layers of
    (inputs read + outputs written)). Latency is not modelled.
    """
    c = model.config
    if precision == "fp32":
        mult, add, bits = c.fp32_mult_j, c.fp32_add_j, 32
    elif precision == "int8":
        mult, add, bits = c.int8_mult_j, c.int8_add_j, 8
    else:
        raise ValueError(f"precision must be fp32 or int8, got {precision!r}")
    prog = model.program
    acts = sum(math.prod(l.in_shape) + math.prod(l.out_shape) for l in prog.layers)
    compute = prog.ann_macs * (mult + add)
    sram = bits * c.sram_energy_per_bit_j * (prog.ann_params + acts)
    return {"energy_per_inference_j": {"compute": compute, "sram": sram, "total": compute + sram},
            "latency_s": None, "macs": prog.ann_macs, "parameters": prog.ann_params, "bits": bits}


# ---------------------------------------------------------------- ANN on the crossbar with ADCs

def _popcount(q: torch.Tensor, bits: int) -> torch.Tensor:
    q = q.long()
    return sum(((q >> b) & 1) for b in range(bits)).to(torch.float64)


def reram_adc_energy(model, x: torch.Tensor, batch_size: int = 128) -> dict:
    """The ANN on the same crossbar, bit-serial inputs and an ADC conversion per column per bit plane.

    Activations are the ideal network's (the TTFS values at ``window_bits``, i.e. the clipped
    ReLU outputs) quantized to ``ann_bits`` bits. Per layer and inference:

    - crossbar = ``V_read^2 * dt * sum_{p,i} popcount(q_pi) * sum_k (G+_ik + G-_ik)``
    - driver = ``E_drv * col_tiles * sum_{p,i} popcount(q_pi)``
    - ADC ("neuron" slot) = ``(E_adc + E_add8) * bits * P * 2K * row_tiles``
    - buffer = ``bits * E_bit * (P * rows read + outputs written)``
    - static = ``(tiles * P_leak + P_ctrl) * latency``, latency = ``P * bits * columns_per_ADC / clock``
    """
    c = model.config
    bits = c.ann_bits
    top = 2 ** bits - 1
    sums = {xb.layer.name: torch.zeros(2, dtype=torch.float64) for xb in model.crossbars}
    chips = model.ideal()
    S = c.window_steps
    # per source neuron j: the summed row conductance and the number of unrolled entries reading it, so
    # sum_{p,i} popcount(q[idx[p, i]]) * g_i needs the source map only, never the unrolled [B, P, N] values
    reads = {}
    for xb in model.crossbars:
        idx = unroll_index(xb.layer)
        row_g = (xb.g_pos[: xb.input_rows] + xb.g_neg[: xb.input_rows]).sum(-1).to(torch.float64)  # [N]
        n_in = math.prod(xb.layer.in_shape)
        ok = idx >= 0
        src = idx[ok]
        g_of = torch.zeros(n_in, dtype=torch.float64).index_add_(0, src, row_g.expand_as(idx)[ok])
        n_of = torch.zeros(n_in, dtype=torch.float64).index_add_(0, src, torch.ones_like(src, dtype=torch.float64))
        reads[xb.layer.name] = torch.stack([g_of, n_of], dim=1)  # [n_in, 2]
    for a in range(0, x.shape[0], batch_size):
        run = run_program(model.program, chips, x[a:a + batch_size], c, RunOptions(tta=False), with_energy=False,
                          keep_inputs=True)
        for xb in model.crossbars:
            steps = run.inputs[xb.layer.name][0].to(torch.float64)  # [B, *in_shape]
            v = input_values(steps, S).reshape(steps.shape[0], -1)
            pc = _popcount(torch.round(v.clamp(0, 1) * top), bits)  # [B, n_in]
            sums[xb.layer.name] += (pc @ reads[xb.layer.name]).sum(0)
    n = max(x.shape[0], 1)
    layers = {}
    for xb in model.crossbars:
        layer = xb.layer
        tiling = _input_tiling(xb, c, False)
        g_cycles, pulses = (sums[xb.layer.name] / n).tolist()
        P, K = layer.positions, layer.neurons
        conversions = bits * P * 2 * K * tiling.row_tiles
        reads = int((unroll_index(layer) >= 0).sum())  # source values read, over all positions
        latency = P * bits * c.adc_columns_muxed * c.cycle_s
        layers[layer.name] = {
            "crossbar": c.v_read**2 * c.read_pulse_s * g_cycles,
            "driver": c.driver_energy_j * tiling.col_tiles * pulses,
            "neuron": (c.adc_energy_j + c.int8_add_j) * conversions,
            "buffer": bits * c.buffer_energy_per_bit_j * (reads + K * P),
            "static": (tiling.tiles * c.tile_leakage_w + c.control_power_w) * latency,
            "latency_s": latency,
            "adc_conversions": conversions,
        }
    out = _entry(layers, bits=bits)
    out["adc_conversions"] = sum(l["adc_conversions"] for l in layers.values())
    return out
