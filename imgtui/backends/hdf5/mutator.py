"""Append, overwrite and delete on an HDF5 store, crash-safe by copy-on-write.

HDF5 cannot change a file atomically: a process killed while it writes leaves the file's metadata
half-updated and often unreadable. So a change never opens the store for writing. It copies the
file beside it (``NAME.imgtui-change-PID``; a reflink where the filesystem has them, else the
kernel's copy), changes the copy (or, for a delete or a layout migration, writes a fresh file),
makes it durable and replaces the store with it in one ``os.replace``: at any kill moment the path
holds the old file or the new one. The next writer (or ``imgtui repair``) removes a copy left by a
killed change. Readers that had the old file open keep reading the old file, unchanged.

The price is one copy of the file per change (measured in the report's ``seconds``): an append of a
few records to a very large store costs a full copy unless the filesystem reflinks (XFS, btrfs).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import h5py
import numpy as np

from ...errors import StoreError, StoreFullError
from ...records import LabelDigest, Record, is_volume
from ..base import WriteStats
from ..mutate import BATCH, _batches, _cancelled, _first_line, _Mutator, _new_manifest, _stat_items, _stats_remove
from ..safety import copy_file, fault_point, fsync_file, remove_path, replace_path, temp_path
from . import store as H


class Appender(H.Hdf5Writer):
    """The HDF5 writer resumed on an existing, complete file: its write path, its migrations
    (fixed -> variable shapes, int -> mixed labels, contiguous -> rewritten) and its manifest."""

    def __init__(self, path: Path, store: Path, manifest: dict, grow_to: int | None) -> None:
        """``path``: the working copy of ``store`` that this writer changes (under the store's lock)."""
        opts = dict(manifest.get("options") or {})
        h = manifest.get("hdf5") or {}
        keep = {k: opts.get(k) for k in ("layout", "compression", "level", "chunk_records")}
        self.checksum_kind = manifest.get("checksum") or "crc32"  # the store's, for the new records
        super().__init__(path, overwrite=True, expected_count=grow_to, lock=False, **keep)
        self.build_path = self.path
        self._rewrite_path = temp_path(store, "rewrite")
        self.requested_options = h.get("requested_options", opts)
        self.notes = list(h.get("notes", []))
        self.first_note = len(self.notes)
        self.stats = WriteStats.from_dict(manifest)
        self.old_manifest = manifest
        self.grow_to = grow_to
        self.rewrites = 0
        self._label_mode = h.get("label_mode", "int")
        self._metadata_records = int(h.get("metadata_records", 0))
        self._f = _open_rw(self.path)
        f = self._f
        # the new manifest's labels_digest covers the records already there, then the appended ones
        self.label_digest = _file_digest(f, int(manifest.get("count", 0)))
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
        elif "pixels" in f:
            self._kind = "variable"
            self._pix_end = int(f["pixels"].shape[0])
        elif "images_flat" in f:  # a store of format version <= 4: appended in its own layout
            self._kind = "variable"
            self._vlen = True
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
        """Close the working copy; the mutator removes it (the store itself was never touched)."""
        if self._finished:
            return
        self._finished = True
        self._batch, self._checksums_batch = [], []
        self._close_on_error()


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


def _file_digest(f: Any, n: int) -> LabelDigest:
    """The labels_digest of the first ``n`` records of an open imgtui HDF5 file."""
    digest = LabelDigest()
    labels = f["labels"]
    flags = f["label_is_int"] if "label_is_int" in f else None
    metas = f["metadata"]
    for a in range(0, n, 1 << 15):
        b = min(n, a + (1 << 15))
        labs = labels[a:b]
        fl = flags[a:b] if flags is not None else None
        for k, (lab, meta) in enumerate(zip(labs, metas[a:b])):
            if labels.dtype.kind in "iu":
                lab = int(lab)
            else:
                lab = lab.decode("utf-8") if isinstance(lab, bytes) else str(lab)
                if fl is not None and fl[k]:
                    lab = int(lab)
            meta = meta.decode("utf-8") if isinstance(meta, bytes) else str(meta)
            digest.add(lab, meta or "{}")
    return digest


def _open_rw(path: Path) -> Any:
    try:
        return h5py.File(path, "r+", libver=H.LIBVER)
    except OSError as exc:
        raise StoreError(
            f"{path}: cannot open it for writing ({_first_line(exc)})"
        ) from None


class Hdf5Mutator(_Mutator):
    backend = "hdf5"

    def __init__(self, path: Path, manifest: dict, n: int) -> None:
        super().__init__(path, manifest, n)
        self.H = H
        self.h = manifest.get("hdf5") or {}

    # -- copy-on-write: change a copy, switch it in with one os.replace ------------------------
    def _work_copy(self, extra_bytes: int = 0) -> Path:
        size = self.path.stat().st_size
        need = size + extra_bytes + (16 << 20)
        free = shutil.disk_usage(self.path.parent).free
        if free < need:
            raise StoreFullError(
                f"not enough free space to change {self.path} safely: a change writes a copy of the file "
                f"({need >> 20:,} MB needed, {free >> 20:,} MB free); nothing was changed"
            )
        work = temp_path(self.path, "change")
        remove_path(work)
        try:
            copy_file(self.path, work)
        except BaseException:
            remove_path(work)
            raise
        return work

    def _switch(self, work: Path) -> None:
        fsync_file(work)
        fault_point("commit")
        replace_path(work, self.path)
        fault_point("committed")

    def check(self, rec: Record, index: int) -> Record:
        self.H.Hdf5Writer._check_record(None, rec, index)  # type: ignore[arg-type]  (uses no state)
        return rec

    def append(self, records, total, progress, cancel) -> None:
        grow_to = None if total is None else self.n + total
        work = self._work_copy()
        try:
            w = Appender(work, self.path, self.manifest, grow_to)
            try:
                for batch in _batches(records, BATCH):
                    for r in batch:
                        w.write(r)
                    fault_point("batch")
                    self.done += len(batch)
                    if progress is not None:
                        progress(self.done, total)
                    _cancelled(cancel)
                w.close()
            except BaseException:
                w.abort()
                raise
            self._switch(work)
        finally:
            remove_path(work)
            remove_path(temp_path(self.path, "rewrite"))
        self.stats = w.stats
        self.in_place = w.rewrites == 0
        if self.in_place:
            what = "variable-shape" if w._kind == "variable" else "chunked"
            self.how = (f"appended {self.done:,} records by resizing the {what} datasets of a copy of the file, "
                        "switched in with one atomic replace")
        else:
            self.how = "rewrote the file: " + "; ".join(w.notes[w.first_note :])

    # -- rewrite: a fresh file next to the store, swapped in when complete ---------------------
    def _rebuild(self, final_count: int, note: str, variable: bool, source: Callable[[Any], Iterator[Record]]) -> None:
        opts = dict(self.manifest.get("options") or {})
        keep = {k: opts.get(k) for k in ("layout", "compression", "level", "chunk_records")}
        if keep.get("layout") not in ("contiguous", "chunked"):
            keep["layout"] = "chunked"
        # built beside the store and switched in by the writer's own atomic replace
        w = Rebuilder(self.path, overwrite=True, expected_count=final_count, lock=False, **keep)
        w.setup(self.manifest, note)
        reader = H.Hdf5Reader(self.path)
        try:
            with w:
                if variable:  # start in the variable-shape layout: no migration half-way
                    w._kind = "variable"
                    w._create_variable(w._f, 0, reader.pixel_bytes())
                for rec in source(reader):
                    w.write(rec)
        finally:
            reader.close()
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
        work = self._work_copy()
        f = _open_rw(work)
        try:
            meta_delta = 0
            for (i, rec), before in zip(changes.items(), old):
                if kind == "fixed":
                    f["images"][i] = rec.image
                else:
                    if "pixels" in f:  # the new bytes go at the end; the old ones stay until a rewrite
                        pix = f["pixels"]
                        end = int(pix.shape[0])
                        H.append_pixels(pix, end, H._raw_bytes(rec.image))
                        f["offsets"][i] = end
                    else:
                        flat = np.empty(1, dtype=H._VLEN_U8)
                        flat[0] = H._raw_bytes(rec.image)
                        f["images_flat"].write_direct(flat, dest_sel=np.s_[i : i + 1])
                    ds = f["shapes"]
                    if ds.shape[1] == 3 and is_volume(rec.image.shape):
                        ds = H.widen_shapes(f)
                    ds[i] = H.shape_rows([rec.image.shape], ds.shape[1])[0]
                    f["dtypes"][i] = H.DTYPE_CODES[rec.image.dtype]
                if mode == "int":
                    f["labels"][i] = rec.label
                else:
                    f["labels"][i] = str(rec.label)
                    if mode == "mixed":
                        f["label_is_int"][i] = int(isinstance(rec.label, int))
                f["metadata"][i] = rec.meta_json if rec.metadata else ""
                f["checksums"][i] = self.crc(rec.image)
                meta_delta += bool(rec.metadata) - bool(before.metadata)
            _stats_remove(self.stats, *_stat_items(old))
            self.stats.add_many(*_stat_items(new))
            if len(self.stats.label_kinds) > 1 and mode == "mixed":
                flags = f["label_is_int"][()]
                self.stats.label_kinds = {"int" if x else "str" for x in np.unique(flags)}
            h = dict(self.h)
            h["metadata_records"] = int(h.get("metadata_records", 0)) + meta_delta
            m = _new_manifest(self.manifest, self.stats, hdf5=h, labels_digest=_file_digest(f, self.n).hexdigest())
            f.attrs["manifest"] = json.dumps(m)
            f.close()
            self._switch(work)
        finally:
            f.close()
            remove_path(work)
        where = "fixed-shape images dataset" if kind == "fixed" else "variable-shape datasets (the new bytes appended: the old bytes stay in the file until a rewrite)"
        self.how = (f"overwrote {len(changes):,} records in the {where} of a copy of the file, switched in with "
                    "one atomic replace")

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


