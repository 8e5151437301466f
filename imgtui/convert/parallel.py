"""Sharded conversion: a dataset into a folder of shards, in this process, in local worker
processes (``workers=K``) or on a Dask cluster (``dask=True`` / ``scheduler=ADDRESS``).

How a conversion proceeds (``convert_sharded``):

1. the shard plan: ``shards=N`` even ranges, or ``shard_size`` bytes of raw pixels per shard
   (estimated from a sample of records; for a source of unknown length the shards are cut while
   writing, in this process). The plan goes to ``DEST/.imgtui-shards/plan.json``.
2. every shard is written by ``write_shard`` (in a worker: it re-opens the source from its spec and
   takes records [start, stop)) under ``shard-00003.h5.partial``, re-opened to compute its checksum,
   renamed to ``shard-00003.h5`` and recorded as done in ``.imgtui-shards/shard-00003.h5.json``.
3. when all shards are done, ``manifest.json`` is written last, atomically; then the progress
   folder is removed. A conversion that fails or is killed leaves no manifest: the folder reads as
   incomplete, and ``resume=True`` rewrites only the shards that are missing or do not check out.

Nothing the main process opens (dataset, stores) is handed to a worker: workers are started with
the ``spawn`` method and open their own dataset and their own LMDB environment / HDF5 file.
"""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import json
import multiprocessing
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from ..backends import get_backend, open_store, open_writer
from ..backends.base import path_size, remove_path
from ..backends.safety import die_with_parent
from ..backends.sharded import (
    MANIFEST,
    PARTIAL,
    PROGRESS_DIR,
    is_sharded,
    make_sharded_manifest,
    parse_size,
    plan_by_count,
    plan_by_size,
    shard_entries,
    shard_file_name,
    store_checksum,
    write_json_atomic,
    _RECORD_RE,
)
from ..datasets.base import Dataset
from ..errors import CancelledError, ImgtuiError, StoreExistsError, one_line
from ..records import Record

ProgressFn = Callable[[int, "int | None"], None]
WarnFn = Callable[[str], None]
CHECK_EVERY = 256
#: records sampled to estimate raw bytes per record for --shard-size
SAMPLE = 32
DASK_EXTRA_MESSAGE = "needs the imgtui[dask] extra (pip install 'imgtui[dask]')"


@dataclass
class ShardTask:
    """Everything a worker needs to write one shard (picklable; no open handles)."""

    index: int
    file: str
    start: int  # source record range [start, stop)
    stop: int
    backend: str
    options: dict
    dest: str
    source: Any  # a dataset spec (str) or a picklable Dataset
    on_error: str = "stop"
    warnings: list = field(default_factory=list)
    source_options: dict = field(default_factory=dict)  # e.g. max_pixels, follow_symlinks of a folder


# -- the source --------------------------------------------------------------------------------
def open_source(source: Any, on_error: str = "stop", warn: WarnFn | None = None, **options: Any) -> Dataset:
    if isinstance(source, Dataset):
        return source
    from ..datasets import open_dataset

    return open_dataset(str(source), on_error=on_error, warn=warn, **options)


def source_records(ds: Dataset, start: int, stop: int | None) -> Iterator[Record]:
    """Records [start, stop) of a dataset: ``records()`` or ``record(i)`` when the source has them,
    a store's random access, else iterate and skip the first ``start``."""
    records = getattr(ds, "records", None)
    if callable(records):
        return iter(records(start, stop))
    record = getattr(ds, "record", None)
    if callable(record):
        end = stop if stop is not None else ds.length
        return (record(i) for i in range(start, end))
    from ..datasets.store import StoreDataset

    if isinstance(ds, StoreDataset):
        return _store_records(ds.path, start, stop)
    return itertools.islice(iter(ds), start, stop)


def _store_records(path: Path, start: int, stop: int | None) -> Iterator[Record]:
    with open_store(path) as reader:
        end = len(reader) if stop is None else min(stop, len(reader))
        for a in range(start, end, 256):
            yield from reader.get_many(range(a, min(end, a + 256)))


def _sample_bytes(ds: Dataset, total: int | None) -> float:
    """Mean raw pixel bytes per record, from up to SAMPLE records (spread out when random access)."""
    sizes: list[int] = []
    if total and callable(getattr(ds, "record", None)):
        n = min(SAMPLE, total)
        for i in sorted({int(round(k * (total - 1) / max(1, n - 1))) for k in range(n)}):
            sizes.append(ds.record(i).image.nbytes)
    else:
        for rec in itertools.islice(iter(ds), SAMPLE):
            sizes.append(rec.image.nbytes)
    return sum(sizes) / len(sizes) if sizes else 1.0


class _PushBack:
    """An iterator with one record of push-back (a record that did not fit in the previous shard)."""

    def __init__(self, it: Iterator[Record]) -> None:
        self.it, self.held = it, None

    def next(self) -> Record | None:
        if self.held is not None:
            rec, self.held = self.held, None
            return rec
        return next(self.it, None)


# -- writing one shard ---------------------------------------------------------------------------
def _progress_dir(dest: Path) -> Path:
    return dest / PROGRESS_DIR


def _write_one(
    task: ShardTask,
    records: _PushBack,
    *,
    max_records: int | None,
    max_bytes: int | None = None,
    cancel: Callable[[], bool] | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Write one shard from ``records`` under its temp name, check it, rename it, record it done."""
    dest = Path(task.dest)
    final = dest / task.file
    part = dest / (task.file + PARTIAL)
    remove_path(part)
    n = raw = 0
    try:
        with open_writer(part, task.backend, expected_count=max_records, **task.options) as w:
            while max_records is None or n < max_records:
                rec = records.next()
                if rec is None:
                    break
                if max_bytes is not None and n > 0 and raw + rec.image.nbytes > max_bytes:
                    records.held = rec
                    break
                w.write(rec)
                n += 1
                raw += rec.image.nbytes
                if n % CHECK_EVERY == 0:
                    if cancel is not None and cancel():
                        raise CancelledError(f"conversion to {dest} cancelled; no manifest was written")
                    if progress is not None:
                        progress(CHECK_EVERY)
    except ImgtuiError as exc:
        raise type(exc)(_shard_problem(task, str(exc))) from None
    if max_records is not None and n < max_records and task.on_error != "skip":
        raise ImgtuiError(
            f"{task.file}: the source ended after {task.start + n:,} records, expected {task.stop:,} "
            "(did it change during the conversion?)"
        )
    if progress is not None:
        progress(n % CHECK_EVERY)
    with open_store(part, task.backend) as reader:
        count = len(reader)
        crc = store_checksum(reader)
        m = reader.manifest
        stats = {k: m.get(k) for k in ("shapes", "dtypes", "labels", "label_kinds", "shapes_truncated", "labels_truncated")}
        raw_bytes = int(m.get("raw_bytes") or raw)
    entry = {
        "index": task.index,
        "file": task.file,
        "source_range": [task.start, task.start + n],
        "count": count,
        "raw_bytes": raw_bytes,
        "checksum": f"{crc:08x}",
        "bytes_on_disk": path_size(part),
        "stats": stats,
        "warnings": list(task.warnings),
    }
    # the done record first, then the shard under its final name: a worker killed in between
    # (a dying pool terminates its other workers too) leaves no shard that --resume would not reuse
    write_json_atomic(_progress_dir(dest) / f"{task.file}.json", entry)
    if final.exists() or final.is_symlink():
        remove_path(final)
    os.rename(part, final)
    return entry


def _shard_problem(task: ShardTask, msg: str) -> str:
    m = _RECORD_RE.match(msg)
    if m:
        local = int(m.group(1))
        return f"{task.file}: source record {task.start + local}{m.group(2)}{m.group(3)}"
    return f"{task.file}: {msg}"


def _worker_init() -> None:
    """Pool worker start-up: die with the process that started the pool."""
    die_with_parent()


def write_shard(task: ShardTask) -> dict:
    """Worker entry point: open the source from its spec, write records [start, stop) as one shard."""
    warnings: list[str] = []
    ds = open_source(task.source, task.on_error, warnings.append, **task.source_options)
    task.warnings = warnings
    it = _PushBack(source_records(ds, task.start, task.stop))
    return _write_one(task, it, max_records=task.stop - task.start)


# -- resume --------------------------------------------------------------------------------------
def _reusable(dest: Path, file: str, backend: str, source_range: list[int] | None) -> dict | None:
    """The done record of a finished shard if the shard checks out (complete, count, checksum)."""
    done_path = _progress_dir(dest) / f"{file}.json"
    try:
        done = json.loads(done_path.read_text(encoding="utf-8"))
        if source_range is not None and list(done["source_range"]) != list(source_range):
            return None
        if source_range is None and "source_range" not in done:
            return None
        with open_store(dest / file, backend) as reader:
            if len(reader) != int(done["count"]) or f"{store_checksum(reader):08x}" != done["checksum"]:
                return None
    except (OSError, ValueError, KeyError, TypeError, ImgtuiError):
        return None
    return done


# -- the conversion ------------------------------------------------------------------------------
def convert_sharded(
    source: Any,
    dest: str | os.PathLike,
    backend: str,
    *,
    shards: int | None = None,
    shard_size: int | str | None = None,
    workers: int = 1,
    resume: bool = False,
    overwrite: bool = False,
    options: dict[str, Any] | None = None,
    on_error: str = "stop",
    warn: WarnFn | None = None,
    progress: ProgressFn | None = None,
    cancel: Callable[[], bool] | None = None,
    limit: int | None = None,
    dask: bool = False,
    scheduler: str | None = None,
    source_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``source`` (a dataset spec or a Dataset) as a sharded ``backend`` store at ``dest``.

    ``source_options``: keywords for ``open_dataset`` (here and in every worker), e.g. an image
    folder's ``max_pixels`` and ``follow_symlinks``.
    Returns count, seconds, bytes_on_disk, shards, reused (shards kept by ``resume``), workers.
    """
    t0 = time.perf_counter()
    backend = get_backend(backend).name
    options = dict(options or {})
    get_backend(backend).writer_cls.check_options(dict(options))  # bad options fail before any write
    if shards is not None and shard_size is not None:
        raise ImgtuiError("give either --shards or --shard-size, not both")
    shard_bytes = parse_size(shard_size) if shard_size is not None else None
    workers = int(workers or 1)
    if workers < 1:
        raise ImgtuiError(f"--workers must be at least 1, got {workers}")
    use_dask = bool(dask or scheduler)
    if use_dask:
        _import_dask()
    if resume and overwrite:
        raise ImgtuiError("--resume and --overwrite exclude each other (resume keeps finished shards)")
    if shards is None and shard_bytes is None:
        if scheduler:
            raise ImgtuiError("with --scheduler give --shards N or --shard-size SIZE (one task per shard)")
        shards = max(workers, 2 if dask else 1)
    user_warn = warn or (lambda msg: None)
    said: set[str] = set()

    def warn(msg: str) -> None:
        said.add(str(msg))
        user_warn(msg)

    source_options = dict(source_options or {})
    from .local import check_source_dest

    check_source_dest(source, dest, overwrite=overwrite)  # before anything is touched

    dest = Path(dest)
    final_dest, build = dest, dest
    if dest.exists() or dest.is_symlink():
        if resume:
            if not is_sharded(dest):
                raise ImgtuiError(f"{dest} is not an unfinished sharded store; nothing to resume")
            if (dest / MANIFEST).is_file():
                raise StoreExistsError(
                    f"{dest} is already a complete sharded store; nothing to resume (pass --overwrite to re-create it)"
                )
        elif overwrite:
            build = dest.with_name(f"{dest.name}.imgtui-tmp-{os.getpid()}")
            remove_path(build)
        else:
            raise StoreExistsError(f"{dest} already exists; choose another destination, pass --overwrite or --resume")
    elif not dest.parent.exists():
        raise ImgtuiError(f"cannot write {dest}: folder {dest.parent} does not exist")

    ds = open_source(source, on_error, warn, **source_options)
    total = ds.length
    if limit is not None:
        total = limit if total is None else min(total, limit)
    if total is None and shards is not None:
        raise ImgtuiError(
            f"--shards needs a dataset whose length is known; {ds.describe()} does not know its length, "
            "use --shard-size instead"
        )
    ranges: list[tuple[int, int]] | None
    if total is None:
        ranges = None
        if workers > 1 or use_dask:
            from ..datasets import Notice  # about the run, not a skipped file

            warn(Notice(f"{ds.describe()} does not know its length: writing the shards one after another in this process"))
    elif shards is not None:
        ranges = plan_by_count(total, shards)
    else:
        ranges = plan_by_size(total, shard_bytes, _sample_bytes(ds, total))  # type: ignore[arg-type]

    created = not build.exists()
    build.mkdir(exist_ok=True)
    try:
        _progress_dir(build).mkdir(exist_ok=True)
        plan = {
            "backend": backend,
            "options": options,
            "source": ds.describe(),
            "shard_size": shard_bytes,
            "ranges": [list(r) for r in ranges] if ranges is not None else None,
        }
        plan_path = _progress_dir(build) / "plan.json"
        if resume and plan_path.is_file():
            old = json.loads(plan_path.read_text(encoding="utf-8"))
            diff = [k for k in plan if k != "source" and old.get(k) != plan[k]]
            if diff:
                raise ImgtuiError(
                    f"{dest} was started with other settings ({', '.join(diff)} differ); resume with the same "
                    "--backend, backend options and --shards/--shard-size, or use --overwrite"
                )
        write_json_atomic(plan_path, plan)
        ctx = dict(dest=str(build), backend=backend, options=options, on_error=on_error, source_options=source_options)
        if ranges is None:
            entries, reused = _run_streaming(ds, ctx, shard_bytes, limit, resume, progress, cancel)  # type: ignore[arg-type]
            n_workers = 1
        else:
            tasks = [
                ShardTask(k, shard_file_name(k, backend), a, b, source=source if not isinstance(source, Dataset) else ds, **ctx)
                for k, (a, b) in enumerate(ranges)
            ]
            entries = {}
            if resume:
                for t in tasks:
                    done = _reusable(build, t.file, backend, [t.start, t.stop])
                    if done is not None:
                        entries[t.index] = done
            reused = len(entries)
            todo = [t for t in tasks if t.index not in entries]
            done_records = sum(int(e["count"]) for e in entries.values())
            if progress is not None:
                progress(done_records, total)
            if use_dask:
                n_workers = _run_dask(todo, entries, scheduler, workers, progress, total, done_records)
            elif workers > 1 and len(todo) > 1:
                n_workers = _run_pool(todo, entries, workers, progress, cancel, total, done_records)
            else:
                n_workers = 1
                _run_in_process(ds, todo, entries, progress, cancel, total, done_records)
        if n_workers > 1 or use_dask:  # warnings of worker processes (in-process ones came through warn)
            for k in sorted(entries):
                for msg in entries[k].get("warnings", []):
                    if str(msg) not in said:  # a note about the whole source: every worker saw it too
                        warn(msg)
        manifest = _finish(build, backend, options, [entries[k] for k in sorted(entries)], ds.describe(), shard_bytes)
    except BaseException:
        if overwrite and build != final_dest:
            remove_path(build)
        elif created and not any(p for p in shard_entries(build) if not p.name.endswith(PARTIAL)):
            remove_path(build)  # nothing finished: leave no empty folder behind
        raise
    if build != final_dest:
        old = final_dest.with_name(f"{final_dest.name}.imgtui-old-{os.getpid()}")
        os.rename(final_dest, old)
        os.rename(build, final_dest)
        remove_path(old)
    return {
        "count": manifest["count"],
        "seconds": time.perf_counter() - t0,
        "bytes_on_disk": path_size(final_dest),
        "backend": backend,
        "path": str(final_dest),
        "shards": len(manifest["shards"]),
        "reused": reused,
        "workers": n_workers,
    }


def _finish(build: Path, backend: str, options: dict, entries: list[dict], source: str, shard_bytes: int | None) -> dict:
    """Global ranges from the shard counts, stray files removed, then the manifest last."""
    pos = 0
    for e in entries:
        e["range"] = [pos, pos + int(e["count"])]
        pos += int(e["count"])
    keep = {e["file"] for e in entries}
    for p in shard_entries(build):
        if p.name not in keep:
            remove_path(p)  # partial shards of failed attempts, shards of an older plan
    manifest = make_sharded_manifest(backend, options, entries, source=source, shard_size=shard_bytes)
    write_json_atomic(build / MANIFEST, manifest)
    remove_path(_progress_dir(build))
    return manifest


def _run_in_process(ds, todo, entries, progress, cancel, total, done) -> None:
    state = {"done": done, "pos": None, "it": None}

    def bump(n: int) -> None:
        state["done"] += n
        if progress is not None:
            progress(state["done"], total)

    for t in todo:
        if state["pos"] != t.start:
            state["it"] = _PushBack(source_records(ds, t.start, total))
        entries[t.index] = _write_one(t, state["it"], max_records=t.stop - t.start, cancel=cancel, progress=bump)
        state["pos"] = t.stop


def _run_streaming(ds, ctx, shard_bytes, limit, resume, progress, cancel) -> tuple[dict, int]:
    """Unknown length: cut shards of ``shard_bytes`` while reading the source once, in order."""
    build = Path(ctx["dest"])
    entries: dict[int, dict] = {}
    reused = 0
    pos = 0
    it: _PushBack | None = None
    done = 0

    def bump(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, None)

    for k in itertools.count():
        file = shard_file_name(k, ctx["backend"])
        if resume:
            prev = _reusable(build, file, ctx["backend"], None)
            if prev is not None and prev["source_range"][0] == pos and prev["count"] > 0:
                entries[k] = prev
                reused += 1
                pos = prev["source_range"][1]
                bump(int(prev["count"]))
                it = None
                continue
        if it is None:
            it = _PushBack(itertools.islice(iter(ds), pos, limit))
        rec = it.next()
        if rec is None:
            break
        it.held = rec
        task = ShardTask(k, file, pos, pos, source=None, **ctx)
        e = _write_one(task, it, max_records=None, max_bytes=shard_bytes, cancel=cancel, progress=bump)
        entries[k] = e
        pos = e["source_range"][1]
    if not entries:  # an empty source: one empty shard, so the store opens
        task = ShardTask(0, shard_file_name(0, ctx["backend"]), 0, 0, source=None, **ctx)
        entries[0] = _write_one(task, _PushBack(iter(())), max_records=0)
    return entries, reused


def _partials(build: Path) -> list[str]:
    # a shard is written to NAME.partial, which its writer builds at NAME.partial.imgtui-tmp-PID
    return [p.name.split(PARTIAL)[0] for p in shard_entries(build) if PARTIAL in p.name]


def _worker_failed(task: ShardTask, exc: BaseException) -> ImgtuiError:
    msg = one_line(exc)
    if not msg.startswith(task.file):
        msg = f"{task.file}: {msg}"
    return ImgtuiError(f"writing {msg}; no manifest was written (finish the conversion with --resume)")


def _run_pool(todo, entries, workers, progress, cancel, total, done) -> int:
    from concurrent.futures.process import BrokenProcessPool

    k = min(workers, len(todo))
    build = Path(todo[0].dest)
    pool = cf.ProcessPoolExecutor(max_workers=k, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init)
    futures = {}
    try:
        futures = {pool.submit(write_shard, t): t for t in todo}
        pending = set(futures)
        while pending:
            finished, pending = cf.wait(pending, timeout=0.5, return_when=cf.FIRST_COMPLETED)
            if cancel is not None and cancel():
                raise CancelledError(f"conversion to {build} cancelled; no manifest was written")
            for fut in finished:
                t = futures[fut]
                try:
                    e = fut.result()
                except BrokenProcessPool:
                    pool.shutdown(wait=True, cancel_futures=True)
                    names = _partials(build) or [t.file]
                    raise ImgtuiError(
                        f"a worker process died (killed or crashed) while writing {', '.join(names)}; "
                        "no manifest was written (finish the conversion with --resume)"
                    ) from None
                except Exception as exc:
                    raise _worker_failed(t, exc) from None
                entries[t.index] = e
                done += int(e["count"])
                if progress is not None:
                    progress(done, total)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for name in _partials(build):
            remove_path(build / (name + PARTIAL))
    return k


# -- Dask ----------------------------------------------------------------------------------------
def _import_dask():
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise ImgtuiError(f"--dask/--scheduler {DASK_EXTRA_MESSAGE}") from None
    return distributed


def _run_dask(todo, entries, scheduler, workers, progress, total, done) -> int:
    distributed = _import_dask()
    cluster = None
    if scheduler:
        try:
            client = distributed.Client(scheduler, timeout="20s")
        except Exception as exc:
            raise ImgtuiError(f"cannot connect to the Dask scheduler at {scheduler} ({one_line(exc)})") from None
    else:
        cluster = distributed.LocalCluster(
            n_workers=max(1, workers), processes=True, threads_per_worker=1, dashboard_address=None
        )
        client = distributed.Client(cluster)
    try:
        n_workers = len(client.scheduler_info().get("workers", {})) or workers
        if not todo:
            return n_workers
        futures = {client.submit(write_shard, t, pure=False, key=f"imgtui-{t.file}-{os.getpid()}-{time.time_ns()}"): t for t in todo}
        try:
            for fut in distributed.as_completed(list(futures)):
                t = futures[fut]
                try:
                    e = fut.result()
                except Exception as exc:
                    raise _worker_failed(t, exc) from None
                if not (Path(t.dest) / t.file).exists():
                    raise ImgtuiError(
                        f"{t.file} was written by a Dask worker but is not visible here at {t.dest}: "
                        "the destination must be on a filesystem shared by the client and every worker"
                    )
                entries[t.index] = e
                done += int(e["count"])
                if progress is not None:
                    progress(done, total)
        finally:
            client.cancel(list(futures))
        return n_workers
    finally:
        client.close()
        if cluster is not None:
            cluster.close()

