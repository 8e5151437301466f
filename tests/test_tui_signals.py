"""The real app in a pseudo-terminal: SIGTERM and SIGHUP during a benchmark end it like ctrl+q (the
benchmark child stopped, its temporary stores removed, the terminal restored). Bounds are generous:
they only catch a hang (the issue: the app lived on for 20 minutes)."""

from __future__ import annotations

import fcntl
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import psutil
import pytest

HANG = 60.0
ROOT = Path(__file__).resolve().parent.parent


def _wait(condition, timeout: float, what: str, poke=None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        if poke is not None:
            poke()
        time.sleep(0.25)


@pytest.mark.parametrize("sig,close_terminal", [(signal.SIGTERM, False), (signal.SIGHUP, False), (signal.SIGHUP, True)],
                         ids=["SIGTERM", "SIGHUP", "SIGHUP-terminal-closed"])
def test_a_signal_during_a_benchmark_stops_it_and_exits(tmp_path, sig, close_terminal):
    work = tmp_path / "work"
    work.mkdir()
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = dict(os.environ, TERM="xterm-256color", PYTHONPATH=str(ROOT), COLUMNS="120", LINES="40")
    argv = [sys.executable, "-m", "imgtui", "--workdir", str(work), "--dataset", "synthetic:count=10000,size=16"]
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                            cwd=tmp_path, start_new_session=True, close_fds=True)
    os.close(slave)
    out = bytearray()

    def drain() -> None:  # the app blocks if nobody reads the terminal
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            out.extend(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        # press s until the benchmark child has made its scratch folder and a store in it
        _wait(lambda: any(work.glob("imgtui-child-*/imgtui-bench-*/*")), HANG, "the benchmark to run",
              poke=lambda: os.write(master, b"s"))
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children, "the benchmark runs in a child process"
        if close_terminal:  # the tmux window is closed: the terminal is gone, then the hangup comes
            os.close(master)
            master = -1
        proc.send_signal(sig)
        proc.wait(timeout=HANG)
        gone, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, f"left running: {alive}"
        assert os.listdir(work) == []  # the temporary stores are removed
        reader.join(timeout=5)
        if not close_terminal:
            assert b"\x1b[?1049l" in out  # the alternate screen was left: the terminal is restored
            assert b"Traceback" not in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if master >= 0:
            os.close(master)
