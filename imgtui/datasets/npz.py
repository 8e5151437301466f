"""NumPy ``.npy`` / ``.npz`` image arrays as a dataset (e.g. MedMNIST files).

- ``.npy``: one images array ``N x H x W`` or ``N x H x W x C`` (C = 1, 3 or 4), opened with
  ``mmap_mode="r"``; every label is ``0``.
- ``.npz``: the images/labels pair is picked by ``key`` (a split prefix such as ``train``, or the
  name of an array). Without ``key``: the first of ``train``/``val``/``test`` that has
  ``<split>_images`` (MedMNIST style, labels ``<split>_labels``), else ``images``/``labels``, else
  ``x``/``y``, else the only array in the file. ``labels_key`` names the labels array explicitly.
  Members are streamed from the zip in slices (never the whole array in memory); members that are
  Fortran-ordered are loaded whole because their layout forces it.

Labels: shape ``(N,)`` or ``(N, 1)`` of integers -> ``int``; of strings -> ``str``; shape
``(N, k)`` with k > 1 (multi-label) -> ``str`` like ``"0,1,0"``. Float or bool labels are refused.

Pixels: every record dtype (uint8, uint16, int8, int16, uint32, int32, float32, float64, bool)
passes through as it is (non-native byte order is swapped). int64/uint64 arrays are checked once
at construction (a full pass over the array) and converted to the smallest of uint8, uint16,
uint32 (no negative values) or int16, int32 that holds every value, else refused. float16,
complex and object arrays are refused with a one-line ``DatasetError`` naming the file, array and
dtype. ``np.load`` is always
called with ``allow_pickle=False``.

Metadata per record: ``{"index": i}`` plus ``{"split": <key>}`` for npz files.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..errors import DatasetError
from ..records import DTYPE_CODES, DTYPES_TEXT, Record
from .base import Dataset

_SPLITS = ("train", "val", "test")
_PAIRS = (("images", "labels"), ("x", "y"), ("X", "y"), ("x", "Y"))
_CHUNK_BYTES = 4 << 20


def _read_header(fh: Any, where: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(fh)
        else:
            shape, fortran, dtype = fmt._read_array_header(fh, version)  # noqa: SLF001 (3.0)
    except Exception as exc:
        raise DatasetError(f"{where}: not a valid .npy array ({exc})") from None
    return tuple(shape), bool(fortran), np.dtype(dtype)


def _check_dtype(dtype: np.dtype, where: str, what: str) -> None:
    if dtype.hasobject:
        raise DatasetError(
            f"{where}: {what} is an object array; imgtui never unpickles (save a numeric uint8/uint16 array)"
        )
    if dtype.newbyteorder("=") not in DTYPE_CODES and dtype.kind not in "iu":
        raise DatasetError(
            f"{where}: {what} has dtype {dtype}; imgtui stores {DTYPES_TEXT} pixels "
            "(convert it yourself, e.g. x.astype('float32'))"
        )


def _check_shape(shape: tuple[int, ...], where: str, what: str) -> None:
    if len(shape) == 4:
        if shape[3] not in (1, 3, 4):
            hint = " (channel-first N x C x H x W is not supported; move channels last)" if shape[1] in (1, 3, 4) else ""
            raise DatasetError(
                f"{where}: {what} has {shape[3]} channels in shape {'x'.join(map(str, shape))}; use 1, 3 or 4{hint}"
            )
    elif len(shape) != 3:
        raise DatasetError(
            f"{where}: {what} has shape {'x'.join(map(str, shape)) or '()'}; expected N x H x W or N x H x W x C"
        )
    if shape[1] == 0 or shape[2] == 0:
        raise DatasetError(f"{where}: {what} images have 0 pixels (shape {'x'.join(map(str, shape))})")


def _target_dtype(dtype: np.dtype) -> np.dtype | None:
    """A record dtype (any byte order) -> native; int64/uint64 -> None (decided by a range scan)."""
    native = dtype.newbyteorder("=")
    return native if native in DTYPE_CODES else None


class NpzDataset(Dataset):
    __doc__ = __doc__
    kind = "npz"

    def __init__(self, path: str | Path, key: str | None = None, labels_key: str | None = None) -> None:
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise DatasetError(f"{self.path}: no such file")
        self.key = key or None
        self.labels_key = labels_key
        self.split: str | None = None
        self.labels_name: str | None = None
        self._labels: np.ndarray | None = None
        self._label_kind = "none"
        suffix = self.path.suffix.lower()
        if suffix == ".npy":
            if self.key:
                raise DatasetError(f"{self.path}: a .npy file holds one array; it has no {self.key!r} key")
            if labels_key:
                raise DatasetError(f"{self.path}: a .npy file has no labels array ({labels_key!r})")
            self._open_npy()
        elif suffix == ".npz":
            self._open_npz()
        else:
            raise DatasetError(f"{self.path}: expected a .npy or .npz file")
        _check_dtype(self.dtype, self._where, "the images array")
        _check_shape(self.shape, self._where, "the images array")
        self.n = self.shape[0]
        self.out_dtype = _target_dtype(self.dtype) or self._scan_range()

    # -- opening --------------------------------------------------------------------------------
    def _open_npy(self) -> None:
        self._where = str(self.path)
        try:
            with open(self.path, "rb") as fh:
                self.shape, _, self.dtype = _read_header(fh, self._where)
        except OSError as exc:
            raise DatasetError(f"{self.path}: cannot read ({exc.strerror or exc})") from None
        _check_dtype(self.dtype, self._where, "the images array")
        try:
            arr = np.load(self.path, mmap_mode="r", allow_pickle=False)
        except Exception as exc:
            raise DatasetError(f"{self.path}: cannot load array ({str(exc).splitlines()[0]})") from None
        self._mmap = arr
        self._member = None

    def _open_npz(self) -> None:
        try:
            with zipfile.ZipFile(self.path) as zf:
                members = [n for n in zf.namelist() if n.endswith(".npy")]
        except (zipfile.BadZipFile, OSError) as exc:
            raise DatasetError(f"{self.path}: not a readable .npz file ({exc})") from None
        names = [m[:-4] for m in members]
        if not names:
            raise DatasetError(f"{self.path}: the .npz file holds no arrays")
        images_name, labels_name = self._pick(names)
        if self.labels_key is not None:
            if self.labels_key not in names:
                raise DatasetError(
                    f"{self.path}: no array {self.labels_key!r} (arrays: {', '.join(sorted(names))})"
                )
            labels_name = self.labels_key
        self.images_name, self.labels_name = images_name, labels_name
        self._where = f"{self.path}:{images_name}"
        self._member = images_name + ".npy"
        self._mmap = None
        with zipfile.ZipFile(self.path) as zf, zf.open(self._member) as fh:
            self.shape, self._fortran, self.dtype = _read_header(fh, self._where)
        if labels_name is not None:
            self._load_labels(labels_name)

    def _pick(self, names: list[str]) -> tuple[str, str | None]:
        have = set(names)
        listing = ", ".join(sorted(names))
        if self.key:
            if f"{self.key}_images" in have:
                self.split = self.key
                lab = f"{self.key}_labels"
                return f"{self.key}_images", lab if lab in have else None
            if self.key in have:
                self.split = self.key
                return self.key, None
            raise DatasetError(f"{self.path}: no split or array {self.key!r} (arrays: {listing})")
        for split in _SPLITS:
            if f"{split}_images" in have:
                self.split = split
                lab = f"{split}_labels"
                return f"{split}_images", lab if lab in have else None
        for img, lab in _PAIRS:
            if img in have:
                self.split = img
                return img, lab if lab in have else None
        if len(names) == 1:
            self.split = names[0]
            return names[0], None
        raise DatasetError(
            f"{self.path}: cannot tell which array holds the images (arrays: {listing}); "
            "name one, e.g. file.npz:train"
        )

    def _load_labels(self, name: str) -> None:
        where = f"{self.path}:{name}"
        try:
            with np.load(self.path, allow_pickle=False) as npz:
                labels = npz[name]
        except ValueError as exc:
            if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
                raise DatasetError(f"{where}: labels are an object array; imgtui never unpickles") from None
            raise DatasetError(f"{where}: cannot load labels ({exc})") from None
        except Exception as exc:
            raise DatasetError(f"{where}: cannot load labels ({exc})") from None
        n = self.shape[0] if self.shape else 0
        if labels.ndim == 0 or labels.shape[0] != n or labels.ndim > 2:
            raise DatasetError(
                f"{where}: labels shape {'x'.join(map(str, labels.shape)) or '()'} does not match {n:,} images"
            )
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if labels.dtype.kind in "iu":
            kind = "int" if labels.ndim == 1 else "multi"
        elif labels.dtype.kind in "US" and labels.ndim == 1:
            kind = "str"
        else:
            raise DatasetError(
                f"{where}: labels have dtype {labels.dtype} and shape {'x'.join(map(str, labels.shape))}; "
                "expected integers or strings"
            )
        self._labels, self._label_kind = labels, kind

    def _scan_range(self) -> np.dtype:
        lo, hi = 0, 0
        for start, block in self._blocks(convert=False):
            if block.size:
                lo, hi = min(lo, int(block.min())), max(hi, int(block.max()))
        for dt in (np.uint8, np.uint16, np.int16, np.uint32, np.int32):
            info = np.iinfo(dt)
            if info.min <= lo and hi <= info.max:
                return np.dtype(dt)
        raise DatasetError(
            f"{self._where}: images of dtype {self.dtype} have values {lo}..{hi}, outside int32 and uint32"
        )

    # -- reading --------------------------------------------------------------------------------
    def _blocks(self, convert: bool = True) -> Iterator[tuple[int, np.ndarray]]:
        """(start index, block of records) in order, a few MB at a time."""
        n = self.shape[0]
        per = max(1, int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize)
        step = max(1, _CHUNK_BYTES // per)

        def out(block: np.ndarray) -> np.ndarray:
            if not convert:
                return block
            return block.astype(self.out_dtype, copy=False)

        if self._mmap is not None:
            for start in range(0, n, step):
                yield start, out(np.asarray(self._mmap[start : start + step]))
            return
        try:
            with zipfile.ZipFile(self.path) as zf, zf.open(self._member) as fh:
                _read_header(fh, self._where)
                if self._fortran:  # the layout forces reading the whole member
                    arr = np.lib.format.read_array(zf.open(self._member), allow_pickle=False)
                    for start in range(0, n, step):
                        yield start, out(arr[start : start + step])
                    return
                for start in range(0, n, step):
                    k = min(step, n - start)
                    buf = bytearray(k * per)
                    view = memoryview(buf)
                    got = 0
                    while got < len(buf):
                        r = fh.readinto(view[got:])
                        if not r:
                            raise DatasetError(
                                f"{self._where}: array data is truncated (record {start + got // per:,} of {n:,})"
                            )
                        got += r
                    yield start, out(np.frombuffer(buf, self.dtype).reshape((k,) + self.shape[1:]))
        except DatasetError:
            raise
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise DatasetError(f"{self._where}: cannot read array data ({exc})") from None

    def _label(self, i: int) -> int | str:
        labels = self._labels
        if labels is None:
            return 0
        if self._label_kind == "int":
            return int(labels[i])
        if self._label_kind == "str":
            return str(labels[i])
        return ",".join(str(int(v)) for v in labels[i])

    @property
    def length(self) -> int:
        return self.shape[0]

    def describe(self) -> str:
        dims = "x".join(map(str, self.shape[1:]))
        src = str(self.path) if self.split is None else f"{self.path}:{self.split}"
        conv = "" if self.out_dtype == self.dtype else f" (from {self.dtype})"
        labels = "no labels" if self._labels is None else f"labels from {self.labels_name}"
        return f"npz {src}: {self.shape[0]:,} images {dims} {self.out_dtype}{conv}, {labels}"

    def __iter__(self) -> Iterator[Record]:
        for start, block in self._blocks():
            for j in range(block.shape[0]):
                i = start + j
                meta: dict[str, Any] = {"index": i}
                if self.split is not None:
                    meta["split"] = self.split
                yield Record(np.array(block[j], order="C"), self._label(i), meta)
