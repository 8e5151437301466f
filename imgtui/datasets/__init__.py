"""Dataset sources and ``open_dataset(spec)``, which turns a user's string into one.

Specs:
- ``synthetic`` or ``synthetic:count=1000,size=32,variable=16-64,channels=3,bits=16,seed=0,labels=10``
  (``dtype=float32`` etc. for any record dtype instead of ``bits``)
- ``medical`` (``medical:count=N,...``): 2,000 synthetic 16-bit grayscale scans of 256-768 px
- a folder of images (class sub-folders, or flat plus labels.csv), optionally with folder options:
  ``photos:max_pixels=200000000,follow_symlinks=yes`` (``max_pixels``: refuse images with more
  pixels, checked from the file's header before decoding, 0 = no limit, default Pillow's
  ``MAX_IMAGE_PIXELS``; ``follow_symlinks``: read image files linked from outside the folder and
  enter symlinked folders; ``exif_rotate``: apply the EXIF orientation, default pixels as stored)
- CIFAR-10/100 python batch files (a batch file, or the folder holding them)
- ``.npz`` / ``.npy`` arrays (``name.npz``, optionally ``name.npz:train``)
- an existing imgtui store (disk, LMDB or HDF5)
- a store written the classic article's way (LMDB of pickled ``CIFAR_Image``, HDF5 with
  ``images``/``meta``, folder of ``N.png`` + ``N.csv``), detected automatically, read-only
- a folder of DICOM files, or ``dicom:PATH`` (needs the ``imgtui[dicom]`` extra)
- a NIfTI file (``.nii``, ``.nii.gz``) or a folder of them, or ``nifti:PATH`` (needs the
  ``imgtui[nifti]`` extra); ``slices=True`` (``--slices``, ``PATH:slices=yes``): one record per slice
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..errors import DatasetError
from .base import Dataset
from .synthetic import SyntheticDataset
from ..backends.remote import is_url

__all__ = ["Dataset", "Notice", "SyntheticDataset", "open_dataset", "parse_synthetic_spec"]


class Notice(str):
    """A warning about a source as a whole, not about one skipped file (e.g. the symlinks a folder
    did not follow): it goes through ``warn`` like the others; the CLI prints it at the end."""


_SYNTH_KEYS = {"count", "size", "variable", "channels", "bits", "seed", "labels", "dtype"}
#: the "medical" scenario: scan-like 16-bit grayscale images of varying size (median about 512x512)
MEDICAL_DEFAULTS: dict[str, Any] = {"count": 2000, "variable": (256, 768), "channels": 1, "bits": 16, "num_labels": 2}


def parse_synthetic_spec(spec: str) -> dict[str, Any]:
    """``synthetic:count=10,size=64x48,variable=16-64`` -> SyntheticDataset keyword arguments."""
    _, _, rest = spec.partition(":")
    kwargs: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = part.partition("=")
        key = key.strip().lower()
        if not eq or key not in _SYNTH_KEYS:
            raise DatasetError(
                f"bad synthetic option {part!r} (use {', '.join(sorted(_SYNTH_KEYS))}, e.g. count=1000)"
            )
        try:
            if key == "size":
                h, _, w = value.lower().partition("x")
                kwargs["size"] = (int(h), int(w or h))
            elif key == "variable":
                lo, _, hi = value.partition("-")
                kwargs["variable"] = (int(lo), int(hi or lo))
            elif key == "dtype":
                kwargs["dtype"] = value.strip().lower()
            elif key == "labels":
                kwargs["num_labels"] = int(value)
            else:
                kwargs[key] = int(value.replace("_", ""))
        except ValueError:
            raise DatasetError(f"bad value in synthetic option {part!r}") from None
    return kwargs


#: options of image folders (``FolderDataset``), as keywords or at the end of a folder spec
FOLDER_OPTIONS = ("max_pixels", "follow_symlinks", "exif_rotate")
_TRUE = {"1", "yes", "true", "on", ""}
_FALSE = {"0", "no", "false", "off"}


def parse_folder_options(text: str) -> dict[str, Any] | None:
    """``max_pixels=N,follow_symlinks=yes`` -> {"max_pixels": N, "follow_symlinks": True}; None when
    ``text`` is not a list of folder options (e.g. the array name in ``x.npz:train``)."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts or any(p.partition("=")[0].strip().lower() not in FOLDER_OPTIONS for p in parts):
        return None
    out: dict[str, Any] = {}
    for part in parts:
        key, _eq, value = part.partition("=")
        key, value = key.strip().lower(), value.strip().lower()
        if key == "max_pixels":
            try:
                out[key] = int(value.replace("_", ""))
            except ValueError:
                raise DatasetError(f"bad folder option {part!r} (max_pixels=N, a number of pixels; 0 = no limit)") from None
        elif value in _TRUE or value in _FALSE:
            out[key] = value in _TRUE
        else:
            raise DatasetError(f"bad folder option {part!r} ({key}=yes or no)")
    return out


def open_dataset(
    spec: str | Path | None = None,
    *,
    on_error: str = "stop",
    warn: Callable[[str], None] | None = None,
    series: bool = False,
    **options: Any,
) -> Dataset:
    """Turn a dataset spec (see module doc) into a Dataset; one-line DatasetError when it cannot.
    ``series`` (``--series``): a DICOM folder gives one 3-D record per series; an error for any
    other kind of source."""
    ds = _open_dataset(spec, on_error=on_error, warn=warn, series=bool(series), **options)
    if series and getattr(ds, "kind", "") != "dicom":
        raise DatasetError("--series applies to DICOM folders only")
    return ds


def _open_dataset(
    spec: str | Path | None = None,
    *,
    on_error: str = "stop",
    warn: Callable[[str], None] | None = None,
    series: bool = False,
    **options: Any,
) -> Dataset:
    """Turn a dataset spec (see module doc) into a Dataset; one-line DatasetError when it cannot.

    ``on_error`` ("stop" or "skip") and ``warn`` apply to image folders (corrupt files).
    ``max_pixels`` and ``follow_symlinks`` (keywords, or at the end of the spec) apply to image
    folders only: None / False mean the defaults; given for another kind of source, they are an error.
    """
    if is_url(spec):  # a store at a URL (s3://, gs://, https://, file://): read in place or through the local cache
        from .store import StoreDataset

        return StoreDataset(str(spec), on_error=on_error, warn=warn)
    slices = bool(options.pop("slices", False))
    folder_opts = {k: options.pop(k) for k in FOLDER_OPTIONS if k in options}
    folder_opts = {k: v for k, v in folder_opts.items() if v is not None and v is not False}
    if spec is None or str(spec).strip() == "" or str(spec).startswith(("synthetic", "medical")):
        _not_for(folder_opts, "generated datasets")
        if slices:
            raise DatasetError("--slices applies to NIfTI volumes (.nii, .nii.gz) only")
    if spec is None or str(spec).strip() == "" or str(spec).startswith("synthetic"):
        kwargs = parse_synthetic_spec(str(spec or "synthetic"))
        kwargs.update(options)
        return SyntheticDataset(**kwargs)
    if str(spec) == "medical" or str(spec).startswith("medical:"):
        kwargs = dict(MEDICAL_DEFAULTS)
        kwargs.update(parse_synthetic_spec(str(spec)))
        kwargs.update(options)
        return SyntheticDataset(**kwargs)
    text = str(spec)
    if ":" in text and not Path(text).exists() and text.rpartition(":")[2].strip().lower() in ("slices", "slices=yes"):
        text, slices = text.rpartition(":")[0], True  # a NIfTI volume's option: x.nii.gz:slices=yes
    if ":" in text and not Path(text).exists():
        head, _, tail = text.rpartition(":")
        parsed = parse_folder_options(tail)
        if parsed is not None and head:
            text = head
            folder_opts = {k: v for k, v in {**parsed, **folder_opts}.items() if v is not False}  # keywords win
    from .nifti import find_nifti_files, is_nifti_name

    nifti_path = Path(text[len("nifti:"):] if text.startswith("nifti:") else text).expanduser()
    if text.startswith("nifti:") or (nifti_path.is_file() and is_nifti_name(nifti_path.name)) or (
        nifti_path.is_dir() and _only_nifti(nifti_path, find_nifti_files)
    ):
        from .nifti import NiftiDataset

        _not_for(folder_opts, "NIfTI volumes")
        return NiftiDataset(nifti_path, slices=slices, on_error=on_error, warn=warn, **options)
    if slices:
        raise DatasetError("--slices applies to NIfTI volumes (.nii, .nii.gz) only")
    if text.startswith("dicom:"):
        from .dicom import DicomDataset

        _not_for(folder_opts, "DICOM files")
        return DicomDataset(text[len("dicom:"):], on_error=on_error, warn=warn, series=series, **options)
    key = None
    if ":" in text and not Path(text).exists():
        text, _, key = text.rpartition(":")
    path = Path(text).expanduser()
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    _check_readable(path)  # before any detection trips over a file inside it
    suffix = path.suffix.lower()
    if suffix in (".npz", ".npy"):
        from .npz import NpzDataset

        _not_for(folder_opts, f"{path.name} (arrays)")
        return NpzDataset(path, key=key, **options)
    from .cifar import is_cifar_batch, is_cifar_dir

    if (path.is_file() and is_cifar_batch(path)) or (path.is_dir() and is_cifar_dir(path)):
        from .cifar import CifarDataset

        _not_for(folder_opts, f"{path} (CIFAR batches)")
        return CifarDataset(path, **options)
    from ..backends import article_kind, detect_backend
    from ..errors import ImgtuiError

    if article_kind(path):  # the classic article's LMDB, HDF5 or PNG+CSV folder: read-only source
        from .store import StoreDataset

        _not_for(folder_opts, f"{path} (a store in the classic article's layout)")
        return StoreDataset(path, on_error=on_error, warn=warn)
    try:
        detect_backend(path)
        is_store = True
    except (ImgtuiError, ImportError):  # a backend whose library is missing cannot hold it
        is_store = False
    if is_store:
        from .store import StoreDataset

        _not_for(folder_opts, f"{path} (an imgtui store)")
        return StoreDataset(path, on_error=on_error, warn=warn)
    from .dicom import find_dicom_files, is_dicom_file

    image_suffixes = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
    try:
        dicom = (path.is_file() and is_dicom_file(path)) or (path.is_dir() and bool(find_dicom_files(path, limit=1)))
        dicom = dicom and (path.is_file() or not any(p.suffix.lower() in image_suffixes for p in path.rglob("*")))
    except RecursionError:  # Python 3.11 walks folders recursively
        raise DatasetError(f"{path}: folders nested too deeply to list (hundreds of levels)") from None
    if dicom:
        from .dicom import DicomDataset

        _not_for(folder_opts, f"{path} (DICOM files)")
        return DicomDataset(path, on_error=on_error, warn=warn, series=series, **options)
    if path.is_dir():
        from .folder import FolderDataset

        return FolderDataset(path, on_error=on_error, warn=warn, **folder_opts, **options)
    raise DatasetError(
        f"{path}: not a dataset imgtui can read (expected an image folder, CIFAR batches, .npz/.npy or a store)"
    )


def _only_nifti(path: Path, find) -> bool:
    """A folder holding NIfTI files and no image files."""
    from .folder import is_image_file

    try:
        if not find(path, limit=1):
            return False
        return not any(is_image_file(p.name) for p in path.rglob("*") if p.is_file())
    except (OSError, RecursionError):
        return False


def _not_for(opts: dict, what: str) -> None:
    """Folder options given for a source that is not an image folder: an error, not ignored."""
    if not opts:
        return
    names = " and ".join(f"--{k.replace('_', '-')}" for k in opts)
    raise DatasetError(f"{names} appl{'y' if len(opts) > 1 else 'ies'} to image folders only, not to {what}")


def _check_readable(path: Path) -> None:
    """A one-line DatasetError for a source this process may not read (not a detector's
    "manifest.json: Permission denied")."""
    import os

    try:
        if path.is_dir():
            with os.scandir(path) as it:
                next(it, None)
        else:
            import stat

            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a named pipe must not hang
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise DatasetError(f"{path}: not a regular file (a named pipe, device or socket)")
            finally:
                os.close(fd)
    except PermissionError:
        what = "cannot list the folder" if path.is_dir() else "cannot read the file"
        raise DatasetError(f"{path}: permission denied ({what})") from None
    except IsADirectoryError:
        pass
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc.strerror or exc})") from None
