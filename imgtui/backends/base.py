"""The one small interface every storage backend implements.

Writers
-------
``with Backend.writer(path, overwrite=False, **options) as w: w.write(record)`` (or
``w.write_many(records)``). Records are validated one by one; at most one batch is held in memory.
The store is finalised on a clean exit of the ``with`` block: the manifest (or its equivalent)
is written last, so a store without it is *incomplete*.

Where the writer puts its bytes while it works (``self.build_path``):
- ``path`` did not exist: directly at ``path``. If the process is killed the store is left
  without manifest and every reader reports it as incomplete. On an exception (Ctrl-C included)
  the partial store is removed again (rolled back).
- ``path`` exists and ``overwrite=True``: next to it, at ``<path>.imgtui-tmp-<pid>``. Only after the
  new store is finalised is the old one moved aside and removed, so an existing store is never
  half-deleted.
- ``path`` exists and ``overwrite=False``: StoreExistsError before anything is touched.

Readers
-------
``len(r)``, ``r[i]`` -> Record, ``r.get_many(indices)`` -> list of Records,
``r.get_images(indices)`` -> one array (when shapes agree) or a list, iteration, ``r.labels()``
(a list, without loading images), ``r.labels_array()`` (the same labels as one numpy array: int64
when every label is an int, 8 bytes a record, else an object array), ``r.info()``, ``r.verify()``.
Readers are context managers. Subclasses implement ``_read(i)``, ``_labels()``,
``_stored_checksum(i)`` and may override the batch methods and ``_labels_array()`` for speed.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import time
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Iterator, Sequence

import numpy as np

from .._version import __version__
from ..errors import (
    first_line,
    CorruptStoreError,
    ImgtuiError,
    InvalidRecordError,
    StoreExistsError,
    StoreFullError,
)
import threading

from ..records import CHECKSUM, DTYPE_NAMES, RAW_CHECKSUMS, Label, LabelDigest, Record, checksum_fn, dumps_metadata, is_volume, metadata_json, shape_of_key, validate_image, validate_label, validate_record
from .safety import (  # noqa: F401  (fsync_dir, remove_path: used by the backends through base)
    WriterLock,
    clean_stale,
    fault_point,
    fsync_dir,
    is_locked,
    stale_temporaries,
    fsync_tree,
    remove_path,
    replace_path,
    temp_path,
)

#: the newest on-disk layout this imgtui reads and writes; readers refuse newer versions.
#: 2: the manifest names its checksum algorithm (xxh3 for new stores) and, for disk stores, its
#: table (records-N.csv after a change); version 1 stores (crc32, records.csv) still read.
#: 3: records of dtypes other than uint8/uint16 (int8 ... float64, bool). Only stores holding such
#: records say 3, so that an older imgtui says "upgrade imgtui" instead of "damaged"; stores of
#: uint8/uint16 records are still written as version 2, which older versions read.
#: 4: 3-D records (DxHxW, DxHxWxC): their indexes keep a depth (N x 4 shapes in HDF5 and Zarr,
#: the depth in the LMDB entry's spare bytes, a multi-page TIFF per record on disk). Only stores
#: holding a 3-D record say 4.
#: 5: HDF5 stores of variable-shape records keep their pixels packed in one ``pixels`` byte dataset
#: plus ``offsets`` (instead of vlen objects in ``images_flat``). Only such stores say 5.
FORMAT_VERSION = 5
#: the version of stores holding 3-D records
VOLUMES_FORMAT_VERSION = 4
#: the version of HDF5 stores with variable-shape records packed in ``pixels``
PACKED_FORMAT_VERSION = 5
#: the version written for stores whose records are all uint8/uint16
PLAIN_FORMAT_VERSION = 2
#: the version of stores with records of other dtypes (no 3-D records)
DTYPES_FORMAT_VERSION = 3
_PLAIN_DTYPES = frozenset({"uint8", "uint16"})


def format_version_for(dtypes: Any, volumes: bool = False) -> int:
    """The format version a store holding records of these dtype names (and 3-D records, if
    ``volumes``) is written as: the lowest that can hold them, so older imgtui reads what it can."""
    if volumes:
        return VOLUMES_FORMAT_VERSION
    return PLAIN_FORMAT_VERSION if set(dtypes or ()) <= _PLAIN_DTYPES else DTYPES_FORMAT_VERSION

#: pixel bytes a reader's ``iter_batches`` (iteration, convert, export) holds at once, about
READ_BATCH_BYTES = 64 << 20
#: distinct shapes / labels remembered in the manifest statistics
_MAX_DISTINCT = 1000

ProgressFn = Callable[[int, int], None]


def _allocated(st: os.stat_result) -> int:
    # st_blocks counts 512-byte units actually allocated: a sparse LMDB map counts only its
    # used pages and a 1 KB PNG counts the whole 4 KB block it occupies, as `du` reports it
    blocks = getattr(st, "st_blocks", None)
    return blocks * 512 if blocks is not None else st.st_size


def path_size(path: str | os.PathLike) -> int:
    """Bytes allocated on disk by a file or a directory tree (what `du` reports)."""
    p = Path(path)
    if p.is_file():
        return _allocated(p.stat())
    total = 0
    for root, _dirs, files in os.walk(p):
        for name in files:
            try:
                st = os.stat(os.path.join(root, name))
            except OSError:
                continue
            total += _allocated(st)
    return total


def disk_nearly_full(path: str | os.PathLike, margin: int = 16 << 20) -> bool:
    """True when the filesystem holding ``path`` has less than ``margin`` bytes free."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free < margin
    except OSError:
        return False


def is_disk_full_error(exc: BaseException) -> bool:
    return getattr(exc, "errno", None) == 28 or "No space left" in str(exc) or "[Errno 28]" in str(exc)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file, flush + fsync, ``os.replace``, directory fsync:
    readers see the old file or the whole new one, never half of it."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        remove_path(tmp)  # a full disk (or a signal) must not leave a half-written temporary
        raise
    fsync_dir(path.parent)


@dataclass
class WriteStats:
    """Running statistics a writer keeps so that ``info()`` never has to scan the store."""

    count: int = 0
    raw_bytes: int = 0
    shapes: Counter = field(default_factory=Counter)
    dtypes: Counter = field(default_factory=Counter)
    labels: Counter = field(default_factory=Counter)
    label_kinds: set = field(default_factory=set)
    shapes_truncated: bool = False
    labels_truncated: bool = False
    #: a 3-D record was counted (sticky: the format version never goes down)
    volumes: bool = False

    def add(self, record: Record) -> None:
        """Count one record (the per-record write path: no temporary lists or Counters)."""
        img = record.image
        self.count += 1
        self.raw_bytes += img.nbytes
        self._count_shape(img.shape, 1)
        self.dtypes[img.dtype.name] += 1
        self._count_label(record.label, 1)

    def add_many(self, shapes: Sequence[tuple], dtypes: Sequence[np.dtype], nbytes: Sequence[int], labels: Sequence[Label]) -> None:
        """Count a batch of records (one dict update per distinct value)."""
        self.count += len(labels)
        self.raw_bytes += int(sum(nbytes))
        for shape, n in Counter(shapes).items():
            self._count_shape(shape, n)
        for dt, n in Counter(dtypes).items():
            self.dtypes[dt.name] += n
        for label, n in Counter(labels).items():
            self._count_label(label, n)

    def _count_shape(self, shape: tuple, n: int) -> None:
        key = "x".join(map(str, shape))
        if not self.volumes and is_volume(shape):
            self.volumes = True
        if key in self.shapes or len(self.shapes) < _MAX_DISTINCT:
            self.shapes[key] += n
        else:
            self.shapes_truncated = True

    def _count_label(self, label: Label, n: int) -> None:
        lk = str(label)
        if lk in self.labels or len(self.labels) < _MAX_DISTINCT:
            self.labels[lk] += n
        else:
            self.labels_truncated = True
        self.label_kinds.add("int" if isinstance(label, int) else "str")

    def to_dict(self) -> dict:
        return {
            "count": self.count,
            "raw_bytes": self.raw_bytes,
            "shapes": dict(self.shapes.most_common()),
            "shapes_truncated": self.shapes_truncated,
            "dtypes": dict(self.dtypes),
            "labels": dict(self.labels.most_common()),
            "labels_truncated": self.labels_truncated,
            "label_kinds": sorted(self.label_kinds),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "WriteStats":
        s = cls(
            count=int(d.get("count", 0)),
            raw_bytes=int(d.get("raw_bytes", 0)),
            shapes=Counter(d.get("shapes", {})),
            dtypes=Counter(d.get("dtypes", {})),
            labels=Counter(d.get("labels", {})),
            label_kinds=set(d.get("label_kinds", [])),
            shapes_truncated=bool(d.get("shapes_truncated", False)),
            labels_truncated=bool(d.get("labels_truncated", False)),
        )
        s.volumes = any(is_volume(shape_of_key(k) or ()) for k in s.shapes) or d.get("format_version", 0) == VOLUMES_FORMAT_VERSION
        return s


def make_manifest(backend: str, stats: WriteStats, options: dict, **extra: Any) -> dict:
    """The common manifest every backend stores (as JSON file, LMDB key or HDF5 attribute)."""
    m = {
        "format": "imgtui",
        "backend": backend,
        "format_version": format_version_for(stats.dtypes, stats.volumes),
        "imgtui_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "options": options,
        **stats.to_dict(),
    }
    m.update(extra)
    return m


class StoreWriter(ABC):
    """Base writer: validation, statistics, batching and the atomic commit protocol."""

    backend: ClassVar[str] = ""
    #: records buffered before ``_write_batch`` is called
    default_batch_size: ClassVar[int] = 256
    #: ... or fewer: a batch is flushed as soon as it holds this many bytes of pixels, so that a
    #: writer's memory is bounded by bytes whatever the image size (batching by record count alone
    #: held 512-1,024 records: +0.5-1.1 GB writing 2,000 16-bit images of 256-768 px)
    max_batch_bytes: ClassVar[int] = 16 << 20
    #: per-record checksum algorithm (``imgtui.records.CHECKSUMS``); recorded in the manifest
    checksum_kind: str = CHECKSUM

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        overwrite: bool = False,
        batch_size: int | None = None,
        expected_count: int | None = None,
        lock: bool = True,
        **options: Any,
    ) -> None:
        self.path = Path(path)
        self._lock = None
        self.overwrite = overwrite
        self.batch_size = int(batch_size or self.default_batch_size)
        self.expected_count = expected_count
        self.options = self.check_options(options)
        self.stats = WriteStats()
        self._batch: list[Record] = []
        self._checksums_batch: list[int] = []
        self._batch_bytes = 0  # pixel bytes in ``_batch``
        self._crc = checksum_fn(self.checksum_kind)
        #: labels and metadata of every record written, in order (the manifest's labels_digest)
        self.label_digest = LabelDigest()
        self._open = False
        self._finished = False
        if not self.path.parent.exists():
            raise ImgtuiError(f"cannot write {self.path}: folder {self.path.parent} does not exist")
        # one writer at a time: held until the store is in place (or rolled back); ``lock=False``
        # for writers that a change runs while it holds the store's lock itself
        self._lock = WriterLock(self.path, "write").acquire() if lock else WriterLock(self.path)
        try:
            if lock:
                clean_stale(self.path)  # temporaries of writers killed earlier
            if (self.path.exists() or self.path.is_symlink()) and not overwrite:
                raise StoreExistsError(
                    f"{self.path} already exists; choose another destination or pass --overwrite"
                )
        except BaseException:
            self._lock.release()
            raise
        # the store is built beside its path and switched in when complete: a kill leaves the old
        # store (or nothing) at ``path``, never a half-written one
        self.build_path = temp_path(self.path, "tmp")
        remove_path(self.build_path)

    # -- options ---------------------------------------------------------------------------
    @classmethod
    def check_options(cls, options: dict) -> dict:
        """Validate backend options; return the full option dict (defaults filled in)."""
        if options:
            raise ImgtuiError(f"{cls.backend}: unknown option(s) {', '.join(sorted(options))}")
        return {}

    # -- subclass hooks --------------------------------------------------------------------
    @abstractmethod
    def _open_store(self) -> None:
        """Create the empty store at ``self.build_path``."""

    @abstractmethod
    def _write_batch(self, records: list[Record], checksums: list[int], start: int) -> None:
        """Write records ``start .. start+len(records)-1``."""

    @abstractmethod
    def _finalize(self, manifest: dict) -> None:
        """Flush everything, write ``manifest`` last (that marks the store complete), close."""

    @abstractmethod
    def _close_on_error(self) -> None:
        """Close open handles after an error; must not raise."""

    # -- public API ------------------------------------------------------------------------
    def __enter__(self) -> "StoreWriter":
        self._ensure_open()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False

    def _ensure_open(self) -> None:
        if self._finished:
            raise ImgtuiError(f"writer for {self.path} is already closed")
        if not self._open:
            try:
                self._open_store()
            except BaseException as exc:
                self.abort()
                if is_disk_full_error(exc):
                    raise StoreFullError(f"disk full: cannot create {self.path}") from None
                raise
            self._open = True

    @property
    def count(self) -> int:
        """Records accepted so far."""
        return self.stats.count

    def write(self, record: Record | tuple) -> None:
        self._ensure_open()
        rec = validate_record(record, self.stats.count)
        self._check_record(rec, self.stats.count)
        self.stats.add(rec)
        self.label_digest.add(rec.label, rec.meta_json)
        self._batch.append(rec)
        self._checksums_batch.append(self._crc(rec.image))
        self._batch_bytes += rec.image.nbytes
        if len(self._batch) >= self.batch_size or self._batch_bytes >= self.max_batch_bytes:
            self.flush()

    def write_many(self, records: Iterable[Record | tuple]) -> None:
        for r in records:
            self.write(r)

    def write_array(
        self,
        images: np.ndarray,
        labels: Sequence[Label] | np.ndarray,
        metadata: Sequence[dict] | None = None,
    ) -> None:
        """Write N same-shape images given as one N x H x W [x C] array: validated once, not per image.

        The fast path for training data that is already an array (e.g. CIFAR batches).
        """
        self._ensure_open()
        images = np.asarray(images)
        n = len(images)
        if len(labels) != n:
            raise InvalidRecordError(f"write_array: {n} images but {len(labels)} labels")
        if metadata is not None and len(metadata) != n:
            raise InvalidRecordError(f"write_array: {n} images but {len(metadata)} metadata dicts")
        if n == 0:
            return
        first = self.stats.count
        validate_image(images[0], f"record {first} image")  # dtype, channels, size: same for all
        if images.dtype != images[0].dtype or not images.flags.c_contiguous or not images.dtype.isnative:
            images = np.ascontiguousarray(images, dtype=images[0].dtype.newbyteorder("="))
        if images.dtype == np.bool_ and images.view(np.uint8).max(initial=0) > 1:
            images = images.view(np.uint8) != 0  # truth values, as validate_image stores them
        labels = _array_labels(labels, first)
        metas = _array_metas(metadata, first)
        per = max(1, images[0].nbytes)
        fast = type(self)._write_arrays is not StoreWriter._write_arrays
        # a backend with its own array write takes max_batch_bytes at a time (the images are in
        # memory already: nothing is copied to batch them); the others their batch of Records
        step = max(1, self.max_batch_bytes // per) if fast else max(1, min(self.batch_size, self.max_batch_bytes // per))
        self.flush()
        for a in range(0, n, step):
            chunk = images[a : a + step]
            k = len(chunk)
            labs = labels[a : a + k]
            mchunk = metas[a : a + k] if metas is not None else None
            start = self.stats.count
            block = self._array_block(chunk, labs, mchunk, start)  # backend checks, before counting
            sums = block_checksums(chunk, self.checksum_kind)
            self.stats.add_many([chunk.shape[1:]] * k, [chunk.dtype] * k, [chunk.nbytes], labs)
            self.label_digest.add_many(labs, [m[1] for m in mchunk] if mchunk is not None else None)
            self._guarded(lambda: self._write_arrays(block, chunk, labs, mchunk, sums, start), chunk.nbytes)

    def _array_block(self, images: np.ndarray, labels: list, metas: list | None, first: int) -> Any:
        """Check a block of ``write_array`` (same shape and dtype) against the backend's limits
        before it is counted; return what ``_write_arrays`` gets as ``block``. The default makes
        one Record per image and checks each (``_check_record``); a backend with a vectorised
        write returns None where it checks the block as a whole."""
        recs = [Record(images[j], labels[j], metas[j][0] if metas is not None else {}) for j in range(len(images))]
        for j, r in enumerate(recs):
            r.__dict__["_meta_json"] = metas[j][1] if metas is not None else "{}"
            self._check_record(r, first + j)
        return recs

    @staticmethod
    def _int_labels_utf8(labels: list, metas: list | None) -> bool:
        """True when a ``write_array`` block has int labels only and metadata that encodes as
        UTF-8: nothing a backend's per-record check would refuse (vectorised writes use it)."""
        return StoreWriter._plain_labels_utf8(labels, metas) == "int"

    @staticmethod
    def _plain_labels_utf8(labels: list, metas: list | None) -> str | None:
        """"int" or "str" when a ``write_array`` block has labels of that one type (str labels
        encodable as UTF-8, without NUL: what HDF5 strings hold) and metadata that encodes as
        UTF-8; None otherwise (then the record-by-record checks name the record)."""
        kinds = set(map(type, labels))
        if kinds == {str}:
            distinct = set(labels)
            try:
                "".join(distinct).encode("utf-8")
            except UnicodeEncodeError:
                return None
            if any("\x00" in x for x in distinct):
                return None
        elif kinds != {int}:
            return None
        try:
            if metas is not None:
                "".join(j for _, j in metas).encode("utf-8")
        except UnicodeEncodeError:
            return None
        return "int" if kinds == {int} else "str"

    def _write_arrays(self, block: Any, images: np.ndarray, labels: list, metas: list | None,
                      checksums: list[int], start: int) -> None:
        """Write records ``start ..`` of one ``write_array`` block: ``images`` one C-contiguous
        native array, ``labels`` validated, ``metas`` None (no record has metadata) or
        (dict, JSON) pairs, ``block`` what ``_array_block`` returned. Default: the Records path."""
        self._write_batch(block, checksums, start)

    def _check_record(self, record: Record, index: int) -> None:
        """Backend-specific limits; raise InvalidRecordError."""

    def flush(self) -> None:
        if not self._batch:
            return
        start = self.stats.count - len(self._batch)
        batch, sums = self._batch, self._checksums_batch
        self._batch, self._checksums_batch = [], []
        nbytes, self._batch_bytes = self._batch_bytes, 0
        self._guarded(lambda: self._write_batch(batch, sums, start), nbytes)

    def _guarded(self, write: Callable[[], None], nbytes: int) -> None:
        """Run one batch write: refused before the filesystem is full, a full disk reported as
        StoreFullError."""
        # stop cleanly before the filesystem is full: libraries fail badly on ENOSPC
        # (h5py can crash on close, a memory-mapped write gets SIGBUS)
        need = 2 * nbytes + (8 << 20)
        if disk_nearly_full(self.build_path, need):
            raise StoreFullError(
                f"disk full while writing {self.path}: less than {need >> 20} MB free; nothing was kept"
            )
        try:
            write()
            fault_point("batch")
            if nbytes >= self.max_batch_bytes // 2:
                release_free_memory()
        except (OSError, ImgtuiError) as exc:
            if not isinstance(exc, StoreFullError) and is_disk_full_error(exc):
                raise StoreFullError(f"disk full while writing {self.path}: no space left on device") from None
            raise

    def manifest(self, **extra: Any) -> dict:
        return make_manifest(self.backend, self.stats, self.options, checksum=self.checksum_kind,
                             labels_digest=self.label_digest.hexdigest(), **extra)

    def close(self) -> None:
        """Finalise the store (manifest last) and move it into place."""
        if self._finished:
            return
        self._ensure_open()
        try:
            self.flush()
            self._finalize(self.manifest())
        except BaseException as exc:
            self.abort()
            if not isinstance(exc, StoreFullError) and is_disk_full_error(exc):
                raise StoreFullError(f"disk full while writing {self.path}: no space left on device") from None
            raise
        try:
            if self.build_path != self.path:
                fsync_tree(self.build_path)  # durable before it becomes the store
                fault_point("commit")
                replace_path(self.build_path, self.path)
                fault_point("committed")
        except BaseException as exc:
            self._finished = False
            self.abort()
            if is_disk_full_error(exc):
                raise StoreFullError(f"disk full while writing {self.path}: no space left on device") from None
            raise
        self._finished = True
        self._lock.release()

    def __del__(self) -> None:
        lock = getattr(self, "_lock", None)
        if lock is not None and not getattr(self, "_finished", True):
            lock.release()  # a writer dropped without close() or abort(): let others write

    def abort(self) -> None:
        """Roll back: close handles and remove what this writer created. Never raises."""
        if self._finished:
            return
        self._finished = True
        try:
            self._close_on_error()
        except Exception:
            pass
        if self.build_path != self.path:
            remove_path(self.build_path)
        lock = getattr(self, "_lock", None)
        if lock is not None:
            lock.release()


_malloc_trim: Any = None


def release_free_memory() -> None:
    """Give the C heap's free memory back to the system (glibc ``malloc_trim``; elsewhere nothing).

    After a large block is freed glibc raises its mmap threshold, so the next large buffers (a
    batch of big images, the encoded blocks, LMDB's dirty pages, zarr's shard buffers) come from
    the heap, whose freed space is kept: measured writing 60 16-bit images of 2048-4096 px, the
    peak RSS grew by 200-215 MB (HDF5, Zarr) where the batches themselves hold ~60-100 MB. Writers
    call this after each batch of at least half ``max_batch_bytes`` (so not for small images)."""
    global _malloc_trim
    if _malloc_trim is None:
        _malloc_trim = False
        try:
            import ctypes

            # the symbols already loaded (libc among them): no find_library, which runs ldconfig
            _malloc_trim = getattr(ctypes.CDLL(None), "malloc_trim", False)
        except (OSError, AttributeError, TypeError):
            pass
    if _malloc_trim:
        _malloc_trim(0)


def _array_labels(labels: Sequence[Label] | np.ndarray, first: int) -> list[Label]:
    """``write_array``'s labels validated as a list: an int array or a list of Python ints in one
    pass (no per-label call), anything else label by label."""
    if isinstance(labels, np.ndarray) and labels.dtype.kind in "iu":
        return labels.astype(np.int64).tolist()
    if isinstance(labels, (list, tuple)) and labels:
        kinds = set(map(type, labels))
        if kinds == {int} and -(1 << 63) <= min(labels) and max(labels) < (1 << 63):
            return list(labels)
        if kinds == {str}:  # class names: every one is valid as it is
            return list(labels)
    return [validate_label(lab, f"record {first + i} label") for i, lab in enumerate(labels)]


def _uniform_metadata(metadata: Sequence[Any]) -> list[tuple[dict, str]] | None:
    """(dict, JSON) pairs for metadata whose dicts all have the same str keys in the same order
    and, per key, only ints or only strs (``{"source_index": i}``, ``{"file": name}``): the JSON
    text made column by column with C-level maps (str of an int, json's string encoder, one
    format string), the same text ``dumps_metadata`` gives. None: not such metadata."""
    from json.encoder import encode_basestring
    from operator import itemgetter

    keys = set(map(tuple, metadata))
    if len(keys) != 1:
        return None
    names = next(iter(keys))
    if not names or not all(type(k) is str for k in names):
        return None
    columns = []
    for k in names:
        values = list(map(itemgetter(k), metadata))
        kinds = set(map(type, values))
        if kinds == {int}:
            columns.append(map(int.__repr__, values))
        elif kinds == {str}:
            columns.append(map(encode_basestring, values))
        else:
            return None
    template = "{{" + ",".join(encode_basestring(k).replace("{", "{{").replace("}", "}}") + ":{}" for k in names) + "}}"
    return list(zip(metadata, map(template.format, *columns)))


def _metadata_encoder() -> Callable[[Any, int], Any]:
    """The C JSON encoder that ``dumps_metadata`` uses (compact, ensure_ascii off, NaN refused),
    made once per call of ``write_array`` instead of once per dict by ``JSONEncoder.encode``
    (measured here: 10,000 small dicts 124 ms -> 73 ms under load). Its output is the same text;
    where the C encoder is missing, ``dumps_metadata`` itself."""
    from json import encoder as _json

    if _json.c_make_encoder is None:
        return lambda m, _level: dumps_metadata(m)
    return _json.c_make_encoder({}, _METADATA_DEFAULT, _json.encode_basestring, None, ":", ",", False, False, False)


def _metadata_default(o: Any) -> Any:
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


_METADATA_DEFAULT = _metadata_default


def _array_metas(metadata: Sequence[dict] | None, first: int) -> list[tuple[dict, str]] | None:
    """``write_array``'s metadata as (dict, JSON) pairs, or None when no record has any."""
    if metadata is None:
        return None
    if set(map(type, metadata)) <= {dict, type(None)}:
        if not any(metadata):
            return None  # every one empty (or None): nothing to encode
        try:  # one C-encoder call per dict, no per-record message text made in advance
            uniform = _uniform_metadata(metadata)
            if uniform is not None:
                return uniform
            enc = _metadata_encoder()
            return [(m, "".join(enc(m, 0))) if m else ({}, "{}") for m in metadata]
        except (TypeError, ValueError, RecursionError):
            pass  # the record-by-record pass below names the record
    return [metadata_json(m, f"record {first + i} metadata") for i, m in enumerate(metadata)]


def block_checksums(images: np.ndarray, kind: str) -> list[int]:
    """The per-record checksums of N same-shape images in one C-contiguous native array: the
    values ``checksum_fn(kind)`` gives image by image, hashed from slices of one buffer (no
    per-image array, contiguity check or memoryview cast)."""
    fn = RAW_CHECKSUMS[kind]
    n = len(images)
    if not n:
        return []
    nb = images[0].nbytes
    mv = memoryview(np.ascontiguousarray(images).reshape(-1).view(np.uint8))
    return [fn(mv[o : o + nb]) & 0xFFFFFFFF for o in range(0, n * nb, nb)]


@dataclass
class VerifyResult:
    ok: bool
    checked: int
    errors: list[str] = field(default_factory=list)
    #: what is not wrong with the records but worth saying (leftovers of an interrupted change)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if self.ok:
            note = f" (note: {self.notes[0]})" if self.notes else ""
            return f"OK: {self.checked:,} records verified{note}"
        more = f" (+{len(self.errors) - 1} more)" if len(self.errors) > 1 else ""
        return f"FAILED: {len(self.errors):,} problem(s) in {self.checked:,} records: {self.errors[0]}{more}"


class StoreReader(ABC):
    """Checked reads: every record a reader returns (``r[i]``, ``get_many``, ``get_images``,
    iteration) has its pixels compared with the checksum stored for it, and a mismatch raises a
    one-line CorruptStoreError naming the record, instead of returning damaged pixels. Whatever a
    backend overrides of ``_read``, ``get_many`` and ``get_images`` is wrapped for that when the
    class is made (``__init_subclass__``); nested calls check once. ``verify=False`` when opening
    (``check_reads = False``) reads without the check, for raw speed."""

    backend: ClassVar[str] = ""
    #: a reader that delegates to readers which check (sharded stores) sets this False
    checks_reads: ClassVar[bool] = True
    #: the URL a store at a URL was opened by (``path`` is then its copy in the local cache)
    url: str | None = None

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.manifest: dict = {}
        #: compare every record read with its stored checksum (``imgtui.open(..., verify=False)``)
        self.check_reads = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.checks_reads:
            return
        for name, wrap in (("_read", _checked_read), ("get_many", _checked_many), ("get_images", _checked_images)):
            fn = cls.__dict__.get(name)
            if fn is not None and not getattr(fn, "_checked", False):
                setattr(cls, name, wrap(fn))

    # -- checked reads -----------------------------------------------------------------------
    def checksum_of(self, image: np.ndarray) -> int:
        """The checksum of ``image`` by this store's algorithm (the manifest's ``checksum``)."""
        fn = self.__dict__.get("_checksum_fn")
        if fn is None:
            fn = self._checksum_fn = checksum_fn(self.manifest.get("checksum"))
        return fn(image)

    def _check_image(self, index: int, image: np.ndarray) -> None:
        want = self._stored_checksum(index)
        if want is None:
            return
        got = self.checksum_of(image)
        if got != want:
            self._check_unchanged()  # changed by another process since it was opened: say so instead
            raise CorruptStoreError(
                f"{self.path}: record {index} is damaged: its pixels do not match the stored checksum "
                f"(stored {want:08x}, read {got:08x}); imgtui verify lists every damaged record"
            )

    def _stored_checksums(self, idx: np.ndarray) -> np.ndarray | None:
        """Stored checksums of the records ``idx`` (uint32), or None where some have none.
        Backends with a checksum column override this with one numpy gather."""
        vals = [self._stored_checksum(int(i)) for i in idx]
        if any(v is None for v in vals):
            return None
        return np.asarray(vals, dtype=np.uint32)

    def _check_batch(self, idx: np.ndarray, images: Any) -> None:
        """Check a batch of images against their stored checksums: one gather of the stored
        values, one hash call per record over the batch's bytes, one vector comparison."""
        if not len(idx):
            return
        want = self._stored_checksums(idx)
        if want is None or not isinstance(images, np.ndarray) or images.ndim < 2:
            for i, im in zip(idx.tolist(), images):
                self._check_image(i, im)
            return
        raw = RAW_CHECKSUMS[self.manifest.get("checksum") or "crc32"]
        n = len(idx)
        # one row view per record, hashed by map (no Python frame per record: 10,000 CIFAR records
        # 2.5 ms instead of 3.9 ms with memoryview slices in a generator)
        rows = np.ascontiguousarray(images).reshape(n, -1).view(np.uint8)
        got = np.fromiter(map(raw, rows), np.uint64, n) & 0xFFFFFFFF
        bad = np.nonzero(got != want)[0]
        if len(bad):
            self._check_unchanged()
            k = int(bad[0])
            more = f" (and {len(bad) - 1} more in this batch)" if len(bad) > 1 else ""
            raise CorruptStoreError(
                f"{self.path}: record {int(idx[k])} is damaged: its pixels do not match the stored checksum "
                f"(stored {int(want[k]):08x}, read {int(got[k]):08x}){more}; imgtui verify lists every damaged record"
            )

    def _check_unchanged(self) -> None:
        """Raise StoreChangedError when another process changed the store since this reader opened
        it (backends whose readers are not isolated from changes override this)."""

    def _checking(self) -> bool:
        """True when this call must check (the outermost read call of this thread)."""
        return self.check_reads and not getattr(_DEPTH, str(id(self)), 0)

    # -- subclass hooks --------------------------------------------------------------------
    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def _read(self, index: int) -> Record:
        """Record ``index`` (already bounds-checked, non-negative)."""

    @abstractmethod
    def _labels(self) -> list[Label]: ...

    @abstractmethod
    def _stored_checksum(self, index: int) -> int | None: ...

    def close(self) -> None:
        pass

    # -- shared API ------------------------------------------------------------------------
    def __enter__(self) -> "StoreReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def _index(self, i: int) -> int:
        n = len(self)
        i = int(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"record index {i} out of range for a store of {n:,} records")
        return i

    def __getitem__(self, i: int) -> Record:
        return self._read(self._index(i))

    def get_many(self, indices: Sequence[int]) -> list[Record]:
        return [self._read(self._index(i)) for i in indices]

    def get_images(self, indices: Sequence[int]) -> np.ndarray | list[np.ndarray]:
        imgs = [r.image for r in self.get_many(indices)]
        if imgs and all(im.shape == imgs[0].shape and im.dtype == imgs[0].dtype for im in imgs):
            return np.stack(imgs)
        return imgs

    def iter_batches(self, batch_size: int = 256) -> Iterator[list[Record]]:
        n = len(self)
        batch_size = self.batch_records(batch_size)
        for start in range(0, n, batch_size):
            yield self.get_many(range(start, min(n, start + batch_size)))

    def batch_records(self, batch_size: int = 256) -> int:
        """``batch_size``, lowered so that a batch holds about READ_BATCH_BYTES of pixels at the
        store's average record size (256 volumes of 150 MB would be 38 GB in memory)."""
        count, raw = self.manifest.get("count"), self.manifest.get("raw_bytes")
        per = raw / count if isinstance(count, int) and count > 0 and isinstance(raw, (int, float)) and raw > 0 else 0
        return max(1, min(int(batch_size), int(READ_BATCH_BYTES // per) if per else int(batch_size)))

    def __iter__(self) -> Iterator[Record]:
        for batch in self.iter_batches():
            yield from batch

    def labels(self) -> list[Label]:
        return self._labels()

    def labels_array(self) -> np.ndarray:
        """Every label as one numpy array, without loading images: ``int64`` when every label is
        an int (8 bytes a record, no Python object per record), else an ``object`` array holding
        the str (and int) labels. Backends read it from their label column, not through a list."""
        return self._labels_array()

    def _labels_array(self) -> np.ndarray:
        return labels_to_array(self._labels())

    def info(self) -> dict:
        m = self.manifest
        return {
            "path": self.url or str(self.path),
            "backend": self.backend,
            "format_version": m.get("format_version"),
            "imgtui_version": m.get("imgtui_version"),
            "created": m.get("created"),
            "complete": True,
            "count": len(self),
            "raw_bytes": m.get("raw_bytes"),
            "bytes_on_disk": path_size(self.path),
            "shapes": m.get("shapes", {}),
            "dtypes": m.get("dtypes", {}),
            "labels": m.get("labels", {}),
            "label_kinds": m.get("label_kinds", []),
            "options": m.get("options", {}),
            "checksum": m.get("checksum") or "crc32",
            "leftovers": self.leftovers(),
        }

    def verify(
        self,
        progress: ProgressFn | None = None,
        cancel: Callable[[], bool] | None = None,
        max_errors: int = 100,
    ) -> VerifyResult:
        """Re-read every record and compare its pixels with the stored checksum."""
        checking, self.check_reads = self.check_reads, False
        try:
            return self._verify(progress, cancel, max_errors)
        finally:
            self.check_reads = checking

    def _verify(self, progress: ProgressFn | None, cancel: Callable[[], bool] | None, max_errors: int) -> VerifyResult:
        n = len(self)
        want_digest = self.manifest.get("labels_digest")
        digest = LabelDigest() if isinstance(want_digest, str) else None
        errors: list[str] = []
        checked = 0
        for start in range(0, n, 256):
            if cancel is not None and cancel():
                break
            idx = range(start, min(n, start + 256))
            try:
                recs = self.get_many(idx)
            except Exception as exc:  # a corrupt batch: check its records one by one
                recs = []
                for i in idx:
                    try:
                        recs.append(self._read(i))
                    except Exception as exc2:
                        errors.append(f"record {i}: cannot be read ({_one_line(exc2) or _one_line(exc)})")
                        recs.append(None)
            for i, rec in zip(idx, recs):
                checked += 1
                if rec is None:
                    digest = None  # a record that cannot be read: the digest cannot be compared
                    continue
                if digest is not None:
                    digest.add_record(rec.label, rec.metadata)
                want = self._stored_checksum(i)
                if want is None:
                    errors.append(f"record {i}: no checksum stored")
                elif self.checksum_of(rec.image) != want:
                    errors.append(f"record {i}: pixel checksum mismatch (stored {want:08x}, got {self.checksum_of(rec.image):08x})")
                if len(errors) >= max_errors:
                    break
            if len(errors) >= max_errors:
                break
            if progress is not None:
                progress(checked, n)
        errors.extend(self._verify_extra())
        if checked == n:
            errors.extend(self._verify_labels())
            if digest is not None and digest.hexdigest() != want_digest:
                errors.append("labels or metadata differ from what was written (the manifest's labels_digest does "
                              "not match: a label swapped or edited, a metadata cell changed, or records missing)")
        return VerifyResult(ok=not errors and checked == n, checked=checked, errors=errors, notes=self.leftovers())

    def leftovers(self) -> list[str]:
        """What interrupted writes or changes left beside or inside the store (one line each); the
        records read are not affected, ``imgtui repair`` removes them."""
        if is_locked(self.path):
            return []  # a writer is at work
        out = [f"{t.name}: left beside the store by an interrupted write (imgtui repair {self.path} removes it)"
               for t in stale_temporaries(self.path)]
        return out + self._leftovers()

    def _leftovers(self) -> list[str]:
        return []

    def _verify_labels(self) -> list[str]:
        """The labels read back must match the label histogram the writer recorded in the manifest
        (catches a labels table edited or drifted apart from the images)."""
        want = self.manifest.get("labels")
        if not isinstance(want, dict) or self.manifest.get("labels_truncated"):
            return []
        try:
            arr = self.labels_array()
            if arr.dtype.kind in "iu":  # one counting pass, no Python object per record
                vals, counts = np.unique(arr, return_counts=True)
                got = Counter(dict(zip((str(v) for v in vals.tolist()), counts.tolist())))
            else:
                got = Counter(str(lab) for lab in arr.tolist())
        except Exception as exc:
            return [f"labels cannot be read ({_one_line(exc)})"]
        if got == Counter({str(k): int(v) for k, v in want.items()}):
            return []
        diff = sorted(set(got) ^ set(want)) or sorted(k for k in got if got[k] != want.get(k))
        shown = ", ".join(f"{k!r}: {got.get(k, 0)} vs {want.get(k, 0)}" for k in diff[:3])
        return [f"labels do not match the manifest's label counts (read vs recorded: {shown})"]

    def _verify_extra(self) -> list[str]:
        """Backend-specific structural checks (e.g. stray files); list of problems."""
        return []


_one_line = first_line  # (backends import it from here)


def labels_to_array(labels: Sequence[Label] | np.ndarray) -> np.ndarray:
    """``labels`` as ``StoreReader.labels_array`` returns them: int64 when all are ints, else an
    object array (str labels stay str, int labels of a mixed store stay int)."""
    if isinstance(labels, np.ndarray):
        if labels.dtype.kind in "iu":
            return labels.astype(np.int64, copy=False)
        if labels.dtype.kind == "O":
            return labels
        labels = labels.tolist()
    labels = list(labels)
    if all(type(v) is int for v in labels):
        return np.array(labels, dtype=np.int64) if labels else np.zeros(0, np.int64)
    out = np.empty(len(labels), dtype=object)
    out[:] = labels
    return out


#: per thread: reader id -> depth of nested read calls (only the outermost checks)
_DEPTH = threading.local()


def _normal_indices(reader: StoreReader, indices: Any) -> np.ndarray:
    if isinstance(indices, range):
        idx = np.arange(indices.start, indices.stop, indices.step, dtype=np.int64)
    else:
        idx = np.asarray(indices if isinstance(indices, np.ndarray) else list(indices), dtype=np.int64).reshape(-1)
    if idx.size and (idx < 0).any():
        idx = np.where(idx < 0, idx + len(reader), idx)
    return idx


def _nested(reader: StoreReader, fn: Callable, *args: Any) -> Any:
    key = str(id(reader))
    depth = getattr(_DEPTH, key, 0)
    setattr(_DEPTH, key, depth + 1)
    try:
        return fn(reader, *args)
    finally:
        if depth:
            setattr(_DEPTH, key, depth)
        else:
            delattr(_DEPTH, key)


def _checked_read(fn: Callable) -> Callable:
    def _read(self: StoreReader, index: int) -> Record:
        if not self._checking():
            return fn(self, index)
        rec = _nested(self, fn, index)
        self._check_image(index, rec.image)
        return rec

    _read._checked = True  # type: ignore[attr-defined]
    _read.__doc__ = fn.__doc__
    return _read


def _checked_many(fn: Callable) -> Callable:
    def get_many(self: StoreReader, indices: Sequence[int]) -> list[Record]:
        if not self._checking():
            return fn(self, indices)
        if not isinstance(indices, (range, np.ndarray, list, tuple)):
            indices = list(indices)  # an iterator: read it once
        recs = _nested(self, fn, indices)
        idx = _normal_indices(self, indices)
        images = [r.image for r in recs]
        if images and all(im.shape == images[0].shape and im.dtype == images[0].dtype for im in images):
            self._check_batch(idx, np.stack(images))
        else:
            self._check_batch(idx, images)
        return recs

    get_many._checked = True  # type: ignore[attr-defined]
    get_many.__doc__ = fn.__doc__
    return get_many


def _checked_images(fn: Callable) -> Callable:
    def get_images(self: StoreReader, indices: Sequence[int]) -> np.ndarray | list[np.ndarray]:
        if not self._checking():
            return fn(self, indices)
        if not isinstance(indices, (range, np.ndarray, list, tuple)):
            indices = list(indices)
        imgs = _nested(self, fn, indices)
        self._check_batch(_normal_indices(self, indices), imgs)
        return imgs

    get_images._checked = True  # type: ignore[attr-defined]
    get_images.__doc__ = fn.__doc__
    return get_images


def check_manifest(manifest: dict, backend: str, path: Path) -> dict:
    """Common checks on a loaded manifest: backend, newer format version."""
    from ..errors import FormatVersionError, WrongBackendError

    if manifest.get("format") != "imgtui":
        raise CorruptStoreError(f"{path}: manifest is not an imgtui manifest")
    if manifest.get("backend") != backend:
        raise WrongBackendError(
            f"{path} is a {manifest.get('backend')} store, not {backend}"
        )
    v = manifest.get("format_version")
    if not isinstance(v, int) or v > FORMAT_VERSION:
        raise FormatVersionError(
            f"{path} uses imgtui format version {v}; this imgtui reads up to {FORMAT_VERSION} (upgrade imgtui)"
        )
    return manifest


class ArrayReader(StoreReader):
    """The batch reads of a store whose records sit in per-record arrays (HDF5, Zarr): a request
    becomes a slice or a sorted unique index array plus the order to put them back in
    (``_selection``), and the backend reads images (``_read_images``), labels
    (``_label_values``) and metadata (``_metadata``) for that key. ``get_many``/``get_images`` here
    are checked reads like every reader's (``StoreReader.__init_subclass__`` wraps them)."""

    _n: int

    @abstractmethod
    def _read_images(self, key: Any, inv: np.ndarray | None) -> np.ndarray | list[np.ndarray]: ...

    @abstractmethod
    def _label_values(self, key: Any, inv: np.ndarray | None) -> list[Label]: ...

    @abstractmethod
    def _metadata(self, key: Any, inv: np.ndarray | None, n: int) -> list[dict]: ...

    @abstractmethod
    def _check_open(self) -> None: ...

    def get_many(self, indices: Sequence[int]) -> list[Record]:
        sel = self._selection(indices)
        if sel is None:
            return []
        return self._records(*sel)

    def get_images(self, indices: Sequence[int]) -> np.ndarray | list[np.ndarray]:
        sel = self._selection(indices)
        if sel is None:
            return []
        imgs = self._read_images(*sel)
        if isinstance(imgs, np.ndarray):
            return imgs
        if imgs and all(im.shape == imgs[0].shape and im.dtype == imgs[0].dtype for im in imgs):
            return np.stack(imgs)
        return imgs

    def iter_batches(self, batch_size: int = 256) -> Iterator[list[Record]]:
        n = len(self)
        batch_size = self.batch_records(batch_size)
        for start in range(0, n, batch_size):
            yield self.get_many(range(start, min(n, start + batch_size)))

    def _labels(self) -> list[Label]:
        self._check_open()
        if self._n == 0:
            return []
        return self._label_values(slice(0, self._n), None)

    def _labels_array(self) -> np.ndarray:
        self._check_open()
        if self._n == 0:
            return np.zeros(0, np.int64)
        return self._label_column()

    def _label_column(self) -> np.ndarray:
        """Every label as ``labels_array`` returns them (backends read their column whole)."""
        return labels_to_array(self._label_values(slice(0, self._n), None))

    def _selection(self, indices: Sequence[int]) -> tuple[Any, np.ndarray | None] | None:
        """(key, inverse): key is a slice or a sorted unique int array; inverse reorders to request."""
        if isinstance(indices, range) and indices.step == 1 and len(indices):
            a, b = self._index(indices.start), self._index(indices.stop - 1)
            if b >= a:
                return slice(a, b + 1), None
        idx = np.asarray(indices if isinstance(indices, np.ndarray) else list(indices))
        if idx.size == 0:
            return None
        if idx.ndim != 1 or idx.dtype.kind not in "iu":
            idx = np.fromiter((self._index(i) for i in idx.ravel()), dtype=np.int64)
        else:
            idx = idx.astype(np.int64, copy=True)
            neg = idx < 0
            if neg.any():
                idx[neg] += self._n
            bad = (idx < 0) | (idx >= self._n)
            if bad.any():
                self._index(int(np.asarray(indices).ravel()[np.flatnonzero(bad)[0]]))  # IndexError
        if idx.size == 1 or (idx[-1] - idx[0] == idx.size - 1 and np.all(np.diff(idx) == 1)):
            return slice(int(idx[0]), int(idx[-1]) + 1), None
        uniq, inv = np.unique(idx, return_inverse=True)
        if uniq.size == idx.size and np.array_equal(uniq, idx):
            inv = None
        return uniq, inv

    def _records(self, key: Any, inv: np.ndarray | None) -> list[Record]:
        imgs = self._read_images(key, inv)
        labels = self._label_values(key, inv)
        metas = self._metadata(key, inv, len(labels))
        return [Record(im, lab, meta) for im, lab, meta in zip(imgs, labels, metas)]


@dataclass(frozen=True)
class Option:
    """One backend option, declared once: the CLI flag, the app's field and validation come from it."""

    name: str
    type: type  # int, str or bool
    default: Any
    help: str
    choices: tuple = ()
    min: int | None = None
    max: int | None = None
    #: (other option, its values) when this option applies only while the other has one of them
    #: (HDF5 ``level`` with compression gzip); elsewhere the app disables its field and the CLI
    #: and the writer refuse it in one line
    requires: tuple[str, tuple] | None = None
    #: for an option without a default that ``requires`` another: the value the writer fills in
    #: when the other has its first listed value (HDF5 level with gzip: 4; None: the codec's own).
    #: Declared here so the app shows it without importing the writer (zarr: ~0.3 s); a test
    #: checks the writer agrees
    implied: Any = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


class LazyClass:
    """A Backend's ``writer_cls``/``reader_cls`` that imports its module when first used, so a
    backend whose library is slow to import (zarr) costs nothing until a store of it is opened."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        return getattr(importlib.import_module(self.module), self.name)


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do, declared on the backend so callers ask it instead of keeping tables."""

    #: append / overwrite / delete change the store without rewriting all of it
    append_in_place: bool = True
    overwrite_in_place: bool = True
    delete_in_place: bool = True
    #: records of different shapes in one store
    variable_shapes: bool = True
    #: pixel dtypes it stores losslessly (every backend stores all of them today)
    dtypes: tuple[str, ...] = tuple(DTYPE_NAMES)
    #: the store is one file (else a folder)
    single_file: bool = False
    #: several processes may read one store at once
    parallel_readers: bool = True
    #: several threads of one process read in parallel (h5py serialises them)
    parallel_threads: bool = True


class Backend(ABC):
    """A backend ties a writer, a reader and a mutator class to a name, its options, its
    capabilities and a path detector. Each backend is one package under ``imgtui/backends/``
    plus one line in ``registry.py``."""

    name: ClassVar[str] = ""
    #: name shown to people ("LMDB")
    display_name: ClassVar[str] = ""
    #: one line saying what the store is
    description: ClassVar[str] = ""
    #: colour of its lines and bars in plots and tables
    colour: ClassVar[str] = "#888888"
    writer_cls: ClassVar[type[StoreWriter]]
    reader_cls: ClassVar[type[StoreReader]]
    #: the class that appends, overwrites and deletes records (``imgtui.backends.mutate``)
    mutator_cls: ClassVar[type | None] = None
    #: the file suffix suggested for new stores ('' for folders)
    suffix: ClassVar[str] = ""
    options: ClassVar[tuple[Option, ...]] = ()
    capabilities: ClassVar[Capabilities] = Capabilities()
    #: measured when a benchmark names no backends (the classic three); every backend is listed
    #: and can be chosen in the CLI and the app either way
    benchmark_by_default: ClassVar[bool] = False

    @classmethod
    def writer(cls, path: str | os.PathLike, **kwargs: Any) -> StoreWriter:
        return cls.writer_cls(path, **kwargs)

    @classmethod
    def open(cls, path: str | os.PathLike) -> StoreReader:
        return cls.reader_cls(path)

    @classmethod
    @abstractmethod
    def detect(cls, path: Path) -> bool:
        """True if ``path`` looks like a store of this backend (complete or not)."""

    @classmethod
    def manifest_names_me(cls, folder: Path, manifest: str = "manifest.json") -> bool | None:
        """For folder backends' ``detect``: True/False when ``folder/manifest`` is an imgtui
        manifest naming this backend or another; None when there is none or it cannot be read
        (the caller then looks at the folder's other files)."""
        path = Path(folder) / manifest
        if not path.is_file():
            return None
        try:
            m = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            return None
        return isinstance(m, dict) and m.get("format") == "imgtui" and m.get("backend") == cls.name

    @classmethod
    def recipe(cls) -> str:
        """One line telling how to read a store of this backend without imgtui."""
        return ""

    @classmethod
    def option_defaults(cls) -> dict[str, Any]:
        return {o.name: o.default for o in cls.options}
