"""Drive the real imgtui app with Pilot and save SVG screenshots into screenshots/.

    python scripts/screenshots.py            # main-running.svg, plots.svg, main-light.svg, help.svg, recommend.svg
    python scripts/screenshots.py --measure  # also: time to first paint, key latency during a 100k run

The record browser's screenshots come from scripts/browser_screenshots.py.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from textual import events

from imgtui.tui.app import make_app
from imgtui.tui.screens.main import MainScreen
from imgtui.tui.themes import LIGHT

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "screenshots"
SIZE = (140, 44)


async def wait_until(pilot, condition, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the app did not get there in time")
        await pilot.pause(0.05)


async def mid_benchmark(work: str) -> None:
    """The main screen while a benchmark runs, with rows already in the table."""
    app = make_app(
        "synthetic:count=10000,size=32",
        methods=["imgtui", "floor"],
        experiments=["store_many", "read_many", "random_batches", "disk_usage"],
        counts=[10, 100, 1000, 10000],
        repeats=1,
        workdir=work,
    )
    async with app.run_test(size=SIZE) as pilot:
        await app.workers.wait_for_complete()
        screen: MainScreen = app.screen  # type: ignore[assignment]
        await pilot.press("s")
        await wait_until(pilot, lambda: len(screen.rows) >= 22 or not screen.running)
        await wait_until(pilot, lambda: "store_many" in str(screen.query_one("#step-name").content)
                         or not screen.running, timeout=60)
        await pilot.pause(0.3)
        app.save_screenshot("main-running.svg", path=str(OUT))
        await pilot.press("c")
        await wait_until(pilot, lambda: not screen.running)


async def plots_and_light(work: str) -> None:
    """A finished run: the plots view, then the results table in the light theme, then help."""
    app = make_app(
        "synthetic:count=1000,size=32",
        methods=["imgtui", "floor"],
        experiments=["store_many", "read_many", "disk_usage"],
        counts=[10, 100, 1000],
        repeats=1,
        workdir=work,
    )
    async with app.run_test(size=SIZE) as pilot:
        await app.workers.wait_for_complete()
        screen: MainScreen = app.screen  # type: ignore[assignment]
        await pilot.press("s")
        await wait_until(pilot, lambda: screen.bench_worker is not None)
        await wait_until(pilot, lambda: not screen.running)
        await pilot.pause(0.5)
        await pilot.press("p")
        await pilot.pause(0.5)
        app.save_screenshot("plots.svg", path=str(OUT))
        await pilot.press("p")
        app.theme = LIGHT
        await pilot.pause(0.5)
        app.save_screenshot("main-light.svg", path=str(OUT))
        await pilot.press("f1")
        await pilot.pause(0.5)
        app.save_screenshot("help.svg", path=str(OUT))


async def recommend_screen(work: str) -> None:
    """The recommendation screen after it measured what random access needs on 2,000 records."""
    from imgtui.tui.screens.recommend import RecommendScreen

    app = make_app("synthetic:count=2000,size=32", workdir=work)
    async with app.run_test(size=SIZE) as pilot:
        await app.workers.wait_for_complete()
        await pilot.press("r")
        await pilot.pause()
        screen: RecommendScreen = app.screen  # type: ignore[assignment]
        await pilot.click("#rec-go")
        await wait_until(pilot, lambda: screen.recommendation is not None, timeout=600)
        await pilot.pause(0.5)
        app.save_screenshot("recommend.svg", path=str(OUT))


async def measure(work: str) -> None:
    """Time to first paint (Pilot), and key handling latency while a 100,000-record run works."""
    t0 = time.perf_counter()
    app = make_app(
        "synthetic:count=100000,size=32",
        backends=["lmdb", "hdf5"],
        methods=["imgtui"],
        experiments=["store_many", "read_many"],
        counts=[100000],
        repeats=1,
        workdir=work,
    )
    painted: list[float] = []
    async with app.run_test(size=SIZE) as pilot:
        screen: MainScreen = app.screen  # type: ignore[assignment]
        screen.call_after_refresh(lambda: painted.append(time.perf_counter()))
        await wait_until(pilot, lambda: bool(painted))
        print(f"first paint (Pilot, app built to first refresh): {(painted[0] - t0) * 1000:.0f} ms")
        await app.workers.wait_for_complete()
        await pilot.press("s")
        await wait_until(pilot, lambda: "store_many" in str(screen.query_one("#step-name").content))

        ticks: list[tuple[float, str]] = []
        step_name = screen.query_one("#step-name")
        ticker = app.set_interval(0.05, lambda: ticks.append((time.perf_counter(), str(step_name.content))))
        handled: list[float] = []
        original = screen.action_toggle_plots

        def timed() -> None:
            handled.append(time.perf_counter())
            original()

        screen.action_toggle_plots = timed  # type: ignore[method-assign]
        latencies = []
        # post the key events directly (Pilot.press waits for the CPU to go idle, which a busy
        # worker thread never lets happen) and time until the binding's action runs
        while screen.running and len(latencies) < 100:
            sent = time.perf_counter()
            app.post_message(events.Key("p", "p"))
            while len(handled) <= len(latencies):
                await asyncio.sleep(0.001)
            latencies.append(handled[-1] - sent)
            await asyncio.sleep(0.25)
        still_running = screen.running
        ticker.stop()
        gaps = [(b[0] - a[0], b[1]) for a, b in zip(ticks, ticks[1:])]
        await pilot.press("c")
        await wait_until(pilot, lambda: not screen.running)
    if latencies:
        ms = sorted(x * 1000 for x in latencies)
        print(
            f"key press -> handler while the 100k benchmark ran ({len(ms)} presses): "
            f"median {statistics.median(ms):.1f} ms, 95th percentile {ms[int(len(ms) * 0.95)]:.1f} ms, "
            f"max {ms[-1]:.1f} ms (run still going at the end: {still_running})"
        )
    if gaps:
        worst = max(gaps)
        slow = sum(1 for g, _ in gaps if g > 0.1)
        print(f"UI loop during the run: 50 ms timer fired {len(gaps) + 1} times, {slow} gaps over 100 ms, "
              f"longest {worst[0] * 1000:.0f} ms (during: {worst[1]})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--measure", action="store_true", help="also measure first paint and key latency")
    p.add_argument("--only-measure", action="store_true", help="measure, take no screenshots")
    p.add_argument("--only-recommend", action="store_true", help="only the recommendation screen's screenshot")
    args = p.parse_args(argv)
    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="imgtui-shots-") as work:
        if args.only_recommend:
            asyncio.run(recommend_screen(work))
            return 0
        if not args.only_measure:
            asyncio.run(mid_benchmark(work))
            asyncio.run(plots_and_light(work))
            asyncio.run(recommend_screen(work))
            print(f"saved screenshots into {OUT}")
        if args.measure or args.only_measure:
            asyncio.run(measure(work))
    return 0


if __name__ == "__main__":
    sys.exit(main())
