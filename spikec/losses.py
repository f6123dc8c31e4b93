"""Losses over time-first network outputs ``[T, B, C]``, for users who write their own loops.

:func:`spikec.train` applies its loss to a model's decoded scores ``[B, C]`` (a
:class:`~spikec.SpikingClassifier` decodes for itself); these functions do the decoding with
:mod:`spikec.coding` and then take the cross-entropy, so that a raw multi-step output can be
trained directly.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from spikec import coding


def count_cross_entropy(spikes: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on spike counts: the class whose output neuron fires most should be the target."""
    return F.cross_entropy(coding.spike_count(spikes), targets)


def membrane_cross_entropy(out: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on the time-averaged output of a non-spiking readout layer."""
    return F.cross_entropy(coding.mean_membrane(out), targets)


def ttfs_cross_entropy(spikes: torch.Tensor, targets: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Cross-entropy on negative first-spike times: the target neuron should fire first.

    Logits are ``-scale * t_first`` with ``t_first`` from :func:`spikec.coding.first_spike_time`
    (``T`` for a silent neuron), differentiable through the spikes' surrogate gradients.
    ``scale`` is an inverse temperature in 1/steps.
    """
    return F.cross_entropy(-scale * coding.first_spike_time(spikes), targets)
