"""What the browser and the compare view show about a store and its records, read in worker
threads (no widgets here): open any store, one record as a ``RecordView``, the store's info line,
the record panel, the sibling stores of the same dataset, and a record written out for a viewer.

Both screens import from here, so neither imports the other's module for these.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Group
from rich.pretty import Pretty
from rich.text import Text

from ..backends import detect_backend, open_store, registry
from ..backends.article import article_text
from ..bench.backend_info import names as backend_names
from ..errors import ImgtuiError, first_line
from ..png import encode_png
from ..tiff import TIFF_DTYPES, encode_tiff, encode_tiff_pages
from ..records import checksum, is_volume, shape_text as shape_name
from .widgets.record_list import RowDetails

def write_viewable(image: np.ndarray, index: int) -> Path:
    """The record as a file an image viewer opens, as the disk backend writes it: PNG for 8/16-bit
    pixels (lossless; bool as 0/255), TIFF for int8/int16/uint32/int32/float32/float64 (exact), else
    .npy."""
    folder = Path(tempfile.mkdtemp(prefix="imgtui-view-"))
    if is_volume(image.shape):
        path = folder / f"record-{index}.tif"  # a stack: one page per slice, as the disk backend writes it
        path.write_bytes(encode_tiff_pages(image.view(np.uint8) * np.uint8(255) if image.dtype == np.bool_ else image, 1))
        return path
    if image.ndim == 2 or (image.ndim == 3 and image.shape[-1] in (1, 3, 4)):
        if image.dtype in (np.uint8, np.uint16, np.bool_):
            path = folder / f"record-{index}.png"
            path.write_bytes(encode_png(image.view(np.uint8) * np.uint8(255) if image.dtype == np.bool_ else image))
            return path
        if image.dtype in TIFF_DTYPES:
            path = folder / f"record-{index}.tif"
            path.write_bytes(encode_tiff(image, 1))
            return path
    path = folder / f"record-{index}.npy"
    np.save(path, image)
    return path


def start_viewer(path: Path) -> None:
    """``$IMGTUI_VIEWER FILE``, else xdg-open (Linux) or open (macOS); detached from the app."""
    command = os.environ.get("IMGTUI_VIEWER")
    argv = shlex.split(command) if command else None
    if argv is None:
        for opener in ("xdg-open", "open"):
            if shutil.which(opener):
                argv = [opener]
                break
    if not argv:
        raise ImgtuiError(f"no image viewer found: set IMGTUI_VIEWER (the record is saved as {path})")
    try:
        subprocess.Popen([*argv, str(path)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError as exc:
        raise ImgtuiError(f"cannot start the viewer {argv[0]}: {one_line(exc)} (the record is saved as {path})") from None


# -- store helpers (no widgets: safe in worker threads) -------------------------------------
one_line = first_line  # (compare.py imports it from here)


def open_any_store(path: str) -> Any:
    """Open an imgtui store, or an article-format store when ``imgtui.backends.article`` exists.

    Raises ImgtuiError with a one-line message for anything that cannot be opened.
    """
    try:
        return open_store(path)
    except ImgtuiError as exc:
        first: Exception = exc
    except Exception as exc:  # a library error from a corrupt file (lmdb.Error, OSError, ...)
        first = ImgtuiError(f"{path}: cannot open store ({one_line(exc)})")
    reader = _open_article(path)
    if reader is None:
        raise first
    return reader


def _open_article(path: str) -> Any | None:
    """A reader for a store in the Real Python article's layout, or None when it is not one."""
    try:
        from ..backends import article
    except ImportError:  # the article module is optional
        return None
    if not Path(path).exists():
        return None
    try:
        if not article.detect_article(path):
            return None
        return article.open_article(path)
    except ImgtuiError:
        raise
    except Exception as exc:
        raise ImgtuiError(f"{path}: cannot open article-format store ({one_line(exc)})") from None


def shape_text(image: np.ndarray) -> str:
    """``32x32x3``; ``3D 30x64x64`` for a 3-D record (short enough for the record list's column;
    the record panel says ``volume``)."""
    text = shape_name(image.shape)
    return "3D " + text[len("volume "):] if text.startswith("volume ") else text


@dataclass
class RecordView:
    """What the UI shows about one record (built in a worker)."""

    index: int
    details: RowDetails
    label: Any = None
    metadata: dict = field(default_factory=dict)
    error: str | None = None
    stored_checksum: int | None = None
    actual_checksum: int | None = None
    text: Text | None = None
    image: np.ndarray | None = None
    #: the image for a terminal graphics protocol (Kitty/Sixel), 8-bit RGB at full size
    rgb: np.ndarray | None = None
    #: the image as lines of Segments (``imaging.thumbnail_lines``), drawn without Rich Text
    lines: list | None = None
    #: a 3-D record: its number of slices and the one shown (0, 0 for an image)
    depth: int = 0
    slice: int = 0


def read_record_view(reader: Any, index: int, path: str = "") -> RecordView:
    """Read record ``index`` and check its pixels against the stored checksum; never raises."""
    try:
        rec = reader[index]
    except Exception as exc:
        where = f"{path}: " if path else ""
        msg = one_line(exc)
        if f"record {index}" not in msg:
            msg = f"{where}record {index} cannot be read: {msg}"
        return RecordView(index, RowDetails("?", "?", "unreadable"), error=msg)
    stored = getattr(reader, "_stored_checksum", None)
    try:
        want = stored(index) if stored is not None else None
    except Exception:
        want = None
    got = checksum(rec.image)
    status = "none" if want is None else ("ok" if int(want) == got else "BAD")
    details = RowDetails(shape_text(rec.image), str(rec.image.dtype), status)
    return RecordView(
        index, details, rec.label, dict(rec.metadata or {}), None, want, got, None, rec.image
    )


def store_info(reader: Any, path: str) -> dict:
    try:
        info = dict(reader.info())
    except Exception:
        info = {}
    info.setdefault("path", path)
    info.setdefault("backend", getattr(reader, "backend", "") or type(reader).__name__)
    info.setdefault("count", len(reader))
    if "recipe" not in info:
        if info["backend"] in registry.BACKENDS:
            try:
                info["recipe"] = registry.get_backend(info["backend"]).recipe()
            except (ImgtuiError, ImportError):  # its optional package is gone: the store is shown without it
                pass
    return info


def info_text(info: dict) -> Text:
    """About a store: backend and path; count, shapes, dtypes, size, options; how to read it
    without imgtui (one line each)."""
    text = Text()
    if info.get("article"):  # a store written the classic article's way: read-only, no checksums
        text.append(f"{article_text(str(info.get('backend')))} ", style="bold")
    else:
        text.append(f"{info.get('backend', '?')} store ", style="bold")
    text.append(str(info.get("path", "")))
    parts = [f"{int(info.get('count') or 0):,} records" + (", no checksums" if info.get("article") else "")]
    shapes = info.get("shapes") or {}
    if shapes:
        names = list(shapes)[:3]
        parts.append("shapes " + ", ".join(map(shape_name, names)) + (" …" if len(shapes) > 3 else ""))
    dtypes = info.get("dtypes") or {}
    if dtypes:
        parts.append("/".join(dtypes))
    size = info.get("bytes_on_disk")
    if isinstance(size, (int, float)):
        parts.append(f"{size / 1e6:,.1f} MB on disk")
    options = info.get("options") or {}
    if options:
        parts.append("options " + ", ".join(f"{k}={v}" for k, v in options.items()))
    text.append("\n" + " · ".join(parts))
    if info.get("recipe"):
        text.append("\nread without imgtui: " + str(info["recipe"]), style="dim")
    text.no_wrap = True
    text.overflow = "ellipsis"
    return text


def slice_bar(index: int, depth: int, width: int = 12) -> str:
    """A slider of ``width`` cells with a knob where slice ``index`` of ``depth`` lies."""
    knob = 0 if depth <= 1 else round(index * (width - 1) / (depth - 1))
    return "━" * knob + "●" + "━" * (width - 1 - knob)


def record_panel(view: RecordView) -> Group:
    """Label, shape, dtype, checksum and metadata of one record, for a Static."""
    head = Text()
    head.append(f"record {view.index}\n", style="bold")
    if view.error:
        head.append(view.error, style="bold red")
        return Group(head)
    head.append("label     ")
    head.append(f"{view.label!r}\n", style="bold")
    shape = view.details.shape
    shape = "volume " + shape[3:] if shape.startswith("3D ") else shape
    head.append(f"shape     {shape}\ndtype     {view.details.dtype}\n")
    if view.depth:
        head.append("slice     ")
        head.append(f"{view.slice + 1}/{view.depth} ", style="bold")
        head.append(slice_bar(view.slice, view.depth) + " [ ] {}\n")  # keys: one slice, ten
    head.append("checksum  ")
    if view.details.status == "ok":
        head.append(f"ok ({view.actual_checksum:08x})", style="green")
    elif view.details.status == "BAD":
        head.append(
            f"MISMATCH stored {view.stored_checksum:08x}, pixels {view.actual_checksum:08x}",
            style="bold red",
        )
    else:
        head.append(f"not stored (pixels {view.actual_checksum:08x})", style="dim")
    if not view.metadata:
        head.append("\nmetadata  {}")
        return Group(head)
    head.append("\nmetadata")
    return Group(head, Pretty(view.metadata, max_length=20, max_string=200))


def find_sibling_stores(path: str) -> list[str]:
    """Stores next to ``path`` with the same base name (``x.disk``, ``x.lmdb``, ``x.h5``, ...: any
    store ``detect_backend`` recognises)."""
    p = Path(path).resolve()
    stem = p.name.split(".")[0]
    if not stem or not p.parent.is_dir():
        return [str(path)]
    found = [str(p)]
    try:
        candidates = sorted(p.parent.iterdir())
    except OSError:
        return found
    for c in candidates:
        if c == p or c.name.split(".")[0] != stem or ".imgtui-" in c.name:
            continue
        try:
            detect_backend(c)
        except Exception:
            continue
        found.append(str(c))
    return found[:max(3, len(backend_names()))]  # one per backend (compare shows them side by side)


