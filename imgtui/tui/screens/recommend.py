"""Which backend for these images? A form for the needs and a recommendation backed by figures.

The screen uses the main screen's results when it has any; what the needs ask for and the results
lack is measured with a small plan in a thread worker (``@work(thread=True, exit_on_error=False)``)
that posts messages; the handlers update the widgets. Escape closes the screen (and cancels a
running measurement).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Button, Checkbox, Footer, Header, Label, ProgressBar, Select, Static
from textual.worker import Worker, WorkerState, get_current_worker

from ...bench.model import Finished, Progress, ResultTable, Started
from ...bench.memory import results_dir
from ...bench.recommend import Needs, Recommendation, missing_experiments
from ...bench.runner import RecommendDone, RecommendRunner

ACCESS_CHOICES = [("random batches (training)", "random"), ("sequential (whole set, slices)", "sequential"),
                  ("single records (viewer)", "single")]
CHANGES_CHOICES = [("static", "static"), ("growing (appends)", "growing"), ("changing (edits, deletes)", "changing")]
READERS_CHOICES = [("one process", "one"), ("many processes", "many")]


@dataclass
class RecommendProgress(Message):
    text: str
    step: int
    steps: int


@dataclass
class RecommendReady(Message):
    recommendation: Recommendation
    ran: list[str]


def render_recommendation(rec: Recommendation, ran: list[str] | None = None) -> Text:
    """The recommendation as styled text (no theme colours hard-coded: rich styles by meaning)."""
    t = Text()
    opts = ", ".join(f"{k}={v}" for k, v in rec.options.items()) or "default options"
    t.append("Recommended: ", style="bold")
    t.append(rec.name, style="bold reverse")
    t.append(f"  ({opts})\n\n")
    profile = rec.profile
    t.append("Your images: ", style="bold")
    t.append(f"{profile.get('count', 0):,} records, "
             f"{profile.get('shape') if profile.get('fixed_size') else 'variable sizes'}, "
             f"{profile.get('bit_depth')}-bit\n\n")
    t.append("Why\n", style="bold underline")
    for r in rec.reasons or ["no measured figure separated the backends"]:
        t.append(f" • {r}\n")
    if rec.tradeoffs:
        t.append("\nTrade-offs accepted\n", style="bold underline")
        for r in rec.tradeoffs:
            t.append(f" • {r}\n")
    if rec.too_close:
        t.append("\nToo close to call (the measured intervals overlap)\n", style="bold underline")
        for r in rec.too_close:
            t.append(f" • {r}\n")
    t.append("\nMeasured: ", style="bold")
    t.append(", ".join(rec.measured) or "nothing")
    if ran:
        t.append(f"  (just ran: {', '.join(ran)})", style="italic")
    if rec.missing:
        t.append("\nNot measured: ", style="bold")
        t.append(", ".join(rec.missing))
    if rec.intervals:
        t.append(f"\n{rec.intervals[:1].upper()}{rec.intervals[1:]}", style="italic")
    return t


class RecommendScreen(Screen):
    """Pick the needs; get a backend, its options, the measured reasons and the trade-offs."""

    DEFAULT_CSS = """
    RecommendScreen #rec-body { height: 1fr; }
    RecommendScreen #rec-form {
        width: 44; height: 100%; padding: 0 1;
        border: round $primary 50%; border-title-color: $text-primary; background: $surface;
    }
    RecommendScreen #rec-form:focus-within { border: round $primary; }
    RecommendScreen #rec-form Label { color: $text-muted; margin-top: 1; }
    RecommendScreen #rec-form Select { width: 100%; }
    RecommendScreen #rec-form Checkbox { margin-top: 1; }
    RecommendScreen #rec-go { margin-top: 1; width: 100%; }
    RecommendScreen #rec-status { margin-top: 1; color: $text-muted; }
    RecommendScreen #rec-progress { margin-top: 1; }
    RecommendScreen #rec-output-box {
        height: 100%; padding: 0 1;
        border: round $primary 50%; border-title-color: $text-primary; background: $surface;
    }
    """

    HELP = """\
# Recommend

Say how you will use the store (access pattern, readers, whether it grows or changes); imgtui
measures the backends on your dataset (or uses the results of the last benchmark) and recommends
one with the measured reasons.
"""

    BINDINGS = [
        Binding("escape", "close", "Close", tooltip="Back to the benchmark (cancels a running measurement)"),
        Binding("ctrl+r", "recommend", "Recommend", tooltip="Recommend a backend for these needs"),
    ]

    def __init__(self, dataset: str, results: ResultTable | None = None, *, count: int = 2000,
                 workdir: str | None = None) -> None:
        super().__init__()
        self.dataset = dataset
        self.results = results if results is not None and results.rows else None
        self.count = count
        self.workdir = workdir
        self.cancel_event: threading.Event | None = None
        self.worker: Worker | None = None
        self.recommendation: Recommendation | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="rec-body"):
            with Vertical(id="rec-form") as form:
                form.border_title = "Your needs"
                yield Label("How are records read?")
                yield Select(ACCESS_CHOICES, value="random", allow_blank=False, id="rec-access", compact=True)
                yield Label("Does the dataset change?")
                yield Select(CHANGES_CHOICES, value="static", allow_blank=False, id="rec-changes", compact=True)
                yield Label("Readers")
                yield Select(READERS_CHOICES, value="one", allow_blank=False, id="rec-readers", compact=True)
                yield Checkbox("people open the image files", id="rec-people", compact=True)
                yield Checkbox("the store must be one file", id="rec-single", compact=True)
                yield Button("Recommend", id="rec-go", variant="primary", compact=True, tooltip="Recommend (ctrl+r)")
                yield Static("", id="rec-status", markup=False)
                yield ProgressBar(total=1, id="rec-progress", show_eta=False)
            with VerticalScroll(id="rec-output-box") as box:
                box.border_title = "Recommendation"
                yield Static(self._intro(), id="rec-output", markup=False)
        yield Footer()

    def _intro(self) -> str:
        have = f"{len(self.results.rows)} benchmark results" if self.results else "no benchmark results yet"
        return (f"Dataset: {self.dataset}\nUsing {have}; what your needs ask for and the results lack is "
                f"measured on {self.count:,} records first.\n\nChoose your needs and press Recommend.")

    def needs(self) -> Needs:
        q = self.query_one
        return Needs(
            access=str(q("#rec-access", Select).value), changes=str(q("#rec-changes", Select).value),
            readers=str(q("#rec-readers", Select).value), people_open_files=q("#rec-people", Checkbox).value,
            single_file=q("#rec-single", Checkbox).value,
        )

    # -- actions -------------------------------------------------------------------------------
    @on(Button.Pressed, "#rec-go")
    def _go(self) -> None:
        self.action_recommend()

    def action_recommend(self) -> None:
        if self.worker is not None and self.worker.is_running:
            return
        self.cancel_event = threading.Event()
        self.query_one("#rec-go", Button).disabled = True
        self.query_one("#rec-status", Static).update("working…")
        self.query_one("#rec-progress", ProgressBar).update(total=None, progress=0)
        self.worker = self.run_recommend(self.needs(), self.dataset, self.results, self.cancel_event)

    def action_close(self) -> None:
        if self.cancel_event is not None:
            self.cancel_event.set()
        self.dismiss()

    def on_unmount(self) -> None:
        if self.cancel_event is not None:
            self.cancel_event.set()

    # -- the worker (no widgets touched here) ---------------------------------------------------
    @work(thread=True, exclusive=True, exit_on_error=False, group="recommend")
    def run_recommend(self, needs: Needs, dataset: str, results: ResultTable | None,
                      cancel: threading.Event) -> None:
        """What the needs ask for and the results lack is measured in a child process (like a
        benchmark: the app's drawing neither slows nor is slowed by it), reusing the measurements
        kept in the results folder for this dataset (``imgtui/bench/memory.py``)."""
        worker = get_current_worker()
        ran = missing_experiments(needs, results)

        def cancelled() -> bool:
            if worker.is_cancelled:
                cancel.set()
            return cancel.is_set()

        folder: str | None = str(results_dir())
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:  # recommend all the same, without keeping what it measures
            self.app.call_from_thread(
                self.notify, f"Measurements are not kept: cannot write {folder} ({exc.strerror or exc}).",
                severity="warning", markup=False)
            folder = None
        runner = RecommendRunner(dataset, needs, results, count=self.count, workdir=self.workdir,
                                 results_folder=folder)
        try:
            for ev in runner.events(cancelled):
                if isinstance(ev, Started):
                    self.post_message(RecommendProgress(f"measuring {ev.experiment} · {ev.backend}", ev.step, ev.steps))
                elif isinstance(ev, Progress):  # throttled by the child
                    frac = ev.done / ev.total if ev.total else 0.0
                    self.post_message(RecommendProgress("", max(0, ev.step - 1) + frac, ev.steps))
                elif isinstance(ev, Finished) and ev.cancelled:
                    self.post_message(RecommendProgress("cancelled", 0, 0))
                elif isinstance(ev, RecommendDone) and not cancel.is_set():
                    self.post_message(RecommendReady(ev.recommendation, ran))
        finally:
            runner.close()

    # -- handlers --------------------------------------------------------------------------------
    @on(RecommendProgress)
    def _progress(self, m: RecommendProgress) -> None:
        if m.text:
            self.query_one("#rec-status", Static).update(m.text)
        if m.steps:
            self.query_one("#rec-progress", ProgressBar).update(total=m.steps, progress=m.step)

    @on(RecommendReady)
    def _ready(self, m: RecommendReady) -> None:
        self.recommendation = m.recommendation
        self.query_one("#rec-output", Static).update(render_recommendation(m.recommendation, m.ran))
        self.query_one("#rec-status", Static).update(f"recommended: {m.recommendation.name}")
        self.query_one("#rec-progress", ProgressBar).update(total=1, progress=1)
        self.query_one("#rec-go", Button).disabled = False

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "recommend":
            return
        if event.state in (WorkerState.ERROR, WorkerState.CANCELLED):
            self.query_one("#rec-go", Button).disabled = False
            self.query_one("#rec-progress", ProgressBar).update(total=1, progress=0)
            self.query_one("#rec-status", Static).update("failed" if event.state == WorkerState.ERROR else "cancelled")
        if event.state == WorkerState.ERROR:
            report = getattr(self.app, "report_worker_error", None)
            if report is not None:
                report(event.worker)
