"""HDF5 backend: one ``.h5`` file written with h5py.

Layout of a store (everything at the root group)
-----------------------------------------------
Fixed shapes (every record has the shape and dtype of the first one):
  ``images``       N x H x W [x C] of the records' dtype (uint8, uint16, int8, int16, uint32, int32,
                   float32, float64 or bool, h5py's enum of int8). HxW and HxWx1 stay distinct.
Variable shapes (a record's shape or dtype differed from the first one):
  ``pixels``       1-D uint8, chunked (64 KiB-1 MiB chunks, by the expected store size),
                   resizable: every image's raw C-order bytes
                   (multi-byte samples little-endian), one after the other
  ``offsets``      N int64: where record i's bytes start in ``pixels``; it has
                   prod(shape) * itemsize of them. An overwrite appends the new bytes and moves
                   the offset (the old bytes stay in the file until a rewrite).
                   (Stores of format version <= 4 kept each image as a vlen uint8 object in
                   ``images_flat`` instead of ``pixels`` + ``offsets``: still read, and appended
                   to in that layout. Version 5 says ``pixels`` is there.)
  ``shapes``       N x 4 int64 (D, H, W, C); D = 0 for an image, C = 0 for no channel axis
                   (stores written before 3-D records: N x 3 (H, W, C), still read and widened
                   when a change brings a 3-D record)
  ``dtypes``       N uint8 code: 0 = uint8, 1 = uint16, 2 = int16, 3 = uint32, 4 = int32,
                   5 = float32, 6 = float64, 7 = bool, 8 = int8
Always:
  ``labels``       N int64 when every label is an int, else vlen UTF-8 str
  ``label_is_int`` N uint8, only in stores mixing int and str labels (then ``labels`` is str and
                   a 1 here means "parse it back as an int")
  ``metadata``     N vlen UTF-8 str: the record's metadata as JSON ("" for an empty dict)
  ``checksums``    N uint32: crc32 of the pixel bytes (``imgtui.records.checksum``)
Root attributes: ``format`` ("imgtui"), ``format_version``, ``backend`` ("hdf5"),
``imgtui_version``, ``options`` (JSON), and, written last by a finished writer, ``manifest``
(the JSON manifest from ``base.make_manifest``) followed by ``complete`` (1).

Writer options
--------------
``layout``: ``contiguous`` | ``chunked`` | ``auto`` (default). ``auto`` is contiguous when the caller
    passes ``expected_count`` (a contiguous dataset needs N up front), chunked otherwise.
    - ``contiguous`` without ``expected_count``: written chunked-resizable while streaming, then
      rewritten into a contiguous dataset when the writer closes (one extra copy, bounded memory).
    - contiguous and more records than ``expected_count`` arrive: the store is rewritten to chunked
      and a note says so; fewer: rewritten to the exact size when the writer closes.
    - compression needs chunked storage: ``layout=contiguous`` with compression switches to
      chunked, and the switch is recorded in the manifest's ``hdf5.notes``.
``compression``: ``none`` (default) | ``gzip`` | ``lzf``; ``level``: gzip level 0-9 (default 4).
``chunk_records``: records per chunk (default: as many as fit in ~1 MiB, at least 1).

Migrations (fixed -> variable shapes, contiguous <-> chunked) write a fresh file next to the store
(``<store>.imgtui-rewrite-<pid>``) batch by batch and replace the old one, so the space of the old
layout is not left behind in the file and memory stays bounded.

Variable-shape stores keep their pixels in one chunked byte dataset, so compression applies to
them too; a reader copies an uncompressed record straight out of a map of the file (its bytes span
one or a few chunks), as fast as a fixed-shape row. (The vlen ``images_flat`` layout before it
read through HDF5's global heap at about a third of LMDB's speed on 16-bit 256-768 px images.)

Reading: the file stays open until ``close()``. Contiguous unfiltered ``images`` are also mapped
read-only (random rows and small slices are copied from the map; big slices use one h5py read).
Uncompressed chunked ``images`` are opened without chunk cache (HDF5 then reads only the rows asked
for) and random rows come from a map of the file via the chunk offset table; compressed chunks get
a cache of at least 4 chunks (32-256 MiB). Random batches are read sorted and unique, then put back
in the requested order. Measured on 100k 32x32x3 records, batches of 64: sorted h5py fancy
indexing ~40k records/s (contiguous) / ~3k (chunked), one ``ds[i]`` per row ~90-170k, the maps
~0.8-1.2M (np.memmap of a raw array: ~2.2M).

Incomplete stores: files are created with ``libver=("v110", "v110")`` so HDF5 marks a file that is
open for writing in its superblock; a killed writer leaves that mark and readers report the store
as incomplete, as they do for a file without the ``complete`` attribute.
"""

from __future__ import annotations

import atexit
import json
import mmap
import os
import weakref
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ...errors import (
    CorruptStoreError,
    ImgtuiError,
    IncompleteStoreError,
    InvalidRecordError,
    StoreNotFoundError,
)
from ...records import CODE_DTYPES as _RECORD_DTYPES, DTYPE_CODES as _RECORD_CODES, Label, Record, is_volume, loads_metadata, shape4, shape_from4, shapes4
from ..base import (
    PACKED_FORMAT_VERSION,
    PLAIN_FORMAT_VERSION,
    ArrayReader,
    StoreWriter,
    _one_line,
    check_manifest,
    remove_path,
)

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: file format bounds: HDF5 >= 1.10 reads these files; v110 superblocks record "open for write"
LIBVER = ("v110", "v110")
LAYOUTS = ("auto", "contiguous", "chunked")
COMPRESSIONS = ("none", "gzip", "lzf")
DEFAULT_GZIP_LEVEL = 4
#: target bytes of one chunk of images when chunk_records is not given
CHUNK_TARGET_BYTES = 1 << 20
#: bytes per chunk of the variable-shape ``pixels`` dataset: the store's expected size / 64,
#: between these (HDF5 allocates whole chunks, so a small store keeps small chunks; a large one
#: keeps its chunk index small: ~1 us a chunk to list when a reader builds its map)
PIXELS_CHUNK_MIN = 64 << 10
PIXELS_CHUNK_MAX = 1 << 20
#: chunk cache: at least this much, and at least CACHE_CHUNKS chunks up to CACHE_MAX_BYTES
CACHE_MIN_BYTES = 32 << 20
CACHE_CHUNKS = 4
CACHE_MAX_BYTES = 256 << 20
CACHE_SLOTS = 10007  # a prime, well above the number of chunks such a cache holds
#: slices of a contiguous dataset at least this big are read with one pread (h5py read_direct);
#: smaller reads and random rows are copied out of a read-only memory map of the same bytes
BIG_READ_BYTES = 16 << 20
#: stores of more records than this read a batch's labels and checksums row by row instead of
#: loading those columns whole on the first batch (``labels_array()`` still loads the labels)
COLUMN_MAX_RECORDS = 4_000_000
#: rows per chunk of the small per-record datasets
AUX_CHUNK = 4096
#: rows per chunk of the N x 4 ``shapes`` dataset: the 96 KiB chunks of the N x 3 one before it
SHAPES_CHUNK = AUX_CHUNK * 3 // 4
STR_CHUNK = 1024
#: the writer flushes its batch early once it holds this many pixel bytes (``max_batch_bytes``)
MAX_BATCH_BYTES = 16 << 20
#: rows of labels/checksums/metadata that write_array blocks keep before writing them
AUX_ROWS = 1 << 16
#: bytes copied per step while migrating a store to another layout
COPY_BYTES = 64 << 20

#: the ``dtypes`` dataset's codes: imgtui.records' codes minus 1 (0 = uint8, 1 = uint16 as before)
DTYPE_CODES = {dt: code - 1 for dt, code in _RECORD_CODES.items()}
CODE_DTYPES = {code - 1: dt for code, dt in _RECORD_DTYPES.items()}

_STR = h5py.string_dtype("utf-8")
_VLEN_U8 = h5py.vlen_dtype(np.uint8)


def incomplete_message(path: Path) -> str:
    return (
        f"{path} is incomplete: its writer did not finish (interrupted or killed); "
        "re-create it with --overwrite"
    )


def _cache_bytes(chunk_bytes: int) -> int:
    return max(CACHE_MIN_BYTES, min(CACHE_CHUNKS * chunk_bytes, CACHE_MAX_BYTES))


def _has_signature(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(8) == HDF5_SIGNATURE
    except OSError:
        return False


def _open_for_write_error(exc: OSError) -> bool:
    text = str(exc)
    return "already open for write" in text or "consistency flags" in text


def _lock_error(exc: OSError) -> bool:
    return "unable to lock file" in str(exc)


def _imgtui_marker_in_head(path: Path) -> bool:
    """A writer flushes its root attributes first (format "imgtui", format_version, ...), so they
    sit in the first KiBs of the file."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(64 << 10)
    except OSError:
        return False
    return b"imgtui" in head and b"format_version" in head


def _attr_str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


# ----------------------------------------------------------------------------------------------
# writer
# ----------------------------------------------------------------------------------------------


class Hdf5Writer(StoreWriter):
    backend = "hdf5"
    #: fewer, larger HDF5 writes; a batch is also flushed once it holds MAX_BATCH_BYTES of pixels
    default_batch_size = 1024
    max_batch_bytes = MAX_BATCH_BYTES

    @classmethod
    def check_options(cls, options: dict) -> dict:
        opts = dict(options)
        layout = opts.pop("layout", None)
        compression = opts.pop("compression", None)
        level = opts.pop("level", None)
        chunk_records = opts.pop("chunk_records", None)
        if opts:
            raise ImgtuiError(
                f"hdf5: unknown option(s) {', '.join(sorted(opts))} "
                "(known: layout, compression, level, chunk_records)"
            )
        layout = str(layout or "auto").strip().lower()
        if layout not in LAYOUTS:
            raise ImgtuiError(f"hdf5: layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        compression = "none" if compression in (None, False, "") else str(compression).strip().lower()
        if compression not in COMPRESSIONS:
            raise ImgtuiError(
                f"hdf5: compression must be one of {', '.join(COMPRESSIONS)}, got {compression!r}"
            )
        if level is not None:
            if compression != "gzip":
                raise ImgtuiError(f"hdf5: option level applies only to compression=gzip (got compression={compression})")
            level = _as_int(level, "level")
            if not 0 <= level <= 9:
                raise ImgtuiError(f"hdf5: gzip level must be 0-9, got {level}")
        elif compression == "gzip":
            level = DEFAULT_GZIP_LEVEL
        if chunk_records is not None:
            chunk_records = _as_int(chunk_records, "chunk_records")
            if chunk_records < 1:
                raise ImgtuiError(f"hdf5: chunk_records must be at least 1, got {chunk_records}")
        return {"layout": layout, "compression": compression, "level": level, "chunk_records": chunk_records}

    def __init__(self, path: str | os.PathLike, **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        if self.expected_count is not None:
            self.expected_count = int(self.expected_count)
            if self.expected_count < 0:
                raise ImgtuiError(f"hdf5: expected_count must be >= 0, got {self.expected_count}")
        self.requested_options = dict(self.options)
        self.notes: list[str] = []
        self._f: h5py.File | None = None
        self._rewrite_file: h5py.File | None = None
        self._rewrite_path = self.build_path.with_name(f"{self.path.name}.imgtui-rewrite-{os.getpid()}")
        self._kind: str | None = None  # None (no record yet) | "fixed" | "variable"
        #: variable shapes in the vlen ``images_flat`` layout (only when appending to such a store)
        self._vlen = False
        self._pix_end = 0  # bytes in the ``pixels`` dataset
        self._shape: tuple[int, ...] = ()
        self._dtype: np.dtype | None = None
        self._layout = "chunked"  # of the fixed "images" dataset
        self._alloc = 0  # rows of a contiguous "images" dataset
        self._want_contiguous = False  # rewrite to contiguous when closing
        self._chunk_records: int | None = None
        self._label_mode: str | None = None  # None | "int" | "str" | "mixed"
        self._metadata_records = 0  # records with non-empty metadata
        #: (start, labels, checksums, metadata texts or None) of write_array blocks not written yet
        self._aux: list[tuple[int, list, list, list | None]] = []
        self._aux_rows = 0
        #: images of write_array blocks gathered before one write: rows _img_start.._img_start+_img_n
        self._img_buf: np.ndarray | None = None
        self._img_start = 0
        self._img_n = 0
        #: open dataset handles of the file being written (fewer short-lived h5py objects)
        self._dsets: dict[str, h5py.Dataset] = {}
        if self.options["layout"] == "contiguous" and self.options["compression"] != "none":
            self.notes.append(
                f"compression={self.options['compression']} needs chunked storage: "
                "layout switched from contiguous to chunked"
            )
            self.options["layout"] = "chunked"

    # -- hooks -----------------------------------------------------------------------------
    def _open_store(self) -> None:
        self._f = self._create_file(self.build_path)
        self._f.flush()  # the imgtui attributes land at the start of the file

    def _create_file(self, path: Path) -> h5py.File:
        try:
            f = h5py.File(path, "w", libver=LIBVER)
        except OSError as exc:
            raise ImgtuiError(f"cannot create {path}: {_one_line(exc)}") from None
        f.attrs["format"] = "imgtui"
        f.attrs["format_version"] = PLAIN_FORMAT_VERSION  # the manifest says which version the records need
        f.attrs["backend"] = self.backend
        from ..._version import __version__

        f.attrs["imgtui_version"] = __version__
        f.attrs["options"] = json.dumps(self.requested_options)
        return f

    def _check_record(self, record: Record, index: int) -> None:
        label = record.label
        if isinstance(label, str):
            if "\x00" in label:
                raise InvalidRecordError(f"record {index} label: HDF5 strings cannot contain NUL characters")
            try:
                label.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidRecordError(f"record {index} label: not encodable as UTF-8") from None
        if record.metadata:
            try:
                record.meta_json.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidRecordError(f"record {index} metadata: not encodable as UTF-8") from None

    def _write_batch(self, records: list[Record], checksums: list[int], start: int) -> None:
        self._flush_kept()  # rows kept by _write_arrays first: label changes and rewrites read them
        f = self._f
        assert f is not None
        n = len(records)
        if self._kind is None:
            self._init_images(records[0], f)
        if self._kind == "fixed":
            if any(r.image.shape != self._shape or r.image.dtype != self._dtype for r in records):
                k, odd = next(
                    (k, r) for k, r in enumerate(records) if r.image.shape != self._shape or r.image.dtype != self._dtype
                )
                self.notes.append(
                    f"record {start + k} has shape {odd.image.shape} {odd.image.dtype} "
                    f"(first: {self._shape} {self._dtype}): switched to the variable-shape layout"
                )
                self._rewrite(start, kind="variable")
            elif self._layout == "contiguous" and start + n > self._alloc:
                self.notes.append(
                    f"more records than expected_count={self.expected_count}: contiguous layout "
                    "rewritten as chunked"
                )
                self._want_contiguous = False
                self._rewrite(start, kind="fixed", layout="chunked")
        f = self._f
        self._write_labels(f, [r.label for r in records], start)
        if self._kind == "fixed":
            ds = self._ds("images")
            if self._layout == "chunked":
                ds.resize(start + n, axis=0)
            block = np.stack([r.image for r in records])
            ds.write_direct(block, dest_sel=np.s_[start : start + n])
        else:
            self._write_variable(f, [r.image for r in records], start)
        metas = []
        for r in records:
            if r.metadata:
                self._metadata_records += 1
                metas.append(r.meta_json)
            else:
                metas.append("")
        _append(self._ds("metadata"), start, np.array(metas, dtype=object))
        _append(self._ds("checksums"), start, np.asarray(checksums, dtype=np.uint32))

    def _array_block(self, images: np.ndarray, labels: list, metas: list | None, first: int) -> Any:
        if self._plain_labels_utf8(labels, metas):
            return None  # nothing _check_record would refuse: the vectorised write
        return super()._array_block(images, labels, metas, first)

    def _write_arrays(self, block: Any, images: np.ndarray, labels: list, metas: list | None,
                      checksums: list[int], start: int) -> None:
        """A ``write_array`` block of records with int labels or str ones, written as it is: one
        write of the images array, one of the labels, the checksums and the metadata.
        Anything that changes the layout (another shape, more records than a contiguous dataset
        holds) goes through the Records path, which handles it."""
        n = len(images)
        if block is None and self._kind is None:
            self._init_images(Record(images[0], labels[0]), self._f)
        if (block is not None or self._kind != "fixed" or images.shape[1:] != self._shape
                or images.dtype != self._dtype
                or (self._layout == "contiguous" and start + n > self._alloc)):
            if block is None:
                block = super()._array_block(images, labels, metas, start)
            self._write_batch(block, checksums, start)
            return
        texts = None
        if metas is not None:  # the metadata column: JSON, "" for an empty dict (as _write_batch)
            texts = [j if m else "" for m, j in metas]
            self._metadata_records += n - texts.count("")
        kind = "int" if type(labels[0]) is int else "str"  # the block's one label type
        if self._label_mode != kind:  # the first labels, or a change of label mode: written now
            self._flush_kept()
            self._write_images(images, start)
            self._write_labels(self._f, labels, start)
            _append(self._ds("metadata"), start, np.array(texts, dtype=object) if texts else np.full(n, "", dtype=object))
            _append(self._ds("checksums"), start, np.asarray(checksums, dtype=np.uint32))
            return
        # small blocks are gathered (a copy of the pixels costs less than an h5py write call):
        # images up to MAX_BATCH_BYTES, the labels, checksums and metadata up to AUX_ROWS
        # records, each written in one call; measured on 10,000 CIFAR images given 256 at a time
        # (imgtui bench): 40 x 4 h5py writes and resizes were most of the time
        if self._aux and self._aux[-1][0] + len(self._aux[-1][1]) != start:
            self._flush_kept()
        self._keep_images(images, start)
        self._aux.append((start, labels, checksums, texts))
        self._aux_rows += n
        if self._aux_rows >= AUX_ROWS:
            self._flush_aux()

    def _write_images(self, images: np.ndarray, start: int) -> None:
        n = len(images)
        ds = self._ds("images")
        if self._layout == "chunked" and ds.shape[0] < start + n:
            ds.resize(start + n, axis=0)
        ds.write_direct(images, dest_sel=np.s_[start : start + n])

    def _keep_images(self, images: np.ndarray, start: int) -> None:
        n = len(images)
        cap = max(1, MAX_BATCH_BYTES // max(1, images[0].nbytes))
        if self._img_n and self._img_start + self._img_n != start:
            self._flush_images()
        if self._img_n == 0 and n >= cap:
            self._write_images(images, start)  # a large block: written as it is
            return
        buf = self._img_buf
        if buf is None or buf.shape[1:] != images.shape[1:] or buf.dtype != images.dtype:
            self._flush_images()
            buf = self._img_buf = np.empty((cap, *images.shape[1:]), images.dtype)
        pos = 0
        while pos < n:
            if self._img_n == 0:
                self._img_start = start + pos
            take = min(n - pos, len(buf) - self._img_n)
            buf[self._img_n : self._img_n + take] = images[pos : pos + take]
            self._img_n += take
            pos += take
            if self._img_n == len(buf):
                self._flush_images()

    def _flush_images(self) -> None:
        k, self._img_n = self._img_n, 0
        if k:
            self._write_images(self._img_buf[:k], self._img_start)

    def _flush_kept(self) -> None:
        """Write whatever ``_write_arrays`` gathered (before anything reads or rewrites the file)."""
        self._flush_images()
        self._flush_aux()

    def _flush_aux(self) -> None:
        """Write the labels, checksums and metadata that ``_write_arrays`` kept."""
        aux, self._aux, self._aux_rows = self._aux, [], 0
        if not aux:
            return
        start = aux[0][0]
        if self._label_mode == "int":
            labels = np.concatenate([np.asarray(a[1], dtype=np.int64) for a in aux])
        else:  # "str": vlen strings
            labels = np.empty(sum(len(a[1]) for a in aux), dtype=object)
            pos = 0
            for a in aux:
                labels[pos : pos + len(a[1])] = a[1]
                pos += len(a[1])
        sums = np.concatenate([np.asarray(a[2], dtype=np.uint32) for a in aux])
        metas = np.full(len(labels), "", dtype=object)
        pos = 0
        for a in aux:
            if a[3] is not None:
                metas[pos : pos + len(a[1])] = a[3]
            pos += len(a[1])
        _append(self._ds("labels"), start, labels)
        _append(self._ds("metadata"), start, metas)
        _append(self._ds("checksums"), start, sums)

    def _finalize(self, manifest: dict) -> None:
        self._flush_kept()
        f = self._f
        assert f is not None
        n = self.stats.count
        if self._kind is None:
            self._create_aux(f, "int")
        elif self._kind == "fixed":
            if self._layout == "contiguous" and self._alloc != n:
                self.notes.append(f"{n} records instead of expected_count={self.expected_count}: contiguous dataset resized")
                self._rewrite(n, kind="fixed", layout="contiguous", alloc=n)
            elif self._want_contiguous:
                self._rewrite(n, kind="fixed", layout="contiguous", alloc=n)
        f = self._f
        self.options["layout"] = self._final_layout()
        fixed_chunked = self._kind == "fixed" and self.options["layout"] == "chunked"
        self.options["chunk_records"] = self._chunk_records if fixed_chunked else None
        extra = {
            "images_layout": self._kind or "empty",
            "label_mode": self._label_mode or "int",
            "metadata_records": self._metadata_records,
            "requested_options": self.requested_options,
            "notes": self.notes,
        }
        if self._kind == "fixed":
            extra["image_shape"] = list(self._shape)
            extra["image_dtype"] = str(self._dtype)
        if self._kind == "variable" and not self._vlen:  # older imgtui: "upgrade", not "damaged"
            manifest["format_version"] = max(int(manifest.get("format_version") or 0), PACKED_FORMAT_VERSION)
        manifest["options"] = dict(self.options)
        manifest["hdf5"] = extra
        self._dsets.clear()
        f.attrs["options"] = json.dumps(manifest["options"])
        f.attrs["manifest"] = json.dumps(manifest)
        f.flush()
        f.attrs["complete"] = np.uint8(1)  # last: marks the store complete
        f.flush()
        f.close()
        self._f = None

    def _close_on_error(self) -> None:
        getattr(self, "_dsets", {}).clear()
        for attr in ("_rewrite_file", "_f"):
            fh = getattr(self, attr, None)
            if fh is not None:
                try:
                    fh.close()
                except Exception:
                    pass
                setattr(self, attr, None)
        remove_path(self._rewrite_path)

    # -- helpers ---------------------------------------------------------------------------
    def _shapes_ds(self, f: h5py.File, images: list[np.ndarray]) -> h5py.Dataset:
        """The ``shapes`` dataset, widened from N x 3 (a store written before 3-D records) to
        N x 4 when a 3-D record comes (writers and changes work on a copy: nothing is lost)."""
        ds = self._ds("shapes")
        if ds.shape[1] == 3 and any(is_volume(im.shape) for im in images):
            self._dsets.pop("shapes", None)
            ds = widen_shapes(f)
            self._dsets["shapes"] = ds
        return ds

    def _ds(self, name: str) -> h5py.Dataset:
        d = self._dsets.get(name)
        if d is None:
            assert self._f is not None
            d = self._dsets[name] = self._f[name]
        return d

    def _final_layout(self) -> str:
        if self._kind == "fixed":
            return "contiguous" if (self._layout == "contiguous" or self._want_contiguous) else "chunked"
        if self._kind == "variable":
            return "chunked"
        return self.options["layout"] if self.options["layout"] != "auto" else "chunked"

    def _init_images(self, first: Record, f: h5py.File) -> None:
        self._kind = "fixed"
        self._shape = first.image.shape
        self._dtype = first.image.dtype
        rec_bytes = first.image.nbytes
        self._chunk_records = self.options["chunk_records"] or max(1, CHUNK_TARGET_BYTES // rec_bytes)
        if self.expected_count:  # no chunk larger than the whole dataset
            self._chunk_records = max(1, min(self._chunk_records, self.expected_count))
        layout = self.options["layout"]
        if layout == "auto":
            layout = "contiguous" if self.expected_count else "chunked"
            if self.options["compression"] != "none":
                layout = "chunked"
        if layout == "contiguous" and not self.expected_count:
            self.notes.append(
                "layout=contiguous without expected_count: written chunked while streaming, "
                "rewritten contiguous when the writer closed"
            )
            self._want_contiguous = True
            layout = "chunked"
        self._layout = layout
        self._create_images(f, layout, 0 if layout == "chunked" else int(self.expected_count or 0))

    def _compression_kwargs(self) -> dict:
        c = self.options["compression"]
        if c == "gzip":
            return {"compression": "gzip", "compression_opts": self.options["level"]}
        if c == "lzf":
            return {"compression": "lzf"}
        return {}

    def _create_images(self, f: h5py.File, layout: str, rows: int) -> None:
        shape = tuple(self._shape)
        if layout == "contiguous":
            # fill_time=never: every row is written (or the dataset rewritten) before closing
            f.create_dataset("images", shape=(rows, *shape), dtype=self._dtype, fill_time="never")
            self._alloc = rows
        else:
            chunk = (self._chunk_records, *shape)
            chunk_bytes = int(np.prod(chunk)) * self._dtype.itemsize
            f.create_dataset(
                "images",
                shape=(rows, *shape),
                maxshape=(None, *shape),
                chunks=chunk,
                dtype=self._dtype,
                rdcc_nbytes=_cache_bytes(chunk_bytes),
                rdcc_nslots=CACHE_SLOTS,
                fill_time="never",
                **self._compression_kwargs(),
            )

    def _create_variable(self, f: h5py.File, rows: int, expect_bytes: int = 0) -> None:
        """The variable-shape datasets, ``rows`` rows long (``pixels`` empty); ``expect_bytes``:
        how many pixel bytes the store should hold (0: unknown), which sizes its chunks."""
        comp = self._compression_kwargs()
        chunk = PIXELS_CHUNK_MIN
        while chunk < PIXELS_CHUNK_MAX and chunk * 64 < expect_bytes:
            chunk *= 2
        f.create_dataset("pixels", shape=(0,), maxshape=(None,), chunks=(chunk,), dtype=np.uint8,
                         fill_time="never", **comp)
        self._pix_end = 0
        f.create_dataset("offsets", shape=(rows,), maxshape=(None,), chunks=(AUX_CHUNK,), dtype=np.int64, **comp)
        f.create_dataset("shapes", shape=(rows, 4), maxshape=(None, 4), chunks=(SHAPES_CHUNK, 4), dtype=np.int64, **comp)
        f.create_dataset("dtypes", shape=(rows,), maxshape=(None,), chunks=(AUX_CHUNK,), dtype=np.uint8, **comp)

    def _create_aux(self, f: h5py.File, label_mode: str, rows: int = 0) -> None:
        self._create_labels(f, "str" if label_mode == "mixed" else label_mode, rows)
        if label_mode == "mixed":
            _new1d(f, "label_is_int", np.uint8, rows)
        _new1d(f, "metadata", _STR, rows)
        _new1d(f, "checksums", np.uint32, rows)

    def _create_labels(self, f: h5py.File, mode: str, rows: int, name: str = "labels") -> None:
        _new1d(f, name, np.int64 if mode == "int" else _STR, rows)

    def _write_labels(self, f: h5py.File, labels: list[Label], start: int) -> None:
        has_int = any(isinstance(x, int) for x in labels)
        has_str = any(isinstance(x, str) for x in labels)
        mode = self._label_mode
        if mode is None:
            mode = "mixed" if (has_int and has_str) else ("int" if has_int else "str")
            self._create_aux(f, mode)
        elif mode == "int" and has_str:
            # ints so far: re-store them as decimal strings with label_is_int = 1
            old = f["labels"]
            self._create_labels(f, "str", start, name="labels_new")
            new = f["labels_new"]
            _new1d(f, "label_is_int", np.uint8, start)
            flags = f["label_is_int"]
            for a in range(0, start, 1 << 16):
                b = min(start, a + (1 << 16))
                new[a:b] = np.array([str(int(v)) for v in old[a:b]], dtype=object)
                flags[a:b] = 1
            self._dsets.clear()
            del old, new, flags
            del f["labels"]
            f.move("labels_new", "labels")
            mode = "mixed"
        elif mode == "str" and has_int:
            _new1d(f, "label_is_int", np.uint8, start)  # zeros: every earlier label was a str
            mode = "mixed"
        self._label_mode = mode
        if mode == "int":
            _append(self._ds("labels"), start, np.array(labels, dtype=np.int64))
        elif mode == "str":
            _append(self._ds("labels"), start, np.array(labels, dtype=object))
        else:
            _append(self._ds("labels"), start, np.array([str(x) for x in labels], dtype=object))
            _append(self._ds("label_is_int"), start, np.array([isinstance(x, int) for x in labels], dtype=np.uint8))

    def _write_variable(self, f: h5py.File, images: list[np.ndarray], start: int) -> None:
        n = len(images)
        codes = np.array([DTYPE_CODES[im.dtype] for im in images], dtype=np.uint8)
        raws = [_raw_bytes(im) for im in images]
        if self._vlen:
            flat = np.empty(n, dtype=_VLEN_U8)
            for k, raw in enumerate(raws):
                flat[k] = raw
            _append_vlen(self._ds("images_flat"), start, flat)
        else:
            _append(self._ds("offsets"), start, self._put_pixels(raws))
        _append(self._shapes_ds(f, images), start, shape_rows([im.shape for im in images], self._ds("shapes").shape[1]))
        _append(self._ds("dtypes"), start, codes)

    def _put_pixels(self, raws: list[np.ndarray]) -> np.ndarray:
        """Append these byte arrays to ``pixels`` (one write); their offsets there."""
        sizes = np.fromiter((r.size for r in raws), dtype=np.int64, count=len(raws))
        offs = self._pix_end + np.concatenate(([0], np.cumsum(sizes)[:-1])) if len(raws) else sizes
        if int(sizes.sum()):
            buf = raws[0] if len(raws) == 1 else np.concatenate(raws)
            self._pix_end = append_pixels(self._ds("pixels"), self._pix_end, buf)
        return offs

    def _rewrite(self, n: int, kind: str, layout: str = "chunked", alloc: int | None = None) -> None:
        """Copy the first ``n`` records into a fresh file with another image layout and swap it in."""
        self._flush_kept()
        old = self._f
        assert old is not None
        self._dsets.clear()
        remove_path(self._rewrite_path)
        new = self._rewrite_file = self._create_file(self._rewrite_path)
        src = old["images"]
        step = max(1, COPY_BYTES // max(1, int(np.prod(self._shape)) * self._dtype.itemsize))
        if kind == "variable":
            rec = int(np.prod(self._shape)) * self._dtype.itemsize
            self._create_variable(new, n, rec * max(n, int(self.expected_count or 0)))
            for a in range(0, n, step):
                b = min(n, a + step)
                self._write_variable_at(new, src[a:b], a)
        else:
            rows = n if layout == "chunked" else int(alloc if alloc is not None else n)
            self._create_images(new, layout, rows)
            dst = new["images"]
            for a in range(0, n, step):
                b = min(n, a + step)
                dst.write_direct(src[a:b], dest_sel=np.s_[a:b])
        for name in ("labels", "label_is_int", "metadata", "checksums"):
            if name in old:
                new.copy(old[name], name)
        new.flush()
        old.close()
        self._f = None
        os.replace(self._rewrite_path, self.build_path)
        self._f, self._rewrite_file = new, None
        self._kind = kind
        if kind == "fixed":
            self._layout = layout
            if layout == "contiguous":
                self._want_contiguous = False

    def _write_variable_at(self, f: h5py.File, block: np.ndarray, start: int) -> None:
        """Records ``start ..`` of a fixed-shape block into the variable-shape datasets of ``f``
        (a migration writes a fresh file: its ``pixels`` end is this writer's)."""
        n = len(block)
        raw = _raw_bytes(block)
        rec = raw.size // max(1, n)
        f["offsets"][start : start + n] = self._pix_end + rec * np.arange(n, dtype=np.int64)
        self._pix_end = append_pixels(f["pixels"], self._pix_end, raw)
        f["shapes"][start : start + n] = shape_rows([block.shape[1:]] * n, f["shapes"].shape[1])
        f["dtypes"][start : start + n] = DTYPE_CODES[block.dtype]


def _as_int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise ImgtuiError(f"hdf5: {name} must be an integer, got {value!r}")
    try:
        return int(str(value).strip()) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        raise ImgtuiError(f"hdf5: {name} must be an integer, got {value!r}") from None


def _new1d(f: h5py.File, name: str, dtype: Any, rows: int) -> None:
    chunk = STR_CHUNK if h5py.check_vlen_dtype(np.dtype(dtype)) is not None else AUX_CHUNK
    f.create_dataset(name, shape=(rows,), maxshape=(None,), chunks=(chunk,), dtype=dtype)


def _append(ds: h5py.Dataset, start: int, values: np.ndarray) -> None:
    end = start + len(values)
    if ds.shape[0] < end:
        ds.resize(end, axis=0)
    ds[start:end] = values


def append_pixels(ds: h5py.Dataset, end: int, raw: np.ndarray) -> int:
    """Write the bytes ``raw`` at byte ``end`` of the 1-D ``pixels`` dataset, growing it to hold
    them; the new end (writer, migration and overwrite all append this way)."""
    if raw.size:
        ds.resize(end + raw.size, axis=0)
        ds.write_direct(raw, dest_sel=np.s_[end : end + raw.size])
    return end + raw.size


def _append_vlen(ds: h5py.Dataset, start: int, values: np.ndarray) -> None:
    # write_direct: h5py's __setitem__ would turn equal-length arrays into one 2-D array
    end = start + len(values)
    if ds.shape[0] < end:
        ds.resize(end, axis=0)
    if len(values):
        ds.write_direct(values, dest_sel=np.s_[start:end])


def shape_rows(shapes: list[tuple], width: int = 4) -> np.ndarray:
    """Rows of the ``shapes`` dataset: (D, H, W, C) per record, or (H, W, C) in a store written
    before 3-D records (N x 3; only images go there, see :meth:`Hdf5Writer._shapes_ds`)."""
    rows = np.array([shape4(s) for s in shapes], dtype=np.int64).reshape(-1, 4)
    return rows if width == 4 else rows[:, 1:]


def widen_shapes(f: h5py.File) -> h5py.Dataset:
    """Replace an N x 3 ``shapes`` dataset by the N x 4 one of the same records."""
    old = f["shapes"]
    rows, comp = shapes4(old[()]), {"compression": old.compression, "compression_opts": old.compression_opts}
    del f["shapes"]
    return f.create_dataset("shapes", data=rows, maxshape=(None, 4), chunks=(SHAPES_CHUNK, 4), dtype=np.int64,
                            **{k: v for k, v in comp.items() if v is not None})


def _raw_bytes(image: np.ndarray) -> np.ndarray:
    """The image's pixel bytes as a flat uint8 array (uint16 little-endian)."""
    if image.dtype.itemsize > 1 and image.dtype.byteorder not in ("<", "|") and not (
        image.dtype.byteorder == "=" and np.little_endian
    ):
        image = image.astype(image.dtype.newbyteorder("<"))
    return np.ascontiguousarray(image).reshape(-1).view(np.uint8)


# ----------------------------------------------------------------------------------------------
# reader
# ----------------------------------------------------------------------------------------------


#: ``Hdf5Reader._chunks`` before the chunk map is built (on the first random read)
_LATER: Any = object()

#: readers of stores opened through a file object: closed before the interpreter exits (h5py
#: crashes at exit on a file-object file still open)
_FILEOBJ_READERS: "weakref.WeakSet[Hdf5Reader]" = weakref.WeakSet()


def _close_fileobj_readers() -> None:
    for r in list(_FILEOBJ_READERS):
        r.close()


atexit.register(_close_fileobj_readers)


class Hdf5Reader(ArrayReader):
    backend = "hdf5"

    def __init__(self, path: str | os.PathLike, fileobj: Any = None) -> None:
        """``fileobj``: read the store through this seekable file object instead of the file at
        ``path`` (a store at a URL read with ranged requests, ``remote.RangedFile``; ``path`` then
        only names it). Nothing is memory-mapped then."""
        super().__init__(path)
        self._f: h5py.File | None = None
        self._mm: np.memmap | None = None
        self._chunks: tuple[int, np.ndarray, np.memmap] | None = None
        self._cache: dict[str, np.ndarray] = {}
        self._lookups: dict[str, int] = {}  # single-row reads of each column not loaded whole
        self._dsets: dict[str, h5py.Dataset] = {}
        #: labels/checksums columns of a large store: (rows per chunk, chunk offsets, file map)
        self._col_maps: dict[str, Any] = {}
        self._fileobj = fileobj
        if fileobj is not None:
            _FILEOBJ_READERS.add(self)
        p = self.path
        if fileobj is None:
            if not p.exists():
                raise StoreNotFoundError(f"{p}: no such file or folder")
            if p.is_dir():
                raise CorruptStoreError(f"{p} is a folder, not an HDF5 file")
            if not _has_signature(p):
                raise CorruptStoreError(f"{p} is not an HDF5 file (it does not start with the HDF5 signature)")
        try:
            self._f = h5py.File(fileobj if fileobj is not None else p, "r", rdcc_nbytes=CACHE_MIN_BYTES,
                                rdcc_nslots=CACHE_SLOTS)
        except OSError as exc:
            raise _open_error(p, exc) from None
        try:
            self._load()
        except ImgtuiError:
            self.close()
            raise
        except (OSError, KeyError, ValueError, RuntimeError, TypeError) as exc:
            self.close()
            raise CorruptStoreError(f"{p} is damaged: its HDF5 structure cannot be read ({_one_line(exc)})") from None
        except BaseException:
            self.close()
            raise

    def _load(self) -> None:
        f, p = self._f, self.path
        assert f is not None
        if _attr_str(f.attrs.get("format")) != "imgtui":
            raise CorruptStoreError(f"{p} is an HDF5 file but not an imgtui store (no imgtui attributes)")
        if "manifest" not in f.attrs or "complete" not in f.attrs:
            raise IncompleteStoreError(incomplete_message(p))
        try:
            manifest = json.loads(_attr_str(f.attrs["manifest"]) or "")
        except ValueError:
            raise CorruptStoreError(f"{p}: its manifest attribute is not valid JSON") from None
        if not isinstance(manifest, dict):
            raise CorruptStoreError(f"{p}: its manifest attribute is not a JSON object")
        self.manifest = check_manifest(manifest, self.backend, p)
        self._n = int(manifest.get("count", 0))
        h = manifest.get("hdf5", {})
        self._meta_empty = h.get("metadata_records", 1) == 0
        self._vlen = "images_flat" in f and "pixels" not in f
        if "images" in f:
            self._kind = "fixed"
        elif "pixels" in f or self._vlen:
            self._kind = "variable"
        else:
            self._kind = None
        need = ["labels", "metadata", "checksums"]
        need += {"fixed": ["images"], "variable": ["shapes", "dtypes"] + (["images_flat"] if self._vlen else ["offsets"]),
                 None: []}[self._kind]
        self._mixed = "label_is_int" in f
        if self._mixed:
            need.append("label_is_int")
        self._dsets: dict[str, h5py.Dataset] = {}
        for name in need:
            ds = f.get(name)
            if ds is None:
                raise CorruptStoreError(f"{p}: dataset {name!r} is missing")
            if ds.shape[0] != self._n:
                raise CorruptStoreError(
                    f"{p}: dataset {name!r} has {ds.shape[0]:,} rows but the manifest says {self._n:,} records"
                )
            self._dsets[name] = ds
        if self._kind is None and self._n:
            raise CorruptStoreError(f"{p}: no images dataset but the manifest says {self._n:,} records")
        self._labels_ds = self._dsets["labels"]
        self._str_labels = self._labels_ds.dtype.kind != "i"
        self._meta_ds = self._dsets["metadata"]
        if self._kind == "fixed":
            ds = f["images"]
            if ds.chunks is not None:
                # Compressed chunks must be decoded whole: cache at least CACHE_CHUNKS of them.
                # Uncompressed chunks: no cache, so HDF5 reads just the requested rows instead of
                # whole ~1 MiB chunks (measured on 100k CIFAR-like records, random batches of 64:
                # ~150k records/s without cache, ~19k with a 32 MiB cache; full reads equal).
                # (HDF5 shares an open dataset: the probe handle must be closed before reopening)
                chunk_bytes = int(np.prod(ds.chunks)) * ds.dtype.itemsize
                nbytes = _cache_bytes(chunk_bytes) if ds.compression else 0
                # (the handle kept in _dsets too: while one is open, the reopen gets the same
                # dataset with its 32 MiB cache, and a random row reads its whole ~1 MiB chunk)
                ds = self._dsets["images"] = None
                dapl = h5py.h5p.create(h5py.h5p.DATASET_ACCESS)
                dapl.set_chunk_cache(CACHE_SLOTS, nbytes, 0.75)
                ds = self._dsets["images"] = h5py.Dataset(h5py.h5d.open(f.id, b"images", dapl=dapl), readonly=True)
            self._images = ds
            self._row_bytes = int(np.prod(ds.shape[1:])) * ds.dtype.itemsize
            if self._fileobj is None:  # (a store read through a file object has no local file to map)
                self._mm = _try_memmap(p, ds)
                # the chunk offset table is built on the first random read, not on open (one
                # callback per chunk: ~300,000 of them for 100M CIFAR-sized records)
                self._chunks = None if self._mm is not None else _LATER
        elif self._vlen:
            self._flat = f["images_flat"]
        elif self._kind == "variable":
            ds = f["pixels"]
            if ds.ndim != 1 or ds.dtype != np.uint8:
                raise CorruptStoreError(f"{p}: dataset 'pixels' is not a 1-D uint8 dataset")
            self._pixels = ds
            self._pix_size = int(ds.shape[0])
            # the chunk offset table of ``pixels``: built on the first read
            self._pix_map: Any = None if self._fileobj is not None else _LATER

    def close(self) -> None:
        self._mm = None
        self._chunks = None
        self._pix_map = None
        self._col_maps = {}
        self._dsets = {}
        f, self._f = getattr(self, "_f", None), None
        if f is not None:
            try:
                f.close()
            except Exception:
                pass
        fh, self._fileobj = getattr(self, "_fileobj", None), None
        if fh is not None:
            try:
                fh.close()
            except Exception:
                pass

    def __len__(self) -> int:
        return self._n

    def pixel_bytes(self) -> int:
        """About how many pixel bytes the store holds (a rewrite sizes its chunks by it)."""
        if self._kind == "variable" and not self._vlen:
            return self._pix_size
        if self._kind == "fixed":
            return self._row_bytes * self._n
        return self.path.stat().st_size if self._fileobj is None else 0

    def _check_open(self) -> h5py.File:
        if self._f is None:
            raise ImgtuiError(f"{self.path}: the store reader is closed")
        return self._f

    # -- cached per-record arrays (a few bytes per record) -----------------------------------
    def _small(self, name: str) -> np.ndarray:
        arr = self._cache.get(name)
        if arr is None:
            f = self._check_open()
            ds = self._dsets.get(name)
            arr = self._cache[name] = self._guard(repr(name), lambda: (ds if ds is not None else f[name])[()])
        return arr

    def _small_at(self, name: str, key: Any) -> np.ndarray:
        """``self._small(name)[key]``, reading only the rows of a one-record ``key`` while the column
        is not loaded (opening a store and reading one record should not load every label and
        checksum); the column is loaded whole after a few such reads."""
        arr = self._cache.get(name)
        if arr is not None:
            return arr[key]
        single = key.stop - key.start == 1 if isinstance(key, slice) else np.size(key) == 1
        ds = self._dsets.get(name)
        if ds is not None and self._n > COLUMN_MAX_RECORDS:
            # a large store: the rows of this batch only (the whole column would be read on the
            # first batch: 1.2 GB of labels and checksums at 100M records)
            if isinstance(key, slice):
                return self._guard(repr(name), lambda: ds[key])
            rows = np.asarray(key, dtype=np.int64).reshape(-1)
            cmap = self._col_maps.get(name, _LATER)
            if cmap is _LATER:  # unfiltered chunks (as the writer makes them): gathered from a map
                cmap = self._col_maps[name] = None if self._fileobj is not None or ds.ndim != 1 else _try_chunk_map(self.path, ds)
            if cmap is not None:
                per, offsets, mm = cmap
                size = ds.dtype.itemsize
                starts = offsets[rows // per] + (rows % per) * size
                return mm[starts[:, None] + np.arange(size)].view(ds.dtype).reshape(-1)
            uniq, inv = np.unique(rows, return_inverse=True)
            return self._guard(repr(name), lambda: _read_rows(ds, uniq))[inv.reshape(-1)]
        lookups = self._lookups.get(name, 0)
        if not single or ds is None or lookups >= 32:
            return self._small(name)[key]
        self._lookups[name] = lookups + 1
        row = int(key.start) if isinstance(key, slice) else int(np.asarray(key).reshape(-1)[0])
        return self._guard(repr(name), lambda: ds[row : row + 1])

    # -- reading ---------------------------------------------------------------------------
    def _read(self, index: int) -> Record:
        return self._records(np.array([index], dtype=np.int64), None)[0]

    def labels(self) -> list[Label]:
        return self._labels()

    def _label_column(self) -> np.ndarray:
        """int labels: the ``labels`` dataset read once (int64, 8 bytes a record, shared with the
        single-record lookups, so returned read-only); str labels: one object array."""
        if not self._str_labels:
            view = self._small("labels").view()
            view.flags.writeable = False
            return view
        ds = self._labels_ds
        out = np.empty(self._n, dtype=object)
        out[:] = _strs(self._guard("labels", lambda: ds[()]), self.path)
        if self._mixed:
            flags = self._small("label_is_int").astype(bool)
            for i in np.flatnonzero(flags).tolist():
                out[i] = int(out[i])
        return out

    def _stored_checksums(self, idx: np.ndarray) -> np.ndarray | None:
        return self._small_at("checksums", idx).astype(np.uint32, copy=False)

    def _stored_checksum(self, index: int) -> int | None:
        return int(self._small_at("checksums", slice(index, index + 1))[0])

    # -- internals -------------------------------------------------------------------------
    def _guard(self, what: str, fn: Any) -> Any:
        self._check_open()
        try:
            return fn()
        except OSError as exc:
            raise CorruptStoreError(f"{self.path}: cannot read {what} ({_one_line(exc)})") from None

    def _read_images(self, key: Any, inv: np.ndarray | None) -> np.ndarray | list[np.ndarray]:
        if self._kind == "fixed":
            block = self._guard("images", lambda: self._fixed_block(key))
            return block if inv is None else block[inv]
        if not self._vlen:
            return self._guard("images", lambda: self._packed_images(key, inv))
        flats = self._guard("images", lambda: self._flat[key] if isinstance(key, slice) else _read_rows(self._flat, key))
        shapes = shapes4(self._small("shapes")[key])
        codes = self._small("dtypes")[key]
        out = []
        for raw, shp, code in zip(flats, shapes, codes):
            dt = CODE_DTYPES.get(int(code))
            if dt is None:
                raise CorruptStoreError(f"{self.path}: unknown dtype code {int(code)} in 'dtypes'")
            shape = shape_from4(*shp)
            im = np.frombuffer(raw, dtype=dt)
            if im.size != int(np.prod(shape)):
                raise CorruptStoreError(f"{self.path}: an image's byte count does not match its stored shape {shape}")
            out.append(im.astype(dt.newbyteorder("="), copy=False).reshape(shape))
        if inv is not None:
            out = [out[k] for k in inv]
        return out

    def _packed_images(self, key: Any, inv: np.ndarray | None) -> list[np.ndarray]:
        """Images of the packed variable-shape layout: each one's bytes copied out of ``pixels``
        (from a map of the file where its chunks are plain bytes, else with one h5py read)."""
        shapes = shapes4(self._small_at("shapes", key)).reshape(-1, 4)
        codes = self._small_at("dtypes", key)
        offs = self._small_at("offsets", key)
        if self._pix_map is _LATER:
            self._pix_map = _try_chunk_map(self.path, self._pixels, random=False)
        cmap = self._pix_map
        out = []
        for shp, code, off in zip(shapes.tolist(), codes.tolist(), offs.tolist()):
            dt = CODE_DTYPES.get(code)
            if dt is None:
                raise CorruptStoreError(f"{self.path}: unknown dtype code {code} in 'dtypes'")
            if min(shp) < 0:
                raise CorruptStoreError(f"{self.path}: a negative size in 'shapes': {shp}")
            im = np.empty(shape_from4(*shp), dtype=dt.newbyteorder("<"))  # the stored byte order
            raw = im.reshape(-1).view(np.uint8)
            if off < 0 or off + raw.size > self._pix_size:
                raise CorruptStoreError(
                    f"{self.path}: an image's bytes ({off:,} + {raw.size:,}) lie outside 'pixels' ({self._pix_size:,} bytes)")
            if not raw.size:
                pass
            elif cmap is not None:
                _copy_span(raw, cmap, off)
            else:
                self._pixels.read_direct(raw, source_sel=np.s_[off : off + raw.size])
            if not im.dtype.isnative:
                im = im.astype(im.dtype.newbyteorder("="))
            out.append(im)
        if inv is not None:
            out = [out[k] for k in inv]
        return out

    def _fixed_block(self, key: Any) -> np.ndarray:
        ds = self._images
        if self._mm is not None:
            if not isinstance(key, slice) or (key.stop - key.start) * self._row_bytes < BIG_READ_BYTES:
                return np.array(self._mm[key])
        if isinstance(key, slice):
            out = np.empty((key.stop - key.start, *ds.shape[1:]), dtype=ds.dtype)
            if out.shape[0]:
                ds.read_direct(out, source_sel=key)
            return out
        if self._chunks is _LATER:
            self._chunks = _try_chunk_map(self.path, ds)
        if self._chunks is not None:
            return self._rows_from_chunks(key)
        return _read_rows(ds, key)

    def _rows_from_chunks(self, rows: np.ndarray) -> np.ndarray:
        """Random rows of an unfiltered chunked dataset, copied from a map of the file."""
        per_chunk, offsets, mm = self._chunks  # type: ignore[misc]
        rb = self._row_bytes
        out = np.empty((rows.size, *self._images.shape[1:]), dtype=self._images.dtype)
        flat = out.reshape(rows.size, -1).view(np.uint8)
        starts = offsets[rows // per_chunk] + (rows % per_chunk) * rb
        for k, b in enumerate(starts.tolist()):
            flat[k] = mm[b : b + rb]
        return out

    def _label_values(self, key: Any, inv: np.ndarray | None) -> list[Label]:
        if not self._str_labels:
            vals = self._small_at("labels", key)
            out: list[Label] = vals.tolist()
        else:
            ds = self._labels_ds
            out = _strs(self._guard("labels", lambda: ds[key] if isinstance(key, slice) else _read_rows(ds, key)), self.path)
            if self._mixed:
                flags = self._small_at("label_is_int", key)
                out = [int(v) if fl else v for v, fl in zip(out, flags)]
        if inv is not None:
            out = [out[k] for k in inv]
        return out

    def _metadata(self, key: Any, inv: np.ndarray | None, n: int) -> list[dict]:
        if self._meta_empty:
            return [{} for _ in range(n)]
        ds = self._meta_ds
        raw = self._guard("metadata", lambda: ds[key] if isinstance(key, slice) else _read_rows(ds, key))
        try:
            out = [loads_metadata(t) for t in raw]
        except ValueError:
            raise CorruptStoreError(f"{self.path}: a record's metadata is not valid JSON") from None
        if inv is not None:
            out = [out[k] for k in inv]
        return out

    # -- info / verify -----------------------------------------------------------------------
    def info(self) -> dict:
        d = super().info()
        h = self.manifest.get("hdf5", {})
        extra = {"images_layout": h.get("images_layout"), "notes": h.get("notes", [])}
        if self._kind == "fixed" and self._f is not None:
            ds = self._images
            extra.update(
                dataset_shape=list(ds.shape),
                dataset_dtype=str(ds.dtype),
                chunks=list(ds.chunks) if ds.chunks else None,
                compression=ds.compression,
            )
        d["hdf5"] = extra
        return d


def _strs(raw: np.ndarray, path: Path) -> list[str]:
    """Values of a vlen UTF-8 str dataset, read as bytes, decoded once per distinct value (class
    names repeat: 10,000 CIFAR labels read 2-3x faster than through h5py's ``asstr``)."""
    try:
        texts = {b: b.decode("utf-8") if isinstance(b, bytes) else str(b) for b in set(raw.tolist())}
    except UnicodeDecodeError:
        raise CorruptStoreError(f"{path}: a label is not valid UTF-8") from None
    return list(map(texts.__getitem__, raw.tolist()))


def _read_rows(ds: Any, rows: np.ndarray) -> np.ndarray:
    """Rows ``rows`` (sorted, unique) of a dataset: runs of consecutive rows are read as slices."""
    if rows.size == 0:
        return ds[0:0]
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = np.concatenate(([0], breaks))
    ends = np.concatenate((breaks, [rows.size]))
    if starts.size == 1:
        return ds[int(rows[0]) : int(rows[-1]) + 1]
    parts = [ds[int(rows[s]) : int(rows[e - 1]) + 1] for s, e in zip(starts, ends)]
    return np.concatenate(parts)


def _copy_span(dst: np.ndarray, cmap: tuple[int, np.ndarray, np.ndarray], start: int) -> None:
    """``dst`` (flat uint8) <- bytes ``start ..`` of a chunked 1-D uint8 dataset, copied from the
    map of its file chunk by chunk (``_try_chunk_map``)."""
    per, offsets, mm = cmap
    n, pos = dst.size, 0
    while pos < n:
        k, r = divmod(start + pos, per)
        take = min(n - pos, per - r)
        base = int(offsets[k]) + r
        dst[pos : pos + take] = mm[base : base + take]
        pos += take


def _random_access(mm: np.memmap, rows: int, random: bool = True) -> np.ndarray:
    """``mm`` as a plain array; for a store of more than COLUMN_MAX_RECORDS records the map is
    advised MADV_RANDOM: a page fault then reads its page, not the ~128 KiB of read-around that
    makes cold random rows of a large store several times slower (LMDB maps the same way).
    (``random=False``: a map read in spans of many pages, left to the kernel's read-ahead.)"""
    if random and rows > COLUMN_MAX_RECORDS:
        raw = getattr(mm, "_mmap", None)
        if raw is not None and hasattr(raw, "madvise") and hasattr(mmap, "MADV_RANDOM"):
            try:
                raw.madvise(mmap.MADV_RANDOM)
            except (OSError, ValueError):
                pass
    return mm.view(np.ndarray)


def _try_memmap(path: Path, ds: h5py.Dataset) -> np.memmap | None:
    """Contiguous, unfiltered, allocated datasets are plain bytes in the file: map them."""
    try:
        if ds.chunks is not None or ds.compression is not None or ds.shape[0] == 0:
            return None
        offset = ds.id.get_offset()
        if offset is None:
            return None
        if offset + ds.id.get_storage_size() > path.stat().st_size:
            return None  # truncated: let h5py report it
        return _random_access(np.memmap(path, dtype=ds.dtype, mode="r", offset=offset, shape=ds.shape), ds.shape[0])
    except Exception:
        return None


def _try_chunk_map(path: Path, ds: h5py.Dataset, random: bool = True) -> tuple[int, np.ndarray, np.memmap] | None:
    """For unfiltered chunks of whole records: (records per chunk, byte offset of each chunk, map).

    Such chunks hold plain row-major bytes, so random rows can be copied straight out of a map of
    the file instead of one HDF5 read call per row.
    """
    try:
        if ds.chunks is None or ds.compression is not None or ds.shape[0] == 0 or not ds.dtype.isnative:
            return None
        if tuple(ds.chunks[1:]) != tuple(ds.shape[1:]) or ds.id.get_create_plist().get_nfilters():
            return None
        per_chunk = ds.chunks[0]
        n_chunks = -(-ds.shape[0] // per_chunk)
        chunk_bytes = per_chunk * int(np.prod(ds.shape[1:])) * ds.dtype.itemsize
        offsets = np.full(n_chunks, -1, dtype=np.int64)
        bad = []

        def visit(info: Any) -> None:
            k = info.chunk_offset[0] // per_chunk
            if info.size != chunk_bytes or info.filter_mask or not 0 <= k < n_chunks:
                bad.append(k)
            else:
                offsets[k] = info.byte_offset

        ds.id.chunk_iter(visit)
        if bad or (offsets < 0).any() or int(offsets.max()) + chunk_bytes > path.stat().st_size:
            return None
        return per_chunk, offsets, _random_access(np.memmap(path, dtype=np.uint8, mode="r"), ds.shape[0], random)
    except Exception:
        return None


def _open_error(path: Path, exc: OSError) -> ImgtuiError:
    if _open_for_write_error(exc):
        return IncompleteStoreError(incomplete_message(path))
    if _lock_error(exc):
        return IncompleteStoreError(
            f"{path} is locked: another process is still writing it (wait for it to finish, "
            "or re-create it with --overwrite if that writer is gone)"
        )
    return CorruptStoreError(f"{path} cannot be opened as HDF5; it is damaged or truncated ({_one_line(exc)})")


# ----------------------------------------------------------------------------------------------
# backend
# ----------------------------------------------------------------------------------------------
