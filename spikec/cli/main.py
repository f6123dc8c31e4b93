"""Entry point of the ``spikec`` command.

Each subcommand lives in its own module ``spikec.cli.<name>`` exposing
``add_parser(subparsers, parents) -> ArgumentParser`` (call ``subparsers.add_parser(name,
parents=parents, ...)`` so that ``--json`` and ``--debug`` exist) and ``run(args) -> dict``. ``run`` prints its human-readable output and returns the results;
with ``--json`` the last line on stdout is that dict as one JSON object.

Exit codes: 0 success, 2 usage error (:class:`~spikec.errors.UsageError`, bad flags), 1 any other
failure. Errors are one line on stderr; ``--debug`` shows the traceback.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys

from spikec.errors import SpikecError, UsageError

COMMANDS = ("train", "eval", "convert", "compress", "energy", "export", "run")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(2)


def _not_available(name: str):
    def add_parser(sub, parents):
        p = sub.add_parser(name, parents=parents, help=f"({name}: not available yet)")
        p.add_argument("rest", nargs=argparse.REMAINDER)
        return p

    def run(args):
        raise UsageError(f"'spikec {name}' is not available yet in this version")

    return add_parser, run


def _command(name: str):
    """``(add_parser, run)`` of a subcommand; a placeholder if its module is not built yet."""
    try:
        mod = importlib.import_module(f"spikec.cli.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"spikec.cli.{name}":
            raise
        return _not_available(name)
    return mod.add_parser, mod.run


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="spikec", description="Spiking neural networks for energy-efficient hardware.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print the results as one JSON object on the last line")
    common.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    common.add_argument("--threads", type=int, default=None,
                        help="torch intra-op CPU threads (default: torch's; 1 is fastest for small models on a busy "
                             "machine)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMANDS:
        add_parser, run = _command(name)
        add_parser(sub, [common]).set_defaults(_run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _set_threads(args.threads)
        result = args._run(args)
    except UsageError as exc:
        if args.debug:
            raise
        sys.stderr.write(f"spikec {args.command}: error: {exc}\n")
        return 2
    except (SpikecError, OSError, ValueError, RuntimeError, KeyError) as exc:
        if args.debug:
            raise
        sys.stderr.write(f"spikec {args.command}: error: {_one_line(exc)}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write(f"spikec {args.command}: interrupted\n")
        return 130
    if args.json and result is not None:  # None: a process with nothing to report (a non-zero torchrun rank)
        sys.stdout.write(json.dumps(result, default=_jsonable) + "\n")
    return 0


def _set_threads(threads: int | None) -> None:
    if threads is None:
        return
    if threads < 1:
        raise UsageError(f"--threads must be >= 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _jsonable(obj):
    try:
        return float(obj)
    except (TypeError, ValueError):
        return str(obj)


if __name__ == "__main__":
    sys.exit(main())
