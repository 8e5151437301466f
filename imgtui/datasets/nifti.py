"""NIfTI volumes (``.nii``, ``.nii.gz``) as a dataset; needs the optional ``nibabel`` package
(``pip install 'imgtui[nifti]'``).

A source is one NIfTI file or a folder of them (files in sub-folders take the sub-folder's name as
their label, files at the top label 0). Each 3-D volume is **one 3-D record** of shape K x I x J:
slice ``k`` of the record (``record.image[k]``) is ``data[:, :, k]`` exactly as nibabel returns the
stored array (array axes i, j; no reorientation, no resampling); a volume whose J axis is 1, 3 or
4 voxels long gets a trailing axis of 1 (K x I x J x 1), so it is never taken for an image with
channels. A 4-D series gives one record per volume. With ``--slices`` (or ``PATH:slices=yes``)
each slice is a record instead (``data[:, :, k]``; for 4-D, the slices of each volume in turn).
A 2-D image (or a volume of one slice) is one 2-D record either way.

Voxels are the stored values (``scl_slope``/``scl_inter`` are not applied; they are in the
metadata). Voxels keep their type: uint8, uint16, int8/int16 (CT), int32, uint32, float32/float64
(PET, MRI maps) are record dtypes; a type records cannot hold (int64, ...) is refused in one line.

Metadata of each record: ``file``; ``slices`` (and ``slice`` with ``--slices``); ``volume`` and
``volumes`` for 4-D; ``axes`` for a 3-D record (how its axes map to the file's array),
``spacing`` (the voxel sizes from the header, mm), ``affine`` (the 4x4 voxel-to-world matrix as
nested lists), ``dtype`` (the stored voxel type), ``scl_slope``/``scl_inter`` when set.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..errors import DatasetError
from ..records import Record
from .base import Dataset, WarnFn

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti_name(name: str) -> bool:
    return name.lower().endswith(NIFTI_SUFFIXES)


def find_nifti_files(root: Path, limit: int | None = None) -> list[Path]:
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and is_nifti_name(name):
                out.append(Path(dirpath, name))
                if limit is not None and len(out) >= limit:
                    return out
    return out


def _require_nibabel():
    try:
        import nibabel  # noqa: F401
    except ImportError:
        raise DatasetError(
            "reading NIfTI needs nibabel: install it with  python -m pip install 'imgtui[nifti]'"
        ) from None
    import nibabel

    return nibabel


def _record_dtypes() -> tuple[np.dtype, ...]:
    from .. import records

    return tuple(np.dtype(d) for d in getattr(records, "SUPPORTED_DTYPES", (np.uint8, np.uint16)))


def _finite_or_none(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None


class NiftiDataset(Dataset):
    __doc__ = __doc__
    kind = "nifti"

    def __init__(self, path: str | Path, slices: bool = False, on_error: str = "stop",
                 warn: WarnFn | None = None) -> None:
        nib = _require_nibabel()
        self.root = Path(path).expanduser()
        self.slices = bool(slices)
        self.on_error = on_error
        self.warn = warn
        if not self.root.exists():
            raise DatasetError(f"{self.root}: no such file or folder")
        files = [self.root] if self.root.is_file() else find_nifti_files(self.root)
        if not files:
            raise DatasetError(f"{self.root}: no NIfTI files (.nii, .nii.gz) found")
        self.files = files
        #: per file: (relative name, label, header shape, stored dtype, header metadata)
        self._heads: list[tuple[str, Any, tuple[int, ...], np.dtype, dict]] = []
        self._entries: list[tuple[int, int, int]] = []  # (file index, volume, slice)
        self._paths: list[Path] = []
        for path_ in files:
            rel = path_.name if self.root.is_file() else path_.relative_to(self.root).as_posix()
            label: Any = rel.split("/", 1)[0] if "/" in rel else 0
            try:
                img = nib.load(str(path_))  # the header only; voxels are read when iterating
                shape = tuple(int(s) for s in img.shape)
                dtype = np.dtype(img.get_data_dtype())
                zooms = [float(z) for z in img.header.get_zooms()]
                affine = np.asarray(img.affine, dtype=float)
                slope, inter = (img.header.get_slope_inter() if hasattr(img.header, "get_slope_inter") else (None, None))
            except DatasetError:
                raise
            except Exception as exc:
                msg = f"{path_}: not a readable NIfTI file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
                if on_error == "skip":
                    self._notify(f"skipped {msg}")
                    continue
                raise DatasetError(msg) from None
            meta: dict[str, Any] = {"file": rel, "spacing": zooms,
                                    "affine": [[float(v) for v in row] for row in affine.tolist()],
                                    "dtype": str(dtype)}
            for key, v in (("scl_slope", slope), ("scl_inter", inter)):
                v = _finite_or_none(v)
                if v is not None and not (key == "scl_slope" and v == 1.0) and not (key == "scl_inter" and v == 0.0):
                    meta[key] = v
            if len(shape) < 2 or len(shape) > 4:
                raise DatasetError(f"{path_}: a {len(shape)}-D NIfTI image ({'x'.join(map(str, shape))}); imgtui reads 2-D, 3-D and 4-D")
            if len(shape) == 4 and shape[3] == 1:
                shape = shape[:3]
            if len(shape) == 3 and shape[2] == 1 and not self.slices:
                shape = shape[:2]
            self._check_dtype(dtype, path_)
            k = len(self._heads)
            self._heads.append((rel, label, shape, dtype, meta))
            self._paths.append(path_)
            vols = shape[3] if len(shape) == 4 else 1
            if len(shape) == 2:
                self._entries.append((k, -1, -1))
            elif not self.slices:  # one 3-D record per volume (z = -1: the whole volume)
                self._entries.extend((k, t, -1) for t in range(vols))
            else:
                self._entries.extend((k, t, z) for t in range(vols) for z in range(shape[2]))

    def _notify(self, msg: str) -> None:
        if self.warn is not None:
            self.warn(msg)
        else:
            import warnings

            warnings.warn(msg, RuntimeWarning, stacklevel=3)

    def _check_dtype(self, dtype: np.dtype, path: Path) -> None:
        ok = _record_dtypes()
        native = dtype.newbyteorder("=")
        if native in ok or (native.kind == "i" and native.itemsize <= 2):
            return
        raise DatasetError(
            f"{path}: {native} voxels are not supported by this imgtui (records hold {', '.join(str(d) for d in ok)})"
        )

    @property
    def length(self) -> int:
        return len(self._entries)

    def describe(self) -> str:
        vols = len(self._heads)
        what = "one record per slice" if self.slices else "one 3-D record per volume"
        return f"NIfTI {self.root}: {len(self._entries):,} records from {vols:,} file(s), {what}"

    def _pixels(self, a: np.ndarray) -> tuple[np.ndarray, int]:
        """Stored voxels as a record can hold them: as they are, or signed shifted to unsigned."""
        a = a.astype(a.dtype.newbyteorder("="), copy=False)
        if a.dtype in _record_dtypes():
            return np.ascontiguousarray(a), 0
        if a.dtype.kind == "i" and a.dtype.itemsize == 1:
            return (a.astype(np.int16) + 128).astype(np.uint8), -128
        if a.dtype.kind == "i" and a.dtype.itemsize == 2:
            return (a.astype(np.int32) + 32768).astype(np.uint16), -32768
        raise DatasetError(f"{a.dtype} voxels are not supported")  # pragma: no cover - checked at open

    def _read_volume(self, k: int) -> np.ndarray:
        nib = _require_nibabel()
        path = self._paths[k]
        try:
            img = nib.load(str(path))
            return np.asarray(img.dataobj.get_unscaled() if hasattr(img.dataobj, "get_unscaled") else img.dataobj)
        except Exception as exc:
            raise DatasetError(f"{path}: cannot read the voxels ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None

    def __iter__(self) -> Iterator[Record]:
        return self.records_at(range(len(self._entries)))

    def records_at(self, indices) -> Iterator[Record]:
        cache: tuple[int, np.ndarray] | None = None
        for i in sorted(set(indices)):
            k, t, z = self._entries[i]
            rel, label, shape, _dtype, meta = self._heads[k]
            if cache is None or cache[0] != k:
                try:
                    cache = (k, self._read_volume(k))
                except DatasetError as exc:
                    if self.on_error == "skip":
                        self._notify(f"skipped {exc}")
                        continue
                    raise
            vol = cache[1]
            if vol.ndim == 4 and vol.shape[3] == 1:
                vol = vol[..., 0]
            md = dict(meta)
            if t < 0:
                img = vol.reshape(vol.shape[:2])
            elif z < 0:  # the whole volume: K x I x J, slice k = data[:, :, k]
                img = np.moveaxis(vol[:, :, :, t] if vol.ndim == 4 else vol, 2, 0)
                if img.shape[-1] in (1, 3, 4):  # J of 1, 3 or 4: an axis of 1 keeps it a volume
                    img = img[..., None]
                md["slices"] = shape[2]
                md["axes"] = "record[k] = data[:, :, k]" + (f", volume {t}" if len(shape) == 4 else "")
                if len(shape) == 4:
                    md["volume"], md["volumes"] = t, shape[3]
            else:
                img = vol[:, :, z, t] if vol.ndim == 4 else vol[:, :, z]
                md["slice"], md["slices"] = z, shape[2]
                if len(shape) == 4:
                    md["volume"], md["volumes"] = t, shape[3]
            pixels, offset = self._pixels(img)
            if offset:
                md["stored_offset"] = offset
            yield Record(pixels, label, md)
