"""``spikec convert ANN_FILE``: convert a trained ANN checkpoint into a spiking network.

``--coding rate`` (default) converts to IF neurons with calibrated thresholds and reports the
SNN's accuracy and spikes per neuron per inference at each ``--timesteps`` value; ``--out`` saves
the network (at the largest T) as a ``rate_snn`` checkpoint that ``spikec eval`` reads.
``--coding ttfs`` hands over to :mod:`spikec.cli.convert_ttfs`.
"""
from __future__ import annotations

import importlib

from spikec.cli import device_arg, user_model_args
from spikec.errors import SpikecError, UsageError

CODINGS = ("rate", "ttfs")


def add_parser(subparsers, parents):
    p = subparsers.add_parser(
        "convert",
        parents=parents,
        help="convert a trained ANN checkpoint into a spiking network (rate or TTFS coding)",
        description="Convert a trained ANN checkpoint into a spiking network and report its accuracy.",
    )
    p.add_argument("ann_file", metavar="ANN_FILE", nargs="?", default=None,
                   help="ANN checkpoint written by 'spikec train' (or use --model)")
    p.add_argument("--coding", choices=CODINGS, default="rate", help="spike coding (default rate)")
    p.add_argument("--dataset", default=None,
                   help="dataset name or path for calibration and evaluation (default: the ANN's, else digits)")
    p.add_argument("--calib", type=int, default=512, metavar="N",
                   help="training samples used to calibrate thresholds (default 512)")
    p.add_argument("--out", default=None, metavar="SNN_FILE", help="write the converted network here")
    rate = p.add_argument_group("rate coding")
    rate.add_argument("--timesteps", default="32", metavar="T[,T...]",
                      help="time steps to evaluate, comma-separated (default 32); the saved network uses the largest")
    rate.add_argument("--norm", default="percentile:99.9",
                      help="threshold normalisation: percentile[:p], max or channel[:p] (default percentile:99.9)")
    rate.add_argument("--maxpool", choices=("count", "gate"), default="count",
                      help="spike max-pool rule (default count)")
    rate.add_argument("--reset", choices=("subtract", "zero"), default="subtract",
                      help="neuron reset: subtract (default, most accurate) or zero (exports to NIR; initial membrane "
                           "0; add --finetune-epochs to recover the accuracy)")
    rate.add_argument("--calibrate-bias", type=int, default=None, metavar="T",
                      help="after conversion, correct each channel's bias so that its mean rate at T steps matches the "
                           "ANN on the calibration draw (Li et al. 2021; best at small T, made for this T only)")
    rate.add_argument("--calibrate-bias-sweeps", type=int, default=2, metavar="N",
                      help="passes of --calibrate-bias over the layers (default 2)")
    rate.add_argument("--finetune-timesteps", type=int, default=None, metavar="T",
                      help="T used while fine-tuning (default: the smallest --timesteps value)")
    p.add_argument("--finetune-epochs", type=int, default=0, metavar="N",
                   help="fine-tuning epochs of the converted network (default 0)")
    p.add_argument("--finetune-lr", type=float, default=1e-3, help="fine-tuning learning rate (default 1e-3)")
    p.add_argument("--batch-size", type=int, default=256, help="evaluation batch size (default 256)")
    p.add_argument("--seed", type=int, default=0, help="random seed of fine-tuning (default 0)")
    device_arg.add_argument(p)
    rate.add_argument("--time-chunk", type=int, default=None, metavar="STEPS",
                      help="simulate this many time steps per call while evaluating, so memory does not grow "
                           "with T (default: spikec.evaluation.DEFAULT_CHUNK)")
    ttfs = _ttfs_module()
    if ttfs is not None:
        ttfs.add_arguments(p.add_argument_group("TTFS coding"))
    user_model_args.add_arguments(p.add_argument_group("your own model (instead of ANN_FILE)"))
    return p


def _ttfs_module():
    try:
        return importlib.import_module("spikec.cli.convert_ttfs")
    except ModuleNotFoundError as exc:
        if exc.name != "spikec.cli.convert_ttfs":
            raise
        return None


def parse_timesteps(text: str) -> list[int]:
    """``"4,8,16"`` -> ``[4, 8, 16]``; a UsageError naming ``--timesteps`` otherwise."""
    try:
        steps = [int(part) for part in str(text).split(",") if part.strip()]
    except ValueError:
        steps = []
    if not steps or min(steps) < 1:
        raise UsageError(f"--timesteps {text!r}: expected positive integers like 4,8,16,32")
    return sorted(set(steps))


def run(args) -> dict:
    from spikec.checkpoint import load_model

    if args.calib < 1:
        raise UsageError(f"--calib must be >= 1, got {args.calib}")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    device = device_arg.resolve(args.device)
    if args.coding == "ttfs":
        ttfs = _ttfs_module()
        if ttfs is None:
            raise UsageError("TTFS conversion is not available yet")
        if device.type != "cpu":
            raise UsageError(f"--device {args.device}: TTFS conversion runs on cpu only (its analytic simulator "
                             "is cheap); rate conversion takes --device")
    else:
        if args.time_chunk is not None and args.time_chunk < 1:
            raise UsageError(f"--time-chunk must be >= 1, got {args.time_chunk}")
        steps = parse_timesteps(args.timesteps)
        if args.calibrate_bias is not None and args.calibrate_bias < 1:
            raise UsageError(f"--calibrate-bias must be >= 1, got {args.calibrate_bias}")
        if args.calibrate_bias_sweeps < 1:
            raise UsageError(f"--calibrate-bias-sweeps must be >= 1, got {args.calibrate_bias_sweeps}")
        if args.finetune_epochs < 0:
            raise UsageError(f"--finetune-epochs must be >= 0, got {args.finetune_epochs}")
    if user_model_args.wants_user_model(args, args.ann_file):
        from spikec.data import load_dataset

        train_data, test_data, info = load_dataset(args.dataset or "digits")
        ann, ckpt = user_model_args.load(args, info)
    else:
        ann, ckpt = load_model(args.ann_file)
        if ckpt["kind"] != "ann":
            raise UsageError(f"{args.ann_file} is a {ckpt['kind']} checkpoint; spikec convert needs an ANN (kind 'ann')")
        train_data, test_data = _load_data(args, ckpt)
    if args.coding == "ttfs":
        return ttfs.run(args, ann, ckpt, train_data, test_data)
    return _run_rate(args, steps, ann.to(device), ckpt, train_data, test_data, device)


def _load_data(args, ckpt):
    from spikec.data import load_dataset

    recorded = ckpt.get("dataset") or {}
    if args.dataset:
        name, fmt = args.dataset, None
    elif recorded.get("format") not in (None, "digits"):
        name, fmt = recorded.get("source"), recorded.get("format")
    else:
        name, fmt = "digits", None
    train_data, test_data, info = load_dataset(name, format=fmt)
    expected = tuple(ckpt["arch_config"].get("input_shape", info.input_shape))
    if tuple(info.input_shape) != expected:
        raise SpikecError(f"dataset {name} has inputs of shape {tuple(info.input_shape)}, but {args.ann_file} "
                          f"expects {expected}")
    return train_data, test_data


def _run_rate(args, steps, ann, ckpt, train_data, test_data, device) -> dict:
    from spikec.checkpoint import save_checkpoint
    from spikec.conversion.rate import convert_rate, rate_snn_checkpoint
    from spikec.data.sample import stratified_tensors
    from spikec.training import evaluate

    ann_acc = evaluate(ann, test_data, batch_size=args.batch_size, device=device)
    print(f"ANN accuracy: {100 * ann_acc:.2f}% ({ckpt['arch']}, {len(test_data)} test samples)")
    calib, _ = stratified_tensors(train_data, args.calib, seed=args.seed)  # a class-sorted folder: never the first N
    snn = convert_rate(ann, calib.to(device), timesteps=max(steps), norm=args.norm, maxpool=args.maxpool, reset=args.reset)
    conv = snn.conversion
    print(f"converted in {conv['seconds']:.3f} s (calibration {conv['calibration_seconds']:.3f} s on "
          f"{len(calib)} samples, norm {conv['norm']}, {len(conv['neuron_layers'])} neuron layers, "
          f"reset {conv['reset']})")
    result = {"ann_accuracy": ann_acc, "seconds": conv["seconds"], "calibration_seconds": conv["calibration_seconds"],
              "norm": conv["norm"], "calib_samples": len(calib), "reset": conv["reset"]}
    if args.calibrate_bias is not None:
        result["bias_calibration"] = _calibrate_bias(args, snn, ann, calib.to(device))
    accuracy, spikes = _evaluate_steps(snn, steps, test_data, args.batch_size, args, device)
    if args.finetune_epochs > 0:
        result["converted_accuracy"], result["converted_spikes_per_neuron"] = accuracy, spikes
        accuracy, spikes = _finetune(args, snn, steps, train_data, test_data, device)
    result["snn_accuracy"], result["spikes_per_neuron"] = accuracy, spikes
    snn.timesteps = max(steps)
    result["checkpoint"] = None
    if args.out:
        metrics = {"ann_accuracy": ann_acc, "snn_accuracy": accuracy[max(steps)], "timesteps": max(steps)}
        result["checkpoint"] = save_checkpoint(args.out, rate_snn_checkpoint(snn.cpu(), ckpt, metrics=metrics))
        print(f"saved {result['checkpoint']} (T={max(steps)})")
    return result


def _calibrate_bias(args, snn, ann, calib) -> dict:
    import sys

    from spikec.conversion.bias_calibration import calibrate_bias

    report = calibrate_bias(snn, ann, calib, timesteps=args.calibrate_bias, sweeps=args.calibrate_bias_sweeps,
                            batch_size=min(args.batch_size, 128), progress=not args.json and sys.stderr.isatty())
    first = [v[0] for v in report.error_before.values()]
    print(f"bias calibration for T={report.timesteps}: {len(first)} layers, {report.sweeps} sweep(s), "
          f"{report.samples} samples, {report.seconds:.1f} s; mean rate error before it "
          f"{sum(first) / len(first):.4f} thresholds per channel (largest {max(first):.4f})")
    return report.as_dict()


def _evaluate_steps(snn, steps, test_data, batch_size, args=None, device="cpu") -> tuple[dict, dict]:
    """Accuracy and spikes per neuron at every T, from one run of max(T) steps (spikec.evaluation)."""
    import sys

    from spikec.evaluation import DEFAULT_CHUNK, evaluate_steps

    chunk = getattr(args, "time_chunk", None) or DEFAULT_CHUNK
    progress = not getattr(args, "json", False) and sys.stderr.isatty()
    ev = evaluate_steps(snn, test_data, steps, batch_size=batch_size, chunk=chunk, progress=progress, device=device)
    print(f"{'T':>5}  {'SNN acc':>8}  {'spikes/neuron':>13}")
    for r in ev.results:
        print(f"{r.timesteps:>5}  {100 * r.accuracy:>7.2f}%  {r.spikes_per_neuron:>13.3f}")
    print(f"(one run of {ev.simulated_steps} steps per sample in chunks of {chunk}, {ev.seconds:.2f} s)")
    return ev.accuracy, ev.spikes_per_neuron


def _finetune(args, snn, steps, train_data, test_data, device):
    from spikec.conversion.finetune import finetune
    from spikec.data.augment import default_augmentation

    T = args.finetune_timesteps if args.finetune_timesteps is not None else min(steps)
    if T < 1:
        raise UsageError(f"--finetune-timesteps must be >= 1, got {T}")
    augment = default_augmentation(tuple(train_data[0][0].shape))  # crop+flip for images, as in spikec train
    print(f"fine-tuning {args.finetune_epochs} epoch(s) at T={T}, lr {args.finetune_lr:g}"
          + (f", {augment!r}" if augment is not None else ""))
    finetune(snn, train_data, epochs=args.finetune_epochs, lr=args.finetune_lr, timesteps=T, seed=args.seed,
             progress=not args.json, device=device, augment=augment)
    print("after fine-tuning:")
    return _evaluate_steps(snn, steps, test_data, args.batch_size, args, device)

