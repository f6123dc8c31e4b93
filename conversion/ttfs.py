"""ANN -> TTFS SNN conversion with the exact ReLU-to-spike-time mapping of Stanojevic et al.

(Neural Networks 2023; Nature Communications 2024.) Every ReLU layer becomes a layer of
non-leaky integrate-and-fire neurons with linear post-synaptic potentials that fires at most once,
inside its own time window: a ReLU output ``a`` is the spike at local time ``1 - a / M`` of the
window, where ``M`` (the window's scale) is the largest activation seen in calibration times a
safety margin; no spike means ``a = 0``. The output layer is read from its membrane. In real
arithmetic the SNN computes the ANN exactly (activations above ``M`` are clipped to ``M``).

``convert_ttfs`` returns a :class:`~spikec.conversion.ttfs_network.TTFSNetwork`; see
``docs/ttfs.md`` for the neuron equations and the per-layer description.
"""
from __future__ import annotations

import copy

import torch
from torch import fx, nn

from spikec.conversion.ttfs_calibrate import calibrate
from spikec.conversion.ttfs_graph import compile_graph
from spikec.conversion.ttfs_layers import Simulation
from spikec.conversion.ttfs_network import TTFSNetwork
from spikec.errors import SpikecError

CHECKPOINT_KIND = "ttfs_snn"
# Windows cover 1.25 x the largest calibration activation: unseen inputs a little larger than any
# calibration input are not clipped (exactness), at a quarter of a bit of time resolution.
DEFAULT_MARGIN = 1.25

__all__ = ["CHECKPOINT_KIND", "TTFSNetwork", "convert_ttfs", "ttfs_checkpoint", "ttfs_snn_from_checkpoint"]


def convert_ttfs(
    ann: nn.Module,
    calib_data,
    time_bits: int | None = None,
    simulator: str = "analytic",
    margin: float = DEFAULT_MARGIN,
    batch_size: int = 256,
) -> TTFSNetwork:
    """Convert a trained ReLU ``ann`` into a TTFS SNN (static ``[B, ...]`` in, scores ``[B, classes]`` out).

    - ``calib_data``: inputs (tensor, dataset or loader) whose largest activations set the windows.
    - ``time_bits``: ``None`` for continuous spike times, else ``2**time_bits`` steps per window.
    - ``simulator``: ``"analytic"`` (event-driven, closed form) or ``"stepped"`` (discrete time;
      needs ``time_bits``). Switch later with ``snn.set_simulation(...)``.
    - ``margin``: the window of a layer covers activations up to ``margin`` times the largest
      calibration activation (default 1.25; > 1 keeps larger unseen activations from being clipped).

    Batch norms are folded first (:func:`spikec.conversion.fold.fold_batchnorm`). The ANN's
    parameter dtype is kept: convert a float64 ANN to get a float64 SNN.
    """
    if not margin > 0:
        raise ValueError(f"margin must be positive, got {margin}")
    sim = Simulation(simulator, None if time_bits is None else int(time_bits))
    gm = ann_graph(ann)
    ranges = calibrate(gm, calib_data, batch_size)
    compiled = compile_graph(gm, ranges, margin)
    input_shape = ranges[next(n.name for n in gm.graph.nodes if n.op == "placeholder")].shape
    snn = TTFSNetwork(compiled.encoder, compiled.ops, compiled.program, input_shape, sim)
    param = next(ann.parameters(), None)
    snn.to(device=param.device if param is not None else None,
           dtype=param.dtype if param is not None else torch.float32)
    snn.conversion_options = {"margin": float(margin), "method": "exact"}
    return snn.eval()


def ann_graph(ann: nn.Module) -> fx.GraphModule:
    """The eval-mode fx graph of ``ann`` with batch norms folded into the adjacent Conv/Linear layers."""
    from spikec.conversion.fold import fold_batchnorm

    return fold_batchnorm(copy.deepcopy(ann).eval())


def ttfs_checkpoint(snn: TTFSNetwork, ann: nn.Module | None = None, **extra) -> dict:
    """A ``"ttfs_snn"`` checkpoint: plain data and tensors only (loads with ``weights_only=True``).

    Holds the network description (encoder, program, every layer's synapses and window), the
    windows table, the simulation options and the state dict; with ``ann``, also its
    ``arch``/``arch_config`` for reference. ``extra`` keys (plain data) are stored as they are.
    """
    sim = snn.simulation
    ckpt = {
        "kind": CHECKPOINT_KIND,
        "network": snn.describe(),
        "windows": windows_table(snn),
        "options": {
            "simulator": sim.simulator, "time_bits": sim.time_bits,
            **getattr(snn, "conversion_options", {}),
        },
        "state_dict": {k: v.detach().clone() for k, v in snn.state_dict().items()},
    }
    if ann is not None and hasattr(ann, "arch_name"):
        ckpt["arch"] = ann.arch_name
        ckpt["arch_config"] = copy.deepcopy(getattr(ann, "arch_config", {}))
    ckpt.update(extra)
    return ckpt


def windows_table(snn: TTFSNetwork) -> list[dict]:
    """One row per spiking layer and the readout: name, window index, scale (activation at ``t_min``)."""
    rows = []
    for name, _, _ in snn.program:
        m = snn.ops[name]
        if hasattr(m, "window"):
            rows.append({"name": name, "window": m.window, "scale": m.scale,
                         "input_windows": [s.source_window for s in m.synapses]})
    return rows


def ttfs_snn_from_checkpoint(ckpt: dict) -> TTFSNetwork:
    """Rebuild the SNN of a ``"ttfs_snn"`` checkpoint (as written by :func:`ttfs_checkpoint`)."""
    if not isinstance(ckpt, dict) or ckpt.get("kind") != CHECKPOINT_KIND:
        kind = ckpt.get("kind") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise SpikecError(f"not a TTFS SNN checkpoint (kind {kind!r}, expected {CHECKPOINT_KIND!r})")
    for key in ("network", "state_dict"):
        if key not in ckpt:
            raise SpikecError(f"TTFS SNN checkpoint has no {key!r} entry")
    options = ckpt.get("options", {})
    try:
        sim = Simulation(options.get("simulator", "analytic"), options.get("time_bits"))
        snn = TTFSNetwork.from_description(ckpt["network"], sim)
        state = ckpt["state_dict"]
        dtype = next((v.dtype for v in state.values() if torch.is_floating_point(v)), torch.float32)
        snn.to(dtype)
        snn.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SpikecError(f"TTFS SNN checkpoint is malformed: {first}") from exc
    snn.conversion_options = {k: v for k, v in options.items() if k not in ("simulator", "time_bits")}
    return snn.eval()
