"""Browse one store: a virtual record list, the selected image in half blocks, its label/metadata.

All store access happens in thread workers (``@work(thread=True, exclusive=True,
exit_on_error=False, group=...)``) that post messages; the ``on_*`` handlers update widgets. A lock
serialises reader calls (LMDB/HDF5 handles are not shared between threads safely) and the reader is
closed under that lock when the screen goes away.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np
from PIL import Image as PILImage
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.cache import LRUCache
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Input, Static
from textual.worker import Worker, WorkerState, get_current_worker

from ...bench.backend_info import names as backend_names, store_suffix
from ...errors import ImgtuiError
from .. import graphics
from ..imaging import depth_of, display_rgb, plane, thumbnail_lines, window_to_uint8
from ..store_view import (RecordView, find_sibling_stores, info_text, one_line, open_any_store, read_record_view,
                          record_panel, start_viewer, store_info, write_viewable)
from ..widgets.image_view import ImageView
from ..widgets.record_list import RecordList, RowDetails
from .compare import CompareScreen
from .grid import GridScreen
from .labels import LabelPicker

#: a page of row details is posted at once, or in parts every this many seconds when reading is slow
DETAILS_EVERY = 0.1
#: moves closer together than this (a held key) defer the record's image and details until the
#: cursor rests this long: the list keeps up with the key instead of drawing every image on the way
IMAGE_SETTLE = 0.12
#: decoded thumbnails kept per screen (keyed by record index and cell size)
THUMBNAIL_CACHE = 64
#: records whose metadata the filter reads at a time
FILTER_BATCH = 256
#: zoom factors of the image pane (1: the whole image fitted)
ZOOM_LEVELS = [1, 2, 4, 8, 16]


def zoom_crop(image: np.ndarray, zoom: int, pan: tuple[float, float]) -> np.ndarray:
    """The part of ``image`` seen at ``zoom`` (1/zoom of each side) centred at ``pan`` (fractions
    of width and height), kept inside the image."""
    if zoom <= 1:
        return image
    h, w = image.shape[:2]
    ch, cw = max(1, h // zoom), max(1, w // zoom)
    top = int(round(pan[1] * h - ch / 2))
    left = int(round(pan[0] * w - cw / 2))
    top, left = max(0, min(h - ch, top)), max(0, min(w - cw, left))
    return image[top:top + ch, left:left + cw]


# -- messages --------------------------------------------------------------------------------
@dataclass
class StoreOpened(Message):
    reader: Any
    info: dict


@dataclass
class StoreFailed(Message):
    error: str


@dataclass
class LabelsLoaded(Message):
    labels: Sequence


@dataclass
class DetailsLoaded(Message):
    details: dict


@dataclass
class RecordLoaded(Message):
    view: RecordView
    key: tuple


@dataclass
class FilterDone(Message):
    query: str
    rows: np.ndarray | None
    #: records whose metadata was searched so far (all: the filter is complete)
    scanned: int = 0
    total: int = 0


@dataclass
class BadFound(Message):
    """The next bad or unreadable record after ``start`` (None: none until the end)."""

    start: int
    index: int | None
    scanned: int


def _all_labels(reader: Any) -> Sequence:
    """Every label of ``reader``: one numpy array where the reader gives it (int labels: 8 bytes a
    record; 1,000,000 LMDB labels in 0.3 s instead of 0.6 s and 50 MB as a list), else a list."""
    as_array = getattr(reader, "labels_array", None)
    return as_array() if as_array is not None else list(reader.labels())


class BrowserScreen(Screen):
    """Browse the records of the store at ``path``."""

    CSS_PATH = "../browser.tcss"

    HELP = """\
# Record browser

The records of one store: a virtual list (only the rows on screen are read), the selected image
drawn in the terminal, its label, metadata and whether its checksum matched. A record that cannot be
read is shown as a row with its one-line error, and the others stay browsable.

Move with the arrow keys, PageUp/PageDown, Home/End, **n**/**p** or a click; **g** jumps to a
record number; **f** filters: records whose label or metadata contains a text (case-insensitive;
several texts separated by commas; `=text` matches a label exactly; labels at once, metadata as it
is read); **l** picks a label from a list with counts; **x** jumps to the next
damaged or unreadable record; **o** opens the record in your image viewer (`$IMGTUI_VIEWER`, else
xdg-open/open; PNG for 8/16-bit and bool pixels, TIFF for signed, 32-bit and float ones); **y**
copies `STORE[INDEX]`; **z** zooms into the image (2x to 16x, windowed like the whole image),
shift+**z** zooms out, shift+arrows pan; **[** and **]** step through the slices of a 3-D record
(**{** and **}** by ten; it opens on its middle slice, windowed over the whole volume); **v** shows a
page of thumbnails (Enter opens the selected one); **c** compares the record with
the same record of the other backends' stores; Escape goes back.
"""

    BINDINGS = [
        Binding("escape", "back", "Back", tooltip="Back to the previous screen"),
        Binding("n", "next", "Next", tooltip="Next record"),
        Binding("p", "previous", "Prev", tooltip="Previous record"),
        Binding("g", "jump", "Go to", tooltip="Jump to a record number"),
        Binding("f", "filter", "Filter", tooltip="Show only the records whose label or metadata contains a text"),
        Binding("l", "pick_label", "Labels", tooltip="Pick a label from those in the store, with their counts"),
        Binding("x", "next_bad", "Next bad", tooltip="Jump to the next record that is damaged or cannot be read"),
        Binding("o", "open_viewer", "Open", tooltip="Open the record in the system's image viewer ($IMGTUI_VIEWER)"),
        Binding("y", "copy", "Copy", tooltip="Copy the store path and record index (STORE[INDEX])"),
        Binding("v", "grid", "Thumbnails", tooltip="A page of thumbnails; Enter opens the selected record"),
        Binding("z", "zoom(1)", "Zoom", tooltip="Zoom into the image (2x, 4x, 8x, 16x); shift+z zooms out"),
        Binding("Z", "zoom(-1)", "Zoom out", show=False, tooltip="Zoom out of the image"),
        Binding("shift+left", "pan(-1, 0)", "Pan left", show=False, tooltip="Pan the zoomed image left"),
        Binding("shift+right", "pan(1, 0)", "Pan right", show=False, tooltip="Pan the zoomed image right"),
        Binding("shift+up", "pan(0, -1)", "Pan up", show=False, tooltip="Pan the zoomed image up"),
        Binding("shift+down", "pan(0, 1)", "Pan down", show=False, tooltip="Pan the zoomed image down"),
        Binding("c", "compare", "Compare", tooltip="The same record in every backend's store, side by side"),
        Binding("right_square_bracket", "slice(1)", "Next slice", show=False, tooltip="A 3-D record: the next slice"),
        Binding("left_square_bracket", "slice(-1)", "Prev slice", show=False, tooltip="A 3-D record: the previous slice"),
        Binding("right_curly_bracket", "slice(10)", "+10 slices", show=False, tooltip="A 3-D record: 10 slices on"),
        Binding("left_curly_bracket", "slice(-10)", "-10 slices", show=False, tooltip="A 3-D record: 10 slices back"),
    ]

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = str(path)
        self.reader: Any = None
        self.info: dict = {}
        self.error: str | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._labels: Sequence | None = None
        self._labels_requested = False
        self._thumbs: LRUCache[tuple, RecordView] = LRUCache(THUMBNAIL_CACHE)
        self._prompt_mode: str | None = None
        self._filter: str = ""
        self._info_lines = -1
        self._pending_filter = ""
        self._full: tuple[int, RecordView] | None = None
        self._zoom, self._zoom_index, self._pan = 1, -1, (0.5, 0.5)
        #: the slice shown of a 3-D record (None: its middle one) and the shown record's depth
        self._slice: int | None = None
        self._depth = 0
        self._filter_progress = (0, 0)
        self._last_move = 0.0
        self._settle: Any = None  # the timer that loads the image once a held key is released

    # -- layout ----------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static(Text(f"opening {self.path} …"), id="store-info")
        with Horizontal(id="browser-body"):
            with Vertical(id="list-pane"):
                yield Static("", id="list-header")
                yield RecordList(id="records")
                yield Static("", id="list-status")
            with Vertical(id="record-pane"):
                yield ImageView("", id="image")
                gfx = graphics.image_widget(id="image-gfx")
                if gfx is not None:  # Kitty/Sixel terminal: the image drawn in pixels
                    gfx.display = False
                    yield gfx
                yield Static("", id="record-info")
        yield Input(id="prompt", classes="hidden")
        yield Footer()

    @property
    def record_list(self) -> RecordList:
        return self.query_one("#records", RecordList)

    @property
    def image_view(self) -> ImageView:
        return self.query_one("#image", ImageView)

    def on_mount(self) -> None:
        if self not in self.app.screen_stack:
            return  # closed (escape) before it was mounted: nothing to open
        try:
            records = self.record_list
        except NoMatches:  # removed before it was mounted (closed at once, or the app is exiting)
            return
        records.focus()
        self.open_store()

    def on_unmount(self) -> None:
        self.workers.cancel_node(self)
        with self._lock:
            self._closed = True
            reader, self.reader = self.reader, None
            if reader is not None and hasattr(reader, "close"):
                try:
                    reader.close()
                except Exception:
                    pass

    # -- workers ---------------------------------------------------------------------------
    @work(thread=True, exclusive=True, exit_on_error=False, group="open")
    def open_store(self) -> None:
        try:
            reader = open_any_store(self.path)
            info = store_info(reader, self.path)
        except Exception as exc:
            self.post_message(StoreFailed(one_line(exc)))
            return
        self.post_message(StoreOpened(reader, info))

    @work(thread=True, exclusive=True, exit_on_error=False, group="labels")
    def load_labels(self) -> None:
        with self._lock:
            if self._closed or self.reader is None:
                return
            labels = _all_labels(self.reader)
        self.post_message(LabelsLoaded(labels))

    @work(thread=True, exclusive=True, exit_on_error=False, group="details")
    def load_details(self, indices: tuple[int, ...]) -> None:
        worker = get_current_worker()
        batch: dict[int, RowDetails] = {}
        posted = time.monotonic()
        for n, index in enumerate(indices, 1):
            if worker.is_cancelled:
                break
            with self._lock:
                if self._closed or self.reader is None:
                    return
                view = read_record_view(self.reader, index, self.path)
            batch[index] = view.details
            if time.monotonic() - posted > DETAILS_EVERY:  # a slow store: rows fill in as they come
                self.post_message(DetailsLoaded(batch))
                batch, posted = {}, time.monotonic()
        if batch:
            self.post_message(DetailsLoaded(batch))

    @work(thread=True, exclusive=True, exit_on_error=False, group="image")
    def load_image(self, index: int, columns: int, rows: int, zoom: int = 1,
                   pan: tuple[float, float] = (0.5, 0.5), slice_: int | None = None) -> None:
        """Read the record and render it for the image pane; zoomed in, only the visible part is
        drawn, windowed like the whole image (a 16-bit scan keeps its window/level while panning)."""
        full = self._full
        if full is not None and full[0] == index:
            view = full[1]
        else:
            with self._lock:
                if self._closed or self.reader is None:
                    return
                view = read_record_view(self.reader, index, self.path)
            if view.image is not None:
                view.image = window_to_uint8(view.image)  # once, over the whole image (floats: 1st/99th percentiles)
                view.depth = depth_of(view.image)  # a volume: windowed as a whole, so slices compare
            self._full = (index, view)  # the last record at full size, for zoom and pan
        if get_current_worker().is_cancelled:
            return
        shown = replace(view)
        if view.image is not None:
            if view.depth:
                shown.slice = view.depth // 2 if slice_ is None else max(0, min(view.depth - 1, slice_))
            part = zoom_crop(plane(view.image, shown.slice), zoom, pan)
            if graphics.kind() != "halfblock":
                shown.rgb = display_rgb(part)
            else:
                shown.lines = thumbnail_lines(part, columns, rows)
            shown.image = None  # the cache keeps only the rendered version
        self.post_message(RecordLoaded(shown, (index, columns, rows, zoom, pan, slice_)))

    @work(thread=True, exclusive=True, exit_on_error=False, group="filter")
    def run_filter(self, query: str) -> None:
        """Records whose label or metadata contains any of the comma-separated terms (case-
        insensitive): labels first (at once), then the metadata, read in batches with the rows
        found so far posted as it goes."""
        worker = get_current_worker()
        parts = [t.strip() for t in query.split(",") if t.strip()]
        exact = {t[1:] for t in parts if t.startswith("=")}  # "=cat": the label cat itself
        terms = [t.lower() for t in parts if not t.startswith("=")]
        labels = self._labels
        if labels is None:
            with self._lock:
                if self._closed or self.reader is None:
                    return
                labels = _all_labels(self.reader)
        n = len(labels)
        match = np.fromiter((str(label) in exact or any(t in str(label).lower() for t in terms) for label in labels),
                            dtype=bool, count=n)
        self.post_message(FilterDone(query, np.flatnonzero(match), 0 if terms else n, n))
        if not terms:
            return  # exact labels only: no metadata to search
        last = time.monotonic()
        for start in range(0, n, FILTER_BATCH):
            if worker.is_cancelled:
                return
            indices = [i for i in range(start, min(n, start + FILTER_BATCH)) if not match[i]]
            for i, meta in zip(indices, self._metadata_of(indices)):
                if meta and any(t in json.dumps(meta, ensure_ascii=False, default=str).lower() for t in terms):
                    match[i] = True
            done = min(n, start + FILTER_BATCH)
            if time.monotonic() - last > 0.3 or done == n:
                last = time.monotonic()
                self.post_message(FilterDone(query, np.flatnonzero(match), done, n))

    def _metadata_of(self, indices: list[int]) -> list[dict | None]:
        """Metadata of ``indices`` (None for a record that cannot be read), read under the lock."""
        if not indices:
            return []
        with self._lock:
            reader = self.reader
            if self._closed or reader is None:
                return [None] * len(indices)
            many = getattr(reader, "metadata_many", None)
            try:
                if many is not None:
                    return list(many(indices))
                return [r.metadata for r in reader.get_many(indices)]
            except Exception:
                out: list[dict | None] = []
                for i in indices:
                    try:
                        out.append(reader[i].metadata)
                    except Exception:
                        out.append(None)
                return out

    @work(thread=True, exclusive=True, exit_on_error=False, group="find-bad")
    def find_bad(self, start: int) -> None:
        """Read records after ``start`` (checking checksums) until one is bad or unreadable."""
        worker = get_current_worker()
        n = self.record_list.count
        last = time.monotonic()
        for index in range(start + 1, n):
            if worker.is_cancelled:
                return
            with self._lock:
                if self._closed or self.reader is None:
                    return
                view = read_record_view(self.reader, index, self.path)
            if view.details.status in ("BAD", "unreadable"):
                self.post_message(BadFound(start, index, index - start))
                return
            if time.monotonic() - last > 0.5:
                last = time.monotonic()
                self.post_message(BadFound(start, -1, index - start))
        self.post_message(BadFound(start, None, n - start - 1))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR and event.worker.node is self:
            self.notify(one_line(event.worker.error), severity="error", markup=False)

    # -- message handlers ------------------------------------------------------------------
    def on_store_opened(self, message: StoreOpened) -> None:
        if self._closed:
            return
        self.reader, self.info = message.reader, message.info
        header = self.query_one("#store-info", Static)
        header.update(info_text(self.info))
        if self.info.get("recipe"):
            header.tooltip = "Read without imgtui: " + str(self.info["recipe"])
        records = self.record_list
        records.set_count(len(self.reader))
        self.query_one("#list-header", Static).update(Text(records.header()))
        self._update_status()
        if len(self.reader) == 0:
            self.image_view.show_message("this store has no records")

    def on_store_failed(self, message: StoreFailed) -> None:
        self.error = message.error
        self.query_one("#store-info", Static).update(Text(message.error, style="bold red"))
        self.image_view.show_message("cannot open this store: press escape to go back")
        self.notify(message.error, severity="error", markup=False, timeout=10)

    def on_labels_loaded(self, message: LabelsLoaded) -> None:
        self._labels = message.labels
        self.record_list.set_labels(message.labels)

    def on_details_loaded(self, message: DetailsLoaded) -> None:
        self.record_list.set_details(message.details)

    def on_record_loaded(self, message: RecordLoaded) -> None:
        view = message.view
        self._thumbs.set(message.key, view)
        self.record_list.set_details({view.index: view.details})
        if not self._labels_requested:
            # after the first image: reading every label holds the reader (1,000,000 LMDB labels:
            # 7.9 s), and the first image waited for it
            self._labels_requested = True
            self.load_labels()
        if view.error:
            self.notify(view.error, severity="error", markup=False)
        self._show(view, message.key)

    def on_filter_done(self, message: FilterDone) -> None:
        if message.query != self._pending_filter:
            return  # an older filter's late result
        self._filter = message.query
        self._filter_progress = (message.scanned, message.total)
        records = self.record_list
        records.set_rows(message.rows)
        complete = message.scanned >= message.total
        if complete and message.rows is not None and len(message.rows) == 0:
            self.image_view.show_message(f"no record's label or metadata contains {message.query}")
            self.query_one("#record-info", Static).update("")
            self.notify(f"No record's label or metadata contains {message.query}.", severity="warning", markup=False)
        self._update_status()

    def on_bad_found(self, message: BadFound) -> None:
        if message.index == -1:
            self.query_one("#list-status", Static).update(
                Text(f"looking for a bad record: {message.scanned:,} read after record {message.start:,}…"), layout=False)
            return
        if message.index is None:
            self._update_status()
            self.notify(f"No bad or unreadable record after record {message.start:,} (checked {message.scanned:,}).",
                        title="Next bad record", markup=False)
            return
        if not self.record_list.go_to_index(message.index):
            self.apply_filter("")
            self.record_list.go_to_index(message.index)
        self._update_status()

    @on(RecordList.Highlighted)
    def _highlighted(self, event: RecordList.Highlighted) -> None:
        self._update_status()
        if event.index is None:
            return
        now = time.monotonic()
        rapid, self._last_move = now - self._last_move < IMAGE_SETTLE, now
        if self._settle is not None:
            self._settle.stop()
            self._settle = None
        if rapid:  # a held key: the image follows when the cursor rests
            self._settle = self.set_timer(IMAGE_SETTLE, self._settled)
        else:
            self._request_image(event.index)

    def _settled(self) -> None:
        self._settle = None
        index = self.record_list.current_index
        if index is not None:
            self._request_image(index)

    @on(RecordList.DetailsWanted)
    def _details_wanted(self, event: RecordList.DetailsWanted) -> None:
        if self.reader is not None:
            self.load_details(event.indices)

    @on(ImageView.Resized)
    def _image_resized(self, event: ImageView.Resized) -> None:
        index = self.record_list.current_index
        if self.reader is not None and index is not None:
            self._request_image(index)

    def _request_image(self, index: int) -> None:
        if self.reader is None:
            return
        columns, rows = self.image_view.cells
        if index != self._zoom_index:  # another record: fit it whole again (a volume: its middle slice)
            self._zoom_index, self._zoom, self._pan, self._slice = index, 1, (0.5, 0.5), None
        key = (index, columns, rows, self._zoom, self._pan, self._slice)
        if self.image_view.key == key:
            return
        cached = self._thumbs.get(key)  # (a hit counts as a use)
        if cached is not None:
            self._show(cached, key)
            return
        self.load_image(index, columns, rows, self._zoom, self._pan, self._slice)

    def _show(self, view: RecordView, key: tuple) -> None:
        if view.index != self.record_list.current_index:
            return  # the cursor moved on while this record was loading
        self._depth = view.depth
        if view.depth:
            self._slice = view.slice
        gfx = self.query("#image-gfx")
        if view.rgb is not None and gfx:
            try:
                gfx.first().image = PILImage.fromarray(view.rgb)
                gfx.first().display = True
                self.image_view.display = False
                self.image_view.key = key
            except Exception as exc:  # the protocol failed: half blocks from now on
                gfx.first().display = False
                self.image_view.display = True
                self.image_view.show_message(f"cannot draw the image ({one_line(exc)})", key)
        else:
            if gfx:
                gfx.first().display = False
                self.image_view.display = True
            if view.lines is not None:
                self.image_view.show_lines(view.lines, key)
            elif view.text is not None:
                self.image_view.show_image(view.text, key)
            else:
                self.image_view.show_message(view.error or "no image", key)
        self._show_info(record_panel(view))

    def _show_info(self, panel: Any) -> None:
        """Update the record panel; a layout pass (a repaint of the whole screen) only when its
        height changes, so that holding a key repaints just the rows, the image and this panel."""
        info = self.query_one("#record-info", Static)
        console = self.app.console
        width = max(1, info.content_size.width)
        lines = len(console.render_lines(panel, console.options.update_width(width), pad=False))
        info.update(panel, layout=lines != self._info_lines)
        self._info_lines = lines

    def _update_status(self) -> None:
        records = self.record_list
        if records.count == 0 and self.reader is None:
            return
        where = f"row {records.cursor + 1:,} of {records.row_count:,}" if records.row_count else "no rows"
        status = f"{where} · {records.count:,} records"
        if records.filtered:
            status += f" · filter: {self._filter}"
            scanned, total = self._filter_progress
            if scanned < total:
                status += f" (searching metadata {scanned * 100 // max(1, total)}%)"
        self.query_one("#list-status", Static).update(Text(status), layout=False)  # one fixed line

    # -- actions ---------------------------------------------------------------------------
    def action_back(self) -> None:
        if self._prompt_mode is not None:
            self._close_prompt()
            return
        if len(self.app.screen_stack) > 1:
            self.dismiss()
        else:
            self.app.exit()

    def action_next(self) -> None:
        self.record_list.action_cursor_down()

    def action_previous(self) -> None:
        self.record_list.action_cursor_up()

    def action_pick_label(self) -> None:
        if self.reader is None:
            return
        if self._labels is None:
            self.notify("The labels are still being read; press l again in a moment.", severity="warning")
            return

        def chosen(label: str | None) -> None:
            if label is not None:
                self.apply_filter(f"={label}")

        self.app.push_screen(LabelPicker(self._labels), chosen)

    def action_grid(self) -> None:
        index = self.record_list.current_index
        if self.reader is None or index is None:
            return
        records = self.record_list
        rows_of = None
        if records.filtered:
            def rows_of() -> list[int]:
                return [records.index_at(r) for r in range(records.row_count)]
        self.app.push_screen(GridScreen(records.count, index, self._tile, self._lock, rows_of), self._compared)

    def _tile(self, index: int) -> tuple[np.ndarray | None, str]:
        """(image, caption) of one record for the thumbnail grid (called with the lock held)."""
        if self._closed or self.reader is None:
            return None, ""
        rec = self.reader[index]
        return rec.image, f"{index:,} · {rec.label}"

    def action_zoom(self, step: int) -> None:
        """z zooms in (2x, 4x, 8x, 16x the fitted size), shift+z out; shift+arrows pan."""
        index = self.record_list.current_index
        if self.reader is None or index is None:
            return
        levels = ZOOM_LEVELS
        i = levels.index(self._zoom) if self._zoom in levels else 0
        self._zoom = levels[max(0, min(len(levels) - 1, i + step))]
        if self._zoom == 1:
            self._pan = (0.5, 0.5)
        self._request_image(index)
        self.notify(f"zoom {self._zoom}x" + ("" if self._zoom == 1 else " · shift+arrows pan"), timeout=1.5)

    def action_slice(self, step: int) -> None:
        """[ and ] step through a 3-D record's slices, { and } by ten."""
        index = self.record_list.current_index
        if self.reader is None or index is None:
            return
        if not self._depth:
            self.notify(f"Record {index} is a 2-D image: it has no slices.", timeout=2)
            return
        now = self._depth // 2 if self._slice is None else self._slice
        self._slice = max(0, min(self._depth - 1, now + step))
        self._request_image(index)

    def action_pan(self, dx: int, dy: int) -> None:
        index = self.record_list.current_index
        if self.reader is None or index is None or self._zoom == 1:
            return
        step = 0.25 / self._zoom  # a quarter of the visible part
        x, y = self._pan
        self._pan = (min(1.0, max(0.0, x + dx * step)), min(1.0, max(0.0, y + dy * step)))
        self._request_image(index)

    def action_next_bad(self) -> None:
        if self.reader is None:
            return
        index = self.record_list.current_index
        self.find_bad(-1 if index is None else index)

    def action_copy(self) -> None:
        index = self.record_list.current_index
        if self.reader is None or index is None:
            return
        text = f"{self.path}[{index}]"
        self.app.copy_to_clipboard(text)
        self.notify(f"Copied {text}", markup=False)

    def action_open_viewer(self) -> None:
        index = self.record_list.current_index
        if self.reader is None or index is None:
            return
        self.open_in_viewer(index)

    @work(thread=True, exclusive=True, exit_on_error=False, group="viewer")
    def open_in_viewer(self, index: int) -> None:
        """Write the record as a PNG (TIFF/NPY when PNG cannot hold its pixels) in a temporary
        folder and start the viewer on it; one notification line if that fails."""
        with self._lock:
            if self._closed or self.reader is None:
                return
            try:
                image = self.reader[index].image
            except Exception as exc:
                self.app.call_from_thread(self.notify, one_line(exc), severity="error", markup=False)
                return
        try:
            path = write_viewable(image, index)
            start_viewer(path)
        except ImgtuiError as exc:
            self.app.call_from_thread(self.notify, str(exc), severity="error", markup=False)
            return
        self.app.call_from_thread(self.notify, f"Opened record {index} ({path})", markup=False)

    def action_jump(self) -> None:
        if self.reader is None:
            return
        self._open_prompt("jump", f"go to record index (0-{max(0, len(self.reader) - 1):,}), enter to jump")

    def action_filter(self) -> None:
        if self.reader is None:
            return
        self._open_prompt(
            "filter", "show records whose label or metadata contains a text (any of a,b; empty shows all)",
            self._filter,
        )

    def action_compare(self) -> None:
        if self.reader is None:
            return
        try:
            paths = find_sibling_stores(self.path)
        except Exception as exc:
            self.notify(one_line(exc), severity="error", markup=False)
            return
        if len(paths) < 2:
            self.notify(
                f"No other store of the same dataset next to {self.path} "
                f"(compare looks for {' / '.join('name' + store_suffix(b) for b in backend_names())}).",
                severity="warning",
                markup=False,
            )
            return
        index = self.record_list.current_index or 0
        self.app.push_screen(CompareScreen(paths, index), self._compared)

    def _compared(self, index: int | None) -> None:
        """Back from compare: move to the record it showed last."""
        if index is not None and index != self.record_list.current_index:
            if not self.record_list.go_to_index(index):
                self.notify(f"Record {index} does not match the filter ({self._filter}).", severity="warning",
                            markup=False)

    def _open_prompt(self, mode: str, placeholder: str, value: str = "") -> None:
        prompt = self.query_one("#prompt", Input)
        self._prompt_mode = mode
        prompt.placeholder = placeholder
        prompt.value = value
        prompt.remove_class("hidden")
        prompt.focus()

    def _close_prompt(self) -> None:
        prompt = self.query_one("#prompt", Input)
        self._prompt_mode = None
        prompt.add_class("hidden")
        self.record_list.focus()

    @on(Input.Submitted, "#prompt")
    def _prompt_submitted(self, event: Input.Submitted) -> None:
        mode, value = self._prompt_mode, event.value.strip()
        self._close_prompt()
        if mode == "jump":
            self.jump_to(value)
        elif mode == "filter":
            self.apply_filter(value)

    def jump_to(self, value: str) -> None:
        count = self.record_list.count
        try:
            index = int(value.replace(",", "").replace("_", ""))
        except ValueError:
            self.notify(f"Not a record index: {value!r}.", severity="error", markup=False)
            return
        if index < 0:
            index += count
        if not 0 <= index < count:
            self.notify(
                f"Record {value} is out of range: this store has {count:,} records (0-{count - 1:,}).",
                severity="error",
                markup=False,
            )
            return
        if not self.record_list.go_to_index(index):
            self.notify(
                f"Record {index} does not match the filter ({self._filter}); press f and clear it.",
                severity="warning",
                markup=False,
            )

    def apply_filter(self, query: str) -> None:
        self._pending_filter = query
        if not query:
            self.workers.cancel_group(self, "filter")
            self._filter = ""
            self.record_list.set_rows(None)
            self._update_status()
            return
        self.run_filter(query)
