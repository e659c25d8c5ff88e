"""Data: file formats to examples, examples to minibatches.

Every reader returns examples (dicts ``stream name -> tensor [T_i, *F]``) that
:class:`MinibatchSource` batches, and raises :class:`ReaderError` (``path:line:column``) on
malformed input.
"""

from rnnkit.data.ctf import CTFReader, Stream, iter_ctf, read_ctf, write_ctf
from rnnkit.data.errors import ReaderError
from rnnkit.data.formats import (
    TextVocabulary,
    TsDataset,
    Vocabulary,
    encode_sentences,
    mnist_sequences,
    read_conll,
    read_idx,
    read_tagged,
    read_text,
    read_ts,
    text_windows,
    write_idx,
)
from rnnkit.data.minibatch import Collatable, Minibatch, MinibatchSource
from rnnkit.data.timeseries import (
    Scaler,
    TimeSeries,
    load_series,
    split_series,
    time_since_observed,
    windows,
)

__all__ = [
    "CTFReader",
    "Collatable",
    "Minibatch",
    "MinibatchSource",
    "ReaderError",
    "Scaler",
    "Stream",
    "TextVocabulary",
    "TimeSeries",
    "TsDataset",
    "Vocabulary",
    "encode_sentences",
    "iter_ctf",
    "load_series",
    "mnist_sequences",
    "read_conll",
    "read_ctf",
    "read_idx",
    "read_tagged",
    "read_text",
    "read_ts",
    "split_series",
    "text_windows",
    "time_since_observed",
    "windows",
    "write_ctf",
    "write_idx",
]
