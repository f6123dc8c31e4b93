"""The converted TTFS network: static inputs in, class scores out, one spike per neuron at most.

It runs a small program over value slots: the encoder writes the input spike times into slots
``0`` (and ``1`` for the negative population of signed inputs); each step runs one module
(spiking layer, spike-time op or readout) on its input slots and writes its output slot. The
program and every layer's shape are plain data (:meth:`TTFSNetwork.describe`), so a checkpoint
rebuilds the network without the ANN it came from.
"""
from __future__ import annotations

import torch
from torch import nn

from spikec.conversion.ttfs_layers import (
    Simulation, Synapse, TTFSEncoder, TTFSLayer, TTFSReadout, TTFSTimeOp,
)
from spikec.conversion.ttfs_synapse import Op, SynapseSpec
from spikec.module import reset

_KEEP = object()


class TTFSNetwork(nn.Module):
    """A TTFS SNN. ``simulation`` picks the simulator and time resolution; change it with :meth:`set_simulation`.

    ``program`` is a list of ``(module name, input slots, output slot)``; the last step is the readout.
    """

    def __init__(self, encoder: TTFSEncoder, ops: dict[str, nn.Module], program: list, input_shape,
                 simulation: Simulation = Simulation()):
        super().__init__()
        self.encoder = encoder
        self.program = [(str(n), tuple(int(i) for i in ins), int(out)) for n, ins, out in program]
        # modules in the order they run, whatever order ``ops`` came in (an HDF5 file lists its
        # groups alphabetically): "the first layer" and per-layer lists then mean the same thing
        # for a loaded network as for the freshly converted one
        run = [n for n, _, _ in self.program]
        ran = set(run)
        order = [n for n in run if n in ops] + [n for n in ops if n not in ran]
        self.ops = nn.ModuleDict({n: ops[n] for n in order})
        self.input_shape = tuple(int(s) for s in input_shape)
        self.simulation = simulation
        if not self.program or not isinstance(self.ops[self.program[-1][0]], TTFSReadout):
            raise ValueError("a TTFS program must end with its readout")

    # -- running -------------------------------------------------------------------------------
    def set_simulation(self, simulator: str | None = None, time_bits=_KEEP) -> "TTFSNetwork":
        """Switch simulator (``"analytic"``/``"stepped"``) and/or ``time_bits`` (None = continuous); returns self."""
        sim = self.simulation
        bits = sim.time_bits if time_bits is _KEEP else (None if time_bits is None else int(time_bits))
        self.simulation = Simulation(sim.simulator if simulator is None else simulator, bits)
        return self

    def run(self, x: torch.Tensor, layer_fn=None) -> dict[str, torch.Tensor]:
        """Every module's output: ``"encoder"`` -> input spike times ``[S, B, ...]``, each layer and
        op -> its spike times ``[B, ...]`` (local, 1 = silent), the readout -> class scores.

        ``layer_fn(name, module, sources, simulation)``, if given, replaces the call of every
        :class:`TTFSLayer` and the :class:`TTFSReadout` (``sources``: the input spike times, one per
        synapse): the hook for re-simulating layers with other weights, thresholds or stop times.
        """
        reset(self)
        sim = self.simulation
        enc = self.encoder(x, sim)
        slots = {i: enc[i] for i in range(enc.shape[0])}
        outputs = {"encoder": enc}
        for name, inputs, out in self.program:
            module, sources = self.ops[name], [slots[i] for i in inputs]
            if layer_fn is not None and isinstance(module, (TTFSLayer, TTFSReadout)):
                slots[out] = layer_fn(name, module, sources, sim)
            else:
                slots[out] = module(sources, sim)
            outputs[name] = slots[out]
        return outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        name = self.program[-1][0]
        return self.run(x)[name]

    # -- structure -------------------------------------------------------------------------------
    @property
    def readout(self) -> TTFSReadout:
        return self.ops[self.program[-1][0]]

    def spiking_layers(self) -> list[tuple[str, TTFSLayer]]:
        """``(name, layer)`` of every spiking layer, in program order."""
        return [(n, self.ops[n]) for n, _, _ in self.program if isinstance(self.ops[n], TTFSLayer)]

    @property
    def latency_windows(self) -> int:
        """Windows from the first input spike to the readout: the input window plus one per layer on the longest path."""
        return self.readout.window

    @property
    def latency_steps(self) -> int:
        """Latency in time steps (``2**time_bits`` per window; ``2**REPORT_BITS`` in continuous time)."""
        return self.latency_windows * self.simulation.report_steps

    def describe(self) -> dict:
        """The network as plain data (no tensors): encoder, program and every module's shape."""
        ops = {}
        for name, module in self.ops.items():
            if isinstance(module, TTFSTimeOp):
                ops[name] = {"type": "time_op", "op": module.op.to_dict()}
            else:
                ops[name] = {
                    "type": "layer" if isinstance(module, TTFSLayer) else "readout",
                    "window": module.window, "scale": module.scale,
                    "synapses": [
                        {"spec": s.spec.to_dict(), "weight_shape": list(s.weight.shape), "bias": s.bias is not None,
                         "source_window": s.source_window}
                        for s in module.synapses
                    ],
                }
        return {
            "encoder": {"scale": self.encoder.scale, "signed": self.encoder.signed},
            "input_shape": list(self.input_shape),
            "ops": ops,
            "program": [[n, list(ins), out] for n, ins, out in self.program],
        }

    @staticmethod
    def from_description(desc: dict, simulation: Simulation = Simulation()) -> "TTFSNetwork":
        """Rebuild the module structure of :meth:`describe` (weights zero: load a state dict next)."""
        ops: dict[str, nn.Module] = {}
        for name, d in desc["ops"].items():
            if d["type"] == "time_op":
                ops[name] = TTFSTimeOp(Op.from_dict(d["op"]))
                continue
            synapses = [
                Synapse(SynapseSpec.from_dict(s["spec"]), torch.zeros(s["weight_shape"]),
                        torch.zeros(s["weight_shape"][0]) if s["bias"] else None, s["source_window"])
                for s in d["synapses"]
            ]
            cls = TTFSLayer if d["type"] == "layer" else TTFSReadout
            ops[name] = cls(synapses, d["window"], d["scale"])
        enc = TTFSEncoder(desc["encoder"]["scale"], desc["encoder"]["signed"])
        return TTFSNetwork(enc, ops, desc["program"], desc["input_shape"], simulation)

    def extra_repr(self) -> str:
        s = self.simulation
        return f"simulator={s.simulator}, time_bits={s.time_bits}, windows={self.latency_windows}"
