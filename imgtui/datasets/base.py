"""Dataset sources: lazy iterables of Records that know their length when they can."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from typing import Any, Callable, Iterator

from ..records import Record

WarnFn = Callable[[str], None]


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

    def summary(self, sample: int = 200) -> dict[str, Any]:
        """Count, shapes, dtypes and a label histogram from the first ``sample`` records."""
        shapes: Counter = Counter()
        dtypes: Counter = Counter()
        labels: Counter = Counter()
        seen = 0
        for rec in self:
            shapes["x".join(map(str, rec.image.shape))] += 1
            dtypes[str(rec.image.dtype)] += 1
            labels[str(rec.label)] += 1
            seen += 1
            if seen >= sample:
                break
        return {
            "source": self.describe(),
            "count": self.length,
            "sampled": seen,
            "shapes": dict(shapes.most_common(10)),
            "dtypes": dict(dtypes),
            "labels": dict(labels.most_common()),
        }

    def first(self) -> Record | None:
        for rec in self:
            return rec
        return None
