"""The ``lstmfast`` command. Each sample task registers its own sub-command(s).

A task module in ``lstmfast.tasks`` provides ``register(subparsers, common)``: it adds its
sub-command parsers (passing ``parents=[common]``, which brings ``--metrics-json``) and sets
``func`` to a callable ``func(args) -> dict`` returning the final metrics. The CLI writes them to
``--metrics-json`` when given. A task raises ValueError/TypeError/FileNotFoundError/... with a
clear message for bad input; the CLI prints it and exits with status 2, and the task must not
have overwritten anything by then (validate first, write files atomically).
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Optional, Sequence

from ._atomic import atomic_file, check_writable

TASKS = ("echo", "text", "imdb", "forecast", "seq2seq")


def write_metrics(path: Optional[str], metrics: dict) -> None:
    """Write ``metrics`` as JSON to ``path`` atomically (nothing when ``path`` is None)."""
    if path:
        with atomic_file(path, "w") as f:
            json.dump(metrics, f, indent=2, default=float)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    parser = argparse.ArgumentParser(prog="lstmfast", description="Fast LSTMs: the classic sample tasks.")
    parser.add_argument("--version", action="version", version=f"lstmfast {__version__}")
    parser.add_argument("--threads", type=int, default=None, help="engine threads (default: all cores)")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--metrics-json", metavar="PATH", help="write the final metrics to PATH as JSON")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in TASKS:
        try:
            module = importlib.import_module(f".tasks.{name}", __package__)
        except ModuleNotFoundError as e:
            if e.name and e.name.endswith(f"tasks.{name}"):
                continue  # a task not written yet
            raise
        module.register(sub, common)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads is not None:
        from . import set_num_threads
        set_num_threads(args.threads)
    try:
        # Before the task runs: a long training must not end in a metrics file that cannot be written.
        check_writable(getattr(args, "metrics_json", None), "--metrics-json")
        metrics = args.func(args)
        write_metrics(getattr(args, "metrics_json", None), metrics or {})
        return 0
    except (ValueError, TypeError, ImportError, FileNotFoundError, FileExistsError, IsADirectoryError,
            PermissionError) as e:
        print(f"lstmfast {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lstmfast {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
