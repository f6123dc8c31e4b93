"""A fixed, seeded, stratified train/test split (scikit-learn's ``train_test_split``)."""
from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split


def stratified_split(x, y, test_fraction: float, seed: int):
    """``(x_train, x_test, y_train, y_test)`` keeping class proportions; falls back to a plain
    seeded split where a class has too few samples to stratify."""
    y = np.asarray(y)
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    counts = np.bincount(y) if y.size else np.array([0])
    stratify = y if counts[counts > 0].min() >= 2 else None
    return train_test_split(x, y, test_size=test_fraction, stratify=stratify, random_state=seed)
