"""A virtual list of store records: index, label, shape, dtype and checksum status.

Nothing here is a widget per row: the list is a Line API ``ScrollView`` over ``row_count`` virtual
rows and ``render_line`` draws only the rows on screen, so 100,000+ records cost no more than 40.

Data arrives from the screen's workers:
- ``set_count(n)``: rows 0..n-1 are store indices 0..n-1;
- ``set_labels(labels)``: every label at once (from ``reader.labels()``, no images loaded);
- ``set_rows(indices | None)``: show only these store indices (a label filter), or all again;
- ``set_details({index: RowDetails})``: shape/dtype/checksum of some records.
When visible rows lack details the list posts :class:`RecordList.DetailsWanted` (at most one
request per distinct set of rows); when the cursor moves it posts :class:`RecordList.Highlighted`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from rich.cells import set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.cache import LRUCache
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

#: column widths (cells) after the index column
LABEL_W, SHAPE_W, DTYPE_W, STATUS_W = 16, 14, 8, 10


@dataclass(frozen=True)
class RowDetails:
    shape: str
    dtype: str
    #: "ok", "BAD", "none" (no checksum stored) or "unreadable"
    status: str


class RecordList(ScrollView, can_focus=True):
    COMPONENT_CLASSES = {
        "record-list--cursor",
        "record-list--index",
        "record-list--pending",
        "record-list--ok",
        "record-list--bad",
    }

    DEFAULT_CSS = """
    RecordList {
        background: $surface;
    }
    RecordList > .record-list--cursor {
        background: $block-cursor-blurred-background;
    }
    RecordList:focus > .record-list--cursor {
        background: $block-cursor-background;
        color: $block-cursor-foreground;
        text-style: bold;
    }
    RecordList > .record-list--index { color: $text-muted; }
    RecordList > .record-list--pending { color: $text-disabled; }
    RecordList > .record-list--ok { color: $text-success; }
    RecordList > .record-list--bad { color: $text-error; text-style: bold; }
    """

    BINDINGS = [
        Binding("up", "cursor_up", "Up", show=False),
        Binding("down", "cursor_down", "Down", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("home", "first", "First", show=False),
        Binding("end", "last", "Last", show=False),
    ]

    #: cursor position as a row of the current view (not a store index)
    #: the highlighted row; watch_cursor repaints only the rows that change (repaint=False: a
    #: reactive repaint would redraw every row on each key press)
    cursor: reactive[int] = reactive(0, always_update=True, init=False, repaint=False)

    @dataclass
    class Highlighted(Message):
        record_list: "RecordList"
        #: the store index under the cursor, or None when the view is empty
        index: int | None
        row: int

    @dataclass
    class DetailsWanted(Message):
        record_list: "RecordList"
        indices: tuple[int, ...]

    def __init__(self, *, cache_size: int = 4096, name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._count = 0
        self._rows: np.ndarray | None = None
        self._labels: Sequence | None = None
        self._details: LRUCache[int, RowDetails] = LRUCache(cache_size)
        self._last_request: tuple[int, ...] = ()
        self._request_scheduled = False
        self._index_width = 1
        self.lines_rendered = 0  # for tests: rows drawn so far
        self._style_cache: tuple[dict[str, Style], dict[str, Style]] | None = None

    # -- data ------------------------------------------------------------------------------
    @property
    def count(self) -> int:
        """Records in the store."""
        return self._count

    @property
    def row_count(self) -> int:
        """Rows in the current view (all records, or those that match the filter)."""
        return self._count if self._rows is None else len(self._rows)

    @property
    def filtered(self) -> bool:
        return self._rows is not None

    @property
    def labels_loaded(self) -> bool:
        return self._labels is not None

    @property
    def line_width(self) -> int:
        return self._index_width + 2 + LABEL_W + 1 + SHAPE_W + DTYPE_W + STATUS_W

    def header(self) -> str:
        """Column titles aligned with the rows (the screen shows them above the list)."""
        return (
            f"{'#':>{self._index_width}}  {'label':<{LABEL_W}} {'shape':<{SHAPE_W}}"
            f"{'dtype':<{DTYPE_W}}{'checksum':<{STATUS_W}}"
        )

    def index_at(self, row: int) -> int | None:
        if not 0 <= row < self.row_count:
            return None
        return int(self._rows[row]) if self._rows is not None else row

    def row_of(self, index: int) -> int | None:
        """The row showing store index ``index`` in the current view, or None."""
        if self._rows is None:
            return index if 0 <= index < self._count else None
        pos = int(np.searchsorted(self._rows, index))
        if pos < len(self._rows) and int(self._rows[pos]) == index:
            return pos
        return None

    @property
    def current_index(self) -> int | None:
        return self.index_at(self.cursor)

    def label_of(self, index: int) -> object | None:
        if self._labels is None or not 0 <= index < len(self._labels):
            return None
        return self._labels[index]

    def details_of(self, index: int) -> RowDetails | None:
        return self._details.get(index)

    def set_count(self, count: int) -> None:
        self._count = max(0, int(count))
        self._index_width = max(1, len(str(max(0, self._count - 1))))
        self._rows = None
        self._update_virtual_size()
        self.cursor = 0

    def set_labels(self, labels: Sequence) -> None:
        self._labels = labels
        self.refresh()

    def set_rows(self, rows: np.ndarray | Sequence[int] | None) -> None:
        """Show only the given store indices (sorted), or everything with ``None``.

        The cursor stays on the same record when it is still shown, else goes to the first row.
        """
        keep = self.current_index
        self._rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        self._update_virtual_size()
        row = self.row_of(keep) if keep is not None else None
        self.cursor = row if row is not None else 0
        self.refresh()

    def set_details(self, details: dict[int, RowDetails]) -> None:
        """Keep the details and redraw only the rows on screen that show them (a redraw of the
        whole list per batch was two of the three redraws of a PageDown)."""
        for index, d in details.items():
            self._details.set(index, d)
        top = round(self.scroll_offset.y)
        rows = [r - top for r in (self.row_of(i) for i in details) if r is not None and 0 <= r - top < self.size.height]
        if rows:
            self.refresh(Region(0, min(rows), self.size.width, max(rows) - min(rows) + 1))

    def _update_virtual_size(self) -> None:
        self.virtual_size = Size(self.line_width, self.row_count)
        self.refresh()

    # -- cursor ----------------------------------------------------------------------------
    def validate_cursor(self, value: int) -> int:
        return max(0, min(int(value), self.row_count - 1)) if self.row_count else 0

    def watch_cursor(self, old: int, new: int) -> None:
        top = round(self.scroll_offset.y)
        self._scroll_cursor_into_view()
        if round(self.scroll_offset.y) == top:  # not scrolled: only the two rows change
            for row in (old, new):
                if 0 <= row - top < self.size.height:
                    self.refresh(Region(0, row - top, self.size.width, 1))
        else:
            self.refresh()
            self._want_details()  # read ahead from the new page on
        self.post_message(self.Highlighted(self, self.index_at(new), new))

    def _page_height(self) -> int:
        return max(1, self.scrollable_content_region.height)

    def _scroll_cursor_into_view(self) -> None:
        height = self._page_height()
        top = round(self.scroll_offset.y)
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False, force=True)
        elif self.cursor >= top + height:
            self.scroll_to(y=self.cursor - height + 1, animate=False, force=True)

    def go_to_index(self, index: int) -> bool:
        """Move the cursor to store index ``index``; False when it is not in the view."""
        row = self.row_of(index)
        if row is None:
            return False
        self.cursor = row
        # a jump lands in the middle of the page so the rows around it are visible too
        top = max(0, min(row - self._page_height() // 2, self.row_count - self._page_height()))
        self.scroll_to(y=top, animate=False, force=True)
        return True

    def action_cursor_up(self) -> None:
        self.cursor -= 1

    def action_cursor_down(self) -> None:
        self.cursor += 1

    def action_page_up(self) -> None:
        self.cursor -= self._page_height()

    def action_page_down(self) -> None:
        self.cursor += self._page_height()

    def action_first(self) -> None:
        self.cursor = 0

    def action_last(self) -> None:
        self.cursor = self.row_count - 1

    def on_resize(self) -> None:
        self._scroll_cursor_into_view()

    def on_click(self, event: events.Click) -> None:
        """A click selects the row under the pointer."""
        row = round(self.scroll_offset.y) + event.y
        if 0 <= row < self.row_count:
            self.cursor = row
        self.focus()

    # -- drawing ---------------------------------------------------------------------------
    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        row = scroll_y + y
        width = self.scrollable_content_region.width
        plain, cursor = self._styles()
        index = self.index_at(row)
        if index is None:
            return Strip.blank(width, plain[""])
        self.lines_rendered += 1
        styles = cursor if row == self.cursor else plain
        base = styles[""]

        def fg(component: str) -> Style:
            return styles[component]

        label = self.label_of(index)
        label_text = "…" if label is None else str(label).replace("\n", " ")
        details = self._details.get(index)
        if details is None:
            self._want_details()
            shape, dtype, status, status_style = "…", "…", "…", fg("record-list--pending")
        else:
            shape, dtype, status = details.shape, details.dtype, details.status
            status_style = fg("record-list--ok" if status == "ok" else (
                "record-list--bad" if status in ("BAD", "unreadable") else "record-list--pending"))
        segments = [
            Segment(f"{index:>{self._index_width}}  ", fg("record-list--index")),
            Segment(set_cell_size(label_text, LABEL_W) + " ", base),
            Segment(set_cell_size(shape, SHAPE_W), base),
            Segment(set_cell_size(dtype, DTYPE_W), base),
            Segment(set_cell_size(status, STATUS_W), status_style),
        ]
        strip = Strip(segments).adjust_cell_length(max(self.line_width, width + scroll_x), base)
        return strip.crop(scroll_x, scroll_x + width)

    _COMPONENTS = ("record-list--index", "record-list--pending", "record-list--ok", "record-list--bad")

    def _styles(self) -> tuple[dict[str, Style], dict[str, Style]]:
        """The row styles (plain, cursor), resolved once per style change instead of per line
        (resolving component styles was most of the cost of drawing a page)."""
        cached = self._style_cache
        if cached is None:
            base = self.rich_style
            cursor = base + self.get_component_rich_style("record-list--cursor")
            colours = {c: Style(color=self.get_component_rich_style(c).color) for c in self._COMPONENTS}
            cached = self._style_cache = (
                {"": base, **{c: base + colour for c, colour in colours.items()}},
                {"": cursor, **{c: cursor + colour for c, colour in colours.items()}},
            )
        return cached

    def notify_style_update(self) -> None:
        self._style_cache = None
        super().notify_style_update()

    def _on_focus(self, event) -> None:
        self._style_cache = None
        super()._on_focus(event)

    def _on_blur(self, event) -> None:
        self._style_cache = None
        super()._on_blur(event)

    def visible_indices(self) -> list[int]:
        top = round(self.scroll_offset.y)
        rows = range(top, min(self.row_count, top + self._page_height()))
        return [i for i in (self.index_at(r) for r in rows) if i is not None]

    def _want_details(self) -> None:
        if not self._request_scheduled:
            self._request_scheduled = True
            self.call_after_refresh(self._request_details)

    def _request_details(self) -> None:
        """Ask for the details of the rows on screen, then of the pages below and above (read
        ahead: after PageDown the rows are drawn once, complete, instead of "…" and again)."""
        self._request_scheduled = False
        top, page = round(self.scroll_offset.y), self._page_height()
        rows = [*range(top, top + page), *range(top + page, top + 2 * page), *range(max(0, top - page), top)]
        missing = tuple(i for i in (self.index_at(r) for r in rows) if i is not None and i not in self._details)
        if missing and missing != self._last_request:
            self._last_request = missing
            self.post_message(self.DetailsWanted(self, missing))
