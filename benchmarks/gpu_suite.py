"""Validate and benchmark every CUDA path of spikec in one short run, whenever a GPU is lent.

Parts, in order, under one time budget (a part that would start too late is skipped with the reason):
(1) every kernel backend against the torch reference (both resets, fp32/fp16/bf16, odd N, T up to 64,
spikes exactly, gradients within dtype tolerance); (2) the multi-step LIF benchmark at T=32,
N = 2^19..2^22 against snntorch, norse and spikingjelly 2.0 (Triton and torch) with bandwidth against a
same-size copy; (3) one SNN training step of VGG-11 and ResNet-20 at T=4, batch 128, bf16 autocast,
against spikingjelly; (4) if time remains, CIFAR-10 ANN training with the data on the GPU and rate
conversion at T=1..64. Writes ``results.json`` and ``results.md`` under ``--out``.

    python benchmarks/gpu_suite.py                      # on a GPU machine (see benchmarks/gpu_setup.sh)
    python benchmarks/gpu_suite.py --smoke --out /tmp/s # the same code on CPU at toy sizes (CI)

Exit status: 0 when every part passed or was skipped with a reason, 1 when a check failed or a
part raised, 2 for a usage error (e.g. no CUDA device without --smoke).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

PARTS = ("correctness", "kernels", "train_step", "cifar")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true",
                        help="run every part on CPU at toy sizes (Triton under TRITON_INTERPRET=1)")
    parser.add_argument("--out", default="gpu_results", help="folder for results.json and results.md")
    parser.add_argument("--budget-s", type=float, default=420.0, help="wall-clock budget of the whole suite")
    parser.add_argument("--cifar", default="../shared/data/cifar10",
                        help="CIFAR-10 image folder (train/<class>/*.jpg, test/<class>/*.jpg) for part 4")
    parser.add_argument("--cifar-epochs", type=int, default=None, help="ANN training epochs of part 4")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="run only these parts")
    parser.add_argument("--kernel-dtypes", nargs="+", choices=["float32", "float16", "bfloat16"], default=None,
                        help="dtypes of the kernel benchmark (default float32 float16)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of usage errors")
    args = parser.parse_args(argv)
    if args.budget_s <= 0:
        parser.error(f"--budget-s must be positive, got {args.budget_s}")
    return args


def build_config(args):
    from gpu.config import full_config, smoke_config

    overrides = {"cifar": args.cifar}
    if args.cifar_epochs is not None:
        if args.cifar_epochs < 1:
            raise ValueError(f"--cifar-epochs must be >= 1, got {args.cifar_epochs}")
        overrides["cifar_epochs"] = args.cifar_epochs
    if args.kernel_dtypes:
        overrides["kernel_dtypes"] = tuple(args.kernel_dtypes)
    return smoke_config(**overrides) if args.smoke else full_config("cuda", **overrides)


def run_suite(args, command: str) -> tuple[dict, int]:
    """Every part under one budget; returns ``(results, exit status)``."""
    import torch

    from gpu import budget as budget_mod, cifar, correctness, env, kernels, report, train_step

    budget = budget_mod.Budget(args.budget_s)
    config = build_config(args)
    device = torch.device(config.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest convolutions
    else:
        torch.set_num_threads(min(torch.get_num_threads(), 2))
    runners = {"correctness": correctness.run, "kernels": kernels.run, "train_step": train_step.run, "cifar": cifar.run}
    results = {"command": command, "smoke": config.smoke, "budget_s": budget.total,
               "environment": env.environment(device), "parts": {}}
    for name in PARTS:
        if name not in args.parts:
            results["parts"][name] = {"status": "skipped", "reason": "not asked for (--parts)", "seconds": 0.0}
            continue
        print(f"[{budget.used():6.1f} s] {name} ...", file=sys.stderr, flush=True)
        part = budget_mod.run_part(name, lambda fn=runners[name]: fn(config, budget), budget,
                                   config.min_seconds_for(name))
        results["parts"][name] = part
        print(f"[{budget.used():6.1f} s] {name}: {part['status']}"
              + (f" ({part['reason']})" if part.get("reason") else ""), file=sys.stderr, flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    results["used_s"] = round(budget.used(), 1)
    json_path, md_path = report.write(results, args.out)
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)
    bad = [n for n, p in results["parts"].items() if p["status"] in ("failed", "error")]
    return results, 1 if bad else 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.smoke:  # before anything imports triton: its kernels then run on CPU tensors
        os.environ.setdefault("TRITON_INTERPRET", "1")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the gpu/ package beside this file
    import torch

    from spikec.errors import UsageError

    try:
        if not args.smoke and not torch.cuda.is_available():
            raise UsageError("no CUDA device here: the GPU suite needs one (run with --smoke for the CPU check)")
        command = "python benchmarks/gpu_suite.py " + " ".join(argv if argv is not None else sys.argv[1:])
        _, status = run_suite(args, command.strip())
    except (UsageError, ValueError) as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    return status


if __name__ == "__main__":
    start = time.perf_counter()
    code = main()
    print(f"gpu_suite: {time.perf_counter() - start:.1f} s, exit {code}", file=sys.stderr)
    sys.exit(code)
