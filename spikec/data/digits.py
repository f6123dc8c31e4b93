"""scikit-learn's 8x8 handwritten digits: the embedded default dataset (no download).

1797 images, 10 classes, pixel values 0..16 scaled to ``[0, 1]``, shaped ``[N, 1, 8, 8]``. The
split is stratified with a fixed seed, so ``test_fraction=0.2`` gives 1437 train / 360 test
samples on every machine.
"""
from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits

from spikec.data.info import DatasetInfo, as_dataset
from spikec.data.split import stratified_split


def load(test_fraction: float = 0.2, seed: int = 0):
    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[:, None, :, :]
    x_tr, x_te, y_tr, y_te = stratified_split(x, digits.target, test_fraction, seed)
    info = DatasetInfo(
        name="digits", input_shape=(1, 8, 8), num_classes=10, classes=tuple(str(i) for i in range(10)),
        source="sklearn.datasets.load_digits", format="digits",
    )
    return as_dataset(x_tr, y_tr, "digits"), as_dataset(x_te, y_te, "digits"), info
