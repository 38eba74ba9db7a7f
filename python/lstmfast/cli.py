"""The ``lstmfast`` command. Each sample task registers its own sub-command(s); ``convert``
(``lstmfast.convert``) is registered here.

A task module in ``lstmfast.tasks`` provides ``register(subparsers, common)``: it adds its
sub-command parsers (passing ``parents=[common]``, which brings ``--metrics-json``) and sets
``func`` to a callable ``func(args) -> dict`` returning the final metrics. The CLI writes them to
``--metrics-json`` when given. A task raises ValueError/TypeError/FileNotFoundError/... with a
clear message for bad input; the CLI prints it and exits with status 2, and the task must not
have overwritten anything by then (validate first, write files atomically).

Under an MPI launcher (``mpiexec -n N lstmfast imdb ...``) the tasks in ``DATA_PARALLEL`` train
data-parallel (``lstmfast.distributed``): every rank runs the task, only rank 0 prints to stdout
and writes files (the task's own files and ``--metrics-json``). An error caught here on any rank
ends the whole job, since the other ranks may be waiting for it in a collective.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import sys
from typing import Optional, Sequence

from . import distributed
from ._atomic import atomic_file, check_writable

TASKS = ("echo", "text", "imdb", "forecast", "seq2seq")
DATA_PARALLEL = ("text", "imdb", "forecast", "seq2seq")  # the commands that run on several ranks


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


def run_convert(args: argparse.Namespace) -> dict:
    """``lstmfast convert``: convert, then print one line saying what was done."""
    from .convert import convert
    summary = convert(args.input, args.output, overwrite=args.overwrite, return_sequences=args.return_sequences,
                      prefix=args.prefix)
    print(f"converted {summary['source']} ({summary['source_format']}, {summary['layers']} layers) -> "
          f"{summary['destination']} ({summary['destination_format']}), {summary['params']:,} parameters")
    return summary


def register_convert(subparsers: argparse._SubParsersAction) -> None:
    """The ``lstmfast convert`` sub-command."""
    from .convert import OUTPUT_FORMATS
    p = subparsers.add_parser(
        "convert", help="convert a model file to another format",
        description="Convert the model in IN to OUT. IN's format comes from its content: an lstmfast or Keras "
                    "model (what lstmfast.load_model reads), or torch.nn.LSTM weights (a torch.save state "
                    "dict, .pt/.pth, or a .safetensors file). OUT's format comes from its extension: "
                    f"{', '.join(OUTPUT_FORMATS)}; .pt/.pth/.safetensors hold the nn.LSTM state dict "
                    "(the model must be a stack of LSTM layers).")
    p.add_argument("input", metavar="IN", help="the model file to read")
    p.add_argument("output", metavar="OUT", help="the file to write; its extension names the format")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists (refused otherwise)")
    p.add_argument("--return-sequences", action=argparse.BooleanOptionalAction, default=None,
                   help="nn.LSTM input only: output every step, PyTorch's y [B, T, D*H] (the default), or "
                        "only the last one [B, D*H]")
    p.add_argument("--prefix", help="nn.LSTM input only: the keys' prefix when the state dict holds several "
                                    "LSTMs (e.g. 'encoder.lstm.')")
    p.set_defaults(func=run_convert)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    parser = argparse.ArgumentParser(prog="lstmfast", description="Fast LSTMs: the classic sample tasks, and "
                                                                "model conversion.")
    parser.add_argument("--version", action="version", version=f"lstmfast {__version__}")
    parser.add_argument("--threads", type=int, default=None, help="engine threads (default: all cores)")
    parser.add_argument("--backend", choices=("cpu", "cuda"), default="cpu",
                        help="where models train and run: cpu (default) or cuda (a GPU through CuPy: "
                             "pip install lstmfast[gpu])")
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
    register_convert(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads is not None:
        from . import set_num_threads
        set_num_threads(args.threads)
    if args.backend != "cpu":
        from . import set_backend
        try:
            set_backend(args.backend)
        except (ImportError, RuntimeError) as e:
            print(f"lstmfast: error: --backend {args.backend}: {e}", file=sys.stderr)
            return 2
    try:
        if distributed.launcher_variable() is not None:
            distributed.init()
            if distributed.size() > 1 and args.command not in DATA_PARALLEL:
                raise ValueError(f"{args.command} runs as one process; start it without mpiexec (data-parallel: "
                                 f"{', '.join(DATA_PARALLEL)})")
        # Before the task runs: a long training must not end in a metrics file that cannot be written.
        check_writable(getattr(args, "metrics_json", None), "--metrics-json")
        with contextlib.ExitStack() as quiet:
            if not distributed.is_chief():  # the other ranks would repeat rank 0's output
                quiet.enter_context(contextlib.redirect_stdout(quiet.enter_context(open(os.devnull, "w"))))
            metrics = args.func(args)
        if distributed.is_chief():
            write_metrics(getattr(args, "metrics_json", None), metrics or {})
        return 0
    except (ValueError, TypeError, ImportError, FileNotFoundError, FileExistsError, IsADirectoryError,
            PermissionError) as e:
        print(f"lstmfast {args.command}: error: {e}", file=sys.stderr)
        distributed.abort_job(2)
        return 2
    except KeyboardInterrupt:
        print(f"lstmfast {args.command}: interrupted", file=sys.stderr)
        distributed.abort_job(130)
        return 130


if __name__ == "__main__":
    sys.exit(main())
