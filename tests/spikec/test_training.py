"""Training: accuracy targets on digits, determinism, evaluate, and the rate/TTFS losses."""
import math
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import spikec
from spikec.data import load_dataset
from spikec.errors import SpikecError
from spikec.losses import count_cross_entropy, membrane_cross_entropy, ttfs_cross_entropy
from spikec.models import build_model
from spikec.surrogate import ArcTan
from spikec.training import batches, evaluate, train

# "within a minute" is the target on an idle 2-core machine; the limit leaves room for a shared one.
TIME_LIMIT_S = 90


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_ann_lenet_reaches_97_percent_on_digits(digits):
    train_data, test_data, info = digits
    torch.manual_seed(0)
    model = build_model("lenet", info.input_shape, info.num_classes)
    start = time.perf_counter()
    history = train(model, train_data, epochs=20, lr=3e-3, batch_size=32, test_data=test_data, progress=False)
    elapsed = time.perf_counter() - start
    assert history[-1].test_accuracy >= 0.97, history[-1]
    assert history[-1].test_accuracy == evaluate(model, test_data)
    assert elapsed < TIME_LIMIT_S
    assert [h.epoch for h in history] == list(range(1, 21))
    assert history[-1].loss < history[0].loss


def test_rate_snn_trained_directly_reaches_95_percent_with_8_steps(digits):
    train_data, test_data, info = digits
    torch.manual_seed(0)
    net = build_model("lenet", info.input_shape, info.num_classes, act=lambda: spikec.LIF(beta=0.9))
    snn = spikec.SpikingClassifier(net, timesteps=8, encoding="rate", readout="membrane")
    start = time.perf_counter()
    history = train(snn, train_data, epochs=10, lr=3e-3, batch_size=32, test_data=test_data, progress=False)
    elapsed = time.perf_counter() - start
    assert history[-1].test_accuracy >= 0.95, history[-1]
    assert elapsed < TIME_LIMIT_S
    with spikec.record(snn) as rec:
        snn(test_data.tensors[0][:16])
    assert rec.total_spikes > 0  # the hidden layers really spike


def _tiny(seed):
    torch.manual_seed(seed)
    return build_model("mlp", (1, 8, 8), 10, hidden=[16])


def test_training_is_seeded_and_deterministic(digits):
    train_data, test_data, _ = digits
    subset = TensorDataset(*(t[:300] for t in train_data.tensors))
    runs = []
    for _ in range(2):
        model = _tiny(0)
        history = train(model, subset, epochs=2, batch_size=32, seed=5, test_data=test_data, progress=False)
        runs.append((history, model.state_dict()))
    assert [(h.loss, h.train_accuracy, h.test_accuracy) for h in runs[0][0]] == \
           [(h.loss, h.train_accuracy, h.test_accuracy) for h in runs[1][0]]
    for k in runs[0][1]:
        assert torch.equal(runs[0][1][k], runs[1][1][k])
    other = _tiny(0)
    train(other, subset, epochs=2, batch_size=32, seed=6, progress=False)
    assert not torch.equal(other[1].weight, runs[0][1]["1.weight"])  # the seed sets the batch order


def test_training_leaves_the_global_random_state_alone(digits):
    model = _tiny(0)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train(model, TensorDataset(*(t[:64] for t in digits[0].tensors)), epochs=1, progress=False)
    assert torch.equal(torch.rand(3), expected)


def test_snn_rate_input_spikes_are_seeded(digits):
    subset = TensorDataset(*(t[:64] for t in digits[0].tensors))
    weights = []
    for _ in range(2):
        torch.manual_seed(0)
        snn = spikec.SpikingClassifier(build_model("mlp", (1, 8, 8), 10, act=spikec.LIF, hidden=[16]), 4, "rate")
        train(snn, subset, epochs=1, batch_size=16, seed=3, progress=False)
        weights.append(snn.state_dict())
    for k in weights[0]:
        assert torch.equal(weights[0][k], weights[1][k])


class _Fixed(nn.Module):
    """Predicts class ``x[:, 0]`` exactly: logits are a one-hot of the first feature."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return F.one_hot(x[:, 0].long(), 3).float() + self.dummy


def test_evaluate_counts_correct_predictions_and_restores_mode():
    x = torch.tensor([[0.0], [1.0], [2.0], [1.0]])
    y = torch.tensor([0, 1, 0, 1])
    model = _Fixed().train()
    for data in (TensorDataset(x, y), (x, y), DataLoader(TensorDataset(x, y), batch_size=3)):
        assert evaluate(model, data, batch_size=3) == 0.75
    assert model.training
    with pytest.raises(SpikecError, match="empty"):
        evaluate(model, (x[:0], y[:0]))


def test_batches_cover_every_sample_once_in_seeded_order():
    x = torch.arange(10.0).unsqueeze(1)
    y = torch.arange(10)
    first = [b[1].tolist() for b in batches((x, y), 4, shuffle=True, generator=torch.Generator().manual_seed(0))]
    again = [b[1].tolist() for b in batches((x, y), 4, shuffle=True, generator=torch.Generator().manual_seed(0))]
    assert first == again and [len(b) for b in first] == [4, 4, 2]
    assert sorted(sum(first, [])) == list(range(10)) and sum(first, []) != list(range(10))
    assert [b[1].tolist() for b in batches(TensorDataset(x, y), 6)] == [list(range(6)), list(range(6, 10))]


def test_divergence_is_reported_not_hidden(digits):
    model = _tiny(0)
    with pytest.raises(SpikecError, match="training diverged: loss is nan in epoch 1"):
        train(model, (digits[0].tensors[0][:32], digits[0].tensors[1][:32]), epochs=1, progress=False,
              loss=lambda scores, y: scores.sum() * float("nan"))


def test_bad_training_arguments():
    model = _tiny(0)
    data = (torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="optimizer must be one of"):
        train(model, data, epochs=1, optimizer="lbfgs", progress=False)
    with pytest.raises(ValueError, match="lr must be positive"):
        train(model, data, epochs=1, lr=0, progress=False)


# ---------------------------------------------------------------- losses over [T, B, C]


def _spikes():
    # T=4, B=2, C=3. Sample 0: class 0 fires at steps 1 and 2, class 1 at step 3, class 2 never.
    s = torch.zeros(4, 2, 3)
    s[1, 0, 0] = s[2, 0, 0] = s[3, 0, 1] = 1
    # Sample 1: class 2 fires at step 0, class 1 at steps 0, 2, 3, class 0 never.
    s[0, 1, 2] = s[0, 1, 1] = s[2, 1, 1] = s[3, 1, 1] = 1
    return s


def _ce(logits, target):
    return -(logits[target] - math.log(sum(math.exp(v) for v in logits)))


def test_count_loss_is_cross_entropy_on_spike_counts():
    y = torch.tensor([0, 2])
    expected = (_ce([2, 1, 0], 0) + _ce([0, 3, 1], 2)) / 2
    assert count_cross_entropy(_spikes(), y).item() == pytest.approx(expected, rel=1e-6)


def test_membrane_loss_is_cross_entropy_on_the_time_average():
    out = torch.tensor([[[1.0, 0.0]], [[3.0, 4.0]]])  # T=2, B=1, C=2 -> mean [2, 2]
    assert membrane_cross_entropy(out, torch.tensor([1])).item() == pytest.approx(math.log(2), rel=1e-6)


def test_ttfs_loss_is_cross_entropy_on_negative_first_spike_times():
    y = torch.tensor([0, 2])
    # first spikes: sample 0 -> (1, 3, never=T=4); sample 1 -> (never=4, 0, 0)
    expected = (_ce([-1, -3, -4], 0) + _ce([-4, 0, 0], 2)) / 2
    assert ttfs_cross_entropy(_spikes(), y).item() == pytest.approx(expected, rel=1e-6)
    scaled = (_ce([-0.5, -1.5, -2], 0) + _ce([-2, 0, 0], 2)) / 2
    assert ttfs_cross_entropy(_spikes(), y, scale=0.5).item() == pytest.approx(scaled, rel=1e-6)


def test_ttfs_loss_pushes_the_target_to_fire_earlier():
    torch.manual_seed(0)
    current = torch.full((6, 1, 2), 0.3, requires_grad=True)  # both outputs fire at step 3 (v = 1.2 >= 1)
    spikes, _ = spikec.functional.lif_multistep(current, torch.zeros(1, 2), 1.0, 1.0, "subtract", ArcTan(), False)
    loss = ttfs_cross_entropy(spikes, torch.tensor([0]))
    loss.backward()
    # more input to the target (class 0) lowers the loss, more to the rival raises it
    assert current.grad[:, 0, 0].sum() < 0 < current.grad[:, 0, 1].sum()
