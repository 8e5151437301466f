"""The claims' experiments on tiny data, their verdicts, and the drift and portability checks."""

from __future__ import annotations

import json

import pytest

from imgtui.bench.claims import (
    CLAIMS,
    DRIFT_REQUIRED,
    VERDICTS,
    drift_facts,
    evaluate_claims,
    parse_detail,
    portability_facts,
)
from imgtui.bench.run import run_to_table
from imgtui.bench.model import EXPERIMENTS, BenchPlan, ResultTable
from imgtui.cli import main

NEW = ["store_one", "read_one", "slice_read", "parallel_threads", "parallel_processes", "mutate", "space_at_sizes"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> ResultTable:
    work = tmp_path_factory.mktemp("claims")
    plan = BenchPlan(dataset="synthetic:count=50,size=16", methods=["imgtui", "floor"],
                     experiments=["store_many", "read_many", "random_batches", "disk_usage"] + NEW,
                     counts=[50], repeats=1, readers=[1, 2], workdir=str(work))
    t = run_to_table(plan)
    assert not list(work.iterdir())  # every temporary store removed
    return t


def rows(t: ResultTable, exp: str, **kw):
    return [r for r in t.rows if r.experiment == exp and all(getattr(r, k) == v for k, v in kw.items())]


def test_new_experiments_are_known():
    for e in NEW:
        assert e in EXPERIMENTS


def test_slice_and_parallel_rows(tiny):
    for b in ("disk", "lmdb", "hdf5", "numpy"):
        s = rows(tiny, "slice_read", backend=b)
        assert len(s) == 1 and s[0].error is None, s  # 100 and 1,000 both cap at the 50 records
        assert parse_detail(s[0].detail) == {"slice": "50", "start": "0"}
        assert s[0].records_per_s > 0
        th = rows(tiny, "parallel_threads", backend=b)
        assert sorted(r.readers for r in th) == [1, 2] and all(r.error is None and r.records_per_s > 0 for r in th)
    for b in ("disk", "lmdb", "hdf5"):
        pr = rows(tiny, "parallel_processes", backend=b)
        assert sorted(r.readers for r in pr) == [1, 2] and all(r.error is None and r.records_per_s > 0 for r in pr)
        assert rows(tiny, "slice_read", backend=b)[0].ratio_to_floor > 0
    assert not rows(tiny, "parallel_processes", backend="numpy")  # no floor row for processes


def test_space_rows(tiny):
    sp = rows(tiny, "space_at_sizes")
    sizes = {parse_detail(r.detail)["size"] for r in sp}
    assert sizes == {"32x32", "256x256", "1024x1024", "variable_64-512"}
    for r in sp:
        assert r.error is None and r.bytes_on_disk > 0 and r.raw_bytes > 0
    # one row per backend option variant and size
    assert len(rows(tiny, "space_at_sizes", backend="lmdb")) == 8
    assert {("encoding=png" in r.options) for r in rows(tiny, "space_at_sizes", backend="lmdb")} == {True, False}
    r32 = [r for r in sp if "size=32x32" in r.detail][0]
    assert r32.raw_bytes == 50 * 32 * 32 * 3  # the plan's 50 records, the dataset's 3 channels, 8 bits


def test_mutate_rows(tiny):
    import imgtui

    mt = rows(tiny, "mutate")
    if not hasattr(imgtui, "append"):  # the mutation API is not in this imgtui: one clear error row each
        assert {r.error for r in mt} == {"mutate: this imgtui has no append/overwrite/delete (imgtui.backends.mutate)"}
        return
    for b in ("disk", "lmdb", "hdf5"):
        ops = {parse_detail(r.detail)["op"]: r for r in mt if r.backend == b}
        assert set(ops) == {"append", "overwrite", "delete"}, [r.error for r in mt]
        for op, r in ops.items():
            d = parse_detail(r.detail)
            assert r.error is None and d["valid"] == "yes" and d["in_place"] in ("yes", "no")
            assert r.median_s > 0 and r.bytes_on_disk > 0
        assert parse_detail(ops["append"].detail)["n"] == "5"


def test_every_claim_gets_a_verdict(tiny):
    t = ResultTable(rows=tiny.rows + portability_facts() + drift_facts(), machine=tiny.machine)
    verdicts = evaluate_claims(t)
    assert [v.id for v in verdicts] == [c.id for c in CLAIMS] == list(range(1, 12))
    for v in verdicts:
        assert v.verdict in VERDICTS and v.summary
    measured = {v.id: v for v in verdicts}
    for i in (1, 2, 3, 5, 6, 7, 8):
        assert measured[i].verdict != "not measured", measured[i]
        assert measured[i].figures
    assert any("records/s" in f for f in measured[2].figures)
    assert evaluate_claims(ResultTable())[0].verdict == "not measured"


def test_drift_check_detects_each_kind():
    facts = {parse_detail(r.detail)["drift"]: parse_detail(r.detail) for r in drift_facts()}
    for kind in DRIFT_REQUIRED:
        assert facts[kind]["detected"] == "yes", facts[kind]
    assert "missing" in facts["missing_file"]["how"]
    assert "extra file not listed in records.csv" in facts["extra_file"]["how"]
    assert facts["table_row_removed"]["how"] == "records.csv has 11 rows but manifest.json says 12 records; the store is damaged"
    # a label edited in records.csv keeps the pixels; the manifest's label counts catch it
    assert "labels do not match the manifest's label counts" in facts["label_edited"]["how"]


def test_portability_reads_each_backend_without_imgtui():
    facts = {r.backend: parse_detail(r.detail) for r in portability_facts()}
    assert set(facts) == {"disk", "lmdb", "hdf5"}
    assert all(f["ok"] == "yes" for f in facts.values()), facts
    assert facts["lmdb"]["layout"] == "needed" and facts["disk"]["layout"] == "not_needed"


def test_cli_claims_from_saved_results(tiny, tmp_path, capsys):
    path = tmp_path / "c.json"
    ResultTable(rows=tiny.rows + drift_facts(), dataset="tiny").to_json(path)
    assert main(["claims", "--results", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [c["id"] for c in out["claims"]] == list(range(1, 12))
    assert out["claims"][5]["verdict"] == "confirmed"
    assert main(["claims", "--results", str(path)]) == 0
    text = capsys.readouterr().out
    assert "6. [CONFIRMED] Files drift" in text and "5. [NOT MEASURED] Portability" in text


def test_claim3_decides_threads_by_threads_and_processes_by_processes():
    """The session's hostile case: LMDB 1.25x with processes but 0.73x with threads must not
    confirm 'HDF5 serialises threads, LMDB scales'."""
    from imgtui.bench.claims import _claim3
    from imgtui.bench.model import ResultRow, ResultTable

    def table(th: dict, pr: dict) -> ResultTable:
        rows = []
        for exp, figures in (("parallel_threads", th), ("parallel_processes", pr)):
            for backend, (one, many) in figures.items():
                rows.append(ResultRow(exp, backend, "imgtui", 2000, median_s=1.0, records_per_s=one, readers=1))
                rows.append(ResultRow(exp, backend, "imgtui", 2000, median_s=1.0, records_per_s=many, readers=4))
        return ResultTable(rows=rows)

    verdict, head, _f = _claim3(table({"hdf5": (100, 66), "lmdb": (779.6, 568.8)}, {"hdf5": (100, 208), "lmdb": (100, 125)}))
    assert verdict == "depends"
    assert head == ("threads: HDF5 0.66x, LMDB 0.73x; processes: LMDB 1.25x, HDF5 2.08x "
                    "(threads say refuted, processes say confirmed)")
    verdict, head, _f = _claim3(table({"hdf5": (100, 95), "lmdb": (100, 180)}, {"hdf5": (100, 150), "lmdb": (100, 170)}))
    assert verdict == "confirmed" and head.startswith("threads: HDF5 0.95x, LMDB 1.80x")
    verdict, _h, _f = _claim3(table({"hdf5": (100, 160), "lmdb": (100, 150)}, {"lmdb": (100, 100)}))
    assert verdict == "refuted"
    verdict, head, _f = _claim3(table({"hdf5": (100, 95), "lmdb": (100, 180)}, {}))
    assert verdict == "confirmed" and head.endswith("(processes not measured)")


def test_claim8_single_image_like_with_like():
    from imgtui.bench.claims import _claim8
    from imgtui.bench.model import ResultRow, ResultTable

    def table(store: dict, read: dict, method: str = "article") -> ResultTable:
        rows = [ResultRow(exp, b, method, 1, median_s=1 / r, records_per_s=r)
                for exp, figures in (("store_one", store), ("read_one", read)) for b, r in figures.items()]
        return ResultTable(rows=rows)

    verdict, summary, figures = _claim8(table({"disk": 900, "lmdb": 300, "hdf5": 200}, {"disk": 5000, "lmdb": 2000, "hdf5": 900}))
    assert verdict == "confirmed"
    assert figures[0] == "store_one (article method): HDF5 200 vs LMDB 300 vs disk 900 records/s (PNG file 3.0x LMDB)"
    verdict, summary, _f = _claim8(table({"disk": 900, "lmdb": 300}, {"disk": 1000, "lmdb": 4000}, method="imgtui"))
    assert verdict == "depends" and summary.endswith("(store_one: confirmed, read_one: refuted)")
    assert _claim8(ResultTable(rows=[]))[0] == "not measured"


def test_claim9_lmdb_map_size_measured_with_plain_lmdb_and_with_imgtui(tmp_path):
    from imgtui.bench.claims import _claim9, mapsize_facts

    rows = mapsize_facts(str(tmp_path), mb=12)
    plain = next(r for r in rows if r.method == "plain")
    ours = next(r for r in rows if r.method == "imgtui")
    assert plain.detail.startswith("ok=no mb=12.0 | MapFullError")
    assert ours.detail.startswith("ok=yes")
    verdict, summary, figures = _claim9(ResultTable(rows=rows))
    assert verdict == "depends" and "imgtui's LMDB backend, which sizes and grows the map itself" in summary
    assert list(tmp_path.iterdir()) == []  # its stores are removed
