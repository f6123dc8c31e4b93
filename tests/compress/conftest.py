import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Small tensors on a shared machine: one thread is faster and deterministic."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
