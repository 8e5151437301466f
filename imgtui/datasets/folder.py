"""A folder of image files (every format Pillow reads: PNG, JPEG, TIFF, BMP, WebP, GIF, JPEG 2000,
PPM/PGM, TGA, ...) as a dataset.

Which files are images: a file with an image extension (``IMAGE_EXTENSIONS``) is one (decoding
reports a damaged one); any other file is one when Pillow recognises its content from its header
(``sniff_image``: only formats with a signature, so a text file is never taken for a TGA). Every
other file is not imported and counted (``ignored``); ``skip_summary`` names every file not
imported in one line: "skipped 3 files: 2 .txt, 1 unreadable: a/x.jpg".

Multi-frame files (animated GIF, multi-page TIFF, animated WebP/APNG) become one record per frame,
with ``frame`` (0-based) and ``frames`` in the metadata; a GIF gives all its frames, each as Pillow
composes it (what a viewer shows at that frame, so a frame that changes only a part of the image
holds the whole picture). Frames are counted when the folder is listed (those files' headers are
read then).

Two layouts:

- **class sub-folders**: ``root/<label>/<file>`` (files may sit deeper inside a class folder).
  The label is the class folder's name as a ``str``.
- **flat folder plus labels.csv**: ``root/labels.csv`` with a header row ``file,label[,more...]``.
  ``file`` is the image's path relative to ``root`` (``/`` separators). Labels are ``int`` when
  *every* label in the column is an integer string (``"3"``, ``"-1"``), otherwise all are ``str``.
  Extra columns become metadata (``str`` values); a ``label_type`` column (int/str per row) and a
  ``metadata`` column (a JSON object), as ``imgtui export`` writes them, restore labels and
  metadata exactly. Every image under ``root`` needs exactly one row
  and every row must name an existing image, otherwise ``DatasetError``.

``labels_csv``: None (default) uses ``root/labels.csv`` when it exists (it then takes precedence
over folder names), True requires it, a path names another CSV file, False means "no labels".
A folder of images with no class sub-folders and no labels.csv is refused unless
``labels_csv=False`` ("unlabelled"): then every image under ``root`` gets label ``0``.

Pixels are returned as stored: the EXIF orientation is not applied unless ``exif_rotate=True``
(``--exif-rotate``), which turns them upright as ``PIL.ImageOps.exif_transpose`` does; the summary
says which. Modes: ``L`` -> HxW uint8,
``1`` -> HxW uint8 (0/255), ``RGB`` -> HxWx3, ``RGBA``/``LA``/``PA``/``P`` with transparency ->
HxWx4, ``P``/``CMYK``/``YCbCr``/... -> HxWx3, ``I;16*`` and ``I`` (16-bit grayscale PNG/TIFF) ->
HxW uint16 (lossless; ``I`` values outside 0..65535: int32); 16-bit RGB/RGBA PNG ->
HxWx3/4 uint16, 16-bit gray+alpha PNG -> HxWx4 uint16 (gray copied to R, G, B), uncompressed
16-bit RGB(A) TIFF -> HxWx3/4 uint16 (these are read directly: Pillow would reduce them to 8 bits;
interlaced 16-bit colour PNG and compressed 16-bit colour TIFF are refused rather than truncated).
Signed, 32-bit and float TIFFs (uncompressed or deflate, any channel count: what imgtui's disk
backend and export write) are read exactly by :mod:`imgtui.tiff` as int8/int16/uint32/int32/
float32/float64; other ``F`` images -> float32, ``I`` images outside 0..65535 -> int32.

Files that are not images are not imported and counted (``ignored``, shown by ``describe()`` and
``skip_summary``); hidden files and folders (``.name``) are skipped silently. Order is deterministic:
sorted paths for class folders, row order for labels.csv.

Bad images (corrupt, truncated, unreadable): ``on_error="stop"`` raises ``DatasetError`` naming the
file; ``on_error="skip"`` calls ``warn(message)`` (``warnings.warn`` when ``warn`` is None), skips
the file and counts it in ``skipped``. ``length`` is the number of image files found (at most
``limit``); a skipped file makes iteration yield one record fewer.

``workers``: threads decoding a batch ahead of the consumer (Pillow releases the GIL while
decoding); 0 decodes in the calling thread. The default (None) picks 0 for small files (mean size
of the first 32 below 16 KiB, e.g. CIFAR JPEGs, where threads measured slower) and up to 4
threads for larger ones.
"""

from __future__ import annotations

import csv
import json
import os
import re
import stat
import struct
import threading
import warnings
from collections import deque
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageFile

from ..errors import DatasetError
from ..records import Record, is_volume
from ..tiff import decode_tiff_pages
from . import Notice
from .base import Dataset, WarnFn

#: extensions read as images without looking inside first (lower case); a file with any other
#: extension is an image when Pillow recognises its content (``sniff_image``)
IMAGE_EXTENSIONS = frozenset({
    ".png", ".apng", ".jpg", ".jpeg", ".jpe", ".jfif", ".tif", ".tiff", ".bmp", ".dib", ".webp", ".gif",
    ".jp2", ".j2k", ".jpc", ".jpf", ".jpx", ".j2c", ".ppm", ".pgm", ".pbm", ".pnm", ".pfm", ".tga", ".icb",
    ".vda", ".vst", ".pcx", ".sgi", ".rgb", ".rgba", ".bw", ".qoi", ".avif", ".avifs", ".dds", ".psd",
    ".ras", ".xbm", ".xpm", ".ico", ".icns", ".cur", ".msp", ".blp", ".mpo",
})
#: extensions whose files may hold several frames (pages): each frame becomes a record
MULTI_FRAME_EXTENSIONS = frozenset({".gif", ".tif", ".tiff", ".webp", ".apng"})
#: the Pillow formats whose frames are records (a PSD's "frames" are layers, an MPO's a stereo pair,
#: an ICO's sizes: those give their main image)
_MULTI_FRAME_FORMATS = frozenset({"GIF", "TIFF", "WEBP", "PNG"})
#: formats Pillow identifies but that are not images imgtui can import (documents, video, stubs)
_NOT_IMAGES = frozenset({"EPS", "PDF", "MPEG", "BUFR", "GRIB", "HDF5", "WMF"})

#: the Pillow format tried first for each extension (any format is tried if that one fails)
_FORMAT_HINT = {".png": "PNG", ".apng": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG", ".jfif": "JPEG",
                ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP", ".dib": "DIB", ".webp": "WEBP", ".gif": "GIF",
                ".jp2": "JPEG2000", ".j2k": "JPEG2000", ".jpc": "JPEG2000", ".jpf": "JPEG2000", ".jpx": "JPEG2000",
                ".j2c": "JPEG2000", ".ppm": "PPM", ".pgm": "PPM", ".pbm": "PPM", ".pnm": "PPM", ".pfm": "PPM",
                ".tga": "TGA", ".icb": "TGA", ".vda": "TGA", ".vst": "TGA", ".pcx": "PCX", ".sgi": "SGI",
                ".rgb": "SGI", ".rgba": "SGI", ".bw": "SGI", ".qoi": "QOI"}
_INT_RE = re.compile(r"[+-]?\d+")
_FILE_COLUMNS = ("file", "filename", "path", "image")
_LABEL_COLUMNS = ("label",)
_BATCH = 64
#: mean file size from which decoding uses a thread pool by default
_THREAD_MIN_BYTES = 16 * 1024


def is_image_file(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


# -- pixel limits -----------------------------------------------------------------------------
_PNG_SIG = b"\x89PNG\r\n\x1a\n"


def default_max_pixels() -> int:
    """The pixel limit when none is given: Pillow's ``Image.MAX_IMAGE_PIXELS`` (89,478,485 unless
    changed; 0 = no limit when it was set to None)."""
    return int(Image.MAX_IMAGE_PIXELS or 0)


def check_max_pixels(value) -> int | None:
    """``max_pixels`` as given by a user: None (the default limit), 0 (no limit) or a positive int."""
    if value is None:
        return None
    try:
        if isinstance(value, bool) or float(value) != int(value):
            raise ValueError
        n = int(value)
    except (TypeError, ValueError, OverflowError):
        n = -1
    if n < 0:
        raise DatasetError(f"max_pixels must be a whole number of pixels (0 = no limit), got {value!r}")
    return n


def _too_large(path: Path, w: int, h: int, limit: int) -> DatasetError:
    return DatasetError(
        f"{path}: {w}x{h} image ({w * h:,} pixels) is over the limit of {limit:,} pixels and was not decoded; "
        "if the file is trusted, raise the limit with --max-pixels N"
    )


_lift_lock = threading.Lock()
_lifted = [0, None]  # threads inside _pillow_limit_lifted, Pillow's limit to restore


@contextmanager
def _pillow_limit_lifted():
    """Pillow's MAX_IMAGE_PIXELS off while an image imgtui already checked (and ``--max-pixels``
    allowed) is loaded; restored when the last thread leaves."""
    with _lift_lock:
        if _lifted[0] == 0:
            _lifted[1] = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
        _lifted[0] += 1
    try:
        yield
    finally:
        with _lift_lock:
            _lifted[0] -= 1
            if _lifted[0] == 0:
                Image.MAX_IMAGE_PIXELS = _lifted[1]


def _open_lazy(path: Path, head: bytes, hint: str | None, sniff: bool = False) -> Image.Image:
    """``Image.open`` (which reads only the header) without Pillow's decompression-bomb check: its
    multi-line warning (or its error at twice its limit) would pre-empt imgtui's own one-line limit,
    which ``--max-pixels`` may set above Pillow's. The hinted format is tried first (then any, for
    a misnamed file). ``sniff``: only formats that recognise their own signature (not TGA, IPTC,
    ... which would take almost any bytes), none of the non-image formats."""
    Image.preinit()
    tried: set[str] = set()
    for load in (None, Image.init):
        if load is not None:
            load()
        for fmt in ([hint] if hint else []) + list(Image.ID):
            if fmt in tried or fmt not in Image.OPEN:
                continue
            tried.add(fmt)
            factory, accept = Image.OPEN[fmt]
            if sniff and (accept is None or fmt in _NOT_IMAGES):
                continue
            ok = accept(head) if accept else True
            if not ok or isinstance(ok, str):
                continue
            try:
                return factory(str(path))  # a path: the image owns (and closes) its file
            except (SyntaxError, IndexError, TypeError, struct.error):
                continue
    raise Image.UnidentifiedImageError(f"cannot identify image file {str(path)!r}")


def _raw_tiff16(im: Image.Image, path: Path) -> np.ndarray | None:
    """Uncompressed 16-bit-per-sample RGB(A) TIFF pixels, read from the strips Pillow located."""
    if im.mode not in ("RGB", "RGBA", "RGBX"):
        return None
    bps = im.tag_v2.get(258)  # BitsPerSample
    if isinstance(bps, int):
        bps = (bps,) * len(im.getbands())
    if not bps or max(bps) <= 8:
        return None
    channels = len(bps)
    if set(bps) != {16} or channels not in (3, 4):
        raise DatasetError(f"{path}: unsupported TIFF sample layout (bits per sample {bps})")
    w, h = im.size
    out = np.empty((h, w, channels), dtype=np.uint16)
    with open(path, "rb") as fh:
        for tile in im.tile:
            codec, extents, offset, args = tile[0], tile[1], tile[2], tile[3]
            rawmode = args[0] if isinstance(args, tuple) else args
            if codec != "raw" or not str(rawmode).endswith(("16L", "16B")):
                raise DatasetError(
                    f"{path}: compressed 16-bit RGB TIFF ({codec}) cannot be read losslessly; "
                    "save it uncompressed or as 16-bit PNG"
                )
            x0, y0, x1, y1 = extents
            n = (x1 - x0) * (y1 - y0) * channels
            fh.seek(offset)
            buf = fh.read(n * 2)
            if len(buf) != n * 2:
                raise DatasetError(f"{path}: image file is truncated")
            dt = "<u2" if str(rawmode).endswith("L") else ">u2"
            out[y0:y1, x0:x1] = np.frombuffer(buf, dt).reshape(y1 - y0, x1 - x0, channels)
    return out


def _exact_tiff(path: Path, limit: int | None) -> np.ndarray | None:
    """Signed, 32-bit and float TIFFs (what imgtui's disk backend and export write for int8, int16,
    uint32, int32, float32, float64) decoded exactly by :mod:`imgtui.tiff`, any channel count;
    None for other TIFFs (8/16-bit unsigned ones, or compressions it does not read)."""
    from ..tiff import decode_tiff, tiff_info

    try:
        with open(path, "rb") as fh:
            data = fh.read()
        t = tiff_info(data)
        fmt, bits = t.get("sample_format", [1])[0], t["bits"][0]
        if (fmt == 1 and bits in (8, 16)) or t["next_ifd"]:
            return None  # unsigned 8/16-bit, or a multi-page file (one record per page): Pillow's
        if t.get("compression", [1])[0] not in (1, 8, 32946):
            return None
        w, h = t["width"][0], t["height"][0]
        if limit and w * h > limit:
            raise _too_large(path, w, h, limit)
        return decode_tiff(data)
    except OSError:
        return None
    except ValueError:
        return None  # not this subset: Pillow decides


def _png16(im: Image.Image) -> bool:
    """A 16-bit colour (or gray+alpha) PNG, which Pillow would reduce to 8 bits."""
    return any(str(t[3][0] if isinstance(t[3], tuple) else t[3]).endswith("16B") for t in im.tile)


def _decode_png16(path: Path) -> np.ndarray:
    from ..png import decode_png as decode_png16  # numpy + zlib decoder, lossless at 16 bits

    try:
        with open(path, "rb") as fh:
            data = fh.read()
        arr = decode_png16(data)
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except Exception as exc:  # ValueError, zlib.error
        raise DatasetError(f"{path}: cannot decode 16-bit PNG ({exc})") from None
    if arr.ndim == 3 and arr.shape[2] == 2:  # gray + alpha -> RGBA
        g, a = arr[..., :1], arr[..., 1:]
        arr = np.concatenate([g, g, g, a], axis=2)
    return arr


def _head(path: Path, n: int = 64) -> bytes | None:
    """The first bytes of a regular file, None when it cannot be read (or is not a regular file)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with open(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            return fh.read(n)
    except OSError:
        return None


def sniff_image(path: str | Path) -> int | None:
    """The number of frames when Pillow recognises ``path``'s content as an image (by signature,
    reading only the header), else None. For files whose extension is not an image extension."""
    path = Path(path)
    head = _head(path)
    if not head:
        return None
    try:
        with _open_lazy(path, head, None, sniff=True) as im:
            if isinstance(im, ImageFile.StubImageFile) or im.format in _NOT_IMAGES:
                return None
            return _n_frames(im) if im.format in _MULTI_FRAME_FORMATS else 1
    except Exception:  # not an image Pillow knows (or a damaged one: then it is not imported either)
        return None


def count_frames(path: str | Path) -> int:
    """Frames (pages) in a GIF, TIFF, WebP or APNG file; 1 when it has one or cannot be opened here
    (decoding reports what is wrong with it)."""
    path = Path(path)
    head = _head(path)
    if not head:
        return 1
    if head[:4] in (b"II*\0", b"MM\0*") and _tiff_one_page(path, head):
        return 1  # most TIFFs: one page, told by three small reads instead of parsing every tag
    try:
        with _open_lazy(path, head, _FORMAT_HINT.get(path.suffix.lower())) as im:
            return _n_frames(im) if im.format in _MULTI_FRAME_FORMATS else 1
    except Exception:
        return 1


def _tiff_one_page(path: Path, head: bytes) -> bool:
    """True when a classic TIFF's first IFD links to no next one (a single page); False when
    there are more or it cannot be told (Pillow then counts them)."""
    order = "<" if head[:2] == b"II" else ">"
    try:
        with open(path, "rb") as fh:
            (ifd,) = struct.unpack(order + "I", head[4:8])
            fh.seek(ifd)
            (n,) = struct.unpack(order + "H", fh.read(2))
            fh.seek(ifd + 2 + 12 * n)
            nxt = fh.read(4)
        return len(nxt) == 4 and struct.unpack(order + "I", nxt)[0] == 0
    except (OSError, struct.error):
        return False


def _n_frames(im: Image.Image) -> int:
    try:
        return max(1, int(getattr(im, "n_frames", 1) or 1))
    except Exception:
        return 1


#: EXIF orientation (tag 0x0112) -> the array operation that shows the image upright (as
#: ``PIL.ImageOps.exif_transpose``)
_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}


def _orientation(im: Image.Image) -> int:
    try:
        value = int(im.getexif().get(0x0112, 1))
    except Exception:
        return 1
    return value if value in _ORIENT else 1


def decode_image(path: str | Path, max_pixels: int | None = None, frame: int | None = None,
                 exif_rotate: bool = False) -> np.ndarray:
    """Decode one image file to an HxW or HxWxC array (uint8/uint16; signed, 32-bit and float
    TIFFs keep their dtype); DatasetError if it cannot.

    The image's size is checked from its header before anything is decoded: over ``max_pixels``
    (None: ``default_max_pixels()``; 0: no limit) it is refused with a one-line DatasetError.
    A PNG's size is read from its IHDR chunk before Pillow sees the file.
    """
    path = Path(path)
    limit = default_max_pixels() if max_pixels is None else max_pixels
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    hint = _FORMAT_HINT.get(path.suffix.lower())
    try:
        # O_NONBLOCK: a named pipe called x.png must not hang the import; only regular files are read
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with open(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise DatasetError(f"{path}: not a regular file (a named pipe, device or socket)")
            head = fh.read(33)
        if limit and head[:8] == _PNG_SIG and head[12:16] == b"IHDR":
            w, h = struct.unpack(">II", head[16:24])
            if w * h > limit:
                raise _too_large(path, w, h, limit)
        if head[:4] in (b"II*\0", b"MM\0*") and not frame and not exif_rotate:
            exact = _exact_tiff(path, limit)
            if exact is not None:
                return exact
        im = _open_lazy(path, head, hint)
        with im:
            if frame:
                n = _n_frames(im)
                if frame >= n:
                    raise DatasetError(f"{path}: has {n} frame(s), no frame {frame} (changed since the folder was listed?)")
                im.seek(frame)
            w, h = im.size
            if limit and w * h > limit:
                raise _too_large(path, w, h, limit)
            arr = None
            if im.format == "TIFF":
                arr = _raw_tiff16(im, path)
            elif im.format == "PNG" and not frame and im.mode in ("RGB", "RGBA", "LA") and _png16(im):
                arr = _decode_png16(path)
            if arr is None:
                pillow_limit = Image.MAX_IMAGE_PIXELS
                if pillow_limit and w * h > pillow_limit:  # allowed by --max-pixels: Pillow's own check
                    with _pillow_limit_lifted():  # at load (TIFF) must not warn or refuse it
                        im.load()
                else:
                    im.load()
                arr = _to_array(im, path)
            if exif_rotate:
                turn = _ORIENT.get(_orientation(im))
                if turn is not None:
                    arr = np.ascontiguousarray(turn(arr))
            return arr
    except DatasetError:
        raise
    except Image.DecompressionBombError as exc:
        raise DatasetError(f"{path}: image too large to decode safely ({exc})") from None
    except PermissionError:
        raise DatasetError(f"{path}: permission denied") from None
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file (a broken symlink, or removed since the folder was listed)") from None
    except IsADirectoryError:
        raise DatasetError(f"{path}: a folder, not an image file") from None
    except Image.UnidentifiedImageError:
        raise DatasetError(f"{path}: not a readable image (unknown or corrupt format)") from None
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, struct.error, ...
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DatasetError(f"{path}: corrupt or truncated image ({reason})") from None


def _to_array(im: Image.Image, path: Path) -> np.ndarray:
    mode = im.mode
    if mode in ("L", "RGB", "RGBA"):
        pass
    elif mode == "1":
        im = im.convert("L")
    elif mode.startswith("I;16"):
        arr = np.asarray(im)
        return np.ascontiguousarray(arr.astype(np.uint16, copy=False))
    elif mode == "I":
        arr = np.asarray(im)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            return np.ascontiguousarray(arr.astype(np.int32, copy=False))  # kept as int32, lossless
        return arr.astype(np.uint16)
    elif mode == "F":
        return np.ascontiguousarray(np.asarray(im).astype(np.float32, copy=False))
    elif mode in ("LA", "La", "PA", "RGBa") or (mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
    else:  # P, CMYK, YCbCr, LAB, HSV, RGBX, ...
        im = im.convert("RGB")
    arr = np.asarray(im)
    if arr.dtype != np.uint8:  # pragma: no cover - defensive
        raise DatasetError(f"{path}: unexpected pixel type {arr.dtype} for mode {mode}")
    return np.ascontiguousarray(arr)


class _NotFinite(ValueError):
    """NaN or an infinite number in JSON: Python's json reads them, but they are not JSON."""


def _no_constant(name: str):
    raise _NotFinite(name)


def _finite(text: str) -> float:
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise _NotFinite(text)
    return value


def skip_line(ignored: list[str], unreadable: list[str], names: int = 5) -> str | None:
    """"skipped 3 files: 2 .txt, 1 unreadable: a/x.jpg" (None when both lists are empty): files
    that are not images counted by extension, unreadable images named (the first ``names``)."""
    bad = list(dict.fromkeys(unreadable))
    n = len(ignored) + len(bad)
    if not n:
        return None
    by_ext: dict[str, int] = {}
    for rel in ignored:
        ext = os.path.splitext(rel.rsplit("/", 1)[-1])[1].lower()
        key = ext if ext else "without extension"
        by_ext[key] = by_ext.get(key, 0) + 1
    parts = [f"{c:,} {ext}" for ext, c in sorted(by_ext.items(), key=lambda kv: (-kv[1], kv[0]))]
    if bad:
        more = f" and {len(bad) - names:,} more" if len(bad) > names else ""
        parts.append(f"{len(bad):,} unreadable: {', '.join(bad[:names])}{more}")
    return f"skipped {n:,} file{'s' if n != 1 else ''}: {', '.join(parts)}"


class FolderDataset(Dataset):
    __doc__ = __doc__
    kind = "folder"

    def __init__(
        self,
        root: str | Path,
        on_error: str = "stop",
        warn: WarnFn | None = None,
        labels_csv: str | Path | bool | None = None,
        limit: int | None = None,
        workers: int | None = None,
        max_pixels: int | None = None,
        follow_symlinks: bool = False,
        exif_rotate: bool = False,
    ) -> None:
        self.root = Path(root).expanduser()
        if on_error not in ("stop", "skip"):
            raise DatasetError(f"on_error must be 'stop' or 'skip', got {on_error!r}")
        if limit is not None and limit < 0:
            raise DatasetError(f"limit must be >= 0, got {limit}")
        self.on_error = on_error
        self.warn = warn
        self.workers = 0 if workers is None else max(0, int(workers))
        self.max_pixels = check_max_pixels(max_pixels)
        self.follow_symlinks = bool(follow_symlinks)
        #: apply the EXIF orientation (turn the pixels upright); default: pixels as stored
        self.exif_rotate = bool(exif_rotate)
        self.ignored: list[str] = []  # relative paths of files that are not images
        self._frames: dict[str, int] = {}  # relative path -> frames, for files with more than one
        self.skipped: list[str] = []  # relative paths of images skipped on error (last iteration)
        #: symlinks not followed: image files leaving the folder, folders (``name/``)
        self.skipped_symlinks: list[str] = []
        self._symlinks_leaving: list[str] = []
        self.symlink_loops: list[str] = []  # with follow_symlinks: folders linking back to an ancestor
        if not self.root.exists():
            raise DatasetError(f"{self.root}: no such folder")
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: not a folder")
        if not os.access(self.root, os.R_OK | os.X_OK):
            raise DatasetError(f"{self.root}: permission denied (cannot list the folder)")

        csv_path: Path | None = None
        if labels_csv is None or labels_csv is True:
            if (self.root / "labels.csv").is_file():
                csv_path = self.root / "labels.csv"
            elif labels_csv is True:
                raise DatasetError(f"{self.root / 'labels.csv'}: labels file not found")
        elif labels_csv is not False:
            csv_path = Path(labels_csv).expanduser()
            if not csv_path.is_absolute() and not csv_path.exists():
                csv_path = self.root / csv_path
            if not csv_path.is_file():
                raise DatasetError(f"{csv_path}: labels file not found")
        self.labels_csv = csv_path

        try:
            images = self._scan(skip=csv_path)
        except RecursionError:
            raise DatasetError(f"{self.root}: folders nested too deeply to list (hundreds of levels)") from None
        if not images:
            extra = f" ({len(self.ignored)} other files ignored)" if self.ignored else ""
            note = f"; {self.symlink_note}" if self.symlink_note else ""
            raise DatasetError(
                f"{self.root}: no images found (looked for .png, .jpg, .tif, .bmp, .webp, .gif, .jp2, .ppm, .tga, ... "
                f"and any file whose content Pillow recognises){extra}{note}"
            )
        entries: list[tuple[str, object, dict]]
        if csv_path is not None:
            self.layout = "csv"
            entries = self._read_csv(csv_path, set(images))
        elif labels_csv is False:
            self.layout = "unlabelled"
            entries = [(rel, 0, {}) for rel in images]
        else:
            top = [rel for rel in images if "/" not in rel]
            if len(top) == len(images):
                raise DatasetError(
                    f"{self.root}: {len(images):,} images but no class sub-folders and no labels.csv "
                    "(add labels.csv with header file,label, move images into <label>/ folders, "
                    "or pass labels_csv=False for unlabelled images)"
                )
            if top:
                raise DatasetError(
                    f"{self.root}: {len(top):,} images (e.g. {top[0]}) sit next to the class sub-folders; "
                    "move them into a class folder or describe all images in labels.csv"
                )
            self.layout = "classes"
            entries = [(rel, rel.split("/", 1)[0], {}) for rel in images]
        entries = self._expand_frames(entries)
        self.total = len(entries)
        if limit is not None:
            entries = entries[:limit]
        self._entries = entries
        if workers is None:
            self.workers = self._auto_workers()
        for note in (self.symlink_note, self.loop_note):
            if note:
                self._notify(Notice(note))

    def _expand_frames(self, entries: list) -> list:
        """One entry per frame of a multi-frame file (GIF, multi-page TIFF, animated WebP/APNG):
        its records carry ``frame`` (0-based) and ``frames`` in their metadata."""
        if not self._frames:
            return entries
        out = []
        for rel, label, extras in entries:
            n = self._frames.get(rel, 1)
            if n == 1 or "__volume__" in extras:  # a volume's pages are its slices: one record
                out.append((rel, label, extras))
            else:
                out.extend((rel, label, {**extras, "__frame__": (k, n)}) for k in range(n))
        return out

    def _auto_workers(self) -> int:
        """Threads only pay off for larger files: tiny images (CIFAR JPEGs of ~1 KB) spend their
        time in Pillow's Python code under the GIL, where threads measured 10-25% slower."""
        sizes = []
        for rel, _, _ in self._entries[:32]:
            try:
                sizes.append(os.stat(self.root / rel).st_size)
            except OSError:
                pass
        if not sizes or sum(sizes) / len(sizes) < _THREAD_MIN_BYTES:
            return 0
        return min(4, os.cpu_count() or 1)

    # -- scanning -------------------------------------------------------------------------------
    def _scan(self, skip: Path | None) -> list[str]:
        """Image files under the root. Symlinks: an image file whose link leads out of the root and
        a symlinked folder are not followed (listed in ``skipped_symlinks``) unless
        ``follow_symlinks``; then a folder linking back to one of its ancestors is not entered."""
        images: list[str] = []
        skip_resolved = skip.resolve() if skip is not None else None
        real_root = os.path.realpath(self.root)
        follow = self.follow_symlinks

        def onerror(exc: OSError) -> None:
            raise DatasetError(f"{exc.filename}: cannot list folder ({exc.strerror or exc})")

        def leaves(path: str) -> bool:
            target = os.path.realpath(path)
            return target != real_root and not target.startswith(real_root.rstrip(os.sep) + os.sep)

        def key(path: str) -> tuple[int, int] | None:
            try:
                st = os.stat(path)
            except OSError:
                return None
            return st.st_dev, st.st_ino

        ancestors: dict[str, frozenset] = {}
        for dirpath, dirnames, filenames in os.walk(self.root, onerror=onerror, followlinks=follow):
            rel_dir = os.path.relpath(dirpath, self.root)
            prefix = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
            chain = ancestors.pop(dirpath, frozenset()) | {key(dirpath)}
            keep = []
            for d in sorted(dirnames):
                if d.startswith("."):
                    continue
                full = os.path.join(dirpath, d)
                if os.path.islink(full):
                    if not follow:
                        self.skipped_symlinks.append(prefix + d + "/")
                        if leaves(full):
                            self._symlinks_leaving.append(prefix + d + "/")
                        continue
                    if key(full) in chain:
                        self.symlink_loops.append(prefix + d + "/")
                        continue
                ancestors[full] = chain
                keep.append(d)
            dirnames[:] = keep
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                rel = prefix + name
                full = os.path.join(dirpath, name)
                if skip_resolved is not None and Path(full).resolve() == skip_resolved:
                    continue  # the labels CSV
                known = is_image_file(name)
                if not follow and os.path.islink(full) and leaves(full):  # not read, not even its header
                    if known:
                        self.skipped_symlinks.append(rel)
                        self._symlinks_leaving.append(rel)
                    else:
                        self.ignored.append(rel)
                    continue
                frames = self._look(full, known)
                if frames is None:
                    self.ignored.append(rel)
                    continue
                if frames > 1:
                    self._frames[rel] = frames
                images.append(rel)
        images.sort()
        self.skipped_symlinks.sort()
        return images

    @staticmethod
    def _look(full: str, known: bool) -> int | None:
        """Frames of an image file, None for a file that is not an image. A file with an image
        extension is an image (decoding reports a damaged one) and only GIF/TIFF/WebP/APNG files
        are opened to count their frames; any other file is an image when Pillow recognises its
        content from its header."""
        ext = os.path.splitext(full)[1].lower()
        if known:
            return count_frames(full) if ext in MULTI_FRAME_EXTENSIONS else 1
        return sniff_image(full)

    @property
    def symlink_note(self) -> str | None:
        """One line naming the symlinks that were not followed, or None."""
        links = self.skipped_symlinks
        if not links:
            return None
        n = len(links)
        names = ", ".join(links[:5]) + (f" and {n - 5:,} more" if n > 5 else "")
        where = "leaving the folder" if len(self._symlinks_leaving) == n else "to folders or leaving the folder"
        return f"skipped {n:,} symlink{'s' if n > 1 else ''} {where}: {names}; use --follow-symlinks to read {'them' if n > 1 else 'it'}"

    @property
    def loop_note(self) -> str | None:
        loops = self.symlink_loops
        if not loops:
            return None
        names = ", ".join(loops[:5]) + (f" and {len(loops) - 5:,} more" if len(loops) > 5 else "")
        return f"did not enter {len(loops):,} symlinked folder(s) linking back to a folder above them: {names}"

    def _notify(self, message: str, stacklevel: int = 3) -> None:
        if self.warn is not None:
            self.warn(message)
        else:
            warnings.warn(message, RuntimeWarning, stacklevel=stacklevel)

    def _read_csv(self, csv_path: Path, found: set[str]) -> list[tuple[str, object, dict]]:
        try:
            with open(csv_path, newline="", encoding="utf-8-sig") as fh:
                rows = list(csv.reader(fh))
        except UnicodeDecodeError:
            raise DatasetError(f"{csv_path}: not a UTF-8 text file") from None
        except OSError as exc:
            raise DatasetError(f"{csv_path}: cannot read ({exc.strerror or exc})") from None
        except csv.Error as exc:
            raise DatasetError(f"{csv_path}: malformed CSV ({exc})") from None
        if not rows:
            raise DatasetError(f"{csv_path}: empty file (expected a header row file,label)")
        header = [h.strip() for h in rows[0]]
        lower = [h.lower() for h in header]
        file_col = next((lower.index(c) for c in _FILE_COLUMNS if c in lower), None)
        label_col = next((lower.index(c) for c in _LABEL_COLUMNS if c in lower), None)
        if file_col is None or label_col is None:
            raise DatasetError(
                f"{csv_path}: bad header {','.join(header)!r} (expected columns file,label[,more...])"
            )
        if len(set(lower)) != len(lower):
            raise DatasetError(f"{csv_path}: duplicate column names in header {','.join(header)!r}")
        extra_cols = [(i, header[i]) for i in range(len(header)) if i not in (file_col, label_col)]
        seen: dict[str, int] = {}
        parsed: list[tuple[str, str, dict]] = []
        for lineno, row in enumerate(rows[1:], start=2):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(header):
                raise DatasetError(
                    f"{csv_path} line {lineno}: {len(row)} fields, expected {len(header)} like the header"
                )
            rel = row[file_col].strip().replace("\\", "/")
            while rel.startswith("./"):
                rel = rel[2:]
            if not rel:
                raise DatasetError(f"{csv_path} line {lineno}: empty file name")
            if rel in seen:
                raise DatasetError(
                    f"{csv_path} line {lineno}: duplicate row for {rel} (first on line {seen[rel]})"
                )
            seen[rel] = lineno
            if rel not in found:
                link = next((s for s in self.skipped_symlinks if rel == s or (s.endswith("/") and rel.startswith(s))), None)
                if link is not None:
                    raise DatasetError(
                        f"{csv_path} line {lineno}: row names {rel}, behind the symlink {link} which is not "
                        f"followed in {self.root}; use --follow-symlinks to read it"
                    )
                if (self.root / rel).is_file():
                    why = "which is not an image file" if rel in self.ignored else "which is skipped"
                else:
                    why = "which does not exist"
                raise DatasetError(f"{csv_path} line {lineno}: row names {rel}, {why} in {self.root}")
            label = row[label_col].strip()
            if not label:
                raise DatasetError(f"{csv_path} line {lineno}: empty label for {rel}")
            parsed.append((rel, label, {name: row[i].strip() for i, name in extra_cols}))
        missing = sorted(found - seen.keys())
        if missing:
            more = f" and {len(missing) - 1:,} more" if len(missing) > 1 else ""
            raise DatasetError(f"{csv_path}: no row for image {missing[0]}{more}")
        if "label_type" in lower or "metadata" in lower or "volume" in lower:
            return [self._exact_row(csv_path, rel, label, extras) for rel, label, extras in parsed]
        as_int = all(_INT_RE.fullmatch(label) for _, label, _ in parsed)
        self.label_type = "int" if as_int else "str"
        return [(rel, int(label) if as_int else label, extras) for rel, label, extras in parsed]

    def _exact_row(self, csv_path: Path, rel: str, label: str, extras: dict) -> tuple[str, object, dict]:
        """Rows of a labels.csv written by ``imgtui export``: ``label_type`` says int or str per
        row and ``metadata`` holds the record's metadata as a JSON object, restored exactly."""
        self.label_type = "exact"
        kind = extras.pop("label_type", "str")
        volume = self._volume_shape(csv_path, rel, extras.pop("volume", ""))
        if kind == "int":
            if not _INT_RE.fullmatch(label):
                raise DatasetError(f"{csv_path}: label {label!r} of {rel} is not an integer but label_type says int")
            label = int(label)
        elif kind != "str":
            raise DatasetError(f"{csv_path}: label_type of {rel} must be int or str, got {kind!r}")
        if "metadata" in extras:
            text = extras.pop("metadata")
            try:
                meta = json.loads(text, parse_constant=_no_constant, parse_float=_finite) if text else {}
            except _NotFinite as exc:
                raise DatasetError(f"{csv_path}: metadata of {rel} holds {exc}, which JSON does not allow") from None
            except ValueError:
                raise DatasetError(f"{csv_path}: metadata of {rel} is not valid JSON") from None
            except RecursionError:
                raise DatasetError(f"{csv_path}: metadata of {rel} is nested too deeply") from None
            if not isinstance(meta, dict):
                raise DatasetError(f"{csv_path}: metadata of {rel} must be a JSON object")
            return rel, label, {"__exact__": True, **extras, **meta, **volume}
        return rel, label, {**extras, **volume}

    @staticmethod
    def _volume_shape(csv_path: Path, rel: str, text: str) -> dict:
        """The ``volume`` cell of an export's labels.csv: a 3-D record's shape (its file is a
        multi-page TIFF read back as one record), or empty for an image."""
        text = text.strip()
        if not text:
            return {}
        try:
            shape = tuple(int(v) for v in text.split("x"))
        except ValueError:
            shape = ()
        if len(shape) not in (3, 4) or not is_volume(shape) or min(shape) < 1:
            raise DatasetError(f"{csv_path}: volume of {rel} is {text!r}, not a DxHxW[xC] shape")
        return {"__volume__": shape}

    # -- Dataset API ----------------------------------------------------------------------------
    @property
    def length(self) -> int:
        return len(self._entries)

    def describe(self) -> str:
        n = len(self._entries)
        if self.layout == "classes":
            what = f"{len(self.classes):,} classes"
        elif self.layout == "csv":
            what = f"labels from {self.labels_csv.name}"
        else:
            what = "unlabelled"
        if self._frames:
            files = len({e[0] for e in self._entries})
            text = (f"folder {self.root}: {n:,} images from {files:,} files ({len(self._frames):,} multi-frame: "
                    f"one record per frame), {what}")
        else:
            text = f"folder {self.root}: {n:,} images, {what}"
        if n < self.total:
            text += f" (first {n:,} of {self.total:,})"
        if self.ignored:
            text += f"; {len(self.ignored):,} non-image files ignored"
        if self.skipped_symlinks:
            text += f"; {len(self.skipped_symlinks):,} symlinks not followed"
        if self.exif_rotate:
            text += "; EXIF orientation applied"
        return text

    @property
    def exif_note(self) -> str:
        """Whether the EXIF orientation is applied, for the dataset summary."""
        if self.exif_rotate:
            return "EXIF orientation applied (pixels turned upright)"
        return "EXIF orientation not applied (pixels as stored in the files; --exif-rotate applies it)"

    @property
    def skip_summary(self) -> str | None:
        """One line counting and naming every file not imported: files that are not images (by
        extension) and, after iterating, images that could not be read (with ``on_error="skip"``),
        e.g. "skipped 3 files: 2 .txt, 1 unreadable: a/x.jpg"; None when every file was imported."""
        return skip_line(self.ignored, self.skipped)

    def summary(self, sample: int = 200) -> dict:
        out = super().summary(sample)
        out["exif"] = self.exif_note
        out["exif_rotate"] = self.exif_rotate
        skipped = self.skip_summary
        if skipped:
            out["skipped"] = skipped
        return out

    @property
    def classes(self) -> list:
        """The distinct labels (sorted), known without decoding any image."""
        labels = {e[1] for e in self._entries}
        return sorted(labels, key=lambda v: (isinstance(v, str), v))

    @property
    def files(self) -> list[str]:
        return [e[0] for e in self._entries]

    def _decode(self, entry: tuple[str, object, dict]) -> np.ndarray | DatasetError:
        rel, _label, extras = entry
        frame = extras.get("__frame__")
        if "__volume__" in extras:
            return self._decode_volume(rel, extras["__volume__"])
        try:
            return decode_image(self.root / rel, self.max_pixels, frame=frame[0] if frame else None,
                                exif_rotate=self.exif_rotate)
        except DatasetError as exc:
            return exc

    def _decode_volume(self, rel: str, shape: tuple) -> np.ndarray | DatasetError:
        """A multi-page TIFF written by ``imgtui export`` as the 3-D record of ``shape``."""
        path = self.root / rel
        limit = default_max_pixels() if self.max_pixels is None else self.max_pixels
        if limit and int(np.prod(shape[:3])) > limit:
            return DatasetError(f"{path}: a {'x'.join(map(str, shape))} volume is over the {limit:,}-pixel limit "
                                "(--max-pixels 0 lifts it)")
        try:
            data = path.read_bytes()
            vol = decode_tiff_pages(data, shape[0])
        except OSError as exc:
            return DatasetError(f"{path}: cannot be read ({exc.strerror})")
        except ValueError as exc:
            return DatasetError(f"{path}: not the {'x'.join(map(str, shape))} volume labels.csv says ({exc})")
        if vol.size != int(np.prod(shape)):
            return DatasetError(f"{path}: holds {'x'.join(map(str, vol.shape))}, labels.csv says {'x'.join(map(str, shape))}")
        return vol.reshape(shape)

    def _record(self, entry: tuple[str, object, dict], image: np.ndarray) -> Record:
        rel, label, extras = entry
        frame = extras.get("__frame__")
        if frame or extras.get("__exact__") or "__volume__" in extras:
            extras = {k: v for k, v in extras.items() if k not in ("__exact__", "__frame__", "__volume__")}
            if frame:
                extras["frame"], extras["frames"] = frame
            if entry[2].get("__exact__"):
                return Record(image, label, extras)
        return Record(image, label, {"file": rel, **extras})

    def _handle(self, rel: str, err: DatasetError) -> None:
        if self.on_error == "stop":
            raise err
        if rel in self.skipped:  # another frame of a file already skipped
            return
        self.skipped.append(rel)
        self._notify(f"skipped {err}", stacklevel=4)

    def __iter__(self) -> Iterator[Record]:
        return self.records(0, None)

    def records(self, start: int, stop: int | None) -> Iterator[Record]:
        """Records of entries [start, stop) without decoding the files before ``start``
        (parallel conversion gives each worker its own range)."""
        return self._iter_entries(self._entries[start:stop])

    def records_at(self, indices) -> Iterator[Record]:
        """Only the files at ``indices`` are decoded (the dataset summary samples the whole set)."""
        n = len(self._entries)
        return self._iter_entries([self._entries[i] for i in sorted(set(indices)) if 0 <= i < n])

    def _iter_entries(self, entries: list) -> Iterator[Record]:
        self.skipped = []
        if self.workers <= 1 or len(entries) <= _BATCH:
            for entry in entries:
                out = self._decode(entry)
                if isinstance(out, DatasetError):
                    self._handle(entry[0], out)
                    continue
                yield self._record(entry, out)
            return
        with ThreadPoolExecutor(self.workers, thread_name_prefix="imgtui-decode") as pool:
            pending: deque = deque()
            nxt = 0
            try:
                while nxt < len(entries) or pending:
                    # keep two batches in flight ahead of the consumer
                    while nxt < len(entries) and len(pending) < 2 * _BATCH:
                        batch = entries[nxt : nxt + _BATCH]
                        pending.extend((e, pool.submit(self._decode, e)) for e in batch)
                        nxt += len(batch)
                    entry, future = pending.popleft()
                    out = future.result()
                    if isinstance(out, DatasetError):
                        self._handle(entry[0], out)
                        continue
                    yield self._record(entry, out)
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
