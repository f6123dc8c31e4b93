"""Triton kernels for the fused multi-step LIF/IF update over ``[T, N]``.

One program owns a block of neurons and loops over time with the membrane in registers; each
step reads one contiguous row segment of ``x`` (coalesced) and writes one of spikes. The backward
walks time in reverse from the saved charge ``h_t = beta * v_{t-1} + x_t`` only: spikes, the
surrogate input and ``v_{t-1}`` are recomputed from it. FMA contraction is switched off at launch
and every op on fp16/bf16 is rounded to the storage type, so spikes equal the torch reference.

Importing this module imports triton; set ``TRITON_INTERPRET=1`` before that to run the kernels
on CPU tensors (how the tests check them without a GPU).
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@triton.jit
def _rounded(a, STORE: tl.constexpr):
    """``a`` rounded to the storage dtype and back, as one ATen op on fp16/bf16 does.

    bf16 rounds to nearest even by bit arithmetic: the same on GPU and in the interpreter, whose
    own float-to-bf16 cast does not round to even.
    """
    if STORE == tl.bfloat16:
        u = a.to(tl.uint32, bitcast=True)
        u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
        return tl.where(a != a, a, u.to(tl.float32, bitcast=True))
    elif STORE == tl.float16:
        return a.to(tl.float16).to(a.dtype)
    else:
        return a


@triton.jit
def _surrogate_derivative(d, alpha, SURR: tl.constexpr):
    if SURR == 0:  # arctan
        z = 1.5707963267948966 * alpha * d
        sg = (alpha * 0.5) / (1.0 + z * z)
    elif SURR == 1:  # fast sigmoid
        z = 1.0 + alpha * tl.abs(d)
        sg = 1.0 / (z * z)
    elif SURR == 2:  # triangle
        sg = alpha * tl.maximum(1.0 - alpha * tl.abs(d), 0.0)
    else:  # straight through
        sg = tl.full(d.shape, 1.0, d.dtype)
    return sg.to(d.dtype)


@triton.jit
def _lif_forward_kernel(
    x_ptr, v0_ptr, beta_ptr, thr_ptr, spikes_ptr, v_out_ptr, charge_ptr, T, N,
    BETA_PER_NEURON: tl.constexpr, THR_PER_NEURON: tl.constexpr, ZERO: tl.constexpr, SAVE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    STORE: tl.constexpr = x_ptr.dtype.element_ty
    OP: tl.constexpr = beta_ptr.dtype.element_ty
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    v = tl.load(v0_ptr + offs, mask=mask, other=0.0).to(OP)
    if BETA_PER_NEURON:
        b = tl.load(beta_ptr + offs, mask=mask, other=0.0)
    else:
        b = tl.load(beta_ptr)
    if THR_PER_NEURON:
        th = tl.load(thr_ptr + offs, mask=mask, other=0.0)
    else:
        th = tl.load(thr_ptr)
    row = offs  # advanced by N per step: 64-bit pointers, no int32 overflow of t * N
    x_next = tl.load(x_ptr + row, mask=mask, other=0.0, eviction_policy="evict_first")
    for i in range(T):
        # issue the next step's load before this step's arithmetic: two loads in flight per thread
        x = x_next.to(OP)
        x_next = tl.load(x_ptr + row + N, mask=mask & (i < T - 1), other=0.0, eviction_policy="evict_first")
        h = _rounded(_rounded(b * v, STORE) + x, STORE)
        d = _rounded(h - th, STORE)
        s = d >= 0.0
        tl.store(spikes_ptr + row, tl.where(s, 1.0, 0.0).to(STORE), mask=mask)
        if SAVE:
            tl.store(charge_ptr + row, h.to(STORE), mask=mask)
        if ZERO:
            v = tl.where(s, 0.0, h)
        else:
            v = tl.where(s, d, h)
        row += N
    tl.store(v_out_ptr + offs, v.to(STORE), mask=mask)


@triton.jit
def _lif_backward_kernel(
    gs_ptr, gv_ptr, charge_ptr, v0_ptr, beta_ptr, thr_ptr, dx_ptr, dv0_ptr, dbeta_ptr, dthr_ptr,
    alpha, reset_grad, T, N, last_row,
    HAS_GS: tl.constexpr, HAS_GV: tl.constexpr, BETA_PER_NEURON: tl.constexpr, THR_PER_NEURON: tl.constexpr,
    ZERO: tl.constexpr, BETA_GRAD: tl.constexpr, THR_GRAD: tl.constexpr, SURR: tl.constexpr, BLOCK: tl.constexpr,
):
    STORE: tl.constexpr = charge_ptr.dtype.element_ty
    OP: tl.constexpr = beta_ptr.dtype.element_ty
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    if BETA_PER_NEURON:
        b = tl.load(beta_ptr + offs, mask=mask, other=0.0)
    else:
        b = tl.load(beta_ptr)
    if THR_PER_NEURON:
        th = tl.load(thr_ptr + offs, mask=mask, other=0.0)
    else:
        th = tl.load(thr_ptr)
    if HAS_GV:
        g = tl.load(gv_ptr + offs, mask=mask, other=0.0).to(OP)
    else:
        g = tl.zeros([BLOCK], OP)
    v0 = tl.load(v0_ptr + offs, mask=mask, other=0.0).to(OP)
    gb = tl.zeros([BLOCK], OP)
    gt = tl.zeros([BLOCK], OP)
    row = offs + last_row  # offset of step T-1, passed from the host as a 64-bit-safe int
    h = tl.load(charge_ptr + row, mask=mask, other=0.0).to(OP)
    for i in range(T):
        # the previous step's charge: v_{t-1} for the leak gradient, and next iteration's h
        has_prev = i < T - 1
        h_prev = tl.load(charge_ptr + row - N, mask=mask & has_prev, other=0.0).to(OP)
        d = _rounded(h - th, STORE)
        s = d >= 0.0
        sg = _surrogate_derivative(d, alpha, SURR)
        if HAS_GS:
            gs = tl.load(gs_ptr + row, mask=mask, other=0.0, eviction_policy="evict_first").to(OP)
        else:
            gs = tl.zeros([BLOCK], OP)
        if ZERO:  # v' = h * (1 - s)
            g_through = (gs - reset_grad * h * g) * sg
            gh = tl.where(s, 0.0, g) + g_through
            gt -= g_through
        else:  # v' = h - s * thr
            g_through = (gs - reset_grad * th * g) * sg
            gh = g + g_through
            gt -= g_through + tl.where(s, g, 0.0)
        tl.store(dx_ptr + row, _rounded(gh, STORE).to(STORE), mask=mask)
        if BETA_GRAD:
            d_prev = _rounded(h_prev - th, STORE)
            if ZERO:
                v_reset = tl.where(d_prev >= 0.0, 0.0, h_prev)
            else:
                v_reset = tl.where(d_prev >= 0.0, d_prev, h_prev)
            gb += gh * tl.where(has_prev, v_reset, v0)
        g = gh * b
        h = h_prev
        row -= N
    tl.store(dv0_ptr + offs, _rounded(g, STORE).to(STORE), mask=mask)
    if BETA_GRAD:
        tl.store(dbeta_ptr + offs, gb, mask=mask)
    if THR_GRAD:
        tl.store(dthr_ptr + offs, gt, mask=mask)


def _launch_config(N: int, itemsize: int) -> tuple[int, int]:
    """(BLOCK, num_warps): 16 bytes per thread per access (one vector load); 8 warps per program for
    large N, 2 for small N so that enough programs exist to fill every SM."""
    if INTERPRETED:
        return 128, 1
    warps = 8 if N >= 1 << 20 else 2
    return max(1, 16 // itemsize) * 32 * warps, warps


def lif_forward_triton(x, v0, beta, threshold, zero_reset: bool, save_charge: bool):
    """``x [T, N]``, ``v0 [N]`` in one dtype; ``beta``/``threshold`` ``[1]`` or ``[N]`` in the op dtype."""
    T, N = x.shape
    spikes = torch.empty_like(x)
    v_out = torch.empty_like(v0)
    charge = torch.empty_like(x) if save_charge else x.new_empty(0)
    block, warps = _launch_config(N, x.element_size())
    _lif_forward_kernel[(triton.cdiv(N, block),)](
        x, v0, beta, threshold, spikes, v_out, charge if save_charge else spikes, T, N,
        BETA_PER_NEURON=beta.numel() != 1, THR_PER_NEURON=threshold.numel() != 1, ZERO=zero_reset,
        SAVE=save_charge, BLOCK=block, num_warps=warps, enable_fp_fusion=False,
    )
    return spikes, v_out, charge


def lif_backward_triton(grad_spikes, grad_v, charge, v0, beta, threshold, zero_reset, detach_reset, surrogate_code,
                        alpha, beta_grad: bool, threshold_grad: bool):
    """Reverse-time pass; returns ``dx [T, N]``, ``dv0 [N]`` and per-neuron ``dbeta``/``dthreshold`` (or None)."""
    T, N = charge.shape
    dx = torch.empty_like(charge)
    dv0 = torch.empty_like(v0)
    dbeta = torch.empty(N, dtype=beta.dtype, device=beta.device) if beta_grad else None
    dthr = torch.empty(N, dtype=threshold.dtype, device=threshold.device) if threshold_grad else None
    block, warps = _launch_config(N, charge.element_size())
    _lif_backward_kernel[(triton.cdiv(N, block),)](
        grad_spikes if grad_spikes is not None else charge, grad_v if grad_v is not None else v0, charge, v0,
        beta, threshold, dx, dv0, dbeta if beta_grad else dv0, dthr if threshold_grad else dv0,
        float(alpha), 0.0 if detach_reset else 1.0, T, N, (T - 1) * N,
        HAS_GS=grad_spikes is not None, HAS_GV=grad_v is not None, BETA_PER_NEURON=beta.numel() != 1,
        THR_PER_NEURON=threshold.numel() != 1, ZERO=zero_reset, BETA_GRAD=beta_grad, THR_GRAD=threshold_grad,
        SURR=surrogate_code, BLOCK=block, num_warps=warps, enable_fp_fusion=False,
    )
    return dx, dv0, dbeta, dthr
