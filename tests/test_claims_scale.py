"""Issue 16, the rest: the scale claims (10: LMDB at scale, HDF5 when not too large; 11: HDF5 needs
adjusting at large scale) and bootstrap intervals of the median behind the verdicts."""

from __future__ import annotations

import json

import pytest

from imgtui.bench.claims import TOO_CLOSE, _claim10, _claim11, evaluate_claims, run_claims
from imgtui.bench.model import BenchPlan, ResultRow, ResultTable
from imgtui.bench.run import Run, combine_rounds
from imgtui.bench.stats import MIN_BOOTSTRAP, bootstrap_median_interval, interval_note
from imgtui.cli import main

N = 1000


def timed(exp: str, backend: str, times: list[float], count: int = N, records: int = N, **kw) -> ResultRow:
    """A row of ``records`` records per trial, one trial per entry of ``times`` (seconds)."""
    import statistics

    med = statistics.median(times)
    return ResultRow(exp, backend, "imgtui", count, repeats=len(times), median_s=med, min_s=min(times),
                     max_s=max(times), records_per_s=records / med, times=list(times), **kw)


def at_rate(rate: float, spread: float = 0.01, n: int = 7, outlier: float | None = None) -> list[float]:
    """``n`` trial times around ``N / rate`` (+-``spread``), the last one ``outlier`` x slower."""
    base = N / rate
    ts = [base * (1 + spread * ((i % 3) - 1)) for i in range(n)]
    if outlier:
        ts[-1] = base * outlier
    return ts


# -- bootstrap intervals --------------------------------------------------------------------------
def test_bootstrap_interval_is_seeded_and_holds_the_median():
    ts = [1.0, 1.1, 0.9, 1.05, 0.95, 3.0, 1.02]
    a, b = bootstrap_median_interval(ts), bootstrap_median_interval(list(ts))
    assert a == b  # deterministic
    assert min(ts) <= a[0] <= 1.02 <= a[1] <= max(ts)
    assert a[1] < 3.0  # one slow trial does not stretch the interval of the median to it


def test_rows_quote_the_bootstrap_interval_with_enough_trials_else_the_range():
    many = timed("read_many", "lmdb", at_rate(1000, outlier=3.0))
    assert len(many.times) >= MIN_BOOTSTRAP and many.interval_kind() == "bootstrap"
    lo, hi = many.rate_range()
    assert lo > 900 and hi < 1100  # the min-max range would reach down to 1000 / 3
    few = timed("read_many", "lmdb", [1.0, 1.2, 3.0])
    assert few.interval_kind() == "range" and few.seconds_range() == (1.0, 3.0)
    old = ResultRow("read_many", "lmdb", "imgtui", N, median_s=1.0, min_s=0.9, max_s=1.4, records_per_s=N)
    assert old.interval_kind() == "range" and old.seconds_interval() == (0.9, 1.4)  # saved before times were kept
    assert "bootstrap" in interval_note([many]) and "min-max range of 3 trials" in interval_note([few])
    assert interval_note([many, few]).startswith("figures in brackets: 95% bootstrap interval of the median")


def test_verdict_uses_the_bootstrap_interval_not_the_outliers():
    """Claim 1 on fixed figures: LMDB 2.5x PNG's median, each with one slow outlier trial. The
    min-max ranges overlap the 2x line (too close to call); the bootstrap intervals of the
    medians do not (confirmed). Without the trial times the same rows are too close to call."""
    ops = ("store_many", "read_many", "random_batches")
    rows = [r for e in ops for r in (timed(e, "disk", at_rate(1000, outlier=3.0)),
                                     timed(e, "lmdb", at_rate(2500, outlier=3.0)))]
    v = next(x for x in evaluate_claims(ResultTable(rows=rows)) if x.id == 1)
    assert v.verdict == "confirmed", v.summary
    no_times = [ResultRow(**{**r.__dict__, "times": None}) for r in rows]
    v = next(x for x in evaluate_claims(ResultTable(rows=no_times)) if x.id == 1)
    assert v.verdict == TOO_CLOSE


def test_overlapping_bootstrap_intervals_are_too_close_to_call():
    ops = ("store_many", "read_many", "random_batches")
    # medians 2.2x apart, but the trials are so spread that the intervals of the medians reach the 2x line
    wide = lambda rate: [N / rate * f for f in (0.6, 0.8, 0.9, 1.0, 1.1, 1.3, 1.6)]  # noqa: E731
    rows = [r for e in ops for r in (timed(e, "disk", wide(1000)), timed(e, "lmdb", wide(2200)))]
    v = next(x for x in evaluate_claims(ResultTable(rows=rows)) if x.id == 1)
    assert v.verdict == TOO_CLOSE and "on the medians confirmed" in v.summary


def test_trial_times_survive_rounds_csv_and_json(tmp_path):
    rounds = [ResultRow("read_many", "lmdb", "imgtui", 10, repeats=1, median_s=s, min_s=s, max_s=s,
                        records_per_s=10 / s, times=[s]) for s in (0.2, 0.1, 0.4, 0.3, 0.25)]
    r = combine_rounds(rounds)
    assert r.times == [0.2, 0.1, 0.4, 0.3, 0.25] and r.median_s == 0.25
    t = ResultTable(rows=[r])
    t.to_csv(tmp_path / "r.csv")
    t.to_json(tmp_path / "r.json")
    for back in (ResultTable.from_csv(tmp_path / "r.csv"), ResultTable.from_json(tmp_path / "r.json")):
        assert back.rows[0].times == pytest.approx(r.times)
        assert back.rows[0].rate_range() == pytest.approx(r.rate_range())


# -- claim 10: LMDB at scale, HDF5 when not too large ------------------------------------------------
def scale_table(rates: dict[int, dict[str, float]], spread: float = 0.01, ops=("store_many", "read_many", "random_batches")):
    rows = []
    for count, per in rates.items():
        for b, rate in per.items():
            for op in ops:
                ts = [N / rate * f for f in (1 - spread, 1 - spread / 2, 1, 1 + spread / 2, 1 + spread)]
                rows.append(timed("scale_" + op, b, ts, count=count))
    return ResultTable(rows=rows)


def test_claim10_confirmed_when_lmdb_leads_at_scale_and_hdf5_keeps_up_small():
    v, head, figures = _claim10(scale_table({10_000: {"lmdb": 1000, "hdf5": 1100, "disk": 100},
                                             100_000: {"lmdb": 1000, "hdf5": 500, "disk": 90}}))
    assert v == "confirmed", head
    assert head == ("at 100,000 records LMDB is ahead of HDF5 in 3 of 3 operations (behind in 0, too close in 0); "
                    "at 10,000 HDF5 keeps up (ahead or within 15%) in 3 of 3 (falls behind in 0, too close in 0)")
    assert figures[0].startswith("store_many: 10,000: LMDB 1.0k (")
    assert "(HDF5, LMDB 0.91x HDF5)" in figures[0] and "(LMDB, LMDB 2.00x HDF5)" in figures[0]
    assert figures[-1] == ("crossovers: store_many: HDF5 ahead at 10,000, LMDB at 100,000; read_many: HDF5 ahead "
                           "at 10,000, LMDB at 100,000; random_batches: HDF5 ahead at 10,000, LMDB at 100,000")


def test_claim10_refuted_depends_and_too_close():
    v, head, _f = _claim10(scale_table({10_000: {"lmdb": 2000, "hdf5": 1000}, 100_000: {"lmdb": 500, "hdf5": 1000}}))
    assert v == "refuted"
    # LMDB ahead at every count, by 2x: the large half holds, the "not too large" half does not
    v, head, figures = _claim10(scale_table({10_000: {"lmdb": 2000, "hdf5": 1000}, 100_000: {"lmdb": 2000, "hdf5": 1000}}))
    assert v == "depends" and head.endswith("(large scale says confirmed, small scale says refuted)")
    assert figures[-1].startswith("crossovers: none")
    # the intervals overlap at the largest count: too close to call
    v, _h, _f = _claim10(scale_table({10_000: {"lmdb": 1000, "hdf5": 1050}, 100_000: {"lmdb": 1000, "hdf5": 980}},
                                     spread=0.3))
    assert v == TOO_CLOSE
    assert _claim10(ResultTable())[0] == "not measured"
    assert _claim10(scale_table({10_000: {"lmdb": 1, "hdf5": 2}}))[0] == "not measured"  # one count: no scale


# -- claim 11: HDF5 needs adjusting at scale ----------------------------------------------------------------
def tuning_table(gains: dict[int, tuple[float, float]], spread: float = 0.01) -> ResultTable:
    """count -> (default random records/s, tuned random records/s)."""
    rows = []
    for count, (d, t) in gains.items():
        for name, rate in (("default", d), ("tuned", t)):
            ts = [N / rate * f for f in (1 - spread, 1, 1 + spread, 1 - spread / 2, 1 + spread / 2)]
            for op in ("write", "random"):
                rows.append(timed("scale_hdf5_tuning", "hdf5", ts, count=count,
                                  detail=f"variant={name} op={op} chunk={'64' if name == 'default' else '5'} cache=1MiB"))
    return ResultTable(rows=rows)


def test_claim11_verdicts():
    v, head, figures = _claim11(tuning_table({10_000: (1000, 1100), 100_000: (500, 1000)}))
    assert v == "confirmed" and head.startswith("random batches at 100,000: tuned 2.00x default (1.9")
    assert head.endswith("; at 10,000: 1.10x: tuning pays, and pays more as the count grows")
    assert figures[0].startswith("10,000: random batches: default (chunk 64 records, cache 1MiB) 1.0k (")
    v, head, _f = _claim11(tuning_table({10_000: (500, 1000), 100_000: (500, 1000)}))
    assert v == "depends" and "not a matter of scale" in head
    v, _h, _f = _claim11(tuning_table({10_000: (500, 1000), 100_000: (1000, 1000)}))
    assert v == "refuted"
    v, _h, _f = _claim11(tuning_table({10_000: (500, 600), 100_000: (900, 1000)}, spread=0.3))
    assert v == TOO_CLOSE
    assert _claim11(ResultTable())[0] == "not measured"


# -- the evaluators on a tiny real run --------------------------------------------------------------------
def test_cycled_records_repeat_the_dataset(tmp_path):
    plan = BenchPlan(dataset="synthetic:count=7,size=4", backends=["lmdb"], methods=["imgtui"],
                     experiments=["read_many"], counts=[7, 20], cycle=True, workdir=str(tmp_path))
    run = Run(plan, __import__("threading").Event())
    run.open_dataset()
    gen = run.load()
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        data = stop.value
    assert data.n == 20 and data.stacked.shape[0] == 20
    for i in range(20):
        assert (data.records[i].image == data.records[i % 7].image).all()
        assert data.records[i].label == data.records[i % 7].label
    plan.cycle = False
    run = Run(plan, __import__("threading").Event())
    run.open_dataset()
    gen = run.load()
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        assert stop.value.n == 7  # without cycle: only what the dataset has


def test_scale_claims_on_tiny_counts(tmp_path):
    folder = tmp_path / "res"
    kw = dict(count=20, workdir=str(tmp_path), repeats=2, experiments=["disk_usage"], facts=False,
              scale_counts=[30, 50], results_folder=folder)
    t = run_claims("synthetic:count=20,size=8", **kw)
    for op in ("store_many", "read_many", "random_batches"):
        got = {(r.backend, r.count) for r in t.rows if r.experiment == f"scale_{op}" and r.error is None}
        assert got == {(b, c) for b in ("disk", "lmdb", "hdf5") for c in (30, 50)}, op
    tune = [r for r in t.rows if r.experiment == "scale_hdf5_tuning"]
    assert sorted((r.count, r.detail.split(" chunk")[0]) for r in tune) == sorted(
        (c, f"variant={v} op={o}") for c in (30, 50) for v in ("default", "tuned") for o in ("write", "random"))
    assert all(r.error is None and r.repeats == 2 and len(r.times) == 2 for r in tune)
    assert ("scale: the dataset has 20 records; they are repeated (record i is record i mod 20) to reach 30, 50"
            in t.notes)
    assert any(n.startswith("scale: measured at 30, 50 records; 1,000,000 only when asked for") for n in t.notes)
    v = {x.id: x for x in evaluate_claims(t)}
    for i in (10, 11):
        assert v[i].verdict != "not measured" and v[i].figures, v[i]
    # claims 1-9 are still decided on the main count, not on the scale rows
    assert all(r.count == 20 for r in t.rows if r.experiment == "disk_usage")
    assert not list(p for p in tmp_path.iterdir() if p.name != "res")  # every store removed
    # a second run reuses the scale figures
    again = run_claims("synthetic:count=20,size=8", **kw)
    assert sum(n.startswith("scale: reused ") for n in again.notes) == 2
    assert {x.id: x.verdict for x in evaluate_claims(again)} == {x.id: x.verdict for x in evaluate_claims(t)}


def test_scale_counts_left_out_when_they_would_not_fit_in_memory(monkeypatch):
    from imgtui.bench import claims

    monkeypatch.setattr(claims, "_available_bytes", lambda: 10_000)
    notes: list[str] = []
    assert claims.scale_plan_counts("synthetic:count=5,size=8", [10, 1000], notes) == [10]
    assert notes[0] == "scale: 1,000 records left out: 192.0 kB of records would not fit in memory"


@pytest.mark.parametrize("args,message", [
    (["--scale-counts", "abc"], "--scale-counts: 'abc' is not a whole number"),
    (["--scale-counts", "0"], "--scale-counts: '0' must be at least 1"),
    (["--scale-counts", ","], "--scale-counts is empty"),
    (["--scale-counts", "10k", "--no-scale"], "--no-scale and --scale-counts cannot go together"),
])
def test_cli_bad_scale_counts_are_one_line_errors(args, message, capsys):
    assert main(["claims", "--dataset", "synthetic:count=10,size=8"] + args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_cli_claims_json_says_what_the_brackets_are(tmp_path, capsys):
    rows = [timed(e, b, at_rate(r)) for e in ("store_many", "read_many", "random_batches")
            for b, r in (("disk", 1000), ("lmdb", 2500))]
    path = tmp_path / "r.json"
    ResultTable(rows=rows).to_json(path)
    assert main(["claims", "--results", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["intervals"].startswith("figures in brackets: 95% bootstrap interval of the median")
    assert [c["id"] for c in out["claims"]] == list(range(1, 12))
    assert main(["claims", "--results", str(path)]) == 0
    assert "figures in brackets: 95% bootstrap" in capsys.readouterr().out
