"""Backends for the multi-step neuron update over ``[T, N]``.

``run_lif`` is the one entry point neurons call. The pure-torch loop in
:mod:`spikec.functional.neurons` is the specification; fast paths must equal it.
"""
from spikec.kernels.dispatch import BACKENDS, run_lif

__all__ = ["BACKENDS", "run_lif"]
