"""The live results table: one row per finished benchmark result, sortable by any column."""

from __future__ import annotations

from typing import Any, Callable

from rich.text import Text
from textual import on
from textual.binding import Binding
from textual.widgets import DataTable

from ...bench.fmt import fmt_bytes, fmt_rate, fmt_ratio, fmt_seconds
from ...bench.model import ResultRow


#: (key, header, value for sorting, text for display, right aligned)
COLUMNS: list[tuple[str, str, Callable[[ResultRow], Any], Callable[[ResultRow], str], bool]] = [
    ("experiment", "experiment", lambda r: r.experiment, lambda r: r.experiment, False),
    ("backend", "backend", lambda r: r.backend, lambda r: r.backend, False),
    ("method", "method", lambda r: r.method, lambda r: r.method, False),
    ("count", "count", lambda r: r.count, lambda r: f"{r.count:,}", True),
    ("median_s", "time (median)", lambda r: r.median_s, lambda r: fmt_seconds(r.median_s), True),
    ("records_per_s", "records/s", lambda r: r.records_per_s, lambda r: fmt_rate(r.records_per_s), True),
    ("ratio_to_floor", "vs floor", lambda r: r.ratio_to_floor, lambda r: fmt_ratio(r.ratio_to_floor), True),
    ("bytes_on_disk", "disk", lambda r: r.bytes_on_disk, lambda r: fmt_bytes(r.bytes_on_disk), True),
    ("peak_rss_bytes", "peak RSS", lambda r: r.peak_rss_bytes, lambda r: fmt_bytes(r.peak_rss_bytes), True),
    ("error", "error", lambda r: r.error or "", lambda r: r.error or "", False),
]
_BY_KEY = {c[0]: c for c in COLUMNS}


def sort_rows(rows: list[ResultRow], getter: Callable[[ResultRow], Any], reverse: bool) -> list[ResultRow]:
    """``rows`` sorted by ``getter``; rows without a value ("-" cells) last in either direction."""
    present = [r for r in rows if getter(r) is not None and getter(r) != ""]
    missing = [r for r in rows if getter(r) is None or getter(r) == ""]
    return sorted(present, key=getter, reverse=reverse) + missing


class ResultsTable(DataTable):
    """A DataTable of ResultRows. Click a header (or press ``o``) to sort; again to reverse."""

    BINDINGS = [
        Binding("o", "cycle_sort", "Sort", show=False, tooltip="Sort by the next column (again to reverse)"),
    ]

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("cursor_type", "row")
        kwargs.setdefault("zebra_stripes", True)
        super().__init__(**kwargs)
        self.rows_data: list[ResultRow] = []
        self.sort_column: str | None = None
        self.sort_reverse = False

    def on_mount(self) -> None:
        for key, header, _get, _fmt, right in COLUMNS:
            self.add_column(Text(header, justify="right" if right else "left"), key=key)

    # -- rows ------------------------------------------------------------------------------
    def _cells(self, row: ResultRow) -> list[Text]:
        cells = []
        for key, _h, _get, fmt, right in COLUMNS:
            style = ""
            if key == "error" and row.error:
                style = self.app.theme_variables.get("text-error", "")
            cells.append(Text(fmt(row), justify="right" if right else "left", style=style, no_wrap=True))
        return cells

    def add_result(self, row: ResultRow) -> None:
        """Append a row (or, when sorted, put it in its sorted place)."""
        self.rows_data.append(row)
        if self.sort_column is None:
            self.add_row(*self._cells(row), key=str(len(self.rows_data) - 1))
        else:
            self._redraw()

    def clear_results(self) -> None:
        self.rows_data = []
        self.clear()

    def sorted_rows(self) -> list[ResultRow]:
        if self.sort_column is None:
            return list(self.rows_data)
        return sort_rows(self.rows_data, _BY_KEY[self.sort_column][2], self.sort_reverse)

    def _redraw(self) -> None:
        cursor = self.cursor_row
        self.clear()
        for i, row in enumerate(self.sorted_rows()):
            self.add_row(*self._cells(row), key=str(i))
        if self.row_count:
            self.move_cursor(row=min(cursor, self.row_count - 1), animate=False)

    def sort_by(self, column: str, reverse: bool | None = None) -> None:
        """Sort by ``column`` (a COLUMNS key); the same column again reverses the order."""
        if column not in _BY_KEY:
            raise ValueError(f"unknown column {column!r}")
        if reverse is None:
            reverse = (not self.sort_reverse) if column == self.sort_column else False
        self.sort_column, self.sort_reverse = column, reverse
        for key, header, _g, _f, right in COLUMNS:
            arrow = (" ▼" if reverse else " ▲") if key == column else ""
            self.columns[key].label = Text(header + arrow, justify="right" if right else "left")
        self._redraw()

    @on(DataTable.HeaderSelected)
    def _header_clicked(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        self.sort_by(str(event.column_key.value))

    def action_cycle_sort(self) -> None:
        keys = [c[0] for c in COLUMNS]
        if self.sort_column is None:
            self.sort_by(keys[0])
        elif not self.sort_reverse:
            self.sort_by(self.sort_column, reverse=True)
        else:
            self.sort_by(keys[(keys.index(self.sort_column) + 1) % len(keys)], reverse=False)
