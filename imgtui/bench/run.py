"""The benchmark run loop: ``run_plan(plan, cancel)`` yields Started/Progress/Result/Error events and
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

The plan is checked and cut into steps by ``plan.py``; each step's experiment comes from the
registry in ``experiments.py``; timing and memory helpers are in ``measure.py``. A UI runs this
loop in a child process through ``runner.py``.
"""

from __future__ import annotations

import itertools
import os
import queue
import shutil
import statistics
import tempfile
import threading
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..datasets import open_dataset, parse_synthetic_spec
from ..errors import CancelledError, ImgtuiError, one_line
from ..records import Record, validate_record
from .experiments import EXPERIMENT, exp_memcpy
from .fmt import fmt_bytes
from .machine import cpu_snapshot, load_now, load_record, machine_info, others_share
from .measure import remove_path, rss_now, set_rss_kind
from .methods import BATCH, Ctx, Data, Handle, Method, RecordTable, make_method
from .model import PEER_METHOD, BenchPlan, Error, Event, Finished, Progress, Result, ResultRow, ResultTable, Started
from .plan import Step, default_repeats, plan_steps, validate_plan


#: above this many bytes of pixels (or IMGTUI_SPILL_BYTES), the records go to a file (Run._spill)
SPILL_BYTES = 2 << 30


def spill_bytes() -> int:
    try:
        return int(os.environ.get("IMGTUI_SPILL_BYTES", SPILL_BYTES))
    except ValueError:
        return SPILL_BYTES


class Run:
    """One run of a plan (``run_plan`` makes it; experiments get it as ``run``)."""


    def __init__(self, plan: BenchPlan, cancel: threading.Event) -> None:
        self.plan = plan
        self.cancel = cancel
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.steps = plan_steps(plan)
        #: one line each: peers left out (package missing), what a peer cannot do
        self.notes: list[str] = []
        #: peer groups whose store was read back and compared bit-exact
        self.verified: set[tuple] = set()
        self._skip_missing_peers()
        self.step_no = 0
        self.base: Path | None = None
        self.dataset = None
        self.dataset_text = str(plan.dataset)
        #: files of the dataset left out (plan.on_error == "skip"), one line each
        self.skipped: list[str] = []
        self._all: Data | None = None
        self._data: dict[int, Data] = {}
        self.floor: dict[tuple, float] = {}
        self.stores: dict[tuple, Handle] = {}
        self.store_errors: dict[tuple, str] = {}
        self.methods: dict[tuple, Method] = {}
        self.procs: list = []

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def _skip_missing_peers(self) -> None:
        """A peer whose package is missing leaves the plan with one note, never a traceback."""
        names = list(dict.fromkeys(s.backend for s in self.steps if s.method == PEER_METHOD))
        if not names:
            return
        from .peers import missing

        gone = set()
        for name in names:
            why = missing(name)
            if why is not None:
                gone.add(name)
                self.note(f"peer {name}: {why}")
        if gone:
            self.steps = [s for s in self.steps if not (s.method == PEER_METHOD and s.backend in gone)]

    # -- plumbing -----------------------------------------------------------------------------
    def cancelled(self) -> bool:
        return self.cancel.is_set() or self._stop.is_set()

    def repeats(self, count: int) -> int:
        """Timed trials per step: one in an interleaved plan (its rounds are the repeats)."""
        if getattr(self.plan, "interleave", False):
            return 1
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
        self._baseline_rss = rss_now()

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
        spec = self.plan.dataset or "synthetic"
        extra: dict[str, Any] = {}
        if str(spec).startswith("synthetic") and "count" not in parse_synthetic_spec(str(spec)):
            extra["count"] = max(self.plan.counts)
        if getattr(self.plan, "on_error", "stop") == "skip":
            extra.update(on_error="skip", warn=self.skipped.append)
        self.dataset = open_dataset(spec, **extra)
        try:
            self.dataset_text = self.dataset.describe()
        except Exception:
            pass
        if getattr(self.plan, "on_error", "stop") == "skip":
            self.dataset_text += " (unreadable files skipped)"

    def load(self):
        """Materialise the first max(counts) records once (generator; returns Data)."""
        if self._all is not None:
            return self._all
        if self.dataset is None:
            self.open_dataset()
        want = max(self.plan.counts)
        length = self.dataset.length
        cycle = bool(getattr(self.plan, "cycle", False))
        total = min(want, length) if length is not None and not cycle else want

        def work(ctx: Ctx) -> Data:
            records: list[Record] = []
            stacked = None
            fixed = True
            it = iter(self.dataset)
            first = next(it, None)
            if first is not None and validate_record(first, 0).image.nbytes * total > spill_bytes():
                return self._spill(itertools.chain([first], it), want, cycle, ctx)
            for i, rec in enumerate(itertools.chain([first] if first is not None else [], it)):
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
            have = len(records)
            if cycle and 0 < have < want:  # repeat the records up to the largest count
                if stacked is not None and fixed:
                    for i in range(have, want):
                        stacked[i] = stacked[i % have]
                        src = records[i % have]
                        records.append(Record(stacked[i], src.label, src.metadata))
                else:
                    records.extend(records[i % have] for i in range(have, want))
                ctx.advance(want - have)
            if stacked is not None and len(records) < stacked.shape[0]:
                stacked = stacked[: len(records)]
            return Data(records, stacked if fixed else None, sum(r.image.nbytes for r in records))

        self._all = yield from self.call(work, total)
        return self._all

    def _spill(self, records: Iterator, want: int, cycle: bool, ctx: Ctx) -> Data:
        """The records' pixels written to one file in the run folder as they come, mapped back
        read-only: memory holds the labels and metadata, not the images (a million 32x32x3 records
        are 3.1 GB). Repeated records (``cycle``) share their bytes, except one-shape records,
        which are copied so that the file stays one (n, ...) array. Reads of spilled records are
        streamed (``methods.Sink``) and memory is measured without mapped files."""
        assert self.base is not None
        path = self.base / "records.bin"
        starts: list[int] = []
        codes: list[int] = []
        shapes: dict[tuple, int] = {}
        labels: list = []
        metadata: list = []
        pos = 0
        with open(path, "wb") as fh:
            for i, rec in enumerate(records):
                if i >= want:
                    break
                rec = validate_record(rec, i)
                img = np.ascontiguousarray(rec.image)
                codes.append(shapes.setdefault((img.shape, img.dtype.str), len(shapes)))
                starts.append(pos)
                fh.write(memoryview(img.reshape(-1)).cast("B"))
                pos += img.nbytes
                labels.append(rec.label)
                metadata.append(rec.metadata)
                if (i + 1) % BATCH == 0:
                    ctx.advance(BATCH)
            have = len(starts)
            if cycle and 0 < have < want:  # repeat the records up to the largest count
                one_shape = len(shapes) == 1
                size = pos // have if one_shape else 0
                for i in range(have, want):
                    j = i % have
                    starts.append(pos + (i - have) * size if one_shape else starts[j])
                    codes.append(codes[j])
                    labels.append(labels[j])
                    metadata.append(metadata[j])
                if one_shape:  # copied, so that the file stays one (n, ...) array
                    fh.flush()
                    with open(path, "rb") as src:
                        left, at = (want - have) * size, 0
                        while left:
                            k = min(left, 8 << 20, pos - at)
                            src.seek(at)
                            fh.write(src.read(k))
                            left, at = left - k, (at + k) % pos
                    pos += (want - have) * size
                ctx.advance(want - have)
            fh.flush()
            os.fsync(fh.fileno())  # written back now, not while a method's writes are timed
        flat = np.memmap(path, np.uint8, mode="r") if pos else np.zeros(0, np.uint8)
        table = RecordTable(flat, np.asarray(starts, np.int64), np.asarray(codes, np.uint32),
                            [(shape, np.dtype(dt)) for (shape, dt), _ in sorted(shapes.items(), key=lambda kv: kv[1])],
                            labels, metadata)
        set_rss_kind("anon")  # the mapped records must not count as each method's memory
        self.note(f"the {len(table):,} records ({fmt_bytes(pos)} of pixels) were kept in a file, not in memory: "
                  "read_many was streamed (each batch checked or counted, then dropped) and memory figures "
                  "count anonymous memory only (not mapped files)")
        return Data(table, table.stacked(), table.raw_bytes(), spilled=True)

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
            step, m, repeats=len(times), median_s=med, min_s=min(times), max_s=max(times), times=list(times),
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
                remove_path(folder)
                self.store_errors[key] = f"could not build the store: {one_line(exc)}"
                raise ImgtuiError(self.store_errors[key]) from None
        return self.stores[key]

    def verify_peer(self, step: Step, m: Method, data: Data):
        """Once per peer and count: build its store (kept for the reads that follow) and read every
        record back, bit-exact, before any of its figures counts."""
        if step.group in self.verified:
            return
        handle = yield from self.store_for(step, m, data)
        try:
            yield from self.call(lambda ctx: m.verify(handle, data, ctx), data.n)  # type: ignore[attr-defined]
        except CancelledError:
            raise
        except Exception as exc:
            self.store_errors[step.group] = f"read-back check failed: {one_line(exc)}"
            raise ImgtuiError(self.store_errors[step.group]) from None
        self.verified.add(step.group)

    def release(self, group: tuple) -> None:
        h = self.stores.pop(group, None)
        if h is not None and self.base is not None:
            p = h.path
            while p.parent != self.base and self.base in p.parents:
                p = p.parent
            remove_path(p)

    def caches(self) -> list[str]:
        return ["warm", "cold"] if self.plan.cold else ["warm"]

    # -- one step -------------------------------------------------------------------------
    def run_step(self, step: Step):
        """Measure one step with its experiment of the registry (generator; returns the rows)."""
        data = yield from self.data(step.count)
        m = self.method(step)
        if step.backend == "memcpy":
            return (yield from exp_memcpy(self, step, m, data))
        if step.method == PEER_METHOD:
            why = m.cannot(step.experiment, data)  # type: ignore[attr-defined]
            if why:  # a note instead of a figure
                what = f"{step.experiment}: " if step.experiment in getattr(m, "cannot_do", {}) else ""
                self.note(f"peer {step.backend}: {what}{why}")
                return []
            if step.experiment in getattr(m, "how", {}):
                self.note(f"peer {step.backend}: {step.experiment}: {m.how[step.experiment]}")  # type: ignore[attr-defined]
            yield from self.verify_peer(step, m, data)
        m.check_data(data)
        exp = EXPERIMENT[step.experiment]
        if exp.kind == "write":
            return (yield from exp.measure(self, step, m, data))
        handle = yield from self.store_for(step, m, data)
        if exp.kind == "store":
            return (yield from exp.measure(self, step, m, data, handle))
        rows = []
        for cache in self.caches():
            try:
                rows.extend((yield from exp.measure(self, step, m, data, handle, cache)))
            except CancelledError:
                raise
            except Exception as exc:
                if cache == "warm":
                    raise
                rows.append(self.row(step, m, cache=cache, error=one_line(exc)))
        return rows

    # -- the run ---------------------------------------------------------------------------
    def error_rows(self, step: Step, message: str) -> list[ResultRow]:
        m = self.methods.get((step.backend, step.method))
        cache = "warm" if EXPERIMENT[step.experiment].kind == "read" else ""
        return [self.row(step, m, cache=cache, error=message)]

    def _emit(self, table: ResultTable, step: Step, rows: list[ResultRow]) -> Iterator[Event]:
        for row in rows:
            self.finish_row(row)
            table.add(row)
            if row.error is not None:
                yield Error(row.experiment, row.backend, row.method, row.count, row.error)
            yield Result(row)

    def _flush(self, table: ResultTable, pending: dict) -> Iterator[Event]:
        """An interleaved block done: one row per key, combined over its rounds, floor rows first
        (the others' ``ratio_to_floor`` divide by the floor's combined median)."""
        combined = [(step, combine_rounds(rows)) for step, rows in pending.values()]
        pending.clear()
        combined.sort(key=lambda sr: 0 if sr[1].method == "floor" and sr[1].backend == "numpy" else 1)
        for step, row in combined:
            yield from self._emit(table, step, [row])

    def run(self) -> Iterator[Event]:
        table = ResultTable(plan=self.plan.to_dict(), dataset=self.dataset_text)
        cancelled = False
        interleave = bool(getattr(self.plan, "interleave", False))
        last_of_group = {s.group: i for i, s in enumerate(self.steps)}
        # a kept store is removed after the last step that reads it (an interleaved plan keeps
        # every backend's store through the read experiments, not through mutate/space)
        last_store_use: dict[tuple, int] = {}
        for i, s in enumerate(self.steps):
            if EXPERIMENT[s.experiment].needs_store or s.experiment == "store_many":
                last_store_use[s.group] = i
        rounds = {s.block: s.round + 1 for s in self.steps}
        pending: dict[tuple, tuple[Step, list[ResultRow]]] = {}
        load_start, cpu_start = load_now(), cpu_snapshot()
        try:
            self.base = Path(tempfile.mkdtemp(prefix="imgtui-bench-", dir=self.plan.workdir))
            for i, step in enumerate(self.steps):
                if self.cancelled():
                    cancelled = True
                    break
                self.step_no = i + 1
                yield Started(step.experiment, step.backend, step.method, step.count, i + 1, len(self.steps),
                              step.round, rounds.get(step.block, 1) if interleave else 1)
                try:
                    rows = yield from self.run_step(step)
                except CancelledError:
                    cancelled = True
                    break
                except Exception as exc:
                    if os.environ.get("IMGTUI_DEBUG"):
                        traceback.print_exc()
                    rows = self.error_rows(step, one_line(exc))
                if interleave:
                    for j, row in enumerate(rows):
                        key = (step.count, step.experiment, step.backend, step.method, step.readers, j)
                        pending.setdefault(key, (step, []))[1].append(row)
                    if i + 1 == len(self.steps) or self.steps[i + 1].block != step.block:
                        yield from self._flush(table, pending)
                else:
                    yield from self._emit(table, step, rows)
                if last_store_use.get(step.group) == i:
                    self.release(step.group)
                if last_of_group[step.group] == i:
                    self.release(step.group)
                    if step.count != self.steps[-1].count and all(s.count != step.count for s in self.steps[i + 1 :]):
                        self._data.pop(step.count, None)
            if pending:  # cancelled within a block: what was measured still counts
                yield from self._flush(table, pending)
        finally:
            self._stop.set()
            if self._thread is not None:
                self._jobs.put(None)
                self._thread.join()
                self._thread = None
            for p in self.procs:
                if p.is_alive():
                    p.terminate()
            self.stores.clear()
            self._all = None  # a spilled run maps a file in the run folder
            self._data.clear()
            set_rss_kind("rss")
            if self.base is not None:
                shutil.rmtree(self.base, ignore_errors=True)
        table.dataset = self.dataset_text
        table.notes.extend(n for n in self.notes if n not in table.notes)
        if not cancelled:  # (it takes a second or two; a cancel should not wait for it)
            try:
                table.machine = machine_info(self.plan.workdir or tempfile.gettempdir())
            except Exception as exc:  # machine info is a nicety; never lose the results for it
                table.machine = {"error": one_line(exc)}
        table.machine.update(load_record(load_start, load_now(), others_share(cpu_start, cpu_snapshot())))
        yield Finished(table, cancelled)


def combine_rounds(rows: list[ResultRow]) -> ResultRow:
    """One row from the rounds of an interleaved plan (one trial each, same key): median of the
    rounds' times, min and max beside it, every trial's time in ``times``, records/s at the median; bytes from the last round;
    the first error (if any round failed) decides the row."""
    from dataclasses import replace

    errors = [r for r in rows if r.error is not None]
    if errors:
        return replace(errors[0], repeats=len(rows) - len(errors))
    last = rows[-1]
    timed = [r for r in rows if r.median_s is not None]
    if not timed:
        return replace(last)
    med = statistics.median(r.median_s for r in timed)  # type: ignore[misc]
    records = next((r.records for r in timed if r.records), None)
    trials = [t for r in timed for t in (r.times or [r.median_s])]
    peaks = [r.peak_rss_bytes for r in rows if r.peak_rss_bytes]
    growth = [r.rss_growth_bytes for r in rows if r.rss_growth_bytes is not None]
    return replace(
        last, repeats=sum(max(1, r.repeats) for r in timed), median_s=med,
        min_s=min(r.min_s if r.min_s is not None else r.median_s for r in timed),  # type: ignore[type-var]
        max_s=max(r.max_s if r.max_s is not None else r.median_s for r in timed),  # type: ignore[type-var]
        records_per_s=(records / med) if records and med > 0 else last.records_per_s, times=trials,
        peak_rss_bytes=max(peaks) if peaks else None, rss_growth_bytes=max(growth) if growth else None,
    )


def run_plan(plan: BenchPlan, cancel: threading.Event | None = None) -> Iterator[Event]:
    """Validate ``plan`` (PlanError, one line) and return the event generator that runs it."""
    validate_plan(plan)
    engine = Run(plan, cancel if cancel is not None else threading.Event())
    engine.open_dataset()  # a bad dataset spec fails here, before anything runs
    return engine.run()


def run_to_table(plan: BenchPlan, cancel: threading.Event | None = None) -> ResultTable:
    """Run a plan to its end and return the ResultTable (for scripts and tests)."""
    table = ResultTable()
    for ev in run_plan(plan, cancel):
        if isinstance(ev, Finished):
            table = ev.results
    return table
