"""Re-normalising pruned layers: per output channel, restore the teacher's pre-activation statistics.

Pruning 90% of a layer's weights shrinks the spread of its output and moves its mean, while the
bias (in a converted SNN, the folded batch-norm shift) stays tuned for the dense layer: the
neurons then follow their biases, not their inputs, and fine-tuning can start from a network
that answers the same for every input. A network with batch norm re-estimates its statistics;
a folded one cannot, so this does it explicitly (the same idea as re-estimating batch-norm
statistics after pruning). For each pruned layer in order, on a calibration batch, with
``z`` its output (per time step for an SNN; for a TTFS synapse, the charge it delivers)::

    a = std_teacher(z) / std_student(z)             per output channel (clamped to [1/8, 8])
    W <- a W ;  b <- a (b - mean_student(z)) + mean_teacher(z)

so the student's pre-activations get the teacher's per-channel mean and spread. Layers are done
one after another because each correction changes the inputs of the next. Since the corrected
layer's output is exactly ``a (z - mean_student(z)) + mean_teacher(z)``, one forward pass does
them all: a hook corrects each layer as its output appears and hands the corrected output on
(the same result as one pass per layer, at the cost of one; a layer called more than once per
pass, and TTFS synapses, fall back to one pass per layer).
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from spikec.compress.layers import is_owned_synapse, owner_name
from spikec.compress.masks import latent_bias, latent_weight

_MAX_GAIN = 8.0


def _channel_stats(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std per channel (dim 1) of ``z [N, C, ...]``."""
    dims = [d for d in range(z.dim()) if d != 1]
    var, mean = torch.var_mean(z.detach(), dim=dims, unbiased=False)
    return mean.double(), var.double().sqrt()


@contextlib.contextmanager
def _capture(model: nn.Module, name: str):
    """The output of layer ``name`` (for a TTFS synapse, the charge it delivers) during the block."""
    modules = dict(model.named_modules())
    m = modules[name]
    box: dict[str, torch.Tensor] = {}
    if is_owned_synapse(m):
        from spikec.conversion.ttfs_synapse import synapse_charge

        owner = modules[owner_name(name)]
        index = int(name.rsplit(".", 1)[1])

        def pre(mod, inputs):
            s = mod.synapses[index]
            box["z"] = synapse_charge(inputs[0][index], s.weight, s.bias, s.spec)

        handle = owner.register_forward_pre_hook(pre)
    else:
        handle = m.register_forward_hook(lambda mod, i, o: box.__setitem__("z", o))
    try:
        yield box
    finally:
        handle.remove()


def _output_stats(model: nn.Module, name: str, x: torch.Tensor, seed: int):
    was = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]), _capture(model, name) as box:
            torch.manual_seed(seed)
            model(x)
    finally:
        model.train(was)
    return _channel_stats(box["z"])


class _CalledTwice(Exception):
    """A layer ran more than once in one forward pass: its statistics need a pass of their own."""


def _gain(sd_t: torch.Tensor, sd_s: torch.Tensor) -> torch.Tensor:
    live = sd_s > 1e-12
    return torch.where(live, (sd_t / sd_s.clamp(min=1e-12)).clamp(1 / _MAX_GAIN, _MAX_GAIN), torch.ones_like(sd_s))


def _correct_(m: nn.Module, a: torch.Tensor, mu_s: torch.Tensor, mu_t: torch.Tensor) -> None:
    """``W <- a W``, ``b <- a (b - mu_s) + mu_t`` per output channel."""
    w, b = latent_weight(m), latent_bias(m)
    with torch.no_grad():
        w.mul_(a.to(w.dtype).view(-1, *([1] * (w.dim() - 1))))
        if b is not None:
            b.copy_((a * (b.double() - mu_s) + mu_t).to(b.dtype))


class Recalibrator:
    """Matches pruned layers of a student to a fixed teacher on fixed calibration inputs ``x``
    (the teacher's statistics are computed once, in one pass, and kept)."""

    def __init__(self, teacher: nn.Module, x: torch.Tensor, seed: int = 0):
        self.teacher, self.x, self.seed = teacher, x, seed
        self._teacher_stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, student: nn.Module, names: list[str]) -> dict[str, float]:
        """Correct each layer in ``names`` in order; returns the mean gain applied per layer."""
        modules = dict(student.named_modules())
        self._cache_teacher(names)
        if not any(is_owned_synapse(modules[n]) for n in names):
            saved = {n: (latent_weight(modules[n]).detach().clone(),
                         None if latent_bias(modules[n]) is None else latent_bias(modules[n]).detach().clone())
                     for n in names}
            try:
                return self._one_pass(student, names)
            except _CalledTwice:
                with torch.no_grad():
                    for n, (w, b) in saved.items():
                        latent_weight(modules[n]).copy_(w)
                        if b is not None:
                            latent_bias(modules[n]).copy_(b)
        return self._per_layer(student, names)

    def _cache_teacher(self, names: list[str]) -> None:
        missing = [n for n in names if n not in self._teacher_stats]
        if not missing:
            return
        modules = dict(self.teacher.named_modules())
        if any(is_owned_synapse(modules[n]) for n in missing):
            for n in missing:
                self._teacher_stats[n] = _output_stats(self.teacher, n, self.x, self.seed)
            return
        stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

        def hook(mod, inputs, output, name):
            if name in stats:
                raise _CalledTwice(name)
            stats[name] = _channel_stats(output)

        try:
            self._run(self.teacher, {n: modules[n] for n in missing}, hook)
        except _CalledTwice:
            for n in missing:
                self._teacher_stats[n] = _output_stats(self.teacher, n, self.x, self.seed)
            return
        self._teacher_stats.update(stats)

    def _run(self, model: nn.Module, layers: dict[str, nn.Module], hook) -> None:
        was = model.training
        model.eval()
        handles = [m.register_forward_hook(lambda mod, i, o, name=name: hook(mod, i, o, name))
                   for name, m in layers.items()]
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                model(self.x)
        finally:
            for h in handles:
                h.remove()
            model.train(was)

    def _one_pass(self, student: nn.Module, names: list[str]) -> dict[str, float]:
        modules = dict(student.named_modules())
        gains: dict[str, float] = {}

        def hook(mod, inputs, output, name):
            if name in gains:
                raise _CalledTwice(name)
            mu_t, sd_t = self._teacher_stats[name]
            mu_s, sd_s = _channel_stats(output)
            a = _gain(sd_t, sd_s)
            _correct_(mod, a, mu_s, mu_t)
            gains[name] = float(a.mean())
            shape = (1, -1) + (1,) * (output.dim() - 2)
            a_, mu_s_, mu_t_ = (v.to(output.dtype).view(shape) for v in (a, mu_s, mu_t))
            return a_ * (output - mu_s_) + mu_t_

        self._run(student, {n: modules[n] for n in names}, hook)
        return {n: gains.get(n, 1.0) for n in names}

    def _per_layer(self, student: nn.Module, names: list[str]) -> dict[str, float]:
        gains = {}
        modules = dict(student.named_modules())
        for name in names:
            mu_t, sd_t = self._teacher_stats[name]
            mu_s, sd_s = _output_stats(student, name, self.x, self.seed)
            a = _gain(sd_t, sd_s)
            _correct_(modules[name], a, mu_s, mu_t)
            gains[name] = float(a.mean())
        return gains


def recalibrate_(student: nn.Module, teacher: nn.Module, names: list[str], x: torch.Tensor,
                 seed: int = 0) -> dict[str, float]:
    """Match each layer in ``names`` (in order) to the teacher's per-channel statistics on inputs
    ``x``; returns the mean gain applied per layer."""
    return Recalibrator(teacher, x, seed)(student, names)
