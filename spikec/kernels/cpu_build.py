"""Compile ``lif_cpu.cpp`` at first use and load it with ctypes.

The library needs no torch headers, so a build takes about a second and no ninja. It is cached on
disk under a name that hashes the source, the compiler, its flags and the CPU (the build targets
``-march=native``), so later processes load it at once. Any failure (no compiler, read-only home,
odd platform) makes the CPU backend unavailable with a reason; ``auto`` then uses torch.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

SOURCE = Path(__file__).with_name("lif_cpu.cpp")
# -ffp-contract=off: no FMA contraction, so every op rounds as torch's separate ops do (exact spikes).
# -fno-trapping-math: lets branch-free selects between float results vectorise; it changes no value
# (it only waives FP exception flags; no -ffast-math, which would reassociate and change results).
FLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-fno-trapping-math", "-std=c++17", "-fPIC", "-shared",
         "-pthread")
DISABLE_ENV = "SPIKEC_NO_CPU_KERNEL"
CACHE_ENV = "SPIKEC_CACHE_DIR"


@dataclass(frozen=True)
class CpuLibrary:
    """The loaded library, or why there is none."""

    lib: ctypes.CDLL | None
    reason: str = ""


def _cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "spikec" / "kernels"


def _cpu_signature() -> str:
    """What ``-march=native`` depends on: the CPU model and its feature flags."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        wanted = [ln for ln in lines if ln.startswith(("model name", "flags", "Features", "CPU part"))][:3]
        return "\n".join(wanted)
    except OSError:
        return platform.processor() or platform.machine()


def _declare(lib: ctypes.CDLL) -> None:
    p, i64, i32, f64 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_double
    lib.spikec_lif_forward.restype = i32
    lib.spikec_lif_forward.argtypes = [i32, p, p, p, i64, p, i64, p, p, p, i64, i64, i32, i32]
    lib.spikec_lif_backward.restype = i32
    lib.spikec_lif_backward.argtypes = [i32, i32, p, p, p, p, p, i64, p, i64, f64, i32, p, p, p, p, i64, i64, i32, i32]


def _compile(compiler: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".building-", suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        cmd = [compiler, *FLAGS, str(SOURCE), "-o", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"{compiler} failed on {SOURCE.name}: {last}")
        os.replace(tmp, target)  # complete or absent, also with concurrent builds
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@functools.lru_cache(maxsize=1)
def load_cpu_library() -> CpuLibrary:
    """Build (once per source/CPU) and load the fused CPU kernels."""
    if os.environ.get(DISABLE_ENV, "") not in ("", "0"):
        return CpuLibrary(None, f"disabled by {DISABLE_ENV}")
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if compiler is None:
        return CpuLibrary(None, "no C++ compiler found (set CXX)")
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
        key = hashlib.sha256(
            "\0".join([SOURCE.read_text(), compiler, version, " ".join(FLAGS), _cpu_signature()]).encode()
        ).hexdigest()[:16]
        target = _cache_dir() / f"lif_cpu_{key}.so"
        if not target.exists():
            _compile(compiler, target)
        lib = ctypes.CDLL(str(target))
        _declare(lib)
    except (OSError, RuntimeError, subprocess.SubprocessError) as err:
        return CpuLibrary(None, str(err).splitlines()[0] if str(err) else type(err).__name__)
    return CpuLibrary(lib)
