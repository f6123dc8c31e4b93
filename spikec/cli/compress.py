"""``spikec compress SNN_FILE``: attention-guided pruning and quantization of a network checkpoint.

Prunes to ``--density`` (DNR by default), quantizes to ``--bits``, fine-tunes with attention
transfer from the uncompressed network (``--attention``), reports accuracy, density, bits,
compression ratio, spikes and synaptic operations before and after, and with ``--out`` saves a
checkpoint of the same kind that ``spikec eval`` reads (plus a ``"compression"`` entry).
"""
from __future__ import annotations

import argparse
import dataclasses
import os

from spikec.cli import user_model_args
from spikec.cli.train import state_path
from spikec.errors import SpikecError, UsageError


def add_parser(subparsers, parents):
    from spikec.compress.config import (
        GRANULARITIES, PRUNE_METHODS, QUANT_GROUPS, QUANT_MODES, REGULARIZERS, SCHEDULES, SCOPES, STRUCTURES,
    )

    p = subparsers.add_parser(
        "compress", parents=parents, help="prune and quantize a network with attention-guided fine-tuning",
        description="Prune (DNR or magnitude) and quantize a checkpoint, fine-tuning with attention transfer "
                    "from the uncompressed network; report accuracy, size, spikes and synaptic operations.",
    )
    p.add_argument("checkpoint", metavar="SNN_FILE", nargs="?", default=None,
                   help="checkpoint of any kind (rate_snn, ttfs_snn, snn, ann), or an ANN given with --model")
    p.add_argument("--out", default=None, metavar="FILE", help="write the compressed checkpoint here")
    p.add_argument("--config", default=None, metavar="TOML", help="base CompressConfig; flags given override it")
    p.add_argument("--density", type=float, default=None, help="fraction of weights kept (default 0.1; 1 = no pruning)")
    p.add_argument("--layer-density", default=None, metavar="NAME=D,...",
                   help="per-layer densities that override --density for the named Conv/Linear layers "
                        "(e.g. features.0=0.5,features.3=0.5,features.7=1); DNR then regrows within each layer")
    p.add_argument("--bits", default=None, metavar="B|B,B,...|auto",
                   help="weight bits 2..8 (default 4; 0 = no quantization); one per quantized layer (8,4,4,...); "
                        "or auto: per layer the fewest bits its sensitivity allows (see QuantConfig)")
    p.add_argument("--quant-mode", choices=QUANT_MODES, default=None, help="int (default), binary, binaryconnect, ternary")
    p.add_argument("--quant-group", choices=QUANT_GROUPS, default=None, help="one scale per layer (default) or channel")
    p.add_argument("--method", choices=PRUNE_METHODS, default=None, help="dnr (default) or magnitude")
    p.add_argument("--granularity", choices=GRANULARITIES, default=None, help="weight (default), row (1 x k kernel rows), kernel or channel")
    p.add_argument("--structure", choices=STRUCTURES, default=None,
                   help="prune groups aligned with the crossbar tiles: tile-row, tile-col or tile (sets the granularity)")
    p.add_argument("--regularizer", choices=REGULARIZERS, default=None,
                   help="group sparsity penalty while pruning: group-lasso, hoyer-square or none (default)")
    p.add_argument("--strength", type=float, default=None, help="strength of --regularizer (default 1e-3)")
    p.add_argument("--hardware", default=None, metavar="PRESET|TOML",
                   help="the PE to compress for: tile size of --structure and of the tile report, and its cell levels "
                        "(refuses --bits with more levels than a cell holds); default: twin-column tiles, no cell check")
    p.add_argument("--pack-rows", action="store_true",
                   help="count tiles as 'spikec energy --pack-rows' maps them: each column tile keeps only its rows "
                        "with a nonzero weight there, so --structure tile-row frees tiles")
    p.add_argument("--noise-sigma", type=float, default=None,
                   help="variation-aware fine-tuning: sampled log-normal conductance variation of this sigma (default 0)")
    p.add_argument("--noise-chips", type=int, default=None, help="cycle over this many seeded training chips (default 0: a new chip every step)")
    p.add_argument("--lipschitz", type=float, default=None, help="strength of the spectral-norm (Lipschitz) penalty (default 0)")
    p.add_argument("--threshold-jitter", type=float, default=None,
                   help="TTFS: train under per-neuron threshold errors exp(U(-j, j)), the residual MFTA leaves "
                        "(half its register step, 0.025 for the twin-column preset; default 0)")
    p.add_argument("--scope", choices=SCOPES, default=None, help="layer (default) or global magnitude ranking")
    p.add_argument("--schedule", choices=SCHEDULES, default=None, help="gradual (default) or oneshot pruning")
    p.add_argument("--skip-first", action="store_true", help="leave the first Conv/Linear layer dense and unquantized")
    p.add_argument("--skip-last", action="store_true", help="leave the last Conv/Linear layer dense and unquantized")
    p.add_argument("--attention", action="store_true", help="add the attention-transfer loss from the uncompressed network")
    p.add_argument("--beta", type=float, default=None, help="attention-transfer weight (default 1)")
    p.add_argument("--distill", type=float, default=None, metavar="W",
                   help="weight in [0, 1] of knowledge distillation from the uncompressed network's scores (default 0)")
    p.add_argument("--temperature", type=float, default=None, help="distillation temperature (default 4)")
    p.add_argument("--teacher", default=None, metavar="FILE",
                   help="the network --distill and --attention learn from (default: the input as it was before this "
                        "run); give the uncompressed one when compressing a compressed checkpoint further, e.g. "
                        "--density 1 --bits 4 to quantize its mask again")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from its last complete epoch (state saved next to --out as "
                        "OUT.state after every epoch)")
    p.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs of the pruning phase (default 10)")
    p.add_argument("--quant-epochs", type=int, default=None, help="quantization-aware epochs (default half of --epochs)")
    p.add_argument("--lr", type=float, default=None, help="relative learning rate (default 1e-2 of each tensor's RMS)")
    p.add_argument("--timesteps", type=int, default=None, help="fine-tune a rate/direct SNN at this T (default its own)")
    p.add_argument("--dataset", default=None, help="dataset name or path (default: the checkpoint's, else digits)")
    p.add_argument("--format", default=None, help="data format of --dataset when it is a path (default: detect)")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="random crop + flip of training images while fine-tuning (default: on for images of 16x16 "
                        "pixels or more, as spikec train)")
    p.add_argument("--batch-size", type=int, default=None, help="fine-tuning batch size (default 32: small datasets need the optimizer steps)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    user_model_args.add_arguments(p.add_argument_group("your own ANN (instead of SNN_FILE)"))
    return p


def build_config(args):
    """The CompressConfig the flags ask for, on top of ``--config`` (or the defaults) where given."""
    from spikec.compress.config import (
        AttentionConfig, CompressConfig, LayerSelection, PruneConfig, QuantConfig, load_toml,
    )

    def given(**kw):
        return {k: v for k, v in kw.items() if v is not None}

    bits = parse_bits(args.bits)
    hardware = hardware_config(args.hardware)

    if args.config:
        try:
            base = load_toml(args.config)
        except (OSError, ValueError, TypeError) as exc:
            raise UsageError(f"--config {args.config}: {exc}") from exc
    else:
        base = CompressConfig(attention=None)
    try:
        prune = base.prune or PruneConfig()
        quant = base.quant or QuantConfig()
        selection = LayerSelection(skip_first=args.skip_first or prune.layers.skip_first,
                                   skip_last=args.skip_last or prune.layers.skip_last, exclude=prune.layers.exclude)
        tiles = {} if hardware is None else {"tile_rows": hardware.tile_rows, "tile_cols": hardware.tile_cols,
                                             "cells_per_weight": hardware.cells_per_weight}
        prune = dataclasses.replace(prune, layers=selection, **tiles, **given(
            density=args.density, layer_density=parse_layer_density(args.layer_density),
            method=args.method, granularity=args.structure or args.granularity,
            scope=args.scope, schedule=args.schedule, regularizer=args.regularizer, strength=args.strength))
        cells = {} if hardware is None else {"cell_levels": hardware.cell_levels,
                                             "cells_per_weight": hardware.cells_per_weight}
        quant = dataclasses.replace(quant, layers=selection, **cells, **given(
            bits=bits or None, mode=args.quant_mode, group=args.quant_group))
        robust = base.robust
        if (args.noise_sigma is not None or args.noise_chips is not None or args.lipschitz is not None
                or args.threshold_jitter is not None):
            from spikec.compress.config import RobustConfig

            robust = dataclasses.replace(robust or RobustConfig(), **given(
                sigma=args.noise_sigma, chips=args.noise_chips, lipschitz=args.lipschitz,
                threshold_jitter=args.threshold_jitter))
        if robust is not None and hardware is not None:  # the cells of the PE compressed for
            robust = dataclasses.replace(robust, g_off_ratio=hardware.g_off / (hardware.g_on - hardware.g_off))
        attention = base.attention
        if args.attention or args.beta is not None:
            attention = dataclasses.replace(attention or AttentionConfig(), **given(beta=args.beta))
        ft = dataclasses.replace(base.finetune, **given(
            epochs=args.epochs, quant_epochs=args.quant_epochs, lr=args.lr, timesteps=args.timesteps,
            batch_size=args.batch_size, seed=args.seed, distill=args.distill, temperature=args.temperature,
            augment=None if args.augment is None else ("crop-flip" if args.augment else "none")))
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    keep_dense = args.density == 1.0 or (args.density is None and base.prune is None)
    keep_float = bits == 0 or (bits is None and base.quant is None)
    return CompressConfig(prune=None if keep_dense else prune, quant=None if keep_float else quant,
                          attention=attention, dnr=base.dnr, finetune=ft, robust=robust)


def parse_layer_density(text):
    """``--layer-density NAME=D,...``: ``((name, density), ...)`` or None; a one-line error otherwise."""
    if text is None:
        return None
    pairs = []
    for part in str(text).split(","):
        name, eq, value = part.strip().partition("=")
        try:
            d = float(value)
        except ValueError:
            d = None
        if not eq or not name.strip() or d is None:
            raise UsageError(f"--layer-density takes NAME=DENSITY pairs separated by commas, got {part.strip()!r}")
        if not 0.0 < d <= 1.0:
            raise UsageError(f"--layer-density: the density of {name.strip()!r} must lie in (0, 1], got {value}")
        pairs.append((name.strip(), d))
    return tuple(pairs)


def parse_bits(text):
    """``--bits``: None, 0, an int, a tuple of ints (one per layer) or "auto"; a one-line error otherwise."""
    if text is None:
        return None
    t = str(text).strip()
    if t == "auto":
        return "auto"
    try:
        values = tuple(int(v) for v in t.split(","))
    except ValueError:
        raise UsageError(f"--bits must be 0, 2..8, a comma-separated list of 2..8 or auto, got {text!r}") from None
    if len(values) == 1:
        if values[0] != 0 and not 2 <= values[0] <= 8:
            raise UsageError(f"--bits must be 0 (no quantization) or 2..8, got {values[0]}")
        return values[0]
    bad = [v for v in values if not 2 <= v <= 8]
    if bad:
        raise UsageError(f"--bits: every per-layer width must lie in 2..8, got {bad[0]} in {text!r}")
    return values


def hardware_config(name):
    """``--hardware``: a preset name or a TOML file (None: not given)."""
    if name is None:
        return None
    from spikec.hardware.config import PRESETS, load_config, preset

    if str(name).endswith(".toml"):
        return load_config(name)
    try:
        return preset(name)
    except UsageError:
        raise UsageError(f"--hardware: no preset {name!r}; give one of {', '.join(PRESETS)} or a .toml file") from None


def _check(args) -> None:
    if args.density is not None and not 0 < args.density <= 1:
        raise UsageError(f"--density must lie in (0, 1], got {args.density}")
    parse_bits(args.bits)
    for flag in ("strength", "noise_sigma", "lipschitz", "threshold_jitter"):
        value = getattr(args, flag, None)
        if value is not None and not value >= 0:
            raise UsageError(f"--{flag.replace('_', '-')} must be >= 0, got {value}")
    if args.noise_chips is not None and args.noise_chips < 0:
        raise UsageError(f"--noise-chips must be >= 0, got {args.noise_chips}")
    if args.structure and args.granularity and args.structure != args.granularity:
        raise UsageError(f"--structure {args.structure} and --granularity {args.granularity} disagree; give one")
    for flag in ("epochs", "quant_epochs"):
        value = getattr(args, flag)
        if value is not None and value < 0:
            raise UsageError(f"--{flag.replace('_', '-')} must be >= 0, got {value}")
    for flag in ("batch_size", "timesteps"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    if args.distill is not None and not 0.0 <= args.distill <= 1.0:
        raise UsageError(f"--distill is a weight in [0, 1], got {args.distill}")
    if args.temperature is not None and not args.temperature > 0:
        raise UsageError(f"--temperature must be positive, got {args.temperature}")
    if args.lr is not None and not args.lr > 0:
        raise UsageError(f"--lr must be positive, got {args.lr}")
    if args.beta is not None and args.beta < 0:
        raise UsageError(f"--beta must be >= 0, got {args.beta}")
    if args.teacher is not None and not os.path.isfile(args.teacher):
        raise UsageError(f"--teacher: no such file {args.teacher}")
    if args.resume and not args.out:
        raise UsageError("--resume needs --out: the resumable state is kept next to it (OUT.state)")
    if args.resume and not os.path.exists(state_path(args.out)):
        raise UsageError(f"--resume: no compression state {state_path(args.out)} to continue "
                         "(it is written after every epoch)")


# Fine-tuning small SNNs: one thread is as fast as two on an idle 2-core machine and does not
# collapse when another process shares it (torch's default of one thread per core took 11x
# longer per step on the digits VGG rate SNN with a training job beside it; BENCHMARKS.md).
DEFAULT_THREADS = 1


def run(args) -> dict:
    import torch

    previous = torch.get_num_threads()
    if getattr(args, "threads", None) is None:
        torch.set_num_threads(DEFAULT_THREADS)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(previous)


def _run(args) -> dict:
    from spikec.checkpoint import save_checkpoint
    from spikec.compress import compress_
    from spikec.compress.checkpoint import compressed_checkpoint, compression_record, load_restored
    from spikec.compress.config import to_dict
    from spikec.compress.metrics import activity
    from spikec.compress.size import model_size
    from spikec.compress.tiles import packed_tiles_hint

    _check(args)
    config = build_config(args)
    if user_model_args.wants_user_model(args, args.checkpoint):
        model, ckpt = _user_ann(args)
    else:
        model, ckpt = load_restored(args.checkpoint)
    _check_layer_density(config, model, args)
    train_data, test_data, name = _load_data(args, ckpt)
    seed = config.finetune.seed
    before = activity(model, test_data, seed=seed)
    size_before = model_size(model)
    hardware = hardware_config(args.hardware) or _twin_column()
    if args.pack_rows:
        hardware = hardware.replace(row_packing=True)
    tiles_before = _tiles(model, hardware)
    print(f"{args.checkpoint} ({ckpt['kind']}) on {name}: accuracy {before.accuracy:.2%}, "
          f"{before.spikes_per_inference:.0f} spikes and {before.sops_per_inference:.0f} SOPs per inference")

    def progress(phase, r):
        print(f"  {phase} epoch {r.epoch}: loss {r.loss:.4f} (attention {r.attention_loss:.4f}), "
              f"train accuracy {r.train_accuracy:.2%}, {r.seconds:.1f}s", flush=True)

    teacher = _teacher(args.teacher, model) if args.teacher else None
    state_file = state_path(args.out) if args.out else None
    report = compress_(model, config, train_data, teacher=teacher, progress=progress, state_file=state_file,
                       resume=args.resume)
    model.eval()
    after = activity(model, test_data, seed=seed)
    size = report.size
    bits = max(report.bits.values()) if report.bits else (config.quant.weight_bits if config.quant is not None else 32)
    tiles = _tiles_freed(tiles_before, _tiles(model, hardware))
    record = compression_record(model, config, {
        "accuracy_before": before.accuracy, "accuracy_after": after.accuracy, "weight_bits": bits,
        "layer_bits": dict(report.bits), "mask_density": report.mask_density, "tiles": tiles,
    })
    out_path = None
    if args.out:
        out_path = save_checkpoint(args.out, compressed_checkpoint(ckpt, model, record))
        if os.path.exists(state_file):
            os.unlink(state_file)  # the run is complete: its checkpoint replaces the resumable state
    print(f"accuracy {before.accuracy:.2%} -> {after.accuracy:.2%}")
    widths = sorted(set(report.bits.values()))
    bit_text = f"{bits}-bit" if len(widths) <= 1 else "/".join(str(w) for w in report.bits.values()) + "-bit"
    print(f"density {size.density:.4f} (mask {report.mask_density:.4f}), {bit_text} weights, "
          f"{size_before.compressed_bits} -> {size.compressed_bits} bits: compression {size.ratio:.1f}x")
    if tiles is not None:
        grid = tiles["on_cell_grid"]
        exact = "" if not grid else (", every layer on the cell grid" if all(grid.values()) else
                                     f", off the cell grid (rounded by the PE): {', '.join(n for n, e in grid.items() if not e)}")
        print(f"crossbar tiles ({tiles['source']}) {tiles['tiles_before']} -> {tiles['tiles_after']}: "
              f"{tiles['tiles_freed']} freed ({tiles['freed_fraction']:.0%}){exact}")
        if config.prune is not None and config.prune.granularity == "weight" and tiles["freed_fraction"] < 0.1:
            print("  (weight-level zeros stay on their tiles: --granularity channel, --structure tile, or "
                  "--structure tile-row with --pack-rows frees tiles; see --layer-density for a per-layer plan)")
        if config.prune is not None:
            hint = packed_tiles_hint(model, hardware, tiles["tiles_after"])
            if hint:
                print(hint)
    print(f"spikes per inference {before.spikes_per_inference:.0f} -> {after.spikes_per_inference:.0f}; "
          f"SOPs {before.sops_per_inference:.0f} -> {after.sops_per_inference:.0f}; "
          f"compute energy {before.snn_energy_pj / 1e6:.3f} -> {after.snn_energy_pj / 1e6:.3f} uJ "
          f"(dense ANN {after.ann_energy_pj / 1e6:.3f} uJ)")
    if out_path:
        print(f"wrote {out_path}")
    return {
        "accuracy_before": before.accuracy, "accuracy_after": after.accuracy,
        "density": size.density, "mask_density": report.mask_density, "weight_bits": bits,
        "compression_ratio": size.ratio, "compression_ratio_float_side": size.ratio_float_side,
        "dense_bits": size.dense_bits, "compressed_bits": size.compressed_bits,
        "spikes_before": before.spikes_per_inference, "spikes_after": after.spikes_per_inference,
        "sops_before": before.sops_per_inference, "sops_after": after.sops_per_inference,
        "energy_before_pj": before.snn_energy_pj, "energy_after_pj": after.snn_energy_pj,
        "ann_energy_pj": after.ann_energy_pj,
        "layer_density": {n: l.nonzero / l.weights for n, l in size.layers.items()},
        "layer_bits": dict(report.bits), "tiles": tiles,
        "config": to_dict(config), "checkpoint": out_path,
    }


def _teacher(path, model):
    """The network of ``path`` (masks and scales restored if it is compressed), if it has every synaptic
    layer of ``model`` under the same name and shape, as distillation and attention transfer need."""
    from spikec.compress.checkpoint import load_restored
    from spikec.compress.layers import synaptic_layers

    teacher, _ = load_restored(path)
    theirs = synaptic_layers(teacher)
    for name, m in synaptic_layers(model).items():
        t = theirs.get(name)
        if t is None:
            raise UsageError(f"--teacher {path}: it has no layer {name!r} of the network being compressed")
        if t.weight.shape != m.weight.shape:
            raise UsageError(f"--teacher {path}: layer {name!r} has weights {tuple(t.weight.shape)}, "
                             f"the network being compressed {tuple(m.weight.shape)}")
    return teacher.eval()


def _check_layer_density(config, model, args) -> None:
    """A plan that names no pruned layer of ``model`` is a usage error that lists the ones it has."""
    from spikec.compress.prune import pruned_layers

    if config.prune is None or not config.prune.layer_density:
        return
    try:
        config.prune.layer_densities(pruned_layers(model, config.prune))
    except ValueError as exc:
        flag = "--layer-density" if args.layer_density is not None else f"--config {args.config}"
        raise UsageError(f"{flag}: {exc}") from None


def _twin_column():
    from spikec.hardware.config import preset

    return preset("twin-column")


def _tiles(model, hardware):
    """Crossbar tiles of ``model`` (None if the hardware model cannot count them)."""
    from spikec.compress.tiles import tile_count

    try:
        return tile_count(model, hardware)
    except (SpikecError, ValueError, RuntimeError):
        return None


def _tiles_freed(before, after):
    from spikec.compress.tiles import tiles_freed

    return None if before is None or after is None else tiles_freed(before, after)


def _user_ann(args):
    """``--model`` as the ANN its checkpoint rebuilds (the prepared graph), so the compressed file reloads."""
    from spikec.checkpoint import build_ann
    from spikec.data import load_dataset

    _, _, info = load_dataset(args.dataset or "digits", format=args.format)
    _, ckpt = user_model_args.load(args, info)
    model = build_ann(ckpt["arch"], ckpt["arch_config"])
    model.load_state_dict(ckpt["state_dict"])
    args.checkpoint = args.model  # names the model in what is printed
    return model.eval(), ckpt


def _load_data(args, ckpt):
    from spikec.data import load_dataset

    recorded = ckpt.get("dataset") or {}
    if args.dataset:
        name, fmt = args.dataset, args.format
    elif recorded.get("format") not in (None, "digits"):
        name, fmt = recorded.get("source"), recorded.get("format")
    else:
        name, fmt = "digits", None
    train_data, test_data, info = load_dataset(name, format=fmt)
    expected = (ckpt.get("arch_config") or {}).get("input_shape") or (ckpt.get("network") or {}).get("input_shape")
    if expected is not None and tuple(expected) != tuple(info.input_shape):
        raise SpikecError(f"dataset {info.name} has inputs of shape {tuple(info.input_shape)}, but "
                          f"{args.checkpoint} expects {tuple(expected)}")
    return train_data, test_data, info.name
