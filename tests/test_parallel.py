"""Parallel sharded conversion: local worker processes, worker failures, --resume, Dask."""

import json
import os
import sys

import numpy as np
import pytest

from imgtui.backends import open_store
from imgtui.backends.sharded import MANIFEST, PROGRESS_DIR
from imgtui.cli import main
from imgtui.datasets import SyntheticDataset
from imgtui.errors import ImgtuiError, IncompleteStoreError, StoreExistsError
from imgtui.convert.parallel import convert_sharded

BACKENDS = ["disk", "lmdb", "hdf5"]
SUFFIX = {"disk": "", "lmdb": ".lmdb", "hdf5": ".h5"}


class BadRecord(SyntheticDataset):
    """Record 25 has an image imgtui refuses (complex64)."""

    def record(self, i):
        rec = super().record(i)
        if i == 25:
            rec.image = rec.image.astype(np.complex64)
        return rec


class KillsWorker(SyntheticDataset):
    """The process reading record 25 dies on the spot (like a kill -9 or a segfault)."""

    def record(self, i):
        if i == 25 and os.environ.get("IMGTUI_TEST_PARENT") != str(os.getpid()):
            os._exit(3)
        return super().record(i)


def one_line(exc) -> str:
    s = str(exc)
    assert "\n" not in s
    return s


@pytest.mark.parametrize("backend", BACKENDS)
def test_workers_write_shards_bit_exact(tmp_path, backend):
    ds = SyntheticDataset(count=60, variable=(4, 12), seed=9)
    dest = tmp_path / "s"
    res = convert_sharded("synthetic:count=60,variable=4-12,seed=9", dest, backend, shards=4, workers=2)
    assert res["workers"] == 2 and res["shards"] == 4 and res["count"] == 60
    assert sorted(p.name for p in dest.iterdir()) == [MANIFEST] + [f"shard-{k:05d}{SUFFIX[backend]}" for k in range(4)]
    with open_store(dest) as r:
        assert r.backend == backend and list(r) == list(ds)
        assert r.verify().ok


def test_worker_exception_names_shard_and_writes_no_manifest(tmp_path):
    dest = tmp_path / "s"
    with pytest.raises(ImgtuiError) as err:
        convert_sharded(BadRecord(count=40, size=4), dest, "hdf5", shards=4, workers=2)
    msg = one_line(err.value)
    assert msg.startswith("writing shard-00002.h5: source record 25 image: unsupported dtype complex64")
    assert msg.endswith("; no manifest was written (finish the conversion with --resume)")
    assert not (dest / MANIFEST).exists()
    assert not [p for p in dest.iterdir() if p.name.endswith(".partial")]
    with pytest.raises(IncompleteStoreError):
        open_store(dest)


def test_killed_worker_then_resume(tmp_path, monkeypatch):
    monkeypatch.setenv("IMGTUI_TEST_PARENT", str(os.getpid()))  # sampling in this process must not die
    dest = tmp_path / "s"
    with pytest.raises(ImgtuiError) as err:
        convert_sharded(KillsWorker(count=40, size=4), dest, "lmdb", shards=4, workers=2)
    msg = one_line(err.value)
    assert msg.startswith("a worker process died (killed or crashed) while writing ")
    assert "shard-00002.lmdb" in msg
    assert msg.endswith("no manifest was written (finish the conversion with --resume)")
    assert not (dest / MANIFEST).exists()
    finished = {p.name: p.stat().st_mtime_ns for p in dest.iterdir() if p.name.startswith("shard-") and ".partial" not in p.name}
    assert "shard-00002.lmdb" not in finished
    # --resume with a working source rewrites only what is missing
    good = SyntheticDataset(count=40, size=4)
    res = convert_sharded(good, dest, "lmdb", shards=4, workers=2, resume=True)
    assert res["reused"] == len(finished) and res["shards"] == 4
    for name, mtime in finished.items():
        assert (dest / name).stat().st_mtime_ns == mtime
    with open_store(dest) as r:
        assert list(r) == list(good) and r.verify().ok
    assert not (dest / PROGRESS_DIR).exists()


def test_resume_rewrites_only_missing_or_damaged_shards(tmp_path):
    dest = tmp_path / "s"
    with pytest.raises(ImgtuiError):
        convert_sharded(BadRecord(count=40, size=4), dest, "hdf5", shards=4)  # in-process: shards 0, 1 done
    assert sorted(p.name for p in dest.iterdir()) == [PROGRESS_DIR, "shard-00000.h5", "shard-00001.h5"]
    mtime0 = (dest / "shard-00000.h5").stat().st_mtime_ns
    data = (dest / "shard-00001.h5").read_bytes()
    (dest / "shard-00001.h5").write_bytes(data[: len(data) // 3])  # damaged: must be rewritten
    good = SyntheticDataset(count=40, size=4)
    with pytest.raises(ImgtuiError) as err:  # other settings than the interrupted run
        convert_sharded(good, dest, "hdf5", shards=5, resume=True)
    assert one_line(err.value) == (
        f"{dest} was started with other settings (ranges differ); resume with the same --backend, "
        "backend options and --shards/--shard-size, or use --overwrite"
    )
    res = convert_sharded(good, dest, "hdf5", shards=4, resume=True)
    assert res["reused"] == 1
    assert (dest / "shard-00000.h5").stat().st_mtime_ns == mtime0
    with open_store(dest) as r:
        assert list(r) == list(good) and r.verify().ok
    with pytest.raises(StoreExistsError) as err:
        convert_sharded(good, dest, "hdf5", shards=4, resume=True)
    assert one_line(err.value) == (
        f"{dest} is already a complete sharded store; nothing to resume (pass --overwrite to re-create it)"
    )
    with pytest.raises(ImgtuiError, match="exclude each other"):
        convert_sharded(good, dest, "hdf5", shards=4, resume=True, overwrite=True)


def test_resume_without_previous_run_just_converts(tmp_path):
    good = SyntheticDataset(count=12, size=4)
    res = convert_sharded(good, tmp_path / "s", "disk", shards=2, resume=True)
    assert res["reused"] == 0
    with open_store(tmp_path / "s") as r:
        assert list(r) == list(good)


def test_cli_workers_and_resume(tmp_path, capsys):
    dest = tmp_path / "s"
    args = ["convert", "synthetic:count=30,size=6", str(dest), "-b", "hdf5", "--shards", "3", "--workers", "2", "-q"]
    assert main(args) == 0
    assert "3 hdf5 shards, 2 worker(s)" in capsys.readouterr().out
    assert main(args) == 1
    assert "already exists; choose another destination, pass --overwrite or --resume" in capsys.readouterr().err
    # an interrupted conversion (shard 2 failed) is finished by the same command with --resume
    other = tmp_path / "t"
    with pytest.raises(ImgtuiError):
        convert_sharded(BadRecord(count=30, size=6), other, "hdf5", shards=3)
    args[2] = str(other)
    assert main(args + ["--resume"]) == 0
    assert "3 hdf5 shards, 2 reused" in capsys.readouterr().out
    with open_store(other) as r:
        assert list(r) == list(SyntheticDataset(count=30, size=6))


def test_dask_missing_gives_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    with pytest.raises(ImgtuiError) as err:
        convert_sharded(SyntheticDataset(count=4), tmp_path / "s", "hdf5", shards=2, dask=True)
    assert one_line(err.value) == "--dask/--scheduler needs the imgtui[dask] extra (pip install 'imgtui[dask]')"
    assert main(["convert", "synthetic:count=4", str(tmp_path / "s"), "-b", "hdf5", "--dask", "-q"]) == 1
    assert capsys.readouterr().err == (
        "imgtui: error: --dask/--scheduler needs the imgtui[dask] extra (pip install 'imgtui[dask]')\n"
    )
    assert not (tmp_path / "s").exists()


@pytest.fixture(scope="module")
def dask_cluster():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
    )
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.mark.parametrize("backend", ["lmdb", "hdf5"])
def test_dask_cluster_conversion(tmp_path, dask_cluster, backend):
    ds = SyntheticDataset(count=50, variable=(4, 10), seed=4)
    dest = tmp_path / "s"
    res = convert_sharded(
        "synthetic:count=50,variable=4-10,seed=4", dest, backend, shards=5, scheduler=dask_cluster.scheduler_address
    )
    assert res["shards"] == 5 and res["workers"] == 2
    m = json.loads((dest / MANIFEST).read_text())
    assert [s["range"] for s in m["shards"]] == [[k * 10, k * 10 + 10] for k in range(5)]
    with open_store(dest) as r:
        assert list(r) == list(ds) and r.verify().ok


def test_dask_task_failure_names_shard(tmp_path, dask_cluster):
    dest = tmp_path / "s"
    with pytest.raises(ImgtuiError) as err:
        convert_sharded(BadRecord(count=40, size=4), dest, "hdf5", shards=4, scheduler=dask_cluster.scheduler_address)
    assert one_line(err.value).startswith("writing shard-00002.h5: source record 25 image: unsupported dtype complex64")
    assert not (dest / MANIFEST).exists()
