"""The benchmark engine: ``run_plan(plan, cancel)`` yields Started/Progress/Result/Error events and
always ends with ``Finished(results, cancelled)``.

Measurement discipline
- every method gets the same records: the first N records of the dataset, materialised once
  (fixed shapes are stacked into one array and the records' images are views of it);
- per count, the floor (``numpy``) is measured first, so every row gets ``ratio_to_floor``
  (median / floor median of the same experiment, count, cache and readers; for ``disk_usage``
  the ratio of bytes on disk);
- ``repeats`` timed trials (default 3 below 100,000 records, 1 from there), median and min,
  one untimed warm-up for small operations; each write trial gets a fresh temporary folder that
  is removed afterwards; the store of the last ``store_many`` trial is kept for the read
  experiments of the same backend/method/count and removed after them;
- reads are "warm" (page cache as the write left it); with ``plan.cold`` they are repeated
  "cold" after ``fsync`` + ``posix_fadvise(DONTNEED)`` on every file of the store;
- peak RSS is sampled every 20 ms during each timed call (children's RSS for concurrent readers).

The timed work runs in one worker thread; the generator drains its progress so a UI sees a
Progress event at least every batch of 256 records. Cancellation is checked between batches:
the worker stops, every temporary store is removed and ``Finished(cancelled=True)`` comes last.
One failing backend/method yields an Error event and an error row; the others continue.
"""

from __future__ import annotations

import gc
import math
import os
import queue
import shutil
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..backends import registry
from ..errors import CancelledError, ImgtuiError
from ..records import Record
from .methods import ARTICLE_BACKENDS, BATCH, Ctx, Data, Handle, Method, flatten_images, make_method
from .model import (
    EXPERIMENTS,
    METHODS,
    BenchPlan,
    Error,
    Event,
    Finished,
    Progress,
    Result,
    ResultRow,
    ResultTable,
    Started,
)

#: random access: records per batch (the data-loader pattern)
RANDOM_BATCH = 64
#: random access: at most this many batches per trial
MAX_RANDOM_BATCHES = 160
#: execution order inside one backend/method/count group: writes first, then reads
_ORDER = ("store_one", "store_many", "read_one", "read_many", "random_batches", "disk_usage", "concurrent_readers",
          "slice_read", "parallel_threads", "parallel_processes", "mutate", "space_at_sizes")
_READS = ("read_one", "read_many", "random_batches", "concurrent_readers", "slice_read", "parallel_threads",
          "parallel_processes")
_NEEDS_STORE = ("read_one", "read_many", "random_batches", "disk_usage", "concurrent_readers", "slice_read",
                "parallel_threads", "parallel_processes")
#: experiments with K readers (one step per reader count of the plan)
_PARALLEL = ("concurrent_readers", "parallel_threads", "parallel_processes")
#: the claims' experiments: imgtui's backends only (the article has no slice/mutation API);
#: slice_read and parallel_threads also get a numpy floor row
_CLAIMS_ONLY = ("slice_read", "parallel_threads", "parallel_processes", "mutate", "space_at_sizes")
_NO_FLOOR = ("parallel_processes", "mutate", "space_at_sizes")
#: slice_read: lengths of the contiguous slices read from the middle of the store
SLICE_LENGTHS = (100, 1000)
#: space_at_sizes: (label, size or (lo, hi) for variable, records, per-backend option variants)
SPACE_SIZES = (("32x32", 32, 1000), ("256x256", 256, 48), ("1024x1024", 1024, 4), ("variable 64-512", (64, 512), 48))
SPACE_OPTIONS = {
    "disk": ({},),
    "lmdb": ({"encoding": "raw"}, {"encoding": "png"}),
    "hdf5": ({"compression": "none"}, {"compression": "gzip"}),
}


class PlanError(ImgtuiError):
    """A benchmark plan that cannot run (bad backend, count, experiment, option...)."""


def one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    if isinstance(exc, ImgtuiError):
        return first or type(exc).__name__
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def default_repeats(count: int) -> int:
    return 3 if count < 100_000 else 1


def validate_plan(plan: BenchPlan) -> None:
    """Raise PlanError (one line) when the plan cannot run."""

    def bad(items, known, what):
        wrong = [x for x in items if x not in known]
        if wrong:
            raise PlanError(f"unknown {what} {', '.join(map(repr, wrong))} (choose from {', '.join(known)})")

    names = tuple(registry.BACKENDS)
    if not plan.backends and any(m != "floor" for m in plan.methods):
        raise PlanError(f"no backend chosen (choose from {', '.join(names)})")
    bad(plan.backends, names, "backend")
    for b in plan.backends:
        try:
            registry.get_backend(b)  # registered but its optional package is missing: say what to install
        except ImgtuiError as exc:
            raise PlanError(one_line(exc)) from None
    bad(plan.methods, METHODS, "method")
    bad(plan.experiments, EXPERIMENTS, "experiment")
    if not plan.methods:
        raise PlanError("no method chosen (choose from article, imgtui, floor)")
    if not plan.experiments:
        raise PlanError("no experiment chosen")
    if not plan.counts:
        raise PlanError("no record count chosen")
    for c in plan.counts:
        if not isinstance(c, (int, np.integer)) or isinstance(c, bool) or c < 1:
            raise PlanError(f"record counts must be whole numbers >= 1, got {c!r}")
    if plan.repeats is not None and (not isinstance(plan.repeats, int) or plan.repeats < 1):
        raise PlanError(f"repeats must be a whole number >= 1, got {plan.repeats!r}")
    if any(e in plan.experiments for e in _PARALLEL):
        if not plan.readers or any(not isinstance(k, int) or k < 1 for k in plan.readers):
            raise PlanError(f"reader counts must be whole numbers >= 1, got {plan.readers!r}")
    if plan.workdir is not None and not Path(plan.workdir).is_dir():
        raise PlanError(f"workdir {plan.workdir} is not an existing folder")
    for b, opts in (plan.backend_options or {}).items():
        if b not in names:
            raise PlanError(f"backend options given for unknown backend {b!r}")
        if "imgtui" in plan.methods and b in plan.backends:
            try:
                registry.get_backend(b).writer_cls.check_options(dict(opts))
            except ImgtuiError as exc:
                raise PlanError(one_line(exc)) from None
            except ImportError:
                pass


@dataclass
class Step:
    experiment: str
    backend: str
    method: str
    count: int
    readers: int | None = None

    @property
    def group(self) -> tuple[int, str, str]:
        return (self.count, self.backend, self.method)


def plan_steps(plan: BenchPlan) -> list[Step]:
    """The steps of a plan in execution order: per count, the floor first, then each method/backend."""
    exps = [e for e in _ORDER if e in plan.experiments]
    steps: list[Step] = []
    for count in plan.counts:
        combos: list[tuple[str, str]] = []
        if "floor" in plan.methods:
            combos.append(("numpy", "floor"))
            if any(e in exps for e in ("store_many", "read_many")):
                combos.append(("memcpy", "floor"))
        for m in ("article", "imgtui"):
            if m in plan.methods:  # the article has functions for its own three formats only
                combos.extend((b, m) for b in plan.backends if m != "article" or b in ARTICLE_BACKENDS)
        for b, m in combos:
            for e in exps:
                if b == "memcpy" and e not in ("store_many", "read_many"):
                    continue
                if e in _CLAIMS_ONLY and (m == "article" or (b == "numpy" and e in _NO_FLOOR)):
                    continue
                if e in _PARALLEL:
                    steps.extend(Step(e, b, m, count, k) for k in plan.readers)
                else:
                    steps.append(Step(e, b, m, count))
    return steps


# -- measurement helpers ------------------------------------------------------------------------
class RssSampler:
    """Samples the RSS of this process (or of given pids) every ``interval`` s; ``peak`` is the max."""

    def __init__(self, pids: list[int] | None = None, interval: float = 0.02) -> None:
        import psutil

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
                rss = p.memory_info().rss
            except Exception:
                continue
            if rss > self.peaks[i]:
                self.peaks[i] = rss

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> "RssSampler":
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
        import psutil

        self._proc = psutil.Process()
        self.interval = interval
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._active = False
        self.peak = 0
        self._thread: threading.Thread | None = None

    def sample(self) -> None:
        try:
            rss = self._proc.memory_info().rss
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

    def window(self) -> "_RssWindow":
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, daemon=True, name="imgtui-rss")
            self._thread.start()
        return _RssWindow(self)


class _RssWindow:
    def __init__(self, owner: _SelfRss) -> None:
        self.owner = owner
        self.peak = 0

    def __enter__(self) -> "_RssWindow":
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


def _rss_now() -> int:
    """This process's RSS after a garbage collection (the baseline of a step)."""
    import psutil

    gc.collect()
    try:
        return psutil.Process().memory_info().rss
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


def _path_size(path: Path) -> int:
    from ..backends.base import path_size

    return path_size(path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except OSError:
            pass


def _same_images(got: list, want: Data) -> bool:
    imgs = flatten_images(got)
    if want.stacked is not None and len(got) and all(isinstance(a, np.ndarray) and a.dtype != object for a in got):
        try:
            cat = np.concatenate([a.reshape((-1,) + want.stacked.shape[1:]) for a in got])
        except ValueError:
            return False
        return cat.shape == want.stacked.shape and cat.dtype == want.stacked.dtype and np.array_equal(cat, want.stacked)
    if len(imgs) != want.n:
        return False
    return all(
        a.shape == r.image.shape and a.dtype == r.image.dtype and np.array_equal(a, r.image)
        for a, r in zip(imgs, want.records)
    )


def _batch_equal(got: Any, data: Data, idx: np.ndarray) -> bool:
    imgs = list(got) if not isinstance(got, list) else got
    if len(imgs) != len(idx):
        return False
    return all(np.array_equal(np.asarray(a), data.records[int(i)].image) for a, i in zip(imgs, idx))


def _read_slice(m: Method, handle: Handle, start: int, length: int) -> Any:
    """Records ``start .. start+length-1`` in one call: ``get_images(range)`` for imgtui stores,
    a slice of the memory map for the numpy floor."""
    from .methods import FloorMethod, ImgtuiMethod

    if isinstance(m, ImgtuiMethod):
        from ..backends import open_store

        with open_store(handle.path, m.backend) as r:
            return r.get_images(range(start, start + length))
    if isinstance(m, FloorMethod):
        mm = np.load(handle.path, mmap_mode="r")
        try:
            if "layout" in handle.extra:
                return [np.array(FloorMethod._unflatten(mm, handle, i)) for i in range(start, start + length)]
            return np.array(mm[start : start + length])
        finally:
            del mm
    rr = m.open_random(handle)
    try:
        return rr.batch(list(range(start, start + length)))
    finally:
        rr.close()


# -- concurrent readers (runs in spawned processes) ---------------------------------------------
def _reader_process(method: str, backend: str, options: dict, path: str, count: int, extra: dict,
                    batches: list, repeats: int, barrier, stop, counter, k: int, out_q) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides about Ctrl-C
    try:
        m = make_method(method, backend, {backend: options} if options else None)
        handle = Handle(Path(path), count, extra)
        spans = []
        for _ in range(repeats):
            barrier.wait(timeout=300)
            t0 = time.monotonic()
            rr = m.open_random(handle)
            try:
                for idx in batches:
                    if stop.is_set():
                        out_q.put((k, "cancelled", None))
                        return
                    rr.batch(idx)
                    counter[k] += len(idx)
            finally:
                rr.close()
            spans.append((t0, time.monotonic()))
        out_q.put((k, "ok", spans))
    except BaseException as exc:  # reported to the parent as the row's error
        try:
            barrier.abort()
        except Exception:
            pass
        out_q.put((k, "error", one_line(exc)))


# -- the engine ------------------------------------------------------------------------------
class _Engine:
    def __init__(self, plan: BenchPlan, cancel: threading.Event) -> None:
        self.plan = plan
        self.cancel = cancel
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.steps = plan_steps(plan)
        self.step_no = 0
        self.base: Path | None = None
        self.dataset = None
        self.dataset_text = str(plan.dataset)
        self._all: Data | None = None
        self._data: dict[int, Data] = {}
        self.floor: dict[tuple, float] = {}
        self.stores: dict[tuple, Handle] = {}
        self.store_errors: dict[tuple, str] = {}
        self.methods: dict[tuple, Method] = {}
        self._procs: list = []

    # -- plumbing -----------------------------------------------------------------------------
    def cancelled(self) -> bool:
        return self.cancel.is_set() or self._stop.is_set()

    def repeats(self, count: int) -> int:
        return self.plan.repeats or default_repeats(count)

    def trial_dir(self) -> Path:
        assert self.base is not None
        return Path(tempfile.mkdtemp(prefix="t-", dir=self.base))

    def _work_loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            job()

    def call(self, fn: Callable[[Ctx], Any], total: int):
        """Run ``fn(ctx)`` in the worker thread; yield Progress while it runs; return its result."""
        q: queue.SimpleQueue = queue.SimpleQueue()
        done = [0]
        box: dict[str, Any] = {}

        def report(n: int) -> None:
            done[0] += n
            q.put(done[0])

        ctx = Ctx(self.cancelled, report)
        self._baseline_rss = _rss_now()

        def target() -> None:
            try:
                box["result"] = fn(ctx)
            except BaseException as exc:  # handed to the generator
                box["error"] = exc
            finally:
                q.put(None)

        if self._thread is None:
            self._jobs: queue.SimpleQueue = queue.SimpleQueue()
            self._thread = threading.Thread(target=self._work_loop, daemon=True, name="imgtui-bench")
            self._thread.start()
        self._jobs.put(target)
        finished = False
        while not finished:
            try:
                item = q.get(timeout=0.1)
            except queue.Empty:
                continue
            latest = item
            while latest is not None:  # coalesce what is already queued
                try:
                    nxt = q.get_nowait()
                except queue.Empty:
                    break
                latest = nxt
                if nxt is None:
                    break
            if latest is None:
                finished = True
                latest = done[0]
                if latest == 0:
                    break
            yield Progress(min(latest, total) if total else latest, total, self.step_no, len(self.steps))
        if "error" in box:
            raise box["error"]
        return box.get("result")

    # -- data -----------------------------------------------------------------------------
    def open_dataset(self) -> None:
        from ..datasets import open_dataset, parse_synthetic_spec

        spec = self.plan.dataset or "synthetic"
        extra: dict[str, Any] = {}
        if str(spec).startswith("synthetic") and "count" not in parse_synthetic_spec(str(spec)):
            extra["count"] = max(self.plan.counts)
        self.dataset = open_dataset(spec, **extra)
        try:
            self.dataset_text = self.dataset.describe()
        except Exception:
            pass

    def load(self):
        """Materialise the first max(counts) records once (generator; returns Data)."""
        if self._all is not None:
            return self._all
        if self.dataset is None:
            self.open_dataset()
        want = max(self.plan.counts)
        length = self.dataset.length
        total = min(want, length) if length is not None else want

        def work(ctx: Ctx) -> Data:
            from ..records import validate_record

            records: list[Record] = []
            stacked = None
            fixed = True
            for i, rec in enumerate(self.dataset):
                if i >= want:
                    break
                rec = validate_record(rec, i)
                img = rec.image
                if fixed:
                    if stacked is None:
                        stacked = np.empty((total,) + img.shape, img.dtype)
                    if img.shape == stacked.shape[1:] and img.dtype == stacked.dtype and i < total:
                        stacked[i] = img
                        rec = Record(stacked[i], rec.label, rec.metadata)
                    else:
                        fixed = False
                        stacked = None
                        records = [Record(r.image.copy(), r.label, r.metadata) for r in records]
                records.append(rec)
                if (i + 1) % BATCH == 0:
                    ctx.advance(BATCH)
            if stacked is not None and len(records) < stacked.shape[0]:
                stacked = stacked[: len(records)]
            return Data(records, stacked if fixed else None, sum(r.image.nbytes for r in records))

        self._all = yield from self.call(work, total)
        return self._all

    def data(self, count: int):
        if count not in self._data:
            full = yield from self.load()
            if full.n < count:
                raise ImgtuiError(f"the dataset has only {full.n:,} records; count {count:,} cannot run")
            self._data[count] = full.prefix(count)
        return self._data[count]

    def method(self, step: Step) -> Method:
        key = (step.backend, step.method)
        if key not in self.methods:
            self.methods[key] = make_method(step.method, step.backend, self.plan.backend_options)
        return self.methods[key]

    # -- rows -----------------------------------------------------------------------------
    def row(self, step: Step, m: Method | None, **kw: Any) -> ResultRow:
        return ResultRow(
            experiment=step.experiment, backend=step.backend, method=step.method, count=step.count,
            options=m.options_text() if m is not None else "", readers=step.readers, **kw,
        )

    def timed_row(self, step: Step, m: Method, times: list[float], peak: int, records: int,
                  cache: str, **kw: Any) -> ResultRow:
        med = statistics.median(times)
        return self.row(
            step, m, repeats=len(times), median_s=med, min_s=min(times),
            records_per_s=(records / med) if med > 0 else None, peak_rss_bytes=peak or None,
            rss_growth_bytes=max(0, peak - getattr(self, "_baseline_rss", peak)) if peak else None,
            cache=cache, **kw,
        )

    def finish_row(self, row: ResultRow) -> ResultRow:
        key = (row.experiment, row.count, row.cache, row.readers, row.detail)
        if row.error is not None:
            return row
        value = row.bytes_on_disk if row.experiment == "disk_usage" else row.median_s
        if row.method == "floor" and row.backend == "numpy":
            if value:
                self.floor[key] = value
            row.ratio_to_floor = 1.0 if value else None
        elif key in self.floor and value is not None:
            row.ratio_to_floor = value / self.floor[key]
        return row

    # -- stores -------------------------------------------------------------------------
    def store_for(self, step: Step, m: Method, data: Data):
        key = step.group
        if key in self.store_errors:
            raise ImgtuiError(self.store_errors[key])
        if key not in self.stores:
            folder = self.trial_dir()

            def build(ctx: Ctx) -> Handle:
                m.check_data(data)
                return m.store_many(folder, data, ctx)

            try:
                self.stores[key] = yield from self.call(build, data.n)
            except CancelledError:
                raise
            except Exception as exc:
                _remove(folder)
                self.store_errors[key] = f"could not build the store: {one_line(exc)}"
                raise ImgtuiError(self.store_errors[key]) from None
        return self.stores[key]

    def release(self, group: tuple) -> None:
        h = self.stores.pop(group, None)
        if h is not None and self.base is not None:
            p = h.path
            while p.parent != self.base and self.base in p.parents:
                p = p.parent
            _remove(p)

    def caches(self) -> list[str]:
        return ["warm", "cold"] if self.plan.cold else ["warm"]

    # -- experiments ------------------------------------------------------------------------
    def run_step(self, step: Step):
        data = yield from self.data(step.count)
        m = self.method(step)
        exp = step.experiment
        if step.backend == "memcpy":
            return (yield from self.exp_memcpy(step, m, data))
        m.check_data(data)
        if exp == "store_one":
            return (yield from self.exp_store_one(step, m, data))
        if exp == "store_many":
            return (yield from self.exp_store_many(step, m, data))
        if exp == "mutate":
            return (yield from self.exp_mutate(step, m, data))
        if exp == "space_at_sizes":
            return (yield from self.exp_space(step, m, data))
        handle = yield from self.store_for(step, m, data)
        if exp == "disk_usage":
            return [self.row(step, m, bytes_on_disk=_path_size(handle.path), raw_bytes=data.raw_bytes, cache="")]
        rows = []
        for cache in self.caches():
            try:
                if exp == "read_one":
                    rows.append((yield from self.exp_read_one(step, m, data, handle, cache)))
                elif exp == "read_many":
                    rows.append((yield from self.exp_read_many(step, m, data, handle, cache)))
                elif exp == "random_batches":
                    rows.append((yield from self.exp_random(step, m, data, handle, cache)))
                elif exp in ("concurrent_readers", "parallel_processes"):
                    rows.append((yield from self.exp_concurrent(step, m, data, handle, cache)))
                elif exp == "parallel_threads":
                    rows.append((yield from self.exp_threads(step, m, data, handle, cache)))
                elif exp == "slice_read":
                    rows.extend((yield from self.exp_slice(step, m, data, handle, cache)))
            except CancelledError:
                raise
            except Exception as exc:
                if cache == "warm":
                    raise
                rows.append(self.row(step, m, cache=cache, error=one_line(exc)))
        return rows

    def _trials(self, step: Step, small: bool) -> tuple[int, int]:
        reps = self.repeats(step.count)
        warm = 1 if small or step.count <= 1000 else 0
        return warm, reps

    def exp_store_one(self, step: Step, m: Method, data: Data):
        warm, reps = self._trials(step, True)
        rec = data.records[0]

        def work(ctx: Ctx):
            times, peak = [], 0
            for t in range(warm + reps):
                folder = self.trial_dir()
                try:
                    _, dt, trial_peak = timed_call(lambda: m.store_one(folder, rec))
                finally:
                    _remove(folder)
                if t >= warm:
                    times.append(dt)
                    peak = max(peak, trial_peak)
                ctx.advance(1)
            return times, peak

        times, peak = yield from self.call(work, warm + reps)
        return [self.timed_row(step, m, times, peak, 1, "")]

    def exp_store_many(self, step: Step, m: Method, data: Data):
        warm, reps = self._trials(step, False)
        keep = any(s.group == step.group and s.experiment in _NEEDS_STORE for s in self.steps)

        def work(ctx: Ctx):
            times, peak, nbytes, kept = [], 0, None, None
            for t in range(warm + reps):
                folder = self.trial_dir()
                try:
                    h, dt, trial_peak = timed_call(lambda: m.store_many(folder, data, ctx))
                    if t >= warm:
                        times.append(dt)
                        peak = max(peak, trial_peak)
                        nbytes = _path_size(h.path)
                    if keep and t == warm + reps - 1:
                        kept = h
                finally:
                    if kept is None:
                        _remove(folder)
            return times, peak, nbytes, kept

        times, peak, nbytes, kept = yield from self.call(work, (warm + reps) * data.n)
        if kept is not None:
            self.stores[step.group] = kept
        return [self.timed_row(step, m, times, peak, data.n, "", bytes_on_disk=nbytes, raw_bytes=data.raw_bytes)]

    def exp_memcpy(self, step: Step, m: Method, data: Data):
        warm, reps = self._trials(step, False)

        def work(ctx: Ctx):
            times, peak = [], 0
            for t in range(warm + reps):
                dt, trial_peak = timed_call(lambda: m.memcpy(data, ctx))[1:]  # the copy is dropped at once
                if t >= warm:
                    times.append(dt)
                    peak = max(peak, trial_peak)
            return times, peak

        times, peak = yield from self.call(work, (warm + reps) * data.n)
        return [self.timed_row(step, m, times, peak, data.n, "warm" if step.experiment == "read_many" else "",
                               raw_bytes=data.raw_bytes)]

    def _prepare_read(self, m: Method, handle: Handle, cache: str) -> None:
        if cache == "cold":
            drop_cache(m.disk_files(handle))
        elif not handle.extra.get("synced"):
            # pages just written are still dirty; reading them while the kernel writes them back
            # is up to 25x slower (a 307 MB np.load: 0.7 s, then 25 ms). Every method's reads start
            # from written-back pages, so the store written last is not favoured.
            os.sync()
            handle.extra["synced"] = True

    def exp_read_one(self, step: Step, m: Method, data: Data, handle: Handle, cache: str):
        warm, reps = self._trials(step, True)
        rng = np.random.default_rng(1000 + step.count)
        idx = [int(i) for i in rng.integers(0, data.n, warm + reps)]

        def work(ctx: Ctx):
            times, peak = [], 0
            for t, i in enumerate(idx):
                self._prepare_read(m, handle, cache)
                img, dt, trial_peak = timed_call(lambda: m.read_one(handle, i))
                if t == warm and not np.array_equal(np.asarray(img), data.records[i].image):
                    raise ImgtuiError(f"read_one: record {i} read back differs from the source")
                if t >= warm:
                    times.append(dt)
                    peak = max(peak, trial_peak)
                ctx.advance(1)
            return times, peak

        times, peak = yield from self.call(work, len(idx))
        return self.timed_row(step, m, times, peak, 1, cache)

    def exp_read_many(self, step: Step, m: Method, data: Data, handle: Handle, cache: str):
        warm, reps = self._trials(step, False)
        if cache == "warm":
            # always one untimed read first: the first big allocation of a process page-faults
            # (np.load of 307 MB: 0.7 s the first time, 25 ms after), whichever method comes first
            warm = 1

        def work(ctx: Ctx):
            times, peak = [], 0
            for t in range(warm + reps):
                self._prepare_read(m, handle, cache)
                (images, _labels), dt, trial_peak = timed_call(lambda: m.read_many(handle, ctx))
                if t == warm and not _same_images(images, data):
                    raise ImgtuiError("read_many: the records read back differ from the source")
                del images, _labels
                if t >= warm:
                    times.append(dt)
                    peak = max(peak, trial_peak)
            return times, peak

        times, peak = yield from self.call(work, (warm + reps) * data.n)
        return self.timed_row(step, m, times, peak, data.n, cache)

    def random_indices(self, count: int) -> list[np.ndarray]:
        nb = min(max(1, math.ceil(count / RANDOM_BATCH)), MAX_RANDOM_BATCHES)
        rng = np.random.default_rng(2000 + count)
        return [rng.integers(0, count, RANDOM_BATCH) for _ in range(nb)]

    def exp_random(self, step: Step, m: Method, data: Data, handle: Handle, cache: str):
        warm, reps = self._trials(step, False)
        batches = self.random_indices(data.n)
        per_trial = len(batches) * RANDOM_BATCH

        def work(ctx: Ctx):
            times, peak = [], 0
            for t in range(warm + reps):
                self._prepare_read(m, handle, cache)
                gc.collect()
                first = None
                with self_rss() as s:
                    t0 = time.perf_counter()
                    rr = m.open_random(handle)
                    try:
                        for j, b in enumerate(batches):
                            out = rr.batch(b)
                            if j == 0:
                                first = out
                            ctx.advance(len(b))
                    finally:
                        rr.close()
                    dt = time.perf_counter() - t0
                if t == warm and not _batch_equal(first, data, batches[0]):
                    raise ImgtuiError("random_batches: the records read back differ from the source")
                if t >= warm:
                    times.append(dt)
                    peak = max(peak, s.peak)
            return times, peak

        times, peak = yield from self.call(work, (warm + reps) * per_trial)
        return self.timed_row(step, m, times, peak, per_trial, cache)

    def exp_concurrent(self, step: Step, m: Method, data: Data, handle: Handle, cache: str):
        import multiprocessing as mp

        k = int(step.readers or 1)
        reps = self.repeats(step.count)
        batches = [b.tolist() for b in self.random_indices(data.n)]
        per_reader = len(batches) * RANDOM_BATCH
        options = dict((self.plan.backend_options or {}).get(step.backend, {})) if step.method == "imgtui" else {}
        ctxmp = mp.get_context("spawn")
        if cache == "cold":
            self._prepare_read(m, handle, cache)

        def work(ctx: Ctx):
            barrier = ctxmp.Barrier(k)
            stop = ctxmp.Event()
            counter = ctxmp.RawArray("q", k)
            out_q = ctxmp.Queue()
            procs = [
                ctxmp.Process(
                    target=_reader_process,
                    args=(step.method, step.backend, options, str(handle.path), handle.count, handle.extra,
                          batches, reps, barrier, stop, counter, i, out_q),
                    daemon=True,
                )
                for i in range(k)
            ]
            self._procs = procs
            results: dict[int, tuple] = {}
            try:
                for p in procs:
                    p.start()
                with RssSampler([p.pid for p in procs]) as s:
                    reported = 0
                    while len(results) < k:
                        if self.cancelled():
                            stop.set()
                            barrier.abort()
                            raise CancelledError("benchmark cancelled")
                        try:
                            i, status, payload = out_q.get(timeout=0.05)
                            results[i] = (status, payload)
                        except queue.Empty:
                            dead = [p for j, p in enumerate(procs) if j not in results and p.exitcode is not None]
                            if dead:
                                time.sleep(0.2)  # its message may still be in the pipe
                                while True:
                                    try:
                                        i, status, payload = out_q.get_nowait()
                                        results[i] = (status, payload)
                                    except queue.Empty:
                                        break
                                if any(j not in results and p.exitcode is not None for j, p in enumerate(procs)):
                                    raise ImgtuiError(f"a reader process died (exit code {dead[0].exitcode})")
                        now = sum(counter[:])
                        if now > reported:
                            ctx.advance(now - reported)
                            reported = now
                for p in procs:
                    p.join(timeout=10)
                errors = [payload for status, payload in results.values() if status == "error"]
                if errors:
                    raise ImgtuiError(f"reader process failed: {errors[0]}")
                durations = []
                for r in range(reps):
                    spans = [results[i][1][r] for i in range(k)]
                    durations.append(max(e for _s, e in spans) - min(st for st, _e in spans))
                return durations, max(s.peaks) if s.peaks else 0
            finally:
                stop.set()
                for p in procs:
                    if p.is_alive():
                        p.join(timeout=2)
                    if p.is_alive():
                        p.terminate()
                        p.join(timeout=2)
                out_q.close()
                self._procs = []

        times, peak = yield from self.call(work, reps * k * per_reader)
        return self.timed_row(step, m, times, peak, k * per_reader, cache)

    def exp_threads(self, step: Step, m: Method, data: Data, handle: Handle, cache: str):
        """K threads of this process, each with its own reader on the one store, reading the same
        random batches as concurrent readers do; aggregate records/s over the span of all K."""
        k = int(step.readers or 1)
        reps = self.repeats(step.count)
        batches = self.random_indices(data.n)
        per_reader = len(batches) * RANDOM_BATCH

        def work(ctx: Ctx):
            durations, peak = [], 0
            lock = threading.Lock()
            for _ in range(reps):
                self._prepare_read(m, handle, cache)
                barrier = threading.Barrier(k)
                spans: list[tuple[float, float]] = []
                errors: list[BaseException] = []

                def reader() -> None:
                    try:
                        barrier.wait(timeout=300)
                        t0 = time.perf_counter()
                        with lock:  # opening/closing shares per-process handles (LMDB env): one at a time
                            rr = m.open_random(handle)
                        try:
                            for b in batches:
                                if self.cancelled():
                                    return
                                rr.batch(b)
                                ctx._report and ctx._report(len(b))
                        finally:
                            with lock:
                                rr.close()
                        with lock:
                            spans.append((t0, time.perf_counter()))
                    except BaseException as exc:  # handed to the caller as the row's error
                        try:
                            barrier.abort()
                        except Exception:
                            pass
                        errors.append(exc)

                gc.collect()
                with self_rss() as s:
                    threads = [threading.Thread(target=reader, daemon=True, name=f"imgtui-reader-{i}") for i in range(k)]
                    for t in threads:
                        t.start()
                    for t in threads:
                        t.join()
                ctx.check()
                if errors:
                    raise errors[0]
                durations.append(max(e for _s, e in spans) - min(st for st, _e in spans))
                peak = max(peak, s.peak)
            return durations, peak

        times, peak = yield from self.call(work, reps * k * per_reader)
        return self.timed_row(step, m, times, peak, k * per_reader, cache)

    def exp_slice(self, step: Step, m: Method, data: Data, handle: Handle, cache: str):
        """Contiguous slices of 100 and 1,000 records (fewer when the store is smaller) from the
        middle of the store; one row per slice length, ``detail="slice=L"``."""
        warm, reps = self._trials(step, True)
        lengths = sorted({min(L, data.n) for L in SLICE_LENGTHS})

        def work(ctx: Ctx):
            out = []
            for L in lengths:
                start = (data.n - L) // 2
                times, peak = [], 0
                for t in range(warm + reps):
                    self._prepare_read(m, handle, cache)
                    got, dt, trial_peak = timed_call(lambda: _read_slice(m, handle, start, L))
                    if t == 0 and not _batch_equal(got, data, np.arange(start, start + L)):
                        raise ImgtuiError(f"slice_read: records {start}-{start + L - 1} read back differ from the source")
                    del got
                    if t >= warm:
                        times.append(dt)
                        peak = max(peak, trial_peak)
                    ctx.advance(L)
                out.append((L, start, times, peak))
            return out

        measured = yield from self.call(work, (warm + reps) * sum(lengths))
        return [
            self.timed_row(step, m, times, peak, L, cache, detail=f"slice={L} start={start}")
            for L, start, times, peak in measured
        ]

    def exp_mutate(self, step: Step, m: Method, data: Data):
        """A fresh store of the N records, then append 10%, overwrite 1%, delete 1% (at least one
        record each) through ``imgtui.append/overwrite/delete``; verify after every change."""
        try:
            import imgtui

            ops = (imgtui.append, imgtui.overwrite, imgtui.delete)  # type: ignore[attr-defined]
        except (ImportError, AttributeError):
            raise ImgtuiError("mutate: this imgtui has no append/overwrite/delete (imgtui.backends.mutate)") from None
        from ..backends import open_store

        n = data.n
        n_append = max(1, n // 10)
        n_change = max(1, n // 100)
        rng = np.random.default_rng(3000 + n)

        def work(ctx: Ctx):
            folder = self.trial_dir()
            try:
                h = m.store_many(folder, data, ctx)
                results = []
                size = n
                plan = (
                    ("append", n_append, lambda: ops[0](h.path, [data.records[i % n] for i in range(n_append)])),
                    ("overwrite", n_change, lambda: ops[1](h.path, {int(i): data.records[(int(i) + 1) % n]
                                                                   for i in rng.choice(size, n_change, replace=False)})),
                    ("delete", n_change, lambda: ops[2](h.path, sorted(int(i) for i in rng.choice(size, n_change, replace=False)))),
                )
                for op, k, call in plan:
                    ctx.check()
                    report, dt, trial_peak = timed_call(call)
                    report = report or {}
                    size = size + k if op == "append" else size - k if op == "delete" else size
                    with open_store(h.path) as r:
                        v = r.verify()
                        raw = r.info().get("raw_bytes")
                        valid = v.ok and len(r) == size
                    after = report.get("bytes_after")
                    results.append((op, k, report, float(report.get("seconds") or dt), trial_peak, valid,
                                    v.summary() if not v.ok else f"{len(r):,} records", raw,
                                    int(after) if after is not None else _path_size(h.path)))
                    ctx.advance(k)
                return results
            finally:
                _remove(folder)

        results = yield from self.call(work, n_append + 2 * n_change + n)
        rows = []
        for op, k, report, secs, peak, valid, vsum, raw, after in results:
            in_place = report.get("in_place")
            flag = "yes" if in_place else "no" if in_place is not None else "?"
            how = " ".join(str(report.get("how") or "").split())
            detail = f"op={op} n={k} in_place={flag} valid={'yes' if valid else 'no'} | {how}".rstrip(" |")
            if not valid:
                detail += f" (verify: {vsum})"
            rows.append(self.row(
                step, m, repeats=1, median_s=secs, min_s=secs, records_per_s=(k / secs) if secs > 0 else None,
                bytes_on_disk=after, raw_bytes=raw, peak_rss_bytes=peak or None, cache="",
                detail=detail,
            ))
        return rows

    def exp_space(self, step: Step, m: Method, data: Data):
        """Bytes on disk vs raw pixel bytes for synthetic images at several sizes (the channels and
        bit depth of the dataset's first record), per backend option variant; one row each."""
        from ..backends import open_writer
        from ..datasets.synthetic import SyntheticDataset
        from .methods import ImgtuiMethod

        first = data.records[0].image
        channels = 1 if first.ndim == 2 else int(first.shape[2])
        bits = 16 if first.dtype == np.uint16 else 8
        variants = SPACE_OPTIONS.get(step.backend, ({},))
        if step.method == "imgtui" and (self.plan.backend_options or {}).get(step.backend):
            variants = (dict(self.plan.backend_options[step.backend]),) + tuple(variants)
        total = sum(min(cnt, step.count) if label == "32x32" else cnt for label, _s, cnt in SPACE_SIZES) * len(variants)

        def work(ctx: Ctx):
            out = []
            for label, size, cnt in SPACE_SIZES:
                if label == "32x32":
                    cnt = min(cnt, step.count)
                kw = {"variable": size} if isinstance(size, tuple) else {"size": size}
                ds = SyntheticDataset(count=cnt, channels=channels, bits=bits, seed=7, **kw)
                recs = [ds.record(i) for i in range(cnt)]
                raw = sum(r.image.nbytes for r in recs)
                seen = set()
                for opts in variants:
                    mm = ImgtuiMethod(step.backend, opts)
                    text = mm.options_text()
                    if text in seen:
                        continue
                    seen.add(text)
                    ctx.check()
                    folder = self.trial_dir()
                    try:
                        path = mm._path(folder, "store")
                        t0 = time.perf_counter()
                        with open_writer(path, step.backend, expected_count=cnt, **opts) as w:
                            w.write_many(recs)
                        dt = time.perf_counter() - t0
                        out.append((label, cnt, text, _path_size(path), raw, dt))
                    finally:
                        _remove(folder)
                    ctx.advance(cnt)
            return out

        measured = yield from self.call(work, total)
        rows = []
        for label, cnt, text, nbytes, raw, dt in measured:
            row = self.row(step, m, repeats=1, median_s=dt, min_s=dt, records_per_s=cnt / dt if dt > 0 else None,
                           bytes_on_disk=nbytes, raw_bytes=raw, cache="", detail=f"size={label.replace(' ', '_')} n={cnt}")
            row.options = text
            rows.append(row)
        return rows

    # -- the run ---------------------------------------------------------------------------
    def error_rows(self, step: Step, message: str) -> list[ResultRow]:
        m = self.methods.get((step.backend, step.method))
        cache = "" if step.experiment in ("store_one", "store_many", "disk_usage") else "warm"
        return [self.row(step, m, cache=cache, error=message)]

    def run(self) -> Iterator[Event]:
        from .machine import machine_info

        table = ResultTable(plan=self.plan.to_dict(), dataset=self.dataset_text)
        cancelled = False
        last_of_group = {s.group: i for i, s in enumerate(self.steps)}
        try:
            self.base = Path(tempfile.mkdtemp(prefix="imgtui-bench-", dir=self.plan.workdir))
            for i, step in enumerate(self.steps):
                if self.cancelled():
                    cancelled = True
                    break
                self.step_no = i + 1
                yield Started(step.experiment, step.backend, step.method, step.count, i + 1, len(self.steps))
                try:
                    rows = yield from self.run_step(step)
                except CancelledError:
                    cancelled = True
                    break
                except Exception as exc:
                    if os.environ.get("IMGTUI_DEBUG"):
                        import traceback

                        traceback.print_exc()
                    rows = self.error_rows(step, one_line(exc))
                for row in rows:
                    self.finish_row(row)
                    table.add(row)
                    if row.error is not None:
                        yield Error(step.experiment, step.backend, step.method, step.count, row.error)
                    yield Result(row)
                if last_of_group[step.group] == i:
                    self.release(step.group)
                    if step.count != self.steps[-1].count and all(s.count != step.count for s in self.steps[i + 1 :]):
                        self._data.pop(step.count, None)
        finally:
            self._stop.set()
            if self._thread is not None:
                self._jobs.put(None)
                self._thread.join()
                self._thread = None
            for p in self._procs:
                if p.is_alive():
                    p.terminate()
            self.stores.clear()
            if self.base is not None:
                shutil.rmtree(self.base, ignore_errors=True)
        table.dataset = self.dataset_text
        try:
            table.machine = machine_info(self.plan.workdir or tempfile.gettempdir())
        except Exception as exc:  # machine info is a nicety; never lose the results for it
            table.machine = {"error": one_line(exc)}
        yield Finished(table, cancelled)


def run_plan(plan: BenchPlan, cancel: threading.Event | None = None) -> Iterator[Event]:
    """Validate ``plan`` (PlanError, one line) and return the event generator that runs it."""
    validate_plan(plan)
    engine = _Engine(plan, cancel if cancel is not None else threading.Event())
    engine.open_dataset()  # a bad dataset spec fails here, before anything runs
    return engine.run()


def run_to_table(plan: BenchPlan, cancel: threading.Event | None = None) -> ResultTable:
    """Run a plan to its end and return the ResultTable (for scripts and tests)."""
    table = ResultTable()
    for ev in run_plan(plan, cancel):
        if isinstance(ev, Finished):
            table = ev.results
    return table
