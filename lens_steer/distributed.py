"""Scale-out on the engine PyTorch users already run: ``torchrun`` / ``torch.distributed``.

Nothing here starts processes: ``torchrun --nproc-per-node N -m lens_steer.cli identify ...`` (or ``--nnodes`` and
``--rdzv-*`` for several machines) starts them and sets ``RANK`` / ``WORLD_SIZE``; :func:`init` joins the process
group (gloo on CPU, nccl on GPU). Without torchrun everything is one process of a world of one.

Work is planned exactly as one process would plan it and *whole* units (recording batches, sweep rows) are dealt
to ranks (:func:`deal`): every number is computed on the same shapes as in one process, so counts and kept
sentence means are exact and float sums differ only in the order partial sums are added. Ranks return their
partial results to rank 0 (:func:`gather_to_main`), which combines them with the same function that merges
``--shard`` runs from files, and alone writes the run.

A rank that fails tells the others at the next collective (:func:`check_all`): every rank then stops with the
same one-line error and nothing is written.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from lens_steer.errors import LensSteerError


@dataclass(frozen=True)
class World:
    """Who this process is: ``rank`` of ``size`` (a world of one without torchrun), or shard ``rank`` of ``size``
    written to disk (``sharded``), where nothing is exchanged between processes."""

    rank: int = 0
    size: int = 1
    sharded: bool = False

    @property
    def main(self) -> bool:
        """Rank 0 writes the run and shows progress."""
        return self.rank == 0

    @property
    def writes(self) -> bool:
        """Whether this process writes a run: rank 0 of a torchrun world, or every shard (its own run)."""
        return self.sharded or self.rank == 0

    @property
    def collective(self) -> bool:
        """Partial results travel through torch.distributed (torchrun), not through shard files."""
        return self.size > 1 and not self.sharded

    def mine(self, owners: Sequence[int]) -> list[int]:
        """The indices of the units dealt to this rank."""
        return [i for i, r in enumerate(owners) if r == self.rank]


def parse_shard(text: str) -> World:
    """``--shard i/n`` (0-based): shard i of n, written as a run of its own and combined by ``lens-steer merge``.

    >>> parse_shard("1/4")
    World(rank=1, size=4, sharded=True)
    """
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise LensSteerError(f"--shard {text!r}: write it as i/n, e.g. 0/4 for the first of 4 shards") from None
    if n < 1 or not 0 <= i < n:
        raise LensSteerError(f"--shard {text!r}: i must be in 0..n-1 (0-based), e.g. 0/{max(n, 2)}")
    return World(i, n, sharded=True)


def init() -> World:
    """Join torchrun's process group if this process was started by torchrun (``WORLD_SIZE`` > 1); else a world
    of one. gloo on CPU, nccl when CUDA is available (each rank on ``cuda:LOCAL_RANK``)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    return World(dist.get_rank(), dist.get_world_size())


def current() -> World:
    """The world of this process: torch.distributed's when a group is initialised, else a world of one."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def device_for(requested: str) -> str:
    """Under torchrun with nccl each rank uses its own GPU (``cuda:LOCAL_RANK``) when ``cuda`` was asked for."""
    if requested == "cuda" and current().collective:
        return f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    return requested


def deal(costs: Sequence[float], n: int) -> list[int]:
    """Deal units to ``n`` ranks, most costly first, each to the least-loaded rank (ties: the lower rank).

    Deterministic: every rank computes the same deal from the same plan.

    >>> deal([10, 1, 7, 3, 5], 2)  # loads: rank 0 = 10 + 3 = 13, rank 1 = 7 + 5 + 1 = 13
    [0, 1, 1, 0, 1]
    """
    load = [0.0] * n
    owners = [0] * len(costs)
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        r = min(range(n), key=lambda r: (load[r], r))
        owners[i] = r
        load[r] += costs[i]
    return owners


def check_all(error: BaseException | None) -> None:
    """A collective checkpoint: raise on every rank if any rank failed (the first failing rank's message), so that
    no rank waits forever in a later collective and nothing is written. A no-op in a world of one."""
    world = current()
    if not world.collective:
        if error is not None:
            raise error
        return
    messages: list[Any] = [None] * world.size
    dist.all_gather_object(messages, None if error is None else str(error) or type(error).__name__)
    failed = [(r, m) for r, m in enumerate(messages) if m is not None]
    if failed:
        rank, message = failed[0]
        if error is not None and rank == world.rank and isinstance(error, LensSteerError):
            raise error
        raise LensSteerError(f"rank {rank} of {world.size} failed: {message}")


def exchange(obj: Any) -> list[Any]:
    """Every rank's ``obj`` on every rank, in rank order. CPU tensors travel pickled (parts are O(L x D))."""
    world = current()
    if not world.collective:
        return [obj]
    out: list[Any] = [None] * world.size
    dist.all_gather_object(out, obj)  # works on gloo and nccl alike
    return out


def gather_to_main(obj: Any) -> list[Any] | None:
    """Every rank's ``obj`` on rank 0, in rank order (None on the other ranks)."""
    out = exchange(obj)
    return out if current().main else None


def run_dealt(units: Sequence[Any], costs: Sequence[float], fn: Callable[[Any], Any]) -> tuple[list[Any], list[int]]:
    """``[fn(u) for u in units]`` with the units dealt to the ranks (:func:`deal`, most costly first); every rank
    gets every result, in unit order, and the rank that computed each. In a world of one: a plain loop.

    The units are planned by the caller exactly as one process plans them (whole batches, whole sweep rows), so
    each result is computed on the same shapes wherever it runs.

    >>> run_dealt([1, 2, 3], [1, 1, 1], lambda u: u * 10)
    ([10, 20, 30], [0, 0, 0])
    """
    world = current()
    if not world.collective:
        return [fn(u) for u in units], [0] * len(units)
    owners = deal(costs, world.size)
    mine: dict[int, Any] = {}
    error = None
    try:
        for i in world.mine(owners):
            mine[i] = fn(units[i])
    except Exception as exc:  # noqa: BLE001 - re-raised on every rank by check_all
        error = exc
    check_all(error)
    done: dict[int, Any] = {}
    for part in exchange(mine):
        done.update(part)
    return [done[i] for i in range(len(units))], owners


def broadcast_from_main(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    world = current()
    if not world.collective:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    """Wait for every rank (so that no rank exits while rank 0 still writes)."""
    world = current()
    if world.collective:
        dist.barrier()


def shutdown() -> None:
    """Leave the process group, if this process joined one (the end of a torchrun command)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


_MERGE_SECONDS = [0.0]


@contextlib.contextmanager
def merge_timer() -> Iterator[None]:
    """Time spent combining parts (the exchange, the merge, the broadcast; not the wait for slower ranks)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        _MERGE_SECONDS[0] += time.perf_counter() - start


def merge_seconds() -> float:
    """Seconds this process spent in :func:`merge_timer` blocks (``make bench`` P6 reports it)."""
    return _MERGE_SECONDS[0]
