"""``cntk.cntk_py``: the one call of CNTK's native module that tutorials make."""

from __future__ import annotations

import torch

__all__ = ["set_fixed_random_seed"]


def set_fixed_random_seed(seed: int) -> None:
    """Seed every random draw of the program (torch's global generator: initial weights,
    dropout masks); CNTK's fixes its own generator."""
    torch.manual_seed(seed)
