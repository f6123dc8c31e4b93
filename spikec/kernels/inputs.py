"""Bring ``run_lif`` arguments into the flat form the fused kernels take, or say why not.

The fused kernels work on ``x [T, N]`` with the sample dims flattened, a membrane ``v0 [N]`` and
``beta``/``threshold`` as one value or one per neuron, in the op dtype (float32; float64 for
float64 inputs). Values are rounded the way the torch reference rounds them: a tensor ``beta`` or
``threshold`` to the dtype of ``x``; a Python-number ``beta`` stays float32 (ATen multiplies by a
Python scalar in float), a Python-number ``threshold`` is rounded to the dtype of ``x`` (ATen
subtracts it in that dtype). All conversions are differentiable.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from spikec.surrogate import ArcTan, FastSigmoid, StraightThrough, Surrogate, Triangle

SURROGATE_CODES = {ArcTan: 0, FastSigmoid: 1, Triangle: 2, StraightThrough: 3}
FUSED_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


@dataclass(frozen=True)
class FlatLIF:
    """One fused problem: ``x [T, N]`` and per-neuron state, plus how to shape the results back."""

    x: torch.Tensor
    v0: torch.Tensor
    beta: torch.Tensor
    threshold: torch.Tensor
    sample_shape: torch.Size
    surrogate_code: int
    alpha: float

    def needs_grad(self) -> bool:
        return torch.is_grad_enabled() and any(
            t.requires_grad for t in (self.x, self.v0, self.beta, self.threshold)
        )


def surrogate_code(surrogate: Surrogate) -> int | None:
    """The kernels' closed form for this surrogate, or None for one they do not know."""
    for cls, code in SURROGATE_CODES.items():
        if getattr(surrogate, "name", None) == cls.name and type(surrogate).derivative is cls.derivative:
            return code
    return None


def _fits(shape, sample_shape) -> bool:
    """``shape`` broadcasts to ``sample_shape`` without growing it (cheaper than torch.broadcast_shapes)."""
    pairs = zip(reversed(tuple(shape)), reversed(tuple(sample_shape)))
    return len(shape) <= len(sample_shape) and all(a in (1, b) for a, b in pairs)


def _per_neuron(value, x: torch.Tensor, op_dtype, sample_shape, round_number: bool, name: str):
    """``value`` as ``[1]`` or ``[N]`` in ``op_dtype``; a string says why it cannot be."""
    if isinstance(value, torch.Tensor):
        if not value.is_floating_point():
            return f"{name} must be a floating tensor, got {value.dtype}"
        if value.dim() > 0 and value.dtype != x.dtype:
            return f"{name} of dtype {value.dtype} would promote x of dtype {x.dtype}"
        if not _fits(value.shape, sample_shape):
            return f"{name} of shape {tuple(value.shape)} does not broadcast to one sample {tuple(sample_shape)}"
        if value.device != x.device and value.dim() > 0:
            return f"{name} is on {value.device}, x on {x.device}"
        value = value.to(device=x.device, dtype=x.dtype).to(op_dtype)
        if value.numel() == 1:
            return value.reshape(1)
        return value.expand(sample_shape).reshape(-1)
    if isinstance(value, (int, float)) and math.isfinite(float(value)):
        dtype = x.dtype if round_number else op_dtype
        return torch.tensor([float(value)], dtype=dtype, device=x.device).to(op_dtype)
    return f"{name} must be a number or a tensor, got {type(value).__name__}"


def flatten_lif(x, v, beta, threshold, surrogate) -> FlatLIF | str:
    """The fused form of one ``run_lif`` call, or a one-line reason the kernels cannot run it."""
    if not isinstance(x, torch.Tensor) or x.dtype not in FUSED_DTYPES:
        return f"x must be a float16/bfloat16/float32/float64 tensor, got {getattr(x, 'dtype', type(x).__name__)}"
    if x.dim() < 1 or x.shape[0] == 0 or x[0].numel() == 0:
        return f"x of shape {tuple(x.shape)} has no time steps or no neurons"
    code = surrogate_code(surrogate)
    if code is None:
        return f"surrogate {type(surrogate).__name__} has no closed form in the kernels"
    sample_shape = x.shape[1:]
    if not isinstance(v, torch.Tensor) or v.dtype != x.dtype or v.device != x.device:
        return "v must be a tensor with the dtype and device of x"
    if not _fits(v.shape, sample_shape):
        return f"v of shape {tuple(v.shape)} does not broadcast to one sample {tuple(sample_shape)}"
    op_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    beta_flat = _per_neuron(beta, x, op_dtype, sample_shape, round_number=False, name="beta")
    thr_flat = _per_neuron(threshold, x, op_dtype, sample_shape, round_number=True, name="threshold")
    for value in (beta_flat, thr_flat):
        if isinstance(value, str):
            return value
    T = x.shape[0]
    return FlatLIF(
        x=x.reshape(T, -1).contiguous(),
        v0=v.expand(sample_shape).reshape(-1).contiguous(),
        beta=beta_flat,
        threshold=thr_flat,
        sample_shape=sample_shape,
        surrogate_code=code,
        alpha=float(surrogate.alpha),
    )
