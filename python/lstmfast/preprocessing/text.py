"""Keras 2's ``keras.preprocessing.text`` (Keras 3 dropped it): ``Tokenizer`` and
``text_to_word_sequence``, with Keras 2's semantics:

* a text becomes words by lower-casing (``lower``), turning every character of ``filters`` into
  ``split``, splitting on ``split`` and dropping empty words; with ``char_level`` (or when a text
  is already a list of tokens) its characters (tokens) are the words, lower-cased, unfiltered;
* ``fit_on_texts`` counts words (``word_counts``, in first-seen order; ``word_docs``: in how many
  texts) and ranks them by count, ties in first-seen order: ``word_index`` maps the most frequent to
  1 (0 is never a word's index); ``oov_token``, when set, takes index 1 and shifts the others;
* ``num_words`` keeps only indices ``< num_words`` in ``texts_to_sequences`` and in the matrices
  (so ``num_words - 1`` words); other words are dropped, or become ``oov_token``'s index when set;
* ``texts_to_matrix`` modes: ``binary`` (1 where the word occurs), ``count``, ``freq`` (count /
  the sequence's length) and ``tfidf`` (``(1 + ln count) * ln(1 + documents / (1 + documents
  with the word))``); the width is ``num_words``, else ``len(word_index) + 1``.
"""
from __future__ import annotations

import json
import warnings
from collections import OrderedDict, defaultdict
from typing import Any, Iterable, Iterator, List, Optional, Sequence, Union

import numpy as np

__all__ = ["Tokenizer", "text_to_word_sequence", "tokenizer_from_json"]

DEFAULT_FILTERS = '!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~\t\n'
_MODES = ("binary", "count", "tfidf", "freq")
# A text: a string, or a list of tokens (taken as its words).
Text = Union[str, List[str]]


def text_to_word_sequence(text: str, filters: str = DEFAULT_FILTERS, lower: bool = True,
                          split: str = " ") -> List[str]:
    """The words of ``text``: lower-cased, each character of ``filters`` turned into ``split``,
    split on ``split``, empty words dropped."""
    if lower:
        text = text.lower()
    text = text.translate(str.maketrans({c: split for c in filters}))
    return [w for w in text.split(split) if w]


class Tokenizer:
    """Keras 2's text tokenizer (rules in the module docstring)."""

    def __init__(self, num_words: Optional[int] = None, filters: str = DEFAULT_FILTERS, lower: bool = True,
                 split: str = " ", char_level: bool = False, oov_token: Optional[str] = None, document_count: int = 0,
                 **kwargs: Any) -> None:
        if "nb_words" in kwargs:   # Keras 1's spelling, still accepted by Keras 2
            warnings.warn("Tokenizer(nb_words=...) is Keras 1's spelling; use num_words=", DeprecationWarning,
                          stacklevel=2)
            num_words = kwargs.pop("nb_words")
        if kwargs:
            raise TypeError(f"Tokenizer got unexpected arguments: {sorted(kwargs)}")
        if num_words is not None and (isinstance(num_words, bool) or not isinstance(num_words, (int, np.integer))
                                      or num_words < 0):
            raise ValueError(f"num_words must be None or an int >= 0, got {num_words!r}")
        self.num_words = num_words
        self.filters = filters
        self.lower = lower
        self.split = split
        self.char_level = char_level
        self.oov_token = oov_token
        self.document_count = document_count
        self.word_counts = OrderedDict()      # word -> occurrences, in first-seen order
        self.word_docs = defaultdict(int)     # word -> texts it occurs in
        self.index_docs = defaultdict(int)    # index -> texts it occurs in
        self.word_index = {}
        self.index_word = {}

    def _tokens(self, text) -> list:
        if self.char_level or isinstance(text, list):
            if self.lower:
                text = [t.lower() for t in text] if isinstance(text, list) else text.lower()
            return list(text)
        return text_to_word_sequence(text, self.filters, self.lower, self.split)

    def fit_on_texts(self, texts: Iterable[Text]) -> None:
        """Count the words of ``texts`` (strings, or lists of tokens; any iterable) and rebuild
        ``word_index``/``index_word`` over everything seen so far."""
        for text in texts:
            self.document_count += 1
            seq = self._tokens(text)
            for w in seq:
                self.word_counts[w] = self.word_counts.get(w, 0) + 1
            for w in set(seq):
                self.word_docs[w] += 1
        ranked = sorted(self.word_counts, key=self.word_counts.__getitem__, reverse=True)   # stable: ties keep order
        vocab = ([] if self.oov_token is None else [self.oov_token]) + ranked
        self.word_index = dict(zip(vocab, range(1, len(vocab) + 1)))
        self.index_word = {i: w for w, i in self.word_index.items()}
        for w, n in self.word_docs.items():
            self.index_docs[self.word_index[w]] = n

    def fit_on_sequences(self, sequences: Sequence[Iterable[int]]) -> None:
        """Count documents per index from integer sequences (for ``sequences_to_matrix`` tfidf)."""
        self.document_count += len(sequences)
        for seq in sequences:
            for i in set(seq):
                self.index_docs[i] += 1

    def texts_to_sequences_generator(self, texts: Iterable[Text]) -> Iterator[List[int]]:
        """Yield each text as a list of word indices (rules in the module docstring)."""
        oov = self.word_index.get(self.oov_token)
        for text in texts:
            out = []
            for w in self._tokens(text):
                i = self.word_index.get(w)
                if i is not None and not (self.num_words and i >= self.num_words):
                    out.append(i)
                elif self.oov_token is not None and oov is not None:
                    out.append(oov)
            yield out

    def texts_to_sequences(self, texts: Iterable[Text]) -> List[List[int]]:
        """Each text as a list of word indices."""
        return list(self.texts_to_sequences_generator(texts))

    def sequences_to_texts_generator(self, sequences: Iterable[Iterable[int]]) -> Iterator[str]:
        """Yield each index sequence as its words joined by spaces (unknown or ``>= num_words``
        indices dropped, or shown as ``oov_token`` when set)."""
        oov = self.word_index.get(self.oov_token)
        for seq in sequences:
            words = []
            for i in seq:
                w = self.index_word.get(i)
                if w is not None and not (self.num_words and i >= self.num_words):
                    words.append(w)
                elif self.oov_token is not None and oov is not None:
                    words.append(self.index_word[oov])
            yield " ".join(words)

    def sequences_to_texts(self, sequences: Iterable[Iterable[int]]) -> List[str]:
        return list(self.sequences_to_texts_generator(sequences))

    def texts_to_matrix(self, texts: Iterable[Text], mode: str = "binary") -> np.ndarray:
        """``[len(texts), width]`` float64 matrix (``mode``: binary, count, tfidf, freq)."""
        return self.sequences_to_matrix(self.texts_to_sequences(texts), mode=mode)

    def sequences_to_matrix(self, sequences: Sequence[Sequence[int]], mode: str = "binary") -> np.ndarray:
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {', '.join(_MODES)}, got {mode!r}")
        if self.num_words:
            width = self.num_words
        elif self.word_index:
            width = len(self.word_index) + 1
        else:
            raise ValueError("give num_words, or fit the Tokenizer on some texts first")
        if mode == "tfidf" and not self.document_count:
            raise ValueError("fit the Tokenizer on some data before using mode='tfidf'")
        x = np.zeros((len(sequences), width))
        for row, seq in enumerate(sequences):
            if not len(seq):
                continue
            counts = defaultdict(int)
            for j in seq:
                if j < width:
                    counts[j] += 1
            for j, c in counts.items():
                if mode == "count":
                    x[row, j] = c
                elif mode == "freq":
                    x[row, j] = c / len(seq)
                elif mode == "binary":
                    x[row, j] = 1
                else:
                    x[row, j] = (1 + np.log(c)) * np.log(1 + self.document_count / (1 + self.index_docs.get(j, 0)))
        return x

    def get_config(self) -> dict:
        """Keras 2's config: the settings, and the fitted tables as JSON strings."""
        return {"num_words": self.num_words, "filters": self.filters, "lower": self.lower, "split": self.split,
                "char_level": self.char_level, "oov_token": self.oov_token,
                "document_count": self.document_count, "word_counts": json.dumps(self.word_counts),
                "word_docs": json.dumps(self.word_docs), "index_docs": json.dumps(self.index_docs),
                "index_word": json.dumps(self.index_word), "word_index": json.dumps(self.word_index)}

    def to_json(self, **kwargs) -> str:
        """``{"class_name": "Tokenizer", "config": ...}`` as JSON (``tokenizer_from_json`` reads it)."""
        return json.dumps({"class_name": "Tokenizer", "config": self.get_config()}, **kwargs)


def tokenizer_from_json(json_string: str) -> Tokenizer:
    """The Tokenizer that ``Tokenizer.to_json`` wrote."""
    config = dict(json.loads(json_string).get("config") or {})
    tables = {k: json.loads(config.pop(k)) for k in ("word_counts", "word_docs", "index_docs", "index_word",
                                                     "word_index") if k in config}
    tok = Tokenizer(**config)
    tok.word_counts = OrderedDict(tables.get("word_counts", {}))
    tok.word_docs = defaultdict(int, tables.get("word_docs", {}))
    tok.index_docs = defaultdict(int, {int(k): v for k, v in tables.get("index_docs", {}).items()})
    tok.index_word = {int(k): v for k, v in tables.get("index_word", {}).items()}
    tok.word_index = tables.get("word_index", {})
    return tok
