"""spikec: spiking neural networks for energy-efficient hardware.

The runtime core lives here; ANN architectures in :mod:`spikec.models`, conversion in
:mod:`spikec.conversion`, the ReRAM processing-element model in :mod:`spikec.hardware`.
"""
from spikec import coding, functional, surrogate
from spikec.module import SpikingModule, reset
from spikec.multistep import MultiStep
from spikec.neurons import IF, LIF
from spikec.record import record
from spikec.snn import SpikingClassifier
from spikec.training import evaluate, train

__version__ = "0.1.0"

__all__ = [
    "IF", "LIF", "MultiStep", "SpikingClassifier", "SpikingModule",
    "coding", "convert", "evaluate", "functional", "record", "reset", "surrogate", "train",
]


def convert(ann, calib_data, coding="rate", **options):
    """Convert a trained ANN into an SNN; see :func:`spikec.conversion.convert`."""
    from spikec.conversion import convert as _convert

    return _convert(ann, calib_data, coding=coding, **options)
