"""Compare one LIF implementation with the torch reference loop, with numbers.

The spikes and the final membrane must equal the reference (:func:`spikec.functional.lif_multistep`)
bit for bit. Gradients are measured against the reference run in float64 with its forward rounded
to the case dtype after every op (same spikes, exact gradients): the plain fp16/bf16 reference
accumulates its own backward in that dtype and is further from the truth than a fused kernel.
An error is the largest deviation over a scale: the gradient's largest entry, or, for a beta or
threshold shared by all neurons, the summed magnitude of the per-neuron contributions.
"""
from __future__ import annotations

from typing import Callable

import torch

from spikec.functional.neurons import lif_multistep

# relative gradient error allowed per dtype (the kernels accumulate in float32)
GRAD_TOL = {torch.float32: 2e-5, torch.float64: 1e-10, torch.float16: 4e-3, torch.bfloat16: 3e-2}
GRAD_NAMES = ("x", "v", "beta", "threshold")

LIFFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]  # (x, v, beta, threshold, reset, surrogate, detach)


def make_case(seed: int, T: int, sample_shape, dtype, device, per_neuron: str = "") -> list[torch.Tensor]:
    """Leaf tensors ``x [T, *sample], v, beta, threshold`` spread around the threshold, drawn on CPU
    (the same numbers on every device). ``per_neuron``: "" (scalars), "channel" (a threshold per
    channel) or "neuron" (beta and threshold per neuron)."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn((T, *sample_shape), generator=g) * 0.7 + 0.35).to(dtype)
    v = (torch.randn(sample_shape, generator=g) * 0.5).to(dtype)
    if per_neuron == "channel":
        thr = torch.rand((sample_shape[0],) + (1,) * (len(sample_shape) - 1), generator=g) + 0.6
    elif per_neuron == "neuron":
        thr = torch.rand(sample_shape, generator=g) + 0.6
    else:
        thr = torch.tensor(1.0)
    beta = torch.rand(sample_shape, generator=g) * 0.5 + 0.5 if per_neuron == "neuron" else torch.tensor(0.875)
    return [t.to(dtype).to(device).requires_grad_() for t in (x, v, beta, thr)]


def _upstream(spikes: torch.Tensor, v_out: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed + 1000)
    gs, gv = torch.randn(spikes.shape, generator=g), torch.randn(v_out.shape, generator=g)
    return gs.to(spikes.device, spikes.dtype), gv.to(v_out.device, v_out.dtype)


def run_with_grads(fn: LIFFn, case, reset, surrogate, detach, seed):
    """``fn``'s spikes, final membrane and the gradients of a seeded upstream gradient."""
    x, v, beta, thr = case
    spikes, v_out = fn(x, v, beta, thr, reset, surrogate, detach)
    gs, gv = _upstream(spikes, v_out, seed)
    grads = torch.autograd.grad([spikes, v_out], [x, v, beta, thr], [gs, gv], allow_unused=True)
    grads = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, case)]
    return spikes.detach(), v_out.detach(), [g.detach() for g in grads]


def _as_dtype_op(t: torch.Tensor, dtype) -> torch.Tensor:
    """The value one ATen op on ``dtype`` gives (computed in float, rounded once), with gradient 1."""
    if dtype == torch.float64:
        return t
    value = t.detach().to(torch.float32).to(dtype).to(torch.float64)
    return t + (value - t.detach())


def exact_gradients(case, reset, surrogate, detach, seed):
    """The float64 reference whose forward rounds like the case dtype: spikes, membrane, gradients, scales."""
    dtype = case[0].dtype
    leaves = [t.detach().double().requires_grad_() for t in case]
    x64, v64, beta64, thr64 = leaves
    sample = x64.shape[1:]
    b64, th64 = beta64.expand(sample), thr64.expand(sample)
    v_t, spikes = v64, []
    for t in range(x64.shape[0]):
        h = _as_dtype_op(_as_dtype_op(b64 * v_t, dtype) + x64[t], dtype)
        d = _as_dtype_op(h - th64, dtype)
        s = surrogate(d)
        r = s.detach() if detach else s
        v_t = _as_dtype_op(h - r * th64, dtype) if reset == "subtract" else h * (1 - r)
        spikes.append(s)
    spikes = torch.stack(spikes)
    gs, gv = _upstream(spikes.to(dtype), v_t.to(dtype), seed)
    grads = torch.autograd.grad([spikes, v_t], leaves + [b64, th64], [gs.double(), gv.double()])
    scales = [g.abs().max() for g in grads[:2]] + [
        per_neuron.abs().sum() if shared.numel() == 1 else shared_grad.abs().max()
        for shared, shared_grad, per_neuron in zip(case[2:], grads[2:4], grads[4:])
    ]
    return spikes.detach(), v_t.detach(), [g.detach() for g in grads[:4]], [float(s) for s in scales]


def reference_fn(x, v, beta, threshold, reset, surrogate, detach):
    return lif_multistep(x, v, beta, threshold, reset, surrogate, detach)


def compare(fn: LIFFn, case, reset: str, surrogate, detach: bool, seed: int, judge_shared_grads: bool = True) -> dict:
    """How ``fn`` differs from the reference on ``case``: counts, errors, tolerances and ``passed``.

    ``judge_shared_grads=False`` reports but does not judge the beta/threshold gradients (for the
    reference loop itself, whose fp16/bf16 backward sums them in that dtype).
    """
    dtype = case[0].dtype
    ref_s, ref_v, _ = run_with_grads(reference_fn, case, reset, surrogate, detach, seed)
    got_s, got_v, got_g = run_with_grads(fn, case, reset, surrogate, detach, seed)
    emu_s, emu_v, truth, scales = exact_gradients(case, reset, surrogate, detach, seed)
    shapes_ok = got_s.shape == ref_s.shape and got_s.dtype == ref_s.dtype and got_v.shape == ref_v.shape
    spike_mismatches = int((got_s != ref_s).sum()) if shapes_ok else -1
    membrane_diff = float((got_v.double() - ref_v.double()).abs().max()) if shapes_ok else float("inf")
    emulation_ok = bool(torch.equal(emu_s.to(dtype), ref_s) and torch.equal(emu_v.to(dtype), ref_v))
    tol = GRAD_TOL[dtype]
    errors, judged = {}, []
    for name, g, w, scale in zip(GRAD_NAMES, got_g, truth, scales):
        if g.shape != w.shape or g.dtype != dtype:
            errors[name] = float("inf")
        else:
            errors[name] = float((g.double() - w).abs().max()) / (scale + 1e-12)
        if judge_shared_grads or name in ("x", "v"):
            judged.append(name)
    grads_ok = all(errors[n] <= tol for n in judged)
    passed = shapes_ok and spike_mismatches == 0 and membrane_diff == 0.0 and emulation_ok and grads_ok
    return {
        "passed": bool(passed),
        "spikes_equal": spike_mismatches == 0,
        "spike_mismatches": spike_mismatches,
        "membrane_max_diff": membrane_diff,
        "spike_rate": round(float(ref_s.float().mean()), 4),
        "grad_rel_error": {k: float(f"{v:.3g}") for k, v in errors.items()},
        "grad_tolerance": tol,
        "grads_judged": judged,
        "emulation_matches_reference": emulation_ok,
    }
