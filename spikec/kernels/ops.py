"""The fused LIF update as torch custom ops, so autograd and ``torch.compile`` see one opaque op.

``spikec::lif_forward`` runs charge, fire and reset over ``[T, N]`` and, when a gradient will be
needed, also returns the charge ``h_t`` (its only saved state). ``spikec::lif_backward`` runs the
reverse-time pass. The ``backend`` argument names the implementation ("cpu" or "triton"); the
Triton one also runs on CPU tensors under ``TRITON_INTERPRET=1``.

Shapes: ``x [T, N]``; ``v0 [N]`` in the dtype of ``x``; ``beta`` and ``threshold`` ``[1]`` or ``[N]`` in
the op dtype (float32, or float64 for float64 ``x``). ``surrogate`` is a code from
:data:`spikec.kernels.inputs.SURROGATE_CODES`.
"""
from __future__ import annotations

import torch
from torch import Tensor


def _implementation(backend: str):
    if backend == "cpu":
        from spikec.kernels import cpu_lif

        return cpu_lif.lif_forward_cpu, cpu_lif.lif_backward_cpu
    if backend == "triton":
        from spikec.kernels import triton_lif

        return triton_lif.lif_forward_triton, triton_lif.lif_backward_triton
    raise ValueError(f"no fused implementation named {backend!r}")


@torch.library.custom_op("spikec::lif_forward", mutates_args=())
def lif_forward(
    x: Tensor, v0: Tensor, beta: Tensor, threshold: Tensor, zero_reset: bool, detach_reset: bool,
    surrogate: int, alpha: float, save_charge: bool, backend: str,
) -> tuple[Tensor, Tensor, Tensor]:
    """Returns ``(spikes [T, N], v_T [N], charge [T, N] or empty)``."""
    forward, _ = _implementation(backend)
    return forward(x.contiguous(), v0.contiguous(), beta.contiguous(), threshold.contiguous(), zero_reset, save_charge)


@lif_forward.register_fake
def _(x, v0, beta, threshold, zero_reset, detach_reset, surrogate, alpha, save_charge, backend):
    return torch.empty_like(x), torch.empty_like(v0), torch.empty_like(x) if save_charge else x.new_empty(0)


@torch.library.custom_op("spikec::lif_backward", mutates_args=())
def lif_backward(
    grad_spikes: Tensor | None, grad_v: Tensor | None, charge: Tensor, v0: Tensor, beta: Tensor, threshold: Tensor,
    zero_reset: bool, detach_reset: bool, surrogate: int, alpha: float, beta_grad: bool, threshold_grad: bool,
    backend: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Returns ``(dx [T, N], dv0 [N], dbeta, dthreshold)``; the last two are per neuron ``[N]`` or empty."""
    _, backward = _implementation(backend)
    gs = None if grad_spikes is None else grad_spikes.contiguous()
    gv = None if grad_v is None else grad_v.contiguous()
    dx, dv0, dbeta, dthr = backward(
        gs, gv, charge, v0, beta, threshold, zero_reset, detach_reset, surrogate, alpha, beta_grad, threshold_grad,
    )
    return dx, dv0, beta.new_empty(0) if dbeta is None else dbeta, threshold.new_empty(0) if dthr is None else dthr


@lif_backward.register_fake
def _(grad_spikes, grad_v, charge, v0, beta, threshold, zero_reset, detach_reset, surrogate, alpha, beta_grad,
      threshold_grad, backend):
    n = charge.shape[1]
    return (
        torch.empty_like(charge),
        torch.empty_like(v0),
        beta.new_empty(n if beta_grad else 0),
        threshold.new_empty(n if threshold_grad else 0),
    )


def _setup_context(ctx, inputs, output):
    x, v0, beta, threshold, zero_reset, detach_reset, surrogate, alpha, save_charge, backend = inputs
    _, _, charge = output
    ctx.mark_non_differentiable(charge)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(charge, v0, beta, threshold)
    ctx.options = (zero_reset, detach_reset, surrogate, alpha, save_charge, backend)


def _reduce_to(grad_per_neuron: Tensor, param: Tensor) -> Tensor:
    """Per-neuron partial gradients summed to the shape of a ``[1]`` or ``[N]`` parameter."""
    return grad_per_neuron.sum().reshape(param.shape) if param.numel() == 1 else grad_per_neuron


def _backward(ctx, grad_spikes, grad_v, _grad_charge):
    zero_reset, detach_reset, surrogate, alpha, save_charge, backend = ctx.options
    if not save_charge:
        raise RuntimeError("spikec::lif_forward ran without save_charge=True, so it cannot be differentiated")
    charge, v0, beta, threshold = ctx.saved_tensors
    need_beta, need_thr = ctx.needs_input_grad[2], ctx.needs_input_grad[3]
    dx, dv0, dbeta, dthr = torch.ops.spikec.lif_backward(
        grad_spikes, grad_v, charge, v0, beta, threshold, zero_reset, detach_reset, surrogate, alpha,
        need_beta, need_thr, backend,
    )
    return (
        dx,
        dv0,
        _reduce_to(dbeta, beta) if need_beta else None,
        _reduce_to(dthr, threshold) if need_thr else None,
        None, None, None, None, None, None,
    )


lif_forward.register_autograd(_backward, setup_context=_setup_context)
