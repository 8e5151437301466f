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
            load = {k: new.machine.get(k) for k in ("load_start", "load_end", "load_cores", "busy")}
            memory.put([r for r in new.rows if r.experiment in missing], rounds, load)
            memory.dataset = new.dataset or memory.dataset
            memory.machine = new.machine or memory.machine
            memory.save()
    table = ResultTable(plan=new.plan or plan.to_dict(), dataset=new.dataset, machine=dict(new.machine))
    if have and memory is not None:
        old, when = memory.rows(have, plan.backends)
        table.rows.extend(old)
        table.notes.append(reused_note(len(old), when) + f" (results folder {memory.folder})")
        table.dataset = table.dataset or memory.dataset
        if not missing:
            table.machine = dict(memory.machine)
    table.rows.extend(new.rows)
    if missing:
        warn = busy_warning(new.machine)
        if warn:
            table.notes.append(warn)
    return table, missing
