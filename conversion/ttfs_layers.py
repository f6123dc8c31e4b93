"""The modules of a converted TTFS network: input encoder, spiking layers, spike-time ops, readout.

Every module takes the spike times of its sources (a list of ``[B, ...]`` tensors, local times,
1 = silent) and a :class:`Simulation`. The encoder and the spiking layers are
:class:`spikec.SpikingModule` s, so ``spikec.record`` sees their spikes: counts are 0 or 1 and
first-spike times are given in time steps of the layer's window.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from spikec.conversion.ttfs_neuron import fire_analytic, fire_stepped, fired
from spikec.conversion.ttfs_sim import check_simulation, layer_charge, layer_charge_stepped, simulate_layer_steps
from spikec.conversion.ttfs_synapse import Op, SynapseSpec, apply_time_op
from spikec.module import SpikeStats, SpikingModule

# Steps per window used to report continuous-time spike times and latency (time_bits=None).
REPORT_BITS = 8


@dataclass(frozen=True)
class Simulation:
    """Which simulator runs the network and at what time resolution (None = continuous)."""

    simulator: str = "analytic"
    time_bits: int | None = None

    def __post_init__(self):
        check_simulation(self.simulator, self.time_bits)

    @property
    def steps(self) -> int | None:
        return None if self.time_bits is None else 2 ** int(self.time_bits)

    @property
    def report_steps(self) -> int:
        """Steps per window in which times are reported (``2**REPORT_BITS`` in continuous time)."""
        return 2 ** int(REPORT_BITS if self.time_bits is None else self.time_bits)


class Synapse(nn.Module):
    """One source's connection into a layer: ``spec`` with its weight and optional bias, in SNN units."""

    def __init__(self, spec: SynapseSpec, weight: torch.Tensor, bias: torch.Tensor | None, source_window: int):
        super().__init__()
        self.spec = spec
        self.source_window = int(source_window)
        self.weight = nn.Parameter(weight.detach().clone())
        if bias is None:
            self.register_parameter("bias", None)
        else:
            self.bias = nn.Parameter(bias.detach().clone())

    def extra_repr(self) -> str:
        return f"kind={self.spec.kind}, weight={tuple(self.weight.shape)}, bias={self.bias is not None}"


def _synapse_inputs(synapses: nn.ModuleList, sources: list[torch.Tensor]) -> list[tuple]:
    if len(sources) != len(synapses):
        raise ValueError(f"layer has {len(synapses)} synapses but got {len(sources)} inputs")
    return [(tau, s.weight, s.bias, s.spec) for tau, s in zip(sources, synapses)]


class _TimesStats:
    """``spike_stats`` for modules whose output is spike times: a spike where ``tau < 1``."""

    _counts: torch.Tensor | None = None
    _steps: int = 2 ** REPORT_BITS

    def reset_state(self) -> None:
        self._counts = None

    def spike_stats(self, output: torch.Tensor) -> SpikeStats:
        tau = self._flat_times(output.detach())
        spiked = fired(tau)
        counts = spiked.to(torch.float32)
        if self._counts is not None and self._counts.numel() == counts.numel():
            counts = self._counts.reshape(counts.shape).to(torch.float32)
        inf = torch.full_like(tau, float("inf"), dtype=torch.float32)
        first = torch.where(spiked, tau.to(torch.float32) * self._steps, inf)
        return SpikeStats(counts=counts, first_times=first)

    def _flat_times(self, output: torch.Tensor) -> torch.Tensor:
        return output.reshape(output.shape[0], -1)


class TTFSEncoder(_TimesStats, SpikingModule):
    """Input neurons: a value ``x`` in ``[0, scale]`` spikes at ``tau = 1 - x / scale`` (never if ``x <= 0``).

    With ``signed=True`` (inputs that can be negative) there are two populations, for ``x+`` and
    ``x-``; the output is ``[2, B, ...]`` (``[1, B, ...]`` otherwise).
    """

    def __init__(self, scale: float, signed: bool = False):
        super().__init__()
        self.scale = float(scale)
        self.signed = bool(signed)

    def forward(self, x: torch.Tensor, sim: Simulation) -> torch.Tensor:
        self._steps = sim.report_steps
        self._counts = None
        parts = [x, -x] if self.signed else [x]
        charge = torch.stack(parts) / self.scale
        if sim.steps is None:
            return fire_analytic(charge)
        return fire_stepped(charge, sim.steps)

    def _flat_times(self, output: torch.Tensor) -> torch.Tensor:
        return output.transpose(0, 1).reshape(output.shape[1], -1)

    def extra_repr(self) -> str:
        return f"scale={self.scale:g}, signed={self.signed}"


class TTFSLayer(_TimesStats, SpikingModule):
    """A layer of TTFS neurons firing in window ``window``; ``scale`` is the activation a spike at ``tau=0`` means.

    Runtime knobs (not saved in checkpoints), for hardware studies: ``threshold_scale`` (tensor
    broadcastable to one sample's neurons, or None) and ``stop`` (local time 0..1, a number or a
    per-sample tensor ``[B, 1, ...]``, or None): neurons that have not fired by ``stop`` stay silent.
    """

    def __init__(self, synapses: list[Synapse], window: int, scale: float):
        super().__init__()
        self.synapses = nn.ModuleList(synapses)
        self.window = int(window)
        self.scale = float(scale)
        self.threshold_scale: torch.Tensor | None = None
        self.stop: float | torch.Tensor | None = None

    def charge(self, sources: list[torch.Tensor]) -> torch.Tensor:
        """Membrane charge when the window opens (closed form)."""
        return layer_charge(_synapse_inputs(self.synapses, sources))

    def forward(self, sources: list[torch.Tensor], sim: Simulation) -> torch.Tensor:
        self._steps = sim.report_steps
        self._counts = None
        inputs = _synapse_inputs(self.synapses, sources)
        theta = 1.0 if self.threshold_scale is None else self.threshold_scale
        stop = 1.0 if self.stop is None else self.stop
        if sim.simulator == "stepped":
            tau, counts = simulate_layer_steps(inputs, sim.steps, theta, stop)
            self._counts = counts.reshape(counts.shape[0], -1)
            return tau
        charge = layer_charge(inputs)
        if sim.steps is None:
            return fire_analytic(charge, theta, stop)
        return fire_stepped(charge, sim.steps, theta, stop)

    def extra_repr(self) -> str:
        return f"window={self.window}, scale={self.scale:g}"


class TTFSTimeOp(nn.Module):
    """A parameter-free op on spike times: max pooling (the earliest spike wins) or a reshape."""

    def __init__(self, op: Op):
        super().__init__()
        self.op = op

    def forward(self, sources: list[torch.Tensor], sim: Simulation) -> torch.Tensor:
        return apply_time_op(sources[0], self.op)

    def extra_repr(self) -> str:
        return self.op.name


class TTFSReadout(nn.Module):
    """Output layer read from its membrane: class scores ``= scale * charge`` at the end of its input windows.

    Its neurons never fire; ``scale`` undoes the normalisation so the scores equal the ANN logits.
    """

    def __init__(self, synapses: list[Synapse], window: int, scale: float):
        super().__init__()
        self.synapses = nn.ModuleList(synapses)
        self.window = int(window)
        self.scale = float(scale)

    def forward(self, sources: list[torch.Tensor], sim: Simulation) -> torch.Tensor:
        inputs = _synapse_inputs(self.synapses, sources)
        if sim.simulator == "stepped" and not torch.is_grad_enabled():
            return layer_charge_stepped(inputs, sim.steps) * self.scale
        return layer_charge(inputs) * self.scale

    def extra_repr(self) -> str:
        return f"window={self.window}, scale={self.scale:g}"
