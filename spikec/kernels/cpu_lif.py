"""Launch the fused C++ kernels (``lif_cpu.cpp``) on CPU tensors of shape ``[T, N]``."""
from __future__ import annotations

import torch

from spikec.kernels.cpu_build import load_cpu_library

DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.float64: 3}


def _ptr(t: torch.Tensor | None):
    return None if t is None else t.data_ptr()


def _library():
    built = load_cpu_library()
    if built.lib is None:
        raise RuntimeError(f"spikec cpu backend is not available: {built.reason}")
    return built.lib


def lif_forward_cpu(x, v0, beta, threshold, zero_reset: bool, save_charge: bool):
    """``x [T, N]``, ``v0 [N]`` in one dtype; ``beta``/``threshold`` ``[1]`` or ``[N]`` in the op dtype."""
    T, N = x.shape
    spikes = torch.empty_like(x)
    v_out = torch.empty_like(v0)
    charge = torch.empty_like(x) if save_charge else x.new_empty(0)
    rc = _library().spikec_lif_forward(
        DTYPE_CODES[x.dtype], _ptr(x), _ptr(v0), _ptr(beta), int(beta.numel() != 1), _ptr(threshold),
        int(threshold.numel() != 1), _ptr(spikes), _ptr(v_out), _ptr(charge) if save_charge else None,
        T, N, int(zero_reset), torch.get_num_threads(),
    )
    if rc != 0:
        raise RuntimeError(f"spikec cpu forward kernel failed (code {rc})")
    return spikes, v_out, charge


def lif_backward_cpu(grad_spikes, grad_v, charge, v0, beta, threshold, zero_reset, detach_reset, surrogate_code,
                     alpha, beta_grad: bool, threshold_grad: bool):
    """Reverse-time pass; returns ``dx [T, N]``, ``dv0 [N]`` and per-neuron ``dbeta``/``dthreshold`` (or None)."""
    T, N = charge.shape
    dx = torch.empty_like(charge)
    dv0 = torch.empty_like(v0)
    dbeta = torch.empty(N, dtype=beta.dtype) if beta_grad else None
    dthr = torch.empty(N, dtype=threshold.dtype) if threshold_grad else None
    rc = _library().spikec_lif_backward(
        DTYPE_CODES[charge.dtype], surrogate_code, _ptr(grad_spikes), _ptr(grad_v), _ptr(charge), _ptr(v0),
        _ptr(beta), int(beta.numel() != 1), _ptr(threshold), int(threshold.numel() != 1), float(alpha),
        int(detach_reset), _ptr(dx), _ptr(dv0), _ptr(dbeta), _ptr(dthr), T, N, int(zero_reset),
        torch.get_num_threads(),
    )
    if rc != 0:
        raise RuntimeError(f"spikec cpu backward kernel failed (code {rc})")
    return dx, dv0, dbeta, dthr
