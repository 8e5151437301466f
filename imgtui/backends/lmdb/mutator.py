"""Append, overwrite and delete on an LMDB store."""

from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ...errors import CorruptStoreError, InvalidRecordError, StoreError
from ...records import Record, checksum
from ..base import WriteStats, atomic_write_text, fsync_dir, remove_path
from ..mutate import (
    BATCH,
    TXN_BYTES,
    _batches,
    _cancelled,
    _first_line,
    _Mutator,
    _new_manifest,
    _stat_items,
    _stats_remove,
)


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
        from .store import pack_block

        recs = [r for r, _ in self.pending]
        block = pack_block(recs, [c for _, c in self.pending], self.first, self.options)
        self.first += len(recs)
        self.pending, self.pending_bytes = [], 0
        self.blocks.append(block)
        self.size += len(block[1])

    def take(self) -> list[tuple[bytes, bytes, bytes]]:
        out, self.blocks, self.size = self.blocks, [], 0
        return out


class LmdbMutator(_Mutator):
    backend = "lmdb"

    def __init__(self, path: Path, manifest: dict, n: int) -> None:
        super().__init__(path, manifest, n)
        from . import store as lmdb_store

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


