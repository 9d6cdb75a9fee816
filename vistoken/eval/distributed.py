"""``vistoken eval`` over several processes: torch.distributed, started by torchrun or accelerate.

Both ``torchrun --nproc_per_node P -m vistoken eval ...`` and ``accelerate launch -m vistoken
eval ...`` start P copies of the command with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT`` set. When ``WORLD_SIZE`` > 1, :func:`context` joins the
process group (``env://``): backend NCCL with device ``cuda:LOCAL_RANK`` when the run is on
CUDA, Gloo on the CPU.

The work is shared by whole batches of the fixed plan (:func:`vistoken.eval.runner.plan_batches`):
rank r runs batches r, r + P, r + 2P, ... (:func:`shard`), each computed exactly as one process
computes it, so the answers, and every number derived from them, are those of one process.
:func:`gather` collects the per-batch records on rank 0 (``gather_object``), which builds
the rows and writes the files once; the other ranks return without output. ``seconds`` add
up the work of all ranks; only ``timing["total"]`` is rank 0's wall time.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

__all__ = ["Context", "context", "env_world", "gather", "shard"]

log = logging.getLogger(__name__)

_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Context:
    """Where this process stands: its rank, the number of processes, its device."""

    rank: int
    world: int
    local_rank: int
    device: Any  # torch.device
    backend: str | None  # None: a single process, no process group

    @property
    def main(self) -> bool:
        """Whether this process writes the results (rank 0)."""
        return self.rank == 0


def env_world() -> int:
    """``WORLD_SIZE`` from the environment (1 when unset)."""
    text = os.environ.get("WORLD_SIZE", "1")
    try:
        world = int(text)
    except ValueError:
        raise ValueError(f"WORLD_SIZE must be an integer, got {text!r}") from None
    if world < 1:
        raise ValueError(f"WORLD_SIZE must be >= 1, got {world}")
    return world


def _env(name: str) -> str:
    text = os.environ.get(name)
    if text is None:
        raise RuntimeError(
            f"WORLD_SIZE is {os.environ.get('WORLD_SIZE')} but {name} is not set; start the "
            f"processes with torchrun or accelerate launch (they set {', '.join(_ENV)})"
        )
    return text


@contextmanager
def context(device: Any = None) -> Iterator[Context]:
    """This process's :class:`Context`, the process group joined for its duration.

    device: the requested ``torch.device`` or None (CUDA when available, else the CPU).
    With several processes a CUDA run uses ``cuda:LOCAL_RANK`` (a device index of its own is
    refused: each process takes the GPU of its local rank).
    """
    import torch

    world = env_world()
    if device is None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if world == 1:
        yield Context(0, 1, 0, device, None)
        return
    import torch.distributed as dist

    rank, local = int(_env("RANK")), int(_env("LOCAL_RANK"))
    _env("MASTER_ADDR"), _env("MASTER_PORT")
    if device.type == "cuda":
        if device.index is not None:
            raise ValueError(
                f"--device {device}: with {world} processes each one uses cuda:LOCAL_RANK; "
                "pass --device cuda"
            )
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    joined = not dist.is_initialized()
    if joined:
        kwargs: dict[str, Any] = {"backend": backend, "init_method": "env://",
                                  "rank": rank, "world_size": world}
        if backend == "nccl":
            kwargs["device_id"] = device
        dist.init_process_group(**kwargs)
    log.info("rank %d of %d on %s (%s)", rank, world, device, backend)
    try:
        yield Context(rank, world, local, device, backend)
    finally:
        if joined and dist.is_initialized():
            dist.destroy_process_group()


def shard(batches: int, ctx: Context) -> list[int]:
    """The batch ids of this rank: ``rank, rank + world, ...`` below ``batches``."""
    return list(range(ctx.rank, batches, ctx.world))


def gather(records: dict[int, Any], ctx: Context) -> dict[int, Any] | None:
    """Every rank's records merged on rank 0 (None on the others); as is for one process."""
    if ctx.world == 1:
        return records
    import torch.distributed as dist

    parts: list[Any] | None = [None] * ctx.world if ctx.main else None
    dist.gather_object(records, parts, dst=0)
    if not ctx.main:
        return None
    merged: dict[int, Any] = {}
    assert parts is not None
    for part in parts:
        overlap = merged.keys() & part.keys()
        if overlap:
            raise RuntimeError(f"batches {sorted(overlap)} were computed by two ranks")
        merged.update(part)
    return merged
