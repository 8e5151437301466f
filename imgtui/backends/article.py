"""Stores written the way of Real Python's "Three Ways of Storing and Accessing Lots of Images in
Python" (https://realpython.com/storing-images-in-python/).

Two halves:
- the article's own write/read functions (``store_many_disk``, ``store_many_lmdb``,
  ``store_many_hdf5`` and ``read_many_*``), kept as the article does them apart from taking the
  destination folder as an argument. The benchmark runs them as the "article" method.
- read-only imgtui readers for such stores (``ArticleLmdbReader``, ``ArticleHdf5Reader``,
  ``ArticleDiskReader``) and ``detect_article(path)``. The article's LMDB values are pickles; they are
  loaded with a restricted unpickler that only builds a stand-in ``CIFAR_Image`` (never runs code
  from the file). These layouts store no checksums, so ``verify()`` can only say so.
"""

from __future__ import annotations

import csv
import os
import pickle
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import CorruptStoreError, StoreNotFoundError, WrongBackendError
from ..records import Label, Record
from ..safe_pickle import StandIn, safe_loads
from .base import StoreReader, VerifyResult, _one_line

# ---------------------------------------------------------------------------------------------
# the article's code (CIFAR_Image, store_many_*, read_many_*)
# ---------------------------------------------------------------------------------------------


class CIFAR_Image:  # noqa: N801 - the article's name; pickles refer to it
    def __init__(self, image: np.ndarray, label: Any) -> None:
        # Dimensions of image for reconstruction - not really necessary for this dataset, but some
        # datasets may include images of varying sizes
        self.channels = image.shape[2]
        self.size = image.shape[:2]
        self.image = image.tobytes()
        self.label = label

    def get_image(self) -> np.ndarray:
        """Returns the image as a numpy array."""
        image = np.frombuffer(self.image, dtype=np.uint8)
        return image.reshape(*self.size, self.channels)


def store_many_disk(images, labels, disk_dir) -> None:
    """The article's store_many_disk: one PNG per image plus ``{N}.csv`` with the labels."""
    disk_dir = Path(disk_dir)
    num_images = len(images)
    from PIL import Image

    for i, image in enumerate(images):
        Image.fromarray(image).save(disk_dir / f"{i}.png")
    with open(disk_dir / f"{num_images}.csv", "w") as csvfile:
        writer = csv.writer(csvfile, delimiter=" ", quotechar="|", quoting=csv.QUOTE_MINIMAL)
        for label in labels:
            writer.writerow([label])


def store_many_lmdb(images, labels, lmdb_dir) -> Path:
    """The article's store_many_lmdb: map_size = 10x the raw bytes, one pickled CIFAR_Image per key,
    all in one transaction. Writes ``{lmdb_dir}/{N}_lmdb`` and returns that path."""
    import lmdb

    num_images = len(images)
    map_size = num_images * images[0].nbytes * 10
    path = Path(lmdb_dir) / f"{num_images}_lmdb"
    env = lmdb.open(str(path), map_size=map_size)
    with env.begin(write=True) as txn:
        for i in range(num_images):
            value = CIFAR_Image(images[i], labels[i])
            key = f"{i:08}"
            txn.put(key.encode("ascii"), pickle.dumps(value))
    env.close()
    return path


def store_many_hdf5(images, labels, hdf5_dir) -> Path:
    """The article's store_many_hdf5: ``{N}_many.h5`` with datasets "images" and "meta" (uint8 BE)."""
    import h5py

    num_images = len(images)
    path = Path(hdf5_dir) / f"{num_images}_many.h5"
    file = h5py.File(path, "w")
    file.create_dataset("images", np.shape(images), h5py.h5t.STD_U8BE, data=images)
    file.create_dataset("meta", np.shape(labels), h5py.h5t.STD_U8BE, data=labels)
    file.close()
    return path


def read_many_disk(num_images, disk_dir):
    from PIL import Image

    disk_dir = Path(disk_dir)
    images, labels = [], []
    for image_id in range(num_images):
        images.append(np.array(Image.open(disk_dir / f"{image_id}.png")))
    with open(disk_dir / f"{num_images}.csv", "r") as csvfile:
        reader = csv.reader(csvfile, delimiter=" ", quotechar="|", quoting=csv.QUOTE_MINIMAL)
        for row in reader:
            labels.append(int(row[0]))
    return images, labels


def read_many_lmdb(num_images, lmdb_dir):
    """The article's read_many_lmdb (plain ``pickle.loads``: only for stores you wrote yourself)."""
    import lmdb

    images, labels = [], []
    env = lmdb.open(str(Path(lmdb_dir) / f"{num_images}_lmdb"), readonly=True)
    with env.begin() as txn:
        for image_id in range(num_images):
            data = txn.get(f"{image_id:08}".encode("ascii"))
            cifar_image = pickle.loads(data)
            images.append(cifar_image.get_image())
            labels.append(cifar_image.label)
    env.close()
    return images, labels


def read_many_hdf5(num_images, hdf5_dir):
    import h5py

    file = h5py.File(Path(hdf5_dir) / f"{num_images}_many.h5", "r")
    images = np.array(file["/images"]).astype("uint8")
    labels = np.array(file["/meta"]).astype("uint8")
    file.close()
    return images, labels


# ---------------------------------------------------------------------------------------------
# restricted unpickling
# ---------------------------------------------------------------------------------------------


class _StandInCIFAR_Image(StandIn):  # noqa: N801
    """What an article pickle becomes: plain attributes, no code from the file."""

    _fields = ("channels", "size", "image", "label")
    channels: Any
    size: Any
    image: Any
    label: Any

    def get_image(self) -> np.ndarray:
        return np.frombuffer(self.image, dtype=np.uint8).reshape(*self.size, self.channels)


def restricted_loads(data: bytes) -> Any:
    """Unpickle an article LMDB value with the shared restricted unpickler (``imgtui.safe_pickle``):
    a ``CIFAR_Image`` from any module becomes ``_StandInCIFAR_Image``; numpy labels become Python
    numbers; anything else that is not plain data is refused with a one-line CorruptStoreError."""
    return safe_loads(data, error=CorruptStoreError, classes={"CIFAR_Image": _StandInCIFAR_Image})


# ---------------------------------------------------------------------------------------------
# readers
# ---------------------------------------------------------------------------------------------


class _ArticleReader(StoreReader):
    kind_text = ""
    #: how to read the store without imgtui (the article's own reader)
    recipe_text = ""
    #: records whose shapes and dtypes ``info()`` samples (spread over the store)
    info_sample = 200

    def _stored_checksum(self, index: int) -> int | None:
        return None

    def info(self) -> dict:
        from collections import Counter

        d = super().info()
        n = len(self)
        d["complete"] = None
        d["article"] = True
        d["kind_text"] = self.kind_text
        d["checksum"] = None
        d["note"] = f"written the Real Python article's way ({self.kind_text}); no manifest, no checksums"
        d["recipe"] = self.recipe_text
        if n:
            k = min(n, self.info_sample)
            idx = sorted({round(j * (n - 1) / max(1, k - 1)) for j in range(k)})
            shapes: Counter = Counter()
            dtypes: Counter = Counter()
            raw = 0
            for i in idx:
                img = self._read(i).image
                shapes["x".join(map(str, img.shape))] += 1
                dtypes[str(img.dtype)] += 1
                raw += img.nbytes
            d["shapes"], d["dtypes"] = dict(shapes.most_common()), dict(dtypes)
            d["sampled"] = len(idx)
            d["raw_bytes"] = round(raw / len(idx) * n)
            labels = Counter(str(v) for v in self._labels())
            d["labels"] = dict(sorted(labels.items(), key=lambda kv: (not kv[0].lstrip("-").isdigit(),
                                                                        int(kv[0]) if kv[0].lstrip("-").isdigit() else 0, kv[0])))
        return d

    def verify(self, progress=None, cancel: Callable[[], bool] | None = None, max_errors: int = 100) -> VerifyResult:
        """Read every record: readability only, since the layout has no checksums to compare the
        pixels with (``ok`` when every record could be read; a note says so)."""
        n = len(self)
        errors: list[str] = []
        checked = 0
        for start in range(0, n, 256):
            if cancel is not None and cancel():
                break
            for i in range(start, min(n, start + 256)):
                try:
                    self._read(i)
                except Exception as exc:
                    errors.append(f"record {i}: cannot be read ({_one_line(exc)})")
                checked += 1
                if len(errors) >= max_errors:
                    break
            if len(errors) >= max_errors:
                break
            if progress is not None:
                progress(checked, n)
        note = f"the article's {self.kind_text} layout stores no checksums, so their pixels cannot be verified"
        return ReadabilityResult(ok=not errors and checked == n, checked=checked, errors=errors, notes=[note])


class ReadabilityResult(VerifyResult):
    """``verify()`` of a store without checksums: every record read, nothing compared."""

    def summary(self) -> str:
        if self.ok:
            return f"OK (readability only): {self.checked:,} records read; {self.notes[0]}"
        more = f" (+{len(self.errors) - 1} more)" if len(self.errors) > 1 else ""
        return (f"FAILED: {len(self.errors):,} unreadable record(s) in {self.checked:,} read: {self.errors[0]}{more}; "
                f"{self.notes[0]}")


class ArticleLmdbReader(_ArticleReader):
    backend = "article-lmdb"
    kind_text = "LMDB"
    recipe_text = ("lmdb.open(path).begin().get(b'%08d' % i) holds a pickled CIFAR_Image (the article's "
                   "read_many_lmdb; unpickle only stores you wrote yourself)")

    def __init__(self, path: str | os.PathLike) -> None:
        import lmdb

        super().__init__(path)
        self._env = None
        p = self.path
        if not (p / "data.mdb").is_file():
            raise StoreNotFoundError(f"{p}: no LMDB database (data.mdb) there")
        try:
            self._env = lmdb.open(str(p), readonly=True, lock=False, readahead=False, subdir=True)
            self._txn = self._env.begin()
            self._n = self._env.stat()["entries"]
        except lmdb.Error as exc:
            self.close()
            raise CorruptStoreError(f"{p}/data.mdb cannot be opened as an LMDB database ({exc})") from None

    def close(self) -> None:
        env, self._env = getattr(self, "_env", None), None
        if env is not None:
            env.close()

    def __len__(self) -> int:
        return self._n

    def _obj(self, index: int) -> _StandInCIFAR_Image:
        data = self._txn.get(f"{index:08}".encode("ascii"))
        if data is None:
            raise CorruptStoreError(f"{self.path}: key {index:08} (record {index}) is missing")
        try:
            obj = restricted_loads(data)
        except CorruptStoreError as exc:  # refused or unreadable, one line
            raise CorruptStoreError(f"{self.path}: record {index}: {exc}") from None
        if not isinstance(obj, _StandInCIFAR_Image):
            raise CorruptStoreError(f"{self.path}: record {index} is a {type(obj).__name__}, not a CIFAR_Image")
        return obj

    def _read(self, index: int) -> Record:
        obj = self._obj(index)
        try:
            img = np.array(obj.get_image())
            label = obj.label
            label = int(label) if isinstance(label, (int, np.integer)) and not isinstance(label, bool) else str(label)
        except Exception as exc:
            raise CorruptStoreError(f"{self.path}: record {index} has a damaged CIFAR_Image ({exc})") from None
        return Record(img, label, {})

    def _labels(self) -> list[Label]:
        return [self._read(i).label for i in range(len(self))]


class ArticleHdf5Reader(_ArticleReader):
    backend = "article-hdf5"
    kind_text = "HDF5"
    recipe_text = "h5py.File(path)['images'][i] (N x H x W x C uint8) and ['meta'][i] (the label)"

    def __init__(self, path: str | os.PathLike) -> None:
        import h5py

        super().__init__(path)
        self._f = None
        p = self.path
        if not p.is_file():
            raise StoreNotFoundError(f"{p}: no such file")
        try:
            self._f = h5py.File(p, "r")
            self._images = self._f["images"]
            self._meta = self._f["meta"]
        except (OSError, KeyError) as exc:
            self.close()
            raise CorruptStoreError(f"{p} is not an article HDF5 store with 'images' and 'meta' ({exc})") from None
        if self._images.ndim != 4 or self._meta.shape[:1] != self._images.shape[:1]:
            shape = self._images.shape
            self.close()
            raise CorruptStoreError(f"{p}: 'images' has shape {shape}; expected (N, H, W, C) with N labels in 'meta'")
        self._n = int(self._images.shape[0])

    def close(self) -> None:
        f, self._f = getattr(self, "_f", None), None
        if f is not None:
            f.close()

    def __len__(self) -> int:
        return self._n

    def _read(self, index: int) -> Record:
        return Record(np.asarray(self._images[index]).astype(np.uint8), int(self._meta[index]), {})

    def get_images(self, indices):
        idx = [self._index(i) for i in indices]
        if not idx:
            return []
        order = np.argsort(idx)
        uniq, inverse = np.unique(np.asarray(idx)[order], return_inverse=True)
        data = self._images[uniq].astype(np.uint8)
        out = np.empty((len(idx),) + data.shape[1:], np.uint8)
        out[order] = data[inverse]
        return out

    def get_many(self, indices):
        idx = [self._index(i) for i in indices]
        if not idx:
            return []
        imgs = self.get_images(idx)
        labels = self._labels()
        return [Record(imgs[k], labels[i], {}) for k, i in enumerate(idx)]

    def _labels(self) -> list[Label]:
        return [int(v) for v in np.asarray(self._meta[...]).reshape(-1)]


class ArticleDiskReader(_ArticleReader):
    backend = "article-disk"
    kind_text = "disk (PNG + CSV)"
    recipe_text = "PIL.Image.open(f'{i}.png'); labels one per line in {N}.csv"

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(path)
        p = self.path
        if not p.is_dir():
            raise StoreNotFoundError(f"{p}: no such folder")
        csvs = sorted((int(f.stem), f) for f in p.glob("*.csv") if f.stem.isdigit())
        if not csvs:
            raise WrongBackendError(f"{p} is not an article disk store (no {{N}}.csv label file)")
        self._n, self._csv = csvs[-1]
        self._label_list: list[int] | None = None

    def __len__(self) -> int:
        return self._n

    def _labels(self) -> list[Label]:
        if self._label_list is None:
            labels = []
            with open(self._csv, "r", newline="") as fh:
                for lineno, row in enumerate(csv.reader(fh, delimiter=" ", quotechar="|"), 1):
                    try:
                        labels.append(int(row[0]))
                    except (IndexError, ValueError):
                        raise CorruptStoreError(f"{self._csv}: line {lineno} is not an integer label") from None
            if len(labels) != self._n:
                raise CorruptStoreError(f"{self._csv}: {len(labels):,} labels for {self._n:,} images")
            self._label_list = labels
        return self._label_list

    def _read(self, index: int) -> Record:
        from PIL import Image

        f = self.path / f"{index}.png"
        try:
            with Image.open(f) as im:
                img = np.array(im)
        except FileNotFoundError:
            raise CorruptStoreError(f"{f} is missing") from None
        except Exception as exc:
            raise CorruptStoreError(f"{f} cannot be read as PNG ({exc})") from None
        return Record(img, self._labels()[index], {})


def article_text(backend: str) -> str:
    """"article-lmdb" -> "article-format LMDB (from the classic comparison)"."""
    kind = {"article-lmdb": "LMDB", "article-hdf5": "HDF5", "article-disk": "PNG + CSV folder"}.get(backend, backend)
    return f"article-format {kind} (from the classic comparison)"


_H5_NAME = re.compile(r"^\d+_many\.h5$")


def detect_article(path: str | os.PathLike) -> str | None:
    """"article-lmdb", "article-hdf5" or "article-disk" for a store in the article's layout, else None."""
    p = Path(path)
    if p.is_dir() and (p / "data.mdb").is_file():
        import lmdb

        try:
            env = lmdb.open(str(p), readonly=True, lock=False, subdir=True, max_dbs=0)
        except lmdb.Error:
            return None
        try:
            with env.begin() as txn:
                cur = txn.cursor()
                if cur.first() and re.fullmatch(rb"\d{8}", cur.key()):
                    return "article-lmdb"
        finally:
            env.close()
        return None
    if p.is_file() and p.suffix == ".h5":
        try:
            import h5py

            with h5py.File(p, "r") as f:
                if "images" in f and "meta" in f and f["images"].ndim == 4:
                    return "article-hdf5"
        except OSError:
            return None
        return None
    if p.is_dir() and any(f.stem.isdigit() for f in p.glob("*.csv")) and (p / "0.png").is_file():
        return "article-disk"
    return None


ARTICLE_READERS = {
    "article-lmdb": ArticleLmdbReader,
    "article-hdf5": ArticleHdf5Reader,
    "article-disk": ArticleDiskReader,
}


def open_article(path: str | os.PathLike) -> StoreReader:
    kind = detect_article(path)
    if kind is None:
        raise WrongBackendError(f"{path} is not a store in the Real Python article's layout")
    return ARTICLE_READERS[kind](path)
