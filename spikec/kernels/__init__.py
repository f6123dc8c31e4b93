"""Backends for the multi-step neuron update over ``[T, N]``.

``run_lif`` is the one entry point neurons call. The pure-torch loop in
:mod:`spikec.functional.neurons` is the specification; the fused paths equal it (spikes and final
membrane bit for bit, gradients to dtype precision):

- ``cpu``: a C++ kernel (``lif_cpu.cpp``) built with the system compiler at first use (a few
  seconds, cached on disk; ``CXX``, ``SPIKEC_CACHE_DIR``, ``SPIKEC_NO_CPU_KERNEL=1`` to skip it);
- ``triton``: Triton kernels for CUDA tensors (CPU tensors too under ``TRITON_INTERPRET=1``);
- ``auto``: the fused kernel for the tensor's device when it is available and supports the call,
  the reference otherwise. Calls the kernels do not support: surrogates other than the four in
  :mod:`spikec.surrogate`, ``v`` of another dtype than ``x``, ``beta``/``threshold`` that do not
  broadcast to one sample (a per-channel or per-neuron tensor is supported), empty inputs.

Both run as the custom ops ``torch.ops.spikec.lif_forward`` / ``lif_backward`` (see :mod:`.ops`),
so ``torch.compile`` captures them whole. The forward saves only the charge ``beta*v + x`` per step;
the backward recomputes spikes and membranes from it. Double backward is not supported.
"""
from spikec.kernels.dispatch import BACKENDS, BackendUnavailableError, available_backends, run_lif

__all__ = ["BACKENDS", "BackendUnavailableError", "available_backends", "run_lif"]
