"""A decoded-image cache, so a folder of JPEGs is decoded once, not at every command.

The cache holds the decoded uint8 arrays of a source in one ``.npz`` file (read with
``allow_pickle=False``: nothing in it can run code). Its name is derived from what was asked
for (the source's absolute path and the loading options); inside it sits a fingerprint of
every source file's relative path, size and modification time. A fingerprint that no longer
matches (a file added, removed or touched) means stale: the entry is rebuilt. An entry that
cannot be read (truncated, corrupt) is rebuilt too. Entries are written to a temporary name
and renamed, so a crash never leaves half a cache. Deleting the cache is always safe.

Where: ``$SPIKEC_DATA_CACHE`` if set, else ``$XDG_CACHE_HOME/spikec/data``, else
``~/.cache/spikec/data``. ``SPIKEC_DATA_CACHE=off`` turns caching off.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import zipfile
from typing import Callable

import numpy as np

from spikec.errors import SpikecError
from spikec.io.atomic import atomic_path

CACHE_VERSION = 1
ENV = "SPIKEC_DATA_CACHE"

__all__ = ["cache_dir", "cached_arrays", "fingerprint"]


def cache_dir() -> str | None:
    """The cache folder, or ``None`` when caching is off."""
    env = os.environ.get(ENV)
    if env is not None:
        return None if env.strip().lower() in ("", "off", "0", "none") else env
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "spikec", "data")


def fingerprint(files: list[str], root: str) -> str:
    """A digest of each file's path relative to ``root``, size and modification time (ns)."""
    h = hashlib.sha256()
    prefix = os.path.join(root, "")
    for path in files:
        try:
            st = os.stat(path)
        except OSError as exc:
            raise SpikecError(f"cannot read {path}: {exc.strerror or exc}") from exc
        rel = path[len(prefix):] if path.startswith(prefix) else os.path.relpath(path, root)
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _entry_path(directory: str, key: dict) -> str:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return os.path.join(directory, f"{key.get('format', 'data')}-{digest}.npz")


def _read(path: str, stamp: str) -> dict | None:
    """The arrays of a valid, current entry; ``None`` if it is absent, stale or unreadable."""
    if not os.path.exists(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
            if meta.get("version") != CACHE_VERSION or meta.get("fingerprint") != stamp:
                return None
            arrays = {name: npz[name] for name in npz.files if name != "meta"}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError):
        print(f"spikec: data cache {path} is unreadable; rebuilding it", file=sys.stderr)
        return None
    arrays["meta"] = meta
    return arrays


def _write(path: str, arrays: dict, meta: dict) -> None:
    directory = os.path.dirname(path)
    try:
        os.makedirs(directory, exist_ok=True)
        if not os.access(directory, os.W_OK):
            raise PermissionError(13, "Permission denied")
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, meta=np.array(json.dumps(meta)), **arrays)
    except OSError as exc:
        raise SpikecError(
            f"cannot write the data cache in {directory}: {exc.strerror or exc} "
            f"(set {ENV} to a writable folder, or {ENV}=off)"
        ) from exc


def cached_arrays(key: dict, files: list[str], root: str, build: Callable[[], dict]) -> dict:
    """``build()``'s dict of numpy arrays, from the cache when an entry for ``key`` matches ``files``.

    ``key`` is plain JSON data naming the source and options; ``files`` are the source files whose
    paths, sizes and mtimes decide staleness. The result has an extra ``"meta"`` entry (dict).
    """
    directory = cache_dir()
    stamp = fingerprint(files, root)
    meta = {"version": CACHE_VERSION, "fingerprint": stamp, "key": key, "files": len(files)}
    if directory is None:
        arrays = build()
        return {**arrays, "meta": meta}
    path = _entry_path(directory, {**key, "version": CACHE_VERSION})
    hit = _read(path, stamp)
    if hit is not None:
        return hit
    arrays = build()
    _write(path, arrays, meta)
    return {**arrays, "meta": meta}
