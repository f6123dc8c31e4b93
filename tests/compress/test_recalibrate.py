"""Re-normalising pruned layers in one forward pass gives what one pass per layer gives."""
import copy

import torch
from torch import nn

from spikec.compress.recalibrate import Recalibrator, _channel_stats


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(6 * 6 * 6, 5))


def _pruned(teacher, seed=1, keep=0.3):
    student = copy.deepcopy(teacher)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in student.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_((torch.rand(m.weight.shape, generator=g) < keep).float())
    return student


NAMES = ["0", "2", "5"]


def test_one_pass_equals_one_pass_per_layer():
    teacher = _net()
    x = torch.rand(16, 1, 6, 6)
    a, b = _pruned(teacher), _pruned(teacher)
    gains_one = Recalibrator(teacher, x)(a, NAMES)
    rc = Recalibrator(teacher, x)
    rc._cache_teacher(NAMES)
    gains_ref = rc._per_layer(b, NAMES)
    assert gains_one.keys() == gains_ref.keys()
    for n in NAMES:
        assert abs(gains_one[n] - gains_ref[n]) < 1e-6
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6)


def test_every_corrected_layer_has_the_teachers_channel_statistics():
    teacher = _net(3)
    x = torch.rand(32, 1, 6, 6)
    student = _pruned(teacher, 4, keep=0.6)  # gains stay inside the clamp
    Recalibrator(teacher, x)(student, NAMES)
    for name in NAMES:
        outs = {}
        for tag, model in (("t", teacher), ("s", student)):
            h = dict(model.named_modules())[name].register_forward_hook(lambda m, i, o, tag=tag: outs.__setitem__(tag, o))
            with torch.no_grad():
                model(x)
            h.remove()
        mu_t, sd_t = _channel_stats(outs["t"])
        mu_s, sd_s = _channel_stats(outs["s"])
        assert torch.allclose(mu_s, mu_t, atol=1e-5)
        assert torch.allclose(sd_s, sd_t, rtol=1e-4, atol=1e-6)


class _Twice(nn.Module):
    """The same layer applied twice in one forward pass."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.out = nn.Linear(4, 3)

    def forward(self, x):
        return self.out(torch.relu(self.lin(torch.relu(self.lin(x)))))


def test_a_layer_called_twice_falls_back_to_one_pass_per_layer():
    torch.manual_seed(5)
    teacher = _Twice()
    x = torch.rand(20, 4)
    a, b = _pruned(teacher, 6), _pruned(teacher, 6)
    Recalibrator(teacher, x)(a, ["lin", "out"])
    rc = Recalibrator(teacher, x)
    rc._cache_teacher(["lin", "out"])
    rc._per_layer(b, ["lin", "out"])
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6)
