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


def detect_backend(path: str | os.PathLike) -> str:
    p = Path(path)
    if not p.exists():
        raise StoreNotFoundError(f"{p}: no such file or folder")
    from .sharded import is_sharded, sharded_backend

    _check_readable(p)
    try:
        if is_sharded(p):  # a folder of shards: report the shards' backend
            return sharded_backend(p)
        for name in available():
            if get_backend(name).detect(p):
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

    if Path(path).exists():
        _check_readable(Path(path))
    if is_sharded(path):
        r: StoreReader = ShardedReader(path, backend)
    else:
        name = backend or detect_backend(path)
        r = get_backend(name).open(path)
    r.check_reads = bool(verify)
    return r
