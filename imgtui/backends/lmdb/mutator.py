"""Append, overwrite and delete on an LMDB store, crash-safe.

LMDB commits a write transaction atomically, and readers keep the snapshot they started with
(they hold the reader lock, see ``LmdbReader``), so the design only has to make the *switch* one
transaction:

- append writes its new blocks under keys >= the old record count, in as many transactions as it
  needs (memory stays bounded), then writes the new manifest (the new count) in the last one. The
  last, partial block of the old store is left as it is. Until that last transaction the manifest
  says the old count and readers never look past it; a kill leaves unused blocks past the end,
  which the next change or ``imgtui repair`` deletes.
- overwrite and delete re-pack the blocks they touch and write the manifest in one transaction:
  old store or new store, nothing between. The map is grown before the transaction (and the
  transaction retried with a bigger map if LMDB still finds it full).
"""

from __future__ import annotations

import bisect
import json
import os
from pathlib import Path
from typing import Any, Callable

import lmdb

from ...errors import InvalidRecordError, StoreError, StoreFullError
from ...records import LabelDigest, Record
from ..base import WriteStats, disk_nearly_full
from ..safety import fault_point
from ..mutate import BATCH, _batches, _cancelled, _first_line, _Mutator, _new_manifest, _stat_items, _stats_remove
from . import store as L
from .store import pack_block, unpack_block

#: block bytes per write transaction of an append
TXN_BYTES = 64 << 20


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
        self.options = {**L._OPTION_DEFAULTS, **(manifest.get("options") or {})}
        self.rpb = int(manifest.get("records_per_block") or 0)
        self._env = None
        self.snap = None
        self.txns = 0

    def check(self, rec: Record, index: int) -> Record:
        if rec.image.nbytes + L.HEADER.size + L.ENTRY.itemsize > L.MAX_VALUE_BYTES:
            raise InvalidRecordError(
                f"record {index}: image of {rec.image.nbytes:,} bytes is too large for one LMDB value; "
                "use the disk or hdf5 backend"
            )
        return rec

    # -- environment -----------------------------------------------------------------------
    @classmethod
    def _open_env(cls, path: Path, map_size: int) -> Any:
        me = str(path.resolve())
        if any(k[0] == me for k in L._ENVS):
            raise StoreError(f"{path} is open for reading in this process: close its readers before changing it")
        try:
            return lmdb.open(
                str(path), subdir=True, map_size=map_size, max_dbs=L.MAX_DBS, create=False,
                readahead=False, meminit=False, writemap=False,
            )
        except lmdb.Error as exc:
            raise StoreError(f"{path}: cannot open the LMDB store for writing ({_first_line(exc)})") from None

    def _open(self, extra_bytes: int = 0) -> None:
        used = (self.path / "data.mdb").stat().st_size
        self._map_size = max(L.DEFAULT_MAP_SIZE, 2 * used, used + 2 * extra_bytes + (64 << 20))
        self._env = self._open_env(self.path, self._map_size)
        try:
            self.dbb = self._env.open_db(L.DB_BLOCKS, create=False)
            self.dbl = self._env.open_db(L.DB_LABELS, create=False)
            self.dbm = self._env.open_db(L.DB_META, create=False)
        except lmdb.Error as exc:
            self._close()
            raise StoreError(f"{self.path}: cannot open the LMDB store for writing ({_first_line(exc)})") from None
        self.snap = self._env.begin(buffers=True)  # the store as it was: what the change reads

    def _close(self) -> None:
        env, self._env = self._env, None
        if env is None:
            return
        if self.snap is not None:
            self.snap.abort()
            self.snap = None
        used = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
        env.sync(True)
        env.close()
        data = self.path / "data.mdb"
        if data.stat().st_size > used:  # as the writer does: no tail of unused pages
            os.truncate(data, used)

    def _grow_map(self) -> None:
        """Double the map; only while no transaction is open (the snapshot is reopened)."""
        if self.snap is not None:
            self.snap.abort()
            self.snap = None
        new = self._map_size * 2
        if new > (1 << 50):
            raise StoreFullError(f"{self.path}: LMDB map cannot grow past {self._map_size:,} bytes")
        self._env.set_mapsize(new)
        self._map_size = new
        self.snap = self._env.begin(buffers=True)

    def _write(self, fn: Callable[[Any], None]) -> None:
        """One write transaction running ``fn``; MapFullError: abort, grow the map, run it again
        (``fn`` must be re-runnable: it reads only from the snapshot and its own arguments)."""
        while True:
            try:
                with self._env.begin(write=True, buffers=True) as txn:
                    fn(txn)
                self.txns += 1
                return
            except lmdb.MapFullError:
                self._grow_map()
            except lmdb.Error as exc:
                if "No space left" in str(exc) or disk_nearly_full(self.path):
                    raise StoreFullError(f"disk full while changing {self.path}: no space left on device; "
                                         "the store was left as it was") from None
                raise

    def _block_index(self) -> tuple[list[int], list[int]]:
        firsts, counts = [], []
        for k, v in self.snap.cursor(db=self.dbb):
            first = int.from_bytes(bytes(k), "big")
            if first >= self.n:
                break  # past the end: what an interrupted append left (repair deletes it)
            firsts.append(first)
            counts.append(L.HEADER.unpack_from(v, 0)[1])
        return firsts, counts

    def _unpack(self, first: int) -> list[tuple[Record, int]]:
        k = L._key(first)
        return unpack_block(self.snap.get(k, db=self.dbb), self.snap.get(k, db=self.dbl), first)

    def _delete_from(self, txn: Any, first: int) -> None:
        for db in (self.dbb, self.dbl):
            cur = txn.cursor(db=db)
            if cur.set_range(L._key(first)):
                while cur.delete():
                    pass

    def _put_blocks(self, txn: Any, blocks: list[tuple[bytes, bytes, bytes]]) -> None:
        for key, value, labels in blocks:
            txn.put(key, value, db=self.dbb)
            txn.put(key, labels, db=self.dbl)

    def _manifest_bytes(self, txn: Any, count: int) -> bytes:
        """The new manifest (every block and labels block read through ``txn``), and the copy of
        the record tables readers index from, stamped with it (``entries``; where the blocks lie
        follows in ``_place_blocks`` once they are committed)."""
        counts = []
        rows = []
        keep_entries = count <= L.INDEX_MAX_RECORDS
        for k, v in txn.cursor(db=self.dbb):
            if int.from_bytes(bytes(k), "big") >= count:
                break
            counts.append(L.HEADER.unpack_from(v, 0)[1])
            if keep_entries:
                rows.append(bytes(v[L.HEADER.size : L.HEADER.size + counts[-1] * L.ENTRY.itemsize]))
        uniform = all(c == self.rpb for c in counts[:-1])
        kinds = set()
        digest = LabelDigest()  # every label and metadata in order: the manifest's labels_digest
        labels = []
        for k, v in txn.cursor(db=self.dbl):
            if int.from_bytes(bytes(k), "big") >= count:
                break
            for lab, meta in json.loads(bytes(v)):
                kinds.add("int" if isinstance(lab, int) else "str")
                digest.add_record(lab, meta)
                labels.append(lab)
        if len(self.stats.label_kinds) > 1:  # does each kind of label still occur?
            self.stats.label_kinds = kinds
        m = _new_manifest(self.manifest, self.stats, records_per_block=self.rpb, uniform_blocks=uniform,
                          blocks=len(counts), labels_digest=digest.hexdigest())
        data = json.dumps(m, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        cur = txn.cursor(db=self.dbm)  # the old copy goes: a stale one is never read (its stamp)
        if cur.set_range(b"entries"):
            while bytes(cur.key()).startswith(b"entries") and cur.delete():
                pass
        self._placed = None
        if keep_entries:
            stamp = L._manifest_stamp(data)
            for key, value in L.entries_values(b"".join(rows), count, stamp):
                txn.put(key, value, db=self.dbm)
            codes = L.LabelCodes()
            codes.add(labels)
            if codes.ok:
                txn.put(L.LABELS_KEY, codes.value(stamp), db=self.dbm)
            self._placed = (count, stamp)
        return data

    def _place_blocks(self) -> None:
        """After the commit: where every block lies, for the copy the commit wrote (a kill before
        this leaves readers scanning the blocks, as without a copy)."""
        if self._placed is not None:
            count, stamp = self._placed
            self._write(lambda txn: txn.put(L.BLOCKS_AT_KEY, L.block_places(txn, self.dbb, count, stamp), db=self.dbm))

    def _one_transaction(self, change: Callable[[Any], None]) -> None:
        """Run ``change`` and write the manifest in one transaction (old store or new store)."""
        stats0 = WriteStats.from_dict(self.stats.to_dict())

        def fn(txn: Any) -> None:
            self.stats = WriteStats.from_dict(stats0.to_dict())  # a retry starts from the same figures
            change(txn)
            fault_point("batch")
            txn.put(L.MANIFEST_KEY, self._manifest_bytes(txn, self.stats.count), db=self.dbm)
            fault_point("commit")  # inside the transaction: a kill here discards all of it

        self._write(fn)
        fault_point("committed")

    def _steps(self, op: Callable[[], None], extra_bytes: int = 0) -> None:
        self._open(extra_bytes)
        self._placed = None
        try:
            op()
            self._place_blocks()
        finally:
            self._close()

    # -- operations --------------------------------------------------------------------------
    def append(self, records, total, progress, cancel) -> None:
        self._steps(lambda: self._append(records, total, progress, cancel))
        if self.done:
            self.how = (f"appended {self.done:,} records as new blocks past the old end ({self.txns} write "
                        "transactions; the last one switches the manifest, atomically)")
        else:
            self.how = "nothing to append"

    def _append(self, records, total, progress, cancel) -> None:
        packer = _Packer(self.options, self.rpb, self.n)
        i = self.n
        try:
            for batch in _batches(records, BATCH):
                recs = [self._valid(r, i + k) for k, r in enumerate(batch)]
                i += len(recs)
                for rec in recs:
                    packer.add(rec, self.crc(rec.image))
                self.stats.add_many(*_stat_items(recs))
                self.done += len(recs)
                if progress is not None:
                    progress(self.done, total)
                _cancelled(cancel)
                if packer.size >= TXN_BYTES:
                    blocks = packer.take()
                    self._write(lambda txn, b=blocks: self._put_blocks(txn, b))
                fault_point("batch")
            if not self.done:
                return
            packer.close()
            if not self.rpb:
                self.rpb = packer.rpb
            blocks = packer.take()

            def last(txn: Any) -> None:  # the switch: the new manifest says the new count
                self._put_blocks(txn, blocks)
                txn.put(L.MANIFEST_KEY, self._manifest_bytes(txn, self.stats.count), db=self.dbm)
                fault_point("commit")  # inside the transaction: a kill here discards all of it

            self._write(last)
            fault_point("committed")
        except BaseException:
            try:  # not needed for safety (readers stop at the old count), only to give the space back
                self._write(lambda txn: self._delete_from(txn, self.n))
            except Exception:
                pass
            raise

    def overwrite(self, changes: dict[int, Record]) -> None:
        extra = sum(r.image.nbytes for r in changes.values()) + len(changes) * self.options["block_bytes"]
        self._steps(lambda: self._overwrite(changes), extra)
        self.done = len(changes)
        self.how = (f"re-packed the {self._nblocks:,} block(s) holding the {len(changes):,} records under the same keys "
                    "in one write transaction (atomic; LMDB writes changed pages anew and reuses the freed ones later)")

    def _overwrite(self, changes: dict[int, Record]) -> None:
        firsts, _counts = self._block_index()
        by_block: dict[int, list[int]] = {}
        for i in changes:
            by_block.setdefault(firsts[bisect.bisect_right(firsts, i) - 1], []).append(i)
        self._nblocks = len(by_block)
        new_items = _stat_items(list(changes.values()))

        def change(txn: Any) -> None:
            old: list[Record] = []
            for first, idx in by_block.items():
                recs = self._unpack(first)
                for i in idx:
                    old.append(recs[i - first][0])
                    recs[i - first] = (changes[i], self.crc(changes[i].image))
                self._put_blocks(txn, [pack_block([r for r, _ in recs], [c for _, c in recs], first, self.options)])
            _stats_remove(self.stats, *_stat_items(old))
            self.stats.add_many(*new_items)

        self._one_transaction(change)

    def delete(self, idx: list[int]) -> None:
        used = (self.path / "data.mdb").stat().st_size
        self._steps(lambda: self._delete(idx), used)
        self.done = len(idx)
        self.how = (f"re-packed the {self._moved:,} records from record {self._start:,} on into new blocks (keys shift) "
                    "in one write transaction (atomic; freed pages stay in data.mdb for reuse, the file does not shrink)")

    def _delete(self, idx: list[int]) -> None:
        firsts, _counts = self._block_index()
        if not idx:
            self._moved, self._start = 0, self.n
            self._one_transaction(lambda txn: None)
            return
        start = firsts[bisect.bisect_right(firsts, idx[0]) - 1]
        self._start = start
        gone = set(idx)

        def change(txn: Any) -> None:
            packer = _Packer(self.options, self.rpb, start)
            old: list[Record] = []
            moved = 0
            self._delete_from(txn, start)
            cur = self.snap.cursor(db=self.dbb)
            cur.set_range(L._key(start))
            for k, _v in cur:
                first = int.from_bytes(bytes(k), "big")
                if first >= self.n:
                    break
                for j, (rec, crc) in enumerate(self._unpack(first)):
                    if first + j in gone:
                        old.append(rec)
                    else:
                        packer.add(rec, crc)
                        moved += 1
                if packer.size >= TXN_BYTES:
                    self._put_blocks(txn, packer.take())
            packer.close()
            self._put_blocks(txn, packer.take())
            self._moved = moved
            _stats_remove(self.stats, *_stat_items(old))

        self._one_transaction(change)

    # -- recovery --------------------------------------------------------------------------
    @classmethod
    def _orphans(cls, path: Path) -> tuple[int, int]:
        """(count in the manifest, blocks past it) read from a fresh environment."""
        env = cls._open_env(path, max(L.DEFAULT_MAP_SIZE, (path / "data.mdb").stat().st_size))
        try:
            dbb, dbm = env.open_db(L.DB_BLOCKS, create=False), env.open_db(L.DB_META, create=False)
            with env.begin() as txn:
                raw = txn.get(L.MANIFEST_KEY, db=dbm)
                if raw is None:
                    return -1, 0
                count = int(json.loads(bytes(raw)).get("count", 0))
                cur = txn.cursor(db=dbb)
                extra = 0
                if cur.set_range(L._key(count)):
                    extra = sum(1 for _ in cur.iternext(values=False))
            return count, extra
        except (lmdb.Error, ValueError, TypeError):
            return -1, 0
        finally:
            env.close()

    @classmethod
    def leftovers(cls, path: Path) -> list[str]:
        try:
            _count, extra = cls._orphans(path)
        except StoreError:
            return []
        if extra:
            return [f"{extra:,} block(s) past the last record, left by an interrupted append (imgtui repair deletes them)"]
        return []

    @classmethod
    def repair(cls, path: Path) -> list[str]:
        count, extra = cls._orphans(path)
        if count < 0 or not extra:
            return []
        m = cls(path, {"count": count}, count)
        m._open()
        try:
            m._write(lambda txn: m._delete_from(txn, count))
        finally:
            m._close()
        return [f"rolled back an interrupted append: deleted {extra:,} block(s) it had written past the last record"]
