"""Compressed checkpoints: the same kind as the network came from, plus a ``"compression"`` entry.

The state dict holds the pruned and quantized weights themselves (zeros where pruned, values on
the quantization grid, thresholds/biases/initial membranes as adjusted), under the keys of the
uncompressed network, so the kind's own ``*_from_checkpoint`` loader rebuilds a working network
with no knowledge of compression. The ``"compression"`` entry (plain data and tensors) adds what
is needed to go on fine-tuning and to report: per layer its mask, bit width, mode, scales and bias grid; the
config; density, size and compression ratio.
"""
from __future__ import annotations

import torch
from torch import nn

from spikec.compress.config import to_dict
from spikec.compress.layers import following_norms, forward_module, synaptic_layers
from spikec.compress.masks import BIAS_MASK, get_mask, set_mask_, silence_channels_
from spikec.compress.quantize import BITS, SCALE
from spikec.compress.size import BIAS_STEP, model_size

KEY = "compression"
VERSION = 1


def compression_record(model: nn.Module, config=None, extra: dict | None = None) -> dict:
    """The ``"compression"`` entry describing ``model`` as it is now."""
    size = model_size(model)
    layers = {}
    for name, m in synaptic_layers(model).items():
        entry = {"density": float((m.weight.detach() != 0).float().mean()), "encoding": size.layers[name].encoding,
                 "bits": int(size.layers[name].bits_per_weight)}
        mask = get_mask(m)
        if mask is not None:
            entry["mask"] = mask.detach().cpu().clone()
        bias_mask = m._buffers.get(BIAS_MASK)
        if bias_mask is not None:
            entry["bias_mask"] = bias_mask.detach().cpu().clone()
        scale = m._buffers.get(SCALE)
        if scale is not None:
            entry["scale"] = scale.detach().cpu().clone()
        bias_step = m._buffers.get(BIAS_STEP)
        if bias_step is not None:
            entry["bias_step"] = bias_step.detach().cpu().clone()
        layers[name] = entry
    record = {
        "version": VERSION,
        "config": to_dict(config) if config is not None else None,
        "density": size.density,
        "dense_bits": size.dense_bits,
        "compressed_bits": size.compressed_bits,
        "compression_ratio": size.ratio,
        "layers": layers,
    }
    record.update(extra or {})
    return record


def compressed_checkpoint(ckpt: dict, model: nn.Module, record: dict) -> dict:
    """``ckpt`` (the source checkpoint, any kind) with ``model``'s weights and ``record``."""
    out = dict(ckpt)
    out["state_dict"] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    out[KEY] = record
    return out


def restore_compression_(model: nn.Module, record: dict) -> None:
    """Re-attach masks, scales and bit widths of ``record`` to a network loaded from its checkpoint."""
    layers = synaptic_layers(model)
    prune = (record.get("config") or {}).get("prune") or {}
    norms = following_norms(model) if prune.get("granularity") == "channel" else {}
    for name, entry in record.get("layers", {}).items():
        if name not in layers:
            raise ValueError(f"compressed checkpoint names layer {name!r}, which the network does not have")
        m = layers[name]
        if "mask" in entry:
            bias_mask = entry.get("bias_mask")
            set_mask_(m, entry["mask"].to(torch.bool), None if bias_mask is None else bias_mask.to(torch.bool),
                      hook_on=forward_module(model, name))
            if name in norms:  # channel pruning: the batch norm after the layer stays silenced
                mask = entry["mask"].to(torch.bool)
                silence_channels_(norms[name], mask.reshape(mask.shape[0], -1).any(1))
        if "scale" in entry:
            m.register_buffer(SCALE, entry["scale"].clone(), persistent=False)
            m.__dict__[BITS] = int(entry["bits"])
        if "bias_step" in entry:
            m.register_buffer(BIAS_STEP, entry["bias_step"].clone(), persistent=False)


def load_restored(path) -> tuple[nn.Module, dict]:
    """``spikec.checkpoint.load_model`` with the masks, scales and bit widths of a compressed checkpoint re-attached."""
    from spikec.checkpoint import load_model

    model, ckpt = load_model(path)
    if "compression" in ckpt:
        restore_compression_(model, ckpt["compression"])
    return model, ckpt
