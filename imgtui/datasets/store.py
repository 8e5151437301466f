"""An existing imgtui store used as a dataset source (e.g. to convert LMDB -> HDF5)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from ..records import Record
from ..backends.article import article_text
from .base import Dataset


class StoreDataset(Dataset):
    kind = "store"

    def __init__(self, path: str | Path) -> None:
        from ..backends import open_store

        self.path = Path(path)
        with open_store(self.path) as reader:  # fail early, with the store's own message
            self._length = len(reader)
            self._backend = reader.backend

    @property
    def length(self) -> int:
        return self._length

    @property
    def article(self) -> bool:
        """A store written the classic article's way (read-only, no checksums)."""
        return self._backend.startswith("article-")

    def describe(self) -> str:
        if self.article:
            return f"{article_text(self._backend)} {self.path} ({self._length:,} records, no checksums)"
        return f"{self._backend} store {self.path} ({self._length:,} records)"

    def __iter__(self) -> Iterator[Record]:
        from ..backends import open_store

        with open_store(self.path) as reader:
            for batch in reader.iter_batches(256):
                yield from batch

    def records_at(self, indices) -> Iterator[Record]:
        from ..backends import open_store

        idx = sorted(set(indices))
        with open_store(self.path) as reader:
            for k in range(0, len(idx), 256):
                yield from reader.get_many(idx[k : k + 256])
