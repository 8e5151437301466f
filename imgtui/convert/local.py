"""Dataset -> store conversion and store -> PNG folder export: the cores of ``imgtui convert`` and
``imgtui export``, with progress and cancellation hooks and no UI code."""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path
from typing import Any, Callable

from ..datasets.base import Dataset
from ..errors import CancelledError, ImgtuiError, StoreExistsError, one_line  # noqa: F401 (convert.one_line)
from ..records import dumps_metadata, is_volume
from ..reports import ConvertReport
from ..backends import open_store, open_writer
from ..backends.base import path_size, remove_path

ProgressFn = Callable[[int, "int | None"], None]
CancelFn = Callable[[], bool]

#: how often (records) progress is reported
CHECK_EVERY = 256


def convert(
    dataset: Dataset,
    dest: str | os.PathLike,
    backend: str,
    *,
    overwrite: bool = False,
    options: dict[str, Any] | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    limit: int | None = None,
) -> ConvertReport:
    """Write every record of ``dataset`` into a new ``backend`` store at ``dest``.

    On any exception (including KeyboardInterrupt and cancellation) the new store is rolled back
    and an existing store at ``dest`` is left as it was.
    """
    check_source_dest(dataset, dest, overwrite=overwrite)
    total = dataset.length
    if limit is not None:
        total = limit if total is None else min(total, limit)
    t0 = time.perf_counter()
    with open_writer(dest, backend, overwrite=overwrite, expected_count=total, **(options or {})) as w:
        n = 0
        for rec in dataset:
            if limit is not None and n >= limit:
                break
            w.write(rec)
            n += 1
            if cancel is not None and cancel():  # every record: large images take long
                raise CancelledError(f"conversion to {dest} cancelled; nothing was written")
            if progress is not None and n % CHECK_EVERY == 0:
                progress(n, total)
        if progress is not None:
            progress(n, total)
    seconds = time.perf_counter() - t0
    return ConvertReport(count=n, seconds=seconds, path=str(dest), backend=backend, bytes_on_disk=path_size(dest))


# -- source and destination must not overlap ------------------------------------------------------
def source_paths(source: Any) -> list[Path]:
    """The files or folders a dataset (or a dataset spec string) reads from; [] for generated data."""
    if isinstance(source, Dataset):
        out = []
        for attr in ("root", "path", "labels_csv"):
            value = getattr(source, attr, None)
            if isinstance(value, (str, os.PathLike)):
                out.append(Path(value).expanduser())
        return out
    if source is None:
        return []
    text = str(source)
    if not text.strip() or text.startswith(("synthetic", "medical")):
        return []
    if text.startswith("dicom:"):
        text = text[len("dicom:"):]
    elif ":" in text and not Path(text).exists():
        text = text.rpartition(":")[0]  # name.npz:train
    return [Path(text).expanduser()]


def _real(path: str | os.PathLike) -> Path:
    """``path`` with symlinks resolved as far as it exists (``foo/`` and ``foo`` alike)."""
    return Path(os.path.realpath(os.path.abspath(os.path.expanduser(os.fspath(path)))))


def _same(a: Path, b: Path) -> bool:
    if a == b:
        return True
    try:
        return os.path.samefile(a, b)  # also bind mounts and other aliases realpath cannot see
    except OSError:
        return False


def _inside(child: Path, parent: Path) -> bool:
    return any(_same(p, parent) for p in child.parents)


def check_source_dest(source: Any, dest: str | os.PathLike, *, overwrite: bool, verb: str = "convert") -> None:
    """Refuse, before anything is touched, a destination that is the source, lies inside it, or
    (when ``overwrite`` would replace it) holds the source. One-line ``ImgtuiError``."""
    d = _real(dest)
    for src in source_paths(source):
        s = _real(src)
        if _same(s, d):
            to = "to" if verb == "append" else "into"
            raise ImgtuiError(f"cannot {verb} {src} {to} {dest}: they are the same path ({s}); choose another destination")
        if _inside(d, s):
            raise ImgtuiError(
                f"cannot {verb} into {dest}: it lies inside the source {src}, which would be changed while it is "
                "read; choose a destination outside it"
            )
        if overwrite and _inside(s, d) and (os.path.lexists(dest) or os.path.lexists(d)):
            fate = "would change while it is read" if verb == "append" else "would be deleted by replacing it"
            raise ImgtuiError(
                f"cannot {verb} into {dest}: the source {src} lies inside it and {fate}; choose another destination"
            )


def export_png(
    store: str | os.PathLike,
    dest: str | os.PathLike,
    *,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> ConvertReport:
    """Write every record of ``store`` as image files plus ``labels.csv`` (file,label,label_type,metadata,volume):
    PNG for uint8/uint16 (and bool, as 0/255), TIFF (imgtui.tiff) for int8, int16, uint32, int32,
    float32 and float64, a multi-page TIFF for a 3-D record (its shape in the ``volume`` column, so
    the importer reads its pages back as one record), as the disk backend writes them.

    The folder reads back with ``imgtui convert DEST ...`` (flat folder + labels.csv), bit-exact,
    except bool records, which come back as uint8 0/255 masks.
    Files go into sub-folders of 1,000 so no folder holds 100,000 files.
    """
    from ..backends.disk.store import encode_image, suffix_of

    dest = Path(dest)
    if dest.exists():
        if not overwrite:
            raise StoreExistsError(f"{dest} already exists; choose another folder or pass --overwrite")
        if any(dest.iterdir()):
            raise StoreExistsError(f"{dest} is not empty; export refuses to mix files into it")
    tmp = dest.with_name(f"{dest.name}.imgtui-tmp-{os.getpid()}")
    remove_path(tmp)
    tmp.mkdir(parents=False)
    t0 = time.perf_counter()
    n = 0
    try:
        with open_store(store) as reader, open(tmp / "labels.csv", "w", newline="", encoding="utf-8") as fh:
            total = len(reader)
            w = csv.writer(fh)
            w.writerow(["file", "label", "label_type", "metadata", "volume"])
            for batch in reader.iter_batches(256):
                for rec in batch:
                    rel = f"{n // 1000:03d}/{n:06d}{suffix_of(rec.image.dtype, rec.image.shape)}"
                    (tmp / rel).parent.mkdir(exist_ok=True)
                    (tmp / rel).write_bytes(encode_image(rec.image, 1))
                    kind = "int" if isinstance(rec.label, int) else "str"
                    vol = "x".join(map(str, rec.image.shape)) if is_volume(rec.image.shape) else ""
                    w.writerow([rel, rec.label, kind, dumps_metadata(rec.metadata), vol])
                    n += 1
                if cancel is not None and cancel():
                    raise CancelledError(f"export to {dest} cancelled; nothing was written")
                if progress is not None:
                    progress(n, total)
        if dest.exists():
            dest.rmdir()
        os.rename(tmp, dest)
    except BaseException:
        remove_path(tmp)
        raise
    return ConvertReport(count=n, seconds=time.perf_counter() - t0, path=str(dest))
