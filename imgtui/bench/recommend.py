"""Which backend suits this dataset and these needs? A recommendation backed by measured figures.

``Profile`` describes the images (from a dataset sample or a store's ``info()``), ``Needs`` what the
user will do with them, ``recommend(profile, needs, results)`` scores the registry's backends (disk,
LMDB, HDF5, ...) on the measured rows that matter for those needs and returns the backend, its
options, the reasons (each quoting a figure from the results) and the trade-offs accepted. ``missing_experiments`` and
``small_plan`` say what still has to be measured; ``recommend_for_dataset`` measures it and answers.

No UI code here.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from ..datasets import open_dataset
from ..errors import ImgtuiError
from ..records import DTYPE_NAMES
from . import backend_info as bi
from .claims import good_rows, mutate_figures, parse_detail
from .fmt import fmt_bytes, fmt_rate, fmt_seconds
from .model import BenchPlan, Event, Finished, ResultTable
from .stats import interval_note
from .run import run_plan

ACCESS = ("sequential", "random", "single")
CHANGES = ("static", "growing", "changing")
READERS = ("one", "many")


class NeedsError(ImgtuiError):
    """A need given with a value imgtui does not know."""


def candidates(backends: list[str] | tuple[str, ...] | None = None) -> tuple[str, ...]:
    """The backends a recommendation chooses from: ``backends`` (names or aliases; an unknown or
    uninstalled one is a one-line ImgtuiError) or every backend of the registry usable here."""
    if backends is None:
        return tuple(bi.names())
    out = []
    for b in backends:
        name = bi.canonical(b)  # unknown: "unknown backend 'x' (choose from ...)"
        bi.get(name)  # needs an optional package: says which
        out.append(name)
    if not out:
        raise ImgtuiError(f"no backend to choose from (choose from {', '.join(bi.names())})")
    return tuple(dict.fromkeys(out))


def display_name(backend: str) -> str:
    """ "disk (PNG files)", "LMDB", "HDF5"; an unknown name as it is."""
    try:
        return bi.get(backend).display_name or backend
    except (ImgtuiError, ImportError):
        return backend


SHORT = bi.plain_name


@dataclass
class Profile:
    count: int = 0
    total_bytes: int = 0            # raw pixel bytes of the whole dataset (estimated from a sample)
    fixed_size: bool = True
    bit_depth: int = 8
    channels: int = 3
    dtype: str = "uint8"            # the widest / most common pixel dtype seen
    has_labels: bool = True
    has_metadata: bool = False
    shape: str = ""                 # the most common shape, e.g. "32x32x3"
    source: str = ""

    @property
    def mean_bytes(self) -> float:
        return self.total_bytes / self.count if self.count else 0.0

    @classmethod
    def from_dataset(cls, dataset: Any, sample: int = 200) -> "Profile":
        """Sample the first ``sample`` records of a Dataset (reads them: call it off the UI thread)."""
        from collections import Counter

        shapes: Counter = Counter()
        nbytes = seen = 0
        bits, channels, labels, meta = 8, 3, set(), False
        dtypes: Counter = Counter()
        for rec in dataset:
            img = rec.image
            dtypes[img.dtype.name] += 1
            shapes["x".join(map(str, img.shape))] += 1
            nbytes += img.nbytes
            bits = max(bits, img.dtype.itemsize * 8)
            channels = 1 if img.ndim == 2 else int(img.shape[2])
            labels.add(str(rec.label))
            meta = meta or bool(rec.metadata)
            seen += 1
            if seen >= sample:
                break
        count = dataset.length if dataset.length is not None else seen
        mean = nbytes / seen if seen else 0
        return cls(
            count=int(count), total_bytes=int(mean * count), fixed_size=len(shapes) <= 1, bit_depth=bits,
            channels=channels, dtype=dtypes.most_common(1)[0][0] if dtypes else "uint8", has_labels=len(labels) > 1, has_metadata=meta,
            shape=shapes.most_common(1)[0][0] if shapes else "", source=dataset.describe(),
        )

    @classmethod
    def from_info(cls, info: dict) -> "Profile":
        """From a store's ``info()`` dict."""
        shapes = info.get("shapes") or {}
        dtypes = info.get("dtypes") or {}
        first = next(iter(shapes), "")
        dims = first.split("x") if first else []
        widest = max((np.dtype(d).itemsize * 8 for d in dtypes if d in DTYPE_NAMES), default=8)
        main = max(dtypes, key=lambda d: dtypes[d]) if dtypes else "uint8"
        return cls(
            count=int(info.get("count") or 0), total_bytes=int(info.get("raw_bytes") or 0),
            fixed_size=len(shapes) <= 1, bit_depth=widest, dtype=main,
            channels=int(dims[2]) if len(dims) > 2 else 1 if dims else 3,
            has_labels=len(info.get("labels") or {}) > 1, has_metadata=False, shape=first,
            source=str(info.get("path", "")),
        )

    @classmethod
    def from_results(cls, table: ResultTable) -> "Profile":
        """A rough profile from a results table alone (count and mean record size of its rows)."""
        rows = [r for r in table.rows if r.raw_bytes and r.count and r.experiment in ("disk_usage", "store_many")]
        if not rows:
            return cls(source=table.dataset)
        r = max(rows, key=lambda r: r.count)
        return cls(count=r.count, total_bytes=r.raw_bytes or 0, source=table.dataset)

    def describe(self) -> str:
        size = self.shape if self.fixed_size and self.shape else "variable sizes"
        depth = f"{self.bit_depth}-bit" if self.dtype in ("uint8", "uint16") else self.dtype
        return (f"{self.count:,} records, {size}, {depth}, {fmt_bytes(self.total_bytes)} raw"
                + (", labels" if self.has_labels else "") + (", metadata" if self.has_metadata else ""))


@dataclass
class Needs:
    access: str = "random"          # sequential | random | single
    changes: str = "static"         # static | growing | changing
    readers: str = "one"            # one | many (processes)
    people_open_files: bool = False
    single_file: bool = False

    def __post_init__(self) -> None:
        for name, known in (("access", ACCESS), ("changes", CHANGES), ("readers", READERS)):
            value = getattr(self, name)
            if value not in known:
                raise NeedsError(f"{name} must be one of {', '.join(known)}, got {value!r}")


@dataclass
class Recommendation:
    backend: str
    options: dict[str, Any]
    reasons: list[str]
    tradeoffs: list[str]
    measured: list[str]             # experiments whose rows were used
    missing: list[str]              # experiments these needs want that had no rows
    scores: dict[str, float] = field(default_factory=dict)
    profile: dict[str, Any] = field(default_factory=dict)
    needs: dict[str, Any] = field(default_factory=dict)
    #: criteria where the choice and its nearest rival measured ranges that overlap
    too_close: list[str] = field(default_factory=list)
    #: how the figures came to be (reused from the results folder, quick, busy machine)
    notes: list[str] = field(default_factory=list)
    #: what the bracketed figures are (bootstrap intervals of the median, or min-max ranges)
    intervals: str | None = None

    @property
    def name(self) -> str:
        return display_name(self.backend)

    def to_dict(self) -> dict:
        return asdict(self)

    def format(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in self.options.items()) or "defaults"
        lines = [f"Recommended: {self.name} ({opts})", "", "Why:"]
        lines += [f"  - {r}" for r in self.reasons] or ["  - (no measured figure decided it)"]
        if self.tradeoffs:
            lines += ["", "Trade-offs accepted:"] + [f"  - {t}" for t in self.tradeoffs]
        if self.too_close:
            lines += ["", "Too close to call (the measured intervals overlap):"] + [f"  - {t}" for t in self.too_close]
        lines += ["", f"Measured: {', '.join(self.measured) or 'nothing'}"]
        if self.intervals:
            lines.append(self.intervals[:1].upper() + self.intervals[1:])
        if self.missing:
            lines.append(f"Not measured: {', '.join(self.missing)}")
        lines += [n for n in self.notes if not n.startswith("warning:")]
        return "\n".join(lines)


# -- what to measure -------------------------------------------------------------------------------
def needed_experiments(needs: Needs) -> list[str]:
    exps = ["disk_usage"]
    exps += {"random": ["random_batches"], "sequential": ["read_many", "slice_read"], "single": ["read_one"]}[needs.access]
    if needs.changes != "static":
        exps.append("mutate")
    if needs.readers == "many":
        exps.append("parallel_processes")
    return exps


def missing_experiments(needs: Needs, results: ResultTable | None) -> list[str]:
    have = {r.experiment for r in (results.rows if results else []) if r.error is None and r.method == "imgtui"}
    return [e for e in needed_experiments(needs) if e not in have]


def small_plan(dataset: str, experiments: list[str], count: int = 2000, workdir: str | None = None,
               backends: list[str] | tuple[str, ...] | None = None) -> BenchPlan:
    """A short plan measuring ``experiments`` with imgtui's backends (default: all) at one count."""
    return BenchPlan(dataset=dataset, backends=list(candidates(backends)), methods=["imgtui"], experiments=list(experiments),
                     counts=[int(count)], repeats=None, workdir=workdir, readers=[1, 2, 4])


# -- scoring -----------------------------------------------------------------------------------------
@dataclass
class _Criterion:
    name: str
    values: dict[str, float]        # backend -> value (higher is better after `better`)
    higher: bool                    # True: higher value is better
    weight: float
    describe: Callable[[str, str], str]  # (winner, other) -> the sentence quoting figures
    #: backend -> (low, high) of the value over the measured repeats (rows with a spread only)
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: how a value prints in a range ("1.2k", "35 ms")
    unit: Callable[[float], str] = fmt_rate

    def overlap(self, a: str, b: str) -> bool:
        """True when the measured ranges of ``a`` and ``b`` overlap (too close to call)."""
        if a not in self.ranges or b not in self.ranges:
            return False
        (alo, ahi), (blo, bhi) = self.ranges[a], self.ranges[b]
        return alo <= bhi and blo <= ahi

    def range_text(self, b: str) -> str:
        lo, hi = self.ranges[b]
        return f"{self.unit(lo)}-{self.unit(hi)}"


def _rate_criterion(name: str, label: str, rows, weight: float, cands: tuple[str, ...]) -> _Criterion | None:
    rates = {r.backend: r.records_per_s for r in rows if r.records_per_s and r.backend in cands}
    if len(rates) < 2:
        return None
    ranges = {r.backend: r.rate_range() for r in rows if r.backend in rates and r.spread and r.rate_range()}

    def rng(b: str) -> str:
        return f" [{fmt_rate(ranges[b][0])}-{fmt_rate(ranges[b][1])}]" if b in ranges else ""

    def describe(w: str, o: str) -> str:
        return (f"{SHORT(w)}: {rates[w] / rates[o]:.1f}x faster {label} than {SHORT(o)} on your images "
                f"({fmt_rate(rates[w])}{rng(w)} vs {fmt_rate(rates[o])}{rng(o)} records/s)")

    return _Criterion(name, rates, True, weight, describe, ranges)


def _criteria(profile: Profile, needs: Needs, results: ResultTable,
              cands: tuple[str, ...]) -> tuple[list[_Criterion], list[str]]:
    crits: list[_Criterion] = []
    used: list[str] = []
    # reading, the way the user reads
    if needs.access == "random":
        c = _rate_criterion("random_batches", "random batches", good_rows(results, "random_batches"), 3.0, cands)
        if c:
            crits.append(c)
            used.append("random_batches")
    elif needs.access == "sequential":
        c = _rate_criterion("read_many", "sequential reads", good_rows(results, "read_many"), 2.0, cands)
        if c:
            crits.append(c)
            used.append("read_many")
        rows = good_rows(results, "slice_read")
        if rows:
            top = max(int(parse_detail(r.detail).get("slice", "0")) for r in rows)
            rows = [r for r in rows if int(parse_detail(r.detail).get("slice", "0")) == top]
            c = _rate_criterion("slice_read", f"slices of {top:,}", rows, 1.5, cands)
            if c:
                crits.append(c)
                used.append("slice_read")
    else:
        rows = good_rows(results, "read_one")
        lat = {r.backend: r.median_s for r in rows if r.median_s and r.backend in cands}
        lat_r = {r.backend: r.seconds_range() for r in rows if r.backend in lat and r.spread}
        if len(lat) >= 2:
            def lrng(b: str) -> str:
                return f" [{fmt_seconds(lat_r[b][0])}-{fmt_seconds(lat_r[b][1])}]" if b in lat_r else ""

            crits.append(_Criterion("read_one", lat, False, 2.0, lambda w, o: (
                f"{SHORT(w)}: opens and reads one record {lat[o] / lat[w]:.1f}x faster than {SHORT(o)} "
                f"({fmt_seconds(lat[w])}{lrng(w)} vs {fmt_seconds(lat[o])}{lrng(o)})"), lat_r, fmt_seconds))
            used.append("read_one")
    # changes
    if needs.changes != "static":
        mf = mutate_figures(results)
        ops = ("append",) if needs.changes == "growing" else ("append", "overwrite", "delete")
        cost: dict[str, float] = {}
        cost_r: dict[str, tuple[float, float]] = {}
        for b, per in mf.items():
            if b in cands and all(op in per for op in ops) and all(per[op]["valid"] for op in ops):
                # a rewrite costs what it costs now, and more as the store grows: count it double
                cost[b] = sum(per[op]["seconds"] * (1 if per[op]["in_place"] else 2) for op in ops)
                if all(per[op].get("range") for op in ops):
                    cost_r[b] = tuple(sum(per[op]["range"][i] * (1 if per[op]["in_place"] else 2) for op in ops)
                                      for i in (0, 1))  # type: ignore[assignment]
        if len(cost) >= 2:
            label = "appends" if needs.changes == "growing" else "appends, overwrites and deletes"

            def describe(w: str, o: str, mf=mf, ops=ops, label=label) -> str:
                tw = sum(mf[w][op]["seconds"] for op in ops)
                to = sum(mf[o][op]["seconds"] for op in ops)
                how = "in place" if all(mf[w][op]["in_place"] for op in ops) else "partly by rewriting"
                other = "in place" if all(mf[o][op]["in_place"] for op in ops) else "by rewriting"
                return (f"{SHORT(w)}: {label} {to / tw:.1f}x cheaper than {SHORT(o)} on your images "
                        f"({fmt_seconds(tw)} {how} vs {fmt_seconds(to)} {other})")

            crits.append(_Criterion("mutate", cost, False, 3.0 if needs.changes == "changing" else 2.5, describe,
                                    cost_r, fmt_seconds))
            used.append("mutate")
    # many reader processes
    if needs.readers == "many":
        rows = good_rows(results, "parallel_processes") or good_rows(results, "concurrent_readers")
        if rows:
            k = max(r.readers or 1 for r in rows)
            c = _rate_criterion("parallel_processes", f"reads with {k} reader processes",
                                [r for r in rows if (r.readers or 1) == k], 2.5, cands)
            if c:
                crits.append(c)
                used.append(rows[0].experiment)
    # space: matters more the bigger the dataset
    rows = good_rows(results, "disk_usage")
    size = {r.backend: float(r.bytes_on_disk) for r in rows if r.bytes_on_disk and r.backend in cands}
    if len(size) >= 2:
        raw = {r.backend: r.raw_bytes for r in rows if r.raw_bytes}
        gb = profile.total_bytes / 1e9
        weight = 0.5 + min(2.5, max(0.0, math.log10(max(gb, 1e-3)) + 1))  # 1 MB: 0.5 ... >=10 GB: 3

        def describe(w: str, o: str) -> str:
            est = ""
            if profile.total_bytes and raw.get(w) and raw.get(o) and profile.total_bytes > 1.5 * raw[w]:
                est = (f"; for all {profile.count:,} records about {fmt_bytes(int(profile.total_bytes * size[w] / raw[w]))}"
                       f" vs {fmt_bytes(int(profile.total_bytes * size[o] / raw[o]))}")
            return (f"{SHORT(w)}: {size[o] / size[w]:.1f}x smaller on disk than {SHORT(o)} for your images "
                    f"({fmt_bytes(int(size[w]))} vs {fmt_bytes(int(size[o]))}{est})")

        crits.append(_Criterion("disk_usage", size, False, weight, describe))
        used.append("disk_usage")
    return crits, used


def _ratio(c: _Criterion, a: str, b: str) -> float:
    """How much better backend ``a`` is than ``b`` on criterion ``c`` (>1: a better)."""
    va, vb = c.values[a], c.values[b]
    if va <= 0 or vb <= 0:
        return 1.0
    return va / vb if c.higher else vb / va


def _options(backend: str, profile: Profile, needs: Needs, results: ResultTable | None) -> tuple[dict, list[str]]:
    notes: list[str] = []
    if backend == "hdf5":
        opts: dict[str, Any] = {}
        if needs.changes != "static":
            opts["layout"] = "chunked"
            notes.append("HDF5 layout=chunked: a chunked dataset can grow; a contiguous one cannot")
        return opts, notes
    if backend == "lmdb":
        # PNG values only pay when the pixels compress: check the measured space rows
        if results is not None:
            rows = [r for r in good_rows(results, "space_at_sizes") if r.backend == "lmdb"]
            raw = [r for r in rows if "encoding=raw" in r.options]
            png = [r for r in rows if "encoding=png" in r.options]
            if raw and png and profile.total_bytes > 10e9 and needs.access != "random":
                a, b = sum(r.bytes_on_disk or 0 for r in raw), sum(r.bytes_on_disk or 0 for r in png)
                if b and a / b > 1.3:
                    notes.append(f"LMDB encoding=png: {a / b:.1f}x smaller than raw values at the sizes measured "
                                 f"({fmt_bytes(b)} vs {fmt_bytes(a)}); reads decode PNG")
                    return {"encoding": "png"}, notes
        return {}, notes
    return {}, notes


def _a(word: str) -> str:
    """The article for ``word``: "a disk", "an HDF5", "an LMDB"."""
    first = word[:1]
    if word.isupper() or (len(word) > 1 and word[:2].isupper()):
        return "an" if first in "AEFHILMNORSX" else "a"
    return "an" if first.lower() in "aeiou" else "a"


#: the backend whose records are ordinary image files people open with any viewer
PLAIN_FILES = "disk"


def recommend(profile: Profile, needs: Needs, results: ResultTable | None = None,
              backends: list[str] | tuple[str, ...] | None = None) -> Recommendation:
    """The backend for ``profile`` and ``needs``, decided on the measured rows of ``results``.

    ``backends``: the candidates (default: every backend of the registry usable here; an unknown
    name is a one-line ImgtuiError). Hard requirements first: people opening the files means disk;
    a single file means a backend whose ``capabilities.single_file`` says so (HDF5; both: that one,
    and the files-people-open wish is listed as a trade-off). Otherwise each backend is scored by
    the log of how much better or worse it measured on the criteria these needs weigh.
    """
    cands = candidates(backends)
    results = results if results is not None else ResultTable()
    crits, used = _criteria(profile, needs, results, cands)
    missing = missing_experiments(needs, results)
    score = {b: 0.0 for b in cands}
    for c in crits:
        present = [b for b in cands if b in c.values]
        best = max(present, key=lambda b: c.values[b] if c.higher else -c.values[b])
        for b in present:
            score[b] -= c.weight * math.log(_ratio(c, best, b))
        for b in cands:
            if b not in c.values:
                score[b] -= c.weight * 0.5  # not measured for that backend: a small penalty
    reasons: list[str] = []
    tradeoffs: list[str] = []
    close: list[str] = []
    forced: str | None = None
    if needs.single_file:
        files = [b for b in cands if bi.single_file(b)]
        if not files:
            raise NeedsError(f"none of {', '.join(cands)} stores one file (choose a backend that does, "
                             f"or drop the single-file need)")
        forced = max(files, key=lambda b: score[b])
        name, suffix = bi.short_name(forced), bi.get(forced).suffix
        folders = [bi.short_name(b) for b in cands if not bi.single_file(b)]
        reasons.append(f"you need one file: {_a(name)} {name} store is a single {suffix + ' ' if suffix else ''}file"
                       + (f" ({bi.human_list(folders)} stores are folders)" if folders else ""))
        if needs.people_open_files:
            tradeoffs.append(f"people cannot open the images with an image viewer; {name} tools show them")
    elif needs.people_open_files and PLAIN_FILES in cands:
        forced = PLAIN_FILES
        reasons.append("people open the images: a disk store is ordinary PNG files plus a records.csv table")
    # a small, static set: every backend reads it in a blink; plain files are the simplest
    if forced is None and PLAIN_FILES in cands and needs.changes == "static" and needs.readers == "one":
        read = {r.backend: r.records_per_s for r in good_rows(results, "read_many") + good_rows(results, "random_batches")
                if r.records_per_s and r.backend == PLAIN_FILES}
        if read and profile.count:
            secs = profile.count / min(read.values())
            if secs < 2.0:
                forced = PLAIN_FILES
                reasons.append(f"small set: PNG files read all {profile.count:,} records in about {fmt_seconds(secs)} "
                               f"(measured {fmt_rate(min(read.values()))} records/s), so speed cannot matter; "
                               "plain files are the simplest to share and inspect")
    ranked = sorted(cands, key=lambda b: -score[b])
    best = forced or ranked[0]
    # reasons: criteria where the winner beat a rival; trade-offs: where a rival beat the winner
    for c in sorted(crits, key=lambda c: -c.weight):
        if best not in c.values:
            tradeoffs.append(f"{c.name} was not measured for {SHORT(best)}")
            continue
        rivals = [b for b in cands if b != best and b in c.values]
        for b in rivals:
            if c.overlap(best, b):
                close.append(f"{c.name}: {SHORT(best)} {c.range_text(best)} vs {SHORT(b)} {c.range_text(b)}")
        worse = [b for b in rivals if _ratio(c, best, b) > 1.05 and not c.overlap(best, b)]
        better = [b for b in rivals if _ratio(c, b, best) > 1.05 and not c.overlap(best, b)]
        if worse:
            nearest = min(worse, key=lambda b: _ratio(c, best, b))
            reasons.append(c.describe(best, nearest))
        for b in better:
            tradeoffs.append(c.describe(b, best))
    dtype = profile.dtype if profile.dtype != "uint8" else ("uint16" if profile.bit_depth == 16 else "uint8")
    if dtype != "uint8":
        what = "16-bit pixels" if dtype == "uint16" else f"{dtype} pixels"
        keep = [b for b in cands if dtype in bi.get(b).capabilities.dtypes]
        if len(keep) == len(cands):
            every = {1: "it", 2: "both", 3: "all three", 4: "all four", 5: "all five"}.get(len(cands), f"all {len(cands)}")
            reasons.append(f"{what}: {every} keep{'s' if len(cands) == 1 else ''} them exactly ({dtype} is stored losslessly)")
        elif best in keep:
            reasons.append(f"{what}: {SHORT(best)} keeps them exactly "
                           f"({bi.human_list([SHORT(b) for b in cands if b not in keep], 'and')} would not)")
        else:
            tradeoffs.append(f"{what}: {SHORT(best)} does not declare {dtype} among the dtypes it keeps")
    if not profile.fixed_size and best == "hdf5":
        tradeoffs.append("variable sizes: HDF5 keeps them as flat byte rows plus a shapes table (no N x H x W array view)")
    options, notes = _options(best, profile, needs, results)
    reasons.extend(notes)
    return Recommendation(
        backend=best, options=options, reasons=reasons, tradeoffs=tradeoffs, measured=sorted(set(used)),
        missing=missing, scores={b: round(s, 3) for b, s in score.items()},
        profile=asdict(profile), needs=asdict(needs), too_close=close,
        intervals=interval_note([r for r in results.rows if r.experiment in used]),
    )


def merge_tables(*tables: ResultTable | None) -> ResultTable:
    out = ResultTable()
    for t in tables:
        if t is None:
            continue
        out.rows.extend(t.rows)
        out.machine = out.machine or t.machine
        out.dataset = out.dataset or t.dataset
    return out


def recommend_for_dataset(
    dataset: str,
    needs: Needs,
    results: ResultTable | None = None,
    *,
    count: int = 2000,
    workdir: str | None = None,
    run_missing: bool = True,
    on_event: Callable[[Event], None] | None = None,
    cancel: threading.Event | None = None,
    backends: list[str] | tuple[str, ...] | None = None,
    results_folder: str | os.PathLike | None = None,
    fresh: bool = False,
    quick: bool = False,
    repeats: int | None = None,
    backend_options: dict | None = None,
) -> tuple[Recommendation, ResultTable]:
    """Profile ``dataset``, measure what ``results`` lacks for ``needs`` (a small interleaved plan,
    ``repeats`` rounds, default 3), recommend.

    ``backends``: the candidates (default: all usable). ``results_folder``: reuse the rows kept
    there for this dataset's fingerprint and measure only what is missing (``fresh``: measure
    again); ``quick``: at most 500 records and 2 rounds. Returns the recommendation and the table
    it was based on (given rows + reused rows + new rows)."""
    from .claims import QUICK_COUNT, QUICK_REPEATS
    from .memory import Memory, fingerprint, run_remembered

    cands = candidates(backends)  # an unknown name fails here, before anything is measured
    ds = open_dataset(dataset)
    profile = Profile.from_dataset(ds)
    table = results
    notes: list[str] = []
    missing = missing_experiments(needs, results)
    if missing and run_missing:
        if quick:
            count = min(count, QUICK_COUNT)
            repeats = repeats or QUICK_REPEATS
        n = min(count, profile.count) if profile.count else count
        plan = small_plan(dataset, missing, n, workdir, cands)
        plan.repeats = repeats
        plan.interleave = True
        plan.backend_options = dict(backend_options or {})
        if quick:
            notes.append(f"quick: {n:,} records, {repeats} rounds (wider ranges, more comparisons too close to call)")
        memory = Memory(fingerprint(dataset, n, backend_options), results_folder) if results_folder is not None else None
        new, _measured = run_remembered(plan, memory=memory, fresh=fresh, on_event=on_event,
                                        run=lambda p: run_plan(p, cancel))
        notes += new.notes
        table = merge_tables(results, new) if results is not None else new
    rec = recommend(profile, needs, table, cands)
    rec.notes = notes
    return rec, (table or ResultTable())
