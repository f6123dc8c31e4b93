"""The native SNN file: one HDF5 layout for every spikec model kind (ANN, SNN, rate, TTFS, compressed).

A spikec checkpoint is a tree of dicts whose leaves are tensors or plain data; it already holds
everything that rebuilds a model (architecture, weights, thresholds, windows, masks, quantisation
scales, coding, time steps). This module stores that tree in HDF5 without pickling:

- a dict becomes a group (``/`` in keys is escaped as ``%2F``);
- a tensor becomes a dataset with its torch dtype in the ``torch_dtype`` attribute (bfloat16 is
  stored as its raw 16 bits), so reloading is bit-identical;
- everything else (numbers, strings, lists, None) is one JSON attribute ``value`` on an empty group.

The root carries ``format = "spikec-snn"`` and ``format_version``. Reading never runs code.
"""
from __future__ import annotations

import json
import os

import h5py
import numpy as np
import torch

from spikec.errors import SpikecError
from spikec.io.atomic import atomic_path

FORMAT = "spikec-snn"
FORMAT_VERSION = 1
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def is_snn_file(path: str | os.PathLike) -> bool:
    """True when ``path`` starts with the HDF5 signature (the format is then checked on reading)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(8) == HDF5_SIGNATURE
    except OSError:
        return False


def write_snn_file(path: str | os.PathLike, ckpt: dict) -> str:
    """Write checkpoint ``ckpt`` to ``path`` as HDF5, atomically; returns the path."""
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            _write_dict(f, ckpt)
    return os.fspath(path)


def read_snn_file(path: str | os.PathLike) -> dict:
    """The checkpoint dict stored at ``path``; one-line SpikecError naming the file when it is not one."""
    path = os.fspath(path)
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT:
                raise SpikecError(f"{path} is an HDF5 file but not a spikec SNN file (no format='{FORMAT}')")
            version = int(f.attrs.get("format_version", -1))
            if version > FORMAT_VERSION:
                raise SpikecError(
                    f"{path} is a spikec SNN file of format version {version}; this spikec reads up to {FORMAT_VERSION}"
                )
            return _read_group(f)
    except SpikecError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SpikecError(f"cannot read SNN file {path}: {first}") from exc


def _key(k) -> str:
    if not isinstance(k, str):
        raise TypeError(f"checkpoint keys must be strings, got {k!r}")
    return k.replace("%", "%25").replace("/", "%2F") if k else "%00"


def _unkey(k: str) -> str:
    return "" if k == "%00" else k.replace("%2F", "/").replace("%25", "%")


def _write_dict(group: h5py.Group, d: dict) -> None:
    group.attrs["kind_of"] = "dict"
    for k, v in d.items():
        name = _key(k)
        if isinstance(v, dict):
            _write_dict(group.create_group(name), v)
        elif torch.is_tensor(v):
            t = v.detach().cpu().contiguous()
            data = t.view(torch.int16).numpy() if t.dtype == torch.bfloat16 else t.numpy()
            ds = group.create_dataset(name, data=data)
            ds.attrs["torch_dtype"] = str(t.dtype).removeprefix("torch.")
        else:
            g = group.create_group(name)
            g.attrs["kind_of"] = "json"
            try:
                g.attrs["value"] = json.dumps(v)
            except TypeError as exc:
                raise TypeError(f"checkpoint entry {k!r} holds {type(v).__name__}, which is neither a tensor nor plain data") from exc


def _read_group(group: h5py.Group):
    if group.attrs.get("kind_of") == "json":
        return json.loads(group.attrs["value"])
    out = {}
    for name, item in group.items():
        if isinstance(item, h5py.Dataset):
            dtype = item.attrs.get("torch_dtype", None)
            arr = np.array(item[()])
            if dtype == "bfloat16":
                out[_unkey(name)] = torch.from_numpy(arr).view(torch.bfloat16)
            else:
                t = torch.from_numpy(arr) if arr.ndim else torch.tensor(arr)
                out[_unkey(name)] = t.to(getattr(torch, dtype)) if dtype else t
        else:
            out[_unkey(name)] = _read_group(item)
    return out
