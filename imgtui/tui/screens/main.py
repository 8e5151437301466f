"""The main screen: dataset pane, backend pane, live results (table and plots), run status.

The screen owns the ``BenchPlan`` (a reactive rebuilt from both panes on every change) and the
benchmark worker. The worker thread drives ``imgtui.bench.runner.BenchRunner``, which measures in
a child process, and posts one message per event (the child throttles progress to ~10 a second); the
``@on`` handlers below update widgets. The UI process never runs the measurement itself, and the
make-stores worker drives a ``StoresRunner`` child the same way.

"Make stores" (``m``) writes the dataset into a kept store per enabled backend under
``<output>/imgtui-stores/<name><suffix>`` (``.disk``, ``.lmdb``, ``.h5``: ``Backend.suffix``, or
``.<name>`` for a folder backend without one; the benchmark's own stores are temporary), so that
``b`` can browse them and the browser's ``c`` can compare one record across them. A
benchmark and make-stores never run at the same time.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
import time
from dataclasses import replace
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, HorizontalGroup
from textual.reactive import reactive
from textual.screen import Screen
from textual import events
from textual.widgets import (Button, Footer, Header, Label, ProgressBar, Static, Tab, TabbedContent, Tabs,
                             TabPane)
from textual.worker import Worker, WorkerState, get_current_worker

from ...bench import backend_info
from ...bench.model import BenchPlan, Error, Finished, Progress, Result, ResultRow, ResultTable, Started
from ...bench.runner import BenchRunner, StoresRunner, make_stores_limit
from ..messages import (
    BenchError,
    BenchFinished,
    BenchProgress,
    BenchResult,
    BenchStarted,
    ExportDone,
    StoresFinished,
    StoresProgress,
    StoresStarted,
    one_line_error,
)
from .browser import BrowserScreen
from .confirm import ConfirmScreen
from ..widgets.backend_pane import COUNT_LABELS, BackendPane
from ..widgets.dataset_pane import DatasetPane
from ..widgets.plots import Plots
from ..widgets.results_table import ResultsTable

#: the folder (inside the output folder) where make-stores writes
STORES_FOLDER = "imgtui-stores"


def store_base_name(spec: str) -> str:
    """The base file name of the stores made from dataset ``spec`` (no dots: siblings share it).

    ``../datasets/cifar10-test`` -> ``cifar10-test``, ``x.npz:train`` -> ``x-train``, any synthetic
    spec -> ``synthetic``.
    """
    text = (spec or "").strip()
    if not text or text.startswith("synthetic"):
        return "synthetic"
    if text.startswith("dicom:"):
        text = text[len("dicom:"):]
    key = ""
    if ":" in text and not Path(text).expanduser().exists():
        text, _, key = text.rpartition(":")
    path = Path(text.rstrip("/\\") or text).expanduser()
    name = path.name
    if not path.is_dir():
        name = path.stem if path.suffix else name
    if key:
        name = f"{name}-{key}"
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_") or "dataset"


def store_paths(output: str, spec: str, backends: list[str]) -> list[tuple[str, str]]:
    """(backend, path) of the store make-stores writes for each backend."""
    folder = Path(output or ".").expanduser().absolute() / STORES_FOLDER
    base = store_base_name(spec)
    # the suffix tells the stores of one dataset apart; the browser's compare finds them by base name
    return [(b, str(folder / f"{base}{backend_info.store_suffix(b)}")) for b in backends]


#: beside the made stores: what each was made from (dataset, options, record limit, count), so that
#: b reuses stores that match the dataset and asks before replacing ones that do not
MADE_FILE = ".imgtui-made.json"


def dataset_key(spec: str) -> str:
    """``spec`` with paths made absolute and trailing slashes dropped (``data/`` and ``./data`` are one dataset)."""
    text = (spec or "").strip() or "synthetic"
    if text.startswith(("synthetic", "medical")):
        return text
    prefix = "dicom:" if text.startswith("dicom:") else ""
    rest = text[len(prefix):]
    key = ""
    if ":" in rest and not Path(rest).expanduser().exists():
        rest, _, key = rest.rpartition(":")
    path = str(Path(rest.rstrip("/\\") or rest).expanduser().resolve())
    return prefix + path + (f":{key}" if key else "")


def read_made(folder: Path) -> dict[str, dict]:
    """The made-from records of the stores in ``folder`` ({} if none or unreadable)."""
    try:
        data = json.loads((folder / MADE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_made(folder: Path, entries: dict[str, dict]) -> None:
    """Record what the stores just made were made from (atomically; a failure only loses reuse)."""
    data = read_made(folder)
    data.update(entries)
    tmp = folder / f"{MADE_FILE}.tmp-{os.getpid()}"
    try:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, folder / MADE_FILE)
    except OSError:
        tmp.unlink(missing_ok=True)


def made_entry(spec: str, backend: str, options: dict, limit: int | None) -> dict:
    return {"dataset": dataset_key(spec), "backend": backend, "options": options, "limit": limit}


def _store_count(path: str) -> int | None:
    from ...backends import open_store

    try:
        reader = open_store(path)
    except Exception:
        return None
    try:
        return len(reader)
    finally:
        reader.close()


def sort_made(jobs: list[tuple[str, str, dict]], spec: str, limit: int | None) -> tuple[list, list, list]:
    """Split make-stores jobs into (matching, other, missing): stores that exist and were made from
    this dataset with these options and record limit (and hold the count they were made with),
    stores that exist but were made from something else (or are unknown), and stores not there."""
    matching, other, missing = [], [], []
    records = read_made(Path(jobs[0][1]).parent) if jobs else {}
    for job in jobs:
        backend, path, options = job
        if not os.path.exists(path):
            missing.append(job)
            continue
        entry = records.get(Path(path).name)
        want = made_entry(spec, backend, options, limit)
        same = isinstance(entry, dict) and {k: entry.get(k) for k in want} == want
        (matching if same and _store_count(path) == entry.get("count") else other).append(job)
    return matching, other, missing


def plan_summary(plan: BenchPlan) -> str:
    """The one-line description of a plan shown under the panes (the dataset last: it is long)."""

    def opts(b: str) -> str:
        o = plan.backend_options.get(b) or {}
        return f"{b}({','.join(str(v) for v in o.values())})" if o else b

    counts = ",".join(COUNT_LABELS.get(c, f"{c:,}") for c in plan.counts) or "none"
    repeats = "auto" if plan.repeats is None else str(plan.repeats)
    return (
        f"Plan: counts {counts} · repeats {repeats} · "
        f"{' '.join(opts(b) for b in plan.backends) or 'no backend'} · "
        f"{'/'.join(plan.methods) or 'no method'} · {len(plan.experiments)} experiments · {plan.dataset}"
    )


def plan_problem(plan: BenchPlan) -> str | None:
    """Why the plan cannot run, or None."""
    for name, value in (("backend", plan.backends), ("method", plan.methods),
                        ("experiment", plan.experiments), ("record count", plan.counts)):
        if not value:
            return f"Choose at least one {name} before starting."
    if plan.methods == ["floor"] and not plan.backends:
        return "Choose at least one backend before starting."
    return None


def fmt_elapsed(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class MainScreen(Screen):
    """Configure, run and watch a benchmark."""

    AUTO_FOCUS = "#results-table"
    BINDINGS = [
        Binding("s", "start", "Start", tooltip="Run the benchmark plan"),
        Binding("c", "cancel", "Cancel",
                tooltip="Stop the running benchmark or make-stores (nothing half-written is left)"),
        Binding("escape", "escape", "Leave field / cancel", show=False,
                tooltip="Leave the field; while a run goes on, ask whether to cancel it"),
        Binding("e", "export", "Export", tooltip="Write results as JSON and CSV into the output folder"),
        Binding("m", "make_stores", "Make",
                tooltip="Write the dataset into a kept store per enabled backend, in the imgtui-stores folder of the output folder"),
        Binding("b", "browse", "Browse",
                tooltip="Open the record browser on the selected store, or on the stores made with m"),
        Binding("p", "toggle_plots", "Plots", tooltip="Switch between the results table and the plots"),
        Binding("v", "next_view", "View", tooltip="Small terminal: show the next part (dataset, backends, results)"),
    ]

    #: the benchmark plan built from the two panes
    plan: reactive[BenchPlan] = reactive(BenchPlan, init=False)
    #: a benchmark worker is running
    running: reactive[bool] = reactive(False)
    #: a make-stores worker is running
    making: reactive[bool] = reactive(False)
    #: small terminal: one of the three parts at a time (tabs), instead of the panes above the results
    compact: reactive[bool] = reactive(False, init=False)
    #: the part shown when compact: "dataset", "backends" or "results"
    view: reactive[str] = reactive("results", init=False)

    #: below these sizes the panes and the results cannot all be usable at once
    COMPACT_WIDTH = 140
    COMPACT_HEIGHT = 38

    def __init__(self, dataset: str = "synthetic", *, output: str = ".", **pane_options) -> None:
        super().__init__()
        self._dataset = dataset
        self._pane_options = dict(pane_options, output=output)
        self.output = output
        self.fresh = False  # the "measure again" box: ignore the figures the results folder keeps
        self.rows: list[ResultRow] = []
        self.last_results: ResultTable | None = None
        self.cancel_event: threading.Event | None = None
        self.bench_worker: Worker | None = None
        self._started_at = 0.0
        self._timer = None
        self._cancelling = False
        self.export_paths: list[str] = []
        self._error_messages: set[str] = set()
        #: dataset spec -> the stores make-stores wrote for it (complete runs only)
        self.made_stores: dict[str, list[str]] = {}
        self._make_made: dict[str, dict] = {}
        self.make_worker: Worker | None = None
        #: the child processes of a running benchmark / make-stores (set by their workers)
        self.bench_runner: BenchRunner | None = None
        self.stores_runner: StoresRunner | None = None
        self.make_cancel: threading.Event | None = None
        self._make_spec = ""
        self._browse_after_make = False

    def compose(self) -> ComposeResult:
        yield Header()
        yield Tabs(Tab("Dataset", id="show-dataset"), Tab("Backends", id="show-backends"),
                   Tab("Results", id="show-results"), id="compact-tabs", active="show-results")
        with Horizontal(id="panes"):
            yield DatasetPane(self._dataset, id="dataset-pane")
            yield BackendPane(id="backend-pane", **self._pane_options)
        with TabbedContent(id="views", initial="tab-results"):
            with TabPane("Results", id="tab-results"):
                yield ResultsTable(id="results-table")
            with TabPane("Plots", id="tab-plots"):
                yield Plots(id="plots")
        yield Static("", id="plan-summary", markup=False)
        with HorizontalGroup(id="run-status"):
            yield Static("idle", id="step-name", markup=False)
            yield Label("step", classes="bar-label")
            yield ProgressBar(total=1, id="step-progress", show_eta=False)
            yield Label("overall", classes="bar-label")
            yield ProgressBar(total=1, id="overall-progress", show_eta=False)
            yield Static("00:00", id="elapsed")
            yield Button("Start", id="start", variant="success", compact=True, tooltip="Start (s)")
            yield Button("Cancel", id="cancel", variant="error", compact=True, disabled=True, tooltip="Cancel (c)")
            yield Button("Export", id="export", variant="primary", compact=True, disabled=True, tooltip="Export (e)")
            yield Button("Make stores", id="make-stores", variant="default", compact=True,
                         tooltip="Make stores (m): keep a copy of the dataset in each enabled backend to browse (b)")
        yield Footer()

    def on_mount(self) -> None:
        self._update_results_title()
        self.update_plan()
        self._show_view()
        self._fit(self.app.size.width, self.app.size.height)

    # -- layout: wide (panes above the results) or compact (one part at a time, tabs) -----------
    def on_resize(self, event: events.Resize) -> None:
        self._fit(event.size.width, event.size.height)

    def _fit(self, width: int, height: int) -> None:
        self.compact = width < self.COMPACT_WIDTH or height < self.COMPACT_HEIGHT

    def watch_compact(self, compact: bool) -> None:
        self.set_class(compact, "-compact")
        self.query_one(Footer).compact = compact
        self._show_view()
        self.refresh_bindings()

    def _show_view(self) -> None:
        """Compact: only the current part is displayed; wide: all of them. Set on the parts
        themselves: a class on the screen restyles every widget below it (measured ~1 s of CPU
        per `v` at 80x24)."""
        view, compact = self.view, self.compact
        self.query_one("#panes").display = not compact or view != "results"
        self.query_one("#dataset-pane").display = not compact or view == "dataset"
        self.query_one("#backend-pane").display = not compact or view == "backends"
        self.query_one("#views").display = not compact or view == "results"

    def watch_view(self, old: str, new: str) -> None:
        tabs = self.query_one("#compact-tabs", Tabs)
        if tabs.active != f"show-{new}":
            tabs.active = f"show-{new}"
        if self.compact:
            # show the new part and focus it before the old one hides: one focus change (hiding
            # the focused widget first moved the focus twice, each restyling the screen)
            target = {"dataset": "#dataset-pane", "backends": "#backend-pane", "results": "#views"}[new]
            self.query_one("#panes").display = new != "results"
            self.query_one(target).display = True
            if not self.query_one(target).has_focus_within:
                self._focus_view(target)
        self._show_view()

    def _focus_view(self, target: str) -> None:
        widget = self.query_one(target)
        focusables = [w for w in widget.query("*") if w.focusable]
        if widget.focusable:
            widget.focus()
        elif focusables:
            focusables[0].focus()

    @on(Tabs.TabActivated, "#compact-tabs")
    def _tab_chosen(self, event: Tabs.TabActivated) -> None:
        event.stop()
        self.view = str(event.tab.id).removeprefix("show-")

    def action_next_view(self) -> None:
        views = ["dataset", "backends", "results"]
        self.view = views[(views.index(self.view) + 1) % len(views)]

    # -- the plan --------------------------------------------------------------------------
    def build_plan(self) -> BenchPlan:
        cfg = self.query_one(BackendPane).config()
        self.output = cfg.output
        self.fresh = cfg.fresh
        pane = self.query_one(DatasetPane)
        return BenchPlan(
            dataset=pane.spec,
            on_error=pane.on_error,
            backends=cfg.backends,
            backend_options=cfg.backend_options,
            methods=cfg.methods,
            experiments=cfg.experiments,
            counts=cfg.counts,
            repeats=cfg.repeats,
            workdir=cfg.workdir,
        )

    def update_plan(self) -> None:
        self.plan = self.build_plan()

    @on(DatasetPane.Changed)
    @on(BackendPane.Changed)
    def _pane_changed(self) -> None:
        self.update_plan()

    def watch_plan(self, plan: BenchPlan) -> None:
        self._show_plan_summary()

    @on(DatasetPane.Loaded)
    def _show_plan_summary(self) -> None:
        text = plan_summary(self.plan)
        summary = self.query_one(DatasetPane).summary
        n = summary.get("count") if summary else None
        if isinstance(n, int) and self.plan.counts and max(self.plan.counts) > n:
            text = f"⚠ the dataset has {n:,} records, fewer than count {max(self.plan.counts):,} · " + text
        self.query_one("#plan-summary", Static).update(text)

    @property
    def busy(self) -> bool:
        """A benchmark or make-stores is running."""
        return self.running or self.making

    def watch_running(self, running: bool) -> None:
        if running and self.compact:
            self.view = "results"
        self._sync_run_state()

    def watch_making(self) -> None:
        self._sync_run_state()

    def _sync_run_state(self) -> None:
        busy = self.busy
        self.query_one("#start", Button).disabled = busy
        self.query_one("#make-stores", Button).disabled = busy
        self.query_one("#cancel", Button).disabled = not busy
        self.query_one("#export", Button).disabled = busy or not self.rows
        self.query_one(BackendPane).disabled = busy
        self.query_one("#dataset-pane").disabled = busy
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("start", "make_stores"):
            return None if self.busy else True
        if action == "cancel":
            return True if self.busy else None
        if action == "next_view":
            return True if self.compact else False
        return True

    # -- actions ---------------------------------------------------------------------------
    def action_start(self) -> None:
        if self.running:
            self.notify("A benchmark is already running.", severity="warning")
            return
        if self.making:
            self.notify("Stores are being made: wait for them (or cancel with c) before starting a benchmark.",
                        severity="warning")
            return
        plan = self.build_plan()
        self.plan = plan
        problem = plan_problem(plan)
        pane = self.query_one(DatasetPane)
        if problem is None and pane.error:
            problem = f"The dataset cannot be read: {pane.error}"
        if problem:
            self.notify(problem, severity="error", markup=False)
            return
        self.rows = []
        self.last_results = None
        self.query_one(ResultsTable).clear_results()
        self.query_one(Plots).update_rows([])
        self._update_results_title()
        self.query_one("#step-progress", ProgressBar).update(total=None, progress=0)
        self.query_one("#overall-progress", ProgressBar).update(total=None, progress=0)
        self.query_one("#step-name", Static).update("starting…")
        self.cancel_event = threading.Event()
        self._error_messages = set()
        self._cancelling = False
        self._started_at = time.monotonic()
        self._tick()
        self._timer = self.set_interval(0.5, self._tick)
        self.running = True
        self.bench_worker = self.run_bench(replace(plan), self.cancel_event, self.fresh)

    def action_cancel(self) -> None:
        if self.making:
            self.cancel_make_stores()
            return
        if not self.running or self.cancel_event is None:
            self.notify("No benchmark is running.", severity="information")
            return
        if not self._cancelling:
            self._cancelling = True
            self.cancel_event.set()
            self.query_one("#step-name", Static).update("cancelling… (removing temporary stores)")

    def action_escape(self) -> None:
        """Leave a field; while something runs, ask before cancelling it (closing a dialog with
        Escape must not end a long run by accident)."""
        if not self.busy:
            self.query_one("#compact-tabs" if self.compact and self.view != "results" else "#results-table").focus()
            return
        what = "the benchmark" if self.running else "making the stores"

        def answered(yes: bool | None) -> None:
            if yes and self.busy:
                self.action_cancel()

        self.app.push_screen(ConfirmScreen(f"Cancel {what}? Its temporary stores are removed.",
                                           yes="Cancel it", no="Keep running"), answered)

    def action_export(self) -> None:
        if self.running:
            self.notify("Wait for the benchmark to finish (or cancel it) before exporting.", severity="warning")
            return
        if not self.rows:
            self.notify("Nothing to export yet: run a benchmark first (s).", severity="warning")
            return
        table = self.last_results
        if table is None or not table.rows:
            table = ResultTable(rows=list(self.rows), plan=self.plan.to_dict(), dataset=self.plan.dataset)
        self.export_results(table, self.query_one(BackendPane).config().output)

    def action_browse(self) -> None:
        """Browse the store dataset, or the stores made from this dataset (making them first)."""
        pane = self.query_one(DatasetPane)
        path = pane.store_path
        if path is not None:
            self.open_browser(path)
            return
        if pane.error:
            self.notify(f"The dataset cannot be read: {pane.error}", severity="error", markup=False)
            return
        if not pane.kind:
            self.notify("The dataset is still being read; press b again in a moment.", severity="warning")
            return
        if self.making and self._make_spec == pane.spec:
            self._browse_after_make = True
            self.notify("The stores of this dataset are being made; the browser opens when they are done.")
            return
        self.action_make_stores(browse_after=True)

    def open_browser(self, path: str) -> None:
        self.app.push_screen(BrowserScreen(path))

    def action_make_stores(self, browse_after: bool = False) -> bool:
        """Make a store of the dataset per enabled backend (m), or for b: reuse the stores made
        from this dataset with these options, make the missing ones, and ask before replacing a
        store made from something else. False (and a notification) if nothing starts."""
        if self.running:
            self.notify("Wait for the benchmark to finish (or cancel it with c) before making stores.",
                        severity="warning")
            return False
        if self.making:
            self.notify("Stores are already being made.", severity="warning")
            return False
        plan = self.build_plan()
        self.plan = plan
        pane = self.query_one(DatasetPane)
        if pane.error:
            self.notify(f"The dataset cannot be read: {pane.error}", severity="error", markup=False)
            return False
        if not plan.backends:
            self.notify("Choose at least one backend before making stores.", severity="error")
            return False
        jobs = [(b, path, dict(plan.backend_options.get(b) or {}))
                for b, path in store_paths(self.output, plan.dataset, plan.backends)]
        length = (pane.summary or {}).get("count")
        limit, _note = make_stores_limit(length if isinstance(length, int) else None, list(plan.counts))
        matching, other, missing = sort_made(jobs, plan.dataset, limit)
        if browse_after and matching and not other and not missing:
            self.open_browser(matching[0][1])  # made from this dataset before: reuse them
            return True
        todo = (other + missing) if browse_after else jobs
        replaced = [Path(j[1]).name for j in todo if os.path.exists(j[1])]
        if not replaced:
            return self._start_make(plan, todo, limit, browse_after)
        why = ("made from another dataset or with other options" if other else "made from this dataset")
        question = (f"{', '.join(replaced)} in {Path(todo[0][1]).parent} already exist ({why}). "
                    f"Replace {'it' if len(replaced) == 1 else 'them'}?")

        def answered(yes: bool | None) -> None:
            if yes:
                self._start_make(plan, todo, limit, browse_after)
            elif browse_after and (matching or other):
                self.open_browser((matching or other)[0][1])
            else:
                self.notify("Kept the existing stores.", title="Make stores")

        self.app.push_screen(ConfirmScreen(question, yes="Replace", no="Keep"), answered)
        return True

    def _start_make(self, plan: BenchPlan, jobs: list[tuple[str, str, dict]], limit: int | None,
                    browse_after: bool) -> bool:
        if self.busy:
            self.notify("Wait for the running work to finish before making stores.", severity="warning")
            return False
        if browse_after:
            self.notify("This dataset is not a store: making a copy in each enabled backend first (m); "
                        "the browser opens when they are done.", title="Browse", markup=False)
        self._make_spec = plan.dataset
        self._make_made = {Path(path).name: made_entry(plan.dataset, b, options, limit) for b, path, options in jobs}
        self._browse_after_make = browse_after
        self.make_cancel = threading.Event()
        self.query_one("#step-progress", ProgressBar).update(total=None, progress=0)
        self.query_one("#overall-progress", ProgressBar).update(total=len(jobs), progress=0)
        self.query_one("#step-name", Static).update(f"making stores in {Path(jobs[0][1]).parent} …")
        self._started_at = time.monotonic()
        self._tick()
        self._timer = self.set_interval(0.5, self._tick)
        self.making = True
        self.make_worker = self.make_stores(plan.dataset, jobs, list(plan.counts), self.make_cancel, plan.on_error)
        return True

    def cancel_make_stores(self) -> None:
        if self.make_cancel is not None and not self.make_cancel.is_set():
            self.make_cancel.set()
            self._browse_after_make = False
            self.query_one("#step-name", Static).update("cancelling make stores… (removing the unfinished store)")

    def action_toggle_plots(self) -> None:
        views = self.query_one("#views", TabbedContent)
        views.active = "tab-plots" if views.active == "tab-results" else "tab-results"

    def _tick(self) -> None:
        self.query_one("#elapsed", Static).update(fmt_elapsed(time.monotonic() - self._started_at))

    # -- buttons ---------------------------------------------------------------------------
    @on(Button.Pressed, "#start")
    def _start_pressed(self) -> None:
        self.action_start()

    @on(Button.Pressed, "#cancel")
    def _cancel_pressed(self) -> None:
        self.action_cancel()

    @on(Button.Pressed, "#export")
    def _export_pressed(self) -> None:
        self.action_export()

    @on(Button.Pressed, "#make-stores")
    def _make_stores_pressed(self) -> None:
        self.action_make_stores()

    # -- the make-stores worker ------------------------------------------------------------
    @work(thread=True, exclusive=True, exit_on_error=False, group="convert", name="make stores")
    def make_stores(self, spec: str, jobs: list[tuple[str, str, dict]], counts: list[int],
                    cancel: threading.Event, on_error: str = "stop") -> None:
        """Convert dataset ``spec`` into each (backend, path, options) of ``jobs`` in a child process
        (``StoresRunner``), replacing old stores; its events become messages."""
        worker = get_current_worker()

        def cancelled() -> bool:
            if worker.is_cancelled:
                cancel.set()
            return cancel.is_set()

        runner = StoresRunner(spec, jobs, counts, on_error)
        self.stores_runner = runner
        try:
            for ev in runner.events(cancelled):
                if ev.kind == "started":
                    self.post_message(StoresStarted(ev.backend, ev.path, ev.index, ev.backends, ev.total, ev.note))
                elif ev.kind == "progress":
                    self.post_message(StoresProgress(ev.done, ev.total, ev.index, ev.backends))
                elif ev.kind == "finished":
                    self.post_message(StoresFinished(spec, list(ev.paths), ev.done,
                                                     cancelled=ev.cancelled or cancel.is_set()))
        finally:
            self.stores_runner = None

    @on(StoresStarted)
    def _stores_started(self, m: StoresStarted) -> None:
        if m.index == 0:
            self.notify(f"Making {m.backends} store(s) of {m.note} in {Path(m.path).parent}; c cancels.",
                        title="Make stores", markup=False)
        self.query_one("#step-name", Static).update(f"{m.backend} store {m.index + 1}/{m.backends}: {m.note}")
        self.query_one("#step-name", Static).tooltip = m.path
        self.query_one("#step-progress", ProgressBar).update(total=m.count, progress=0)
        self.query_one("#overall-progress", ProgressBar).update(total=m.backends, progress=m.index)

    @on(StoresProgress)
    def _stores_progress(self, m: StoresProgress) -> None:
        if m.total:
            self.query_one("#step-progress", ProgressBar).update(total=m.total, progress=m.done)
            self.query_one("#overall-progress", ProgressBar).update(
                total=m.backends, progress=m.index + min(1.0, m.done / m.total)
            )

    @on(StoresFinished)
    def _stores_finished(self, m: StoresFinished) -> None:
        names = ", ".join(Path(p).name for p in m.paths)
        folder = str(Path(m.paths[0]).parent) if m.paths else ""
        if m.cancelled:
            kept = f"; kept the finished {names}" if m.paths else ""
            self.query_one("#step-name", Static).update(f"make stores cancelled{kept}")
            self.notify(f"Make stores cancelled: no half-written store is left{kept}.",
                        title="Make stores", severity="warning", markup=False)
            return
        self.made_stores[m.spec] = list(m.paths)
        if m.paths:
            made = self._make_made
            write_made(Path(m.paths[0]).parent, {Path(p).name: dict(made[Path(p).name], count=m.count)
                                                  for p in m.paths if Path(p).name in made})
        for bar in (self.query_one("#step-progress", ProgressBar), self.query_one("#overall-progress", ProgressBar)):
            bar.update(total=bar.total or 1, progress=bar.total or 1)
        base = Path(m.paths[0]).stem if m.paths else ""
        short = " ".join(p.name.replace(base, "", 1) if i else p.name for i, p in enumerate(map(Path, m.paths)))
        self.query_one("#step-name", Static).update(f"stores ready: {short} ({m.count:,} records)")
        self.query_one("#step-name", Static).tooltip = folder
        browse = bool(self._browse_after_make and m.paths and self.app.screen is self
                      and self.query_one(DatasetPane).spec == m.spec)
        then = ("Opening the first in the browser; c there compares a record across them." if browse
                else "b browses them; c in the browser compares a record across them.")
        self.notify(f"Made {names} ({m.count:,} records each) in {folder}. {then}",
                    title="Make stores", markup=False, timeout=10)
        if browse:
            self.open_browser(m.paths[0])
        self._browse_after_make = False

    # -- the benchmark worker --------------------------------------------------------------
    @work(thread=True, exclusive=True, exit_on_error=False, group="bench", name="benchmark")
    def run_bench(self, plan: BenchPlan, cancel: threading.Event, fresh: bool = False) -> None:
        """Run ``plan`` in a child process (``BenchRunner``) and post one message per event."""
        worker = get_current_worker()

        def cancelled() -> bool:
            if worker.is_cancelled:
                cancel.set()
            return cancel.is_set()

        runner = BenchRunner(plan, fresh)  # a plan that cannot run fails here, in one line
        self.bench_runner = runner
        try:
            for event in runner.events(cancelled):  # progress comes throttled by the child
                if isinstance(event, Progress):
                    self.post_message(BenchProgress(event.done, event.total, event.step, event.steps))
                elif isinstance(event, Started):
                    self.post_message(BenchStarted(event.experiment, event.backend, event.method, event.count,
                                                   event.step, event.steps))
                elif isinstance(event, Result):
                    self.post_message(BenchResult(event.row))
                elif isinstance(event, Error):
                    self.post_message(BenchError(event.experiment, event.backend, event.method, event.count,
                                                 event.message))
                elif isinstance(event, Finished):
                    self.post_message(BenchFinished(event.results, event.cancelled))
        finally:
            self.bench_runner = None

    @on(BenchStarted)
    def _bench_started(self, m: BenchStarted) -> None:
        if self._cancelling:
            return
        # the engine numbers steps from 1
        step = f"{m.step}/{m.steps} " if m.steps else ""
        self.query_one("#step-name", Static).update(
            f"{step}{m.experiment} · {m.backend}/{m.method} · {m.count:,}"
        )
        self.query_one("#step-progress", ProgressBar).update(total=None, progress=0)
        if m.steps:
            self.query_one("#overall-progress", ProgressBar).update(total=m.steps, progress=max(0, m.step - 1))

    @on(BenchProgress)
    def _bench_progress(self, m: BenchProgress) -> None:
        if m.total > 0:
            self.query_one("#step-progress", ProgressBar).update(total=m.total, progress=m.done)
        if m.steps:
            frac = m.done / m.total if m.total else 0.0
            self.query_one("#overall-progress", ProgressBar).update(total=m.steps, progress=max(0, m.step - 1) + frac)

    @on(BenchResult)
    def _bench_result(self, m: BenchResult) -> None:
        self.rows.append(m.row)
        table = self.query_one(ResultsTable)
        follow = table.sort_column is None and table.scroll_y >= table.max_scroll_y - 1
        table.add_result(m.row)
        if follow:  # keep the newest row in view unless the user scrolled up or sorted
            table.call_after_refresh(table.scroll_end, animate=False)
        self.query_one(Plots).update_rows(self.rows)
        self._update_results_title()

    def _update_results_title(self) -> None:
        errors = sum(1 for r in self.rows if r.error)
        failed = f", {errors} failed" if errors else ""
        self.query_one("#views").border_title = f"{len(self.rows)} results{failed}"

    @on(ResultsTable.RowHighlighted, "#results-table")
    def _row_highlighted(self, event: ResultsTable.RowHighlighted) -> None:
        # the error column is narrow: show the whole error of the highlighted row in the status line
        if self.running:
            return
        table = self.query_one(ResultsTable)
        rows = table.sorted_rows()
        if 0 <= event.cursor_row < len(rows) and rows[event.cursor_row].error:
            r = rows[event.cursor_row]
            self.query_one("#step-name", Static).update(f"{r.backend}/{r.method}: {r.error}")

    @on(BenchError)
    def _bench_error(self, m: BenchError) -> None:
        # the failed step also arrives as a row with its error; notify each distinct cause once
        if m.message in self._error_messages:
            return
        self._error_messages.add(m.message)
        if len(self._error_messages) > 3:
            return
        self.notify(
            f"{m.experiment} {m.backend}/{m.method} at {m.count:,}: {m.message}",
            title="Step failed",
            severity="warning",
            markup=False,
        )

    @on(BenchFinished)
    def _bench_finished(self, m: BenchFinished) -> None:
        self.last_results = m.results
        elapsed = fmt_elapsed(time.monotonic() - self._started_at)
        if m.cancelled:
            self.query_one("#step-name", Static).update(f"cancelled after {elapsed}")
            self.notify(f"Benchmark cancelled; {len(self.rows)} results kept.", severity="warning")
        else:
            self.query_one("#step-name", Static).update(f"finished: {len(self.rows)} results in {elapsed}")
            for bar in self.query(ProgressBar):
                bar.update(total=bar.total or 1, progress=bar.total or 1)
            head = m.results.reused
            again = (f" {head[:1].upper()}{head[1:]} (results folder); tick 'measure again' to measure "
                     "them too.") if head else ""
            self.notify(f"Benchmark finished: {len(self.rows)} results in {elapsed}.{again}", markup=False)

    @on(Worker.StateChanged)
    def _worker_state(self, event: Worker.StateChanged) -> None:
        # errors are notified by the app (one place); here the run state is wound down
        if event.worker is self.make_worker and event.state in (
            WorkerState.SUCCESS, WorkerState.ERROR, WorkerState.CANCELLED
        ):
            self._make_ended(event.worker, event.state)
            return
        if event.state == WorkerState.ERROR:
            self.app.report_worker_error(event.worker)  # type: ignore[attr-defined]
        if event.worker is self.bench_worker and event.state in (
            WorkerState.SUCCESS, WorkerState.ERROR, WorkerState.CANCELLED
        ):
            if self._timer is not None:
                self._timer.stop()
                self._timer = None
                self._tick()
            if event.state == WorkerState.ERROR:
                self.query_one("#step-name", Static).update("failed (see the notification)")
            elif event.state == WorkerState.CANCELLED and self.last_results is None:
                self.query_one("#step-name", Static).update("cancelled")
            self.running = False
            self._cancelling = False

    def _make_ended(self, worker: Worker, state: WorkerState) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
            self._tick()
        if state == WorkerState.ERROR:
            message = one_line_error(worker.error)
            self.query_one("#step-name", Static).update(f"make stores failed: {message}")
            self.notify(message, title="Make stores", severity="error", markup=False, timeout=10)
        elif state == WorkerState.CANCELLED:
            self.query_one("#step-name", Static).update("make stores cancelled")
        self._browse_after_make = False
        self.making = False

    async def stop_make_stores(self, timeout: float = 3.0) -> bool:
        """Cancel a running make-stores and wait (up to ``timeout`` s) for it to roll back."""
        worker = self.make_worker
        if worker is None or worker.is_finished:
            return True
        if self.make_cancel is not None:
            self.make_cancel.set()
        deadline = time.monotonic() + timeout
        while not worker.is_finished and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return worker.is_finished

    async def stop_bench(self, timeout: float = 3.0) -> bool:
        """Cancel a running benchmark and wait (up to ``timeout`` s) for it to clean up."""
        worker = self.bench_worker
        if worker is None or worker.is_finished:
            return True
        if self.cancel_event is not None:
            self.cancel_event.set()
        deadline = time.monotonic() + timeout
        while not worker.is_finished and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return worker.is_finished

    def shutdown(self) -> None:
        """Stop a benchmark or make-stores at once: their children are killed and their temporary
        stores removed (the exit path: ctrl+q after a wait, SIGTERM/SIGHUP, the app's end)."""
        for event in (self.cancel_event, self.make_cancel):
            if event is not None:
                event.set()
        for runner in (self.bench_runner, self.stores_runner):
            if runner is not None:
                runner.close()

    def on_unmount(self) -> None:
        self.shutdown()

    # -- export ----------------------------------------------------------------------------
    @work(thread=True, exclusive=True, exit_on_error=False, group="export", name="export")
    def export_results(self, table: ResultTable, output: str) -> None:
        folder = Path(output).expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = folder / f"imgtui-results-{stamp}"
        n = 1
        while base.with_suffix(".json").exists() or base.with_suffix(".csv").exists():
            n += 1
            base = folder / f"imgtui-results-{stamp}-{n}"
        json_path, csv_path = base.with_suffix(".json"), base.with_suffix(".csv")
        table.to_json(json_path)
        table.to_csv(csv_path)
        self.post_message(ExportDone([str(json_path), str(csv_path)]))

    @on(ExportDone)
    def _export_done(self, m: ExportDone) -> None:
        self.export_paths = m.paths
        self.notify("Exported " + " and ".join(m.paths), title="Export", markup=False)
