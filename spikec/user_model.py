"""Load a user's own ANN for conversion: ``file.py:ClassName``, ``torchvision:NAME`` or a ``.pt2`` program.

- ``path/to/file.py:ClassName`` imports the file (its code runs) and builds ``ClassName(**model_args)``;
  ``weights`` is a ``state_dict`` file read with ``torch.load(weights_only=True)``.
- ``torchvision:NAME`` builds ``torchvision.models.get_model(NAME, weights=None, num_classes=...)``
  (torchvision's code runs, nothing is downloaded); ``weights`` as above.
- ``program.pt2`` is read with ``torch.export.load``, which deserialises a graph of ATen ops and
  its tensors without running Python code from the file (:mod:`spikec.export_program`).

The result is the model in eval mode plus an ``"ann"`` checkpoint of architecture ``"graph"``:
the model's prepared graph as plain data (:mod:`spikec.conversion.graph_data`) and its weights, so
the networks converted from it are saved and reloaded like any other, without the user's code.
Every failure is one line naming the flag, file, class or module at fault.
"""
from __future__ import annotations

import ast
import importlib.util
import inspect
import os
import sys
from dataclasses import dataclass, field

import torch
from torch import fx, nn

from spikec.errors import SpikecError, UsageError

FORMS = "path/to/file.py:ClassName, torchvision:NAME or a torch.export program file.pt2"


@dataclass(frozen=True)
class ModelSpec:
    """What ``--model`` and its companion flags ask for."""

    model: str
    weights: str | None = None
    model_args: dict = field(default_factory=dict)
    num_classes: int | None = None
    input_shape: tuple[int, ...] | None = None

    @property
    def kind(self) -> str:
        if self.model.startswith("torchvision:"):
            return "torchvision"
        if self.model.endswith(".pt2"):
            return "program"
        if ":" in self.model and self.model.rsplit(":", 1)[0].endswith(".py"):
            return "file"
        raise UsageError(f"--model {self.model!r}: expected {FORMS}")


@dataclass
class UserModel:
    """The loaded model (eval mode), the one-sample input shape and the checkpoint describing it."""

    module: nn.Module
    input_shape: tuple[int, ...]
    checkpoint: dict


def parse_model_args(text: str | None) -> dict:
    """``"width=0.5,depth=3,name=small"`` -> ``{"width": 0.5, "depth": 3, "name": "small"}``.

    Values are Python literals (``ast.literal_eval``: numbers, strings, tuples, lists, True/False/None);
    anything else stays a string. Commas inside brackets do not split.
    """
    if not text:
        return {}
    out = {}
    for item in _split_top_level(text):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise UsageError(f"--model-args {text!r}: expected key=value pairs separated by commas, got {item.strip()!r}")
        try:
            out[key] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            out[key] = value.strip()
    return out


def _split_top_level(text: str) -> list[str]:
    """Split at commas outside brackets and quotes."""
    parts, depth, quote, current = [], 0, None, []
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return parts


def parse_shape(text: str, flag: str = "--input-shape") -> tuple[int, ...]:
    """``"3,32,32"`` -> ``(3, 32, 32)``; a UsageError naming ``flag`` otherwise."""
    try:
        shape = tuple(int(p) for p in str(text).replace("x", ",").split(",") if p.strip())
    except ValueError:
        shape = ()
    if not shape or any(d <= 0 for d in shape):
        raise UsageError(f"{flag} {text!r}: expected positive integers like 3,32,32")
    return shape


def load_user_model(spec: ModelSpec) -> UserModel:
    """Build and check the model ``spec`` names; see the module docstring for what runs."""
    kind = spec.kind
    if kind == "program":
        if spec.weights:
            raise UsageError(f"--weights does not apply to a .pt2 program ({spec.model} holds its own weights)")
        if spec.model_args:
            raise UsageError(f"--model-args does not apply to a .pt2 program ({spec.model})")
        module, shape = _from_program(spec.model)
    else:
        module = _from_torchvision(spec) if kind == "torchvision" else _from_file(spec)
        if spec.weights:
            load_weights(module, spec.weights)
        shape = None
    module.eval()
    input_shape = spec.input_shape or shape
    if input_shape is None:
        raise UsageError(f"--model {spec.model}: give --input-shape C,H,W (one sample's shape)")
    if spec.input_shape and shape and tuple(spec.input_shape) != tuple(shape):
        raise UsageError(f"--input-shape {','.join(map(str, spec.input_shape))} does not match the shape {spec.model} "
                         f"was exported for ({','.join(map(str, shape))})")
    return UserModel(module, tuple(input_shape), _checkpoint(module, spec, tuple(input_shape)))


# ---------------------------------------------------------------- the three forms


def _from_file(spec: ModelSpec) -> nn.Module:
    path, class_name = spec.model.rsplit(":", 1)
    if not os.path.isfile(path):
        raise UsageError(f"--model {spec.model}: no such file {path}")
    module_name = f"spikec_user_model_{abs(hash(os.path.abspath(path)))}"
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise UsageError(f"--model {spec.model}: cannot import {path}")
    mod = importlib.util.module_from_spec(loader_spec)
    sys.modules[module_name] = mod  # dataclasses and pickling look the module up by name
    try:
        loader_spec.loader.exec_module(mod)
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise UsageError(f"--model {spec.model}: importing {path} failed: {_first(exc)}") from exc
    cls = getattr(mod, class_name, None)
    if cls is None:
        found = sorted(n for n, v in vars(mod).items() if inspect.isclass(v) and issubclass(v, nn.Module)
                       and v.__module__ == module_name)
        hint = f" (nn.Module classes there: {', '.join(found)})" if found else " (it defines no nn.Module class)"
        raise UsageError(f"--model {spec.model}: {path} has no class {class_name}{hint}")
    if not (inspect.isclass(cls) and issubclass(cls, nn.Module)):
        raise UsageError(f"--model {spec.model}: {class_name} in {path} is not an nn.Module class")
    return _construct(cls, spec, class_name)


def _from_torchvision(spec: ModelSpec) -> nn.Module:
    name = spec.model.split(":", 1)[1]
    try:
        import torchvision
    except ImportError as exc:
        raise UsageError(f"--model {spec.model}: torchvision is not installed") from exc
    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        close = [k for k in known if k.startswith(name[:3])][:8]
        raise UsageError(f"--model {spec.model}: torchvision has no classification model {name!r}"
                         + (f" (similar: {', '.join(close)})" if close else ""))
    kwargs = dict(spec.model_args)
    if spec.num_classes is not None:
        kwargs.setdefault("num_classes", int(spec.num_classes))
    try:
        return torchvision.models.get_model(name, weights=None, **kwargs)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"--model {spec.model}: cannot build it with {kwargs}: {_first(exc)}") from exc


def _from_program(path: str) -> tuple[nn.Module, tuple[int, ...] | None]:
    from spikec.export_program import load_program, program_input_shape, program_module

    if not os.path.isfile(path):
        raise UsageError(f"--model {path}: no such file")
    try:
        program = load_program(path)
    except Exception as exc:  # torch raises many kinds for foreign or corrupt files
        raise UsageError(f"--model {path}: not a torch.export program: {_first(exc)}") from exc
    return program_module(program, path), program_input_shape(program)


def _construct(cls, spec: ModelSpec, class_name: str) -> nn.Module:
    kwargs = dict(spec.model_args)
    if spec.num_classes is not None and "num_classes" in inspect.signature(cls).parameters:
        kwargs.setdefault("num_classes", int(spec.num_classes))
    try:
        return cls(**kwargs)
    except Exception as exc:
        args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        raise UsageError(f"--model {spec.model}: {class_name}({args}) failed: {_first(exc)}") from exc


# ---------------------------------------------------------------- weights


def load_weights(module: nn.Module, path: str) -> None:
    """Load a ``state_dict`` file into ``module`` (``weights_only=True``); one line naming what does not fit."""
    if not os.path.isfile(path):
        raise UsageError(f"--weights {path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UsageError(f"--weights {path}: not a weights-only torch file: {_first(exc)}") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise UsageError(f"--weights {path}: expected a state_dict (a dict of tensors)")
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    name = type(module).__name__
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected {_few(unexpected)}")
        raise UsageError(f"--weights {path} does not fit {name}: {'; '.join(parts)}")
    for key, value in state.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise UsageError(f"--weights {path} does not fit {name}: {key} has shape {tuple(value.shape)} in the file, "
                             f"{tuple(own[key].shape)} in the model")
    module.load_state_dict(state)


def _few(keys: list[str], n: int = 3) -> str:
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


# ---------------------------------------------------------------- tracing and the checkpoint


class _PathTracer(fx.Tracer):
    """fx tracer that remembers which module it was inside when tracing failed."""

    def __init__(self):
        super().__init__()
        self.stack: list[tuple[str, str]] = []
        self.failed_in: tuple[str, str] | None = None

    def is_leaf_module(self, m, qualname):
        from spikec.conversion.qcfs import QCFS
        from spikec.module import SpikingModule

        return isinstance(m, (QCFS, SpikingModule)) or super().is_leaf_module(m, qualname)

    def call_module(self, m, forward, args, kwargs):
        self.stack.append((self.path_of_module(m), type(m).__name__))
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:
                self.failed_in = self.stack[-1]
            raise
        finally:
            self.stack.pop()


def check_traceable(module: nn.Module, name: str) -> None:
    """Fail with one line naming the submodule whose forward torch.fx cannot trace."""
    from spikec.conversion.graph import UnsupportedOpError

    tracer = _PathTracer()
    try:
        tracer.trace(module)
    except Exception as exc:
        path, cls = tracer.failed_in or ("", type(module).__name__)
        at = f"module '{path}' ({cls})" if path else f"the forward of {cls}"
        raise UnsupportedOpError(f"{name}: cannot trace {at} with torch.fx (data-dependent control flow?): "
                                 f"{_first(exc)}") from exc


def _checkpoint(module: nn.Module, spec: ModelSpec, input_shape: tuple[int, ...]) -> dict:
    from spikec.conversion.graph_data import GRAPH_ARCH, graph_to_data
    from spikec.conversion.prepare import prepare_ann

    if spec.kind != "program":
        check_traceable(module, spec.model)
    prepared = prepare_ann(module)
    with torch.no_grad():
        try:
            out = prepared(torch.zeros(1, *input_shape))
        except Exception as exc:
            raise SpikecError(f"--model {spec.model} does not accept inputs of shape {input_shape}: {_first(exc)}") from exc
    if out.dim() != 2:
        raise SpikecError(f"--model {spec.model} returns shape {tuple(out.shape)} for one sample; conversion needs "
                          f"class scores [batch, classes]")
    source = {"model": spec.model, "model_args": dict(spec.model_args), "weights": spec.weights}
    return {
        "kind": "ann",
        "arch": GRAPH_ARCH,
        "arch_config": {"graph": graph_to_data(prepared), "input_shape": list(input_shape),
                        "num_classes": int(out.shape[1])},
        "act": {"name": "relu"},
        "state_dict": {k: v.detach().clone() for k, v in prepared.state_dict().items()},
        "source": source,
    }


def _first(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
