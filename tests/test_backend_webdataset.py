"""The webdataset backend passes the shared conformance suite (tests/backend_suite.py), and its tar
shards are what the ``webdataset`` package, Python's ``tarfile`` and ``tar`` read."""

from __future__ import annotations

import glob
import io
import json
import os
import shutil
import subprocess
import tarfile
import zlib

import numpy as np
import pytest
from backend_suite import BackendSuite

import imgtui
from imgtui.backends import detect_backend, get_backend, open_store
from imgtui.backends.webdataset import INDEX, MANIFEST, WdsReader, WebDatasetBackend, shard_name
from imgtui.errors import CorruptStoreError, ImgtuiError, IncompleteStoreError, StoreChangedError
from imgtui.png import decode_png
from imgtui.records import Record


class TestWebDataset(BackendSuite):
    backend = "webdataset"
    # small shards: every suite test crosses shard boundaries (600 8x8x3 records -> ~30 shards)
    options = {"shard_bytes": 64 << 10}


class TestWebDatasetPng(BackendSuite):
    backend = "webdataset"
    options = {"encoding": "png"}


# -- records of every kind ----------------------------------------------------------------------
def records() -> list[Record]:
    rng = np.random.default_rng(3)
    out = []
    shapes = [(5, 7), (5, 7, 1), (6, 4, 3), (3, 9, 4), (1, 1), (2, 3, 1)]
    for i, shape in enumerate(shapes * 2):
        dtype = np.uint8 if i < len(shapes) else np.uint16
        img = rng.integers(0, np.iinfo(dtype).max + 1, shape).astype(dtype)
        label = i * 7 - 20 if i % 3 else f"cls é {i}"
        meta = {"i": i, "name": f"r{i}"} if i % 2 else {}
        out.append(Record(img, label, meta))
    out.append(Record(np.zeros((4, 4), np.uint8), -(2**63), {}))
    out.append(Record(np.zeros((4, 4), np.uint8), "", {"nested": {"a": [1, 2]}}))
    return out


def write(path, recs, **options):
    with imgtui.writer(path, "webdataset", **options) as w:
        w.write_many(recs)
    return path


@pytest.fixture
def store(tmp_path):
    return write(tmp_path / "s.wds", records(), shard_bytes=4096)


# -- readable without imgtui ----------------------------------------------------------------------
def test_the_webdataset_package_reads_the_shards(store):
    wds = pytest.importorskip("webdataset")
    recs = records()
    urls = sorted(glob.glob(str(store / "shard-*.tar")))
    assert len(urls) > 3  # shard_bytes=4096: several shards
    samples = list(wds.WebDataset(urls, shardshuffle=False).decode())
    assert len(samples) == len(recs)
    for i, (s, rec) in enumerate(zip(samples, recs)):
        assert s["__key__"] == f"{i:09d}"
        img = s["npy"]
        assert img.dtype == rec.image.dtype and img.shape == rec.image.shape  # HxW vs HxWx1 kept
        assert np.array_equal(img, rec.image)
        assert (s["cls"] if isinstance(rec.label, int) else s["txt"]) == rec.label
        assert ("cls" in s) == isinstance(rec.label, int)
        assert s.get("json", {}) == rec.metadata


def test_png_encoding_is_read_by_webdataset_and_any_png_decoder(tmp_path):
    wds = pytest.importorskip("webdataset")
    recs = records()
    p = write(tmp_path / "p.wds", recs, encoding="png")
    urls = sorted(glob.glob(str(p / "shard-*.tar")))
    samples = list(wds.WebDataset(urls, shardshuffle=False).decode())  # .png left as bytes
    for s, rec in zip(samples, recs):
        img = decode_png(s["png"])
        assert img.dtype == rec.image.dtype
        assert np.array_equal(img.reshape(rec.image.shape), rec.image)
    with open_store(p) as r:
        assert list(r) == recs  # the index restores HxWx1
        assert r.verify().ok


def test_tarfile_and_tar_list_the_members(store):
    names = []
    for k in range(len(glob.glob(str(store / "shard-*.tar")))):
        with tarfile.open(store / shard_name(k)) as t:
            for m in t.getmembers():
                assert m.isfile() and m.mode == 0o644
                names.append(m.name)
                if m.name.endswith(".npy"):
                    np.load(io.BytesIO(t.extractfile(m).read()), allow_pickle=False)
    assert names[:3] == ["000000000.npy", "000000000.txt", "000000001.npy"]
    assert sum(n.endswith(".npy") for n in names) == len(records())
    if shutil.which("tar"):
        out = subprocess.run(["tar", "tf", str(store / shard_name(0))], capture_output=True, text=True, check=True)
        assert out.stdout.split()[0] == "000000000.npy"


def test_shards_start_before_shard_bytes_and_records_never_split(tmp_path):
    recs = [Record(np.full((20, 20, 3), i, np.uint8), i, {}) for i in range(40)]
    p = write(tmp_path / "s.wds", recs, shard_bytes=8192)
    sizes = [os.path.getsize(f) for f in sorted(glob.glob(str(p / "shard-*.tar")))]
    assert len(sizes) > 5 and all(s <= 10240 * 2 for s in sizes)
    assert all(s % 10240 == 0 for s in sizes)  # padded like tar does
    big = [Record(np.zeros((100, 100, 3), np.uint8), 0, {})] * 2  # larger than a shard: one per shard
    q = write(tmp_path / "b.wds", big, shard_bytes=4096)
    assert len(glob.glob(str(q / "shard-*.tar"))) == 2
    with open_store(q) as r:
        assert list(r) == big


def test_round_trip_and_fast_batches(store):
    recs = records()
    with open_store(store) as r:
        assert r.backend == "webdataset" and len(r) == len(recs)
        assert list(r) == recs and r.labels() == [x.label for x in recs]
        assert r.get_many([3, -1, 0]) == [recs[3], recs[-1], recs[0]]
        same = [2, 8, 2]  # 6x4x3 uint8, 6x4x3 uint16: different dtypes -> a list
        got = r.get_images(same)
        assert isinstance(got, list) and all(np.array_equal(a, recs[i].image) for a, i in zip(got, same))
        batch = r.get_images([1, 1])
        assert isinstance(batch, np.ndarray) and batch.shape == (2, 5, 7, 1)
        assert r.verify().ok
        info = r.info()
        assert info["shards"] > 3 and "tar shard" in info["layout"]


@pytest.mark.parametrize("use_mmap", [True, False])
def test_mapped_and_pread_reads_agree_and_catch_a_shard_cut_after_open(store, monkeypatch, use_mmap):
    monkeypatch.setattr(WdsReader, "use_mmap", use_mmap)
    recs = records()
    with open_store(store) as r:
        assert bool(r._maps) is False
        assert list(r) == recs and r.get_many(range(len(recs))) == recs
        assert np.array_equal(r.get_images([0, 0, 6]), np.stack([recs[0].image, recs[0].image, recs[6].image]))
        assert bool(r._maps) is use_mmap and bool(r._fds) is not use_mmap
    with open_store(store) as r:
        last = len(recs) - 1
        k = int(r._ix["shard"][last])
        with open(store / shard_name(k), "r+b") as f:  # cut before this reader mapped or read it
            f.truncate(int(r._ix["img_off"][last]) + 8)
        with pytest.raises(CorruptStoreError) as e:
            r[last]
        assert "ends past the end of the shard" in one_line(e)
        with pytest.raises(CorruptStoreError):
            r.get_images([last])


def test_empty_store_has_one_empty_shard(tmp_path):
    p = write(tmp_path / "e.wds", [])
    with tarfile.open(p / shard_name(0)) as t:
        assert t.getnames() == []
    with open_store(p) as r:
        assert len(r) == 0 and r.verify().ok


def test_empty_string_and_extreme_int_labels(store):
    with open_store(store) as r:
        labels = r.labels()
    assert labels[-2] == -(2**63) and labels[-1] == ""


# -- registry, CLI, options ----------------------------------------------------------------------
def test_registered_and_detected(store):
    cls = get_backend("webdataset")
    assert cls is WebDatasetBackend and cls.suffix == ".wds"
    assert detect_backend(store) == "webdataset"
    caps = cls.capabilities
    assert not caps.append_in_place and not caps.delete_in_place and not caps.single_file
    assert "webdataset.WebDataset" in cls.recipe() and "index.npy" in cls.recipe()


def test_cli_convert_with_option_flags(tmp_path):
    from imgtui.cli import main

    dest = tmp_path / "c.wds"
    assert main(["convert", "synthetic:count=30,size=8", str(dest), "-b", "webdataset",
                 "--encoding", "png", "--shard-bytes", "8192", "-q"]) == 0
    with open_store(dest) as r:
        assert len(r) == 30 and r.manifest["options"] == {"encoding": "png", "png_level": 1, "shard_bytes": 8192}
        assert r.info()["shards"] > 1


@pytest.mark.parametrize("options, message", [
    ({"encoding": "jpeg"}, "encoding must be raw (.npy members) or png"),
    ({"shard_bytes": 10}, "shard_bytes must be a whole number from 4,096"),
    ({"png_level": 11}, "png_level must be a whole number from 0 to 9"),
    ({"layout": "x"}, "unknown option(s) layout"),
])
def test_bad_options_are_one_line(tmp_path, options, message):
    with pytest.raises(ImgtuiError) as e:
        imgtui.writer(tmp_path / "x.wds", "webdataset", **options)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "x.wds").exists()


# -- incomplete and hostile stores ---------------------------------------------------------------
def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text.strip()
    return text


def test_without_manifest_the_store_is_incomplete(store):
    (store / MANIFEST).unlink()
    assert detect_backend(store) == "webdataset"
    with pytest.raises(IncompleteStoreError) as e:
        open_store(store)
    assert "incomplete" in one_line(e)


def rewrite_index(store, change):
    """Change index.npy and give the manifest its new crc32 (a crafted, self-consistent store)."""
    ix = np.load(store / INDEX)
    change(ix)
    buf = io.BytesIO()
    np.save(buf, ix)
    (store / INDEX).write_bytes(buf.getvalue())
    m = json.loads((store / MANIFEST).read_text())
    m["layout"]["index_crc32"] = zlib.crc32(buf.getvalue())
    (store / MANIFEST).write_text(json.dumps(m))


@pytest.mark.parametrize("field, value", [
    ("img_off", 1 << 40),          # past the end of the shard
    ("img_off", (1 << 64) - 512),  # wraps around when added to the size
    ("img_size", 1 << 62),
    ("lab_off", 100),              # not at a member boundary
    ("shard", 999),                # a shard that does not exist
    ("h", 0),
    ("c", 2),
    ("dtype", 7),
])
def test_a_crafted_index_cannot_read_outside_the_shards(store, field, value):
    def change(ix):
        ix[field][3] = value

    rewrite_index(store, change)
    # the rows are checked when first used (opening checks the shards, the index's crc32 and
    # count): a crafted row is refused before any read uses it, alone or with the whole index
    for read in (lambda r: r[3], lambda r: r.get_many([0, 3]), lambda r: r.labels(), lambda r: r.get_images([1])):
        with pytest.raises(CorruptStoreError) as e:
            read(open_store(store))
        assert "row 3 is invalid" in one_line(e)


def test_an_edited_index_without_a_matching_crc_is_refused(store):
    data = bytearray((store / INDEX).read_bytes())
    data[-1] ^= 1
    (store / INDEX).write_bytes(bytes(data))
    with pytest.raises(CorruptStoreError) as e:
        open_store(store)
    assert "crc32" in one_line(e)


def test_a_wrong_index_dtype_is_refused(store):
    ix = np.zeros(len(records()), [("shard", "<u4")])
    buf = io.BytesIO()
    np.save(buf, ix)
    (store / INDEX).write_bytes(buf.getvalue())
    m = json.loads((store / MANIFEST).read_text())
    m["layout"]["index_crc32"] = zlib.crc32(buf.getvalue())
    (store / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(CorruptStoreError) as e:
        open_store(store)
    assert "not an imgtui webdataset index" in one_line(e)


def test_an_index_cut_short_is_refused(store):
    data = (store / INDEX).read_bytes()[:-10]
    (store / INDEX).write_bytes(data)
    m = json.loads((store / MANIFEST).read_text())
    m["layout"]["index_crc32"] = zlib.crc32(data)
    (store / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(CorruptStoreError) as e:
        open_store(store)
    assert "bytes of rows" in one_line(e)


def test_a_symlinked_shard_is_not_followed(store, tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(os.urandom(1 << 16))
    (store / shard_name(0)).unlink()
    (store / shard_name(0)).symlink_to(secret)
    with pytest.raises(CorruptStoreError) as e:
        open_store(store)
    assert "not a regular file" in one_line(e)


def test_a_truncated_shard_is_refused_at_open(store):
    with open(store / shard_name(1), "r+b") as f:
        f.truncate(700)
    with pytest.raises(CorruptStoreError) as e:
        open_store(store)
    assert "is invalid" in one_line(e)


def test_flipped_pixel_bits_are_found_by_verify_and_checked_reads(store):
    with open_store(store) as r:
        row = r._ix[4]
    path = store / shard_name(int(row["shard"]))
    data = bytearray(path.read_bytes())
    data[int(row["img_off"]) + int(row["hdr"])] ^= 0x10
    path.write_bytes(bytes(data))
    with open_store(store) as r:
        v = r.verify()
        assert not v.ok and "record 4" in v.summary()


def test_verify_walks_the_tar_headers(store):
    # a member renamed in the tar (the index no longer says what webdataset reads): verify says so
    with open_store(store) as r:
        row = r._ix[2]
    path = store / shard_name(int(row["shard"]))
    data = bytearray(path.read_bytes())
    hdr = int(row["lab_off"]) - 512
    data[hdr : hdr + 13] = b"000000099.cls"
    chk = sum(data[hdr : hdr + 148]) + 256 + sum(data[hdr + 156 : hdr + 512])
    data[hdr + 148 : hdr + 156] = f"{chk:06o}\x00 ".encode()
    path.write_bytes(bytes(data))
    with open_store(store) as r:
        v = r.verify()
    assert not v.ok
    assert any(e.startswith("record 2:") and "'000000099.cls'" in e for e in v.errors)


def test_verify_finds_stray_files_and_bad_tar_checksums(store):
    (store / "extra.tar").write_bytes(b"x")
    with open(store / shard_name(0), "r+b") as f:
        f.seek(0)
        f.write(b"Z")
    with open_store(store) as r:
        v = r.verify()
    assert any("extra.tar: unexpected file" in e for e in v.errors)
    assert any("tar header checksum mismatch" in e for e in v.errors)


def test_a_reader_reads_the_old_shards_after_a_rewrite_or_is_told_to_reopen(tmp_path):
    recs = [Record(np.full((4, 4), i, np.uint8), i, {}) for i in range(30)]
    p = write(tmp_path / "s.wds", recs, shard_bytes=16384)  # 7 records per shard
    r = open_store(p)
    try:
        assert r[0] == recs[0]  # shard 0 now open
        imgtui.delete(p, [0])
        assert r[1] == recs[1]  # the old shard, still open
        with pytest.raises(StoreChangedError):
            r[len(recs) - 1]  # a shard not opened before the change: gone with the old store
    finally:
        r.close()
    with open_store(p) as r2:
        assert list(r2) == recs[1:]


def test_large_index_is_not_read_whole_on_open(tmp_path, monkeypatch):
    """Past LAZY_CRC_BYTES of index the crc32 is checked when the index is used whole (labels,
    verify), and batch reads check only their own rows; a damaged index is still refused."""
    import numpy as np
    import pytest

    import imgtui
    from imgtui.backends import open_store
    from imgtui.backends.webdataset import store as wds
    from imgtui.errors import CorruptStoreError
    from imgtui.records import Record

    records = [Record(np.full((4, 4), i % 256, np.uint8), i % 9) for i in range(300)]
    p = tmp_path / "s.wds"
    with imgtui.writer(p, "webdataset") as w:
        w.write_many(records)
    monkeypatch.setattr(wds, "LAZY_CRC_BYTES", 1000)
    with open_store(p) as r:
        assert r._index_data is not None and not r._rows_checked  # nothing read whole yet
        idx = [299, 5, 5, 0]
        assert r.get_many(idx) == [records[i] for i in idx]
        assert np.array_equal(r.get_images(idx), np.stack([records[i].image for i in idx]))
        assert not r._rows_checked
        assert r.labels_array().tolist() == [x.label for x in records] and r._index_data is None
        assert r.verify().ok
    # a label changed in the index: open still works, the whole-index uses refuse it
    ipath = p / "index.npy"
    raw = bytearray(ipath.read_bytes())
    arr = np.frombuffer(raw, wds.INDEX_DTYPE, 300, len(raw) - 300 * wds.INDEX_DTYPE.itemsize)
    off = len(raw) - 300 * wds.INDEX_DTYPE.itemsize + 7 * wds.INDEX_DTYPE.itemsize + wds.INDEX_DTYPE.fields["label"][1]
    raw[off] ^= 1
    ipath.write_bytes(bytes(raw))
    del arr
    with open_store(p) as r:
        with pytest.raises(CorruptStoreError, match="crc32"):
            r.labels_array()
    with open_store(p) as r:
        assert not r.verify().ok
    monkeypatch.setattr(wds, "LAZY_CRC_BYTES", 256 << 20)
    with pytest.raises(CorruptStoreError, match="crc32"):
        open_store(p)
