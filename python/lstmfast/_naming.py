"""Automatic names of layers and models: "lstm", "lstm_1", ... with one counter per prefix shared by
the whole process, as Keras's ``backend.get_uid`` (``reset_uids`` is Keras's ``clear_session``)."""
from __future__ import annotations

import re

__all__ = ["unique_name", "snake_case", "reset_uids"]

_UIDS: dict = {}  # prefix -> how many names it has given


def unique_name(prefix: str) -> str:
    """``prefix`` the first time, then ``prefix_1``, ``prefix_2``, ..."""
    n = _UIDS.get(prefix, 0)
    _UIDS[prefix] = n + 1
    return prefix if n == 0 else f"{prefix}_{n}"


def reset_uids() -> None:
    """Restart automatic names ("dense", "dense_1", ...) from scratch (Keras ``clear_session``)."""
    _UIDS.clear()


def snake_case(name: str) -> str:
    """A class name as a name prefix: "TimeDistributed" -> "time_distributed", "LSTM" -> "lstm"."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()
