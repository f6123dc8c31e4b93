"""Triton kernels against the torch reference, run on CPU by Triton's interpreter.

The interpreter must be chosen before triton compiles anything, so the one test that runs in the
normal suite starts this file again in a subprocess with ``TRITON_INTERPRET=1``; there the
``interpreted`` tests run (small sizes: the interpreter executes every op with numpy). On a GPU
machine the same checks run on CUDA tensors with ``SPIKEC_TEST_CUDA=1``.
"""
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("triton")

from test_kernels import (  # noqa: E402  (the helpers live beside the CPU kernel tests)
    SURROGATES,
    check_backend_against_reference,
    make_case,
    one_torch_thread,  # noqa: F401  (autouse fixture)
)

from spikec.kernels import run_lif  # noqa: E402
from spikec.surrogate import ArcTan  # noqa: E402

INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
ON_CUDA = os.environ.get("SPIKEC_TEST_CUDA") == "1" and torch.cuda.is_available()
interpreted = pytest.mark.skipif(not (INTERPRETED or ON_CUDA), reason="runs in the TRITON_INTERPRET=1 subprocess")


def test_triton_kernels_under_interpreter():
    if INTERPRETED or ON_CUDA:
        pytest.skip("already running the kernels")
    env = dict(os.environ, TRITON_INTERPRET="1")
    cmd = [sys.executable, "-m", "pytest", __file__, "-q", "-x", "-p", "no:cacheprovider", "-k", "interpreted"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert " passed" in done.stdout and "skipped" not in done.stdout.splitlines()[-1], done.stdout[-2000:]


DEVICE = "cuda" if ON_CUDA else "cpu"


@interpreted
@pytest.mark.parametrize("T", [1, 2, 7, 64])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("detach", [False, True])
def test_interpreted_triton_matches_reference(T, dtype, reset, detach):
    seed = 3 * T + (reset == "zero") + 2 * detach + {torch.float32: 0, torch.float16: 5, torch.bfloat16: 9}[dtype]
    surrogate = SURROGATES[seed % len(SURROGATES)]
    check_backend_against_reference("triton", seed, T, (3, 67), dtype, reset, detach, surrogate, DEVICE)


@interpreted
@pytest.mark.parametrize(
    "kinds",
    [
        dict(v_kind="zeros", threshold_kind="channel"),
        dict(v_kind="broadcast", threshold_kind="neuron", beta_kind="neuron"),
    ],
    ids=["channel-threshold", "neuron-threshold-beta"],
)
def test_interpreted_triton_per_neuron_parameters(kinds):
    for seed, reset in enumerate(("subtract", "zero")):
        check_backend_against_reference(
            "triton", 70 + seed, 5, (3, 2, 23), torch.float32, reset, False, ArcTan(), DEVICE, **kinds
        )


@interpreted
def test_interpreted_triton_float64_gradcheck():
    x, v, beta, thr = [t.detach() for t in make_case(4, 4, (37,), torch.float64, device=DEVICE)]
    inputs = [t.clone().requires_grad_() for t in (x, v, beta, thr)]
    h, v_t = [], v
    for t in range(x.shape[0]):  # charges far from threshold, so finite differences see no step
        h.append((beta * v_t + x[t] - thr).abs().min())
        v_t = beta * v_t + x[t]
        v_t = v_t - (v_t >= thr).double() * thr
    assert min(h) > 1e-3

    def membrane(x, v, beta, thr):
        return run_lif(x, v, beta, thr, "subtract", ArcTan(), True, "triton")[1]

    assert torch.autograd.gradcheck(membrane, inputs, eps=1e-6, atol=1e-7, rtol=1e-6, fast_mode=True)


def _compile_for_h100(kernel, signature, constexprs, divisible):
    """Compile a kernel ahead of time for sm_90 (no GPU needed); returns the PTX."""
    import inspect

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    names = list(inspect.signature(kernel.fn).parameters)
    signature = {n: signature.get(n, "constexpr") for n in names}
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(names) if n in divisible}
    source = ASTSource(kernel, signature, constexprs, attrs)
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": 8, "enable_fp_fusion": False})
    return compiled.asm["ptx"]


@pytest.mark.skipif(INTERPRETED, reason="needs the compiling (not interpreting) triton")
def test_triton_kernels_compile_for_h100_with_vector_loads_and_no_fma():
    """Ahead-of-time build for sm_90: catches what the interpreter lets through (types, constexprs),
    and checks the forward moves 16-byte vectors when N is a multiple of 16, without fused FMAs."""
    import triton

    if "nvidia" not in getattr(triton.backends, "backends", {}):
        pytest.skip("triton has no nvidia backend here")
    from spikec.kernels import triton_lif

    fwd_ptrs = ("x_ptr", "v0_ptr", "beta_ptr", "thr_ptr", "spikes_ptr", "v_out_ptr", "charge_ptr")
    bwd_ptrs = ("gs_ptr", "gv_ptr", "charge_ptr", "v0_ptr", "beta_ptr", "thr_ptr", "dx_ptr", "dv0_ptr", "dbeta_ptr",
                "dthr_ptr")
    for store in ("fp32", "fp16", "bf16"):
        sig = {p: f"*{store}" for p in fwd_ptrs} | {"beta_ptr": "*fp32", "thr_ptr": "*fp32", "T": "i32", "N": "i32"}
        consts = dict(BETA_PER_NEURON=False, THR_PER_NEURON=store == "bf16", ZERO=store == "fp16", SAVE=True, BLOCK=1024)
        ptx = _compile_for_h100(triton_lif._lif_forward_kernel, sig, consts, fwd_ptrs + ("N",))
        assert "fma.rn" not in ptx
        if store == "fp32":
            assert "ld.global.L1::evict_first.L2::cache_hint.v4.b32" in ptx and "st.global.v4.b32" in ptx
        sig = {p: f"*{store}" for p in bwd_ptrs} | {p: "*fp32" for p in ("beta_ptr", "thr_ptr", "dbeta_ptr", "dthr_ptr")}
        sig |= {"alpha": "fp32", "reset_grad": "fp32", "T": "i32", "N": "i32", "last_row": "i64"}
        for surrogate in range(4) if store == "fp32" else (0,):
            consts = dict(HAS_GS=True, HAS_GV=surrogate != 1, BETA_PER_NEURON=surrogate == 2, THR_PER_NEURON=False,
                          ZERO=surrogate % 2 == 1, BETA_GRAD=True, THR_GRAD=True, SURR=surrogate, BLOCK=1024)
            assert ".entry" in _compile_for_h100(triton_lif._lif_backward_kernel, sig, consts, bwd_ptrs + ("N",))
