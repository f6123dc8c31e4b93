"""The native HDF5 SNN file: bit-identical reloads for every kind, one-line errors for bad files."""
import h5py
import pytest
import torch

import spikec
from spikec.checkpoint import SNNSpec, ann_checkpoint, load_checkpoint, load_model, save_checkpoint
from spikec.errors import SpikecError
from spikec.io.snn_file import FORMAT_VERSION, read_snn_file, write_snn_file
from spikec.models import build_model


def digits_like(n=16, seed=0):
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def roundtrip_outputs(tmp_path, ckpt):
    torch_path, h5_path = tmp_path / "m.pt", tmp_path / "m.h5"
    save_checkpoint(torch_path, ckpt)
    save_checkpoint(h5_path, ckpt)
    with open(h5_path, "rb") as fh:
        assert fh.read(8) == b"\x89HDF\r\n\x1a\n"
    a, _ = load_model(torch_path)
    b, meta = load_model(h5_path)
    x = digits_like()
    torch.manual_seed(1)
    ya = a.eval()(x)
    torch.manual_seed(1)
    yb = b.eval()(x)
    assert torch.equal(ya, yb)
    return meta


def test_ann_round_trip_is_bit_identical(tmp_path):
    torch.manual_seed(0)
    ann = build_model("lenet", (1, 8, 8), 10)
    meta = roundtrip_outputs(tmp_path, ann_checkpoint(ann, metrics={"test_accuracy": 0.5}))
    assert meta["kind"] == "ann" and meta["metrics"] == {"test_accuracy": 0.5}


def test_directly_trained_snn_round_trip(tmp_path):
    spec = SNNSpec(arch="mlp", arch_config={"input_shape": [1, 8, 8], "num_classes": 10}, timesteps=4, coding="direct")
    torch.manual_seed(0)
    model = spec.build()
    roundtrip_outputs(tmp_path, spec.checkpoint(model))


def test_ttfs_snn_round_trip(tmp_path):
    from spikec.conversion.ttfs import ttfs_checkpoint

    torch.manual_seed(0)
    ann = build_model("lenet", (1, 8, 8), 10).eval()
    snn = spikec.convert(ann, digits_like(64, seed=2), coding="ttfs", time_bits=5)
    roundtrip_outputs(tmp_path, ttfs_checkpoint(snn, ann))


def test_every_dtype_and_nesting_survives(tmp_path):
    ckpt = {
        "kind": "ann",
        "state_dict": {
            "a.w": torch.randn(3, 2),
            "b": torch.randn(4).to(torch.bfloat16),
            "c": torch.randn(2, dtype=torch.float64),
            "mask": torch.tensor([True, False]),
            "n": torch.tensor(7, dtype=torch.int64),
            "h": torch.randn(5).half(),
        },
        "meta": {"list": [1, 2.5, "x", None], "nested": {"slash/key": {"deep": True}}, "": 0},
    }
    write_snn_file(tmp_path / "f.h5", ckpt)
    back = read_snn_file(tmp_path / "f.h5")
    assert back["meta"] == ckpt["meta"]
    for k, v in ckpt["state_dict"].items():
        assert back["state_dict"][k].dtype == v.dtype and torch.equal(back["state_dict"][k], v), k


def test_truncated_file_gives_one_line_error_naming_it(tmp_path):
    path = tmp_path / "snn.h5"
    torch.manual_seed(0)
    save_checkpoint(path, ann_checkpoint(build_model("mlp", (1, 8, 8), 10)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SpikecError) as err:
        load_checkpoint(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_foreign_hdf5_and_newer_version_are_named(tmp_path):
    foreign = tmp_path / "data.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = [1, 2, 3]
    with pytest.raises(SpikecError, match="not a spikec SNN file"):
        load_checkpoint(foreign)
    newer = tmp_path / "new.h5"
    write_snn_file(newer, {"kind": "ann"})
    with h5py.File(newer, "a") as f:
        f.attrs["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(SpikecError, match=f"format version {FORMAT_VERSION + 1}"):
        load_checkpoint(newer)


def test_non_plain_data_is_refused_on_write_and_nothing_is_left(tmp_path):
    with pytest.raises(TypeError, match="'bad'"):
        write_snn_file(tmp_path / "x.h5", {"kind": "ann", "bad": object()})
    assert list(tmp_path.iterdir()) == []
