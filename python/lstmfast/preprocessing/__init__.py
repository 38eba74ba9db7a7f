"""Keras's ``keras.preprocessing``: ``sequence`` (``pad_sequences``) and ``text`` (Keras 2's
``Tokenizer``, which Keras 3 dropped)."""
from __future__ import annotations

from . import sequence, text

__all__ = ["sequence", "text"]
