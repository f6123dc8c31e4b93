"""A spiking classifier: static input ``[B, ...]`` in, class scores ``[B, classes]`` out.

It encodes the input over ``timesteps`` steps, runs the network multi-step and decodes the
output. Every call is one fresh inference: neuron states are cleared first. The layers keep their
state between calls, so a run may also be fed in time chunks (:meth:`SpikingClassifier.encode_steps`;
:func:`spikec.evaluation.evaluate_steps` does that).
"""
from __future__ import annotations

import torch
from torch import nn

from spikec import coding
from spikec.module import reset
from spikec.multistep import MultiStep

ENCODINGS = ("direct", "rate", "latency")
READOUTS = ("membrane", "count", "first_spike")


class SpikingClassifier(nn.Module):
    """Wrap a per-sample spiking ``net`` as a classifier.

    - ``encoding``: ``"direct"`` (analog current each step), ``"rate"`` (Bernoulli spikes) or
      ``"latency"`` (one spike per input, larger = earlier).
    - ``readout``: ``"membrane"`` (mean over time of a non-spiking last layer), ``"count"``
      (spike counts of a spiking last layer) or ``"first_spike"`` (negative first-spike time of a
      spiking last layer, so that the earliest output wins).
    """

    def __init__(self, net: nn.Module, timesteps: int, encoding: str = "direct", readout: str = "membrane"):
        super().__init__()
        if encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
        self.net = MultiStep(net)
        self.timesteps = int(timesteps)
        self.encoding = encoding
        self.readout = readout

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode_steps(x, 0, self.timesteps)

    def encode_steps(self, x: torch.Tensor, start: int, steps: int, timesteps: int | None = None,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """Input steps ``[start, start + steps)`` of a ``timesteps``-step run (default ``self.timesteps``).

        Consecutive windows fed to ``self.net`` after one reset are the run ``forward`` does. Rate
        spikes are drawn from ``generator`` (default: the global generator), step by step.
        """
        if self.encoding == "direct":
            return coding.direct_encode(x, steps)
        if self.encoding == "rate":
            return coding.rate_encode(x, steps, generator=generator)
        total = self.timesteps if timesteps is None else timesteps
        return coding.latency_encode(x, total, start=start, steps=steps)

    @property
    def prefix_consistent(self) -> bool:
        """Whether the first ``t`` steps of a longer run are the ``t``-step run (false for latency input,
        whose spike times scale with ``timesteps``). Every readout here decodes a prefix as a run of its length."""
        return self.encoding != "latency"

    def decode(self, out: torch.Tensor) -> torch.Tensor:
        if self.readout == "membrane":
            return coding.mean_membrane(out)
        if self.readout == "count":
            return coding.spike_count(out)
        return -coding.first_spike_time(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reset(self)
        return self.decode(self.net(self.encode(x)))
