"""Pruning masks that hold in the forward pass, through fine-tuning and in saved weights.

A mask is a boolean ``weight_mask`` buffer on the layer (non-persistent, so the layer's
``state_dict`` keeps exactly the keys of the uncompressed model and loads through the same code).
The masked entries of the stored weight are zero: a saved state dict therefore carries the
pruning in its weights, and :func:`masks_from_weights` recovers it. A forward pre-hook zeroes the
masked entries again before every call, so an optimizer step that moved them (momentum, weight
decay) cannot leak into the output; :func:`apply_masks_` does the same right after a step.

When a layer is being quantized (see :mod:`spikec.compress.quantize`) or trained under sampled
conductance variation (:mod:`spikec.compress.variation`) the latent full-precision weight is
``weight_fp`` and ``weight`` is recomputed from it by the same pre-hook (quantized, then varied).
"""
from __future__ import annotations

import torch
from torch import nn

MASK = "weight_mask"
BIAS_MASK = "bias_mask"
CHANNEL_KEEP = "channel_keep"  # on a normalisation layer after a channel-pruned layer
QUANTIZER = "_spikec_quantizer"
NOISE = "_spikec_noise"  # conductance variation of noise-aware training (spikec.compress.variation)
_HOOK_ON = "_spikec_hook_on"


def latent_weight(module: nn.Module) -> nn.Parameter:
    """The trainable weight: ``weight_fp`` while the layer is being quantized, else ``weight``."""
    w = module._parameters.get("weight_fp")
    return w if w is not None else module.weight


def latent_bias(module: nn.Module) -> nn.Parameter | None:
    """The trainable bias: ``bias_fp`` while the layer is being quantized, else ``bias`` (may be None)."""
    b = module._parameters.get("bias_fp")
    return b if b is not None else module._parameters.get("bias")


def get_mask(module: nn.Module) -> torch.Tensor | None:
    return module._buffers.get(MASK)


def set_mask_(module: nn.Module, mask: torch.Tensor, bias_mask: torch.Tensor | None = None,
              hook_on: nn.Module | None = None) -> None:
    """Attach (or replace) ``mask`` (bool, the weight's shape) and zero the pruned weights now.

    ``bias_mask`` (one entry per output channel) also zeroes the biases of removed channels, so a
    pruned channel is silent rather than driven by its bias alone. ``hook_on`` is the module whose
    forward reads this weight, if not the layer itself (a TTFS synapse's owning layer).
    """
    w = latent_weight(module)
    if tuple(mask.shape) != tuple(w.shape):
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match weight shape {tuple(w.shape)}")
    _put_buffer(module, MASK, mask.to(device=w.device, dtype=torch.bool))
    b = latent_bias(module)
    if bias_mask is not None and b is not None:
        if tuple(bias_mask.shape) != tuple(b.shape):
            raise ValueError(f"bias mask shape {tuple(bias_mask.shape)} does not match bias shape {tuple(b.shape)}")
        _put_buffer(module, BIAS_MASK, bias_mask.to(device=b.device, dtype=torch.bool))
    else:
        module._buffers.pop(BIAS_MASK, None)
    ensure_hook(module, hook_on)
    refresh(module)


def remove_mask_(module: nn.Module) -> None:
    module._buffers.pop(MASK, None)
    module._buffers.pop(BIAS_MASK, None)
    drop_hook_if_idle(module)


def _put_buffer(module: nn.Module, name: str, value: torch.Tensor) -> None:
    if name in module._buffers:
        module._buffers[name] = value
    else:
        module.register_buffer(name, value, persistent=False)


def apply_masks_(model: nn.Module) -> None:
    """Zero every masked weight of ``model`` (call after each optimizer step)."""
    for m in model.modules():
        mask = get_mask(m)
        if mask is not None:
            _zero_masked(m, mask)
        if CHANNEL_KEEP in m._buffers:
            _silence(m)


def set_channel_mask_(module: nn.Module, mask: torch.Tensor, norm: nn.Module | None = None,
                      hook_on: nn.Module | None = None) -> None:
    """:func:`set_mask_` for channel pruning: the biases of the channels ``mask`` removes are masked
    too, and so are the scale and shift of ``norm``, the batch norm right after the layer (if any)."""
    keep = mask.reshape(mask.shape[0], -1).any(1)
    set_mask_(module, mask, keep, hook_on=hook_on)
    if norm is not None:
        silence_channels_(norm, keep)


def silence_channels_(norm: nn.Module, keep: torch.Tensor) -> None:
    """Hold the scale and shift of a normalisation layer's removed channels at zero.

    A channel pruned from the layer before a batch norm would otherwise still output the norm's
    shift: a constant neuron, not a removed one. With both at zero the channel is exactly 0 in
    training and evaluation (and after folding), so the PE can leave it off the chip. A channel
    regrown (kept again) restarts from the norm's initial scale 1 and shift 0: at scale 0 it could
    not learn.
    """
    w = norm._parameters.get("weight")
    if w is None or tuple(keep.shape) != (w.shape[0],):
        raise ValueError(f"channel mask of shape {tuple(keep.shape)} does not fit {type(norm).__name__}")
    keep = keep.to(device=w.device, dtype=torch.bool)
    old = norm._buffers.get(CHANNEL_KEEP)
    if old is not None:
        revived = keep & ~old
        with torch.no_grad():
            w[revived] = 1.0
            b = norm._parameters.get("bias")
            if b is not None:
                b[revived] = 0.0
    _put_buffer(norm, CHANNEL_KEEP, keep)
    if not any(h is _silence_pre_forward for h in norm._forward_pre_hooks.values()):
        norm.register_forward_pre_hook(_silence_pre_forward)
    _silence(norm)


def _silence(norm: nn.Module) -> None:
    keep = norm._buffers[CHANNEL_KEEP]
    for p in (norm._parameters.get("weight"), norm._parameters.get("bias")):
        if p is not None:
            p.data.mul_(keep)


def _silence_pre_forward(norm: nn.Module, inputs) -> None:
    _silence(norm)


def masked_layers(model: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules() if get_mask(m) is not None}


def masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{layer name: bool mask}`` of every masked layer."""
    return {name: get_mask(m) for name, m in masked_layers(model).items()}


def masks_from_weights(layers: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    """The non-zero pattern of each layer's weight, as masks (what a saved state dict implies)."""
    return {name: latent_weight(m).detach() != 0 for name, m in layers.items()}


def mask_density(model: nn.Module) -> float:
    """Kept fraction over all masked layers (1.0 if none)."""
    ms = list(masks(model).values())
    total = sum(m.numel() for m in ms)
    return sum(int(m.sum()) for m in ms) / total if total else 1.0


def ensure_hook(module: nn.Module, hook_on: nn.Module | None = None) -> None:
    """Install the pre-forward hook that enforces the mask and recomputes a quantized weight, on
    the layer itself or on ``hook_on`` (remembered for later calls)."""
    if hook_on is not None and hook_on is not module:
        module.__dict__[_HOOK_ON] = hook_on
    target = module.__dict__.get(_HOOK_ON, module)
    fn = _pre_forward if target is module else _owner_pre_forward
    if not any(h is fn for h in target._forward_pre_hooks.values()):
        target.register_forward_pre_hook(fn)


def refresh(module: nn.Module) -> None:
    """Re-apply the mask and recompute a quantized ``weight`` outside a forward pass."""
    _pre_forward(module, ())


def drop_hook_if_idle(module: nn.Module) -> None:
    if _active(module):
        return
    target = module.__dict__.get(_HOOK_ON, module)
    if target is not module and any(_active(m) for m in target.modules() if m is not target):
        return
    for key in [k for k, h in target._forward_pre_hooks.items() if h in (_pre_forward, _owner_pre_forward)]:
        del target._forward_pre_hooks[key]


def _active(module: nn.Module) -> bool:
    return (get_mask(module) is not None or module.__dict__.get(QUANTIZER) is not None
            or module.__dict__.get(NOISE) is not None)


def _pre_forward(module: nn.Module, inputs) -> None:
    mask = get_mask(module)
    if mask is not None:
        _zero_masked(module, mask)
    quantizer = module.__dict__.get(QUANTIZER)
    if quantizer is not None:
        quantizer.apply(module)
    noise = module.__dict__.get(NOISE)
    if noise is not None:
        exact = module.weight if quantizer is not None else module._parameters["weight_fp"]
        # a view, never the Parameter itself: assigning a Parameter would register it as "weight" again
        module.weight = noise(exact) if module.training else exact.view_as(exact)


def _owner_pre_forward(owner: nn.Module, inputs) -> None:
    for m in owner.modules():
        if m is not owner and _active(m):
            _pre_forward(m, ())


def _zero_masked(module: nn.Module, mask: torch.Tensor) -> None:
    # through .data: idempotent, so invisible to autograd's saved tensors
    latent_weight(module).data.mul_(mask)
    bias_mask = module._buffers.get(BIAS_MASK)
    if bias_mask is not None:
        latent_bias(module).data.mul_(bias_mask)
