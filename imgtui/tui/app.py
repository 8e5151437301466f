"""The imgtui Textual app: ``make_app(...)`` builds it, ``run_app(...)`` runs it (bare ``imgtui``, ``imgtui STORE``)."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from typing import Any, Iterable

from textual import events, on
from textual.app import App, SystemCommand
from textual.screen import Screen
from textual.binding import Binding
from textual.worker import Worker, WorkerState

from ..bench import backend_info
from . import graphics
from .commands import help_rows, screen_commands
from .idle_gc import IdleGC
from .messages import one_line_error
# (the main, help and recommend screens are imported when first shown: ``imgtui STORE`` shows the
# browser without importing them, ~0.2 s of bench and markdown modules)
from .themes import DARK, LIGHT, THEMES, other_theme


#: seconds a SIGHUP/SIGTERM'd app may take to restore its terminal before the process ends anyway
TERMINATE_GRACE = 3.0


class BrowseFirst(Screen):
    """The bottom screen of ``imgtui STORE`` while the browser is on top of it: blank and cheap,
    so the browser shows ~0.3 s sooner than with the main screen's ~250 widgets built under it;
    the main screen replaces it when the browser is left."""

    def compose(self):
        return iter(())


class ImgtuiApp(App):
    """Store image datasets in each backend of the registry and compare them."""

    CSS_PATH = "app.tcss"
    TITLE = "imgtui"
    BINDINGS = [
        Binding("question_mark,f1", "help", "Help", key_display="?"),
        Binding("t", "toggle_theme", "Dark/light", tooltip="Switch between the dark and light theme"),
        Binding("r", "recommend", "Recommend", tooltip="Which backend suits these images and your needs"),
    ]

    def __init__(self, dataset: str = "synthetic", *, theme: str = DARK, browse: str | None = None,
                 **options: Any) -> None:
        super().__init__()
        self._browse = browse
        self.sub_title = " · ".join(backend_info.short_name(b) for b in backend_info.names())
        for t in THEMES:
            self.register_theme(t)
        self.theme = theme
        self._dataset = dataset
        self._options = options
        self._main: Any = None  # the MainScreen, made on first use
        self.idle_gc = IdleGC()  # full garbage collections wait until the keys rest (idle_gc.py)

    @property
    def main_screen(self) -> Any:
        """The main screen (dataset, backends, results), made on first use."""
        if self._main is None:
            from .screens.main import MainScreen

            self._main = MainScreen(self._dataset, **self._options)
        return self._main

    def get_default_screen(self) -> Screen:
        if self._browse is not None:
            return BrowseFirst()  # the main screen is built when the browser is left
        return self.main_screen

    def on_mount(self) -> None:
        # a closed terminal (SIGHUP) or a kill (SIGTERM) cancels a running benchmark, so that its
        # temporary stores are removed before the process ends, then quits
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGHUP, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self._on_terminate)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread / Windows
                pass
        if self._browse is not None:
            from .screens.browser import BrowserScreen

            self.push_screen(BrowserScreen(self._browse), callback=self._browser_left)
        self.idle_gc.start()
        self.set_interval(0.25, self.idle_gc.tick)

    def _browser_left(self, _result: Any = None) -> None:
        """``imgtui STORE``: the browser was left; the main screen takes the placeholder's place
        (once the pop is done: the callback runs inside it)."""
        self.call_later(self._to_main)

    def _to_main(self) -> None:
        if isinstance(self.screen, BrowseFirst):  # (pushed over it: Textual cannot switch a default screen)
            self.push_screen(self.main_screen)

    def on_unmount(self) -> None:
        self.idle_gc.stop()

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, (events.Key, events.MouseDown, events.MouseScrollDown, events.MouseScrollUp)):
            self.idle_gc.input()
        await super().on_event(event)

    def _on_terminate(self) -> None:
        # as ctrl+q, without the wait: the children are stopped at once and their stores removed
        if self._main is not None:
            self._main.shutdown()
        # the terminal may be gone (tmux kill-session): Textual's shutdown can then block forever
        # writing to it (seen: its output queue full, the writer thread stuck); the work is already
        # stopped and cleaned up, so the process ends within seconds whatever the terminal does
        watchdog = threading.Timer(TERMINATE_GRACE, os._exit, args=(1,))
        watchdog.daemon = True
        watchdog.start()
        self.exit(return_code=1)

    # -- actions ---------------------------------------------------------------------------
    def action_recommend(self) -> None:
        """Open the recommendation screen on the main screen's dataset and results."""
        from ..bench.model import ResultTable
        from .screens.recommend import RecommendScreen

        if isinstance(self.screen, RecommendScreen):
            return
        main = self.main_screen
        if not main.is_mounted:  # not built yet (``imgtui STORE``): its dataset, no results yet
            self.push_screen(RecommendScreen(self._dataset, None, workdir=self._options.get("workdir")))
            return
        results = main.last_results if main.last_results is not None and main.last_results.rows else (
            ResultTable(rows=list(main.rows), dataset=main.plan.dataset) if main.rows else None)
        self.push_screen(RecommendScreen(main.plan.dataset, results, workdir=main.plan.workdir))

    def action_toggle_theme(self) -> None:
        self.theme = other_theme(self.theme)

    def action_help(self) -> None:
        """Help for the screen it is opened on: that screen's intro and its keys."""
        from .screens.help import HelpScreen

        if isinstance(self.screen, HelpScreen):
            return
        screen = self.screen
        self.push_screen(HelpScreen(help_rows(screen), getattr(screen, "HELP", None)))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """The palette: Textual's own entries, then every action bound on the screen it was opened on."""
        yield from screen_commands(screen)
        yield from super().get_system_commands(screen)

    async def action_quit(self) -> None:
        """Quit; a running benchmark is cancelled first and given a moment to remove its stores."""
        main = self._main
        if main is not None:
            if main.running:
                self.notify("Cancelling the benchmark before quitting…")
                await main.stop_bench(timeout=5.0)
            if main.making:
                await main.stop_make_stores(timeout=5.0)
            main.shutdown()
        self.exit()

    # -- worker errors: one place ----------------------------------------------------------
    # Worker.StateChanged does not bubble: the widgets that own workers forward failures here.
    def report_worker_error(self, worker: Worker) -> None:
        """Show a failed worker's error as a one-line notification (the app keeps running)."""
        title = {"dataset": "Dataset", "bench": "Benchmark", "export": "Export"}.get(worker.group, "Error")
        self.notify(one_line_error(worker.error), title=title, severity="error", markup=False)

    @on(Worker.StateChanged)
    def _worker_state(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            self.report_worker_error(event.worker)

def make_app(
    dataset: str = "synthetic",
    *,
    backends: list[str] | None = None,
    methods: list[str] | None = None,
    experiments: list[str] | None = None,
    counts: list[int] | None = None,
    repeats: int | None = None,
    workdir: str | None = None,
    output: str = ".",
    backend_options: dict[str, dict[str, Any]] | None = None,
    theme: str = DARK,
    browse: str | None = None,
) -> ImgtuiApp:
    """Build the app with a chosen dataset spec and initial plan settings (tests, screenshots, CLI)."""
    return ImgtuiApp(
        dataset,
        theme=theme,
        browse=browse,
        backends=backends,
        methods=methods,
        experiments=experiments,
        counts=counts,
        repeats=repeats,
        workdir=workdir,
        output=output,
        backend_options=backend_options,
    )


def run_app(dataset: str = "synthetic", *, output: str = ".", workdir: str | None = None,
            light: bool = False, browse: str | None = None) -> int:
    """Start the app (the terminal is restored on exit, also after an error); the options come
    from the root command of ``imgtui.cli`` (one parser tree). ``browse``: open the record browser
    on that store at start (``imgtui STORE``)."""
    graphics.detect()  # ask the terminal for Kitty/Sixel graphics before Textual takes it over
    app = make_app(dataset, output=output, workdir=workdir, theme=LIGHT if light else DARK, browse=browse)
    try:
        app.run()
    finally:
        # a benchmark or make-stores child still running is stopped and its temporary stores removed
        if app._main is not None:
            app._main.shutdown()
    return int(app.return_code or 0)
