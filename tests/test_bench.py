"""The benchmark engine, its exports, plots and the ``imgtui bench`` command (tiny counts, no timing asserts)."""

from __future__ import annotations

import importlib.util
import json
import threading
import xml.etree.ElementTree as ET

import pytest

from imgtui.bench.plan import PlanError, plan_steps
from imgtui.bench.run import run_plan, run_to_table
from imgtui.bench.model import (
    DEFAULT_EXPERIMENTS,
    BenchPlan,
    Error,
    Finished,
    Progress,
    Result,
    ResultTable,
    Started,
)

HAVE_DISK = importlib.util.find_spec("imgtui.backends.disk") is not None
TINY = dict(counts=[10, 100], repeats=1)


def _plan(tmp_path, **kw) -> BenchPlan:
    args = dict(TINY)
    args.update(kw)
    return BenchPlan(workdir=str(tmp_path), **args)


def _collect(plan, cancel=None):
    events = list(run_plan(plan, cancel))
    assert isinstance(events[-1], Finished)
    assert sum(isinstance(e, Finished) for e in events) == 1
    return events


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    wd = tmp_path_factory.mktemp("bench")
    plan = BenchPlan(workdir=str(wd), **TINY)
    return wd, _collect(plan)


def test_every_method_backend_has_a_row_per_count_and_experiment(full_run):
    wd, events = full_run
    table = events[-1].results
    assert not events[-1].cancelled
    have = {(r.experiment, r.backend, r.method, r.count) for r in table.rows}
    for count in (10, 100):
        for exp in DEFAULT_EXPERIMENTS:
            assert (exp, "numpy", "floor", count) in have
            for method in ("article", "imgtui"):
                for backend in ("disk", "lmdb", "hdf5"):
                    assert (exp, backend, method, count) in have, (exp, backend, method, count)
        for exp in ("store_many", "read_many"):
            assert (exp, "memcpy", "floor", count) in have
    # a Started before every step, and the step numbers count up to the total
    started = [e for e in events if isinstance(e, Started)]
    assert [s.step for s in started] == list(range(1, len(started) + 1))
    assert all(s.steps == len(started) for s in started)
    assert any(isinstance(e, Progress) for e in events)
    # the temporary stores are gone
    assert list(wd.iterdir()) == []


def test_rows_carry_sane_values(full_run):
    _wd, events = full_run
    table = events[-1].results
    for r in table.rows:
        if r.backend == "disk" and r.method == "imgtui" and not HAVE_DISK:
            assert r.error  # the backend is missing: an error row, the rest still ran
            continue
        assert r.error is None, (r.experiment, r.backend, r.method, r.error)
        assert r.ratio_to_floor is not None and r.ratio_to_floor > 0
        if r.experiment == "disk_usage":
            assert r.median_s is None
            assert r.bytes_on_disk > 0 and r.raw_bytes == r.count * 32 * 32 * 3
            if r.method == "imgtui" and r.backend in ("lmdb", "hdf5"):
                assert r.bytes_on_disk >= r.raw_bytes
            if r.backend == "numpy":
                assert r.bytes_on_disk >= r.raw_bytes and r.ratio_to_floor == 1.0
        else:
            assert r.median_s > 0 and r.min_s > 0 and r.min_s <= r.median_s
            assert r.records_per_s > 0 and r.repeats == 1
            assert r.peak_rss_bytes and r.peak_rss_bytes > 1_000_000
        if r.experiment in ("read_one", "read_many", "random_batches"):
            assert r.cache == "warm"
        if r.method == "imgtui":
            assert r.options
    floor = [r for r in table.rows if r.backend == "numpy"]
    assert all(r.ratio_to_floor == 1.0 for r in floor)
    store_many = [r for r in table.rows if r.experiment == "store_many" and r.backend != "memcpy" and not r.error]
    assert all(r.records_per_s == pytest.approx(r.count / r.median_s) for r in store_many)


def test_results_table_has_machine_plan_and_dataset(full_run):
    _wd, events = full_run
    table = events[-1].results
    for key in ("cpu_count", "ram_bytes", "platform", "python", "numpy", "h5py", "lmdb", "pillow", "textual", "filesystem"):
        assert key in table.machine, key
    assert table.plan["counts"] == [10, 100]
    assert table.dataset.startswith("synthetic")


def test_json_and_csv_round_trip(full_run, tmp_path):
    _wd, events = full_run
    table = events[-1].results
    table.to_json(tmp_path / "r.json")
    table.to_csv(tmp_path / "r.csv")
    back = ResultTable.from_json(tmp_path / "r.json")
    assert back.rows == table.rows
    assert back.machine == json.loads(json.dumps(table.machine))
    assert ResultTable.from_csv(tmp_path / "r.csv").rows == table.rows


def test_plots_svg_and_png(full_run, tmp_path):
    from PIL import Image

    from imgtui.bench.plot import save_plot

    table = full_run[1][-1].results
    svg = save_plot(table, tmp_path / "fig.svg")
    root = ET.parse(svg).getroot()
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "Store many images" in texts and "Read many images" in texts and "Disk usage" in texts
    assert "imgtui lmdb" in texts and "article hdf5" in texts
    png = save_plot(table, tmp_path / "fig.png")
    with Image.open(png) as im:
        assert im.format == "PNG" and im.width > 1000


def test_cancel_after_first_result_stops_and_cleans_up(tmp_path):
    cancel = threading.Event()
    events = []
    for ev in run_plan(_plan(tmp_path), cancel):
        events.append(ev)
        if isinstance(ev, Result):
            cancel.set()
    assert isinstance(events[-1], Finished) and events[-1].cancelled
    assert sum(isinstance(e, Result) for e in events) == 1
    assert sum(isinstance(e, Started) for e in events) == 1
    assert list(tmp_path.iterdir()) == []


def test_cancel_inside_a_step_stops_within_a_batch(tmp_path):
    cancel = threading.Event()
    plan = _plan(tmp_path, counts=[10, 2000], backends=["lmdb"], methods=["imgtui"], experiments=["store_many"])
    events, in_big_step = [], False
    for ev in run_plan(plan, cancel):
        events.append(ev)
        if isinstance(ev, Started):
            in_big_step = ev.count == 2000
        if in_big_step and isinstance(ev, Progress) and ev.done > 0:
            cancel.set()  # during the writes of 2000 records (8 batches)
    assert isinstance(events[-1], Finished) and events[-1].cancelled
    assert [e.row.count for e in events if isinstance(e, Result)] == [10]
    progress = [e.done for e in events[events.index(next(e for e in events if isinstance(e, Started) and e.count == 2000)):]
                if isinstance(e, Progress)]
    assert progress and max(progress) <= 2000 - 256
    assert list(tmp_path.iterdir()) == []


def test_closing_the_generator_early_removes_temp_stores(tmp_path):
    gen = run_plan(_plan(tmp_path, counts=[100], backends=["hdf5"]))
    for ev in gen:
        if isinstance(ev, Result) and ev.row.backend == "hdf5":
            break
    gen.close()
    assert list(tmp_path.iterdir()) == []


def test_a_failing_backend_gives_error_rows_and_the_others_continue(tmp_path, monkeypatch):
    import imgtui.bench.methods as methods

    real = methods.open_writer

    def broken(path, backend, **kw):
        if backend == "hdf5":
            raise OSError("simulated HDF5 failure")
        return real(path, backend, **kw)

    monkeypatch.setattr(methods, "open_writer", broken)  # the writer the imgtui method uses
    plan = _plan(tmp_path, counts=[10], backends=["lmdb", "hdf5"], methods=["imgtui", "floor"])
    events = _collect(plan)
    table = events[-1].results
    errors = [e for e in events if isinstance(e, Error)]
    assert errors and all(e.backend == "hdf5" and e.method == "imgtui" for e in errors)
    assert "simulated HDF5 failure" in errors[0].message
    h5 = [r for r in table.rows if r.backend == "hdf5"]
    assert {(r.experiment, r.count) for r in h5} == {(e, 10) for e in DEFAULT_EXPERIMENTS}
    assert all(r.error and r.median_s is None for r in h5)
    lm = [r for r in table.rows if r.backend == "lmdb"]
    assert lm and all(r.error is None for r in lm)
    assert list(tmp_path.iterdir()) == []


def test_variable_shapes_article_rows_say_why(tmp_path):
    plan = _plan(tmp_path, dataset="synthetic:variable=8-24", counts=[20], backends=["lmdb", "hdf5"],
                 experiments=["store_many", "read_many", "disk_usage"])
    table = _collect(plan)[-1].results
    art = [r for r in table.rows if r.method == "article"]
    assert len(art) == 6
    assert all(r.error == "article method needs fixed-shape images" for r in art)
    ok = [r for r in table.rows if r.method != "article"]
    assert ok and all(r.error is None for r in ok)
    assert all(r.ratio_to_floor for r in ok)


def test_dataset_smaller_than_count_gives_error_rows(tmp_path):
    plan = _plan(tmp_path, dataset="synthetic:count=50", counts=[10, 100], backends=["lmdb"],
                 methods=["imgtui"], experiments=["store_many"])
    rows = _collect(plan)[-1].results.rows
    assert [(r.count, r.error) for r in rows] == [
        (10, None), (100, "the dataset has only 50 records; count 100 cannot run"),
    ]


def test_cold_reads_add_cold_rows(tmp_path):
    plan = _plan(tmp_path, counts=[50], backends=["hdf5"], methods=["imgtui", "floor"],
                 experiments=["read_many"], cold=True)
    rows = _collect(plan)[-1].results.rows
    caches = {(r.backend, r.cache) for r in rows if r.error is None}
    assert {("hdf5", "warm"), ("hdf5", "cold"), ("numpy", "warm"), ("numpy", "cold")} <= caches
    cold = [r for r in rows if r.cache == "cold" and r.backend == "hdf5"]
    assert cold[0].ratio_to_floor is not None


def test_concurrent_readers(tmp_path):
    plan = _plan(tmp_path, counts=[100], backends=["lmdb"], methods=["imgtui", "floor"],
                 experiments=["concurrent_readers"], readers=[2])
    rows = _collect(plan)[-1].results.rows
    assert [(r.backend, r.readers) for r in rows] == [("numpy", 2), ("lmdb", 2)]
    for r in rows:
        assert r.error is None, r.error
        assert r.median_s > 0 and r.records_per_s > 0 and r.peak_rss_bytes > 0
    assert list(tmp_path.iterdir()) == []


def test_plan_validation():
    with pytest.raises(PlanError, match="unknown backend 'foo'"):
        run_plan(BenchPlan(backends=["foo"]))
    with pytest.raises(PlanError, match="record counts must be whole numbers >= 1, got 0"):
        run_plan(BenchPlan(counts=[0]))
    with pytest.raises(PlanError, match="unknown experiment 'fly'"):
        run_plan(BenchPlan(experiments=["fly"]))
    with pytest.raises(PlanError, match="hdf5: compression must be one of"):
        run_plan(BenchPlan(backend_options={"hdf5": {"compression": "zip"}}))


def test_floor_runs_first_in_each_count():
    steps = plan_steps(BenchPlan(counts=[10, 100]))
    for count in (10, 100):
        mine = [s for s in steps if s.count == count]
        assert mine[0].backend == "numpy" and mine[0].method == "floor"


def test_run_to_table(tmp_path):
    table = run_to_table(_plan(tmp_path, counts=[10], backends=["lmdb"], methods=["imgtui"], experiments=["store_many"]))
    assert len(table.rows) == 1 and table.rows[0].error is None


# -- the command line -------------------------------------------------------------------------
def test_cli_bench_writes_json_csv_svg(tmp_path, capsys):
    from imgtui.cli import main

    out = tmp_path / "out"
    out.mkdir()
    wd = tmp_path / "wd"
    wd.mkdir()
    rc = main([
        "bench", "--counts", "10,30", "--repeats", "1", "--backends", "lmdb,hdf5", "--workdir", str(wd),
        "--experiments", "store_many,read_many,random_batches,disk_usage",
        "--json", str(out / "r.json"), "--csv", str(out / "r.csv"), "--plot", str(out / "r.svg"),
    ])
    assert rc == 0
    table = ResultTable.from_json(out / "r.json")
    assert ResultTable.from_csv(out / "r.csv").rows == table.rows
    assert {r.count for r in table.rows} == {10, 30}
    assert all(r.error is None for r in table.rows)
    ET.parse(out / "r.svg")
    assert list(wd.iterdir()) == []
    printed = capsys.readouterr().out
    assert "store_many" in printed and "imgtui lmdb" in printed


def test_cli_bench_quiet_png(tmp_path, capsys):
    from imgtui.cli import main

    rc = main(["bench", "--counts", "10", "--repeats", "1", "--backends", "hdf5", "--methods", "imgtui,floor",
               "--experiments", "store_many,read_many", "--hdf5-layout", "contiguous", "--quiet",
               "--workdir", str(tmp_path), "--plot", str(tmp_path / "f.png"), "--json", str(tmp_path / "r.json")])
    assert rc == 0
    rows = ResultTable.from_json(tmp_path / "r.json").rows
    assert any("layout=contiguous" in r.options for r in rows if r.method == "imgtui")
    assert (tmp_path / "f.png").stat().st_size > 1000
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    "args, message",
    [
        (["--counts", "10,abc"], "imgtui bench: error: --counts: 'abc' is not a whole number"),
        (["--backends", "disk,foo"], "imgtui bench: error: --backends: unknown 'foo' (choose from disk, lmdb, hdf5"),
        (["--repeats", "0"], "imgtui bench: error: --repeats: '0' must be at least 1"),
        (["--plot", "fig.jpg"], "imgtui bench: error: --plot fig.jpg: the file name must end in .svg or .png"),
        (["--hdf5-compression", "zip"], "imgtui bench: error: --hdf5-compression: 'zip' is not one of none, gzip, lzf"),
        (["--compression", "zip"], "imgtui bench: error: --compression: 'zip' is not one of none, gzip, lzf"),
        (["--png-level", "12"], "imgtui bench: error: --png-level: '12' must be from 0 to 9"),
        (["--hdf5-level", "5"], "imgtui bench: error: hdf5: option level applies only to compression=gzip"),
        (["--dataset", "/no/such/dataset"], "imgtui bench: error: /no/such/dataset: no such file or folder"),
    ],
)
def test_cli_bad_options_exit_2_with_one_line(args, message, capsys):
    from imgtui.cli import main

    assert main(["bench", *args]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert err.strip().startswith(message)


# -- records spilled to a file (a million records do not fit in memory twice) ------------------
@pytest.mark.parametrize("dataset, cycle", [
    ("synthetic", False),                      # one shape: the file is one (n, ...) array
    ("synthetic:variable=8-24,count=7", True),  # variable shapes, repeated up to the count
    ("synthetic:count=7", True),               # one shape, repeated: copied into the file
])
def test_spilled_records_give_the_same_rows_and_hold_no_pixels(tmp_path, monkeypatch, dataset, cycle):
    """Above the spill size the records' pixels go to a file in the run folder: every method
    still gets the same records (the reads are compared bit-exact while streaming), the table
    says so in a note, and the file is gone afterwards."""
    import numpy as np

    import imgtui.bench.run as run_mod
    from imgtui.bench.methods import RecordTable
    from imgtui.datasets import open_dataset

    seen = {}
    real = run_mod.Run._spill

    def spy(self, *a, **kw):
        data = seen["data"] = real(self, *a, **kw)
        return data

    monkeypatch.setattr(run_mod, "SPILL_BYTES", 1)
    monkeypatch.setattr(run_mod.Run, "_spill", spy)
    plan = _plan(tmp_path, dataset=dataset, counts=[5, 30], cycle=cycle, backends=["lmdb", "hdf5"],
                 methods=["imgtui", "floor"], experiments=["store_many", "read_many", "read_one", "random_batches"])
    table = _collect(plan)[-1].results
    assert [r for r in table.rows if r.error] == []
    assert {(r.experiment, r.backend, r.count) for r in table.rows} >= {
        (e, b, c) for e in ("store_many", "read_many", "read_one", "random_batches") for b in ("lmdb", "hdf5") for c in (5, 30)}
    assert any("records" in n and "kept in a file, not in memory" in n for n in table.notes)
    data = seen["data"]
    assert data.spilled and isinstance(data.records, RecordTable) and data.n == 30
    src = list(open_dataset(dataset))
    for i in range(30):  # the spilled records are the dataset's (repeated when it is shorter)
        assert data.records[i] == src[i % len(src)]
    if "variable" not in dataset:
        assert data.stacked is not None and np.array_equal(data.stacked[29], src[29 % len(src)].image)
    assert list(tmp_path.iterdir()) == []


def test_a_streamed_read_that_differs_from_the_source_is_an_error_row(tmp_path, monkeypatch):
    import imgtui.bench.methods as methods
    import imgtui.bench.run as run_mod

    monkeypatch.setattr(run_mod, "SPILL_BYTES", 1)
    real = methods.ImgtuiMethod.read_many

    def flipped(self, handle, ctx):
        out = ctx.collect()
        images, labels = real(self, handle, methods.Ctx())
        for batch in images:
            batch = batch.copy()
            batch.reshape(-1)[-1] ^= 1  # one bit of the last pixel of each batch
            out.append(batch)
        return out, labels

    monkeypatch.setattr(methods.ImgtuiMethod, "read_many", flipped)
    plan = _plan(tmp_path, counts=[40], backends=["lmdb"], methods=["imgtui"], experiments=["store_many", "read_many"])
    rows = _collect(plan)[-1].results.rows
    assert [(r.experiment, r.error) for r in rows] == [
        ("store_many", None), ("read_many", "read_many: the records read back differ from the source")]


def test_sink_compares_records_batches_and_lists_in_order():
    import numpy as np

    from imgtui.bench.methods import Data, RecordTable, Sink
    from imgtui.records import Record

    imgs = [np.full((2, 3), i, np.uint16) for i in range(4)] + [np.full((5,), 9, np.uint16)]
    flat = np.concatenate([a.reshape(-1).view(np.uint8) for a in imgs])
    starts = np.cumsum([0] + [a.nbytes for a in imgs[:-1]])
    table = RecordTable(flat, starts, np.array([0, 0, 0, 0, 1], np.uint32),
                        [((2, 3), np.dtype(np.uint16)), ((5,), np.dtype(np.uint16))], list(range(5)), [{}] * 5)
    assert list(table) == [Record(a, i, {}) for i, a in enumerate(imgs)] and table.stacked() is None
    data = Data(table, None, flat.nbytes, spilled=True)

    def feed(items, check=True):
        s = Sink(data, check)
        for it in items:
            s.append(it)
        return s

    good = [imgs[0], np.stack(imgs[1:3]), [imgs[3]], imgs[4]]  # a record, a batch, a list, a record
    assert feed(good).complete() and len(feed(good)) == 5
    assert not feed(good[:3]).complete()  # one record short
    bad = [imgs[0], np.stack([imgs[1], imgs[1]]), [imgs[3]], imgs[4]]
    assert not feed(bad).complete()
    assert feed(bad, check=False).complete()  # the timed trials only count
