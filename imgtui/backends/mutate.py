"""Change an existing store: append, overwrite and delete records (``imgtui.append``,
``imgtui.overwrite``, ``imgtui.delete``, ``imgtui append SOURCE STORE``).

Each call returns a report::

    {"operation", "backend", "path", "records", "count", "seconds", "in_place", "how",
     "bytes_before", "bytes_after"}

``in_place`` is False when the backend could not change its bytes where they are and the store was
rewritten instead; ``how`` says in one line what was done. Record indices stay dense: after a
delete, the records behind a deleted one shift down by one.

What each backend does
----------------------
disk    append: new PNG files + rows appended to records.csv. overwrite: the new PNGs go to new
        file names, records.csv is swapped atomically, then the old files are removed. delete:
        records.csv rewritten without the rows, their files removed (no other file is renamed:
        the table's ``file`` column is not tied to the index). All in place.
lmdb    append: new blocks (the last, partial block is re-packed with the first new records).
        overwrite: the blocks holding the records are re-packed under the same keys. delete: every
        block from the first deleted record onward is re-packed (keys shift). In place: LMDB's
        copy-on-write pages, freed pages are reused by later writes; the map grows by itself.
hdf5    append: chunked datasets are resized in place; a contiguous dataset cannot be resized, so
        the file is rewritten once (contiguous with room for the new records when their number is
        known, else chunked); a record whose shape differs from a fixed-shape store migrates the
        store to the variable-shape layout (a rewrite). overwrite: same shape in place; another
        shape (or a label type the labels dataset cannot hold) rewrites the file. delete: always
        a rewrite (HDF5 cannot take rows out of a dataset nor give freed space back to the file
        system).

Crash safety: every mutation first marks the store incomplete (disk: manifest.json removed;
LMDB: the manifest key deleted in the first write transaction; HDF5: the ``complete`` attribute
deleted, and the file carries HDF5's open-for-write mark while it is changed) and writes the
complete manifest last; rewrites build a new file next to the store and swap it in only when it
is complete. An LMDB change that fits one write transaction is atomic (old or new store). A
process killed mid-change therefore leaves a store that opens as incomplete, or the old or new
complete store; never one that returns wrong pixels. On an exception (a record that cannot be
stored, Ctrl-C) the change is rolled back and the old store is left as it was.

Stores are read without locks: close every reader of a store (in every process) before changing
it, and reopen readers afterwards.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..errors import (
    first_line,
    ImgtuiError,
    InvalidRecordError,
    StoreError,
    StoreNotFoundError,
    StoreFullError,
)
from ..records import Record, checksum_fn, validate_record
from ..reports import ChangeReport, RepairReport
from .registry import get_backend
from .base import WriteStats, format_version_for, is_disk_full_error, path_size
from .safety import WriterLock, clean_stale, is_locked, stale_temporaries
from .sharded import is_sharded

ProgressFn = Callable[[int, "int | None"], None]
CancelFn = Callable[[], bool]

#: records validated and written per step
BATCH = 256
#: ... and at most about this many pixel bytes
BATCH_BYTES = 64 << 20
#: LMDB: block bytes per write transaction when a change needs several
TXN_BYTES = 64 << 20


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------


def append(
    store: str | os.PathLike,
    records: Iterable[Record | tuple],
    *,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> ChangeReport:
    """Append ``records`` (an iterable of Records or (image, label[, metadata]) tuples) to ``store``.

    All or nothing: a record that cannot be stored (or a cancel) rolls the append back.
    """
    path = Path(store)
    src = getattr(records, "path", None)
    if src is not None and getattr(records, "kind", None) == "store" and _same_path(src, path):
        _prepare_path(path)
        raise StoreError(f"cannot append {path} to itself: the store is read while it changes; copy it first")
    total = _known_len(records)
    with _Change(path, "append") as m:
        try:
            return m.run("append", lambda: m.append(records, total, progress, cancel))
        except InvalidRecordError as exc:
            raise InvalidRecordError(f"cannot append to {path}: {exc}; nothing was appended") from None


def overwrite(store: str | os.PathLike, changes: Mapping[int, Record | tuple]) -> ChangeReport:
    """Replace records: ``changes`` maps a record index to its new record (any shape, label, metadata)."""
    path = Path(store)
    if not isinstance(changes, Mapping):
        raise ImgtuiError(f"overwrite: expected a dict {{index: record}}, got {type(changes).__name__}")
    with _Change(path, "overwrite") as m:
        clean: dict[int, Record] = {}
        for key, rec in changes.items():
            i = _check_index(key, m.n, path)
            if i in clean:
                raise ImgtuiError(f"overwrite: record {i} is given twice (as {key!r})")
            clean[i] = m.check(validate_record(rec, i), i)
        return m.run("overwrite", lambda: m.overwrite(dict(sorted(clean.items()))))


def delete(store: str | os.PathLike, indices: Iterable[int]) -> ChangeReport:
    """Delete the records at ``indices``; the records behind them shift down (indices stay dense)."""
    path = Path(store)
    with _Change(path, "delete") as m:
        idx = sorted({_check_index(i, m.n, path) for i in indices})
        return m.run("delete", lambda: m.delete(idx))


def repair(store: str | os.PathLike) -> RepairReport:
    """Finish or roll back what an interrupted write or change left behind, and remove stale
    temporaries. Returns ``{"path", "backend", "actions": [one line each]}``; ``actions`` is
    empty when there was nothing to do. A damaged store (bit rot, missing files) is not repaired:
    ``verify`` names its bad records."""
    from . import detect_backend

    path = Path(store)
    with WriterLock(path, "repair"):
        actions = clean_stale(path)
        if not path.exists():
            raise StoreNotFoundError(f"{path}: no such store" + (f" ({'; '.join(actions)})" if actions else ""))
        if is_sharded(path):
            raise StoreError(f"{path} is a sharded store: repair its shards one by one")
        backend = detect_backend(path)
        cls = get_backend(backend).mutator_cls
        if cls is not None:
            actions += cls.repair(path)
    return RepairReport(path=str(path), backend=backend, actions=actions)


def leftovers(store: str | os.PathLike) -> list[str]:
    """What an interrupted write or change left beside or inside ``store`` (one line each), without
    changing anything: ``info`` and ``verify`` show it, ``repair`` removes it."""
    from . import detect_backend

    path = Path(store)
    if is_locked(path):
        return []  # a writer is at work: its temporaries are not leftovers
    out = [f"{t.name}: temporary of an interrupted write" for t in stale_temporaries(path)]
    try:
        cls = get_backend(detect_backend(path)).mutator_cls
    except ImgtuiError:
        return out
    if cls is not None:
        out += cls.leftovers(path)
    return out


# ---------------------------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------------------------


def _prepare_path(path: Path) -> None:
    if not path.exists():
        raise StoreNotFoundError(f"{path}: no such store")
    if is_sharded(path):
        raise StoreError(
            f"{path} is a sharded store: change its shards one by one, or convert it into a single store"
        )


class _Change:
    """The frame of every change: the store's writer lock for the whole change, leftovers of
    interrupted changes finished or rolled back first, then the backend's mutator."""

    def __init__(self, path: Path, op: str) -> None:
        self.path = path
        self.op = op
        self.lock = WriterLock(path, op)

    def __enter__(self) -> "_Mutator":
        from . import open_store

        _prepare_path(self.path)
        self.lock.acquire()
        try:
            clean_stale(self.path)
            cls = None
            try:
                with open_store(self.path) as r:
                    backend = r.backend
            except ImgtuiError:
                from . import detect_backend

                backend = detect_backend(self.path)
                cls = _mutator(backend)
                if not cls.repair(self.path):
                    raise
            if backend.startswith("article-"):
                from .article import article_text

                raise StoreError(
                    f"{self.path} is an {article_text(backend)}: imgtui reads it but does not change it; "
                    f"bring it in first (imgtui convert {self.path} NEW -b lmdb) and change the new store"
                )
            cls = cls or _mutator(backend)
            cls.repair(self.path)
            with open_store(self.path) as r:
                manifest, n = dict(r.manifest), len(r)
            return cls(self.path, manifest, n)
        except BaseException:
            self.lock.release()
            raise

    def __exit__(self, *exc: Any) -> None:
        self.lock.release()


def _mutator(backend: str) -> type["_Mutator"]:
    cls = get_backend(backend).mutator_cls
    if cls is None:
        raise StoreError(f"a {backend} store cannot be changed")
    return cls


def _same_path(a: Any, b: Path) -> bool:
    try:
        return Path(a).resolve() == b.resolve()
    except OSError:
        return False


def _known_len(records: Any) -> int | None:
    try:
        return int(len(records))
    except (TypeError, ValueError):
        return None


def _check_index(i: Any, n: int, path: Path) -> int:
    if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
        raise ImgtuiError(f"{path}: record index must be an integer, got {i!r}")
    j = int(i) + (n if int(i) < 0 else 0)
    if not 0 <= j < n:
        raise IndexError(f"record index {int(i)} out of range for a store of {n:,} records")
    return j


def _batches(records: Iterable, size: int, max_bytes: int = BATCH_BYTES) -> Iterator[list]:
    """Lists of at most ``size`` records and about ``max_bytes`` of pixels (a change of large
    volumes holds one or a few at a time, not 256)."""
    batch: list = []
    nbytes = 0
    for r in records:
        batch.append(r)
        img = r.image if isinstance(r, Record) else (r[0] if isinstance(r, tuple) and r else None)
        nbytes += int(getattr(img, "nbytes", 0) or 0)
        if len(batch) >= size or nbytes >= max_bytes:
            yield batch
            batch, nbytes = [], 0
    if batch:
        yield batch


def _stat_items(recs: list[Record]) -> tuple[list, list, list, list]:
    return ([r.image.shape for r in recs], [r.image.dtype for r in recs],
            [r.image.nbytes for r in recs], [r.label for r in recs])


def _stats_remove(stats: WriteStats, shapes: list, dtypes: list, nbytes: list, labels: list) -> None:
    """Take records out of the running statistics (the inverse of ``WriteStats.add_many``)."""
    stats.count -= len(labels)
    stats.raw_bytes -= int(sum(nbytes))
    for shape, dt, label in zip(shapes, dtypes, labels):
        for counter, key, truncated in (
            (stats.shapes, "x".join(map(str, shape)), stats.shapes_truncated),
            (stats.dtypes, np.dtype(dt).name, False),
            (stats.labels, str(label), stats.labels_truncated),
        ):
            if key in counter:
                counter[key] -= 1
                if counter[key] <= 0 and not truncated:
                    del counter[key]
    if stats.count == 0:
        stats.label_kinds = set()
    # a label kind that disappeared entirely is found by the mutators (they see every label)


def _new_manifest(old: dict, stats: WriteStats, **extra: Any) -> dict:
    m = dict(old)
    m.update(stats.to_dict())
    if isinstance(m.get("format_version"), int):  # records of new dtypes: older imgtui must say "upgrade"
        m["format_version"] = max(m["format_version"], format_version_for(stats.dtypes, stats.volumes))
    m["label_kinds"] = sorted(stats.label_kinds) if stats.count else []
    m["modified"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    m.update(extra)
    return m


class _Mutator:
    backend = ""

    def __init__(self, path: Path, manifest: dict, n: int) -> None:
        self.path = path
        self.manifest = manifest
        self.n = n
        self.stats = WriteStats.from_dict(manifest)
        #: the store's own checksum algorithm (old stores: crc32), for the records a change writes
        self.crc = checksum_fn(manifest.get("checksum"))
        self.in_place = True
        self.how = ""
        self.done = 0

    def check(self, rec: Record, index: int) -> Record:
        """Backend limits on a validated record (raise InvalidRecordError)."""
        return rec

    @classmethod
    def repair(cls, path: Path) -> list[str]:
        """Finish or roll back an interrupted change inside the store (the caller holds the lock);
        one line per action."""
        return []

    @classmethod
    def leftovers(cls, path: Path) -> list[str]:
        """What ``repair`` would do, without doing it."""
        return []

    def _valid(self, raw: Any, index: int) -> Record:
        return self.check(validate_record(raw, index), index)

    def run(self, op: str, fn: Callable[[], None]) -> ChangeReport:
        before = path_size(self.path)
        t0 = time.perf_counter()
        try:
            fn()
        except (OSError, StoreFullError) as exc:
            if isinstance(exc, StoreFullError) or is_disk_full_error(exc):
                raise StoreFullError(
                    f"disk full while changing {self.path} ({op}): no space left on device; "
                    f"the store was left as it was ({self.n:,} records)"
                ) from None
            raise
        seconds = time.perf_counter() - t0
        return ChangeReport(operation=op, backend=self.backend, path=str(self.path), records=self.done,
                            count=self.stats.count, seconds=seconds, in_place=self.in_place, how=self.how,
                            bytes_before=before, bytes_after=path_size(self.path))


def _cancelled(cancel: CancelFn | None) -> None:
    if cancel is not None and cancel():
        from ..errors import CancelledError

        raise CancelledError("append cancelled; the store was left as it was")


_first_line = first_line  # (the mutators import it from here)


class RewriteMutator(_Mutator):
    """Changes for a backend that cannot change its files in place: the store is written anew
    beside itself with the change applied (bounded memory: record by record) and switched in by
    the writer's atomic replace, so a kill leaves the old store or the new one. A backend uses it
    with ``mutator_cls = RewriteMutator`` (or a subclass that names its writer options)."""

    def __init__(self, path: Path, manifest: dict, n: int) -> None:
        super().__init__(path, manifest, n)
        self.backend = str(manifest.get("backend", ""))
        self.in_place = False

    def writer_options(self) -> dict:
        """Options for the new store's writer: the old store's."""
        return dict(self.manifest.get("options") or {})

    def _rewrite(self, records: Callable[[Any], Iterable[Record]], expected: int | None) -> None:
        from . import open_store

        cls = get_backend(self.backend)
        with open_store(self.path) as reader:
            w = cls.writer(self.path, overwrite=True, lock=False, expected_count=expected, **self.writer_options())
            with w:
                for rec in records(reader):
                    w.write(rec)
        self.stats = w.stats

    def append(self, records, total, progress, cancel) -> None:
        def source(reader: Any) -> Iterator[Record]:
            yield from reader
            i = self.n
            for batch in _batches(records, BATCH):
                recs = [self._valid(r, i + k) for k, r in enumerate(batch)]
                i += len(recs)
                yield from recs
                self.done += len(recs)
                if progress is not None:
                    progress(self.done, total)
                _cancelled(cancel)

        self._rewrite(source, None if total is None else self.n + total)
        self.how = f"rewrote the store with {self.done:,} records appended, switched in atomically"

    def overwrite(self, changes: dict[int, Record]) -> None:
        def source(reader: Any) -> Iterator[Record]:
            for i, rec in enumerate(reader):
                yield changes.get(i, rec)

        self._rewrite(source, self.n)
        self.done = len(changes)
        self.how = f"rewrote the store with {len(changes):,} records replaced, switched in atomically"

    def delete(self, idx: list[int]) -> None:
        gone = set(idx)

        def source(reader: Any) -> Iterator[Record]:
            for i, rec in enumerate(reader):
                if i not in gone:
                    yield rec

        self._rewrite(source, self.n - len(gone))
        self.done = len(idx)
        self.how = f"rewrote the store without the {len(idx):,} deleted records, switched in atomically"
