"""Part 2: multi-step LIF forward and forward+backward at T=32, N = 2^19..2^22, every method in one process.

Each method's achieved bandwidth is the least traffic the update needs over its time: a forward
reads ``x`` and writes the spikes (one copy's worth of bytes), a fused forward+backward also
writes and reads back the charge and reads the spike gradient and writes ``dx`` (three copies'
worth). Peers are credited with the same minimal traffic, so the fraction of a same-size GPU copy
compares work done per second. The copy is the faster of a clone and a copy into an existing tensor.
"""
from __future__ import annotations

import torch

from gpu.budget import Budget
from gpu.config import SuiteConfig
from gpu.peers import lif_methods
from gpu.timing import time_in_turns

MODES = {"forward": 1, "forward+backward": 3}  # copies' worth of bytes each mode moves at least
REFERENCE = "spikec[torch]"
FASTEST = {"cuda": "spikec[triton]", "cpu": "spikec[cpu]"}  # the method the time ratios are taken against


def _sig(value: float) -> float:
    return float(f"{value:.4g}")


def _forward(method, x):
    def run():
        with torch.no_grad():
            return method(x)

    return run


def _forward_backward(method, x, grad):
    def run():
        xg = x.detach().requires_grad_()
        torch.autograd.backward([method(xg)], [grad])
        return xg.grad

    return run


def _usable(methods: dict, x: torch.Tensor, grad: torch.Tensor, skipped: dict) -> dict:
    """The methods that run on ``x`` (forward and backward once), with their spike agreement with the reference."""
    ok, agreement = {}, {}
    want = methods[REFERENCE](x) if REFERENCE in methods else None
    for name, method in methods.items():
        try:
            with torch.no_grad():
                spikes = method(x)
            _forward_backward(method, x, grad)()
        except Exception as err:  # noqa: BLE001  (a peer that breaks on this device/dtype is reported, not fatal)
            first = str(err).splitlines()[0][:200] if str(err) else ""
            skipped[name] = f"failed at N={x.shape[1]}, {x.dtype}: {type(err).__name__}: {first}"
            continue
        ok[name] = method
        if want is not None:
            agreement[name] = round(float((spikes.float() == want.float()).float().mean()), 5)
    return ok, agreement


def run(config: SuiteConfig, budget: Budget) -> dict:
    device = torch.device(config.device)
    methods, skipped = lif_methods(device)
    rows, copies, truncated = [], [], None
    for dtype_name in config.kernel_dtypes:
        dtype = getattr(torch, dtype_name)
        for e in config.kernel_exponents:
            if budget.left() < 20 and not config.smoke:
                truncated = f"time budget: stopped before {dtype_name} N=2^{e}"
                break
            N, T = 2**e, config.kernel_T
            gen = torch.Generator(device=device).manual_seed(e)
            x = (torch.randn(T, N, generator=gen, device=device) * 0.6 + 0.3).to(dtype)
            grad = torch.randn(T, N, generator=gen, device=device).to(dtype)
            usable, agreement = _usable(methods, x, grad, skipped)
            into = torch.empty_like(x)
            copy_ms = time_in_turns({"clone": x.clone, "copy_into": lambda into=into, x=x: into.copy_(x)},
                                    config.kernel_reps, config.kernel_warmup, device)
            copy_best = min(copy_ms.values())
            bytes_one_copy = 2 * x.numel() * x.element_size()  # read + write
            copies.append({"dtype": dtype_name, "N": N, "T": T, "clone_ms": round(copy_ms["clone"], 4),
                           "copy_into_ms": round(copy_ms["copy_into"], 4),
                           "copy_GBps": _sig(bytes_one_copy / copy_best / 1e6)})
            for mode, copies_worth in MODES.items():
                if mode == "forward":
                    fns = {name: _forward(m, x) for name, m in usable.items()}
                else:
                    fns = {name: _forward_backward(m, x, grad) for name, m in usable.items()}
                ms = time_in_turns(fns, config.kernel_reps, config.kernel_warmup, device)
                best = ms.get(FASTEST[device.type]) or ms.get(REFERENCE)
                for name, t in ms.items():
                    rows.append({
                        "dtype": dtype_name, "N": N, "T": T, "mode": mode, "method": name, "ms": round(t, 4),
                        "GBps": _sig(copies_worth * bytes_one_copy / t / 1e6),
                        "copy_fraction": _sig(copies_worth * copy_best / t),
                        "time_over_spikec": round(t / best, 2) if best else None,
                        "spike_agreement": agreement.get(name),
                    })
            del x, grad, into
            if device.type == "cuda":
                torch.cuda.empty_cache()
        if truncated:
            break
    out = {"rows": rows, "copies": copies, "skipped_methods": skipped, "targets": targets(rows, config)}
    if truncated:
        out["truncated"] = truncated
    return out


def targets(rows: list[dict], config: SuiteConfig) -> dict:
    """The issue's targets, judged on the largest N measured for each dtype (None where a side is missing)."""
    out = {}
    for dtype_name in config.kernel_dtypes:
        mine = [r for r in rows if r["dtype"] == dtype_name]
        if not mine:
            continue
        n = max(r["N"] for r in mine)
        at = {(r["mode"], r["method"]): r for r in mine if r["N"] == n}
        fwd = at.get(("forward", "spikec[triton]"))
        fb, sj = at.get(("forward+backward", "spikec[triton]")), at.get(("forward+backward", "spikingjelly[triton]"))
        out[dtype_name] = {
            "N": n,
            "forward >= 70% of copy bandwidth": None if fwd is None else fwd["copy_fraction"] >= 0.70,
            "forward copy fraction": None if fwd is None else fwd["copy_fraction"],
            "forward+backward faster than spikingjelly[triton]": None if fb is None or sj is None
            else fb["ms"] < sj["ms"],
            "forward+backward spikingjelly[triton] / spikec[triton]": None if fb is None or sj is None
            else round(sj["ms"] / fb["ms"], 2),
        }
    return out
