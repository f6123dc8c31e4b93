"""CIFAR-10 "python version" batches: ``data_batch_1`` .. ``data_batch_5``, ``test_batch`` and
``batches.meta`` in one directory (Krizhevsky 2009, the dataset's web page).

The batches are pickles. They are read with :class:`ArrayUnpickler`, which resolves only the
globals needed to rebuild numpy arrays; any other global (the way a malicious pickle runs code)
is refused, so a batch file cannot execute anything.
"""
from __future__ import annotations

import importlib
import os
import pickle

import numpy as np

from spikec.data.info import DatasetInfo, as_dataset, scale_pixels
from spikec.errors import SpikecError

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"


def _reconstruct():
    try:
        return importlib.import_module("numpy._core.multiarray")._reconstruct
    except ImportError:  # numpy < 2
        return importlib.import_module("numpy.core.multiarray")._reconstruct


def _allowed_globals() -> dict[tuple[str, str], object]:
    import codecs

    rebuild = _reconstruct()
    return {
        ("numpy.core.multiarray", "_reconstruct"): rebuild,  # pickles written by numpy 1.x (the CIFAR files)
        ("numpy._core.multiarray", "_reconstruct"): rebuild,  # pickles written by numpy 2.x
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # how Python 3 writes bytes at pickle protocol 2
    }


class ArrayUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild numpy arrays, dicts, lists, strings and numbers, and nothing else."""

    def find_class(self, module: str, name: str):
        allowed = _allowed_globals()
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        return allowed[(module, name)]


def read_batch(path: str) -> dict:
    """One batch as a dict with ``str`` keys (the original files have ``bytes`` keys)."""
    try:
        with open(path, "rb") as f:
            obj = ArrayUnpickler(f, encoding="bytes").load()
    except OSError as exc:
        raise SpikecError(f"cannot read CIFAR batch {path}: {exc.strerror or exc}") from exc
    except Exception as exc:  # corrupt or hostile pickles raise many kinds
        raise SpikecError(f"{path} is not a CIFAR-10 python batch: {exc}") from exc
    if not isinstance(obj, dict):
        raise SpikecError(f"{path} is not a CIFAR-10 python batch: holds a {type(obj).__name__}, not a dict")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _images_labels(path: str) -> tuple[np.ndarray, np.ndarray]:
    batch = read_batch(path)
    if "data" not in batch or "labels" not in batch:
        raise SpikecError(f"{path} is not a CIFAR-10 python batch: no 'data' and 'labels' entries")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch["labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.shape[0] != labels.shape[0]:
        raise SpikecError(f"{path}: expected data [N, 3072] and N labels, got {data.shape} and {labels.shape}")
    return data.reshape(-1, 3, 32, 32), labels


def looks_like(directory: str) -> bool:
    return os.path.isdir(directory) and os.path.isfile(os.path.join(directory, TEST_BATCH)) and any(
        os.path.isfile(os.path.join(directory, b)) for b in TRAIN_BATCHES
    )


def _class_names(directory: str) -> tuple[str, ...] | None:
    path = os.path.join(directory, META)
    if not os.path.isfile(path):
        return None
    names = read_batch(path).get("label_names")
    if names is None:
        return None
    return tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names)


def load(directory: str):
    train_paths = [os.path.join(directory, b) for b in TRAIN_BATCHES if os.path.isfile(os.path.join(directory, b))]
    test_path = os.path.join(directory, TEST_BATCH)
    if not train_paths or not os.path.isfile(test_path):
        raise SpikecError(f"{directory} does not hold CIFAR-10 python batches (data_batch_1..5 and test_batch)")
    parts = [_images_labels(p) for p in train_paths]
    x_train = np.concatenate([x for x, _ in parts])
    y_train = np.concatenate([y for _, y in parts])
    x_test, y_test = _images_labels(test_path)
    names = _class_names(directory)
    num_classes = len(names) if names else int(max(y_train.max(initial=0), y_test.max(initial=0))) + 1
    info = DatasetInfo(
        name=os.path.basename(os.path.normpath(directory)), input_shape=(3, 32, 32), num_classes=num_classes,
        classes=names or tuple(str(i) for i in range(num_classes)), source=directory, format="cifar10",
    )
    train = as_dataset(scale_pixels(x_train), y_train, train_paths[0])
    test = as_dataset(scale_pixels(x_test), y_test, test_path)
    return train, test, info
