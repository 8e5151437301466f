"""The article's figures from a ResultTable, without matplotlib.

``save_plot(table, "figures.svg")`` writes SVG by hand; ``"figures.png"`` draws the same figure with
Pillow's ImageDraw. Three panels: store_many and read_many time against record count (log-log,
one line per backend+method), and the bytes on disk per backend+method at the largest count.
Both outputs come from the same drawing code through a tiny canvas interface.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence
from xml.sax.saxutils import escape

from ..backends import registry
from ..errors import ImgtuiError
from . import backend_info
from .model import ResultRow, ResultTable

#: the floor's series; a backend's colour is its ``Backend.colour``
FLOOR_COLORS = {"numpy": "#222222", "memcpy": "#999999"}
METHOD_DASH = {"imgtui": None, "article": (7, 4), "floor": (2, 3)}
AXIS = "#444444"
GRID = "#e3e3e3"
GRID_MINOR = "#f2f2f2"
TEXT = "#222222"


def series_label(backend: str, method: str) -> str:
    if method == "floor":
        return "floor (np.save/np.load)" if backend == "numpy" else "memcpy (RAM copy)"
    return f"{method} {backend}"


def backend_color(backend: str) -> str:
    return FLOOR_COLORS.get(backend) or backend_info.colour(backend, "#555555")


def _series_order(key: tuple[str, str]) -> tuple:
    backend, method = key
    order = (*registry.BACKENDS, *FLOOR_COLORS)
    return (
        {"floor": 0, "imgtui": 1, "article": 2}.get(method, 3),
        order.index(backend) if backend in order else len(order),
        backend,
    )


# -- canvases ------------------------------------------------------------------------------
class SvgCanvas:
    def __init__(self, width: int, height: int) -> None:
        self.w, self.h = width, height
        self.items: list[str] = []

    @staticmethod
    def _dash(dash) -> str:
        return f' stroke-dasharray="{dash[0]},{dash[1]}"' if dash else ""

    def line(self, x1, y1, x2, y2, color=AXIS, width=1.0, dash=None) -> None:
        self.items.append(
            f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{color}" '
            f'stroke-width="{width}"{self._dash(dash)}/>'
        )

    def polyline(self, pts, color, width=2.0, dash=None) -> None:
        p = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
        self.items.append(
            f'<polyline points="{p}" fill="none" stroke="{color}" stroke-width="{width}" '
            f'stroke-linejoin="round"{self._dash(dash)}/>'
        )

    def marker(self, x, y, color, shape="circle", r=3.5) -> None:
        if shape == "square":
            self.items.append(f'<rect x="{x - r:.1f}" y="{y - r:.1f}" width="{2 * r:.1f}" height="{2 * r:.1f}" fill="{color}"/>')
        elif shape == "diamond":
            pts = f"{x:.1f},{y - r - 1:.1f} {x + r + 1:.1f},{y:.1f} {x:.1f},{y + r + 1:.1f} {x - r - 1:.1f},{y:.1f}"
            self.items.append(f'<polygon points="{pts}" fill="{color}"/>')
        else:
            self.items.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r}" fill="{color}"/>')

    def rect(self, x, y, w, h, fill, stroke=None) -> None:
        s = f' stroke="{stroke}"' if stroke else ""
        self.items.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 0):.1f}" height="{max(h, 0):.1f}" fill="{fill}"{s}/>')

    def text(self, x, y, s, size=12, anchor="start", color=TEXT, bold=False) -> None:
        weight = ' font-weight="bold"' if bold else ""
        self.items.append(
            f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
            f'dominant-baseline="middle" fill="{color}"{weight}>{escape(str(s))}</text>'
        )

    def save(self, path: Path) -> None:
        head = (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.w}" height="{self.h}" '
            f'viewBox="0 0 {self.w} {self.h}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">\n'
            f'<rect width="100%" height="100%" fill="white"/>\n'
        )
        path.write_text(head + "\n".join(self.items) + "\n</svg>\n")


class PngCanvas:
    """The same drawing calls on a Pillow image, drawn at ``scale`` for crisp output."""

    def __init__(self, width: int, height: int, scale: float = 2.0) -> None:
        from PIL import Image, ImageDraw

        self.w, self.h, self.s = width, height, scale
        self.img = Image.new("RGB", (int(width * scale), int(height * scale)), "white")
        self.draw = ImageDraw.Draw(self.img)
        self._fonts: dict = {}

    def _font(self, size: float, bold: bool):
        from PIL import ImageFont

        key = (size, bold)
        if key not in self._fonts:
            px = max(6, int(round(size * self.s)))
            font = None
            for name in (("DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"), "Arial.ttf"):
                try:
                    font = ImageFont.truetype(name, px)
                    break
                except OSError:
                    continue
            if font is None:
                try:
                    font = ImageFont.load_default(size=px)
                except TypeError:  # Pillow < 10.1
                    font = ImageFont.load_default()
            self._fonts[key] = font
        return self._fonts[key]

    def _segments(self, pts, dash):
        s = self.s
        pts = [(x * s, y * s) for x, y in pts]
        if not dash:
            return [pts]
        on, off = dash[0] * s, dash[1] * s
        segs, pos, drawing = [], 0.0, True
        cur = [pts[0]]
        for (x1, y1), (x2, y2) in zip(pts, pts[1:]):
            length = math.hypot(x2 - x1, y2 - y1)
            t = 0.0
            while t < length:
                left = (on if drawing else off) - pos
                step = min(left, length - t)
                t += step
                pos += step
                x, y = x1 + (x2 - x1) * t / length, y1 + (y2 - y1) * t / length
                if drawing:
                    cur.append((x, y))
                if pos >= (on if drawing else off) - 1e-9:
                    if drawing and len(cur) > 1:
                        segs.append(cur)
                    drawing = not drawing
                    pos = 0.0
                    cur = [(x, y)]
        if drawing and len(cur) > 1:
            segs.append(cur)
        return segs

    def line(self, x1, y1, x2, y2, color=AXIS, width=1.0, dash=None) -> None:
        self.polyline([(x1, y1), (x2, y2)], color, width, dash)

    def polyline(self, pts, color, width=2.0, dash=None) -> None:
        w = max(1, int(round(width * self.s)))
        for seg in self._segments(list(pts), dash):
            self.draw.line(seg, fill=color, width=w, joint="curve")

    def marker(self, x, y, color, shape="circle", r=3.5) -> None:
        s = self.s
        x, y, r = x * s, y * s, r * s
        if shape == "square":
            self.draw.rectangle([x - r, y - r, x + r, y + r], fill=color)
        elif shape == "diamond":
            r += s
            self.draw.polygon([(x, y - r), (x + r, y), (x, y + r), (x - r, y)], fill=color)
        else:
            self.draw.ellipse([x - r, y - r, x + r, y + r], fill=color)

    def rect(self, x, y, w, h, fill, stroke=None) -> None:
        s = self.s
        self.draw.rectangle([x * s, y * s, (x + max(w, 0)) * s, (y + max(h, 0)) * s], fill=fill, outline=stroke)

    def text(self, x, y, s, size=12, anchor="start", color=TEXT, bold=False) -> None:
        a = {"start": "lm", "middle": "mm", "end": "rm"}[anchor]
        self.draw.text((x * self.s, y * self.s), str(s), fill=color, font=self._font(size, bold), anchor=a)

    def save(self, path: Path) -> None:
        self.img.save(path)


# -- axes -------------------------------------------------------------------------------------
def _count_label(v: float) -> str:
    if v >= 1e6:
        return f"{v / 1e6:g}M"
    if v >= 1e3:
        return f"{v / 1e3:g}k"
    return f"{v:g}"


def _time_label(v: float) -> str:
    if v >= 1:
        return f"{v:g} s"
    if v >= 1e-3:
        return f"{v * 1e3:g} ms"
    if v >= 1e-6:
        return f"{v * 1e6:g} µs"
    return f"{v * 1e9:g} ns"


def _bytes_label(v: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if v >= size:
            return f"{v / size:g} {unit}"
    return f"{v:g} B"


class LogAxes:
    """A log-log panel at (x, y, w, h) in canvas units."""

    def __init__(self, c, x, y, w, h, xs: Sequence[float], ys: Sequence[float]) -> None:
        self.c, self.x, self.y, self.w, self.h = c, x, y, w, h
        self.x0, self.x1 = self._range(xs)
        self.y0, self.y1 = self._range(ys)

    @staticmethod
    def _range(vals: Sequence[float]) -> tuple[float, float]:
        vals = [v for v in vals if v and v > 0]
        if not vals:
            return 0.0, 1.0
        lo, hi = math.floor(math.log10(min(vals))), math.ceil(math.log10(max(vals)))
        if hi <= lo:
            hi = lo + 1
        return float(lo), float(hi)

    def px(self, v: float) -> float:
        return self.x + (math.log10(v) - self.x0) / (self.x1 - self.x0) * self.w

    def py(self, v: float) -> float:
        return self.y + self.h - (math.log10(v) - self.y0) / (self.y1 - self.y0) * self.h

    def draw_frame(self, title: str, xlabel: str, ylabel: str, xfmt, yfmt) -> None:
        c = self.c
        for lo, hi, horizontal in ((self.x0, self.x1, False), (self.y0, self.y1, True)):
            for d in range(int(lo), int(hi) + 1):
                for m in range(1, 10):
                    v = m * 10.0**d
                    if math.log10(v) > hi + 1e-9:
                        break
                    color = GRID if m == 1 else GRID_MINOR
                    if horizontal:
                        c.line(self.x, self.py(v), self.x + self.w, self.py(v), color, 1)
                    else:
                        c.line(self.px(v), self.y, self.px(v), self.y + self.h, color, 1)
        c.line(self.x, self.y + self.h, self.x + self.w, self.y + self.h, AXIS, 1.2)
        c.line(self.x, self.y, self.x, self.y + self.h, AXIS, 1.2)
        for d in range(int(self.x0), int(self.x1) + 1):
            v = 10.0**d
            c.line(self.px(v), self.y + self.h, self.px(v), self.y + self.h + 5, AXIS, 1)
            c.text(self.px(v), self.y + self.h + 16, xfmt(v), 11, "middle")
        for d in range(int(self.y0), int(self.y1) + 1):
            v = 10.0**d
            c.line(self.x - 5, self.py(v), self.x, self.py(v), AXIS, 1)
            c.text(self.x - 8, self.py(v), yfmt(v), 11, "end")
        c.text(self.x, self.y - 30, title, 15, "start", bold=True)
        c.text(self.x, self.y - 12, ylabel, 11, "start", "#666666")
        c.text(self.x + self.w, self.y + self.h + 36, xlabel, 11, "end", "#666666")


def _light(color: str, amount: float = 0.65) -> str:
    """``color`` blended towards white."""
    r, g, b = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return "#" + "".join(f"{int(v + (255 - v) * amount):02x}" for v in (r, g, b))


def _shape(method: str) -> str:
    return {"imgtui": "circle", "article": "square"}.get(method, "diamond")


def _time_panel(c, table: ResultTable, experiment: str, x, y, w, h) -> bool:
    rows = [r for r in table.rows if r.experiment == experiment and r.error is None and r.median_s and r.cache in ("warm", "")]
    c_title = {"store_many": "Store many images", "read_many": "Read many images"}.get(experiment, experiment)
    series: dict[tuple[str, str], list[ResultRow]] = {}
    for r in rows:
        series.setdefault((r.backend, r.method), []).append(r)
    if not rows:
        c.text(x, y - 30, c_title, 15, "start", bold=True)
        c.text(x + w / 2, y + h / 2, "no results", 12, "middle", "#888888")
        return False
    ax = LogAxes(c, x, y, w, h, [r.count for r in rows], [r.median_s for r in rows])
    ax.draw_frame(c_title, "number of images (log)", "time, median of repeats (log)", _count_label, _time_label)
    for key in sorted(series, key=_series_order):
        pts = sorted(series[key], key=lambda r: r.count)
        color = backend_color(key[0])
        xy = [(ax.px(r.count), ax.py(r.median_s)) for r in pts]
        if len(xy) > 1:
            c.polyline(xy, color, 2.0, METHOD_DASH.get(key[1]))
        for px_, py_ in xy:
            c.marker(px_, py_, color, _shape(key[1]))
    return True


def _disk_panel(c, table: ResultTable, x, y, w, h) -> None:
    rows = [r for r in table.rows if r.experiment == "disk_usage" and r.error is None and r.bytes_on_disk]
    if not rows:
        rows = [r for r in table.rows if r.experiment == "store_many" and r.error is None and r.bytes_on_disk]
    c.text(x, y - 30, "Disk usage", 15, "start", bold=True)
    if not rows:
        c.text(x + w / 2, y + h / 2, "no results", 12, "middle", "#888888")
        return
    n = max(r.count for r in rows)
    rows = sorted((r for r in rows if r.count == n), key=lambda r: _series_order((r.backend, r.method)))
    raw = next((r.raw_bytes for r in rows if r.raw_bytes), None)
    c.text(x, y - 12, f"bytes on disk for {n:,} images" + (f" (raw pixels: {_bytes_label(raw)})" if raw else ""),
           11, "start", "#666666")
    top = max(r.bytes_on_disk for r in rows)
    label_w = 110
    bar_x, bar_w = x + label_w, w - label_w - 75
    slot = min(34.0, h / max(1, len(rows)))
    for i, r in enumerate(rows):
        by = y + 8 + i * slot
        color = backend_color(r.backend)
        frac = r.bytes_on_disk / top if top else 0
        c.text(bar_x - 8, by + slot * 0.4, series_label(r.backend, r.method).replace(" (np.save/np.load)", ""),
               11, "end")
        if r.method == "article":
            c.rect(bar_x, by, bar_w * frac, slot * 0.8, _light(color), color)
        else:
            c.rect(bar_x, by, bar_w * frac, slot * 0.8, color)
        over = f"{r.overhead:.2f}x raw" if r.overhead else _bytes_label(r.bytes_on_disk)
        c.text(bar_x + bar_w * frac + 6, by + slot * 0.4, over, 11, "start")
    if raw and top:
        rx = bar_x + bar_w * raw / top
        c.line(rx, y, rx, y + 8 + len(rows) * slot, "#cc0000", 1.2, (4, 3))
        c.text(rx, y + 16 + len(rows) * slot, "raw", 10, "middle", "#cc0000")


def _legend(c, table: ResultTable, x, y, w) -> None:
    keys = sorted({(r.backend, r.method) for r in table.rows
                   if r.experiment in ("store_many", "read_many") and r.error is None}, key=_series_order)
    col_w = 200
    per_row = max(1, int(w // col_w))
    for i, key in enumerate(keys):
        lx = x + (i % per_row) * col_w
        ly = y + (i // per_row) * 20
        color = backend_color(key[0])
        c.line(lx, ly, lx + 30, ly, color, 2.0, METHOD_DASH.get(key[1]))
        c.marker(lx + 15, ly, color, _shape(key[1]))
        c.text(lx + 38, ly, series_label(*key), 12, "start")


def draw(c, table: ResultTable) -> None:
    W = c.w
    panel_w, panel_h = (W - 80 - 2 * 90) / 3, 300
    top = 95
    c.text(20, 24, "imgtui bench" + (f": {table.dataset}" if table.dataset else ""), 17, "start", bold=True)
    m = table.machine or {}
    sub = ", ".join(str(v) for v in (
        m.get("cpu"), f"{m['cpu_count']} CPUs" if m.get("cpu_count") else None,
        f"{m['ram_bytes'] / 2**30:.0f} GiB RAM" if m.get("ram_bytes") else None,
        m.get("filesystem"), f"Python {m['python']}" if m.get("python") else None,
    ) if v)
    if sub:
        c.text(20, 46, sub, 11, "start", "#666666")
    x = 80
    _time_panel(c, table, "store_many", x, top, panel_w, panel_h)
    _time_panel(c, table, "read_many", x + panel_w + 90, top, panel_w, panel_h)
    _disk_panel(c, table, x + 2 * (panel_w + 90) - 20, top, panel_w + 20, panel_h)
    _legend(c, table, x, top + panel_h + 62, W - x - 20)
    c.text(W - 20, c.h - 14, "lines: solid imgtui, dashed article, dotted floor", 10, "end", "#888888")


def save_plot(table: ResultTable, path: str | Path, width: int = 1400, height: int = 520) -> Path:
    """Write the figure to ``path`` (.svg by hand, .png with Pillow)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".svg":
        c = SvgCanvas(width, height)
    elif suffix == ".png":
        c = PngCanvas(width, height)
    else:
        raise ImgtuiError(f"{p}: a plot file must end in .svg or .png")
    draw(c, table)
    c.save(p)
    return p
