"""The experiment registry: every experiment is registered once, by name, with what the plan and
the run loop need to know about it (``Experiment``), next to the function that measures it.

An experiment function is a generator (it yields the engine's Progress events through
``run.call``) that returns its ResultRows. Its arguments depend on ``kind``:

- ``"write"``: ``(run, step, method, data)``; it builds and removes its own stores;
- ``"store"``: ``(run, step, method, data, handle)``: one figure of the store kept for the
  backend/method/count (built by ``store_many``, or once for the group);
- ``"read"``: ``(run, step, method, data, handle, cache)``: reads the kept store, once per cache
  state of the plan (warm, and cold with ``plan.cold``).

``run`` is the running engine (``imgtui.bench.run.Run``): ``call`` runs timed work in its worker
thread, ``trial_dir`` gives a fresh temporary folder, ``row``/``timed_row`` build the rows.
"""

from __future__ import annotations

import functools
import gc
import math
import multiprocessing as mp
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

import numpy as np

from ..backends import open_store, open_writer
from ..backends.mutate import append as mutate_append, delete as mutate_delete, overwrite as mutate_overwrite
from ..datasets.synthetic import SyntheticDataset
from ..errors import CancelledError, ImgtuiError, one_line
from ..records import same_pixels
from .measure import RssSampler, drop_cache, path_size, remove_path, self_rss, timed_call
from .methods import Ctx, Data, FloorMethod, Handle, ImgtuiMethod, Method, Sink, flatten_images, make_method

if TYPE_CHECKING:
    from .plan import Step
    from .run import Run

#: random access: records per batch (the data-loader pattern)
RANDOM_BATCH = 64
#: random access: at most this many batches per trial
MAX_RANDOM_BATCHES = 160
#: slice_read: lengths of the contiguous slices read from the middle of the store
SLICE_LENGTHS = (100, 1000)
#: space_at_sizes: (label, size or (lo, hi) for variable, records, per-backend option variants)
SPACE_SIZES = (("32x32", 32, 1000), ("256x256", 256, 48), ("1024x1024", 1024, 4), ("variable 64-512", (64, 512), 48))
SPACE_OPTIONS = {
    "disk": ({},),
    "lmdb": ({"encoding": "raw"}, {"encoding": "png"}),
    "hdf5": ({"compression": "none"}, {"compression": "gzip"}),
}


@dataclass(frozen=True)
class Experiment:
    """One experiment of the registry."""

    name: str
    #: one line for help texts
    help: str
    #: "write" | "store" | "read" (see the module docstring)
    kind: str
    #: position in a backend/method/count group when it runs: writes first, then reads
    run_order: int
    measure: Callable[..., Any]
    #: in the default plan
    default: bool = False
    #: one step per reader count of the plan
    parallel: bool = False
    #: measured for the article's functions too (False: imgtui's backends only, the claims' experiments)
    article: bool = True
    #: gets a numpy floor row
    floor: bool = True
    #: gets a memcpy floor row (the memory-bandwidth ceiling)
    memcpy: bool = False
    #: its rows carry bytes on disk
    sized: bool = False
    #: its figure does not vary between trials (bytes): an interleaved plan measures it once
    once: bool = False
    #: offered in the app's list of experiments (False: a comparison of the claims' own, still
    #: named with ``imgtui bench --experiments``)
    listed: bool = True

    @property
    def needs_store(self) -> bool:
        return self.kind in ("store", "read")


def run_order(names: Iterable[str]) -> list[str]:
    """``names`` in the order they run inside one backend/method/count group."""
    return sorted(names, key=lambda n: EXPERIMENT[n].run_order)


# -- checks of what was read back (bit-exact: a NaN equals the same NaN, -0.0 differs from 0.0) ----
def same_images(got: list, want: Data) -> bool:
    if isinstance(got, Sink):  # a streamed read compared each batch as it came
        return got.complete()
    imgs = flatten_images(got)
    if want.stacked is not None and len(got) and all(isinstance(a, np.ndarray) and a.dtype != object for a in got):
        try:
            cat = np.concatenate([a.reshape((-1,) + want.stacked.shape[1:]) for a in got])
        except ValueError:
            return False
        return same_pixels(cat, want.stacked)
    if len(imgs) != want.n:
        return False
    return all(isinstance(a, np.ndarray) and same_pixels(a, r.image) for a, r in zip(imgs, want.records))


def batch_equal(got: Any, data: Data, idx: np.ndarray) -> bool:
    imgs = list(got) if not isinstance(got, list) else got
    if len(imgs) != len(idx):
        return False
    return all(same_pixels(np.asarray(a), data.records[int(i)].image) for a, i in zip(imgs, idx))


def read_slice(m: Method, handle: Handle, start: int, length: int) -> Any:
    """Records ``start .. start+length-1`` in one call: ``get_images(range)`` for imgtui stores,
    a slice of the memory map for the numpy floor."""
    if isinstance(m, ImgtuiMethod):
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


def trials(run: Run, step: Step, small: bool) -> tuple[int, int]:
    reps = run.repeats(step.count)
    warm = 1 if small or step.count <= 1000 else 0
    if step.round > 0:  # an interleaved plan warms up in its first round only
        warm = 0
    return warm, reps


def exp_store_one(run: Run, step: Step, m: Method, data: Data):
    warm, reps = trials(run, step, True)
    rec = data.records[0]

    def work(ctx: Ctx):
        times, peak = [], 0
        for t in range(warm + reps):
            folder = run.trial_dir()
            try:
                _, dt, trial_peak = timed_call(lambda: m.store_one(folder, rec))
            finally:
                remove_path(folder)
            if t >= warm:
                times.append(dt)
                peak = max(peak, trial_peak)
            ctx.advance(1)
        return times, peak

    times, peak = yield from run.call(work, warm + reps)
    return [run.timed_row(step, m, times, peak, 1, "")]


def exp_store_many(run: Run, step: Step, m: Method, data: Data):
    warm, reps = trials(run, step, False)
    keep = any(s.group == step.group and EXPERIMENT[s.experiment].needs_store for s in run.steps)

    def work(ctx: Ctx):
        times, peak, nbytes, kept = [], 0, None, None
        for t in range(warm + reps):
            folder = run.trial_dir()
            try:
                h, dt, trial_peak = timed_call(lambda: m.store_many(folder, data, ctx))
                if t >= warm:
                    times.append(dt)
                    peak = max(peak, trial_peak)
                    nbytes = path_size(h.path)
                if keep and t == warm + reps - 1:
                    kept = h
            finally:
                if kept is None:
                    remove_path(folder)
        return times, peak, nbytes, kept

    times, peak, nbytes, kept = yield from run.call(work, (warm + reps) * data.n)
    if kept is not None:
        run.release(step.group)  # an interleaved plan's earlier round kept one: the newest is read
        run.stores[step.group] = kept
    return [run.timed_row(step, m, times, peak, data.n, "", bytes_on_disk=nbytes, raw_bytes=data.raw_bytes)]


def exp_memcpy(run: Run, step: Step, m: Method, data: Data):
    warm, reps = trials(run, step, False)

    def work(ctx: Ctx):
        times, peak = [], 0
        for t in range(warm + reps):
            dt, trial_peak = timed_call(lambda: m.memcpy(data, ctx))[1:]  # the copy is dropped at once
            if t >= warm:
                times.append(dt)
                peak = max(peak, trial_peak)
        return times, peak

    times, peak = yield from run.call(work, (warm + reps) * data.n)
    return [run.timed_row(step, m, times, peak, data.n, "warm" if step.experiment == "read_many" else "",
                           raw_bytes=data.raw_bytes)]


def prepare_read(m: Method, handle: Handle, cache: str) -> None:
    if cache == "cold":
        drop_cache(m.disk_files(handle))
    elif not handle.extra.get("synced"):
        # pages just written are still dirty; reading them while the kernel writes them back
        # is up to 25x slower (a 307 MB np.load: 0.7 s, then 25 ms). Every method's reads start
        # from written-back pages, so the store written last is not favoured.
        os.sync()
        handle.extra["synced"] = True


def exp_read_one(run: Run, step: Step, m: Method, data: Data, handle: Handle, cache: str):
    warm, reps = trials(run, step, True)
    rng = np.random.default_rng(1000 + step.count)
    idx = [int(i) for i in rng.integers(0, data.n, warm + reps)]

    def work(ctx: Ctx):
        times, peak = [], 0
        for t, i in enumerate(idx):
            prepare_read(m, handle, cache)
            img, dt, trial_peak = timed_call(lambda: m.read_one(handle, i))
            if t == warm and not same_pixels(np.asarray(img), data.records[i].image):
                raise ImgtuiError(f"read_one: record {i} read back differs from the source")
            if t >= warm:
                times.append(dt)
                peak = max(peak, trial_peak)
            ctx.advance(1)
        return times, peak

    times, peak = yield from run.call(work, len(idx))
    return [run.timed_row(step, m, times, peak, 1, cache)]


def exp_read_many(run: Run, step: Step, m: Method, data: Data, handle: Handle, cache: str):
    warm, reps = trials(run, step, False)
    if cache == "warm" and step.round == 0:
        # always one untimed read first: the first big allocation of a process page-faults
        # (np.load of 307 MB: 0.7 s the first time, 25 ms after), whichever method comes first
        warm = 1

    def work(ctx: Ctx):
        times, peak = [], 0
        for t in range(warm + reps):
            prepare_read(m, handle, cache)
            if data.spilled:  # nothing read is kept: the first timed trial compares while reading
                ctx.collect = functools.partial(Sink, data, t == warm)
            (images, _labels), dt, trial_peak = timed_call(lambda: m.read_many(handle, ctx))
            if isinstance(images, Sink):
                dt -= images.spent  # the comparison's own time is not the method's
            if t == warm and not same_images(images, data):
                raise ImgtuiError("read_many: the records read back differ from the source")
            del images, _labels
            if t >= warm:
                times.append(dt)
                peak = max(peak, trial_peak)
        return times, peak

    times, peak = yield from run.call(work, (warm + reps) * data.n)
    return [run.timed_row(step, m, times, peak, data.n, cache)]


def random_indices(count: int) -> list[np.ndarray]:
    nb = min(max(1, math.ceil(count / RANDOM_BATCH)), MAX_RANDOM_BATCHES)
    rng = np.random.default_rng(2000 + count)
    return [rng.integers(0, count, RANDOM_BATCH) for _ in range(nb)]


def exp_random(run: Run, step: Step, m: Method, data: Data, handle: Handle, cache: str):
    warm, reps = trials(run, step, False)
    batches = random_indices(data.n)
    per_trial = len(batches) * RANDOM_BATCH

    def work(ctx: Ctx):
        times, peak = [], 0
        for t in range(warm + reps):
            prepare_read(m, handle, cache)
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
            if t == warm and not batch_equal(first, data, batches[0]):
                raise ImgtuiError("random_batches: the records read back differ from the source")
            if t >= warm:
                times.append(dt)
                peak = max(peak, s.peak)
        return times, peak

    times, peak = yield from run.call(work, (warm + reps) * per_trial)
    return [run.timed_row(step, m, times, peak, per_trial, cache)]


def exp_concurrent(run: Run, step: Step, m: Method, data: Data, handle: Handle, cache: str):
    k = int(step.readers or 1)
    reps = run.repeats(step.count)
    # an interleaved plan times one trial per fresh set of processes: one untimed trial first in
    # each, or every figure would carry a new process's first-read costs (imports, page faults)
    warm = 1 if getattr(run.plan, "interleave", False) and cache == "warm" else 0
    batches = [b.tolist() for b in random_indices(data.n)]
    per_reader = len(batches) * RANDOM_BATCH
    options = dict((run.plan.backend_options or {}).get(step.backend, {})) if step.method == "imgtui" else {}
    ctxmp = mp.get_context("spawn")
    if cache == "cold":
        prepare_read(m, handle, cache)

    def work(ctx: Ctx):
        barrier = ctxmp.Barrier(k)
        stop = ctxmp.Event()
        counter = ctxmp.RawArray("q", k)
        out_q = ctxmp.Queue()
        procs = [
            ctxmp.Process(
                target=_reader_process,
                args=(step.method, step.backend, options, str(handle.path), handle.count, handle.extra,
                      batches, warm + reps, barrier, stop, counter, i, out_q),
                daemon=True,
            )
            for i in range(k)
        ]
        run.procs = procs
        results: dict[int, tuple] = {}
        try:
            for p in procs:
                p.start()
            with RssSampler([p.pid for p in procs]) as s:
                reported = 0
                while len(results) < k:
                    if run.cancelled():
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
            for r in range(warm, warm + reps):
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
            run.procs = []

    times, peak = yield from run.call(work, (warm + reps) * k * per_reader)
    return [run.timed_row(step, m, times, peak, k * per_reader, cache)]


def exp_threads(run: Run, step: Step, m: Method, data: Data, handle: Handle, cache: str):
    """K threads of this process, each with its own reader on the one store, reading the same
    random batches as concurrent readers do; aggregate records/s over the span of all K."""
    k = int(step.readers or 1)
    reps = run.repeats(step.count)
    batches = random_indices(data.n)
    per_reader = len(batches) * RANDOM_BATCH

    def work(ctx: Ctx):
        durations, peak = [], 0
        lock = threading.Lock()
        for _ in range(reps):
            prepare_read(m, handle, cache)
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
                            if run.cancelled():
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

    times, peak = yield from run.call(work, reps * k * per_reader)
    return [run.timed_row(step, m, times, peak, k * per_reader, cache)]


def exp_slice(run: Run, step: Step, m: Method, data: Data, handle: Handle, cache: str):
    """Contiguous slices of 100 and 1,000 records (fewer when the store is smaller) from the
    middle of the store; one row per slice length, ``detail="slice=L"``."""
    warm, reps = trials(run, step, True)
    lengths = sorted({min(L, data.n) for L in SLICE_LENGTHS})

    def work(ctx: Ctx):
        out = []
        for L in lengths:
            start = (data.n - L) // 2
            times, peak = [], 0
            for t in range(warm + reps):
                prepare_read(m, handle, cache)
                got, dt, trial_peak = timed_call(lambda: read_slice(m, handle, start, L))
                if t == 0 and not batch_equal(got, data, np.arange(start, start + L)):
                    raise ImgtuiError(f"slice_read: records {start}-{start + L - 1} read back differ from the source")
                del got
                if t >= warm:
                    times.append(dt)
                    peak = max(peak, trial_peak)
                ctx.advance(L)
            out.append((L, start, times, peak))
        return out

    measured = yield from run.call(work, (warm + reps) * sum(lengths))
    return [
        run.timed_row(step, m, times, peak, L, cache, detail=f"slice={L} start={start}")
        for L, start, times, peak in measured
    ]


def exp_mutate(run: Run, step: Step, m: Method, data: Data):
    """A fresh store of the N records, then append 10%, overwrite 1%, delete 1% (at least one
    record each) through ``imgtui.append/overwrite/delete``; verify after every change."""
    ops = (mutate_append, mutate_overwrite, mutate_delete)
    n = data.n
    n_append = max(1, n // 10)
    n_change = max(1, n // 100)
    rng = np.random.default_rng(3000 + n)

    def work(ctx: Ctx):
        folder = run.trial_dir()
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
                                int(after) if after is not None else path_size(h.path)))
                ctx.advance(k)
            return results
        finally:
            remove_path(folder)

    results = yield from run.call(work, n_append + 2 * n_change + n)
    rows = []
    for op, k, report, secs, peak, valid, vsum, raw, after in results:
        in_place = report.get("in_place")
        flag = "yes" if in_place else "no" if in_place is not None else "?"
        how = " ".join(str(report.get("how") or "").split())
        detail = f"op={op} n={k} in_place={flag} valid={'yes' if valid else 'no'} | {how}".rstrip(" |")
        if not valid:
            detail += f" (verify: {vsum})"
        rows.append(run.row(
            step, m, repeats=1, median_s=secs, min_s=secs, max_s=secs, records_per_s=(k / secs) if secs > 0 else None,
            bytes_on_disk=after, raw_bytes=raw, peak_rss_bytes=peak or None, cache="",
            detail=detail,
        ))
    return rows


def exp_space(run: Run, step: Step, m: Method, data: Data):
    """Bytes on disk vs raw pixel bytes for synthetic images at several sizes (the channels and
    bit depth of the dataset's first record), per backend option variant; one row each."""
    first = data.records[0].image
    channels = 1 if first.ndim == 2 else int(first.shape[2])
    dtype = first.dtype.name  # uint8/uint16 give the same images as bits=8/16
    variants = SPACE_OPTIONS.get(step.backend, ({},))
    if step.method == "imgtui" and (run.plan.backend_options or {}).get(step.backend):
        variants = (dict(run.plan.backend_options[step.backend]),) + tuple(variants)
    total = sum(min(cnt, step.count) if label == "32x32" else cnt for label, _s, cnt in SPACE_SIZES) * len(variants)

    def work(ctx: Ctx):
        out = []
        for label, size, cnt in SPACE_SIZES:
            if label == "32x32":
                cnt = min(cnt, step.count)
            kw = {"variable": size} if isinstance(size, tuple) else {"size": size}
            ds = SyntheticDataset(count=cnt, channels=channels, dtype=dtype, seed=7, **kw)
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
                folder = run.trial_dir()
                try:
                    path = mm._path(folder, "store")
                    t0 = time.perf_counter()
                    with open_writer(path, step.backend, expected_count=cnt, **opts) as w:
                        w.write_many(recs)
                    dt = time.perf_counter() - t0
                    out.append((label, cnt, text, path_size(path), raw, dt))
                finally:
                    remove_path(folder)
                ctx.advance(cnt)
        return out

    measured = yield from run.call(work, total)
    rows = []
    for label, cnt, text, nbytes, raw, dt in measured:
        row = run.row(step, m, repeats=1, median_s=dt, min_s=dt, max_s=dt, records_per_s=cnt / dt if dt > 0 else None,
                       bytes_on_disk=nbytes, raw_bytes=raw, cache="", detail=f"size={label.replace(' ', '_')} n={cnt}")
        row.options = text
        rows.append(row)
    return rows


#: hdf5_tuning: HDF5's default raw-data chunk cache, and the tuned one (bytes, hash slots)
H5_DEFAULT_CACHE = 1 << 20
H5_TUNED_CACHE, H5_TUNED_SLOTS = 64 << 20, 100_003
#: hdf5_tuning: a tuned chunk holds about this many bytes of records (at least one record)
H5_TUNED_CHUNK_BYTES = 16 << 10


def exp_hdf5_tuning(run: Run, step: Step, m: Method, data: Data):
    """HDF5 as a growing dataset is written without adjustment (plain h5py: a resizable,
    chunked ``images`` dataset, h5py's guessed chunk shape, HDF5's 1 MiB chunk cache) against
    the same tuned (chunks of ~16 KB of records, a 64 MiB chunk cache with 100,003 slots): the
    time to write the N records, and random batches (the data-loader pattern, one record per
    ``ds[i]`` as a PyTorch Dataset reads them) from each file. Fixed-shape records only; other
    backends get no rows. Four rows, ``detail="variant=default|tuned op=write|random chunk=R"``."""
    if step.backend != "hdf5":
        yield from ()
        return []
    if data.stacked is None:
        raise ImgtuiError("hdf5_tuning: needs records of one shape and dtype")
    import h5py

    arr = data.stacked
    rec_bytes = max(1, int(arr[0].nbytes))
    tuned_chunk = max(1, H5_TUNED_CHUNK_BYTES // rec_bytes)
    batches = random_indices(data.n)
    per_trial = len(batches) * RANDOM_BATCH
    variants = (("default", True, {}),
                ("tuned", (tuned_chunk,) + arr.shape[1:], {"rdcc_nbytes": H5_TUNED_CACHE, "rdcc_nslots": H5_TUNED_SLOTS}))
    if step.round % 2:  # the two variants' order alternates round by round, as the backends' does
        variants = variants[::-1]

    def work(ctx: Ctx):
        out = {}
        folder = run.trial_dir()
        try:
            for name, chunks, cache in variants:
                ctx.check()
                path = folder / f"{name}.h5"
                t0 = time.perf_counter()
                with h5py.File(path, "w") as f:
                    ds = f.create_dataset("images", shape=(0,) + arr.shape[1:], maxshape=(None,) + arr.shape[1:],
                                          dtype=arr.dtype, chunks=chunks)
                    for start in range(0, data.n, 1024):  # appended as it arrives
                        part = arr[start : start + 1024]
                        ds.resize(start + len(part), axis=0)
                        ds[start : start + len(part)] = part
                        ctx.advance(len(part))
                    chunk_rows = int(ds.chunks[0])
                write_s = time.perf_counter() - t0
                os.sync()
                gc.collect()
                t0 = time.perf_counter()
                with h5py.File(path, "r", **cache) as f:
                    ds = f["images"]
                    first = None
                    for j, b in enumerate(batches):
                        got = [ds[int(i)] for i in b]
                        if j == 0:
                            first = got
                        ctx.advance(len(b))
                read_s = time.perf_counter() - t0
                if not batch_equal(first, data, batches[0]):
                    raise ImgtuiError("hdf5_tuning: the records read back differ from the source")
                out[name] = (write_s, read_s, chunk_rows, path_size(path))
        finally:
            remove_path(folder)
        return out

    measured = yield from run.call(work, 2 * (data.n + per_trial))
    rows = []
    for name in ("default", "tuned"):  # the same row order every round (combine_rounds keys on it)
        write_s, read_s, chunk_rows, nbytes = measured[name]
        cache = "1MiB" if name == "default" else f"{H5_TUNED_CACHE >> 20}MiB"
        for op, secs, n in (("write", write_s, data.n), ("random", read_s, per_trial)):
            rows.append(run.timed_row(step, m, [secs], 0, n, "warm" if op == "random" else "",
                                      bytes_on_disk=nbytes if op == "write" else None,
                                      detail=f"variant={name} op={op} chunk={chunk_rows} cache={cache}"))
    return rows


def exp_disk_usage(run: Run, step: Step, m: Method, data: Data, handle: Handle):
    """Bytes on disk of the kept store against the raw pixel bytes."""
    yield from ()
    return [run.row(step, m, bytes_on_disk=path_size(handle.path), raw_bytes=data.raw_bytes, cache="")]


# -- the registry ------------------------------------------------------------------------------------
#: every experiment, once, in the order they are listed (CLI, app, result tables)
EXPERIMENT: dict[str, Experiment] = {e.name: e for e in (
    Experiment("store_one", "store one image (per-record latency)", "write", 0, exp_store_one, default=True),
    Experiment("read_one", "read one image", "read", 2, exp_read_one, default=True),
    Experiment("store_many", "store N records", "write", 1, exp_store_many, default=True, memcpy=True, sized=True),
    Experiment("read_many", "read all N records sequentially", "read", 3, exp_read_many, default=True, memcpy=True),
    Experiment("random_batches", "batches of 64 random indices (data-loader pattern), records/s", "read", 4,
               exp_random, default=True),
    Experiment("disk_usage", "bytes on disk vs raw pixel bytes", "store", 5, exp_disk_usage, default=True,
               sized=True, once=True),
    Experiment("concurrent_readers", "K reader processes on one store, aggregate records/s", "read", 6,
               exp_concurrent, parallel=True),
    Experiment("slice_read", "contiguous slices of 100 and 1,000 records from the middle, records/s", "read", 7,
               exp_slice, article=False),
    Experiment("parallel_threads", "K reader threads in one process on one store, aggregate records/s", "read", 8,
               exp_threads, parallel=True, article=False),
    Experiment("parallel_processes", "K reader processes on one store, aggregate records/s (as concurrent_readers)",
               "read", 9, exp_concurrent, parallel=True, article=False, floor=False),
    Experiment("mutate", "append 10%, overwrite 1%, delete 1% of a store: time, bytes, still valid", "write", 10,
               exp_mutate, article=False, floor=False),
    Experiment("space_at_sizes", "bytes on disk vs raw at 32x32, 256x256, 1024x1024 and variable sizes", "write", 11,
               exp_space, article=False, floor=False, once=True),
    Experiment("hdf5_tuning", "HDF5 written and read at h5py's defaults vs tuned chunks and chunk cache (HDF5 only)",
               "write", 12, exp_hdf5_tuning, article=False, floor=False, listed=False),
)}
#: every experiment's name, in the listed order
EXPERIMENTS: tuple[str, ...] = tuple(EXPERIMENT)
#: the experiments of the default plan
DEFAULT_EXPERIMENTS: tuple[str, ...] = tuple(n for n, e in EXPERIMENT.items() if e.default)
#: the experiments the app lists
LISTED_EXPERIMENTS: tuple[str, ...] = tuple(n for n, e in EXPERIMENT.items() if e.listed)
