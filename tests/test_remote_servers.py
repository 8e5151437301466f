"""Stores at URLs against real servers on localhost: an S3-compatible object store (moto in server
mode, spoken to by s3fs/botocore exactly as AWS or MinIO would be, endpoint from the usual
AWS_ENDPOINT_URL) and a plain HTTP server that answers range requests. Nothing leaves localhost."""

from __future__ import annotations

import http.server
import os
import re
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("s3fs")
pytest.importorskip("aiohttp")
moto_server = pytest.importorskip("moto.server")
boto3 = pytest.importorskip("boto3")

import imgtui  # noqa: E402
from imgtui.backends import available, open_store, remote  # noqa: E402
from imgtui.cli import main  # noqa: E402
from imgtui.records import Record  # noqa: E402


def records(n: int, seed: int = 0) -> list[Record]:
    rng = np.random.default_rng(seed)
    return [Record(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8), i % 4, {"i": i}) for i in range(n)]


class _Counting(http.server.ThreadingHTTPServer):
    daemon_threads = True


@pytest.fixture(scope="module")
def s3_endpoint():
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(s3_endpoint, tmp_path, monkeypatch):
    """A fresh bucket; credentials and endpoint from the environment, as a user sets them."""
    for k, v in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
                 "AWS_ENDPOINT_URL": s3_endpoint, "IMGTUI_CACHE": str(tmp_path / "cache")}.items():
        monkeypatch.setenv(k, v)
    bucket = f"b{abs(hash(str(tmp_path))) % 10**8}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()  # each test's environment, not a cached client's
    return bucket


@pytest.mark.parametrize("backend", [b for b in ("disk", "lmdb", "hdf5", "webdataset", "zarr") if b in available()])
def test_each_backend_round_trips_bit_exact_through_an_s3_server(backend, s3, tmp_path, capsys):
    src = tmp_path / "src.h5"
    want = records(40)
    with imgtui.writer(src, "hdf5") as w:
        w.write_many(want)
    url = f"s3://{s3}/stores/s.{backend}"
    assert main(["convert", str(src), url, "--backend", backend]) == 0
    assert "uploaded" in capsys.readouterr().out
    with imgtui.open(url) as r:
        assert list(r) == want
        assert r.info()["path"] == url
    assert main(["verify", url, "-q"]) == 0
    # the URL is refused as a target when it exists, in one line
    assert main(["convert", str(src), url, "--backend", backend]) != 0
    assert "exists" in capsys.readouterr().err


def test_a_remote_lmdb_is_cached_once_and_evicted_beyond_the_limit(s3, tmp_path, monkeypatch):
    urls = []
    for k in range(3):
        src = tmp_path / f"s{k}.lmdb"
        with imgtui.writer(src, "lmdb") as w:
            w.write_many(records(30, seed=k))
        url = f"s3://{s3}/s{k}.lmdb"
        remote.upload(src, url)
        urls.append(url)
    cache = Path(os.environ["IMGTUI_CACHE"])
    with imgtui.open(urls[0]) as r:
        assert r[4] == records(30, seed=0)[4]
    (entry,) = list(cache.iterdir())
    data = next(entry.rglob("data.mdb"))
    fetched = data.stat().st_mtime_ns
    with imgtui.open(urls[0]) as r:  # unchanged on the server: read from the cache, not fetched again
        assert r[29] == records(30, seed=0)[29]
    assert data.stat().st_mtime_ns == fetched
    monkeypatch.setenv("IMGTUI_CACHE_LIMIT", str(int(data.stat().st_size * 2.5)))
    for k, url in enumerate(urls[1:], 1):
        os.utime(entry, None)
        with imgtui.open(url) as r:
            assert r[0] == records(30, seed=k)[0]
    assert len(list(cache.iterdir())) == 2
    assert not entry.exists()  # the least recently used copy went


def test_an_interrupted_upload_to_s3_resumes(s3, tmp_path, monkeypatch, capsys):
    url = f"s3://{s3}/sharded.lmdb"
    import s3fs

    put = s3fs.S3FileSystem._put_file  # what every upload of s3fs comes down to

    async def flaky(self, lpath, rpath, *a, **k):
        if "shard-00001" in str(lpath):  # the connection drops while the second shard goes up
            raise OSError("connection reset by peer")
        return await put(self, lpath, rpath, *a, **k)

    monkeypatch.setattr(s3fs.S3FileSystem, "_put_file", flaky)
    spec = "synthetic:count=90,size=6"
    assert main(["convert", spec, url, "--backend", "lmdb", "--shards", "3"]) != 0
    assert "connection reset" in capsys.readouterr().err
    with pytest.raises(imgtui.ImgtuiError):
        imgtui.open(url)  # no manifest yet: not a store
    monkeypatch.setattr(s3fs.S3FileSystem, "_put_file", put)
    assert main(["convert", spec, url, "--backend", "lmdb", "--shards", "3", "--resume"]) == 0
    out = capsys.readouterr().out
    assert "already there" in out
    assert len(imgtui.open(url)) == 90


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with single-range requests (``Range: bytes=a-b``), as object stores and CDNs
    answer them; counts the bytes it sends."""

    sent = 0

    def log_message(self, *args) -> None:
        pass

    def send_head(self):  # noqa: C901
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return None
        size = path.stat().st_size
        m = re.match(r"bytes=(\d*)-(\d*)$", self.headers.get("Range", ""))
        f = open(path, "rb")
        if not m:
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            type(self).sent += size if self.command == "GET" else 0
            return f
        a = int(m.group(1)) if m.group(1) else max(0, size - int(m.group(2)))
        b = min(size - 1, int(m.group(2))) if m.group(1) and m.group(2) else size - 1
        f.seek(a)
        body = f.read(b - a + 1)
        f.close()
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {a}-{b}/{size}")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        type(self).sent += len(body) if self.command == "GET" else 0
        import io

        return io.BytesIO(body)


@pytest.fixture
def http_root(tmp_path, monkeypatch):
    root = tmp_path / "www"
    root.mkdir()
    monkeypatch.setenv("IMGTUI_CACHE", str(tmp_path / "cache"))

    def handler(*a, **k):
        return _RangeHandler(*a, directory=str(root), **k)

    _RangeHandler.sent = 0
    server = _Counting(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_large_hdf5_store_over_http_is_read_with_range_requests(http_root, monkeypatch):
    root, base = http_root
    monkeypatch.setenv("IMGTUI_RANGED_MIN", "1MB")
    monkeypatch.setenv("IMGTUI_RANGED_BLOCK", "64KiB")
    rng = np.random.default_rng(3)
    want = [Record(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), i % 10, {}) for i in range(2000)]
    with imgtui.writer(root / "big.h5", "hdf5") as w:
        w.write_many(want)
    size = (root / "big.h5").stat().st_size
    with imgtui.open(f"{base}/big.h5") as r:
        assert isinstance(r._fileobj, remote.RangedFile)
        assert r[1500] == want[1500]
        assert _RangeHandler.sent < size / 10, (_RangeHandler.sent, size)  # not downloaded
        assert r.get_many([3, 1999, 0]) == [want[3], want[1999], want[0]]
    assert main(["verify", f"{base}/big.h5", "-q"]) == 0


def _image_records(n: int, seed: int = 3) -> list[Record]:
    rng = np.random.default_rng(seed)
    return [Record(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), i % 10, {"i": i} if i % 9 == 0 else {})
            for i in range(n)]


def _in_place_classes() -> dict:
    from imgtui.backends.disk.remote import RemoteDiskReader
    from imgtui.backends.webdataset.remote import RemoteWdsReader

    out = {"webdataset": RemoteWdsReader, "disk": RemoteDiskReader}
    if "zarr" in available():
        from imgtui.backends.zarr.remote import RemoteZarrReader

        out["zarr"] = RemoteZarrReader
    return out


@pytest.mark.parametrize("backend", [b for b in ("webdataset", "disk", "zarr") if b in available()])
def test_a_store_on_s3_is_read_in_place_not_downloaded(backend, s3, tmp_path):

    n = 2000 if backend == "webdataset" else 600  # (moto answers ~50 requests/s here: a file is one)
    want = _image_records(n)
    src = tmp_path / f"s.{backend}"
    with imgtui.writer(src, backend, **({"shard_bytes": 2_000_000} if backend == "webdataset" else {})) as w:
        w.write_many(want)
    size = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    url = f"s3://{s3}/s.{backend}"
    remote.upload(src, url)
    with imgtui.open(url) as r:
        assert isinstance(r, _in_place_classes()[backend])
        assert r[500] == want[500]
        batch = np.random.default_rng(0).integers(0, n, 32)
        assert np.array_equal(r.get_images(batch), np.stack([want[i].image for i in batch]))
        if backend != "zarr":  # (zarr-python's reads are counted over HTTP below)
            assert r.files.fetched < size / 10, (r.files.fetched, size)  # a record and a batch, not the store
            assert r.files.requests <= 1 + 32
            before = r.files.requests
        assert r.get_many(range(256, 320)) == want[256:320]
        if backend == "webdataset":
            assert r.files.requests == before + 1  # 64 records in order: one request
        if backend != "disk":
            assert list(r) == want
    cache = Path(os.environ["IMGTUI_CACHE"])
    small = {"manifest.json", "index.npy", "records.csv", "zarr.json", "imgtui-manifest.json", "stamps.json", ".used", ".lock"}
    assert not [p for p in cache.rglob("*") if p.is_file() and p.name not in small]  # only what opening needs
    if backend != "disk":
        assert main(["verify", url, "-q"]) == 0


def test_a_sharded_store_on_s3_reads_its_shards_in_place(s3, tmp_path, monkeypatch):
    from imgtui.backends.webdataset.remote import RemoteWdsReader

    monkeypatch.setenv("IMGTUI_RANGED_MIN", "100kB")
    monkeypatch.setenv("IMGTUI_RANGED_BLOCK", "16KiB")
    want = _image_records(600)
    spec = tmp_path / "src.h5"
    with imgtui.writer(spec, "hdf5") as w:
        w.write_many(want)
    cache = Path(os.environ["IMGTUI_CACHE"])
    for backend, suffix in (("hdf5", ".h5"), ("webdataset", ".wds")):
        url = f"s3://{s3}/sharded-{backend}"
        assert main(["convert", str(spec), url, "--backend", backend, "--shards", "3", "-q"]) == 0
        with imgtui.open(url) as r:
            assert r.sharded and r[450] == want[450]
            shard = r.shard(2)
            if backend == "hdf5":
                assert isinstance(shard._fileobj, remote.RangedFile)
                assert shard._fileobj.fetched < shard._fileobj.size / 4  # open and a record: a few blocks
            else:
                assert isinstance(shard, RemoteWdsReader)
            assert list(r) == want
        assert not [p for p in cache.rglob(f"shard-*{suffix}*") if p.is_file() and p.stat().st_size > 100_000]


def test_an_lmdb_store_goes_up_to_s3_without_its_lock_file_and_reads_back(s3, tmp_path):
    src = tmp_path / "s.lmdb"
    want = records(30)
    with imgtui.writer(src, "lmdb") as w:
        w.write_many(want)
    assert (src / "lock.mdb").exists()
    url = f"s3://{s3}/up/s.lmdb"
    done = remote.upload(src, url)
    keys = [o["Key"] for o in boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
            .list_objects_v2(Bucket=s3, Prefix="up/")["Contents"]]
    assert keys == ["up/s.lmdb/data.mdb"] and done["bytes"] == (src / "data.mdb").stat().st_size
    with imgtui.open(url) as r:
        assert list(r) == want
    assert remote.upload(src, url, resume=True)["skipped"] == 1


@pytest.mark.parametrize("backend", [b for b in ("webdataset", "disk", "zarr") if b in available()])
def test_a_folder_store_over_http_is_read_with_range_requests(backend, http_root):
    """A plain web server (no folder listings): only the files and ranges read are sent."""
    root, base = http_root
    want = _image_records(1500)
    options = {"webdataset": {"shard_bytes": 2_000_000}, "zarr": {"chunk_records": 16}}.get(backend, {})
    with imgtui.writer(root / f"s.{backend}", backend, **options) as w:
        w.write_many(want)
    size = sum(p.stat().st_size for p in (root / f"s.{backend}").rglob("*") if p.is_file())
    with imgtui.open(f"{base}/s.{backend}") as r:
        assert isinstance(r, _in_place_classes()[backend])
        assert r[1234] == want[1234]
        assert r.get_many([5, 1499, 17]) == [want[5], want[1499], want[17]]
        assert np.array_equal(r.get_images(range(640, 704)), np.stack([x.image for x in want[640:704]]))
        assert r.labels_array().tolist() == [x.label for x in want]
        assert _RangeHandler.sent < size / 5, (_RangeHandler.sent, size)  # not downloaded
