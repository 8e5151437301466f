"""``imgtui bench``: run a benchmark plan headless, show progress and a results table, export them."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from . import backend_info as bi
from ..errors import ImgtuiError
from .experiments import DEFAULT_EXPERIMENTS, EXPERIMENT, EXPERIMENTS
from .fmt import fmt_bytes, fmt_seconds
from .machine import busy_warning
from .memory import bench_events, results_dir
from .peers import PEERS
from .model import ALL_METHODS, METHODS, PEER_METHOD, BenchPlan, Error, Finished, Progress, Result, ResultRow, Started
from .plot import save_plot
from .run import run_plan


class BenchUsageError(Exception):
    """A bad ``imgtui bench`` option: one line, exit code 2."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    names = bi.names()
    b = subparsers.add_parser(
        "bench",
        help=f"time {bi.human_list(bi.short_name(n) for n in names)} against the article's methods and the raw-bytes floor",
        description="Benchmark storing and reading records with each backend (imgtui and the article's "
        "plain methods) against the numpy floor; print a results table and export JSON/CSV/plots.",
    )
    b.add_argument("--dataset", default="synthetic", metavar="SPEC",
                   help="dataset spec (default: synthetic CIFAR-like 32x32x3; a folder, CIFAR batches, .npz, a store)")
    b.add_argument("--on-error", choices=["stop", "skip"], default="stop",
                   help="unreadable image files or records: stop (default) or skip them")
    b.add_argument("--backends", default=None, metavar="LIST",
                   help=f"comma list of {','.join(names)} (default: all of them)")
    b.add_argument("--experiments", default=None, metavar="LIST",
                   help=f"comma list of {','.join(EXPERIMENTS)} or 'all' (default: all but concurrent_readers)")
    b.add_argument("--counts", default="10,100,1000", metavar="LIST", help="record counts, e.g. 10,100,1000,10k")
    b.add_argument("--repeats", default=None, metavar="N", help="timed repeats (default 3; 1 from 100,000 records)")
    b.add_argument("--methods", default=",".join(METHODS), metavar="LIST",
                   help="comma list of article,imgtui,floor,peer (peer: the formats of --peers; default "
                        "article,imgtui,floor)")
    b.add_argument("--peers", default=None, metavar="LIST",
                   help="comma list of webdataset,litdata,mds,zarr or 'all': the formats users pick instead, "
                        "each as its docs show (adds the peer method; needs pip install 'imgtui[peers]')")
    b.add_argument("--readers", default="1,2,4", metavar="LIST", help="reader processes for concurrent_readers")
    b.add_argument("--cold", action="store_true", help="also read with a cold page cache (fadvise DONTNEED)")
    b.add_argument("--interleave", action="store_true",
                   help="time in rounds, every backend once per round, the order rotated each round (as claims and recommend do)")
    b.add_argument("--fresh", action="store_true",
                   help="measure everything again (by default figures kept in the results folder for the same "
                        "dataset, count, options, imgtui version and machine are reused)")
    b.add_argument("--workdir", default=None, metavar="DIR", help="folder for the temporary stores (default: system temp)")
    b.add_argument("--json", default=None, metavar="FILE", help="write the results as JSON")
    b.add_argument("--csv", default=None, metavar="FILE", help="write the results as CSV")
    b.add_argument("--plot", default=None, metavar="FILE", help="draw the figures to FILE.svg or FILE.png")
    b.add_argument("--quiet", "-q", action="store_true", help="no progress display and no table")
    bi.add_option_flags(b, "imgtui backend options")
    return b


# -- option parsing -------------------------------------------------------------------------
def _int(text: str, what: str, lo: int = 1) -> int:
    t = str(text).strip().lower().replace("_", "").replace(",", "")
    mult = 1
    if t.endswith("k"):
        t, mult = t[:-1], 1000
    elif t.endswith("m"):
        t, mult = t[:-1], 1_000_000
    try:
        v = int(float(t) * mult) if "." in t or "e" in t else int(t) * mult
    except ValueError:
        raise BenchUsageError(f"{what}: {text!r} is not a whole number") from None
    if v < lo:
        raise BenchUsageError(f"{what}: {text!r} must be at least {lo}")
    return v


def _list(text: str, known: tuple[str, ...], what: str) -> list[str]:
    items = [x.strip().lower() for x in str(text).split(",") if x.strip()]
    if items == ["all"]:
        return list(known)
    if what == "backends":
        items = [bi.canonical(x) if bi.known(x) else x for x in items]
        for x in items:
            if bi.known(x) and x not in known:
                bi.get(x)  # registered but its optional package is missing: says what to install
    bad = [x for x in items if x not in known]
    if bad:
        raise BenchUsageError(f"--{what}: unknown {', '.join(map(repr, bad))} (choose from {', '.join(known)})")
    if not items:
        raise BenchUsageError(f"--{what} is empty (choose from {', '.join(known)})")
    return list(dict.fromkeys(items))


def plan_from_args(args: argparse.Namespace) -> BenchPlan:
    """A BenchPlan from the parsed options; BenchUsageError (one line) for bad values."""

    plan = BenchPlan(dataset=args.dataset or "synthetic", on_error=args.on_error)
    names = tuple(bi.names())
    plan.backends = _list(args.backends, names, "backends") if args.backends is not None else bi.benchmark_defaults()
    plan.methods = _list(",".join("peer" if m.strip().lower() == "peers" else m for m in str(args.methods).split(",")),
                         ALL_METHODS, "methods")
    if getattr(args, "peers", None) is not None:
        plan.peers = _list(args.peers, PEERS, "peers")
        if PEER_METHOD not in plan.methods:
            plan.methods.append(PEER_METHOD)
    plan.experiments = _list(args.experiments, EXPERIMENTS, "experiments") if args.experiments else list(DEFAULT_EXPERIMENTS)
    plan.counts = list(dict.fromkeys(_int(c, "--counts") for c in str(args.counts).split(",") if c.strip()))
    if not plan.counts:
        raise BenchUsageError("--counts is empty (give record counts like 10,100,1000)")
    plan.repeats = _int(args.repeats, "--repeats") if args.repeats is not None else None
    plan.readers = [_int(k, "--readers") for k in str(args.readers).split(",") if k.strip()]
    plan.cold = bool(args.cold)
    plan.interleave = bool(getattr(args, "interleave", False))
    if args.workdir is not None:
        if not Path(args.workdir).is_dir():
            raise BenchUsageError(f"--workdir {args.workdir}: no such folder")
        plan.workdir = str(args.workdir)
    try:
        opts = bi.options_from_args(args)
    except bi.OptionValueError as exc:
        raise BenchUsageError(str(exc)) from None
    plan.backend_options = opts
    if args.plot is not None and Path(args.plot).suffix.lower() not in (".svg", ".png"):
        raise BenchUsageError(f"--plot {args.plot}: the file name must end in .svg or .png")
    for flag in ("json", "csv", "plot"):
        value = getattr(args, flag)
        if value is not None and not Path(value).expanduser().resolve().parent.is_dir():
            raise BenchUsageError(f"--{flag} {value}: folder {Path(value).parent} does not exist")
    return plan


# -- display ----------------------------------------------------------------------------
_ORDER = {e: i for i, e in enumerate(EXPERIMENTS)}
_SERIES = {("numpy", "floor"): 0, ("memcpy", "floor"): 1}


def _series_key(r: ResultRow, order: tuple[str, ...] | None = None) -> tuple:
    order = tuple(bi.registered()) if order is None else order
    if r.method == PEER_METHOD:  # the peers after imgtui's own rows, in their own order
        return (3, PEERS.index(r.backend) if r.backend in PEERS else len(PEERS), 9)
    return (_SERIES.get((r.backend, r.method), 2), order.index(r.backend) if r.backend in order else len(order),
            METHODS.index(r.method) if r.method in METHODS else 9)


def series_name(r: ResultRow) -> str:
    """'floor', 'memcpy', 'imgtui lmdb', 'article disk'."""
    if r.method == "floor":
        return "floor" if r.backend == "numpy" else r.backend
    return f"{r.method} {r.backend}"


def results_table(rows: list[ResultRow], title: str = "imgtui bench"):
    """One compact rich table per experiment (only the columns that experiment fills)."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    tables: list[Any] = [Text(title, style="bold")]
    cold = any(r.cache == "cold" for r in rows)
    for exp in sorted({r.experiment for r in rows}, key=lambda e: _ORDER.get(e, 99)):
        order = tuple(bi.registered())
        sub = sorted((r for r in rows if r.experiment == exp),
                     key=lambda r: (r.count, r.readers or 0, r.cache, _series_key(r, order)))
        timed = exp != "disk_usage"
        meta = EXPERIMENT.get(exp)
        sized = meta is not None and meta.sized
        parallel = meta is not None and meta.parallel
        cold_col = cold and meta is not None and meta.kind == "read"
        t = Table(title=exp, title_justify="left", title_style="bold cyan", header_style="bold",
                  box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0), pad_edge=False)
        t.add_column("n", justify="right")
        if parallel:
            t.add_column("K", justify="right")
        t.add_column("method")
        if cold_col:
            t.add_column("cache")
        if timed:
            t.add_column("median", justify="right")
            t.add_column("min", justify="right")
            t.add_column("max", justify="right")
            t.add_column("rec/s", justify="right")
        t.add_column("x floor", justify="right")
        if sized:
            t.add_column("on disk", justify="right")
            t.add_column("x raw", justify="right")
        if timed:
            t.add_column("RSS", justify="right")
            t.add_column("+RSS", justify="right")
        for c in t.columns:
            c.no_wrap = True
        last = None
        for r in sub:
            if last is not None and r.count != last:
                t.add_section()
            last = r.count
            cells = [f"{r.count:,}"]
            if parallel:
                cells.append(str(r.readers or ""))
            cells.append(series_name(r))
            if cold_col:
                cells.append(r.cache)
            ncols = len(t.columns)
            if r.error:
                cells.append(Text("error", style="red"))
                cells.extend([""] * (ncols - len(cells)))
                t.add_row(*cells)
                continue
            if timed:
                cells += [fmt_seconds(r.median_s, ""), fmt_seconds(r.min_s, ""), fmt_seconds(r.max_s, ""),
                          "" if r.records_per_s is None else f"{r.records_per_s:,.0f}"]
            cells.append("" if r.ratio_to_floor is None else f"{r.ratio_to_floor:,.2f}")
            if sized:
                ov = r.overhead
                cells += [fmt_bytes(r.bytes_on_disk, ""), "" if ov is None else f"{ov:.2f}"]
            if timed:
                cells += [fmt_bytes(r.peak_rss_bytes, ""), fmt_bytes(r.rss_growth_bytes, "")]
            t.add_row(*cells)
        tables.append(t)
    return Group(*tables)


def _skip_missing_peers(plan: BenchPlan) -> None:
    """Peers whose package is missing: one line each on stderr, then left out of the plan."""
    if PEER_METHOD not in plan.methods:
        return
    from .peers import missing

    keep = []
    for name in plan.peers or PEERS:
        why = missing(name)
        if why is None:
            keep.append(name)
        else:
            print(f"imgtui bench: peer {name}: {why}", file=sys.stderr)
    plan.peers = keep
    if not keep:
        plan.methods.remove(PEER_METHOD)
        if not plan.methods:
            raise BenchUsageError("no peer can run here and no other method was chosen")


def run(args: argparse.Namespace) -> int:

    def usage(msg: str) -> int:
        print(f"imgtui bench: error: {msg}", file=sys.stderr)
        return 2

    try:
        plan = plan_from_args(args)
        _skip_missing_peers(plan)
        cancel = threading.Event()
        events = bench_events(plan, run=lambda p: run_plan(p, cancel), folder=results_dir(),
                              fresh=bool(getattr(args, "fresh", False)))
    except BenchUsageError as exc:
        return usage(str(exc))
    except ImgtuiError as exc:
        return usage(str(exc).strip().splitlines()[0])

    # Ctrl-C: ask the engine to stop (it cleans up and says Finished); a second Ctrl-C aborts.
    old_handler = None
    interrupted = {"n": 0}

    def on_sigint(signum, frame):
        interrupted["n"] += 1
        cancel.set()
        if interrupted["n"] > 1:
            raise KeyboardInterrupt

    try:
        old_handler = signal.signal(signal.SIGINT, on_sigint)
    except ValueError:  # not the main thread: KeyboardInterrupt handling below still applies
        old_handler = None

    from rich.console import Console

    err = Console(stderr=True)
    finished: Finished | None = None
    errors: list[Error] = []
    t0 = time.perf_counter()
    try:
        if args.quiet:
            for ev in events:
                if isinstance(ev, Error):
                    errors.append(ev)
                elif isinstance(ev, Finished):
                    finished = ev
        else:
            finished = _run_with_progress(events, err, errors)
    except KeyboardInterrupt:
        cancel.set()
        try:
            events.close()  # runs the engine's cleanup
        except Exception:
            pass
        print("imgtui bench: interrupted; temporary stores removed", file=sys.stderr)
        return 130
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGINT, old_handler)
    wall = time.perf_counter() - t0
    if finished is None or finished.cancelled:
        print("imgtui bench: cancelled; temporary stores removed", file=sys.stderr)
        return 130
    table = finished.results
    table.plan.setdefault("wall_s", round(wall, 3))
    if not args.quiet:
        Console().print(results_table(table.rows, f"imgtui bench: {table.dataset}"))
    outputs = []
    if args.json:
        table.to_json(args.json)
        outputs.append(args.json)
    if args.csv:
        table.to_csv(args.csv)
        outputs.append(args.csv)
    if args.plot:
        save_plot(table, args.plot)
        outputs.append(args.plot)
    for e in errors:
        print(f"imgtui bench: {e.experiment} {e.backend}/{e.method} at {e.count:,}: {e.message}", file=sys.stderr)
    for note in table.notes:
        print(f"imgtui bench: {note}", file=sys.stderr)
    warn = busy_warning(table.machine)
    if warn:
        print(f"imgtui bench: {warn}", file=sys.stderr)
    if not args.quiet:
        print(f"{len(table.rows)} results in {wall:,.1f} s" + (f"; wrote {', '.join(outputs)}" if outputs else ""),
              file=sys.stderr)
    return 0


def _run_with_progress(events, console, errors: list) -> Finished | None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeElapsedColumn

    finished = None
    with Bar(
        TextColumn("{task.description}", justify="left"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        overall = bar.add_task("plan", total=None)
        current = bar.add_task("", total=None)
        for ev in events:
            if isinstance(ev, Started):
                bar.update(overall, total=ev.steps, completed=ev.step - 1, description=f"step {ev.step}/{ev.steps}")
                bar.update(current, completed=0, total=None,
                           description=f"{ev.experiment} {ev.backend}/{ev.method} n={ev.count:,}")
            elif isinstance(ev, Progress):
                bar.update(current, completed=ev.done, total=ev.total or None)
            elif isinstance(ev, Result):
                bar.update(overall, completed=bar.tasks[0].completed + 0)
            elif isinstance(ev, Error):
                errors.append(ev)
            elif isinstance(ev, Finished):
                bar.update(overall, completed=bar.tasks[0].total or 0)
                finished = ev
    return finished
