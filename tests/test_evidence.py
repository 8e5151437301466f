"""Evidence you can trust (issue 16): figures with their spread, interleaved rounds, verdicts that
say "too close to call" when ranges overlap, and the results folder that claims and recommend reuse."""

from __future__ import annotations

import json
import time

import pytest

from imgtui.bench.claims import TOO_CLOSE, VERDICTS, evaluate_claims, run_claims
from imgtui.bench.machine import busy_warning, cores, cpu_snapshot, load_record, others_share
from imgtui.bench.memory import Memory, fingerprint, results_dir
from imgtui.bench.model import BenchPlan, ResultRow, ResultTable, Started
from imgtui.bench.plan import plan_steps, rotated
from imgtui.bench.recommend import Needs, Profile, recommend, recommend_for_dataset
from imgtui.bench.run import combine_rounds, run_plan
from imgtui.cli import main

N = 1000


def rate_row(exp: str, backend: str, rate: float, lo: float | None = None, hi: float | None = None,
             readers: int | None = None, **kw) -> ResultRow:
    """A timed row of N records at ``rate`` records/s, its trials ranging ``lo``..``hi`` records/s."""
    lo, hi = lo or rate, hi or rate
    return ResultRow(exp, backend, "imgtui", N, repeats=3, median_s=N / rate, min_s=N / hi, max_s=N / lo,
                     records_per_s=rate, readers=readers, **kw)


def verdict(table: ResultTable, claim: int):
    return next(v for v in evaluate_claims(table) if v.id == claim)


# -- verdicts on fixed result sets -------------------------------------------------------------------
def test_too_close_is_a_verdict():
    assert TOO_CLOSE in VERDICTS


def test_claim1_overlapping_ranges_are_too_close_to_call_and_tight_ones_decide():
    ops = ("store_many", "read_many", "random_batches")
    # LMDB's median is 2.2x PNG's, but its slowest trial is below 2x PNG's fastest: too close
    wide = ResultTable(rows=[r for e in ops for r in (rate_row(e, "disk", 1000, 900, 1100),
                                                      rate_row(e, "lmdb", 2200, 1500, 2600))])
    v = verdict(wide, 1)
    assert v.verdict == TOO_CLOSE
    assert "store_many LMDB 1.5k-2.6k vs disk 900-1.1k" in v.summary  # both ranges in the headline
    assert "on the medians confirmed" in v.summary
    assert any("LMDB 2.2k (1.5k-2.6k)" in f for f in v.figures)
    # the same medians, measured tightly: decided
    tight = ResultTable(rows=[r for e in ops for r in (rate_row(e, "disk", 1000, 990, 1010),
                                                       rate_row(e, "lmdb", 2200, 2150, 2250))])
    assert verdict(tight, 1).verdict == "confirmed"
    # equal figures whose ranges overlap cannot confirm "much faster" at either end: refuted
    equal = ResultTable(rows=[r for e in ops for r in (rate_row(e, "disk", 1000, 950, 1050),
                                                       rate_row(e, "lmdb", 1000, 950, 1050))])
    assert verdict(equal, 1).verdict == "refuted"


def test_claim3_threads_and_processes_with_ranges():
    def table(th: dict, pr: dict) -> ResultTable:
        rows = []
        for exp, figures in (("parallel_threads", th), ("parallel_processes", pr)):
            for backend, (one, many) in figures.items():
                rows.append(rate_row(exp, backend, one[0], one[1], one[2], readers=1))
                rows.append(rate_row(exp, backend, many[0], many[1], many[2], readers=4))
        return ResultTable(rows=rows)

    tight = lambda v: (v, v * 0.98, v * 1.02)  # noqa: E731
    # the session's case (LMDB 0.73x with threads, 1.25x with processes) stays DEPENDS with ranges
    v = verdict(table({"hdf5": (tight(100), tight(66)), "lmdb": (tight(779.6), tight(568.8))},
                      {"hdf5": (tight(100), tight(208)), "lmdb": (tight(100), tight(125))}), 3)
    assert v.verdict == "depends"
    assert v.summary.startswith("threads: HDF5 0.66x (0.63-0.69x), LMDB 0.73x (0.70-0.76x)")
    assert "(threads say refuted, processes say confirmed)" in v.summary
    # confirmed on tight figures ...
    both = {"hdf5": (tight(100), tight(95)), "lmdb": (tight(100), tight(180))}
    procs = {"hdf5": (tight(100), tight(150)), "lmdb": (tight(100), tight(170))}
    assert verdict(table(both, procs), 3).verdict == "confirmed"
    # ... too close to call when LMDB's threads range reaches down to HDF5's
    noisy = dict(both, lmdb=((100, 60, 140), (180, 100, 200)))
    v = verdict(table(noisy, procs), 3)
    assert v.verdict == TOO_CLOSE
    assert "LMDB 1.80x (0.71-3.33x)" in v.summary and "HDF5 0.95x (0.91-0.99x)" in v.summary
    # DEPENDS at every end of the intervals, but a part flips: the processes half is confirmed on
    # the medians and only "depends" at the far end of LMDB's range (a second run measured it so)
    refuted_threads = {"hdf5": (tight(100), tight(66)), "lmdb": (tight(100), tight(73))}
    flip = {"hdf5": (tight(100), tight(124)), "lmdb": ((100, 95, 105), (193, 120, 209))}
    v = verdict(table(refuted_threads, flip), 3)
    assert v.verdict == TOO_CLOSE
    assert "depends (threads refuted, processes depends) or depends (threads refuted, processes confirmed)" in v.summary
    steady = {"hdf5": (tight(100), tight(124)), "lmdb": (tight(100), tight(193))}
    assert verdict(table(refuted_threads, steady), 3).verdict == "depends"  # the parts hold: decided


def test_rows_without_a_spread_decide_as_before():
    """Old results files (no max_s) and single trials: no range, the median decides."""
    rows = [ResultRow(e, b, "imgtui", N, median_s=N / r, records_per_s=r)
            for e in ("store_many", "read_many", "random_batches") for b, r in (("disk", 1000), ("lmdb", 2100))]
    assert verdict(ResultTable(rows=rows), 1).verdict == "confirmed"


def test_recommend_says_too_close_when_the_deciding_ranges_overlap():
    usage = [ResultRow("disk_usage", b, "imgtui", N, bytes_on_disk=3_100_000, raw_bytes=3_072_000, cache="")
             for b in ("lmdb", "hdf5")]
    close = ResultTable(rows=[rate_row("random_batches", "lmdb", 620_000, 500_000, 700_000),
                              rate_row("random_batches", "hdf5", 600_000, 550_000, 650_000)] + usage)
    rec = recommend(Profile(count=100_000, total_bytes=10**10), Needs(access="random"), close, ["lmdb", "hdf5"])
    assert rec.too_close == ["random_batches: LMDB 500.0k-700.0k vs HDF5 550.0k-650.0k"]
    assert not any("faster random batches" in r for r in rec.reasons)  # no speed claim on overlapping figures
    text = rec.format()
    assert "Too close to call (the measured intervals overlap):" in text
    # and it says what the bracketed figures are: 3 trials give min-max ranges, not bootstrap intervals
    assert "Figures in brackets: min-max range of 3 trials (a bootstrap interval needs 5 or more)" in text
    from imgtui.tui.screens.recommend import render_recommendation

    shown = render_recommendation(rec).plain  # the app's recommend screen says the same
    assert "Too close to call (the measured intervals overlap)\n • random_batches: LMDB 500.0k-700.0k" in shown
    assert "Figures in brackets: min-max range of 3 trials" in shown
    apart = ResultTable(rows=[rate_row("random_batches", "lmdb", 620_000, 610_000, 630_000),
                              rate_row("random_batches", "hdf5", 300_000, 290_000, 310_000)] + usage)
    rec = recommend(Profile(count=100_000, total_bytes=10**10), Needs(access="random"), apart, ["lmdb", "hdf5"])
    assert rec.backend == "lmdb" and rec.too_close == []
    assert ("LMDB: 2.1x faster random batches than HDF5 on your images (620.0k [610.0k-630.0k] vs "
            "300.0k [290.0k-310.0k] records/s)") in rec.reasons


# -- interleaving ---------------------------------------------------------------------------------------
def test_interleaved_plan_rotates_the_backends_every_round():
    plan = BenchPlan(dataset="synthetic:count=20,size=8", backends=["disk", "lmdb", "hdf5"], methods=["imgtui"],
                     experiments=["random_batches", "disk_usage", "parallel_threads"], counts=[20], repeats=3,
                     readers=[1, 2], interleave=True)
    steps = plan_steps(plan)
    seq = [s.backend for s in steps if s.experiment == "random_batches"]
    assert seq == ["disk", "lmdb", "hdf5", "lmdb", "hdf5", "disk", "hdf5", "disk", "lmdb"]
    assert [s.round for s in steps if s.experiment == "random_batches"] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    # bytes on disk do not vary between trials: measured once
    assert [s.backend for s in steps if s.experiment == "disk_usage"] == ["disk", "lmdb", "hdf5"]
    # a parallel experiment keeps a backend's reader counts together within each round
    par = [(s.backend, s.readers) for s in steps if s.experiment == "parallel_threads"]
    assert par[:6] == [("disk", 1), ("disk", 2), ("lmdb", 1), ("lmdb", 2), ("hdf5", 1), ("hdf5", 2)]
    assert par[6:8] == [("lmdb", 1), ("lmdb", 2)]
    assert rotated([1, 2, 3], 4) == [2, 3, 1] and rotated([], 2) == []
    # not interleaved: a backend's experiments together, as `imgtui bench` always did
    plain = plan_steps(BenchPlan(**{**plan.to_dict(), "interleave": False}))
    assert [s.backend for s in plain if s.experiment == "random_batches"] == ["disk", "lmdb", "hdf5"]


def test_an_interleaved_run_measures_in_rotated_order_and_reports_the_spread(tmp_path):
    plan = BenchPlan(dataset="synthetic:count=20,size=8", backends=["disk", "lmdb", "hdf5"],
                     methods=["imgtui", "floor"], experiments=["store_many", "random_batches"], counts=[20],
                     repeats=3, readers=[1], workdir=str(tmp_path), interleave=True)
    events = list(run_plan(plan))
    started = [e for e in events if isinstance(e, Started)]
    seq = [e.backend for e in started if e.experiment == "random_batches"]
    assert seq == ["numpy", "disk", "lmdb", "hdf5", "disk", "lmdb", "hdf5", "numpy", "lmdb", "hdf5", "numpy", "disk"]
    assert {(e.round, e.rounds) for e in started} == {(0, 3), (1, 3), (2, 3)}
    table = events[-1].results
    rows = [r for r in table.rows if r.experiment == "random_batches"]
    assert sorted(r.backend for r in rows) == ["disk", "hdf5", "lmdb", "numpy"]  # one row per backend
    for r in rows:
        assert r.error is None and r.repeats == 3
        assert r.min_s <= r.median_s <= r.max_s
        lo, hi = r.rate_range()
        assert lo <= r.records_per_s <= hi
    assert all(r.ratio_to_floor for r in rows)
    assert isinstance(table.machine["load_start"], float) and isinstance(table.machine["load_end"], float)
    assert "busy" in table.machine and table.machine["load_cores"] >= 1
    assert not list(tmp_path.iterdir())  # every store removed


def test_combine_rounds_takes_median_min_max():
    rows = [ResultRow("read_many", "lmdb", "imgtui", 10, repeats=1, median_s=s, min_s=s, max_s=s,
                      records_per_s=10 / s) for s in (0.2, 0.1, 0.4)]
    r = combine_rounds(rows)
    assert (r.repeats, r.median_s, r.min_s, r.max_s) == (3, 0.2, 0.1, 0.4)
    assert r.records_per_s == pytest.approx(50) and r.rate_range() == pytest.approx((25, 100))
    bad = combine_rounds(rows[:2] + [ResultRow("read_many", "lmdb", "imgtui", 10, error="boom")])
    assert bad.error == "boom"


def test_csv_and_json_carry_max_s(tmp_path):
    t = ResultTable(rows=[rate_row("read_many", "lmdb", 1000, 900, 1100)], machine=load_record(0.5, 0.6))
    t.to_csv(tmp_path / "r.csv")
    t.to_json(tmp_path / "r.json")
    for back in (ResultTable.from_csv(tmp_path / "r.csv"), ResultTable.from_json(tmp_path / "r.json")):
        assert back.rows[0].max_s == pytest.approx(N / 900)
    assert ResultTable.from_json(tmp_path / "r.json").machine["load_start"] == 0.5


def test_busy_warning():
    assert busy_warning({"load_start": 0.2, "load_end": 0.3, "load_cores": 2, "busy": False}) is None
    w = busy_warning({"load_start": 3.9, "load_end": 1.0, "load_cores": 2, "busy": True})
    assert w.startswith("warning: the machine was busy (load 3.90 at the start, 1.00 at the end, on 2 cores)")
    assert "\n" not in w
    assert load_record(1.5, 0.1)["busy"] is (1.5 / load_record(0, 0)["load_cores"] > 0.7)


def test_busy_is_decided_by_other_processes_cpu_not_by_the_run_s_own_load():
    n = cores()
    # the load at the end is the run's own work: with the others' share known it does not decide
    assert load_record(0.1, 1.9 * n, others=0.05)["busy"] is False
    assert load_record(0.1, 0.1, others=0.4)["busy"] is True
    assert load_record(1.9 * n, 0.1, others=0.05)["busy"] is False  # the load of the command's previous run
    w = busy_warning(load_record(0.2, 1.0, others=0.4))
    assert w.startswith(f"warning: the machine was busy (other processes used 40% of its {n} core")
    assert "load 0.20 at the start" in w
    # others = machine busy time - own time, over wall x cores
    assert others_share((0.0, 100.0, 10.0), (10.0, 100.0 + 10.0 + 2.0 * n, 20.0)) == pytest.approx(0.2)
    assert others_share((0.0, 100.0, 10.0), (10.0, 105.0, 20.0)) == 0.0  # never below zero
    assert others_share((0.0, 1.0, 1.0), (0.1, 2.0, 1.0)) is None and others_share(None, (1, 2, 3)) is None
    # a real snapshot counts this process's own CPU as its own: the machine was busy at least that long
    a = cpu_snapshot()
    t = time.process_time()
    while time.process_time() - t < 0.3:
        pass
    b = cpu_snapshot()
    own, machine = b[2] - a[2], b[1] - a[1]
    assert own >= 0.25 and machine >= own * 0.8


# -- the results folder ---------------------------------------------------------------------------------
EXPS = ["store_many", "random_batches", "disk_usage"]


def notes(t) -> list[str]:
    """The table's notes without the busy-machine warning (which depends on the machine's load)."""
    return [n for n in t.notes if not n.startswith("warning:")]


def claims(tmp_path, folder, **kw):
    started: list = []
    kw.setdefault("count", 20)
    kw.setdefault("repeats", 3)
    table = run_claims("synthetic:count=30,size=8", workdir=str(tmp_path), results_folder=folder,
                       experiments=EXPS, facts=False, on_event=lambda e: isinstance(e, Started) and started.append(e),
                       **kw)
    return table, started


def test_results_folder_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("IMGTUI_RESULTS", str(tmp_path / "res"))
    assert results_dir() == tmp_path / "res"


def test_claims_reuse_what_was_measured_and_fresh_measures_again(tmp_path):
    folder = tmp_path / "results"
    first, ran = claims(tmp_path, folder)
    assert {e.experiment for e in ran} == set(EXPS) and notes(first) == []
    assert len(list(folder.glob("*.json"))) == 1
    second, ran = claims(tmp_path, folder)
    assert ran == []  # nothing measured again
    assert len(notes(second)) == 1 and second.notes[0].startswith(f"reused {len(first.rows)} figures measured 20")
    key = lambda r: (r.experiment, r.backend, r.method, r.median_s, r.max_s)  # noqa: E731
    assert sorted(map(key, second.rows)) == sorted(map(key, first.rows))
    assert [v.verdict for v in evaluate_claims(second)] == [v.verdict for v in evaluate_claims(first)]
    _t, ran = claims(tmp_path, folder, fresh=True)
    assert {e.experiment for e in ran} == set(EXPS)
    # a changed count or backend option is another fingerprint: measured, not reused
    t, ran = claims(tmp_path, folder, count=25)
    assert {e.experiment for e in ran} == set(EXPS) and notes(t) == []
    t, ran = claims(tmp_path, folder, backend_options={"hdf5": {"compression": "gzip"}})
    assert {e.experiment for e in ran} == set(EXPS) and notes(t) == []
    # more rounds wanted than stored: the timings measured again; the bytes (measured once) reused
    t, ran = claims(tmp_path, folder, repeats=4)
    assert {e.experiment for e in ran} == {"store_many", "random_batches"}
    assert notes(t)[0].startswith("reused 6 figures")  # disk_usage: 5 backends + the numpy floor


def test_stored_results_with_fewer_rounds_or_errors_are_measured_again(tmp_path):
    folder = tmp_path / "results"
    fp = fingerprint("synthetic:count=30,size=8", 20)
    mem = Memory(fp, folder)
    mem.put([rate_row("random_batches", b, 1000) for b in ("disk", "lmdb")], rounds=2)
    mem.put([ResultRow("store_many", "disk", "imgtui", 20, error="boom")], rounds=3)
    mem.save()
    again = Memory(fp, folder)
    assert again.covers("random_batches", ["disk", "lmdb"], 2)
    assert not again.covers("random_batches", ["disk", "lmdb"], 3)  # fewer rounds than wanted
    assert not again.covers("random_batches", ["disk", "lmdb", "hdf5"], 2)  # a backend missing
    assert not again.covers("store_many", ["disk"], 1)  # an error row
    # another version or machine: another file
    assert Memory(dict(fp, imgtui="9.9"), folder).entries == []
    # a damaged file is ignored (measured again), not a crash
    mem.path.write_text("{not json")
    assert Memory(fp, folder).entries == []


def test_recommend_reuses_stored_results(tmp_path):
    folder = tmp_path / "results"
    started: list = []
    on = lambda e: isinstance(e, Started) and started.append(e)  # noqa: E731
    kw = dict(count=20, workdir=str(tmp_path), results_folder=folder, on_event=on, backends=["disk", "lmdb", "hdf5"])
    rec1, t1 = recommend_for_dataset("synthetic:count=20,size=8", Needs(access="random"), **kw)
    assert {e.experiment for e in started} == {"random_batches", "disk_usage"}
    started.clear()
    rec2, t2 = recommend_for_dataset("synthetic:count=20,size=8", Needs(access="random"), **kw)
    assert started == [] and rec2.backend == rec1.backend
    assert notes(rec2) and rec2.notes[0].startswith("reused ")
    assert rec2.notes[0] in rec2.format()
    started.clear()
    recommend_for_dataset("synthetic:count=20,size=8", Needs(access="random"), fresh=True, **kw)
    assert {e.experiment for e in started} == {"random_batches", "disk_usage"}


def test_cli_recommend_second_run_measures_nothing(tmp_path, capsys):
    args = ["recommend", "--dataset", "synthetic:count=20,size=8", "--count", "20", "--backends", "disk,lmdb",
            "--workdir", str(tmp_path)]
    assert main(args) == 0
    first = capsys.readouterr()
    assert "[1/" in first.err  # measured, one line per step
    assert main(args) == 0
    second = capsys.readouterr()
    assert "[1/" not in second.err and "reused " in second.out
    assert main(args + ["--quick", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["notes"][0] == "quick: 20 records, 2 rounds (wider ranges, more comparisons too close to call)"


def test_cli_bad_repeats_and_results_folder_are_one_line_errors(tmp_path, capsys, monkeypatch):
    assert main(["claims", "--repeats", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("--repeats must be at least 1, got 0")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("IMGTUI_RESULTS", str(blocker / "sub"))
    assert main(["recommend", "--dataset", "synthetic:count=10,size=8", "--count", "10", "--backends", "disk,lmdb",
                 "--workdir", str(tmp_path), "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("imgtui: error: cannot write the results folder")


def test_claims_facts_are_kept_and_counted_when_reused(tmp_path):
    folder = tmp_path / "results"
    kw = dict(count=10, repeats=1, results_folder=folder, workdir=str(tmp_path), experiments=["disk_usage"])
    first = run_claims("synthetic:count=10,size=8", **kw)
    facts = [r for r in first.rows if r.experiment.startswith("fact_")]
    assert facts and notes(first) == []
    second = run_claims("synthetic:count=10,size=8", **kw)
    assert notes(second)[0].startswith(f"reused {len(first.rows)} figures measured ")
    assert [v.verdict for v in evaluate_claims(second)] == [v.verdict for v in evaluate_claims(first)]


def test_bench_interleave_flag_and_max_column(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["bench", "--dataset", "synthetic:count=10,size=8", "--counts", "10", "--backends", "disk,lmdb",
                 "--methods", "imgtui", "--experiments", "read_many", "--interleave", "--repeats", "2",
                 "--workdir", str(tmp_path), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert " max " in text
    t = ResultTable.from_json(out)
    reads = [r for r in t.rows if r.experiment == "read_many"]
    assert t.plan["interleave"] is True and len(reads) == 2
    assert all(r.repeats == 2 and r.min_s <= r.median_s <= r.max_s for r in reads)
