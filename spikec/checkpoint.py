"""Checkpoints: plain dicts of tensors and Python data, written atomically, read with ``weights_only=True``.

Kinds and what rebuilds them (:func:`load_model`):

- ``"ann"``: ``arch``, ``arch_config`` (see :func:`spikec.models.build_model`), ``act`` (the
  activation: ``{"name": "relu"}`` or ``{"name": "qcfs", "levels": L}``), ``state_dict``.
- ``"snn"`` (trained directly): the fields of :class:`SNNSpec` plus ``state_dict``; rebuilt as
  ``SpikingClassifier(build_model(arch, ..., act=<neuron>), timesteps, coding, readout)``.
- ``"rate_snn"`` / ``"ttfs_snn"`` (converted): rebuilt by
  ``spikec.conversion.rate.rate_snn_from_checkpoint`` / ``spikec.conversion.ttfs.ttfs_snn_from_checkpoint``.

Any checkpoint may also carry ``dataset`` (``DatasetInfo.to_dict()``) and ``metrics``.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from spikec.errors import SpikecError
from spikec.io.atomic import atomic_path
from spikec.io.snn_file import is_snn_file, read_snn_file, write_snn_file

KINDS = ("ann", "snn", "rate_snn", "ttfs_snn")
ACTIVATIONS = ("relu", "qcfs")
NEURONS = ("lif", "if")
_CONVERTED = {
    "rate_snn": ("spikec.conversion.rate", "rate_snn_from_checkpoint"),
    "ttfs_snn": ("spikec.conversion.ttfs", "ttfs_snn_from_checkpoint"),
}


# ---------------------------------------------------------------- reading and writing


def save_checkpoint(path: str | os.PathLike, ckpt: dict) -> str:
    """Write ``ckpt`` to ``path`` atomically; returns the path.

    A ``.h5`` / ``.hdf5`` path gets the native HDF5 SNN file (:mod:`spikec.io.snn_file`), any other a
    torch file. Both load with :func:`load_checkpoint`.
    """
    if not isinstance(ckpt, dict) or ckpt.get("kind") not in KINDS:
        raise ValueError(f"a checkpoint is a dict with 'kind' in {KINDS}")
    path = os.fspath(path)
    if path.lower().endswith((".h5", ".hdf5")):
        return write_snn_file(path, ckpt)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            torch.save(ckpt, f)
            f.flush()
            os.fsync(f.fileno())
    return path


def load_checkpoint(path: str | os.PathLike) -> dict:
    """The checkpoint dict at ``path``, loaded with ``weights_only=True`` (no code runs); one-line errors naming the file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise SpikecError(f"checkpoint not found: {path}")
    if is_snn_file(path):
        ckpt = read_snn_file(path)
    else:
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many kinds for corrupt or foreign files
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SpikecError(f"cannot read checkpoint {path}: {first}") from exc
    if not isinstance(ckpt, dict) or "kind" not in ckpt:
        raise SpikecError(f"{path} is not a spikec checkpoint (no 'kind' entry)")
    if ckpt["kind"] not in KINDS:
        raise SpikecError(f"{path}: unknown checkpoint kind {ckpt['kind']!r}; known: {', '.join(KINDS)}")
    return ckpt


def load_model(path: str | os.PathLike) -> tuple[nn.Module, dict]:
    """Rebuild the model a checkpoint describes, with its weights, in eval mode; returns ``(model, ckpt)``."""
    path = os.fspath(path)
    ckpt = load_checkpoint(path)
    kind = ckpt["kind"]
    try:
        if kind == "ann":
            model = build_ann(ckpt["arch"], ckpt["arch_config"], ckpt.get("act"))
        elif kind == "snn":
            model = SNNSpec.from_dict(ckpt).build()
        else:
            module_name, func_name = _CONVERTED[kind]
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                if exc.name != module_name:
                    raise
                raise SpikecError(f"{path} is a {kind} checkpoint, but {module_name} is not available in this version") from exc
            return getattr(module, func_name)(ckpt).eval(), ckpt
        model.load_state_dict(ckpt["state_dict"])
    except SpikecError:
        raise
    except KeyError as exc:
        raise SpikecError(f"{path}: {kind} checkpoint lacks the entry {exc.args[0]!r}") from exc
    except (ValueError, TypeError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise SpikecError(f"{path}: cannot rebuild the {kind} model: {first}") from exc
    return model.eval(), ckpt


# ---------------------------------------------------------------- what the plain data describes


def activation(spec: dict | None):
    """The ``act`` factory an ANN checkpoint's ``act`` entry names (default ReLU)."""
    spec = spec or {"name": "relu"}
    name = spec.get("name", "relu")
    if name == "relu":
        return nn.ReLU
    if name == "qcfs":
        try:
            from spikec.conversion.qcfs import QCFS
        except ModuleNotFoundError as exc:
            if exc.name != "spikec.conversion.qcfs":
                raise
            raise SpikecError("QCFS activations need spikec.conversion.qcfs, which is not available in this version") from exc
        options = {k: v for k, v in spec.items() if k != "name"}
        return lambda: QCFS(**options)
    raise ValueError(f"unknown activation {name!r}; choose from {', '.join(ACTIVATIONS)}")


def build_ann(arch: str, arch_config: dict, act: dict | None = None) -> nn.Module:
    """An untrained ANN from its architecture name, ``arch_config`` and activation spec.

    Architecture ``"graph"`` (a user's model, see :mod:`spikec.user_model`) is rebuilt from the
    plain-data graph in ``arch_config["graph"]``."""
    from spikec.conversion.graph_data import GRAPH_ARCH, graph_from_data
    from spikec.models import build_model

    if arch == GRAPH_ARCH:
        return graph_from_data(arch_config["graph"])
    return build_model(arch, act=activation(act), **arch_config)


def ann_checkpoint(model: nn.Module, act: dict | None = None, **extra) -> dict:
    """The checkpoint dict of a model built by :func:`spikec.models.build_model`."""
    if not hasattr(model, "arch_name") or not hasattr(model, "arch_config"):
        raise ValueError(f"{type(model).__name__} was not built by spikec.models.build_model (no arch_name/arch_config)")
    return {
        "kind": "ann", "arch": model.arch_name, "arch_config": dict(model.arch_config),
        "act": dict(act or {"name": "relu"}), "state_dict": model.state_dict(), **extra,
    }


@dataclass(frozen=True)
class NeuronConfig:
    """The spiking neuron of a directly trained SNN, as plain data."""

    kind: str = "lif"
    beta: float = 0.9
    threshold: float = 1.0
    reset: str = "subtract"
    surrogate: str = "arctan"
    alpha: float | None = None
    detach_reset: bool = False
    learn_beta: bool = False
    learn_threshold: bool = False

    def __post_init__(self):
        if self.kind not in NEURONS:
            raise ValueError(f"neuron must be one of {NEURONS}, got {self.kind!r}")
        if self.kind == "if" and self.learn_beta:
            raise ValueError("an IF neuron has no leak to learn")

    def make(self) -> nn.Module:
        """A fresh neuron layer."""
        from spikec.neurons import IF, LIF
        from spikec.surrogate import by_name

        surrogate = by_name(self.surrogate, self.alpha)
        if self.kind == "if":
            return IF(threshold=self.threshold, reset=self.reset, surrogate=surrogate,
                      detach_reset=self.detach_reset, learn_threshold=self.learn_threshold)
        return LIF(beta=self.beta, threshold=self.threshold, reset=self.reset, surrogate=surrogate,
                   detach_reset=self.detach_reset, learn_beta=self.learn_beta, learn_threshold=self.learn_threshold)


@dataclass(frozen=True)
class SNNSpec:
    """A directly trained SNN: an architecture from :mod:`spikec.models` with neurons as activations,
    wrapped in a :class:`~spikec.SpikingClassifier`. ``readout`` "count" / "first_spike" adds a
    neuron layer after the last linear layer; "membrane" reads that layer's output directly."""

    arch: str
    arch_config: dict
    neuron: NeuronConfig = field(default_factory=NeuronConfig)
    timesteps: int = 8
    coding: str = "rate"
    readout: str = "membrane"

    def build(self) -> nn.Module:
        from spikec.models import build_model
        from spikec.snn import SpikingClassifier

        net = build_model(self.arch, act=self.neuron.make, **self.arch_config)
        if self.readout != "membrane":
            net = nn.Sequential(net, self.neuron.make())
        return SpikingClassifier(net, self.timesteps, encoding=self.coding, readout=self.readout)

    def to_dict(self) -> dict:
        return {
            "arch": self.arch, "arch_config": dict(self.arch_config), "neuron": asdict(self.neuron),
            "timesteps": int(self.timesteps), "coding": self.coding, "readout": self.readout,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "SNNSpec":
        return cls(
            arch=d["arch"], arch_config=dict(d["arch_config"]), neuron=NeuronConfig(**d.get("neuron", {})),
            timesteps=int(d["timesteps"]), coding=d.get("coding", "rate"), readout=d.get("readout", "membrane"),
        )

    def checkpoint(self, model: nn.Module, **extra) -> dict:
        """The ``"snn"`` checkpoint dict of ``model`` (built by :meth:`build`)."""
        return {"kind": "snn", **self.to_dict(), "state_dict": model.state_dict(), **extra}
