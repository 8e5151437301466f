"""LMDB backend: records packed in blocks of consecutive records, one LMDB value per block.

Layout of a store (a folder, ``lmdb.open(path, subdir=True, max_dbs=4)``):

- sub-database ``blocks``: key = index of the block's first record as 8-byte big-endian (keys sort
  in record order); value = a block:

  * 16-byte header ``struct '<4sIQ'``: magic ``b"IMB1"``, record count, first record index;
  * ``count`` entries of the 32-byte little-endian table :data:`ENTRY` (byte offset of the payload
    in the value, payload bytes, crc32 of the pixels, h, w, c, dtype code (1=uint8 2=uint16 3=int16
    4=uint32 5=int32 6=float32 7=float64 8=bool 9=int8), ndim,
    encoding 0=raw 1=png, and d: the depth of a 3-D record (DxHxW[xC] kept as d, h, w, c), 0 for
    an image (bytes that were padding before 3-D records, so older stores read unchanged));
  * the payloads: raw C-order pixel bytes (little-endian) or one lossless PNG per record
    (``encoding=png`` applies to uint8/uint16 only; the other dtypes are always raw).

  A writer picks the records per block ``B`` from the first record's size so that a block is
  about ``block_bytes`` (256 KiB); B=1 for images of 256 KiB or more. A block is closed early
  when the next record would push it over ``block_bytes`` (variable shapes).
- sub-database ``labels``: same keys; value = JSON list of ``[label, metadata]`` per record of the
  block, so ``labels()`` never touches pixels.
- sub-database ``meta``: key ``manifest`` = the JSON manifest, written in the writer's last
  transaction. No manifest means the writer did not finish. Keys ``entries/<k>``, ``entries``,
  ``entries-blocks`` and ``entries-labels``: a copy of every block's record table, where each
  block lies and every label, stamped with the manifest (see ENTRIES_KEY): readers build their
  index and label column from it.

Why blocks: one 3,072-byte CIFAR image per key costs a whole 4 KiB overflow page (1.34x the
pixels) and one Python-level get per record; a 256 KiB block wastes < 2 % and is one get.

Readers open the environment read-only without locks (a complete store has no writer), keep one
read transaction for their lifetime and copy every array they return out of the map.
"""

from __future__ import annotations

import ctypes
import gc
import io
import json
import os
import struct
import warnings
import weakref
from pathlib import Path
from typing import Any, Iterator, Sequence

import lmdb
import numpy as np
import xxhash

from ...errors import (
    first_line,
    CorruptStoreError,
    ImgtuiError,
    IncompleteStoreError,
    InvalidRecordError,
    StoreChangedError,
    StoreFullError,
    StoreNotFoundError,
    WrongBackendError,
)
from ...records import CODE_DTYPES, DTYPE_CODES, Label, Record, is_volume, shape4, shape_from4
from ..base import StoreReader, StoreWriter, check_manifest, disk_nearly_full, labels_to_array

_LABEL_JSON = json.JSONEncoder(ensure_ascii=False)
#: the block header: magic, record count, index of the first record
HEADER = struct.Struct("<4sIQ")
MAGIC = b"IMB1"
#: one entry of a block's record table
ENTRY = np.dtype(
    [
        ("offset", "<u4"),
        ("nbytes", "<u4"),
        ("crc", "<u4"),
        ("h", "<u4"),
        ("w", "<u4"),
        ("c", "<u2"),
        ("dtype", "u1"),
        ("ndim", "u1"),
        ("enc", "u1"),
        ("d", "<u4"),
        ("pad", "V3"),
    ]
)
assert ENTRY.itemsize == 32
#: one ENTRY read with struct (single lookups)
_ENTRY_STRUCT = struct.Struct("<IIIIIHBBBI3x")
_ENTRY_FIELDS = ("offset", "nbytes", "crc", "h", "w", "c", "dtype", "ndim", "enc", "d")
assert _ENTRY_STRUCT.size == ENTRY.itemsize
DTYPES = CODE_DTYPES  # code -> dtype (1 uint8, 2 uint16, ...: imgtui.records.DTYPE_CODES)
ENC_RAW, ENC_PNG = 0, 1
LAYOUT = "imgtui-lmdb-blocks-1"
MAX_DBS = 4
DB_BLOCKS, DB_LABELS, DB_META = b"blocks", b"labels", b"meta"
MANIFEST_KEY = b"manifest"
#: the largest LMDB value this backend writes (header + table + pixels)
MAX_VALUE_BYTES = (1 << 31) - 1
DEFAULT_BLOCK_BYTES = 256 * 1024
DEFAULT_MAP_SIZE = 64 * 1024 * 1024
#: the writer puts its blocks in one write transaction per this many bytes of blocks (the blocks
#: and LMDB's copies of the dirty pages are held in memory until the commit)
TXN_BYTES = 8 << 20
MIN_MAP_SIZE = 64 * 1024
#: stores of more records than this are read without the whole-store record index (56 bytes a
#: record and one pass over every block): a batch looks up the blocks of its own records
INDEX_MAX_RECORDS = 4_000_000
#: from this many records, small batches (random ones: a data loader) also read only their own
#: records' blocks, until they have looked up ``1 / LOOKUP_BUDGET`` of the store; only then is the
#: whole-store index built (ski rental: a lookup costs ~12 us a record, the index one pass over
#: every block, which at 1,000,000 records took 1.2 s warm and 54 s with a cold page cache, and
#: it came with the first batch of 64)
LOOKUP_MIN_RECORDS = 250_000
LOOKUP_BUDGET = 24

#: ``meta`` keys ``entries/<k>``: the writer's copy of every block's record table, rows in record
#: order, ENTRIES_CHUNK rows (2 MiB) a value; ``entries``: ENTRIES_HEADER (magic, records, rows per
#: chunk, XXH3-64 of the manifest value it was written with). A reader builds the record index
#: from it and ``entries-blocks`` (no block page read: with a cold page cache, reading the first
#: page of every block took 54-60 s at 1,000,000 records). A change writes the copy anew with its
#: manifest; a copy whose stamp does not match the manifest is not used (readers scan the blocks).
ENTRIES_KEY = b"entries"
#: ``meta`` key ``entries-blocks``: the manifest's stamp (8 bytes), then (first record, bytes from the
#: first block's value, bytes) of every block's value, three little-endian 64-bit integers each (the
#: pages of a store nobody changed stay where they are): with it a reader needs no
#: cursor pass over the blocks either (iterating them reads each value's first page: 63 s cold at
#: 1,000,000 records)
BLOCKS_AT_KEY = b"entries-blocks"
#: ``meta`` key ``entries-labels``: the manifest's stamp (8 bytes), the byte length of a JSON list of
#: the distinct labels (uint32), that list, then every record's label as an index into it (int32);
#: kept while there are at most LABELS_MAX_DISTINCT labels (``labels_array()`` of 1,000,000 records
#: reads 4 MB instead of parsing every labels block: 531 ms; CIFAR's 10,000 str labels: 3.5 ms)
LABELS_KEY = b"entries-labels"
LABELS_MAX_DISTINCT = 65536
BLOCK_AT = np.dtype([("first", "<u8"), ("offset", "<i8"), ("size", "<u8")])
ENTRIES_CHUNK = 65536
ENTRIES_HEADER = struct.Struct("<4sQQQ")
ENTRIES_MAGIC = b"IMX1"


def _address(value: Any) -> int:
    """Where a value LMDB returned (a buffer into its map) lies in memory."""
    return int(np.frombuffer(value, np.uint8).__array_interface__["data"][0])


def _libc() -> Any:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        return libc if hasattr(os, "posix_fadvise") else None  # Linux-like systems only
    except (OSError, AttributeError):
        return None


_LIBC = _libc()
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_MADV_WILLNEED = 3
_MADV_DONTNEED = 4


def _unmap_pages(address: int, nbytes: int) -> None:
    """Take the pages of ``nbytes`` at ``address`` (in LMDB's read-only shared map) out of this
    process's resident set (``madvise(MADV_DONTNEED)``: they stay in the page cache, a later access
    maps them again). py-lmdb touches every page of each value it returns (its "preload"), so a
    scan over all blocks would otherwise map the whole store into the writer's RSS."""
    if _LIBC is None or nbytes <= 0:
        return
    start = address & ~(_PAGE - 1)
    end = (address + nbytes + _PAGE - 1) & ~(_PAGE - 1)
    _LIBC.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), _MADV_DONTNEED)


def _mapping_around(addr: int) -> tuple[int, int] | None:
    """The [start, end) of this process's memory mapping that holds ``addr`` (Linux
    /proc/self/maps; None elsewhere or when not found)."""
    try:
        with open("/proc/self/maps", "rb") as f:
            for line in f:
                lo, _, hi = line.split(b" ", 1)[0].partition(b"-")
                lo, hi = int(lo, 16), int(hi, 16)
                if lo <= addr < hi:
                    return lo, hi
    except (OSError, ValueError):
        return None
    return None


def _entries_key(k: int) -> bytes:
    return b"entries/%012d" % k


def block_places(txn: Any, db: Any, count: int, stamp: int) -> bytes:
    """The ``entries-blocks`` value: ``stamp`` (8 bytes) and the BLOCK_AT row of every block of
    the first ``count`` records, read through ``txn``: only blocks committed before it (their
    values are in the map; a block put in ``txn`` itself is not where it will be)."""
    rows = []
    for k, v in txn.cursor(db=db):
        first = int.from_bytes(bytes(k), "big")
        if first >= count:
            break
        at = _address(v)
        rows.append((first, at, len(v)))
        if len(v) >= 16 * _PAGE:  # (a large block: the pages its preload mapped)
            _unmap_pages(at, len(v))
    places = np.array(rows, BLOCK_AT)
    if len(places):
        places["offset"] -= places["offset"][0]  # from the first block's value (py-lmdb shows no map base)
    return stamp.to_bytes(8, "little") + places.tobytes()


class LabelCodes:
    """Labels in record order as codes into the distinct labels (for the ``entries-labels`` copy);
    ``ok`` turns False past LABELS_MAX_DISTINCT distinct labels (no copy then)."""

    def __init__(self) -> None:
        self.index: dict[tuple, int] = {}
        self.parts: list[np.ndarray] = []
        self.ok = True

    def add(self, labels: Sequence) -> None:
        if not self.ok:
            return
        index = self.index  # keyed with the type: 1 and "1" are two labels
        # (labels are ints and strs: as dict keys, 1 and "1" stay two here too)
        local = {x: index.setdefault((type(x) is int, x), len(index)) for x in dict.fromkeys(labels)}
        self.parts.append(np.fromiter(map(local.__getitem__, labels), np.int32, len(labels)))
        if len(index) > LABELS_MAX_DISTINCT:
            self.ok, self.index, self.parts = False, {}, []

    def value(self, stamp: int) -> bytes:
        head = json.dumps([x for _, x in self.index], ensure_ascii=False).encode("utf-8")
        codes = np.concatenate(self.parts).astype("<i4") if self.parts else np.zeros(0, "<i4")
        return stamp.to_bytes(8, "little") + len(head).to_bytes(4, "little") + head + codes.tobytes()


def entries_values(rows: bytes, count: int, stamp: int, first_chunk: int = 0) -> list[tuple[bytes, bytes]]:
    """The ``entries/<k>`` values (from chunk ``first_chunk`` on) and the ``entries`` header for the
    record table ``rows`` (ENTRY rows in record order) of a store of ``count`` records and
    manifest ``stamp``."""
    size = ENTRIES_CHUNK * ENTRY.itemsize
    out = [(_entries_key(first_chunk + k), rows[k * size : (k + 1) * size]) for k in range(-(-len(rows) // size))]
    return out + [(ENTRIES_KEY, ENTRIES_HEADER.pack(ENTRIES_MAGIC, count, ENTRIES_CHUNK, stamp))]


def _manifest_stamp(raw: Any) -> int:
    return xxhash.xxh3_64_intdigest(raw)


_OPTION_DEFAULTS = {"encoding": "raw", "png_level": 1, "block_bytes": DEFAULT_BLOCK_BYTES, "map_size": DEFAULT_MAP_SIZE}


def _part(metas: list | None, a: int, b: int) -> list | None:
    return None if metas is None else metas[a:b]


def _key(i: int) -> bytes:
    return int(i).to_bytes(8, "big")


def _png_encode(image: np.ndarray, level: int) -> bytes | None:
    """Lossless PNG of ``image`` via Pillow, or None when Pillow cannot hold it exactly."""
    from PIL import Image

    a = image
    if is_volume(a.shape):
        return None  # a PNG holds one plane: volumes are stored raw
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.dtype not in (np.uint8, np.uint16) or (a.dtype == np.uint16 and a.ndim == 3):
        return None  # Pillow has no 16-bit RGB/RGBA mode, PNG no signed/float/wider samples: stored raw
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG", compress_level=level)
    return buf.getvalue()


def _png_decode(data: bytes, dtype: np.dtype, shape: tuple) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        arr = np.asarray(im)
    if arr.dtype != dtype:
        arr = arr.astype(dtype)
    return np.ascontiguousarray(arr).reshape(shape)


def _int_labels_block(raw: bytes) -> np.ndarray | None:
    """The labels of a labels block ``[[3,{}],[5,{}],...]`` (int labels, empty metadata) as int64,
    parsed by numpy; None for any other block (str labels, metadata, anything unexpected), which
    the caller parses as JSON."""
    s = raw.replace(b",{}", b"")
    if not s.startswith(b"[[") or s.translate(None, b"0123456789,-[]"):
        return None
    count = raw.count(b",{}")
    digits = s.translate(None, b"[]")
    if not digits or digits.count(b",") != count - 1 or s.count(b"[") != count + 1:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy warns (and stops) at text it cannot parse
        try:
            arr = np.fromstring(digits, dtype=np.int64, sep=",")
        except (ValueError, DeprecationWarning, OverflowError):
            return None
    if len(arr) != count or (arr == np.iinfo(np.int64).max).any() or (arr == np.iinfo(np.int64).min).any():
        return None  # (numpy saturates numbers past int64: those blocks are parsed as JSON)
    return arr


def _loads_block(raw: bytes) -> Any:
    """``json.loads`` of a labels block with the cyclic garbage collector paused: the ~1,000 small
    lists and dicts of a block triggered a full collection over every object the process holds
    (a single read took 30-46 ms instead of 2 ms in a process that had imported zarr and h5py)."""
    paused = gc.isenabled()
    gc.disable()
    try:
        return json.loads(raw)
    finally:
        if paused:
            gc.enable()


class _LabelsBlock:
    """One labels block for single lookups: ``block[j]`` -> (label, metadata). A block without
    any string (no ``"``: int labels, empty metadata, ``[[3,{}],[5,{}],...]``) is not parsed: item
    j starts at the j-th ``[`` after the first (numpy passes over the block's bytes; as many
    ``[`` as ``{`` rules out nested arrays) and must read exactly ``[<int>,{}]``; any other block is
    parsed as JSON once."""

    def __init__(self, raw: bytes) -> None:
        self.items = None
        self.starts = None
        self.raw = raw
        if raw.startswith(b"[[") and b'"' not in raw:  # (without strings a "{" can only open a "{}")
            arr = np.frombuffer(raw, np.uint8)
            starts = np.flatnonzero(arr == 0x5B)[1:]
            if len(starts) == np.count_nonzero(arr == 0x7B):
                self.starts = starts
        if self.starts is None:
            self.items = _loads_block(raw)

    def __getitem__(self, j: int) -> tuple:
        if self.items is not None:
            return self.items[j]
        if j < 0:
            raise IndexError(j)
        raw = self.raw
        a = int(self.starts[j]) + 1
        c = raw.index(b",", a)
        tok = raw[a:c]
        digits = tok[1:] if tok[:1] == b"-" else tok
        if raw[c : c + 4] != b",{}]" or not digits.isdigit() or len(digits) > 18:
            raise ValueError("not an int label with empty metadata")
        return int(tok), {}


def _set_shapes(table: np.ndarray, shapes: list[tuple]) -> None:
    """The shape fields of entries: an image keeps h, w, c (d = 0, as before 3-D records); a
    volume keeps its depth in d (written in bytes that were padding, zero in older stores)."""
    packed = np.array([shape4(s) for s in shapes], dtype=np.int64).reshape(-1, 4)
    table["d"], table["h"], table["w"], table["c"] = packed.T
    table["ndim"] = [len(s) for s in shapes]


def _shape_of(e: np.void | np.ndarray | dict) -> tuple:
    d = int(e["d"])
    if d:
        return shape_from4(d, int(e["h"]), int(e["w"]), int(e["c"]))
    if int(e["ndim"]) == 2:
        return (int(e["h"]), int(e["w"]))
    return (int(e["h"]), int(e["w"]), int(e["c"]))


# ---------------------------------------------------------------------------------------------
# writer
# ---------------------------------------------------------------------------------------------


class LmdbWriter(StoreWriter):
    backend = "lmdb"
    default_batch_size = 512

    @classmethod
    def check_options(cls, options: dict) -> dict:
        unknown = sorted(set(options) - set(_OPTION_DEFAULTS))
        if unknown:
            raise ImgtuiError(
                f"lmdb: unknown option(s) {', '.join(unknown)} (known: {', '.join(sorted(_OPTION_DEFAULTS))})"
            )
        opts = {**_OPTION_DEFAULTS, **options}
        enc = opts["encoding"]
        if not isinstance(enc, str) or enc.lower() not in ("raw", "png"):
            raise ImgtuiError(f"lmdb: option encoding must be 'raw' or 'png', got {enc!r}")
        opts["encoding"] = enc.lower()
        for name, lo, hi in (("png_level", 0, 9), ("block_bytes", 4096, 1 << 30), ("map_size", MIN_MAP_SIZE, 1 << 50)):
            v = opts[name]
            if isinstance(v, str) and v.strip().lstrip("-").isdigit():
                v = int(v)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
                raise ImgtuiError(f"lmdb: option {name} must be an integer from {lo:,} to {hi:,}, got {opts[name]!r}")
            opts[name] = int(v)
        return opts

    def _open_store(self) -> None:
        self._env = None
        self._pending: list[tuple[Record, int]] = []
        self._pending_bytes = 0
        #: the last records of a write_array call short of a whole block: (images, labels,
        #: checksums, (metadata, JSON) pairs or None)
        self._tail: tuple[np.ndarray, list, list, list | None] | None = None
        #: blocks made from arrays, not put yet (at most about TXN_BYTES)
        self._held: list[tuple[bytes, bytes, bytes]] = []
        #: the block table _put_array_blocks made last, by (records, shape, dtype): reused
        self._tables: dict[tuple, np.ndarray] = {}
        self._held_bytes = 0
        self._next_index = 0  # first record of the pending block
        self._rpb = 0  # records per block, chosen from the first record
        self._uniform = True
        self._nblocks = 0
        #: record table rows not yet put as an ``entries/<k>`` value, chunks put, and whether the
        #: store stays small enough for readers to build the whole index (INDEX_MAX_RECORDS)
        self._ent_buf = b""
        self._ent_chunks = 0
        self._ent_on = True
        self._lab_codes = LabelCodes()
        self._map_size = self.options["map_size"]
        self._env = lmdb.open(
            str(self.build_path),
            subdir=True,
            map_size=self._map_size,
            max_dbs=MAX_DBS,
            sync=False,
            metasync=False,
            readahead=False,
            meminit=False,
            # no writemap: with it, a full disk kills the process with SIGBUS (the map is written
            # through page faults); without it, LMDB writes with pwrite and reports ENOSPC
            writemap=False,
        )
        self._db_blocks = self._env.open_db(DB_BLOCKS)
        self._db_labels = self._env.open_db(DB_LABELS)
        self._db_meta = self._env.open_db(DB_META)

    def _check_record(self, record: Record, index: int) -> None:
        need = record.image.nbytes + HEADER.size + ENTRY.itemsize
        if need > MAX_VALUE_BYTES:
            raise InvalidRecordError(
                f"record {index}: image of {record.image.nbytes:,} bytes is too large for one LMDB value "
                f"(limit {MAX_VALUE_BYTES - HEADER.size - ENTRY.itemsize:,} bytes); use the disk or hdf5 backend"
            )
        if self._rpb == 0:
            self._rpb = max(1, self.options["block_bytes"] // max(1, record.image.nbytes))

    # -- blocks ----------------------------------------------------------------------------
    def _make_block(self) -> tuple[bytes, bytes, bytes]:
        pend = self._pending
        cnt = len(pend)
        first = self._next_index
        png = self.options["encoding"] == "png"
        level = self.options["png_level"]
        payloads: list[Any] = []
        encs = []
        for rec, _ in pend:
            img = rec.image
            if img.dtype.byteorder == ">":
                img = img.astype(img.dtype.newbyteorder("<"))
            data = None
            if png:
                data = _png_encode(img, level)
                if data is not None and len(data) >= img.nbytes:
                    data = None  # PNG would not save space: keep the raw pixels
            if data is None:
                payloads.append(img)
                encs.append(ENC_RAW)
            else:
                payloads.append(data)
                encs.append(ENC_PNG)
        ent = np.zeros(cnt, ENTRY)
        nbytes = np.fromiter(
            (p.nbytes if isinstance(p, np.ndarray) else len(p) for p in payloads), np.int64, cnt
        )
        start = HEADER.size + cnt * ENTRY.itemsize
        offs = np.empty(cnt, np.int64)
        offs[0] = start
        np.cumsum(nbytes[:-1], out=offs[1:])
        offs[1:] += start
        if int(offs[-1] + nbytes[-1]) > MAX_VALUE_BYTES:
            raise InvalidRecordError(
                f"records {first}-{first + cnt - 1}: block of {int(offs[-1] + nbytes[-1]):,} bytes is too large for one LMDB value"
            )
        ent["offset"] = offs
        ent["nbytes"] = nbytes
        ent["crc"] = [c for _, c in pend]
        _set_shapes(ent, [rec.image.shape for rec, _ in pend])
        ent["dtype"] = [DTYPE_CODES[rec.image.dtype] for rec, _ in pend]
        ent["enc"] = encs
        value = b"".join([HEADER.pack(MAGIC, cnt, first), ent.tobytes(), *payloads])
        labels = "[" + ",".join(
            f"[{rec.label if type(rec.label) is int else _LABEL_JSON.encode(rec.label)},{rec.meta_json}]"
            for rec, _ in pend
        ) + "]"
        self._note_labels([rec.label for rec, _ in pend])
        key = _key(first)
        self._next_index = first + cnt
        self._pending = []
        self._pending_bytes = 0
        self._nblocks += 1
        return key, value, labels.encode("utf-8")

    # -- write_array: whole blocks straight from the array ------------------------------------
    def _array_block(self, images: np.ndarray, labels: list, metas: list | None, first: int) -> Any:
        if self.options["encoding"] != "raw" or not np.little_endian or set(map(type, labels)) not in ({int}, {str}):
            return super()._array_block(images, labels, metas, first)
        nb = images[0].nbytes
        if nb + HEADER.size + ENTRY.itemsize > MAX_VALUE_BYTES:
            self._check_record(Record(images[0], labels[0]), first)  # raises its one-line error
        if self._rpb == 0:
            self._rpb = max(1, self.options["block_bytes"] // max(1, nb))
        if self._rpb > 1 and self._rpb * nb > self.options["block_bytes"]:
            # larger images than the first record's: blocks close by bytes (the Records path)
            return super()._array_block(images, labels, metas, first)
        return None

    def _write_arrays(self, block: Any, images: np.ndarray, labels: list, metas: list | None,
                      checksums: list[int], start: int) -> None:
        """Raw blocks of B records cut from the array: the block table is one numpy record
        array per block, the labels value one join, no Record per image. Records pending from
        ``write`` complete their block through the Records path first; the last records short
        of a block wait (copied) for the next call or the close."""
        if block is not None:
            self._write_batch(block, checksums, start)
            return
        n = len(images)
        pos = 0
        if self._pending:  # a block begun by write(): finish it record by record
            take = min(n, self._rpb - len(self._pending))
            recs = super()._array_block(images[:take], labels[:take], _part(metas, 0, take), start)
            self._write_batch(recs, checksums[:take], start)
            pos = take
            if self._pending:  # closed early by bytes: the block is still open, go on by Records
                recs = super()._array_block(images[pos:], labels[pos:], _part(metas, pos, n), start + pos)
                self._write_batch(recs, checksums[pos:], start + pos)
                return
        if self._tail is not None:  # the short end of the previous array: one block with it
            t_imgs, t_labs, t_sums, t_metas = self._tail
            if t_imgs.shape[1:] != images.shape[1:] or t_imgs.dtype != images.dtype:
                self._tail_to_pending()
                self._write_arrays(None, images[pos:], labels[pos:], _part(metas, pos, n), checksums[pos:], start + pos)
                return
            take = min(n - pos, self._rpb - len(t_imgs))
            self._tail = None
            images_ = np.concatenate([t_imgs, images[pos : pos + take]])
            labels_ = t_labs + labels[pos : pos + take]
            sums_ = t_sums + checksums[pos : pos + take]
            metas_ = None
            if t_metas is not None or metas is not None:
                metas_ = (t_metas or [({}, "{}")] * len(t_imgs)) + (_part(metas, pos, pos + take) or [({}, "{}")] * take)
            pos += take
            if len(images_) < self._rpb:
                self._tail = (images_, labels_, sums_, metas_)
                return
            self._put_array_blocks(images_, labels_, sums_, metas_)
        rpb = self._rpb
        full = (n - pos) // rpb * rpb
        if full:
            self._put_array_blocks(images[pos : pos + full], labels[pos : pos + full], checksums[pos : pos + full],
                                   _part(metas, pos, pos + full))
            pos += full
        if pos < n:
            self._tail = (images[pos:].copy(), list(labels[pos:]), list(checksums[pos:]), _part(metas, pos, n))

    def _put_array_blocks(self, images: np.ndarray, labels: list, checksums: list[int], metas: list | None) -> None:
        """Blocks of ``rpb`` records (the last may be shorter) from one array, put in
        transactions of about TXN_BYTES."""
        rpb = self._rpb
        n = len(images)
        nb = images[0].nbytes
        shape = images.shape[1:]
        code = DTYPE_CODES[images.dtype]
        flat = images.reshape(n, -1).view(np.uint8)
        sums = np.asarray(checksums, dtype=np.uint32)
        ltexts = labels  # the labels as JSON: ints as they are, strs encoded once per distinct label
        if type(labels[0]) is str:
            texts = {lab: _LABEL_JSON.encode(lab) for lab in set(labels)}
            ltexts = list(map(texts.__getitem__, labels))
        blocks = self._held  # put TXN_BYTES at a time, across calls (a commit costs ~1 ms)
        for a in range(0, n, rpb):
            cnt = min(rpb, n - a)
            table = self._tables.get((cnt, shape, code))
            if table is None:
                if len(self._tables) > 8:
                    self._tables.clear()
                table = self._tables[(cnt, shape, code)] = np.zeros(cnt, ENTRY)
                table["offset"] = HEADER.size + cnt * ENTRY.itemsize + np.arange(cnt, dtype=np.int64) * nb
                table["nbytes"] = nb
                _set_shapes(table, [shape] * cnt)
                table["dtype"] = code
                table["enc"] = ENC_RAW
            table["crc"] = sums[a : a + cnt]
            first = self._next_index
            value = b"".join([HEADER.pack(MAGIC, cnt, first), table.tobytes(), flat[a : a + cnt].data])
            # the labels value _make_block writes: [[label,metadata JSON],...]
            if metas is None:
                labs = "[[" + ",{}],[".join(map(str, ltexts[a : a + cnt])) + ",{}]]"
            else:
                labs = "[" + ",".join(f"[{lab},{m[1]}]" for lab, m in zip(ltexts[a : a + cnt], metas[a : a + cnt])) + "]"
            blocks.append((_key(first), value, labs.encode("utf-8")))
            self._note_labels(labels[a : a + cnt])
            self._next_index = first + cnt
            self._nblocks += 1
            self._held_bytes += len(value)
            if self._held_bytes >= TXN_BYTES:
                self._put_held()
                blocks = self._held

    def _put_held(self) -> None:
        """Put the blocks ``_put_array_blocks`` made and kept (before any later block)."""
        blocks, self._held, self._held_bytes = self._held, [], 0
        if blocks:
            self._put_blocks(blocks)

    def _tail_to_pending(self) -> None:
        """The short end of an array as pending Records (a write() or another shape follows)."""
        if self._tail is None:
            return
        imgs, labs, sums, metas = self._tail
        self._tail = None
        first = self._next_index
        recs = super()._array_block(imgs, labs, metas, first)
        self._pending.extend(zip(recs, sums))
        self._pending_bytes += imgs.nbytes

    def _write_batch(self, records: list[Record], checksums: list[int], start: int) -> None:
        self._put_held()
        self._tail_to_pending()
        blocks: list[tuple[bytes, bytes, bytes]] = []
        held = 0  # bytes of the blocks not yet put
        limit = self.options["block_bytes"]
        for rec, crc in zip(records, checksums):
            nb = rec.image.nbytes
            if self._pending and self._pending_bytes + nb > limit:
                self._uniform = False  # closed before B records: readers must look the block up
                blocks.append(self._make_block())
                held += len(blocks[-1][1])
            self._pending.append((rec, crc))
            self._pending_bytes += nb
            if len(self._pending) >= self._rpb:
                blocks.append(self._make_block())
                held += len(blocks[-1][1])
            if held >= TXN_BYTES:
                # one transaction per TXN_BYTES of blocks: the blocks' bytes and the transaction's
                # dirty pages (LMDB copies them in memory until the commit) stay bounded
                self._put_blocks(blocks)
                blocks, held = [], 0
        if blocks:
            self._put_blocks(blocks)

    def _retry_grow(self, fn) -> None:
        """Run the write transaction ``fn``; on MapFullError double the map and run it again."""
        while True:
            try:
                fn()
                return
            except lmdb.MapFullError:
                pass  # the with-block aborted the transaction: no transaction is open now
            except lmdb.Error as exc:
                # LMDB reports a failed pwrite as EIO, whatever the cause: look at the free space
                if "No space left" in str(exc) or disk_nearly_full(self.build_path):
                    raise StoreFullError(f"disk full while writing {self.path}: no space left on device") from None
                raise
            new = self._map_size * 2
            if new > (1 << 50):
                raise StoreFullError(f"{self.path}: LMDB map cannot grow past {self._map_size:,} bytes")
            try:
                self._env.set_mapsize(new)
            except lmdb.Error as exc:
                raise StoreFullError(f"{self.path}: cannot grow the LMDB map to {new:,} bytes ({exc})") from None
            self._map_size = new

    def _put_blocks(self, blocks: list[tuple[bytes, bytes, bytes]]) -> None:
        chunks, rest = self._entry_chunks(blocks)

        def txn_fn() -> None:
            with self._env.begin(write=True) as txn:
                cur = txn.cursor(db=self._db_blocks)
                _, added = cur.putmulti([(k, v) for k, v, _ in blocks], append=True)
                lcur = txn.cursor(db=self._db_labels)
                _, added2 = lcur.putmulti([(k, lab) for k, _, lab in blocks], append=True)
                if added != len(blocks) or added2 != len(blocks):
                    raise ImgtuiError(f"{self.path}: LMDB refused some blocks (keys out of order)")
                for k, v in chunks:
                    txn.put(k, v, db=self._db_meta)

        self._retry_grow(txn_fn)
        if self._ent_on:
            self._ent_buf = rest
            self._ent_chunks += len(chunks)
            if self._ent_chunks * ENTRIES_CHUNK > INDEX_MAX_RECORDS:
                self._ent_on, self._ent_buf = False, b""  # readers of so many records do without

    def _note_labels(self, labels: list) -> None:
        """Keep the labels of a block made, for the ``entries-labels`` copy."""
        if self._lab_codes is not None and self._ent_on:
            self._lab_codes.add(labels)

    def _entry_chunks(self, blocks: list[tuple[bytes, bytes, bytes]]) -> tuple[list[tuple[bytes, bytes]], bytes]:
        """The ``entries/<k>`` values these blocks' record tables complete, and the rows left over."""
        if not self._ent_on:
            return [], b""
        rows = [self._ent_buf]
        for _, v, _ in blocks:
            cnt = HEADER.unpack_from(v, 0)[1]
            rows.append(v[HEADER.size : HEADER.size + cnt * ENTRY.itemsize])
        buf = b"".join(rows)
        size = ENTRIES_CHUNK * ENTRY.itemsize
        full = len(buf) // size
        chunks = [(_entries_key(self._ent_chunks + j), buf[j * size : (j + 1) * size]) for j in range(full)]
        return chunks, buf[full * size :]

    def _finalize(self, manifest: dict) -> None:
        if self._tail is not None:
            imgs, labs, sums, metas = self._tail
            self._tail = None
            self._put_array_blocks(imgs, labs, sums, metas)
        self._put_held()
        if self._pending:
            self._put_blocks([self._make_block()])
        manifest.update(
            layout=LAYOUT,
            records_per_block=self._rpb,
            uniform_blocks=self._uniform,
            blocks=self._nblocks,
        )
        data = json.dumps(manifest, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        self._env.sync(True)  # every block on disk before the manifest says "complete"

        entries = []
        if self._ent_on:  # the rows not put yet, and the header
            stamp = _manifest_stamp(data)
            entries = entries_values(self._ent_buf, self._next_index, stamp, self._ent_chunks)

        def txn_fn() -> None:
            with self._env.begin(write=True, buffers=True) as txn:
                for k, v in entries:
                    txn.put(k, v, db=self._db_meta)
                if entries:  # every block is committed: its pages stay where they are
                    txn.put(BLOCKS_AT_KEY, block_places(txn, self._db_blocks, self._next_index, stamp), db=self._db_meta)
                    if self._lab_codes.ok:
                        txn.put(LABELS_KEY, self._lab_codes.value(stamp), db=self._db_meta)
                txn.put(MANIFEST_KEY, data, db=self._db_meta)

        self._retry_grow(txn_fn)
        self._env.sync(True)
        used = (self._env.info()["last_pgno"] + 1) * self._env.stat()["psize"]
        self._env.close()
        self._env = None
        # data.mdb may be longer than the pages in use; cut it to them
        data = self.build_path / "data.mdb"
        if data.stat().st_size > used:
            os.truncate(data, used)

    def _close_on_error(self) -> None:
        env, self._env = getattr(self, "_env", None), None
        if env is not None:
            env.close()


# ---------------------------------------------------------------------------------------------
# reader
# ---------------------------------------------------------------------------------------------


class _BlockViews:
    """The blocks' values as read-only arrays over the map, made on access from the writer's
    BLOCK_AT rows (what the scan gets from LMDB's cursor)."""

    def __init__(self, bases: np.ndarray, sizes: np.ndarray) -> None:
        self.bases, self.sizes = bases, sizes

    def __len__(self) -> int:
        return len(self.bases)

    def __getitem__(self, b: int) -> np.ndarray:
        size = int(self.sizes[b])
        view = np.frombuffer((ctypes.c_ubyte * size).from_address(int(self.bases[b])), np.uint8)
        view.flags.writeable = False
        return view


_one_line = first_line


_ENVS: dict[tuple, list] = {}


def _acquire_env(path: Path) -> tuple[Any, tuple]:
    """One read-only Environment per store file per process (py-lmdb refuses a second one)."""
    st = (path / "data.mdb").stat()
    key = (str(path.resolve()), st.st_dev, st.st_ino)
    slot = _ENVS.get(key)
    if slot is None:
        # with the reader lock: a writer in another process sees this reader's snapshot and does
        # not reuse its pages (without it, a reader left open read wrong pixels after a change).
        # Only where the lock file cannot be written (a read-only folder: no writer can exist
        # there either) is the store read without it.
        try:
            env = lmdb.open(str(path), readonly=True, lock=True, readahead=False, subdir=True,
                            max_dbs=MAX_DBS, create=False)
        except lmdb.Error:
            if os.access(path, os.W_OK):
                raise
            env = lmdb.open(str(path), readonly=True, lock=False, readahead=False, subdir=True,
                            max_dbs=MAX_DBS, create=False)
        slot = _ENVS[key] = [env, 0]
    slot[1] += 1
    return slot[0], key


def _release_env(key: tuple) -> None:
    slot = _ENVS.get(key)
    if slot is None:
        return
    slot[1] -= 1
    if slot[1] <= 0:
        del _ENVS[key]
        slot[0].close()


#: every open reader of this process, suspended before a fork (see ``_suspend_all``)
_READERS: "weakref.WeakSet[LmdbReader]" = weakref.WeakSet()


def _suspend_all() -> None:
    """Before ``os.fork``: close every Environment (an LMDB environment must never be used, nor
    even closed, in a forked child: its reader slots live in the shared lock file). Readers reopen
    on their next read, in the parent and in the child, and check that the store has not changed."""
    for r in list(_READERS):
        r._suspend()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_suspend_all)


class LmdbReader(StoreReader):
    backend = "lmdb"

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(path)
        self._env = None
        self._txn = None
        self._region = None
        self._indexed = False
        #: None: not looked at yet; True/False: the writer's ``entries`` copy fits this manifest
        self._entries_state: bool | None = None
        self._looked_up = 0  # records read by lookups (their own blocks) before the index exists
        self._label_cache: tuple[list, list] | None = None
        #: the last block (first record, entry table, bytes) and labels block (first record,
        #: parsed items) a single lookup read: consecutive lookups in one block parse it once
        self._last_block: tuple | None = None
        self._last_labels: tuple | None = None
        p = self.path
        if not p.exists():
            raise StoreNotFoundError(f"{p}: no such file or folder")
        data = p / "data.mdb"
        if not p.is_dir() or not data.is_file():
            raise WrongBackendError(f"{p} is not an LMDB store (no data.mdb in it)")
        try:
            env, self._env_key = _acquire_env(p)
        except lmdb.Error as exc:
            raise CorruptStoreError(f"{data} cannot be opened as an LMDB database ({_one_line(exc)}); the store is damaged") from None
        self._env = env
        self._suspended = False
        try:
            self._open_checked(data)
        except BaseException:
            self.close()
            raise
        _READERS.add(self)

    def _suspend(self) -> None:
        if self._env is None:
            return
        self.close()
        self._suspended = True
        self._indexed = False

    def _resume(self) -> None:
        """Reopen after a fork: the same store, or StoreChangedError."""
        p = self.path
        try:
            env, self._env_key = _acquire_env(p)
        except (OSError, lmdb.Error) as exc:
            raise StoreChangedError(f"{p}: cannot reopen the store ({_one_line(exc)}); open it again") from None
        self._env = env
        self._suspended = False
        try:
            self._db_blocks = env.open_db(DB_BLOCKS, create=False)
            self._db_labels = env.open_db(DB_LABELS, create=False)
            self._db_meta = env.open_db(DB_META, create=False)
            self._txn = env.begin(buffers=True)
            raw = self._txn.get(MANIFEST_KEY, db=self._db_meta)
            same = raw is not None and json.loads(bytes(raw)) == self.manifest
        except (lmdb.Error, ValueError):
            same = False
        if not same:
            self.close()
            raise StoreChangedError(f"{p}: the store changed since it was opened; reopen it")

    def _open_checked(self, data: Path) -> None:
        env = self._env
        p = self.path
        psize = env.stat()["psize"]
        need = (env.info()["last_pgno"] + 1) * psize
        size = data.stat().st_size
        if size < need:
            raise CorruptStoreError(
                f"{data} is truncated ({size:,} of {need:,} bytes); the store is damaged, re-create it"
            )
        try:
            with env.begin() as txn:
                names = [bytes(k) for _, k in zip(range(8), txn.cursor().iternext(values=False))]
        except lmdb.Error as exc:
            raise CorruptStoreError(f"{data}: cannot read the LMDB main database ({_one_line(exc)})") from None
        if DB_META not in names:
            if any(n not in (DB_BLOCKS, DB_LABELS, DB_META) for n in names):
                hint = (
                    f"it was written the Real Python article's way (one pickled CIFAR_Image per key); imgtui reads it as a source (imgtui convert {p} NEW -b lmdb)"
                    if any(len(k) == 8 and k.isdigit() for k in names[:1])
                    else "it holds keys imgtui does not know"
                )
                raise WrongBackendError(f"{p} is an LMDB database but not an imgtui store: {hint}")
            raise self._incomplete()
        try:
            self._db_blocks = env.open_db(DB_BLOCKS, create=False)
            self._db_labels = env.open_db(DB_LABELS, create=False)
            self._db_meta = env.open_db(DB_META, create=False)
        except lmdb.NotFoundError:
            raise self._incomplete() from None
        except lmdb.Error as exc:
            raise CorruptStoreError(f"{p}: cannot open its LMDB sub-databases ({_one_line(exc)})") from None
        self._txn = env.begin(buffers=True)
        raw = self._txn.get(MANIFEST_KEY, db=self._db_meta)
        if raw is None:
            raise self._incomplete()
        self._manifest_raw = bytes(raw)
        try:
            manifest = json.loads(bytes(raw))
            if not isinstance(manifest, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            raise CorruptStoreError(f"{p}: the manifest is not valid JSON ({_one_line(exc)})") from None
        self.manifest = check_manifest(manifest, self.backend, p)
        try:
            self._n = int(manifest["count"])
            self._rpb = int(manifest.get("records_per_block", 0))
            self._uniform = bool(manifest.get("uniform_blocks", False))
        except (KeyError, TypeError, ValueError):
            raise CorruptStoreError(f"{p}: the manifest lacks a valid record count") from None
        # every record takes at least its 32-byte entry in data.mdb: a count the file cannot hold
        # is a damaged or forged manifest (not a MemoryError later)
        if self._n < 0 or self._n * ENTRY.itemsize > data.stat().st_size:
            raise CorruptStoreError(
                f"{p}: the manifest says {self._n:,} records, more than {data.name} "
                f"({data.stat().st_size:,} bytes) can hold; the store is damaged"
            )

    def _incomplete(self) -> IncompleteStoreError:
        return IncompleteStoreError(
            f"{self.path} is incomplete: its writer did not finish (interrupted or killed); re-create it with --overwrite"
        )

    def close(self) -> None:
        # drop every view into the map before the map goes away
        self._last_block = None
        self._last_labels = None
        self._region = None
        self._strided = None
        self._views = []
        txn, self._txn = getattr(self, "_txn", None), None
        if txn is not None:
            try:
                txn.abort()
            except Exception:
                pass
        env, self._env = getattr(self, "_env", None), None
        if env is not None:
            _release_env(self._env_key)

    def _live(self) -> None:
        if self._txn is None:
            if getattr(self, "_suspended", False):
                self._resume()
                return
            raise ImgtuiError(f"{self.path}: the store is closed")

    def __len__(self) -> int:
        return self._n

    # -- the record index (built once, on first access) ------------------------------------
    def _ensure_index(self) -> None:
        if self._indexed:
            return
        self._live()
        built = self._index_from_entries()
        if built is None:
            self._entries_state = False  # none, stale, or not fitting the blocks: not used
            built = self._scan_blocks()
        ent, blk, addr, views, firsts, spans, problems = built
        self._finish_index(ent, blk, addr, views, firsts, spans, problems)

    def _entries_fresh(self) -> bool:
        """The ``entries`` header names this store's count and this very manifest (read once)."""
        if self._entries_state is None:
            self._entries_state = False
            try:
                head = self._txn.get(ENTRIES_KEY, db=self._db_meta)
            except lmdb.Error:
                head = None
            if head is not None and len(head) == ENTRIES_HEADER.size:
                magic, count, per, stamp = ENTRIES_HEADER.unpack(head)
                if (magic == ENTRIES_MAGIC and count == self._n and per > 0
                        and stamp == _manifest_stamp(self._manifest_raw)):
                    self._entries_per = per
                    self._entries_state = True
        return self._entries_state

    def _entries(self) -> np.ndarray | None:
        """Every record's table row from the writer's ``entries`` copy, when it was written with
        this very manifest (a change rewrites the manifest); else None."""
        if not self._entries_fresh():
            return None
        n, per = self._n, self._entries_per
        try:
            parts = []
            for k in range(-(-n // per)):
                v = self._txn.get(_entries_key(k), db=self._db_meta)
                if v is None or len(v) != min(per, n - k * per) * ENTRY.itemsize:
                    raise LookupError
                parts.append(np.frombuffer(v, ENTRY))
        except (LookupError, lmdb.Error):
            self._entries_state = False
            return None
        return np.concatenate(parts) if parts else np.zeros(0, ENTRY)

    def _index_from_entries(self) -> tuple | None:
        """The record index from the ``entries`` copy and the blocks' places (``entries-blocks``):
        no block's own page is read. None (scan the blocks) when there is no fresh copy or it does
        not fit the blocks (each row inside its block, past the block's table)."""
        ent = self._entries()
        places = self._block_places() if ent is not None else None
        if places is None:
            return None
        n = self._n
        fa = places["first"].astype(np.int64)
        if n == 0:
            return (ent, np.zeros(0, np.int64), np.zeros(0, np.int64), [], [], [], []) if not len(fa) else None
        if not len(fa) or fa[0] != 0 or (np.diff(fa) <= 0).any() or fa[-1] >= n:
            return None
        cnts = np.diff(np.append(fa, n))
        blk = np.repeat(np.arange(len(fa), dtype=np.int64), cnts)
        sizes = places["size"].astype(np.int64)
        bases = places["offset"].astype(np.int64) + self._first_block_at
        off = ent["offset"].astype(np.int64)
        if ((off < HEADER.size + cnts[blk] * ENTRY.itemsize) | (off + ent["nbytes"] > sizes[blk])).any():
            return None
        spans = list(zip(bases.tolist(), (bases + sizes).tolist()))
        return ent, blk, bases[blk] + off, _BlockViews(bases, sizes), fa.tolist(), spans, []

    def _block_places(self) -> np.ndarray | None:
        """The writer's BLOCK_AT rows, when they lie inside data.mdb and a sample of them is where
        LMDB itself finds those blocks (one get each of 8 blocks spread over the store)."""
        try:
            raw = self._txn.get(BLOCKS_AT_KEY, db=self._db_meta)
            if (raw is None or len(raw) < 8 or (len(raw) - 8) % BLOCK_AT.itemsize
                    or int.from_bytes(bytes(raw[:8]), "little") != _manifest_stamp(self._manifest_raw)):
                return None  # none, or written for another manifest (a change moves blocks)
            places = np.frombuffer(raw, BLOCK_AT, offset=8).copy()
            if not len(places):
                self._first_block_at = 0
                return places
            # every block inside data.mdb (the map), counted from the first block's value
            first = self._txn.get(int(places["first"][0]).to_bytes(8, "big"), db=self._db_blocks)
            if first is None:
                return None
            base = _address(first)
            bounds = _mapping_around(base)
            offs = places["offset"].astype(np.int64)
            if (bounds is None or offs[0] != 0 or base + int(offs.min()) < bounds[0]
                    or base + int((offs + places["size"].astype(np.int64)).max()) > bounds[1]):
                return None  # a block outside the map: never read memory there
            for b in range(0, len(places), max(1, len(places) // 8)):  # LMDB finds them there
                v = self._txn.get(int(places["first"][b]).to_bytes(8, "big"), db=self._db_blocks)
                if v is None or len(v) != int(places["size"][b]) or _address(v) - base != int(offs[b]):
                    return None
            self._first_block_at = base
        except (lmdb.Error, OSError):
            return None
        return places

    def _scan_blocks(self) -> tuple:
        """The record index from every block's own header and table (one page of each block)."""
        n = self._n
        ent = np.zeros(n, ENTRY)
        blk = np.full(n, -1, np.int64)
        addr = np.zeros(n, np.int64)
        views: list[np.ndarray] = []
        firsts: list[int] = []
        problems: list[str] = []
        spans = []
        expect = 0
        damaged = False
        try:
            for k, v in self._txn.cursor(db=self._db_blocks):
                first = int.from_bytes(bytes(k), "big")
                if first >= n:
                    break  # past the last record: left by an interrupted append, not part of the store
                if first != expect:
                    if damaged and first > expect:
                        pass  # the rest of a damaged block, already reported
                    elif first > expect:
                        problems.append(f"records {expect}-{min(first, n) - 1}: block missing")
                    else:
                        problems.append(f"block at record {first}: overlaps the previous block")
                try:
                    table, base = self._parse_block(first, v, n)
                except CorruptStoreError as exc:
                    problems.append(str(exc))
                    expect = max(expect, first + 1)
                    damaged = True
                    continue
                damaged = False
                cnt = len(table)
                b = len(views)
                arr = np.frombuffer(v, np.uint8)
                views.append(arr)
                firsts.append(first)
                spans.append((base, base + len(arr)))
                ent[first : first + cnt] = table
                blk[first : first + cnt] = b
                addr[first : first + cnt] = base + table["offset"].astype(np.int64)
                expect = first + cnt
        except lmdb.Error as exc:
            problems.append(f"the blocks database cannot be read ({_one_line(exc)})")
        if expect < n and not damaged:
            problems.append(f"records {expect}-{n - 1}: block missing")
        return ent, blk, addr, views, firsts, spans, problems

    def _finish_index(self, ent: np.ndarray, blk: np.ndarray, addr: np.ndarray, views: list, firsts: list,
                      spans: list, problems: list) -> None:
        n = self._n
        self._ent, self._blk, self._views, self._problems = ent, blk, views, problems
        self._addr = addr
        self._firsts = firsts
        self._all_ok = bool(n == 0 or (blk >= 0).all())
        # one array over the part of the map that holds the blocks, for vectorised gathers
        self._region = self._strided = None
        self._roff = None
        self._fixed = None
        if spans:
            lo = min(s[0] for s in spans)
            hi = max(s[1] for s in spans)
            try:
                fsize = (self.path / "data.mdb").stat().st_size
            except OSError:
                fsize = 0
            if 0 < hi - lo <= fsize:
                region = np.frombuffer((ctypes.c_ubyte * (hi - lo)).from_address(lo), np.uint8)
                region.flags.writeable = False
                # sanity: the region must see the same bytes as LMDB's own buffers
                step = max(1, len(spans) // 8)
                if all(
                    region[spans[i][0] - lo : spans[i][0] - lo + HEADER.size].tobytes()
                    == views[i][: HEADER.size].tobytes()
                    for i in range(0, len(spans), step)
                ):
                    self._region = region
                    self._roff = addr - lo
        if n and self._all_ok and (ent["enc"] == ENC_RAW).all():
            e0 = ent[0]
            same = all((ent[f] == e0[f]).all() for f in ("d", "h", "w", "c", "ndim", "dtype"))
            if same:
                shape = _shape_of(e0)
                dt = DTYPES.get(int(e0["dtype"]))
                if dt is not None:
                    nb = int(np.prod(shape)) * dt.itemsize
                    if (ent["nbytes"] == nb).all():
                        self._fixed = (shape, dt, nb)
                        if self._region is not None:
                            self._strided = np.lib.stride_tricks.as_strided(
                                self._region, shape=(len(self._region) - nb + 1, nb), strides=(1, 1), writeable=False
                            )
        self._indexed = True

    def _parse_block(self, first: int, v, n: int) -> tuple[np.ndarray, int]:
        size = len(v)
        if size < HEADER.size:
            raise CorruptStoreError(f"block at record {first}: too short ({size} bytes)")
        magic, cnt, hfirst = HEADER.unpack_from(v, 0)
        if magic != MAGIC or hfirst != first or cnt == 0 or first + cnt > n:
            raise CorruptStoreError(f"block at record {first}: damaged header")
        if HEADER.size + cnt * ENTRY.itemsize > size:
            raise CorruptStoreError(f"block at record {first}: record table runs past the value")
        table = np.frombuffer(v, ENTRY, count=cnt, offset=HEADER.size).copy()
        end = table["offset"].astype(np.int64) + table["nbytes"]
        if (end > size).any() or (table["offset"] < HEADER.size + cnt * ENTRY.itemsize).any():
            raise CorruptStoreError(f"block at record {first}: record table points outside the value")
        base = np.frombuffer(v, np.uint8).__array_interface__["data"][0]
        return table, int(base)

    # -- labels ----------------------------------------------------------------------------
    def _label_blocks(self, n: int) -> Iterator[tuple[int, bytes]]:
        """(first record, raw JSON) of each labels block in key order, up to record ``n``
        (lmdb.Error propagates to the caller)."""
        for k, v in self._txn.cursor(db=self._db_labels):
            first = int.from_bytes(bytes(k), "big")
            if first >= n:
                break
            yield first, bytes(v)

    def _ensure_labels(self) -> tuple[list, list]:
        if self._label_cache is not None:
            return self._label_cache
        self._live()
        n = self._n
        labels: list = [None] * n
        metas: list = [None] * n
        self._label_problems = []
        try:
            for first, raw in self._label_blocks(n):
                try:
                    items = _loads_block(raw)
                    if not isinstance(items, list) or first + len(items) > n:
                        raise ValueError("wrong length")
                    for j, (lab, meta) in enumerate(items):
                        if isinstance(lab, bool) or not isinstance(lab, (int, str)) or not isinstance(meta, dict):
                            raise ValueError("bad item")
                        labels[first + j] = lab
                        metas[first + j] = meta
                except (ValueError, TypeError):
                    self._label_problems.append(f"labels of the block at record {first} are damaged")
        except lmdb.Error as exc:
            self._label_problems.append(f"the labels database cannot be read ({_one_line(exc)})")
        missing = [i for i in range(n) if metas[i] is None] if None in metas else []
        if missing:
            self._label_problems.append(
                f"{len(missing):,} record(s) have no label (first: record {missing[0]})"
            )
        self._label_cache = (labels, metas)
        return self._label_cache

    def _label_of(self, i: int) -> tuple[Label, dict]:
        if self._label_cache is None:  # a single lookup: parse only this record's labels block
            one = self._block_label(i)
            if one is not None:
                return one
        labels, metas = self._ensure_labels()
        meta = metas[i]
        if meta is None:
            raise CorruptStoreError(f"{self.path}: record {i} has no label (its labels block is missing or damaged)")
        return labels[i], dict(meta)

    def _block_label(self, i: int) -> tuple[Label, dict] | None:
        """Label and metadata of record ``i`` from its own block, or None to fall back to the scan."""
        hit = self._locate(i)
        if hit is not None:
            first = hit[2]
        else:
            self._ensure_index()
            b = int(self._blk[i])
            if b < 0:
                return None
            first = self._firsts[b]
        try:
            last = self._last_labels
            if last is not None and last[0] == first:
                items = last[1]  # the labels block of the previous lookup, already parsed
            else:
                v = self._txn.get(first.to_bytes(8, "big"), db=self._db_labels)
                items = _LabelsBlock(bytes(v)) if v is not None else None
                self._last_labels = (first, items)
            lab, meta = items[i - first]
        except (lmdb.Error, ValueError, TypeError, IndexError):
            return None
        if isinstance(lab, bool) or not isinstance(lab, (int, str)) or not isinstance(meta, dict):
            return None
        return lab, dict(meta)

    def _labels(self) -> list[Label]:
        if self._label_cache is None:  # through the label column: no metadata dict per record
            return self._labels_array().tolist()  # (1M records: ~0.3 s instead of ~5 s)
        labels, metas = self._ensure_labels()
        if self._label_problems:
            raise CorruptStoreError(f"{self.path}: {self._label_problems[0]}")
        return list(labels)

    def _labels_array(self) -> np.ndarray:
        """The labels blocks parsed one at a time into one int64 array (an object array once a
        str label appears): no label list and no metadata dict per record is kept."""
        if self._label_cache is not None:
            labels, _metas = self._label_cache
            if self._label_problems:
                raise CorruptStoreError(f"{self.path}: {self._label_problems[0]}")
            return labels_to_array(labels)
        self._live()
        copy = self._labels_copy()
        if copy is not None:
            return copy
        n = self._n
        out = np.zeros(n, np.int64)
        seen = np.zeros(n, bool)
        is_obj = False
        try:
            for first, raw in self._label_blocks(n):
                try:
                    fast = None if is_obj else _int_labels_block(raw)
                    if fast is not None:  # int labels, no metadata: parsed without a Python object a record
                        if first + len(fast) > n:
                            raise ValueError("wrong length")
                        out[first : first + len(fast)] = fast
                        seen[first : first + len(fast)] = True
                        continue
                    items = _loads_block(raw)
                    if not isinstance(items, list) or first + len(items) > n:
                        raise ValueError("wrong length")
                    labs = [it[0] for it in items]
                    if not all(type(lab) is int for lab in labs):
                        if not all(type(lab) in (int, str) for lab in labs):
                            raise ValueError("bad item")
                        if not is_obj:
                            out, is_obj = out.astype(object), True
                    if not all(type(it[1]) is dict for it in items):
                        raise ValueError("bad item")
                    out[first : first + len(labs)] = labs
                    seen[first : first + len(labs)] = True
                except (ValueError, TypeError, IndexError, OverflowError):
                    raise CorruptStoreError(f"{self.path}: labels of the block at record {first} are damaged") from None
        except lmdb.Error as exc:
            raise CorruptStoreError(f"{self.path}: the labels database cannot be read ({_one_line(exc)})") from None
        if n and not seen.all():
            missing = np.flatnonzero(~seen)
            raise CorruptStoreError(f"{self.path}: {len(missing):,} record(s) have no label (first: record {int(missing[0])})")
        return out

    def _labels_copy(self) -> np.ndarray | None:
        """Every label from the writer's ``entries-labels`` copy, when it was written with this very
        manifest and holds valid codes (int64 array for int labels, else an object array); else None."""
        if not self._entries_fresh():
            return None
        try:
            raw = self._txn.get(LABELS_KEY, db=self._db_meta)
            if raw is None or len(raw) < 12 or int.from_bytes(bytes(raw[:8]), "little") != _manifest_stamp(self._manifest_raw):
                return None
            size = int.from_bytes(bytes(raw[8:12]), "little")
            if len(raw) != 12 + size + 4 * self._n:
                return None
            distinct = json.loads(bytes(raw[12 : 12 + size]))
            codes = np.frombuffer(raw, "<i4", offset=12 + size)
        except (lmdb.Error, ValueError):
            return None
        if (not isinstance(distinct, list) or not all(type(x) in (int, str) for x in distinct)
                or (len(codes) and (int(codes.min()) < 0 or int(codes.max()) >= len(distinct)))):
            return None
        if all(type(x) is int for x in distinct):
            try:
                return np.array(distinct, np.int64)[codes] if distinct else np.zeros(self._n, np.int64)
            except OverflowError:
                return None
        table = np.empty(len(distinct), object)
        table[:] = distinct
        return table[codes]

    # -- records ---------------------------------------------------------------------------
    def _locate(self, i: int) -> tuple[Any, np.ndarray, int] | None:
        """Entry, block bytes and first index of record ``i`` read from its own block, before the
        full index exists (a single lookup should not scan every block). Blocks are keyed by their
        first record, so the block keyed ``(i // B) * B`` holds ``i`` if it has enough records;
        anything else (no such key, short or damaged block) falls back to the full index."""
        if self._indexed:
            return None
        per = self.manifest.get("records_per_block")
        if not isinstance(per, int) or per <= 0:
            return None
        first = (i // per) * per
        last = self._last_block
        if last is not None and last[0] == first and self._txn is not None:
            _, cnt, view = last  # the block of the previous lookup
        else:
            try:
                self._live()
                v = self._txn.get(_key(first), db=self._db_blocks)
                if v is None or len(v) < HEADER.size:
                    return None
                magic, cnt, hfirst = HEADER.unpack_from(v, 0)
            except (lmdb.Error, struct.error):
                return None
            if magic != MAGIC or hfirst != first or cnt == 0 or first + cnt > self._n or HEADER.size + cnt * ENTRY.itemsize > len(v):
                return None  # damaged: the whole-store index says how
            view = np.frombuffer(v, np.uint8)
            self._last_block = (first, cnt, view)
        j = i - first
        if j >= cnt:
            return None
        # this record's entry only (not the whole table: 4,096 entries for 64-byte records), as a
        # dict with the fields of ENTRY (struct is ~10x cheaper than a numpy record here)
        e = dict(zip(_ENTRY_FIELDS, _ENTRY_STRUCT.unpack_from(view, HEADER.size + j * ENTRY.itemsize)))
        off, nb = e["offset"], e["nbytes"]
        if off < HEADER.size + cnt * ENTRY.itemsize or off + nb > len(view):
            return None
        return e, view, first

    def _image(self, i: int) -> np.ndarray:
        hit = self._locate(i)
        if hit is not None:
            e, view, _ = hit
        else:
            self._ensure_index()
            b = int(self._blk[i])
            if b < 0:
                raise CorruptStoreError(f"{self.path}: record {i} cannot be read: its block is missing or damaged")
            e, view = self._ent[i], self._views[b]
        dt = DTYPES.get(int(e["dtype"]))
        ndim = int(e["ndim"])
        if dt is None or ndim not in (2, 3, 4) or (ndim == 4 and not int(e["d"])):
            raise CorruptStoreError(f"{self.path}: record {i} has a damaged entry (dtype or shape)")
        shape = _shape_of(e)
        off, nb = int(e["offset"]), int(e["nbytes"])
        data = view[off : off + nb]
        if int(e["enc"]) == ENC_RAW:
            if nb != int(np.prod(shape)) * dt.itemsize:
                raise CorruptStoreError(f"{self.path}: record {i} has {nb:,} bytes, not the {shape} {dt} its entry says")
            return data.view(dt).reshape(shape).copy()
        if int(e["enc"]) == ENC_PNG:
            try:
                return _png_decode(data.tobytes(), dt, shape)
            except Exception as exc:
                raise CorruptStoreError(f"{self.path}: record {i}: its PNG cannot be decoded ({_one_line(exc)})") from None
        raise CorruptStoreError(f"{self.path}: record {i} has an unknown encoding {int(e['enc'])}")

    def _read(self, index: int) -> Record:
        img = self._image(index)
        label, meta = self._label_of(index)
        return Record(img, label, meta)

    def _stored_checksum(self, index: int) -> int | None:
        hit = self._locate(index)  # a single lookup reads only its own block
        if hit is not None:
            return int(hit[0]["crc"])
        self._ensure_index()
        if self._blk[index] < 0:
            return None
        return int(self._ent[index]["crc"])

    def _stored_checksums(self, idx: np.ndarray) -> np.ndarray | None:
        if not self._indexed:  # the batch was read by lookups (else it built the index)
            vals = self._by_block(idx, self._stored_checksum)
            return None if any(v is None for v in vals) else np.asarray(vals, dtype=np.uint32)
        self._ensure_index()
        if not self._all_ok and (self._blk[idx] < 0).any():
            return None
        return self._ent["crc"][idx]

    def _indices(self, indices: Sequence[int]) -> np.ndarray:
        n = self._n
        if isinstance(indices, range):
            idx = np.arange(indices.start, indices.stop, indices.step, dtype=np.int64)
        else:
            idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size:
            neg = idx < 0
            if neg.any():
                idx = np.where(neg, idx + n, idx)
            bad = (idx < 0) | (idx >= n)
            if bad.any():
                raise IndexError(f"record index {int(idx[bad][0])} out of range for a store of {n:,} records")
        return idx

    def _lookup_only(self, count: int = 0) -> bool:
        """True while the whole-store index is not built and a batch of ``count`` records should
        read the blocks of its own records only: always for a store too large for the index
        (``INDEX_MAX_RECORDS``); from ``LOOKUP_MIN_RECORDS`` until the lookups add up to
        ``1 / LOOKUP_BUDGET`` of the store (then the index pays for itself)."""
        if self._indexed:
            return False
        if self._n > INDEX_MAX_RECORDS:
            return True
        if self._n >= LOOKUP_MIN_RECORDS and self._entries_fresh():
            return False  # the writer's entries copy makes the index cheap (no block read)
        if self._n >= LOOKUP_MIN_RECORDS and self._looked_up + count <= self._n // LOOKUP_BUDGET:
            self._looked_up += count
            return True
        return False

    def _by_block(self, idx: np.ndarray, fn: Any) -> list:
        """``[fn(i) for i in idx]`` called in record order (each block is then parsed once per
        batch: the single lookups keep the last block they read), results in ``idx``'s order."""
        idx = np.asarray(idx, dtype=np.int64)
        order = np.argsort(idx, kind="stable")
        out: list = [None] * len(idx)
        for k, i in zip(order.tolist(), idx[order].tolist()):
            out[k] = fn(i)
        return out

    def _will_need(self, idx: np.ndarray) -> None:
        """Ask the kernel to read a dense batch's pixels ahead (``madvise(MADV_WILLNEED)`` over
        their span). The map is opened with ``readahead=False`` (random batches read only what
        they need), so a sequential read of a store not in the page cache faulted its pages in one
        4 KiB read at a time: 48 s for 3.1 GB where the device reads 2.8 GB/s."""
        if len(idx) < 64 or _LIBC is None or not self._all_ok:
            return
        addr, nb = self._addr[idx], self._ent["nbytes"][idx]
        lo = int(addr.min())
        hi = int(addr.max()) + int(nb.max())
        if hi - lo > 2 * int(nb.sum()) + (1 << 20):
            return  # a sparse batch: reading its whole span would read mostly other records
        first, last = int(idx[0]), int(idx[-1])
        if last - first == len(idx) - 1 and last + 1 < len(self._addr):
            # a run of consecutive records (a scan in order): the run after it too, so that its
            # pages arrive while this one is copied and checked (the device works ahead)
            nxt = min(len(self._addr) - 1, last + len(idx))
            a, b = int(self._addr[last + 1]), int(self._addr[nxt]) + int(self._ent["nbytes"][nxt])
            if a >= hi and b - a <= 2 * (hi - lo) + (1 << 20):
                hi = b
        start = lo - lo % _PAGE
        _LIBC.madvise(ctypes.c_void_p(start), ctypes.c_size_t(hi - start), _MADV_WILLNEED)

    def get_images(self, indices: Sequence[int]) -> np.ndarray | list[np.ndarray]:
        idx = self._indices(indices)
        if self._lookup_only(len(idx)):
            imgs = self._by_block(idx, self._image)
            if imgs and all(im.shape == imgs[0].shape and im.dtype == imgs[0].dtype for im in imgs):
                return np.stack(imgs)
            return imgs
        self._ensure_index()
        self._will_need(idx)
        fixed = self._fixed
        if fixed is not None:
            shape, dt, nb = fixed
            if self._strided is not None:
                out = self._strided[self._roff[idx]]
            else:
                out = np.empty((len(idx), nb), np.uint8)
                views, blk, ent = self._views, self._blk, self._ent["offset"]
                for k, i in enumerate(idx.tolist()):
                    off = int(ent[i])
                    out[k] = views[blk[i]][off : off + nb]
            return out.view(dt).reshape((len(idx),) + shape)
        imgs = [self._image(int(i)) for i in idx]
        if imgs and all(im.shape == imgs[0].shape and im.dtype == imgs[0].dtype for im in imgs):
            return np.stack(imgs)
        return imgs

    def get_many(self, indices: Sequence[int]) -> list[Record]:
        idx = self._indices(indices)
        if self._lookup_only(len(idx)):
            return self._by_block(idx, self._read)
        self._ensure_index()
        if self._fixed is None:
            return [self._read(int(i)) for i in idx]
        images = self.get_images(idx)
        if self._label_cache is None and len(idx) * LOOKUP_BUDGET <= self._n:
            # a small batch (a sample spread over a big store): its own labels blocks, not every
            # label and metadata dict of the store (1,000,000 with metadata: seconds)
            labs = self._by_block(idx, self._label_of)
            return [Record(images[k], lab, meta) for k, (lab, meta) in enumerate(labs)]
        labels, metas = self._ensure_labels()
        out = []
        for k, i in enumerate(idx.tolist()):
            meta = metas[i]
            if meta is None:
                raise CorruptStoreError(f"{self.path}: record {i} has no label (its labels block is missing or damaged)")
            out.append(Record(images[k], labels[i], dict(meta) if meta else {}))
        return out

    def iter_batches(self, batch_size: int = 256) -> Iterator[list[Record]]:
        n = len(self)
        batch_size = self.batch_records(batch_size)
        for start in range(0, n, batch_size):
            yield self.get_many(range(start, min(n, start + batch_size)))

    def info(self) -> dict:
        d = super().info()
        d["records_per_block"] = self.manifest.get("records_per_block")
        d["blocks"] = self.manifest.get("blocks")
        return d

    def _leftovers(self) -> list[str]:
        self._live()
        cur = self._txn.cursor(db=self._db_blocks)
        extra = sum(1 for _ in cur.iternext(values=False)) if cur.set_range(_key(self._n)) else 0
        if not extra:
            return []
        return [f"{extra:,} block(s) past the last record, left by an interrupted append; the records read are "
                f"not affected (imgtui repair {self.path} deletes them)"]

    def _verify_extra(self) -> list[str]:
        self._ensure_index()
        self._ensure_labels()
        out = list(self._problems) + list(self._label_problems)
        if self._entries_state:  # the index came from the writer's copy: the blocks must agree
            ent, _blk, addr, _views, _firsts, _spans, problems = self._scan_blocks()
            out += problems
            if not problems and (not np.array_equal(ent, self._ent) or not np.array_equal(addr, self._addr)):
                out.append("the entries copy in the meta database differs from the blocks' own record tables "
                           "(readers use it); re-create the store")
        copy = self._labels_copy()
        if copy is not None and not self._label_problems and list(self._label_cache[0]) != copy.tolist():
            out.append("the labels copy in the meta database differs from the labels blocks (labels_array() "
                       "uses it); re-create the store")
        nblocks = self.manifest.get("blocks")
        if isinstance(nblocks, int) and nblocks != len(self._views) and not self._problems:
            out.append(f"the manifest lists {nblocks:,} blocks, the store holds {len(self._views):,}")
        return [f"{self.path}: {p}" for p in out]


# ---------------------------------------------------------------------------------------------
# block helpers for changing an existing store (imgtui.backends.mutate)
# ---------------------------------------------------------------------------------------------


def pack_block(records: Sequence[Record], checksums: Sequence[int], first: int, options: dict) -> tuple[bytes, bytes, bytes]:
    """(key, block value, labels value) for ``records`` starting at record ``first``: exactly the
    bytes ``LmdbWriter`` writes for such a block (``options`` as in the store's manifest)."""
    w = LmdbWriter.__new__(LmdbWriter)
    w.options = {**_OPTION_DEFAULTS, **(options or {})}
    w._pending = list(zip(records, checksums))
    w._pending_bytes = 0
    w._next_index = first
    w._nblocks = 0
    w._lab_codes = None  # a change writes its own labels copy (mutator._manifest_bytes)
    return w._make_block()


def unpack_block(value: Any, labels_value: Any, first: int = 0) -> list[tuple[Record, int]]:
    """The records (with their stored crc32) of one block value and its labels value."""
    v = bytes(value)
    if len(v) < HEADER.size:
        raise CorruptStoreError(f"block at record {first}: too short ({len(v)} bytes)")
    magic, cnt, _hfirst = HEADER.unpack_from(v, 0)
    if magic != MAGIC:
        raise CorruptStoreError(f"block at record {first}: damaged header")
    table = np.frombuffer(v, ENTRY, count=cnt, offset=HEADER.size)
    try:
        items = _loads_block(bytes(labels_value)) if labels_value is not None else None
    except ValueError:
        items = None
    if not isinstance(items, list) or len(items) != cnt:
        raise CorruptStoreError(f"labels of the block at record {first} are damaged")
    out = []
    for j in range(cnt):
        e = table[j]
        dt = DTYPES.get(int(e["dtype"]))
        if dt is None:
            raise CorruptStoreError(f"record {first + j}: damaged entry (dtype)")
        shape = _shape_of(e)
        off, nb = int(e["offset"]), int(e["nbytes"])
        data = v[off : off + nb]
        if int(e["enc"]) == ENC_PNG:
            img = _png_decode(data, dt, shape)
        else:
            img = np.frombuffer(data, dt).reshape(shape).astype(dt.newbyteorder("="))
        lab, meta = items[j]
        out.append((Record(img, lab, meta if isinstance(meta, dict) else {}), int(e["crc"])))
    return out
