"""``spikec eval``: accuracy of any checkpoint (ANN, directly trained SNN, converted SNN) on a dataset."""
from __future__ import annotations

from spikec.errors import SpikecError, UsageError


def add_parser(subparsers, parents):
    p = subparsers.add_parser(
        "eval", parents=parents, help="accuracy of a checkpoint on a dataset",
        description="Load a checkpoint of any kind and print its top-1 accuracy on a dataset's test split.",
    )
    p.add_argument("checkpoint", help="checkpoint file written by spikec train or spikec convert")
    p.add_argument("--dataset", default="digits", help="'digits' (embedded) or a path to IDX / CIFAR-10 / image folder / HDF5 data")
    p.add_argument("--format", default=None, help="data format of --dataset when it is a path (default: detect)")
    p.add_argument("--split", choices=("test", "train"), default="test")
    p.add_argument("--timesteps", type=int, default=None, help="simulate a spiking checkpoint for this many steps")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0, help="seeds stochastic input coding")
    p.add_argument("--device", default="cpu")
    return p


def run(args) -> dict:
    import torch

    from spikec.checkpoint import load_model
    from spikec.data import load_dataset
    from spikec.training import evaluate

    if args.timesteps is not None and args.timesteps < 1:
        raise UsageError(f"--timesteps must be >= 1, got {args.timesteps}")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    model, ckpt = load_model(args.checkpoint)
    train_data, test_data, info = load_dataset(args.dataset, format=args.format)
    _check_shapes(args.checkpoint, ckpt, info)
    if args.timesteps is not None:
        if not hasattr(model, "timesteps"):
            raise UsageError(f"--timesteps applies to spiking checkpoints; {args.checkpoint} is a {ckpt['kind']}")
        model.timesteps = args.timesteps
    data = test_data if args.split == "test" else train_data
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        accuracy = evaluate(model.to(args.device), data, batch_size=args.batch_size, device=args.device)
    timesteps = getattr(model, "timesteps", None)
    steps = f", T={timesteps}" if timesteps is not None else ""
    print(f"{args.checkpoint} ({ckpt['kind']} {ckpt.get('arch', '?')}{steps}) on {info.name} {args.split}: "
          f"accuracy {accuracy:.2%} ({len(data)} samples)")
    result = {"accuracy": accuracy, "checkpoint": args.checkpoint, "kind": ckpt["kind"], "dataset": info.name,
              "split": args.split, "samples": len(data)}
    if timesteps is not None:
        result["timesteps"] = int(timesteps)
    return result


def _check_shapes(path: str, ckpt: dict, info) -> None:
    """Fail with one line if the data does not fit the checkpoint's input shape or classes."""
    config = ckpt.get("arch_config") or {}
    expected = config.get("input_shape")
    if expected is not None and tuple(expected) != tuple(info.input_shape):
        raise SpikecError(f"{path} expects inputs of shape {tuple(expected)}, dataset {info.name} has {tuple(info.input_shape)}")
    classes = config.get("num_classes")
    if classes is not None and info.num_classes > classes:
        raise SpikecError(f"{path} has {classes} classes, dataset {info.name} has {info.num_classes}")
