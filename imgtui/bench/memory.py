"""One memory of measurements: result rows kept per dataset fingerprint in a results folder, so
``imgtui claims`` and ``imgtui recommend`` reuse what was measured and measure only what is missing.

The fingerprint is what makes two measurements comparable: the dataset's source (a path made
absolute), the record count, the backend options, imgtui's version and the machine
(``machine.machine_id``). Each fingerprint is one JSON file ``<folder>/<key>.json`` holding entries
per (experiment, backend, method): the rows, the rounds they were measured with, when, and the
machine's load during that run. The folder is ``$IMGTUI_RESULTS``, else
``$XDG_CACHE_HOME/imgtui/results`` (``~/.cache/imgtui/results``).

An entry counts as measured for a plan when it has rows without error and at least the plan's
rounds (an experiment measured once, bytes on disk, needs one). What is missing is measured for
every wanted backend together (an interleaved run), so a comparison is never between figures of
two different runs of one experiment.

No UI code here.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable, Iterable

from .._version import __version__
from ..errors import ImgtuiError
from .experiments import EXPERIMENT
from .machine import busy_warning, machine_id
from .model import BenchPlan, Event, Finished, ResultRow, ResultTable
from .plan import rounds_for

ENV = "IMGTUI_RESULTS"
FORMAT = 1


def results_dir() -> Path:
    """The results folder: ``$IMGTUI_RESULTS``, else ``$XDG_CACHE_HOME/imgtui/results``."""
    env = os.environ.get(ENV)
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "imgtui" / "results"


def source_of(dataset: str) -> str:
    """A dataset spec as the fingerprint keeps it: an existing path made absolute, else as given."""
    spec = str(dataset)
    if spec and os.path.exists(spec):
        return os.path.realpath(spec)
    return spec


def fingerprint(dataset: str, count: int, backend_options: dict | None = None,
                extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What makes two measurements comparable; ``extra`` (e.g. the scale counts, a plan's
    methods) is added as it is, so another ``extra`` is another fingerprint."""
    fp = {
        "source": source_of(dataset), "count": int(count),
        "options": json.loads(json.dumps(backend_options or {}, sort_keys=True, default=str)),
        "imgtui": __version__, "machine": machine_id(),
    }
    if extra:
        fp.update(json.loads(json.dumps(extra, sort_keys=True, default=str)))
    return fp


def fingerprint_key(fp: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime())


class Memory:
    """The stored results of one fingerprint (``load`` reads the file, ``save`` writes it whole)."""

    def __init__(self, fp: dict[str, Any], folder: str | os.PathLike | None = None) -> None:
        self.fp = fp
        self.folder = Path(folder) if folder is not None else results_dir()
        self.path = self.folder / f"{fingerprint_key(fp)}.json"
        self.entries: list[dict[str, Any]] = []
        self.dataset = ""
        self.machine: dict[str, Any] = {}
        self.load()

    def load(self) -> None:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError):
            return  # a damaged file is measured again (and rewritten)
        if not isinstance(data, dict) or data.get("fingerprint") != self.fp:
            return
        self.entries = [e for e in data.get("entries", []) if isinstance(e, dict)]
        self.dataset = str(data.get("dataset", ""))
        self.machine = dict(data.get("machine") or {})

    def save(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({
                "imgtui_results_memory": FORMAT, "fingerprint": self.fp, "dataset": self.dataset,
                "machine": self.machine, "entries": self.entries,
            }, indent=1, default=str))
            os.replace(tmp, self.path)
        except OSError as exc:
            raise ImgtuiError(f"cannot write the results folder {self.folder}: {exc.strerror or exc}") from None

    # -- entries -------------------------------------------------------------------------------
    def entry(self, experiment: str, backend: str, method: str) -> dict[str, Any] | None:
        for e in self.entries:
            if (e.get("experiment"), e.get("backend"), e.get("method")) == (experiment, backend, method):
                return e
        return None

    def covers(self, experiment: str, backends: Iterable[str], rounds: int, method: str = "imgtui") -> bool:
        """True when every one of ``backends`` has a stored entry of ``experiment`` without error
        rows, measured with at least ``rounds`` rounds (``backends`` empty: any entry will do)."""
        backends = list(backends)
        if not backends:
            return any(e.get("experiment") == experiment for e in self.entries)
        for b in backends:
            e = self.entry(experiment, b, method)
            if e is None or not e.get("rows"):
                return False
            if any(r.get("error") for r in e["rows"]):
                return False
            if int(e.get("rounds") or 0) < rounds:
                return False
        return True

    def put(self, rows: Iterable[ResultRow], rounds: int, load: dict[str, Any] | None = None) -> None:
        """Store ``rows``, one entry per (experiment, backend, method), replacing the old entry."""
        groups: dict[tuple, list[ResultRow]] = {}
        for r in rows:
            groups.setdefault((r.experiment, r.backend, r.method), []).append(r)
        stamp = _now()
        for (exp, b, m), rs in groups.items():
            self.entries = [e for e in self.entries if (e.get("experiment"), e.get("backend"), e.get("method")) != (exp, b, m)]
            once = exp in EXPERIMENT and EXPERIMENT[exp].once
            self.entries.append({
                "experiment": exp, "backend": b, "method": m, "rounds": 1 if once else rounds,
                "measured_at": stamp, "load": load or {}, "rows": [asdict(r) for r in rs],
            })

    def rows(self, experiments: Iterable[str], backends: Iterable[str] | None = None) -> tuple[list[ResultRow], list[str]]:
        """The stored rows of ``experiments`` (of ``backends`` and the floor, when given) and the
        times they were measured."""
        exps = set(experiments)
        keep = set(backends) if backends is not None else None
        out, when = [], []
        for e in self.entries:
            if e.get("experiment") not in exps:
                continue
            if keep is not None and e.get("method") == "imgtui" and e.get("backend") not in keep:
                continue
            out.extend(ResultRow.from_dict(r) for r in e.get("rows", []))
            when.append(str(e.get("measured_at", "")))
        return out, when


def reused_note(n: int, when: list[str]) -> str:
    stamps = sorted(w for w in when if w)
    if not stamps:
        return f"reused {n} figures"
    span = stamps[0] if stamps[0] == stamps[-1] else f"{stamps[0]} to {stamps[-1]}"
    return f"reused {n} figure{'s' if n != 1 else ''} measured {span}"


def run_remembered(
    plan: BenchPlan,
    *,
    memory: Memory | None,
    fresh: bool = False,
    run: Callable[[BenchPlan], Iterable[Event]],
    on_event: Callable[[Event], None] | None = None,
) -> tuple[ResultTable, list[str]]:
    """Measure with an interleaved ``plan`` only the experiments ``memory`` lacks (all of them
    with ``fresh`` or without a memory), store the new rows, and return the stored rows of the
    plan's experiments plus the new ones, and the experiments that were measured now."""
    plan = replace(plan, interleave=True)
    count = max(plan.counts)
    rounds = rounds_for(plan, count)
    wanted = list(plan.experiments)
    if memory is not None and not fresh:
        have = [e for e in wanted if memory.covers(e, plan.backends, rounds_for(plan, count, e))]
    else:
        have = []
    missing = [e for e in wanted if e not in have]
    new = ResultTable()
    cancelled = False
    if missing:
        for ev in run(replace(plan, experiments=missing)):
            if on_event is not None:
                on_event(ev)
            if isinstance(ev, Finished):
                new, cancelled = ev.results, ev.cancelled
        if memory is not None and not cancelled:
            load = {k: new.machine.get(k) for k in ("load_start", "load_end", "load_cores", "others_cpu", "busy")}
            memory.put([r for r in new.rows if r.experiment in missing], rounds, load)
            memory.dataset = new.dataset or memory.dataset
            memory.machine = new.machine or memory.machine
            memory.save()
    table = ResultTable(plan=new.plan or plan.to_dict(), dataset=new.dataset, machine=dict(new.machine))
    if have and memory is not None:
        old, when = memory.rows(have, plan.backends)
        table.rows.extend(old)
        table.reused = reused_note(len(old), when)
        table.notes.append(table.reused + f" (results folder {memory.folder})")
        table.dataset = table.dataset or memory.dataset
        if not missing:
            table.machine = dict(memory.machine)
    table.rows.extend(new.rows)
    if missing:
        warn = busy_warning(new.machine)
        if warn:
            table.notes.append(warn)
    return table, missing


# -- imgtui bench ----------------------------------------------------------------------------------
def bench_fingerprint(plan: BenchPlan, count: int) -> dict[str, Any]:
    """The fingerprint of a bench plan's figures at ``count``: an interleaved plan at the
    defaults shares the fingerprint of ``claims`` and ``recommend`` (their figures are measured
    the same way); a plain plan (each backend's trials back to back), cold reads or skipped
    files make another one."""
    extra: dict[str, Any] = {}
    if not plan.interleave or plan.cold or plan.on_error != "stop":
        extra["bench"] = {"interleave": bool(plan.interleave), "cold": bool(plan.cold), "on_error": plan.on_error}
    return fingerprint(plan.dataset, count, plan.backend_options, extra)


def bench_combos(plan: BenchPlan, experiment: str) -> list[tuple[str, str]]:
    """(backend, method) pairs the plan measures for ``experiment`` (as ``plan.plan_steps`` does)."""
    from .methods import ARTICLE_BACKENDS

    e = EXPERIMENT[experiment]
    out: list[tuple[str, str]] = []
    if "floor" in plan.methods and e.floor:
        out.append(("numpy", "floor"))
        if e.memcpy:
            out.append(("memcpy", "floor"))
    for m in ("article", "imgtui"):
        if m in plan.methods and (m != "article" or e.article):
            out.extend((b, m) for b in plan.backends if m != "article" or b in ARTICLE_BACKENDS)
    return out


def _covers_bench(memory: Memory, plan: BenchPlan, count: int, experiment: str) -> bool:
    """Every (backend, method) of the plan has a stored entry of ``experiment`` without errors,
    with enough rounds, every reader count of a parallel experiment and cold rows when asked."""
    e = EXPERIMENT[experiment]
    rounds = rounds_for(plan, count, experiment)
    for b, m in bench_combos(plan, experiment):
        if not memory.covers(experiment, [b], rounds, method=m):
            return False
        rows = memory.entry(experiment, b, m)["rows"]  # type: ignore[index]
        if e.parallel and not set(plan.readers) <= {r.get("readers") for r in rows}:
            return False
        if plan.cold and e.kind == "read" and not any(r.get("cache") == "cold" for r in rows):
            return False
    return True


def bench_events(
    plan: BenchPlan,
    *,
    run: Callable[[BenchPlan], Iterable[Event]],
    folder: str | os.PathLike | None = None,
    fresh: bool = False,
) -> Iterable[Event]:
    """``imgtui bench`` with the results folder: per count, the experiments whose figures are
    stored for every backend/method of ``plan`` (same fingerprint, enough rounds) are reused; the
    others are measured with ``run`` (sub-plans of the missing experiments, which check and open
    the dataset now, so a bad plan fails here) and stored. The events of the runs come through
    with their steps numbered over all of them; the last is ``Finished`` with the reused and the
    new rows, its ``notes`` saying what was reused and when."""
    from .plan import plan_steps, validate_plan

    validate_plan(plan)
    mems = {c: Memory(bench_fingerprint(plan, c), folder) for c in plan.counts}
    groups: dict[tuple[str, ...], list[int]] = {}
    reused: dict[int, list[str]] = {}
    for c in plan.counts:
        have = [] if fresh else [e for e in plan.experiments if _covers_bench(mems[c], plan, c, e)]
        reused[c] = have
        missing = tuple(e for e in plan.experiments if e not in have)
        if missing:
            groups.setdefault(missing, []).append(c)
    subs = [replace(plan, experiments=list(exps), counts=cs) for exps, cs in groups.items()]
    gens = [run(p) for p in subs]  # each checks its plan and opens the dataset now
    if not gens:
        from ..datasets import open_dataset
        open_dataset(plan.dataset)  # nothing to measure: the dataset must still be there
    total = sum(len(plan_steps(p)) for p in subs)

    def events() -> Iterable[Event]:
        from .model import Progress, Result, Started

        table = ResultTable(plan=plan.to_dict())
        old: list[ResultRow] = []
        when: list[str] = []
        for c, exps in reused.items():
            for e in exps:
                for b, m in bench_combos(plan, e):
                    entry = mems[c].entry(e, b, m) or {}
                    old.extend(ResultRow.from_dict(r) for r in entry.get("rows", []))
                    when.append(str(entry.get("measured_at", "")))
        for row in old:  # the reused figures first, so a live table shows them before the measuring
            yield Result(row)
        cancelled, offset = False, 0
        for sub, gen in zip(subs, gens):
            n = len(plan_steps(sub))
            for ev in gen:
                if isinstance(ev, (Started, Progress)):
                    yield replace(ev, step=ev.step + offset, steps=total)
                elif isinstance(ev, Finished):
                    cancelled = cancelled or ev.cancelled
                    new = ev.results
                    table.rows.extend(new.rows)
                    table.notes.extend(t for t in new.notes if t not in table.notes)
                    table.dataset = new.dataset or table.dataset
                    table.machine = new.machine or table.machine
                    if not ev.cancelled:
                        load = {k: new.machine.get(k) for k in ("load_start", "load_end", "load_cores", "others_cpu", "busy")}
                        for c in sub.counts:
                            mem = mems[c]
                            mem.put([r for r in new.rows if r.count == c], rounds_for(sub, c), load)
                            mem.dataset = new.dataset or mem.dataset
                            mem.machine = new.machine or mem.machine
                            mem.save()
                else:
                    yield ev
            offset += n
            if cancelled:
                break
        for c in reused:
            table.dataset = table.dataset or mems[c].dataset
            table.machine = table.machine or dict(mems[c].machine)
        if old:
            table.rows[:0] = old
            table.reused = reused_note(len(old), when)
            table.notes.append(table.reused + f" (results folder {mems[plan.counts[0]].folder}; "
                               "--fresh measures them again)")
        table.dataset = table.dataset or str(plan.dataset)
        yield Finished(table, cancelled)

    return events()
