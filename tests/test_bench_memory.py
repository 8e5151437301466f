"""``imgtui bench`` keeps its figures in the results folder and measures only what is missing
(issue 16): reuse, partial reuse, --fresh, and sharing with claims when measured the same way."""

from __future__ import annotations

import pytest

from imgtui.bench.claims import run_claims
from imgtui.bench.memory import bench_events
from imgtui.bench.model import BenchPlan, Finished, Started
from imgtui.bench.run import run_plan
from imgtui.cli import main

DS = "synthetic:count=20,size=8"


def bench(tmp_path, fresh: bool = False, **kw):
    """Run a bench plan with the results folder; (table, the (experiment, count) pairs measured)."""
    plan = BenchPlan(**{**dict(dataset=DS, backends=["disk", "lmdb"], methods=["imgtui", "floor"],
                               experiments=["store_many", "read_many", "disk_usage"], counts=[10], repeats=2,
                               workdir=str(tmp_path / "work")), **kw})
    (tmp_path / "work").mkdir(exist_ok=True)
    events = list(bench_events(plan, run=run_plan, folder=tmp_path / "res", fresh=fresh))
    assert isinstance(events[-1], Finished) and not events[-1].cancelled
    started = [e for e in events if isinstance(e, Started)]
    if started:  # steps numbered over every sub-plan
        assert [e.step for e in started] == list(range(1, len(started) + 1))
        assert {e.steps for e in started} == {len(started)}
    return events[-1].results, {(e.experiment, e.count) for e in started}


def key(r):
    return (r.experiment, r.backend, r.method, r.count, r.median_s, r.bytes_on_disk)


def test_second_bench_reuses_everything_and_fresh_measures_again(tmp_path):
    first, ran = bench(tmp_path)
    assert ran == {("store_many", 10), ("read_many", 10), ("disk_usage", 10)} and first.notes == []
    second, ran = bench(tmp_path)
    assert ran == set()
    assert sorted(map(key, second.rows)) == sorted(map(key, first.rows))
    assert len(second.notes) == 1
    assert second.notes[0].startswith(f"reused {len(first.rows)} figures measured 20")
    assert second.reused == second.notes[0].split(" (")[0] and first.reused == ""  # what the app shows
    assert "--fresh measures them again" in second.notes[0]
    third, ran = bench(tmp_path, fresh=True)
    assert ran == {("store_many", 10), ("read_many", 10), ("disk_usage", 10)} and third.notes == []


def test_bench_measures_only_what_is_missing(tmp_path):
    bench(tmp_path)
    # a new count: measured; the stored count reused
    t, ran = bench(tmp_path, counts=[10, 20])
    assert ran == {("store_many", 20), ("read_many", 20), ("disk_usage", 20)}
    assert {r.count for r in t.rows} == {10, 20} and t.notes[0].startswith("reused ")
    # a new experiment at both counts: only it
    t, ran = bench(tmp_path, counts=[10, 20], experiments=["store_many", "read_many", "disk_usage", "random_batches"])
    assert ran == {("random_batches", 10), ("random_batches", 20)}
    # a new backend: its experiments measured again for every backend (figures compared come from one run)
    _t, ran = bench(tmp_path, backends=["disk", "lmdb", "hdf5"])
    assert ran == {("store_many", 10), ("read_many", 10), ("disk_usage", 10)}
    # more repeats than stored: the timings again, the bytes (measured once per trial set) too for a plain plan
    _t, ran = bench(tmp_path, repeats=3)
    assert ("store_many", 10) in ran and ("read_many", 10) in ran
    # another method or option: measured
    _t, ran = bench(tmp_path, methods=["imgtui", "floor", "article"])
    assert ("read_many", 10) in ran
    _t, ran = bench(tmp_path, backend_options={"lmdb": {"encoding": "png"}})
    assert ran == {("store_many", 10), ("read_many", 10), ("disk_usage", 10)}


def test_interleaved_bench_shares_the_claims_figures_plain_bench_does_not(tmp_path):
    (tmp_path / "work").mkdir()
    run_claims(DS, 10, workdir=str(tmp_path / "work"), repeats=2, results_folder=tmp_path / "res",
               experiments=["random_batches"], facts=False)
    kw = dict(experiments=["random_batches"], backends=["disk", "lmdb", "hdf5"])
    t, ran = bench(tmp_path, interleave=True, **kw)
    assert ran == set() and t.notes[0].startswith("reused ")
    _t, ran = bench(tmp_path, **kw)  # measured back to back, not in rounds: not the same figures
    assert ran == {("random_batches", 10)}


def test_cli_bench_says_what_was_reused(tmp_path, capsys):
    args = ["bench", "--dataset", DS, "--counts", "10", "--backends", "disk,lmdb", "--methods", "imgtui",
            "--experiments", "read_many", "--repeats", "2", "--workdir", str(tmp_path)]
    assert main(args) == 0
    first = capsys.readouterr()
    assert "reused" not in first.err
    assert main(args + ["--json", str(tmp_path / "r.json")]) == 0
    second = capsys.readouterr()
    line = next(x for x in second.err.splitlines() if "reused" in x)
    assert line.startswith("imgtui bench: reused 2 figures measured 20") and "--fresh" in line
    assert " read_many" in second.out or "read_many" in second.out  # the table is still printed
    assert main(args + ["--fresh"]) == 0
    assert "reused" not in capsys.readouterr().err


@pytest.mark.parametrize("extra,message", [
    (["--counts", "10,x"], "--counts: 'x' is not a whole number"),
    (["--counts", "0"], "--counts: '0' must be at least 1"),
])
def test_cli_bench_bad_options_are_one_line(extra, message, tmp_path, capsys):
    code = main(["bench", "--dataset", DS, "--workdir", str(tmp_path)] + extra)
    assert code == 2
    err = [x for x in capsys.readouterr().err.strip().splitlines() if x.strip()]
    assert message in err[-1] and "Traceback" not in "".join(err)
