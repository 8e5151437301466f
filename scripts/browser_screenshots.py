"""Save SVG screenshots of the store browser and the compare view into screenshots/.

    python scripts/browser_screenshots.py [out_dir]

Writes the same records to a disk, an LMDB and an HDF5 store in a temporary folder (CIFAR-10 test
images from ../shared/datasets/cifar10-test when present, else synthetic images), opens the
browser on the LMDB store and the compare view on all three, and saves browser.svg and
compare.svg. The half-block renderer is used (SVG cannot show Sixel/Kitty images).
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CIFAR = ROOT.parent / "shared" / "datasets" / "cifar10-test"
SIZE = (140, 44)


def _records(count: int = 1000):
    from imgtui.datasets import SyntheticDataset, open_dataset

    if CIFAR.is_dir():
        ds = open_dataset(str(CIFAR))
        step = max(1, (len(ds) if ds.length else 10000) // count)
        return list(itertools.islice(itertools.islice(iter(ds), 0, None, step), count))
    return list(SyntheticDataset(count=count, size=(48, 64), channels=3, seed=7))


def write_demo_stores(folder: Path, count: int = 1000) -> list[str]:
    from imgtui.backends import get_backend, open_writer

    records = _records(count)
    paths = []
    for backend in ("disk", "lmdb", "hdf5"):
        path = folder / f"cifar{get_backend(backend).suffix or '.' + backend}"
        with open_writer(path, backend) as w:
            w.write_many(records)
        paths.append(str(path))
    return paths


async def take_browser_screenshots(out_dir: str | Path, store_dir: str | Path | None = None) -> list[Path]:
    """Drive BrowserScreen and CompareScreen and save browser.svg and compare.svg in ``out_dir``."""
    from textual.app import App

    from imgtui.tui.screens.browser import BrowserScreen
    from imgtui.tui.screens.compare import CompareScreen

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_demo_stores(Path(store_dir or tmp))

        class ShotApp(App):
            TITLE = "imgtui"

            def __init__(self, screen) -> None:
                super().__init__()
                self._first = screen

            def on_mount(self) -> None:
                self.push_screen(self._first)

        async def until(pilot, predicate, timeout: float = 60.0) -> None:
            loop = asyncio.get_running_loop()
            end = loop.time() + timeout
            while not predicate():
                if loop.time() > end:
                    raise TimeoutError("screen did not finish loading")
                await pilot.pause(0.05)

        saved = []
        browser = BrowserScreen(paths[1])
        app = ShotApp(browser)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: browser.reader is not None)
            await until(pilot, lambda: browser.record_list.labels_loaded)
            await pilot.press("g", *"123", "enter")
            await until(pilot, lambda: browser.image_view.key is not None and browser.image_view.key[0] == 123)
            await pilot.pause(0.3)
            await until(pilot, lambda: all(
                browser.record_list.details_of(i) is not None for i in browser.record_list.visible_indices()
            ))
            app.save_screenshot(filename="browser.svg", path=str(out))
            saved.append(out / "browser.svg")

        compare = CompareScreen(paths, 123)
        app = ShotApp(compare)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: compare.loaded_index == 123)
            await pilot.pause(0.3)
            app.save_screenshot(filename="compare.svg", path=str(out))
            saved.append(out / "compare.svg")
        records = float_records()
        fpath = Path(store_dir or tmp) / "float.lmdb"
        from imgtui.backends import open_writer

        with open_writer(fpath, "lmdb") as w:
            w.write_many(records)
        browser = BrowserScreen(str(fpath))
        app = ShotApp(browser)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: browser.reader is not None)
            await until(pilot, lambda: browser.image_view.key is not None and browser.image_view.key[0] == 0)
            await pilot.pause(0.3)
            app.save_screenshot(filename="browser-float32.svg", path=str(out))
            saved.append(out / "browser-float32.svg")
            await pilot.press("down")
            await until(pilot, lambda: browser.image_view.key is not None and browser.image_view.key[0] == 1)
            for _ in range(7):
                await pilot.press("right_square_bracket")
            await until(pilot, lambda: browser.image_view.key is not None and browser.image_view.key[5] == 27)
            await pilot.pause(0.3)
            app.save_screenshot(filename="browser-volume.svg", path=str(out))
            saved.append(out / "browser-volume.svg")
    return saved


def float_records():
    """A float32 2-D map (a smooth field with NaN outside a disc) and a float32 40x64x64 volume
    (two hot spheres in a warm body, as a PET SUV map), with the metadata such files carry."""
    import numpy as np

    from imgtui.records import Record

    y, x = np.mgrid[-1:1:96j, -1:1:128j]
    field = (np.sin(3 * x) * np.cos(2 * y) * 2.5 + 1.0).astype(np.float32)
    field[x**2 + y**2 > 0.95] = np.nan
    z, y, x = np.mgrid[-1:1:40j, -1:1:64j, -1:1:64j]
    body = np.where((x / 0.9) ** 2 + (y / 0.7) ** 2 < 1, 1.2, 0.05)
    hot = 8 * np.exp(-((x - 0.3) ** 2 + (y + 0.1) ** 2 + (z - 0.3) ** 2) / 0.02)
    hot += 5 * np.exp(-((x + 0.35) ** 2 + (y - 0.2) ** 2 + (z + 0.2) ** 2) / 0.01)
    vol = (body + hot + np.random.default_rng(1).normal(0, 0.08, body.shape)).astype(np.float32)
    return [Record(field, "t1-map", {"units": "ms", "spacing": [1.0, 1.0]}),
            Record(vol, "pet", {"units": "SUV", "spacing": [3.0, 2.0, 2.0], "axes": "record[k] = data[:, :, k]"})]


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "screenshots")
    for p in asyncio.run(take_browser_screenshots(target)):
        print(p)
