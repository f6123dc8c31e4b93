"""An HDF5 file with datasets ``x`` (inputs, first axis = samples) and ``y`` (integer labels).

If the file also has ``x_test`` and ``y_test`` those are the test set; otherwise ``x``/``y`` are
split with a seeded stratified split. uint8 inputs are scaled to ``[0, 1]``; float inputs are used
as stored. Inputs ``[N, H, W]`` get a channel axis; ``[N, C, H, W]`` and ``[N, F]`` are kept.
"""
from __future__ import annotations

import os

import numpy as np

from spikec.data.info import DatasetInfo, as_dataset, scale_pixels
from spikec.data.split import stratified_split
from spikec.errors import SpikecError

EXTENSIONS = (".h5", ".hdf5", ".hdf")


def looks_like(path: str) -> bool:
    if not os.path.isfile(path):
        return False
    if path.lower().endswith(EXTENSIONS):
        return True
    import h5py

    return h5py.is_hdf5(path)


def _read(f, key: str, path: str) -> np.ndarray:
    if key not in f:
        raise SpikecError(f"{path}: no dataset {key!r} (found: {', '.join(sorted(f.keys())) or 'nothing'})")
    return np.asarray(f[key][()])


def _inputs(x: np.ndarray, path: str) -> np.ndarray:
    if x.ndim == 3:
        return x[:, None]
    if x.ndim in (2, 4):
        return x
    raise SpikecError(f"{path}: 'x' must be [N, F], [N, H, W] or [N, C, H, W], got shape {x.shape}")


def load(path: str, test_fraction: float = 0.2, seed: int = 0):
    import h5py

    try:
        with h5py.File(path, "r") as f:
            x, y = _read(f, "x", path), _read(f, "y", path)
            test = (_read(f, "x_test", path), _read(f, "y_test", path)) if "x_test" in f else None
    except OSError as exc:
        raise SpikecError(f"cannot read HDF5 file {path}: {str(exc).splitlines()[0]}") from exc
    x = _inputs(x, path)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or len(y) != len(x):
        raise SpikecError(f"{path}: 'y' must hold one integer label per sample of 'x', got shape {y.shape} "
                          f"dtype {y.dtype} for {len(x)} samples")
    if test is not None:
        x_tr, y_tr = x, y
        x_te, y_te = _inputs(test[0], path), test[1]
        if x_te.shape[1:] != x_tr.shape[1:]:
            raise SpikecError(f"{path}: 'x_test' samples have shape {x_te.shape[1:]}, 'x' samples {x_tr.shape[1:]}")
    else:
        x_tr, x_te, y_tr, y_te = stratified_split(x, y, test_fraction, seed)
    num_classes = int(max(np.max(y_tr, initial=0), np.max(y_te, initial=0))) + 1
    info = DatasetInfo(
        name=os.path.splitext(os.path.basename(path))[0], input_shape=tuple(x_tr.shape[1:]), num_classes=num_classes,
        classes=tuple(str(i) for i in range(num_classes)), source=path, format="hdf5",
    )
    return as_dataset(scale_pixels(x_tr), y_tr, path), as_dataset(scale_pixels(x_te), np.asarray(y_te), path), info
