"""Browser and compare screens, driven with Textual's Pilot against fake and real stores."""

from __future__ import annotations

import asyncio
import io
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
        for m in ("disk", "lmdb", "hdf5")
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

    console = Console(width=200, record=True, file=io.StringIO())
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
        await wait_for(pilot, lambda: str(screen.query_one("#list-status").content).endswith("filter: cls2"))
        # a text nobody's label or metadata has: empty view and a warning once all is searched
        await pilot.press("f", "ctrl+a", "ctrl+k", *"zebra", "enter")
        await wait_for(pilot, lambda: ("No record's label or metadata contains zebra.", "warning") in app.notes)
        assert records.row_count == 0
        # an empty filter shows everything again
        await pilot.press("f", "ctrl+a", "ctrl+k", "enter")
        await wait_for(pilot, lambda: not records.filtered)
        assert records.row_count == 300


async def test_filter_searches_metadata_case_insensitively_and_x_finds_the_next_bad_record(fake_store):
    app = ScreenApp(lambda: BrowserScreen("fake:300"))
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browser(pilot, app)
        records = screen.record_list
        await wait_for(pilot, lambda: records.labels_loaded)
        # metadata {"source": "img_0NN.png"}: no label contains IMG_01, ten records' metadata does
        await pilot.press("f", *"IMG_01,CLS1X", "enter")
        await wait_for(pilot, lambda: records.filtered and screen._filter_progress[0] == 300)
        assert [records.index_at(r) for r in range(records.row_count)] == list(range(10, 20))
        await pilot.press("f", "ctrl+a", "ctrl+k", "enter")
        await wait_for(pilot, lambda: not records.filtered)
        assert records.current_index == 10  # the cursor stays on its record
        # record 3 cannot be read: from the top, x jumps there, then says there is none after it
        await pilot.press("home")
        await wait_for(pilot, lambda: records.current_index == 0)
        await pilot.press("x")
        await wait_for(pilot, lambda: records.current_index == 3)
        await pilot.press("x")
        await wait_for(pilot, lambda: any(n.startswith("No bad or unreadable record after record 3") for n, _s in app.notes))
        assert ("No bad or unreadable record after record 3 (checked 296).", "information") in app.notes
        assert records.current_index == 3


async def test_click_copy_and_open_in_the_viewer(fake_store, tmp_path, monkeypatch):
    from imgtui.png import decode_png

    dest = tmp_path / "viewed.png"
    monkeypatch.setenv("IMGTUI_VIEWER", f"sh -c 'cp \"$0\" {dest}'")
    app = ScreenApp(lambda: BrowserScreen("fake:40"))
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browser(pilot, app)
        records = screen.record_list
        await pilot.click(RecordList, offset=(2, 4))  # the fifth row
        await wait_for(pilot, lambda: records.current_index == 4)
        await pilot.press("y")
        assert app.clipboard == "fake:40[4]"
        await pilot.press("o")
        await wait_for(pilot, lambda: dest.exists() and dest.stat().st_size > 0)
        await asyncio.sleep(0.2)
        assert np.array_equal(decode_png(dest.read_bytes()), make_record(4).image)
        monkeypatch.setenv("IMGTUI_VIEWER", str(tmp_path / "no-such-viewer"))
        await pilot.press("o")
        await wait_for(pilot, lambda: any("cannot start the viewer" in n for n, _s in app.notes))


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "bool", "int8", "int16", "uint32", "int32", "float32", "float64"])
def test_record_written_for_the_viewer_keeps_its_pixels(dtype):
    """o writes PNG for 8/16-bit (bool as 0/255) and the exact TIFF for the other dtypes."""
    from backend_suite import make_image
    from imgtui.png import decode_png
    from imgtui.tiff import decode_tiff
    from imgtui.tui.store_view import write_viewable

    img = make_image(dtype, (5, 4, 3), 2)
    path = write_viewable(img, 7)
    data = path.read_bytes()
    if dtype in ("uint8", "uint16", "bool"):
        got = decode_png(data)
        assert path.suffix == ".png" and got.tobytes() == (img.view(np.uint8) * 255 if dtype == "bool" else img).tobytes()
    else:
        got = decode_tiff(data)
        assert path.suffix == ".tif" and got.dtype == img.dtype and got.tobytes() == img.tobytes()


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


# -- real stores --------------------------------------------------------------------------------
def gray16_records(n: int = 30) -> list[Record]:
    rng = np.random.default_rng(5)
    out = []
    for i in range(n):
        img = rng.integers(1000, 60000, (10 + i % 7, 24), dtype=np.uint16)
        out.append(Record(img, i % 4, {"i": i}))
    return out


@pytest.mark.skipif(not REAL, reason="the disk, LMDB and HDF5 backends are not all importable yet")
@pytest.mark.parametrize("backend", ["disk", "lmdb", "hdf5"])
async def test_browser_on_real_store_with_16bit_images(tmp_path, backend):
    records = gray16_records()
    (path,) = write_stores(tmp_path, {backend: records})
    app = ScreenApp(lambda: BrowserScreen(path))
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browser(pilot, app)
        assert screen.error is None
        assert "30 records" in info_text(screen) and backend in info_text(screen)
        await wait_for(pilot, lambda: screen.image_view.has_image)
        text = record_text(screen)
        assert "label     0\n" in text and "uint16" in text and "checksum  ok (" in text
        await pilot.press("end")
        await wait_for(pilot, lambda: "record 29\n" in record_text(screen))
        assert "label     1\n" in record_text(screen)
        await wait_for(pilot, lambda: screen.record_list.details_of(29) is not None)
        assert screen.record_list.details_of(29).status == "ok"
        assert screen.record_list.details_of(29).shape == "x".join(map(str, records[29].image.shape))


def every_dtype_records() -> list[Record]:
    from backend_suite import DTYPES, make_image

    return [Record(make_image(dt, (10, 24) if k % 2 else (10, 24, 3), k), k, {"dtype": dt}) for k, dt in enumerate(DTYPES)]


@pytest.mark.skipif(not REAL, reason="the disk, LMDB and HDF5 backends are not all importable yet")
@pytest.mark.parametrize("backend", ["disk", "hdf5"])
async def test_browser_shows_every_dtype(tmp_path, backend):
    """float (NaN, inf and all), signed, 32-bit and bool records are drawn, with their dtype."""
    records = every_dtype_records()
    (path,) = write_stores(tmp_path, {backend: records})
    app = ScreenApp(lambda: BrowserScreen(path))
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browser(pilot, app)
        assert screen.error is None
        for k, rec in enumerate(records):
            if k:
                await pilot.press("down")
            await wait_for(pilot, lambda: f"record {k}\n" in record_text(screen))
            await wait_for(pilot, lambda: screen.image_view.has_image)
            text = record_text(screen)
            assert f"dtype     {rec.image.dtype.name}" in text and "checksum  ok (" in text, text


@pytest.mark.skipif(not REAL, reason="the disk, LMDB and HDF5 backends are not all importable yet")
async def test_compare_float_records_with_nan_identical(tmp_path):
    """NaN pixels (same payload) are identical across stores; a changed NaN payload is a difference."""
    records = every_dtype_records()
    changed = [Record(r.image.copy(), r.label, r.metadata) for r in records]
    f32 = next(i for i, r in enumerate(records) if r.image.dtype == np.float32)
    changed[f32].image.reshape(-1).view(np.uint32)[0] ^= 1  # another NaN payload: still NaN
    assert np.isnan(changed[f32].image.reshape(-1)[0])
    paths = write_stores(tmp_path, {"disk": records, "lmdb": records, "hdf5": changed})
    results = await run_compare(paths, f32 - 1, presses=[("n", f32)])
    assert results[0][1] is True, results[0][2]
    assert results[1][1] is False and results[1][2] == "DIFFERENT: hdf5 pixels differ from disk (1 values)"


KILLED_WRITER = """
import os, sys
import numpy as np
from imgtui.backends import open_writer
w = open_writer(sys.argv[1], sys.argv[2])
w.__enter__()
for i in range(20):
    w.write((np.full((8, 8), i, np.uint8), i))
w.flush()
os._exit(0)  # killed before the manifest is written
"""


@pytest.mark.skipif(not REAL, reason="the disk, LMDB and HDF5 backends are not all importable yet")
@pytest.mark.parametrize("backend", ["disk", "lmdb", "hdf5"])
async def test_incomplete_store_shows_one_line_error(tmp_path, backend):
    import subprocess
    import sys

    from imgtui.backends import get_backend

    path = str(tmp_path / f"killed{get_backend(backend).suffix or '.' + backend}")
    subprocess.run([sys.executable, "-c", KILLED_WRITER, path, backend], check=True, timeout=120)
    app = ScreenApp(lambda: BrowserScreen(path))
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browser(pilot, app)
        assert screen.error is not None and "\n" not in screen.error
        assert "incomplete" in screen.error.lower() or "not finalised" in screen.error.lower()
        assert (screen.error, "error") in app.notes
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, BrowserScreen))


@pytest.mark.skipif(not REAL, reason="the disk, LMDB and HDF5 backends are not all importable yet")
async def test_truncated_hdf5_store_never_crashes(tmp_path):
    (path,) = write_stores(tmp_path, {"hdf5": [make_record(i, 40) for i in range(40)]})
    size = Path(path).stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    app = ScreenApp(lambda: BrowserScreen(path))
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browser(pilot, app)
        if screen.error is None:  # opened: some records fail to decode instead
            await pilot.press("end")
            await wait_for(pilot, lambda: "record 39\n" in record_text(screen))
            await wait_for(pilot, lambda: any(sev == "error" for _, sev in app.notes))
        errors = [m for m, sev in app.notes if sev == "error"]
        assert errors and all("\n" not in m for m in errors)
        assert app.is_running


@pytest.mark.skipif(not REAL, reason="the disk, LMDB and HDF5 backends are not all importable yet")
async def test_record_that_fails_to_decode_is_reported_and_browsing_goes_on(tmp_path):
    (path,) = write_stores(tmp_path, {"disk": [make_record(i) for i in range(5)]})
    pngs = sorted(Path(path).rglob("*.png"))
    assert len(pngs) == 5
    pngs[1].write_bytes(b"\x89PNG\r\n\x1a\n this is not a PNG any more")
    app = ScreenApp(lambda: BrowserScreen(path))
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browser(pilot, app)
        await pilot.press("down")
        await wait_for(pilot, lambda: any(sev == "error" for _, sev in app.notes))
        message = next(m for m, sev in app.notes if sev == "error")
        assert "\n" not in message and "1" in message
        await wait_for(pilot, lambda: screen.record_list.details_of(1) is not None)
        assert screen.record_list.details_of(1).status == "unreadable"
        await pilot.press("down")
        await wait_for(pilot, lambda: "record 2\n" in record_text(screen) and screen.image_view.key[0] == 2)
        assert "checksum  ok" in record_text(screen)


@pytest.mark.parametrize("kind", ["lmdb", "hdf5", "disk"])
async def test_browser_opens_article_format_stores(tmp_path, kind):
    article = pytest.importorskip("imgtui.backends.article")
    images = np.stack([make_record(i, 32).image[:, :32] for i in range(12)])
    labels = np.arange(12, dtype=np.uint8) % 5
    store = getattr(article, f"store_many_{kind}")(images, labels, tmp_path)
    path = str(store or tmp_path)
    app = ScreenApp(lambda: BrowserScreen(path))
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browser(pilot, app)
        assert screen.error is None, screen.error
        assert "12 records" in info_text(screen)
        await pilot.press("down", "down")
        await wait_for(pilot, lambda: "record 2\n" in record_text(screen) and screen.image_view.has_image)
        assert "label     2\n" in record_text(screen)
        assert "32x32x3" in record_text(screen)


# -- compare view ------------------------------------------------------------------------------
class ListReader(FakeReader):
    """A fake store holding given records."""

    def __init__(self, records: list[Record], backend: str) -> None:
        super().__init__(len(records))
        self.records, self.backend = records, backend

    def __getitem__(self, i: int) -> Record:
        return self.records[i]

    def labels(self):
        return [r.label for r in self.records]

    def _stored_checksum(self, i: int) -> int:
        return checksum(self.records[i].image)

    def info(self) -> dict:
        return {"backend": self.backend, "count": len(self.records)}


def write_stores(tmp_path: Path, records_per_backend: dict[str, list[Record]]) -> list[str]:
    from imgtui.backends import get_backend, open_writer

    paths = []
    for backend, records in records_per_backend.items():
        path = tmp_path / f"data{get_backend(backend).suffix or '.' + backend}"
        with open_writer(path, backend) as w:
            w.write_many(records)
        paths.append(str(path))
    return paths


def compare_stores(tmp_path, monkeypatch, differ_at: int | None):
    """Three stores with the same 6 records (or one changed pixel in the HDF5 copy)."""
    records = [make_record(i) for i in range(6)]
    changed = [Record(r.image.copy(), r.label, r.metadata) for r in records]
    if differ_at is not None:
        changed[differ_at].image[0, 0, 0] ^= 0xFF
    per_backend = {"disk": records, "lmdb": records, "hdf5": changed}
    if REAL:
        return write_stores(tmp_path, per_backend)
    from imgtui.tui.screens import compare as compare_mod

    fakes = {f"fake-{b}": ListReader(recs, b) for b, recs in per_backend.items()}
    monkeypatch.setattr(compare_mod, "open_any_store", lambda p: fakes[p])
    return list(fakes)


async def run_compare(paths, index=0, presses=()):
    app = ScreenApp(lambda: CompareScreen(paths, index))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen))
        screen = app.screen
        await wait_for(pilot, lambda: screen.loaded_index == index)
        results = [(screen.loaded_index, screen.identical, screen.verdict)]
        for key, want in presses:
            await pilot.press(key)
            await wait_for(pilot, lambda: screen.loaded_index == want)
            results.append((screen.loaded_index, screen.identical, screen.verdict))
        images = [screen.query_one(f"#image-{n}", ImageView).has_image for n in range(len(paths))]
        assert all(images)
        assert "checksum  ok" in record_text_of(screen, "#info-0")
    return results


def record_text_of(screen, selector: str) -> str:
    from rich.console import Console

    console = Console(width=200, record=True, file=io.StringIO())
    console.print(screen.query_one(selector).content)
    return console.export_text()


async def test_compare_reports_identical_pixels(tmp_path, monkeypatch):
    paths = compare_stores(tmp_path, monkeypatch, differ_at=None)
    results = await run_compare(paths, 1, presses=[("n", 2), ("p", 1), ("p", 0)])
    for _index, identical, verdict in results:
        assert identical is True
        assert verdict.startswith("pixels identical in all stores (3 stores")


async def test_compare_reports_a_difference(tmp_path, monkeypatch):
    paths = compare_stores(tmp_path, monkeypatch, differ_at=2)
    results = await run_compare(paths, 1, presses=[("n", 2), ("n", 3)])
    assert results[0][1] is True
    index, identical, verdict = results[1]
    assert identical is False
    assert verdict == "DIFFERENT: hdf5 pixels differ from disk (1 values)"
    assert results[2][1] is True


@pytest.mark.skipif(not REAL, reason="the disk, LMDB and HDF5 backends are not all importable yet")
async def test_c_in_browser_compares_sibling_stores(tmp_path):
    records = [make_record(i) for i in range(5)]
    paths = write_stores(tmp_path, {"disk": records, "lmdb": records, "hdf5": records})
    app = ScreenApp(lambda: BrowserScreen(paths[1]))
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browser(pilot, app)
        await pilot.press("down", "down")
        await wait_for(pilot, lambda: screen.record_list.current_index == 2)
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen))
        compare = app.screen
        await wait_for(pilot, lambda: compare.loaded_index == 2)
        assert sorted(compare.paths) == sorted(str(Path(p).resolve()) for p in paths)
        assert compare.identical is True
        # equal columns, one line titles (name + file name; the full path in the tooltip)
        columns = list(compare.query(".compare-column"))
        assert len({c.region.width for c in columns}) == 1
        assert all(compare.query_one(f"#title-{n}").region.height == 1 for n in range(3))
        assert compare.query_one("#title-0").tooltip == compare.paths[0]
        # moving in compare moves the browser
        await pilot.press("n")
        await wait_for(pilot, lambda: compare.loaded_index == 3)
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is screen)
        await wait_for(pilot, lambda: screen.record_list.current_index == 3)


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-q"])


def test_store_header_tells_how_to_read_without_imgtui(tmp_path):
    import numpy as np

    import imgtui
    from imgtui.tui.screens.browser import info_text, store_info

    dest = tmp_path / "r.h5"
    with imgtui.writer(dest, "hdf5") as w:
        w.write(imgtui.Record(np.zeros((4, 4), np.uint8), 1, {}))
    with imgtui.open(dest) as r:
        text = info_text(store_info(r, str(dest))).plain
    assert "read without imgtui: h5py.File(path)['images'][i]" in text


async def test_app_started_on_a_store_opens_the_browser_and_back_goes_to_the_main_screen(fake_store):
    """``imgtui STORE``: the app starts with the browser on that store (as ``toolong FILE`` does)."""
    from imgtui.tui.app import make_app
    from imgtui.tui.screens.main import MainScreen

    app = make_app("synthetic:count=5,size=8", browse="fake:40")
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browser(pilot, app)
        assert screen.path == "fake:40"
        assert "40 records" in info_text(screen)
        # the main screen's widgets are built only when the browser is left (a faster first paint)
        assert not app.main_screen.is_mounted
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen))
        await wait_for(pilot, lambda: app.main_screen.is_mounted and "synthetic" in app.main_screen.plan.dataset)
        await pilot.press("question_mark")  # the app's keys work on it
        await wait_for(pilot, lambda: type(app.screen).__name__ == "HelpScreen")


async def test_a_pixel_terminal_gets_the_full_image_through_textual_image(fake_store, monkeypatch):
    """With Kitty/Sixel detected the record goes to textual-image's widget at full resolution
    (here a stand-in widget: the test terminal has no graphics); half blocks stay for messages."""
    from textual.widget import Widget

    from imgtui.tui import graphics

    class FakeGfx(Widget):
        image = None

    monkeypatch.setattr(graphics, "_KIND", "kitty")
    monkeypatch.setattr(graphics, "_WIDGET", FakeGfx)
    app = ScreenApp(lambda: BrowserScreen("fake:10"))
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browser(pilot, app)
        gfx = screen.query_one("#image-gfx", FakeGfx)
        await wait_for(pilot, lambda: gfx.image is not None and gfx.display)
        assert np.array_equal(np.asarray(gfx.image), make_record(0).image)
        assert not screen.image_view.display
        await pilot.press("n", "n", "n")  # record 3 cannot be read: its message in half blocks
        await wait_for(pilot, lambda: screen.image_view.display and "record 3" in screen.image_view.message)
        assert not gfx.display


def test_zoom_crop_keeps_the_view_inside_the_image():
    from imgtui.tui.screens.browser import zoom_crop

    img = np.arange(100 * 60).reshape(100, 60)
    assert zoom_crop(img, 1, (0.5, 0.5)) is img
    mid = zoom_crop(img, 2, (0.5, 0.5))
    assert mid.shape == (50, 30) and mid[0, 0] == img[25, 15]
    corner = zoom_crop(img, 4, (1.0, 0.0))  # panned past the top-right corner: clamped
    assert corner.shape == (25, 15) and corner[0, 0] == img[0, 45]


async def test_z_zooms_and_shift_arrows_pan_and_another_record_fits_again(fake_store):
    app = ScreenApp(lambda: BrowserScreen("fake:10"))
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browser(pilot, app)
        view = screen.image_view
        await wait_for(pilot, lambda: view.has_image)
        def cells():
            return [[(seg.text, seg.style) for seg in strip] for strip in view._strips]

        fitted = cells()
        await pilot.press("z")
        await wait_for(pilot, lambda: view.key is not None and view.key[3] == 2)
        assert screen._zoom == 2 and cells() != fitted
        await pilot.press("shift+right")
        await wait_for(pilot, lambda: view.key[4] == (0.625, 0.5))
        await pilot.press("Z")
        await wait_for(pilot, lambda: view.key[3] == 1)
        assert view.key[4] == (0.5, 0.5)
        await pilot.press("z", "z")
        await wait_for(pilot, lambda: view.key[3] == 4)
        await pilot.press("down")
        await wait_for(pilot, lambda: view.key[0] == 1)
        assert view.key[3] == 1 and screen._zoom == 1


async def test_v_shows_a_page_of_thumbnails_and_enter_opens_the_chosen_record(fake_store):
    from imgtui.tui.screens.grid import GridScreen

    app = ScreenApp(lambda: BrowserScreen("fake:40"))
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browser(pilot, app)
        await pilot.press("v")
        await wait_for(pilot, lambda: isinstance(app.screen, GridScreen))
        grid = app.screen
        views = [grid.query_one(f"#tile-{n}").query_one(ImageView) for n in range(18)]
        # record 3 cannot be read: its tile says so, the others show their images
        await wait_for(pilot, lambda: all(v.has_image or v.message == "cannot be read" for v in views))
        assert [v.has_image for v in views].count(False) == 1 and not views[3].has_image
        assert str(grid.query_one("#tile-2").query_one(".tile-caption").content) == "2 · cls2"
        await pilot.press("right", "down")  # 0 -> 1 -> 7
        await pilot.press("pagedown")  # the next page, same slot: 25
        await wait_for(pilot, lambda: str(grid.query_one("#grid-status").content).startswith("record 25 · page 2 of 3"))
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.screen is screen and screen.record_list.current_index == 25)


async def test_l_picks_a_label_and_shows_its_records(fake_store):
    from imgtui.tui.screens.labels import LabelPicker, label_counts

    assert label_counts(["b", "a", "b", 3, "a", "b"]) == [("b", 3), ("a", 2), ("3", 1)]
    app = ScreenApp(lambda: BrowserScreen("fake:30"))
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browser(pilot, app)
        records = screen.record_list
        await wait_for(pilot, lambda: records.labels_loaded)
        await pilot.press("l")
        await wait_for(pilot, lambda: isinstance(app.screen, LabelPicker))
        assert app.screen.counts == [("cls0", 10), ("cls1", 10), ("cls2", 10)]
        await pilot.press("down", "enter")  # cls1
        await wait_for(pilot, lambda: app.screen is screen and records.filtered)
        assert [records.index_at(r) for r in range(records.row_count)] == list(range(1, 30, 3))
        assert str(screen.query_one("#list-status").content).endswith("filter: =cls1")


# -- snapshots of the browser and its screens at both sizes ------------------------------------------
def _browser_ready(size_name: str):
    async def run_before(pilot) -> None:
        app = pilot.app
        screen = await open_browser(pilot, app)
        records = screen.record_list
        await wait_for(pilot, lambda: screen.image_view.has_image and records.labels_loaded)
        await wait_for(pilot, lambda: all(records.details_of(i) is not None for i in records.visible_indices()))
        await pilot.pause()
    return run_before


@pytest.mark.parametrize("size", [(80, 24), (160, 50)], ids=["80x24", "160x50"])
def test_snapshot_browser(snap_compare, fake_store, size):
    app = ScreenApp(lambda: BrowserScreen("fake:40"))
    assert snap_compare(app, terminal_size=size, run_before=_browser_ready("x"))


@pytest.mark.parametrize("size", [(80, 24), (160, 50)], ids=["80x24", "160x50"])
def test_snapshot_thumbnails(snap_compare, fake_store, size):
    from imgtui.tui.screens.grid import GridScreen

    async def run_before(pilot) -> None:
        await _browser_ready("x")(pilot)
        await pilot.press("v")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, GridScreen))
        grid = pilot.app.screen
        views = [grid.query_one(f"#tile-{n}").query_one(ImageView) for n in range(18)]
        await wait_for(pilot, lambda: all(v.has_image or v.message == "cannot be read"
                                          for v, t in zip(views, range(18)) if grid.query_one(f"#tile-{t}").display))
        await pilot.pause()

    app = ScreenApp(lambda: BrowserScreen("fake:40"))
    assert snap_compare(app, terminal_size=size, run_before=run_before)


async def test_screens_closed_before_they_are_mounted_do_not_crash(fake_store):
    """Seen in CI: escape pressed just after `b` popped the browser before its Mount ran, whose
    handler then found no widgets (NoMatches): a traceback that ended the app."""
    import threading

    from textual.screen import Screen
    from textual.widgets import Static

    from imgtui.tui.screens.grid import GridScreen
    from imgtui.tui.screens.help import HelpScreen

    class Home(Screen):
        def compose(self):
            yield Static("home")

    factories = [
        lambda: BrowserScreen("fake:50"),
        lambda: CompareScreen(["fake:5", "fake:6"]),
        lambda: HelpScreen([("q", "quit")]),
        lambda: GridScreen(50, 0, lambda i: (make_record(i).image, "x"), threading.Lock()),
    ]
    app = ScreenApp(Home)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        for factory in factories:
            for _ in range(5):
                app.push_screen(factory())
                app.pop_screen()
                await pilot.pause()
        await pilot.pause(0.3)
        assert app.is_running and isinstance(app.screen, Home)
        app.push_screen(BrowserScreen("fake:50"))  # and one that stays opens as usual
        screen = await open_browser(pilot, app)
        assert "50 records" in info_text(screen)


async def test_app_exiting_while_screens_mount_does_not_crash(fake_store):
    """Seen in CI: the test (like a user's ctrl+q) ended the app just after the browser was pushed;
    the screen, still on the stack, mounted without its widgets (NoMatches)."""
    from imgtui.tui.screens.help import HelpScreen

    for factory in (lambda: BrowserScreen("fake:50"), lambda: CompareScreen(["fake:5", "fake:6"]),
                    lambda: HelpScreen([("q", "quit")])):
        app = ScreenApp(lambda: BrowserScreen("fake:9"))
        async with app.run_test(size=SIZE) as pilot:
            await open_browser(pilot, app)
            app.push_screen(factory())
            app.exit()
        assert app.return_code in (0, None)


@pytest.mark.skipif(not REAL, reason="the LMDB backend is not importable")
async def test_l_and_the_filter_on_a_real_store_read_its_labels_as_one_array(tmp_path):
    """A real store's labels come as one numpy array (labels_array): the picker counts them and
    "=label" filters by them, like the list a duck-typed reader gives."""
    from imgtui.tui.screens.labels import LabelPicker

    records = [Record(np.full((4, 5), k, np.uint8), k % 3, {"k": k}) for k in range(30)]
    (path,) = write_stores(tmp_path, {"lmdb": records})
    app = ScreenApp(lambda: BrowserScreen(path))
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browser(pilot, app)
        rows = screen.record_list
        await wait_for(pilot, lambda: rows.labels_loaded)
        assert isinstance(screen._labels, np.ndarray) and screen._labels.dtype == np.int64
        assert rows.label_of(4) == 1
        await pilot.press("l")
        await wait_for(pilot, lambda: isinstance(app.screen, LabelPicker))
        assert app.screen.counts == [("0", 10), ("1", 10), ("2", 10)]
        await pilot.press("down", "down", "enter")  # label 2
        await wait_for(pilot, lambda: app.screen is screen and rows.filtered)
        assert [rows.index_at(r) for r in range(rows.row_count)] == list(range(2, 30, 3))


@pytest.mark.skipif(not REAL, reason="the disk, LMDB and HDF5 backends are not all importable yet")
@pytest.mark.parametrize("backend", ["disk", "lmdb"])
async def test_volume_opens_on_its_middle_slice_and_brackets_move_through_the_slices(tmp_path, backend):
    """A 3-D record is drawn slice by slice: it opens on the middle slice, ] and [ step, } and {
    jump by ten (clamped), every slice is drawn differently; a 2-D record says it has no slices."""
    rng = np.random.default_rng(4)
    depth = 13
    vol = np.stack([np.full((16, 20), k * 1000, np.int16) for k in range(depth)])  # each slice its own grey
    vol[:, :4, :4] = rng.integers(-1000, 1000, (depth, 4, 4), dtype=np.int16)
    records = [Record(vol, 1, {"spacing": [2.5, 0.8, 0.8]}), Record(rng.integers(0, 255, (10, 12), dtype=np.uint8), 2, {})]
    (path,) = write_stores(tmp_path, {backend: records})
    app = ScreenApp(lambda: BrowserScreen(path))
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browser(pilot, app)
        view = screen.image_view
        await wait_for(pilot, lambda: "slice     7/13" in record_text(screen))
        assert "shape     volume 13x16x20" in record_text(screen)
        assert screen.record_list.details_of(0).shape == "3D 13x16x20"  # fits the list's shape column
        await wait_for(pilot, lambda: view.has_image)

        def cells():
            return [[(seg.text, seg.style) for seg in strip] for strip in view._strips]

        seen = [cells()]
        for key, want in (("right_square_bracket", 8), ("left_square_bracket", 7), ("left_square_bracket", 6),
                          ("right_curly_bracket", 13), ("right_square_bracket", 13), ("left_curly_bracket", 3)):
            await pilot.press(key)
            await wait_for(pilot, lambda: f"slice     {want}/13" in record_text(screen))
            await wait_for(pilot, lambda: view.key is not None and view.key[5] == want - 1)
            seen.append(cells())
        assert len({str(c) for c in seen}) == 5  # 7, 8, 6, 13, 3 (7 twice, 13 twice): each slice its own picture
        await pilot.press("down")
        await wait_for(pilot, lambda: "record 1\n" in record_text(screen))
        assert "slice" not in record_text(screen)
        await pilot.press("right_square_bracket")
        await wait_for(pilot, lambda: any("has no slices" in m for m, _ in app.notes))


async def test_moving_the_cursor_redraws_only_the_rows_that_change_and_pages_are_read_ahead(fake_store):
    """Down redraws the two rows whose highlight changes, not the page; the details of the next
    page are read ahead, so PageDown draws its page once, complete (no "…" rows drawn again)."""
    app = ScreenApp(lambda: BrowserScreen("fake:5000"))
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browser(pilot, app)
        records = screen.record_list
        await wait_for(pilot, lambda: screen.image_view.has_image)
        page = records._page_height()
        await wait_for(pilot, lambda: all(records.details_of(i) is not None for i in range(2 * page)))
        await pilot.pause(0.2)
        before = records.lines_rendered
        await pilot.press("down")
        await wait_for(pilot, lambda: screen.image_view.key is not None and screen.image_view.key[0] == 1)
        await pilot.pause(0.2)
        assert records.lines_rendered - before <= 3
        before = records.lines_rendered
        await pilot.press("pagedown")
        await wait_for(pilot, lambda: screen.image_view.key is not None and screen.image_view.key[0] == 1 + page)
        await pilot.pause(0.3)
        assert records.lines_rendered - before <= page + 2  # one page, drawn once
        top = round(records.scroll_offset.y)
        await wait_for(pilot, lambda: all(records.details_of(i) is not None for i in range(top, top + 2 * page)))
