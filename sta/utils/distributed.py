"""Joining a torchrun process group (gloo on CPU, nccl on CUDA)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist


def init_distributed(device: str) -> tuple[int, int]:
    """Join the process group torchrun set up (gloo on CPU, nccl on CUDA); (rank, world size)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or dist.is_initialized():
        return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


@contextmanager
def distributed(device: str) -> Iterator[tuple[int, int]]:
    """``with distributed(device) as (rank, world):`` joins torchrun's group and leaves it at the end.

    Leaving matters: a process that exits with the group still up can abort in its
    communication threads ("terminate called without an active exception").
    """
    joined = not dist.is_initialized()
    rank_world = init_distributed(device)
    try:
        yield rank_world
    except BaseException:
        if joined and dist.is_initialized():
            dist.destroy_process_group()  # no barrier: the other ranks may be gone
        raise
    if joined and dist.is_initialized():
        dist.barrier()  # no rank tears the group down while another still uses it
        dist.destroy_process_group()
