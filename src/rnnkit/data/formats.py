"""Readers for the formats users have, in one place: UEA/UCR ``.ts`` (:mod:`rnnkit.data.uea`),
IDX of the MNIST family (:mod:`rnnkit.data.idx`), ``word/tag`` text, CoNLL columns and plain text
with the vocabularies that turn tokens into ids (:mod:`rnnkit.data.text`).

Every reader returns examples that `MinibatchSource` batches: a list of dicts mapping a stream
name to a tensor, ``[T_i, *F]`` for a sequence, and ``[1]`` (a one-step sequence) for a
per-sequence label. Malformed input raises `rnnkit.data.errors.ReaderError` located as
``path:line:column`` (text formats) or ``path`` plus a byte offset (IDX), saying what was found.

Vocabularies are built from training data only and then applied unchanged to validation and test
data; a token never seen in training maps to ``<unk>`` when the vocabulary has one, and is an
error otherwise.
"""

from rnnkit.data.files import Example, PathArg, Sentence, read_text
from rnnkit.data.idx import mnist_sequences, read_idx, write_idx
from rnnkit.data.text import (
    TextVocabulary,
    Vocabulary,
    encode_sentences,
    read_conll,
    read_tagged,
    text_windows,
)
from rnnkit.data.uea import TsDataset, read_ts

__all__ = [
    "Example",
    "PathArg",
    "Sentence",
    "TextVocabulary",
    "TsDataset",
    "Vocabulary",
    "encode_sentences",
    "mnist_sequences",
    "read_conll",
    "read_idx",
    "read_tagged",
    "read_text",
    "read_ts",
    "text_windows",
    "write_idx",
]
