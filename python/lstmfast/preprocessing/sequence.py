"""``keras.preprocessing.sequence``: ``pad_sequences`` (the one in ``lstmfast.utils``)."""
from __future__ import annotations

from ..utils import pad_sequences

__all__ = ["pad_sequences"]
