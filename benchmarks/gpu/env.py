"""What the results were measured on: GPU, driver, CUDA, torch, Triton and the peers' versions."""
from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess

import torch

PACKAGES = ("spikec", "torch", "triton", "snntorch", "norse", "spikingjelly", "numpy")


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _driver() -> str | None:
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else None


def environment(device: torch.device) -> dict:
    """Plain data about the machine and the software versions."""
    info = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": str(device),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "versions": {p: _version(p) for p in PACKAGES},
        "torch_cuda": torch.version.cuda,
        "triton_interpret": os.environ.get("TRITON_INTERPRET", ""),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, capability=".".join(map(str, torch.cuda.get_device_capability(device))),
                    gpu_memory_gib=round(props.total_memory / 2**30, 1), multiprocessors=props.multi_processor_count,
                    driver=_driver(), cudnn=torch.backends.cudnn.version())
    else:
        info.update(gpu=None, driver=_driver())
    return info
