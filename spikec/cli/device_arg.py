"""The ``--device`` flag shared by the subcommands that run a network: checked once, with one line naming it."""
from __future__ import annotations

import torch

from spikec.errors import UsageError


def add_argument(parser) -> None:
    parser.add_argument("--device", default="cpu", help="torch device: cpu (default), cuda or cuda:N")


def resolve(text: str) -> torch.device:
    """``text`` as a ``torch.device``; a UsageError naming ``--device`` when it is malformed or absent here."""
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {text!r}: expected cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {text}: no CUDA device is available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"--device {text}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu":
        raise UsageError(f"--device {text!r}: expected cpu, cuda or cuda:N")
    return device
