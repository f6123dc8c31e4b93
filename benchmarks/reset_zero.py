"""Reset-to-zero rate conversion with hybrid fine-tuning against the soft-reset conversion at the same T.

NIR (and most neuromorphic chips) reset a neuron to zero after a spike and start from an empty
membrane; spikec's rate conversion is most accurate with soft reset and a half-threshold initial
membrane. This script converts one ANN checkpoint both ways at ``--timesteps``, fine-tunes the
reset-to-zero network for up to ``--epochs`` epochs (surrogate-gradient BPTT,
``spikec.conversion.finetune``) and reports its test accuracy after every epoch next to the
soft-reset network's, and the first epoch within ``--target`` points of it.

    python benchmarks/reset_zero.py --checkpoint runs/ann.pt --dataset digits --timesteps 32
    python benchmarks/reset_zero.py --checkpoint runs/cifar_vgg.pt --dataset /work/shared/data/cifar10 \
        --timesteps 32 --train-samples 10000 --test-samples 2000

Writes ``benchmarks/results/reset_zero_<dataset>_T<T>.json`` (or ``--out``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch


def main(argv=None) -> dict:
    from spikec.checkpoint import load_model
    from spikec.conversion.finetune import finetune
    from spikec.conversion.rate import convert_rate
    from spikec.data import load_dataset
    from spikec.data.sample import stratified_subset, stratified_tensors
    from spikec.training import evaluate

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="ANN checkpoint (spikec train)")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--timesteps", type=int, default=32)
    p.add_argument("--finetune-timesteps", type=int, default=None, help="T while fine-tuning (default --timesteps)")
    p.add_argument("--epochs", type=int, default=5, help="fine-tuning epochs (default 5)")
    p.add_argument("--lr", type=float, default=1e-3, help="fine-tuning learning rate (default 1e-3, Adam)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--schedule", default="cosine", help="learning-rate schedule over all epochs (spikec.train)")
    p.add_argument("--calib", type=int, default=512, help="calibration samples (stratified)")
    p.add_argument("--train-samples", type=int, default=None, help="fine-tune on a stratified subset")
    p.add_argument("--test-samples", type=int, default=None, help="evaluate on a stratified subset")
    p.add_argument("--target", type=float, default=1.0, help="points of accuracy the zero-reset SNN may trail by")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    ann, ckpt = load_model(args.checkpoint)
    train_data, test_data, info = load_dataset(args.dataset)
    calib, _ = stratified_tensors(train_data, args.calib, seed=args.seed)
    if args.train_samples:
        train_data = stratified_subset(train_data, args.train_samples, seed=args.seed)
    if args.test_samples:
        test_data = stratified_subset(test_data, args.test_samples, seed=args.seed)
    T = args.timesteps

    start = time.perf_counter()
    ann_acc = evaluate(ann, test_data)
    soft = convert_rate(ann, calib, timesteps=T)
    soft_acc = evaluate(soft, test_data)
    zero = convert_rate(ann, calib, timesteps=T, reset="zero")
    zero_acc = [evaluate(zero, test_data)]
    print(f"{info.name}, T={T}: ANN {ann_acc:.2%}, soft reset {soft_acc:.2%}, reset to zero {zero_acc[0]:.2%} before fine-tuning",
          flush=True)
    reached, epoch_seconds = None, []
    ft_T = args.finetune_timesteps or T

    def after_epoch(record):  # one schedule over all epochs; the accuracy at T after each
        nonlocal reached
        epoch_seconds.append(record.seconds)
        zero.timesteps = T
        zero_acc.append(evaluate(zero, test_data))
        zero.timesteps = ft_T
        gap = 100 * (soft_acc - zero_acc[-1])
        print(f"  epoch {record.epoch}: reset to zero {zero_acc[-1]:.2%} ({gap:+.2f} points behind soft reset), "
              f"{record.seconds:.0f} s", flush=True)
        if reached is None and gap <= args.target:
            reached = record.epoch

    finetune(zero, train_data, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, timesteps=ft_T,
             seed=args.seed, progress=sys.stderr.isatty(), schedule=args.schedule, on_epoch=after_epoch)
    zero.timesteps = T
    result = {
        "dataset": info.name, "checkpoint": args.checkpoint, "arch": ckpt.get("arch"), "timesteps": T,
        "finetune_timesteps": args.finetune_timesteps or T, "lr": args.lr, "schedule": args.schedule, "batch_size": args.batch_size,
        "calib": len(calib), "train_samples": len(train_data), "test_samples": len(test_data),
        "ann_accuracy": ann_acc, "soft_reset_accuracy": soft_acc, "zero_reset_accuracy_by_epoch": zero_acc,
        "epochs_to_target": reached, "target_points": args.target, "epoch_seconds": epoch_seconds,
        "seconds": time.perf_counter() - start, "threads": args.threads,
    }
    print(f"within {args.target:g} point(s) of soft reset after {reached} epoch(s)" if reached is not None
          else f"not within {args.target:g} point(s) of soft reset after {args.epochs} epoch(s)")
    out = args.out or os.path.join(os.path.dirname(__file__), "results", f"reset_zero_{info.name}_T{T}.json")
    from spikec.io.atomic import atomic_write_text

    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
