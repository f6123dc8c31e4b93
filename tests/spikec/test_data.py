"""Dataset loaders on small files written here in each format (nothing is downloaded)."""
import gzip
import pickle
import struct

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from spikec.data import detect_format, load_dataset
from spikec.errors import SpikecError, UsageError


def test_digits_is_a_fixed_stratified_split_scaled_to_unit_range():
    train, test, info = load_dataset("digits")
    assert (len(train), len(test)) == (1437, 360)
    assert info.input_shape == (1, 8, 8) and info.num_classes == 10 and info.format == "digits"
    x, y = train.tensors
    assert x.shape == (1437, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    # sklearn's digits hold the values 0..16, scaled by 1/16
    assert torch.equal(torch.unique(x * 16), torch.arange(17, dtype=torch.float32))
    counts = torch.bincount(test.tensors[1], minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # each class ~20% of its ~180 samples
    again_train, again_test, _ = load_dataset("digits")
    assert torch.equal(again_test.tensors[0], test.tensors[0]) and torch.equal(again_train.tensors[1], y)
    other = load_dataset("digits", seed=1)[1]
    assert not torch.equal(other.tensors[0], test.tensors[0])


# ---------------------------------------------------------------- MNIST IDX


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_idx(folder, sep="-", gz=False):
    rng = np.random.default_rng(0)
    parts = {
        "train-images": rng.integers(0, 256, (12, 28, 28), dtype=np.uint8),
        "train-labels": np.arange(12, dtype=np.uint8) % 10,
        "t10k-images": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
        "t10k-labels": np.array([9, 0, 1, 2, 3], dtype=np.uint8),
    }
    for stem, array in parts.items():
        name = f"{stem}{sep}idx{array.ndim}-ubyte"
        data = _idx_bytes(array)
        if gz:
            (folder / (name + ".gz")).write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return parts


@pytest.mark.parametrize("sep,gz", [("-", False), ("-", True), (".", False)])
def test_mnist_idx_files_plain_and_gzip(tmp_path, sep, gz):
    parts = _write_idx(tmp_path, sep, gz)
    assert detect_format(str(tmp_path)) == "idx"
    train, test, info = load_dataset(str(tmp_path))
    assert train.tensors[0].shape == (12, 1, 28, 28) and test.tensors[0].shape == (5, 1, 28, 28)
    expected = torch.from_numpy(parts["train-images"].astype(np.float32) / 255.0)
    torch.testing.assert_close(train.tensors[0][:, 0], expected)
    assert test.tensors[1].tolist() == [9, 0, 1, 2, 3]
    assert info.num_classes == 10 and info.format == "idx" and info.input_shape == (1, 28, 28)


def test_idx_with_bad_magic_or_truncated_data_names_the_file(tmp_path):
    _write_idx(tmp_path)
    bad = tmp_path / "train-labels-idx1-ubyte"
    bad.write_bytes(b"\x12\x34" + bad.read_bytes()[2:])
    with pytest.raises(SpikecError, match="train-labels-idx1-ubyte is not an IDX file"):
        load_dataset(str(tmp_path))
    bad.write_bytes(_idx_bytes(np.arange(12, dtype=np.uint8))[:-3])
    with pytest.raises(SpikecError, match="train-labels-idx1-ubyte: IDX data has 9 bytes, header says 12"):
        load_dataset(str(tmp_path))


# ---------------------------------------------------------------- CIFAR-10 python batches


def _cifar_batch(path, data, labels, numpy1=False):
    raw = pickle.dumps({b"batch_label": b"x", b"labels": labels, b"data": data, b"filenames": []}, protocol=2)
    if numpy1:  # what the published files hold: arrays pickled by numpy 1.x
        raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    path.write_bytes(raw)


@pytest.mark.parametrize("numpy1", [True, False])
def test_cifar10_batches_are_read_as_channel_planes(tmp_path, numpy1):
    rng = np.random.default_rng(1)
    train_data = [rng.integers(0, 256, (4, 3072), dtype=np.uint8) for _ in range(2)]
    for i, data in enumerate(train_data, 1):
        _cifar_batch(tmp_path / f"data_batch_{i}", data, [i, 2 * i, 3, 4], numpy1)
    _cifar_batch(tmp_path / "test_batch", np.full((2, 3072), 255, np.uint8), [7, 8], numpy1)
    names = [f"class{i}".encode() for i in range(10)]
    (tmp_path / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}, protocol=2))
    assert detect_format(str(tmp_path)) == "cifar10"
    train, test, info = load_dataset(str(tmp_path))
    assert train.tensors[0].shape == (8, 3, 32, 32) and test.tensors[0].shape == (2, 3, 32, 32)
    first = torch.from_numpy(train_data[0][0].astype(np.float32) / 255)
    torch.testing.assert_close(train.tensors[0][0, 0].flatten(), first[:1024])  # red plane first
    torch.testing.assert_close(train.tensors[0][0, 2, 31, 31], first[3071])
    assert train.tensors[1].tolist() == [1, 2, 3, 4, 2, 4, 3, 4]
    assert float(test.tensors[0].min()) == 1.0
    assert info.classes[3] == "class3" and info.num_classes == 10


class _Exploit:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_cifar_loader_refuses_pickles_that_run_code(tmp_path):
    victim = tmp_path / "created-by-pickle"
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({b"data": _Exploit(str(victim)), b"labels": [0]}))
    _cifar_batch(tmp_path / "test_batch", np.zeros((1, 3072), np.uint8), [0])
    with pytest.raises(SpikecError, match=r"data_batch_1 is not a CIFAR-10 python batch: refusing to load global"):
        load_dataset(str(tmp_path))
    assert not victim.exists()


def test_cifar_batch_with_wrong_layout_names_the_file(tmp_path):
    _cifar_batch(tmp_path / "data_batch_1", np.zeros((2, 100), np.uint8), [0, 1])
    _cifar_batch(tmp_path / "test_batch", np.zeros((1, 3072), np.uint8), [0])
    with pytest.raises(SpikecError, match=r"data_batch_1: expected data \[N, 3072\]"):
        load_dataset(str(tmp_path))


# ---------------------------------------------------------------- image folders


def _save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_image_folder_split_and_grayscale(tmp_path):
    for c, value in enumerate((0, 100, 200)):
        for i in range(5):
            _save(tmp_path / f"cls{c}" / f"{i}.png", np.full((6, 5), value + i, np.uint8))
    assert detect_format(str(tmp_path)) == "folder"
    train, test, info = load_dataset(str(tmp_path), test_fraction=0.4)
    assert (len(train), len(test)) == (9, 6)
    assert info.classes == ("cls0", "cls1", "cls2") and info.input_shape == (1, 6, 5)
    assert torch.bincount(test.tensors[1]).tolist() == [2, 2, 2]
    x, y = torch.cat([train.tensors[0], test.tensors[0]]), torch.cat([train.tensors[1], test.tensors[1]])
    # every image is constant: value = 100*class + index, so pixel // (100/255) recovers its class
    assert torch.equal((x[:, 0, 0, 0] * 255).round().long() // 100, y)


def test_image_folder_with_train_test_and_rgb(tmp_path):
    for split, n in (("train", 3), ("test", 2)):
        for c in ("cat", "dog"):
            for i in range(n):
                rgb = np.zeros((4, 4, 3), np.uint8)
                rgb[..., 0 if c == "cat" else 2] = 255
                _save(tmp_path / split / c / f"{i}.png", rgb)
    train, test, info = load_dataset(str(tmp_path))
    assert (len(train), len(test)) == (6, 4) and info.input_shape == (3, 4, 4)
    cats = train.tensors[0][train.tensors[1] == 0]
    assert float(cats[:, 0].min()) == 1.0 and float(cats[:, 2].max()) == 0.0


def test_image_folder_sizes_must_match_unless_resized(tmp_path):
    _save(tmp_path / "a" / "0.png", np.zeros((4, 4), np.uint8))
    _save(tmp_path / "a" / "1.png", np.zeros((4, 4), np.uint8))
    _save(tmp_path / "b" / "0.png", np.zeros((8, 6), np.uint8))
    _save(tmp_path / "b" / "1.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(SpikecError, match=r"0\.png is 6x8, others are 4x4"):
        load_dataset(str(tmp_path))
    train, test, info = load_dataset(str(tmp_path), image_size=(5, 3), test_fraction=0.5)
    assert info.input_shape == (1, 5, 3)
    (tmp_path / "b" / "2.png").write_bytes(b"not a png")
    with pytest.raises(SpikecError, match=r"cannot read image .*2\.png"):
        load_dataset(str(tmp_path), image_size=(5, 3))


# ---------------------------------------------------------------- HDF5


def test_hdf5_x_y_split_and_uint8_scaling(tmp_path):
    path = tmp_path / "data.h5"
    x = np.arange(20 * 3 * 3, dtype=np.uint8).reshape(20, 3, 3)
    y = np.arange(20) % 2
    with h5py.File(path, "w") as f:
        f["x"], f["y"] = x, y
    train, test, info = load_dataset(str(path))
    assert (len(train), len(test)) == (16, 4) and info.input_shape == (1, 3, 3) and info.num_classes == 2
    assert torch.bincount(test.tensors[1]).tolist() == [2, 2]
    xs = torch.cat([train.tensors[0], test.tensors[0]])
    ys = torch.cat([train.tensors[1], test.tensors[1]])
    # sample i starts at pixel 9*i, so the label is recoverable from the data
    first = (xs[:, 0, 0, 0] * 255).round().long()
    assert torch.equal((first // 9) % 2, ys)


def test_hdf5_float_features_and_explicit_test_set(tmp_path):
    path = tmp_path / "features.hdf5"
    with h5py.File(path, "w") as f:
        f["x"] = np.linspace(-2, 2, 30, dtype=np.float32).reshape(10, 3)
        f["y"] = np.arange(10) % 3
        f["x_test"] = np.ones((4, 3), np.float32) * 5
        f["y_test"] = np.array([0, 1, 2, 2])
    train, test, info = load_dataset(str(path))
    assert len(train) == 10 and info.input_shape == (3,)
    assert float(train.tensors[0].min()) == -2.0  # float data is used as stored
    assert test.tensors[1].tolist() == [0, 1, 2, 2] and float(test.tensors[0].max()) == 5.0


def test_hdf5_without_labels_names_file_and_dataset(tmp_path):
    path = tmp_path / "nolabels.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.zeros((4, 2), np.float32)
    with pytest.raises(SpikecError, match=r"nolabels\.h5: no dataset 'y' \(found: x\)"):
        load_dataset(str(path))
    corrupt = tmp_path / "corrupt.h5"
    corrupt.write_bytes(b"\x00" * 64)
    with pytest.raises(SpikecError, match=r"cannot read HDF5 file .*corrupt\.h5"):
        load_dataset(str(corrupt))


# ---------------------------------------------------------------- names, paths, formats


def test_unknown_names_missing_paths_and_unknown_formats(tmp_path):
    with pytest.raises(UsageError, match="unknown dataset 'mnist'; choose from digits"):
        load_dataset("mnist")
    with pytest.raises(SpikecError, match="dataset not found: .*nothing/here") as exc:
        load_dataset(str(tmp_path / "nothing" / "here"))
    assert not isinstance(exc.value, UsageError)
    with pytest.raises(UsageError, match="unknown data format 'csv'"):
        load_dataset("digits", format="csv")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(SpikecError, match=r"notes\.txt: unknown data file format"):
        load_dataset(str(tmp_path / "notes.txt"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SpikecError, match="empty: no dataset found"):
        load_dataset(str(tmp_path / "empty"))
    with pytest.raises(SpikecError, match="the idx format is a directory"):
        load_dataset(str(tmp_path / "notes.txt"), format="idx")
