"""Run a whole TTFS network on chips: encoder, every layer, the first-spike readout.

``run_program`` takes the program (:mod:`spikec.hardware.extract`), one :class:`ChipLayer` per
layer (all with the same number of chips ``C``) and a batch of inputs, and returns the class each
chip picks for each input, plus per-layer energy, spikes, stop times and spike-time histograms.
Chips and samples are tensor dimensions: nothing loops over them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from spikec.conversion.ttfs_layers import Simulation, TTFSEncoder
from spikec.conversion.ttfs_synapse import apply_time_op
from spikec.hardware.config import HardwareConfig
from spikec.hardware.crossbar import ChipLayer
from spikec.hardware.extract import PEProgram, stack_sources
from spikec.hardware.timing import INF, LayerRun, RunOptions, run_layer


@dataclass
class ProgramRun:
    """What ``C`` chips did with ``B`` inputs."""

    predictions: torch.Tensor  # [C, B] class (-1: no output neuron fired)
    layers: dict[str, LayerRun] = field(default_factory=dict)
    inputs: dict[str, torch.Tensor] = field(default_factory=dict)  # layer -> stacked input steps (keep=True)
    encoder_steps: torch.Tensor | None = None  # [pops, B, ...]


def encode_steps(program: PEProgram, x: torch.Tensor, config: HardwareConfig) -> torch.Tensor:
    """Input spike steps ``[pops, B, *input_shape]`` (``inf``: no spike) from the TTFS encoder at ``window_bits``."""
    enc = TTFSEncoder(program.encoder_scale, program.encoder_signed)
    with torch.no_grad():
        tau = enc(x.to(torch.float64), Simulation("analytic", config.window_bits))
    S = config.window_steps
    return torch.where(tau < 1.0, torch.round(tau * S), torch.full_like(tau, INF))


def run_program(
    program: PEProgram,
    chips: list[ChipLayer],
    x: torch.Tensor,
    config: HardwareConfig,
    options: RunOptions,
    thresholds: list[torch.Tensor | None] | None = None,
    with_energy: bool = True,
    keep: bool = False,
    keep_inputs: bool = False,
) -> ProgramRun:
    """Run ``x`` ``[B, ...]`` through the program on every chip of ``chips``.

    ``keep``: each layer's unrolled input values and charges (big: ``[C, B, P, rows]``) and its input
    steps; ``keep_inputs``: the input steps alone (``[C, B, *in_shape]``).
    """
    C = chips[0].chips
    enc = encode_steps(program, x, config)
    slots = {i: enc[i].unsqueeze(0).expand(C, *enc[i].shape) for i in range(enc.shape[0])}
    run = ProgramRun(predictions=torch.empty(0), encoder_steps=enc)
    li = 0
    for step in program.steps:
        sources = [slots[i] for i in step.inputs]
        B = sources[0].shape[1]
        if step.layer is None:
            t = sources[0].reshape(C * B, *sources[0].shape[2:])
            t = apply_time_op(t, step.time_op)
            slots[step.output] = t.reshape(C, B, *t.shape[1:])
            continue
        layer = step.layer
        merged = stack_sources(layer, [s.reshape(C * B, *s.shape[2:]) for s in sources])
        steps_in = merged.reshape(C, B, *layer.in_shape)
        thr = None if thresholds is None else thresholds[li]
        result = run_layer(chips[li], steps_in, config, options, thr, with_energy, keep)
        run.layers[step.name] = result
        if keep or keep_inputs:
            run.inputs[step.name] = steps_in
        slots[step.output] = result.steps
        li += 1
    out = slots[program.steps[-1].output].reshape(C, -1, program.steps[-1].layer.neurons)
    first = out.argmin(-1)  # lowest index among the earliest
    run.predictions = torch.where(torch.isfinite(out.amin(-1)), first, torch.full_like(first, -1))
    return run
