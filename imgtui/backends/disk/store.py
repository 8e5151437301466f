"""The disk backend: a folder with one lossless PNG (or TIFF, for signed, 32-bit and float pixels) per record, a CSV table and a manifest.

Layout of a store ``<path>/``::

    images/000/000000.png ... images/000/000999.png   at most 1,000 files per sub-folder
    images/001/001000.png ...
    records.csv      index,file,label,label_type,shape,dtype,crc32,metadata  (one row per record)
    manifest.json    written last and atomically; its presence marks the store complete

``records.csv`` is plain RFC 4180 CSV (read it with ``csv`` or ``pandas.read_csv(...,
dtype={"label": str})``): ``label_type`` says whether ``label`` is an ``int`` or a ``str``,
``shape`` is ``HxW`` or ``HxWxC``, ``crc32`` is the decimal crc32 of the pixel bytes (C order,
native byte order) and ``metadata`` is compact JSON.

PNG encoding: imgtui writes the PNGs itself with numpy + ``zlib`` (standard PNG, any decoder
reads them): 8- or 16-bit gray/RGB/RGBA (colour types 0/2/6), big-endian 16-bit samples as the
PNG standard says, every row with the Sub filter. Pillow cannot write 16-bit RGB/RGBA at all
(and reads it truncated to 8 bits), and writing our own lets the reader undo the Sub filter with
one numpy cumulative sum: decoding is ~2.4x cheaper than Pillow's, for ~5% larger files than
Pillow's adaptive filtering. PNGs written by anything else still read (through Pillow, or this
module's general filter code for 16-bit colour). An HxWx1 image is stored as a gray PNG; the
``shape`` column restores its third axis.

Other dtypes: a bool record is an 8-bit PNG of 0/255 (any viewer shows the mask; the reader
accepts only 0 and 255 and gives back bool); int8, int16, uint32, int32, float32 and float64
records are ``.tif`` files written by :mod:`imgtui.tiff` (baseline little-endian TIFF, deflate at
``png_level`` > 0, uncompressed at 0, SampleFormat int/float: the exact bytes, NaN payloads too).
The ``dtype`` column says which; the file name's suffix must agree with it.

Writing encodes each batch in a pool of 2 (up to 4) workers, keeping at most two chunks per
worker in flight, in the order of the table: forked processes when the caller runs no other
thread, else threads (forking a multi-threaded process is unsafe). Measured on 2 cores, 10,000
CIFAR-10 images: plain ``Image.fromarray(img).save(path)`` loop 1.41 s, imgtui serial 1.04 s,
2 threads 0.71 s, 2 processes 0.63 s. Reading decodes in the calling thread: a thread pool
(``DiskReader.workers``) measured slower (0.65 s vs 0.40 s; the article's loop: 0.56 s).
"""

from __future__ import annotations

import csv
import io
import json
import mmap
import os
import re
from array import array
from collections import deque
import multiprocessing
import signal
import threading
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from ...errors import (
    CorruptStoreError,
    ImgtuiError,
    IncompleteStoreError,
    StoreFullError,
    StoreChangedError,
    StoreNotFoundError,
    WrongBackendError,
)
from ...records import DTYPE_NAMES, Label, Record, is_volume, loads_metadata, shape_of_key
from ...png import DEFAULT_PNG_LEVEL, PNG_FILTER, decode_png, encode_png, png_size  # noqa: F401
from ...tiff import decode_tiff, decode_tiff_pages, encode_tiff, encode_tiff_pages, tiff_size
from ..safety import die_with_parent
from ..base import StoreReader, StoreWriter, atomic_write_text, check_manifest, labels_to_array

MANIFEST = "manifest.json"
TABLE = "records.csv"
#: the intent record of a change in progress (see mutator.py)
INTENT = ".imgtui-change.json"
IMAGES = "images"
FILES_PER_FOLDER = 1000
COLUMNS = ("index", "file", "label", "label_type", "shape", "dtype", "crc32", "metadata")

_DTYPES = DTYPE_NAMES
#: dtypes written as PNG (bool as 8-bit gray/RGB(A) 0/255, which every viewer shows as a mask);
#: every other dtype is written as a lossless TIFF (:mod:`imgtui.tiff`)
PNG_DTYPES = frozenset(np.dtype(t) for t in ("uint8", "uint16", "bool"))
#: what ``info`` and the README say about the files
FILE_FORMATS = ("uint8/uint16 -> PNG 8/16-bit; bool -> 8-bit PNG of 0/255; int8, int16, uint32, int32, "
                "float32, float64 -> baseline TIFF (deflate, SampleFormat int/float, little-endian)")


def file_format(dtype: np.dtype | str) -> str:
    """How a record of ``dtype`` is stored, for ``info`` ("8-bit PNG", "TIFF float32, deflate")."""
    dt = np.dtype(dtype)
    if dt == np.bool_:
        return "8-bit PNG of 0/255"
    if dt in PNG_DTYPES:
        return f"{8 * dt.itemsize}-bit PNG"
    return f"TIFF {dt.name}"


def suffix_of(dtype: np.dtype | str | None, shape: tuple | None = None) -> str:
    """``.png`` for the images of the dtypes PNG holds, ``.tif`` for the others and for every
    3-D record (a multi-page TIFF, one page per slice)."""
    if shape is not None and is_volume(shape):
        return ".tif"
    return ".png" if dtype is None or np.dtype(dtype) in PNG_DTYPES else ".tif"


def image_name(index: int, dtype: np.dtype | str | None = None, shape: tuple | None = None) -> str:
    """Relative path of record ``index``'s image file inside a store (PNG, or TIFF by dtype and shape)."""
    return f"{IMAGES}/{index // FILES_PER_FOLDER:03d}/{index:06d}{suffix_of(dtype, shape)}"


def is_png(dtype: np.dtype, shape: tuple) -> bool:
    """Whether a record of this dtype and shape is a PNG file (else a TIFF)."""
    return dtype in PNG_DTYPES and not is_volume(shape)


def encode_image(image: np.ndarray, level: int) -> bytes:
    """The file bytes of one record: PNG for uint8/uint16/bool images, TIFF for the other dtypes,
    a multi-page TIFF for a 3-D record (bool as 0/255 bytes, as in the mask PNGs)."""
    if is_volume(image.shape):
        return encode_tiff_pages(image.view(np.uint8) * np.uint8(255) if image.dtype == np.bool_ else image, level)
    if image.dtype == np.bool_:
        return encode_png(image.view(np.uint8) * np.uint8(255), level)
    if image.dtype in PNG_DTYPES:
        return encode_png(image, level)
    return encode_tiff(image, level)


def _bad_file_name(where: str, name: str, dtype: str, shape: tuple) -> str:
    suffix = suffix_of(dtype, shape)
    what = f"the {'x'.join(map(str, shape))} {dtype} records' files" if suffix != suffix_of(dtype) else f"the {dtype} records' files"
    return (f"{where}: file {name!r} is not a {'PNG' if suffix == '.png' else 'TIFF'} under images/ of the store "
            f"({what} are {suffix})")


def _write_file(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def _encode_and_write(items: list[tuple[str, np.ndarray]], level: int) -> None:
    for path, image in items:
        _write_file(path, encode_image(image, level))


def _worker_init() -> None:
    # Ctrl-C goes to the whole process group: the parent handles it (and rolls back); the
    # encoder processes just finish their chunk instead of printing tracebacks
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent()  # a killed writer leaves no encoder behind


class DiskWriter(StoreWriter):
    backend = "disk"
    default_batch_size = 256
    #: encoder workers (1: encode in the calling thread)
    workers: ClassVar[int] = min(4, os.cpu_count() or 1)
    #: "process" (forked workers; used only while the caller runs no other thread, since forking
    #: a multi-threaded process is unsafe), "thread" (the fallback) or "serial"
    pool_kind: ClassVar[str] = "process"
    #: batches submitted to the pool and not yet finished, at most (per worker)
    max_in_flight: ClassVar[int] = 2

    @classmethod
    def check_options(cls, options: dict) -> dict:
        options = dict(options)
        level = options.pop("png_level", DEFAULT_PNG_LEVEL)
        if options:
            raise ImgtuiError(
                f"disk: unknown option(s) {', '.join(sorted(options))} (the disk backend takes png_level)"
            )
        try:
            if isinstance(level, bool) or float(level) != int(level):
                raise ValueError
            ivalue = int(level)
        except (TypeError, ValueError, OverflowError):
            ivalue = -1
        if not 0 <= ivalue <= 9:
            raise ImgtuiError(f"disk: png_level must be a whole number from 0 to 9, got {level!r}")
        return {"png_level": ivalue}

    def _open_store(self) -> None:
        self._pool: Executor | None = None
        self._futures: deque[Future] = deque()
        self._dirs_made: set[int] = set()
        self._table = None
        os.mkdir(self.build_path)
        os.mkdir(self.build_path / IMAGES)
        self._table = open(self.build_path / TABLE, "w", encoding="utf-8", newline="")
        self._csv = csv.writer(self._table)  # \r\n rows: fields holding \r or \n get quoted
        self._csv.writerow(COLUMNS)
        self._table.flush()

    def _make_pool(self) -> Executor:
        if (
            self.pool_kind == "process"
            and threading.active_count() == 1
            and "fork" in multiprocessing.get_all_start_methods()
            and not multiprocessing.current_process().daemon  # daemons may not have children
        ):
            ctx = multiprocessing.get_context("fork")  # workers inherit numpy & co: no start-up cost
            return ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_worker_init)
        return ThreadPoolExecutor(self.workers, thread_name_prefix="imgtui-disk")

    def _wait(self, keep: int) -> None:
        while len(self._futures) > keep:
            try:
                self._futures.popleft().result()
            except BrokenProcessPool:
                raise ImgtuiError(
                    f"cannot write {self.path}: a PNG encoder process stopped unexpectedly (killed?)"
                ) from None

    def _write_batch(self, records: list[Record], checksums: list[int], start: int) -> None:
        level = self.options["png_level"]
        items = []
        rows = []
        root = str(self.build_path)
        for k, (rec, crc) in enumerate(zip(records, checksums)):
            i = start + k
            folder = i // FILES_PER_FOLDER
            if folder not in self._dirs_made:
                os.makedirs(os.path.join(root, IMAGES, f"{folder:03d}"), exist_ok=True)
                self._dirs_made.add(folder)
            name = image_name(i, rec.image.dtype, rec.image.shape)
            items.append((os.path.join(root, name), rec.image))
            label = rec.label
            rows.append((
                i, name, label, "int" if isinstance(label, int) else "str",
                "x".join(map(str, rec.image.shape)), str(rec.image.dtype), crc,
                rec.meta_json,
            ))
        # a single small batch (e.g. the store_one benchmark) is encoded right here: no pool
        serial = self.workers <= 1 or self.pool_kind == "serial"
        if serial or (self._pool is None and len(records) < self.batch_size):
            _encode_and_write(items, level)
        else:
            if self._pool is None:
                self._pool = self._make_pool()
            if isinstance(self._pool, ThreadPoolExecutor):
                # the caller may reuse its arrays once write() returns: hand the threads copies
                items = [(path, image.copy()) for path, image in items]
            per = -(-len(items) // self.workers)
            for s in range(0, len(items), per):
                self._futures.append(self._pool.submit(_encode_and_write, items[s : s + per], level))
            self._wait(self.max_in_flight * self.workers)
        self._csv.writerows(rows)
        self._table.flush()

    def manifest(self, **extra: Any) -> dict:
        layout = {"images": "images/{index//1000:03d}/{index:06d}.png (.tif for dtypes PNG cannot hold)",
                  "files_per_folder": FILES_PER_FOLDER, "table": TABLE, "columns": list(COLUMNS),
                  "file_formats": FILE_FORMATS}
        return super().manifest(layout=layout, **extra)

    def _finalize(self, manifest: dict) -> None:
        try:
            self._wait(0)
            self._shutdown_pool()
            self._table.flush()
            os.fsync(self._table.fileno())
            self._table.close()
            manifest["table_bytes"] = plain_table_bytes(self.build_path / TABLE, manifest.get("count", 0))
            atomic_write_text(self.build_path / MANIFEST, json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
        except OSError as exc:
            if exc.errno == 28:
                raise StoreFullError(f"disk full while writing {self.path}: {exc.strerror}") from None
            raise

    def _shutdown_pool(self, cancel: bool = False) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=cancel)  # no worker may write after this
            self._pool = None

    def _close_on_error(self) -> None:
        try:
            self._shutdown_pool(cancel=True)
        finally:
            table = getattr(self, "_table", None)
            if table is not None:
                try:
                    table.close()
                except OSError:
                    pass


# ---------------------------------------------------------------------------------------------
# reader
# ---------------------------------------------------------------------------------------------
_SHAPE_RE = re.compile(r"^[1-9][0-9]*x[1-9][0-9]*(x[1-9][0-9]*)?(x[134])?$")
#: the only file names a table may list: PNGs under images/NNN/ (a hostile table cannot make
#: imgtui read, or a change remove, anything outside the store)
FILE_RE = re.compile(r"^images/[0-9]{3,}/[0-9]{6,}(-g[0-9]+)?(-[0-9]+)?\.(png|tif)$")
_TABLE_NAME_RE = re.compile(r"^records(-[0-9]+)?\.csv$")


def _table_of(manifest: dict, path: Path) -> str:
    name = manifest.get("table") or TABLE
    if not isinstance(name, str) or not _TABLE_NAME_RE.match(name):
        raise CorruptStoreError(f"{path}: {MANIFEST} names the table {name!r}, not records[-N].csv")
    return name


#: what ``atomic_write_text`` writes before its rename (``.manifest.json.tmp-<pid>``): a change killed
#: between the two leaves it behind; it is no record's, ``imgtui repair`` removes it
_TEMP_RE = re.compile(r"^\..+\.tmp-\d+$")


def temporaries(path: Path) -> list[str]:
    """Names of the temporaries a killed change left in the store folder ``path``."""
    try:
        return sorted(n for n in os.listdir(path) if _TEMP_RE.match(n))
    except OSError:
        return []


def _line_count(data: Any) -> int:
    """Line breaks in ``data`` (bytes or a map), counted a megabyte at a time."""
    step, n = 1 << 20, 0
    for s in range(0, len(data), step):
        n += int(np.count_nonzero(np.frombuffer(data[s : s + step], np.uint8) == 10))
    return n


def plain_table_bytes(table: Path, count: int) -> int | None:
    """The size of a finished table with one line per row (no line break inside a cell), for the
    manifest's ``table_bytes``: a reader that finds the table at that size skips counting its lines
    on open (40 ms at 1,000,000 rows). None when some cell holds a line break."""
    with open(table, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if not size:
            return None
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return size if _line_count(data) == count + 1 else None


def _bisect_row(data: Any, i: int, key: bytes) -> int:
    """Where ``key`` (``b"\\n<i>,"``) is in a table whose rows are in index order and hold no line
    break: a bisection on the index that starts each line, then a short search (rows grow longer
    with their index, so the proportional guess misses by megabytes at a million rows)."""
    lo, hi = 0, len(data)
    while hi - lo > 16384:
        mid = (lo + hi) // 2
        nl = data.find(b"\n", mid, hi)
        comma = data.find(b",", nl + 1, nl + 24) if nl >= 0 else -1
        try:
            j = int(data[nl + 1 : comma]) if comma > 0 else -1
        except ValueError:
            j = -1
        if j < 0:
            break  # not a row start where one should be: search the rest plainly
        if j == i:
            return nl
        if j < i:
            lo = nl + 1
        else:
            hi = nl + len(key)
    start = data.find(key, lo, hi)
    return start if start >= 0 else data.find(key)


def _is_disk_folder(path: Path) -> bool:
    return (path / TABLE).is_file() and (path / IMAGES).is_dir()


class DiskReader(StoreReader):
    backend = "disk"
    #: threads decoding PNGs in get_many (0/1: decode in the calling thread, the measured fastest)
    workers: ClassVar[int] = 0

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(path)
        p = self.path
        if not p.exists():
            raise StoreNotFoundError(f"{p}: no such file or folder")
        if not p.is_dir():
            raise WrongBackendError(f"{p} is not a disk store (a disk store is a folder)")
        mpath = p / MANIFEST
        if not mpath.is_file():
            if _is_disk_folder(p):
                raise IncompleteStoreError(
                    f"{p} is incomplete: its writer did not finish (interrupted or killed); "
                    "re-create it with --overwrite"
                )
            raise WrongBackendError(f"{p} is not a disk store (no {MANIFEST} or {TABLE} in it)")
        try:
            manifest = json.loads(mpath.read_text(encoding="utf-8"))
            if not isinstance(manifest, dict):
                raise ValueError("not a JSON object")
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise CorruptStoreError(f"{mpath}: cannot be read ({exc})") from None
        self.manifest = check_manifest(manifest, "disk", p)
        self._table_name = _table_of(self.manifest, p)
        self._generation = self.manifest.get("generation", 0)
        self._rows: dict[int, tuple] = {}
        self._open_table()

    # -- the table: checked on open, parsed whole only when a column is needed -------------------
    #: the columns the full parse makes (``__getattr__`` parses the table on first access)
    _TABLE_COLUMNS: ClassVar[frozenset] = frozenset(
        ("_labels_col", "_int_labels", "_shape_list", "_shape_codes", "_root", "_crc", "_meta", "_files")
    )

    def __getattr__(self, name: str) -> Any:
        if name in DiskReader._TABLE_COLUMNS and "_table" in self.__dict__:
            self._load_table()
            return self.__dict__[name]
        raise AttributeError(name)

    def _open_table(self) -> None:
        """Read the table's bytes (kept: a change may remove the file later) and check its row count
        against the manifest without parsing it: with no line break inside a quoted cell (the
        writer writes none: metadata is JSON), the table has ``count`` rows exactly when it has
        ``count + 1`` lines and the last begins with index ``count - 1``. Anything else is parsed
        whole now, as before, and refused when its rows differ from the manifest's count."""
        tpath = self.path / self._table_name
        try:
            with open(tpath, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                # mapped, not read: the line count below is one vectorised pass over the map (a
                # change never edits a table in place, it writes a new one; the map keeps this one)
                data: Any = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        except (OSError, ValueError) as exc:
            raise CorruptStoreError(f"{tpath}: cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
        self._table = data
        count = self.manifest.get("count")
        end = data.find(b"\n")
        # the writer recorded the size of a table with one line per row: at that size, the lines
        # are not counted again (a table edited, cut or padded since is counted as before)
        known = self.manifest.get("table_bytes")
        if (isinstance(count, int) and count > 0 and end > 0 and data[-1:] == b"\n"
                and ((isinstance(known, int) and known == size) or _line_count(data) == count + 1)):
            last = data.rfind(b"\n", 0, len(data) - 1) + 1
            want = b"%d," % (count - 1)
            if data[last : last + len(want)] == want:
                self._header(data[: end + 1], tpath)
                self._n = count
                return
        self._load_table()

    def _header(self, line: bytes, tpath: Path) -> None:
        try:
            header = next(csv.reader([line.decode("utf-8")]), None)
        except (UnicodeDecodeError, csv.Error):
            header = None
        if header is None or tuple(header[: len(COLUMNS)]) != COLUMNS:
            raise CorruptStoreError(f"{tpath}: header is not {','.join(COLUMNS)}")

    def _row(self, i: int) -> tuple:
        """Row ``i`` parsed alone from the table's bytes (before the table is parsed whole):
        (file, label, (shape, dtype, size), crc, metadata cell)."""
        row = self._rows.get(i)
        if row is not None:
            return row
        data, tpath = self._table, self.path / self._table_name
        # every line starts with its index and no line break sits inside a cell (checked on open),
        # so b"\n<i>," occurs once, at row i: look near where rows of the average length put it
        key = b"\n%d," % i
        guess = len(data) * (i + 1) // (self._n + 1)
        start = data.find(key, max(0, guess - 8192), guess + 8192)
        if start < 0:
            start = _bisect_row(data, i, key)
        start += 1
        end = data.find(b"\n", start)
        try:
            cells = next(csv.reader([data[start:end].decode("utf-8")]))
        except (UnicodeDecodeError, csv.Error, StopIteration):
            raise CorruptStoreError(f"{tpath} line {i + 2}: cannot be read") from None
        if start <= 0 or len(cells) < len(COLUMNS) or cells[0] != str(i):
            raise CorruptStoreError(f"{tpath} line {i + 2}: expected record {i} with {len(COLUMNS)} columns")
        _idx, name, label, ltype, shape, dtype, crc, md = cells[: len(COLUMNS)]
        try:
            if ltype == "int":
                label = int(label)
            elif ltype != "str":
                raise CorruptStoreError(f"{tpath} line {i + 2}: label_type {ltype!r} is not int or str")
            if dtype not in _DTYPES or not _SHAPE_RE.match(shape):
                raise CorruptStoreError(f"{tpath} line {i + 2}: bad shape {shape!r} or dtype {dtype!r}")
            shp = tuple(int(s) for s in shape.split("x"))
            crc = int(crc)
        except ValueError as exc:
            raise CorruptStoreError(f"{tpath} line {i + 2}: bad value ({exc})") from None
        if name != image_name(i, _DTYPES[dtype], shp) and (not FILE_RE.match(name) or name[-4:] != suffix_of(dtype, shp)):
            raise CorruptStoreError(_bad_file_name(f"{tpath} line {i + 2}", name, dtype, shp))
        if len(self._rows) >= 64:
            self._rows.clear()
        row = self._rows[i] = (name, label, (shp, _DTYPES[dtype], int(np.prod(shp))), crc, None if md in ("", "{}") else md)
        return row

    def _load_table(self) -> None:
        tpath = self.path / self._table_name
        data = self.__dict__.pop("_table", None)
        labels: list[Label] = []
        int_labels = True
        shape_codes: list[int] = []
        shapes: dict[tuple, int] = {}
        crcs: list[int] = []
        meta: list[str | None] = []
        files: dict[int, str] = {}
        try:
            f = io.StringIO(bytes(data).decode("utf-8"), newline="") if data is not None else open(tpath, encoding="utf-8", newline="")
        except UnicodeDecodeError:
            raise CorruptStoreError(f"{tpath}: not UTF-8 text") from None
        except OSError as exc:
            raise CorruptStoreError(f"{tpath}: cannot be read ({exc.strerror})") from None
        with f:
            reader = csv.reader(f)
            try:
                header = next(reader, None)
                if header is None or tuple(header[: len(COLUMNS)]) != COLUMNS:
                    raise CorruptStoreError(f"{tpath}: header is not {','.join(COLUMNS)}")
                for n, row in enumerate(reader):
                    line = n + 2
                    if len(row) < len(COLUMNS):
                        raise CorruptStoreError(f"{tpath} line {line}: expected {len(COLUMNS)} columns, got {len(row)}")
                    idx, name, label, ltype, shape, dtype, crc, md = row[: len(COLUMNS)]
                    if idx != str(n):
                        raise CorruptStoreError(f"{tpath} line {line}: index {idx!r}, expected {n}")
                    if ltype == "int":
                        label = int(label)
                    elif ltype == "str":
                        int_labels = False
                    else:
                        raise CorruptStoreError(f"{tpath} line {line}: label_type {ltype!r} is not int or str")
                    if dtype not in _DTYPES or not _SHAPE_RE.match(shape):
                        raise CorruptStoreError(f"{tpath} line {line}: bad shape {shape!r} or dtype {dtype!r}")
                    key = (tuple(int(s) for s in shape.split("x")), dtype)
                    shape_codes.append(shapes.setdefault(key, len(shapes)))
                    labels.append(label)
                    crcs.append(int(crc))
                    meta.append(None if md in ("", "{}") else md)
                    if name != image_name(n, _DTYPES[dtype], key[0]):
                        if not FILE_RE.match(name) or name[-4:] != suffix_of(dtype, key[0]):
                            raise CorruptStoreError(_bad_file_name(f"{tpath} line {line}", name, dtype, key[0]))
                        files[n] = name
            except csv.Error as exc:
                raise CorruptStoreError(f"{tpath} line {reader.line_num}: {exc}") from None
            except ValueError as exc:
                raise CorruptStoreError(f"{tpath} line {reader.line_num}: bad value ({exc})") from None
            except UnicodeDecodeError:
                raise CorruptStoreError(f"{tpath}: not UTF-8 text") from None
        count = self.manifest.get("count")
        if isinstance(count, int) and count != len(crcs):  # a table cut (even at a row boundary) or padded
            raise CorruptStoreError(
                f"{tpath} has {len(crcs):,} rows but {MANIFEST} says {count:,} records; the store is damaged"
            )
        self._n = len(crcs)
        self._rows = {}
        self._int_labels = int_labels
        self._labels_col: Any = np.array(labels, dtype=np.int64) if int_labels else labels
        self._shape_list = [
            (shape, _DTYPES[dt], int(np.prod(shape))) for (shape, dt), _ in sorted(shapes.items(), key=lambda kv: kv[1])
        ]
        self._shape_codes = array("I", shape_codes)  # a compact column, cheap to index
        self._root = str(self.path)
        self._crc = np.array(crcs, dtype=np.uint32)
        self._meta = meta
        self._files = files

    # -- StoreReader hooks ------------------------------------------------------------------
    def __len__(self) -> int:
        return self._n

    def file_of(self, index: int) -> str:
        """Relative path (from the store folder) of record ``index``'s PNG or TIFF."""
        shape, dtype, _size = self._shape_list[self._shape_codes[index]]
        return self._files.get(index) or image_name(index, dtype, shape)

    def _label(self, i: int) -> Label:
        return int(self._labels_col[i]) if self._int_labels else self._labels_col[i]

    def _decode(self, i: int) -> np.ndarray:
        if "_table" in self.__dict__:  # the table is not parsed yet: this record's row only
            name, _label, (shape, dtype, size), _crc, _md = self._row(i)
            return self._decode_file(i, os.path.join(str(self.path), name), shape, dtype, size)
        shape, dtype, size = self._shape_list[self._shape_codes[i]]
        path = os.path.join(self._root, self._files.get(i) or image_name(i, dtype, shape))
        return self._decode_file(i, path, shape, dtype, size)

    def _decode_file(self, i: int, path: str, shape: tuple, dtype: np.dtype, size: int) -> np.ndarray:
        png = is_png(dtype, shape)
        volume = is_volume(shape)
        kind = "PNG" if png else "TIFF"
        data = self._file_bytes(i, path)
        try:
            hw = png_size(data) if png else tiff_size(data)
        except ValueError:
            hw = None
        if hw is not None and hw != tuple(shape[1:3] if volume else shape[:2]):  # checked before anything is inflated
            raise CorruptStoreError(
                f"{path}: record {i} is a {hw[0]}x{hw[1]} {kind}, records.csv says {'x'.join(map(str, shape))} {dtype}"
            )
        try:
            img = decode_png(data) if png else decode_tiff_pages(data, shape[0]) if volume else decode_tiff(data)
        except Exception as exc:  # Pillow raises many kinds of errors on damaged files
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CorruptStoreError(f"{path}: record {i} is not a readable {kind} ({msg})") from None
        if dtype == np.bool_ and img.dtype == np.uint8:
            mask = img != 0
            if not (img[mask] == 255).all():  # a mask PNG holds 0 and 255 only
                raise CorruptStoreError(f"{path}: record {i} is a bool mask but its PNG holds values other than 0 and 255")
            img = mask
        want = tuple(shape[:3]) if volume else tuple(shape[:2])
        if img.dtype != dtype or img.size != size or img.shape[: len(want)] != want:
            raise CorruptStoreError(
                f"{path}: record {i} decodes to {'x'.join(map(str, img.shape))} {img.dtype}, "
                f"records.csv says {'x'.join(map(str, shape))} {dtype}"
            )
        return img if img.shape == shape else img.reshape(shape)

    def _file_bytes(self, i: int, path: str) -> bytes:
        """The bytes of record ``i``'s image file ``path``."""
        try:
            with open(path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            self._check_unchanged()
            raise CorruptStoreError(f"{path}: image file of record {i} is missing") from None
        except OSError as exc:
            raise CorruptStoreError(f"{path}: cannot read record {i} ({exc.strerror})") from None

    def _check_unchanged(self) -> None:
        """Raise StoreChangedError when the store was changed since this reader opened it (a change
        removes the files the new store no longer uses)."""
        try:
            m = json.loads((self.path / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError):
            return
        if isinstance(m, dict) and (m.get("generation", 0) != self._generation or m.get("table", TABLE) != self._table_name):
            raise StoreChangedError(f"{self.path}: the store changed since it was opened; reopen it")

    def _read(self, index: int) -> Record:
        if "_table" in self.__dict__:  # the table is not parsed yet: this record's row only
            _name, label, _shape, _crc, md = self._row(index)
            try:
                meta = loads_metadata(md) if md else {}
            except ValueError:
                raise CorruptStoreError(f"{self.path / self._table_name}: record {index}: its metadata is not valid JSON") from None
            return Record(self._decode(index), label, meta)
        md = self._meta[index]
        try:
            meta = loads_metadata(md) if md else {}
        except ValueError:  # a damaged metadata cell
            raise CorruptStoreError(f"{self.path / self._table_name}: record {index}: its metadata is not valid JSON") from None
        return Record(self._decode(index), self._label(index), meta)

    def get_many(self, indices: Sequence[int]) -> list[Record]:
        idx = [self._index(i) for i in indices]
        if self.workers <= 1 or len(idx) < 32:
            return [self._read(i) for i in idx]
        pool = self._get_pool()
        return list(pool.map(self._read, idx, chunksize=max(1, len(idx) // (4 * self.workers))))

    def _get_pool(self) -> Executor:
        pool = getattr(self, "_pool", None)
        if pool is None:
            pool = self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="imgtui-disk-read")
        return pool

    def close(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            self._pool = None
            pool.shutdown(wait=True)

    def _labels(self) -> list[Label]:
        return self._labels_col.tolist() if self._int_labels else list(self._labels_col)

    def _labels_array(self) -> np.ndarray:
        if self._int_labels:  # the table's int64 label column, read-only (the reader's own)
            view = self._labels_col.view()
            view.flags.writeable = False
            return view
        return labels_to_array(self._labels_col)

    def _stored_checksums(self, idx: np.ndarray) -> np.ndarray | None:
        return self._crc[idx]

    def _stored_checksum(self, index: int) -> int | None:
        if "_table" in self.__dict__:
            return self._row(index)[3]
        return int(self._crc[index])

    def _verify_extra(self) -> list[str]:
        problems: list[str] = []
        count = self.manifest.get("count")
        if count != self._n:
            problems.append(f"{self.path / self._table_name} has {self._n:,} rows but {MANIFEST} says {count} records")
        listed = {self.file_of(i) for i in range(self._n)}
        found: set[str] = set()
        root = self.path / IMAGES
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            rel = Path(dirpath).relative_to(self.path).as_posix()
            for fn in sorted(filenames):
                found.add(f"{rel}/{fn}")
        for i in range(self._n):
            name = self.file_of(i)
            if name not in found:
                problems.append(f"record {i}: image file {name} is missing")
        if (self.path / INTENT).exists():
            return problems  # the extra files are an interrupted change's: a note says so, repair removes them
        for name in sorted(found - listed):
            problems.append(f"{name}: extra file not listed in {self._table_name}")
        temps = set(temporaries(self.path))  # an interrupted change's: a note says so
        for name in sorted(os.listdir(self.path)):
            if name not in (MANIFEST, self._table_name, IMAGES) and name not in temps:
                problems.append(f"{name}: unexpected file in the store folder")
        return problems

    def _leftovers(self) -> list[str]:
        temps = [f"{name}: a temporary of an interrupted change; the records read are not affected "
                 f"(imgtui repair {self.path} removes it)" for name in temporaries(self.path)]
        return temps + self._intent_leftovers()

    def _intent_leftovers(self) -> list[str]:
        if not (self.path / INTENT).exists():
            return []
        try:
            intent = json.loads((self.path / INTENT).read_text(encoding="utf-8"))
            op = intent.get("op", "change")
            done = intent.get("to_generation") == self._generation
        except (OSError, ValueError, AttributeError):
            op, done = "change", False
        if done:
            return [f"an interrupted {op} had been committed (the records read are the changed store) but left "
                    f"files the store no longer uses (imgtui repair {self.path} removes them)"]
        return [f"an interrupted {op} left files in the store; the records read are the store as it was "
                f"before it (imgtui repair {self.path} rolls it back)"]

    def info(self) -> dict:
        d = super().info()
        d["layout"] = ("one file per record in images/NNN/ (1,000 per folder), records.csv, manifest.json; "
                       + FILE_FORMATS)
        level = (self.manifest.get("options") or {}).get("png_level", DEFAULT_PNG_LEVEL)
        comp = "deflate" if level else "uncompressed"
        d["file_formats"] = {dt: file_format(dt) + ("" if _DTYPES[dt] in PNG_DTYPES else f" ({comp})")
                             for dt in d.get("dtypes") or {} if dt in _DTYPES}
        if any(is_volume(shape_of_key(k) or ()) for k in d.get("shapes") or {}):
            d["file_formats"]["3-D records"] = f"multi-page TIFF, one page per slice ({comp})"
        return d
