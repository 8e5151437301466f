"""CIFAR-10 / CIFAR-100 "python version" batch files, read with a restricted (safe) unpickler.

``CifarDataset(path)``: ``path`` is one batch file (``data_batch_1`` .. ``data_batch_5``,
``test_batch``; CIFAR-100 ``train`` / ``test``) or a folder holding them (``cifar-10-batches-py``,
``cifar-100-python``). Folder order: ``data_batch_1..N`` (numeric), ``test_batch``, ``train``,
``test``.

The files are pickles of dicts with bytes keys; they are loaded by ``imgtui.safe_pickle`` (the
restricted unpickler shared with the article reader), which builds only plain data and numpy
arrays of plain numeric dtypes through its own stand-ins (never numpy's ``dtype`` state), and
refuses any other global with ``DatasetError("refusing to unpickle module.name from file")``, so a
malicious file can neither run code nor crash the process. On top of that a batch must have the
real structure: a dict with bytes/str keys, ``data`` a uint8 ``N x 3072`` array (or ``N*3072``
bytes), ``labels`` (CIFAR-10) or ``fine_labels`` (CIFAR-100) a list of ``N`` ints, optional
``coarse_labels`` likewise, ``filenames`` ``N`` bytes/str, ``batch_label`` bytes/str. Labels are
ints in ``[0, 2**31)``, and below the number of class names when a meta file names them. Other
keys are ignored; anything else is a one-line ``DatasetError``.

Records: image ``32x32x3`` uint8 (``data`` row reshaped ``(3, 32, 32)`` then channels last), label
``int`` (``labels`` or CIFAR-100 ``fine_labels``), metadata ``{"filename", "batch"}`` plus
``"label_name"`` when ``batches.meta`` / ``meta`` is next to the batch file, and
``"coarse_label"`` (+ ``"coarse_label_name"``) for CIFAR-100.

Each batch is a single ~30 MB pickle; the first batch stays cached and one more is held while
iterating. ``length`` is
known after opening: every batch is loaded (and validated) once at construction.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..errors import DatasetError
from ..records import Record
from ..safe_pickle import SafeUnpickler  # noqa: F401 - the unpickler; re-exported for callers and tests
from ..safe_pickle import safe_loads as _safe_loads
from .base import Dataset

_BATCH_RE = re.compile(r"^(data_batch_\d+|test_batch|train|test)$")
_META_NAMES = ("batches.meta", "meta")


_MAX_FILE_BYTES = 1 << 30  # the biggest real batch (CIFAR-100 train) is ~160 MB
_MAX_LABEL = 2**31  # labels are ints in [0, 2**31), or in [0, number of names) when a meta file names them


def safe_loads(data: bytes, source: str) -> Any:
    """Unpickle CIFAR bytes with the shared restricted unpickler (``imgtui.safe_pickle``)."""
    return _safe_loads(data, source, error=DatasetError, what="CIFAR batch file")


def safe_load(path: str | Path) -> Any:
    """Load a pickle file with SafeUnpickler; DatasetError (one line) for anything unexpected."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > _MAX_FILE_BYTES:
                raise DatasetError(f"{path}: {size:,} bytes is too big for a CIFAR batch file "
                                   f"(at most {_MAX_FILE_BYTES:,})")
            data = fh.read()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return safe_loads(data, str(path))


def is_cifar_batch(path: str | Path) -> bool:
    """Cheap check: a CIFAR batch file name whose first byte is the pickle PROTO opcode 0x80."""
    p = Path(path)
    if not _BATCH_RE.match(p.name) or not p.is_file():
        return False
    try:
        with open(p, "rb") as fh:
            head = fh.read(2)
    except OSError:
        return False
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def _batch_files(folder: Path) -> list[Path]:
    def key(p: Path) -> tuple:
        m = re.match(r"data_batch_(\d+)$", p.name)
        if m:
            return (0, int(m.group(1)))
        return ({"test_batch": 1, "train": 2, "test": 3}[p.name], 0)

    try:
        files = [p for p in folder.iterdir() if is_cifar_batch(p)]
    except OSError:
        return []
    return sorted(files, key=key)


def is_cifar_dir(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and bool(_batch_files(p))


def _str(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _clean(d: Any, path: Path) -> dict[str, Any]:
    """The batch dict with str keys (Python 2 batches have bytes keys)."""
    if not isinstance(d, dict):
        raise DatasetError(f"{path}: not a CIFAR batch (expected a dict, got {type(d).__name__})")
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(k, bytes):
            try:
                k = k.decode("ascii")
            except UnicodeDecodeError:
                raise DatasetError(f"{path}: not a CIFAR batch (a key is not ASCII text)") from None
        elif not isinstance(k, str):
            raise DatasetError(f"{path}: not a CIFAR batch (a key is a {type(k).__name__}, not text)")
        if k in out:
            raise DatasetError(f"{path}: not a CIFAR batch (key {k[:40]!r} appears twice)")
        out[k] = v
    return out


def _int_list(value: Any, n: int, limit: int, what: str, path: Path) -> list[int]:
    """``value`` as ``n`` Python ints in ``[0, limit)``: a list/tuple of ints or a 1-D integer array."""
    if isinstance(value, np.ndarray) and value.ndim == 1 and value.dtype.kind in "iu":
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or len(value) != n:
        got = f"{len(value)} values" if isinstance(value, (list, tuple)) else f"a {type(value).__name__}"
        raise DatasetError(f"{path}: CIFAR {what} must be {n} integers, got {got}")
    for i, x in enumerate(value):
        if type(x) is not int:
            raise DatasetError(f"{path}: CIFAR {what} must be {n} integers, got a {type(x).__name__} at index {i}")
        if not 0 <= x < limit:
            raise DatasetError(f"{path}: CIFAR {what}[{i}] is {x}, outside 0..{limit - 1}")
    return list(value)


class _Batch:
    def __init__(self, path: Path, fine_names: list[str] | None = None,
                 coarse_names: list[str] | None = None) -> None:
        d = _clean(safe_load(path), path)
        data = d.get("data")
        if isinstance(data, bytes):
            if len(data) % 3072:
                raise DatasetError(f"{path}: CIFAR 'data' must be N x 3072 uint8, got {len(data):,} bytes")
            data = np.frombuffer(data, np.uint8).reshape(-1, 3072)
        if not isinstance(data, np.ndarray):
            raise DatasetError(f"{path}: not a CIFAR batch (no 'data' array)")
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise DatasetError(
                f"{path}: CIFAR 'data' must be N x 3072 uint8, got {'x'.join(map(str, data.shape))} {data.dtype}"
            )
        n = data.shape[0]
        key = "labels" if "labels" in d else "fine_labels" if "fine_labels" in d else None
        if key is None:
            raise DatasetError(f"{path}: CIFAR batch has no 'labels' or 'fine_labels'")
        labels = _int_list(d[key], n, len(fine_names) if fine_names else _MAX_LABEL, "labels"
                           if key == "labels" else key, path)
        coarse = d.get("coarse_labels")
        if coarse is not None:
            coarse = _int_list(coarse, n, len(coarse_names) if coarse_names else _MAX_LABEL, "coarse_labels", path)
        filenames = d.get("filenames")
        if filenames is not None:
            if not isinstance(filenames, (list, tuple)):
                raise DatasetError(f"{path}: CIFAR filenames must be a list of {n} names, got a {type(filenames).__name__}")
            if len(filenames) != n:
                raise DatasetError(f"{path}: {len(filenames)} filenames for {n} images")
            if not all(isinstance(f, (bytes, str)) for f in filenames):
                raise DatasetError(f"{path}: CIFAR filenames must be text")
        batch_label = d.get("batch_label")
        if batch_label is not None and not isinstance(batch_label, (bytes, str)):
            raise DatasetError(f"{path}: CIFAR batch_label must be text, got a {type(batch_label).__name__}")
        self.path, self.data, self.labels, self.coarse, self.filenames = path, data, labels, coarse, filenames
        self.n = n


def _names(value: Any) -> list[str] | None:
    if isinstance(value, (list, tuple)) and value and all(isinstance(x, (bytes, str)) for x in value):
        return [_str(x) for x in value]
    return None


def _label_names(folder: Path) -> tuple[list[str] | None, list[str] | None]:
    """Class names from ``batches.meta`` / ``meta`` next to the batches; (None, None) if absent or unusable."""
    for name in _META_NAMES:
        p = folder / name
        if p.is_file():
            try:
                meta = _clean(safe_load(p), p)
            except DatasetError:
                return None, None
            return (_names(meta.get("label_names", meta.get("fine_label_names"))),
                    _names(meta.get("coarse_label_names")))
    return None, None


class CifarDataset(Dataset):
    __doc__ = __doc__
    kind = "cifar"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        if not self.path.exists():
            raise DatasetError(f"{self.path}: no such file or folder")
        if self.path.is_dir():
            self.files = _batch_files(self.path)
            if not self.files:
                raise DatasetError(
                    f"{self.path}: no CIFAR batch files (data_batch_N, test_batch, train, test) found"
                )
            folder = self.path
        else:
            self.files = [self.path]
            folder = self.path.parent
        self.label_names, self.coarse_names = _label_names(folder)
        self._counts: list[int] = []
        self._cache: _Batch | None = None  # the first batch (~30 MB), which every iteration starts with
        for f in self.files:
            batch = self._load(f)  # validates every batch now, so a bad one fails early
            self._counts.append(batch.n)
            if self._cache is None:
                self._cache = batch

    @property
    def length(self) -> int:
        return sum(self._counts)

    def describe(self) -> str:
        which = "CIFAR-100" if self.coarse_names or any(f.name in ("train", "test") for f in self.files) else "CIFAR-10"
        names = ", ".join(f.name for f in self.files)
        return f"{which} {self.path}: {self.length:,} images 32x32x3 from {names}"

    def _load(self, f: Path) -> _Batch:
        return _Batch(f, self.label_names, self.coarse_names)

    def _batch(self, f: Path) -> _Batch:
        if self._cache is not None and self._cache.path == f:
            return self._cache
        return self._load(f)

    def __iter__(self) -> Iterator[Record]:
        for f in self.files:
            b = self._batch(f)
            labels = b.labels
            step = 1000
            for lo in range(0, b.n, step):
                # channels-last for a slice at once, then one small copy per record
                block = np.ascontiguousarray(b.data[lo : lo + step].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
                for j in range(block.shape[0]):
                    yield self._record(b, f.name, lo + j, block[j].copy(), labels[lo + j])
            del b

    def _record(self, b: _Batch, batch: str, i: int, image: np.ndarray, label: int) -> Record:
        meta: dict[str, Any] = {}
        if b.filenames is not None:
            meta["filename"] = _str(b.filenames[i])
        meta["batch"] = batch
        if self.label_names is not None and 0 <= label < len(self.label_names):
            meta["label_name"] = self.label_names[label]
        if b.coarse is not None:
            c = b.coarse[i]
            meta["coarse_label"] = c
            if self.coarse_names is not None and 0 <= c < len(self.coarse_names):
                meta["coarse_label_name"] = self.coarse_names[c]
        return Record(image, label, meta)
