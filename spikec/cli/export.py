"""``spikec export SNN_FILE --nir OUT.nir``: write a spiking network as a NIR graph.

The SNN file is loaded with ``spikec.checkpoint.load_model``; the graph is written atomically.
What NIR cannot express (soft reset, an initial membrane, TTFS neurons) fails with one line
naming the layer; ``docs/nir.md`` explains each case.
"""
from __future__ import annotations

import os

from spikec.errors import SpikecError, UsageError


def add_parser(subparsers, parents):
    p = subparsers.add_parser(
        "export",
        parents=parents,
        help="write a spiking network as a NIR graph (for norse, snntorch, neuromorphic hardware)",
        description="Write a spiking network checkpoint as a NIR graph file.",
    )
    p.add_argument("snn_file", metavar="SNN_FILE", help="spiking network checkpoint (.pt)")
    p.add_argument("--nir", required=True, metavar="OUT.nir", help="NIR file to write")
    p.add_argument(
        "--input-shape", metavar="C,H,W", default=None,
        help="one sample's shape, e.g. 1,8,8 (default: from the checkpoint, or the first Linear layer)",
    )
    p.add_argument("--dt", type=float, default=None, help="time step LIF time constants are written for (default 1e-4, snntorch's)")
    p.add_argument(
        "--if-as-lif", action="store_true",
        help="write IF neurons as leak-free LIF nodes (snntorch <= 1.0 imports nir.IF as a leaky neuron)",
    )
    return p


def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(",") if part.strip())
    except ValueError:
        shape = ()
    if not shape or any(d <= 0 for d in shape):
        raise UsageError(f"--input-shape {text!r}: expected positive integers like 1,8,8")
    return shape


def _known_shape(model, ckpt) -> tuple[int, ...] | None:
    """One sample's shape where the checkpoint or the model records it (ANN arch_config, a converted SNN's conversion)."""
    ckpt = ckpt if isinstance(ckpt, dict) else {}
    for source in (ckpt, ckpt.get("arch_config"), ckpt.get("conversion"), getattr(model, "conversion", None)):
        shape = source.get("input_shape") if isinstance(source, dict) else None
        if shape is not None:
            return tuple(int(d) for d in shape)
    return None


def _load(path: str):
    if not os.path.isfile(path):
        raise SpikecError(f"cannot read SNN file '{path}': no such file")
    try:
        from spikec.checkpoint import load_model
    except ImportError as exc:
        raise SpikecError(f"cannot load '{path}': spikec.checkpoint is not available in this version ({exc})") from exc
    return load_model(path)


def run(args) -> dict:
    from spikec.io import to_nir, write_nir
    from spikec.io.nir_common import DEFAULT_DT

    if args.dt is not None and not args.dt > 0:
        raise UsageError(f"--dt {args.dt}: must be positive")
    model, ckpt = _load(args.snn_file)
    if isinstance(ckpt, dict) and ckpt.get("kind") == "ann":
        raise SpikecError(f"'{args.snn_file}' is an ANN checkpoint; convert it to a spiking network first (spikec convert)")
    shape = _parse_shape(args.input_shape) if args.input_shape else _known_shape(model, ckpt)
    dt = args.dt if args.dt is not None else DEFAULT_DT
    if_as = "LIF" if args.if_as_lif else "IF"
    graph = to_nir(model, shape, dt=dt, if_as=if_as)
    write_nir(graph, args.nir)
    kinds = [type(graph.nodes[name]).__name__ for name in graph.nodes]
    print(f"wrote {args.nir}: {len(kinds)} nodes ({', '.join(kinds)}), dt={dt:g}")
    if "IF" in kinds:
        print("note: snntorch <= 1.0 imports nir.IF as a leaky neuron; use --if-as-lif for snntorch")
    input_shape = [int(d) for d in graph.nodes["input"].input_type["input"]]
    return {"nir": os.path.abspath(args.nir), "nodes": kinds, "dt": dt, "if_as": if_as, "input_shape": input_shape}
