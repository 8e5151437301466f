"""An iterable dataset for training on many ranks and DataLoader workers (``imgtui.dataset(...,
shuffle=True, seed=S)``): each epoch every record is read once across all ranks, in an exact
shuffle that ``set_epoch(e)`` changes, with ``state_dict()`` to resume mid-epoch.

Rank and world size come from the arguments, else from ``torch.distributed`` when it is
initialised, else 0 and 1. DataLoader workers split their rank's part in blocks of ``block``
records (worker w reads blocks w, w + W, ...), so with ``batch_size == block`` the DataLoader hands
out the records in exactly the epoch's order and ``state_dict(consumed)`` resumes exactly.
Records are read in blocks with the store's batch read (one transaction / one HDF5 selection).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import numpy as np

from .loader import ImageDataset
from .records import Record
from .sampling import Split

try:  # an iterable-style dataset for torch's DataLoader when torch is there
    from torch.utils.data import IterableDataset as _Base
except Exception:  # torch is optional: the class is still a plain iterable
    _Base = object  # type: ignore[assignment,misc]


def _dist() -> tuple[int, int]:
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except Exception:
        pass
    return 0, 1


def _worker() -> tuple[int, int]:
    try:
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        if info is not None:
            return info.id, info.num_workers
    except Exception:
        pass
    return 0, 1


class EpochDataset(_Base):  # type: ignore[misc,valid-type]
    """Iterate the records of this rank (and DataLoader worker) for the current epoch."""

    def __init__(self, path: Any, transform: Callable[[Record], Any] | None = None, with_label: bool = True, *,
                 shuffle: bool = True, seed: int = 0, rank: int | None = None, world_size: int | None = None,
                 by_shards: bool | None = None, pad: bool = False, block: int = 64) -> None:
        self.items = ImageDataset(path, transform=transform, with_label=with_label)
        if (rank is None) != (world_size is None):
            from .errors import ImgtuiError

            raise ImgtuiError("give both rank and world_size, or neither (then torch.distributed's)")
        if rank is None:
            rank, world_size = _dist()
        reader = self.items.reader
        shards = None
        if by_shards is not False and getattr(reader, "sharded", False):
            shards = [tuple(map(int, s["range"])) for s in reader.manifest["shards"] if int(s["count"])]
        self.split = Split(len(self.items), seed=seed, shuffle=shuffle, rank=int(rank), world_size=int(world_size or 1),
                           pad=pad, shards=shards)
        self.block = max(1, int(block))
        self._consumed_start = 0

    # -- the plan ------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        self.split.set_epoch(epoch)

    def __len__(self) -> int:
        """Records this rank reads per epoch (all its workers together)."""
        return len(self.split)

    def worker_indices(self, worker: int, workers: int) -> np.ndarray:
        """The records worker ``worker`` of ``workers`` reads in the rest of the epoch: blocks
        ``worker``, ``worker + workers``, ... of ``block`` records."""
        rest = self.split.remaining()
        if workers <= 1:
            return rest
        blocks = [rest[i:i + self.block] for i in range(worker * self.block, len(rest), workers * self.block)]
        return np.concatenate(blocks) if blocks else rest[:0]

    def __iter__(self) -> Iterator[Any]:
        worker, workers = _worker()
        mine = self.worker_indices(worker, workers)
        reader = self.items.reader
        for start in range(0, len(mine), self.block):
            part = [int(i) for i in mine[start:start + self.block]]
            for rec in reader.get_many(part):
                if workers <= 1:  # handed out = taken (with workers the loop says how far it got)
                    self.split.taken += 1
                yield self._sample(rec)

    def _sample(self, rec: Record) -> Any:
        items = self.items
        if items.transform is not None:
            return items.transform(rec)
        return (rec.image, rec.label) if items.with_label else rec.image

    # -- resume ----------------------------------------------------------------------------------
    def state_dict(self, consumed: int | None = None) -> dict[str, Any]:
        """Where this rank is: ``consumed`` records of the epoch taken by the training loop (with
        DataLoader workers pass it: batches seen x batch size); without workers it is counted."""
        state = self.split.state_dict()
        if consumed is not None:
            state["taken"] = int(consumed)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.split.load_state_dict(state)

    def __repr__(self) -> str:
        return (f"EpochDataset({str(self.items.path)!r}, rank {self.split.rank}/{self.split.world_size}, "
                f"epoch {self.split.epoch}, {len(self):,} records per epoch)")
