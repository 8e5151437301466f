"""Storage backends behind one interface: see ``base.py``.

``open_writer(path, backend, **options)`` and ``open_store(path)`` are what the rest of imgtui
(bench, CLI, app) uses; the backend of an existing store is detected from its files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import ImgtuiError, StoreNotFoundError
from .base import Backend, StoreReader, StoreWriter, VerifyResult, path_size  # noqa: F401

from .remote import is_url, localize
from .registry import BACKENDS, available, canonical, get_backend  # noqa: F401

#: every registered backend's name (some may need an optional package: see ``available()``)
BACKEND_NAMES = tuple(BACKENDS)


def open_writer(path: str | os.PathLike, backend: str, **options: Any) -> StoreWriter:
    """A writer for a new store. Options: ``overwrite``, ``batch_size``, backend options."""
    return get_backend(backend).writer(path, **options)


def _unreadable(p: Path) -> ImgtuiError:
    return ImgtuiError(f"{p}: permission denied (cannot read it)")


def _check_readable(p: Path) -> None:
    """One line for a store this process may not read (not a later 'manifest.json: Permission denied')."""
    try:
        if p.is_dir():
            os.listdir(p)
        else:
            with open(p, "rb"):
                pass
    except PermissionError:
        raise _unreadable(p) from None
    except OSError:
        pass  # missing or odd: the caller's own checks say what


def _open_ranged(url: str, backend: str | None) -> StoreReader | None:
    """A single-file HDF5 store at ``url`` big enough to read with ranged requests instead of a
    download into the cache (``remote.ranged_file``), opened that way; else None."""
    if backend not in (None, "hdf5"):
        return None
    from .remote import ranged_file

    fh = ranged_file(url, b"\x89HDF\r\n\x1a\n")
    if fh is None:
        return None
    from .remote import RemoteStore

    try:
        r = get_backend("hdf5").reader_cls(RemoteStore(url).local, fileobj=fh)
    except BaseException:
        fh.close()
        raise
    r.url = url.rstrip("/")
    return r


#: backends that read a store at a URL in place (module with ``open_remote(RemoteStore, manifest)``)
_REMOTE_READERS = {"webdataset": ".webdataset.remote", "disk": ".disk.remote", "zarr": ".zarr.remote"}


def _open_in_place(url: str, backend: str | None) -> tuple[StoreReader | None, Any]:
    """A store at ``url`` whose format reads in place (``_REMOTE_READERS``), opened that way
    after fetching only its small files; for a sharded store, (None, its RemoteStore) with only
    the manifest fetched; (None, None) for what goes through the cache whole."""
    from .remote import RemoteStore, whole_download

    if whole_download():
        return None, None
    store = RemoteStore(url)
    kind, manifest = store.probe()
    if kind == "sharded":
        store.open_local()  # the manifest only
        return None, store
    module = _REMOTE_READERS.get(kind or "")
    if module is None or backend not in (None, kind):
        return None, None
    import importlib

    get_backend(kind)  # one line when its optional package is missing
    r = importlib.import_module(module, __name__).open_remote(store, manifest)
    r.url = store.url
    return r, None


def detect_backend(path: str | os.PathLike) -> str:
    if is_url(path):
        from .remote import RemoteStore, ranged_file, whole_download

        fh = None if whole_download() else ranged_file(str(path), b"\x89HDF\r\n\x1a\n")
        if fh is not None:
            fh.close()
            return "hdf5"
        kind, manifest = (None, {}) if whole_download() else RemoteStore(str(path)).probe()
        if kind == "sharded" and isinstance(manifest.get("backend"), str):
            return manifest["backend"]
        if kind in BACKENDS:
            return kind
        path, _remote = localize(str(path))
    p = Path(path)
    if not p.exists():
        raise StoreNotFoundError(f"{p}: no such file or folder")
    from .sharded import is_sharded, sharded_backend

    _check_readable(p)
    try:
        if is_sharded(p):  # a folder of shards: report the shards' backend
            return sharded_backend(p)
        for name in BACKENDS:  # imported one at a time: an LMDB store does not import zarr (~0.3 s)
            try:
                backend = get_backend(name)
            except ImgtuiError:  # its optional package is not installed
                continue
            if backend.detect(p):
                return name
    except PermissionError:
        raise _unreadable(p) from None
    raise ImgtuiError(f"{p} is not an imgtui store (no disk, LMDB or HDF5 store found there)")


def open_store(path: str | os.PathLike, backend: str | None = None, verify: bool = True) -> StoreReader:
    """Open an existing store for reading; raises a one-line ImgtuiError if it cannot.

    A sharded store (a folder of shards + manifest.json) opens as a ``ShardedReader``.
    ``verify``: check every record read against its stored checksum (a damaged record raises a
    one-line CorruptStoreError instead of returning wrong pixels); False reads without the check.
    """
    from .sharded import ShardedReader, is_sharded

    remote = None
    if is_url(path):  # a store at a URL: read in place (ranged requests) or through the local cache (remote.py)
        from .remote import whole_download

        ranged = None if whole_download() else _open_ranged(str(path), backend)
        if ranged is None:
            ranged, remote = _open_in_place(str(path), backend)
        if ranged is not None:
            ranged.check_reads = bool(verify)
            return ranged
        if remote is None:
            path, remote = localize(str(path))
        else:
            path = remote.local
    if remote is not None and remote.sharded:
        r0: StoreReader = ShardedReader(path, backend, fetch=remote.fetch_member, open_remote=remote.open_member)
        r0.check_reads = bool(verify)
        r0.url = remote.url
        return r0
    if Path(path).exists():
        _check_readable(Path(path))
    if is_sharded(path):
        r: StoreReader = ShardedReader(path, backend)
    elif backend is None:
        try:
            r = get_backend(detect_backend(path)).open(path)
        except ImgtuiError:
            r = open_article_store(path)  # None when it is not one of the article's stores
            if r is None:
                raise
    else:
        r = get_backend(backend).open(path)
    r.check_reads = bool(verify)
    if remote is not None:
        r.url = remote.url
    return r


def open_article_store(path: str | os.PathLike) -> StoreReader | None:
    """A read-only reader for a store written the classic article's way (an LMDB of pickled
    ``CIFAR_Image`` objects read with the restricted unpickler, an HDF5 file of ``images``/``meta``,
    a folder of ``N.png`` + ``N.csv``), or None when ``path`` is not one. ``open_store`` falls back
    to it, so ``info``, ``verify``, ``export``, ``convert``, ``append`` (as a source) and the browser
    accept these stores as they are."""
    from .article import ARTICLE_READERS

    kind = article_kind(path)
    return ARTICLE_READERS[kind](path) if kind else None


def article_kind(path: str | os.PathLike) -> str | None:
    """"article-lmdb", "article-hdf5" or "article-disk" for a store in the article's layout, else None."""
    from .article import detect_article

    try:
        return detect_article(path) if Path(path).exists() else None
    except Exception:  # a probe: a damaged file (h5py raises RuntimeError on bad metadata
        return None    # checksums, lmdb its own errors) is not an article store; the caller's error stands
