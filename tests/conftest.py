"""Fixtures and helpers that several test files share.

A test file imports the helpers by name (``from conftest import SHARED_DATA``), as it imports
``training_script``: pytest puts this folder on ``sys.path`` (the tests folder is no package),
and the module a test file gets is the one pytest loaded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import torch
from torch import Tensor

if TYPE_CHECKING:
    from rnnkit import SequenceBatch

REPO = Path(__file__).resolve().parents[1]
# The data sets the tests read, beside the repository (absent on a bare checkout: tests skip).
SHARED_DATA = REPO.parent / "shared" / "data"
# The training run that the multi-process tests start with torchrun or as a subprocess.
TRAINING_SCRIPT = REPO / "tests" / "training_script.py"

needs_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason="../shared/data is not present"
)


def shared_data(*parts: str) -> Path:
    """``SHARED_DATA / parts``; the calling test is skipped when it does not exist."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not available: {path}")
    return path


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Torch on one thread for the test, then as before.

    Small recurrent models run fastest on one thread, and a shared machine's other processes
    then slow them least. A file whose tests all want it says
    ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_sequences(
    lengths: Sequence[int],
    features: int | Sequence[int] = 3,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> list[Tensor]:
    """One standard normal ``[n, *features]`` tensor per length, drawn from ``seed`` alone."""
    shape = (features,) if isinstance(features, int) else tuple(features)
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, *shape, generator=g, dtype=dtype) for n in lengths]


# ---------------------------------------------------------------------------- ragged batches
# test_packed_lanes.py and test_packed_chunks.py: a cell's packed form against each sequence
# run alone through the loop, in float64.


def ragged_batch(lengths: Sequence[int], features: int, seed: int = 0) -> SequenceBatch:
    """Float64 sequences of ``lengths`` steps and ``features`` values, drawn from ``seed``."""
    from rnnkit import SequenceBatch

    g = torch.Generator().manual_seed(seed)
    return SequenceBatch.from_list(
        [torch.randn(n, features, generator=g, dtype=torch.float64) for n in lengths]
    )


def random_states(cell: torch.nn.Module, batch: int, seed: int) -> tuple[Tensor, ...]:
    """A random float64 state of the cell's shapes (``[B, ...]`` each)."""
    g = torch.Generator().manual_seed(seed)
    zeros = cell.initial_state(batch, dtype=torch.float64)
    zeros = zeros if isinstance(zeros, tuple) else (zeros,)
    return tuple(torch.randn(z.shape, generator=g, dtype=torch.float64) for z in zeros)


def run_alone(
    cell: torch.nn.Module, x: SequenceBatch, h0: tuple[Tensor, ...]
) -> tuple[list[Tensor], list[Tensor]]:
    """Each sequence by itself, a batch of one through the loop: its outputs, and each state
    tensor's final rows stacked over the sequences (sorted as ``x``'s caller order)."""
    from rnnkit import RecurrenceFrom, SequenceBatch

    outs, finals = [], []
    for i, seq in enumerate(x.to_list()):
        start = tuple(h[i : i + 1] for h in h0)
        out, final = RecurrenceFrom(cell, backend="loop").with_final_state(
            start, SequenceBatch.from_list([seq])
        )
        outs.append(out.to_list()[0])
        finals.append(final if isinstance(final, tuple) else (final,))
    return outs, [torch.cat([f[k] for f in finals]) for k in range(len(finals[0]))]


def assert_packed_equals_alone(
    cell: torch.nn.Module,
    x: SequenceBatch,
    h0: tuple[Tensor, ...],
    run: Callable[[SequenceBatch], tuple[SequenceBatch, Any]],
) -> None:
    """``run(x)`` (outputs and final state of the whole batch) against :func:`run_alone`:
    outputs, final states, and the gradients of a weighted sum of both with respect to the
    input, the given states that take gradients and every parameter, to 1e-10."""
    tol = {"atol": 1e-10, "rtol": 1e-10}
    data = x.data.clone().requires_grad_()
    x = x.with_data(data)
    out, final = run(x)
    final = final if isinstance(final, tuple) else (final,)
    outs, last = run_alone(cell, x, h0)
    for got, want in zip(out.to_list(), outs, strict=True):
        torch.testing.assert_close(got, want, **tol)
    for got, want in zip(final, last, strict=True):
        torch.testing.assert_close(got, want, **tol)

    weights = torch.linspace(-1, 1, out.data.shape[-1], dtype=torch.float64)
    params = [p for _, p in sorted(cell.named_parameters())]
    wrt = [data, *(h for h in h0 if h.requires_grad), *params]

    def loss(outputs: list[Tensor], states: Sequence[Tensor]) -> Tensor:
        total = sum((o * weights).sum() for o in outputs) + sum((f**2).sum() for f in states)
        return torch.as_tensor(total)

    # a state's first tensor (the last output) is not read by the step: unused
    grad: dict[str, Any] = {"allow_unused": True, "materialize_grads": True}
    got_grads = torch.autograd.grad(loss(out.to_list(), final), wrt, **grad)
    want_grads = torch.autograd.grad(loss(outs, last), wrt, **grad)
    for g_got, g_want in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g_got, g_want, **tol)


def assert_scan_outputs_equal_alone(
    cell: torch.nn.Module, x: SequenceBatch, h0: tuple[Tensor, ...]
) -> None:
    """The ``'scan'`` path's outputs over ``x`` from ``h0`` against :func:`run_alone`'s, to
    1e-10."""
    from rnnkit import RecurrenceFrom

    out, _ = RecurrenceFrom(cell, backend="scan").with_final_state(h0, x)
    for got, want in zip(out.to_list(), run_alone(cell, x, h0)[0], strict=True):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)
