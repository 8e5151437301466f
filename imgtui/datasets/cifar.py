"""CIFAR-10 / CIFAR-100 "python version" batch files, read with a restricted (safe) unpickler.

``CifarDataset(path)``: ``path`` is one batch file (``data_batch_1`` .. ``data_batch_5``,
``test_batch``; CIFAR-100 ``train`` / ``test``) or a folder holding them (``cifar-10-batches-py``,
``cifar-100-python``). Folder order: ``data_batch_1..N`` (numeric), ``test_batch``, ``train``,
``test``.

The files are pickles of dicts with bytes keys; they are loaded by ``SafeUnpickler``, which only
resolves numpy's array reconstruction pieces (``_reconstruct``, ``_frombuffer``, ``ndarray``,
``dtype``, and ``codecs.encode`` used by some py2->py3 pickles)
and refuses any other global with ``DatasetError("refusing to unpickle module.name from file")``,
so a malicious file cannot run code.

Records: image ``32x32x3`` uint8 (``data`` row reshaped ``(3, 32, 32)`` then channels last), label
``int`` (``labels`` or CIFAR-100 ``fine_labels``), metadata ``{"filename", "batch"}`` plus
``"label_name"`` when ``batches.meta`` / ``meta`` is next to the batch file, and
``"coarse_label"`` (+ ``"coarse_label_name"``) for CIFAR-100.

Each batch is a single ~30 MB pickle; the first batch stays cached and one more is held while
iterating. ``length`` is
known after opening: every batch is loaded (and validated) once at construction.
"""

from __future__ import annotations

import io
import pickle
import re
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..errors import DatasetError
from ..records import Record
from .base import Dataset

_BATCH_RE = re.compile(r"^(data_batch_\d+|test_batch|train|test)$")
_META_NAMES = ("batches.meta", "meta")


def _allowed() -> dict[tuple[str, str], Any]:
    import codecs

    try:
        from numpy._core.multiarray import _reconstruct as rec
        from numpy._core.numeric import _frombuffer as frombuf
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct as rec  # type: ignore[no-redef]
        from numpy.core.numeric import _frombuffer as frombuf  # type: ignore[no-redef]
    return {
        ("numpy.core.multiarray", "_reconstruct"): rec,
        ("numpy._core.multiarray", "_reconstruct"): rec,
        # protocol-5 pickles of arrays (numpy >= 1.16)
        ("numpy.core.numeric", "_frombuffer"): frombuf,
        ("numpy._core.numeric", "_frombuffer"): frombuf,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("codecs", "encode"): codecs.encode,
        ("_codecs", "encode"): codecs.encode,
    }


class SafeUnpickler(pickle.Unpickler):
    """Unpickler that only builds plain data and numpy arrays."""

    def __init__(self, file: Any, source: str = "<pickle>") -> None:
        super().__init__(file, encoding="bytes")
        self.source = source
        self._allowed = _allowed()

    def find_class(self, module: str, name: str) -> Any:
        found = self._allowed.get((module, name))
        if found is None:
            raise DatasetError(f"refusing to unpickle {module}.{name} from {self.source}")
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise DatasetError(f"refusing to unpickle a persistent reference from {self.source}")


def safe_load(path: str | Path) -> Any:
    """Load a pickle file with SafeUnpickler; DatasetError (one line) for anything unexpected."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        return SafeUnpickler(io.BytesIO(data), str(path)).load()
    except DatasetError:
        raise
    except Exception as exc:  # UnpicklingError, EOFError, ValueError, TypeError, ...
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DatasetError(f"{path}: not a readable CIFAR batch file ({reason})") from None


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
    if not isinstance(d, dict):
        raise DatasetError(f"{path}: not a CIFAR batch (expected a dict, got {type(d).__name__})")
    return {_str(k): v for k, v in d.items()}


class _Batch:
    def __init__(self, path: Path) -> None:
        d = _clean(safe_load(path), path)
        data = d.get("data")
        if not isinstance(data, np.ndarray):
            raise DatasetError(f"{path}: not a CIFAR batch (no 'data' array)")
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise DatasetError(
                f"{path}: CIFAR 'data' must be N x 3072 uint8, got {'x'.join(map(str, data.shape))} {data.dtype}"
            )
        n = data.shape[0]
        labels = d.get("labels", d.get("fine_labels"))
        if labels is None:
            raise DatasetError(f"{path}: CIFAR batch has no 'labels' or 'fine_labels'")
        labels = np.asarray(labels)
        if labels.shape != (n,) or labels.dtype.kind not in "iu":
            raise DatasetError(f"{path}: CIFAR labels must be {n} integers, got shape {labels.shape}")
        coarse = d.get("coarse_labels")
        if coarse is not None:
            coarse = np.asarray(coarse)
            if coarse.shape != (n,) or coarse.dtype.kind not in "iu":
                raise DatasetError(f"{path}: CIFAR coarse_labels must be {n} integers")
        filenames = d.get("filenames")
        if filenames is not None and len(filenames) != n:
            raise DatasetError(f"{path}: {len(filenames)} filenames for {n} images")
        self.path, self.data, self.labels, self.coarse, self.filenames = path, data, labels, coarse, filenames
        self.n = n


def _label_names(folder: Path) -> tuple[list[str] | None, list[str] | None]:
    for name in _META_NAMES:
        p = folder / name
        if p.is_file():
            try:
                meta = _clean(safe_load(p), p)
            except DatasetError:
                return None, None
            fine = meta.get("label_names", meta.get("fine_label_names"))
            coarse = meta.get("coarse_label_names")
            return ([_str(x) for x in fine] if fine is not None else None,
                    [_str(x) for x in coarse] if coarse is not None else None)
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
            batch = _Batch(f)  # validates every batch now, so a bad one fails early
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

    def _batch(self, f: Path) -> _Batch:
        if self._cache is not None and self._cache.path == f:
            return self._cache
        return _Batch(f)

    def __iter__(self) -> Iterator[Record]:
        for f in self.files:
            b = self._batch(f)
            labels = b.labels.tolist()
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
            c = int(b.coarse[i])
            meta["coarse_label"] = c
            if self.coarse_names is not None and 0 <= c < len(self.coarse_names):
                meta["coarse_label_name"] = self.coarse_names[c]
        return Record(image, label, meta)
