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
    return saved


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "screenshots")
    for p in asyncio.run(take_browser_screenshots(target)):
        print(p)
