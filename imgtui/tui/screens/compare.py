"""Compare one record across 2 or more stores (one per backend: disk, LMDB, HDF5, ...) side by side.

Each column shows the record's image, label, shape, dtype and checksum in one store; the line at
the bottom says whether the pixels are identical in every store (``np.array_equal``) or what
differs. All reads run in one thread worker; ``n``/``p`` move to the next/previous record.
"""

from __future__ import annotations

import threading
from pathlib import Path
from dataclasses import dataclass
from typing import Any

import numpy as np
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Static
from textual.worker import Worker, WorkerState, get_current_worker

from ...records import same_pixels
from ...bench.backend_info import names as backend_names
from ..imaging import thumbnail
from ..widgets.image_view import ImageView
from ..store_view import RecordView, one_line, open_any_store, read_record_view, record_panel, store_info


def compare_views(names: list[str], views: list[RecordView | None], images: list[np.ndarray | None]) -> tuple[bool, str]:
    """(identical, one-line verdict) for the same record read from several stores."""
    problems: list[str] = []
    present = [(n, v, im) for n, v, im in zip(names, views, images)]
    for n, v, im in present:
        if v is None:
            problems.append(f"{n} has no such record")
        elif v.error or im is None:
            problems.append(f"{n} cannot read it")
    ok = [(n, v, im) for n, v, im in present if v is not None and im is not None and not v.error]
    if len(ok) >= 2:
        ref_name, ref_view, ref = ok[0]
        for n, v, im in ok[1:]:
            if im.shape != ref.shape:
                problems.append(f"{n} shape {v.details.shape} != {ref_name} {ref_view.details.shape}")
            elif im.dtype != ref.dtype:
                problems.append(f"{n} dtype {im.dtype} != {ref_name} {ref.dtype}")
            elif not same_pixels(im, ref):  # bit-exact: NaN equals the same NaN, -0.0 is not 0.0
                a, b = (np.ascontiguousarray(x).view(f"u{x.dtype.itemsize}") if x.dtype.kind == "f" else x for x in (im, ref))
                diff = int(np.count_nonzero(a != b))
                problems.append(f"{n} pixels differ from {ref_name} ({diff:,} values)")
            if v.label != ref_view.label or type(v.label) is not type(ref_view.label):
                problems.append(f"{n} label {v.label!r} != {ref_name} {ref_view.label!r}")
    if problems:
        return False, "DIFFERENT: " + "; ".join(problems)
    if len(ok) < 2:
        return False, "DIFFERENT: fewer than two stores could be read"
    return True, f"pixels identical in all stores ({len(ok)} stores, labels equal)"


@dataclass
class CompareOpened(Message):
    readers: list
    names: list
    errors: list


@dataclass
class CompareLoaded(Message):
    index: int
    views: list
    identical: bool
    verdict: str


class CompareScreen(Screen):
    """The record at ``index`` from each store in ``paths`` (2 up to one per backend), side by side."""

    CSS_PATH = "../browser.tcss"

    HELP = """\
# Compare

The same record read from each backend's store, side by side, with its checksum and whether the
pixels, label and metadata are identical in all of them.
"""

    BINDINGS = [
        Binding("escape", "back", "Back", tooltip="Back to the browser"),
        Binding("n,right,down", "next", "Next", tooltip="Next record"),
        Binding("p,left,up", "previous", "Prev", tooltip="Previous record"),
    ]

    def __init__(self, paths: list[str], index: int = 0) -> None:
        super().__init__()
        self.paths = [str(p) for p in paths]
        self.index = int(index)
        self.readers: list[Any] = []
        self.names: list[str] = []
        self.count = 0
        self.identical: bool | None = None
        self.verdict = ""
        self.loaded_index: int | None = None
        self._lock = threading.Lock()
        self._closed = False

    def compose(self) -> ComposeResult:
        yield Static(Text(f"comparing record {self.index} in {len(self.paths)} stores …"), id="store-info")
        with Horizontal(id="compare-body"):
            for n, path in enumerate(self.paths):
                with Vertical(classes="compare-column"):
                    yield Static(Text(path, no_wrap=True, overflow="ellipsis"), classes="compare-title",
                                 id=f"title-{n}")
                    yield ImageView("opening …", classes="compare-image", id=f"image-{n}")
                    yield Static("", classes="compare-info", id=f"info-{n}")
        yield Static("", id="compare-check")
        yield Footer()

    def on_mount(self) -> None:
        if self not in self.app.screen_stack:
            return  # closed before it was mounted: nothing to open
        try:
            body = self.query_one("#compare-body")
        except NoMatches:  # removed before it was mounted (closed at once, or the app is exiting)
            return
        # a grid of equal columns (1fr widths with one border less on the last came out unequal)
        body.styles.grid_size_columns = max(1, len(self.paths))
        most = max(3, len(backend_names()))
        if not 2 <= len(self.paths) <= most:
            self.notify(f"Compare needs 2 to {most} stores, got {len(self.paths)}.", severity="warning", markup=False)
        self.open_stores()

    def on_unmount(self) -> None:
        self.workers.cancel_node(self)
        with self._lock:
            self._closed = True
            for r in self.readers:
                try:
                    r.close()
                except Exception:
                    pass
            self.readers = []

    # -- workers ---------------------------------------------------------------------------
    @work(thread=True, exclusive=True, exit_on_error=False, group="compare-open")
    def open_stores(self) -> None:
        readers, names, errors = [], [], []
        for path in self.paths:
            try:
                r = open_any_store(path)
                info = store_info(r, path)
                readers.append(r)
                names.append(str(info.get("backend") or path))
                errors.append(None)
            except Exception as exc:
                readers.append(None)
                names.append(path)
                errors.append(one_line(exc))
        self.post_message(CompareOpened(readers, names, errors))

    @work(thread=True, exclusive=True, exit_on_error=False, group="compare-load")
    def load_index(self, index: int, cells: list[tuple[int, int]]) -> None:
        views: list[RecordView | None] = []
        images: list[np.ndarray | None] = []
        with self._lock:
            if self._closed:
                return
            for path, reader in zip(self.paths, self.readers):
                if reader is None or index >= len(reader):
                    views.append(None)
                    images.append(None)
                    continue
                view = read_record_view(reader, index, path)
                views.append(view)
                images.append(view.image)
        if get_current_worker().is_cancelled:
            return
        identical, verdict = compare_views(self.names, views, images)
        for view, (cols, rows) in zip(views, cells):
            if view is not None and view.image is not None:
                view.text = thumbnail(view.image, cols, rows)
                view.image = None
        self.post_message(CompareLoaded(index, views, identical, verdict))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR and event.worker.node is self:
            self.notify(one_line(event.worker.error), severity="error", markup=False)

    # -- handlers --------------------------------------------------------------------------
    def on_compare_opened(self, message: CompareOpened) -> None:
        if self._closed:
            for r in message.readers:
                if r is not None:
                    r.close()
            return
        self.readers, self.names = message.readers, message.names
        for n, error in enumerate(message.errors):
            if error:
                self.notify(error, severity="error", markup=False)
                self.query_one(f"#image-{n}", ImageView).show_message(error)
        counts = [len(r) for r in self.readers if r is not None]
        self.count = max(counts) if counts else 0
        if counts and len(set(counts)) > 1:
            self.notify(
                "The stores hold different numbers of records: "
                + ", ".join(f"{n} {len(r):,}" for n, r in zip(self.names, self.readers) if r is not None),
                severity="warning",
                markup=False,
            )
        for n, (name, path) in enumerate(zip(self.names, self.paths)):
            title = Text(no_wrap=True, overflow="ellipsis")
            title.append(f"{name} ", style="bold")
            title.append(Path(path).name, style="dim")
            widget = self.query_one(f"#title-{n}", Static)
            widget.update(title)
            widget.tooltip = path
        if self.count:
            self.index = max(0, min(self.index, self.count - 1))
            self._load()
        else:
            self._set_check(False, "DIFFERENT: no store could be opened")

    def on_compare_loaded(self, message: CompareLoaded) -> None:
        if message.index != self.index:
            return
        self.loaded_index = message.index
        for n, view in enumerate(message.views):
            image = self.query_one(f"#image-{n}", ImageView)
            info = self.query_one(f"#info-{n}", Static)
            if view is None:
                image.show_message(f"no record {message.index} in this store")
                info.update("")
                continue
            if view.text is not None:
                image.show_image(view.text, message.index)
            else:
                image.show_message(view.error or "no image", message.index)
            info.update(record_panel(view))
        self._set_check(message.identical, message.verdict)
        self.query_one("#store-info", Static).update(
            Text(f"record {message.index:,} of {self.count:,} · {len(self.paths)} stores · n/p to move")
        )

    def _set_check(self, identical: bool, verdict: str) -> None:
        self.identical, self.verdict = identical, verdict
        check = self.query_one("#compare-check", Static)
        check.update(Text(verdict))
        check.set_class(identical, "same")
        check.set_class(not identical, "different")

    @on(ImageView.Resized)
    def _resized(self, event: ImageView.Resized) -> None:
        if self.readers:
            self._load()

    def _load(self) -> None:
        cells = [self.query_one(f"#image-{n}", ImageView).cells for n in range(len(self.paths))]
        self.load_index(self.index, cells)

    # -- actions ---------------------------------------------------------------------------
    def action_next(self) -> None:
        if self.count and self.index < self.count - 1:
            self.index += 1
            self._load()

    def action_previous(self) -> None:
        if self.count and self.index > 0:
            self.index -= 1
            self._load()

    def action_back(self) -> None:
        """Back to the browser, which moves to the record shown here."""
        if len(self.app.screen_stack) > 1:
            self.dismiss(self.index)
        else:
            self.app.exit()
