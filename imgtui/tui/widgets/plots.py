"""Plots of the results so far: time vs count (log-log) for store_many and read_many, disk usage bars.

Axes read in units (10 µs, 1 ms, 1 s; 10, 1k, 100k records); the legend sits below the plots (a
legend inside a terminal plot covers the lines): one colour per backend (the registry's), one
marker per method.
"""

from __future__ import annotations

import math
from collections import defaultdict

from rich.text import Text
from textual.app import ComposeResult, RenderResult
from textual.containers import Grid, Vertical
from textual.widget import Widget
from textual.widgets import Static
from textual_plotext import PlotextPlot

from ...bench import backend_info
from ...bench.fmt import fmt_seconds
from ...bench.model import ResultRow

#: the marker of each method's line (others: "•")
METHOD_MARKERS = {"imgtui": "•", "article": "x", "floor": "+"}


def fmt_count(n: float) -> str:
    """10, 100, 1k, 10k, 100k, 1M."""
    for unit, div in (("M", 1e6), ("k", 1e3)):
        if n >= div:
            v = n / div
            return f"{v:.0f}{unit}" if v == int(v) else f"{v:.1f}{unit}"
    return f"{n:.0f}"


def fmt_time_tick(s: float) -> str:
    """A decade of seconds as a tick: 1 µs, 10 µs, 100 µs, 1 ms, ..., 1 s, 10 s."""
    for unit, div in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if s >= div * 0.999:
            return f"{s / div:.0f} {unit}"
    return f"{s:.0e} s"


def time_ticks(lo: float, hi: float, most: int = 12) -> tuple[list[float], list[str]]:
    """Ticks inside [lo, hi] (a tick outside the data is drawn outside the plot): the powers of ten
    there (every second or third one when more than ``most`` would not fit: plotext otherwise drops
    some itself, differently from run to run), or the two ends when there are fewer than two."""
    if most < 2:  # a plot one row high: two ticks would share it (plotext then picks either)
        return [hi], [fmt_seconds(hi)]
    decades = [10.0 ** e for e in range(math.ceil(math.log10(lo) - 1e-9), math.floor(math.log10(hi) + 1e-9) + 1)]
    step = 1
    while len(decades[::step]) > most:
        step += 1
    decades = decades[::step]
    if len(decades) >= 2:
        return decades, [fmt_time_tick(t) for t in decades]
    ends = sorted({lo, hi})
    return ends, [fmt_seconds(t) for t in ends]


def marker(method: str) -> str:
    return METHOD_MARKERS.get(method, "•")


def series_colour(name: str) -> tuple[int, int, int]:
    """The backend's colour from the registry as RGB (plotext takes tuples); grey for the floor."""
    hexa = backend_info.colour(name.split("/", 1)[0], "#9a9a9a").lstrip("#")
    return int(hexa[0:2], 16), int(hexa[2:4], 16), int(hexa[4:6], 16)


def legend(rows: list[ResultRow]) -> Text:
    """One entry per backend (its colour) and per method (its marker) present in ``rows``."""
    backends = sorted({r.backend for r in rows if r.median_s is not None and not r.error})
    methods = sorted({r.method for r in rows if r.median_s is not None and not r.error})
    text = Text()
    for b in backends:
        r, g, bl = series_colour(b)
        text.append("■ ", style=f"rgb({r},{g},{bl})")
        text.append(f"{b}  ")
    if methods:
        text.append("·  ")
    for m in methods:
        text.append(f"{marker(m)} {m}  ")
    return text


def series(rows: list[ResultRow], experiment: str) -> dict[str, tuple[list[int], list[float]]]:
    """{"backend/method": (counts, median seconds)} for one experiment, counts ascending."""
    points: dict[str, dict[int, float]] = defaultdict(dict)
    for r in rows:
        if r.experiment == experiment and r.median_s is not None and not r.error and r.count > 0:
            points[f"{r.backend}/{r.method}"][r.count] = r.median_s
    return {k: (sorted(v), [v[c] for c in sorted(v)]) for k, v in sorted(points.items())}


def disk_usage(rows: list[ResultRow]) -> tuple[list[str], list[float], int | None]:
    """(labels, MB on disk, count) for the largest count that has disk figures."""
    with_bytes = [r for r in rows if r.bytes_on_disk is not None and not r.error]
    if not with_bytes:
        return [], [], None
    count = max(r.count for r in with_bytes)
    usage: dict[str, float] = {}
    for r in with_bytes:
        if r.count == count:
            usage[f"{r.backend}/{r.method}"] = r.bytes_on_disk / 1e6
    labels = sorted(usage)
    return labels, [usage[k] for k in labels], count


class TimePlot(PlotextPlot):
    """Median time vs record count for one experiment, one line per backend/method."""

    def __init__(self, experiment: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.experiment = experiment
        #: (smallest, largest) median time plotted, for the ticks
        self._span: tuple[float, float] | None = None

    def update_rows(self, rows: list[ResultRow]) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title(f"{self.experiment}: median time vs count")
        plt.xlabel("records")
        data = series(rows, self.experiment)
        if data:
            plt.xscale("log")
            plt.yscale("log")
            for name, (xs, ys) in data.items():
                plt.plot(xs, ys, marker=marker(name.split("/", 1)[-1]), color=series_colour(name))
            xs = sorted({x for xs, _ys in data.values() for x in xs})
            ys = [y for _xs, ys in data.values() for y in ys if y > 0]
            plt.xticks(xs, [fmt_count(x) for x in xs])
            self._span = (min(ys), max(ys)) if ys else None
        else:
            self._span = None
        self.refresh()

    def render(self) -> RenderResult:
        if self._span is not None:  # ticks for the height drawn: a tick needs a row and one between
            self.plt.yticks(*time_ticks(*self._span, most=(self.size.height - 5) // 2))
        return super().render()


class DiskBars(Widget):
    """Bytes on disk per backend/method at the largest count measured: one bar a row, drawn here
    (plotext's bars came out different from run to run: its fill depends on set order)."""

    DEFAULT_CSS = "DiskBars { height: 1fr; padding: 0 1; }"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._usage: tuple[list[str], list[float], int | None] = ([], [], None)

    def update_rows(self, rows: list[ResultRow]) -> None:
        self._usage = disk_usage(rows)
        self.refresh()

    def render(self) -> Text:
        labels, mb, count = self._usage
        text = Text("disk usage" + (f" at {fmt_count(count)} records" if count else ""), style="bold", justify="center")
        if not labels:
            return text
        width = max(1, self.content_size.width)
        name_w = min(max(len(label) for label in labels), max(4, width // 3))
        figures = [f" {v:,.1f} MB" if v < 100 else f" {v:,.0f} MB" for v in mb]
        bar_w = max(1, width - name_w - 1 - max(len(f) for f in figures))
        top = max(mb) or 1.0
        for label, value, figure in zip(labels, mb, figures):
            r, g, b = series_colour(label)
            cells = max(1, round(bar_w * value / top)) if value > 0 else 0
            text.append("\n\n")
            text.append(label[:name_w].rjust(name_w) + " ")
            text.append("█" * cells, style=f"rgb({r},{g},{b})")
            text.append(figure)
        return text


class Plots(Vertical):
    """The plots view: store_many and read_many time plots and the disk usage bars, legend below."""

    def compose(self) -> ComposeResult:
        with Grid(id="plot-grid"):
            yield TimePlot("store_many", id="plot-store")
            yield TimePlot("read_many", id="plot-read")
            yield DiskBars(id="plot-disk")
        yield Static("", id="plot-legend")

    def on_mount(self) -> None:
        self.update_rows([])

    def update_rows(self, rows: list[ResultRow]) -> None:
        for plot in self.query(TimePlot):
            plot.update_rows(rows)
        self.query_one(DiskBars).update_rows(rows)
        self.query_one("#plot-legend", Static).update(legend(rows))
