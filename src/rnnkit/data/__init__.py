"""Data: file formats to examples, examples to batches."""

from rnnkit.data.errors import ReaderError

__all__ = ["ReaderError"]
