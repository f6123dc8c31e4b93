"""Part 1: every kernel backend against the torch reference, on the suite's device.

Both resets, fp32/fp16/bf16, odd neuron counts, T up to 64, with and without ``detach_reset``,
the four closed-form surrogates, and per-channel / per-neuron parameters. The fused CPU (C++)
kernel needs CPU tensors, so on a GPU run it is checked on the CPU beside the device backends.
"""
from __future__ import annotations

import torch

from spikec.kernels import run_lif
from spikec.kernels.dispatch import backend_unavailable_reason
from spikec.surrogate import ArcTan, FastSigmoid, StraightThrough, Triangle

from gpu.budget import Budget
from gpu.config import SuiteConfig
from gpu.reference import compare, make_case

SURROGATES = (ArcTan(), FastSigmoid(), Triangle(alpha=2.0), StraightThrough())
ERRORS_IN_A_ROW = 3  # a backend that raises this often in a row is not tried on the remaining cases


def backend_fn(backend: str):
    def run(x, v, beta, threshold, reset, surrogate, detach):
        return run_lif(x, v, beta, threshold, reset, surrogate, detach, backend)

    return run


def cases(config: SuiteConfig, cpu: bool):
    """``(seed, T, shape, dtype, reset, detach, surrogate, per_neuron)`` of every case in the grid."""
    shape = tuple(config.check_cpu_shape if cpu else config.check_shape)
    seed = 0
    for dtype_name in config.check_dtypes:
        for reset in ("subtract", "zero"):
            for T in config.check_T:
                seed += 1
                detach = seed % 2 == 0
                yield (seed, T, shape, getattr(torch, dtype_name), reset, detach, SURROGATES[seed % 4], "")
    for i, per_neuron in enumerate(("channel", "neuron")):
        for reset in ("subtract", "zero"):
            seed += 1
            surrogate = SURROGATES[(seed + i) % 4]
            yield (seed, config.check_param_T, shape, torch.float32, reset, False, surrogate, per_neuron)


def _targets(device: torch.device) -> list[tuple[str, torch.device]]:
    """(backend, device) pairs to check: the reference loop and Triton on the suite's device, the
    C++ kernel on CPU."""
    targets = [("torch", device), ("triton", device), ("cpu", torch.device("cpu"))]
    if device.type == "cpu":
        targets = [("torch", device), ("cpu", device), ("triton", device)]
    return targets


def check_backend(backend: str, device: torch.device, config: SuiteConfig, budget: Budget) -> dict:
    reason = backend_unavailable_reason(backend, device)
    if reason:
        return {"backend": backend, "device": str(device), "status": "skipped", "reason": reason}
    rows, truncated = [], None
    for seed, T, shape, dtype, reset, detach, surrogate, per_neuron in cases(config, device.type == "cpu"
                                                                             and config.device != "cpu"):
        if budget.left() < 5:
            truncated = f"time budget: {backend}@{device} stopped after {len(rows)} cases"
            break
        label = {"T": T, "neurons": int(torch.Size(shape).numel()), "dtype": str(dtype).replace("torch.", ""),
                 "reset": reset, "detach_reset": detach, "surrogate": surrogate.name,
                 "parameters": per_neuron or "scalar"}
        try:
            case = make_case(seed, T, shape, dtype, device, per_neuron)
            result = compare(backend_fn(backend), case, reset, surrogate, detach, seed,
                             judge_shared_grads=backend != "torch")
        except Exception as err:  # noqa: BLE001  (a kernel that fails to compile or launch is a finding)
            first = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
            result = {"passed": False, "error": f"{type(err).__name__}: {first}"}
        rows.append({**label, **result})
        if sum("error" in r for r in rows[-ERRORS_IN_A_ROW:]) == ERRORS_IN_A_ROW:
            truncated = f"{backend}@{device}: stopped after {ERRORS_IN_A_ROW} errors in a row"
            break
    failed = [r for r in rows if not r["passed"]]
    out = {"backend": backend, "device": str(device), "status": "failed" if failed else "ok",
           "cases": len(rows), "failed_cases": len(failed), "rows": rows}
    if truncated:
        out["truncated"] = truncated
    return out


def run(config: SuiteConfig, budget: Budget) -> dict:
    device = torch.device(config.device)
    backends = [check_backend(b, d, config, budget) for b, d in _targets(device)]
    ran = [b for b in backends if b["status"] != "skipped"]
    status = "failed" if any(b["status"] == "failed" for b in backends) else "ok"
    truncated = "; ".join(b["truncated"] for b in backends if b.get("truncated"))
    return {"status": status, "backends": backends, **({"truncated": truncated} if truncated else {}),
            "summary": {f"{b['backend']}@{b['device']}": (b["status"] if b["status"] == "skipped" else
                                                         f"{b['cases'] - b['failed_cases']}/{b['cases']} passed")
                        for b in backends},
            "ran": len(ran)}
