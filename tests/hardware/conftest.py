"""Small TTFS networks on the digits data, shared by the hardware tests (trained once per session)."""
import pytest
import torch

from spikec.conversion.ttfs import convert_ttfs
from spikec.data import load_dataset
from spikec.models import build_model
from spikec.training import train


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The machine is shared: one intra-op thread avoids oversubscription."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits")


def _ttfs(name, digits, epochs, **cfg):
    torch.manual_seed(0)
    ann = build_model(name, (1, 8, 8), 10, **cfg)
    train(ann, digits[0], epochs=epochs, lr=3e-3, progress=False, seed=0)
    ann = ann.double().eval()
    return convert_ttfs(ann, digits[0].tensors[0][:256].double(), time_bits=6)


@pytest.fixture(scope="session")
def lenet_snn(digits):
    """A small LeNet (pooling folded into the next layers' kernels on the crossbar), float64."""
    return _ttfs("lenet", digits, 6, channels=(4, 8), hidden=(32,))


@pytest.fixture(scope="session")
def mlp_snn(digits):
    return _ttfs("mlp", digits, 8, hidden=(48,))


@pytest.fixture(scope="session")
def small_resnet():
    """Residual (replayed copy rows), strided and padded convolutions, a bias on every layer."""
    torch.manual_seed(0)
    ann = build_model("resnet", (3, 8, 8), 10, depth=20, width=0.25).double().eval()
    return convert_ttfs(ann, torch.rand(32, 3, 8, 8, dtype=torch.float64), time_bits=4)
