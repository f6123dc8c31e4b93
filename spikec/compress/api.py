"""One verb for the whole recipe: :func:`compress_` (prune with DNR, quantize, fine-tune with
attention transfer), and :func:`compress_via_ann` for compressing on the ANN side and converting.

The recipe of Kundu et al. (Spike-Thrift, WACV 2021): the uncompressed network is the teacher;
the student is pruned to the target density while it is fine-tuned and DNR moves connections
between layers, then quantized and fine-tuned again, both phases with the attention-transfer
loss. The masks never change after the pruning phase; quantization keeps zeros at zero.

Two additions of ours make this work from a converted SNN in a few epochs: the density falls
gradually (cubic schedule) rather than at once, and in rate SNNs, after every pruning step, the
pruned layers' per-channel pre-activation statistics are restored to the teacher's (see
:mod:`spikec.compress.recalibrate`); both can be switched off in
:class:`~spikec.compress.config.PruneConfig`.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
from dataclasses import dataclass, field

import torch
from torch import nn

from spikec.compress.attention import default_attention_layers
from spikec.compress.config import CompressConfig
from spikec.compress.dnr import RewireStep, SparseTraining
from spikec.compress.finetune import FinetuneEpoch, augmentation, finetune, num_samples
from spikec.compress.layers import following_norms, forward_module, select_layers, synaptic_layers
from spikec.compress.masks import mask_density, masks, masks_from_weights
from spikec.compress.prune import apply_prune_masks_, prune_, pruned_layers
from spikec.compress.quantize import choose_bits, freeze_, prepare_qat_
from spikec.compress.recalibrate import Recalibrator
from spikec.compress.regularize import GroupSparsity, Lipschitz
from spikec.compress.resume import CompressState
from spikec.compress.resume import signature as state_signature
from spikec.compress.size import SizeReport, model_size
from spikec.compress.variation import (
    ChipSteps, ConductanceVariation, ThresholdJitter, attach_variation_, detach_variation_,
)
from spikec.errors import UsageError


@dataclass
class CompressReport:
    """What :func:`compress_` did."""

    layer_mask_density: dict = field(default_factory=dict)
    quant: dict = field(default_factory=dict)
    size: SizeReport | None = None
    history: list[FinetuneEpoch] = field(default_factory=list)
    rewiring: list[RewireStep] = field(default_factory=list)
    attention_layers: list[str] = field(default_factory=list)
    mask_density: float = 1.0
    bits: dict = field(default_factory=dict)  # per quantized layer (after "auto" is resolved)


def compress_(model: nn.Module, config: CompressConfig, train_data=None, teacher: nn.Module | None = None,
              progress=None, state_file: str | None = None, resume: bool = False) -> CompressReport:
    """Compress ``model`` (an ANN or an SNN) in place; returns a :class:`CompressReport`.

    ``train_data`` (inputs, labels) is needed when ``config.finetune.epochs > 0`` or for
    re-normalisation. Rate and direct SNNs fine-tune by surrogate-gradient BPTT (optionally at
    ``config.finetune.timesteps``); a TTFS network with a time resolution fine-tunes at that
    resolution through ``config.finetune.ttfs_simulator`` (its own simulator is restored
    afterwards). ``teacher`` defaults to a
    frozen copy of ``model`` as it is now. ``progress(phase, epoch_result)`` is called after every
    fine-tuning epoch. The model is left in the train/eval mode it came in.

    ``state_file``: the whole fine-tuning state is written there after every epoch
    (:mod:`spikec.compress.resume`); with ``resume=True`` a run given the same model, config and data
    continues from the last complete epoch recorded in it and ends as an uninterrupted run would.
    """
    ft = config.finetune
    was_training = model.training
    prune_epochs = int(ft.epochs) if config.prune is not None else 0
    quant_epochs = 0
    if config.quant is not None:
        quant_epochs = ft.quant_phase_epochs if config.prune is not None else int(ft.epochs)
    robust = config.robust
    robust_epochs = int(ft.epochs) if robust is not None and config.prune is None and config.quant is None else 0
    if config.quant is not None and config.quant.bits == "auto" and train_data is None:
        raise UsageError("bits \"auto\" needs training data for its sensitivity search")
    if (prune_epochs or quant_epochs or robust_epochs) and train_data is None:
        raise UsageError("fine-tuning needs training data (or set epochs to 0)")
    state = None
    if state_file is not None:
        samples = num_samples(train_data) if train_data is not None else 0
        state = CompressState(state_file, state_signature(model, config, samples), resume)
    report = CompressReport()
    attention = config.attention
    use_attention = attention is not None and attention.beta > 0 and bool(prune_epochs or quant_epochs)
    recalibrate = (config.prune is not None and _recalibrates(config.prune.recalibrate, model)
                   and train_data is not None and not _has_batchnorm(model))
    use_distill = float(ft.distill) > 0 and bool(prune_epochs or quant_epochs)
    if use_attention or recalibrate or use_distill:
        teacher = teacher if teacher is not None else _frozen_copy(model)
    if use_attention:
        report.attention_layers = list(attention.layers) or default_attention_layers(model)
        if not report.attention_layers:
            raise UsageError(f"{type(model).__name__} has no hidden spiking or activation layer for attention transfer")

    augment = augmentation(ft.augment, train_data) if train_data is not None and (prune_epochs or quant_epochs or robust_epochs) else None

    def tune(phase, epochs, seed, sparsity=None, group_penalty=None):
        if state is not None and state.finished(phase):  # done before the run was interrupted
            return [FinetuneEpoch(**h) for h in state.phase_history(phase)]
        cb = (lambda r: progress(phase, r)) if progress is not None else None
        with _robustly(model, robust) as (variation, lipschitz):
            penalties = [p for p in (group_penalty, lipschitz) if p is not None]
            penalty = (lambda: sum(p() for p in penalties)) if penalties else None  # noqa: E731
            return finetune(model, train_data, epochs=epochs, lr=ft.lr, batch_size=ft.batch_size,
                            optimizer=ft.optimizer, relative_lr=ft.relative_lr, seed=seed,
                            teacher=teacher if use_attention or use_distill else None,
                            attention=attention if use_attention else None, attention_layers=report.attention_layers,
                            sparsity=sparsity, progress=cb, penalty=penalty, variation=variation,
                            augment=augment, distill=ft.distill if use_distill else 0.0,
                            temperature=ft.temperature, state=state, phase=phase)

    if config.prune is None and (quant_epochs or robust_epochs):
        _keep_zeros_(model)
        _record_masks(report, model)
    with _timesteps(model, ft.timesteps), _timesteps(teacher, ft.timesteps), \
            _simulating(model, ft.ttfs_simulator), _simulating(teacher, ft.ttfs_simulator):
        if config.prune is not None:
            prune = config.prune
            layers = pruned_layers(model, prune)
            renormalise = None
            if recalibrate:
                recal = Recalibrator(teacher, _calibration_inputs(train_data, seed=ft.seed), ft.seed)
                renormalise = lambda: recal(model, list(layers))  # noqa: E731
            if prune.schedule == "gradual" and prune_epochs > 0:
                apply_prune_masks_(model, {n: torch.ones_like(m.weight, dtype=torch.bool) for n, m in layers.items()},
                                   prune.granularity)
            else:
                prune_(model, prune)
                if renormalise is not None:
                    renormalise()
            if prune_epochs > 0:
                norms = following_norms(model) if prune.granularity == "channel" else None
                sparsity = SparseTraining(layers, prune, config.dnr, after_shrink=renormalise, norms=norms)
                group_penalty = None
                if prune.regularizer != "none" and float(prune.strength) > 0:
                    group_penalty = GroupSparsity(layers, prune.regularizer, prune.strength, prune.granularity,
                                                  prune.tile)
                report.history += tune("prune", prune_epochs, ft.seed, sparsity, group_penalty)
                if state is not None and state.finished("prune"):  # the masks come back with the next phase's state
                    sparsity.load_state({"momenta": {}, "history": state.extra["rewiring"]})
                else:
                    sparsity.finish()
                    if state is not None:
                        state.extra["rewiring"] = sparsity.state()["history"]
                report.rewiring = sparsity.history
            _record_masks(report, model)
        if config.quant is not None:
            quant = config.quant
            if quant.mode == "int" and quant.bits == "auto":
                chosen = state.extra.get("bits") if state is not None else None
                if chosen is None:
                    chosen = choose_bits(model, quant, train_data, ft.seed)
                    if state is not None:
                        state.extra["bits"] = list(chosen)
                quant = dataclasses.replace(quant, bits=tuple(int(b) for b in chosen))
            prepare_qat_(model, quant)
            report.history += tune("quant", quant_epochs, ft.seed + 1)
            if state is not None and state.finished("prune") and config.prune is not None:
                _record_masks(report, model)  # recorded above from the model before its state was restored
            report.quant = freeze_(model)
            report.bits = {n: q["bits"] for n, q in report.quant.items()}
        if robust_epochs:
            report.history += tune("robust", robust_epochs, ft.seed + 3)
    model.train(was_training)
    report.size = model_size(model)
    return report


def _record_masks(report: CompressReport, model: nn.Module) -> None:
    report.layer_mask_density = {n: float(m.float().mean()) for n, m in masks(model).items()}
    report.mask_density = mask_density(model)


def _keep_zeros_(model: nn.Module) -> None:
    """Mask the exact zeros of layers that have no mask yet, so that training without a pruning phase
    (quantization-aware or variation-aware epochs) keeps a network pruned earlier, or converted from a
    pruned ANN (``spikec convert`` keeps the zeros but not the masks), as sparse as it came."""
    current = masks(model)
    zeros = {n: m for n, m in masks_from_weights(synaptic_layers(model)).items()
             if n not in current and not bool(m.all())}
    if zeros:
        apply_prune_masks_(model, zeros)


def compress_via_ann(ann: nn.Module, config: CompressConfig, train_data, convert, teacher: nn.Module | None = None,
                     snn_quant_epochs: int = 0, progress=None) -> tuple[nn.Module, CompressReport]:
    """Compress on the ANN side (fine-tuning the ANN with attention on its activations), then convert.

    ``convert(ann) -> snn`` re-converts (for example ``lambda a: spikec.convert(a, x_calib)``).
    Conversion rescales weights (batch-norm folding, threshold balancing), so the SNN's masks are
    taken from its zero weights and its weights are quantized again on the SNN's own scales, with
    ``snn_quant_epochs`` of quantization-aware surrogate-gradient fine-tuning (0: post-training).
    Returns ``(snn, report)``; the report's size is that of the SNN.
    """
    report = compress_(ann, config, train_data, teacher=teacher, progress=progress)
    ann.eval()
    snn = convert(ann)
    after = compress_converted_(snn, config, train_data, snn_quant_epochs=snn_quant_epochs, progress=progress)
    report.history += after.history
    report.quant, report.size = after.quant, after.size
    return snn, report


def compress_converted_(snn: nn.Module, config: CompressConfig, train_data=None, snn_quant_epochs: int = 0,
                        progress=None) -> CompressReport:
    """The SNN half of :func:`compress_via_ann`, for an SNN converted from an already compressed ANN.

    One compressed ANN then serves several codings (rate at one T, TTFS at some time bits) without
    compressing it again: masks from the SNN's zero weights, weights quantized again on its own scales.
    """
    report = CompressReport()
    layers = select_layers(snn, config.prune.layers) if config.prune is not None else {}
    apply_prune_masks_(snn, masks_from_weights(layers))
    if config.quant is not None:
        ft = config.finetune
        prepare_qat_(snn, config.quant)
        if snn_quant_epochs > 0:
            if train_data is None:
                raise UsageError("snn_quant_epochs > 0 needs training data")
            cb = (lambda r: progress("snn-quant", r)) if progress is not None else None
            with _timesteps(snn, ft.timesteps), _simulating(snn, ft.ttfs_simulator):
                report.history += finetune(snn, train_data, epochs=snn_quant_epochs, lr=ft.lr, batch_size=ft.batch_size,
                                           optimizer=ft.optimizer, relative_lr=ft.relative_lr, seed=ft.seed + 2,
                                           progress=cb, augment=augmentation(ft.augment, train_data))
        report.quant = freeze_(snn)
    report.size = model_size(snn)
    return report


@contextlib.contextmanager
def _robustly(model: nn.Module, robust):
    """Attach sampled conductance variation and the Lipschitz penalty of ``robust`` for one phase."""
    if robust is None or (float(robust.sigma) == 0 and float(robust.lipschitz) == 0
                          and float(robust.threshold_jitter) == 0):
        yield None, None
        return
    layers = synaptic_layers(model)
    lipschitz = Lipschitz(layers, robust.lipschitz, robust.seed) if float(robust.lipschitz) > 0 else None
    parts = []
    if float(robust.threshold_jitter) > 0:
        if not _is_ttfs(model):
            raise UsageError("threshold jitter models what MFTA leaves in a TTFS network; "
                             f"{type(model).__name__} is not one")
        parts.append(ThresholdJitter(model, robust.threshold_jitter, robust.seed, robust.chips))
    if float(robust.sigma) > 0:
        parts.append(ConductanceVariation(robust.sigma, robust.seed, robust.chips, robust.g_off_ratio))
        attach_variation_(layers, parts[-1], {n: forward_module(model, n) for n in layers})
    try:
        yield (ChipSteps(parts) if parts else None), lipschitz
    finally:
        for p in parts:
            if isinstance(p, ThresholdJitter):
                p.detach()
            else:
                detach_variation_(layers)


def _recalibrates(setting, model: nn.Module) -> bool:
    """Whether pruning steps re-normalise: "auto" means yes except in TTFS networks (see PruneConfig)."""
    if setting == "auto":
        return not _is_ttfs(model)
    return bool(setting)


def _is_ttfs(model: nn.Module) -> bool:
    from spikec.conversion.ttfs_network import TTFSNetwork

    return isinstance(model, TTFSNetwork)


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _calibration_inputs(data, samples: int = 256, seed: int = 0) -> torch.Tensor:
    """A stratified draw of ``samples`` training inputs (spikec.data.sample)."""
    from spikec.data.sample import stratified_tensors

    x, _ = stratified_tensors(data, samples, seed)
    return x


def _frozen_copy(model: nn.Module) -> nn.Module:
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


@contextlib.contextmanager
def _simulating(model: nn.Module | None, simulator: str):
    """Run a TTFS network that has a time resolution through ``simulator`` at that resolution inside the block."""
    if not _is_ttfs(model) or model.simulation.time_bits is None:
        yield
        return
    old = model.simulation.simulator
    model.set_simulation(simulator)
    try:
        yield
    finally:
        model.set_simulation(old)


@contextlib.contextmanager
def _timesteps(model: nn.Module | None, timesteps: int):
    """Run a time-stepped classifier with ``timesteps`` steps inside the block (0: unchanged)."""
    if model is None or not timesteps or not hasattr(model, "timesteps"):
        yield
        return
    old = model.timesteps
    model.timesteps = int(timesteps)
    try:
        yield
    finally:
        model.timesteps = old
