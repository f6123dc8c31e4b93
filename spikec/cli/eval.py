"""``spikec eval``: accuracy of any checkpoint (ANN, directly trained SNN, converted SNN) on a dataset."""
from __future__ import annotations

from spikec.cli import device_arg, user_model_args
from spikec.errors import SpikecError, UsageError


def add_parser(subparsers, parents):
    p = subparsers.add_parser(
        "eval", parents=parents, help="accuracy of a checkpoint on a dataset",
        description="Load a checkpoint of any kind and print its top-1 accuracy on a dataset's test split.",
    )
    p.add_argument("checkpoint", nargs="?", default=None,
                   help="checkpoint file written by spikec train or spikec convert (or --model)")
    p.add_argument("--dataset", default="digits", help="'digits' (embedded) or a path to IDX / CIFAR-10 / image folder / HDF5 data")
    p.add_argument("--format", default=None, help="data format of --dataset when it is a path (default: detect)")
    p.add_argument("--split", choices=("test", "train"), default="test")
    p.add_argument("--timesteps", default=None, metavar="T[,T...]",
                   help="simulate a spiking checkpoint for this many steps; several (8,16,32) are read from one "
                        "run of the largest")
    p.add_argument("--time-chunk", type=int, default=None, metavar="STEPS",
                   help="simulate at most this many steps at once, so memory does not grow with T (default 8)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0, help="seeds stochastic input coding")
    device_arg.add_argument(p)
    bench = p.add_argument_group("neurobench (optional extra: pip install 'spikec[neurobench]')")
    bench.add_argument("--neurobench", action="store_true",
                       help="run neurobench's Benchmark (footprint, connection and activation sparsity, synaptic "
                            "operations) on a spiking checkpoint and print it beside spikec's own counts")
    bench.add_argument("--neurobench-samples", type=int, default=512, metavar="N",
                       help="stratified samples of the split for --neurobench (default 512)")
    user_model_args.add_arguments(p.add_argument_group("your own ANN (instead of a checkpoint)"))
    return p


def run(args) -> dict:
    import torch

    from spikec.checkpoint import load_model
    from spikec.cli.convert import parse_timesteps
    from spikec.data import load_dataset
    from spikec.snn import SpikingClassifier
    from spikec.training import evaluate

    device_arg.resolve(args.device)
    wanted = parse_timesteps(args.timesteps) if args.timesteps is not None else None
    if args.time_chunk is not None and args.time_chunk < 1:
        raise UsageError(f"--time-chunk must be >= 1, got {args.time_chunk}")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    train_data, test_data, info = load_dataset(args.dataset, format=args.format)
    if user_model_args.wants_user_model(args, args.checkpoint):
        model, ckpt = user_model_args.load(args, info)
        args.checkpoint = args.model  # names the model in what is printed and returned
    else:
        model, ckpt = load_model(args.checkpoint)
        _check_shapes(args.checkpoint, ckpt, info)
    if wanted is not None and not hasattr(model, "timesteps"):
        raise UsageError(f"--timesteps applies to spiking checkpoints; {args.checkpoint} is a {ckpt['kind']}")
    data = test_data if args.split == "test" else train_data
    if args.neurobench:
        return _run_neurobench(args, model, ckpt, info, data, wanted)
    if isinstance(model, SpikingClassifier):
        return _run_steps(args, model.to(args.device), ckpt, info, data, wanted or [model.timesteps])
    if wanted is not None:
        if len(wanted) > 1:
            raise UsageError(f"--timesteps: {args.checkpoint} ({ckpt['kind']}) is simulated for one T at a time")
        model.timesteps = wanted[0]
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


def _run_steps(args, model, ckpt, info, data, steps) -> dict:
    """A spiking classifier at every T from one run of max(T) steps per batch (spikec.evaluation)."""
    import sys

    from spikec.evaluation import DEFAULT_CHUNK, evaluate_steps

    chunk = args.time_chunk or DEFAULT_CHUNK
    ev = evaluate_steps(model, data, steps, batch_size=args.batch_size, chunk=chunk, device=args.device,
                        seed=args.seed, progress=not args.json and sys.stderr.isatty())
    if len(steps) > 1:
        print(f"{'T':>5}  {'accuracy':>8}  {'spikes/neuron':>13}")
        for r in ev.results:
            print(f"{r.timesteps:>5}  {100 * r.accuracy:>7.2f}%  {r.spikes_per_neuron:>13.3f}")
    last = ev.results[-1]
    print(f"{args.checkpoint} ({ckpt['kind']} {ckpt.get('arch', '?')}, T={last.timesteps}) on {info.name} "
          f"{args.split}: accuracy {last.accuracy:.2%}, {last.spikes_per_neuron:.3f} spikes/neuron "
          f"({ev.samples} samples, one run of {ev.simulated_steps} steps in chunks of {chunk}, {ev.seconds:.2f} s)")
    return {"accuracy": last.accuracy, "checkpoint": args.checkpoint, "kind": ckpt["kind"], "dataset": info.name,
            "split": args.split, "samples": ev.samples, "timesteps": last.timesteps,
            "spikes_per_neuron": last.spikes_per_neuron, "time_chunk": chunk, "seconds": ev.seconds,
            "steps": {r.timesteps: {"accuracy": r.accuracy, "spikes_per_neuron": r.spikes_per_neuron}
                      for r in ev.results}}


def _run_neurobench(args, model, ckpt, info, data, wanted) -> dict:
    """neurobench's Benchmark on the network beside spikec's counts (spikec.neurobench_bridge)."""
    from spikec.data.sample import stratified_subset
    from spikec.neurobench_bridge import format_report, neurobench_report

    if not hasattr(model, "timesteps"):
        raise UsageError(f"--neurobench measures spiking networks; {args.checkpoint} is a {ckpt['kind']}")
    if args.neurobench_samples < 1:
        raise UsageError(f"--neurobench-samples must be >= 1, got {args.neurobench_samples}")
    if wanted is not None:
        model.timesteps = max(wanted)
    subset = stratified_subset(data, min(args.neurobench_samples, len(data)), seed=args.seed)
    report = neurobench_report(model.to(args.device), subset, batch_size=min(args.batch_size, 64), seed=args.seed)
    print(f"{args.checkpoint} ({ckpt['kind']} {ckpt.get('arch', '?')}, T={model.timesteps}) on {info.name} "
          f"{args.split}, {len(subset)} samples: neurobench {report['neurobench_version']} beside spikec")
    for line in format_report(report):
        print(line)
    return {"checkpoint": args.checkpoint, "kind": ckpt["kind"], "dataset": info.name, "split": args.split,
            "samples": len(subset), "timesteps": int(model.timesteps), "accuracy": report["spikec"]["accuracy"],
            **report}


def _check_shapes(path: str, ckpt: dict, info) -> None:
    """Fail with one line if the data does not fit the checkpoint's input shape or classes."""
    config = ckpt.get("arch_config") or {}
    expected = config.get("input_shape")
    if expected is not None and tuple(expected) != tuple(info.input_shape):
        raise SpikecError(f"{path} expects inputs of shape {tuple(expected)}, dataset {info.name} has {tuple(info.input_shape)}")
    classes = config.get("num_classes")
    if classes is not None and info.num_classes > classes:
        raise SpikecError(f"{path} has {classes} classes, dataset {info.name} has {info.num_classes}")
