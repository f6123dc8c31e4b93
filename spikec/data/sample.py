"""Seeded, stratified subsets: the one place any stage draws a sample of a dataset.

Image folders and many user files are sorted by class, so "the first N" is one class. Every
subset a tool takes (calibration, ``--samples``, MFTA reads, baselines) comes from here: a seeded
random draw that keeps class proportions (largest-remainder allocation, at least one sample of
every class when ``n`` allows), returned in a shuffled order.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Subset, TensorDataset

__all__ = ["stratified_indices", "stratified_subset", "stratified_tensors"]


def stratified_indices(labels, n: int | None, seed: int = 0) -> torch.Tensor:
    """``n`` indices into ``labels`` drawn without replacement, class proportions kept.

    ``n=None`` or ``n >= len(labels)`` gives every index (still in a seeded shuffled order).
    The same ``(labels, n, seed)`` always gives the same indices.
    """
    y = np.asarray(labels.cpu() if torch.is_tensor(labels) else labels).reshape(-1)
    total = len(y)
    if n is not None and int(n) < 1:
        raise ValueError(f"sample size must be >= 1, got {n}")
    rng = np.random.default_rng(int(seed))
    if n is None or int(n) >= total:
        return torch.as_tensor(rng.permutation(total), dtype=torch.long)
    n = int(n)
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    quota = counts * n / total
    take = np.floor(quota).astype(np.int64)
    if n >= len(classes):  # every class present when the sample is big enough to hold one of each
        take = np.maximum(take, 1)
    take = np.minimum(take, counts)
    while take.sum() > n:  # the minimum of one per class overshot: trim the largest shares
        take[np.argmax(take - quota)] -= 1
    short = n - int(take.sum())
    if short > 0:  # largest remainders first, ties broken by the seeded draw
        remainder = quota - take + rng.random(len(classes)) * 1e-9
        for c in np.argsort(-remainder):
            if short == 0:
                break
            if take[c] < counts[c]:
                take[c] += 1
                short -= 1
    chosen = []
    for c in range(len(classes)):
        members = np.flatnonzero(inverse == c)
        chosen.append(rng.choice(members, size=int(take[c]), replace=False))
    picked = np.concatenate(chosen)
    return torch.as_tensor(rng.permutation(picked), dtype=torch.long)


def _labels_of(data):
    if isinstance(data, TensorDataset):
        return data.tensors[1]
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(torch.is_tensor(t) for t in data):
        return data[1]
    targets = getattr(data, "targets", None)
    if targets is not None:
        return targets
    return [int(data[i][1]) for i in range(len(data))]


def stratified_subset(data, n: int | None, seed: int = 0):
    """A stratified draw of ``n`` samples of ``data`` (a TensorDataset, ``(x, y)`` tensors or a map-style
    dataset of pairs), of the same kind: a TensorDataset, a tensor pair, or a ``Subset``."""
    index = stratified_indices(_labels_of(data), n, seed)
    if isinstance(data, TensorDataset):
        return TensorDataset(*(t[index] for t in data.tensors))
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(torch.is_tensor(t) for t in data):
        return data[0][index], data[1][index]
    return Subset(data, index.tolist())


def stratified_tensors(data, n: int | None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inputs, labels)`` tensors of a stratified draw of ``n`` samples of a TensorDataset or tensor pair."""
    sub = stratified_subset(data, n, seed)
    if isinstance(sub, TensorDataset):
        return sub.tensors[0], sub.tensors[1]
    if isinstance(sub, tuple):
        return sub
    xs, ys = zip(*(sub[i] for i in range(len(sub))))
    return torch.stack([torch.as_tensor(x) for x in xs]), torch.as_tensor(ys).long()
