"""Measurement: peak-RSS samplers, ``timed_call``, ``drop_cache`` (cold reads), store sizes and
removal. No knowledge of experiments or plans."""

from __future__ import annotations

import gc
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

import psutil

from ..backends.base import path_size, remove_path  # noqa: F401 (the engine's size and removal)
from ..errors import ImgtuiError


#: "rss": resident memory; "anon": without file-backed pages (a run whose records are mapped from
#: a file sets it, so that touching them is not counted as a method's memory)
_RSS_KIND = "rss"


def set_rss_kind(kind: str) -> None:
    global _RSS_KIND
    _RSS_KIND = kind


def _rss(proc: psutil.Process) -> int:
    mi = proc.memory_info()
    if _RSS_KIND == "anon":
        return mi.rss - getattr(mi, "shared", 0)
    return mi.rss


class RssSampler:
    """Samples the RSS of this process (or of given pids) every ``interval`` s; ``peak`` is the max."""

    def __init__(self, pids: list[int] | None = None, interval: float = 0.02) -> None:
        self._procs = [psutil.Process(p) for p in pids] if pids else [psutil.Process()]
        self.interval = interval
        self.peaks = [0] * len(self._procs)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="imgtui-rss")

    @property
    def peak(self) -> int:
        return max(self.peaks) if self.peaks else 0

    def sample(self) -> None:
        for i, p in enumerate(self._procs):
            try:
                rss = _rss(p)
            except Exception:
                continue
            if rss > self.peaks[i]:
                self.peaks[i] = rss

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> RssSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


class _SelfRss:
    """One sampler thread per process for this process's RSS; ``window()`` measures one timed call."""

    def __init__(self, interval: float = 0.02) -> None:
        self._proc = psutil.Process()
        self.interval = interval
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._active = False
        self.peak = 0
        self._thread: threading.Thread | None = None

    def sample(self) -> None:
        try:
            rss = _rss(self._proc)
        except Exception:
            return
        if rss > self.peak:
            self.peak = rss

    def _loop(self) -> None:
        while True:
            self._wake.wait()
            with self._lock:
                if not self._active:
                    self._wake.clear()
                    continue
            self.sample()
            time.sleep(self.interval)

    def window(self) -> _RssWindow:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, daemon=True, name="imgtui-rss")
            self._thread.start()
        return _RssWindow(self)


class _RssWindow:
    def __init__(self, owner: _SelfRss) -> None:
        self.owner = owner
        self.peak = 0

    def __enter__(self) -> _RssWindow:
        o = self.owner
        with o._lock:
            o.peak = 0
            o.sample()
            o._active = True
            o._wake.set()
        return self

    def __exit__(self, *exc: Any) -> None:
        o = self.owner
        with o._lock:
            o._active = False
        o.sample()
        self.peak = o.peak


_SELF_RSS: _SelfRss | None = None


def rss_now() -> int:
    """This process's RSS after a garbage collection (the baseline of a step)."""
    gc.collect()
    try:
        return _rss(psutil.Process())
    except Exception:
        return 0


def self_rss() -> _RssWindow:
    """``with self_rss() as w: ...`` then ``w.peak``: the peak RSS of this process during the block."""
    global _SELF_RSS
    if _SELF_RSS is None:
        _SELF_RSS = _SelfRss()
    return _SELF_RSS.window()


def timed_call(fn: Callable[[], Any]) -> tuple[Any, float, int]:
    """``fn()`` after a garbage collection: its result, its wall time and the peak RSS meanwhile."""
    gc.collect()
    with self_rss() as s:
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
    return out, dt, s.peak


def drop_cache(paths: list[Path]) -> None:
    """Ask the kernel to forget the cached pages of ``paths`` (fsync + POSIX_FADV_DONTNEED)."""
    if not hasattr(os, "posix_fadvise"):
        raise ImgtuiError("cold-cache reads need posix_fadvise, which this platform lacks")
    for p in paths:
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue
        try:
            try:
                os.fsync(fd)
            except OSError:
                pass
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
