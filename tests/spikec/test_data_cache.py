"""The decoded-image cache: hit, stale, corrupt, relocated, unwritable."""
import os
import time

import numpy as np
import pytest
import torch
from PIL import Image

from spikec.data import load_dataset
from spikec.data import cache as cache_mod
from spikec.errors import SpikecError


def _folder(root, per_class=3, size=16):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in ("cat", "dog"):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(per_class):
                arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(arr).save(d / f"{i}.png")
    return root


def _count_decodes(monkeypatch):
    from spikec.data import folder

    calls = []
    real = folder._read_images

    def counting(files, image_size):
        calls.append(len(files))
        return real(files, image_size)

    monkeypatch.setattr(folder, "_read_images", counting)
    return calls


def _entries(directory):
    return sorted(p for p in os.listdir(directory) if p.endswith(".npz"))


def test_second_load_is_a_cache_hit_with_identical_tensors(tmp_path, monkeypatch):
    monkeypatch.setenv("SPIKEC_DATA_CACHE", str(tmp_path / "cache"))
    root = _folder(tmp_path / "imgs")
    calls = _count_decodes(monkeypatch)
    tr1, te1, info1 = load_dataset(str(root))
    tr2, te2, info2 = load_dataset(str(root))
    assert calls == [12]  # decoded once: 2 classes x 3 images x (train + test)
    assert torch.equal(tr1.tensors[0], tr2.tensors[0]) and torch.equal(te1.tensors[1], te2.tensors[1])
    assert info1 == info2 and len(_entries(tmp_path / "cache")) == 1
    # the cached values are the decoded pixels scaled to [0, 1]
    first = np.asarray(Image.open(root / "train" / "cat" / "0.png")).transpose(2, 0, 1) / 255.0
    assert torch.allclose(tr2.tensors[0][0], torch.as_tensor(first, dtype=torch.float32))


def test_a_touched_added_or_removed_file_makes_the_entry_stale(tmp_path, monkeypatch):
    monkeypatch.setenv("SPIKEC_DATA_CACHE", str(tmp_path / "cache"))
    root = _folder(tmp_path / "imgs")
    calls = _count_decodes(monkeypatch)
    load_dataset(str(root))
    target = root / "train" / "dog" / "1.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(target)
    os.utime(target, ns=(time.time_ns(), time.time_ns() + 10**9))
    tr, _, _ = load_dataset(str(root))
    assert len(calls) == 2
    assert float(tr.tensors[0][4].abs().sum()) == 0.0  # the new (black) image, dog #1 = index 3 + 1
    (root / "test" / "cat" / "9.png").write_bytes((root / "test" / "cat" / "0.png").read_bytes())
    _, te, _ = load_dataset(str(root))
    assert len(calls) == 3 and len(te) == 7
    os.unlink(root / "test" / "cat" / "9.png")
    _, te, _ = load_dataset(str(root))
    assert len(calls) == 4 and len(te) == 6
    assert len(_entries(tmp_path / "cache")) == 1  # rebuilt in place, not accumulated


def test_a_corrupt_entry_is_rebuilt(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SPIKEC_DATA_CACHE", str(tmp_path / "cache"))
    root = _folder(tmp_path / "imgs")
    calls = _count_decodes(monkeypatch)
    tr1, _, _ = load_dataset(str(root))
    (entry,) = _entries(tmp_path / "cache")
    path = tmp_path / "cache" / entry
    path.write_bytes(path.read_bytes()[: 100])  # truncated
    tr2, _, _ = load_dataset(str(root))
    assert len(calls) == 2 and torch.equal(tr1.tensors[0], tr2.tensors[0])
    assert "unreadable; rebuilding" in capsys.readouterr().err
    tr3, _, _ = load_dataset(str(root))
    assert len(calls) == 2  # the rebuilt entry is good


def test_the_cache_is_relocatable_and_can_be_switched_off(tmp_path, monkeypatch):
    root = _folder(tmp_path / "imgs")
    calls = _count_decodes(monkeypatch)
    monkeypatch.setenv("SPIKEC_DATA_CACHE", str(tmp_path / "a"))
    load_dataset(str(root))
    monkeypatch.setenv("SPIKEC_DATA_CACHE", str(tmp_path / "b"))
    load_dataset(str(root))
    assert len(calls) == 2 and _entries(tmp_path / "a") == _entries(tmp_path / "b")
    monkeypatch.setenv("SPIKEC_DATA_CACHE", "off")
    load_dataset(str(root))
    load_dataset(str(root))
    assert len(calls) == 4 and cache_mod.cache_dir() is None
    # an unsplit folder's cache is keyed by the split settings too
    monkeypatch.setenv("SPIKEC_DATA_CACHE", str(tmp_path / "c"))
    flat = tmp_path / "flat"
    for c in ("a", "b"):
        (flat / c).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(np.full((16, 16), 10 * i, np.uint8)).save(flat / c / f"{i}.png")
    _, te_a, _ = load_dataset(str(flat), seed=0)
    _, te_b, _ = load_dataset(str(flat), seed=1)
    assert len(_entries(tmp_path / "c")) == 2
    assert not torch.equal(te_a.tensors[0], te_b.tensors[0]) or not torch.equal(te_a.tensors[1], te_b.tensors[1])


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only folders")
def test_an_unwritable_cache_folder_is_one_line_naming_it(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    monkeypatch.setenv("SPIKEC_DATA_CACHE", str(locked))
    with pytest.raises(SpikecError, match="cannot write the data cache in .*locked"):
        load_dataset(str(_folder(tmp_path / "imgs")))


def test_an_unwritable_cache_folder_error_names_it(tmp_path, monkeypatch):
    # as root a read-only folder is still writable, so stand in for the OS's refusal
    monkeypatch.setenv("SPIKEC_DATA_CACHE", str(tmp_path / "ro"))
    monkeypatch.setattr(cache_mod.os, "access", lambda path, mode: False)
    with pytest.raises(SpikecError) as err:
        load_dataset(str(_folder(tmp_path / "imgs")))
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "ro") in message and "SPIKEC_DATA_CACHE" in message


def test_an_unreadable_image_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("SPIKEC_DATA_CACHE", str(tmp_path / "cache"))
    root = _folder(tmp_path / "imgs")
    bad = root / "train" / "cat" / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(SpikecError, match="cannot read image .*broken.png"):
        load_dataset(str(root))
    assert not os.path.exists(tmp_path / "cache") or not _entries(tmp_path / "cache")
