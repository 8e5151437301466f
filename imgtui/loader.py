"""A map-style dataset over any imgtui store for training loops (PyTorch's DataLoader, or a
multiprocessing Pool), without importing torch.

``ImageDataset(path)`` is picklable: pickling drops the open reader, and every process opens the
store itself on first use. It also reopens when the process id changes, so a forked DataLoader
worker never reuses the parent's LMDB environment or HDF5 file handle.

    from torch.utils.data import DataLoader
    ds = imgtui.dataset("cifar.lmdb", transform=lambda rec: (to_tensor(rec.image), rec.label))
    loader = DataLoader(ds, batch_size=64, shuffle=True, num_workers=4)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from .backends.remote import is_url
from .records import Record

#: readers inherited from a parent process through fork; kept alive so that their __del__ never
#: closes the parent's LMDB environment / HDF5 file from this process
_INHERITED: list = []


class ImageDataset:
    """``ds[i]`` -> ``(image, label)`` (``with_label=False``: the image only), or ``transform(record)``."""

    def __init__(
        self,
        path: str | os.PathLike,
        transform: Callable[[Record], Any] | None = None,
        with_label: bool = True,
    ) -> None:
        self.path = path if is_url(path) else Path(path)  # a URL: each process reads the local cache
        self.transform = transform
        self.with_label = with_label
        self._reader = None
        self._pid: int | None = None
        reader = self.reader  # fail now, with the store's own one-line message
        self._len = len(reader)
        self.backend = reader.backend

    @property
    def reader(self):
        """The store reader of this process (opened lazily; reopened after a fork)."""
        if self._reader is None or self._pid != os.getpid():
            from .backends import open_store

            if self._reader is not None:
                # a reader inherited through fork belongs to the parent: never close or use it here
                _INHERITED.append(self._reader)
                self._reader = None
            self._reader = open_store(self.path)
            self._pid = os.getpid()
        return self._reader

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> Any:
        rec = self.reader[index]
        if self.transform is not None:
            return self.transform(rec)
        return (rec.image, rec.label) if self.with_label else rec.image

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_reader"] = None
        state["_pid"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def close(self) -> None:
        if self._reader is not None and self._pid == os.getpid():
            self._reader.close()
        self._reader = None

    def __repr__(self) -> str:
        return f"ImageDataset({str(self.path)!r}, {self._len:,} records, {self.backend})"
