"""Multi-step LIF forward and forward+backward: spikec backends against snntorch, norse, spikingjelly.

Everything runs in one process and the methods are timed in turns (one run of each, repeated), so
load from other processes hits all of them alike; the table reports medians and ratios.

"copy fraction" is the bandwidth a method achieves, as a fraction of a same-size tensor copy
(``x.clone()``, allocation included as for every method): the forward moves as many bytes as a
copy (read x, write spikes), a fused forward+backward three copies' worth (forward: read x, write
spikes and the charge; backward: read the charge and the spike gradient, write dx). Peers are
credited with the same minimal traffic, so the column compares work done per second.

    python benchmarks/neuron_kernels.py                        # T=32, N = 2^19 .. 2^22, then the check
    python benchmarks/neuron_kernels.py --sizes 19 20 --reps 5 --json
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time
import warnings

import torch

import spikec
from spikec.kernels.dispatch import available_backends

warnings.filterwarnings("ignore", category=FutureWarning)  # peers' deprecated torch.jit use


# ---- timing ---------------------------------------------------------------------------------------

def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_in_turns(fns: dict, reps: int, device) -> dict:
    """Median milliseconds of each callable, run one after another ``reps`` times after a warm-up."""
    for fn in fns.values():
        fn()
    _sync(device)
    samples = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            samples[name].append(1e3 * (time.perf_counter() - start))
    return {name: statistics.median(ts) for name, ts in samples.items()}


# ---- the methods: each maps x [T, N] to spikes [T, N] from a fresh state ----------------------------

BETA, THRESHOLD = 0.9, 1.0


def spikec_method(backend):
    def run(x):
        neuron = spikec.LIF(beta=BETA, threshold=THRESHOLD, backend=backend).to(x.device)
        return neuron(x)

    return run


def snntorch_method():
    import snntorch

    def run(x):
        leaky = snntorch.Leaky(beta=BETA, threshold=THRESHOLD, reset_mechanism="subtract").to(x.device)
        mem = leaky.init_leaky()
        spikes = []
        for t in range(x.shape[0]):
            spk, mem = leaky(x[t], mem)
            spikes.append(spk)
        return torch.stack(spikes)

    return run


def norse_method():
    import norse.torch as norse

    def run(x):  # norse's multi-step LIF (current-based synapse): its closest module to ours
        return norse.LIF(norse.LIFParameters(v_th=torch.tensor(THRESHOLD))).to(x.device)(x)[0]

    return run


def spikingjelly_method():
    from spikingjelly.activation_based import neuron

    def run(x):  # decay_input=False, v_reset=None: v <- (1 - 1/tau) v + x, subtract reset, as ours
        node = neuron.LIFNode(tau=1 / (1 - BETA), decay_input=False, v_threshold=THRESHOLD, v_reset=None,
                              step_mode="m")  # 2.x picks its own kernel (Triton on CUDA)
        return node.to(x.device)(x)

    return run


def methods_for(device, wanted=None) -> dict:
    """spikec's available backends (auto's choice first), then each peer that imports; ``wanted``
    keeps the methods whose name contains one of its words."""
    found = {f"spikec[{b}]": spikec_method(b) for b in available_backends(device)}
    peers = {"snntorch Leaky loop": snntorch_method, "norse LIF": norse_method,
             "spikingjelly LIFNode": spikingjelly_method}
    for name, make in peers.items():
        try:
            found[name] = make()
        except ImportError:
            pass
    if wanted:
        found = {name: m for name, m in found.items() if any(w in name for w in wanted)}
    return found


# ---- the sweep ----------------------------------------------------------------------------------

def forward_fn(method, x):
    def run():
        with torch.no_grad():
            return method(x)

    return run


def forward_backward_fn(method, x, grad):
    def run():
        xg = x.detach().requires_grad_()
        spikes = method(xg)
        torch.autograd.backward([spikes], [grad])
        return xg.grad

    return run


def sweep(device, T, exponents, reps, dtype, wanted=None, on_rows=lambda rows: None) -> list[dict]:
    methods = methods_for(device, wanted)
    best = next(name for name in methods if name.startswith("spikec"))  # auto's choice
    rows = []
    for e in exponents:
        N = 2**e
        gen = torch.Generator(device=device).manual_seed(e)
        x = (torch.randn(T, N, generator=gen, device=device) * 0.6 + 0.3).to(dtype)
        grad = torch.randn(T, N, generator=gen, device=device).to(dtype)
        into = torch.empty_like(x)
        for mode, streams in (("forward", 2), ("forward+backward", 6)):
            fns = {"copy": x.clone, "copy_into": lambda: into.copy_(x)}
            for name, method in methods.items():
                fns[name] = forward_fn(method, x) if mode == "forward" else forward_backward_fn(method, x, grad)
            ms = time_in_turns(fns, reps, device)
            new = []
            for name in methods:
                new.append({
                    "N": N, "T": T, "mode": mode, "method": name, "ms": round(ms[name], 3),
                    "ratio_to_spikec": round(ms[name] / ms[best], 2),
                    "copy_ms": round(ms["copy"], 3),
                    "copy_into_existing_ms": round(ms["copy_into"], 3),
                    "copy_fraction": round(streams / 2 * ms["copy"] / ms[name], 3),
                })
            on_rows(new)
            rows.extend(new)
        del x, grad, into
    return rows


# ---- the check: spikec.LIF on [32, 32, 64, 16, 16] against snntorch ------------------------

def check_case(device, reps, dtype) -> dict:
    import snntorch

    shape = (32, 32, 64, 16, 16)
    gen = torch.Generator(device=device).manual_seed(0)
    x = (torch.randn(shape, generator=gen, device=device) * 0.6 + 0.3).to(dtype)
    grad = torch.randn(shape, generator=gen, device=device).to(dtype)
    fast = spikec.LIF(beta=BETA, threshold=THRESHOLD).to(device)
    reference = spikec.LIF(beta=BETA, threshold=THRESHOLD, backend="torch").to(device)
    leaky = snntorch.Leaky(beta=BETA, threshold=THRESHOLD, reset_mechanism="subtract").to(device)

    def run_spikec(inp):
        spikec.reset(fast)
        return fast(inp)

    def run_snntorch(inp):
        mem = leaky.init_leaky()
        out = []
        for t in range(inp.shape[0]):
            spk, mem = leaky(inp[t], mem)
            out.append(spk)
        return torch.stack(out)

    into = torch.empty_like(x)
    fwd = time_in_turns({"copy": x.clone, "copy_into": lambda: into.copy_(x), "spikec": forward_fn(run_spikec, x),
                         "snntorch": forward_fn(run_snntorch, x)}, reps, device)
    fwd_bwd = time_in_turns({"spikec": forward_backward_fn(run_spikec, x, grad),
                             "snntorch": forward_backward_fn(run_snntorch, x, grad)}, reps, device)
    with torch.no_grad():
        spikec.reset(fast)
        got = fast(x)
        want = reference(x)
        snn_spikes = run_snntorch(x)
    return {
        "shape": list(shape),
        "backend": available_backends(device)[0],
        "forward_ms": {k: round(v, 3) for k, v in fwd.items()},
        "forward_backward_ms": {k: round(v, 3) for k, v in fwd_bwd.items()},
        "forward_speedup_vs_snntorch": round(fwd["snntorch"] / fwd["spikec"], 2),
        "forward_backward_speedup_vs_snntorch": round(fwd_bwd["snntorch"] / fwd_bwd["spikec"], 2),
        "forward_over_copy": round(fwd["spikec"] / fwd["copy"], 2),
        "forward_over_copy_into_existing": round(fwd["spikec"] / fwd["copy_into"], 2),
        "spikes_equal_reference": bool(torch.equal(got, want)),
        "spikes_equal_snntorch": bool(torch.equal(got, snn_spikes)),
        "targets_met": {
            "forward >= 3x snntorch": fwd["snntorch"] / fwd["spikec"] >= 3,
            "forward+backward >= 2x snntorch": fwd_bwd["snntorch"] / fwd_bwd["spikec"] >= 2,
            "forward <= 1.5x copy": fwd["spikec"] / fwd["copy"] <= 1.5,
        },
    }


# ---- report -------------------------------------------------------------------------------------

def machine(device) -> dict:
    info = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "python": platform.python_version(), "torch": torch.__version__, "device": str(device),
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "cpu": next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")),
                    platform.processor()) if os.path.exists("/proc/cpuinfo") else platform.processor(),
    }
    info["env"] = {k: os.environ[k] for k in ("THP_MEM_ALLOC_ENABLE", "OMP_NUM_THREADS") if k in os.environ}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    if hasattr(os, "getloadavg"):
        info["load_average_1min"] = round(os.getloadavg()[0], 2)
    return info


def print_rows(rows, header=False):
    if header:
        print(f"{'N':>9} {'mode':<17} {'method':<22} {'ms':>10} {'x spikec':>9} {'copy frac':>9}")
    if rows:
        print(f"{rows[0]['N']:>9} {rows[0]['mode']:<17} {'(copy: clone)':<22} {rows[0]['copy_ms']:>10.2f}   "
              f"(into an existing tensor: {rows[0]['copy_into_existing_ms']:.2f} ms)")
    for r in rows:
        print(f"{r['N']:>9} {r['mode']:<17} {r['method']:<22} {r['ms']:>10.2f} {r['ratio_to_spikec']:>9.2f} "
              f"{r['copy_fraction']:>9.2f}", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[19, 20, 21, 22], help="log2 of N (neurons)")
    parser.add_argument("--T", type=int, default=32, help="time steps")
    parser.add_argument("--reps", type=int, default=5, help="timed runs per method (median)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda when available)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads before timing")
    parser.add_argument("--methods", nargs="+", default=None,
                        help="only methods whose name contains one of these words (e.g. spikec snntorch)")
    parser.add_argument("--no-sweep", action="store_true", help="only the [32, 32, 64, 16, 16] check")
    parser.add_argument("--no-check", action="store_true", help="only the sweep")
    parser.add_argument("--json", action="store_true", help="print the results as JSON on the last line")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    dtype = getattr(torch, args.dtype)
    results = {"machine": machine(device), "command": "python benchmarks/neuron_kernels.py " + " ".join(
        argv if argv is not None else __import__("sys").argv[1:])}
    if not args.no_sweep:
        print_rows([], header=True)
        results["rows"] = sweep(device, args.T, args.sizes, args.reps, dtype, args.methods, on_rows=print_rows)
    if not args.no_check:
        results["check"] = check_case(device, args.reps, dtype)
        c = results["check"]
        print(f"check {c['shape']} on {c['backend']}: forward {c['forward_ms']['spikec']:.1f} ms "
              f"({c['forward_speedup_vs_snntorch']}x snntorch, {c['forward_over_copy']}x a clone, "
              f"{c['forward_over_copy_into_existing']}x a copy into an existing tensor), "
              f"forward+backward {c['forward_backward_ms']['spikec']:.1f} ms "
              f"({c['forward_backward_speedup_vs_snntorch']}x snntorch), "
              f"spikes equal reference: {c['spikes_equal_reference']}")
    results["machine"]["load_average_1min_end"] = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    if args.json:
        print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
