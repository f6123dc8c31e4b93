"""Choose and run a backend for the multi-step LIF/IF update.

``torch`` is the reference loop (the specification). ``cpu`` is the fused C++ kernel, built at
first use; ``triton`` the fused Triton kernels for CUDA tensors (or CPU tensors under
``TRITON_INTERPRET=1``). ``auto`` takes the fused kernel for the tensor's device when it is
available and supports the call, and the reference otherwise; asking for a backend by name that
cannot run raises :class:`BackendUnavailableError` with a one-line reason.
"""
from __future__ import annotations

import functools
import os

import torch

from spikec.errors import SpikecError
from spikec.functional.neurons import check_reset, lif_multistep
from spikec.kernels.inputs import FlatLIF, flatten_lif
from spikec.surrogate import Surrogate

BACKENDS = ("auto", "torch", "triton", "cpu")


class BackendUnavailableError(SpikecError):
    """A neuron backend asked for by name cannot run here or cannot run this call."""


@functools.lru_cache(maxsize=1)
def _triton_import_error() -> str:
    try:
        import triton  # noqa: F401
    except Exception as err:  # noqa: BLE001  (a broken install counts as absent, whatever it raises)
        return f"triton is not importable ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
    return ""


def backend_unavailable_reason(backend: str, device: torch.device) -> str:
    """Empty when ``backend`` can run on ``device``, else why not (one line)."""
    return _unavailable_reason(backend, torch.device(device).type)


def _constant_to_compiler(fn):
    """What ``torch.compiler.assume_constant_result`` does (it sets this flag), without importing
    torch._dynamo, which would add 2 s to ``import spikec``; a compile test guards the flag's name."""
    fn._dynamo_marked_constant = True
    return fn


@_constant_to_compiler
def _unavailable_reason(backend: str, device_type: str) -> str:
    # a constant to torch.compile: it probes the file system and builds, nothing to trace
    if backend == "torch":
        return ""
    if backend == "cpu":
        if device_type != "cpu":
            return f"the cpu backend needs CPU tensors, got {device_type}"
        from spikec.kernels.cpu_build import load_cpu_library

        built = load_cpu_library()
        return "" if built.lib is not None else f"the cpu kernel could not be built: {built.reason}"
    if backend == "triton":
        interpreted = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
        if device_type != "cuda" and not (interpreted and device_type == "cpu"):
            return f"the triton backend needs CUDA tensors (or TRITON_INTERPRET=1 on CPU), got {device_type}"
        if device_type == "cuda" and not interpreted and torch.cuda.get_device_capability() < (7, 5):
            return f"the triton backend needs a GPU of compute capability 7.5 or newer, this one is " \
                   f"{torch.cuda.get_device_capability()}"
        return _triton_import_error()
    return f"unknown backend {backend!r}"


def available_backends(device: torch.device | str) -> tuple[str, ...]:
    """Backends that can run on ``device`` here, fastest first, ``torch`` last."""
    device = torch.device(device)
    order = ("triton", "cpu") if device.type == "cuda" else ("cpu", "triton")
    return tuple(b for b in order if not backend_unavailable_reason(b, device)) + ("torch",)


def _fused(flat: FlatLIF, reset: str, detach_reset: bool, backend: str):
    from spikec.kernels import ops  # noqa: F401  (registers torch.ops.spikec.*)

    spikes, v_out, _ = torch.ops.spikec.lif_forward(
        flat.x, flat.v0, flat.beta, flat.threshold, reset == "zero", bool(detach_reset), flat.surrogate_code,
        flat.alpha, flat.needs_grad(), backend,
    )
    return spikes.reshape(flat.x.shape[:1] + flat.sample_shape), v_out.reshape(flat.sample_shape)


def run_lif(
    x: torch.Tensor,
    v: torch.Tensor,
    beta,
    threshold,
    reset: str,
    surrogate: Surrogate,
    detach_reset: bool,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-step update of ``x [T, ...]`` from ``v [...]``; returns ``(spikes, v_T)``."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    check_reset(reset)
    if backend == "torch":
        return lif_multistep(x, v, beta, threshold, reset, surrogate, detach_reset)
    device = x.device if isinstance(x, torch.Tensor) else torch.device("cpu")
    if backend == "auto":
        chosen = available_backends(device)[0]
        flat = flatten_lif(x, v, beta, threshold, surrogate) if chosen != "torch" else None
        if not isinstance(flat, FlatLIF):
            return lif_multistep(x, v, beta, threshold, reset, surrogate, detach_reset)
        return _fused(flat, reset, detach_reset, chosen)
    reason = backend_unavailable_reason(backend, device)
    if reason:
        raise BackendUnavailableError(f"backend {backend!r} is unavailable: {reason}")
    flat = flatten_lif(x, v, beta, threshold, surrogate)
    if not isinstance(flat, FlatLIF):
        raise BackendUnavailableError(f"backend {backend!r} cannot run this call: {flat}")
    return _fused(flat, reset, detach_reset, backend)
