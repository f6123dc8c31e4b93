"""``spikec train``: train an ANN (or, with ``--snn``, a spiking network directly) and save a checkpoint."""
from __future__ import annotations

import argparse
import os
import sys
import time

from spikec.cli import device_arg
from spikec.errors import UsageError

CODINGS = ("rate", "direct")
READOUTS = ("membrane", "count")


def add_parser(subparsers, parents):
    from spikec.checkpoint import ACTIVATIONS, NEURONS
    from spikec.models import MODELS
    from spikec.training import OPTIMIZERS, PRECISIONS, SCHEDULES

    p = subparsers.add_parser(
        "train", parents=parents, help="train a model on a dataset and save a checkpoint",
        description="Train an ANN (default) or an SNN (--snn, surrogate-gradient BPTT) and save a checkpoint.",
    )
    p.add_argument("--model", default="lenet", help=f"architecture: {', '.join(MODELS)} (default lenet)")
    p.add_argument("--dataset", default="digits", help="'digits' (embedded) or a path to IDX / CIFAR-10 / image folder / HDF5 data")
    p.add_argument("--format", default=None, help="data format of --dataset when it is a path: idx, cifar10, folder, hdf5 (default: detect)")
    p.add_argument("--out", required=True, help="checkpoint file to write")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--lr", type=float, default=3e-3, help="learning rate (default 3e-3)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="adam")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    p.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=False, help="Nesterov momentum (SGD)")
    p.add_argument("--schedule", choices=SCHEDULES, default="cosine",
                   help="learning-rate schedule: cosine (per epoch, default), constant, onecycle or warmup-cosine (per batch)")
    p.add_argument("--warmup-epochs", type=float, default=1.0, help="linear warm-up of warmup-cosine (default 1 epoch)")
    p.add_argument("--label-smoothing", type=float, default=0.0, help="cross-entropy label smoothing (default 0)")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="random crop (zero padding) and horizontal flip of training images "
                        "(default: on for images of at least 16x16 pixels, off otherwise)")
    p.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=False,
                   help="per-channel input normalisation with the training data's mean and std, as the model's "
                        "first op (rate conversion folds it exactly into the first layer; default off)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="NHWC memory layout for convolutions (default: on for image inputs)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="bf16: forward pass under bfloat16 autocast, float32 weights (1.6x faster ResNet-20 steps "
                        "on CPUs with AVX512-BF16; default fp32)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from its last complete epoch (state saved next to --out "
                        "as OUT.state after every epoch)")
    p.add_argument("--seed", type=int, default=0, help="seeds the weights, batch order and input spikes")
    device_arg.add_argument(p)
    arch = p.add_argument_group("architecture options (only those the model has)")
    arch.add_argument("--pool", choices=("avg", "max"), default=None, help="pooling kind")
    arch.add_argument("--batch-norm", action=argparse.BooleanOptionalAction, default=None)
    arch.add_argument("--depth", type=int, default=None, help="VGG 11/13/16/19, ResNet 18/34/20/32/44/56/110")
    arch.add_argument("--width", type=float, default=None, help="channel multiplier (vgg, resnet)")
    ann = p.add_argument_group("ANN activations")
    ann.add_argument("--act", choices=ACTIVATIONS, default="relu", help="relu, or qcfs (quantisation-clip-floor-shift for conversion)")
    ann.add_argument("--levels", type=int, default=8, help="QCFS quantisation levels (default 8)")
    snn = p.add_argument_group("direct SNN training")
    snn.add_argument("--snn", action="store_true", help="train a spiking network with surrogate gradients")
    snn.add_argument("--coding", choices=CODINGS, default="rate", help="input coding (default rate: Bernoulli spikes)")
    snn.add_argument("--timesteps", type=int, default=8)
    snn.add_argument("--neuron", choices=NEURONS, default="lif")
    snn.add_argument("--beta", type=float, default=0.9, help="LIF leak factor (default 0.9)")
    snn.add_argument("--threshold", type=float, default=1.0)
    snn.add_argument("--reset", choices=("subtract", "zero"), default="subtract",
                     help="neuron reset: subtract (default) or zero (the network then exports to NIR)")
    snn.add_argument("--surrogate", default="arctan", help="arctan, fast_sigmoid, triangle, straight_through")
    snn.add_argument("--readout", choices=READOUTS, default="membrane", help="membrane (non-spiking output layer) or count")
    return p


def run(args) -> dict:
    from spikec import distributed

    _check_args(args)
    device_arg.resolve(args.device)
    distributed.init_from_env(args.device)
    try:
        result = _train_and_save(args)
    except BaseException:
        distributed.shutdown(wait_for_peers=False)  # a peer may be stuck in a collective: no barrier
        raise
    distributed.shutdown()
    return result


def _train_and_save(args):
    import torch

    from spikec import distributed
    from spikec.checkpoint import save_checkpoint
    from spikec.data import load_dataset
    from spikec.data.augment import default_augmentation
    from spikec.errors import SpikecError
    from spikec.training import train

    train_data, test_data, info = load_dataset(args.dataset, format=args.format)
    cfg = _arch_options(args)
    if args.normalize:
        from spikec.models import model_options

        if "input_norm" not in model_options(args.model):
            raise UsageError(f"--normalize does not apply to model {args.model!r} (vgg, resnet, lenet have it)")
        cfg["input_norm"] = channel_statistics(train_data.tensors[0])
    torch.manual_seed(args.seed)
    model, ckpt_of = _build(args, info, cfg)
    augment = default_augmentation(info.input_shape) if args.augment is not False else None
    if args.augment and augment is None:
        raise UsageError(f"--augment needs images of at least 16x16 pixels; {info.name} has inputs {tuple(info.input_shape)}")
    state_file = state_path(args.out)
    if args.resume and not os.path.exists(state_file):
        raise UsageError(f"--resume: no training state {state_file} to continue (it is written after every epoch)")
    quiet = getattr(args, "json", False)

    def report(r):
        if distributed.is_main() and not quiet:
            test = f", test {r.test_accuracy:.2%}" if r.test_accuracy is not None else ""
            print(f"epoch {r.epoch}/{args.epochs}: loss {r.loss:.4f}, train {r.train_accuracy:.2%}{test} "
                  f"({r.seconds:.0f} s)", flush=True)

    start = time.perf_counter()
    history = train(
        model, train_data, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, optimizer=args.optimizer,
        weight_decay=args.weight_decay, test_data=test_data, seed=args.seed, progress=sys.stderr.isatty(),
        device=args.device, momentum=args.momentum, nesterov=args.nesterov, schedule=args.schedule,
        warmup_epochs=args.warmup_epochs, label_smoothing=args.label_smoothing, augment=augment,
        state_file=state_file, resume=args.resume, on_epoch=report,
        channels_last=args.channels_last if args.channels_last is not None else _is_image(info.input_shape),
        precision=args.precision,
    )
    seconds = time.perf_counter() - start
    last = history[-1]
    train_seconds = sum(r.seconds for r in history)
    metrics = {"test_accuracy": last.test_accuracy, "train_accuracy": last.train_accuracy, "loss": last.loss,
               "epochs": args.epochs, "seconds": train_seconds,
               "recipe": {"optimizer": args.optimizer, "lr": args.lr, "schedule": args.schedule,
                          "batch_size": args.batch_size, "weight_decay": args.weight_decay,
                          "nesterov": args.nesterov, "label_smoothing": args.label_smoothing,
                          "precision": args.precision, "augment": repr(augment) if augment is not None else None}}
    ckpt = ckpt_of(model.cpu(), dataset=info.to_dict(), metrics=metrics, seed=args.seed)
    kind = ckpt["kind"]
    if not distributed.is_main():  # rank 0 alone writes and reports
        return None
    save_checkpoint(args.out, ckpt)
    if os.path.exists(state_file):
        os.unlink(state_file)  # the run is complete: its checkpoint replaces the resumable state
    print(f"{kind} {args.model} on {info.name}: test accuracy {last.test_accuracy:.2%} "
          f"(train {last.train_accuracy:.2%}, loss {last.loss:.4f}) after {args.epochs} epochs in {seconds:.1f} s")
    print(f"saved {args.out}")
    return {"test_accuracy": last.test_accuracy, "checkpoint": args.out, "epochs": args.epochs, "seconds": seconds,
            "train_accuracy": last.train_accuracy, "loss": last.loss, "kind": kind, "model": args.model,
            "dataset": info.name}


def channel_statistics(x) -> list:
    """``[means, stds]`` per channel of image inputs ``[N, C, H, W]``."""
    flat = x.transpose(0, 1).reshape(x.shape[1], -1).double()
    return [flat.mean(1).tolist(), flat.std(1).clamp_min(1e-6).tolist()]


def state_path(out: str) -> str:
    """Where ``spikec train --out OUT`` (and ``spikec compress``) keep their resumable state."""
    return f"{out}.state"


def _check_args(args) -> None:
    from spikec.models import MODELS

    if args.model not in MODELS:
        raise UsageError(f"unknown model {args.model!r}; choose from {', '.join(MODELS)}")
    for flag, value in (("--epochs", args.epochs), ("--batch-size", args.batch_size), ("--timesteps", args.timesteps),
                        ("--levels", args.levels)):
        if value < 1:
            raise UsageError(f"{flag} must be >= 1, got {value}")
    if not 0 <= args.label_smoothing < 1:
        raise UsageError(f"--label-smoothing must lie in [0, 1), got {args.label_smoothing}")
    if args.warmup_epochs < 0:
        raise UsageError(f"--warmup-epochs must be >= 0, got {args.warmup_epochs}")
    if not args.lr > 0:
        raise UsageError(f"--lr must be positive, got {args.lr}")
    if args.snn and args.act != "relu":
        raise UsageError("--act applies to ANNs; an --snn uses --neuron")
    if not 0 < args.beta <= 1:
        raise UsageError(f"--beta must lie in (0, 1], got {args.beta}")


def _arch_options(args) -> dict:
    from spikec.models import model_options

    given = {"pool": args.pool, "batch_norm": args.batch_norm, "depth": args.depth, "width": args.width}
    cfg = {k: v for k, v in given.items() if v is not None}
    accepted = model_options(args.model)
    for key in cfg:
        if key not in accepted:
            raise UsageError(f"--{key.replace('_', '-')} does not apply to model {args.model!r}")
    return cfg


def _build(args, info, cfg):
    """The model to train and a function making its checkpoint dict."""
    from spikec.checkpoint import NeuronConfig, SNNSpec, ann_checkpoint, build_ann
    from spikec.errors import SpikecError

    arch_config = {"input_shape": list(info.input_shape), "num_classes": info.num_classes, **cfg}
    try:
        if args.snn:
            neuron = NeuronConfig(kind=args.neuron, beta=args.beta if args.neuron == "lif" else 1.0,
                                  threshold=args.threshold, surrogate=args.surrogate, reset=args.reset)
            spec = SNNSpec(args.model, arch_config, neuron, args.timesteps, args.coding, args.readout)
            return spec.build(), spec.checkpoint
        act = {"name": "relu"} if args.act == "relu" else {"name": "qcfs", "levels": args.levels}
        return build_ann(args.model, arch_config, act), lambda model, **extra: ann_checkpoint(model, act, **extra)
    except SpikecError as exc:
        raise UsageError(str(exc)) from exc
    except (ValueError, TypeError) as exc:
        raise UsageError(f"cannot build {args.model} for {info.name} {tuple(info.input_shape)}: {exc}") from exc


def _is_image(shape) -> bool:
    return len(shape) == 3 and min(shape[1], shape[2]) >= 16
