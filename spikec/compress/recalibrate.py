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
one after another because each correction changes the inputs of the next.
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
    flat = z.detach().double().transpose(0, 1).reshape(z.shape[1], -1)
    return flat.mean(1), flat.std(1, unbiased=False)


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


class Recalibrator:
    """Matches pruned layers of a student to a fixed teacher on fixed calibration inputs ``x``
    (the teacher's statistics are computed once per layer and kept)."""

    def __init__(self, teacher: nn.Module, x: torch.Tensor, seed: int = 0):
        self.teacher, self.x, self.seed = teacher, x, seed
        self._teacher_stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, student: nn.Module, names: list[str]) -> dict[str, float]:
        """Correct each layer in ``names`` in order; returns the mean gain applied per layer."""
        gains = {}
        modules = dict(student.named_modules())
        for name in names:
            if name not in self._teacher_stats:
                self._teacher_stats[name] = _output_stats(self.teacher, name, self.x, self.seed)
            mu_t, sd_t = self._teacher_stats[name]
            mu_s, sd_s = _output_stats(student, name, self.x, self.seed)
            live = sd_s > 1e-12
            a = torch.where(live, (sd_t / sd_s.clamp(min=1e-12)).clamp(1 / _MAX_GAIN, _MAX_GAIN), torch.ones_like(sd_s))
            m = modules[name]
            w, b = latent_weight(m), latent_bias(m)
            with torch.no_grad():
                w.mul_(a.to(w.dtype).view(-1, *([1] * (w.dim() - 1))))
                if b is not None:
                    b.copy_((a * (b.double() - mu_s) + mu_t).to(b.dtype))
            gains[name] = float(a.mean())
        return gains


def recalibrate_(student: nn.Module, teacher: nn.Module, names: list[str], x: torch.Tensor,
                 seed: int = 0) -> dict[str, float]:
    """Match each layer in ``names`` (in order) to the teacher's per-channel statistics on inputs
    ``x``; returns the mean gain applied per layer."""
    return Recalibrator(teacher, x, seed)(student, names)
