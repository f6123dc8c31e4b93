"""Per-channel input normalisation: an exact op in the ANN, folded exactly into the first layer."""
import pytest
import torch

from spikec.conversion.fold import fold_batchnorm
from spikec.conversion.rate import convert_rate
from spikec.conversion.ttfs import convert_ttfs
from spikec.errors import SpikecError
from spikec.models import build_model
from spikec.models.common import InputNormalization

NORM = [[0.49, 0.48, 0.45], [0.25, 0.24, 0.26]]


def test_input_normalization_is_the_affine_map_in_train_and_eval_mode():
    m = InputNormalization(*NORM)
    x = torch.rand(4, 3, 5, 5)
    want = (x - torch.tensor(NORM[0]).view(1, 3, 1, 1)) / torch.tensor(NORM[1]).view(1, 3, 1, 1)
    m.train()
    assert not m.training and torch.allclose(m(x), want, atol=1e-6)
    assert torch.equal(m.running_mean, torch.tensor(NORM[0]))  # a training step does not move the statistics
    assert not any(p.requires_grad for p in m.parameters())
    with pytest.raises(ValueError, match="std must be > 0"):
        InputNormalization([0.5], [0.0])


@pytest.mark.parametrize("name,cfg", [("vgg", dict(depth=11, width=0.125)), ("resnet", dict(depth=8, width=0.5)),
                                      ("lenet", {})])
def test_folding_is_exact_with_zero_padding(name, cfg):
    torch.manual_seed(0)
    model = build_model(name, (3, 16, 16), 10, input_norm=NORM, **cfg).double()
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(16, 3, 16, 16, dtype=torch.float64))  # batch-norm statistics that are not trivial
    model.eval()
    x = torch.rand(32, 3, 16, 16, dtype=torch.float64)
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, InputNormalization) for m in folded.modules())
    assert torch.allclose(folded(x), model(x), rtol=1e-10, atol=1e-12)
    # without the border term (the padding sees raw zeros) the fold would be wrong at the image edge
    shifts = [m for m in folded.modules() if type(m).__name__ == "InputShiftCurrent"]
    assert shifts, "the zero-padded first conv needs a shift current"


def test_rate_conversion_of_a_normalised_network_matches_the_ann():
    torch.manual_seed(1)
    model = build_model("vgg", (3, 16, 16), 10, depth=11, width=0.125, input_norm=NORM).eval()
    x = torch.rand(64, 3, 16, 16)
    snn = convert_rate(model, x, timesteps=128, norm="max")
    with torch.no_grad():
        agree = float((snn(x).argmax(1) == model(x).argmax(1)).float().mean())
    assert agree >= 0.9


def test_ttfs_conversion_of_a_normalised_network_is_a_one_line_error():
    model = build_model("vgg", (3, 16, 16), 10, depth=11, width=0.125, input_norm=NORM).eval()
    with pytest.raises(SpikecError, match="input normalisation") as err:
        convert_ttfs(model, torch.rand(8, 3, 16, 16))
    assert "\n" not in str(err.value)
