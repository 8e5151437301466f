"""The main screen of the app, driven with Pilot: panes, plan, a tiny benchmark, cancel, errors, help."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import numpy as np
import pytest

import imgtui
from imgtui.bench.model import ResultRow, ResultTable
from imgtui.records import Record
from imgtui.tui.app import ImgtuiApp, make_app
from imgtui.tui.screens.help import HelpScreen
from imgtui.tui.screens.main import MainScreen, plan_summary
from imgtui.tui.themes import DARK, LIGHT
from imgtui.tui.widgets.backend_pane import BackendPane
from imgtui.tui.widgets.dataset_pane import DatasetPane, complete_path, label_histogram
from imgtui.tui.widgets.plots import Plots, disk_usage, series
from imgtui.tui.widgets.preview import Preview
from imgtui.tui.widgets.results_table import ResultsTable

SIZE = (140, 44)
#: generous: the test machine has 2 cores shared with other jobs
TIMEOUT = 90.0


async def wait_until(pilot, condition, timeout: float = TIMEOUT, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


async def settle(app: ImgtuiApp, pilot) -> None:
    """Wait for the dataset summary worker and the messages it posts."""
    await app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.pause()


@pytest.fixture(autouse=True)
def _keep_notifications(monkeypatch):
    """Every notification an app shows, kept after it expires (on a loaded machine a notification
    timed out before the test looked: seen in CI), and kept when ``notify`` is called, not when the
    app's queue gets to it (a worker's end set ``making = False`` right after its ``notify``, and a
    test that waited for ``making`` looked before the queue had: seen in CI)."""
    from textual.notifications import Notify

    post = ImgtuiApp.post_message

    def post_message(self, message) -> bool:
        if isinstance(message, Notify):
            self.__dict__.setdefault("_seen_notes", []).append(message.notification)
        return post(self, message)

    monkeypatch.setattr(ImgtuiApp, "post_message", post_message)


def notifications(app: ImgtuiApp, severity: str | None = None) -> list:
    """The notifications ``app`` has shown so far (expired ones too)."""
    return [n for n in app.__dict__.get("_seen_notes", []) if severity is None or n.severity == severity]


# -- start-up --------------------------------------------------------------------------------
async def test_startup_shows_the_three_panes_and_the_plan():
    app = make_app("synthetic:count=40,size=24")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        screen = app.screen
        assert isinstance(screen, MainScreen)
        assert screen.query_one(DatasetPane).display
        assert screen.query_one(BackendPane).display
        table = screen.query_one(ResultsTable)
        assert [str(c.label) for c in table.columns.values()][:4] == ["experiment", "backend", "method", "count"]
        assert table.row_count == 0
        plan = screen.plan
        assert plan.dataset == "synthetic:count=40,size=24,channels=3,bits=8,seed=0"
        assert plan.backends == ["disk", "lmdb", "hdf5"]
        assert plan.methods == ["article", "imgtui", "floor"]
        assert plan.counts == [10, 100, 1000]
        assert plan.repeats is None
        assert str(screen.query_one("#plan-summary").content).startswith("⚠ the dataset has 40 records")
        # the summary and the preview come from the worker
        pane = screen.query_one(DatasetPane)
        assert pane.summary["count"] == 40 and pane.kind == "synthetic"
        assert "24x24x3 (40)" in str(screen.query_one("#summary").content)
        thumb = screen.query_one(Preview).thumbnail
        assert thumb is not None and len(thumb.plain.splitlines()) == 12
        assert set(thumb.plain) <= {"▀", "\n"}
        assert app.theme == DARK


async def test_changing_options_updates_the_plan(tmp_path):
    app = make_app("synthetic:count=40,size=24")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        screen: MainScreen = app.screen  # type: ignore[assignment]
        from textual.widgets import Checkbox, Input, Select

        await pilot.click("#use-lmdb")
        await pilot.pause()
        assert screen.plan.backends == ["disk", "hdf5"]
        assert "lmdb" not in screen.plan.backend_options

        screen.query_one("#hdf5-compression", Select).value = "gzip"
        screen.query_one("#hdf5-layout", Select).value = "chunked"
        screen.query_one("#hdf5-level", Input).value = "7"
        screen.query_one("#disk-png-level", Input).value = "1"
        await pilot.pause()
        assert screen.plan.backend_options == {
            "disk": {"png_level": 1},
            "hdf5": {"layout": "chunked", "compression": "gzip", "level": 7},
        }

        await pilot.click("#count-1000")
        await pilot.click("#count-10000")
        await pilot.click("#method-article")
        screen.query_one("#exp-store_one", Checkbox).value = False
        screen.query_one("#repeats", Input).value = "2"
        screen.query_one("#workdir", Input).value = str(tmp_path)
        await pilot.pause()
        plan = screen.plan
        assert plan.counts == [10, 100, 10000]
        assert plan.methods == ["imgtui", "floor"]
        assert "store_one" not in plan.experiments and "read_one" in plan.experiments
        assert plan.repeats == 2
        assert plan.workdir == str(tmp_path)
        assert "repeats 2" in plan_summary(plan)

        # dataset options: 16-bit, one channel, 50 records, variable sizes
        screen.query_one("#syn-count", Input).value = "50"
        screen.query_one("#syn-bits", Select).value = 16
        screen.query_one("#syn-channels", Select).value = 1
        screen.query_one("#syn-variable", Input).value = "8-20"
        await settle(app, pilot)
        assert screen.plan.dataset == "synthetic:count=50,size=24,variable=8-20,channels=1,bits=16,seed=0"
        pane = screen.query_one(DatasetPane)
        assert pane.summary["dtypes"] == {"uint16": 50}
        # an invalid field leaves the plan as it was
        screen.query_one("#syn-count", Input).value = "0"
        await pilot.pause()
        assert screen.plan.dataset.startswith("synthetic:count=50,")


# -- running -----------------------------------------------------------------------------------
async def test_tiny_benchmark_fills_the_table_and_exports(tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    app = make_app(
        "synthetic:count=100,size=8",
        backends=["lmdb", "hdf5"],
        methods=["imgtui", "floor"],
        experiments=["store_many", "read_many"],
        counts=[10, 100],
        repeats=1,
        workdir=str(work),
        output=str(out),
    )
    messages: list = []
    async with app.run_test(size=SIZE, message_hook=messages.append) as pilot:
        await settle(app, pilot)
        screen: MainScreen = app.screen  # type: ignore[assignment]
        await pilot.press("s")
        await wait_until(pilot, lambda: screen.bench_worker is not None, what="the run to start")
        await wait_until(pilot, lambda: not screen.running, what="the run to finish")
        await pilot.pause()
        rows = screen.rows
        table = screen.query_one(ResultsTable)
        assert table.row_count == len(rows) > 0
        got = {(r.experiment, r.backend, r.method, r.count) for r in rows if r.method != "floor"}
        assert got == {
            (e, b, "imgtui", c)
            for e in ("store_many", "read_many") for b in ("lmdb", "hdf5") for c in (10, 100)
        }
        assert any(r.method == "floor" for r in rows)
        for r in rows:
            if r.method == "imgtui":
                assert r.error is None, r.error
                assert r.median_s is not None and r.median_s > 0
        assert screen.last_results is not None and len(screen.last_results.rows) == len(rows)
        assert "finished" in str(screen.query_one("#step-name").content)
        assert os.listdir(work) == []  # the temporary stores are gone
        # the plots got the rows
        assert set(series(rows, "store_many")) >= {"lmdb/imgtui", "hdf5/imgtui"}
        # one DataTable row per Result message, progress throttled but present
        unique = {id(m): m for m in messages}.values()  # a bubbling message is seen once per node
        names = [type(m).__name__ for m in unique]
        assert names.count("BenchResult") == len(rows)
        assert names.count("BenchFinished") == 1

        # sort by clicking the "count" header: 10s first, then again for 100s first
        await pilot.click(ResultsTable, offset=(table.columns["count"].get_render_width(table) // 2 + sum(
            c.get_render_width(table) for c in list(table.columns.values())[:3]), 0))
        await pilot.pause()
        assert table.sort_column == "count" and not table.sort_reverse
        assert [r.count for r in table.sorted_rows()] == sorted(r.count for r in rows)

        await pilot.press("e")
        await app.workers.wait_for_complete()
        await pilot.pause()
        files = sorted(p.name for p in out.iterdir())
        assert len(files) == 2 and files[0].endswith(".csv") and files[1].endswith(".json")
        back = ResultTable.from_json(out / files[1])
        assert len(back.rows) == len(rows)
        assert len(ResultTable.from_csv(out / files[0]).rows) == len(rows)
        assert any(str(out / files[1]) in n.message for n in notifications(app))


async def test_cancel_stops_the_run_and_leaves_no_files(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    app = make_app(
        "synthetic:count=10000,size=16",
        backends=["lmdb", "hdf5"],
        methods=["imgtui"],
        experiments=["store_many", "read_many"],
        counts=[10000],
        repeats=10,
        workdir=str(work),
    )
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        screen: MainScreen = app.screen  # type: ignore[assignment]
        await pilot.click("#start")
        assert screen.running
        await wait_until(pilot, lambda: "store_many ·" in str(screen.query_one("#step-name").content),
                         what="the first step")
        await pilot.press("c")
        assert screen.cancel_event is not None and screen.cancel_event.is_set()
        await wait_until(pilot, lambda: not screen.running, what="the worker to end")
        assert screen.bench_worker is not None and screen.bench_worker.is_finished
        await pilot.pause()
        assert screen.last_results is not None  # Finished(cancelled=True) arrived
        assert "cancelled" in str(screen.query_one("#step-name").content)
        assert os.listdir(work) == []
        assert not notifications(app, "error")


async def test_quit_during_a_run_cancels_it_first(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    app = make_app(
        "synthetic:count=10000,size=16",
        backends=["lmdb"],
        methods=["imgtui"],
        experiments=["store_many"],
        counts=[10000],
        repeats=10,
        workdir=str(work),
    )
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        screen: MainScreen = app.screen  # type: ignore[assignment]
        await pilot.press("s")
        await wait_until(pilot, lambda: "store_many ·" in str(screen.query_one("#step-name").content),
                         what="the first step")
        worker = screen.bench_worker
        await app.action_quit()
        assert worker is not None and worker.is_finished
    assert os.listdir(work) == []


def _child_gone(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _long_run_app(work: Path):
    return make_app(
        "synthetic:count=10000,size=16",
        backends=["lmdb", "hdf5"],
        methods=["imgtui", "floor"],
        experiments=["store_many", "read_many", "random_batches"],
        counts=[10, 100, 1000, 10000],
        repeats=5,
        workdir=str(work),
    )


async def test_the_benchmark_runs_in_a_child_that_streams_rows_and_cancel_stops_it(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    app = _long_run_app(work)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        screen: MainScreen = app.screen  # type: ignore[assignment]
        table = screen.query_one(ResultsTable)
        await pilot.press("s")
        await wait_until(pilot, lambda: screen.bench_runner is not None and screen.bench_runner.pid is not None,
                         what="the child to start")
        pid = screen.bench_runner.pid
        assert pid != os.getpid()
        # rows arrive while the child is still measuring
        await wait_until(pilot, lambda: table.row_count >= 3, what="the first rows")
        assert screen.running and not _child_gone(pid)
        assert any(work.iterdir())  # the child's temporary stores
        await pilot.press("c")
        await wait_until(pilot, lambda: not screen.running, timeout=10.0, what="the cancel")
        assert _child_gone(pid)
        assert os.listdir(work) == []
        assert screen.last_results is not None and len(screen.last_results.rows) == len(screen.rows) == table.row_count
        assert "cancelled" in str(screen.query_one("#step-name").content)
        assert not notifications(app, "error")


async def test_a_killed_benchmark_child_is_a_one_line_error(tmp_path):
    import signal

    work = tmp_path / "work"
    work.mkdir()
    app = _long_run_app(work)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        screen: MainScreen = app.screen  # type: ignore[assignment]
        await pilot.press("s")
        await wait_until(pilot, lambda: "store_many ·" in str(screen.query_one("#step-name").content),
                         what="the first step")
        os.kill(screen.bench_runner.pid, signal.SIGKILL)
        await wait_until(pilot, lambda: not screen.running, timeout=10.0, what="the run to end")
        errors = notifications(app, "error")
        assert [e.message for e in errors] == ["the benchmark process was killed by SIGKILL before it finished"]
        assert errors[0].title == "Benchmark"
        assert os.listdir(work) == []  # its stores are removed by the app
        assert "failed" in str(screen.query_one("#step-name").content)
        assert app.is_running
        # the app keeps working: a new run starts
        await pilot.press("s")
        await wait_until(pilot, lambda: screen.query_one(ResultsTable).row_count >= 1, what="a new run's rows")
        await pilot.press("c")
        await wait_until(pilot, lambda: not screen.running, timeout=10.0, what="the cancel")
        assert os.listdir(work) == []


# -- errors ------------------------------------------------------------------------------------
async def test_bad_dataset_path_notifies_and_the_app_keeps_running(tmp_path):
    missing = tmp_path / "no-such-folder"
    app = make_app("synthetic:count=10,size=8")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        screen: MainScreen = app.screen  # type: ignore[assignment]
        from textual.widgets import Input, Select

        screen.query_one("#source", Select).value = "folder"
        await pilot.pause()
        path_input = screen.query_one("#path", Input)
        assert path_input.display and path_input.has_focus
        path_input.value = str(missing)
        await pilot.press("enter")
        await settle(app, pilot)
        errors = notifications(app, "error")
        assert [n.message for n in errors] == [f"{missing}: no such file or folder"]
        pane = screen.query_one(DatasetPane)
        assert pane.error == f"{missing}: no such file or folder"
        assert screen.plan.dataset == str(missing)
        # starting with a broken dataset is refused with a one-line reason
        screen.query_one("#results-table").focus()
        await pilot.press("s")
        await pilot.pause()
        assert not screen.running
        assert notifications(app, "error")[-1].message == f"The dataset cannot be read: {missing}: no such file or folder"
        # still alive: help opens and closes
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert app.screen is screen


async def test_export_with_no_results_warns():
    app = make_app("synthetic:count=10,size=8")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("e")
        await pilot.pause()
        assert notifications(app, "warning")[-1].message == "Nothing to export yet: run a benchmark first (s)."


async def test_browse_while_the_dataset_cannot_be_read_says_why(tmp_path):
    app = make_app(str(tmp_path / "missing"), output=str(tmp_path))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("b")
        await pilot.pause()
        assert isinstance(app.screen, MainScreen)
        assert notifications(app, "error")[-1].message.startswith("The dataset cannot be read: ")
        assert not (tmp_path / "imgtui-stores").exists()


# -- help, theme, palette ------------------------------------------------------------------------
async def test_help_opens_on_question_mark_and_f1():
    app = make_app("synthetic:count=10,size=8")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        text = app.screen.source
        for key in ("`s`", "`c`", "`e`", "`b`", "`p`", "`t`", "`o`", "`?"):
            assert key in text, key
        assert "Quit (cancels a running benchmark first)" in text
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)
        await pilot.press("f1")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("f1")
        assert isinstance(app.screen, MainScreen)


async def test_theme_toggle_and_plots_key():
    app = make_app("synthetic:count=10,size=8")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("t")
        assert app.theme == LIGHT
        await pilot.press("t")
        assert app.theme == DARK
        from textual.widgets import TabbedContent

        views = app.screen.query_one("#views", TabbedContent)
        await pilot.press("p")
        await pilot.pause()
        assert views.active == "tab-plots"
        assert app.screen.query_one(Plots).display
        await pilot.press("p")
        assert views.active == "tab-results"


async def test_palette_and_help_list_the_actions_of_the_screen_they_open_on(tmp_path):
    """Generated from the bindings: the main screen's actions on the main screen, the browser's in
    the browser (not the main screen's 'stop the benchmark' or 'plots')."""
    from imgtui.tui.commands import help_rows, screen_commands
    from imgtui.tui.screens.browser import BrowserScreen

    store = tmp_path / "s.lmdb"
    with imgtui.writer(store, "lmdb") as w:
        w.write(Record(np.zeros((4, 4, 3), np.uint8), 1))
    app = make_app("synthetic:count=10,size=8", browse=str(store))
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, BrowserScreen), what="the browser")
        browser = app.screen
        titles = {c.title for c in screen_commands(browser)}
        assert {"Next", "Prev", "Go to", "Filter", "Compare", "Back", "Recommend", "Dark/light"} <= titles
        assert not titles & {"Start", "Cancel", "Plots", "Make", "Export"}
        keys = dict(help_rows(browser))
        assert keys["n"] == "Next record" and keys["g"] == "Jump to a record number"
        assert keys["? / f1"] == "Help"
        await pilot.press("question_mark")
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen), what="help")
        text = app.screen.source
        assert text.startswith("# Record browser")
        assert "`g`" in text and "`f`" in text and "`c`" in text
        assert "Stop the running benchmark" not in text
        await pilot.press("escape")
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, MainScreen), what="the main screen")
        titles = {c.title for c in screen_commands(app.screen)}
        assert {"Start", "Cancel", "Export", "Make", "Browse", "Plots", "Recommend", "Dark/light"} <= titles
        help_text = dict(help_rows(app.screen))
        assert "in the imgtui-stores folder of the output folder" in help_text["m"]


async def test_command_palette_runs_an_action():
    app = make_app("synthetic:count=10,size=8")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"dark/light")
        from textual.command import CommandList

        await wait_until(pilot, lambda: app.screen.query_one(CommandList).option_count > 0, 20, "palette hits")
        await pilot.pause(0.2)
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.theme == LIGHT, 20, "the theme to change")


# -- pure helpers --------------------------------------------------------------------------------
def test_results_table_sorting_puts_missing_values_last():
    app = make_app()

    async def run():
        async with app.run_test(size=SIZE) as pilot:
            table = app.screen.query_one(ResultsTable)
            for count, t in ((100, 0.5), (10, None), (1000, 0.1)):
                table.add_result(ResultRow("store_many", "lmdb", "imgtui", count, median_s=t))
            table.sort_by("median_s")
            assert [r.count for r in table.sorted_rows()] == [1000, 100, 10]
            assert str(table.columns["median_s"].label) == "time (median) ▲"
            table.sort_by("median_s")  # again: reversed, the row without a time still last
            assert table.sort_reverse
            assert [r.count for r in table.sorted_rows()] == [100, 1000, 10]
            assert str(table.columns["median_s"].label) == "time (median) ▼"
            assert str(table.columns["count"].label) == "count"
            await pilot.press("o")  # cycles to the next column
            assert table.sort_column == "records_per_s"
            assert table.row_count == 3

    asyncio.run(run())


def test_complete_path(tmp_path):
    (tmp_path / "alpha").mkdir()
    (tmp_path / "alpine.npz").write_bytes(b"")
    (tmp_path / ".hidden").mkdir()
    assert complete_path(str(tmp_path / "alph")) == str(tmp_path / "alpha") + "/"
    assert complete_path(str(tmp_path / "alpi")) == str(tmp_path / "alpine.npz")
    assert complete_path(str(tmp_path / "zz")) is None
    assert complete_path(str(tmp_path) + "/") == str(tmp_path / "alpha") + "/"
    assert complete_path(str(tmp_path / ".hid")) == str(tmp_path / ".hidden") + "/"
    assert complete_path("") is None


def test_label_histogram_and_plot_data():
    assert label_histogram({"1": 5, "0": 10}) == "2 distinct █▄ (0..1)"
    assert label_histogram({}) == "-"
    rows = [
        ResultRow("store_many", "lmdb", "imgtui", 100, median_s=0.2, bytes_on_disk=3_000_000),
        ResultRow("store_many", "lmdb", "imgtui", 10, median_s=0.02, bytes_on_disk=300_000),
        ResultRow("store_many", "disk", "imgtui", 10, error="boom"),
    ]
    assert series(rows, "store_many") == {"lmdb/imgtui": ([10, 100], [0.02, 0.2])}
    assert disk_usage(rows) == (["lmdb/imgtui"], [3.0], 100)


async def test_b_opens_the_record_browser_on_a_store(tmp_path):
    pytest.importorskip("imgtui.tui.screens.browser")
    from imgtui.backends import open_writer
    from imgtui.datasets import SyntheticDataset
    from imgtui.tui.screens.browser import BrowserScreen

    store = tmp_path / "s.lmdb"
    with open_writer(store, "lmdb") as w:
        w.write_many(SyntheticDataset(count=5, size=8))
    app = make_app(str(store))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        pane = app.screen.query_one(DatasetPane)
        assert pane.kind == "store" and pane.store_path == str(store)
        assert pane.summary["count"] == 5
        await pilot.press("b")
        await wait_until(pilot, lambda: isinstance(app.screen, BrowserScreen), 20, "the browser")


# -- snapshots (pytest-textual-snapshot) ---------------------------------------------------------
async def _loaded(pilot) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.pause()


def test_snapshot_main_screen(snap_compare):
    app = make_app("synthetic:count=200,size=32,seed=3", output="results")
    assert snap_compare(app, terminal_size=SIZE, run_before=_loaded)


def test_snapshot_help_screen(snap_compare):
    app = make_app("synthetic:count=20,size=8")

    async def run_before(pilot) -> None:
        await _loaded(pilot)
        await pilot.press("f1")
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_snapshot_main_screen_80x24_results(snap_compare):
    """A small terminal: tabs choose the part shown; the results and every button are on screen."""
    app = make_app("synthetic:count=200,size=32,seed=3", output="results")
    assert snap_compare(app, terminal_size=(80, 24), run_before=_loaded)


def test_snapshot_main_screen_80x24_dataset(snap_compare):
    app = make_app("synthetic:count=200,size=32,seed=3", output="results")

    async def run_before(pilot) -> None:
        await _loaded(pilot)
        await pilot.press("v")
        await _loaded(pilot)

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def test_snapshot_main_screen_160x50(snap_compare):
    app = make_app("synthetic:count=200,size=32,seed=3", output="results")
    assert snap_compare(app, terminal_size=(160, 50), run_before=_loaded)


async def test_small_terminal_shows_one_part_at_a_time_and_everything_is_reachable():
    from textual.widgets import Button

    app = make_app("synthetic:count=300,size=8", output=".", counts=[10], backends=["lmdb"],
                   methods=["imgtui"], experiments=["read_many"])
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        screen: MainScreen = app.screen  # type: ignore[assignment]
        assert screen.compact and screen.view == "results"

        def on_screen(widget) -> bool:
            r = widget.region
            return widget.display and r.width > 0 and r.height > 0 and r.right <= 80 and r.bottom <= 24

        table = screen.query_one(ResultsTable)
        assert on_screen(table) and table.region.height >= 10
        for button in screen.query(Button):
            assert on_screen(button), button.id
        assert not screen.query_one(DatasetPane).display or not screen.query_one("#panes").display
        await pilot.press("v")
        assert screen.view == "dataset"
        await pilot.pause()
        assert on_screen(screen.query_one(DatasetPane)) and not screen.query_one("#views").display
        await pilot.press("escape")  # leave the field the view focused
        await pilot.press("v")
        assert screen.view == "backends"
        await pilot.pause()
        pane = screen.query_one(BackendPane)
        assert on_screen(pane) and pane.region.width >= 70
        # starting a run shows the results
        await pilot.press("escape")
        await pilot.press("s")
        await wait_until(pilot, lambda: screen.view == "results", what="the results view")
        await wait_until(pilot, lambda: not screen.running, what="the run")
        assert screen.rows
        # a larger terminal: the panes come back above the results
        await pilot.resize_terminal(160, 50)
        await pilot.pause()
        assert not screen.compact
        assert on_screen(screen.query_one(DatasetPane)) or screen.query_one(DatasetPane).region.height > 0
        assert screen.query_one("#views").display and screen.query_one("#panes").display


# -- make stores (m) and browse (b) ----------------------------------------------------------------
def _stores(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.exists() else []


def _record_text(browser) -> str:
    import io

    from rich.console import Console

    console = Console(width=200, record=True, file=io.StringIO())
    console.print(browser.query_one("#record-info").content)
    return console.export_text()


def _assert_store_holds(path: Path, spec: str, count: int | None = None) -> None:
    import numpy as np

    import imgtui
    from imgtui.datasets import open_dataset

    expected = list(open_dataset(spec))[:count]
    with imgtui.open(path) as reader:
        assert len(reader) == len(expected)
        for i, rec in enumerate(expected):
            got = reader[i]
            assert got.image.dtype == rec.image.dtype and got.image.shape == rec.image.shape
            assert np.array_equal(got.image, rec.image), (path, i)
            assert got.label == rec.label and got.metadata == rec.metadata


def test_store_names():
    from imgtui.tui.screens.main import make_stores_limit, store_base_name, store_paths

    assert store_base_name("synthetic:count=5") == "synthetic"
    assert store_base_name("../shared/datasets/cifar10-test/") == "cifar10-test"
    assert store_base_name("/no/such/x.v2.npz:train") == "x_v2-train"
    assert store_base_name("/data/s.lmdb") == "s"
    assert store_paths("/out", "/data/cifar", ["disk", "lmdb", "hdf5"]) == [
        ("disk", "/out/imgtui-stores/cifar.disk"),
        ("lmdb", "/out/imgtui-stores/cifar.lmdb"),
        ("hdf5", "/out/imgtui-stores/cifar.h5"),
    ]
    assert make_stores_limit(40, [10, 100]) == (None, "all 40 records")
    assert make_stores_limit(10_000, [10, 1000]) == (1000, "1,000 of 10,000 records (largest selected count)")
    assert make_stores_limit(None, [10]) == (10, "up to 10 records (largest selected count)")
    assert make_stores_limit(None, []) == (None, "all records")


async def test_m_makes_three_stores_then_b_browses_them(tmp_path):
    pytest.importorskip("imgtui.tui.screens.browser")
    from textual.widgets import Button

    from imgtui.datasets import open_dataset
    from imgtui.tui.screens.browser import BrowserScreen

    spec = "synthetic:count=30,size=12,variable=6-14,seed=4"
    app = make_app(spec, output=str(tmp_path), counts=[10, 100],
                   backend_options={"hdf5": {"layout": "chunked", "compression": "gzip", "level": 1}})
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        screen: MainScreen = app.screen  # type: ignore[assignment]
        spec = screen.plan.dataset
        assert not screen.query_one("#make-stores", Button).disabled
        await pilot.press("m")
        await wait_until(pilot, lambda: screen.make_worker is not None and not screen.making, what="make stores")
        await pilot.pause()
        folder = tmp_path / "imgtui-stores"
        assert _stores(folder) == ["synthetic.disk", "synthetic.h5", "synthetic.lmdb"]
        for name in _stores(folder):
            _assert_store_holds(folder / name, spec)
        assert screen.made_stores[spec] == [str(folder / n) for n in ("synthetic.disk", "synthetic.lmdb", "synthetic.h5")]
        assert str(screen.query_one("#step-name").content) == (
            "stores ready: synthetic.disk .lmdb .h5 (30 records)"
        )
        assert any(n.message == f"Making 3 store(s) of all 30 records in {folder}; c cancels." for n in notifications(app))
        info = [n.message for n in notifications(app, "information")]
        assert f"Made synthetic.disk, synthetic.lmdb, synthetic.h5 (30 records each) in {folder}." in info[-1]

        # making them again asks first, then replaces them (through the writer); same records
        from imgtui.tui.screens.confirm import ConfirmScreen

        await pilot.press("m")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question")
        assert app.screen.question == (f"synthetic.disk, synthetic.lmdb, synthetic.h5 in {folder} already exist "
                                       "(made from this dataset). Replace them?")
        await pilot.press("y")

        def made_twice() -> bool:
            return not screen.making and sum(n.message.startswith("Made ") for n in notifications(app)) == 2

        await wait_until(pilot, made_twice, what="make stores again")
        assert _stores(folder) == ["synthetic.disk", "synthetic.h5", "synthetic.lmdb"]
        _assert_store_holds(folder / "synthetic.lmdb", spec)

        await pilot.press("b")
        await wait_until(pilot, lambda: isinstance(app.screen, BrowserScreen), 20, "the browser")
        browser = app.screen
        assert browser.path == str(folder / "synthetic.disk")
        first = open_dataset(spec).first()
        await wait_until(pilot, lambda: f"record 0\nlabel     {first.label!r}\n" in _record_text(browser),
                         what="the first record's label")


async def test_b_on_a_fresh_dataset_makes_stores_then_browses(tmp_path):
    pytest.importorskip("imgtui.tui.screens.browser")
    from imgtui.tui.screens.browser import BrowserScreen

    app = make_app("synthetic:count=12,size=8,seed=2", output=str(tmp_path), counts=[10], backends=["lmdb", "hdf5"])
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        screen: MainScreen = app.screen  # type: ignore[assignment]
        spec = screen.plan.dataset
        await pilot.press("b")
        assert screen.make_worker is not None
        assert any("the browser opens when they are done" in n.message for n in notifications(app))
        await wait_until(pilot, lambda: isinstance(app.screen, BrowserScreen), what="the browser")
        folder = tmp_path / "imgtui-stores"
        assert app.screen.path == str(folder / "synthetic.lmdb")
        # the largest selected count (10) is below the dataset's 12 records
        assert _stores(folder) == ["synthetic.h5", "synthetic.lmdb"]
        for name in _stores(folder):
            _assert_store_holds(folder / name, spec, 10)


async def test_b_reuses_matching_stores_and_asks_before_replacing_others(tmp_path):
    """Stores made from this dataset (same options, same record limit) are browsed as they are, also
    when the path is typed differently; stores made from another dataset are replaced only on yes."""
    from imgtui.tui.screens.browser import BrowserScreen
    from imgtui.tui.screens.confirm import ConfirmScreen

    data = tmp_path / "data"
    data.mkdir()
    from PIL import Image

    for i in range(6):
        (data / f"c{i % 2}").mkdir(exist_ok=True)
        Image.fromarray(np.full((5, 7, 3), i * 20, np.uint8)).save(data / f"c{i % 2}" / f"{i}.png")
    out = tmp_path / "out"
    out.mkdir()
    folder = out / "imgtui-stores"
    app = make_app(str(data), output=str(out), counts=[10], backends=["lmdb"])
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        screen: MainScreen = app.screen  # type: ignore[assignment]
        await pilot.press("b")
        await wait_until(pilot, lambda: isinstance(app.screen, BrowserScreen), what="the browser")
        store = folder / "data.lmdb"
        made_at = store.stat().st_mtime_ns, (store / "data.mdb").stat().st_mtime_ns
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is screen, what="the main screen")

    # a new session, the same folder typed with a trailing slash: reused, not rebuilt
    app = make_app(str(data) + "/", output=str(out), counts=[10], backends=["lmdb"])
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        screen = app.screen  # type: ignore[assignment]
        await pilot.press("b")
        await wait_until(pilot, lambda: isinstance(app.screen, BrowserScreen), what="the browser")
        assert screen.make_worker is None
        assert (store.stat().st_mtime_ns, (store / "data.mdb").stat().st_mtime_ns) == made_at

    # another folder of the same name: its store would replace the first: asked, "n" keeps it
    other = tmp_path / "elsewhere" / "data"
    (other / "a").mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(other / "a" / "x.png")
    app = make_app(str(other), output=str(out), counts=[10], backends=["lmdb"])
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        screen = app.screen  # type: ignore[assignment]
        await pilot.press("b")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question")
        assert app.screen.question == (f"data.lmdb in {folder} already exist (made from another dataset or "
                                       "with other options). Replace it?")
        await pilot.press("n")
        await wait_until(pilot, lambda: isinstance(app.screen, BrowserScreen), what="the old store's browser")
        assert screen.make_worker is None
        assert len(imgtui.open(store)) == 6
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is screen, what="the main screen")
        await pilot.press("b")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question again")
        await pilot.press("y")
        await wait_until(pilot, lambda: isinstance(app.screen, BrowserScreen), what="the new store's browser")
        assert len(imgtui.open(store)) == 1


async def test_cancel_make_stores_leaves_no_partial_store(tmp_path):
    from textual.widgets import Button

    folder = tmp_path / "imgtui-stores"
    folder.mkdir()
    # 100,000 records: the disk store (PNG files) takes long enough for the cancel to land mid-store
    app = make_app("synthetic:count=100000,size=16", output=str(tmp_path), counts=[100000])
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        screen: MainScreen = app.screen  # type: ignore[assignment]
        step = screen.query_one("#step-progress")

        def writing() -> bool:
            return screen.stores_runner is not None and (step.progress or 0) > 0

        await pilot.press("m")
        await wait_until(pilot, writing, what="the first store to be half written (in the child process)")
        assert screen.stores_runner.pid != os.getpid()
        assert any(folder.iterdir())  # the disk store is being built
        assert screen.making
        assert screen.query_one("#start", Button).disabled and not screen.query_one("#cancel", Button).disabled
        await pilot.press("s")  # disabled (dimmed in the footer) while stores are being made
        screen.action_start()  # the palette / a direct call is refused with a reason
        await pilot.pause()
        assert not screen.running
        assert "Stores are being made" in notifications(app, "warning")[-1].message
        assert "all 100,000 records" in str(screen.query_one("#step-name").content)
        await pilot.press("c")
        await wait_until(pilot, lambda: not screen.making, what="the cancel")
        assert _stores(folder) == []
        assert list(folder.iterdir()) == []  # no temporary beside the stores either
        assert "cancelled" in str(screen.query_one("#step-name").content)
        assert "no half-written store is left" in notifications(app, "warning")[-1].message
        assert screen.made_stores == {}
        # the app keeps working; Escape asks first: "n" keeps it running, "y" cancels
        from imgtui.tui.screens.confirm import ConfirmScreen

        await pilot.press("m")
        await wait_until(pilot, writing, what="the second run")
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question")
        assert app.screen.question == "Cancel making the stores? Its temporary stores are removed."
        await pilot.press("n")
        await wait_until(pilot, lambda: app.screen is screen, what="the question to close")
        assert screen.making
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question")
        await pilot.press("y")
        await wait_until(pilot, lambda: not screen.making, what="the second cancel")
        assert list(folder.iterdir()) == []


async def test_notifications_are_seen_as_soon_as_notify_returns():
    """The tests' record of notifications is taken at ``notify``: a test that waits for a state set
    right after a ``notify`` must see that notification (it did not, under load in CI)."""
    app = make_app("synthetic:count=5,size=8")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        app.screen.notify("written before making = False", severity="error")
        assert notifications(app, "error")[-1].message == "written before making = False"


async def test_make_stores_into_a_missing_output_folder_is_a_notification(tmp_path):
    missing = tmp_path / "nope"
    app = make_app("synthetic:count=5,size=8", output=str(missing))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        screen: MainScreen = app.screen  # type: ignore[assignment]
        await pilot.press("m")
        await wait_until(pilot, lambda: not screen.making, what="make stores to fail")
        errors = notifications(app, "error")
        assert errors[-1].message == f"Cannot make stores: the output folder {missing} does not exist."
        assert errors[-1].title == "Make stores"
        assert not missing.exists()
        assert str(screen.query_one("#step-name").content).startswith("make stores failed: Cannot make stores")
        # still running and usable: a file as output folder gets its own message
        (tmp_path / "file").write_text("x")
        from textual.widgets import Input

        screen.query_one("#output", Input).value = str(tmp_path / "file")
        await pilot.pause()
        await pilot.press("m")
        await wait_until(pilot, lambda: not screen.making, what="the second failure")
        assert notifications(app, "error")[-1].message == (
            f"Cannot make stores: the output folder {tmp_path / 'file'} is not a folder."
        )
        assert app.is_running and isinstance(app.screen, MainScreen)


async def test_a_failing_store_write_is_one_notification(tmp_path, monkeypatch):
    monkeypatch.setenv("IMGTUI_FAULT", "enospc:batch")  # the make-stores child's writer hits a full disk
    app = make_app("synthetic:count=5,size=8", output=str(tmp_path), backends=["lmdb"])
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        screen: MainScreen = app.screen  # type: ignore[assignment]
        await pilot.press("m")
        await wait_until(pilot, lambda: not screen.making, what="make stores to fail")
        dest = tmp_path / "imgtui-stores" / "synthetic.lmdb"
        assert notifications(app, "error")[-1].message == (
            f"Making the lmdb store {dest} failed: disk full while writing {dest}: no space left on device"
        )
        assert not dest.exists()
        assert screen.made_stores == {}


async def test_make_stores_refused_while_a_benchmark_runs(tmp_path):
    app = make_app("synthetic:count=2000,size=16", output=str(tmp_path), workdir=str(tmp_path),
                   counts=[1000], methods=["imgtui"], repeats=3)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        screen: MainScreen = app.screen  # type: ignore[assignment]
        await pilot.press("s")
        assert screen.running
        screen.action_make_stores()
        await pilot.pause()
        assert not screen.making
        assert notifications(app, "warning")[-1].message.startswith("Wait for the benchmark to finish")
        await pilot.press("c")
        await wait_until(pilot, lambda: not screen.running, what="the benchmark to stop")
        assert not (tmp_path / "imgtui-stores").exists()


@pytest.mark.skipif(not Path("/work/shared/datasets/cifar10-test").is_dir(), reason="no CIFAR-10 folder")
def test_cifar_store_name():
    from imgtui.tui.screens.main import store_base_name

    assert store_base_name("/work/shared/datasets/cifar10-test") == "cifar10-test"


def test_plot_axes_read_in_units_and_the_legend_names_colours_and_markers():
    from imgtui.tui.widgets.plots import fmt_count, legend, time_ticks

    assert [fmt_count(n) for n in (10, 100, 1000, 10_000, 100_000, 1_500, 1_000_000)] == [
        "10", "100", "1k", "10k", "100k", "1.5k", "1M"]
    assert time_ticks(5e-5, 0.3) == ([1e-4, 1e-3, 1e-2, 0.1], ["100 µs", "1 ms", "10 ms", "100 ms"])
    assert time_ticks(0.002, 0.004) == ([0.002, 0.004], ["2.0 ms", "4.0 ms"])
    rows = [ResultRow("read_many", "lmdb", "imgtui", 10, median_s=0.1),
            ResultRow("read_many", "numpy", "floor", 10, median_s=0.01),
            ResultRow("read_many", "hdf5", "article", 10, error="boom")]
    assert legend(rows).plain == "■ lmdb  ■ numpy  ·  + floor  • imgtui  "


def test_dataset_pane_summary_states_exif_and_names_skipped_files(tmp_path):
    import numpy as np
    from PIL import Image

    from imgtui.datasets import open_dataset
    from imgtui.tui.widgets.dataset_pane import format_summary

    (tmp_path / "k").mkdir()
    for i in range(3):
        Image.fromarray(np.full((4, 4), i, np.uint8)).save(tmp_path / "k" / f"{i}.png")
    (tmp_path / "k" / "notes.txt").write_text("x")
    (tmp_path / "k" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    quiet = {"on_error": "skip", "warn": lambda m: None}
    text = str(format_summary(open_dataset(tmp_path, **quiet).summary()))
    assert "exif    orientation not applied (as stored)" in text
    assert "skipped 2 files: 1 .txt, 1 unreadable: k/bad.png" in text
    assert "summary all 4 records (1 could not be read)" in text
    text = str(format_summary(open_dataset(f"{tmp_path}:exif_rotate=yes", **quiet).summary()))
    assert "exif    orientation applied" in text


async def test_skip_unreadable_files_reaches_the_benchmark_plan_and_the_run(tmp_path):
    """A folder with one corrupt image: with the Dataset pane's skip box the benchmark runs on the
    readable ones; without it the run stops with the file's one-line error."""
    from PIL import Image
    from textual.widgets import Checkbox

    from imgtui.bench.run import run_to_table

    folder = tmp_path / "imgs"
    (folder / "a").mkdir(parents=True)
    (folder / "a" / "00.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")  # the first file
    for i in range(1, 13):
        Image.fromarray(np.full((6, 6, 3), i, np.uint8)).save(folder / "a" / f"{i:02d}.png")
    app = make_app(str(folder), output=str(tmp_path), counts=[10], backends=["lmdb"], methods=["imgtui"],
                   experiments=["store_many"])
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        screen: MainScreen = app.screen  # type: ignore[assignment]
        assert screen.build_plan().on_error == "stop"
        screen.query_one("#skip-bad", Checkbox).value = True
        await pilot.pause()
        plan = screen.build_plan()
        assert plan.on_error == "skip" and screen.plan.on_error == "skip"
    table = run_to_table(plan)
    assert [r.error for r in table.rows if r.backend == "lmdb"] == [None]
    assert "(unreadable files skipped)" in table.dataset
    plan.on_error = "stop"
    (row,) = [r for r in run_to_table(plan).rows if r.backend == "lmdb"]
    assert row.error is not None and "00.png: corrupt or truncated image" in row.error


@pytest.mark.parametrize("size", [(80, 24), (160, 50)], ids=["80x24", "160x50"])
def test_snapshot_help_and_recommend(snap_compare, size):
    app = make_app("synthetic:count=20,size=8")

    async def run_before(pilot) -> None:
        await _loaded(pilot)
        await pilot.press("r")
        await _loaded(pilot)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


def test_snapshot_help_80x24(snap_compare):
    app = make_app("synthetic:count=20,size=8")

    async def run_before(pilot) -> None:
        await _loaded(pilot)
        await pilot.press("f1")
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def _fixed_rows() -> list[ResultRow]:
    """Results of a small run, made up but shaped like real ones (the plots' snapshot must not
    depend on measured times)."""
    rows = []
    for experiment, base in (("store_many", 2e-5), ("read_many", 4e-6)):
        for k, (backend, method, factor) in enumerate((("numpy", "floor", 1.0), ("lmdb", "imgtui", 2.5),
                                                       ("hdf5", "imgtui", 1.6), ("disk", "article", 40.0),
                                                       ("lmdb", "article", 9.0))):
            for count in (10, 100, 1000):
                t = base * factor * count * (1.0 + 0.1 * k)
                rows.append(ResultRow(experiment, backend, method, count, repeats=3, median_s=t, min_s=t,
                                      records_per_s=count / t, bytes_on_disk=int(count * 3100 * (1 + k / 10)),
                                      raw_bytes=count * 3072))
    return rows


@pytest.mark.parametrize("size", [(80, 24), (160, 50)], ids=["80x24", "160x50"])
def test_snapshot_plots(snap_compare, size):
    """The plots view with fixed results: log axes in units, one colour per backend, the legend below."""
    from imgtui.tui.messages import BenchResult

    app = make_app("synthetic:count=20,size=8", output="results")

    async def run_before(pilot) -> None:
        await _loaded(pilot)
        screen = pilot.app.screen
        rows = _fixed_rows()
        for row in rows:
            screen.post_message(BenchResult(row))
        await wait_until(pilot, lambda: len(screen.rows) == len(rows), what="every result row")
        await pilot.press("p")
        await pilot.pause()
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=run_before)
