"""A Zarr store at a URL read in place through zarr-python's fsspec store
(``zarr.storage.FsspecStore``): opening fetches the manifest and the ``zarr.json`` files into the
local cache (the reader checks them there as for a local store), and zarr-python reads the chunks
it needs at the URL: a shard's index and the chunks of a batch by ranged requests, concurrently on
async filesystems (s3, gcs, http). The direct chunk-file reads of a local store (``_ChunkMap``)
are not used; ``verify`` lists the chunk files at the URL and reads every record."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ...errors import ImgtuiError
from ..remote import RemoteStore, first_line
from .store import MANIFEST, ZarrReader

#: the arrays a store may have (their zarr.json files are fetched on open where they exist)
ARRAYS = ("images", "pixels", "offsets", "shapes", "dtypes", "labels", "label_is_int", "metadata", "checksums")


class RemoteZarrReader(ZarrReader):
    """A :class:`ZarrReader` whose arrays zarr-python reads at the URL."""

    def __init__(self, path: str | os.PathLike, store: RemoteStore) -> None:
        self._remote = store
        super().__init__(path)

    def _zarr_store(self, path: Path) -> Any:
        from zarr.storage import FsspecStore

        try:  # its own filesystem, made asynchronous as zarr-python wants it (credentials from the environment)
            return FsspecStore.from_url(self._remote.url, read_only=True)
        except Exception as exc:  # noqa: BLE001 (whatever zarr-python says: one line)
            raise ImgtuiError(f"{self._remote.url}: cannot be read with zarr's fsspec store ({first_line(exc)})") from None

    def _load(self) -> None:
        super()._load()
        maps, self._maps = self._maps, {}  # the local chunk files are not there: zarr-python reads
        for m in maps.values():
            m.close()

    def info(self) -> dict:
        d = super().info()
        size = self._remote.files().total_size()  # the store at the URL, not the cache's zarr.json files
        if size is not None:
            d["bytes_on_disk"] = size
        return d


def open_remote(store: RemoteStore, manifest: dict) -> RemoteZarrReader:
    """The Zarr store at ``store.url`` opened in place (only its manifest and zarr.json files fetched)."""
    root = store.path.rstrip("/")
    try:
        listed = {str(e).rstrip("/").rsplit("/", 1)[-1] for e in store.fs.ls(root, detail=False)}
    except Exception:  # noqa: BLE001 (a protocol that lists no folders, such as plain HTTP)
        listed = None
    names = [MANIFEST, "zarr.json"]
    for a in ARRAYS:
        try:
            if (a in listed) if listed is not None else store.fs.exists(f"{root}/{a}/zarr.json"):
                names.append(f"{a}/zarr.json")
        except Exception as exc:  # noqa: BLE001
            raise ImgtuiError(f"{store.url}: cannot be reached ({first_line(exc)})") from None
    local = store.open_files(names)
    return RemoteZarrReader(local, store)
