"""Median times of callables run in turns: CUDA events on a GPU, the wall clock on CPU.

Methods are run one after another in every round (not all reps of one, then the next), so a
clock or load change hits all of them alike; a warm-up round runs first (compilation, caches).
"""
from __future__ import annotations

import statistics
import time

import torch


def time_in_turns(fns: dict, reps: int, warmup: int, device: torch.device) -> dict[str, float]:
    """Median milliseconds of each callable in ``fns`` over ``reps`` rounds after ``warmup`` rounds."""
    device = torch.device(device)
    for _ in range(max(warmup, 0)):
        for fn in fns.values():
            fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    samples = {name: [] for name in fns}
    for _ in range(reps):
        if device.type == "cuda":
            events = {}
            for name, fn in fns.items():
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                events[name] = (start, end)
            torch.cuda.synchronize(device)
            for name, (start, end) in events.items():
                samples[name].append(start.elapsed_time(end))
        else:
            for name, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                samples[name].append(1e3 * (time.perf_counter() - t0))
    return {name: statistics.median(ts) for name, ts in samples.items()}
