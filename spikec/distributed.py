"""Data-parallel training under ``torchrun``: process group from the environment, batch sharding.

Every rank walks the same seeded sequence of *global* batches and takes a contiguous slice of
each; its mean loss is rescaled by ``local_size * world / global_size`` so that the gradients
DistributedDataParallel averages equal the single-process gradient of the global batch. With the
same seed and global batch size, N processes therefore reach the weights one process reaches,
up to float summation order (for deterministic models: no batch norm statistics over the local
batch, no random input spikes).
"""
from __future__ import annotations

import gc
import os

import torch
import torch.distributed as dist


def init_from_env(device: str | torch.device = "cpu") -> bool:
    """Join the process group ``torchrun`` describes (gloo on CPU, nccl on CUDA); False when not launched so."""
    if dist.is_available() and dist.is_initialized():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    return True


def shutdown(wait_for_peers: bool = True) -> None:
    """Leave the process group together: a barrier, then ``destroy_process_group`` (no-op outside one).

    A DistributedDataParallel wrapper sits in reference cycles, so it outlives the training loop
    until the garbage collector runs; if that is at interpreter teardown, after the group is gone,
    the process aborts ("terminate called without an active exception", about one run in ten
    here). So: collect first, then leave. Every rank should call this before it exits.
    ``wait_for_peers=False`` skips the barrier (after an error, when a peer may never reach it).
    """
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        if wait_for_peers:
            dist.barrier()
        dist.destroy_process_group()


def rank_and_size() -> tuple[int, int]:
    """This process's rank and the world size (0, 1 outside a process group)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """Only rank 0 prints and writes files."""
    return rank_and_size()[0] == 0


def shard(n: int, rank: int, size: int) -> slice:
    """The contiguous part of a global batch of ``n`` samples that ``rank`` of ``size`` trains on."""
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


def all_sum(*values: float) -> list[float]:
    """Sum numbers over all ranks (identity outside a process group)."""
    if rank_and_size()[1] == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()
