"""The ``lstmfast`` command: ``lstmfast echo`` runs the echo sequence experiment."""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from typing import Optional, Sequence


def _write_metrics(path: Optional[str], metrics: dict) -> None:
    if not path:
        return
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".metrics-", suffix=".tmp", dir=directory)
    with os.fdopen(fd, "w") as f:
        json.dump(metrics, f, indent=2)
    os.replace(tmp, path)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _cmd_echo(args) -> int:
    from .tasks import echo
    result = echo.run(length=args.length, features=args.features, index=args.index, units=args.units,
                      steps=args.steps, peephole=args.peephole, seed=args.seed, verbose=0 if args.quiet else 1)
    _write_metrics(args.metrics_json, result)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    parser = argparse.ArgumentParser(prog="lstmfast", description="Fast LSTMs: sample tasks and tools.")
    parser.add_argument("--version", action="version", version=f"lstmfast {__version__}")
    parser.add_argument("--threads", type=int, default=None, help="engine threads (default: all cores)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    echo = sub.add_parser("echo", help="the echo sequence problem (LSTM + Dense, single-example updates)",
                          description="Random integer sequences, one-hot; predict the value at position "
                                      "INDEX. Trains with STEPS single-example updates, then reports the "
                                      "accuracy on 100 new sequences and one example.")
    echo.add_argument("--length", type=_positive, default=5, help="sequence length (default 5)")
    echo.add_argument("--features", type=_positive, default=10, help="distinct values / one-hot size (default 10)")
    echo.add_argument("--index", type=int, default=2, help="position to echo, 0-based (default 2)")
    echo.add_argument("--units", type=_positive, default=25, help="LSTM units (default 25)")
    echo.add_argument("--steps", type=_positive, default=10_000, help="single-example updates (default 10000)")
    echo.add_argument("--peephole", action="store_true", help="use peephole connections")
    echo.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    echo.add_argument("--quiet", action="store_true", help="print nothing (use with --metrics-json)")
    echo.add_argument("--metrics-json", metavar="PATH", help="write the final metrics to PATH as JSON")
    echo.set_defaults(func=_cmd_echo)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads is not None:
        from . import set_num_threads
        set_num_threads(args.threads)
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError) as e:
        print(f"lstmfast {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lstmfast {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
