"""A page of thumbnails of a store's records (``v`` in the browser): arrows move the selection,
PageUp/PageDown turn pages, Enter (or a click) goes back to the browser at the chosen record."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable

from rich.text import Text
from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.containers import Grid, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Static
from textual.worker import get_current_worker

from ..imaging import thumbnail
from ..store_view import one_line
from ..widgets.image_view import ImageView

#: tiles per page (columns x rows)
COLUMNS, ROWS = 6, 3


@dataclass
class TileLoaded(Message):
    page: int
    slot: int
    index: int
    text: Text | None
    caption: str


class Tile(Vertical):
    """One record: its thumbnail and a caption (index and label)."""

    def __init__(self, slot: int) -> None:
        super().__init__(classes="tile", id=f"tile-{slot}")
        self.slot = slot

    def compose(self) -> ComposeResult:
        yield ImageView("", classes="tile-image")
        yield Static("", classes="tile-caption", markup=False)

    def on_click(self, event: events.Click) -> None:
        screen = self.screen
        if isinstance(screen, GridScreen):
            screen.select_slot(self.slot, open_it=event.chain >= 2)


class GridScreen(Screen[int]):
    """Thumbnails of ``count`` records read with ``read(index) -> (image or None, caption)``;
    dismissed with the chosen record index (or the start index on Escape)."""

    HELP = """\\
# Thumbnails

A page of the store's records as thumbnails. Arrows move the selection, PageUp/PageDown turn the
page, Enter (or a double click) opens the selected record in the browser, Escape goes back.
"""

    DEFAULT_CSS = f"""
    GridScreen #grid {{ grid-size: {COLUMNS} {ROWS}; grid-gutter: 0 1; height: 1fr; padding: 0 1; }}
    GridScreen .tile {{ border: round $primary 30%; height: 1fr; }}
    GridScreen .tile.-selected {{ border: round $accent; }}
    GridScreen .tile-image {{ height: 1fr; }}
    GridScreen .tile-caption {{ height: 1; color: $text-muted; text-wrap: nowrap; text-overflow: ellipsis; }}
    GridScreen #grid-status {{ height: 1; background: $panel; padding: 0 1; }}
    """

    BINDINGS = [
        Binding("escape", "back", "Back", tooltip="Back to the browser at the record it showed"),
        Binding("enter", "open", "Open", tooltip="Open the selected record in the browser"),
        Binding("left", "move(-1)", "Left", show=False, tooltip="Select the record on the left"),
        Binding("right", "move(1)", "Right", show=False, tooltip="Select the record on the right"),
        Binding("up", "move(-6)", "Up", show=False, tooltip="Select the record above"),
        Binding("down", "move(6)", "Down", show=False, tooltip="Select the record below"),
        Binding("pageup", "page(-1)", "Page up", tooltip="The previous page of thumbnails"),
        Binding("pagedown", "page(1)", "Page down", tooltip="The next page of thumbnails"),
    ]

    def __init__(self, count: int, index: int, read: Callable[[int], tuple[Any, str]],
                 lock: threading.Lock, rows_of: Callable[[], list[int]] | None = None) -> None:
        super().__init__()
        self.count = count
        self.start = index
        self.read = read
        self.lock = lock
        #: the store indices shown (the browser's filter), or all records
        self.indices = rows_of() if rows_of is not None else None
        position = self.indices.index(index) if self.indices is not None and index in self.indices else index
        self.selected = max(0, position)
        self.page = self.selected // (COLUMNS * ROWS)

    @property
    def total(self) -> int:
        return len(self.indices) if self.indices is not None else self.count

    def index_at(self, position: int) -> int:
        return self.indices[position] if self.indices is not None else position

    def compose(self) -> ComposeResult:
        with Grid(id="grid"):
            for slot in range(COLUMNS * ROWS):
                yield Tile(slot)
        yield Static("", id="grid-status")
        yield Footer()

    def on_mount(self) -> None:
        self.call_after_refresh(self._load_page)

    def on_resize(self) -> None:
        self.call_after_refresh(self._load_page)

    # -- drawing ---------------------------------------------------------------------------
    def _load_page(self) -> None:
        if self not in self.app.screen_stack:
            return  # closed before the refresh that loads the page
        per = COLUMNS * ROWS
        first = self.page * per
        try:
            cells = self.query_one("#tile-0", Tile).query_one(ImageView).cells
        except NoMatches:  # removed before the refresh that loads the page
            return
        for slot in range(per):
            tile = self.query_one(f"#tile-{slot}", Tile)
            tile.display = first + slot < self.total
            tile.query_one(ImageView).show_message("…")
            tile.query_one(".tile-caption", Static).update("")
        self._mark()
        self.load_tiles(self.page, first, min(per, self.total - first), cells)

    @work(thread=True, exclusive=True, exit_on_error=False, group="grid")
    def load_tiles(self, page: int, first: int, n: int, cells: tuple[int, int]) -> None:
        worker = get_current_worker()
        for slot in range(n):
            if worker.is_cancelled:
                return
            index = self.index_at(first + slot)
            with self.lock:
                try:
                    image, caption = self.read(index)
                    error = None
                except Exception as exc:
                    image, caption, error = None, f"{index}: unreadable", one_line(exc)
            text = thumbnail(image, *cells) if image is not None else None
            self.post_message(TileLoaded(page, slot, index, text, caption if error is None else caption))

    def on_tile_loaded(self, message: TileLoaded) -> None:
        if message.page != self.page:
            return
        tile = self.query_one(f"#tile-{message.slot}", Tile)
        view = tile.query_one(ImageView)
        if message.text is not None:
            view.show_image(message.text, message.index)
        else:
            view.show_message("cannot be read", message.index)
        tile.query_one(".tile-caption", Static).update(message.caption)

    def _mark(self) -> None:
        per = COLUMNS * ROWS
        for slot in range(per):
            self.query_one(f"#tile-{slot}", Tile).set_class(self.page * per + slot == self.selected, "-selected")
        index = self.index_at(self.selected) if self.total else None
        pages = max(1, -(-self.total // per))
        self.query_one("#grid-status", Static).update(
            Text(f"record {index:,} · page {self.page + 1:,} of {pages:,} · {self.total:,} records"
                 if index is not None else "no records"))

    # -- actions ---------------------------------------------------------------------------
    def select_slot(self, slot: int, open_it: bool = False) -> None:
        position = self.page * COLUMNS * ROWS + slot
        if position < self.total:
            self.selected = position
            self._mark()
            if open_it:
                self.action_open()

    def action_move(self, step: int) -> None:
        if not self.total:
            return
        self.selected = max(0, min(self.total - 1, self.selected + step))
        page = self.selected // (COLUMNS * ROWS)
        if page != self.page:
            self.page = page
            self._load_page()
        else:
            self._mark()

    def action_page(self, step: int) -> None:
        per = COLUMNS * ROWS
        pages = max(1, -(-self.total // per))
        page = max(0, min(pages - 1, self.page + step))
        if page != self.page:
            self.page = page
            self.selected = min(self.total - 1, page * per + self.selected % per)
            self._load_page()

    def action_open(self) -> None:
        self.dismiss(self.index_at(self.selected) if self.total else self.start)

    def action_back(self) -> None:
        self.dismiss(self.start)

    @on(TileLoaded)
    def _stop(self, message: TileLoaded) -> None:
        message.stop()
