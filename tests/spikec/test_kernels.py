"""Fused neuron kernels against the torch reference loop (the specification).

Spikes and the final membrane must equal the reference bit for bit (the kernels repeat its
arithmetic op by op). Gradients are compared with the
reference run in float64 with its forward rounded to the case dtype op by op (same spikes, exact
gradients): the reference's own fp16/bf16 backward sums the scalar beta/threshold gradients in
that dtype and is off by far more than the kernels, which accumulate in float32.
"""
import pytest
import torch

import spikec
from spikec.functional.neurons import lif_multistep
from spikec.kernels import run_lif
from spikec.kernels.cpu_build import load_cpu_library
from spikec.kernels.dispatch import BackendUnavailableError, available_backends
from spikec.surrogate import ArcTan, FastSigmoid, StraightThrough, Surrogate, Triangle



@pytest.fixture(autouse=True)
def one_torch_thread():
    """The reference loop's tiny ops stall on a loaded 2-core machine with 2 threads; the kernels'
    own threading is tested explicitly in test_cpu_kernel_float64_and_threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


SURROGATES = (ArcTan(), FastSigmoid(), Triangle(alpha=2.0), StraightThrough())
GRAD_TOL = {torch.float32: 2e-5, torch.float64: 1e-10, torch.float16: 4e-3, torch.bfloat16: 3e-2}


def cpu_kernel_or_skip():
    built = load_cpu_library()
    if built.lib is None:
        pytest.skip(f"cpu kernel unavailable: {built.reason}")


def make_case(seed, T, sample_shape, dtype, v_kind="random", threshold_kind="scalar", beta_kind="scalar", device="cpu"):
    """Fresh inputs (leaf tensors that require grad) spread around the threshold."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn((T, *sample_shape), generator=g) * 0.7 + 0.35).to(dtype)
    if v_kind == "random":
        v = (torch.randn(sample_shape, generator=g) * 0.5).to(dtype)
    elif v_kind == "zeros":
        v = torch.zeros(sample_shape, dtype=dtype)
    else:  # one value broadcast over the sample
        v = torch.tensor(0.25, dtype=dtype)
    channel = (sample_shape[0],) + (1,) * (len(sample_shape) - 1)
    thr = {
        "scalar": lambda: torch.tensor(1.0),
        "channel": lambda: torch.rand(channel, generator=g) + 0.6,
        "neuron": lambda: torch.rand(sample_shape, generator=g) + 0.6,
    }[threshold_kind]().to(dtype)
    beta = {
        "scalar": lambda: torch.tensor(0.875),
        "neuron": lambda: torch.rand(sample_shape, generator=g) * 0.5 + 0.5,
    }[beta_kind]().to(dtype)
    return [t.to(device).requires_grad_() for t in (x, v, beta, thr)]


def upstream_grads(spikes, v_out, seed):
    g = torch.Generator().manual_seed(seed + 1000)
    gs, gv = torch.randn(spikes.shape, generator=g), torch.randn(v_out.shape, generator=g)
    return gs.to(spikes.device, spikes.dtype), gv.to(v_out.device, v_out.dtype)


def run_with_grads(case, reset, surrogate, detach, backend, seed):
    x, v, beta, thr = case
    spikes, v_out = run_lif(x, v, beta, thr, reset, surrogate, detach, backend)
    gs, gv = upstream_grads(spikes, v_out, seed)
    grads = torch.autograd.grad([spikes, v_out], [x, v, beta, thr], [gs, gv])
    return spikes, v_out, grads


def _as_dtype_op(t: torch.Tensor, dtype) -> torch.Tensor:
    """Value of one ATen op on ``dtype`` (float compute, rounded once to ``dtype``), gradient 1."""
    value = t.detach() if dtype == torch.float64 else t.detach().to(torch.float32).to(dtype).to(torch.float64)
    return t + (value - t.detach())


def rounded_reference_grads(case, reset, surrogate, detach, seed):
    """The reference loop in float64 whose forward is rounded to the case dtype after every op.

    Returns spikes, membrane, the gradients and, per gradient, the scale its error is measured
    against: the largest entry, or for a beta/threshold shared by many neurons the sum of the
    per-neuron contributions' magnitudes (the sum itself may cancel to almost nothing).
    """
    x, v, beta, thr = case
    dtype = x.dtype
    leaves = [t.detach().double().requires_grad_() for t in case]
    x64, v64, beta64, thr64 = leaves
    sample = x.shape[1:]
    b64, th64 = beta64.expand(sample), thr64.expand(sample)
    v_t = v64
    spikes = []
    for t in range(x.shape[0]):
        h = _as_dtype_op(_as_dtype_op(b64 * v_t, dtype) + x64[t], dtype)
        d = _as_dtype_op(h - th64, dtype)
        s = surrogate(d)
        r = s.detach() if detach else s
        v_t = _as_dtype_op(h - r * th64, dtype) if reset == "subtract" else h * (1 - r)
        spikes.append(s)
    spikes = torch.stack(spikes)
    gs, gv = upstream_grads(spikes.to(dtype), v_t.to(dtype), seed)
    grads = torch.autograd.grad([spikes, v_t], leaves + [b64, th64], [gs.double(), gv.double()])
    scales = [g.abs().max() for g in grads[:2]] + [
        per_neuron.abs().sum() if shared.numel() == 1 else shared_grad.abs().max()
        for shared, shared_grad, per_neuron in zip((beta, thr), grads[2:4], grads[4:])
    ]
    return spikes, v_t, grads[:4], scales


def assert_grads_close(got, want, scales, dtype, what):
    for name, g, w, scale in zip(("x", "v", "beta", "threshold"), got, want, scales):
        assert g.shape == w.shape and g.dtype == dtype, f"{what}: grad {name} {g.shape}/{g.dtype}"
        err = (g.double() - w.double()).abs().max().item() / (scale.item() + 1e-12)
        assert err <= GRAD_TOL[dtype], f"{what}: grad {name} relative error {err:.2e}"


def check_backend_against_reference(backend, seed, T, sample_shape, dtype, reset, detach, surrogate, device="cpu",
                                    **kinds):
    case = make_case(seed, T, sample_shape, dtype, device=device, **kinds)
    what = f"{backend} T={T} {tuple(sample_shape)} {dtype} {reset} detach={detach} {surrogate} {kinds}"
    ref_s, ref_v, ref_g = run_with_grads(case, reset, surrogate, detach, "torch", seed)
    got_s, got_v, got_g = run_with_grads(case, reset, surrogate, detach, backend, seed)
    assert got_s.dtype == dtype and got_s.shape == ref_s.shape
    assert torch.equal(got_s, ref_s), f"{what}: spikes differ at {int((got_s != ref_s).sum())} places"
    assert torch.equal(got_v, ref_v), f"{what}: membrane differs by {(got_v - ref_v).abs().max().item():.2e}"
    emu_s, emu_v, truth, scales = rounded_reference_grads(case, reset, surrogate, detach, seed)
    assert torch.equal(emu_s.to(dtype), ref_s) and torch.equal(emu_v.to(dtype), ref_v), "emulation diverged"
    assert_grads_close(got_g, truth, scales, dtype, what)
    return got_s


DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@pytest.mark.parametrize("T", [1, 2, 7, 64])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("detach", [False, True])
def test_cpu_kernel_matches_reference(T, dtype, reset, detach):
    cpu_kernel_or_skip()
    seed = T * 7 + DTYPES.index(dtype) * 3 + (reset == "zero") * 2 + detach
    surrogate = SURROGATES[seed % len(SURROGATES)]
    spikes = check_backend_against_reference("cpu", seed, T, (3, 173), dtype, reset, detach, surrogate)
    assert 0 < spikes.float().mean() < 1  # the case exercises both branches


@pytest.mark.parametrize("surrogate", SURROGATES, ids=lambda s: s.name)
@pytest.mark.parametrize(
    "kinds",
    [
        dict(v_kind="zeros", threshold_kind="channel"),
        dict(v_kind="broadcast", threshold_kind="neuron", beta_kind="neuron"),
        dict(v_kind="random", threshold_kind="scalar", beta_kind="neuron"),
    ],
    ids=["channel-threshold", "neuron-threshold-beta", "neuron-beta"],
)
def test_cpu_kernel_per_neuron_parameters_and_surrogates(surrogate, kinds):
    cpu_kernel_or_skip()
    for seed, reset in enumerate(("subtract", "zero")):
        check_backend_against_reference("cpu", 50 + seed, 9, (4, 5, 7), torch.float32, reset, False, surrogate, **kinds)


def test_cpu_kernel_float64_and_threads():
    """Many chunks of neurons over both threads, in float64 (the dtype gradcheck uses)."""
    cpu_kernel_or_skip()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        check_backend_against_reference("cpu", 3, 64, (2, 1601), torch.float64, "subtract", False, ArcTan())
        check_backend_against_reference("cpu", 4, 33, (2, 1601), torch.float32, "zero", True, FastSigmoid())
    finally:
        torch.set_num_threads(threads)


def test_cpu_kernel_large_outputs_take_the_streaming_path():
    """Outputs over 16 MB are written with streaming stores into huge-page-advised memory; an odd
    N puts every row segment at a different alignment."""
    cpu_kernel_or_skip()
    x, v, beta, thr = make_case(8, 33, (131101,), torch.float32)
    assert x.numel() * x.element_size() > 16 << 20
    ref_s, ref_v, ref_g = run_with_grads((x, v, beta, thr), "subtract", ArcTan(), False, "torch", 8)
    got_s, got_v, got_g = run_with_grads((x, v, beta, thr), "subtract", ArcTan(), False, "cpu", 8)
    assert torch.equal(got_s, ref_s) and torch.equal(got_v, ref_v)
    torch.testing.assert_close(got_g[0], ref_g[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_g[1], ref_g[1], rtol=1e-5, atol=1e-6)


def test_cpu_kernel_partial_outputs_and_no_grad():
    """Only spikes or only the membrane used downstream; inference stores nothing for backward."""
    cpu_kernel_or_skip()
    x, v, beta, thr = make_case(5, 6, (37,), torch.float32)
    for used in ("spikes", "membrane"):
        grads = {}
        for backend in ("torch", "cpu"):
            s, v_out = run_lif(x, v, beta, thr, "subtract", ArcTan(), False, backend)
            loss = (s * torch.linspace(-1, 1, 37)).sum() if used == "spikes" else (v_out**2).sum()
            grads[backend] = torch.autograd.grad(loss, [x, v, beta, thr])
        for a, b in zip(grads["torch"], grads["cpu"]):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        s, v_out = run_lif(x, v, beta, thr, "zero", ArcTan(), False, "cpu")
        ref_s, ref_v = lif_multistep(x, v, beta, thr, "zero", ArcTan(), False)
    assert torch.equal(s, ref_s) and torch.equal(v_out, ref_v) and not s.requires_grad


def test_non_contiguous_input_and_python_number_parameters():
    cpu_kernel_or_skip()
    g = torch.Generator().manual_seed(11)
    x = torch.randn(8, 40, 6, generator=g).transpose(1, 2)  # [T, 6, 40], not contiguous
    v = torch.zeros(6, 40)
    for dtype in (torch.float32, torch.float16):
        xd, vd = x.to(dtype), v.to(dtype)
        for beta, thr in ((0.9, 1.0), (0.7, 0.3)):
            ref = lif_multistep(xd, vd, beta, thr, "subtract", ArcTan(), False)
            got = run_lif(xd, vd, beta, thr, "subtract", ArcTan(), False, "cpu")
            assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1]), (dtype, beta, thr)


def test_gradcheck_smooth_parts():
    """Finite differences of the membrane path: detached reset, inputs kept away from threshold."""
    cpu_kernel_or_skip()
    for seed in range(20):
        x, v, beta, thr = [t.detach() for t in make_case(seed, 6, (2, 9), torch.float64)]
        # reject draws where a charge comes within 1e-3 of threshold (a step would flip under eps)
        h_margin, v_t = [], v
        for t in range(x.shape[0]):
            h = beta * v_t + x[t]
            h_margin.append((h - thr).abs().min())
            v_t = h - (h >= thr).double() * thr
        if min(h_margin) > 1e-3:
            break
    else:
        pytest.fail("no seed kept the charges away from threshold")
    inputs = [t.clone().requires_grad_() for t in (x, v, beta, thr)]
    for reset in ("subtract", "zero"):
        def membrane(x, v, beta, thr):
            return run_lif(x, v, beta, thr, reset, ArcTan(), True, "cpu")[1]

        assert torch.autograd.gradcheck(membrane, inputs, eps=1e-6, atol=1e-7, rtol=1e-6)


def test_lif_and_if_modules_match_reference_backend():
    cpu_kernel_or_skip()
    torch.manual_seed(0)
    x = torch.rand(10, 3, 4, 5, 5) * 1.2
    for make in (
        lambda b: spikec.LIF(beta=0.8, threshold=0.9, reset="zero", backend=b, learn_beta=True, learn_threshold=True),
        lambda b: spikec.IF(threshold=1.1, v_init=0.3, backend=b, learn_threshold=True),
        lambda b: spikec.LIF(beta=0.9, threshold=torch.full((4, 1, 1), 0.7), detach_reset=True, backend=b),
    ):
        outs = {}
        for backend in ("torch", "cpu"):
            neuron = make(backend)
            xb = x.clone().requires_grad_()
            first = neuron(xb[:6])
            second = neuron(xb[6:])  # streaming: the held membrane carries over
            loss = (first * 1.5).sum() + (second * 0.5).sum() + neuron.v.sum()
            loss.backward()
            outs[backend] = (first, second, neuron.v, xb.grad, [p.grad for p in neuron.parameters()])
        ref, got = outs["torch"], outs["cpu"]
        assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1]) and torch.equal(got[2], ref[2])
        torch.testing.assert_close(got[3], ref[3], rtol=1e-5, atol=1e-6)
        for a, b in zip(ref[4], got[4]):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


def test_auto_dispatch_picks_fused_cpu_and_falls_back():
    cpu_kernel_or_skip()
    assert available_backends("cpu")[0] == "cpu"
    assert available_backends("cpu")[-1] == "torch"

    class Custom(Surrogate):
        name = "custom"

        def derivative(self, x):
            return torch.exp(-x.abs())

    x, v, beta, thr = make_case(1, 5, (23,), torch.float32)
    ref = lif_multistep(x, v, beta, thr, "subtract", Custom(), False)
    got = run_lif(x, v, beta, thr, "subtract", Custom(), False, "auto")  # no closed form: the reference runs
    assert torch.equal(got[0], ref[0])
    gx_ref, = torch.autograd.grad(ref[0].sum(), x)
    gx_got, = torch.autograd.grad(got[0].sum(), x)
    assert torch.equal(gx_got, gx_ref)
    with pytest.raises(BackendUnavailableError, match="closed form"):
        run_lif(x, v, beta, thr, "subtract", Custom(), False, "cpu")


def test_explicit_unavailable_backend_is_a_one_line_error(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x = torch.rand(3, 4)
    with pytest.raises(BackendUnavailableError) as err:
        run_lif(x, torch.zeros(4), 0.9, 1.0, "subtract", ArcTan(), False, "triton")
    assert "\n" not in str(err.value) and "triton" in str(err.value)
    with pytest.raises(ValueError, match="backend must be one of"):
        run_lif(x, torch.zeros(4), 0.9, 1.0, "subtract", ArcTan(), False, "cuda")


def test_failed_cpu_build_falls_back_cleanly(monkeypatch, tmp_path):
    monkeypatch.setenv("CXX", "/bin/false")
    monkeypatch.setenv("SPIKEC_CACHE_DIR", str(tmp_path))
    load_cpu_library.cache_clear()
    try:
        assert load_cpu_library().lib is None
        assert available_backends("cpu") == ("torch",)
        x, v, beta, thr = make_case(2, 4, (9,), torch.float32)
        ref = lif_multistep(x, v, beta, thr, "zero", ArcTan(), False)
        got = run_lif(x, v, beta, thr, "zero", ArcTan(), False, "auto")
        assert torch.equal(got[0], ref[0])
        with pytest.raises(BackendUnavailableError, match="could not be built"):
            run_lif(x, v, beta, thr, "zero", ArcTan(), False, "cpu")
    finally:
        monkeypatch.undo()
        load_cpu_library.cache_clear()


def test_custom_op_passes_opcheck():
    cpu_kernel_or_skip()
    from spikec.kernels import ops  # noqa: F401

    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, 33, generator=g, requires_grad=True)
    v0 = torch.randn(33, generator=g, requires_grad=True)
    beta = torch.tensor([0.9], requires_grad=True)
    thr = (torch.rand(33, generator=g) + 0.5).requires_grad_()
    args = (x, v0, beta, thr, False, False, 0, 2.0, True, "cpu")
    torch.library.opcheck(torch.ops.spikec.lif_forward.default, args)


def test_torch_compile_of_a_spiking_net_matches_eager():
    cpu_kernel_or_skip()
    torch.manual_seed(0)

    def make_net():
        torch.manual_seed(1)
        return torch.nn.ModuleDict(
            {"fc": torch.nn.Linear(12, 20), "lif": spikec.LIF(beta=0.85, learn_beta=True, backend="cpu")}
        )

    def run(net, x):
        spikec.reset(net)
        T, B = x.shape[:2]
        return net["lif"](net["fc"](x.flatten(0, 1)).view(T, B, -1)).sum()

    x = torch.rand(8, 4, 12) * 2
    eager, compiled_net = make_net(), make_net()
    loss_e = run(eager, x)
    loss_e.backward()
    compiled = torch.compile(lambda inp: run(compiled_net, inp), backend="aot_eager", fullgraph=True)
    loss_c = compiled(x)
    loss_c.backward()
    assert loss_c.item() == loss_e.item()
    for (name, p), q in zip(eager.named_parameters(), compiled_net.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-6, msg=name)
