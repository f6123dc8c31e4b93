"""Datasets as ``(train, test, info)``: the embedded digits, or a user's own files.

``load_dataset("digits")`` needs nothing on disk. ``load_dataset(path)`` reads MNIST /
Fashion-MNIST IDX files, CIFAR-10 python batches, an image folder or an HDF5 file, detecting
the format from what it finds (or pass ``format=``). Inputs come back as float32
``[N, C, H, W]`` (or ``[N, F]``) tensors scaled to ``[0, 1]``, labels as int64 class indices.
"""
from __future__ import annotations

import os

from torch.utils.data import TensorDataset

from spikec.data import cifar, digits, folder, hdf5, idx
from spikec.data.info import DatasetInfo
from spikec.errors import SpikecError, UsageError

DATASETS = ("digits",)
FORMATS = ("idx", "cifar10", "folder", "hdf5")

__all__ = ["DATASETS", "FORMATS", "DatasetInfo", "detect_format", "load_dataset"]


def detect_format(path: str) -> str:
    """The format of the data at ``path`` (one of :data:`FORMATS`)."""
    if os.path.isfile(path):
        if hdf5.looks_like(path):
            return "hdf5"
        raise SpikecError(f"{path}: unknown data file format (expected HDF5 .h5, or a directory of IDX, CIFAR-10 "
                          f"batches or class folders)")
    if idx.looks_like(path):
        return "idx"
    if cifar.looks_like(path):
        return "cifar10"
    if folder.looks_like(path):
        return "folder"
    raise SpikecError(f"{path}: no dataset found (expected MNIST IDX files, CIFAR-10 python batches, "
                      f"class subfolders of images, or an HDF5 file)")


def load_dataset(
    name_or_path: str,
    format: str | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    image_size: tuple[int, int] | None = None,
) -> tuple[TensorDataset, TensorDataset, DatasetInfo]:
    """Load a named dataset (:data:`DATASETS`) or the data at a path.

    ``test_fraction`` and ``seed`` set the stratified split of sources that come unsplit
    (digits, an image folder, HDF5 without ``x_test``); ``image_size`` ``(H, W)`` resizes folder images.
    Raises :class:`UsageError` for an unknown name or format and :class:`SpikecError` naming the
    file for a missing or unreadable one.
    """
    name = str(name_or_path)
    if format is not None and format not in FORMATS:
        raise UsageError(f"unknown data format {format!r}; choose from {', '.join(FORMATS)}")
    if name in DATASETS and format is None and not os.path.exists(name):
        return digits.load(test_fraction, seed)
    if not os.path.exists(name):
        if _looks_like_path(name):
            raise SpikecError(f"dataset not found: {name}")
        raise UsageError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)} or give a path to "
                         f"MNIST IDX files, CIFAR-10 batches, an image folder or an HDF5 file")
    fmt = format or detect_format(name)
    if fmt in ("idx", "cifar10", "folder") and not os.path.isdir(name):
        raise SpikecError(f"{name}: the {fmt} format is a directory, this is a file")
    if fmt == "hdf5" and not os.path.isfile(name):
        raise SpikecError(f"{name}: the hdf5 format is a file, this is a directory")
    if fmt == "idx":
        return idx.load(name)
    if fmt == "cifar10":
        return cifar.load(name)
    if fmt == "folder":
        return folder.load(name, test_fraction, seed, image_size)
    return hdf5.load(name, test_fraction, seed)


def _looks_like_path(name: str) -> bool:
    return os.sep in name or (os.altsep is not None and os.altsep in name) or bool(os.path.splitext(name)[1])
