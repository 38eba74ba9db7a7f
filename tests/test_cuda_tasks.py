"""Every CLI task with ``--backend cuda``: trained and evaluated on the CuPy stand-in (see
test_cuda.py), so a task that still hands a device array to host code fails here, and on a real
GPU when there is one (``model_side``)."""
import json
import math

import pytest
from test_distributed_tasks import shared
from test_imdb import tiny_corpus

import lstmfast
from lstmfast import cli

from test_cuda import model_side  # noqa: F401  (a fixture)

TEXT = "To be, or not to be, that is the question:\n" * 12


def argv_of(task, tmp):
    if task == "echo":
        return ["echo", "--steps", "30"]
    if task == "text":
        (tmp / "corpus.txt").write_text(TEXT, encoding="utf-8")
        return ["text", "train", str(tmp / "corpus.txt"), "--save", str(tmp / "c.lstmfast"), "--layers", "2",
                "--units", "8", "--seq-len", "10", "--batch-size", "5", "--epochs", "1", "--val-every", "10",
                "--quiet"]
    if task == "imdb":
        return ["imdb", "--data", str(tiny_corpus(tmp / "data")), "--limit", "40", "--epochs", "1", "--maxlen",
                "12", "--batch-size", "16", "--quiet"]
    if task == "forecast":
        return ["forecast", str(shared("airline-passengers.csv")), "--column", "Passengers", "--lookback", "6",
                "--horizon", "2", "--units", "8", "--epochs", "2", "--batch-size", "9"]
    return ["seq2seq", "--task", "addition", "--digits", "2", "--samples", "100", "--test-samples", "20",
            "--epochs", "1", "--units", "16", "--batch-size", "32", "--beam", "2"]


@pytest.mark.parametrize("task", ["echo", "text", "imdb", "forecast", "seq2seq"])
def test_every_task_runs_with_backend_cuda(task, model_side, tmp_path, capsys):  # noqa: F811
    metrics = tmp_path / "m.json"
    try:
        rc = cli.main(["--backend", "cuda"] + argv_of(task, tmp_path) + ["--metrics-json", str(metrics)])
    finally:
        lstmfast.set_backend("cpu")
    assert rc == 0, capsys.readouterr().err[-3000:]
    values = [v for v in json.loads(metrics.read_text()).values() if isinstance(v, float)]
    assert values and all(math.isfinite(v) for v in values)
