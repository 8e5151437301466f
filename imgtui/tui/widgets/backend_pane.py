"""The backend configuration pane: which backends, their options, methods, experiments, counts, repeats.

Every change posts ``BackendPane.Changed``; the main screen folds the pane's ``config()`` into its
``BenchPlan``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, HorizontalGroup, ItemGrid, Vertical, VerticalScroll
from textual.message import Message
from textual.validation import Integer, Regex
from textual.widgets import Checkbox, Input, Label, Select

from ...png import DEFAULT_PNG_LEVEL
from ...bench.model import BACKENDS, DEFAULT_EXPERIMENTS, EXPERIMENTS, METHODS

COUNTS = (10, 100, 1_000, 10_000, 100_000)
DEFAULT_COUNTS = (10, 100, 1_000)
COUNT_LABELS = {10: "10", 100: "100", 1_000: "1k", 10_000: "10k", 100_000: "100k"}


@dataclass
class BackendConfig:
    """What the pane says, in BenchPlan terms (plus the export folder)."""

    backends: list[str] = field(default_factory=list)
    backend_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    methods: list[str] = field(default_factory=list)
    experiments: list[str] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    repeats: int | None = None
    workdir: str | None = None
    output: str = "."


class BackendPane(VerticalScroll):
    """Backends, options and what to measure."""

    @dataclass
    class Changed(Message):
        pane: "BackendPane"

    def __init__(
        self,
        *,
        backends: list[str] | None = None,
        methods: list[str] | None = None,
        experiments: list[str] | None = None,
        counts: list[int] | None = None,
        repeats: int | None = None,
        workdir: str | None = None,
        output: str = ".",
        backend_options: dict[str, dict[str, Any]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._backends = list(BACKENDS if backends is None else backends)
        self._methods = list(METHODS if methods is None else methods)
        self._experiments = list(DEFAULT_EXPERIMENTS if experiments is None else experiments)
        self._counts = list(DEFAULT_COUNTS if counts is None else counts)
        self._repeats = repeats
        self._workdir = workdir
        self._output = output
        self._options = backend_options or {}

    def compose(self) -> ComposeResult:
        o = self._options
        disk, lmdb, hdf5 = o.get("disk", {}), o.get("lmdb", {}), o.get("hdf5", {})
        level = Integer(minimum=0, maximum=9, failure_description="0-9")
        with HorizontalGroup(classes="backend-row"):
            yield Checkbox("disk", "disk" in self._backends, id="use-disk", compact=True,
                           tooltip="one PNG file per record")
            yield Label("png level", classes="opt-label")
            yield Input(str(disk.get("png_level", DEFAULT_PNG_LEVEL)), id="disk-png-level", type="integer", compact=True,
                        validators=[level], classes="level")
        with HorizontalGroup(classes="backend-row"):
            yield Checkbox("LMDB", "lmdb" in self._backends, id="use-lmdb", compact=True,
                           tooltip="one LMDB environment, one key per record")
            yield Label("encoding", classes="opt-label")
            yield Select([("raw", "raw"), ("png", "png")], value=lmdb.get("encoding", "raw"),
                         allow_blank=False, id="lmdb-encoding", compact=True)
        with HorizontalGroup(classes="backend-row"):
            yield Checkbox("HDF5", "hdf5" in self._backends, id="use-hdf5", compact=True,
                           tooltip="one HDF5 file")
            yield Select([("contiguous", "contiguous"), ("chunked", "chunked")],
                         value=hdf5.get("layout", "contiguous"), allow_blank=False, id="hdf5-layout", compact=True)
            yield Select([("none", "none"), ("gzip", "gzip"), ("lzf", "lzf")],
                         value=hdf5.get("compression", "none"), allow_blank=False, id="hdf5-compression",
                         compact=True)
            yield Label("level", classes="opt-label short")
            yield Input(str(hdf5.get("level", 4)), id="hdf5-level", type="integer", compact=True,
                        validators=[level], classes="level", tooltip="gzip level 0-9")
        yield Label("Methods", classes="section")
        with ItemGrid(min_column_width=14, classes="toggles", id="methods"):
            for m in METHODS:
                yield Checkbox(m, m in self._methods, id=f"method-{m}", compact=True)
        yield Label("Experiments", classes="section")
        with ItemGrid(min_column_width=22, classes="toggles", id="experiments"):
            for e in EXPERIMENTS:
                yield Checkbox(e, e in self._experiments, id=f"exp-{e}", compact=True)
        yield Label("Counts", classes="section")
        with ItemGrid(min_column_width=9, classes="toggles", id="counts"):
            for c in COUNTS:
                yield Checkbox(COUNT_LABELS[c], c in self._counts, id=f"count-{c}", compact=True)
        with HorizontalGroup(classes="field-row"):
            yield Label("repeats", classes="opt-label")
            yield Input("auto" if self._repeats is None else str(self._repeats), id="repeats", compact=True,
                        validators=[Regex(r"^\s*(auto|[1-9]\d*)?\s*$", failure_description="auto or N")],
                        tooltip="auto: 3 below 100,000 records, 1 at 100,000")
        with HorizontalGroup(classes="field-row"):
            yield Label("output", classes="opt-label")
            yield Input(self._output, id="output", compact=True, placeholder="folder for exported results",
                        tooltip="Export (e) writes results JSON and CSV here")
        with HorizontalGroup(classes="field-row"):
            yield Label("work dir", classes="opt-label")
            yield Input(self._workdir or "", id="workdir", compact=True, placeholder="system temp folder",
                        tooltip="where the temporary benchmark stores are written (removed afterwards)")

    def on_mount(self) -> None:
        self.border_title = "Backends & benchmark"
        self._sync_enabled()

    def _sync_enabled(self) -> None:
        for name, ids in (("disk", ["#disk-png-level"]), ("lmdb", ["#lmdb-encoding"]),
                          ("hdf5", ["#hdf5-layout", "#hdf5-compression", "#hdf5-level"])):
            on_ = self.query_one(f"#use-{name}", Checkbox).value
            for i in ids:
                self.query_one(i).disabled = not on_
        if self.query_one("#use-hdf5", Checkbox).value:
            self.query_one("#hdf5-level").disabled = self.query_one("#hdf5-compression", Select).value != "gzip"

    @on(Checkbox.Changed)
    @on(Select.Changed)
    @on(Input.Changed)
    def _changed(self, event: Message) -> None:
        event.stop()
        self._sync_enabled()
        self.post_message(self.Changed(self))

    # -- reading the pane ------------------------------------------------------------------
    def _int(self, selector: str, default: int) -> int:
        inp = self.query_one(selector, Input)
        try:
            value = int(inp.value)
        except ValueError:
            return default
        return value if 0 <= value <= 9 else default

    def config(self) -> BackendConfig:
        """The pane's current settings (invalid fields fall back to their defaults)."""
        q = self.query_one
        backends = [b for b in BACKENDS if q(f"#use-{b}", Checkbox).value]
        options: dict[str, dict[str, Any]] = {}
        if "disk" in backends:
            options["disk"] = {"png_level": self._int("#disk-png-level", DEFAULT_PNG_LEVEL)}
        if "lmdb" in backends:
            enc = str(q("#lmdb-encoding", Select).value)
            options["lmdb"] = {"encoding": enc}
            if enc == "png":
                options["lmdb"]["png_level"] = self._int("#disk-png-level", DEFAULT_PNG_LEVEL)
        if "hdf5" in backends:
            comp = str(q("#hdf5-compression", Select).value)
            options["hdf5"] = {"layout": str(q("#hdf5-layout", Select).value), "compression": comp}
            if comp == "gzip":
                options["hdf5"]["level"] = self._int("#hdf5-level", 4)
        repeats_text = q("#repeats", Input).value.strip().lower()
        repeats = int(repeats_text) if repeats_text.isdigit() and int(repeats_text) > 0 else None
        return BackendConfig(
            backends=backends,
            backend_options=options,
            methods=[m for m in METHODS if q(f"#method-{m}", Checkbox).value],
            experiments=[e for e in EXPERIMENTS if q(f"#exp-{e}", Checkbox).value],
            counts=[c for c in COUNTS if q(f"#count-{c}", Checkbox).value],
            repeats=repeats,
            workdir=q("#workdir", Input).value.strip() or None,
            output=q("#output", Input).value.strip() or ".",
        )
