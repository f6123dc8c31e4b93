"""MNIST and Fashion-MNIST in their original IDX files (plain or ``.gz``).

An IDX file is: two zero bytes, a type byte (0x08 = uint8), the number of dimensions, one
big-endian uint32 per dimension, then the data (LeCun et al., "THE MNIST DATABASE" page). A
directory must hold ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (each optionally ``.gz``, ``-`` or
``.`` before ``idx``), as both datasets ship them.
"""
from __future__ import annotations

import gzip
import os
import struct

import numpy as np

from spikec.data.info import DatasetInfo, as_dataset, scale_pixels
from spikec.errors import SpikecError

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
PARTS = {
    "train_images": ("train", "images", 3),
    "train_labels": ("train", "labels", 1),
    "test_images": ("t10k", "images", 3),
    "test_labels": ("t10k", "labels", 1),
}


def read_idx(path: str) -> np.ndarray:
    """The array stored in one IDX file."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise SpikecError(f"cannot read IDX file {path}: {exc}") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise SpikecError(f"{path} is not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise SpikecError(f"{path}: IDX header is truncated")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_DTYPES[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise SpikecError(f"{path}: IDX data has {len(raw) - header} bytes, header says {expected}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def find_parts(directory: str) -> dict[str, str] | None:
    """Paths of the four IDX files in ``directory``, or ``None`` if any is missing."""
    names = os.listdir(directory)
    found = {}
    for part, (prefix, kind, ndim) in PARTS.items():
        stems = [f"{prefix}-{kind}{sep}idx{ndim}-ubyte" for sep in ("-", ".")]
        match = [n for n in names for s in stems if n in (s, s + ".gz")]
        if not match:
            return None
        found[part] = os.path.join(directory, sorted(match)[0])
    return found


def looks_like(directory: str) -> bool:
    return os.path.isdir(directory) and find_parts(directory) is not None


def load(directory: str):
    parts = find_parts(directory)
    if parts is None:
        raise SpikecError(
            f"{directory} does not hold the four MNIST IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
            f"t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, optionally .gz)"
        )
    arrays = {part: read_idx(path) for part, path in parts.items()}
    splits = []
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1:
            raise SpikecError(f"{parts[split + '_images']}: expected images [N, H, W] and labels [N], "
                              f"got {images.shape} and {labels.shape}")
        splits.append(as_dataset(scale_pixels(images.copy()).unsqueeze(1), labels.astype(np.int64),
                                 parts[f"{split}_labels"]))
    train, test = splits
    num_classes = int(max(arrays["train_labels"].max(initial=0), arrays["test_labels"].max(initial=0))) + 1
    info = DatasetInfo(
        name=os.path.basename(os.path.normpath(directory)), input_shape=tuple(train.tensors[0].shape[1:]),
        num_classes=num_classes, classes=tuple(str(i) for i in range(num_classes)), source=directory, format="idx",
    )
    return train, test, info
