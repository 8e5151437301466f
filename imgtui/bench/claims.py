"""The classic comparison's claims, each tested by a measurement on this machine with these images.

The claims are those of the usual "three ways of storing lots of images" comparison (PNG files
on disk, LMDB, HDF5). ``CLAIMS`` names each one and the experiments that test it;
``evaluate_claims(table)`` reads a ResultTable and returns a ``ClaimVerdict`` per claim:
"confirmed", "refuted", "depends" or "not measured", with the figures it was decided on.

Claims 5 (portability) and 6 (a folder of files drifts; verify catches it) are not timings: they
are checked by ``portability_facts`` (read record 0 of each backend without imgtui, the way the
backend's ``recipe()`` says) and ``drift_facts`` (break a temporary disk store in each way and run
verify). Both return ResultRows (experiments ``fact_portability`` and ``fact_drift``) that go into
the same table, so a saved claims run (JSON) holds everything its verdicts were based on.

No UI code here.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ..backends import open_store, open_writer, registry
from ..backends.disk import TABLE, image_name
from ..datasets import open_dataset
from ..datasets.synthetic import SyntheticDataset
from ..errors import ImgtuiError
from . import backend_info as bi
from .fmt import fmt_bytes, fmt_rate
from .model import BenchPlan, Event, Finished, ResultRow, ResultTable
from .plan import default_repeats
from .run import run_plan

#: "too close to call": the figures' measured ranges allow more than one verdict (see evaluate_claims)
VERDICTS = ("confirmed", "refuted", "depends", "too close to call", "not measured")
TOO_CLOSE = "too close to call"
#: the claims' subjects, as the classic comparison names them: PNG files on disk against LMDB and
#: HDF5. Every other measured backend shows in the figures; the verdicts are about these.
FILES, LMDB, HDF5 = "disk", "lmdb", "hdf5"
PACKED = (LMDB, HDF5)
#: the experiments a claims run measures (plus the two fact checks)
CLAIM_EXPERIMENTS = (
    "store_one", "read_one", "store_many", "read_many", "random_batches", "disk_usage",
    "slice_read", "parallel_threads", "parallel_processes", "mutate", "space_at_sizes",
)
#: within this factor two figures count as a tie
TIE = 1.15


class Mixed(str):
    """A "depends" verdict that keeps its parts (("threads", "refuted"), ("processes", "confirmed")):
    the interval check of ``evaluate_claims`` then sees a part that flips within the measured
    intervals even when the claim says "depends" at every end."""

    parts: tuple[tuple[str, str], ...]

    def __new__(cls, parts) -> "Mixed":
        self = super().__new__(cls, "depends")
        self.parts = tuple((str(k), str(v)) for k, v in parts)
        return self


def _verdict_key(v: str) -> tuple:
    return str(v), getattr(v, "parts", ())


def _verdict_text(v: str) -> str:
    parts = getattr(v, "parts", ())
    return str(v) + (" (" + ", ".join(f"{k} {x}" for k, x in parts) + ")" if parts else "")


@dataclass(frozen=True)
class Claim:
    id: int
    title: str
    text: str
    experiments: tuple[str, ...]


CLAIMS: tuple[Claim, ...] = (
    Claim(1, "LMDB/HDF5 beat PNG files",
          "Storing and reading many images is much faster in LMDB or HDF5 than as one PNG file per image.",
          ("store_many", "read_many", "random_batches")),
    Claim(2, "HDF5 for slices",
          "HDF5 is the fastest way to read a contiguous slice of records.",
          ("slice_read",)),
    Claim(3, "Parallel readers",
          "LMDB serves many parallel readers; HDF5 (h5py) serialises threads, so it does not scale with reader threads.",
          ("parallel_threads", "parallel_processes")),
    Claim(4, "Changing a store",
          "A folder of image files is easy to change; appending, overwriting or deleting records in LMDB or "
          "HDF5 is costly (rewrites, or space that is never given back).",
          ("mutate",)),
    Claim(5, "Portability",
          "PNG files open with any image tool; LMDB and HDF5 need a library and knowledge of the layout.",
          ("fact_portability",)),
    Claim(6, "Files drift",
          "A folder of files drifts silently (files lost, added or renamed, the labels table out of step); "
          "imgtui's verify catches each kind.",
          ("fact_drift",)),
    Claim(7, "Space on disk",
          "PNG files take the least disk space; LMDB and HDF5 keep raw pixels and take more.",
          ("disk_usage", "space_at_sizes")),
    Claim(8, "One image at a time",
          "For a single image (the classic single-image experiment), a PNG file on disk is the fastest to "
          "store and to read back; LMDB and HDF5 pay for opening a database or file.",
          ("store_one", "read_one")),
    Claim(9, "LMDB's map size",
          "LMDB needs its map size set in advance (the most the database may ever hold), which makes it "
          "complex to configure.",
          ("fact_mapsize",)),
    Claim(10, "LMDB at scale, HDF5 when not too large",
          "LMDB is for large-scale, high-performance needs; HDF5 for structured datasets that are not too large.",
          ("scale_store_many", "scale_read_many", "scale_random_batches")),
    Claim(11, "HDF5 at large scale needs adjusting",
          "HDF5 needs adjustment (chunking, chunk cache) at large scale.",
          ("scale_hdf5_tuning",)),
)


@dataclass
class ClaimVerdict:
    id: int
    title: str
    claim: str
    verdict: str                      # confirmed | refuted | depends | not measured
    summary: str                      # one line: why
    figures: list[str] = field(default_factory=list)
    experiments: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


# -- reading rows ------------------------------------------------------------------------------
_KV = re.compile(r"(\w+)=(\S+)")


def parse_detail(detail: str | None) -> dict[str, str]:
    """``"op=append n=200 in_place=yes | how"`` -> {"op": "append", "n": "200", ..., "how": "how"}."""
    if not detail:
        return {}
    head, _, tail = detail.partition(" | ")
    out = dict(_KV.findall(head))
    if tail:
        out["how"] = tail.strip()
    return out


def good_rows(table: ResultTable | Iterable[ResultRow], experiment: str, method: str = "imgtui") -> list[ResultRow]:
    """Rows of one experiment without error, warm or uncached, of the largest record count measured."""
    rows = table.rows if isinstance(table, ResultTable) else list(table)
    rows = [r for r in rows if r.experiment == experiment and r.error is None and r.method == method
            and r.cache in ("warm", "")]
    if not rows:
        return []
    top = max(r.count for r in rows)
    return [r for r in rows if r.count == top]


def _by_backend(rows: list[ResultRow], value: Callable[[ResultRow], float | None]) -> dict[str, float]:
    out: dict[str, float] = {}
    for r in rows:
        v = value(r)
        if v is not None and r.backend not in out:
            out[r.backend] = v
    return out


def _rates(rows: list[ResultRow]) -> dict[str, float]:
    return _by_backend(rows, lambda r: r.records_per_s)


def _ranges(rows: list[ResultRow]) -> dict[str, tuple[float, float]]:
    """backend -> (slowest, fastest) records/s of rows measured with a spread (min < max)."""
    out: dict[str, tuple[float, float]] = {}
    for r in rows:
        rr = r.rate_range()
        if r.spread and rr is not None and r.backend not in out:
            out[r.backend] = rr
    return out


def _r3(x: float) -> str:
    for unit, div in (("M", 1e6), ("k", 1e3)):
        if x >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:.3g}"


def fmt_rate_range(lo: float, hi: float) -> str:
    """``950-1.15k``: a range of records/s, three significant digits each."""
    return f"{_r3(lo)}-{_r3(hi)}"


def _name(b: str) -> str:
    return "numpy floor" if b == "numpy" else bi.short_name(b)


def _order(keys) -> list[str]:
    """``keys`` in registry order (unknown names last)."""
    order = list(registry.BACKENDS)
    return sorted(keys, key=lambda b: (order.index(b) if b in order else len(order), b))


def _rate_line(what: str, rates: dict[str, float], order: tuple[str, ...] | None = None,
               ranges: dict[str, tuple[float, float]] | None = None) -> str:
    """``what: HDF5 1.2k vs LMDB 3.4k records/s``; with ``ranges`` each median is followed by its
    range over the repeats: ``LMDB 3.4k (3.1k-3.6k)``."""
    order = tuple(reversed(_order(rates))) if order is None else order
    ranges = ranges or {}
    parts = [f"{_name(b)} {fmt_rate(rates[b])}" + (f" ({fmt_rate_range(*ranges[b])})" if b in ranges else "")
             for b in order if b in rates]
    return f"{what}: " + " vs ".join(parts) + " records/s"


def _x(a: float, b: float) -> str:
    return f"{a / b:.1f}x" if b else "∞x"


# -- the verdicts --------------------------------------------------------------------------------
def _claim1(table: ResultTable) -> tuple[str, str, list[str]]:
    figures, ratios = [], []
    for exp in ("store_many", "read_many", "random_batches"):
        rows = good_rows(table, exp)
        rates = _rates(rows)
        if FILES not in rates or not (set(PACKED) & set(rates)):
            continue
        best = max((b for b in PACKED if b in rates), key=rates.get)
        ratio = rates[best] / rates[FILES]
        ratios.append(ratio)
        figures.append(_rate_line(f"{exp} of {rows[0].count:,}", rates, ranges=_ranges(rows))
                       + f" ({_name(best)} {_x(rates[best], rates[FILES])} {_name(FILES)})")
    if not ratios:
        return "not measured", "no store_many/read_many/random_batches rows for disk and LMDB/HDF5", figures
    if all(r >= 2 for r in ratios):
        return "confirmed", f"LMDB/HDF5 are {min(ratios):.1f}x to {max(ratios):.1f}x faster than PNG files", figures
    if all(r < 1 / TIE for r in ratios) or all(r <= TIE for r in ratios):
        return "refuted", "PNG files keep up with (or beat) LMDB and HDF5 here", figures
    return "depends", f"the gap ranges from {min(ratios):.1f}x to {max(ratios):.1f}x depending on the operation", figures


def _claim2(table: ResultTable) -> tuple[str, str, list[str]]:
    rows = good_rows(table, "slice_read")
    by_len: dict[str, list[ResultRow]] = {}
    for r in rows:
        by_len.setdefault(parse_detail(r.detail).get("slice", "?"), []).append(r)
    figures, wins = [], []
    for length in sorted(by_len, key=lambda s: int(s) if s.isdigit() else 0):
        rates = _rates(by_len[length])
        if HDF5 not in rates or len(rates) < 2:
            continue
        best = max(rates, key=rates.get)
        figures.append(_rate_line(f"HDF5 slice of {int(length):,}" if length.isdigit() else "slice", rates,
                                  ranges=_ranges(by_len[length]))
                       + (f" (fastest: {_name(best)})"))
        wins.append(rates[HDF5] * TIE >= rates[best])
    if not wins:
        return "not measured", "no slice_read rows for HDF5 and another backend", figures
    if all(wins):
        return "confirmed", "HDF5 reads contiguous slices fastest (or within 15% of the fastest)", figures
    if not any(wins):
        return "refuted", "another backend reads contiguous slices faster than HDF5", figures
    return "depends", "HDF5 is fastest for some slice lengths only", figures


def _scaling(table: ResultTable, exp: str) -> tuple[dict[str, float], dict[str, tuple[int, float, float]]]:
    rows = good_rows(table, exp)
    per: dict[str, dict[int, float]] = {}
    for r in rows:
        if r.readers and r.records_per_s:
            per.setdefault(r.backend, {})[int(r.readers)] = r.records_per_s
    scale, detail = {}, {}
    for b, d in per.items():
        if 1 in d and len(d) > 1:
            k = max(d)
            scale[b] = d[k] / d[1]
            detail[b] = (k, d[1], d[k])
    return scale, detail


def _scaling_ranges(table: ResultTable, exp: str) -> dict[str, tuple[float, float]]:
    """backend -> (lowest, highest) scaling 1 -> K readers over the measured ranges (rows with a
    spread only): K's slowest over 1's fastest, K's fastest over 1's slowest."""
    per: dict[str, dict[int, tuple[float, float]]] = {}
    for r in good_rows(table, exp):
        rr = r.rate_range()
        if r.readers and rr is not None and r.spread:
            per.setdefault(r.backend, {})[int(r.readers)] = rr
    out = {}
    for b, d in per.items():
        if 1 in d and len(d) > 1:
            k = max(d)
            out[b] = (d[k][0] / d[1][1], d[k][1] / d[1][0])
    return out


def _sx(value: float, rng: tuple[float, float] | None) -> str:
    """``1.25x`` or, measured with a spread, ``1.25x (1.10-1.31x)``."""
    return f"{value:.2f}x" + (f" ({rng[0]:.2f}-{rng[1]:.2f}x)" if rng else "")


def _claim3(table: ResultTable) -> tuple[str, str, list[str]]:
    th, th_d = _scaling(table, "parallel_threads")
    pr, pr_d = _scaling(table, "parallel_processes")
    th_r, pr_r = _scaling_ranges(table, "parallel_threads"), _scaling_ranges(table, "parallel_processes")
    cpus = (table.machine or {}).get("cpu_count") or (table.machine or {}).get("cpus")
    figures = []
    for label, d in (("threads", th_d), ("processes", pr_d)):
        parts = [f"{_name(b)} {fmt_rate(one)} -> {fmt_rate(many)} ({many / one:.2f}x)"
                 for b, (k, one, many) in sorted(d.items()) if b != "numpy"]
        if parts:
            k = max(v[0] for v in d.values())
            figures.append(f"1 -> {k} reader {label}: " + ", ".join(parts) + " records/s")
    if cpus:
        figures.append(f"this machine has {cpus} CPUs: no backend can scale past {cpus}x")
    # like with like: the threads half of the claim is decided by threads only (the serialising
    # backends, HDF5, against LMDB), the many-readers half by processes only; when the halves
    # disagree the verdict is DEPENDS and the headline shows both
    serial = [b for b in _order(th) if bi.known(b) and not bi.get(b).capabilities.parallel_threads]
    par = LMDB
    if not serial or par not in th:
        return "not measured", "no parallel_threads rows for HDF5 and LMDB (the claim is about threads)", figures
    who, other = "/".join(_name(b) for b in serial), _name(par)
    h_th, l_th = max(th[b] for b in serial), th[par]
    if h_th < 1.2 and l_th >= 1.2 and l_th > h_th * 1.1:
        threads = "confirmed"
    elif h_th >= l_th or l_th < 1.05 or h_th >= 1.5:
        threads = "refuted"
    else:
        threads = "depends"
    h_b = max(serial, key=lambda b: th[b])
    head = f"threads: {who} {_sx(h_th, th_r.get(h_b))}, {other} {_sx(l_th, th_r.get(par))}"
    if par not in pr:
        return threads, head + " (processes not measured)", figures
    l_pr = pr[par]
    h_pr = max((pr[b] for b in serial if b in pr), default=None)
    procs = "confirmed" if l_pr >= 1.2 else ("refuted" if l_pr < 1.05 else "depends")
    h_pb = max((b for b in serial if b in pr), key=lambda b: pr[b], default=None)
    head += (f"; processes: {other} {_sx(l_pr, pr_r.get(par))}"
             + (f", {who} {_sx(h_pr, pr_r.get(h_pb))}" if h_pr is not None and h_pb is not None else ""))
    if threads == procs:
        return threads, head, figures
    return Mixed((("threads", threads), ("processes", procs))), head + f" (threads say {threads}, processes say {procs})", figures


def mutate_figures(table: ResultTable) -> dict[str, dict[str, dict]]:
    """backend -> op -> {"seconds", "rate", "in_place", "valid", "bytes", "how", "n"} from mutate rows."""
    out: dict[str, dict[str, dict]] = {}
    for r in good_rows(table, "mutate"):
        d = parse_detail(r.detail)
        op = d.get("op")
        if not op or r.median_s is None:
            continue
        out.setdefault(r.backend, {})[op] = {
            "seconds": r.median_s, "rate": r.records_per_s, "in_place": d.get("in_place") == "yes",
            "range": r.seconds_range() if r.spread else None,
            "valid": d.get("valid") == "yes", "bytes": r.bytes_on_disk, "how": d.get("how", ""),
            "n": int(d.get("n", "0") or 0),
        }
    return out


def _claim4(table: ResultTable) -> tuple[str, str, list[str]]:
    mf = mutate_figures(table)
    figures = []
    for op in ("append", "overwrite", "delete"):
        parts = []
        for b in _order(mf):
            f = mf.get(b, {}).get(op)
            if f:
                flags = ("in place" if f["in_place"] else "rewrite") + ("" if f["valid"] else ", INVALID after")
                rng = f" [{f['range'][0] * 1000:,.0f}-{f['range'][1] * 1000:,.0f}]" if f.get("range") else ""
                parts.append(f"{_name(b)} {f['seconds'] * 1000:,.0f}{rng} ms ({flags})")
        if parts:
            n = next((mf[b][op]["n"] for b in mf if op in mf[b]), 0)
            figures.append(f"{op} {n:,}: " + ", ".join(parts))
    if not mf or FILES not in mf or not (set(PACKED) & set(mf)):
        return "not measured", "no mutate rows for disk and LMDB/HDF5", figures
    invalid = [f"{_name(b)} {op}" for b, ops in mf.items() for op, f in ops.items() if not f["valid"]]
    if invalid:
        figures.append("verify failed after: " + ", ".join(invalid))
    costly, cheap = 0, 0
    for op in ("append", "overwrite", "delete"):
        d = mf[FILES].get(op)
        if d is None:
            continue
        for b in PACKED:
            o = mf.get(b, {}).get(op)
            if o is None:
                continue
            if (not o["in_place"] and d["in_place"]) or o["seconds"] > TIE * 2 * d["seconds"]:
                costly += 1
            elif o["in_place"] and o["seconds"] <= TIE * d["seconds"]:
                cheap += 1
    if costly and not cheap:
        return "confirmed", "every change costs LMDB/HDF5 more than the folder of files", figures
    if cheap and not costly:
        return "refuted", "LMDB/HDF5 change in place as fast as (or faster than) the folder of files", figures
    return "depends", f"{cheap} change(s) cheap in LMDB/HDF5, {costly} costly (see figures)", figures


def _claim_facts(table: ResultTable, exp: str) -> list[tuple[ResultRow, dict]]:
    return [(r, parse_detail(r.detail)) for r in table.rows if r.experiment == exp]


def _claim5(table: ResultTable) -> tuple[str, str, list[str]]:
    facts = _claim_facts(table, "fact_portability")
    if not facts:
        return "not measured", "portability not checked (run the claims with facts)", []
    figures, ok = [], {}
    for r, d in facts:
        ok[r.backend] = d.get("ok") == "yes"
        figures.append(f"{_name(r.backend)}: read without imgtui using {d.get('tools', '?').replace('_', ' ')}: "
                       f"{'OK' if ok[r.backend] else 'FAILED'}"
                       + (f" ({d['how']})" if d.get("how") else ""))
    needs_layout = [b for r, d in facts if d.get("layout") == "needed" for b in [r.backend]]
    if ok.get(FILES) and needs_layout and all(b != FILES for b in needs_layout):
        if HDF5 in ok and HDF5 not in needs_layout:
            return "depends", ("PNG files open anywhere; HDF5 opens with any HDF5 tool (named datasets); "
                               "LMDB needs imgtui's byte layout"), figures
        return "confirmed", "PNG files open with common tools; the others need a library and the layout", figures
    if not ok.get(FILES):
        return "refuted", "the disk store could not be read with common tools", figures
    return "depends", "see figures", figures


def _claim6(table: ResultTable) -> tuple[str, str, list[str]]:
    facts = _claim_facts(table, "fact_drift")
    if not facts:
        return "not measured", "drift not checked (run the claims with facts)", []
    figures, required = [], {}
    for r, d in facts:
        kind = d.get("drift", "?")
        found = d.get("detected") == "yes"
        figures.append(f"{kind}: {'detected' if found else 'NOT detected'}" + (f" ({d['how']})" if d.get("how") else ""))
        if kind in DRIFT_REQUIRED:
            required[kind] = found
    missing = [k for k in DRIFT_REQUIRED if k not in required]
    if missing:
        return "not measured", f"drift kinds not checked: {', '.join(missing)}", figures
    if all(required.values()):
        return "confirmed", f"verify reported all {len(required)} kinds of drift", figures
    if not any(required.values()):
        return "refuted", "verify reported none of the drift kinds", figures
    return "depends", "verify missed: " + ", ".join(k for k, v in required.items() if not v), figures


def space_figures(table: ResultTable) -> dict[str, dict[str, dict[str, tuple[int, int]]]]:
    """size label -> backend -> options text -> (bytes_on_disk, raw_bytes) from space_at_sizes and
    disk_usage rows (the dataset itself under the label "your images")."""
    out: dict[str, dict[str, dict[str, tuple[int, int]]]] = {}
    for r in good_rows(table, "space_at_sizes"):
        size = parse_detail(r.detail).get("size", "?").replace("_", " ")
        if r.bytes_on_disk and r.raw_bytes:
            out.setdefault(size, {}).setdefault(r.backend, {})[r.options] = (r.bytes_on_disk, r.raw_bytes)
    for r in good_rows(table, "disk_usage"):
        if r.bytes_on_disk and r.raw_bytes and bi.known(r.backend):
            out.setdefault("your images", {}).setdefault(r.backend, {})[r.options] = (r.bytes_on_disk, r.raw_bytes)
    return out


def _claim7(table: ResultTable) -> tuple[str, str, list[str]]:
    sf = space_figures(table)
    figures, wins = [], []
    for size, per in sf.items():
        if FILES not in per or not (set(PACKED) & set(per)):
            continue
        best = {b: min(v[0] for v in opts.values()) for b, opts in per.items()}
        default = {b: next(iter(opts.values()))[0] for b, opts in per.items()}
        raw = next(iter(per[FILES].values()))[1]
        parts = [f"{_name(b)} {fmt_bytes(default[b])} ({default[b] / raw:.2f}x raw)" for b in _order(default)]
        line = f"{size}: " + ", ".join(parts)
        comp = {b: best[b] for b in best if best[b] < default[b]}
        if comp:
            line += "; compressed: " + ", ".join(f"{_name(b)} {fmt_bytes(v)}" for b, v in comp.items())
        figures.append(line)
        wins.append(default[FILES] <= min(default[b] for b in PACKED if b in default) * 1.02)
    if not wins:
        return "not measured", "no disk_usage/space_at_sizes rows for disk and LMDB/HDF5", figures
    if all(wins):
        return "confirmed", "PNG files are the smallest at every size measured", figures
    if not any(wins):
        return "refuted", "LMDB or HDF5 is smaller than the PNG files at every size measured", figures
    return "depends", f"PNG files are smallest at {sum(wins)} of {len(wins)} sizes", figures


def _claim8(table: ResultTable) -> tuple[str, str, list[str]]:
    """Decided like with like: one image stored, and one image read, per backend, by the same method
    (the article's, as the classic experiment did, else imgtui's)."""
    figures, verdicts = [], []
    for exp in ("store_one", "read_one"):
        for method in ("article", "imgtui"):
            rates = _rates(good_rows(table, exp, method=method))
            if FILES in rates and set(PACKED) & set(rates):
                break
        else:
            continue
        best = max((b for b in PACKED if b in rates), key=rates.get)
        figures.append(_rate_line(f"{exp} ({method} method)", rates,
                                  ranges=_ranges(good_rows(table, exp, method=method)))
                       + f" (PNG file {_x(rates[FILES], rates[best])} {_name(best)})")
        ratio = rates[FILES] / rates[best]
        verdicts.append("confirmed" if ratio >= TIE else ("refuted" if ratio < 1 / TIE else "tie"))
    if not verdicts:
        return "not measured", "no store_one/read_one rows for disk and LMDB/HDF5", figures
    if all(v == "confirmed" for v in verdicts):
        return "confirmed", "one PNG file is the fastest to store and to read back here", figures
    if all(v == "refuted" for v in verdicts):
        return "refuted", "LMDB or HDF5 store and read a single image faster than a PNG file here", figures
    what = ", ".join(f"{e}: {v}" for e, v in zip(("store_one", "read_one"), verdicts))
    return Mixed(zip(("store_one", "read_one"), verdicts)), f"single-image speed differs by operation ({what})", figures


def _claim9(table: ResultTable) -> tuple[str, str, list[str]]:
    facts = {(r.method): parse_detail(r.detail) for r in table.rows if r.experiment == "fact_mapsize"}
    plain, ours = facts.get("plain"), facts.get("imgtui")
    if plain is None:
        return "not measured", "no fact_mapsize rows (the map-size check did not run)", []
    mb = float(plain.get("mb", "0") or 0)
    figures = [f"plain py-lmdb, default map: {mb:.1f} MB of records "
               + ("written" if plain.get("ok") == "yes" else f"refused ({plain.get('how', 'MapFullError')})")]
    if ours is not None:
        figures.append(f"imgtui's LMDB writer, no options: {mb:.1f} MB "
                       + ("written, the map grown as needed" if ours.get("ok") == "yes" else f"failed ({ours.get('how', '')})")
                       + (f" (map {float(ours.get('map_mb', '0')):.0f} MB)" if ours.get("map_mb") else ""))
    if plain.get("ok") == "yes":
        return "refuted", "py-lmdb's default map held these records without any setting", figures
    if ours is not None and ours.get("ok") == "yes":
        return "depends", ("true of LMDB itself (its default map refused the records), not of imgtui's LMDB "
                           "backend, which sizes and grows the map itself"), figures
    return "confirmed", "the records did not fit without setting the map size", figures


# -- the scale claims (10 and 11) ---------------------------------------------------------------------
#: the comparisons repeated at growing counts (rows named ``scale_<experiment>``)
SCALE_OPS = ("store_many", "read_many", "random_batches")
SCALE_PREFIX = "scale_"


def scale_rows(table: ResultTable, exp: str) -> dict[int, dict[str, ResultRow]]:
    """count -> backend -> the row of ``scale_<exp>`` (imgtui method, no error)."""
    out: dict[int, dict[str, ResultRow]] = {}
    for r in table.rows:
        if r.experiment == SCALE_PREFIX + exp and r.error is None and r.method == "imgtui" and r.records_per_s:
            out.setdefault(r.count, {}).setdefault(r.backend, r)
    return out


def _lead(a: ResultRow, b: ResultRow) -> str:
    """"a" when ``a``'s records/s interval lies wholly above ``b``'s, "b" the other way round,
    "close" when the intervals overlap (bootstrap intervals of the median, else the ranges)."""
    alo, ahi = a.rate_range() or (a.records_per_s, a.records_per_s)
    blo, bhi = b.rate_range() or (b.records_per_s, b.records_per_s)
    if alo > bhi:
        return "a"
    if blo > ahi:
        return "b"
    return "close"


def _fig(r: ResultRow) -> str:
    lo, hi = r.rate_range() or (r.records_per_s, r.records_per_s)
    return f"{fmt_rate(r.records_per_s)}" + (f" ({fmt_rate_range(lo, hi)})" if r.spread else "")


def _combine(verdicts: list[str]) -> str:
    """One verdict from parts: all alike -> that; decided parts that disagree -> depends;
    decided parts that agree but others too close -> too close to call."""
    decided = {v for v in verdicts if v != TOO_CLOSE}
    if not decided:
        return TOO_CLOSE
    if len(decided) > 1:
        return "depends"
    return decided.pop() if TOO_CLOSE not in verdicts else TOO_CLOSE


def _claim10(table: ResultTable) -> tuple[str, str, list[str]]:
    """Decided on LMDB against HDF5, like with like per operation and count: at the largest count
    (LMDB ahead in every operation: large scale confirmed) and at the smallest (HDF5 ahead or
    within 15% of LMDB in every operation: "not too large" confirmed); the crossover points, if
    any, in the figures. An operation whose intervals overlap is too close to call."""
    figures: list[str] = []
    large, small, crossings = [], [], []
    top = low = None
    for op in SCALE_OPS:
        per = scale_rows(table, op)
        counts = sorted(c for c in per if LMDB in per[c] and HDF5 in per[c])
        if not counts:
            continue
        parts, winners = [], []
        for c in counts:
            rows = per[c]
            names = [b for b in (LMDB, HDF5, FILES) if b in rows]
            lead = _lead(rows[LMDB], rows[HDF5])
            w = {"a": "LMDB", "b": "HDF5", "close": "too close"}[lead]
            winners.append((c, w))
            parts.append(f"{c:,}: " + " vs ".join(f"{_name(b)} {_fig(rows[b])}" for b in names)
                         + f" ({w}, LMDB {rows[LMDB].records_per_s / rows[HDF5].records_per_s:.2f}x HDF5)")
        figures.append(f"{op}: " + "; ".join(parts) + " records/s")
        dec = [(c, w) for c, w in winners if w != "too close"]
        for (c0, w0), (c1, w1) in zip(dec, dec[1:]):
            if w0 != w1:
                crossings.append(f"{op}: {w0} ahead at {c0:,}, {w1} at {c1:,}")
        top, low = counts[-1], counts[0]
        lead_top = _lead(per[top][LMDB], per[top][HDF5])
        large.append({"a": "confirmed", "b": "refuted", "close": TOO_CLOSE}[lead_top])
        # "not too large": HDF5 ahead, or within TIE of LMDB, at the smallest count
        l_lo, l_hi = per[low][LMDB].rate_range() or (per[low][LMDB].records_per_s,) * 2
        h_lo, h_hi = per[low][HDF5].rate_range() or (per[low][HDF5].records_per_s,) * 2
        if h_lo * TIE >= l_hi:
            small.append("confirmed")
        elif h_hi * TIE < l_lo:
            small.append("refuted")
        else:
            small.append(TOO_CLOSE)
    if not large or top is None or low is None:
        return "not measured", "no scale rows for LMDB and HDF5 (run the claims with scale counts)", figures
    if top == low:
        return "not measured", f"measured at one count only ({top:,}): no scale to compare", figures
    figures.append("crossovers: " + ("; ".join(crossings) if crossings else "none (the same one ahead at every count, "
                                      "or too close to call)"))
    v_large, v_small = _combine(large), _combine(small)
    head = (f"at {top:,} records LMDB is ahead of HDF5 in {large.count('confirmed')} of {len(large)} operations "
            f"(behind in {large.count('refuted')}, too close in {large.count(TOO_CLOSE)}); at {low:,} HDF5 keeps up "
            f"(ahead or within {TIE - 1:.0%}) in {small.count('confirmed')} of {len(small)} (falls behind in "
            f"{small.count('refuted')}, too close in {small.count(TOO_CLOSE)})")
    if v_large == v_small:
        return v_large, head, figures
    if TOO_CLOSE in (v_large, v_small):
        return TOO_CLOSE, head + f" (large scale says {v_large}, small scale says {v_small})", figures
    return (Mixed((("large scale", v_large), ("small scale", v_small))),
            head + f" (large scale says {v_large}, small scale says {v_small})", figures)


def tuning_figures(table: ResultTable) -> dict[int, dict[tuple[str, str], ResultRow]]:
    """count -> (variant, op) -> the ``scale_hdf5_tuning`` row."""
    out: dict[int, dict[tuple[str, str], ResultRow]] = {}
    for r in table.rows:
        if r.experiment == SCALE_PREFIX + "hdf5_tuning" and r.error is None and r.records_per_s:
            d = parse_detail(r.detail)
            out.setdefault(r.count, {})[(d.get("variant", "?"), d.get("op", "?"))] = r
    return out


def _claim11(table: ResultTable) -> tuple[str, str, list[str]]:
    """Plain h5py at its defaults against the same tuned (chunks and chunk cache), random batches
    decide: tuned ahead at the largest count (intervals apart, by more than 15%) and its gain larger
    there than at the smallest count: confirmed; tuned ahead as much at every count: depends (the
    adjustment is not about scale); tuned not ahead at the largest: refuted."""
    tf = tuning_figures(table)
    counts = sorted(c for c, d in tf.items() if ("default", "random") in d and ("tuned", "random") in d)
    figures = []
    for c in sorted(tf):
        d = tf[c]
        parts = []
        for op, what in (("random", "random batches"), ("write", "write")):
            a, b = d.get(("default", op)), d.get(("tuned", op))
            if a and b:
                ca, cb = parse_detail(a.detail), parse_detail(b.detail)
                parts.append(f"{what}: default (chunk {ca.get('chunk', '?')} records, cache {ca.get('cache', '?')}) "
                             f"{_fig(a)} vs tuned (chunk {cb.get('chunk', '?')}, cache {cb.get('cache', '?')}) "
                             f"{_fig(b)} records/s ({b.records_per_s / a.records_per_s:.2f}x)")
        if parts:
            figures.append(f"{c:,}: " + "; ".join(parts))
    ours = scale_rows(table, "random_batches")
    mine = [f"{c:,} {_fig(ours[c][HDF5])}" for c in sorted(ours) if HDF5 in ours[c]]
    if mine:
        figures.append("imgtui's HDF5 backend (layout chosen from the count), random batches: " + ", ".join(mine)
                       + " records/s")
    if not counts:
        return "not measured", "no scale_hdf5_tuning rows (run the claims with scale counts)", figures
    top, low = counts[-1], counts[0]

    def gain(c: int) -> float:
        return tf[c][("tuned", "random")].records_per_s / tf[c][("default", "random")].records_per_s

    # the gain at the ends of the intervals: tuned's slow end over default's fast end, and back
    t_lo, t_hi = tf[top][("tuned", "random")].rate_range()  # type: ignore[misc]
    d_lo, d_hi = tf[top][("default", "random")].rate_range()  # type: ignore[misc]
    worst, best = t_lo / d_hi, t_hi / d_lo
    head = f"random batches at {top:,}: tuned {gain(top):.2f}x default" + (
        f" ({worst:.2f}-{best:.2f}x)" if best > worst else "") + (
        f"; at {low:,}: {gain(low):.2f}x" if low != top else "")
    if best < TIE:
        return "refuted", head + f": the defaults do as well (within {TIE - 1:.0%}) at the largest count", figures
    if worst < TIE:
        return TOO_CLOSE, head + f" (the intervals reach below a {TIE - 1:.0%} gain)", figures
    if low == top:
        return "depends", head + ": tuning pays, measured at one count only (scale not compared)", figures
    if gain(top) >= gain(low) * TIE:
        return "confirmed", head + ": tuning pays, and pays more as the count grows", figures
    return "depends", head + ": tuning pays as much at the smallest count (not a matter of scale)", figures


_EVALUATORS = {1: _claim1, 2: _claim2, 3: _claim3, 4: _claim4, 5: _claim5, 6: _claim6, 7: _claim7, 8: _claim8,
               9: _claim9, 10: _claim10, 11: _claim11}


def _favour_packed(r: ResultRow) -> int:
    return 1 if r.backend in PACKED else -1 if r.backend == FILES else 0


def _favour_files(r: ResultRow) -> int:
    return -_favour_packed(r)


def _favour_hdf5(r: ResultRow) -> int:
    return 1 if r.backend == HDF5 else -1 if r.method != "floor" else 0


def _favour_claim3(r: ResultRow) -> int:
    """LMDB scaling well and HDF5 not (with threads; processes decide on LMDB)."""
    who = 1 if r.backend == LMDB else -1 if r.backend in PACKED else 0
    return who * (1 if (r.readers or 1) > 1 else -1)


#: claim -> which rows' best end favours the claim (+1), which rows' best end speaks against it
#: (-1): the claim's verdict taken at both ends of every measured range (see evaluate_claims)
_FAVOUR: dict[int, Callable[[ResultRow], int]] = {
    1: _favour_packed, 2: _favour_hdf5, 3: _favour_claim3, 4: _favour_files, 8: _favour_files,
}


def range_view(table: ResultTable, favour: Callable[[ResultRow], int], sign: int) -> ResultTable:
    """``table`` with every timed row that has a spread moved to one end of its interval (the
    bootstrap interval of the median with enough trials, else the range of the trials): rows
    that ``favour`` marks +1 to the fast end and -1 rows to the slow end (``sign`` -1: the other
    way round); rows without a spread as they are."""
    rows = []
    for r in table.rows:
        f = favour(r) * sign
        n = r.records
        if f and r.spread and n:
            lo, hi = r.seconds_interval()  # type: ignore[misc]
            secs = lo if f > 0 else hi
            rows.append(replace(r, median_s=secs, records_per_s=n / secs if secs else r.records_per_s))
        else:
            rows.append(r)
    return ResultTable(rows=rows, machine=table.machine, plan=table.plan, dataset=table.dataset)


def _pair(rows: list[ResultRow], a: str, others: Iterable[str]) -> str | None:
    """``LMDB 5.1k-5.6k vs PNG files 4.9k-5.3k``: ``a`` against the fastest of ``others``."""
    rates, ranges = _rates(rows), _ranges(rows)
    rivals = [b for b in others if b in rates and b != a]
    if a not in rates or not rivals:
        return None
    b = max(rivals, key=rates.get)

    def one(x: str) -> str:
        lo, hi = ranges.get(x, (rates[x], rates[x]))
        return f"{_name(x)} {fmt_rate_range(lo, hi)}"

    return f"{one(a)} vs {one(b)}"


def headline_ranges(claim: int, table: ResultTable) -> str:
    """The ranges (records/s, or ms for changes) of the comparisons that decide ``claim``."""
    parts: list[str] = []
    if claim == 1:
        for exp in ("store_many", "read_many", "random_batches"):
            rows = good_rows(table, exp)
            rates = _rates(rows)
            packed = [b for b in PACKED if b in rates]
            if packed and FILES in rates:
                best = max(packed, key=rates.get)
                p = _pair(rows, best, [FILES])
                parts += [f"{exp} {p}"] if p else []
    elif claim == 2:
        rows = good_rows(table, "slice_read")
        for length in sorted({parse_detail(r.detail).get("slice", "?") for r in rows}, key=lambda x: int(x) if x.isdigit() else 0):
            sub = [r for r in rows if parse_detail(r.detail).get("slice", "?") == length]
            p = _pair(sub, HDF5, [r.backend for r in sub])
            parts += [f"slice of {length} {p}"] if p else []
    elif claim == 8:
        for exp in ("store_one", "read_one"):
            for method in ("article", "imgtui"):
                rows = good_rows(table, exp, method=method)
                rates = _rates(rows)
                if FILES in rates and set(PACKED) & set(rates):
                    p = _pair(rows, FILES, PACKED)
                    parts += [f"{exp} {p}"] if p else []
                    break
    elif claim == 4:
        mf = mutate_figures(table)
        for op in ("append", "overwrite", "delete"):
            have = [b for b in (FILES,) + PACKED if op in mf.get(b, {})]
            if FILES in have and len(have) > 1:
                def ms(b: str) -> str:
                    f = mf[b][op]
                    lo, hi = f.get("range") or (f["seconds"], f["seconds"])
                    return f"{_name(b)} {lo * 1000:,.0f}-{hi * 1000:,.0f} ms"
                parts.append(f"{op} " + " vs ".join(ms(b) for b in have))
    return "; ".join(parts)


def evaluate_claims(table: ResultTable) -> list[ClaimVerdict]:
    """A verdict per claim of ``CLAIMS`` from the rows of ``table`` (missing rows: "not measured").

    A timed claim is decided on the medians and again at both ends of the measured ranges: every
    figure at the end that favours the claim, then every figure at the end that speaks against it
    (``range_view``). When the three verdicts differ (a "depends" also when one of its parts differs,
    see ``Mixed``), the ranges overlap where it matters and the verdict is "too close to call", the
    headline quoting the medians and ranges it was decided on."""
    out = []
    for c in CLAIMS:
        verdict, summary, figures = _EVALUATORS[c.id](table)
        favour = _FAVOUR.get(c.id)
        if favour is not None and verdict != "not measured" and any(r.spread for r in table.rows):
            pro = _EVALUATORS[c.id](range_view(table, favour, +1))[0]
            con = _EVALUATORS[c.id](range_view(table, favour, -1))[0]
            if len({_verdict_key(verdict), _verdict_key(pro), _verdict_key(con)}) > 1:
                alts = " or ".join(dict.fromkeys(_verdict_text(v) for v in (con, verdict, pro)))
                ranges = headline_ranges(c.id, table)
                summary = (f"too close to call: within the measured intervals the figures say {alts}"
                           + (f" ({ranges})" if ranges else "") + f"; on the medians {verdict}: {summary}")
                verdict = TOO_CLOSE
        out.append(ClaimVerdict(c.id, c.title, c.text, str(verdict), summary, figures, list(c.experiments)))
    return out


def format_claims(verdicts: list[ClaimVerdict], width: int = 100) -> str:
    """The claims table as plain text: one block per claim."""
    import textwrap

    lines = []
    for v in verdicts:
        lines.append(f"{v.id}. [{v.verdict.upper()}] {v.title}: {v.claim}")
        lines.append(textwrap.indent(textwrap.fill(v.summary, width - 4), "    "))
        for f in v.figures:
            lines.append(textwrap.fill(f, width, initial_indent="    - ", subsequent_indent="      "))
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


# -- fact checks ---------------------------------------------------------------------------------
DRIFT_REQUIRED = ("missing_file", "extra_file", "renamed_file", "table_row_removed", "label_edited")
#: further drift kinds checked and reported without deciding the claim (none at present)
DRIFT_EXTRA: tuple[str, ...] = ()


def _small_records(n: int = 12):
    ds = SyntheticDataset(count=n, size=16, seed=11)
    return [ds.record(i) for i in range(n)]


def drift_facts(workdir: str | None = None) -> list[ResultRow]:
    """Break a fresh temporary disk store in each way of ``DRIFT_REQUIRED + DRIFT_EXTRA``, run
    ``verify()`` (and opening), one ``fact_drift`` row each: ``detail="drift=K detected=yes | msg"``."""
    recs = _small_records()
    base = Path(tempfile.mkdtemp(prefix="imgtui-drift-", dir=workdir))
    rows = []
    try:
        for kind in DRIFT_REQUIRED + DRIFT_EXTRA:
            path = base / kind
            with open_writer(path, FILES) as w:
                w.write_many(recs)
            if kind == "missing_file":
                (path / image_name(3)).unlink()
            elif kind == "extra_file":
                shutil.copy(path / image_name(2), path / image_name(2).replace(".png", "-copy.png"))
            elif kind == "renamed_file":
                (path / image_name(4)).rename(path / image_name(4).replace(".png", "-renamed.png"))
            elif kind == "table_row_removed":
                t = path / TABLE
                lines = t.read_text(encoding="utf-8").splitlines(keepends=True)
                t.write_text("".join(lines[:-1]), encoding="utf-8")
            elif kind == "label_edited":
                t = path / TABLE
                lines = t.read_text(encoding="utf-8").splitlines(keepends=True)
                cols = lines[6].split(",")
                cols[2] = str((int(cols[2]) + 1) % 10)
                lines[6] = ",".join(cols)
                t.write_text("".join(lines), encoding="utf-8")
            try:
                with open_store(path) as r:
                    v = r.verify()
                detected = not v.ok
                msg = v.errors[0] if v.errors else v.summary()
            except ImgtuiError as exc:  # refusing to open the store is detecting it too
                detected, msg = True, str(exc).splitlines()[0]
            msg = msg.replace(str(path) + "/", "").replace(str(path), "<store>")
            rows.append(ResultRow("fact_drift", FILES, "imgtui", len(recs), cache="",
                                  detail=f"drift={kind} detected={'yes' if detected else 'no'} | {msg}"))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return rows


def _read_disk_plain(path: Path):
    import csv

    from PIL import Image

    with open(path / "records.csv", newline="") as fh:
        row = next(csv.DictReader(fh))
    img = np.array(Image.open(path / row["file"]))
    shape = tuple(int(s) for s in row["shape"].split("x"))
    return img.reshape(shape), "csv + PIL (any image viewer opens the files)", "not needed"


def _read_hdf5_plain(path: Path):
    import h5py
    with h5py.File(path, "r") as f:
        return np.array(f["images"][0]), "h5py (HDFView/h5dump show the named datasets)", "self-describing"


def _read_lmdb_plain(path: Path):
    import struct

    import lmdb
    env = lmdb.open(str(path), readonly=True, lock=False, max_dbs=4)
    try:
        db = env.open_db(b"blocks", create=False)
        with env.begin() as txn:
            value = bytes(txn.get(struct.pack(">Q", 0), db=db))
    finally:
        env.close()
    magic, count, first = struct.unpack_from("<4sIQ", value)
    entry = np.dtype([("offset", "<u4"), ("nbytes", "<u4"), ("crc", "<u4"), ("h", "<u4"), ("w", "<u4"),
                      ("c", "<u2"), ("dtype", "u1"), ("ndim", "u1"), ("enc", "u1"), ("d", "<u4"), ("pad", "V3")])
    table = np.frombuffer(value, entry, count, struct.calcsize("<4sIQ"))
    e = table[0]
    dt = {1: "<u1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "<f8", 8: "?", 9: "<i1"}[int(e["dtype"])]
    shape = (int(e["h"]), int(e["w"]), int(e["c"]))[: int(e["ndim"])]
    if int(e["d"]):  # a 3-D record: depth d, then h, w and c if it has channels
        shape = (int(e["d"]), int(e["h"]), int(e["w"])) + ((int(e["c"]),) if int(e["c"]) else ())
    start = int(e["offset"])
    data = value[start : start + int(e["nbytes"])]
    if len(data) != int(e["nbytes"]):  # offsets relative to the end of the record table
        start += struct.calcsize("<4sIQ") + count * entry.itemsize
        data = value[start : start + int(e["nbytes"])]
    return np.frombuffer(data, dt).reshape(shape), "lmdb + struct, following imgtui's recipe", "needed"


#: backend -> how to read record 0 of its store with the backend's own library only (no imgtui)
PLAIN_READERS = {FILES: _read_disk_plain, LMDB: _read_lmdb_plain, HDF5: _read_hdf5_plain}


def portability_facts(workdir: str | None = None) -> list[ResultRow]:
    """Write a tiny store per backend that has a plain reader in ``PLAIN_READERS`` and read record 0
    back with only the backend's own library, the way ``get_backend(b).recipe()`` says; one
    ``fact_portability`` row per backend."""
    recs = _small_records(4)
    base = Path(tempfile.mkdtemp(prefix="imgtui-portable-", dir=workdir))
    rows = []
    try:
        for b in bi.names():
            reader = PLAIN_READERS.get(b)
            if reader is None:
                continue
            path = base / f"store-{b}{bi.get(b).suffix}"
            tools, layout, msg = "?", "?", ""
            try:
                with open_writer(path, b) as w:
                    w.write_many(recs)
                img, tools, layout = reader(path)
                ok = img.shape == recs[0].image.shape and np.array_equal(img, recs[0].image)
                msg = "" if ok else "record 0 read back differs"
            except Exception as exc:  # a failed plain read is the finding, not a crash
                ok, msg = False, str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            tools_key = tools.replace(" ", "_")
            rows.append(ResultRow("fact_portability", b, "plain", 1, cache="",
                                  detail=f"ok={'yes' if ok else 'no'} tools={tools_key} layout={layout.replace(' ', '_')}"
                                         + (f" | {msg}" if msg else "")))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return rows


def mapsize_facts(workdir: str | None = None, mb: float = 16.0) -> list[ResultRow]:
    """Write ``mb`` MB of records (more than py-lmdb's 10 MB default map) with plain py-lmdb at its
    defaults, and with imgtui's LMDB writer given no options; one ``fact_mapsize`` row each."""
    import lmdb
    import numpy as np

    from ..backends import open_writer
    from ..records import Record

    n = max(1, int(mb * 1e6 // (256 * 256 * 3)))
    rng = np.random.default_rng(0)
    recs = [Record(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8), i % 10) for i in range(n)]
    total = n * 256 * 256 * 3 / 1e6
    base = Path(tempfile.mkdtemp(prefix="imgtui-mapsize-", dir=workdir))
    rows = []
    try:
        env = lmdb.open(str(base / "plain.lmdb"))  # the library's defaults, as a first-time user writes
        try:
            with env.begin(write=True) as txn:
                for i, r in enumerate(recs):
                    txn.put(f"{i:08d}".encode(), r.image.tobytes())
            ok, how = True, ""
        except lmdb.MapFullError as exc:
            ok, how = False, f"MapFullError: {str(exc).splitlines()[0]}"
        finally:
            env.close()
        rows.append(ResultRow("fact_mapsize", "lmdb", "plain", n, cache="",
                              detail=f"ok={'yes' if ok else 'no'} mb={total:.1f}" + (f" | {how}" if how else "")))
        try:
            with open_writer(base / "ours.lmdb", "lmdb") as w:
                w.write_many(recs)
            info = lmdb.open(str(base / "ours.lmdb"), readonly=True, lock=False, max_dbs=4)
            map_mb = info.info()["map_size"] / 1e6
            info.close()
            detail = f"ok=yes mb={total:.1f} map_mb={map_mb:.0f}"
        except Exception as exc:
            detail = f"ok=no mb={total:.1f} | {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        rows.append(ResultRow("fact_mapsize", "lmdb", "imgtui", n, cache="", detail=detail))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return rows


# -- a claims run ----------------------------------------------------------------------------------
#: ``--quick``: at most this many records, and this many rounds unless repeats are given
QUICK_COUNT, QUICK_REPEATS = 500, 2
#: the scale claims' counts (records; a smaller dataset's records repeated up to them), and with
#: ``--quick``; 1,000,000 only when asked for (``--scale-counts 10k,100k,1m``)
SCALE_COUNTS, QUICK_SCALE_COUNTS = (10_000, 100_000), (1_000, 10_000)
#: rounds of the scale comparisons unless repeats are given (the default would be 1 from 100,000)
SCALE_REPEATS = 3
#: at most this share of the available memory is held by the records of the largest scale count
SCALE_MEMORY_SHARE = 0.4
FACT_EXPERIMENTS = ("fact_portability", "fact_drift", "fact_mapsize")


def claims_plan(dataset: str = "synthetic", count: int = 2000, workdir: str | None = None,
                repeats: int | None = None, backend_options: dict | None = None,
                experiments: Iterable[str] | None = None) -> BenchPlan:
    """The plan that measures every claim: imgtui's backends (all usable) and the numpy floor, one
    count, interleaved (each round every backend once, the order rotated each round)."""
    return BenchPlan(
        dataset=dataset, backends=bi.names(), methods=["imgtui", "floor"],
        experiments=list(experiments or CLAIM_EXPERIMENTS), counts=[int(count)], repeats=repeats, workdir=workdir,
        readers=[1, 2, 4], backend_options=dict(backend_options or {}), interleave=True,
    )


def _available_bytes() -> int:
    try:
        import psutil
        return int(psutil.virtual_memory().available)
    except Exception:  # no psutil: what sysconf says
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def scale_plan_counts(dataset: str, counts: Iterable[int], notes: list[str]) -> list[int]:
    """``counts`` sorted, without those whose records would not fit in ``SCALE_MEMORY_SHARE`` of
    the available memory (a note says which were left out and why), and a note when the dataset's
    records are repeated to reach a count."""
    counts = sorted({int(c) for c in counts})
    ds = open_dataset(dataset)
    first = next(iter(ds), None)
    if first is None:
        raise ImgtuiError(f"the dataset {dataset} has no records")
    rec_bytes = max(1, int(first.image.nbytes))
    budget = _available_bytes() * SCALE_MEMORY_SHARE
    fit = [c for c in counts if c * rec_bytes <= budget]
    if len(fit) < len(counts):
        out = [c for c in counts if c not in fit]
        notes.append(f"scale: {', '.join(f'{c:,}' for c in out)} records left out: "
                     f"{fmt_bytes(out[0] * rec_bytes)} of records would not fit in memory")
    n = ds.length
    if n is not None and fit and n < fit[-1]:
        notes.append(f"scale: the dataset has {n:,} records; they are repeated (record i is record i mod {n:,}) "
                     f"to reach {', '.join(f'{c:,}' for c in fit if c > n)}")
    return fit


def run_scale(dataset: str, counts: Iterable[int], *, workdir: str | None, repeats: int | None,
              memory_folder: str | Path | None, fresh: bool, backend_options: dict | None,
              on_event: Callable[[Event], None] | None, cancel: threading.Event | None) -> ResultTable:
    """The scale claims' measurements: store_many, read_many and random_batches for PNG files,
    LMDB and HDF5 at every count (interleaved, ``SCALE_REPEATS`` rounds), and hdf5_tuning; rows
    renamed ``scale_<experiment>``, kept in the results folder under their own fingerprint."""
    from .memory import Memory, fingerprint, run_remembered

    notes: list[str] = []
    counts = scale_plan_counts(dataset, counts, notes)
    table = ResultTable(notes=notes)
    if not counts:
        return table
    backends = [b for b in (FILES, LMDB, HDF5) if b in bi.names()]
    rounds = repeats or SCALE_REPEATS
    base = BenchPlan(dataset=dataset, backends=backends, methods=["imgtui"], experiments=list(SCALE_OPS),
                     counts=counts, repeats=rounds, workdir=workdir, backend_options=dict(backend_options or {}),
                     interleave=True, cycle=True)
    memory = None
    if memory_folder is not None:
        memory = Memory(fingerprint(dataset, counts[-1], backend_options, {"scale_counts": counts}), memory_folder)
    plans = [base]
    if HDF5 in backends:
        plans.append(replace(base, backends=[HDF5], experiments=["hdf5_tuning"]))
    for plan in plans:
        if cancel is not None and cancel.is_set():
            break
        part, _measured = run_remembered(plan, memory=memory, fresh=fresh, on_event=on_event,
                                         run=lambda p: run_plan(p, cancel))
        table.rows.extend(replace(r, experiment=SCALE_PREFIX + r.experiment) for r in part.rows)
        table.notes.extend(f"scale: {n}" for n in part.notes)
        table.machine = table.machine or part.machine
    return table


def _count_reused(table: ResultTable, n: int, when: list[str], memory) -> None:
    """Add ``n`` reused fact rows to the table's "reused N figures" note (or make the note)."""
    from .memory import reused_note

    for i, note in enumerate(table.notes):
        m = re.match(r"reused (\d+) figures?", note)
        if m:
            table.notes[i] = note.replace(m.group(0), f"reused {int(m.group(1)) + n} figures", 1)
            return
    table.notes.append(reused_note(n, when) + f" (results folder {memory.folder})")


def run_claims(
    dataset: str = "synthetic",
    count: int = 2000,
    *,
    workdir: str | None = None,
    repeats: int | None = None,
    on_event: Callable[[Event], None] | None = None,
    cancel: threading.Event | None = None,
    results_folder: str | Path | None = None,
    fresh: bool = False,
    quick: bool = False,
    backend_options: dict | None = None,
    experiments: Iterable[str] | None = None,
    facts: bool = True,
    scale_counts: Iterable[int] | None = None,
) -> ResultTable:
    """Run the claims plan on ``dataset`` (``count`` capped at its length) plus the fact checks.

    ``results_folder``: keep the rows there per dataset fingerprint (``memory.py``) and measure
    only what it lacks (``fresh``: measure everything again); ``quick``: at most 500 records and 2
    rounds. The table's ``notes`` say what was reused, quick, or measured on a busy machine.

    ``scale_counts``: the counts of the scale claims (10 and 11); None: ``SCALE_COUNTS`` (with
    ``quick`` ``QUICK_SCALE_COUNTS``) on a full run, none when ``experiments`` are chosen; empty:
    no scale measurements."""
    from .memory import Memory, fingerprint, run_remembered

    notes = []
    if quick:
        count = min(count, QUICK_COUNT)
        repeats = repeats or QUICK_REPEATS
    if not str(dataset).startswith("synthetic"):
        n = open_dataset(dataset).length
        if n is not None:
            count = min(count, n)
    plan = claims_plan(dataset, count, workdir, repeats, backend_options, experiments)
    rounds = plan.repeats or default_repeats(count)
    if quick:
        notes.append(f"quick: {count:,} records, {rounds} rounds (wider ranges, more verdicts too close to call)")
    memory = Memory(fingerprint(dataset, count, backend_options), results_folder) if results_folder is not None else None
    table, _measured = run_remembered(plan, memory=memory, fresh=fresh, on_event=on_event,
                                      run=lambda p: run_plan(p, cancel))
    table.notes[:0] = notes
    if scale_counts is None:
        scale_counts = () if experiments is not None else (QUICK_SCALE_COUNTS if quick else SCALE_COUNTS)
    scale_counts = list(scale_counts)
    if scale_counts and (cancel is None or not cancel.is_set()):
        scale = run_scale(dataset, scale_counts, workdir=workdir, repeats=repeats, memory_folder=results_folder,
                          fresh=fresh, backend_options=backend_options, on_event=on_event, cancel=cancel)
        table.rows.extend(scale.rows)
        table.notes.extend(scale.notes)
        if 1_000_000 not in scale_counts:
            table.notes.append(f"scale: measured at {', '.join(f'{c:,}' for c in sorted(scale_counts))} records; "
                               "1,000,000 only when asked for (--scale-counts 10k,100k,1m)")
    if facts and (cancel is None or not cancel.is_set()):
        if memory is not None and not fresh and all(memory.covers(f, [], 1) for f in FACT_EXPERIMENTS):
            rows, when = memory.rows(FACT_EXPERIMENTS)
            _count_reused(table, len(rows), when, memory)
        else:
            rows = portability_facts(workdir) + drift_facts(workdir) + mapsize_facts(workdir)
            if memory is not None:
                memory.put(rows, 1)
                memory.save()
        table.rows.extend(rows)
    return table
