"""Magnitude pruning to an exact density: the baselines, and the starting masks of DNR.

Density counts weights over the selected layers: ``round(density * weights)`` survive. For
"weight" granularity that count is exact; for kernels or channels it is met to within one
group. Every layer keeps at least one group, so no layer is cut off entirely.
"""
from __future__ import annotations

import torch
from torch import nn

from spikec.compress import groups
from spikec.compress.config import PruneConfig
from spikec.compress.layers import following_norms, forward_module, select_layers, synaptic_layers
from spikec.compress.masks import latent_weight, set_channel_mask_, set_mask_
from spikec.errors import UsageError


def magnitude_masks(layers: dict[str, nn.Module], density: float, granularity: str = "weight",
                    scope: str = "layer", tile: groups.TileShape | None = None,
                    layer_density: dict[str, float] | None = None) -> dict[str, torch.Tensor]:
    """Keep the largest-magnitude groups: ``scope`` "global" ranks all layers together, "layer"
    gives each layer the same density (budgets rounded so that they add up exactly; with groups of
    unequal size, such as tiles at a layout's edge, converted to groups by the mean group size).
    ``layer_density`` (a density for every layer) gives each layer its own budget instead."""
    weights = {n: latent_weight(m).detach() for n, m in layers.items()}
    grouped = {n: groups.grouping(w.shape, granularity, tile) for n, w in weights.items()}
    if layer_density is not None:
        return {n: _top_groups(w, grouped[n], int(round(layer_density[n] * w.numel()))) for n, w in weights.items()}
    total = sum(w.numel() for w in weights.values())
    target = int(round(float(density) * total))
    if scope == "layer":
        numels = torch.tensor([w.numel() for w in weights.values()])
        budget = groups.largest_remainder(target, numels.double(), numels)
        return {n: _top_groups(w, grouped[n], int(b)) for (n, w), b in zip(weights.items(), budget)}
    if scope == "global":
        return _global_masks(weights, grouped, target)
    raise ValueError(f"scope must be 'global' or 'layer', got {scope!r}")


def _top_groups(w: torch.Tensor, grouped: groups.Grouping, budget: int) -> torch.Tensor:
    """The best groups by mean magnitude, in order, while their weights fit ``budget``
    (:func:`groups.prefix_within`; at least one group)."""
    order = torch.argsort(grouped.mean_abs(w), descending=True, stable=True)
    keep = torch.zeros(grouped.count, dtype=torch.bool, device=w.device)
    keep[order[: max(1, groups.prefix_within(grouped.sizes[order], budget))]] = True
    return grouped.expand(keep)


def _global_masks(weights, grouped, target) -> dict[str, torch.Tensor]:
    names = list(weights)
    scores, owner, size = [], [], []
    for i, n in enumerate(names):
        s = grouped[n].mean_abs(weights[n])
        scores.append(s)
        owner.append(torch.full_like(s, i, dtype=torch.long))
        size.append(grouped[n].sizes.long())
    scores, owner, size = torch.cat(scores), torch.cat(owner), torch.cat(size)
    keep = torch.zeros_like(scores, dtype=torch.bool)
    start = 0
    for n in names:  # the best group of every layer survives whatever happens
        g = grouped[n].count
        keep[start + int(torch.argmax(scores[start:start + g]))] = True
        start += g
    budget = target - int(size[keep].sum())
    order = torch.argsort(scores, descending=True, stable=True)
    order = order[~keep[order]]
    cum = torch.cumsum(size[order], 0)
    keep[order[cum <= budget]] = True
    out, start = {}, 0
    for n in names:
        g = grouped[n].count
        out[n] = grouped[n].expand(keep[start:start + g])
        start += g
    return out


def apply_prune_masks_(model: nn.Module, masks: dict[str, torch.Tensor], granularity: str = "weight") -> None:
    """Attach ``masks`` (by layer name); with channel granularity the biases of removed channels are masked
    too, and so are the scale and shift of a batch norm right after the layer (the channel outputs 0)."""
    layers = synaptic_layers(model)
    norms = following_norms(model) if granularity == "channel" else {}
    for n, mask in masks.items():
        if n not in layers:
            raise ValueError(f"no Conv/Linear layer named {n!r}")
        if granularity == "channel":
            set_channel_mask_(layers[n], mask, norms.get(n), hook_on=forward_module(model, n))
        else:
            set_mask_(layers[n], mask, hook_on=forward_module(model, n))


def pruned_layers(model: nn.Module, config: PruneConfig) -> dict[str, nn.Module]:
    """The layers ``config`` prunes: its selection, less the readout under channel pruning.

    The readout's output channels are the classes: a plan that gave it its own density removed 4 of
    the 10 digit classes (a LeNet fell to 67%), and a uniform budget kept them only because DNR happened
    to regrow them. Its weights can still be pruned at any other granularity.
    """
    layers = select_layers(model, config.layers)
    if config.granularity == "channel":
        layers.pop(list(synaptic_layers(model))[-1], None)
        if not layers:
            raise UsageError("channel pruning leaves no layer to prune: the readout keeps its classes")
    return layers


def prune_(model: nn.Module, config: PruneConfig) -> dict[str, float]:
    """Prune ``model`` in place by magnitude to ``config.density`` (or its ``layer_density`` plan); returns
    each pruned layer's density.

    (DNR then rewires these masks during fine-tuning; see :func:`spikec.compress.compress_`.)
    """
    layers = pruned_layers(model, config)
    masks = magnitude_masks(layers, config.density, config.granularity, config.scope, config.tile,
                            config.layer_densities(layers))
    apply_prune_masks_(model, masks, config.granularity)
    return {n: float(masks[n].float().mean()) for n in layers}
