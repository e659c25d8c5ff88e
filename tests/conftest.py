"""Fixtures and helpers that several test files share.

A test file imports the helpers by name (``from conftest import SHARED_DATA``), as it imports
``training_script``: pytest puts this folder on ``sys.path`` (the tests folder is no package),
and the module a test file gets is the one pytest loaded.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import torch
from torch import Tensor

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
