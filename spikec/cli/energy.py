"""``spikec energy SNN_FILE``: energy, latency and accuracy of a TTFS SNN on the twin-column ReRAM PE.

Writes ``report.json``, ``report.html`` (self-contained), ``figures/*.png`` and ``events.h5``
under ``--out``; see ``docs/hardware-model.md`` for the model and every default.
"""
from __future__ import annotations

from spikec.errors import UsageError


def add_parser(subparsers, parents):
    p = subparsers.add_parser(
        "energy", parents=parents,
        help="energy, latency and accuracy of a TTFS SNN on the twin-column ReRAM PE",
        description="Simulate a TTFS SNN checkpoint on the twin-column ReRAM processing element "
                    "(power gating, TTA, MFTA, variation) and write a report with baselines.",
    )
    p.add_argument("snn_file", metavar="SNN_FILE", help="TTFS SNN checkpoint (kind ttfs_snn) from 'spikec convert --coding ttfs'")
    p.add_argument("--dataset", default="digits", help="'digits' (embedded) or a dataset path (default digits)")
    p.add_argument("--format", default=None, help="data format of --dataset when it is a path (default: detect)")
    p.add_argument("--hardware", "--preset", dest="hardware", default="twin-column",
                   help="hardware preset: twin-column (default) or yan-vlsi2019 (the calibrated measured macro)")
    p.add_argument("--wakeup", action="store_true",
                   help="event-driven wake-up: integrators stay gated off until the first input of their run")
    p.add_argument("--late-bias", type=int, default=None, metavar="K",
                   help="bias rows conduct only the last 1/K of the input window at K times the levels (same "
                        "spike times; with --wakeup the bias row no longer wakes every integrator at step 0); "
                        "a power of two up to the window's steps (default: the preset's, 1)")
    p.add_argument("--config", default=None, metavar="HW_TOML", help="TOML file overriding preset parameters")
    p.add_argument("--tile-budget", type=int, default=None, metavar="N",
                   help="tiles on the chip: those the network leaves spare hold more copies of its conv layers, "
                        "cutting latency (e.g. the dense network's tile count, to run a compressed one on the same "
                        "area; default: the preset's, none)")
    p.add_argument("--pack-rows", action="store_true",
                   help="each column tile keeps only its rows with a nonzero weight there, packed: rows pruned per "
                        "column tile (compress --structure tile-row) free tiles, and every drive of an input row reads "
                        "its row address table entry (buffer energy)")
    p.add_argument("--chips", type=int, default=10, help="Monte-Carlo chips per variation setting (default 10)")
    p.add_argument("--sigmas", default="0,0.1,0.2,0.3", metavar="S[,S...]",
                   help="sigmas of the variation sweep (default 0,0.1,0.2,0.3)")
    p.add_argument("--samples", type=int, default=None, metavar="N", help="a seeded stratified draw of N test samples (default all)")
    p.add_argument("--calib", type=int, default=512, metavar="N",
                   help="training samples used for MFTA calibration and the rate baseline (default 512)")
    p.add_argument("--rate-snn", default=None, metavar="FILE",
                   help="rate_snn checkpoint for the rate baseline (default: converted from the same network)")
    p.add_argument("--rate-timesteps", type=int, default=None, metavar="T",
                   help="time steps of the converted rate baseline (default 2^window_bits)")
    p.add_argument("--no-iso-accuracy", action="store_true",
                   help="skip the rate baselines at the fewest steps matching the PE's accuracy (and the comparison)")
    p.add_argument("--rate-methods", default="percentile,qcfs", metavar="M[,M...]",
                   help="rate baselines of the equal-accuracy comparison: percentile, qcfs (default both)")
    p.add_argument("--rate-stop-saving", default="0.347", metavar="F|none",
                   help="end a rate SNN's equal-accuracy search once the PE saves at least F over it at the "
                        "current T (larger T only cost more; default 0.347, ASTERS's claim); none: search every T")
    p.add_argument("--qcfs-epochs", type=int, default=5, metavar="N",
                   help="epochs of QCFS fine-tuning of the ANN for the qcfs rate baseline (default 5)")
    p.add_argument("--out", default="energy_report", metavar="DIR", help="output folder (default energy_report)")
    p.add_argument("--tta-fraction", default=None, metavar="F|auto",
                   help="TTA stop fraction: a number in (0, 1], or 'auto' for the smallest fraction that costs at most "
                        "half a point on the calibration draw of the training data (default: the preset's)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def _sigmas(text: str) -> list[float]:
    try:
        values = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"--sigmas must be comma-separated numbers, got {text!r}") from None
    if not values or any(v < 0 for v in values):
        raise UsageError(f"--sigmas must be non-negative numbers, got {text!r}")
    return values


def _rate_options(args):
    from spikec.hardware.baselines import RateBaselineOptions

    methods = tuple(m.strip() for m in args.rate_methods.split(",") if m.strip())
    if args.qcfs_epochs < 0:
        raise UsageError(f"--qcfs-epochs must be >= 0, got {args.qcfs_epochs}")
    stop = str(args.rate_stop_saving).strip().lower()
    try:
        stop_saving = None if stop == "none" else float(stop)
    except ValueError:
        raise UsageError(f"--rate-stop-saving must be a number in [0, 1) or 'none', got {args.rate_stop_saving!r}") from None
    if stop_saving is not None and not 0 <= stop_saving < 1:
        raise UsageError(f"--rate-stop-saving must lie in [0, 1) or be 'none', got {args.rate_stop_saving!r}")
    try:
        return RateBaselineOptions(methods=methods, calib_samples=args.calib, qcfs_epochs=args.qcfs_epochs,
                                   stop_saving=stop_saving)
    except UsageError as exc:
        raise UsageError(f"--rate-methods: {exc}") from None


def run(args) -> dict:
    from spikec.checkpoint import load_checkpoint, load_model
    from spikec.data import load_dataset
    from spikec.data.sample import stratified_tensors
    from spikec.hardware.config import load_config, preset
    from spikec.compress.tiles import packed_tiles_hint
    from spikec.hardware.report import write_report
    from spikec.hardware.study import energy_study, summary

    if args.chips < 1:
        raise UsageError(f"--chips must be >= 1, got {args.chips}")
    if args.samples is not None and args.samples < 1:
        raise UsageError(f"--samples must be >= 1, got {args.samples}")
    if args.calib < 1:
        raise UsageError(f"--calib must be >= 1, got {args.calib}")
    if args.rate_timesteps is not None and args.rate_timesteps < 1:
        raise UsageError(f"--rate-timesteps must be >= 1, got {args.rate_timesteps}")
    sigmas = _sigmas(args.sigmas)
    rate_options = _rate_options(args)
    config = preset(args.hardware)
    if args.config:
        config = load_config(args.config, base=config)
    if args.wakeup:
        config = config.replace(wakeup_on_input=True)
    auto_tta = False
    if args.tta_fraction is not None:
        if args.tta_fraction == "auto":
            auto_tta = True
        else:
            try:
                config = config.replace(tta_fraction=float(args.tta_fraction))
            except ValueError:
                raise UsageError(f"--tta-fraction must be a number in (0, 1] or 'auto', got {args.tta_fraction!r}") from None
    if args.late_bias is not None:
        try:
            config = config.replace(late_bias=args.late_bias)
        except ValueError as exc:
            raise UsageError(f"--late-bias {args.late_bias}: {str(exc).removeprefix('hardware config: ')}") from None
    if args.pack_rows:
        config = config.replace(row_packing=True)
    if args.tile_budget is not None:
        if args.tile_budget < 1:
            raise UsageError(f"--tile-budget must be >= 1, got {args.tile_budget}")
        config = config.replace(tile_budget=args.tile_budget)
    kind = load_checkpoint(args.snn_file).get("kind")
    if kind != "ttfs_snn":
        raise UsageError(f"{args.snn_file} is a {kind} checkpoint; 'spikec energy' needs a ttfs_snn "
                         f"(convert with 'spikec convert --coding ttfs')")
    snn, _ = load_model(args.snn_file)
    rate_snn = None
    if args.rate_snn:
        rate_kind = load_checkpoint(args.rate_snn).get("kind")
        if rate_kind != "rate_snn":
            raise UsageError(f"--rate-snn {args.rate_snn} is a {rate_kind} checkpoint, not a rate_snn")
        rate_snn, _ = load_model(args.rate_snn)
    train, test, info = load_dataset(args.dataset, format=args.format)
    x, y = test.tensors
    if tuple(x.shape[1:]) != tuple(snn.input_shape):
        raise UsageError(f"{args.snn_file} expects inputs of shape {tuple(snn.input_shape)}, "
                         f"dataset {info.name} has {tuple(x.shape[1:])}")
    if args.samples is not None:  # seeded stratified draws: image folders are sorted by class
        x, y = stratified_tensors((x, y), args.samples, config.seed)
    calib_x, calib_y = stratified_tensors(train.tensors, args.calib, config.seed)
    study = energy_study(snn, x, y, calib_x, config, calib_y=calib_y, chips=args.chips, sigmas=sigmas, rate_snn=rate_snn,
                         rate_timesteps=args.rate_timesteps, iso_accuracy=not args.no_iso_accuracy,
                         progress=not args.no_progress, rate_options=rate_options,
                         train=None if args.no_iso_accuracy else train.tensors, auto_tta=auto_tta)
    write_report(study, args.out)
    result = summary(study.report, args.out)
    _print(study.report, result, info.name, args.out)
    if config.tile_budget is None:  # a budget's copies are not in the packed count
        hint = packed_tiles_hint(snn, config, study.report["tiles"])
        if hint:
            print(hint)
    return result


def _print(report: dict, result: dict, dataset: str, out: str) -> None:
    e = report["energy_per_inference_j"]
    budget = report.get("tile_budget")
    tiles = f"{report['tiles']} crossbar tiles" + (f" of a {budget}-tile budget" if budget else "")
    print(f"twin-column PE on {dataset} ({report['samples']} samples, {report['chips']} chip(s), {tiles}): "
          f"accuracy {report['accuracy']:.2%} (SNN {report['snn']['accuracy']:.2%})")
    print(f"energy per inference {e['total'] * 1e9:.3f} nJ (crossbar {e['crossbar'] * 1e9:.3f}, neuron "
          f"{e['neuron'] * 1e9:.3f}, driver {e['driver'] * 1e9:.3f}, buffer {e['buffer'] * 1e9:.3f}, "
          f"static {e['static'] * 1e9:.3f}); latency {report['latency_s'] * 1e6:.2f} us; "
          f"{report['spikes_per_inference']:.1f} spikes")
    if report.get("row_table_energy_per_inference_j"):
        print(f"  of the buffer, {report['row_table_energy_per_inference_j'] * 1e9:.3f} nJ reads the packed rows' address tables")
    for name, b in report["baselines"].items():
        saving = b.get("pe_saving")
        if b["energy_per_inference_j"]["total"] is None:
            print(f"  {name}: not available ({b.get('error')})")
            continue
        text = "n/a" if saving is None else f"{saving:+.1%}"
        print(f"  {name}: {b['energy_per_inference_j']['total'] * 1e9:.3f} nJ (PE saving {text})")
    comp = report.get("comparison")
    if comp:
        for method, r in comp["rate"].items():
            if r["energy_per_inference_j"]["total"] is not None:
                bound = r.get("pe_saving_is_lower_bound")
                note = "" if r["reached"] else ", below the target; search stopped" if bound else ", target not reached"
                print(f"  equal accuracy, {method} rate SNN at T = {r['timesteps']} ({r['accuracy']:.2%}{note}): "
                      f"{r['energy_per_inference_j']['total'] * 1e9:.3f} nJ, PE saving {'at least ' if bound else ''}"
                      f"{r['pe_saving']:+.1%} (ASTERS: > 34.7%)")
        m = comp["mechanisms"]
        print("  savings of all mechanisms on: " + ", ".join(
            f"{n.replace('_', ' ')} {m[n]['share']:.0%}" for n in ("power_gating", "tta", "wakeup")
            if m[n]["share"] is not None))
    print(f"report written to {out}/report.json, report.html, figures/, events.h5")
