"""Append, overwrite and delete on a disk store, crash-safe.

A change never edits a file the store's manifest points to. It writes new PNG files under names
no record uses, a new table ``records-<generation>.csv``, and then switches with one atomic
replace of ``manifest.json`` (which names the table): that replace is the commit. Before it the
store is the old one, after it the new one, at any kill moment. The files the new store no longer
needs (the old table, overwritten or deleted PNGs) are removed after the commit.

An intent record ``.imgtui-change.json`` is written (atomically) before the first new file and
removed last. When a change is cut short, the next change, writer or ``imgtui repair`` reads it and
either finishes the change (the manifest already names the new generation: remove the old files)
or rolls it back (it does not: remove the files the change wrote). Readers never look at it.
"""

from __future__ import annotations

import csv
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import CorruptStoreError
from ...records import LabelDigest, Record
from ..base import atomic_write_text
from ..mutate import BATCH, _batches, _cancelled, _Mutator, _new_manifest, _stat_items, _stats_remove
from ..safety import copy_file, fault_point, fsync_dir, fsync_tree, remove_path
from . import store as disk

INTENT = disk.INTENT
_TABLE_RE = re.compile(r"^records(-[0-9]+)?\.csv$")


def table_name(manifest: dict) -> str:
    """The table the manifest names (``records.csv`` for stores never changed)."""
    name = manifest.get("table") or disk.TABLE
    if not isinstance(name, str) or not _TABLE_RE.match(name):
        raise CorruptStoreError(f"manifest names the table {name!r}, not records[-N].csv")
    return name


def _read_json(path: Path) -> dict | None:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return d if isinstance(d, dict) else None


def _inside(root: Path, rel: Any) -> Path | None:
    """``root / rel`` when ``rel`` is a plain relative path under images/ (nothing else is ever
    removed by a repair, whatever the intent file says)."""
    if not isinstance(rel, str) or not disk.FILE_RE.match(rel):
        return None
    return root / rel


class DiskMutator(_Mutator):
    backend = "disk"

    def __init__(self, path: Path, manifest: dict, n: int) -> None:
        super().__init__(path, manifest, n)
        self.mpath = path / disk.MANIFEST
        self.table_name = table_name(manifest)
        self.table = path / self.table_name
        self.generation = int(manifest.get("generation", 0))
        # every row checked (file names under images/, shapes, labels) before anything changes: a
        # reader parses its table only when first needed, so parse it whole here
        with disk.DiskReader(path) as reader:
            reader._load_table()
        with open(self.table, encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f))
        self.header, self.rows = rows[0], rows[1:]
        if len(self.rows) != n:
            raise CorruptStoreError(f"{self.table} has {len(self.rows):,} rows, the manifest says {n:,}")
        self.level = int((manifest.get("options") or {}).get("png_level", disk.DEFAULT_PNG_LEVEL))

    # -- the protocol: intent, new files, commit, cleanup ------------------------------------
    def _next_table(self) -> Path:
        return self.path / f"records-{self.generation + 1}.csv"

    def _begin(self, op: str, **what: Any) -> dict:
        intent = {"op": op, "from_generation": self.generation, "to_generation": self.generation + 1,
                  "old_table": self.table_name, "table": self._next_table().name, **what}
        atomic_write_text(self.path / INTENT, json.dumps(intent) + "\n")
        return intent

    def _commit(self, table: Path, old_files: list[str]) -> None:
        """Make the new files durable, switch the manifest (the commit), then clean up."""
        fsync_tree(self.path)
        self.stats.label_kinds = self._kinds_after()
        m = _new_manifest(self.manifest, self.stats, table=table.name, generation=self.generation + 1,
                          labels_digest=self._digest.hexdigest(),
                          table_bytes=disk.plain_table_bytes(table, self.stats.count))
        fault_point("commit")
        atomic_write_text(self.mpath, json.dumps(m, indent=1, ensure_ascii=False) + "\n")
        fault_point("committed")
        _finish(self.path, self.table_name, old_files)

    def _rollback(self, table: Path, new_files: list[str]) -> None:
        for rel in new_files:
            remove_path(self.path / rel)
        remove_path(table)
        remove_path(self.path / INTENT)
        fsync_dir(self.path)

    @staticmethod
    def _row_digest(digest: LabelDigest, rows: list[list]) -> LabelDigest:
        for r in rows:
            digest.add(int(r[2]) if r[3] == "int" else r[2], r[7])
        return digest

    def _kinds_after(self) -> set:
        return self.stats.label_kinds if len(self.stats.label_kinds) <= 1 else set(self._new_kinds)

    # -- helpers ---------------------------------------------------------------------------
    def _fresh_name(self, i: int, used: set[str], dtype: np.dtype | None = None, shape: tuple | None = None) -> str:
        """A file name no generation of the store has used: records written by a change carry the
        new generation (``000123-g4.png``), so a reader still on an older table never finds another
        record's pixels under a name it knows (it finds its file, or none: 'reopen it')."""
        suffix = disk.suffix_of(dtype, shape)
        stem = disk.image_name(i)[: -len(".png")]
        name = f"{stem}-g{self.generation + 1}{suffix}" if self.generation + 1 > 0 else disk.image_name(i, dtype, shape)
        k = 0
        while name in used:
            k += 1
            name = f"{stem}-g{self.generation + 1}-{k}{suffix}"
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

    def _write_pngs(self, items: list[tuple[str, np.ndarray]]) -> None:
        """Encode and write PNGs (2 threads: zlib releases the GIL)."""
        for name, _ in items:
            os.makedirs(os.path.dirname(name), exist_ok=True)
        if len(items) < 16:
            disk._encode_and_write(items, self.level)
            return
        half = (len(items) + 1) // 2
        with ThreadPoolExecutor(2) as pool:
            for fut in [pool.submit(disk._encode_and_write, items[a : a + half], self.level) for a in (0, half)]:
                fut.result()

    def _write_table(self, path: Path, rows: list[list]) -> None:
        with open(path, "w", encoding="utf-8", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(self.header)
            w.writerows(rows)
            fh.flush()
            os.fsync(fh.fileno())

    # -- operations --------------------------------------------------------------------------
    def append(self, records, total, progress, cancel) -> None:
        used = {r[1] for r in self.rows}
        table = self._next_table()
        self._begin("append", new_from=self.n)
        created: list[str] = []
        kinds = {r[3] for r in self.rows}
        self._digest = self._row_digest(LabelDigest(), self.rows)
        root = str(self.path)
        try:
            copy_file(self.table, table)
            with open(table, "a", encoding="utf-8", newline="") as fh:
                w = csv.writer(fh)
                i = self.n
                for batch in _batches(records, BATCH):
                    recs = [self._valid(r, i + k) for k, r in enumerate(batch)]
                    items, rows = [], []
                    for rec in recs:
                        name = self._fresh_name(i, used, rec.image.dtype, rec.image.shape)
                        items.append((os.path.join(root, name), rec.image))
                        rows.append(self._row(i, name, rec, self.crc(rec.image)))
                        kinds.add(rows[-1][3])
                        i += 1
                    created.extend(name for name in (r[1] for r in rows))
                    self._write_pngs(items)
                    w.writerows(rows)
                    self._row_digest(self._digest, rows)
                    fault_point("batch")
                    self.stats.add_many(*_stat_items(recs))
                    self.done += len(recs)
                    if progress is not None:
                        progress(self.done, total)
                    _cancelled(cancel)
                fh.flush()
                os.fsync(fh.fileno())
            self._new_kinds = kinds
            self._commit(table, [])
        except BaseException:
            self._rollback(table, created)
            raise
        self.how = (f"appended {self.done:,} records as new image files and a new records table, "
                    "switched in by one atomic manifest replace")

    def overwrite(self, changes: dict[int, Record]) -> None:
        used = {r[1] for r in self.rows}
        old = self._row_items([self.rows[i] for i in changes])
        rows = [list(r) for r in self.rows]
        items, stale, created = [], [], []
        for i, rec in changes.items():
            name = self._fresh_name(i, used, rec.image.dtype, rec.image.shape)
            items.append((os.path.join(str(self.path), name), rec.image))
            created.append(name)
            stale.append(rows[i][1])
            rows[i] = self._row(i, name, rec, self.crc(rec.image))
        table = self._next_table()
        self._begin("overwrite", new_files=created, old_files=stale)
        try:
            self._write_pngs(items)
            fault_point("batch")
            self._write_table(table, rows)
            _stats_remove(self.stats, *old)
            self.stats.add_many(*_stat_items(list(changes.values())))
            self._new_kinds = {r[3] for r in rows}
            self._digest = self._row_digest(LabelDigest(), rows)
            self._commit(table, stale)
        except BaseException:
            self._rollback(table, created)
            raise
        self.done = len(changes)
        self.how = (f"wrote {len(changes):,} new image files and a new records table, switched them in by one "
                    f"atomic manifest replace, then removed the {len(changes):,} old files")

    def delete(self, idx: list[int]) -> None:
        gone = set(idx)
        old = self._row_items([self.rows[i] for i in idx])
        keep = [r for i, r in enumerate(self.rows) if i not in gone]
        rows = [[str(k), *r[1:]] for k, r in enumerate(keep)]
        stale = [self.rows[i][1] for i in idx]
        table = self._next_table()
        self._begin("delete", old_files=stale)
        try:
            self._write_table(table, rows)
            _stats_remove(self.stats, *old)
            self._new_kinds = {r[3] for r in rows}
            self._digest = self._row_digest(LabelDigest(), rows)
            self._commit(table, stale)
        except BaseException:
            self._rollback(table, [])
            raise
        self.done = len(idx)
        self.how = (f"wrote a new records table without the {len(idx):,} records (the records behind them "
                    "shift down, no file is renamed), switched it in atomically, then removed their PNG files")

    # -- recovery --------------------------------------------------------------------------
    @classmethod
    def leftovers(cls, path: Path) -> list[str]:
        temps = [f"{name}: a temporary of an interrupted change (imgtui repair removes it)"
                 for name in disk.temporaries(path)]
        intent = _read_json(path / INTENT)
        if intent is None and not (path / INTENT).exists():
            return temps
        op = (intent or {}).get("op", "change")
        m = _read_json(path / disk.MANIFEST) or {}
        done = intent is not None and m.get("generation", 0) == intent.get("to_generation")
        what = "finishes it" if done else "rolls it back"
        return temps + [f"an interrupted {op} left files in the store (imgtui repair {what})"]

    @classmethod
    def repair(cls, path: Path) -> list[str]:
        ipath = path / INTENT
        out: list[str] = []
        for name in disk.temporaries(path):  # atomic_write_text temporaries of a killed change
            remove_path(path / name)
            out.append(f"removed {name}, a temporary of an interrupted change")
        if not ipath.exists():
            return out
        intent = _read_json(ipath) or {}
        m = _read_json(path / disk.MANIFEST) or {}
        op = intent.get("op", "change")
        current = table_name(m) if m else disk.TABLE
        if intent and m.get("generation", 0) == intent.get("to_generation"):
            old_files = intent.get("old_files") or []
            _finish(path, intent.get("old_table"), old_files)
            out.append(f"finished an interrupted {op}: it had been committed; removed {len(old_files):,} "
                       "files the store no longer uses")
            return out
        removed = 0
        for rel in intent.get("new_files") or []:
            p = _inside(path, rel)
            if p is not None and p.exists():
                remove_path(p)
                removed += 1
        if isinstance(intent.get("new_from"), int):
            removed += _remove_unlisted(path, current, int(intent["new_from"]))
        t = intent.get("table")
        if isinstance(t, str) and _TABLE_RE.match(t) and t != current:
            remove_path(path / t)
        remove_path(ipath)
        fsync_dir(path)
        out.append(f"rolled back an interrupted {op}: removed {removed:,} files it had written; "
                   "the store is as it was before it")
        return out


def _finish(path: Path, old_table: Any, old_files: list[str]) -> None:
    """After the commit: remove what the new store no longer uses, then the intent record."""
    current = table_name(_read_json(path / disk.MANIFEST) or {})
    for rel in old_files:
        p = _inside(path, rel)
        if p is not None:
            remove_path(p)
    if isinstance(old_table, str) and _TABLE_RE.match(old_table) and old_table != current:
        remove_path(path / old_table)
    remove_path(path / INTENT)
    fsync_dir(path)


def _remove_unlisted(path: Path, table: str, first: int) -> int:
    """Remove PNG files in the sub-folders of records >= ``first`` that ``table`` does not list
    (the files of an append that was rolled back)."""
    listed = set()
    with open(path / table, encoding="utf-8", newline="") as f:
        for row in csv.reader(f):
            if len(row) > 1:
                listed.add(row[1])
    removed = 0
    images = path / disk.IMAGES
    lo = first // disk.FILES_PER_FOLDER
    try:
        folders = sorted(os.listdir(images))
    except OSError:
        return 0
    for folder in folders:
        if not folder.isdigit() or int(folder) < lo:
            continue
        for fn in os.listdir(images / folder):
            rel = f"{disk.IMAGES}/{folder}/{fn}"
            if rel not in listed:
                remove_path(images / folder / fn)
                removed += 1
    return removed
