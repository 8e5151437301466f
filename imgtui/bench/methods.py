"""The three ways of storing records that the benchmark compares, behind one small interface.

- ``floor``   (backend ``numpy``): the raw pixel bytes in one ``.npy`` file (the lower bound any
  store can hope for); random access through ``np.load(mmap_mode="r")``. Backend ``memcpy`` is
  a plain in-memory copy of the same bytes: the memory-bandwidth ceiling.
- ``imgtui``  (every registered backend): ``imgtui.backends.open_writer`` / ``open_store``.
- ``article`` (``ARTICLE_BACKENDS``: disk, lmdb, hdf5): the plain functions of the Real Python article
  (``imgtui.backends.article``).
- ``peer`` (optional: webdataset, litdata, mds, zarr): the formats users pick instead, each as its
  documentation shows (``imgtui.bench.peers``).

Every method is called with the same materialised records (``Data``) and reports progress through
a ``Ctx`` (``ctx.advance(n)`` after every batch, ``ctx.check()`` raises CancelledError).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..backends import article, get_backend, open_store, open_writer
from ..errors import CancelledError, ImgtuiError
from ..records import Record, same_pixels

#: records per batch: progress and cancel checks happen at least this often
BATCH = 256
#: the formats the Real Python article has functions for (``store_many_<name>``); other
#: backends are measured with the imgtui method only
ARTICLE_BACKENDS = ("disk", "lmdb", "hdf5")


class Ctx:
    """What a timed function gets: a cancel check, a progress counter and ``collect()``, the list a
    ``read_many`` puts what it reads in (a ``Sink`` that keeps nothing when the records are spilled)."""

    def __init__(self, cancelled: Callable[[], bool] = lambda: False, report: Callable[[int], None] | None = None):
        self._cancelled = cancelled
        self._report = report
        self.collect: Callable[[], list] = list

    def check(self) -> None:
        if self._cancelled():
            raise CancelledError("benchmark cancelled")

    def advance(self, n: int) -> None:
        if self._report is not None:
            self._report(n)
        self.check()


NULL_CTX = Ctx()


class RecordTable(Sequence):
    """Records whose pixels lie in one flat byte array (a read-only map of a file when the records
    are spilled): each Record is made on access, its image a view of the array. Holds the labels
    and metadata; a record's bytes start at ``starts[i]`` (a repeated record shares its bytes)."""

    def __init__(self, flat: np.ndarray, starts: np.ndarray, codes: np.ndarray, shapes: list[tuple],
                 labels: list, metadata: list) -> None:
        self.flat, self.starts, self.codes, self.shapes = flat, starts, codes, shapes
        self.labels, self.metadata = labels, metadata
        self._sizes = [int(np.prod(shape)) * np.dtype(dt).itemsize for shape, dt in shapes]

    def __len__(self) -> int:
        return len(self.starts)

    def image(self, i: int) -> np.ndarray:
        shape, dtype = self.shapes[self.codes[i]]
        s = int(self.starts[i])
        return self.flat[s : s + self._sizes[self.codes[i]]].view(dtype).reshape(shape)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return Record(self.image(i), self.labels[i], self.metadata[i])

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def raw_bytes(self) -> int:
        return int(np.asarray(self._sizes, np.int64)[self.codes].sum()) if len(self) else 0

    def head(self, n: int) -> "RecordTable":
        return RecordTable(self.flat, self.starts[:n], self.codes[:n], self.shapes, self.labels[:n], self.metadata[:n])

    def stacked(self) -> np.ndarray | None:
        """The (n, ...) array of one-shape records stored in order, as a view; else None."""
        n = len(self)
        if len(self.shapes) != 1 or n == 0 or int(self.starts[-1]) != (n - 1) * self._sizes[0]:
            return None
        shape, dtype = self.shapes[0]
        return self.flat[: n * self._sizes[0]].view(dtype).reshape((n,) + tuple(shape))


class Sink(list):
    """A ``read_many``'s collector when the records are spilled: it compares what is read with the
    source (``check``) or only counts it, and keeps nothing, so reading a million records holds one
    batch at a time. ``append`` takes one record's image, a stacked batch or a list of images;
    ``spent`` is the time it took (the bench subtracts it from the read's)."""

    def __init__(self, data: "Data", check: bool) -> None:
        super().__init__()
        self.data, self.check, self.n, self.ok = data, check, 0, True
        #: seconds spent comparing (taken off the timed read)
        self.spent = 0.0

    def append(self, item: Any) -> None:
        t0 = time.perf_counter()
        try:
            self._append(item)
        finally:
            self.spent += time.perf_counter() - t0

    def _append(self, item: Any) -> None:
        if isinstance(item, list):
            for a in item:
                self._one(a)
            return
        st = self.data.stacked
        if st is not None and isinstance(item, np.ndarray) and item.ndim == st.ndim and item.shape[1:] == st.shape[1:]:
            k = len(item)
            if self.check and self.ok:
                self.ok = self.n + k <= len(st) and same_pixels(item, st[self.n : self.n + k])
            self.n += k
            return
        if st is None and isinstance(item, np.ndarray) and self.n < self.data.n:
            want = self.data.records[self.n].image
            if item.ndim == want.ndim + 1 and item.shape[1:] == want.shape:  # a batch of one shape
                for a in item:
                    self._one(a)
                return
        self._one(item)

    def extend(self, items: Any) -> None:
        for a in items:
            self.append(a)

    def __len__(self) -> int:  # what a method counts its progress by
        return self.n

    def _one(self, a: Any) -> None:
        if self.check and self.ok:
            self.ok = (self.n < self.data.n and isinstance(a, np.ndarray)
                       and same_pixels(np.asarray(a), self.data.records[self.n].image))
        self.n += 1

    def complete(self) -> bool:
        """Every record was read, in order, and (when checked) bit-exact."""
        return self.ok and self.n == self.data.n


@dataclass
class Data:
    """The first ``n`` records of the dataset, materialised once and shared by every method
    (``spilled``: their pixels are in a file the run maps, not in memory; see ``run.Run.load``)."""

    records: Sequence[Record]
    #: the stacked (n, ...) array when every image has the same shape and dtype, else None
    stacked: np.ndarray | None
    raw_bytes: int
    spilled: bool = False

    @property
    def n(self) -> int:
        return len(self.records)

    @property
    def images(self) -> list[np.ndarray]:
        return [r.image for r in self.records]

    @property
    def labels(self) -> list:
        return self.labels_metadata(0, self.n)[0]

    def labels_metadata(self, start: int, end: int) -> tuple[list, list]:
        """The labels and the metadata of records ``start:end`` (no Record made for them)."""
        recs = self.records
        if isinstance(recs, RecordTable):
            return recs.labels[start:end], recs.metadata[start:end]
        part = recs[start:end]
        return [r.label for r in part], [r.metadata for r in part]

    def prefix(self, n: int) -> "Data":
        st = self.stacked[:n] if self.stacked is not None else None
        if isinstance(self.records, RecordTable):
            recs = self.records.head(n)
            return Data(recs, st, recs.raw_bytes(), self.spilled)
        recs = self.records[:n]
        return Data(recs, st, sum(r.image.nbytes for r in recs))


@dataclass
class Handle:
    """A store written by a method: where it is and what a reader needs to know about it."""

    path: Path
    count: int
    extra: dict[str, Any] = field(default_factory=dict)


class Method:
    """One (method, backend) pair. Subclasses implement the operations."""

    method = ""
    backend = ""
    #: experiments this pair cannot run (experiment -> reason)
    unsupported: dict[str, str] = {}

    def options_text(self) -> str:
        return ""

    def check_data(self, data: Data) -> None:
        """Raise ImgtuiError when this method cannot store ``data``."""

    def store_many(self, folder: Path, data: Data, ctx: Ctx) -> Handle:
        raise NotImplementedError

    def store_one(self, folder: Path, record: Record) -> Handle:
        return self.store_many(folder, Data([record], None, record.image.nbytes), NULL_CTX)

    def read_one(self, handle: Handle, index: int) -> np.ndarray:
        raise NotImplementedError

    def read_many(self, handle: Handle, ctx: Ctx) -> tuple[list, list]:
        """All images (a list of arrays or of stacked batches) and labels."""
        raise NotImplementedError

    def open_random(self, handle: Handle) -> "RandomReader":
        raise NotImplementedError

    def disk_files(self, handle: Handle) -> list[Path]:
        p = handle.path
        if p.is_dir():
            return [Path(r) / f for r, _d, fs in os.walk(p) for f in fs]
        return [p] if p.exists() else []


class RandomReader:
    def batch(self, indices: Sequence[int]) -> Any:
        raise NotImplementedError

    def close(self) -> None:
        pass


def flatten_images(images) -> list[np.ndarray]:
    """A read result (list of arrays and/or stacked batches) as a flat list of images."""
    out: list[np.ndarray] = []
    for a in images:
        if isinstance(a, list):
            out.extend(a)
        elif isinstance(a, np.ndarray) and a.dtype == object:
            out.extend(list(a))
        else:
            out.append(a)
    return out


# -- floor: one .npy file ---------------------------------------------------------------------
def _write_npy(path: Path, arr: np.ndarray, ctx: Ctx, rows_per_chunk: int) -> None:
    """np.save, written in chunks so that progress moves and cancel is honoured."""
    arr = np.ascontiguousarray(arr)
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, np.lib.format.header_data_from_array_1_0(arr))
        for s in range(0, arr.shape[0], rows_per_chunk):
            fh.write(memoryview(arr[s : s + rows_per_chunk]).cast("B"))
            ctx.advance(min(rows_per_chunk, arr.shape[0] - s))


def _npy_header(fh: Any) -> tuple[tuple, bool, np.dtype]:
    """(shape, fortran order, dtype) of the .npy file open as ``fh``, which is left at its data."""
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fh)
    return np.lib.format.read_array_header_2_0(fh)


def _read_npy(path: Path, ctx: Ctx, rows_per_chunk: int) -> np.ndarray:
    """np.load, read in chunks into one array so that progress moves and cancel is honoured."""
    with open(path, "rb") as fh:
        shape, fortran, dtype = _npy_header(fh)
        if fortran or dtype.hasobject:
            return np.load(path)
        out = np.empty(shape, dtype=dtype)
        if out.size == 0:
            return out
        view = memoryview(out.reshape(shape[0], -1) if out.ndim > 1 else out).cast("B")
        row = out.nbytes // shape[0]
        for s in range(0, shape[0], rows_per_chunk):
            e = min(shape[0], s + rows_per_chunk)
            fh.readinto(view[s * row : e * row])
            ctx.advance(e - s)
    return out


class FloorMethod(Method):
    """Raw pixels in one .npy file. Variable shapes: the concatenated bytes plus offsets."""

    method = "floor"
    backend = "numpy"

    def store_many(self, folder: Path, data: Data, ctx: Ctx) -> Handle:
        path = folder / "data.npy"
        if data.stacked is not None:
            _write_npy(path, data.stacked, ctx, BATCH)
            return Handle(path, data.n, {"shape": data.stacked.shape[1:], "dtype": data.stacked.dtype})
        # variable shapes: one flat byte array; shapes/dtypes/offsets stay in memory (the "index")
        layout, offsets, pos = [], [0], 0
        for r in data.records:
            layout.append((r.image.shape, r.image.dtype))
            pos += r.image.nbytes
            offsets.append(pos)
        with open(path, "wb") as fh:
            flat = np.empty(pos, np.uint8)
            np.lib.format.write_array_header_1_0(fh, np.lib.format.header_data_from_array_1_0(flat))
            for s in range(0, data.n, BATCH):
                for r in data.records[s : s + BATCH]:
                    fh.write(memoryview(r.image).cast("B"))
                ctx.advance(min(BATCH, data.n - s))
        return Handle(path, data.n, {"layout": layout, "offsets": offsets})

    def store_one(self, folder: Path, record: Record) -> Handle:
        path = folder / "one.npy"
        np.save(path, record.image)
        return Handle(path, 1, {"single": True})

    @staticmethod
    def _unflatten(flat: np.ndarray, handle: Handle, i: int) -> np.ndarray:
        shape, dtype = handle.extra["layout"][i]
        o = handle.extra["offsets"]
        return flat[o[i] : o[i + 1]].view(dtype).reshape(shape)

    def read_one(self, handle: Handle, index: int) -> np.ndarray:
        mm = np.load(handle.path, mmap_mode="r")
        if "layout" in handle.extra:
            return np.array(self._unflatten(mm, handle, index))
        return np.array(mm[index])

    def read_many(self, handle: Handle, ctx: Ctx) -> tuple[list, list]:
        out = ctx.collect()
        if isinstance(out, Sink):  # spilled records: read a batch at a time, keep none
            return self._read_batches(handle, ctx, out), []
        arr = _read_npy(handle.path, ctx, BATCH if "layout" not in handle.extra else 1 << 20)
        if "layout" in handle.extra:
            return [self._unflatten(arr, handle, i) for i in range(handle.count)], []
        return [arr], []

    def _read_batches(self, handle: Handle, ctx: Ctx, out: Sink) -> Sink:
        """np.load's reads, a batch of records at a time into fresh arrays handed to ``out``."""
        n = handle.count
        offs = handle.extra.get("offsets")
        with open(handle.path, "rb") as fh:
            shape, _fortran, dtype = _npy_header(fh)  # store_many wrote it: C order
            base = fh.tell()
            step = BATCH
            if offs is None:  # one (n, ...) array: the imgtui method's batches (8 MB)
                shape = shape[1:]
                row = int(np.prod(shape)) * dtype.itemsize
                step = _batch_for(np.empty((1,) + shape, dtype))
            for s in range(0, n, step):
                e = min(n, s + step)
                if offs is None:
                    buf = np.empty((e - s,) + shape, dtype)
                    fh.seek(base + s * row)
                    fh.readinto(memoryview(buf.reshape(-1)).cast("B"))
                    out.append(buf)
                else:
                    buf = np.empty(offs[e] - offs[s], np.uint8)
                    fh.seek(base + offs[s])
                    fh.readinto(memoryview(buf))
                    for i in range(s, e):
                        shp, dt = handle.extra["layout"][i]
                        out.append(buf[offs[i] - offs[s] : offs[i + 1] - offs[s]].view(dt).reshape(shp))
                ctx.advance(e - s)
        return out

    def open_random(self, handle: Handle) -> RandomReader:
        return _MemmapReader(handle)


class _MemmapReader(RandomReader):
    def __init__(self, handle: Handle) -> None:
        self.handle = handle
        self.mm = np.load(handle.path, mmap_mode="r")

    def batch(self, indices):
        if "layout" in self.handle.extra:
            return [np.array(FloorMethod._unflatten(self.mm, self.handle, int(i))) for i in indices]
        return self.mm[np.asarray(indices)]

    def close(self) -> None:
        mm = getattr(self.mm, "_mmap", None)
        self.mm = None
        if mm is not None:
            try:
                mm.close()
            except Exception:
                pass


class MemcpyMethod(Method):
    """A plain copy of the raw bytes in memory: the ceiling no store can beat."""

    method = "floor"
    backend = "memcpy"

    def _copy(self, data: Data, ctx: Ctx) -> list:
        if data.spilled:  # the records are in a file: copy each batch into one reused buffer
            return self._copy_through(data, ctx)
        if data.stacked is not None:
            out = np.empty_like(data.stacked)
            for s in range(0, data.n, BATCH):
                out[s : s + BATCH] = data.stacked[s : s + BATCH]
                ctx.advance(min(BATCH, data.n - s))
            return [out]
        outs = []
        for s in range(0, data.n, BATCH):
            outs.extend(r.image.copy() for r in data.records[s : s + BATCH])
            ctx.advance(min(BATCH, data.n - s))
        return outs

    @staticmethod
    def _copy_through(data: Data, ctx: Ctx) -> list:
        if data.stacked is not None:
            out = np.empty_like(data.stacked[:BATCH])
            for s in range(0, data.n, BATCH):
                k = min(BATCH, data.n - s)
                out[:k] = data.stacked[s : s + k]
                ctx.advance(k)
            return []
        buf = np.empty(0, np.uint8)
        for s in range(0, data.n, BATCH):
            for r in data.records[s : s + BATCH]:
                b = r.image.reshape(-1).view(np.uint8)
                if len(buf) < len(b):
                    buf = np.empty(len(b) * 2, np.uint8)
                buf[: len(b)] = b
            ctx.advance(min(BATCH, data.n - s))
        return []

    def store_many(self, folder: Path, data: Data, ctx: Ctx) -> Handle:
        return Handle(folder, data.n, {"copy": self._copy(data, ctx)})

    def memcpy(self, data: Data, ctx: Ctx) -> list:
        return self._copy(data, ctx)


def _batch_for(stacked: np.ndarray | None, target_bytes: int = 8 << 20) -> int:
    """Records per call for the imgtui method: about 8 MB, never fewer than BATCH. Cancel and
    progress are checked between calls, so this stays far below a second of work."""
    if stacked is None or len(stacked) == 0:
        return BATCH
    per = max(1, stacked[0].nbytes)
    return max(BATCH, target_bytes // per)


# -- imgtui backends --------------------------------------------------------------------------
class ImgtuiMethod(Method):
    method = "imgtui"

    def __init__(self, backend: str, options: dict | None = None) -> None:
        self.backend = backend
        self.cls = get_backend(backend)
        self.options = dict(options or {})
        try:
            self.full_options = self.cls.writer_cls.check_options(dict(self.options))
        except ImgtuiError:
            raise
        except Exception:  # pragma: no cover - a backend's own bug shows up in the rows instead
            self.full_options = dict(self.options)

    def options_text(self) -> str:
        return ",".join(f"{k}={v}" for k, v in sorted((self.full_options or {}).items()))

    def _path(self, folder: Path, name: str) -> Path:
        return folder / (name + (self.cls.suffix or ""))

    def store_many(self, folder: Path, data: Data, ctx: Ctx) -> Handle:
        path = self._path(folder, "store")
        with open_writer(path, self.backend, expected_count=data.n, **self.options) as w:
            recs = data.records
            step = BATCH
            for s in range(0, data.n, step):
                e = min(data.n, s + step)
                if data.stacked is not None:  # same-shape images: the array fast path
                    w.write_array(data.stacked[s:e], *data.labels_metadata(s, e))
                else:
                    w.write_many(recs[s:e])
                ctx.advance(e - s)
        return Handle(path, data.n)

    def store_one(self, folder: Path, record: Record) -> Handle:
        path = self._path(folder, "one")
        with open_writer(path, self.backend, expected_count=1, **self.options) as w:
            w.write(record)
        return Handle(path, 1)

    def read_one(self, handle: Handle, index: int) -> np.ndarray:
        with open_store(handle.path, self.backend) as r:
            return r[index].image

    def read_many(self, handle: Handle, ctx: Ctx) -> tuple[list, list]:
        with open_store(handle.path, self.backend) as r:
            n = len(r)
            labels = r.labels()
            images = ctx.collect()
            step = BATCH if n == 0 else _batch_for(r[0].image[None])
            for s in range(0, n, step):
                images.append(r.get_images(range(s, min(n, s + step))))
                ctx.advance(min(step, n - s))
        return images, labels

    def open_random(self, handle: Handle) -> RandomReader:
        return _StoreRandomReader(handle, self.backend)


class _StoreRandomReader(RandomReader):
    def __init__(self, handle: Handle, backend: str) -> None:
        self.reader = open_store(handle.path, backend)

    def batch(self, indices):
        return self.reader.get_images([int(i) for i in indices])

    def close(self) -> None:
        self.reader.close()


def article_labels(labels: list) -> list[int]:
    """The article stores integer class indices (CIFAR's labels): class names become the index
    of the name among the sorted distinct names, as an image-folder loader numbers its classes."""
    if all(type(lb) is int for lb in labels):
        return labels
    names = sorted({str(lb) for lb in labels})
    index = {name: i for i, name in enumerate(names)}
    return [index[str(lb)] for lb in labels]


# -- the article's plain functions ------------------------------------------------------------
class _Counting(list):
    """A list that reports progress (and honours cancel) as the article's loops walk it."""

    def __init__(self, items, ctx: Ctx) -> None:
        super().__init__(items)
        self._ctx = ctx
        self._seen = 0

    def _tick(self) -> None:
        self._seen += 1
        if self._seen % BATCH == 0:
            self._ctx.advance(BATCH)

    def __iter__(self):
        for item in super().__iter__():
            yield item
            self._tick()

    def __getitem__(self, i):
        item = super().__getitem__(i)
        if isinstance(i, int):
            self._tick()
        return item

    def finish(self) -> None:
        rest = len(self) - (self._seen // BATCH) * BATCH
        if rest > 0:
            self._ctx.advance(rest)


class ArticleMethod(Method):
    """The Real Python article's functions (``imgtui.backends.article``).

    store_many: ``article.store_many_<backend>(images, labels, folder)`` as is; the images list
    reports progress and checks cancel as the article's loop walks it.
    read_many: hdf5 calls ``article.read_many_hdf5`` (one bulk read); disk and lmdb run the
    article's own per-image loops (same calls: ``np.array(Image.open(...))``, ``pickle.loads``)
    with a cancel check every 256 images, so that cancel works on big counts.
    store_one: ``store_many_<backend>`` with one image. read_one / random access: the article's
    single-image way, image by image (disk: open the PNG; lmdb: ``txn.get`` + ``pickle.loads``;
    hdf5: ``file["images"][i]``); read_one opens the store for each image like the article's
    ``read_single_*``.
    """

    method = "article"

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.mod = article

    def check_data(self, data: Data) -> None:
        if data.stacked is None:
            raise ImgtuiError("article method needs fixed-shape images")
        if data.stacked.dtype != np.uint8:
            raise ImgtuiError(f"article method needs 8-bit images (these are {data.stacked.dtype})")
        if self.backend == "lmdb" and data.stacked.ndim != 4:
            raise ImgtuiError("article LMDB method needs HxWxC images (its CIFAR_Image reads shape[2])")
        if self.backend == "hdf5" and not all(0 <= lb <= 255 for lb in article_labels(data.labels)):
            raise ImgtuiError("article HDF5 method needs integer labels from 0 to 255 (it stores them as uint8)")

    def _store(self, folder: Path, images: list, labels: list) -> Handle:
        n = len(images)
        if self.backend == "disk":
            d = folder / "store"
            d.mkdir()
            self.mod.store_many_disk(images, labels, d)
            return Handle(d, n, {"dir": str(d)})
        if self.backend == "lmdb":
            p = self.mod.store_many_lmdb(images, labels, folder)
            return Handle(Path(p), n, {"dir": str(folder)})
        p = self.mod.store_many_hdf5(images, labels, folder)
        return Handle(Path(p), n, {"dir": str(folder)})

    def store_many(self, folder: Path, data: Data, ctx: Ctx) -> Handle:
        self.check_data(data)
        images = _Counting(data.images, ctx)
        h = self._store(folder, images, article_labels(data.labels))
        images.finish()
        return h

    def store_one(self, folder: Path, record: Record) -> Handle:
        return self._store(folder, [record.image], article_labels([record.label]))

    def read_one(self, handle: Handle, index: int) -> np.ndarray:
        if self.backend == "disk":
            from PIL import Image

            return np.array(Image.open(handle.path / f"{index}.png"))
        if self.backend == "lmdb":
            import lmdb
            import pickle

            env = lmdb.open(str(handle.path), readonly=True)
            with env.begin() as txn:
                data = txn.get(f"{index:08}".encode("ascii"))
                image = pickle.loads(data).get_image()
            env.close()
            return image
        import h5py

        with h5py.File(handle.path, "r") as f:
            return np.array(f["/images"][index]).astype("uint8")

    def read_many(self, handle: Handle, ctx: Ctx) -> tuple[list, list]:
        n, d = handle.count, handle.extra["dir"]
        if self.backend == "hdf5":
            images, labels = self.mod.read_many_hdf5(n, d)
            ctx.advance(n)
            return [images], list(labels)
        if self.backend == "disk":  # article.read_many_disk, with a cancel check per 256 images
            import csv

            from PIL import Image

            disk_dir = Path(d)
            images, labels = [], []
            for image_id in range(n):
                images.append(np.array(Image.open(disk_dir / f"{image_id}.png")))
                if (image_id + 1) % BATCH == 0:
                    ctx.advance(BATCH)
            with open(disk_dir / f"{n}.csv", "r") as csvfile:
                reader = csv.reader(csvfile, delimiter=" ", quotechar="|", quoting=csv.QUOTE_MINIMAL)
                for row in reader:
                    labels.append(int(row[0]))
            ctx.advance(n % BATCH)
            return images, labels
        import lmdb  # article.read_many_lmdb, with a cancel check per 256 images
        import pickle

        images, labels = [], []
        env = lmdb.open(str(Path(d) / f"{n}_lmdb"), readonly=True)
        try:
            with env.begin() as txn:
                for image_id in range(n):
                    data = txn.get(f"{image_id:08}".encode("ascii"))
                    cifar_image = pickle.loads(data)
                    images.append(cifar_image.get_image())
                    labels.append(cifar_image.label)
                    if (image_id + 1) % BATCH == 0:
                        ctx.advance(BATCH)
        finally:
            env.close()
        ctx.advance(n % BATCH)
        return images, labels

    def open_random(self, handle: Handle) -> RandomReader:
        return _ArticleRandomReader(self.backend, handle)


class _ArticleRandomReader(RandomReader):
    """Image by image, the way the article reads single images (the store is opened once)."""

    def __init__(self, backend: str, handle: Handle) -> None:
        self.backend, self.handle = backend, handle
        self._env = self._txn = self._f = None
        if backend == "lmdb":
            import lmdb

            self._env = lmdb.open(str(handle.path), readonly=True)
            self._txn = self._env.begin()
        elif backend == "hdf5":
            import h5py

            self._f = h5py.File(handle.path, "r")
            self._images = self._f["/images"]

    def batch(self, indices):
        if self.backend == "disk":
            from PIL import Image

            return np.stack([np.array(Image.open(self.handle.path / f"{int(i)}.png")) for i in indices])
        if self.backend == "lmdb":
            import pickle

            return np.stack([pickle.loads(self._txn.get(f"{int(i):08}".encode("ascii"))).get_image() for i in indices])
        return np.stack([np.array(self._images[int(i)]).astype("uint8") for i in indices])

    def close(self) -> None:
        if self._txn is not None:
            self._txn.abort()
            self._txn = None
        if self._env is not None:
            self._env.close()
            self._env = None
        if self._f is not None:
            self._f.close()
            self._f = None


def make_method(method: str, backend: str, backend_options: dict | None = None) -> Method:
    """The Method object for a (method, backend) pair of a plan."""
    if method == "floor":
        return MemcpyMethod() if backend == "memcpy" else FloorMethod()
    if method == "imgtui":
        return ImgtuiMethod(backend, (backend_options or {}).get(backend))
    if method == "article":
        if backend not in ARTICLE_BACKENDS:
            raise ImgtuiError(f"the article has no {backend} functions (it covers {', '.join(ARTICLE_BACKENDS)})")
        return ArticleMethod(backend)
    if method == "peer":
        from .peers import make_peer

        return make_peer(backend)
    raise ImgtuiError(f"unknown method {method!r} (choose from article, imgtui, floor, peer)")
