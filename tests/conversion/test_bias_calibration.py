"""Bias calibration of rate SNNs: a hand-computed two-step trace, the gain at small T on digits,
feeders through residual additions, checkpoints, and the CLI."""
import json

import pytest
import torch
from torch import nn

from spikec.checkpoint import ann_checkpoint, load_model, save_checkpoint
from spikec.cli.main import main
from spikec.conversion.bias_calibration import calibrate_bias, neuron_layers
from spikec.conversion.rate import convert_rate, rate_snn_checkpoint, rate_snn_from_checkpoint
from spikec.data import load_dataset
from spikec.data.sample import stratified_tensors
from spikec.errors import SpikecError
from spikec.models import build_model
from spikec.training import evaluate, train


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _identity_net(bias: bool = True) -> nn.Module:
    net = nn.Sequential(nn.Linear(1, 1, bias=bias), nn.ReLU(), nn.Linear(1, 2))
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        if bias:
            net[0].bias.zero_()
    return net.eval()


def test_two_step_trace_by_hand():
    # Threshold = max = 1, v_init = 0.5, T = 2. Input 0.3: v 0.8, 1.1 -> one spike (rate 0.5);
    # input 1.0: two spikes (rate 1.0). SNN mean 0.75, ANN mean 0.65: the bias moves by -0.1.
    # Second sweep: inputs -> 0.2 (v 0.7, 0.9: none) and 0.9 (v 1.4 -> 0.4, 1.3: two), mean 0.5;
    # the error is +0.15 and the bias ends at 0.05.
    ann = _identity_net()
    calib = torch.tensor([[0.3], [1.0]])
    snn = convert_rate(ann, calib, timesteps=2, norm="max")
    report = calibrate_bias(snn, ann, calib, sweeps=2)
    (name, neuron, feeder), = neuron_layers(snn)
    assert float(neuron.threshold) == pytest.approx(1.0)
    assert report.error_before[name] == pytest.approx([0.1, 0.15], abs=1e-6)
    assert float(feeder.bias.detach()) == pytest.approx(0.05, abs=1e-6)
    assert snn.conversion["bias_calibration"] == {"timesteps": 2, "samples": 2, "sweeps": 2}
    assert float(ann[0].bias.detach()) == 0.0  # the ANN is untouched


def test_calibration_recovers_accuracy_at_small_t_on_digits(digits):
    torch.manual_seed(0)
    ann = build_model("vgg", (1, 8, 8), 10, depth=11, width=0.25)
    train(ann, digits[0], epochs=15, lr=3e-3, progress=False, seed=0)
    ann.eval()
    calib, _ = stratified_tensors(digits[0], 512, seed=0)
    snn = convert_rate(ann, calib, timesteps=4)
    before = evaluate(snn, digits[1])
    report = calibrate_bias(snn, ann, calib, sweeps=2)
    after = evaluate(snn, digits[1])
    assert after >= before + 0.05, (before, after)
    first = sum(v[0] for v in report.error_before.values())
    second = sum(v[1] for v in report.error_before.values())
    assert second < first  # the second sweep starts from smaller errors


def test_feeders_through_residual_additions():
    ann = build_model("resnet", (3, 16, 16), 10, depth=8, width=0.25).eval()
    snn = convert_rate(ann, torch.rand(16, 3, 16, 16), timesteps=4)
    layers = neuron_layers(snn)
    assert len(layers) == len(snn.conversion["neuron_layers"])
    assert all(isinstance(f, (nn.Conv2d, nn.Linear)) for _, _, f in layers)
    feeders = [id(f) for _, _, f in layers]
    assert len(set(feeders)) == len(feeders)  # each neuron layer gets its own bias
    calibrate_bias(snn, ann, torch.rand(16, 3, 16, 16))
    assert all(torch.isfinite(f.bias).all() for _, _, f in layers)


def test_a_neuron_fed_by_the_input_is_refused():
    ann = nn.Sequential(nn.ReLU(), nn.Linear(4, 2)).eval()
    snn = convert_rate(ann, torch.rand(8, 4), timesteps=4)
    with pytest.raises(SpikecError, match="not fed by a Conv or Linear"):
        calibrate_bias(snn, ann, torch.rand(8, 4))


def test_checkpoint_keeps_biases_the_calibration_created(tmp_path):
    ann = _identity_net(bias=False)
    calib = torch.tensor([[0.3], [1.0]])
    snn = convert_rate(ann, calib, timesteps=2, norm="max")
    calibrate_bias(snn, ann, calib)
    path = save_checkpoint(tmp_path / "snn.pt", rate_snn_checkpoint(snn, {"arch": "x", "arch_config": {}}))
    ckpt = torch.load(path, weights_only=True)
    # rebuild from this ANN (the checkpoint's arch is not a registered model here)
    from spikec.conversion import rate as rate_mod

    rebuilt = convert_rate(_identity_net(bias=False), calib, timesteps=2, norm="max")
    rate_mod._add_calibrated_biases(rebuilt, ckpt["state_dict"])
    rebuilt.load_state_dict(ckpt["state_dict"])
    x = torch.tensor([[0.2], [0.7], [1.3]])
    assert torch.equal(rebuilt(x), snn(x))


def test_cli_calibrates_and_saves(digits, tmp_path, capsys):
    torch.manual_seed(0)
    ann = build_model("mlp", (1, 8, 8), 10, hidden=(64,))
    train(ann, digits[0], epochs=5, lr=3e-3, progress=False, seed=0)
    ann_path = save_checkpoint(tmp_path / "ann.pt", ann_checkpoint(ann.eval(), dataset=digits[2].to_dict()))
    out = tmp_path / "snn.pt"
    code = main(["convert", str(ann_path), "--timesteps", "2,4", "--calib", "128", "--calibrate-bias", "2",
                 "--out", str(out), "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["bias_calibration"]["timesteps"] == 2 and result["bias_calibration"]["samples"] == 128
    snn, ckpt = load_model(out)
    assert ckpt["conversion"]["bias_calibration"]["timesteps"] == 2
    assert evaluate(snn, digits[1]) == pytest.approx(result["snn_accuracy"]["4"])
    again = rate_snn_from_checkpoint(ckpt)
    x = digits[1].tensors[0][:16]
    assert torch.equal(again(x), snn(x))
    assert main(["convert", str(ann_path), "--calibrate-bias", "0"]) == 2
    assert "--calibrate-bias" in capsys.readouterr().err
