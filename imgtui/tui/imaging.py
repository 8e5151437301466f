"""Pure image helpers for the TUI: window any record dtype (16-bit, signed, float, bool) to 8-bit, fit and resize, draw with half blocks.

No Textual here: these run in worker threads and in tests. A terminal cell is about twice as tall
as it is wide, so one cell shows two stacked pixels with "▀" (foreground = top pixel, background =
bottom pixel) and the pixels come out roughly square.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from rich.color import Color
from rich.segment import Segment
from rich.style import Style
from rich.text import Text

from ..records import is_volume

UPPER_HALF = "\u2580"  # ▀


#: the percentiles ``mode="auto"`` windows float images by
FLOAT_PERCENTILES = (1.0, 99.0)


def window_to_uint8(
    image: np.ndarray, mode: str = "auto", percentiles: tuple[float, float] = (0.5, 99.5)
) -> np.ndarray:
    """Map an image of any record dtype to uint8 for display.

    uint8 images are returned unchanged; bool images show False as 0 and True as 255. Other dtypes
    are windowed: ``mode="minmax"`` maps the image minimum to 0 and its maximum to 255;
    ``mode="percentile"`` uses the given percentiles (robust against a few hot pixels);
    ``mode="auto"`` (the default) is minmax for integer images and the 1st/99th percentiles for
    float images. NaN and infinite values are left out of the window; NaN shows as 0, +inf as 255
    and -inf as 0. A constant image maps to 0.
    """
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.bool_:
        return image.view(np.uint8) * np.uint8(255)
    if mode == "auto":
        mode, percentiles = ("percentile", FLOAT_PERCENTILES) if image.dtype.kind == "f" else ("minmax", percentiles)
    if mode not in ("minmax", "percentile"):
        raise ValueError(f"unknown window mode {mode!r} (use 'auto', 'minmax' or 'percentile')")
    # float64 for 32/64-bit samples: float32 would round large integers and overflow big floats
    with np.errstate(invalid="ignore"):  # a signalling NaN warns when cast
        data = image.astype(np.float64 if image.dtype.itemsize >= 4 else np.float32, copy=False)
    finite = np.isfinite(data) if image.dtype.kind == "f" else None
    vals = data[finite] if finite is not None and not finite.all() else data
    if vals.size == 0:
        return np.zeros(image.shape, dtype=np.uint8)
    if mode == "percentile":
        lo, hi = (float(v) for v in np.percentile(vals, percentiles))
    else:
        lo, hi = float(vals.min()), float(vals.max())
    if hi <= lo:
        out = np.zeros(image.shape, dtype=np.uint8)
        if finite is not None:
            out[np.isposinf(data)] = 255
        return out
    with np.errstate(invalid="ignore", over="ignore"):
        scaled = (data - lo) * (255.0 / (hi - lo))
        out = np.clip(np.rint(scaled), 0, 255)
    if finite is not None:
        out[np.isnan(out)] = 0
    return out.astype(np.uint8)


def plane(image: np.ndarray, index: int | None = None) -> np.ndarray:
    """The 2-D image to draw: the image itself, or slice ``index`` of a 3-D record (the middle
    slice when None; clamped to the volume)."""
    if not is_volume(image.shape):
        return image
    depth = image.shape[0]
    k = depth // 2 if index is None else max(0, min(depth - 1, int(index)))
    return image[k]


def depth_of(image: np.ndarray | None) -> int:
    """The number of slices of a 3-D record, 0 for an image."""
    return int(image.shape[0]) if image is not None and is_volume(image.shape) else 0


def to_rgb(image: np.ndarray) -> np.ndarray:
    """HxW, HxWx1, HxWx3 or HxWx4 uint8 -> HxWx3 uint8 (alpha is composited over black)."""
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    c = image.shape[2]
    if c == 1:
        return np.repeat(image, 3, axis=2)
    if c == 3:
        return image
    if c == 4:
        alpha = image[:, :, 3:4].astype(np.uint16)
        return ((image[:, :, :3].astype(np.uint16) * alpha + 127) // 255).astype(np.uint8)
    raise ValueError(f"cannot display an image with {c} channels")


def display_rgb(image: np.ndarray, window: str = "auto") -> np.ndarray:
    """Any record image as HxWx3 uint8 for a terminal graphics protocol (windowed, alpha over black;
    a 3-D record's middle slice, windowed like the whole volume)."""
    return np.ascontiguousarray(to_rgb(plane(window_to_uint8(image, window))))


def fit_size(height: int, width: int, max_width: int, max_height: int, upscale: bool = True) -> tuple[int, int]:
    """(new_height, new_width) that fits in max_width x max_height and keeps the aspect ratio.

    Sizes are in pixels; each side is at least 1. Without ``upscale`` small images keep their size.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image has no pixels ({height}x{width})")
    max_width, max_height = max(1, int(max_width)), max(1, int(max_height))
    scale = min(max_width / width, max_height / height)
    if not upscale:
        scale = min(scale, 1.0)
    new_w = max(1, min(max_width, int(round(width * scale))))
    new_h = max(1, min(max_height, int(round(height * scale))))
    return new_h, new_w


def downscale(image: np.ndarray, max_width: int, max_height: int, upscale: bool = True) -> np.ndarray:
    """Resize an (already uint8) image to fit max_width x max_height pixels, keeping its aspect.

    Shrinking uses a box filter (area average), enlarging uses nearest neighbour so small images
    stay crisp. Returns HxWx3 uint8.
    """
    rgb = to_rgb(image)
    h, w = rgb.shape[:2]
    new_h, new_w = fit_size(h, w, max_width, max_height, upscale=upscale)
    if (new_h, new_w) == (h, w):
        return rgb
    resample = Image.Resampling.BOX if new_w < w or new_h < h else Image.Resampling.NEAREST
    return np.asarray(Image.fromarray(rgb).resize((new_w, new_h), resample=resample))


def _half_block_runs(rgb: np.ndarray) -> list[list[tuple[int, Style]]]:
    """Per line of cells: runs of identical cells as (length, style) (fg = top pixel, bg = bottom)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 array, got shape {tuple(rgb.shape)}")
    h, w = rgb.shape[:2]
    styles: dict[tuple, Style] = {}
    lines = []
    for y in range(0, h, 2):
        top = rgb[y].tolist()
        bottom = rgb[y + 1].tolist() if y + 1 < h else None
        runs: list[tuple[int, Style]] = []
        run_key = None
        run_len = 0
        for x in range(w):
            key = (tuple(top[x]), tuple(bottom[x]) if bottom is not None else None)
            if key == run_key:
                run_len += 1
                continue
            if run_len:
                runs.append((run_len, styles[run_key]))
            run_key, run_len = key, 1
            if key not in styles:
                t, b = key
                styles[key] = Style(color=Color.from_rgb(*t), bgcolor=Color.from_rgb(*b) if b is not None else None)
        if run_len:
            runs.append((run_len, styles[run_key]))
        lines.append(runs)
    return lines


def half_block_text(rgb: np.ndarray) -> Text:
    """HxWx3 uint8 -> rich Text of ceil(H/2) lines x W cells of "▀" (fg = top, bg = bottom).

    With an odd height the last line has only a foreground colour (the bottom half stays blank).
    Runs of identical cells are one span (much smaller Text for flat images).
    """
    text = Text(no_wrap=True, overflow="crop", end="")
    for y, runs in enumerate(_half_block_runs(rgb)):
        if y:
            text.append("\n")
        for n, style in runs:
            text.append(UPPER_HALF * n, style)
    return text


def half_block_lines(rgb: np.ndarray) -> list[list[Segment]]:
    """The same picture as :func:`half_block_text`, as lines of Segments ready for Strips: no
    Rich Text to render on the UI thread (rendering the Text cost ~80 ms a record in the browser)."""
    return [[Segment(UPPER_HALF * n, style) for n, style in runs] for runs in _half_block_runs(rgb)]


def thumbnail(
    image: np.ndarray, columns: int, rows: int, window: str = "auto", upscale: bool = True
) -> Text:
    """The whole pipeline: window to 8-bit, fit into ``columns`` x ``rows`` cells, half blocks (a
    3-D record: its middle slice, windowed over the whole volume)."""
    return half_block_text(_fitted(image, columns, rows, window, upscale))


def thumbnail_lines(
    image: np.ndarray, columns: int, rows: int, window: str = "auto", upscale: bool = True
) -> list[list[Segment]]:
    """:func:`thumbnail` as lines of Segments (what ``ImageView.show_lines`` takes)."""
    return half_block_lines(_fitted(image, columns, rows, window, upscale))


def _fitted(image: np.ndarray, columns: int, rows: int, window: str, upscale: bool) -> np.ndarray:
    img8 = plane(window_to_uint8(image, window))
    return downscale(img8, max(1, columns), max(1, rows) * 2, upscale=upscale)
