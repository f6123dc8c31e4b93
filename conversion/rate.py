"""Rate-coded ANN-to-SNN conversion: :func:`convert_rate` and the :class:`RateSNN` it returns.

Steps: fold batch norms and canonicalise the graph (:func:`~spikec.conversion.prepare.prepare_ann`),
measure each activation's scale on calibration data (:func:`~spikec.conversion.normalize.calibrate`;
QCFS layers bring their trained threshold), then rewrite the graph with IF neurons whose
thresholds are those scales (:func:`~spikec.conversion.rate_graph.build_rate_graph`). The SNN
receives the analog input at every step (direct coding) and reads the class scores from the
accumulated input of a non-spiking output layer divided by ``T`` (membrane readout).
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import torch
from torch import nn

from spikec.conversion.maxpool import METHODS as MAXPOOL_METHODS
from spikec.conversion.normalize import NormSpec, calibrate, calibration_batches
from spikec.conversion.prepare import activation_nodes, prepare_ann
from spikec.conversion.qcfs import QCFS
from spikec.conversion.rate_graph import build_rate_graph, channel_shape, propagate_shapes
from spikec.errors import SpikecError, UsageError
from spikec.snn import SpikingClassifier

RESETS = ("subtract", "zero")
CHECKPOINT_KIND = "rate_snn"
CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class RateOptions:
    """How an ANN is converted: threshold normalisation, initial membrane (fraction of threshold), max-pool
    rule, and the neurons' reset ("subtract", or "zero" for NIR and hardware that reset to zero)."""

    norm: str = "percentile:99.9"
    v_init: float = 0.5
    maxpool: str = "count"
    reset: str = "subtract"

    def __post_init__(self):
        object.__setattr__(self, "norm", str(NormSpec.parse(self.norm)))
        if self.maxpool not in MAXPOOL_METHODS:
            raise UsageError(f"maxpool must be one of {MAXPOOL_METHODS}, got {self.maxpool!r}")
        if not 0.0 <= float(self.v_init) <= 1.0:
            raise UsageError(f"v_init is a fraction of the threshold in [0, 1], got {self.v_init}")
        if self.reset not in RESETS:
            raise UsageError(f"reset must be one of {RESETS}, got {self.reset!r}")


class RateSNN(SpikingClassifier):
    """A converted network: static ``[B, ...]`` in, class scores ``[B, classes]`` out after ``timesteps`` steps.

    ``timesteps`` may be changed at any time. ``conversion`` holds plain data describing how the
    network was made (options, input shape, neuron layers, QCFS levels, timings).
    """

    def __init__(self, net: nn.Module, timesteps: int, conversion: dict):
        super().__init__(net, timesteps, encoding="direct", readout="membrane")
        self.conversion = dict(conversion)


def convert_rate(
    ann: nn.Module,
    calib_data,
    timesteps: int = 32,
    norm: str = "percentile:99.9",
    v_init: float | None = None,
    maxpool: str = "count",
    calib_samples: int | None = None,
    batch_size: int = 256,
    reset: str = "subtract",
) -> RateSNN:
    """Convert a trained ``ann`` into a rate-coded :class:`RateSNN` of IF neurons.

    ``calib_data``: inputs (a tensor, dataset or data loader; labels ignored), of which the first
    ``calib_samples`` (default all) set the thresholds. ``norm``: ``"percentile:p"``, ``"max"`` or
    ``"channel:p"`` (see :mod:`spikec.conversion.normalize`). ``reset``: ``"subtract"`` (soft reset,
    the accurate default) or ``"zero"`` (what NIR can express; fine-tune afterwards to recover the
    accuracy, :mod:`spikec.conversion.finetune`). ``v_init``: initial membrane as a
    fraction of the threshold. ``maxpool``: ``"count"`` or ``"gate"`` (see
    :mod:`spikec.conversion.maxpool`). ``ann`` itself is left unchanged.
    """
    if v_init is None:  # half a threshold for soft reset; NIR's reset-to-zero neurons start empty
        v_init = 0.5 if reset == "subtract" else 0.0
    options = RateOptions(norm, v_init, maxpool, reset)
    _check_timesteps(timesteps)
    start = time.perf_counter()
    if isinstance(calib_data, Iterator):  # a one-shot iterator: keep its batches for the second look
        calib_data = list(calib_data)
    prepared = prepare_ann(ann)
    first = next(iter(calibration_batches(calib_data, batch_size, calib_samples)), None)
    if first is None or first.shape[0] == 0:
        raise UsageError("calibration data is empty")
    input_shape = tuple(first.shape[1:])
    _propagate(prepared, input_shape)
    calib_start = time.perf_counter()
    scales = calibrate(prepared, calib_data, options.norm, batch_size, calib_samples)
    calib_seconds = time.perf_counter() - calib_start
    snn = _assemble(prepared, input_shape, scales, options, timesteps)
    snn.conversion.update(calibration_seconds=calib_seconds, seconds=time.perf_counter() - start)
    return snn


def _propagate(prepared, input_shape) -> None:
    try:
        propagate_shapes(prepared, input_shape)
    except RuntimeError as exc:
        root = exc
        while root.__cause__ is not None:
            root = root.__cause__
        first = str(root).strip().splitlines()[0] if str(root).strip() else type(root).__name__
        raise SpikecError(f"the ANN does not accept inputs of shape {tuple(input_shape)}: {first}") from exc


def _assemble(prepared, input_shape, scales, options: RateOptions, timesteps: int) -> RateSNN:
    """The RateSNN of a prepared graph whose shapes were propagated."""
    net = build_rate_graph(prepared, scales, options.v_init, options.maxpool, options.reset)
    modules = dict(prepared.named_modules())
    acts = activation_nodes(prepared)
    conversion = {
        **asdict(options),
        "input_shape": list(input_shape),
        "neuron_layers": [n.target for n in acts],
        "qcfs_levels": {n.target: modules[n.target].levels for n in acts if isinstance(modules[n.target], QCFS)},
    }
    return RateSNN(net, timesteps, conversion)


def _check_timesteps(timesteps) -> None:
    if int(timesteps) < 1:
        raise UsageError(f"timesteps must be >= 1, got {timesteps}")


def placeholder_scales(prepared, norm: str) -> dict[str, torch.Tensor]:
    """Scales of the right shapes (all ones) for rebuilding a saved network's structure."""
    spec = NormSpec.parse(norm)
    modules = dict(prepared.named_modules())
    out = {}
    for node in activation_nodes(prepared):
        per_channel = spec.per_channel and not isinstance(modules[node.target], QCFS)
        out[node.target] = torch.ones(channel_shape(node)) if per_channel else torch.ones(())
    return out


def rate_snn_checkpoint(snn: RateSNN, ann_ckpt: dict, **extra) -> dict:
    """The checkpoint dict (plain data and tensors) of ``snn``, converted from the ANN checkpoint ``ann_ckpt``.

    Keeps the ANN's ``arch``, ``arch_config`` and ``act`` (to rebuild the graph), its ``dataset``
    if recorded, the conversion options and the SNN's ``state_dict``; ``extra`` (e.g. ``metrics``)
    is added as is.
    """
    for key in ("arch", "arch_config"):
        if key not in ann_ckpt:
            raise SpikecError(f"cannot save a rate_snn checkpoint: the ANN checkpoint has no {key!r}")
    ckpt = {
        "kind": CHECKPOINT_KIND,
        "version": CHECKPOINT_VERSION,
        "arch": ann_ckpt["arch"],
        "arch_config": dict(ann_ckpt["arch_config"]),
        "act": dict(ann_ckpt.get("act") or {"name": "relu"}),
        "conversion": {k: v for k, v in snn.conversion.items() if k not in ("seconds", "calibration_seconds")},
        "timesteps": int(snn.timesteps),
        "state_dict": {k: v.detach().cpu().clone() for k, v in snn.state_dict().items()},
    }
    for key in ("dataset", "source"):  # source: the user's --model a graph architecture came from
        if ann_ckpt.get(key) is not None:
            ckpt[key] = ann_ckpt[key]
    ckpt.update(extra)
    return ckpt


def _add_calibrated_biases(snn: RateSNN, state_dict: dict) -> None:
    """Zero biases where the saved network has one and the rebuilt layer none (bias calibration adds them)."""
    modules = dict(snn.named_modules())
    for key, value in state_dict.items():
        path, _, leaf = key.rpartition(".")
        layer = modules.get(path)
        if leaf == "bias" and isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)) and layer.bias is None \
                and isinstance(value, torch.Tensor) and value.shape == (layer.weight.shape[0],):
            layer.bias = nn.Parameter(torch.zeros_like(value, dtype=layer.weight.dtype))


def rate_snn_from_checkpoint(ckpt: dict) -> RateSNN:
    """Rebuild the :class:`RateSNN` a :func:`rate_snn_checkpoint` dict describes (eval mode)."""
    from spikec.checkpoint import build_ann

    if ckpt.get("kind") != CHECKPOINT_KIND:
        raise SpikecError(f"not a rate-coded SNN checkpoint (kind {ckpt.get('kind')!r})")
    if int(ckpt.get("version", 0)) > CHECKPOINT_VERSION:
        raise SpikecError(f"rate_snn checkpoint version {ckpt.get('version')} is newer than this spikec reads "
                          f"({CHECKPOINT_VERSION})")
    conv = ckpt["conversion"]
    options = RateOptions(conv["norm"], conv["v_init"], conv["maxpool"], conv.get("reset", "subtract"))
    try:
        ann = build_ann(ckpt["arch"], ckpt["arch_config"], ckpt.get("act"))
    except (ValueError, TypeError) as exc:
        raise SpikecError(f"rate_snn checkpoint: cannot rebuild architecture {ckpt.get('arch')!r}: {exc}") from exc
    prepared = prepare_ann(ann)
    _propagate(prepared, conv["input_shape"])
    snn = _assemble(prepared, conv["input_shape"], placeholder_scales(prepared, options.norm), options,
                    int(ckpt.get("timesteps", 32)))
    _add_calibrated_biases(snn, ckpt["state_dict"])
    try:
        snn.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise SpikecError(f"rate_snn checkpoint does not match its architecture: "
                          f"{str(exc).strip().splitlines()[0]}") from exc
    snn.conversion.update({k: v for k, v in conv.items() if k not in snn.conversion})
    return snn.eval()
