"""Which records each reader reads in an epoch: many ranks (machines or GPUs), each with several
DataLoader workers, together cover every record exactly once per epoch, in an exact shuffle that
changes with the epoch and is the same on every rank (it comes from the seed and the epoch only).

Random access makes an exact shuffle cheap: the order is a permutation of record indices. For a
sharded store (or a store at a URL) ``by_shards=True`` keeps each rank on whole shards (the shard
order is shuffled, each rank takes its shards, the records inside are shuffled), so a rank fetches
only its own shards.

An epoch stops after the same number of records on every rank (``drop_last``-style: at most
``world_size - 1`` records of an epoch are left out, never read twice); ``pad=True`` instead repeats
records so that every record is read (as torch's DistributedSampler pads).

``Split.state_dict()`` / ``load_state_dict()`` resume mid-epoch: the state is (seed, epoch, records
already taken); the rest of that epoch's order is the same as it would have been.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np

from .errors import ImgtuiError


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool = True,
                shards: Sequence[tuple[int, int]] | None = None) -> np.ndarray:
    """All record indices of an epoch in reading order (int64). With ``shards`` (``(start, stop)``
    ranges covering 0..n), records stay grouped by shard: the shard order and the order inside each
    shard are shuffled."""
    if not shuffle:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch) & 0xFFFFFFFF])
    if not shards:
        return rng.permutation(n).astype(np.int64)
    parts = [np.arange(a, b, dtype=np.int64) for a, b in shards]
    order = rng.permutation(len(parts))
    return np.concatenate([rng.permutation(parts[k]) for k in order]) if parts else np.empty(0, np.int64)


def rank_part(order: np.ndarray, rank: int, world_size: int, pad: bool = False,
              shards: Sequence[tuple[int, int]] | None = None) -> np.ndarray:
    """The records of ``order`` that ``rank`` of ``world_size`` reads, the same count on every rank.
    Without shards: every ``world_size``-th record from ``rank``. With shards (``order`` from
    ``epoch_order(..., shards=...)``): whole shards round-robin in the shuffled shard order, then cut
    (or padded) to the common length, so ranks rarely touch each other's shards."""
    if not 0 <= rank < world_size:
        raise ImgtuiError(f"rank {rank} is not in 0..{world_size - 1} (world size {world_size})")
    n = len(order)
    per = -(-n // world_size) if pad else n // world_size
    if shards:
        return _shard_parts(order, world_size, per, shards)[rank]
    part = order[rank::world_size][:per]
    if len(part) < per:  # pad: wrap around to the first records of the order
        part = np.concatenate([part, order[: per - len(part)]])
    return part


def _shard_parts(order: np.ndarray, world: int, per: int, shards: Sequence[tuple[int, int]]) -> list[np.ndarray]:
    """Every rank's part (all ranks compute the same, so the parts are disjoint): the shards in
    the epoch's order dealt round-robin; each rank keeps ``per`` of its own; what the long ranks
    give up fills the short ones in order (rank 0 first); with padding, a rank still short
    repeats its own first records."""
    sizes = {a: b - a for a, b in shards}
    starts = sorted(sizes)
    own: list[list[np.ndarray]] = [[] for _ in range(world)]
    pos, k = 0, 0
    while pos < len(order):
        first = int(order[pos])
        start = starts[int(np.searchsorted(starts, first, side="right")) - 1]
        own[k % world].append(order[pos:pos + sizes[start]])
        pos, k = pos + sizes[start], k + 1
    mine = [np.concatenate(o) if o else np.empty(0, np.int64) for o in own]
    pool = np.concatenate([m[per:] for m in mine]) if mine else np.empty(0, np.int64)
    parts, used = [], 0
    for m in mine:
        keep = m[:per]
        need = per - len(keep)
        if need > 0:
            keep = np.concatenate([keep, pool[used:used + need]])
            used += min(need, len(pool) - used)
        if len(keep) < per:  # padding
            keep = np.concatenate([keep, np.resize(keep if len(keep) else order, per - len(keep))])
        parts.append(keep.astype(np.int64))
    return parts


def worker_part(part: np.ndarray, worker: int, workers: int) -> np.ndarray:
    """A DataLoader worker's records of its rank's part: every ``workers``-th one."""
    if workers <= 1:
        return part
    return part[worker::workers]


@dataclass
class Split:
    """The reading plan of one rank: ``indices(epoch)`` for the whole rank, ``for_worker(...)`` per
    DataLoader worker; ``skip`` records of the current epoch are already taken (resume)."""

    n: int
    seed: int = 0
    shuffle: bool = True
    rank: int = 0
    world_size: int = 1
    pad: bool = False
    shards: list[tuple[int, int]] | None = None
    epoch: int = 0
    taken: int = 0
    _cache: dict = field(default_factory=dict, repr=False)

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.taken = int(epoch), 0

    def indices(self, epoch: int | None = None) -> np.ndarray:
        e = self.epoch if epoch is None else int(epoch)
        key = (e, self.rank, self.world_size)
        if key not in self._cache:
            self._cache.clear()
            order = epoch_order(self.n, self.seed, e, self.shuffle, self.shards)
            self._cache[key] = rank_part(order, self.rank, self.world_size, self.pad, self.shards)
        return self._cache[key]

    def __len__(self) -> int:
        return len(self.indices())

    def remaining(self) -> np.ndarray:
        """This rank's records of the epoch not yet taken."""
        return self.indices()[self.taken:]

    def for_worker(self, worker: int, workers: int) -> np.ndarray:
        return worker_part(self.remaining(), worker, workers)

    def __iter__(self) -> Iterator[int]:
        for i in self.remaining():
            self.taken += 1
            yield int(i)

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "epoch": self.epoch, "taken": self.taken, "n": self.n,
                "rank": self.rank, "world_size": self.world_size, "shuffle": self.shuffle}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state.get("n", self.n)) != self.n:
            raise ImgtuiError(f"this state is of a store of {int(state['n']):,} records, not {self.n:,}")
        if (int(state.get("world_size", self.world_size)), bool(state.get("shuffle", self.shuffle))) != (
                self.world_size, self.shuffle):
            raise ImgtuiError("this state was saved with another world size or shuffle setting")
        self.seed, self.epoch, self.taken = int(state["seed"]), int(state["epoch"]), int(state["taken"])
        self._cache.clear()
