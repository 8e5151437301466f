"""Dataset sources: lazy iterables of Records that know their length when they can."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from itertools import islice
from typing import Any, Callable, Iterable, Iterator, Sequence

from ..records import Record

WarnFn = Callable[[str], None]


def spread_indices(n: int, k: int) -> list[int]:
    """``k`` distinct indices spread evenly over ``range(n)``, the first and the last included."""
    if k >= n:
        return list(range(n))
    if k <= 1:
        return [0][:k]
    return sorted({round(j * (n - 1) / (k - 1)) for j in range(k)})


class Dataset(ABC):
    """A source of records. Iterating yields Records lazily, never the whole set in memory."""

    #: short name of the source kind ("synthetic", "folder", "cifar", "npz", "store")
    kind: str = ""

    @property
    def length(self) -> int | None:
        """Number of records, or None when it is not known without reading everything."""
        return None

    def __len__(self) -> int:
        n = self.length
        if n is None:
            raise TypeError(f"{self.kind} dataset does not know its length")
        return n

    @abstractmethod
    def __iter__(self) -> Iterator[Record]: ...

    def describe(self) -> str:
        """One line naming the source, for titles and result files."""
        return self.kind

    def records_at(self, indices: Sequence[int]) -> Iterator[Record]:
        """The records at ``indices`` (sorted, distinct), in that order. This default iterates up to
        the last index; sources with random access (folders, stores, synthetic) decode only those."""
        want = iter(sorted(set(indices)))
        nxt = next(want, None)
        for i, rec in enumerate(self):
            if nxt is None:
                return
            if i == nxt:
                yield rec
                nxt = next(want, None)

    def summary(self, sample: int = 200) -> dict[str, Any]:
        """Count, shapes, dtypes and a label histogram from ``sample`` records spread evenly over
        the whole dataset (not its first records: a folder sorted by class would show one class);
        all records when there are at most ``sample``, the first ``sample`` when the length is
        unknown. ``sample_note`` says which ("sampled 200 of 10,000 spread over the set")."""
        shapes: Counter = Counter()
        dtypes: Counter = Counter()
        labels: Counter = Counter()
        n = self.length
        if n is not None and n > sample > 0:
            records: Iterable[Record] = self.records_at(spread_indices(n, sample))
        else:
            records = islice(self, max(0, sample))
        seen = 0
        for rec in records:
            shapes["x".join(map(str, rec.image.shape))] += 1
            dtypes[str(rec.image.dtype)] += 1
            labels[str(rec.label)] += 1
            seen += 1
        spread = n is not None and n > sample > 0
        if n is None:
            note = f"first {seen:,} records (the length is not known without reading everything)"
        elif spread:
            asked = len(spread_indices(n, sample))
            note = f"sampled {seen:,} of {n:,} spread over the set"
            if seen < asked:
                note += f" ({asked - seen:,} more could not be read)"
        else:
            note = f"all {n:,} records" + (f" ({n - seen:,} could not be read)" if seen < n else "")
        return {
            "source": self.describe(),
            "count": self.length,
            "sampled": seen,
            "spread": spread,
            "sample_note": note,
            "shapes": dict(shapes.most_common(10)),
            "dtypes": dict(dtypes),
            "labels": dict(labels.most_common()),
        }

    def first(self) -> Record | None:
        for rec in self:
            return rec
        return None
