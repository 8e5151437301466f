"""The WebDataset backend: tar shards the ``webdataset`` package streams, plus an index of member
offsets for random access.

Layout of a store ``<path>/`` (suffix ``.wds``)::

    shard-000000.tar   ustar archives; a new shard starts once one would pass ``shard_bytes``
    shard-000001.tar
    ...
    index.npy          one row per record: shard number, offset and size of each member, shape,
                       dtype, encoding, label, pixel checksum (numpy structured array, INDEX_DTYPE)
    manifest.json      written last and atomically; its presence marks the store complete

Each record ``i`` is two or three consecutive tar members sharing the key ``f"{i:09d}"``:

- ``000000012.npy``: the pixels as a ``.npy`` file (``encoding=raw``, the default: exact, any
  dtype and shape, HxW and HxWx1 kept apart), or ``000000012.png`` (``encoding=png``: lossless,
  8/16-bit, written by :mod:`imgtui.png`; uint8/uint16 only, other dtypes stay .npy; an HxWx1 image is a gray PNG, the index restores its
  third axis);
- ``000000012.cls`` (an int label as decimal text) or ``000000012.txt`` (a str label, UTF-8);
- ``000000012.json`` (the metadata), only when the record has metadata.

So ``webdataset.WebDataset("store.wds/shard-{000000..000003}.tar").decode()`` yields one dict per
record (``__key__``, ``npy``, ``cls``/``txt``, ``json``), and ``tar tf`` lists the members.

imgtui reads through the index: the tar files are never scanned when a store is opened. A reader
maps each shard it reads (read-only ``mmap``) and copies a record's pixels out of the map: no
system call per record (measured here, a ``preadv`` per record cost ~7 us, the copy ~1 us). With
``WdsReader.use_mmap = False`` (or past ``MAX_OPEN_SHARDS`` shards) a record is one ``os.preadv``
straight into the image array instead. Like LMDB's map, a mapped shard that another program
truncates while it is read can kill the reader (SIGBUS); imgtui itself never changes a shard (a
change writes a new store). The index names no files: shards are ``shard-NNNNNN.tar`` by
number, opened relative to the store folder (``O_NOFOLLOW``), and every offset is checked
against its shard's size when the store is opened, so a crafted index cannot read other files or
past a shard's end. ``index.npy``'s crc32 is in the manifest.

A reader keeps the store folder open: after a change switched a new store in (a rewrite, see
``mutator.py``), it goes on reading the old shards it has open, and a shard it has not opened yet
raises StoreChangedError (reopen the store), never another store's bytes.
"""

from __future__ import annotations

import io
import json
import mmap
import os
import stat
import threading
import time
import zlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from numpy.lib.recfunctions import repack_fields

from ...errors import (
    CorruptStoreError,
    ImgtuiError,
    IncompleteStoreError,
    InvalidRecordError,
    StoreChangedError,
    StoreFullError,
    StoreNotFoundError,
    WrongBackendError,
)
from ...png import DEFAULT_PNG_LEVEL, decode_png, encode_png
from ...records import CODE_DTYPES, DTYPE_CODES, MAX_IMAGE_BYTES, Label, Record, is_volume, loads_metadata, shape4, shape_from4
from ..base import StoreReader, StoreWriter, atomic_write_text, check_manifest, fsync_dir, labels_to_array

BACKEND = "webdataset"
MANIFEST = "manifest.json"
INDEX = "index.npy"
SHARD_FORMAT = "shard-{:06d}.tar"
KEY_DIGITS = 9
#: raw: the pixels as a .npy member (exact); png: a lossless .png member
ENCODINGS = ("raw", "png")
DEFAULT_SHARD_BYTES = 256 << 20
MIN_SHARD_BYTES = 4096
#: the writer hands its tar bytes to the file once it holds this many (bounded memory)
OUT_BYTES = 8 << 20
MAX_SHARD_BYTES = 1 << 40
#: the most shards a store may have (a sanity limit on the manifest)
MAX_SHARDS = 10_000_000
#: shard files a reader keeps mapped (or open) at once; past that a read opens and closes its shard
MAX_OPEN_SHARDS = 256
#: an index.npy larger than this (~3.8M records) has its crc32 checked when first used whole,
#: not when the store is opened (batch reads check their own rows)
LAZY_CRC_BYTES = 256 << 20
#: bytes verify reads at once while it walks a shard's tar headers
VERIFY_WINDOW = 1 << 20

BLOCK = 512
#: tar archives end with two zero blocks and are padded to a multiple of 20 blocks (as tar does)
RECORD_SIZE = 20 * BLOCK

#: one row per record; little-endian, packed. Offsets are of member *data* (after the 512-byte
#: tar header), in the shard file ``shard``. ``hdr``: bytes of the .npy header before the pixels
#: (0 for PNG). ``c``: channels, 0 for an HxW image. ``dtype``: 1 = uint8, 2 = uint16, 3 = int16,
#: 4 = uint32, 5 = int32, 6 = float32, 7 = float64, 8 = bool, 9 = int8 (``imgtui.records``).
#: ``enc``: 0 = npy, 1 = png. ``lkind``: 0 = int label (in ``label`` and the .cls member),
#: 1 = str label (the .txt member). ``meta_size`` 0: no .json member.
INDEX_DTYPE = np.dtype([
    ("shard", "<u4"),
    ("img_off", "<u8"), ("img_size", "<u8"), ("hdr", "<u2"),
    ("lab_off", "<u8"), ("lab_size", "<u4"),
    ("meta_off", "<u8"), ("meta_size", "<u4"),
    ("h", "<u4"), ("w", "<u4"), ("c", "u1"), ("dtype", "u1"), ("enc", "u1"), ("lkind", "u1"),
    ("label", "<i8"), ("checksum", "<u4"),
])
#: the index of a store holding 3-D records: the same fields plus ``d``, the depth of a DxHxW[xC]
#: record (0 for an image; h, w, c are then the slices' height, width and channels). Stores of
#: images only keep INDEX_DTYPE, which older imgtui reads.
INDEX_DTYPE_3D = np.dtype(INDEX_DTYPE.descr + [("d", "<u4")])
_INDEX_DTYPES = (INDEX_DTYPE, INDEX_DTYPE_3D)


def _row_shape(row: tuple) -> tuple:
    """A record's shape from its index row (a tuple of INDEX_DTYPE or INDEX_DTYPE_3D fields)."""
    return shape_from4(row[16] if len(row) > 16 else 0, row[8], row[9], row[10])


def _sel_shape(sel: np.ndarray, j: int = 0) -> tuple:
    row = sel[j]
    return shape_from4(int(row["d"]) if "d" in sel.dtype.names else 0, int(row["h"]), int(row["w"]), int(row["c"]))


def _same_shapes(sel: np.ndarray) -> bool:
    first = sel[0]
    return all((sel[f] == first[f]).all() for f in ("h", "w", "c", "dtype", "d") if f in sel.dtype.names)
_DTYPES = CODE_DTYPES  # code -> dtype: imgtui.records.DTYPE_CODES (1 = uint8, 2 = uint16, ...)
_DTYPE_CODES = DTYPE_CODES
#: dtypes a .png member holds (encoding=png); records of other dtypes are .npy members
_PNG_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))
#: dtype code -> bytes per sample
_ITEMSIZE = np.array([_DTYPES[k].itemsize if k in _DTYPES else 1 for k in range(max(_DTYPES) + 1)], np.uint64)
_IMG_EXT = {0: "npy", 1: "png"}
_LAB_EXT = {0: "cls", 1: "txt"}
_LAB_EXT_B = {0: b".cls", 1: b".txt"}
_EXT_SUM = {e: sum(e) for e in (b".cls", b".txt", b".json")}
_ZEROS = memoryview(bytes(BLOCK))


def shard_name(k: int) -> str:
    return SHARD_FORMAT.format(k)


def record_key(i: int) -> str:
    return f"{i:0{KEY_DIGITS}d}"


def _padded(n: int) -> int:
    return -(-n // BLOCK) * BLOCK


# -- .npy and ustar headers -------------------------------------------------------------------------
_npy_headers: dict[tuple, bytes] = {}


def npy_header(dtype: np.dtype, shape: tuple) -> bytes:
    """The .npy (version 1.0) header of a C-order array: magic, length, the dict, padded with
    spaces and a newline to a multiple of 64 bytes (what ``np.save`` writes)."""
    key = (dtype.str, shape)
    hdr = _npy_headers.get(key)
    if hdr is None:
        text = "{'descr': '%s', 'fortran_order': False, 'shape': %r, }" % (dtype.str, tuple(shape))
        total = -(-(10 + len(text) + 1) // 64) * 64
        text = text + " " * (total - 10 - len(text) - 1) + "\n"
        hdr = b"\x93NUMPY\x01\x00" + (total - 10).to_bytes(2, "little") + text.encode("latin-1")
        if len(_npy_headers) < 4096:
            _npy_headers[key] = hdr
    return hdr


class _TarHeaders:
    """ustar headers for regular files (mode 0644, owner 0, one mtime per writer)."""

    def __init__(self, mtime: int) -> None:
        self.head = b"0000644\x00" + b"0000000\x00" * 2  # mode, uid, gid
        self.tail_a = f"{mtime:011o}\x00".encode()  # mtime
        # typeflag, linkname, magic + version, uname, gname, devmajor, devminor, prefix, padding
        self.tail_b = b"0" + bytes(100) + b"ustar\x0000" + bytes(64) + b"0000000\x00" * 2 + bytes(155 + 12)
        self.base = sum(self.head) + sum(self.tail_a) + sum(self.tail_b) + 8 * 32

    def header(self, name: bytes, size: int, name_sum: int | None = None) -> bytes:
        """The header of a member ``name`` of ``size`` bytes (``name_sum``: ``sum(name)``, if known)."""
        size_f = b"%011o\x00" % size
        chk = self.base + (sum(name) if name_sum is None else name_sum) + sum(size_f)
        return b"".join((name.ljust(100, b"\x00"), self.head, size_f, self.tail_a, b"%06o\x00 " % chk, self.tail_b))


def parse_tar_header(block: bytes, check: bool = True) -> tuple[str, int, int] | None:
    """(name, size, stored checksum) of a ustar header block; None for a zero block; ValueError
    if it is not a tar header (or, with ``check``, its checksum does not match)."""
    if not any(block):
        return None
    try:
        stored = int(block[148:156].strip(b"\x00 ") or b"-1", 8)
        size = int(block[124:136].strip(b"\x00 ") or b"0", 8)
    except ValueError:
        raise ValueError("not a tar header") from None
    if check and stored != header_checksum(block):
        raise ValueError("tar header checksum mismatch")
    name = block[:100].split(b"\x00", 1)[0]
    prefix = block[345:500].split(b"\x00", 1)[0] if block[257:262] == b"ustar" else b""
    if prefix:
        name = prefix + b"/" + name
    return name.decode("utf-8", "replace"), size, stored


def header_checksum(block: bytes) -> int:
    """The ustar checksum: the sum of the header's bytes with its checksum field as spaces."""
    return sum(block) - sum(block[148:156]) + 256


# ---------------------------------------------------------------------------------------------
# writer
# ---------------------------------------------------------------------------------------------
def _whole(value: Any, name: str, lo: int, hi: int) -> int:
    try:
        if isinstance(value, bool) or float(value) != int(value):
            raise ValueError
        ivalue = int(value)
    except (TypeError, ValueError, OverflowError):
        ivalue = lo - 1
    if not lo <= ivalue <= hi:
        raise ImgtuiError(f"webdataset: {name} must be a whole number from {lo:,} to {hi:,}, got {value!r}")
    return ivalue


class WdsWriter(StoreWriter):
    backend = BACKEND
    default_batch_size = 256

    @classmethod
    def check_options(cls, options: dict) -> dict:
        options = dict(options)
        enc = options.pop("encoding", "raw")
        enc = "raw" if enc == "npy" else enc  # the member's name for it
        level = options.pop("png_level", DEFAULT_PNG_LEVEL)
        shard_bytes = options.pop("shard_bytes", DEFAULT_SHARD_BYTES)
        if options:
            raise ImgtuiError(
                f"webdataset: unknown option(s) {', '.join(sorted(options))} "
                "(the webdataset backend takes encoding, png_level and shard_bytes)"
            )
        if enc not in ENCODINGS:
            raise ImgtuiError(f"webdataset: encoding must be raw (.npy members) or png, got {enc!r}")
        return {
            "encoding": enc,
            "png_level": _whole(level, "png_level", 0, 9),
            "shard_bytes": _whole(shard_bytes, "shard_bytes", MIN_SHARD_BYTES, MAX_SHARD_BYTES),
        }

    def _check_record(self, record: Record, index: int) -> None:
        if isinstance(record.label, str):
            try:
                record.label.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidRecordError(f"record {index} label: not encodable as UTF-8 text") from None
        try:
            record.meta_json.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidRecordError(f"record {index} metadata: not encodable as UTF-8 JSON") from None

    def _open_store(self) -> None:
        self._fh = None
        self._rows: list[tuple] = []
        #: a 3-D record was written: the index is INDEX_DTYPE_3D
        self._volumes = False
        self._tar = _TarHeaders(int(time.time()))
        self._enc = 0 if self.options["encoding"] == "raw" else 1
        os.mkdir(self.build_path)
        self._shard = -1
        self._next_shard()

    def _next_shard(self) -> None:
        if self._fh is not None:
            self._end_shard()
        self._shard += 1
        self._fh = open(self.build_path / shard_name(self._shard), "wb")
        self._pos = 0
        self._in_shard = 0

    def _end_shard(self) -> None:
        end = self._pos + 2 * BLOCK
        end = -(-end // RECORD_SIZE) * RECORD_SIZE
        self._fh.write(bytes(end - self._pos))
        self._fh.close()
        self._fh = None

    def _write_batch(self, records: list[Record], checksums: list[int], start: int) -> None:
        limit = self.options["shard_bytes"]
        level = self.options["png_level"]
        store_enc = self._enc
        header = self._tar.header
        exts = {e: b"." + _IMG_EXT[e].encode() for e in _IMG_EXT}
        zeros = _ZEROS
        out = bytearray()  # the batch's bytes, from shard offset ``pos0``
        pos0 = self._pos
        rows = self._rows
        for k, (rec, crc) in enumerate(zip(records, checksums)):
            i = start + k
            key = b"%09d" % i
            ksum = sum(key)
            img = rec.image
            # encoding=png holds uint8/uint16; other dtypes are exact .npy members either way
            enc = store_enc if img.dtype in _PNG_DTYPES and not is_volume(img.shape) else 0
            img_ext = exts[enc]
            img_ext_sum = sum(img_ext)
            if enc == 0:
                hdr = npy_header(img.dtype, img.shape)
                size = len(hdr) + img.nbytes
            else:
                hdr = b""
                png = encode_png(img, level)
                size = len(png)
            label = rec.label
            lkind = 0 if type(label) is int else 1
            ltext = str(label).encode("utf-8")
            meta = rec.meta_json
            mtext = meta.encode("utf-8") if meta != "{}" else b""
            total = 2 * BLOCK + _padded(size) + _padded(len(ltext)) + (BLOCK + _padded(len(mtext)) if mtext else 0)
            if self._in_shard and pos0 + len(out) + total + 2 * BLOCK > limit:
                self._fh.write(out)
                self._pos = pos0 + len(out)
                self._next_shard()
                out = bytearray()
                pos0 = self._pos
            out += header(key + img_ext, size, ksum + img_ext_sum)
            img_off = pos0 + len(out)
            if enc == 0:
                out += hdr
                out += memoryview(img).cast("B")
            else:
                out += png
            out += zeros[: -size % BLOCK]
            ext = _LAB_EXT_B[lkind]
            out += header(key + ext, len(ltext), ksum + _EXT_SUM[ext])
            lab_off = pos0 + len(out)
            out += ltext
            out += zeros[: -len(ltext) % BLOCK]
            meta_off = 0
            if mtext:
                out += header(key + b".json", len(mtext), ksum + _EXT_SUM[b".json"])
                meta_off = pos0 + len(out)
                out += mtext
                out += zeros[: -len(mtext) % BLOCK]
            self._in_shard += 1
            if len(out) >= OUT_BYTES:  # written as it fills: the batch's tar bytes are not held whole
                self._fh.write(out)
                pos0 += len(out)
                self._pos = pos0
                out = bytearray()
            d, h, w, c = shape4(img.shape)
            self._volumes |= d > 0
            rows.append((
                self._shard, img_off, size, len(hdr), lab_off, len(ltext), meta_off, len(mtext),
                h, w, c, _DTYPE_CODES[img.dtype], enc, lkind, label if lkind == 0 else 0, crc, d,
            ))
        self._fh.write(out)
        self._pos = pos0 + len(out)
        self._fh.flush()

    @property
    def _index_dtype(self) -> np.dtype:
        return INDEX_DTYPE_3D if self._volumes else INDEX_DTYPE

    def manifest(self, **extra: Any) -> dict:
        layout = {
            "shards": self._shard + 1,
            "shard_name": "shard-{shard:06d}.tar",
            "key": "{index:09d}",
            "members": {
                "image": ".npy (encoding=raw, and every dtype but uint8/uint16) or .png (encoding=png)",
                "label": ".cls (int, decimal text) or .txt (str, UTF-8)",
                "metadata": ".json, only when the record has metadata",
            },
            "index": INDEX,
            "index_fields": [[name, self._index_dtype.fields[name][0].str] for name in self._index_dtype.names],
        }
        return super().manifest(layout=layout, **extra)

    def _finalize(self, manifest: dict) -> None:
        try:
            self._end_shard()
            rows = np.array(self._rows, dtype=INDEX_DTYPE_3D) if self._rows else np.zeros(0, INDEX_DTYPE_3D)
            if not self._volumes:  # images only: the index older imgtui reads
                rows = repack_fields(rows[list(INDEX_DTYPE.names)])
            buf = io.BytesIO()
            np.save(buf, rows, allow_pickle=False)
            data = buf.getvalue()
            with open(self.build_path / INDEX, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            manifest["layout"]["index_crc32"] = zlib.crc32(data) & 0xFFFFFFFF
            fsync_dir(self.build_path)
            atomic_write_text(self.build_path / MANIFEST, json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
        except OSError as exc:
            if exc.errno == 28:
                raise StoreFullError(f"disk full while writing {self.path}: {exc.strerror}") from None
            raise

    def _close_on_error(self) -> None:
        fh = getattr(self, "_fh", None)
        if fh is not None:
            self._fh = None
            try:
                fh.close()
            except OSError:
                pass


# ---------------------------------------------------------------------------------------------
# reader
# ---------------------------------------------------------------------------------------------
def looks_like_store(path: Path) -> bool:
    """A folder with a first shard or an index (a complete store, or one whose writer died)."""
    return path.is_dir() and ((path / shard_name(0)).is_file() or (path / INDEX).is_file())


def _load_manifest(path: Path) -> dict:
    mpath = path / MANIFEST
    try:
        m = json.loads(mpath.read_text(encoding="utf-8"))
        if not isinstance(m, dict):
            raise ValueError("not a JSON object")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CorruptStoreError(f"{mpath}: cannot be read ({str(exc).splitlines()[0] if str(exc) else exc})") from None
    return m


class WdsReader(StoreReader):
    backend = BACKEND
    #: map the shards (else read each record with pread)
    use_mmap: bool = True

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(path)
        self._dir_fd: int | None = None
        self._fds: dict[int, int] = {}
        self._maps: dict[int, mmap.mmap] = {}
        self._views: dict[tuple[int, int], np.ndarray] = {}
        self._sizes: list[int] = []
        self._lock = threading.Lock()
        self._str_labels: list | None = None
        p = self.path
        if not p.exists():
            raise StoreNotFoundError(f"{p}: no such file or folder")
        if not p.is_dir():
            raise WrongBackendError(f"{p} is not a webdataset store (a webdataset store is a folder)")
        if not (p / MANIFEST).is_file():
            if looks_like_store(p):
                raise IncompleteStoreError(
                    f"{p} is incomplete: its writer did not finish (interrupted or killed); "
                    "re-create it with --overwrite"
                )
            raise WrongBackendError(f"{p} is not a webdataset store (no {MANIFEST} or {shard_name(0)} in it)")
        self.manifest = check_manifest(_load_manifest(p), BACKEND, p)
        layout = self.manifest.get("layout")
        if not isinstance(layout, dict):
            raise CorruptStoreError(f"{p / MANIFEST}: no layout")
        shards = layout.get("shards")
        if isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= MAX_SHARDS:
            raise CorruptStoreError(f"{p / MANIFEST}: layout.shards is {shards!r}, not a shard count")
        self._n_shards = shards
        try:
            self._dir_fd = os.open(p, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise CorruptStoreError(f"{p}: cannot be opened ({exc.strerror})") from None
        self._ix_raw = self._load_index(layout)
        self._rows_checked = False
        self._check_index()

    def _check_index_crc(self) -> None:
        data = getattr(self, "_index_data", None)
        if data is None:
            return
        if self._index_crc != zlib.crc32(data) & 0xFFFFFFFF:
            raise CorruptStoreError(f"{self.path / INDEX}: its crc32 does not match the manifest's (damaged or replaced)")
        self._index_data = None

    @property
    def _ix(self) -> np.ndarray:
        """The index, every row checked (on first use: opening checks the shards and the index's
        crc32 and count; a single read checks its own row, see ``_row``)."""
        if not self._rows_checked:
            self._check_index_crc()
            self._check_rows(self._ix_raw)
            self._rows_checked = True
        return self._ix_raw

    def _rows_of(self, idx: np.ndarray) -> np.ndarray:
        """The index rows ``idx`` (non-negative, in range), checked: the whole index on first use
        for a store of up to LAZY_CRC_BYTES of index, else only these rows."""
        if self._rows_checked or self._ix_raw.nbytes <= LAZY_CRC_BYTES:
            return self._ix[idx]
        sel = self._ix_raw[idx]
        try:
            self._check_rows(sel)
        except CorruptStoreError:
            for i in np.asarray(idx).reshape(-1).tolist():  # name the first bad row
                self._check_rows(self._ix_raw[i : i + 1], i)
            raise
        return sel

    def _row(self, index: int) -> np.ndarray:
        """Row ``index`` of the index, checked (alone while the whole index is not checked yet)."""
        if self._rows_checked:
            return self._ix_raw[index]
        self._check_rows(self._ix_raw[index : index + 1], index)
        return self._ix_raw[index]

    # -- opening ---------------------------------------------------------------------------------
    def _load_index(self, layout: dict) -> np.ndarray:
        ipath = self.path / INDEX
        try:
            fd = os.open(INDEX, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self._dir_fd)
        except OSError as exc:
            raise CorruptStoreError(f"{ipath}: cannot be read ({exc.strerror})") from None
        try:
            with os.fdopen(fd, "rb") as f:
                # mapped, not read (the crc32 below reads the map; the rows are viewed in it)
                size = os.fstat(f.fileno()).st_size
                data: Any = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        except (OSError, ValueError) as exc:
            raise CorruptStoreError(f"{ipath}: cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
        self._index_data, self._index_crc = data, layout.get("index_crc32")
        if len(data) <= LAZY_CRC_BYTES:
            self._check_index_crc()
        # (a larger index is checked when it is first used whole: a batch or single read checks
        # its own rows against the shards, so opening 100M records does not read 7 GB of index)
        try:  # the header only (np.load would copy the rows): the rows are viewed in place
            f = io.BytesIO(data[:65536])
            version = np.lib.format.read_magic(f)
            read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if read is None:
                raise ValueError(f".npy version {version[0]}.{version[1]}")
            shape, fortran, dtype = read(f)  # a checked literal, never a pickle
        except Exception as exc:
            raise CorruptStoreError(f"{ipath}: not a readable .npy file ({str(exc).splitlines()[0] if str(exc) else exc})") from None
        if dtype not in _INDEX_DTYPES or len(shape) != 1 or fortran:
            raise CorruptStoreError(f"{ipath}: not an imgtui webdataset index (dtype {dtype}, {len(shape)} dimensions)")
        if len(data) - f.tell() != shape[0] * dtype.itemsize:
            raise CorruptStoreError(f"{ipath}: holds {len(data) - f.tell():,} bytes of rows, not {shape[0]:,} rows")
        idx = np.frombuffer(data, dtype, shape[0], f.tell())
        count = self.manifest.get("count")
        if count != len(idx):
            raise CorruptStoreError(f"{ipath} has {len(idx):,} rows but {MANIFEST} says {count} records")
        return idx

    def _check_index(self) -> None:
        """Every row names an existing shard and lies inside it; shapes, dtypes and codes are valid."""
        sizes = self._shard_sizes()
        self._sizes = sizes.tolist()
        self._sizes_arr = sizes
        # the last row of every shard (rows are in shard and offset order) on open: a shard cut
        # short is refused now, without checking every row (the rest are checked on first use)
        ix = self._ix_raw
        if len(ix):
            last = np.searchsorted(ix["shard"], np.arange(self._n_shards), side="right") - 1
            for i in sorted({int(j) for j in last.tolist() if j >= 0} | {0, len(ix) - 1}):
                self._check_rows(ix[i : i + 1], i)

    def _shard_sizes(self) -> np.ndarray:
        """Every shard's size (uint64); a missing shard or one that is not a regular file raises."""
        sizes = np.zeros(self._n_shards, np.uint64)
        for k in range(self._n_shards):
            try:
                st = os.stat(shard_name(k), dir_fd=self._dir_fd, follow_symlinks=False)
            except OSError as exc:
                raise CorruptStoreError(f"{self.path / shard_name(k)}: cannot be read ({exc.strerror})") from None
            if not stat.S_ISREG(st.st_mode):
                raise CorruptStoreError(f"{self.path / shard_name(k)}: not a regular file")
            sizes[k] = st.st_size
        return sizes

    def _check_rows(self, ix: np.ndarray, first: int = 0) -> None:
        """The rows ``ix`` (rows ``first ...`` of the index) name an existing shard and lie inside
        it; their shapes, dtypes and codes are valid."""
        sizes = self._sizes_arr
        if not len(ix):
            return
        bad = ix["shard"] >= self._n_shards
        shard = np.where(bad, 0, ix["shard"])
        size = sizes[shard]

        def outside(off: np.ndarray, n: np.ndarray) -> np.ndarray:
            off = off.astype(np.uint64)
            return (off < BLOCK) | (off % BLOCK != 0) | (off > size) | (n.astype(np.uint64) > size - np.minimum(off, size))

        bad |= outside(ix["img_off"], ix["img_size"]) | outside(ix["lab_off"], ix["lab_size"])
        has_meta = ix["meta_size"] > 0
        bad |= has_meta & outside(np.where(has_meta, ix["meta_off"], BLOCK), ix["meta_size"])
        bad |= ~np.isin(ix["dtype"], tuple(_DTYPES)) | ((ix["enc"] == 1) & ~np.isin(ix["dtype"], (1, 2))) | ~np.isin(ix["c"], (0, 1, 3, 4)) | (ix["enc"] > 1) | (ix["lkind"] > 1)
        h, w = ix["h"].astype(np.uint64), ix["w"].astype(np.uint64)
        d = ix["d"].astype(np.uint64) if "d" in ix.dtype.names else np.ones(1, np.uint64)
        d = np.maximum(d, 1)
        bad |= (h == 0) | (w == 0) | (h * w > MAX_IMAGE_BYTES) | (d * h * w > MAX_IMAGE_BYTES)
        if "d" in ix.dtype.names:
            bad |= (ix["d"] > 0) & (ix["enc"] != 0)  # a volume is always a .npy member
        pix = np.where(bad, 0, d * h * w) * np.maximum(ix["c"], 1).astype(np.uint64) * _ITEMSIZE[np.where(bad, 1, ix["dtype"])]
        npy = ix["enc"] == 0
        bad |= npy & ((ix["hdr"] < 10) | (ix["img_size"] != pix + ix["hdr"].astype(np.uint64)))
        bad |= ~npy & (ix["hdr"] != 0)
        if bad.any():
            i = first + int(np.flatnonzero(bad)[0])
            raise CorruptStoreError(
                f"{self.path / INDEX}: row {i} is invalid (a shard, offset or size outside the store's shards, "
                f"or a bad shape/dtype/code){f' (+{int(bad.sum()) - 1} more)' if bad.sum() > 1 else ''}"
            )

    # -- file access -----------------------------------------------------------------------------
    def _open_shard(self, k: int) -> int:
        if self._dir_fd is None:
            raise ImgtuiError(f"{self.path}: the reader is closed")
        try:
            return os.open(shard_name(k), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self._dir_fd)
        except FileNotFoundError:
            if self._changed():
                raise StoreChangedError(f"{self.path}: the store changed since it was opened; reopen it") from None
            raise CorruptStoreError(f"{self.path / shard_name(k)}: shard is missing") from None
        except OSError as exc:
            raise CorruptStoreError(f"{self.path / shard_name(k)}: cannot be read ({exc.strerror})") from None

    def _changed(self) -> bool:
        try:
            a, b = os.fstat(self._dir_fd), os.stat(self.path)
        except (OSError, TypeError):
            return True
        return (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino)

    def _fd(self, k: int) -> tuple[int, bool]:
        """(file descriptor of shard ``k``, whether the caller must close it)."""
        fd = self._fds.get(k)
        if fd is not None:
            return fd, False
        with self._lock:
            fd = self._fds.get(k)
            if fd is not None:
                return fd, False
            fd = self._open_shard(k)
            if len(self._fds) >= MAX_OPEN_SHARDS:
                return fd, True
            self._fds[k] = fd
            return fd, False

    def _map(self, k: int) -> mmap.mmap | None:
        """Shard ``k`` mapped read-only (None: read it with pread instead)."""
        mm = self._maps.get(k)
        if mm is not None or not self.use_mmap:
            return mm
        with self._lock:
            mm = self._maps.get(k)
            if mm is not None or len(self._maps) >= MAX_OPEN_SHARDS:
                return mm
            fd = self._open_shard(k)
            try:
                mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
            except (OSError, ValueError) as exc:
                raise CorruptStoreError(f"{self.path / shard_name(k)}: cannot be mapped ({exc})") from None
            finally:
                os.close(fd)
            self._maps[k] = mm
            return mm

    def _preadv(self, k: int, buffers: list, offset: int, index: int, want: int) -> None:
        fd, temp = self._fd(k)
        try:
            got = os.preadv(fd, buffers, offset)
        except OSError as exc:
            raise CorruptStoreError(f"{self.path / shard_name(k)}: cannot read record {index} ({exc.strerror})") from None
        finally:
            if temp:
                os.close(fd)
        if got != want:
            raise CorruptStoreError(
                f"{self.path / shard_name(k)}: record {index} ends past the end of the shard (truncated?)"
            )

    def _pread(self, k: int, n: int, offset: int, index: int) -> bytearray:
        buf = bytearray(n)
        if n:
            self._preadv(k, [buf], offset, index, n)
        return buf

    def close(self) -> None:
        lock = getattr(self, "_lock", None)
        if lock is None:
            return
        with lock:
            fds, self._fds = self._fds, {}
            self._views = {}  # views of the maps first: a map with views cannot close
            maps, self._maps = self._maps, {}
            dfd, self._dir_fd = self._dir_fd, None
        for mm in maps.values():
            try:
                mm.close()
            except BufferError:  # an array still views it (another thread's read): unmapped when freed
                pass
        for fd in [*fds.values(), *([dfd] if dfd is not None else [])]:
            try:
                os.close(fd)
            except OSError:
                pass

    # -- records ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._ix_raw)

    def _decode(self, i: int, row: tuple) -> Record:
        """Record ``i`` from its index row."""
        (k, img_off, img_size, hdr, lab_off, lab_size, meta_off, meta_size,
         h, w, c, dt, enc, _lkind, _label, _crc) = row[:16]
        shape = _row_shape(row)
        dtype = _DTYPES[dt]
        end = self._end(row)
        buf: Any = self._map(k)
        base = 0
        if buf is not None:
            if end > len(buf):
                raise CorruptStoreError(
                    f"{self.path / shard_name(k)}: record {i} ends past the end of the shard (truncated?)"
                )
            if enc == 0:
                img = np.frombuffer(buf, dtype, int(np.prod(shape)), img_off + hdr).reshape(shape).copy()
            else:
                img = self._png(i, k, buf[img_off : img_off + img_size], shape, dtype)
        elif enc == 0:  # straight into the image array; label and metadata follow the image
            img = np.empty(shape, dtype)
            nb = img.nbytes
            rest = end - img_off - img_size
            if rest > 0:
                buf, base = bytearray(rest), img_off + img_size
                self._preadv(k, [memoryview(img).cast("B"), buf], img_off + hdr, i, nb + rest)
            else:
                self._preadv(k, [memoryview(img).cast("B")], img_off + hdr, i, nb)
        else:
            buf, base = self._pread(k, end - img_off, img_off, i), img_off
            img = self._png(i, k, buf[:img_size], shape, dtype)
        label, meta = self._label_meta(i, row, buf, base)
        return Record(img, label, meta)

    @staticmethod
    def _end(row: tuple) -> int:
        """End offset of the last member of a record (image, then label, then metadata)."""
        end = row[1] + row[2]
        if row[13]:
            end = max(end, row[4] + row[5])
        if row[7]:
            end = max(end, row[6] + row[7])
        return end

    def _label_meta(self, i: int, row: tuple, buf: Any = None, base: int = 0) -> tuple[Label, dict]:
        """Label and metadata of record ``i``; ``buf`` holds the shard's bytes from ``base`` on
        (read here when None and needed)."""
        k, lab_off, lab_size, meta_off, meta_size, lkind, label = row[0], row[4], row[5], row[6], row[7], row[13], row[14]
        if not lkind and not meta_size:
            return label, {}
        if buf is None:
            buf = self._map(k)
            if buf is None or self._end(row) > len(buf):
                lo = lab_off if lkind else meta_off
                buf, base = self._pread(k, self._end(row) - lo, lo, i), lo
        if lkind:
            try:
                label = buf[lab_off - base : lab_off - base + lab_size].decode("utf-8")
            except UnicodeDecodeError:
                raise CorruptStoreError(f"{self.path / shard_name(k)}: record {i}'s label is not UTF-8 text") from None
        meta: dict = {}
        if meta_size:
            try:
                meta = loads_metadata(buf[meta_off - base : meta_off - base + meta_size].decode("utf-8"))
                if not isinstance(meta, dict):
                    raise ValueError("not a JSON object")
            except (ValueError, UnicodeDecodeError) as exc:
                raise CorruptStoreError(
                    f"{self.path / shard_name(k)}: record {i}'s metadata is not a JSON object ({str(exc).splitlines()[0]})"
                ) from None
        return label, meta

    def _png(self, i: int, k: int, data: Any, shape: tuple, dtype: np.dtype) -> np.ndarray:
        try:
            img = decode_png(bytes(data))
        except Exception as exc:
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CorruptStoreError(f"{self.path / shard_name(k)}: record {i} is not a readable PNG ({msg})") from None
        if img.dtype != dtype or img.shape[:2] != shape[:2] or img.size != int(np.prod(shape)):
            raise CorruptStoreError(
                f"{self.path / shard_name(k)}: record {i} decodes to {'x'.join(map(str, img.shape))} {img.dtype}, "
                f"the index says {'x'.join(map(str, shape))} {dtype}"
            )
        return img if img.shape == shape else img.reshape(shape)

    def _read(self, index: int) -> Record:
        return self._decode(index, self._row(index).tolist())

    def _gather(self, sel: np.ndarray) -> np.ndarray | None:
        """The images of same-shape .npy records as one array, gathered from the mapped shards by
        one fancy index per shard (a .npy member's pixels start at a multiple of 64 bytes, so a
        strided view of the map with one row per 64 bytes holds every record as a row); None
        when that does not apply."""
        first = sel[0]
        if not (self.use_mmap and (sel["enc"] == 0).all() and _same_shapes(sel)):
            return None
        shape = _sel_shape(sel)
        dtype = _DTYPES[int(first["dtype"])]
        step = int(np.prod(shape)) * dtype.itemsize
        pix = sel["img_off"].astype(np.int64) + sel["hdr"]
        if (pix % 64).any():
            return None
        rows = pix // 64
        shards = sel["shard"]
        ks = [int(shards[0])] if (shards == shards[0]).all() else np.unique(shards).tolist()
        views = []
        for k in ks:
            view = self._strided(k, step)
            if view is None:
                return None
            views.append(view)
        if len(ks) == 1:
            out = views[0][rows]
        else:
            out = np.empty((len(sel), step), np.uint8)
            for k, view in zip(ks, views):
                m = shards == k
                out[m] = view[rows[m]]
        return out.view(dtype).reshape((len(sel),) + shape)

    def _strided(self, k: int, step: int) -> np.ndarray | None:
        """Shard ``k``'s map as rows of ``step`` bytes starting every 64 bytes (read-only), or
        None when it is not mapped whole (then reads check each record's bounds)."""
        view = self._views.get((k, step))
        if view is None:
            mm = self._map(k)
            if mm is None or len(mm) < self._sizes[k] or len(mm) < step:
                return None
            whole = np.frombuffer(mm, np.uint8)
            view = np.lib.stride_tricks.as_strided(whole, ((len(mm) - step) // 64 + 1, step), (64, 1), writeable=False)
            if len(self._views) < 64:
                self._views[(k, step)] = view
        return view

    def _indices(self, indices: Sequence[int]) -> np.ndarray:
        """``indices`` as an int64 array, negative ones counted from the end; IndexError if out of range."""
        n = len(self._ix_raw)
        if isinstance(indices, range):
            idx = np.arange(indices.start, indices.stop, indices.step, dtype=np.int64)
        else:
            try:
                idx = np.asarray(indices, dtype=np.int64).reshape(-1)
            except (TypeError, ValueError, OverflowError):
                return np.asarray([self._index(i) for i in indices], dtype=np.int64)
        if idx.size:
            idx = np.where(idx < 0, idx + n, idx)
            bad = (idx < 0) | (idx >= n)
            if bad.any():
                self._index(int(np.asarray(indices).reshape(-1)[int(np.flatnonzero(bad)[0])]))  # the usual IndexError
        return idx

    def get_many(self, indices: Sequence[int]) -> list[Record]:
        idx_arr = self._indices(indices)
        if not idx_arr.size:
            return []
        sel = self._rows_of(idx_arr)
        idx = idx_arr.tolist()
        images = self._gather(sel)
        if images is None:
            return [self._decode(i, row) for i, row in zip(idx, sel.tolist())]
        if not sel["lkind"].any() and not sel["meta_size"].any():
            return [Record(img, label, {}) for img, label in zip(images, sel["label"].tolist())]
        out = []
        for img, i, row in zip(images, idx, sel.tolist()):
            label, meta = self._label_meta(i, row)
            out.append(Record(img, label, meta))
        return out

    def get_images(self, indices: Sequence[int]) -> np.ndarray | list[np.ndarray]:
        idx_arr = self._indices(indices)
        if not idx_arr.size:
            return []
        sel = self._rows_of(idx_arr)
        images = self._gather(sel)
        if images is not None:
            return images
        idx = idx_arr.tolist()
        first = sel[0]
        if not ((sel["enc"] == 0).all() and _same_shapes(sel)):
            return super().get_images(idx)
        out = np.empty((len(idx),) + _sel_shape(sel), _DTYPES[int(first["dtype"])])
        rows = out.reshape(len(idx), -1).view(np.uint8)
        flat = None
        step = out[0].nbytes
        for j, (i, k, off, hdr) in enumerate(zip(idx, sel["shard"].tolist(), sel["img_off"].tolist(), sel["hdr"].tolist())):
            mm = self._map(k)
            if mm is not None:
                if off + hdr + step > len(mm):
                    raise CorruptStoreError(
                        f"{self.path / shard_name(k)}: record {i} ends past the end of the shard (truncated?)"
                    )
                rows[j] = np.frombuffer(mm, np.uint8, step, off + hdr)
            else:
                if flat is None:
                    flat = memoryview(rows).cast("B")
                self._preadv(k, [flat[j * step : (j + 1) * step]], off + hdr, i, step)
        return out

    def _labels(self) -> list[Label]:
        ix = self._ix
        labels: list = ix["label"].tolist()
        if (ix["lkind"] != 0).any():
            if self._str_labels is None:
                out = list(labels)
                sel = np.flatnonzero(ix["lkind"] != 0)
                for i, k, off, size in zip(sel.tolist(), ix["shard"][sel].tolist(), ix["lab_off"][sel].tolist(),
                                           ix["lab_size"][sel].tolist()):
                    mm = self._map(k)
                    if mm is not None and off + size <= len(mm):
                        data = mm[off : off + size]
                    else:
                        data = self._pread(k, size, off, i)
                    try:
                        out[i] = data.decode("utf-8")
                    except UnicodeDecodeError:
                        raise CorruptStoreError(f"{self.path}: record {i}'s label is not UTF-8 text") from None
                self._str_labels = out
            labels = list(self._str_labels)
        return labels

    def _labels_array(self) -> np.ndarray:
        self._check_index_crc()  # (the label column only: the rows' offsets are not needed)
        ix = self._ix_raw
        if not len(ix) or not (ix["lkind"] != 0).any():
            return ix["label"].astype(np.int64)  # the index's int label column: 8 bytes a record
        return labels_to_array(self._labels())

    def _stored_checksum(self, index: int) -> int | None:
        return int(self._row(index)["checksum"])

    # -- checks ----------------------------------------------------------------------------------
    def _verify_extra(self) -> list[str]:
        try:
            self._check_index_crc()  # (opened without it: a large index)
        except CorruptStoreError as exc:
            return [str(exc)]
        problems: list[str] = []
        count = self.manifest.get("count")
        if count != len(self):
            problems.append(f"{INDEX} has {len(self):,} rows but {MANIFEST} says {count} records")
        allowed = {MANIFEST, INDEX} | {shard_name(k) for k in range(self._n_shards)}
        for name in sorted(os.listdir(self.path)):
            if name not in allowed:
                problems.append(f"{name}: unexpected file in the store folder")
        for k in range(self._n_shards):
            problems.extend(self._verify_shard(k)[:20])
        return problems

    def _verify_shard(self, k: int) -> list[str]:
        """Walk shard ``k``'s tar headers: its members must be exactly the index's (names, offsets,
        sizes), the .npy headers and .cls texts must say what the index says, and the archive must
        end with zero blocks; so the ``webdataset`` package reads the same records as imgtui."""
        rows = np.flatnonzero(self._ix["shard"] == k)
        sub = self._ix[rows]
        # data offset -> (member name, size, record, bytes its data must start with)
        want: dict[int, tuple[str, int, int, bytes]] = {}
        for i, row in zip(rows.tolist(), sub.tolist()):
            (_k, img_off, img_size, hdr, lab_off, lab_size, meta_off, meta_size, h, w, c, dt, enc, lkind,
             label, _crc) = row[:16]
            key = record_key(i)
            head = npy_header(_DTYPES[dt], _row_shape(row)) if enc == 0 else b""
            want[img_off] = (f"{key}.{_IMG_EXT[enc]}", img_size, i, head)
            want[lab_off] = (f"{key}.{_LAB_EXT[lkind]}", lab_size, i, b"" if lkind else str(label).encode())
            if meta_size:
                want[meta_off] = (f"{key}.json", meta_size, i, b"")
        name = shard_name(k)
        problems: list[str] = []
        fd, temp = self._fd(k)
        try:
            window, wbase = b"", 0

            def get(pos: int, n: int) -> bytes:
                nonlocal window, wbase
                if pos < wbase or pos + n > wbase + len(window):
                    window, wbase = os.pread(fd, max(n, VERIFY_WINDOW), pos), pos
                return window[pos - wbase : pos - wbase + n]

            fsize = os.fstat(fd).st_size
            pos = 0
            ended = False
            blocks: list[bytes] = []  # headers walked, their checksums checked at once below
            stored: list[int] = []
            starts: list[int] = []
            while pos + BLOCK <= fsize and len(problems) < 20:
                block = get(pos, BLOCK)
                try:
                    head = parse_tar_header(block, check=False)
                except ValueError as exc:
                    problems.append(f"{name}: {exc} at offset {pos:,}")
                    break
                if head is None:
                    ended = True
                    break
                mname, size, chk = head
                blocks.append(block)
                stored.append(chk)
                starts.append(pos)
                off = pos + BLOCK
                exp = want.pop(off, None)
                if exp is None:
                    problems.append(f"{name}: member {mname!r} at offset {off:,} is not in {INDEX}")
                elif exp[0] != mname or exp[1] != size:
                    problems.append(f"record {exp[2]}: {name} holds {mname!r} ({size:,} bytes) at offset {off:,} "
                                    f"where {INDEX} says {exp[0]} ({exp[1]:,} bytes)")
                elif exp[3] and (mname.endswith(".cls") and size != len(exp[3]) or get(off, len(exp[3])) != exp[3]):
                    what = "the .npy header" if mname.endswith(".npy") else "the .cls label"
                    problems.append(f"record {exp[2]}: {what} in {name} does not say what {INDEX} says")
                pos = off + _padded(size)
            if not ended and not problems:
                problems.append(f"{name}: truncated (no end-of-archive blocks)")
            if blocks:
                arr = np.frombuffer(b"".join(blocks), np.uint8).reshape(len(blocks), BLOCK).astype(np.int64)
                sums = arr.sum(axis=1) - arr[:, 148:156].sum(axis=1) + 256
                bad = np.flatnonzero(sums != np.array(stored, np.int64))
                if len(bad):  # a damaged header: what the walk found past it means little
                    first = starts[int(bad[0])]
                    problems = [f"{name}: tar header checksum mismatch at offset {starts[int(j)]:,}" for j in bad[:20]]
                    want = {o: v for o, v in want.items() if o <= first}
        except OSError as exc:
            problems.append(f"{name}: cannot be read ({exc.strerror})")
        finally:
            if temp:
                os.close(fd)
        for off, (mname, _size, i, _head) in sorted(want.items())[: max(0, 20 - len(problems))]:
            problems.append(f"record {i}: member {mname} at offset {off:,} of {name} is missing from the tar")
        return problems

    def info(self) -> dict:
        d = super().info()
        d["layout"] = (
            f"{self._n_shards:,} tar shard(s) shard-NNNNNN.tar of NNNNNNNNN.{'png' if self.manifest.get('options', {}).get('encoding') == 'png' else 'npy'}"
            " + .cls/.txt (+ .json) members, index.npy, manifest.json"
        )
        d["shards"] = self._n_shards
        return d
