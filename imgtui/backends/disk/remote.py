"""A disk store at a URL read in place: opening fetches ``manifest.json`` and the table
(``records.csv``) into the local cache, and a read fetches only the image files of the records it
reads, a batch's files concurrently (``fs.cat``, which fsspec runs concurrently on its async
filesystems: s3, gcs, http), one request per file. ``verify`` fetches the images folder whole
into the cache (it reads every file anyway) and checks it as a local store's."""

from __future__ import annotations

import os
import threading
from typing import Any, Callable, Sequence

from ...errors import CorruptStoreError
from ..remote import RemoteFiles, RemoteStore
from .store import IMAGES, MANIFEST, DiskReader, _table_of


class RemoteDiskReader(DiskReader):
    """A :class:`DiskReader` over the local copy of a store's manifest and table whose image files
    are read at the URL."""

    def __init__(self, path: str | os.PathLike, files: RemoteFiles,
                 fetch: Callable[[str], Any] | None = None) -> None:
        self._files_remote = files
        self._fetch_images = fetch
        self._images_local = False
        self._tls = threading.local()
        super().__init__(path)

    @property
    def files(self) -> RemoteFiles:
        """The remote files (``fetched``/``requests`` count the transfer)."""
        return self._files_remote

    def _rel(self, path: str) -> str:
        return os.path.relpath(path, str(self.path)).replace(os.sep, "/")

    def _file_bytes(self, i: int, path: str) -> bytes:
        if self._images_local:
            return super()._file_bytes(i, path)
        rel = self._rel(path)
        got = getattr(self._tls, "batch", None)
        data = got.get(rel) if got else None
        if data is not None:
            return data
        try:
            return self._files_remote.cat_files([rel])[rel]
        except FileNotFoundError:
            raise CorruptStoreError(f"{self._files_remote.url}/{rel}: image file of record {i} is missing") from None

    def _name(self, i: int) -> str:
        if "_table" in self.__dict__:  # the table is not parsed yet: this record's row only
            return self._row(i)[0]
        return self.file_of(i)

    def get_many(self, indices: Sequence[int]) -> list:
        idx = [self._index(i) for i in indices]
        if self._images_local or len(idx) < 2:
            return super().get_many(idx)
        names = list(dict.fromkeys(self._name(i) for i in idx))
        try:
            batch = self._files_remote.cat_files(names)
        except FileNotFoundError as exc:
            raise CorruptStoreError(f"{exc.args[0] if exc.args else self._files_remote.url}: image file is missing") from None
        old = getattr(self._tls, "batch", None)
        self._tls.batch = batch
        try:
            return super().get_many(idx)
        finally:
            self._tls.batch = old

    def verify(self, *args: Any, **kwargs: Any) -> Any:
        """The images folder fetched whole into the cache first (verify reads every file), then
        checked there as a local store's."""
        if self._fetch_images is not None and not self._images_local:
            self._fetch_images(IMAGES)
            self._images_local = True
        return super().verify(*args, **kwargs)

    def info(self) -> dict:
        d = super().info()
        size = self._files_remote.total_size()  # the store at the URL, not the cache's manifest and table
        if size is not None:
            d["bytes_on_disk"] = size
        return d


def open_remote(store: RemoteStore, manifest: dict) -> RemoteDiskReader:
    """The disk store at ``store.url`` opened in place (only its manifest and table fetched)."""
    table = _table_of(manifest, store.url)  # type: ignore[arg-type]
    local = store.open_files([MANIFEST, table])
    return RemoteDiskReader(local, store.files(), store.fetch_member)
