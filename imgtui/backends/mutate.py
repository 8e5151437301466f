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

import csv
import io
import json
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..errors import (
    CorruptStoreError,
    ImgtuiError,
    InvalidRecordError,
    StoreError,
    StoreNotFoundError,
)
from ..records import Record, checksum, validate_record
from .base import WriteStats, atomic_write_text, fsync_dir, path_size, remove_path

ProgressFn = Callable[[int, "int | None"], None]
CancelFn = Callable[[], bool]

#: records validated and written per step
BATCH = 256
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
) -> dict:
    """Append ``records`` (an iterable of Records or (image, label[, metadata]) tuples) to ``store``.

    All or nothing: a record that cannot be stored (or a cancel) rolls the append back.
    """
    path, backend, manifest, n = _prepare(store)
    src = getattr(records, "path", None)
    if src is not None and getattr(records, "kind", None) == "store" and _same_path(src, path):
        raise StoreError(f"cannot append {path} to itself: the store is read while it changes; copy it first")
    total = _known_len(records)
    m = _MUTATORS[backend](path, manifest, n)
    try:
        return m.run("append", lambda: m.append(records, total, progress, cancel))
    except InvalidRecordError as exc:
        raise InvalidRecordError(f"cannot append to {path}: {exc}; nothing was appended") from None


def overwrite(store: str | os.PathLike, changes: Mapping[int, Record | tuple]) -> dict:
    """Replace records: ``changes`` maps a record index to its new record (any shape, label, metadata)."""
    path, backend, manifest, n = _prepare(store)
    if not isinstance(changes, Mapping):
        raise ImgtuiError(f"overwrite: expected a dict {{index: record}}, got {type(changes).__name__}")
    clean: dict[int, Record] = {}
    m = _MUTATORS[backend](path, manifest, n)
    for key, rec in changes.items():
        i = _check_index(key, n, path)
        if i in clean:
            raise ImgtuiError(f"overwrite: record {i} is given twice (as {key!r})")
        clean[i] = m.check(validate_record(rec, i), i)
    return m.run("overwrite", lambda: m.overwrite(dict(sorted(clean.items()))))


def delete(store: str | os.PathLike, indices: Iterable[int]) -> dict:
    """Delete the records at ``indices``; the records behind them shift down (indices stay dense)."""
    path, backend, manifest, n = _prepare(store)
    idx = sorted({_check_index(i, n, path) for i in indices})
    m = _MUTATORS[backend](path, manifest, n)
    return m.run("delete", lambda: m.delete(idx))


# ---------------------------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------------------------


def _prepare(store: str | os.PathLike) -> tuple[Path, str, dict, int]:
    """Check the store opens (complete, known backend) and return (path, backend, manifest, count)."""
    from . import open_store
    from .sharded import is_sharded

    path = Path(store)
    if not path.exists():
        raise StoreNotFoundError(f"{path}: no such store")
    if is_sharded(path):
        raise StoreError(
            f"{path} is a sharded store: change its shards one by one, or convert it into a single store"
        )
    with open_store(path) as r:
        if r.backend not in _MUTATORS:
            raise StoreError(f"{path}: a {r.backend} store cannot be changed")
        return path, r.backend, dict(r.manifest), len(r)


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


def _batches(records: Iterable, size: int) -> Iterator[list]:
    batch = []
    for r in records:
        batch.append(r)
        if len(batch) >= size:
            yield batch
            batch = []
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
        self.in_place = True
        self.how = ""
        self.done = 0

    def check(self, rec: Record, index: int) -> Record:
        """Backend limits on a validated record (raise InvalidRecordError)."""
        return rec

    def _valid(self, raw: Any, index: int) -> Record:
        return self.check(validate_record(raw, index), index)

    def run(self, op: str, fn: Callable[[], None]) -> dict:
        before = path_size(self.path)
        t0 = time.perf_counter()
        fn()
        seconds = time.perf_counter() - t0
        return {
            "operation": op,
            "backend": self.backend,
            "path": str(self.path),
            "records": self.done,
            "count": self.stats.count,
            "seconds": seconds,
            "in_place": self.in_place,
            "how": self.how,
            "bytes_before": before,
            "bytes_after": path_size(self.path),
        }


def _cancelled(cancel: CancelFn | None) -> None:
    if cancel is not None and cancel():
        from ..errors import CancelledError

        raise CancelledError("append cancelled; the store was left as it was")


# ---------------------------------------------------------------------------------------------
# disk
# ---------------------------------------------------------------------------------------------


class _DiskMutator(_Mutator):
    backend = "disk"

    def __init__(self, path: Path, manifest: dict, n: int) -> None:
        super().__init__(path, manifest, n)
        from . import disk

        self.d = disk
        self.table = path / disk.TABLE
        self.mpath = path / disk.MANIFEST
        with open(self.table, encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f))
        self.header, self.rows = rows[0], rows[1:]
        if len(self.rows) != n:
            raise CorruptStoreError(f"{self.table} has {len(self.rows):,} rows, the manifest says {n:,}")
        self.level = int((manifest.get("options") or {}).get("png_level", disk.DEFAULT_PNG_LEVEL))

    # -- the manifest marks the store complete -----------------------------------------------
    def _mark_incomplete(self) -> None:
        os.unlink(self.mpath)
        fsync_dir(self.path)

    def _write_manifest(self, manifest: dict) -> None:
        atomic_write_text(self.mpath, json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")

    def _write_table(self, rows: list[list]) -> None:
        buf = io.StringIO(newline="")
        w = csv.writer(buf)
        w.writerow(self.header)
        w.writerows(rows)
        atomic_write_text(self.table, buf.getvalue())

    def _fresh_name(self, i: int, used: set[str]) -> str:
        name = self.d.image_name(i)
        k = 0
        while name in used:
            k += 1
            name = self.d.image_name(i)[: -len(".png")] + f"-{k}.png"
        used.add(name)
        return name

    def _row(self, i: int, name: str, rec: Record, crc: int) -> list:
        lab = rec.label
        return [str(i), name, str(lab), "int" if isinstance(lab, int) else "str",
                "x".join(map(str, rec.image.shape)), str(rec.image.dtype), str(crc), rec.meta_json]

    @staticmethod
    def _row_items(rows: list[list]) -> tuple[list, list, list, list]:
        shapes, dtypes, nbytes, labels = [], [], [], []
        for r in rows:
            shape = tuple(int(x) for x in r[4].split("x"))
            dt = np.dtype(r[5])
            shapes.append(shape)
            dtypes.append(dt)
            nbytes.append(int(np.prod(shape)) * dt.itemsize)
            labels.append(int(r[2]) if r[3] == "int" else r[2])
        return shapes, dtypes, nbytes, labels

    def _fix_kinds(self, rows: list[list]) -> None:
        if len(self.stats.label_kinds) > 1:
            self.stats.label_kinds = {r[3] for r in rows}

    def _write_pngs(self, items: list[tuple[str, np.ndarray]]) -> None:
        """Encode and write PNGs (2 threads: zlib releases the GIL)."""
        for name, _ in items:
            os.makedirs(os.path.dirname(name), exist_ok=True)
        if len(items) < 16:
            self.d._encode_and_write(items, self.level)
            return
        from concurrent.futures import ThreadPoolExecutor

        half = (len(items) + 1) // 2
        with ThreadPoolExecutor(2) as pool:
            for fut in [pool.submit(self.d._encode_and_write, items[a : a + half], self.level) for a in (0, half)]:
                fut.result()

    def append(self, records, total, progress, cancel) -> None:
        used = {r[1] for r in self.rows}
        old_size = self.table.stat().st_size
        created: list[str] = []
        root = str(self.path)
        self._mark_incomplete()
        try:
            with open(self.table, "a", encoding="utf-8", newline="") as fh:
                w = csv.writer(fh)
                i = self.n
                for batch in _batches(records, BATCH):
                    recs = [self._valid(r, i + k) for k, r in enumerate(batch)]
                    items, rows = [], []
                    for rec in recs:
                        name = self._fresh_name(i, used)
                        items.append((os.path.join(root, name), rec.image))
                        rows.append(self._row(i, name, rec, checksum(rec.image)))
                        i += 1
                    created.extend(p for p, _ in items)
                    self._write_pngs(items)
                    w.writerows(rows)
                    fh.flush()
                    self.stats.add_many(*_stat_items(recs))
                    self.done += len(recs)
                    if progress is not None:
                        progress(self.done, total)
                    _cancelled(cancel)
                os.fsync(fh.fileno())
            self._write_manifest(_new_manifest(self.manifest, self.stats))
        except BaseException:
            for p in created:
                remove_path(p)
            os.truncate(self.table, old_size)
            self._write_manifest(self.manifest)
            raise
        self.how = f"appended {self.done:,} records as new PNG files and rows of records.csv"

    def overwrite(self, changes: dict[int, Record]) -> None:
        used = {r[1] for r in self.rows}
        old = self._row_items([self.rows[i] for i in changes])
        rows = [list(r) for r in self.rows]
        items, stale = [], []
        for i, rec in changes.items():
            name = self._fresh_name(i, used)
            items.append((os.path.join(str(self.path), name), rec.image))
            stale.append(os.path.join(str(self.path), rows[i][1]))
            rows[i] = self._row(i, name, rec, checksum(rec.image))
        self._mark_incomplete()
        try:
            self._write_pngs(items)
            self._write_table(rows)
        except BaseException:
            for p, _ in items:
                remove_path(p)
            self._write_manifest(self.manifest)
            raise
        for p in stale:
            remove_path(p)
        _stats_remove(self.stats, *old)
        self.stats.add_many(*_stat_items(list(changes.values())))
        self._fix_kinds(rows)
        self._write_manifest(_new_manifest(self.manifest, self.stats))
        self.done = len(changes)
        self.how = (f"wrote {len(changes):,} new PNG files, swapped records.csv atomically and removed "
                    f"the {len(changes):,} old files")

    def delete(self, idx: list[int]) -> None:
        gone = set(idx)
        old = self._row_items([self.rows[i] for i in idx])
        keep = [r for i, r in enumerate(self.rows) if i not in gone]
        rows = [[str(k), *r[1:]] for k, r in enumerate(keep)]
        self._mark_incomplete()
        try:
            self._write_table(rows)
        except BaseException:
            self._write_manifest(self.manifest)
            raise
        for i in idx:
            remove_path(self.path / self.rows[i][1])
        _stats_remove(self.stats, *old)
        self._fix_kinds(rows)
        self._write_manifest(_new_manifest(self.manifest, self.stats))
        self.done = len(idx)
        self.how = (f"removed {len(idx):,} PNG files and their rows of records.csv; the records behind "
                    "them shift down, no other file is renamed")




# ---------------------------------------------------------------------------------------------
# LMDB
# ---------------------------------------------------------------------------------------------


class _Packer:
    """Groups records into blocks the way LmdbWriter does (B records, or block_bytes)."""

    def __init__(self, options: dict, rpb: int, first: int) -> None:
        self.options = options
        self.rpb = rpb
        self.first = first
        self.pending: list[tuple[Record, int]] = []
        self.pending_bytes = 0
        self.blocks: list[tuple[bytes, bytes, bytes]] = []
        self.size = 0

    def add(self, rec: Record, crc: int) -> None:
        limit = self.options["block_bytes"]
        nb = rec.image.nbytes
        if self.rpb == 0:
            self.rpb = max(1, limit // max(1, nb))
        if self.pending and self.pending_bytes + nb > limit:
            self.close()
        self.pending.append((rec, crc))
        self.pending_bytes += nb
        if len(self.pending) >= self.rpb:
            self.close()

    def close(self) -> None:
        if not self.pending:
            return
        from .lmdb_store import pack_block

        recs = [r for r, _ in self.pending]
        block = pack_block(recs, [c for _, c in self.pending], self.first, self.options)
        self.first += len(recs)
        self.pending, self.pending_bytes = [], 0
        self.blocks.append(block)
        self.size += len(block[1])

    def take(self) -> list[tuple[bytes, bytes, bytes]]:
        out, self.blocks, self.size = self.blocks, [], 0
        return out


class _LmdbMutator(_Mutator):
    backend = "lmdb"

    def __init__(self, path: Path, manifest: dict, n: int) -> None:
        super().__init__(path, manifest, n)
        from . import lmdb_store

        self.L = lmdb_store
        self.options = {**lmdb_store._OPTION_DEFAULTS, **(manifest.get("options") or {})}
        self.rpb = int(manifest.get("records_per_block") or 0)
        self.build_path = path  # for LmdbWriter._retry_grow
        self._env = None
        self.txns = 0

    def check(self, rec: Record, index: int) -> Record:
        L = self.L
        if rec.image.nbytes + L.HEADER.size + L.ENTRY.itemsize > L.MAX_VALUE_BYTES:
            raise InvalidRecordError(
                f"record {index}: image of {rec.image.nbytes:,} bytes is too large for one LMDB value; "
                "use the disk or hdf5 backend"
            )
        return rec

    # -- environment -----------------------------------------------------------------------
    def _open(self) -> None:
        import lmdb

        L = self.L
        me = str(self.path.resolve())
        if any(k[0] == me for k in L._ENVS):
            raise StoreError(f"{self.path} is open for reading in this process: close its readers before changing it")
        size = (self.path / "data.mdb").stat().st_size
        self._map_size = max(L.DEFAULT_MAP_SIZE, 2 * size)
        try:
            self._env = lmdb.open(
                str(self.path), subdir=True, map_size=self._map_size, max_dbs=L.MAX_DBS, create=False,
                readahead=False, meminit=False, writemap=False,
            )
            self.dbb = self._env.open_db(L.DB_BLOCKS, create=False)
            self.dbl = self._env.open_db(L.DB_LABELS, create=False)
            self.dbm = self._env.open_db(L.DB_META, create=False)
        except lmdb.Error as exc:
            self._close()
            raise StoreError(f"{self.path}: cannot open the LMDB store for writing ({_first_line(exc)})") from None
        # a snapshot of the store as it was: read from it, and roll back to it on an error
        self.snap = self._env.begin(buffers=True)

    def _close(self) -> None:
        env, self._env = self._env, None
        if env is None:
            return
        snap = getattr(self, "snap", None)
        if snap is not None:
            snap.abort()
            self.snap = None
        used = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
        env.sync(True)
        env.close()
        data = self.path / "data.mdb"
        if data.stat().st_size > used:  # as the writer does: no tail of unused pages
            os.truncate(data, used)

    def _grow(self, fn: Callable[[], None]) -> None:
        self.L.LmdbWriter._retry_grow(self, fn)
        self.txns += 1

    def _txn(self, fn: Callable[[Any], None]) -> None:
        def run() -> None:
            with self._env.begin(write=True, buffers=True) as txn:
                fn(txn)

        self._grow(run)

    def _block_index(self) -> tuple[list[int], list[int]]:
        firsts, counts = [], []
        for k, v in self.snap.cursor(db=self.dbb):
            firsts.append(int.from_bytes(bytes(k), "big"))
            counts.append(self.L.HEADER.unpack_from(v, 0)[1])
        return firsts, counts

    def _unpack(self, first: int) -> list[tuple[Record, int]]:
        k = self.L._key(first)
        return self.L.unpack_block(self.snap.get(k, db=self.dbb), self.snap.get(k, db=self.dbl), first)

    def _delete_from(self, txn: Any, first: int) -> None:
        for db in (self.dbb, self.dbl):
            cur = txn.cursor(db=db)
            if cur.set_range(self.L._key(first)):
                while cur.delete():
                    pass

    def _put(self, blocks: list[tuple[bytes, bytes, bytes]], clear: Callable[[Any], None] | None = None) -> Callable[[Any], None]:
        def fn(txn: Any) -> None:
            if clear is not None:
                clear(txn)
            for key, value, labels in blocks:
                txn.put(key, value, db=self.dbb)
                txn.put(key, labels, db=self.dbl)

        return fn

    def _manifest_bytes(self, txn: Any) -> bytes:
        L = self.L
        counts = [L.HEADER.unpack_from(v, 0)[1] for _, v in txn.cursor(db=self.dbb)]
        uniform = all(c == self.rpb for c in counts[:-1])
        if len(self.stats.label_kinds) > 1:  # does each kind of label still occur?
            kinds = set()
            for _, v in txn.cursor(db=self.dbl):
                kinds.update("int" if isinstance(lab, int) else "str" for lab, _ in json.loads(bytes(v)))
            self.stats.label_kinds = kinds
        m = _new_manifest(self.manifest, self.stats, records_per_block=self.rpb, uniform_blocks=uniform,
                          blocks=len(counts))
        return json.dumps(m, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    def _commit(self, groups: Iterator[Callable[[Any], None]], touched: Callable[[], int]) -> None:
        """Run the write steps ``groups``; the complete manifest goes in last.

        One step: one transaction with the manifest (atomic: a crash leaves the old or the new
        store). More: the first transaction also deletes the manifest (a crash leaves an incomplete
        store), and an error rolls every block from ``touched()`` on back to the snapshot.
        """
        L = self.L
        it = iter(groups)
        first = next(it, None)
        second = next(it, None) if first is not None else None
        if second is None:
            # everything was read: drop the snapshot so that this transaction can reuse the pages
            # earlier changes freed (a snapshot pins them); one transaction needs no rollback
            self.snap.abort()
            self.snap = None

            def one(txn: Any) -> None:
                if first is not None:
                    first(txn)
                txn.put(L.MANIFEST_KEY, self._manifest_bytes(txn), db=self.dbm)

            self._txn(one)
            return

        def begin(txn: Any) -> None:
            txn.delete(L.MANIFEST_KEY, db=self.dbm)
            first(txn)

        self._txn(begin)
        try:
            g = second
            while g is not None:
                self._txn(g)
                g = next(it, None)
            self._env.sync(True)
            self._txn(lambda txn: txn.put(L.MANIFEST_KEY, self._manifest_bytes(txn), db=self.dbm))
        except BaseException:
            start = touched()
            old_manifest = json.dumps(self.manifest, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

            def rollback(txn: Any) -> None:
                self._delete_from(txn, start)
                for db in (self.dbb, self.dbl):
                    cur = self.snap.cursor(db=db)
                    if cur.set_range(L._key(start)):
                        for k, v in cur:
                            txn.put(bytes(k), bytes(v), db=db)
                txn.put(L.MANIFEST_KEY, old_manifest, db=self.dbm)

            try:
                self._txn(rollback)
            except Exception:
                pass  # the store stays incomplete: no wrong pixels, and the error below says why
            raise

    def _steps(self, op: Callable[[], None]) -> None:
        self._open()
        try:
            op()
        finally:
            self._close()

    # -- operations --------------------------------------------------------------------------
    def append(self, records, total, progress, cancel) -> None:
        self._steps(lambda: self._append(records, total, progress, cancel))
        if self.done:
            self.how = (f"appended {self.done:,} records as new blocks ({self.txns} write transaction"
                        f"{'s' if self.txns > 1 else ''}{', atomic' if self.txns == 1 else ''})")
        else:
            self.how = "nothing to append"

    def _append(self, records, total, progress, cancel) -> None:
        firsts, counts = self._block_index()
        start = self.n
        packer = _Packer(self.options, self.rpb, self.n)
        if firsts and self.rpb and counts[-1] < self.rpb:
            start = firsts[-1]  # re-pack the last, partial block together with the first new records
            packer.first = start
            carry = self._unpack(start)
        else:
            carry = []

        def gen() -> Iterator[Callable[[Any], None]]:
            i = self.n
            for rec, crc in carry:
                packer.add(rec, crc)
            for batch in _batches(records, BATCH):
                recs = [self._valid(r, i + k) for k, r in enumerate(batch)]
                i += len(recs)
                for rec in recs:
                    packer.add(rec, checksum(rec.image))
                self.stats.add_many(*_stat_items(recs))
                self.done += len(recs)
                if progress is not None:
                    progress(self.done, total)
                _cancelled(cancel)
                if packer.size >= TXN_BYTES:
                    yield self._put(packer.take())
            if self.done:
                packer.close()
                self.rpb = packer.rpb
                blocks = packer.take()
                if blocks:
                    yield self._put(blocks)

        self._commit(gen(), lambda: start)

    def overwrite(self, changes: dict[int, Record]) -> None:
        self._steps(lambda: self._overwrite(changes))
        self.done = len(changes)
        self.how = (f"re-packed the {self._nblocks:,} block(s) holding the {len(changes):,} records under the same keys "
                    f"({self.txns} write transaction{'s' if self.txns > 1 else ', atomic'}; LMDB writes changed pages "
                    "anew and reuses the freed ones later)")

    def _overwrite(self, changes: dict[int, Record]) -> None:
        import bisect

        firsts, _counts = self._block_index()
        by_block: dict[int, list[int]] = {}
        for i in changes:
            by_block.setdefault(firsts[bisect.bisect_right(firsts, i) - 1], []).append(i)
        self._nblocks = len(by_block)
        new_items = _stat_items(list(changes.values()))

        def gen() -> Iterator[Callable[[Any], None]]:
            blocks, size = [], 0
            old: list[Record] = []
            for first, idx in by_block.items():
                recs = self._unpack(first)
                for i in idx:
                    old.append(recs[i - first][0])
                    recs[i - first] = (changes[i], checksum(changes[i].image))
                block = self.L.pack_block([r for r, _ in recs], [c for _, c in recs], first, self.options)
                blocks.append(block)
                size += len(block[1])
                if size >= TXN_BYTES:
                    yield self._put(blocks)
                    blocks, size = [], 0
            _stats_remove(self.stats, *_stat_items(old))
            self.stats.add_many(*new_items)
            if blocks:
                yield self._put(blocks)

        self._commit(gen(), lambda: min(by_block))

    def delete(self, idx: list[int]) -> None:
        self._steps(lambda: self._delete(idx))
        self.done = len(idx)
        self.how = (f"re-packed the {self._moved:,} records from record {self._start:,} on into new blocks (keys shift) "
                    f"({self.txns} write transaction{'s' if self.txns > 1 else ', atomic'}; freed pages stay in "
                    "data.mdb for reuse, the file does not shrink)")

    def _delete(self, idx: list[int]) -> None:
        import bisect

        firsts, _counts = self._block_index()
        if not idx:
            self._moved, self._start = 0, self.n
            self._commit(iter(()), lambda: self.n)
            return
        start = firsts[bisect.bisect_right(firsts, idx[0]) - 1]
        self._start = start
        gone = set(idx)
        packer = _Packer(self.options, self.rpb, start)

        def gen() -> Iterator[Callable[[Any], None]]:
            old: list[Record] = []
            moved = 0
            clear = lambda txn: self._delete_from(txn, start)  # noqa: E731
            cur = self.snap.cursor(db=self.dbb)
            cur.set_range(self.L._key(start))
            for k, _v in cur:
                first = int.from_bytes(bytes(k), "big")
                for j, (rec, crc) in enumerate(self._unpack(first)):
                    if first + j in gone:
                        old.append(rec)
                    else:
                        packer.add(rec, crc)
                        moved += 1
                if packer.size >= TXN_BYTES:
                    yield self._put(packer.take(), clear)
                    clear = None
            packer.close()
            self._moved = moved
            _stats_remove(self.stats, *_stat_items(old))
            yield self._put(packer.take(), clear)

        self._commit(gen(), lambda: start)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ---------------------------------------------------------------------------------------------
# HDF5
# ---------------------------------------------------------------------------------------------

_HDF5_CLASSES: dict[str, type] = {}


def _hdf5_classes() -> dict[str, type]:
    """Writer subclasses (built on first use: h5py is imported only when an HDF5 store changes)."""
    if _HDF5_CLASSES:
        return _HDF5_CLASSES
    from . import hdf5_store as H

    class Appender(H.Hdf5Writer):
        """The HDF5 writer resumed on an existing, complete file: its write path, its migrations
        (fixed -> variable shapes, int -> mixed labels, contiguous -> rewritten) and its manifest."""

        def __init__(self, path: Path, manifest: dict, grow_to: int | None) -> None:
            opts = dict(manifest.get("options") or {})
            h = manifest.get("hdf5") or {}
            keep = {k: opts.get(k) for k in ("layout", "compression", "level", "chunk_records")}
            super().__init__(path, overwrite=True, expected_count=grow_to, **keep)
            self.build_path = self.path
            self._rewrite_path = self.path.with_name(f"{self.path.name}.imgtui-rewrite-{os.getpid()}")
            self.requested_options = h.get("requested_options", opts)
            self.notes = list(h.get("notes", []))
            self.first_note = len(self.notes)
            self.stats = WriteStats.from_dict(manifest)
            self.old_manifest = manifest
            self.grow_to = grow_to
            self.rewrites = 0
            self._label_mode = h.get("label_mode", "int")
            self._metadata_records = int(h.get("metadata_records", 0))
            self._f = _open_rw(H, self.path)
            f = self._f
            if "images" in f:
                ds = f["images"]
                self._kind = "fixed"
                self._shape = tuple(ds.shape[1:])
                self._dtype = ds.dtype
                self._layout = "chunked" if ds.chunks else "contiguous"
                self._alloc = int(ds.shape[0])
                rec_bytes = int(np.prod(self._shape)) * ds.dtype.itemsize
                self._chunk_records = ds.chunks[0] if ds.chunks else (
                    opts.get("chunk_records") or max(1, H.CHUNK_TARGET_BYTES // max(1, rec_bytes)))
            elif "images_flat" in f:
                self._kind = "variable"
            self._open = True
            if "complete" in f.attrs:  # from here on the store reads as incomplete
                del f.attrs["complete"]
            f.flush()

        def manifest(self, **extra: Any) -> dict:
            m = super().manifest(**extra)
            m["created"] = self.old_manifest.get("created", m["created"])
            m["modified"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            return m

        def _rewrite(self, n: int, kind: str, layout: str = "chunked", alloc: int | None = None) -> None:
            self.rewrites += 1
            super()._rewrite(n, kind, layout, alloc)

        def _write_batch(self, records: list[Record], checksums: list[int], start: int) -> None:
            k = len(records)
            if self._kind == "fixed" and self._layout == "contiguous" and start + k > self._alloc and all(
                r.image.shape == self._shape and r.image.dtype == self._dtype for r in records
            ):
                if self.grow_to is not None and self.grow_to >= start + k:
                    self.notes.append(
                        f"append: a contiguous dataset cannot grow; rewritten contiguous with room for {self.grow_to:,} records")
                    self._rewrite(start, kind="fixed", layout="contiguous", alloc=self.grow_to)
                else:
                    self.notes.append("append of unknown length: a contiguous dataset cannot grow; rewritten as chunked")
                    self._rewrite(start, kind="fixed", layout="chunked")
            super()._write_batch(records, checksums, start)

        def abort(self) -> None:
            """Roll back to the old records (never remove the store, unlike a new store's writer)."""
            if self._finished:
                return
            self._finished = True
            self._batch, self._checksums_batch = [], []
            try:
                n0 = int(self.old_manifest.get("count", 0))
                self._dsets.clear()
                if self._kind == "fixed" and self._layout == "contiguous" and self._alloc != n0:
                    self._rewrite(n0, kind="fixed", layout="contiguous", alloc=n0)
                f = self._f
                for name in ("images", "images_flat", "shapes", "dtypes", "labels", "label_is_int", "metadata", "checksums"):
                    if name in f and f[name].maxshape[0] is None and f[name].shape[0] > n0:
                        f[name].resize(n0, axis=0)
                self.stats = WriteStats.from_dict(self.old_manifest)
                self._metadata_records = int((self.old_manifest.get("hdf5") or {}).get("metadata_records", 0))
                self._finalize(self.manifest())
            except BaseException:
                self._close_on_error()  # left incomplete: it never returns wrong pixels

    class Rebuilder(H.Hdf5Writer):
        """A fresh file for a rewrite, keeping the old manifest's history (created, notes)."""

        def setup(self, manifest: dict, note: str) -> None:
            h = manifest.get("hdf5") or {}
            self.old_manifest = manifest
            self.requested_options = h.get("requested_options", self.requested_options)
            self.notes = list(h.get("notes", [])) + [note]

        def manifest(self, **extra: Any) -> dict:
            m = super().manifest(**extra)
            m["created"] = self.old_manifest.get("created", m["created"])
            m["modified"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            return m

    _HDF5_CLASSES.update(Appender=Appender, Rebuilder=Rebuilder)
    return _HDF5_CLASSES


def _open_rw(H: Any, path: Path) -> Any:
    import h5py

    try:
        return h5py.File(path, "r+", libver=H.LIBVER)
    except OSError as exc:
        raise StoreError(
            f"{path}: cannot open it for writing ({_first_line(exc)}); close every reader of the store first"
        ) from None


class _Hdf5Mutator(_Mutator):
    backend = "hdf5"

    def __init__(self, path: Path, manifest: dict, n: int) -> None:
        super().__init__(path, manifest, n)
        from . import hdf5_store

        self.H = hdf5_store
        self.h = manifest.get("hdf5") or {}

    def check(self, rec: Record, index: int) -> Record:
        self.H.Hdf5Writer._check_record(None, rec, index)  # type: ignore[arg-type]  (uses no state)
        return rec

    def append(self, records, total, progress, cancel) -> None:
        grow_to = None if total is None else self.n + total
        w = _hdf5_classes()["Appender"](self.path, self.manifest, grow_to)
        try:
            for batch in _batches(records, BATCH):
                for r in batch:
                    w.write(r)
                self.done += len(batch)
                if progress is not None:
                    progress(self.done, total)
                _cancelled(cancel)
            w.close()
        except BaseException:
            w.abort()
            raise
        self.stats = w.stats
        self.in_place = w.rewrites == 0
        if self.in_place:
            what = "variable-shape" if w._kind == "variable" else "chunked"
            self.how = f"appended {self.done:,} records by resizing the {what} datasets in place"
        else:
            self.how = "rewrote the file: " + "; ".join(w.notes[w.first_note :])

    # -- rewrite: a fresh file next to the store, swapped in when complete ---------------------
    def _rebuild(self, final_count: int, note: str, variable: bool, source: Callable[[Any], Iterator[Record]]) -> None:
        from . import hdf5_store as H

        tmp = self.path.with_name(f"{self.path.name}.imgtui-rewrite-{os.getpid()}")
        remove_path(tmp)
        opts = dict(self.manifest.get("options") or {})
        keep = {k: opts.get(k) for k in ("layout", "compression", "level", "chunk_records")}
        if keep.get("layout") not in ("contiguous", "chunked"):
            keep["layout"] = "chunked"
        w = _hdf5_classes()["Rebuilder"](tmp, expected_count=final_count, **keep)
        w.setup(self.manifest, note)
        reader = H.Hdf5Reader(self.path)
        try:
            with w:
                if variable:  # start in the variable-shape layout: no migration half-way
                    w._kind = "variable"
                    w._create_variable(w._f, 0)
                for rec in source(reader):
                    w.write(rec)
        finally:
            reader.close()
        os.replace(tmp, self.path)
        self.stats = w.stats
        self.in_place = False

    def overwrite(self, changes: dict[int, Record]) -> None:
        H = self.H
        kind = self.h.get("images_layout")
        mode = self.h.get("label_mode", "int")
        with H.Hdf5Reader(self.path) as r:
            old = r.get_many(list(changes))
            ds_shape = tuple(r._images.shape[1:]) if kind == "fixed" else None
            ds_dtype = r._images.dtype if kind == "fixed" else None
        new = list(changes.values())
        same_shape = kind == "variable" or all(x.image.shape == ds_shape and x.image.dtype == ds_dtype for x in new)
        labels_fit = mode == "mixed" or all(isinstance(x.label, int) == (mode == "int") for x in new)
        self.done = len(changes)
        if not (same_shape and labels_fit):
            why = ("a new shape does not fit the fixed-shape images dataset: migrated to the variable-shape layout"
                   if not same_shape else "a new label type does not fit the labels dataset")

            def source(reader: Any) -> Iterator[Record]:
                for start in range(0, self.n, 1024):
                    for k, rec in enumerate(reader.get_many(range(start, min(self.n, start + 1024)))):
                        yield changes.get(start + k, rec)

            self._rebuild(self.n, f"overwrite: {why}", kind == "variable" or not same_shape, source)
            self.how = f"rewrote the file ({why}; HDF5 cannot change a dataset's shape or type in place)"
            return
        f = _open_rw(H, self.path)
        try:
            if "complete" in f.attrs:
                del f.attrs["complete"]
            f.flush()
            meta_delta = 0
            for (i, rec), before in zip(changes.items(), old):
                if kind == "fixed":
                    f["images"][i] = rec.image
                else:
                    flat = np.empty(1, dtype=H._VLEN_U8)
                    flat[0] = H._raw_bytes(rec.image)
                    f["images_flat"].write_direct(flat, dest_sel=np.s_[i : i + 1])
                    shp = np.zeros(3, np.int64)
                    shp[: rec.image.ndim] = rec.image.shape
                    f["shapes"][i] = shp
                    f["dtypes"][i] = H.DTYPE_CODES[rec.image.dtype]
                if mode == "int":
                    f["labels"][i] = rec.label
                else:
                    f["labels"][i] = str(rec.label)
                    if mode == "mixed":
                        f["label_is_int"][i] = int(isinstance(rec.label, int))
                f["metadata"][i] = rec.meta_json if rec.metadata else ""
                f["checksums"][i] = checksum(rec.image)
                meta_delta += bool(rec.metadata) - bool(before.metadata)
            _stats_remove(self.stats, *_stat_items(old))
            self.stats.add_many(*_stat_items(new))
            if len(self.stats.label_kinds) > 1 and mode == "mixed":
                flags = f["label_is_int"][()]
                self.stats.label_kinds = {"int" if x else "str" for x in np.unique(flags)}
            h = dict(self.h)
            h["metadata_records"] = int(h.get("metadata_records", 0)) + meta_delta
            m = _new_manifest(self.manifest, self.stats, hdf5=h)
            f.attrs["manifest"] = json.dumps(m)
            f.flush()
            f.attrs["complete"] = np.uint8(1)
            f.flush()
        finally:
            f.close()
        where = "fixed-shape images dataset" if kind == "fixed" else "variable-shape datasets (new heap objects: the old bytes stay in the file)"
        self.how = f"overwrote {len(changes):,} records in place in the {where}"

    def delete(self, idx: list[int]) -> None:
        gone = set(idx)
        self.done = len(idx)
        kind = self.h.get("images_layout")

        def source(reader: Any) -> Iterator[Record]:
            for start in range(0, self.n, 1024):
                for k, rec in enumerate(reader.get_many(range(start, min(self.n, start + 1024)))):
                    if start + k not in gone:
                        yield rec

        self._rebuild(self.n - len(gone), f"delete: {len(gone):,} records removed by a rewrite", kind == "variable", source)
        self.how = (f"rewrote the file without the {len(gone):,} deleted records (HDF5 cannot take rows out of a "
                    "dataset nor give freed space back to the file system in place)")


_MUTATORS: dict[str, type[_Mutator]] = {"disk": _DiskMutator, "lmdb": _LmdbMutator, "hdf5": _Hdf5Mutator}
