"""``spikec convert ANN_FILE --coding ttfs``: the TTFS half of ``spikec convert``.

:mod:`spikec.cli.convert` owns the shared flags (``--dataset``, ``--calib``, ``--out``,
``--batch-size``, ``--seed``, ``--finetune-epochs``, ``--finetune-lr``) and calls :func:`run` with
the loaded ANN and data. This module adds the TTFS-only flags and reports ANN accuracy, SNN
accuracy, agreement of predictions with the ANN, spikes per neuron and latency in time steps.
"""
from __future__ import annotations

import time

from spikec.errors import UsageError

DEFAULT_FINETUNE_LR = 1e-4  # used when --finetune-lr is absent or None


def add_arguments(parser) -> None:
    """TTFS-only flags (``parser`` may be an argument group)."""
    parser.add_argument("--time-bits", type=int, default=None, metavar="B",
                        help="TTFS: 2**B time steps per layer window (default: continuous spike times)")
    parser.add_argument("--simulator", choices=("analytic", "stepped"), default="analytic",
                        help="TTFS: event-driven closed form or step-by-step simulation (needs --time-bits)")
    parser.add_argument("--margin", type=float, default=1.25,
                        help="TTFS: window covers this times the largest calibration activation (default 1.25)")


def _check(args) -> None:
    if args.time_bits is not None and not 1 <= args.time_bits <= 24:
        raise UsageError(f"--time-bits must be in 1..24, got {args.time_bits}")
    if args.simulator == "stepped" and args.time_bits is None:
        raise UsageError("--simulator stepped needs --time-bits")
    if not args.margin > 0:
        raise UsageError(f"--margin must be positive, got {args.margin}")
    epochs = getattr(args, "finetune_epochs", 0) or 0
    if epochs < 0:
        raise UsageError(f"--finetune-epochs must be >= 0, got {epochs}")
    if epochs > 0 and args.time_bits is None:
        raise UsageError("--finetune-epochs with --coding ttfs needs --time-bits (fine-tuning recovers rounding losses)")


def run(args, ann, ckpt, train_data, test_data) -> dict:
    """Convert, optionally fine-tune, evaluate and save; returns the results dict."""
    from spikec.checkpoint import save_checkpoint
    from spikec.conversion.ttfs import convert_ttfs, ttfs_checkpoint
    from spikec.conversion.ttfs_finetune import finetune_ttfs
    from spikec.training import evaluate
    from spikec.data.sample import stratified_tensors

    _check(args)
    batch = getattr(args, "batch_size", 256)
    ann_acc = evaluate(ann, test_data, batch_size=batch)
    print(f"ANN accuracy: {100 * ann_acc:.2f}% ({ckpt.get('arch', '?')}, {len(test_data)} test samples)")
    calib, _ = stratified_tensors(train_data, getattr(args, "calib", 512), seed=getattr(args, "seed", 0))
    start = time.perf_counter()
    snn = convert_ttfs(ann, calib, time_bits=args.time_bits, simulator=args.simulator, margin=args.margin)
    seconds = time.perf_counter() - start
    resolution = "continuous time" if args.time_bits is None else f"{2 ** args.time_bits} steps/window"
    print(f"converted in {seconds:.3f} s: {len(snn.spiking_layers())} spiking layers, {resolution}, "
          f"{args.simulator} simulator, calibrated on {len(calib)} samples (margin {args.margin:g})")
    result = {"ann_accuracy": ann_acc, "seconds": seconds, "time_bits": args.time_bits,
              "simulator": args.simulator, "margin": args.margin, "calib_samples": len(calib)}
    epochs = getattr(args, "finetune_epochs", 0) or 0
    if epochs > 0:
        before = evaluate(snn, test_data, batch_size=batch)
        result["converted_accuracy"] = before
        lr = getattr(args, "finetune_lr", None) or DEFAULT_FINETUNE_LR
        print(f"SNN accuracy before fine-tuning: {100 * before:.2f}%; fine-tuning {epochs} epoch(s), lr {lr:g}")
        finetune_ttfs(snn, train_data, epochs=epochs, lr=lr, seed=getattr(args, "seed", 0),
                      progress=not getattr(args, "json", False))
    result.update(_evaluate(snn, ann, test_data, batch))
    print(f"SNN accuracy: {100 * result['snn_accuracy']:.2f}%  agreement with ANN: {100 * result['agreement']:.2f}%")
    print(f"spikes per neuron: {result['spikes_per_neuron']:.3f} (max {result['max_spikes_per_neuron']:g} per "
          f"neuron), fired before t_max: {100 * result['fired_fraction']:.1f}%")
    print(f"latency: {result['latency_steps']} time steps ({snn.latency_windows} windows of "
          f"{snn.simulation.report_steps} steps)")
    result["checkpoint"] = None
    if getattr(args, "out", None):
        metrics = {k: result[k] for k in ("ann_accuracy", "snn_accuracy", "agreement", "spikes_per_neuron")}
        extra = {"metrics": metrics}
        if "dataset" in ckpt:
            extra["dataset"] = ckpt["dataset"]
        result["checkpoint"] = save_checkpoint(args.out, ttfs_checkpoint(snn, ann, **extra))
        print(f"saved {result['checkpoint']}")
    return result


def _evaluate(snn, ann, test_data, batch_size: int) -> dict:
    """SNN accuracy, agreement with the ANN's predictions and spike statistics over ``test_data``."""
    import torch

    import spikec
    from spikec.training import batches

    correct = agree = seen = 0
    with torch.no_grad(), spikec.record(snn, first_spike_times=False) as rec:  # 4 bytes a neuron a sample otherwise
        for x, y in batches(test_data, batch_size):
            pred = snn(x).argmax(1)
            correct += int((pred == y).sum())
            agree += int((pred == ann(x).argmax(1)).sum())
            seen += len(y)
    fired = sum(r.fired_fraction * r.num_neurons for r in rec.layers.values()) / max(rec.num_neurons, 1)
    return {
        "snn_accuracy": correct / max(seen, 1), "agreement": agree / max(seen, 1),
        "spikes_per_neuron": rec.spikes_per_neuron, "max_spikes_per_neuron": rec.max_spikes_per_neuron,
        "fired_fraction": fired, "latency_steps": snn.latency_steps, "latency_windows": snn.latency_windows,
        "layers": rec.summary()["layers"],
    }
