"""Long jobs in a child process: the benchmark (``BenchRunner``) and making stores (``StoresRunner``).

A UI (the app) keeps a worker thread that iterates ``runner.events()``; the measurement runs in a
spawned child, so the UI process never waits on it and drawing does not disturb the figures.

- The child sends its events through a queue: the engine's Started/Progress/Result/Error/Finished
  for a benchmark (Progress coalesced to at most ~10 a second), ``StoresEvent`` for make-stores.
- ``cancel()`` (or the ``cancelled`` callable given to ``events``) asks the child to stop; it
  stops between batches, removes its temporary stores and says Finished. If it has not ended
  ``GRACE`` seconds later it is terminated, then killed, and the parent removes the child's
  scratch folder (every temporary store of a benchmark lives under it); a cancelled benchmark then
  ends with ``Finished(rows so far, cancelled=True)``.
- A child that dies (killed, crashed) ends ``events()`` with ``ChildDiedError``: one line.
- The child dies with its parent (``die_with_parent``) and ignores Ctrl-C (the parent decides).
- The child runs at ``CHILD_NICE``: when the CPU is short, the app's drawing goes first.
- Scratch folders are named ``imgtui-child-<app pid>-*``: those of apps that were killed (no
  cleanup ran) are removed by the next job started in the same folder.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from multiprocessing import resource_tracker
from pathlib import Path
from typing import Any, Callable, Iterator

from ..backends.base import remove_path
from ..backends.safety import clean_stale, die_with_parent
from ..convert import convert
from ..datasets import open_dataset
from ..datasets.base import Dataset
from ..errors import CancelledError, ImgtuiError, one_line
from .memory import bench_events, results_dir
from .model import BenchPlan, Finished, Progress, Result, ResultTable
from .plan import validate_plan
from .recommend import recommend_for_dataset
from .run import run_plan

#: seconds a cancelled benchmark child gets to stop by itself before it is terminated
GRACE = 0.8
#: make-stores rolls a store back before it stops: it gets longer
STORES_GRACE = 3.0
#: the app's children run this much nicer than the app: on a busy machine (the kernel groups a
#: terminal's processes and shares the CPU between the groups) the drawing wins over the measurement.
#: Measured with scripts/latency.py on 2 busy cores: help on screen p50 ~0.9 s at nice 0, ~0.6 s at 10
CHILD_NICE = 10
#: at most this many Progress events a second cross the queue
PROGRESS_RATE = 10.0
_SPAWN = mp.get_context("spawn")


class ChildDiedError(ImgtuiError):
    """The child process ended without finishing its job (killed, crashed)."""


def _exit_text(code: int | None) -> str:
    if code is None:
        return "did not stop"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


# -- the child side ---------------------------------------------------------------------------------
def _child_main(target: Callable[..., None], args: tuple, out_q, stop, nice: int = 0) -> None:
    """Entry point of the child: run ``target(emit, cancel, *args)`` and report how it ended."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in the terminal: the parent decides
    if nice:
        try:
            os.nice(nice)
        except OSError:
            pass
    cancel = threading.Event()

    def watch() -> None:  # polls: a process that dies inside Event.wait() would block the parent's set()
        while not stop.value:
            time.sleep(0.05)
        cancel.set()

    threading.Thread(target=watch, daemon=True, name="imgtui-child-stop").start()
    try:
        target(lambda item: out_q.put(("event", item)), cancel, *args)
        out_q.put(("done", None))
    except CancelledError:
        out_q.put(("done", None))
    except BaseException as exc:  # handed to the parent as one line
        if os.environ.get("IMGTUI_DEBUG"):
            import traceback

            traceback.print_exc()
        out_q.put(("error", one_line(exc)))
    finally:
        out_q.close()
        out_q.join_thread()


# -- the parent side ------------------------------------------------------------------------------
def _ensure_resource_tracker() -> None:
    """Start multiprocessing's resource tracker with a real stderr. It passes ``sys.stderr``'s fd
    to the tracker, and inside a Textual app that is a capture object whose fileno() is -1: the
    spawn would fail with "bad value(s) in fds_to_keep". The tracker gets /dev/null instead (its
    warnings would write over the app's screen)."""
    try:
        ok = sys.stderr is not None and sys.stderr.fileno() >= 0
    except (AttributeError, OSError, ValueError):
        ok = False
    if ok:
        return
    saved = sys.stderr
    with open(os.devnull, "w") as null:
        sys.stderr = null
        try:
            resource_tracker.ensure_running()
        finally:
            sys.stderr = saved


#: a child's scratch folder: ``imgtui-child-<parent pid>-<random>`` under the plan's workdir or /tmp
SCRATCH_PREFIX = "imgtui-child-"
#: a scratch folder of the old name (no pid) is removed when it is older than this (seconds)
OLD_SCRATCH_AGE = 24 * 3600


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: somebody else's live process
        return True
    return True


def clean_dead_scratch(parent_dir: str | None = None) -> list[str]:
    """Remove the scratch folders of apps that were killed (SIGKILL, power cut: no cleanup ran):
    those whose parent pid is gone. Returns the names removed."""
    folder = Path(parent_dir or tempfile.gettempdir())
    try:
        names = [n for n in os.listdir(folder) if n.startswith(SCRATCH_PREFIX)]
    except OSError:
        return []
    removed = []
    for name in names:
        pid_text = name[len(SCRATCH_PREFIX):].split("-", 1)[0]
        path = folder / name
        if pid_text.isdigit() and "-" in name[len(SCRATCH_PREFIX):]:
            dead = int(pid_text) != os.getpid() and not _pid_alive(int(pid_text))
        else:  # named before the pid was part of the name
            try:
                dead = time.time() - path.stat().st_mtime > OLD_SCRATCH_AGE
            except OSError:
                continue
        if dead and path.is_dir() and not path.is_symlink():
            remove_path(path)
            removed.append(name)
    return removed


class ChildJob:
    """``target(emit, cancel, *args)`` in a spawned child; iterate ``events()`` for what it emits.

    ``scratch`` is a fresh folder (under ``parent_dir``) that the child may use for temporary
    files; it is removed when the job ends, however it ends."""

    def __init__(self, target: Callable[..., None], args: tuple = (), *, what: str = "job",
                 parent_dir: str | None = None, grace: float = GRACE, nice: int = CHILD_NICE) -> None:
        self.what = what
        self.grace = grace
        self.nice = nice
        clean_dead_scratch(parent_dir)
        self.scratch = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-", dir=parent_dir))
        _ensure_resource_tracker()  # before the queue: its lock registers with the tracker
        self._q = _SPAWN.Queue()
        self._stop = _SPAWN.RawValue("b", 0)  # 1: stop
        self._target = target
        self._args = args
        self.process: Any = None
        self.cancel_requested = False
        self._cancel_at: float | None = None
        self._closed = False
        self._close_lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self) -> None:
        self.process = _SPAWN.Process(target=_child_main,
                                      args=(self._target, self._args, self._q, self._stop, self.nice),
                                      daemon=True, name=f"imgtui-{self.what}")
        self.process.start()

    def cancel(self) -> None:
        """Ask the child to stop (it cleans up); ``events()`` kills it if it takes too long."""
        if not self.cancel_requested:
            self.cancel_requested = True
            self._cancel_at = time.monotonic()
            self._stop.value = 1

    def events(self, cancelled: Callable[[], bool] | None = None, poll: float = 0.05) -> Iterator[Any]:
        """What the child emits, until it is done. Raises ImgtuiError (the child's error, one line)
        or ChildDiedError; after a cancel that needed a kill, simply ends."""
        if self.process is None:
            self.start()
        try:
            while True:
                if cancelled is not None and not self.cancel_requested and cancelled():
                    self.cancel()
                try:
                    kind, payload = self._q.get(timeout=poll)
                except (OSError, ValueError, EOFError):  # closed under us (the app's exit path)
                    if self._closed:
                        return
                    raise
                except queue.Empty:
                    if self._closed:
                        return
                    if self._cancel_at is not None and time.monotonic() - self._cancel_at > self.grace:
                        self.kill()
                        return
                    if not self.process.is_alive():
                        item = self._drain()
                        if item is None:
                            if self.cancel_requested:
                                return
                            raise ChildDiedError(
                                f"the {self.what} process {_exit_text(self.process.exitcode)} before it finished"
                            )
                        kind, payload = item
                    else:
                        continue
                if kind == "event":
                    yield payload
                elif kind == "error":
                    raise ImgtuiError(payload)
                else:
                    return
        finally:
            self.close()

    def _drain(self) -> tuple | None:
        """A message the dead child left in the queue, if any."""
        try:
            return self._q.get(timeout=0.2)
        except (queue.Empty, OSError, EOFError, ValueError):
            return None

    def kill(self) -> None:
        """Stop the child now: SIGTERM, then SIGKILL if it is still there."""
        p = self.process
        if p is None or p.exitcode is not None:
            return
        p.terminate()
        p.join(timeout=0.3)
        if p.exitcode is None:
            p.kill()
            p.join(timeout=2)

    def close(self) -> None:
        """End the child (if it is still running) and remove its scratch folder."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._stop.value = 1
        if self.process is not None:
            self.process.join(timeout=0.2 if self.cancel_requested else 0.5)
            self.kill()
        remove_path(self.scratch)
        try:
            self._q.close()
            self._q.cancel_join_thread()
        except (OSError, ValueError):
            pass


# -- the benchmark ------------------------------------------------------------------------------------
class _Throttled:
    """Forwards events to ``emit``, Progress at most PROGRESS_RATE a second: a Progress held back is
    sent before the next other event, and the last one of a step (done == total) always goes."""

    def __init__(self, emit: Callable[[Any], None]) -> None:
        self.emit = emit
        self.last = 0.0
        self.pending: Progress | None = None

    def __call__(self, ev: Any) -> None:
        if isinstance(ev, Progress):
            now = time.monotonic()
            if now - self.last < 1.0 / PROGRESS_RATE and ev.done < ev.total:
                self.pending = ev
                return
            self.last, self.pending = now, None
            self.emit(ev)
            return
        if self.pending is not None:
            self.emit(self.pending)
            self.pending = None
        self.emit(ev)


def _bench_child(emit: Callable[[Any], None], cancel: threading.Event, plan_dict: dict, workdir: str | None,
                 scratch: str, fresh: bool = False) -> None:
    plan = BenchPlan.from_dict(plan_dict)
    plan.workdir = scratch  # every temporary store under the scratch folder the parent removes
    send = _Throttled(emit)
    # as imgtui bench: figures kept in the results folder for this dataset and options are reused
    events = bench_events(plan, run=lambda p: run_plan(p, cancel), folder=results_dir(), fresh=fresh)
    for ev in events:
        if isinstance(ev, Finished):
            ev.results.plan["workdir"] = workdir
        send(ev)


class BenchRunner:
    """The benchmark of ``plan`` in a child process; ``events()`` yields the engine's events and
    always ends with Finished (or raises one line). The plan is checked here first (PlanError).
    As ``imgtui bench``, figures the results folder keeps for the same dataset, count, options,
    imgtui version and machine are reused (they come first, as Result events) unless ``fresh``."""

    def __init__(self, plan: BenchPlan, fresh: bool = False) -> None:
        validate_plan(plan)
        self.plan = plan
        self.fresh = fresh  # False: reuse the figures the results folder keeps for this plan
        self.job: ChildJob | None = None

    @property
    def pid(self) -> int | None:
        return self.job.pid if self.job is not None else None

    @property
    def scratch(self) -> Path | None:
        return self.job.scratch if self.job is not None else None

    def start(self) -> None:
        if self.job is None:
            self.job = ChildJob(_bench_child, what="benchmark", parent_dir=self.plan.workdir)
            self.job._args = (self.plan.to_dict(), self.plan.workdir, str(self.job.scratch), self.fresh)
            self.job.start()

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()

    def close(self) -> None:
        """Stop the child now and remove its temporary stores (the app's exit path)."""
        if self.job is not None:
            self.job.cancel()
            self.job.close()

    def events(self, cancelled: Callable[[], bool] | None = None) -> Iterator[Any]:
        self.start()
        assert self.job is not None
        rows = []
        finished = False
        for ev in self.job.events(cancelled):
            if isinstance(ev, Result):
                rows.append(ev.row)
            elif isinstance(ev, Finished):
                finished = True
            yield ev
        if not finished:  # cancelled, and the child had to be killed
            plan = self.plan.to_dict()
            yield Finished(ResultTable(rows=rows, plan=plan, dataset=str(self.plan.dataset)), cancelled=True)


# -- making stores -----------------------------------------------------------------------------------
@dataclass
class StoresEvent:
    """What make-stores reports: ``kind`` is "started" (one backend's store began), "progress"
    (records written into it) or "finished" (``paths``: the complete stores)."""

    kind: str
    index: int = 0
    backends: int = 0
    backend: str = ""
    path: str = ""
    done: int = 0
    total: int | None = None
    note: str = ""
    paths: tuple[str, ...] = ()
    cancelled: bool = False


def make_stores_limit(length: int | None, counts: list[int]) -> tuple[int | None, str]:
    """How many records make-stores writes (None: all) and the words for the status line."""
    top = max(counts) if counts else None
    if length is None:
        if top is None:
            return None, "all records"
        return top, f"up to {top:,} records (largest selected count)"
    if top is not None and top < length:
        return top, f"{top:,} of {length:,} records (largest selected count)"
    return None, f"all {length:,} records"


class _CountingDataset(Dataset):
    """Passes the records of ``inner`` through and calls ``on_record(n)`` after each one is taken."""

    def __init__(self, inner: Dataset, on_record) -> None:
        self.inner = inner
        self.kind = inner.kind
        self.on_record = on_record

    @property
    def length(self) -> int | None:
        return self.inner.length

    def describe(self) -> str:
        return self.inner.describe()

    def __iter__(self):
        n = 0
        for rec in self.inner:
            yield rec
            n += 1  # the consumer asked for the next record: this one is written
            self.on_record(n)


def make_stores(spec: str, jobs: list[tuple[str, str, dict]], counts: list[int],
                emit: Callable[[StoresEvent], None], cancelled: Callable[[], bool], on_error: str = "stop") -> None:
    """Convert dataset ``spec`` into each (backend, path, options) of ``jobs``, replacing old stores
    (each one is switched in atomically: a cancel or a kill leaves the old store or the new one)."""
    folder = Path(jobs[0][1]).parent
    output = folder.parent
    if not output.is_dir():
        what = "is not a folder" if output.exists() else "does not exist"
        raise ImgtuiError(f"Cannot make stores: the output folder {output} {what}.")
    try:
        folder.mkdir(exist_ok=True)
    except OSError as exc:
        raise ImgtuiError(f"Cannot make stores: cannot create {folder} ({one_line(exc)}).") from None
    dataset = open_dataset(spec, on_error=on_error, warn=lambda msg: None)
    limit, note = make_stores_limit(dataset.length, counts)
    total = dataset.length if limit is None else (limit if dataset.length is None else min(limit, dataset.length))
    source = Path(spec).expanduser().resolve() if dataset.kind == "store" else None
    interval = 1.0 / PROGRESS_RATE
    done_paths: list[str] = []
    written = 0
    n = len(jobs)
    for index, (backend, dest, options) in enumerate(jobs):
        if cancelled():
            break
        if source is not None and Path(dest).resolve() == source:
            done_paths.append(dest)  # the dataset is this store already: keep it as it is
            continue
        emit(StoresEvent("started", index, n, backend, dest, 0, total, note))
        last = [time.monotonic()]

        def on_record(k: int, index: int = index, last: list[float] = last) -> None:
            now = time.monotonic()
            if now - last[0] >= interval:
                last[0] = now
                emit(StoresEvent("progress", index, n, done=k, total=total))

        try:
            result = convert(_CountingDataset(dataset, on_record), dest, backend, overwrite=True,
                             options=options, cancel=cancelled, limit=limit)
        except CancelledError:
            break
        except Exception as exc:
            raise ImgtuiError(f"Making the {backend} store {dest} failed: {one_line(exc)}") from exc
        written = result["count"]
        emit(StoresEvent("progress", index, n, done=written, total=written))
        done_paths.append(dest)
    emit(StoresEvent("finished", n, n, paths=tuple(done_paths), done=written, cancelled=cancelled()))


def _stores_child(emit: Callable[[Any], None], cancel: threading.Event, spec: str, jobs: list, counts: list,
                  on_error: str = "stop") -> None:
    make_stores(spec, jobs, counts, emit, cancel.is_set, on_error)


class _JobRunner:
    """A job in a child process (``self.job``): its pid, cancel and close."""

    job: ChildJob

    @property
    def pid(self) -> int | None:
        return self.job.pid

    def cancel(self) -> None:
        self.job.cancel()

    def close(self) -> None:
        self.job.cancel()
        self.job.close()


class StoresRunner(_JobRunner):
    """Make-stores in a child process; ``events()`` yields StoresEvent and ends with "finished"."""

    def __init__(self, spec: str, jobs: list[tuple[str, str, dict]], counts: list[int], on_error: str = "stop") -> None:
        self.spec = spec
        self.dests = [dest for _b, dest, _o in jobs]
        self.job = ChildJob(_stores_child, (spec, list(jobs), list(counts), on_error), what="make-stores",
                            grace=STORES_GRACE)

    def close(self) -> None:
        super().close()
        self._clean()

    def _clean(self) -> None:
        """Remove what a killed child left beside the stores (each store is the old or the new one)."""
        for dest in self.dests:
            try:
                clean_stale(dest)
            except OSError:
                pass

    def events(self, cancelled: Callable[[], bool] | None = None) -> Iterator[StoresEvent]:
        finished = False
        try:
            for ev in self.job.events(cancelled):
                finished = finished or ev.kind == "finished"
                yield ev
        finally:
            if not finished:
                self._clean()
        if not finished:  # cancelled, and the child had to be killed
            yield StoresEvent("finished", cancelled=True)


# -- recommend -----------------------------------------------------------------------------------------
@dataclass
class RecommendDone:
    """The last event of a recommend job: the recommendation and the table it was based on."""

    recommendation: Any
    table: ResultTable


def _recommend_child(emit: Callable[[Any], None], cancel: threading.Event, dataset: str, needs: Any,
                     results: ResultTable | None, count: int, scratch: str, results_folder: str | None) -> None:
    send = _Throttled(emit)
    rec, table = recommend_for_dataset(dataset, needs, results, count=count, workdir=scratch, on_event=send,
                                       cancel=cancel, results_folder=results_folder)
    send(RecommendDone(rec, table))


class RecommendRunner(_JobRunner):
    """``recommend_for_dataset`` in a child process (what is missing is measured there, like a
    benchmark: never in the app's process); ``events()`` yields the run's Started/Progress/Finished
    and ends with RecommendDone, or ends without it when cancelled. ``results_folder``: reuse and
    keep measurements there (``bench/memory.py``)."""

    def __init__(self, dataset: str, needs: Any, results: ResultTable | None, *, count: int,
                 workdir: str | None = None, results_folder: str | None = None) -> None:
        self.job = ChildJob(_recommend_child, what="recommend", parent_dir=workdir)
        self.job._args = (dataset, needs, results, count, str(self.job.scratch), results_folder)

    def events(self, cancelled: Callable[[], bool] | None = None) -> Iterator[Any]:
        return self.job.events(cancelled)
