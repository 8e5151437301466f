"""Browse one store: a virtual record list, the selected image in half blocks, its label/metadata.

All store access happens in thread workers (``@work(thread=True, exclusive=True,
exit_on_error=False, group=...)``) that post messages; the ``on_*`` handlers update widgets. A lock
serialises reader calls (LMDB/HDF5 handles are not shared between threads safely) and the reader is
closed under that lock when the screen goes away.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Group
from rich.pretty import Pretty
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Input, Static
from textual.worker import Worker, WorkerState, get_current_worker

from ...backends import registry
from ...bench.backend_info import names as backend_names, store_suffix
from ...errors import ImgtuiError, first_line
from ...records import checksum
from ..imaging import thumbnail
from ..widgets.image_view import ImageView
from ..widgets.record_list import RecordList, RowDetails

#: decoded thumbnails kept per screen (keyed by record index and cell size)
THUMBNAIL_CACHE = 64


# -- store helpers (no widgets: safe in worker threads) -------------------------------------
one_line = first_line  # (compare.py imports it from here)


def open_any_store(path: str) -> Any:
    """Open an imgtui store, or an article-format store when ``imgtui.backends.article`` exists.

    Raises ImgtuiError with a one-line message for anything that cannot be opened.
    """
    from ...backends import open_store

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
        from ...backends import article
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
    return "x".join(str(s) for s in image.shape)


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
        from ...backends.article import article_text

        text.append(f"{article_text(str(info.get('backend')))} ", style="bold")
    else:
        text.append(f"{info.get('backend', '?')} store ", style="bold")
    text.append(str(info.get("path", "")))
    parts = [f"{int(info.get('count') or 0):,} records" + (", no checksums" if info.get("article") else "")]
    shapes = info.get("shapes") or {}
    if shapes:
        names = list(shapes)[:3]
        parts.append("shapes " + ", ".join(names) + (" …" if len(shapes) > 3 else ""))
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


def record_panel(view: RecordView) -> Group:
    """Label, shape, dtype, checksum and metadata of one record, for a Static."""
    head = Text()
    head.append(f"record {view.index}\n", style="bold")
    if view.error:
        head.append(view.error, style="bold red")
        return Group(head)
    head.append("label     ")
    head.append(f"{view.label!r}\n", style="bold")
    head.append(f"shape     {view.details.shape}\ndtype     {view.details.dtype}\n")
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
    from ...backends import detect_backend

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
    labels: list


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


class BrowserScreen(Screen):
    """Browse the records of the store at ``path``."""

    CSS_PATH = "../browser.tcss"

    HELP = """\
# Record browser

The records of one store: a virtual list (only the rows on screen are read), the selected image
drawn in the terminal, its label, metadata and whether its checksum matched. A record that cannot be
read is shown as a row with its one-line error, and the others stay browsable.

Move with the arrow keys, PageUp/PageDown, Home/End, or **n**/**p**; **g** jumps to a record
number; **f** filters by label; **c** compares the record with the same record of the other
backends' stores; Escape goes back.
"""

    BINDINGS = [
        Binding("escape", "back", "Back", tooltip="Back to the previous screen"),
        Binding("n", "next", "Next", tooltip="Next record"),
        Binding("p", "previous", "Prev", tooltip="Previous record"),
        Binding("g", "jump", "Go to", tooltip="Jump to a record number"),
        Binding("f", "filter", "Filter", tooltip="Show only the records whose label contains a text"),
        Binding("c", "compare", "Compare", tooltip="The same record in every backend's store, side by side"),
    ]

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = str(path)
        self.reader: Any = None
        self.info: dict = {}
        self.error: str | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._labels: list | None = None
        self._thumbs: OrderedDict[tuple, RecordView] = OrderedDict()
        self._prompt_mode: str | None = None
        self._filter: str = ""
        self._info_lines = -1

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
        self.record_list.focus()
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
            labels = list(self.reader.labels())
        self.post_message(LabelsLoaded(labels))

    @work(thread=True, exclusive=True, exit_on_error=False, group="details")
    def load_details(self, indices: tuple[int, ...]) -> None:
        worker = get_current_worker()
        batch: dict[int, RowDetails] = {}
        for n, index in enumerate(indices, 1):
            if worker.is_cancelled:
                break
            with self._lock:
                if self._closed or self.reader is None:
                    return
                view = read_record_view(self.reader, index, self.path)
            batch[index] = view.details
            if len(batch) >= 16:
                self.post_message(DetailsLoaded(batch))
                batch = {}
        if batch:
            self.post_message(DetailsLoaded(batch))

    @work(thread=True, exclusive=True, exit_on_error=False, group="image")
    def load_image(self, index: int, columns: int, rows: int) -> None:
        with self._lock:
            if self._closed or self.reader is None:
                return
            view = read_record_view(self.reader, index, self.path)
        if get_current_worker().is_cancelled:
            return
        if view.image is not None:
            view.text = thumbnail(view.image, columns, rows)
            view.image = None  # the cache keeps only the small rendered version
        self.post_message(RecordLoaded(view, (index, columns, rows)))

    @work(thread=True, exclusive=True, exit_on_error=False, group="filter")
    def run_filter(self, query: str) -> None:
        labels = self._labels
        if labels is None:
            with self._lock:
                if self._closed or self.reader is None:
                    return
                labels = list(self.reader.labels())
        wanted = {w.strip() for w in query.split(",") if w.strip()}
        rows = np.fromiter(
            (i for i, label in enumerate(labels) if str(label) in wanted), dtype=np.int64
        )
        self.post_message(FilterDone(query, rows))

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
        self.load_labels()

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
        self._thumbs[message.key] = view
        self._thumbs.move_to_end(message.key)
        while len(self._thumbs) > THUMBNAIL_CACHE:
            self._thumbs.popitem(last=False)
        self.record_list.set_details({view.index: view.details})
        if view.error:
            self.notify(view.error, severity="error", markup=False)
        self._show(view, message.key)

    def on_filter_done(self, message: FilterDone) -> None:
        self._filter = message.query
        records = self.record_list
        records.set_rows(message.rows)
        if message.rows is not None and len(message.rows) == 0:
            self.image_view.show_message(f"no record has label {message.query}")
            self.query_one("#record-info", Static).update("")
            self.notify(f"No record has label {message.query}.", severity="warning", markup=False)
        self._update_status()

    @on(RecordList.Highlighted)
    def _highlighted(self, event: RecordList.Highlighted) -> None:
        self._update_status()
        if event.index is not None:
            self._request_image(event.index)

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
        key = (index, columns, rows)
        if self.image_view.key == key:
            return
        cached = self._thumbs.get(key)
        if cached is not None:
            self._thumbs.move_to_end(key)
            self._show(cached, key)
            return
        self.load_image(index, columns, rows)

    def _show(self, view: RecordView, key: tuple) -> None:
        if view.index != self.record_list.current_index:
            return  # the cursor moved on while this record was loading
        if view.text is not None:
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
            status += f" · filter: label in {{{self._filter}}}"
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

    def action_jump(self) -> None:
        if self.reader is None:
            return
        self._open_prompt("jump", f"go to record index (0-{max(0, len(self.reader) - 1):,}), enter to jump")

    def action_filter(self) -> None:
        if self.reader is None:
            return
        self._open_prompt(
            "filter", "show only records with label (comma-separated; empty shows all)", self._filter
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
        from .compare import CompareScreen

        index = self.record_list.current_index or 0
        self.app.push_screen(CompareScreen(paths, index))

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
                f"Record {index} does not match the filter (label in {{{self._filter}}}); press f and clear it.",
                severity="warning",
                markup=False,
            )

    def apply_filter(self, query: str) -> None:
        if not query:
            self._filter = ""
            self.record_list.set_rows(None)
            self._update_status()
            return
        self.run_filter(query)
