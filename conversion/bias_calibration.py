"""Bias calibration of a rate-converted network for a chosen ``T`` (Li et al., ICML 2021, "A free lunch from ANN").

At small ``T`` an IF layer's rate is not the activation it stands for: spikes arrive unevenly and
part of the input stays in the membrane. The error has a mean per channel, and it compounds through
depth. Measuring that mean on calibration data, layer by layer from the input, and adding it to
the bias of the Conv/Linear feeding the neuron removes it where it arises. The correction is a
plain bias change, so the network keeps its structure, checkpoints, exports and hardware mapping.

The reference of a layer is the ANN activation clipped to the neuron's threshold (a ReLU layer's
larger values cannot be carried by one spike per step) or the QCFS output (already within it).
The correction depends on ``T``: it is made for one, and other ``T`` are evaluated as they come.
"""
from __future__ import annotations

import operator
import time
from dataclasses import asdict, dataclass

import torch
from torch import fx, nn

from spikec.conversion.normalize import calibration_batches
from spikec.conversion.prepare import activation_nodes, prepare_ann
from spikec.conversion.rate_modules import BalancedIF
from spikec.errors import SpikecError, UsageError
from spikec.module import reset

WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_PASS_THROUGH = ("unflatten", "flatten")  # the time folding MultiStep wraps around every neuron


@dataclass(frozen=True)
class BiasCalibrationReport:
    """What :func:`calibrate_bias` did: the ``T`` it corrected for, samples, sweeps, seconds, and per
    neuron layer the mean absolute rate error (in units of the layer's mean threshold) before each sweep."""

    timesteps: int
    samples: int
    sweeps: int
    seconds: float
    error_before: dict[str, list[float]]

    def as_dict(self) -> dict:
        return asdict(self)


class _Stop(Exception):
    """Raised by the measuring hook: nothing after the measured layer needs to run."""


@torch.no_grad()
def calibrate_bias(snn, ann: nn.Module, calib_data, timesteps: int | None = None, samples: int | None = None,
                   batch_size: int = 128, sweeps: int = 2, progress: bool = False) -> BiasCalibrationReport:
    """Correct, in place, the biases feeding every neuron layer of the rate SNN ``snn`` (converted from
    ``ann`` by :func:`~spikec.conversion.rate.convert_rate`) so that each channel's mean rate at ``timesteps``
    (default ``snn.timesteps``) equals the ANN's on ``calib_data`` (first ``samples``; pass a stratified draw).

    Layers are corrected in order, each measured with the ones before it already corrected; ``sweeps``
    repeats the whole pass. Costs about ``sweeps * layers / 2`` runs of ``T`` steps over the data.
    """
    T = int(snn.timesteps if timesteps is None else timesteps)
    if T < 1:
        raise UsageError(f"bias calibration needs timesteps >= 1, got {T}")
    if int(sweeps) < 1:
        raise UsageError(f"bias calibration needs sweeps >= 1, got {sweeps}")
    start = time.perf_counter()
    device = _device_of(snn)
    batches = [b.to(device) for b in calibration_batches(calib_data, batch_size, samples)]
    if not batches or batches[0].shape[0] == 0:
        raise UsageError("bias calibration data is empty")
    layers = neuron_layers(snn)
    targets = _ann_means(ann, batches, {name: neuron.threshold for name, neuron, _ in layers}, device)
    was_training, old_T = snn.training, snn.timesteps
    snn.eval()
    snn.timesteps = T
    errors: dict[str, list[float]] = {name: [] for name, _, _ in layers}
    try:
        for sweep in range(int(sweeps)):
            for k, (name, neuron, feeder) in enumerate(layers):
                if progress:
                    print(f"\rbias calibration at T={T}: sweep {sweep + 1}/{sweeps}, layer {k + 1}/{len(layers)} "
                          f"({name})", end="", flush=True)
                error = targets[name] - _snn_mean(snn, neuron, batches)
                errors[name].append(float(error.abs().mean() / neuron.threshold.float().mean().clamp_min(1e-12)))
                _add_to_bias(feeder, error)
    finally:
        snn.timesteps = old_T
        snn.train(was_training)
        reset(snn)
        if progress:
            print(flush=True)
    report = BiasCalibrationReport(T, sum(b.shape[0] for b in batches), int(sweeps), time.perf_counter() - start, errors)
    if hasattr(snn, "conversion"):
        snn.conversion["bias_calibration"] = {"timesteps": T, "samples": report.samples, "sweeps": report.sweeps}
    return report


def neuron_layers(snn) -> list[tuple[str, BalancedIF, nn.Module]]:
    """``(name, neuron, the Conv/Linear whose bias feeds it)`` for every neuron layer, in graph order.

    Through a residual addition the feeder is the first Conv/Linear among the summands."""
    gm = _graph_module(snn)
    modules = dict(gm.named_modules())
    out = []
    for node in gm.graph.nodes:
        if node.op == "call_module" and isinstance(modules.get(node.target), BalancedIF):
            feeder = _feeder(node.args[0], modules)
            if feeder is None:
                raise SpikecError(f"bias calibration: neuron layer {node.target} is not fed by a Conv or Linear "
                                  "layer (directly or through a residual addition)")
            out.append((node.target, modules[node.target], feeder))
    if not out:
        raise SpikecError("bias calibration: the network has no converted neuron layers")
    return out


def _graph_module(snn) -> fx.GraphModule:
    gm = getattr(getattr(snn, "net", None), "net", None)
    if not isinstance(gm, fx.GraphModule):
        raise SpikecError("bias calibration needs a rate SNN made by spikec.convert (coding='rate')")
    return gm


def _feeder(node, modules) -> nn.Module | None:
    while isinstance(node, fx.Node) and node.op == "call_method" and node.target in _PASS_THROUGH:
        node = node.args[0]
    if not isinstance(node, fx.Node):
        return None
    if node.op == "call_module" and isinstance(modules.get(node.target), WEIGHTED):
        return modules[node.target]
    if node.op == "call_function" and node.target in (operator.add, torch.add):
        for arg in node.args:
            found = _feeder(arg, modules) if isinstance(arg, fx.Node) and arg.op == "call_module" else None
            if found is not None:
                return found
    return None


def _per_channel_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean over every axis but the channel axis (1) of a ``[B, C, ...]`` tensor, as float64."""
    dims = [0] + list(range(2, x.dim()))
    return x.double().mean(dim=dims) if x.dim() > 1 else x.double().mean().reshape(1)


def _ann_means(ann, batches, thresholds, device) -> dict[str, torch.Tensor]:
    """Per-channel mean of each activation of the prepared ANN, clipped to its neuron's threshold."""
    prepared = prepare_ann(ann).to(device).eval()
    modules = dict(prepared.named_modules())
    sums: dict[str, torch.Tensor] = {}
    handles = []
    names = [n.target for n in activation_nodes(prepared)]
    missing = set(thresholds) - set(names)
    if missing:
        raise SpikecError(f"bias calibration: the ANN has no activation {sorted(missing)[0]!r}; pass the ANN the "
                          "network was converted from")

    def hook(name):
        def record(module, inputs, output):
            thr = thresholds[name].to(output.device, output.dtype)
            value = _per_channel_mean(torch.minimum(output, thr)) * output.shape[0]
            sums[name] = sums.get(name, 0) + value
        return record

    for name in thresholds:
        handles.append(modules[name].register_forward_hook(hook(name)))
    try:
        for batch in batches:
            prepared(batch)
    finally:
        for h in handles:
            h.remove()
    total = sum(b.shape[0] for b in batches)
    return {name: s / total for name, s in sums.items()}


def _snn_mean(snn, neuron: BalancedIF, batches) -> torch.Tensor:
    """Per-channel mean rate times threshold of ``neuron`` over ``T`` steps, the network cut after it."""
    total, acc = 0, None

    def record(module, inputs, output):
        nonlocal acc
        rate = output.float().mean(0) * module.threshold.to(output.device).float()  # [B, C, ...]
        value = _per_channel_mean(rate) * rate.shape[0]
        acc = value if acc is None else acc + value
        raise _Stop

    handle = neuron.register_forward_hook(record)
    try:
        for batch in batches:
            try:
                snn(batch)
            except _Stop:
                pass
            total += batch.shape[0]
    finally:
        handle.remove()
        reset(snn)
    return acc / total


def _add_to_bias(layer: nn.Module, error: torch.Tensor) -> None:
    channels = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
    if error.numel() not in (1, channels):
        raise SpikecError(f"bias calibration: {type(layer).__name__} has {channels} output channels but its neuron "
                          f"layer has {error.numel()}")
    shift = error.to(layer.weight.dtype).expand(channels).to(layer.weight.device)
    if layer.bias is None:
        layer.bias = nn.Parameter(shift.clone())
    else:
        layer.bias.add_(shift)


def _device_of(snn) -> torch.device:
    p = next(snn.parameters(), None)
    return p.device if p is not None else torch.device("cpu")
