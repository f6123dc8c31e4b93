"""The GPU suite (benchmarks/gpu_suite.py) stays runnable: its --smoke mode runs every part on CPU at toy
sizes, and its correctness comparison really flags a backend that is wrong.

The smoke run is a subprocess because Triton's interpreter must be chosen before triton compiles
anything. It takes about 25 s on the 2-core CI machine (most of it Triton's interpreter).
"""
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spikec.surrogate import ArcTan, FastSigmoid

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # only while importing the suite's package: benchmarks/*.py must not shadow
try:
    from gpu.budget import Budget, run_part
    from gpu.reference import compare, make_case, reference_fn
finally:
    sys.path.remove(str(BENCHMARKS))

PARTS = ("correctness", "kernels", "train_step", "cifar")


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_smoke")
    env = dict(os.environ, OMP_NUM_THREADS="1", TRITON_INTERPRET="1")
    done = subprocess.run([sys.executable, str(BENCHMARKS / "gpu_suite.py"), "--smoke", "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads((out / "results.json").read_text()), (out / "results.md").read_text()


def test_smoke_runs_every_part(smoke):
    results, md = smoke
    assert results["smoke"] is True and results["environment"]["versions"]["torch"]
    for name in PARTS:
        part = results["parts"][name]
        assert part["status"] in ("ok", "skipped"), (name, part)
        if part["status"] == "skipped":
            assert part["reason"].strip(), name
    assert results["parts"]["correctness"]["status"] == "ok"  # nothing on CPU needs a GPU to run
    assert "| part | status | seconds | note |" in md and "(1) Every backend" in md


def test_smoke_correctness_compared_numbers(smoke):
    backends = {b["backend"]: b for b in smoke[0]["parts"]["correctness"]["backends"]}
    assert backends["torch"]["status"] == "ok"
    triton_ok = _importable("triton")
    for name, b in backends.items():
        if b["status"] == "skipped":
            assert b["reason"] and not (name == "triton" and triton_ok), b
            continue
        assert b["cases"] >= 16 and b["failed_cases"] == 0
        dtypes = {r["dtype"] for r in b["rows"]}
        assert dtypes == {"float32", "float16", "bfloat16"}
        assert {r["reset"] for r in b["rows"]} == {"subtract", "zero"}
        assert any(r["neurons"] % 2 == 1 for r in b["rows"])  # odd N
        for r in b["rows"]:
            assert r["spike_mismatches"] == 0 and r["membrane_max_diff"] == 0.0
            assert set(r["grad_rel_error"]) == {"x", "v", "beta", "threshold"}
            assert all(0 <= r["grad_rel_error"][g] <= r["grad_tolerance"] for g in r["grads_judged"])
        assert any(0 < r["spike_rate"] < 1 for r in b["rows"])  # both branches of the spike function ran


def test_smoke_kernels_and_training_step(smoke):
    parts = smoke[0]["parts"]
    kernels = parts["kernels"]
    methods = {r["method"] for r in kernels["rows"]}
    assert {"spikec[torch]", "spikec[cpu]"} <= methods or "spikec[cpu]" in kernels["skipped_methods"]
    assert {r["mode"] for r in kernels["rows"]} == {"forward", "forward+backward"}
    assert all(r["ms"] > 0 and r["GBps"] > 0 for r in kernels["rows"]) and kernels["copies"]
    assert all(reason.strip() for reason in kernels["skipped_methods"].values())
    sj_installed = _importable("spikingjelly.activation_based.functional")
    assert ("spikingjelly[torch]" in methods) == sj_installed
    assert "spikingjelly[triton]" in kernels["skipped_methods"]  # CUDA only
    models = {m["model"]: m for m in parts["train_step"]["models"]}
    assert set(models) == {"vgg11", "resnet20"}
    for m in models.values():
        assert m["rows"][0]["method"] == "spikec" and all(r["losses_finite"] for r in m["rows"])
        assert len(m["rows"]) == (2 if sj_installed else 1)
    cifar = parts["cifar"]
    assert [r["T"] for r in cifar["snn"]] == [1, 4] and cifar["train_samples"] == 80


def _flip_first_spike(x, v, beta, threshold, reset, surrogate, detach):
    spikes, v_out = reference_fn(x, v, beta, threshold, reset, surrogate, detach)
    flip = torch.zeros_like(spikes)
    flip.view(-1)[0] = 1
    return spikes + flip * (1 - 2 * spikes.detach()), v_out


def _wrong_surrogate(x, v, beta, threshold, reset, surrogate, detach):
    return reference_fn(x, v, beta, threshold, reset, FastSigmoid(), detach)  # same spikes, other gradient


def _membrane_off(x, v, beta, threshold, reset, surrogate, detach):
    spikes, v_out = reference_fn(x, v, beta, threshold, reset, surrogate, detach)
    return spikes, v_out + 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_compare_flags_a_wrong_backend(dtype):
    case = make_case(5, 6, (3, 23), dtype, "cpu")
    right = compare(reference_fn, case, "subtract", ArcTan(), False, 5, judge_shared_grads=False)
    assert right["passed"] and right["spike_mismatches"] == 0 and right["grad_rel_error"]["x"] < right["grad_tolerance"]
    flipped = compare(_flip_first_spike, case, "subtract", ArcTan(), False, 5)
    assert not flipped["passed"] and flipped["spike_mismatches"] == 1
    wrong_grad = compare(_wrong_surrogate, case, "subtract", ArcTan(), False, 5)
    assert wrong_grad["spikes_equal"] and not wrong_grad["passed"]
    assert wrong_grad["grad_rel_error"]["x"] > wrong_grad["grad_tolerance"]
    membrane = compare(_membrane_off, case, "zero", ArcTan(), False, 5)
    assert membrane["spikes_equal"] and not membrane["passed"] and membrane["membrane_max_diff"] > 0


def test_run_part_records_errors_and_budget():
    def broken():
        raise RuntimeError("kernel launch failed\nsecond line")

    failed = run_part("x", broken, Budget(100), 0)
    assert failed["status"] == "error" and failed["reason"] == "RuntimeError: kernel launch failed"
    late = run_part("x", lambda: {"never": True}, Budget(10), min_seconds=60)
    assert late["status"] == "skipped" and "budget" in late["reason"] and "never" not in late
    assert run_part("x", lambda: {"value": 1}, Budget(100), 0)["status"] == "ok"


def test_spikingjelly_choice_swaps_and_restores():
    """Parts 2 and 3 time spikingjelly's Triton and torch LIF in one process by swapping its private choice."""
    pytest.importorskip("spikingjelly")
    import spikingjelly._ops.lif as sj_lif

    from gpu.peers import SpikingjellyChoice

    selection = sj_lif._selection
    before = (selection._requested, selection._selections)
    triton_choice, torch_choice = SpikingjellyChoice("triton"), SpikingjellyChoice("torch")
    with triton_choice:
        assert selection._requested == "triton" and selection._selections is triton_choice.cache
        with torch_choice:
            assert selection._requested == "torch" and selection._selections is torch_choice.cache
        assert selection._requested == "triton"
    assert (selection._requested, selection._selections) == before


def test_report_shows_failures_errors_and_targets():
    """A GPU run that finds a bug must still write a readable report that names it."""
    from gpu import env, kernels, report
    from gpu.config import smoke_config

    case = make_case(2, 4, (3, 23), torch.float32, "cpu")
    row = {"T": 4, "neurons": 69, "dtype": "float32", "reset": "subtract", "detach_reset": False,
           "surrogate": "arctan", "parameters": "scalar",
           **compare(_flip_first_spike, case, "subtract", ArcTan(), False, 2)}
    fwd = {"dtype": "float32", "N": 2**22, "mode": "forward", "method": "spikec[triton]", "ms": 1.0, "GBps": 3000.0,
           "copy_fraction": 0.8, "time_over_spikec": 1.0, "spike_agreement": 1.0}
    fb = dict(fwd, mode="forward+backward", copy_fraction=0.5)
    sj = dict(fb, method="spikingjelly[triton]", ms=2.5)
    rows = [fwd, fb, sj]
    targets = kernels.targets(rows, smoke_config(kernel_dtypes=("float32",)))["float32"]
    assert targets["forward >= 70% of copy bandwidth"] is True
    assert targets["forward+backward faster than spikingjelly[triton]"] is True
    assert targets["forward+backward spikingjelly[triton] / spikec[triton]"] == 2.5
    results = {
        "command": "python benchmarks/gpu_suite.py", "smoke": False, "budget_s": 420, "used_s": 100,
        "environment": env.environment(torch.device("cpu")),
        "parts": {
            "correctness": {"status": "failed", "seconds": 1, "backends": [
                {"backend": "triton", "device": "cuda", "status": "failed", "cases": 1, "failed_cases": 1,
                 "rows": [row]}]},
            "kernels": {"status": "ok", "seconds": 1, "rows": rows, "skipped_methods": {"norse LIF": "absent"},
                        "copies": [{"dtype": "float32", "N": 2**22, "T": 32, "clone_ms": 0.1, "copy_into_ms": 0.1,
                                    "copy_GBps": 4000.0}],
                        "targets": {"float32": targets}},
            "train_step": {"status": "error", "seconds": 1, "reason": "RuntimeError: boom",
                           "traceback": ["Traceback", "RuntimeError: boom"]},
            "cifar": {"status": "skipped", "seconds": 0, "reason": "time budget"},
        },
    }
    md = report.markdown(results)
    assert not row["passed"] and "Failed cases:" in md and "| triton | cuda | 4 | 69 |" in md
    assert "RuntimeError: boom" in md and "- norse LIF: absent" in md and "| skipped | 0 | time budget |" in md
    assert "forward >= 70% of copy bandwidth: True" in md


def test_a_backend_that_raises_is_recorded_and_cut_short(monkeypatch):
    from gpu import correctness, report
    from gpu.config import smoke_config

    def raising(backend):
        def run(*args):
            raise RuntimeError("triton compilation failed: out of resources")
        return run

    monkeypatch.setattr(correctness, "backend_fn", raising)
    result = correctness.check_backend("torch", torch.device("cpu"), smoke_config(), Budget(100))
    assert result["status"] == "failed" and result["cases"] == correctness.ERRORS_IN_A_ROW
    assert "errors in a row" in result["truncated"]
    assert result["rows"][0]["error"] == "RuntimeError: triton compilation failed: out of resources"
    assert "out of resources" in "\n".join(report.RENDERERS["correctness"]({"backends": [result]}))
