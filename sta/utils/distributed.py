"""Joining a torchrun process group (gloo on CPU, nccl on CUDA when every local rank has a GPU of its own)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist


def process_group_backend(device: str, local_world: int, gpus: int) -> str:
    """nccl when the ranks of this node each have a GPU of their own, else gloo.

    NCCL refuses two ranks on one GPU ("Duplicate GPU detected"); the group only
    carries barriers and small records, so gloo serves ranks that share a GPU.
    """
    return "nccl" if device.startswith("cuda") and 1 <= local_world <= gpus else "gloo"


def rank_device(device: str, local_rank: int, gpus: int) -> str:
    """The device a rank runs on: ``cuda`` spreads local ranks over the GPUs (several per GPU when there are more
    ranks than GPUs); an explicit ``cuda:N``, or any other device, is kept."""
    if device != "cuda" or gpus < 1:
        return device
    return f"cuda:{local_rank % gpus}"


def init_distributed(device: str) -> tuple[int, int]:
    """Join the process group torchrun set up (see :func:`process_group_backend`); (rank, world size).

    On CUDA the rank's GPU (:func:`rank_device`) becomes the current device, so ``cuda`` means that GPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or dist.is_initialized():
        return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    gpus = torch.cuda.device_count() if device.startswith("cuda") else 0
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    if gpus:
        torch.cuda.set_device(torch.device(rank_device(device, local_rank, gpus)))
    dist.init_process_group(backend=process_group_backend(device, local_world, gpus))
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
