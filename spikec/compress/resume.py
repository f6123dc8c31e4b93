"""Resumable compression: the whole fine-tuning state is written after every epoch.

A CIFAR ResNet-20 compresses at 4-6 minutes an epoch on two cores, so a 30-epoch schedule outlives
many sessions and shells. :class:`CompressState` keeps, after each epoch of each phase (``prune``,
then ``quant``; or ``robust`` alone), every parameter and buffer of the model (masks included), the
optimizer and schedule, the random states, the sparse-training momenta and history, the
quantizers' search flags and the bit widths ``bits="auto"`` chose. A run given the same model,
config and data then continues from the last complete epoch and ends with the same weights as an
uninterrupted run (bitwise on CPU). The file is loaded with ``weights_only=True``: it never
unpickles code.
"""
from __future__ import annotations

import hashlib
import os

import torch
from torch import nn

from spikec.compress.masks import QUANTIZER
from spikec.errors import SpikecError, UsageError
from spikec.io.run_state import load_run_state, save_run_state, schedule_state

FORMAT = "spikec-compress-state"
VERSION = 1
PHASES = ("prune", "quant", "robust")


def model_digest(model: nn.Module) -> str:
    """A digest of every parameter and buffer: the run resumes only on the model it started from."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


class CompressState:
    """The state file of one :func:`~spikec.compress.compress_` run.

    ``signature`` (config, data size, the starting model's digest) must match the file's for
    ``resume=True`` to continue from it; without ``resume`` an existing file is overwritten by the
    first epoch.
    """

    def __init__(self, path: str | os.PathLike, signature: dict, resume: bool = False):
        self.path = str(path)
        self.signature = signature
        self.saved = load_run_state(self.path, FORMAT, signature, "compression") if resume and os.path.exists(self.path) else None
        self.history: list[dict] = list(self.saved["history"]) if self.saved else []
        self.extra: dict = dict(self.saved.get("extra", {})) if self.saved else {}

    # -- where the saved run stands -------------------------------------------------------------
    def _saved_phase(self) -> int:
        return PHASES.index(self.saved["phase"]) if self.saved else -1

    def finished(self, phase: str) -> bool:
        """Whether the saved run is already past ``phase`` (its training is skipped)."""
        return self._saved_phase() > PHASES.index(phase)

    def phase_history(self, phase: str) -> list[dict]:
        return [{k: v for k, v in h.items() if k != "phase"} for h in self.history if h["phase"] == phase]

    # -- restoring and saving within a phase ----------------------------------------------------
    def restore(self, phase: str, model: nn.Module, opt, sched, generators: dict, sparsity=None) -> int:
        """Load the saved epoch into the objects of ``phase`` if the saved run stopped in it; returns
        the epochs of ``phase`` already done (0 otherwise)."""
        if not self.saved or self.saved["phase"] != phase:
            return 0
        s = self.saved
        load_tensors_(model, s["tensors"])
        modules = dict(model.named_modules())
        for name, flags in s["quantizers"].items():
            q = modules[name].__dict__.get(QUANTIZER)
            if q is None:
                raise UsageError(f"cannot resume from {self.path}: layer {name!r} is not being quantized")
            q.load_state(flags)
        opt.load_state_dict(s["optimizer"])
        state = sched.state_dict()
        state.update(s["schedule"])
        sched.load_state_dict(state)
        torch.set_rng_state(s["rng"]["torch"])
        for key, g in generators.items():
            g.set_state(s["rng"][key])
        if sparsity is not None:
            sparsity.load_state(s["sparsity"])
        return int(s["epoch"])

    def save(self, phase: str, epoch: int, result: dict, model: nn.Module, opt, sched, generators: dict,
             sparsity=None) -> None:
        """Write the state after ``epoch`` of ``phase`` (atomically: the file is whole or the old one)."""
        self.history = [h for h in self.history if not (h["phase"] == phase and h["epoch"] >= epoch)]
        self.history.append({"phase": phase, **result})
        quantizers = {}
        for name, m in model.named_modules():
            q = m.__dict__.get(QUANTIZER)
            if q is not None:
                quantizers[name] = q.state()
        state = {
            "format": FORMAT, "version": VERSION, "signature": self.signature, "phase": phase, "epoch": int(epoch),
            "history": self.history, "extra": self.extra, "tensors": model_tensors(model),
            "quantizers": quantizers, "optimizer": opt.state_dict(), "schedule": schedule_state(sched),
            "rng": {"torch": torch.get_rng_state(), **{k: g.get_state() for k, g in generators.items()}},
            "sparsity": sparsity.state() if sparsity is not None else None,
        }
        save_run_state(self.path, state)


def model_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer by name, non-persistent ones (masks) included."""
    out = {n: p.detach().clone() for n, p in model.named_parameters()}
    out.update({f"buffer:{n}": b.detach().clone() for n, b in model.named_buffers()})
    return out


def load_tensors_(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Copy :func:`model_tensors` back into a model of the same structure."""
    mine = model_tensors(model)
    if set(mine) != set(tensors):
        missing = sorted(set(mine) ^ set(tensors))
        raise SpikecError(f"the saved compression state does not fit this model (differs in {missing[0]!r})")
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    with torch.no_grad():
        for name, t in tensors.items():
            target = buffers[name[len("buffer:"):]] if name.startswith("buffer:") else params[name]
            if target.shape != t.shape:
                raise SpikecError(f"the saved compression state does not fit this model ({name}: "
                                  f"{tuple(t.shape)} against {tuple(target.shape)})")
            target.copy_(t)


def signature(model: nn.Module, config, samples: int) -> dict:
    """What a resumed run must share with the one that wrote the state."""
    from spikec.compress.config import to_dict

    return {"config": to_dict(config), "samples": int(samples), "model": model_digest(model)}
