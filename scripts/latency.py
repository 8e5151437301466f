"""Key press to changed screen: how long the real app takes to show a change while a benchmark runs.

    python scripts/latency.py                    # 100,000 records, 40 x (? opens help, q closes it)
    python scripts/latency.py --count 10000 --presses 20 --json lat.json
    PYTHONPATH=/path/to/other/checkout python scripts/latency.py   # measure another version

The app runs in a pseudo-terminal (as in a real terminal: its own process, its real driver). A
terminal emulator (pyte: ``pip install pyte``) reads everything the app writes. For each press the
time is measured from writing the key to the pty until the app has *written* the changed screen:
the help's first line is on the emulated screen (open), or gone again (close). That is the delay
a user sees, not the time to the key handler.

The benchmark is started with ``s`` and measured while it runs: one backend/method after another
on ``--count`` synthetic 32x32 RGB records (the app's default backends, methods and experiments,
one repeat). Presses are spaced by ``--gap`` seconds. At the end the app is quit with ctrl+q; the
figures (p50, p99, max in ms) are printed and optionally written as JSON.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import pty
import random
import re
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time

HELP_MARK = "Store an image dataset in"  # the help screen's first line
#: the status line during a run: "12/44 store_many…"
RUNNING = re.compile(r"\b\d+/\d+ [a-z_]+")


def serve(count: int, workdir: str) -> None:
    """The app under test (run inside the pty by ``main``); SIGTERM when the driver dies."""
    import ctypes

    try:
        ctypes.CDLL(None).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    from imgtui.tui.app import make_app

    app = make_app(f"synthetic:count={count},size=32", counts=[count], repeats=1, workdir=workdir)
    app.run()


class Terminal:
    """The app in a pty, its output fed into a pyte screen by a reader thread."""

    def __init__(self, argv: list[str], cols: int, rows: int, env: dict) -> None:
        import pyte

        self.screen = pyte.Screen(cols, rows)
        self.stream = pyte.ByteStream(self.screen)
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        def controlling_terminal() -> None:  # as in a real terminal: closing it hangs the app up
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                                     preexec_fn=controlling_terminal, close_fds=True)
        os.close(slave)
        self.master = master
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self._wanted = None  # (predicate on the screen text, result box)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def text(self) -> str:
        return "\n".join(self.screen.display)

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 1 << 16)
            except OSError:
                data = b""
            t = time.perf_counter()  # when the app's bytes arrived, before we parse them
            with self.cond:
                if not data:
                    self._wanted = None
                    self.cond.notify_all()
                    return
                self.stream.feed(data)
                if self._wanted is not None:
                    pred, box = self._wanted
                    if pred(self.text()):
                        box.append(t)
                        self._wanted = None
                        self.cond.notify_all()

    def press(self, key: bytes, until, timeout: float = 30.0) -> float | None:
        """Write ``key``; seconds until the screen satisfies ``until`` (None: timed out)."""
        box: list[float] = []
        with self.cond:
            self._wanted = (until, box)
            t0 = time.perf_counter()
            os.write(self.master, key)
            self.cond.wait_for(lambda: box or self._wanted is None, timeout=timeout)
            self._wanted = None
        return box[0] - t0 if box else None

    def wait(self, until, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if until(self.text()):
                    return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.05)
        return False


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(q * (len(s) - 1))))
    return s[k]


def summary(name: str, ms: list[float]) -> dict:
    if not ms:
        return {"what": name, "n": 0}
    return {"what": name, "n": len(ms), "p50_ms": round(statistics.median(ms), 1), "p99_ms": round(pct(ms, 0.99), 1),
            "max_ms": round(max(ms), 1), "mean_ms": round(statistics.fmean(ms), 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=100_000, help="records of the benchmark (default 100,000)")
    p.add_argument("--presses", type=int, default=40, help="help open/close pairs to time (default 40)")
    p.add_argument("--gap", type=float, default=0.3, help="seconds between presses (default 0.3, jittered)")
    p.add_argument("--size", default="120x40", help="terminal COLSxROWS (default 120x40)")
    p.add_argument("--idle", action="store_true", help="do not start the benchmark (the baseline)")
    p.add_argument("--json", help="write the figures here")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        serve(args.count, args.workdir)
        return 0
    try:
        import pyte  # noqa: F401
    except ImportError:
        print("latency.py needs pyte (pip install pyte)", file=sys.stderr)
        return 2
    cols, rows = (int(x) for x in args.size.lower().split("x"))
    work = tempfile.mkdtemp(prefix="imgtui-latency-")
    env = dict(os.environ, TERM="xterm-256color", COLUMNS=str(cols), LINES=str(rows))
    argv = [sys.executable, os.path.abspath(__file__), "--serve", "--count", str(args.count), "--workdir", work]
    term = Terminal(argv, cols, rows, env)
    opened: list[float] = []
    closed: list[float] = []
    misses = 0
    started = time.perf_counter()
    try:
        if not term.wait(lambda s: "Plan:" in s, 120):
            print("the app did not start", file=sys.stderr)
            return 1
        first_paint = time.perf_counter() - started
        time.sleep(1.0)
        if not args.idle:
            term.press(b"s", lambda s: RUNNING.search(s) is not None, timeout=300)
            if not term.wait(lambda s: RUNNING.search(s) is not None, 300):
                print("the benchmark did not start", file=sys.stderr)
                return 1
        print(f"first paint {first_paint:.2f} s; {'idle' if args.idle else 'benchmark running'}; "
              f"timing {args.presses} x (? then q)", file=sys.stderr)
        for i in range(args.presses):
            if not args.idle and RUNNING.search(term.text()) is None:
                print(f"the benchmark finished after {i} presses", file=sys.stderr)
                break
            dt = term.press(b"?", lambda s: HELP_MARK in s)
            if dt is None:
                misses += 1
                term.wait(lambda s: HELP_MARK in s, 30)
            else:
                opened.append(dt * 1000)
            time.sleep(args.gap * random.uniform(0.5, 1.5))
            dt = term.press(b"q", lambda s: HELP_MARK not in s)
            if dt is None:
                misses += 1
                term.wait(lambda s: HELP_MARK not in s, 30)
            else:
                closed.append(dt * 1000)
            time.sleep(args.gap * random.uniform(0.5, 1.5))
    finally:
        try:
            os.write(term.master, b"\x11")  # ctrl+q: cancels the run, removes its stores
            term.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            term.proc.send_signal(signal.SIGTERM)
            try:
                term.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                term.proc.kill()
        try:
            os.close(term.master)
        except OSError:
            pass
        left = os.listdir(work)
        os.rmdir(work) if not left else None
    result = {
        "count": args.count, "size": args.size, "idle": args.idle, "load_average": os.getloadavg(),
        "imgtui": os.path.dirname(os.path.dirname(__import__("imgtui").__file__)),
        "open_help": summary("? to help on screen", opened),
        "close_help": summary("q to help gone", closed),
        "all": summary("both", opened + closed),
        "timeouts": misses,
        "temp_left": left,
    }
    for key in ("open_help", "close_help", "all"):
        r = result[key]
        if r["n"]:
            print(f"{r['what']:<22} n={r['n']:>3}  p50 {r['p50_ms']:>7.1f} ms  p99 {r['p99_ms']:>7.1f} ms  "
                  f"max {r['max_ms']:>7.1f} ms")
    print(f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} ({os.cpu_count()} cores)", file=sys.stderr)
    if misses:
        print(f"{misses} presses got no changed screen within 30 s", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
