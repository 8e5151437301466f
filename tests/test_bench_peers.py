"""Peer methods in ``imgtui bench`` (WebDataset, LitData, MDS, Zarr as their docs show): tiny runs,
bit-exact read-back, one-line notes for missing packages and for what a peer cannot do. No timing
asserts; a peer whose package is not installed here is skipped."""

from __future__ import annotations

import importlib
import sys

import numpy as np
import pytest

from imgtui.backends import open_writer
from imgtui.bench import peers
from imgtui.bench.model import BenchPlan
from imgtui.bench.plan import PlanError, plan_steps
from imgtui.bench.run import run_plan, run_to_table
from imgtui.records import Record

READS = ["store_one", "store_many", "read_one", "read_many", "random_batches", "disk_usage"]


def _need(name: str) -> None:
    """Skip unless the peer's package imports here."""
    pytest.importorskip(peers.PACKAGES[name], exc_type=ImportError)
    if peers.missing(name) is not None:
        pytest.skip(f"peer {name}: {peers.missing(name)}")


def _rows(table, name):
    return {r.experiment: r for r in table.rows if r.method == "peer" and r.backend == name}


def _odd_store(tmp_path):
    """An imgtui store of records no CIFAR has: float32 with NaN and -0.0, labels that are strings
    (one looks like a number), metadata with nesting."""
    rng = np.random.default_rng(5)
    recs = []
    for i in range(12):
        img = rng.standard_normal((6, 5)).astype(np.float32)
        img[0, 0] = np.nan
        img[1, 1] = -0.0
        recs.append(Record(img, ["cat", "1", "dög"][i % 3], {"i": i, "tags": ["a", {"b": i / 3}], "none": None}))
    path = tmp_path / "odd.h5"
    with open_writer(path, "hdf5") as w:
        w.write_many(recs)
    return str(path), recs


@pytest.mark.parametrize("name", peers.PEERS)
def test_a_peer_writes_and_reads_the_records_bit_exact(tmp_path, name):
    _need(name)
    wd = tmp_path / "wd"
    wd.mkdir()
    plan = BenchPlan(workdir=str(wd), counts=[20], repeats=1, backends=[], methods=["floor", "peer"],
                     peers=[name], experiments=READS)
    table = run_to_table(plan)
    rows = _rows(table, name)
    want = set(READS) - ({"random_batches"} if name == "webdataset" else set())
    assert set(rows) == want
    for exp, r in rows.items():
        assert r.error is None, (exp, r.error)
        assert r.ratio_to_floor and r.ratio_to_floor > 0
        if exp == "disk_usage":
            assert r.bytes_on_disk >= r.raw_bytes == 20 * 32 * 32 * 3
        else:
            assert r.records_per_s > 0 and r.options
    if name == "webdataset":  # no figure for what it cannot do: a note says why
        assert [n for n in table.notes if n.startswith("peer webdataset:")] == [
            "peer webdataset: read_one: no index: opens the record's shard and streams it up to the record's key",
            "peer webdataset: random_batches: " + peers.WebDatasetPeer.cannot_do["random_batches"]]
    else:
        assert not [n for n in table.notes if n.startswith(f"peer {name}")]
    assert list(wd.iterdir()) == []


@pytest.mark.parametrize("name", peers.PEERS)
def test_odd_records_read_back_bit_exact(tmp_path, name):
    """Variable dtypes/labels/metadata: each peer's own read-back check (``verify``) passes, and a
    direct read of every record equals the source, NaN payload and -0.0 included."""
    _need(name)
    spec, recs = _odd_store(tmp_path)
    wd = tmp_path / "wd"
    wd.mkdir()
    table = run_to_table(BenchPlan(dataset=spec, workdir=str(wd), counts=[12], repeats=1, backends=[],
                                   methods=["peer"], peers=[name], experiments=["read_many"]))
    (row,) = table.rows
    assert row.error is None, row.error
    m = peers.make_peer(name)
    from imgtui.bench.methods import Data

    data = Data(recs, np.stack([r.image for r in recs]), sum(r.image.nbytes for r in recs))
    folder = tmp_path / "s"
    folder.mkdir()
    h = m.store_many(folder, data, peers.NULL_CTX)
    got = m.read_records(h)
    assert got == recs  # Record equality: same bytes, dtype, shape, label and its type, metadata
    m.verify(h, data)


def test_a_peer_that_reads_back_wrong_data_gives_error_rows_not_figures(tmp_path, monkeypatch):
    orig = peers.ZarrPeer.read_records

    def flipped(self, handle):
        recs = orig(self, handle)
        recs[3].image[0, 0, 0] ^= 1
        return recs

    monkeypatch.setattr(peers.ZarrPeer, "read_records", flipped)
    table = run_to_table(BenchPlan(workdir=str(tmp_path), counts=[10], repeats=1, backends=[],
                                   methods=["floor", "peer"], peers=["zarr"], experiments=READS))
    rows = _rows(table, "zarr")
    assert set(rows) == set(READS)
    assert {r.error for r in rows.values()} == {
        "read-back check failed: record 3 read back differs from the source"}
    assert all(r.records_per_s is None and r.bytes_on_disk is None for r in rows.values())
    assert all(r.error is None for r in table.rows if r.method == "floor")


def test_zarr_plain_array_on_variable_shapes_is_a_note(tmp_path):
    table = run_to_table(BenchPlan(dataset="synthetic:variable=8-24", workdir=str(tmp_path), counts=[10],
                                   repeats=1, backends=[], methods=["floor", "peer"], peers=["zarr"],
                                   experiments=READS))
    assert not _rows(table, "zarr")
    assert table.notes == ["peer zarr: a plain Zarr array needs one shape and dtype for every image (these vary)"]


def test_a_missing_peer_package_is_one_line_and_the_rest_runs(tmp_path, monkeypatch, capsys):
    from imgtui.cli import main

    monkeypatch.setitem(sys.modules, "litdata", None)  # import litdata -> ImportError
    assert peers.missing("litdata") == "not installed (pip install 'imgtui[peers]')"
    rc = main(["bench", "--counts", "10", "--repeats", "1", "--methods", "floor", "--peers", "litdata,zarr",
               "--experiments", "store_many,read_many", "--workdir", str(tmp_path), "--quiet"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "imgtui bench: peer litdata: not installed (pip install 'imgtui[peers]')\n" in err
    assert "Traceback" not in err and err.count("litdata") == 1
    # the API says it in the results' notes, never with a traceback; the other peers still run
    table = run_to_table(BenchPlan(workdir=str(tmp_path), counts=[10], repeats=1, backends=[],
                                   methods=["peer"], peers=["litdata", "zarr"], experiments=["store_many"]))
    assert table.notes == ["peer litdata: not installed (pip install 'imgtui[peers]')"]
    assert [(r.backend, r.error) for r in table.rows] == [("zarr", None)]


def test_a_missing_dependency_of_a_peer_package_is_named(monkeypatch):
    def fake_import(name, *a, **k):
        raise ModuleNotFoundError("No module named 'torchvision'", name="torchvision")

    monkeypatch.setattr(importlib, "import_module", fake_import)
    assert peers.missing("mds") == "not installed (streaming needs torchvision; pip install 'imgtui[peers]')"


def test_unknown_peer_is_a_one_line_usage_error(capsys):
    from imgtui.cli import main

    assert main(["bench", "--peers", "litdata,parquet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "imgtui bench: error: --peers: unknown 'parquet' (choose from webdataset, litdata, mds, zarr)"
    with pytest.raises(PlanError, match=r"unknown peer 'parquet' \(choose from webdataset, litdata, mds, zarr\)"):
        run_plan(BenchPlan(methods=["peer"], peers=["parquet"]))


def test_peers_are_chosen_like_methods_and_not_in_the_default_plan():
    from imgtui.bench.cli_bench import add_parser, plan_from_args
    import argparse

    assert not [s for s in plan_steps(BenchPlan()) if s.method == "peer"]
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers()
    add_parser(sub)
    p = plan_from_args(ap.parse_args(["bench", "--methods", "imgtui,floor,peers"]))
    assert p.methods == ["imgtui", "floor", "peer"]
    steps = plan_steps(p)
    assert {s.backend for s in steps if s.method == "peer"} == set(peers.PEERS)
    # peers after imgtui's rows, only the experiments a peer takes part in
    assert {s.experiment for s in steps if s.method == "peer"} <= set(peers.PEER_EXPERIMENTS)
    for count in p.counts:
        mine = [s for s in steps if s.count == count]
        first_peer = min(i for i, s in enumerate(mine) if s.method == "peer")
        assert all(s.method == "peer" for s in mine[first_peer:])
        assert mine[0].method == "floor"
    p = plan_from_args(ap.parse_args(["bench", "--methods", "floor", "--peers", "mds,zarr"]))
    assert p.methods == ["floor", "peer"] and p.peers == ["mds", "zarr"]
    all_exps = BenchPlan(methods=["peer"], peers=["zarr"], counts=[10], experiments=["mutate", "slice_read", "read_many"])
    assert [s.experiment for s in plan_steps(all_exps)] == ["read_many"]
