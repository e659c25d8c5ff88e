"""Test oracles: code that the rest of rnnkit is checked against, never used by it.

:mod:`rnnkit.testing.reference` holds NumPy backpropagation through time and through structure,
written to be read; the torch cells, combinators and recursive networks are tested against it.
"""
