"""One wall-clock budget for the whole suite: parts that would start too late are skipped with a reason.

GPU time comes in minutes, so the suite must end on time and say what it left out rather than be
killed half-way with nothing written.
"""
from __future__ import annotations

import time
import traceback
from typing import Callable


class Budget:
    """Seconds left of ``total`` since construction."""

    def __init__(self, total: float):
        self.total = float(total)
        self.start = time.perf_counter()

    def used(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.total - self.used()


def run_part(name: str, fn: Callable[[], dict], budget: Budget, min_seconds: float) -> dict:
    """Run one part; returns its result with ``status`` ("ok", "failed", "error" or "skipped") and ``seconds``.

    A part returns a dict; it may set ``status`` to "failed" (its checks found a mismatch) or
    "skipped" with a ``reason``. An exception becomes status "error" with a one-line message and
    the traceback's last lines, so one broken part does not lose the others' results.
    """
    if budget.left() < min_seconds:
        return {"status": "skipped", "reason": f"time budget: {budget.left():.0f} s left of {budget.total:.0f} s, "
                                               f"the part needs at least {min_seconds:.0f} s", "seconds": 0.0}
    start = time.perf_counter()
    try:
        result = dict(fn())
        result.setdefault("status", "ok")
    except Exception as err:  # noqa: BLE001  (any failure of one part is recorded, the suite goes on)
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        result = {"status": "error", "reason": f"{type(err).__name__}: {first}",
                  "traceback": traceback.format_exc().splitlines()[-12:]}
    result["seconds"] = round(time.perf_counter() - start, 2)
    if result["status"] == "skipped" and not result.get("reason"):
        result["reason"] = "(no reason given)"
    return result
