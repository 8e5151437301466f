"""Append, overwrite and delete on a disk store."""

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


class DiskMutator(_Mutator):
    backend = "disk"

    def __init__(self, path: Path, manifest: dict, n: int) -> None:
        super().__init__(path, manifest, n)
        from . import store as disk

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




