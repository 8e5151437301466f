"""A WebDataset store at a URL read in place: opening fetches ``manifest.json`` and ``index.npy``
into the local cache, and records are read from the tar shards with ranged requests through the
index's member offsets (``backends.remote.RemoteFiles``). A batch's records are fetched together:
their byte ranges are coalesced where they lie in one shard close together (records in order: one
request for the whole batch) and the requests run concurrently. ``verify`` fetches every shard
whole into the cache (it reads every byte anyway) and checks the tar archives as for a local store.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ...errors import CorruptStoreError
from ..remote import RemoteFiles, RemoteStore
from .store import INDEX, MANIFEST, WdsReader, shard_name


class RemoteWdsReader(WdsReader):
    """A :class:`WdsReader` over the local copy of a store's manifest and index whose shards are
    read at the URL with ranged requests."""

    use_mmap = False

    def __init__(self, path: str | os.PathLike, files: RemoteFiles,
                 fetch: Callable[[str], Any] | None = None) -> None:
        self._files = files
        self._fetch_shard = fetch
        self._local_shards: set[int] = set()  # fetched whole (verify): read from the local copy
        self._tls = threading.local()
        super().__init__(path)

    @property
    def files(self) -> RemoteFiles:
        """The remote files (``fetched``/``requests`` count the transfer)."""
        return self._files

    def _shard_sizes(self) -> np.ndarray:
        names = [shard_name(k) for k in range(self._n_shards)]
        got = self._files.sizes(names)
        for name in names:
            if name not in got:
                raise CorruptStoreError(f"{self._files.url}/{name}: shard is missing")
        return np.array([got[n] for n in names], np.uint64)

    # -- reads -----------------------------------------------------------------------------------
    def _preadv(self, k: int, buffers: list, offset: int, index: int, want: int) -> None:
        if k in self._local_shards:
            return super()._preadv(k, buffers, offset, index, want)
        name = shard_name(k)
        seg = getattr(self._tls, "seg", None)
        data: Any = seg.get(name, offset, want) if seg is not None else None
        if data is None:
            data = self._files.cat(name, offset, offset + want)
        if len(data) != want:
            raise CorruptStoreError(f"{self._files.url}/{name}: record {index} ends past the end of the shard (truncated?)")
        pos = 0
        for b in buffers:
            mv = memoryview(b).cast("B")
            mv[:] = data[pos : pos + len(mv)]
            pos += len(mv)

    @contextmanager
    def _prefetched(self, sel: np.ndarray, label_only: bool = False) -> Iterator[None]:
        """The bytes of the records ``sel`` (index rows) fetched at once for the reads inside."""
        if label_only:
            starts, ends = sel["lab_off"].astype(np.int64), (sel["lab_off"] + sel["lab_size"]).astype(np.int64)
        else:
            starts = sel["img_off"].astype(np.int64)
            ends = np.maximum(starts + sel["img_size"].astype(np.int64),
                              np.where(sel["lkind"] != 0, (sel["lab_off"] + sel["lab_size"]).astype(np.int64), 0))
            ends = np.maximum(ends, np.where(sel["meta_size"] > 0, (sel["meta_off"] + sel["meta_size"]).astype(np.int64), 0))
        remote = ~np.isin(sel["shard"], list(self._local_shards)) if self._local_shards else np.ones(len(sel), bool)
        ranges = [(shard_name(k), a, b) for k, a, b in
                  zip(sel["shard"][remote].tolist(), starts[remote].tolist(), ends[remote].tolist())]
        old = getattr(self._tls, "seg", None)
        self._tls.seg = self._files.fetch(ranges) if ranges else None
        try:
            yield
        finally:
            self._tls.seg = old

    def get_many(self, indices: Sequence[int]) -> list:
        return self._with_prefetch(indices, super().get_many)

    def get_images(self, indices: Sequence[int]) -> np.ndarray | list[np.ndarray]:
        return self._with_prefetch(indices, super().get_images)

    def _with_prefetch(self, indices: Sequence[int], read: Any) -> Any:
        """``read(indices)`` with the members of those records fetched first, in few requests."""
        if not isinstance(indices, (range, np.ndarray, list, tuple)):
            indices = list(indices)
        idx = self._indices(indices)
        if not idx.size:
            return []
        with self._prefetched(self._rows_of(idx)):
            return read(indices)

    def _labels(self) -> list:
        if self._str_labels is None and (self._ix["lkind"] != 0).any():
            with self._prefetched(self._ix[self._ix["lkind"] != 0], label_only=True):
                return super()._labels()
        return super()._labels()

    def verify(self, *args: Any, **kwargs: Any) -> Any:
        """Every shard fetched whole into the cache first (verify reads all of it), then checked
        there as a local store's shards are."""
        if self._fetch_shard is not None:
            for k in range(self._n_shards):
                if k not in self._local_shards:
                    self._fetch_shard(shard_name(k))
                    self._local_shards.add(k)
        return super().verify(*args, **kwargs)

    def info(self) -> dict:
        d = super().info()
        d["bytes_on_disk"] = int(sum(self._sizes)) + d["bytes_on_disk"]  # the shards at the URL + index, manifest
        return d


def open_remote(store: RemoteStore, manifest: dict) -> RemoteWdsReader:
    """The WebDataset store at ``store.url`` opened in place (only its manifest and index fetched)."""
    local = store.open_files([MANIFEST, INDEX])
    return RemoteWdsReader(local, store.files(), store.fetch_member)
