"""Several processes under ``torchrun``: the process group, the device, sums over processes.

``torchrun --nproc_per_node K script.py`` starts K processes and gives each the environment
variables ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``. The
trainer reads them through :func:`join`: with ``WORLD_SIZE`` above 1 it initialises
``torch.distributed`` (gloo on the CPU, nccl on CUDA) unless the script already did, and uses
the group that is there otherwise. Nothing here is home-made: the group, the all-reduce and
``DistributedDataParallel`` are PyTorch's.

>>> join(torch.device("cpu"))  # a plain process
Processes(rank=0, world_size=1, local_rank=0)
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["Processes", "join", "launched_device", "sum_over_processes"]


@dataclass(frozen=True)
class Processes:
    """This process's place among the training processes."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that prints and writes."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(
            f"environment variable {name}: expected an integer (as torchrun sets it), found "
            f"{value!r}"
        ) from None


def launched_device() -> torch.device | None:
    """``cuda:LOCAL_RANK`` when started by torchrun with several processes on a CUDA machine."""
    if _env_int("WORLD_SIZE", 1) > 1 and torch.cuda.is_available():
        return torch.device("cuda", _env_int("LOCAL_RANK", 0))
    return None


def join(device: torch.device) -> Processes:
    """Join (initialising if needed) the process group that torchrun's environment describes."""
    local_rank = _env_int("LOCAL_RANK", 0)
    if dist.is_available() and dist.is_initialized():
        return Processes(dist.get_rank(), dist.get_world_size(), local_rank)
    world_size = _env_int("WORLD_SIZE", 1)
    if world_size <= 1:
        return Processes(0, 1, 0)
    if not dist.is_available():
        raise RuntimeError(
            f"WORLD_SIZE={world_size} asks for {world_size} processes, but this PyTorch build has "
            "no torch.distributed"
        )
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl", device_id=device)
    else:
        dist.init_process_group(backend="gloo")
    return Processes(dist.get_rank(), dist.get_world_size(), local_rank)


def sum_over_processes(values: Tensor, processes: Processes) -> Tensor:
    """``values`` summed over every process (itself when there is one process)."""
    if processes.world_size > 1:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values
