"""An existing imgtui store used as a dataset source (e.g. to convert LMDB -> HDF5)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, Sequence

from ..backends import open_store
from ..backends.remote import is_url
from ..backends.article import article_text
from ..errors import first_line
from ..records import Record
from .base import Dataset

#: records read at a time
BATCH = 256


class StoreDataset(Dataset):
    kind = "store"

    def __init__(self, path: str | Path, on_error: str = "stop", warn: Callable[[str], None] | None = None) -> None:
        """``on_error="skip"``: a record that cannot be read (damaged, checksum mismatch) is left
        out and named through ``warn`` instead of ending the read; "stop" raises its error."""
        self.path = path if is_url(path) else Path(path)  # a URL is read through the local cache
        self.on_error = on_error
        self.warn = warn
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
        if self.on_error == "skip":
            yield from self.records_at(range(self._length))
            return
        with open_store(self.path) as reader:
            for batch in reader.iter_batches(BATCH):
                yield from batch

    def records_at(self, indices: Sequence[int]) -> Iterator[Record]:
        idx = sorted(set(indices))
        with open_store(self.path) as reader:
            for k in range(0, len(idx), BATCH):
                part = idx[k : k + BATCH]
                if self.on_error != "skip":
                    yield from reader.get_many(part)
                    continue
                try:
                    batch = reader.get_many(part)
                except Exception:  # one bad record: read this batch one by one, leaving it out
                    batch = list(self._readable(reader, part))
                yield from batch

    def _readable(self, reader, indices: Sequence[int]) -> Iterator[Record]:
        for i in indices:
            try:
                yield reader[i]
            except Exception as exc:
                msg = first_line(exc)
                if self.warn is not None:
                    self.warn(msg if f"record {i}" in msg else f"{self.path}: record {i}: {msg}")
