"""neurobench's metrics on a spikec SNN, beside spikec's own counts of the same run.

:func:`neurobench_report` wraps the network in neurobench's ``TorchModel`` (spikec's neuron
layers, IF and LIF, registered as its activation modules), runs ``neurobench.benchmarks.Benchmark`` with the
static metrics ``Footprint`` and ``ConnectionSparsity`` and the workload metrics
``ClassificationAccuracy``, ``ActivationSparsity`` and ``SynapticOperations``, then measures the
same data with the same seed through :func:`spikec.compress.metrics.activity` (synaptic
operations) and :func:`spikec.record` (spikes). How the two definitions relate is in
``docs/metrics.md``: the total operation count is the same quantity in both, while the split
into accumulates (AC) and multiply-accumulates (MAC) differs where a layer's input is a
non-binary value derived from spikes (after average pooling, or spikes scaled by a threshold).

neurobench is optional (``pip install "spikec[neurobench]"``); without it the functions here
raise a :class:`~spikec.errors.SpikecError` saying so.
"""
from __future__ import annotations

import contextlib
import io

import torch
from torch import nn

from spikec.errors import SpikecError

NEUROBENCH_VERSION = "2.3.0"


def require_neurobench():
    """The ``neurobench`` module, or a one-line error saying how to install it."""
    try:
        import neurobench
    except ImportError as exc:
        raise SpikecError(f"neurobench is not installed: pip install 'spikec[neurobench]' "
                          f"(neurobench=={NEUROBENCH_VERSION})") from exc
    return neurobench


def run_neurobench(model: nn.Module, data, batch_size: int = 64, seed: int = 0) -> dict:
    """neurobench's results dict for ``model`` on ``data`` (a TensorDataset or ``(x, y)``), in eval mode."""
    require_neurobench()
    from neurobench.benchmarks import Benchmark
    from neurobench.metrics.static import ConnectionSparsity, Footprint
    from neurobench.metrics.workload import ActivationSparsity, ClassificationAccuracy, SynapticOperations
    from neurobench.models import TorchModel

    from spikec.neurons import LIF

    # its own generator: iterating a DataLoader otherwise draws from the global RNG, and rate-coded
    # inputs must be the same Bernoulli draws as in spikec's run
    loader = torch.utils.data.DataLoader(_as_dataset(data), batch_size=batch_size, shuffle=False,
                                         generator=torch.Generator())
    wrapped = TorchModel(model)
    wrapped.add_activation_module(LIF)  # spikec's neurons (IF is a LIF); spike max pools are not neurons
    benchmark = Benchmark(wrapped, loader, [], [lambda scores: scores.argmax(1)],
                          [[Footprint, ConnectionSparsity],
                           [ClassificationAccuracy, ActivationSparsity, SynapticOperations]])
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
            torch.manual_seed(seed)
            results = benchmark.run(quiet=True)
    finally:
        wrapped.cleanup_hooks()
    return {k: (dict(v) if isinstance(v, dict) else float(v)) for k, v in results.items()}


def spikec_counts(model: nn.Module, data, batch_size: int = 64, seed: int = 0) -> dict:
    """spikec's measures of the quantities neurobench reports, on the same run."""
    from spikec.compress.layers import synaptic_layers
    from spikec.compress.metrics import activity
    from spikec.record import record

    with record(model, first_spike_times=False) as rec:
        act = activity(model, data, batch_size=batch_size, seed=seed)
    weights = [m.weight.detach() for m in synaptic_layers(model).values()]
    total = sum(w.numel() for w in weights)
    zeros = sum(int((w == 0).sum()) for w in weights)
    timesteps = int(getattr(model, "timesteps", 1))
    neuron_steps = rec.num_neurons * timesteps
    return {
        "accuracy": act.accuracy,
        "footprint_bytes": sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()]),
        "connection_sparsity": zeros / max(total, 1),
        "activation_sparsity": 1.0 - rec.spikes_per_inference / max(neuron_steps, 1),
        "spikes_per_inference": rec.spikes_per_inference,
        "sops_per_inference": act.sops_per_inference,
        "macs_per_inference": act.snn_macs_per_inference,
        "dense_macs_per_inference": act.ann_macs_per_inference,
        "nonbinary_input_ops_per_inference": sum(
            v["sops_per_inference"] for v in act.layers.values() if not v["binary_input"]),
        "timesteps": timesteps,
        "samples": act.samples,
    }


def neurobench_report(model: nn.Module, data, batch_size: int = 64, seed: int = 0) -> dict:
    """``{"neurobench": ..., "spikec": ..., "agreement": ...}`` for ``model`` on ``data``.

    ``agreement`` holds the ratios the docs discuss: total synaptic operations (neurobench's
    effective ACs + MACs over spikec's SOPs + MACs; 1.0 when the definitions agree) and ACs alone.
    """
    model.eval()
    nb = run_neurobench(model, data, batch_size, seed)
    ours = spikec_counts(model, data, batch_size, seed)
    ops = nb.get("SynapticOperations", {})
    nb_total = ops.get("Effective_ACs", 0.0) + ops.get("Effective_MACs", 0.0)
    our_total = ours["sops_per_inference"] + ours["macs_per_inference"]
    agreement = {
        "synaptic_ops_ratio": nb_total / our_total if our_total else None,
        "ac_ratio": ops.get("Effective_ACs", 0.0) / ours["sops_per_inference"] if ours["sops_per_inference"] else None,
        "accuracy_equal": abs(nb.get("ClassificationAccuracy", -1) - (ours["accuracy"] or 0)) < 1e-9,
    }
    return {"neurobench": nb, "spikec": ours, "agreement": agreement, "neurobench_version": _version()}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("neurobench")
    except PackageNotFoundError:
        return "unknown"


def format_report(report: dict) -> list[str]:
    """Lines for a terminal: each metric as neurobench and spikec count it."""
    nb, ours = report["neurobench"], report["spikec"]
    ops = nb.get("SynapticOperations", {})
    rows = [
        ("accuracy", nb.get("ClassificationAccuracy"), ours["accuracy"], "{:.4f}"),
        ("footprint (bytes)", nb.get("Footprint"), ours["footprint_bytes"], "{:.0f}"),
        ("connection sparsity", nb.get("ConnectionSparsity"), ours["connection_sparsity"], "{:.4f}"),
        ("activation sparsity", nb.get("ActivationSparsity"), ours["activation_sparsity"], "{:.4f}"),
        ("effective ACs / SOPs", ops.get("Effective_ACs"), ours["sops_per_inference"], "{:.1f}"),
        ("effective MACs", ops.get("Effective_MACs"), ours["macs_per_inference"], "{:.1f}"),
        ("dense synaptic ops", ops.get("Dense"), ours["dense_macs_per_inference"] * ours["timesteps"], "{:.1f}"),
    ]
    lines = [f"{'metric (per inference)':<24}{'neurobench':>16}{'spikec':>16}"]
    for name, a, b, fmt in rows:
        lines.append(f"{name:<24}{'-' if a is None else fmt.format(a):>16}{'-' if b is None else fmt.format(b):>16}")
    ratio = report["agreement"]["synaptic_ops_ratio"]
    if ratio is not None:
        lines.append(f"total synaptic ops, neurobench / spikec: {ratio:.6f}")
    return lines


def _as_dataset(data):
    if isinstance(data, torch.utils.data.Dataset):
        return data
    x, y = data
    return torch.utils.data.TensorDataset(x, y)
