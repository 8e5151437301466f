"""The dataset pane: pick a source (synthetic, folder, CIFAR, .npz, store), see its summary and a preview.

The summary and the preview thumbnail are computed in a worker (``open_dataset`` + ``summary()`` +
``first()``, then downscale to half blocks); a bad path raises in the worker and the app shows the
one-line error as a notification.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.reactive import reactive
from textual.suggester import Suggester
from textual.validation import Integer, Regex
from textual.widgets import Checkbox, Input, Label, Select, Static
from textual.worker import Worker, WorkerState, get_current_worker

from ...bench import backend_info as bi
from ...records import shape_text as shape_name
from ..messages import DatasetSummary, one_line_error
from .preview import Preview

SOURCES = (
    ("Synthetic (built in)", "synthetic"),
    ("Image folder", "folder"),
    ("CIFAR batch files", "cifar"),
    (".npz / .npy file", "npz"),
    ("Existing store", "store"),
)
PLACEHOLDERS = {
    "folder": "folder of images (class sub-folders or labels.csv)",
    "cifar": "CIFAR batch file or the folder holding them",
    "npz": "file.npz or file.npz:key",
}


def placeholder(kind: str) -> str:
    if kind == "store":
        return f"path of a store ({bi.human_list((bi.short_name(b) for b in bi.names()), 'or')})"
    return PLACEHOLDERS.get(kind, "path")
#: preview thumbnail size in cells
PREVIEW_COLUMNS, PREVIEW_ROWS = 24, 12
BARS = "▁▂▃▄▅▆▇█"


def complete_path(value: str) -> str | None:
    """The first directory entry that extends ``value`` (a partial path), or None. Does I/O."""
    if not value:
        return None
    head, tail = os.path.split(value)
    folder = os.path.expanduser(head) if head else "."
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return None
    for name in names:
        if name.startswith(tail) and name != tail and (tail.startswith(".") or not name.startswith(".")):
            suffix = "/" if os.path.isdir(os.path.join(folder, name)) else ""
            return value + name[len(tail):] + suffix
    return None


class PathSuggester(Suggester):
    """Completes file and folder names as the user types (listing runs off the UI thread)."""

    def __init__(self) -> None:
        super().__init__(use_cache=False, case_sensitive=True)

    async def get_suggestion(self, value: str) -> str | None:
        return await asyncio.to_thread(complete_path, value)


def guess_kind(spec: str) -> str:
    """The source kind a spec most likely names (a hint for the Select; no I/O)."""
    if not spec or spec.startswith("synthetic"):
        return "synthetic"
    p = Path(spec)
    low = spec.lower()
    if p.suffix.lower() in (".npz", ".npy") or ".npz:" in low or ".npy:" in low:
        return "npz"
    if "cifar" in low or "batch" in p.name.lower():
        return "cifar"
    if p.suffix.lower() in bi.store_suffixes() | {".store"}:
        return "store"
    return "folder"


def label_histogram(labels: dict[str, int], width: int = 24) -> str:
    """A one-line histogram of label counts (most common labels, in label order)."""
    if not labels:
        return "-"
    items = list(labels.items())[:width]
    try:
        items.sort(key=lambda kv: int(kv[0]))
    except ValueError:
        items.sort()
    top = max(v for _, v in items)
    bars = "".join(BARS[min(len(BARS) - 1, (v * len(BARS) - 1) // top)] for _, v in items)
    first, last = items[0][0], items[-1][0]
    more = f" +{len(labels) - len(items)}" if len(labels) > len(items) else ""
    return f"{len(labels)} distinct {bars} ({first}..{last}){more}"


def format_summary(summary: dict) -> Text:
    count = summary.get("count")
    shapes = summary.get("shapes", {})
    shape_text = ", ".join(f"{shape_name(k)} ({v})" for k, v in list(shapes.items())[:3])
    if len(shapes) > 3:
        shape_text += f", +{len(shapes) - 3} more"
    lines = [
        ("source", summary.get("source", "")),
        ("count", f"{count:,}" if isinstance(count, int) else "unknown"),
        ("shapes", shape_text or "-"),
        ("dtype", ", ".join(summary.get("dtypes", {})) or "-"),
        ("labels", label_histogram(summary.get("labels", {}))),
        ("summary", summary.get("sample_note") or f"first {summary.get('sampled', 0):,} records"),
    ]
    if "exif_rotate" in summary:  # image folders: is the EXIF orientation applied?
        lines.append(("exif", "orientation applied" if summary["exif_rotate"] else "orientation not applied (as stored)"))
    if summary.get("skipped"):  # image folders: every file not imported, in one line
        lines.append(("skipped", summary["skipped"].removeprefix("skipped ")))
    text = Text(no_wrap=False)
    for i, (k, v) in enumerate(lines):
        if i:
            text.append("\n")
        text.append(f"{k:<8}", style="bold")
        text.append(str(v))
    return text


class DatasetPane(Vertical):
    """Choose the dataset and show what it holds."""

    @dataclass
    class Changed(Message):
        """The dataset spec changed."""

        pane: "DatasetPane"
        spec: str

    @dataclass
    class Loaded(Message):
        """A summary (or an error) for the current spec arrived."""

        pane: "DatasetPane"

    #: the dataset spec for ``open_dataset`` (a synthetic spec or a path)
    spec: reactive[str] = reactive("synthetic", init=False)
    #: the kind of source the last summary found ("synthetic", "folder", "store", ...)
    kind: reactive[str] = reactive("")
    #: the one-line error of the last summary, "" when it worked
    error: reactive[str] = reactive("")
    #: the last summary dict
    summary: dict | None = None

    def __init__(self, spec: str = "synthetic", **kwargs) -> None:
        super().__init__(**kwargs)
        self._initial = spec or "synthetic"
        self._synth = {"count": 1000, "size": "32", "variable": "", "channels": 3, "bits": 8, "seed": 0}
        if self._initial.startswith("synthetic"):
            from ...datasets import parse_synthetic_spec

            try:
                kw = parse_synthetic_spec(self._initial)
            except Exception:
                kw = {}
            size = kw.get("size")
            variable = kw.get("variable")
            self._synth.update(
                count=kw.get("count", 1000),
                size=(f"{size[0]}" if size and size[0] == size[1] else f"{size[0]}x{size[1]}") if size else "32",
                variable=f"{variable[0]}-{variable[1]}" if variable else "",
                channels=kw.get("channels", 3),
                bits=kw.get("bits", 8),
                seed=kw.get("seed", 0),
            )

    def compose(self) -> ComposeResult:
        kind = guess_kind(self._initial)
        s = self._synth
        yield Select(SOURCES, value=kind, allow_blank=False, id="source", compact=True)
        with Grid(id="synthetic-options", classes="options-grid"):
            yield Label("count")
            yield Input(str(s["count"]), id="syn-count", type="integer", compact=True,
                        validators=[Integer(minimum=1, maximum=10_000_000)])
            yield Label("size")
            yield Input(str(s["size"]), id="syn-size", compact=True, placeholder="32 or HxW",
                        validators=[Regex(r"^\s*[1-9]\d*(x[1-9]\d*)?\s*$", failure_description="use N or HxW")])
            yield Label("variable")
            yield Input(s["variable"], id="syn-variable", compact=True, placeholder="lo-hi or blank",
                        validators=[Regex(r"^\s*([1-9]\d*-[1-9]\d*)?\s*$", failure_description="use lo-hi")])
            yield Label("channels")
            yield Select([("1 (gray)", 1), ("3 (RGB)", 3), ("4 (RGBA)", 4)], value=s["channels"],
                         allow_blank=False, id="syn-channels", compact=True)
            yield Label("bits")
            yield Select([("8-bit", 8), ("16-bit", 16)], value=s["bits"], allow_blank=False,
                         id="syn-bits", compact=True)
            yield Label("seed")
            yield Input(str(s["seed"]), id="syn-seed", type="integer", compact=True,
                        validators=[Integer(minimum=0)])
        with Vertical(id="path-options"):
            yield Input(
                "" if kind == "synthetic" else self._initial,
                id="path",
                compact=True,
                placeholder=placeholder(kind),
                suggester=PathSuggester(),
                tooltip="Type a path (→ accepts the completion), Enter loads it",
            )
            yield Static("Enter loads the path; → completes it.", classes="hint")
            yield Checkbox("skip unreadable files (benchmark and make stores)", id="skip-bad", compact=True,
                           tooltip="Leave out image files or records that cannot be read, and name them, "
                                   "instead of stopping at the first (the CLI's --on-error skip)")
        with Horizontal(id="dataset-info"):
            yield Preview(id="preview")
            with VerticalScroll(id="summary-scroll"):
                yield Static("reading…", id="summary")

    def on_mount(self) -> None:
        self.border_title = "Dataset"
        self._show_options(guess_kind(self._initial))
        self.spec = self._initial

    # -- spec ------------------------------------------------------------------------------
    def _show_options(self, kind: str) -> None:
        self.query_one("#synthetic-options").display = kind == "synthetic"
        self.query_one("#path-options").display = kind != "synthetic"
        if kind != "synthetic":
            self.query_one("#path", Input).placeholder = placeholder(kind)

    def synthetic_spec(self) -> str | None:
        """The synthetic spec from the option fields, or None if one of them is invalid."""
        parts = []
        for name in ("count", "size", "variable", "channels", "bits", "seed"):
            if name in ("channels", "bits"):
                parts.append(f"{name}={self.query_one(f'#syn-{name}', Select).value}")
                continue
            inp = self.query_one(f"#syn-{name}", Input)
            value = inp.value.strip().replace("_", "")
            validation = inp.validate(value)
            if validation is not None and not validation.is_valid:
                return None
            if value:
                parts.append(f"{name}={value}")
        return "synthetic:" + ",".join(parts)

    @on(Select.Changed, "#source")
    def _source_changed(self, event: Select.Changed) -> None:
        kind = str(event.value)
        self._show_options(kind)
        if kind == "synthetic":
            spec = self.synthetic_spec()
            if spec:
                self.spec = spec
        else:
            path = self.query_one("#path", Input).value.strip()
            if path:
                self.spec = path
            else:
                self.query_one("#path", Input).focus()

    @on(Input.Changed, "#synthetic-options Input")
    @on(Select.Changed, "#synthetic-options Select")
    def _synthetic_changed(self) -> None:
        if self.query_one("#source", Select).value != "synthetic":
            return  # the hidden synthetic fields post Changed when mounted
        spec = self.synthetic_spec()
        if spec is not None and spec != self.spec:
            self.spec = spec

    @on(Input.Submitted, "#path")
    def _path_submitted(self, event: Input.Submitted) -> None:
        path = event.value.strip()
        if not path:
            return
        if path == self.spec:
            self.load(path)  # load again (the files may have changed)
        else:
            self.spec = path

    def watch_spec(self, spec: str) -> None:
        self.post_message(self.Changed(self, spec))
        self.load(spec)

    # -- summary worker --------------------------------------------------------------------
    def load(self, spec: str) -> None:
        self.query_one("#summary", Static).update("reading…")
        self.query_one(Preview).placeholder = "…"
        self.query_one(Preview).thumbnail = None
        self._load(spec)

    @work(thread=True, exclusive=True, exit_on_error=False, group="dataset", name="dataset summary")
    def _load(self, spec: str) -> None:
        from ...datasets import open_dataset
        from ..imaging import thumbnail

        # unreadable files are counted and named in the summary ("skipped ...") instead of hiding it
        dataset = open_dataset(spec, on_error="skip", warn=lambda msg: None)
        summary = dataset.summary()
        summary["kind"] = dataset.kind
        worker = get_current_worker()
        if worker.is_cancelled:
            return
        first = dataset.first()
        preview = None
        shape = ""
        if first is not None:
            shape = "x".join(map(str, first.image.shape))
            preview = thumbnail(first.image, PREVIEW_COLUMNS, PREVIEW_ROWS, window="percentile")
        if not worker.is_cancelled:
            self.post_message(DatasetSummary(spec, summary, preview, shape))

    @on(DatasetSummary)
    def _summary_ready(self, message: DatasetSummary) -> None:
        message.stop()
        if message.spec != self.spec:
            return  # a superseded request
        self.summary = message.summary
        self.error = ""
        self.kind = message.summary.get("kind", "")
        self.query_one("#summary", Static).update(format_summary(message.summary))
        preview = self.query_one(Preview)
        preview.placeholder = "no images"
        preview.thumbnail = message.preview
        if preview.thumbnail is not None:
            preview.tooltip = f"first image, {message.first_shape}"
        source = self.query_one("#source", Select)
        if self.kind in dict((v, v) for _, v in SOURCES) and source.value != self.kind:
            with source.prevent(Select.Changed):
                source.value = self.kind
            self._show_options(self.kind)
        self.post_message(self.Loaded(self))

    @on(Worker.StateChanged)
    def _worker_state(self, event: Worker.StateChanged) -> None:
        # the app notifies the error (one place); here the pane also shows it in place of a summary
        if event.worker.group == "dataset" and event.state == WorkerState.ERROR:
            self.app.report_worker_error(event.worker)  # type: ignore[attr-defined]
            self.summary = None
            self.kind = ""
            self.error = one_line_error(event.worker.error)
            self.query_one("#summary", Static).update(Text(f"✗ {self.error}", style="bold"))
            self.query_one(Preview).placeholder = "no preview"
            self.query_one(Preview).thumbnail = None
            self.post_message(self.Loaded(self))

    @property
    def on_error(self) -> str:
        """What the benchmark and make-stores do with files that cannot be read: "stop" or "skip"."""
        return "skip" if self.query_one("#skip-bad", Checkbox).value else "stop"

    @on(Checkbox.Changed, "#skip-bad")
    def _skip_changed(self, event: Checkbox.Changed) -> None:
        event.stop()
        self.post_message(self.Changed(self, self.spec))

    @property
    def store_path(self) -> str | None:
        """The selected existing store, if the dataset is one."""
        return self.spec if self.kind == "store" else None
