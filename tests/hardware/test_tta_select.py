"""The TTA fraction chosen on calibration data: the smallest that keeps accuracy within the tolerance."""
import pytest
import torch

from spikec.hardware.timing import RunOptions
from spikec.hardware.tta_select import select_tta_fraction


class _FakeModel:
    """Predicts correctly for the first ``correct[f]`` samples at TTA fraction f (all without TTA)."""

    def __init__(self, correct: dict, n: int):
        self.correct, self.n, self.calls = correct, n, []

    def nominal(self):
        return ["chip"]

    def predict(self, chips, x, options, thresholds=None):
        self.calls.append(options.tta_fraction if options.tta else None)
        k = self.n if not options.tta else self.correct[options.tta_fraction]
        pred = torch.full((self.n,), -1)
        pred[:k] = 0
        return pred.view(1, -1)


def test_smallest_fraction_within_tolerance_and_scan_stops():
    n = 200
    x, y = torch.zeros(n, 1), torch.zeros(n, dtype=torch.long)
    # accuracy 1.0 without TTA; 0.9 -> 1.0, 0.8 -> 0.995 (within 0.5 points), 0.7 -> 0.98 (not), 0.6 never asked
    model = _FakeModel({1.0: 200, 0.9: 200, 0.8: 199, 0.7: 196, 0.6: 200}, n)
    sel = select_tta_fraction(model, x, y, RunOptions(), candidates=(0.6, 0.7, 0.8, 0.9, 1.0), tolerance=0.005)
    assert sel["fraction"] == 0.8
    assert sel["accuracy_without_tta"] == 1.0
    assert [r["fraction"] for r in sel["curve"]] == [1.0, 0.9, 0.8, 0.7]
    assert sel["curve"][-1]["accuracy"] == pytest.approx(0.98)
    assert model.calls == [None, 1.0, 0.9, 0.8, 0.7]  # 0.6 is not simulated: the scan stopped at 0.7


def test_no_fraction_passes_gives_one_and_bad_arguments_raise():
    n = 10
    x, y = torch.zeros(n, 1), torch.zeros(n, dtype=torch.long)
    model = _FakeModel({1.0: 5, 0.9: 10}, n)
    sel = select_tta_fraction(model, x, y, RunOptions(), candidates=(0.9, 1.0), tolerance=0.0)
    assert sel["fraction"] == 1.0 and len(sel["curve"]) == 1
    with pytest.raises(ValueError, match="candidates"):
        select_tta_fraction(model, x, y, RunOptions(), candidates=(0.0, 1.0))
    with pytest.raises(ValueError, match="tolerance"):
        select_tta_fraction(model, x, y, RunOptions(), tolerance=-1)


def test_real_chip_curve_matches_evaluate(block_model):
    model, x, y = block_model
    sel = select_tta_fraction(model, x, y, RunOptions(), candidates=(0.3, 0.6, 1.0), tolerance=1.0)
    assert sel["fraction"] == 0.3  # a tolerance of 100 points accepts every fraction
    for row in sel["curve"]:
        r = model.evaluate(model.nominal(), x, y, RunOptions(tta=True, tta_fraction=row["fraction"]))
        assert row["accuracy"] == pytest.approx(r.accuracy)


@pytest.fixture(scope="module")
def block_model():
    from spikec.conversion.ttfs import convert_ttfs
    from spikec.hardware.config import HardwareConfig
    from spikec.hardware.evaluate import PEModel

    torch.manual_seed(0)
    ann = torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.ReLU(), torch.nn.Linear(12, 12), torch.nn.ReLU(),
                              torch.nn.Linear(12, 3)).double()
    x = torch.rand(40, 6, dtype=torch.float64)
    snn = convert_ttfs(ann, x, time_bits=4)
    y = ann(x).argmax(1)
    return PEModel.from_snn(snn, HardwareConfig(window_bits=4, tile_rows=128, tile_cols=128)), x, y
