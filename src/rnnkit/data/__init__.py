"""Data: file formats to examples, examples to minibatches.

Every reader returns examples (dicts ``stream name -> tensor [T_i, *F]``) that
:class:`MinibatchSource` batches, and raises :class:`ReaderError` (``path:line:column``) on
malformed input.
"""

from rnnkit.data.ctf import CTFReader, Stream, iter_ctf, read_ctf, write_ctf
from rnnkit.data.errors import ReaderError
from rnnkit.data.files import read_text
from rnnkit.data.idx import mnist_sequences, read_idx, write_idx
from rnnkit.data.minibatch import Minibatch, MinibatchSource
from rnnkit.data.text import (
    TextVocabulary,
    Vocabulary,
    encode_sentences,
    read_conll,
    read_tagged,
    text_windows,
)
from rnnkit.data.timeseries import (
    Scaler,
    TimeSeries,
    load_series,
    split_series,
    time_since_observed,
    windows,
)
from rnnkit.data.uea import TsDataset, read_ts

__all__ = [
    "CTFReader",
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
