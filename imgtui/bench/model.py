"""The benchmark plan, the events a run yields, and the typed results table (JSON/CSV round trip).

This module is the contract between the engine (``imgtui.bench.run``), the CLI and the app.
No UI code here and no I/O besides export/import of results.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Union

from ..backends import registry
#: every experiment (the registry is ``imgtui.bench.experiments.EXPERIMENT``) and the default plan's
from .experiments import DEFAULT_EXPERIMENTS, EXPERIMENTS, LISTED_EXPERIMENTS  # noqa: F401

METHODS = ("article", "imgtui", "floor")
#: the optional reference formats (``imgtui.bench.peers``): not in the default plan; asked for by
#: name in ``methods``, the formats in ``BenchPlan.peers``
PEER_METHOD = "peer"
#: every method a plan may name
ALL_METHODS = METHODS + (PEER_METHOD,)
DEFAULT_COUNTS = (10, 100, 1000)


@dataclass
class BenchPlan:
    dataset: str = "synthetic"  # a dataset spec for imgtui.datasets.open_dataset
    #: files of the dataset that cannot be read: "stop" (an error) or "skip" (left out, named)
    on_error: str = "stop"
    #: backend names (default: every backend of the registry usable here)
    backends: list[str] = field(default_factory=lambda: registry.benchmark_defaults())
    #: per-backend imgtui options, e.g. {"hdf5": {"layout": "chunked", "compression": "gzip"}}
    backend_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    #: the peer formats measured when ``methods`` has "peer" (empty: every peer; see
    #: ``imgtui.bench.peers.PEERS``); a peer whose package is missing is left out with a note
    peers: list[str] = field(default_factory=list)
    experiments: list[str] = field(default_factory=lambda: list(DEFAULT_EXPERIMENTS))
    counts: list[int] = field(default_factory=lambda: list(DEFAULT_COUNTS))
    #: None: 3 repeats for counts < 100,000, 1 at 100,000 and above
    repeats: int | None = None
    #: parent folder for the temporary stores (None: the system temp folder)
    workdir: str | None = None
    #: reader processes for "concurrent_readers"
    readers: list[int] = field(default_factory=lambda: [1, 2, 4])
    #: try cold-cache reads (drop caches / fadvise) in addition to warm ones
    cold: bool = False
    #: measure in rounds: each round times every backend once per experiment (one trial each),
    #: the backends' order rotated every round (A B C, B C A, C A B), so drift of a shared machine
    #: hits all alike; ``repeats`` is then the number of rounds and a row's median/min/max are over
    #: the rounds (``imgtui claims`` and ``imgtui recommend`` measure this way)
    interleave: bool = False
    #: a dataset with fewer records than a count: repeat its records (record i is record
    #: i mod length) up to the count instead of failing (the claims' scale comparison does this)
    cycle: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "BenchPlan":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class ResultRow:
    experiment: str
    backend: str            # a registered backend (disk, lmdb, hdf5, ...) | numpy | memcpy (floor)
    method: str             # article | imgtui | floor | peer
    count: int
    repeats: int = 0
    median_s: float | None = None
    min_s: float | None = None
    #: the slowest of the ``repeats`` trials: with ``min_s`` the range of the measured times
    max_s: float | None = None
    records_per_s: float | None = None
    ratio_to_floor: float | None = None   # median_s / floor median_s of the same experiment+count
    bytes_on_disk: int | None = None
    raw_bytes: int | None = None
    peak_rss_bytes: int | None = None
    #: peak RSS minus the RSS before the step (the records held for the run are not counted)
    rss_growth_bytes: int | None = None
    cache: str = "warm"     # warm | cold | "" (writes)
    options: str = ""       # the backend options used, e.g. "layout=contiguous,compression=none"
    readers: int | None = None  # concurrent_readers: K
    error: str | None = None    # set when this backend/method failed; the other rows still come
    #: what the row measured beyond experiment/backend/count, as "key=value ..." then "| free text"
    #: (slice_read: "slice=1000"; space_at_sizes: "size=256x256"; mutate: "op=append n=200
    #: in_place=yes valid=yes | how it was done")
    detail: str | None = None
    #: every timed trial's seconds (an interleaved row: one per round): the bootstrap interval
    #: of the median is taken over them (``stats.py``); None in results saved before they were kept
    times: list[float] | None = None

    @property
    def overhead(self) -> float | None:
        if self.bytes_on_disk is None or not self.raw_bytes:
            return None
        return self.bytes_on_disk / self.raw_bytes

    @property
    def records(self) -> float | None:
        """Records one timed trial handled (records/s x seconds), None for untimed rows."""
        if self.records_per_s is None or not self.median_s:
            return None
        return self.records_per_s * self.median_s

    def interval_kind(self) -> str:
        """"bootstrap" (enough trial times), "range" (min-max of the trials) or "" (neither)."""
        from .stats import interval
        return interval(self.times, self.min_s, self.max_s)[0]

    def seconds_interval(self) -> tuple[float, float] | None:
        """(low, high) seconds the figure is quoted with: the bootstrap interval of the median
        with ``stats.MIN_BOOTSTRAP`` or more trial times, else the min-max range of the trials."""
        from .stats import interval
        return interval(self.times, self.min_s, self.max_s)[1]

    @property
    def spread(self) -> bool:
        """True when the row carries an interval (bootstrap, or a range of trials) with low < high."""
        iv = self.seconds_interval()
        return iv is not None and iv[1] > iv[0]

    def rate_range(self) -> tuple[float, float] | None:
        """(slowest, fastest) records/s over the interval (``seconds_interval``); (rate, rate)
        without a spread; None untimed."""
        if self.records_per_s is None:
            return None
        n = self.records
        iv = self.seconds_interval()
        if not self.spread or not n or iv is None or not iv[0] or not iv[1]:
            return (self.records_per_s, self.records_per_s)
        return (n / iv[1], n / iv[0])

    def seconds_range(self) -> tuple[float, float] | None:
        """(fastest, slowest) seconds over the interval; (median, median) without a spread."""
        if self.median_s is None:
            return None
        if not self.spread:
            return (self.median_s, self.median_s)
        return self.seconds_interval()

    @classmethod
    def from_dict(cls, d: dict) -> "ResultRow":
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in d:
                continue
            v = d[f.name]
            if v == "" and f.name not in ("cache", "options"):
                v = None
            if f.name == "times" and v is not None:
                v = [float(x) for x in (v.split(";") if isinstance(v, str) else v)]
                kwargs[f.name] = v
                continue
            if v is not None:
                if f.name in ("count", "repeats", "bytes_on_disk", "raw_bytes", "peak_rss_bytes", "rss_growth_bytes", "readers"):
                    v = int(float(v))
                elif f.name in ("median_s", "min_s", "max_s", "records_per_s", "ratio_to_floor"):
                    v = float(v)
            kwargs[f.name] = v
        return cls(**kwargs)


@dataclass
class ResultTable:
    rows: list[ResultRow] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)
    plan: dict[str, Any] = field(default_factory=dict)
    dataset: str = ""
    #: lines about how the figures came to be (reused from the results folder, quick, busy machine)
    notes: list[str] = field(default_factory=list)
    #: "reused N figures measured ..." when figures came from the results folder, else ""
    reused: str = ""

    def add(self, row: ResultRow) -> None:
        self.rows.append(row)

    def to_json(self, path: str | Path) -> None:
        data = {
            "imgtui_results": 1,
            "dataset": self.dataset,
            "machine": self.machine,
            "plan": self.plan,
            "notes": self.notes,
            "reused": self.reused,
            "rows": [asdict(r) for r in self.rows],
        }
        Path(path).write_text(json.dumps(data, indent=1))

    @classmethod
    def from_json(cls, path: str | Path) -> "ResultTable":
        data = json.loads(Path(path).read_text())
        return cls(
            rows=[ResultRow.from_dict(r) for r in data.get("rows", [])],
            machine=data.get("machine", {}),
            plan=data.get("plan", {}),
            dataset=data.get("dataset", ""),
            notes=list(data.get("notes", []) or []),
            reused=str(data.get("reused", "") or ""),
        )

    def to_csv(self, path: str | Path) -> None:
        names = [f.name for f in fields(ResultRow)]
        with open(path, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=names)
            w.writeheader()
            for r in self.rows:
                d = asdict(r)
                d["times"] = ";".join(repr(float(x)) for x in r.times) if r.times else None
                w.writerow({k: ("" if v is None else v) for k, v in d.items()})

    @classmethod
    def from_csv(cls, path: str | Path) -> "ResultTable":
        with open(path, newline="") as fh:
            return cls(rows=[ResultRow.from_dict(r) for r in csv.DictReader(fh)])


# -- events yielded by run.run_plan(plan, cancel) --------------------------------------
@dataclass
class Started:
    experiment: str
    backend: str
    method: str
    count: int
    step: int = 0        # index of this step in the plan
    steps: int = 0       # total steps in the plan
    round: int = 0       # interleaved plans: the round of this step (0-based) ...
    rounds: int = 1      # ... of this many


@dataclass
class Progress:
    done: int            # records done in the current step
    total: int           # records in the current step
    step: int = 0
    steps: int = 0


@dataclass
class Result:
    row: ResultRow


@dataclass
class Error:
    experiment: str
    backend: str
    method: str
    count: int
    message: str         # one line


@dataclass
class Finished:
    results: ResultTable
    cancelled: bool = False


Event = Union[Started, Progress, Result, Error, Finished]
