"""Suite-wide test settings.

One intra-op thread: the models in the tests are small, and on a machine shared with other jobs
torch's thread pool spins against them (a 1 s training run took 49 s with 2 threads under load),
so one thread is both faster and steadier. Results do not depend on it.
"""
import torch

torch.set_num_threads(1)


import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _private_data_cache(tmp_path_factory):
    """Decoded-image caches of the tests go to a temporary folder, never the user's ~/.cache."""
    import os

    previous = os.environ.get("SPIKEC_DATA_CACHE")
    os.environ["SPIKEC_DATA_CACHE"] = str(tmp_path_factory.mktemp("data-cache"))
    yield
    if previous is None:
        os.environ.pop("SPIKEC_DATA_CACHE", None)
    else:
        os.environ["SPIKEC_DATA_CACHE"] = previous
