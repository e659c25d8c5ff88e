"""rnnkit: recurrent and recursive neural networks on PyTorch."""

from rnnkit.sequences import SequenceBatch

__all__ = ["SequenceBatch"]
__version__ = "0.1.0"
