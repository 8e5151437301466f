#!/usr/bin/env python3
"""Key press -> changed screen latency of the imgtui app, measured as a user sees it.

The app runs in a tmux pane; this script sends a key, then polls the pane's text until the line it
watches changes (the browser's "row N of M" status, or any line for other screens) and records the
time from sending to the changed screen. Holding a key is simulated by sending the next press as
soon as the previous one shows (``--hold``) or at a fixed rate (``--rate``, like a key repeat).

  python scripts/key_latency.py browse /tmp/big.lmdb --key PageDown --presses 100
  python scripts/key_latency.py browse /tmp/big.lmdb --key Down --rate 30 --presses 150

Prints first paint, p50/p90/p99/max latency and the longest time without any screen change.
"""

from __future__ import annotations

import argparse
import re
import shlex
import statistics
import subprocess
import sys
import time


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], check=True, capture_output=True, text=True).stdout


def pane(session: str) -> str:
    return tmux("capture-pane", "-p", "-t", session)


def status_of(text: str, pattern: re.Pattern) -> str | None:
    m = pattern.search(text)
    return m.group(0) if m else None


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("args", nargs="+", help="imgtui arguments, e.g. browse STORE")
    p.add_argument("--key", default="PageDown", help="tmux key name (PageDown, Down, question_mark ...)")
    p.add_argument("--presses", type=int, default=100)
    p.add_argument("--rate", type=float, default=0.0, help="presses per second (0: next press when the screen changed)")
    p.add_argument("--size", default="160x50")
    p.add_argument("--watch", default=r"row [\d,]+ of [\d,]+", help="regex of the text that must change")
    p.add_argument("--ready", default=r"row 1 of", help="regex that marks the first paint")
    ns = p.parse_args()
    w, h = ns.size.split("x")
    session = f"lat{int(time.time())}"
    cmd = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "imgtui", *ns.args])
    start = time.perf_counter()
    tmux("new-session", "-d", "-s", session, "-x", w, "-y", h, cmd)
    watch, ready = re.compile(ns.watch), re.compile(ns.ready)
    try:
        while not ready.search(pane(session)):
            if time.perf_counter() - start > 60:
                print("the app did not paint within 60 s", file=sys.stderr)
                return 1
            time.sleep(0.005)
        first_paint = time.perf_counter() - start
        time.sleep(0.5)
        latencies: list[float] = []
        gaps: list[float] = []
        last_change = time.perf_counter()
        before = status_of(pane(session), watch)
        for _ in range(ns.presses):
            sent = time.perf_counter()
            tmux("send-keys", "-t", session, ns.key)
            while True:
                now_text = status_of(pane(session), watch)
                now = time.perf_counter()
                if now_text != before:
                    latencies.append(now - sent)
                    gaps.append(now - last_change)
                    last_change, before = now, now_text
                    break
                if now - sent > 10:
                    latencies.append(float("inf"))
                    break
            if ns.rate:
                time.sleep(max(0.0, 1.0 / ns.rate - (time.perf_counter() - sent)))
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    ms = [x * 1000 for x in latencies]
    print(f"first paint {first_paint * 1000:.0f} ms at {ns.size}; {len(ms)} presses of {ns.key}")
    print(f"latency key -> changed screen: p50 {statistics.median(ms):.0f} ms, p90 {percentile(ms, 90):.0f} ms, "
          f"p99 {percentile(ms, 99):.0f} ms, max {max(ms):.0f} ms; longest pause between screen changes "
          f"{max(gaps) * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
