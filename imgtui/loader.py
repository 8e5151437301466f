"""A map-style dataset over any imgtui store for training loops (PyTorch's DataLoader, or a
multiprocessing Pool), without importing torch.

``ImageDataset(path)`` is picklable: pickling drops the open reader, and every process opens the
store itself on first use. It also reopens when the process id changes, so a forked DataLoader
worker never reuses the parent's LMDB environment or HDF5 file handle.

``ds.__getitems__(indices)`` is PyTorch's batched fetch (torch >= 2.1 calls it from the default
fetcher when the dataset has it): one batch read of the store (``get_images``, or ``get_many`` with
a ``transform``) instead of one read per record, returning the same list ``[ds[i] for i in
indices]`` would. Reads are checked against the stored checksums either way.

    from torch.utils.data import DataLoader
    ds = imgtui.dataset("cifar.lmdb", transform=lambda rec: (to_tensor(rec.image), rec.label))
    loader = DataLoader(ds, batch_size=64, shuffle=True, num_workers=4)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

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
        #: labels of the open reader as one numpy array (``labels_array``: int64, 8 bytes a record
        #: in every worker), read once per process on the first fetch (None: not yet; False: they
        #: cannot all be read, so records are read with their own labels instead)
        self._label_col: Any = None
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
            self._label_col = None  # belongs to the reader it was read from
            self._reader = open_store(self.path)
            self._pid = os.getpid()
        return self._reader

    def __len__(self) -> int:
        return self._len

    def _labels(self) -> Any:
        """All labels of this process's reader (read once), or None when they cannot all be read
        (then each record is read with its own label, and a damaged one fails only that read)."""
        reader = self.reader
        if self._label_col is None:
            from .errors import ImgtuiError

            try:
                self._label_col = reader.labels_array()
            except ImgtuiError:
                self._label_col = False
        return None if self._label_col is False else self._label_col

    def __getitem__(self, index: int) -> Any:
        if self.transform is None:
            reader = self.reader
            if not self.with_label:
                return _first(reader.get_images([index]))
            labels = self._labels()
            if labels is not None:
                image = _first(reader.get_images([index]))  # checked; bounds-checked
                return image, labels[int(index) : int(index) + 1 or None].tolist()[0]  # a Python int or str
        rec = self.reader[index]
        if self.transform is not None:
            return self.transform(rec)
        return (rec.image, rec.label) if self.with_label else rec.image

    def __getitems__(self, indices: Sequence[int]) -> list:
        """``[self[i] for i in indices]`` from one batch read of the store (PyTorch's batched fetch)."""
        reader = self.reader
        if not isinstance(indices, (list, tuple, range)):
            indices = list(indices)
        if not len(indices):
            return []
        if self.transform is None:
            labels = self._labels() if self.with_label else None
            if labels is not None or not self.with_label:
                images = reader.get_images(indices)
                if not self.with_label:
                    return list(images)
                picked = labels[np.asarray(indices, dtype=np.int64)].tolist()  # Python ints or strs
                return list(zip(images, picked))
        recs = reader.get_many(indices)
        if self.transform is not None:
            return [self.transform(rec) for rec in recs]
        return [(rec.image, rec.label) for rec in recs]

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_reader"] = None
        state["_pid"] = None
        state["_label_col"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def close(self) -> None:
        if self._reader is not None and self._pid == os.getpid():
            self._reader.close()
        self._reader = None
        self._label_col = None

    def __repr__(self) -> str:
        return f"ImageDataset({str(self.path)!r}, {self._len:,} records, {self.backend})"


def _first(images: Any) -> Any:
    """The one image of a one-record ``get_images`` (an N x ... array or a list), as its own array."""
    return images[0]
