"""Sizes of every part: the GPU run and the CPU smoke run differ only in these numbers."""
from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class SuiteConfig:
    """What the suite runs. ``full`` is the GPU run of the issue; ``smoke`` the same code at toy sizes."""

    device: str
    smoke: bool
    # (1) correctness: every backend against the torch reference
    check_dtypes: tuple[str, ...] = ("float32", "float16", "bfloat16")
    check_T: tuple[int, ...] = (1, 7, 64)
    check_shape: tuple[int, ...] = (3, 33331)       # 99,993 neurons: odd, not a multiple of any block
    check_cpu_shape: tuple[int, ...] = (3, 1733)    # the C++ path runs on CPU tensors, where the reference is slow
    check_param_T: int = 9                          # T of the per-channel / per-neuron parameter cases
    # (2) kernel benchmark
    kernel_T: int = 32
    kernel_exponents: tuple[int, ...] = (19, 20, 21, 22)
    kernel_dtypes: tuple[str, ...] = ("float32", "float16")
    kernel_reps: int = 20
    kernel_warmup: int = 3
    # (3) one SNN training step
    train_models: tuple[str, ...] = ("vgg", "resnet")
    train_batch: int = 128
    train_T: int = 4
    train_input: tuple[int, int, int] = (3, 32, 32)
    train_width: float = 1.0
    train_reps: int = 10
    train_warmup: int = 3
    # (4) CIFAR-10: ANN training with the data on the device, then rate conversion
    cifar: str = "../shared/data/cifar10"
    cifar_model: str = "vgg"
    cifar_epochs: int = 10
    cifar_batch: int = 256
    cifar_lr: float = 1e-3
    cifar_width: float = 1.0
    cifar_calib: int = 1024
    cifar_timesteps: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    cifar_eval_batch: int = 500
    # seconds a part needs left in the budget to start at all
    min_seconds: tuple[tuple[str, float], ...] = (("correctness", 0.0), ("kernels", 30.0), ("train_step", 30.0),
                                                  ("cifar", 90.0))

    def min_seconds_for(self, part: str) -> float:
        return dict(self.min_seconds).get(part, 0.0)


def full_config(device: str = "cuda", **overrides) -> SuiteConfig:
    return replace(SuiteConfig(device=device, smoke=False), **overrides)


def smoke_config(**overrides) -> SuiteConfig:
    """Toy sizes on CPU: every code path, a few seconds each."""
    toy = SuiteConfig(
        device="cpu", smoke=True,
        check_T=(1, 6), check_shape=(3, 23), check_cpu_shape=(3, 23), check_param_T=3,
        kernel_T=8, kernel_exponents=(7,), kernel_dtypes=("float32",), kernel_reps=2, kernel_warmup=1,
        train_batch=2, train_T=2, train_input=(3, 16, 16), train_width=0.125, train_reps=1, train_warmup=1,
        cifar_epochs=1, cifar_batch=16, cifar_width=0.125, cifar_calib=20, cifar_timesteps=(1, 4),
        cifar_eval_batch=16,
        min_seconds=(("correctness", 0.0), ("kernels", 0.0), ("train_step", 0.0), ("cifar", 0.0)),
    )
    return replace(toy, **overrides)
