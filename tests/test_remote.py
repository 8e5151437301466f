"""Stores at URLs: read through the local cache (fsspec's file:// and memory:// filesystems stand
in for object storage: the same code path as s3:// or https://)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

fsspec = pytest.importorskip("fsspec")

import imgtui  # noqa: E402
from imgtui.backends import open_store  # noqa: E402
from imgtui.backends import remote  # noqa: E402
from imgtui.cli import main  # noqa: E402
from imgtui.datasets import open_dataset  # noqa: E402
from imgtui.errors import ImgtuiError  # noqa: E402
from imgtui.records import Record  # noqa: E402


def records(n: int, seed: int = 0) -> list[Record]:
    rng = np.random.default_rng(seed)
    return [Record(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8), i % 4, {"i": i}) for i in range(n)]


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("IMGTUI_CACHE", str(root))
    return root


@pytest.mark.parametrize("backend", ["hdf5", "lmdb", "disk"])
def test_a_store_at_a_url_reads_bit_exact_through_the_cache(backend, tmp_path, cache):
    src = tmp_path / f"s.{backend}"
    want = records(20)
    with imgtui.writer(src, backend) as w:
        for r in want:
            w.write(r)
    url = f"file://{src}"
    with open_store(url) as r:
        assert [rec for rec in r] == want
    (entry,) = list(cache.iterdir())

    def fetched_at() -> int:  # the data files' times (not the locks LMDB readers and the cache touch)
        return max(p.stat().st_mtime_ns for p in entry.rglob("*")
                   if p.is_file() and not p.name.startswith(".") and p.name not in ("lock.mdb", "stamps.json"))

    mtime = fetched_at()
    with open_store(url) as r:  # unchanged remote: the cached copy, not fetched again
        assert r[7] == want[7]
    assert fetched_at() == mtime
    # the API, the dataset spec and the CLI take the URL too
    assert imgtui.open(url)[3] == want[3]
    assert [rec.label for rec in open_dataset(url)] == [r.label for r in want]
    assert main(["verify", url, "-q"]) == 0
    assert open_store(url).info()["path"] == url  # info names the URL, not the cache's copy


def test_a_changed_remote_file_is_fetched_again(tmp_path, cache):
    src = tmp_path / "s.h5"
    with imgtui.writer(src, "hdf5") as w:
        w.write_many(records(5))
    url = f"file://{src}"
    assert len(open_store(url)) == 5
    imgtui.append(src, records(3, seed=1))
    with open_store(url) as r:
        assert len(r) == 8 and r[6] == records(3, seed=1)[1]


def test_a_sharded_store_fetches_only_the_shards_it_reads(tmp_path, cache):
    src = tmp_path / "sharded"
    want = records(40)
    from imgtui.datasets.base import Dataset

    class Mem(Dataset):
        kind = "memory"

        @property
        def length(self):
            return len(want)

        def __iter__(self):
            return iter(want)

    from imgtui.convert.parallel import convert_sharded

    convert_sharded(Mem(), src, "lmdb", shards=4)
    url = f"file://{src}"
    with open_store(url) as r:
        assert len(r) == 40
        (entry,) = list(cache.iterdir())
        local = next(p for p in entry.iterdir() if p.is_dir())
        assert sorted(p.name for p in local.iterdir()) == ["manifest.json"]  # opening fetched the manifest only
        assert r[25] == want[25]
        fetched = sorted(p.name for p in local.iterdir() if not p.name.startswith("."))
        assert len(fetched) == 2  # the manifest and the one shard holding record 25
        assert [rec for rec in r] == want


def test_missing_urls_and_unknown_protocols_are_one_line(tmp_path, cache):
    with pytest.raises(ImgtuiError) as e:
        open_store(f"file://{tmp_path}/nope.h5")
    assert str(e.value) == f"file://{tmp_path}/nope.h5: no such file or folder"
    with pytest.raises(ImgtuiError) as e:
        open_store("nosuchproto://bucket/x.h5")
    assert str(e.value).startswith("nosuchproto://bucket/x.h5: ") and "\n" not in str(e.value)


def test_the_cache_stays_under_its_limit_evicting_the_least_recently_used(tmp_path, cache, monkeypatch):
    paths = []
    for k in range(3):
        src = tmp_path / f"s{k}.h5"
        with imgtui.writer(src, "hdf5") as w:
            w.write_many(records(30, seed=k))
        paths.append(src)
    size = paths[0].stat().st_size
    monkeypatch.setenv("IMGTUI_CACHE_LIMIT", str(int(size * 2.5)))
    for k, src in enumerate(paths):
        assert open_store(f"file://{src}")[0] == records(30, seed=k)[0]
        os.utime(next(cache.iterdir()), None)
    names = {e.name for e in cache.iterdir()}
    assert len(names) == 2  # the first store's copy was evicted
    assert remote.RemoteStore(f"file://{paths[0]}", cache).entry.name not in names
    assert remote.parse_size("1.5GB") == 1_500_000_000 and remote.parse_size("2GiB") == 2 << 30
    with pytest.raises(ImgtuiError, match="is not a size"):
        remote.parse_size("lots")


@pytest.mark.parametrize("extra", [[], ["--shards", "3"]])
def test_convert_to_a_url_uploads_the_store_with_the_manifest_last(extra, tmp_path, cache, capsys):
    remote_root = tmp_path / "bucket"
    remote_root.mkdir()
    url = f"file://{remote_root}/c.lmdb"
    assert main(["convert", "synthetic:count=30,size=8", url, "-b", "lmdb", "-q", *extra]) == 0
    assert "to " + url in capsys.readouterr().out
    want = list(open_dataset("synthetic:count=30,size=8"))
    with open_store(url) as r:
        assert [rec for rec in r] == want
    assert not any((cache / "uploads").rglob("*.mdb"))  # the staging copy is gone once uploaded
    # again without --overwrite: refused in one line; with it: replaced
    assert main(["convert", "synthetic:count=30,size=8", url, "-b", "lmdb", "-q", *extra]) == 2
    assert capsys.readouterr().err.strip() == (
        f"imgtui: error: {url} exists; --overwrite replaces it, --resume finishes an interrupted upload")


def test_an_interrupted_upload_resumes_without_sending_the_shards_again(tmp_path, cache, monkeypatch, capsys):
    remote_root = tmp_path / "bucket"
    remote_root.mkdir()
    url = f"file://{remote_root}/s"
    real_put = remote.upload.__globals__["_filesystem"]
    calls = {"n": 0}

    class Flaky:  # the filesystem, but the connection drops while the second shard goes up
        def __init__(self, fs) -> None:
            self.fs = fs

        def __getattr__(self, name):
            return getattr(self.fs, name)

        def put(self, src, dest, *a, **k):
            if "shard-00001" in str(src):
                calls["n"] += 1
                raise OSError("connection reset")
            return self.fs.put(src, dest, *a, **k)

    def flaky(u):
        fs, path = real_put(u)
        return Flaky(fs), path

    monkeypatch.setattr(remote, "_filesystem", flaky)
    assert main(["convert", "synthetic:count=30,size=8", url, "-b", "lmdb", "-q", "--shards", "3"]) == 1
    err = capsys.readouterr().err
    assert "failed (connection reset); run the same command with --resume to go on" in err
    assert not (remote_root / "s" / "manifest.json").exists()  # no store visible yet
    monkeypatch.setattr(remote, "_filesystem", real_put)
    assert main(["convert", "synthetic:count=30,size=8", url, "-b", "lmdb", "-q", "--shards", "3", "--resume"]) == 0
    assert "1 already there" in capsys.readouterr().out
    assert [rec for rec in open_store(url)] == list(open_dataset("synthetic:count=30,size=8"))


def test_imgtui_dataset_at_a_url_in_worker_processes(tmp_path, cache):
    import multiprocessing as mp
    import pickle

    src = tmp_path / "s.h5"
    want = records(12)
    with imgtui.writer(src, "hdf5") as w:
        w.write_many(want)
    ds = imgtui.dataset(f"file://{src}")
    clone = pickle.loads(pickle.dumps(ds))  # what a spawned DataLoader worker gets
    assert len(clone) == 12 and np.array_equal(clone[5][0], want[5].image)
    with mp.get_context("spawn").Pool(2) as pool:
        labels = pool.map(_label_of, [(ds, i) for i in range(12)])
    assert labels == [r.label for r in want]


def _label_of(args):
    ds, i = args
    return ds[i][1]


@pytest.mark.parametrize("layout", ["contiguous", "chunked"])
def test_a_large_hdf5_store_at_a_url_is_read_with_ranged_requests_not_downloaded(layout, tmp_path, cache, monkeypatch):
    from imgtui.backends.hdf5 import store as hdf5_store

    monkeypatch.setenv("IMGTUI_RANGED_MIN", "1MB")
    monkeypatch.setenv("IMGTUI_RANGED_BLOCK", "64KiB")
    rng = np.random.default_rng(5)
    want = [Record(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), i % 10, {"i": i} if i % 100 == 0 else {})
            for i in range(3000)]
    src = tmp_path / "big.h5"
    with imgtui.writer(src, "hdf5", layout=layout, **({"expected_count": 3000} if layout == "contiguous" else {})) as w:
        w.write_many(want)
    size = src.stat().st_size
    assert size > 9_000_000
    mem = fsspec.filesystem("memory")
    mem.pipe(f"/ranged-{layout}/big.h5", src.read_bytes())
    for url in (f"file://{src}", f"memory:///ranged-{layout}/big.h5"):
        with open_store(url) as r:
            assert isinstance(r._fileobj, remote.RangedFile)
            assert r[1234] == want[1234]
            fetched = r._fileobj.fetched
            assert fetched < size / 10, (fetched, size)  # opening and one record: a few blocks
            assert r.get_many([5, 2999, 17, 100]) == [want[5], want[2999], want[17], want[100]]
            monkeypatch.setattr(hdf5_store, "COLUMN_MAX_RECORDS", 100)  # a batch's own rows, read ranged
            assert r.get_many([2999, 5, 5]) == [want[2999], want[5], want[5]]
            monkeypatch.setattr(hdf5_store, "COLUMN_MAX_RECORDS", 4_000_000)
            assert r.labels_array().tolist() == [x.label for x in want]
            assert r.info()["path"] == url
            assert r.verify().ok
        assert not [p for p in cache.rglob("*") if p.is_file() and p.stat().st_size > 100_000]  # nothing downloaded
    assert main(["verify", f"file://{src}", "-q"]) == 0
    assert imgtui.dataset(f"file://{src}")[7][1] == 7
    # below the threshold: downloaded into the cache as before
    monkeypatch.setenv("IMGTUI_RANGED_MIN", "1GB")
    with open_store(f"file://{src}") as r:
        assert getattr(r, "_fileobj", None) is None and r[3] == want[3]
    assert any(p.name == "big.h5" for p in cache.rglob("*.h5"))


def test_ranged_file_reads_exact_bytes_across_blocks(tmp_path):
    data = np.random.default_rng(1).integers(0, 256, 300_001, dtype=np.uint8).tobytes()
    (tmp_path / "f").write_bytes(data)
    fs = fsspec.filesystem("file")
    f = remote.RangedFile(fs, str(tmp_path / "f"), len(data), "file://f", block=4096, keep=3)
    for a, n in ((0, 10), (4090, 20), (100_000, 50_000), (299_990, 100), (150_000, 0), (5, 300_001)):
        f.seek(a)
        assert f.read(n) == data[a : a + n]
    f.seek(-3, 2)
    assert f.read() == data[-3:]
    assert f.fetched >= 50_000 and len(f._blocks) <= 74


def _wds_store(tmp_path, n: int = 600, **options):
    rng = np.random.default_rng(9)
    want = [Record(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), i % 10 if i % 3 else f"s{i}",
                   {"i": i} if i % 7 == 0 else {}) for i in range(n)]
    src = tmp_path / "s.wds"
    with imgtui.writer(src, "webdataset", shard_bytes=1_000_000, **options) as w:
        w.write_many(want)
    return src, want


@pytest.mark.parametrize("encoding", ["raw", "png"])
def test_a_webdataset_store_at_a_url_is_read_in_place_by_ranged_requests(encoding, tmp_path, cache):
    from imgtui.backends.webdataset.remote import RemoteWdsReader

    src, want = _wds_store(tmp_path, encoding=encoding)
    size = sum(p.stat().st_size for p in src.glob("shard-*.tar"))
    url = f"file://{src}"
    with open_store(url) as r:
        assert isinstance(r, RemoteWdsReader)
        assert sorted(p.name for p in r.path.iterdir()) == ["index.npy", "manifest.json"]  # open: these only
        assert r.files.fetched == 0
        assert r[450] == want[450]
        assert r.files.requests == 1
        assert r.get_many([3, 599, 0, 5, 3]) == [want[3], want[599], want[0], want[5], want[3]]
        assert r.files.fetched < size / 10, (r.files.fetched, size)
        before = r.files.requests
        assert r.get_many(range(64, 128)) == want[64:128]  # a batch in order: one request
        assert r.files.requests == before + 1
        imgs = r.get_images([7, 8, 500])
        assert all(np.array_equal(a, want[i].image) for a, i in zip(imgs, [7, 8, 500]))
        assert r.labels() == [x.label for x in want] and r.labels_array().tolist() == [x.label for x in want]
        assert list(r) == want
        assert r.info()["path"] == url
        assert r.info()["bytes_on_disk"] >= size  # the store at the URL, not the cache's index
        assert r.verify().ok
    assert main(["verify", url, "-q"]) == 0
    assert [rec.label for rec in open_dataset(url)] == [x.label for x in want]


def test_remote_webdataset_reads_are_checksum_checked(tmp_path, cache):
    from imgtui.errors import CorruptStoreError
    from imgtui.backends.webdataset.remote import RemoteWdsReader
    from imgtui.backends.webdataset.store import WdsReader

    src, want = _wds_store(tmp_path, n=50)
    with WdsReader(src) as local:
        k, off, hdr = (int(local._ix_raw[20][f]) for f in ("shard", "img_off", "hdr"))
    shard = src / f"shard-{k:06d}.tar"
    data = bytearray(shard.read_bytes())
    data[off + hdr + 5] ^= 0xFF  # one pixel of record 20 damaged on the server
    shard.write_bytes(bytes(data))
    with open_store(f"file://{src}") as r:
        assert isinstance(r, RemoteWdsReader) and r[19] == want[19]
        for read in (lambda: r[20], lambda: r.get_many([19, 20]), lambda: r.get_images([20])):
            with pytest.raises(CorruptStoreError, match="record 20 is damaged"):
                read()
        assert not r.verify().ok
    with open_store(f"file://{src}", verify=False) as r:
        assert r[20].label == want[20].label


def test_imgtui_ranged_0_downloads_whole_stores_as_before(tmp_path, cache, monkeypatch):
    from imgtui.backends.webdataset.remote import RemoteWdsReader

    src, want = _wds_store(tmp_path, n=40)
    monkeypatch.setenv("IMGTUI_RANGED", "0")
    with open_store(f"file://{src}") as r:
        assert not isinstance(r, RemoteWdsReader) and r[7] == want[7]
    assert any(cache.rglob("shard-*.tar"))


def test_a_remote_webdataset_store_with_a_missing_shard_is_one_line(tmp_path, cache):
    src, _want = _wds_store(tmp_path, n=600)
    (src / "shard-000001.tar").unlink()
    with pytest.raises(ImgtuiError) as e:
        open_store(f"file://{src}")
    assert "shard-000001.tar: shard is missing" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("extra", [[], ["--shards", "2"]])
def test_uploads_leave_out_lmdbs_lock_file_and_the_store_still_reads(extra, tmp_path, cache, capsys):
    remote_root = tmp_path / "bucket"
    remote_root.mkdir()
    url = f"file://{remote_root}/c.lmdb"
    assert main(["convert", "synthetic:count=30,size=8", url, "-b", "lmdb", "-q", *extra]) == 0
    assert list((remote_root / "c.lmdb").rglob("data.mdb"))
    assert not list((remote_root / "c.lmdb").rglob("lock.mdb"))  # the writer's lock table stays home
    want = list(open_dataset("synthetic:count=30,size=8"))
    with open_store(url) as r:  # the cached copy makes its own lock file
        assert [rec for rec in r] == want
    # --resume counts a shard without its lock file as complete
    assert main(["convert", "synthetic:count=30,size=8", url, "-b", "lmdb", "-q", "--resume", *extra]) == 0
    out = capsys.readouterr().out
    assert ("2 already there" if extra else "1 already there") in out


def test_a_disk_store_at_a_url_fetches_only_the_files_it_reads(tmp_path, cache):
    from imgtui.backends.disk.remote import RemoteDiskReader

    rng = np.random.default_rng(2)
    want = [Record(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), i % 5 if i % 4 else f"s{i}",
                   {"i": i} if i % 6 == 0 else {}) for i in range(1200)]
    src = tmp_path / "s.disk"
    with imgtui.writer(src, "disk") as w:
        w.write_many(want)
    url = f"file://{src}"
    with open_store(url) as r:
        assert isinstance(r, RemoteDiskReader)
        assert sorted(p.name for p in r.path.iterdir()) == ["manifest.json", "records.csv"]  # no images
        assert r[1100] == want[1100] and r.files.requests == 1
        assert r.get_many([3, 1199, 0, 3]) == [want[3], want[1199], want[0], want[3]]
        assert r.files.requests == 4  # one request per distinct file
        assert r.labels() == [x.label for x in want]
        assert list(r) == want and r.verify().ok
    (src / "images" / "001" / "001100.png").unlink()
    with open_store(url) as r:
        with pytest.raises(ImgtuiError, match="001100.png: image file of record 1100 is missing"):
            r[1100]
        with pytest.raises(ImgtuiError, match="001100.png"):
            r.get_many([1, 1100])


@pytest.mark.parametrize("options", [{}, {"compressor": "zstd", "chunk_records": 10}])
def test_a_zarr_store_at_a_url_is_read_through_zarrs_fsspec_store(options, tmp_path, cache):
    pytest.importorskip("zarr")
    from imgtui.backends.zarr.remote import RemoteZarrReader

    rng = np.random.default_rng(4)
    want = [Record(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), i % 5 if i % 4 else f"s{i}",
                   {"i": i} if i % 6 == 0 else {}) for i in range(700)]
    src = tmp_path / "s.zarr"
    with imgtui.writer(src, "zarr", **options) as w:
        w.write_many(want)
    url = f"file://{src}"
    with open_store(url) as r:
        assert isinstance(r, RemoteZarrReader)
        local = [p.relative_to(r.path).as_posix() for p in r.path.rglob("*") if p.is_file()]
        assert all(p.endswith("zarr.json") or p == "imgtui-manifest.json" for p in local), local  # no chunk
        assert r[650] == want[650]
        assert r.get_many([3, 699, 0, 3]) == [want[3], want[699], want[0], want[3]]
        assert r.labels() == [x.label for x in want]
        assert list(r) == want and r.verify().ok
        assert r.info()["path"] == url
        assert r.info()["bytes_on_disk"] > 700 * 16 * 16 * 3
    assert main(["verify", url, "-q"]) == 0
    # a damaged pixel at the URL is caught by the record's checksum
    chunk = next(p for p in sorted((src / "images" / "c").rglob("*")) if p.is_file())
    data = bytearray(chunk.read_bytes())
    if not options:
        data[100] ^= 0xFF
        chunk.write_bytes(bytes(data))
        with open_store(url) as r:
            assert isinstance(r, RemoteZarrReader)
            with pytest.raises(ImgtuiError, match="is damaged"):
                r.get_many(range(0, 20))


def test_a_remote_store_missing_its_index_or_table_is_one_line(tmp_path, cache):
    src, _want = _wds_store(tmp_path, n=20)
    (src / "index.npy").unlink()
    with pytest.raises(ImgtuiError) as e:
        open_store(f"file://{src}")
    assert str(e.value) == f"file://{src}: index.npy is missing (the store is damaged or incomplete)"
    disk = tmp_path / "d.disk"
    with imgtui.writer(disk, "disk") as w:
        w.write_many(records(5))
    (disk / "records.csv").unlink()
    with pytest.raises(ImgtuiError, match=r"records.csv is missing") as e:
        open_store(f"file://{disk}")
    assert "\n" not in str(e.value)
    assert main(["info", f"file://{disk}"]) != 0
