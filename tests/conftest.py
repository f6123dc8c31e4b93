"""Suite-wide test settings.

One intra-op thread: the models in the tests are small, and on a machine shared with other jobs
torch's thread pool spins against them (a 1 s training run took 49 s with 2 threads under load),
so one thread is both faster and steadier. Results do not depend on it.
"""
import torch

torch.set_num_threads(1)
