"""State files of resumable runs (``spikec train``, ``spikec compress``): written whole or not at all,
read without unpickling code, refused when another run wrote them."""
from __future__ import annotations

import torch

from spikec.errors import UsageError


def save_run_state(path: str, state: dict) -> None:
    """``torch.save`` to a temporary name, then rename: the file is the old one or the new one."""
    from spikec.io.atomic import atomic_path

    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def schedule_state(sched) -> dict:
    """A scheduler's state without its ``lr_lambdas`` (closures, rebuilt from the run's settings)."""
    state = sched.state_dict()
    state.pop("lr_lambdas", None)
    return state


def load_run_state(path: str, fmt: str, signature: dict, what: str) -> dict:
    """The state in ``path`` if it is a readable ``fmt`` file written with ``signature``; else a
    one-line :class:`UsageError` naming the file (``what``: "training", "compression"): resuming was
    asked for with a state that cannot continue this run."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unreadable, truncated, or a pickle that needs code
        raise UsageError(f"cannot resume from {path}: not a readable spikec {what} state ({type(exc).__name__})") from exc
    if not isinstance(state, dict) or state.get("format") != fmt:
        raise UsageError(f"cannot resume from {path}: not a spikec {what} state")
    theirs = state.get("signature", {})
    differ = sorted(k for k in set(signature) | set(theirs) if signature.get(k) != theirs.get(k))
    if differ:
        raise UsageError(f"cannot resume from {path}: it was written by a different run (differs in: {', '.join(differ)})")
    return state
