"""Baselines with the same parameters: a rate-coded SNN and an ADC-based ANN on the same crossbar,
and the ANN on a digital 45 nm accelerator.

- **rate_snn_crossbar** (:func:`rate_snn_energy`): the rate SNN converted from the same ANN runs
  on the same tiles (same conductances, no ramp rows). Every input spike is a one-cycle read
  pulse on its row, IF neurons are powered for all ``T`` steps (no power gating), spike counts
  come from ``spikec.record``. The first layer gets the analog input every step (direct coding),
  a pulse ``x`` cycles wide.
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

import math

import torch
from torch import nn

from spikec.conversion.ttfs_layers import TTFSLayer, TTFSReadout, TTFSTimeOp
from spikec.errors import SpikecError
from spikec.hardware.config import HardwareConfig
from spikec.hardware.energy import rate_layer_energy
from spikec.hardware.extract import unroll_index, unroll_inputs
from spikec.hardware.mapping import tile_layer
from spikec.hardware.simulate import run_program
from spikec.hardware.timing import RunOptions

ENERGY_PARTS = ("crossbar", "neuron", "driver", "buffer", "static")


# ---------------------------------------------------------------- the ANN behind a TTFS network

def value_network(snn) -> nn.Sequential:
    """The ReLU network a (chain-shaped) TTFS network computes, in its normalised units.

    Layer ``l`` outputs ``ReLU(W_l a + b_l)`` with the TTFS layer's own weights (activations divided
    by the window scale ``M_l``); the last layer outputs the logits (readout weights times its
    scale). Conversion to a rate SNN re-normalises thresholds, so these units are as good as the
    ANN's. Used to build the rate baseline from a TTFS checkpoint, which does not keep the ANN.
    """
    if snn.encoder.signed:
        raise SpikecError("rate baseline: TTFS networks with signed inputs are not supported")
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
    return tile_layer(rows, xb.layer.neurons, config, xb.layer.positions)


def _mean_uses(layer) -> float:
    """Mean number of (position, row) entries each source neuron feeds (padding excluded)."""
    idx = unroll_index(layer)
    return float((idx >= 0).sum()) / max(math.prod(layer.in_shape), 1)


def rate_snn_energy(model, rate_snn, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> dict:
    """Energy of ``rate_snn`` (IF neurons, direct input) on the crossbar of ``model`` (:class:`PEModel`).

    Spike counts of every IF layer come from ``spikec.record``; IF layer ``l`` feeds crossbar
    layer ``l + 1``. Returns the report entry (accuracy, energy per inference, latency, timesteps).
    """
    import spikec

    config = model.config
    T = int(rate_snn.timesteps)
    correct, count = 0, 0
    with spikec.record(rate_snn, first_spike_times=False) as rec:
        for a in range(0, x.shape[0], batch_size):
            with torch.no_grad():
                scores = rate_snn(x[a:a + batch_size])
            correct += int((scores.argmax(1) == y[a:a + batch_size]).sum())
            count += scores.shape[0]
    spiking = list(rec.layers.values())
    xbs = model.crossbars
    if len(spiking) != len(xbs) - 1:
        raise SpikecError(f"rate baseline: the rate SNN has {len(spiking)} spiking layers but the TTFS network "
                          f"{len(xbs) - 1} hidden layers; cannot align them")
    layers = {}
    first = xbs[0].layer
    x_values = (x / model.program.encoder_scale).clamp(0, 1).to(torch.float64)
    analog_uses = unroll_inputs(first, x_values.reshape(x.shape[0], *first.in_shape), 0.0).sum((-2, -1)) * T
    for i, xb in enumerate(xbs):
        layer = xb.layer
        if i == 0:
            uses = analog_uses
        else:
            src = spiking[i - 1]
            ratio = math.prod(layer.in_shape) / max(src.num_neurons, 1)  # max pooling between them
            uses = src.sample_spikes.to(torch.float64) * ratio * _mean_uses(layer)
        uses = uses + (T * layer.positions if xb.bias_rows else 0)
        out_spikes = spiking[i].sample_spikes.to(torch.float64) if i < len(spiking) else torch.zeros_like(uses)
        n_rows = xb.input_rows + xb.bias_rows
        tiling = _input_tiling(xb, config, True)
        e = rate_layer_energy(xb.g_pos[:n_rows], xb.g_neg[:n_rows], uses, out_spikes, T, layer.positions, config,
                              col_tiles=tiling.col_tiles, tiles=tiling.tiles, copies=tiling.copies)
        layers[layer.name] = {k: float(v.mean()) for k, v in e.items()}
    return _entry(layers, accuracy=correct / max(count, 1), timesteps=T,
                  spikes_per_inference=rec.spikes_per_inference)


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
    for a in range(0, x.shape[0], batch_size):
        run = run_program(model.program, chips, x[a:a + batch_size], c, RunOptions(tta=False), with_energy=False, keep=True)
        for xb in model.crossbars:
            v = run.layers[xb.layer.name].values[0]  # [B, P, N]
            pc = _popcount(torch.round(v.clamp(0, 1) * top), bits)  # [B, P, N]
            row_g = (xb.g_pos[: xb.input_rows] + xb.g_neg[: xb.input_rows]).sum(-1)  # [N]
            sums[xb.layer.name] += torch.stack([(pc * row_g).sum(), pc.sum()])
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
            "crossbar": c.v_read**2 * c.cycle_s * g_cycles,
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
