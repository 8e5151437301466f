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


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-q"])
