import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Small tensors on a shared machine: one thread is faster and deterministic."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def ttfs_net():
    """``ttfs_net(seed) -> (snn, x)``: a small VGG (1x8x8 inputs, 3 classes) converted to TTFS at
    3 time bits on the 32 random inputs ``x`` it was calibrated on (the same network for a seed)."""
    ttfs = pytest.importorskip("spikec.conversion.ttfs")
    from spikec.models import build_model

    def build(seed=0):
        torch.manual_seed(seed)
        ann = build_model("vgg", (1, 8, 8), 3, layers=[4, "M", 6, "M"], hidden=(), batch_norm=False)
        x = torch.rand(32, 1, 8, 8)
        return ttfs.convert_ttfs(ann, x, time_bits=3), x

    return build
