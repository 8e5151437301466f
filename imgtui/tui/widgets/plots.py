"""Plots of the results so far: time vs count (log-log) for store_many and read_many, disk usage bars."""

from __future__ import annotations

from collections import defaultdict

from textual.app import ComposeResult
from textual.containers import Grid
from textual_plotext import PlotextPlot

from ...bench.model import ResultRow


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

    def update_rows(self, rows: list[ResultRow]) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title(f"{self.experiment}: median time vs count")
        plt.xlabel("records")
        plt.ylabel("seconds")
        data = series(rows, self.experiment)
        if data:
            plt.xscale("log")
            plt.yscale("log")
            for name, (xs, ys) in data.items():
                plt.plot(xs, ys, label=name, marker="braille")
        self.refresh()


class DiskPlot(PlotextPlot):
    """Bytes on disk per backend/method at the largest count measured."""

    def update_rows(self, rows: list[ResultRow]) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        labels, mb, count = disk_usage(rows)
        plt.title("disk usage (MB)" + (f" at {count:,} records" if count else ""))
        if labels:
            plt.bar(labels, mb, orientation="horizontal", width=0.3)
        self.refresh()


class Plots(Grid):
    """The plots view: store_many and read_many time plots and the disk usage bars."""

    def compose(self) -> ComposeResult:
        yield TimePlot("store_many", id="plot-store")
        yield TimePlot("read_many", id="plot-read")
        yield DiskPlot(id="plot-disk")

    def on_mount(self) -> None:
        self.update_rows([])

    def update_rows(self, rows: list[ResultRow]) -> None:
        for plot in self.query(TimePlot):
            plot.update_rows(rows)
        self.query_one(DiskPlot).update_rows(rows)
