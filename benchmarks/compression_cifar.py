"""CIFAR-10 compression: density 0.1 + 4-bit weights on the VGG and ResNet-20 of the CIFAR issue, against Spike-Thrift.

For each ANN checkpoint given (``spikec train`` output, e.g. ``/work/cache/cifar/vgg16_relu.pt``):

- ``ttfs``: convert to a TTFS SNN (``--time-bits``), compress it with ``spikec.compress.compress_``
  (DNR + attention transfer, fine-tuned through the analytic TTFS simulator, which is cheap);
- ``rate``: the ANN-side route (``compress_via_ann``: DNR + attention on the ANN, re-convert to a
  rate SNN at ``--timesteps``, post-training 4-bit quantization on the SNN's scales), since
  surrogate-gradient BPTT of a CIFAR VGG is far beyond a 2-core CPU budget;
- ``--ttfs-route ann``: the ANN-side route for TTFS too (re-converted at ``--time-bits``; with
  ``--quant-group channel`` the ANN's per-channel grid survives batch-norm folding, so the SNN's
  re-quantization does not round a second time);
- optionally ``--structure tile`` (with ``--regularizer hoyer-square``) for tiles freed on the PE, or
  ``--structure channel`` (whole output channels, with the batch norm after each pruned layer held at
  zero for them): their neurons are silent, and the PE leaves them off the chip with every row that
  would read them.

On the ANN-side route the compressed ANN is cached beside its checkpoint
(``<stem>_compressed_<settings hash>.pt``), so every coding and every rerun reuses one compression
(``--redo`` compresses again). While it runs, its whole state is written to that name plus ``.state``
after every epoch; the same command run again after an interruption continues from the last epoch.
``--init <cached compression>`` starts from an earlier compression of the same ANN instead: its masks
stay, there is no pruning phase, and its weights are quantized again at ``--bits`` over
``--quant-epochs`` quantization-aware epochs, taught by the dense ANN (a longer schedule in stages,
or another bit width for a mask that took hours to train).

Each row: accuracy before/after on a stratified test subset, non-zero density, compression ratio
(dense 32-bit weights and biases over compressed bits, index overhead included), crossbar tiles
before/after (the PE's own mapping for TTFS, :mod:`spikec.compress.tiles`). The table ends with
Spike-Thrift's published figure (Kundu et al., WACV 2021: 33.4x compression of a CIFAR-10 VGG
with no significant accuracy loss) for comparison.

CPU budget (2 cores, one thread): the defaults (5000 stratified training samples, 2 pruning + 1
quantization-aware epochs, 1000 test samples) take roughly 20-40 min per network and coding on
the project VM; ``--train-samples``/``--epochs`` scale it linearly. Results go to
``benchmarks/results/compression_cifar.json``; ``--render`` prints the Markdown table.

    python benchmarks/compression_cifar.py /work/cache/cifar/vgg16_relu.pt /work/cache/cifar/resnet20_relu.pt
    python benchmarks/compression_cifar.py --render
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import json
import os
import platform
import sys
import time

import torch

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
OUT = os.path.join(RESULTS, "compression_cifar.json")
SPIKE_THRIFT = {"network": "VGG (Spike-Thrift, Kundu et al. WACV 2021)", "compression_ratio": 33.4,
                "note": "published: no significant accuracy loss on CIFAR-10"}


def _data(args):
    from spikec.data import load_dataset
    from spikec.data.sample import stratified_tensors

    train, test, info = load_dataset(args.data)
    return stratified_tensors(train, args.train_samples, args.seed), stratified_tensors(test, args.test_samples, args.seed)


def _measure(model, test, seed, hardware):
    from spikec.compress.metrics import activity
    from spikec.compress.size import model_size
    from spikec.compress.tiles import tile_count
    from spikec.errors import SpikecError

    a = activity(model, test, batch_size=100, seed=seed)
    s = model_size(model)
    try:
        t = tile_count(model, hardware)
        tiles = t.occupied
    except (SpikecError, ValueError) as exc:  # the PE cannot map every network; record why
        tiles = f"n/a ({type(exc).__name__})"
    return {"accuracy": a.accuracy, "density": s.density, "compression_ratio": s.ratio,
            "compression_ratio_float_side": s.ratio_float_side, "tiles": tiles,
            "spikes": a.spikes_per_inference, "sops": a.sops_per_inference}


def _validation_draw(train, args, coding, route):
    """A stratified draw of ``--val-samples`` training images outside the SNN-side tuning draw of
    ``--snn-quant-samples`` (excluded whether or not it is used, so every SNN-side schedule, post-training
    included, is scored on the same images), to choose SNN-side schedules without looking at test images
    (the ANN's fine-tuning saw all of them)."""
    from spikec.data.sample import stratified_indices

    labels = train[1]
    used = torch.zeros(len(labels), dtype=torch.bool)
    if route == "ann" and coding == "ttfs":
        used[stratified_indices(labels, min(args.snn_quant_samples, len(labels)), args.seed + 5)] = True
    rest = torch.nonzero(~used).flatten()
    pick = rest[stratified_indices(labels[rest], min(args.val_samples, len(rest)), args.seed + 6)]
    return train[0][pick], labels[pick]


def _accuracy(model, data, seed):
    from spikec.compress.metrics import activity

    return activity(model, data, batch_size=100, seed=seed).accuracy


def _config(args, hardware):
    """The compression of the table; tile groups and cell levels are those of ``hardware``'s PE."""
    from spikec.compress import AttentionConfig, CompressConfig, FinetuneConfig, PruneConfig, QuantConfig
    from spikec.compress.config import LayerSelection

    structure = {} if not args.structure else {"granularity": args.structure, "regularizer": args.regularizer,
                                               "strength": args.strength}
    from spikec.cli.compress import parse_layer_density

    prune = PruneConfig(density=args.density, layer_density=parse_layer_density(args.layer_density) or (),
                        tile_rows=hardware.tile_rows, tile_cols=hardware.tile_cols,
                        cells_per_weight=hardware.cells_per_weight, scope=args.scope, **structure,
                        layers=LayerSelection(skip_first=args.skip_first, skip_last=args.skip_last))
    return CompressConfig(prune=prune, quant=QuantConfig(bits=args.bits, cell_levels=hardware.cell_levels,
                                                         cells_per_weight=hardware.cells_per_weight, group=args.quant_group),
                          attention=AttentionConfig(beta=1.0),
                          finetune=FinetuneConfig(epochs=args.epochs, quant_epochs=args.quant_epochs, seed=args.seed, distill=args.distill,
                                                  batch_size=args.batch_size, lr=args.lr, augment=args.augment))


def _progress(phase, r):
    print(f"  {phase} epoch {r.epoch}: loss {r.loss:.3f}, train accuracy {r.train_accuracy:.2%} ({r.seconds:.0f}s)", flush=True)


CACHE_KEYS = ("density", "bits", "structure", "regularizer", "strength", "epochs", "quant_epochs", "batch_size", "lr",
              "scope", "quant_group", "augment", "train_samples", "seed")


def compressed_ann(path, args, train, hardware):
    """The ANN of ``path`` compressed on the ANN side, cached beside it (keyed by the settings) so that
    every coding, and a rerun, reuses one compression; returns ``(ann, report or None, seconds)``."""
    import hashlib

    from spikec.checkpoint import load_checkpoint, load_model, save_checkpoint
    from spikec.compress import compress_
    from spikec.compress.checkpoint import compressed_checkpoint, compression_record, load_restored

    settings = {k: getattr(args, k) for k in CACHE_KEYS}
    settings.update({k: True for k in ("skip_first", "skip_last") if getattr(args, k)})  # earlier caches keep their keys
    if args.distill:
        settings["distill"] = args.distill
    if args.layer_density:
        settings["layer_density"] = args.layer_density
    if args.init:
        settings["init"] = os.path.basename(args.init)
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    cache = f"{os.path.splitext(path)[0]}_compressed_{key}.pt"
    if os.path.exists(cache) and not args.redo:
        ann, _ = load_model(cache)
        print(f"reusing the compressed ANN {cache}", flush=True)
        return ann.eval(), None, 0.0
    ann, _ = load_model(path)
    cfg = _config(args, hardware)
    teacher = None
    if args.init:
        teacher = ann  # the dense ANN teaches; the compressed one is trained
        ann, ckpt = load_restored(args.init)
        if "compression" not in ckpt:
            raise SystemExit(f"--init {args.init}: not a compressed checkpoint")
        cfg = dataclasses.replace(cfg, prune=None, finetune=dataclasses.replace(cfg.finetune, epochs=args.quant_epochs))
    start = time.perf_counter()
    state = cache + ".state"  # written after every epoch: an interrupted run continues where it stopped
    resume = os.path.exists(state) and not args.redo
    if resume:
        print(f"resuming the compression from {state}", flush=True)
    report = compress_(ann, cfg, train, teacher=teacher, progress=_progress, state_file=state, resume=resume)
    ann.eval()
    seconds = time.perf_counter() - start
    save_checkpoint(cache, compressed_checkpoint(load_checkpoint(path), ann, compression_record(ann, cfg)))
    if os.path.exists(state):  # none without fine-tuning epochs
        os.unlink(state)
    print(f"compressed the ANN in {seconds:.0f} s; cached as {cache}", flush=True)
    return ann, report, seconds


def run_network(path, coding, args, train, test, hardware) -> dict:
    from spikec.checkpoint import load_model
    from spikec.compress import compress_
    from spikec.compress.api import compress_converted_
    from spikec.data.sample import stratified_tensors

    ann, _ = load_model(path)
    x_cal, _ = stratified_tensors(train, min(args.calib, len(train[1])), args.seed)

    def convert(a):
        if coding == "rate":
            from spikec.conversion.rate import convert_rate

            return convert_rate(a, x_cal, timesteps=args.timesteps)
        from spikec.conversion.ttfs import convert_ttfs

        return convert_ttfs(a, x_cal, time_bits=args.time_bits)

    snn = convert(ann)
    before = _measure(snn, test, args.seed, hardware)
    start = time.perf_counter()
    cfg = _config(args, hardware)
    route = "ann" if coding == "rate" else args.ttfs_route
    ann_seconds = None
    if route == "ann":
        small, _, ann_seconds = compressed_ann(path, args, train, hardware)
        start = time.perf_counter()
        snn_c = convert(copy.deepcopy(small))
        epochs = args.snn_quant_epochs if coding == "ttfs" else 0
        tune = stratified_tensors(train, min(args.snn_quant_samples, len(train[1])), args.seed + 5) if epochs else None
        if args.snn_quant_lr is not None:
            cfg = dataclasses.replace(cfg, finetune=dataclasses.replace(cfg.finetune, lr=args.snn_quant_lr))
        report = compress_converted_(snn_c, cfg, tune, snn_quant_epochs=epochs, progress=_progress)
    else:
        snn_c = copy.deepcopy(snn)
        report = compress_(snn_c, cfg, train, progress=_progress)
    after = _measure(snn_c, test, args.seed, hardware)
    row = {"network": os.path.basename(path), "coding": coding, "structure": args.structure or "weight", "route": route,
           "before": before, "after": after, "seconds": time.perf_counter() - start, "ann_seconds": ann_seconds,
           "bits": dict(report.bits) or args.bits}
    if args.val_samples:
        val = _validation_draw(train, args, coding, route)
        row["validation"] = {"samples": len(val[1]), "before": _accuracy(snn, val, args.seed),
                             "after": _accuracy(snn_c, val, args.seed)}
        print(f"  validation ({len(val[1])} training images outside the SNN-side draw): "
              f"{row['validation']['before']:.2%} -> {row['validation']['after']:.2%}", flush=True)
    print(f"{row['network']} {coding}: {before['accuracy']:.2%} -> {after['accuracy']:.2%}, "
          f"{after['compression_ratio']:.1f}x, tiles {before['tiles']} -> {after['tiles']} ({row['seconds']:.0f}s)",
          flush=True)
    return row


def render(path: str = OUT) -> str:
    with open(path) as f:
        r = json.load(f)
    lines = ["## CIFAR-10 compression (density 0.1, 4-bit weights)", "", f"- Command: `{r['command']}`",
             f"- Date: {r['date']}; machine: {r['machine']}", f"- Settings: {json.dumps(r['settings'])}", "",
             "| network | coding | structure | SNN accuracy | compressed | Δ (points) | density | compression | tiles before -> after |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in r["runs"]:
        b, a = row["before"], row["after"]
        route = row.get("route", "ann" if row["coding"] == "rate" else "snn")
        lines.append(f"| {row['network']} | {row['coding']} ({route} route) | {row['structure']} | {b['accuracy']:.2%} | {a['accuracy']:.2%} "
                     f"| {100 * (a['accuracy'] - b['accuracy']):+.1f} | {a['density']:.3f} | {a['compression_ratio']:.1f}x "
                     f"| {b['tiles']} -> {a['tiles']} |")
    lines.append(f"| {SPIKE_THRIFT['network']} | rate | weight | - | - | no significant loss | - | "
                 f"{SPIKE_THRIFT['compression_ratio']}x | - |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", nargs="*", help="ANN checkpoints (spikec train) of CIFAR-10 networks")
    p.add_argument("--data", default="/work/shared/data/cifar10", help="CIFAR-10 folder (train/, test/)")
    p.add_argument("--codings", default="ttfs,rate")
    p.add_argument("--density", type=float, default=0.1)
    p.add_argument("--bits", type=int, default=4)
    p.add_argument("--layer-density", default=None, metavar="NAME=D,...",
                   help="per-layer densities overriding --density (spikec compress --layer-density)")
    p.add_argument("--structure", default=None, choices=(None, "row", "kernel", "channel", "tile-row", "tile-col", "tile"),
                   help="pruning groups: 1 x k kernel rows, k x k kernels, or groups aligned with the crossbar tiles")
    p.add_argument("--regularizer", default="hoyer-square")
    p.add_argument("--strength", type=float, default=1e-3)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--distill", type=float, default=0.0, help="knowledge-distillation weight of the fine-tuning")
    p.add_argument("--quant-epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-2, help="relative learning rate of the fine-tuning (default 1e-2)")
    p.add_argument("--scope", default="layer", choices=("layer", "global"), help="magnitude ranking per layer or over the network")
    p.add_argument("--skip-first", action="store_true", help="leave the first synaptic layer dense")
    p.add_argument("--skip-last", action="store_true", help="leave the readout dense")
    p.add_argument("--quant-group", default="layer", choices=("layer", "channel"),
                   help="one weight scale per layer or per output channel (channel survives batch-norm folding "
                        "on the ANN-side route)")
    p.add_argument("--augment", default="auto", choices=("auto", "crop-flip", "none"), help="crop+flip while fine-tuning")
    p.add_argument("--ttfs-route", default="snn", choices=("snn", "ann"),
                   help="TTFS: fine-tune the SNN through the analytic simulator (snn) or the ANN, then re-convert (ann)")
    p.add_argument("--train-samples", type=int, default=5000)
    p.add_argument("--test-samples", type=int, default=1000)
    p.add_argument("--calib", type=int, default=512)
    p.add_argument("--timesteps", type=int, default=64)
    p.add_argument("--time-bits", type=int, default=6)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--pack-rows", action="store_true",
                   help="count tiles with the PE's row_packing (each column tile keeps only its rows with a nonzero "
                        "weight there), as spikec energy --pack-rows maps them")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--snn-quant-epochs", type=int, default=0,
                   help="ANN-side route, TTFS: quantization-aware epochs on the converted SNN through the analytic "
                        "simulator (its biases round to the weight step, as on the PE; default 0: post-training)")
    p.add_argument("--snn-quant-samples", type=int, default=10000, help="stratified training images of those epochs")
    p.add_argument("--snn-quant-lr", type=float, default=None,
                   help="relative learning rate of those epochs (default: --lr)")
    p.add_argument("--val-samples", type=int, default=0,
                   help="also score a stratified draw of this many training images outside the SNN-side draw "
                        "(for choosing SNN-side schedules without test images)")
    p.add_argument("--init", default=None, metavar="COMPRESSED_PT",
                   help="start from this compressed ANN (an earlier run's cache): keep its masks, skip pruning, "
                        "quantize again at --bits over --quant-epochs epochs (ttfs/rate via the ANN route)")
    p.add_argument("--redo", action="store_true", help="compress the ANN again even if a cached one matches")
    p.add_argument("--render", action="store_true")
    p.add_argument("--out", default=OUT, help="results JSON (default benchmarks/results/compression_cifar.json)")
    args = p.parse_args(argv)
    if args.render:
        sys.stdout.write(render(args.out))
        return 0
    if not args.checkpoints:
        p.error("give ANN checkpoints, or --render")
    if args.init and not os.path.isfile(args.init):
        p.error(f"--init: no such file {args.init}")
    if args.init and (len(args.checkpoints) != 1 or ("ttfs" in args.codings.split(",") and args.ttfs_route != "ann")):
        p.error("--init continues one network's compression on the ANN route: give one checkpoint and --ttfs-route ann")
    from spikec.hardware.config import preset
    from spikec.io.atomic import atomic_write_text

    torch.set_num_threads(args.threads)
    train, test = _data(args)
    hardware = preset("twin-column").replace(row_packing=args.pack_rows)
    rows = []
    os.makedirs(RESULTS, exist_ok=True)
    settings = {k: v for k, v in vars(args).items() if k not in ("checkpoints", "render", "out")}
    for path in args.checkpoints:
        for coding in [c for c in args.codings.split(",") if c]:
            rows.append(run_network(path, coding, args, train, test, hardware))
            atomic_write_text(args.out, json.dumps({  # after every row, so a long run keeps what it measured
                "command": " ".join(["python"] + sys.argv), "date": datetime.date.today().isoformat(),
                "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {args.threads} thread(s)",
                "settings": settings, "runs": rows, "spike_thrift": SPIKE_THRIFT}, indent=2, default=str) + "\n")
    sys.stdout.write(render(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
