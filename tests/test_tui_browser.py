"""Browser and compare screens, driven with Textual's Pilot against fake and real stores."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from textual.app import App

from imgtui.records import Record, checksum
from imgtui.tui.screens import browser as browser_mod
from imgtui.tui.screens.browser import BrowserScreen
from imgtui.tui.screens.compare import CompareScreen
from imgtui.tui.widgets.image_view import ImageView
from imgtui.tui.widgets.record_list import RecordList

SIZE = (140, 44)


def _backends_available() -> bool:
    return all(
        importlib.util.find_spec(f"imgtui.backends.{m}") is not None
        for m in ("disk", "lmdb_store", "hdf5_store")
    )


REAL = _backends_available()


def make_record(i: int, size: int = 12) -> Record:
    rng = np.random.default_rng(i)
    img = rng.integers(0, 256, (size, size + 4, 3), dtype=np.uint8)
    return Record(img, f"cls{i % 3}", {"i": i, "source": f"img_{i:03d}.png"})


class FakeReader:
    """Enough of the reader interface for the browser; records are generated on demand."""

    backend = "fake"

    def __init__(self, count: int, bad: set[int] | None = None) -> None:
        self.count = count
        self.bad = bad or set()
        self.reads = 0
        self.closed = False

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> Record:
        if not 0 <= i < self.count:
            raise IndexError(i)
        self.reads += 1
        if i in self.bad:
            raise ValueError(f"record {i}: PNG data is truncated")
        return make_record(i % 1000)

    def labels(self):
        return [f"cls{i % 3}" for i in range(self.count)]

    def _stored_checksum(self, i: int) -> int:
        return checksum(make_record(i % 1000).image)

    def info(self) -> dict:
        return {"path": "fake://store", "backend": "fake", "count": self.count, "options": {"kind": "test"}}

    def close(self) -> None:
        self.closed = True


class ScreenApp(App):
    """A tiny app that pushes one screen (so the tests do not depend on the main app)."""

    def __init__(self, screen_factory) -> None:
        super().__init__()
        self._factory = screen_factory
        self.notes: list[tuple[str, str]] = []

    def notify(self, message, *, title="", severity="information", timeout=None, markup=True) -> None:
        self.notes.append((str(message), severity))
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=markup)

    def on_mount(self) -> None:
        self.push_screen(self._factory())


async def wait_for(pilot, predicate, timeout: float = 30.0) -> None:
    """Poll (robust on a loaded machine): pause until ``predicate()`` is true or fail."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {getattr(predicate, '__name__', predicate)}")
        await pilot.pause(0.05)


@pytest.fixture
def fake_store(monkeypatch):
    """Route open_store for paths starting with 'fake:' to FakeReader(count)."""
    readers: dict[str, FakeReader] = {}
    real_open = browser_mod.open_any_store

    def fake_open(path: str):
        if path.startswith("fake:"):
            count = int(path.split(":")[1])
            readers[path] = FakeReader(count, bad={3})
            return readers[path]
        return real_open(path)

    monkeypatch.setattr(browser_mod, "open_any_store", fake_open)
    return readers


def info_text(screen) -> str:
    return str(screen.query_one("#store-info").content)


def record_text(screen) -> str:
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(screen.query_one("#record-info").content)
    return console.export_text()


async def open_browser(pilot, app) -> BrowserScreen:
    await wait_for(pilot, lambda: isinstance(app.screen, BrowserScreen))
    screen = app.screen
    await wait_for(pilot, lambda: screen.reader is not None or screen.error is not None)
    return screen


async def test_browser_shows_count_and_first_label(fake_store):
    app = ScreenApp(lambda: BrowserScreen("fake:50"))
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browser(pilot, app)
        assert "50 records" in info_text(screen)
        await wait_for(pilot, lambda: screen.image_view.has_image)
        assert "label     'cls0'" in record_text(screen)
        assert "ok (" in record_text(screen)
        await pilot.press("down")
        await wait_for(pilot, lambda: "record 1\n" in record_text(screen))
        assert "'cls1'" in record_text(screen)
        await pilot.press("n", "n")
        await wait_for(pilot, lambda: "record 3\n" in record_text(screen))
        # record 3 cannot be decoded: one-line error, app still running
        assert "PNG data is truncated" in record_text(screen)
        await pilot.press("p")
        await wait_for(pilot, lambda: "record 2\n" in record_text(screen))
        assert app.is_running


async def test_jump_to_index(fake_store):
    app = ScreenApp(lambda: BrowserScreen("fake:500"))
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browser(pilot, app)
        await pilot.press("g")
        await pilot.press(*"421", "enter")
        await wait_for(pilot, lambda: "record 421\n" in record_text(screen))
        assert screen.record_list.current_index == 421
        assert "'cls1'" in record_text(screen)  # 421 % 3 == 1
        # out of range: one-line error, cursor stays
        await pilot.press("g", *"9999", "enter")
        await wait_for(pilot, lambda: any(sev == "error" for _, sev in app.notes))
        assert ("Record 9999 is out of range: this store has 500 records (0-499).", "error") in app.notes
        assert screen.record_list.current_index == 421
        # escape closes the prompt, not the screen
        await pilot.press("g", "escape")
        assert isinstance(app.screen, BrowserScreen)
        assert screen.query_one("#prompt").has_class("hidden")


async def test_filter_by_label(fake_store):
    app = ScreenApp(lambda: BrowserScreen("fake:300"))
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browser(pilot, app)
        records = screen.record_list
        await wait_for(pilot, lambda: records.labels_loaded)
        await pilot.press("f", *"cls2", "enter")
        await wait_for(pilot, lambda: records.filtered)
        assert records.row_count == 100
        shown = [records.index_at(r) for r in range(records.row_count)]
        assert shown == list(range(2, 300, 3))
        await wait_for(pilot, lambda: "record 2\n" in record_text(screen))
        await pilot.press("down")
        await wait_for(pilot, lambda: "record 5\n" in record_text(screen))
        assert "filter: label in {cls2}" in str(screen.query_one("#list-status").content)
        # a label nobody has: empty view and a warning
        await pilot.press("f", "ctrl+a", "ctrl+k", *"zebra", "enter")
        await wait_for(pilot, lambda: records.row_count == 0)
        assert ("No record has label zebra.", "warning") in app.notes
        # an empty filter shows everything again
        await pilot.press("f", "ctrl+a", "ctrl+k", "enter")
        await wait_for(pilot, lambda: not records.filtered)
        assert records.row_count == 300


async def test_virtual_list_pages_through_200k_records(fake_store):
    app = ScreenApp(lambda: BrowserScreen("fake:200000"))
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browser(pilot, app)
        records = screen.record_list
        await wait_for(pilot, lambda: records.labels_loaded)
        await pilot.press("pagedown", "pagedown")
        await wait_for(pilot, lambda: records.cursor > 40)
        await pilot.press("end")
        await wait_for(pilot, lambda: "record 199999\n" in record_text(screen))
        assert records.current_index == 199999
        assert records.scroll_offset.y > 199000
        await wait_for(pilot, lambda: records.details_of(199999) is not None)
        await pilot.press("home")
        await wait_for(pilot, lambda: "record 0\n" in record_text(screen))
        assert records.scroll_offset.y == 0
        # only what was on screen was drawn and read: no widget or read per record
        assert len(list(screen.query("*"))) < 40
        reader = fake_store["fake:200000"]
        assert reader.reads < 1000
        assert records.lines_rendered < 20000
    assert reader.closed


async def test_bad_path_shows_error_and_app_keeps_running(tmp_path):
    missing = str(tmp_path / "nope.lmdb")
    app = ScreenApp(lambda: BrowserScreen(missing))
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browser(pilot, app)
        assert screen.error is not None and missing in screen.error
        assert "\n" not in screen.error
        assert (screen.error, "error") in app.notes
        assert missing in info_text(screen)
        await pilot.press("n", "g", "f", "c")  # nothing to do, nothing breaks
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, BrowserScreen))
        assert app.is_running


async def test_not_a_store_shows_error(tmp_path):
    junk = tmp_path / "junk.txt"
    junk.write_text("hello")
    app = ScreenApp(lambda: BrowserScreen(str(junk)))
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browser(pilot, app)
        assert screen.error and str(junk) in screen.error and "\n" not in screen.error
        assert app.is_running


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-q"])
