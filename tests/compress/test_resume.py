"""An interrupted compression resumed from its state file ends exactly where an uninterrupted one does."""
import copy

import pytest
import torch
from torch import nn

from spikec.compress import AttentionConfig, CompressConfig, FinetuneConfig, PruneConfig, QuantConfig, compress_
from spikec.errors import UsageError


class _Stop(Exception):
    pass


def _data(n=96, features=12, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=g)
    y = (x[:, :classes].argmax(1)).long()
    return x, y


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 24), nn.ReLU(), nn.Linear(24, 16), nn.ReLU(), nn.Linear(16, 3))


def _config(granularity="weight", bits=4, attention=False):
    return CompressConfig(prune=PruneConfig(density=0.4, granularity=granularity, interval=2),
                          quant=QuantConfig(bits=bits, auto_samples=32),
                          attention=AttentionConfig() if attention else None,
                          finetune=FinetuneConfig(epochs=3, quant_epochs=2, batch_size=16, lr=1e-2, seed=3))


def _stop_after(phase, epoch):
    def progress(p, r):
        if (p, r.epoch) == (phase, epoch):
            raise _Stop
    return progress


def _tensors(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("stop", [("prune", 1), ("prune", 3), ("quant", 1)])
@pytest.mark.parametrize("kind", ["weight", "channel-auto-attention"])
def test_resumed_compression_equals_an_uninterrupted_run(tmp_path, stop, kind):
    granularity = "channel" if kind.startswith("channel") else "weight"
    config = _config(granularity, "auto" if "auto" in kind else 4, "attention" in kind)
    data = _data()
    start = _model()

    whole = copy.deepcopy(start)
    report = compress_(whole, config, data, state_file=str(tmp_path / "whole.state"))

    path = str(tmp_path / "cut.state")
    with pytest.raises(_Stop):
        compress_(copy.deepcopy(start), config, data, progress=_stop_after(*stop), state_file=path)
    seen = []
    resumed = copy.deepcopy(start)
    again = compress_(resumed, config, data, progress=lambda p, r: seen.append((p, r.epoch)), state_file=path,
                      resume=True)

    # only the epochs after the interruption ran again
    everything = [("prune", e) for e in (1, 2, 3)] + [("quant", e) for e in (1, 2)]
    assert seen == everything[everything.index(stop) + 1:]
    want, got = _tensors(whole), _tensors(resumed)
    assert want.keys() == got.keys()
    for k in want:
        assert torch.equal(want[k], got[k]), k
    assert [(h.epoch, h.loss) for h in again.history] == [(h.epoch, h.loss) for h in report.history]
    assert again.mask_density == report.mask_density
    assert again.layer_mask_density == report.layer_mask_density
    assert again.bits == report.bits
    assert len(again.rewiring) == len(report.rewiring) > 0
    assert again.size.compressed_bits == report.size.compressed_bits


def test_resume_refuses_a_state_of_another_run(tmp_path):
    data = _data()
    path = str(tmp_path / "run.state")
    with pytest.raises(_Stop):
        compress_(_model(), _config(), data, progress=_stop_after("prune", 1), state_file=path)
    other = _config()
    other = CompressConfig(prune=PruneConfig(density=0.2, interval=2), quant=other.quant, attention=None,
                           finetune=other.finetune)
    with pytest.raises(UsageError, match="different run.*config"):
        compress_(_model(), other, data, state_file=path, resume=True)
    with pytest.raises(UsageError, match="different run.*model"):
        compress_(_model(seed=1), _config(), data, state_file=path, resume=True)
    with open(path, "wb") as f:
        f.write(b"not a state")
    with pytest.raises(UsageError, match="run.state: not a readable spikec compression state"):
        compress_(_model(), _config(), data, state_file=path, resume=True)


def test_without_resume_the_state_is_started_again(tmp_path):
    data = _data()
    path = str(tmp_path / "run.state")
    with pytest.raises(_Stop):
        compress_(_model(), _config(), data, progress=_stop_after("prune", 2), state_file=path)
    seen = []
    compress_(_model(), _config(), data, progress=lambda p, r: seen.append((p, r.epoch)), state_file=path)
    assert seen[0] == ("prune", 1) and len(seen) == 5
    state = torch.load(path, weights_only=True)
    assert (state["phase"], state["epoch"]) == ("quant", 2)
