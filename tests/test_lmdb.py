import json
import os

import lmdb
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imgtui.backends.base import FORMAT_VERSION
from imgtui.backends.lmdb import LmdbBackend
from imgtui.backends.lmdb.store import (
    DB_META,
    MANIFEST_KEY,
    MAX_DBS,
    LmdbReader,
    LmdbWriter,
)
from imgtui.datasets import SyntheticDataset
from imgtui.errors import (
    CorruptStoreError,
    FormatVersionError,
    ImgtuiError,
    IncompleteStoreError,
    StoreExistsError,
)
from imgtui.records import Record


def write(path, records, **opts):
    with LmdbBackend.writer(path, **opts) as w:
        w.write_many(records)
    return path


def read_all(path):
    with LmdbBackend.open(path) as r:
        return list(r)


def test_fixed_round_trip_and_stacked_images(tmp_path):
    recs = list(SyntheticDataset(count=300))
    p = write(tmp_path / "a.lmdb", recs)
    assert (p / "data.mdb").is_file() and LmdbBackend.detect(p)
    with LmdbBackend.open(p) as r:
        assert len(r) == 300
        got = list(r)
        assert all(a == b for a, b in zip(recs, got))
        imgs = r.get_images([5, 0, -1, 5])
        assert isinstance(imgs, np.ndarray) and imgs.shape == (4, 32, 32, 3) and imgs.dtype == np.uint8
        assert np.array_equal(imgs[0], recs[5].image) and np.array_equal(imgs[2], recs[299].image)
        many = r.get_many([7, 123])
        assert many[0] == recs[7] and many[1] == recs[123]
        assert r[42] == recs[42]
        assert r.manifest["records_per_block"] == 85 and r.manifest["blocks"] == 4
        assert r.verify().ok
        with pytest.raises(IndexError):
            r[300]
    # arrays outlive the reader
    assert np.array_equal(imgs[1], recs[0].image)


def test_variable_16bit_gray_and_channel_one(tmp_path):
    recs = list(SyntheticDataset(count=40, variable=(3, 70), channels=1, bits=16, seed=2))
    recs.append(Record(np.arange(12, dtype=np.uint16).reshape(3, 4, 1) * 5000, 1, {}))
    recs.append(Record(np.arange(12, dtype=np.uint8).reshape(3, 4), 2, {}))
    recs.append(Record(np.full((2, 3, 4), 65535, np.uint16), 3, {}))
    p = write(tmp_path / "v.lmdb", recs)
    got = read_all(p)
    assert all(a == b for a, b in zip(recs, got))
    assert got[-3].image.shape == (3, 4, 1) and got[-2].image.shape == (3, 4)
    with LmdbBackend.open(p) as r:
        imgs = r.get_images(range(len(recs)))
        assert isinstance(imgs, list) and imgs[-1].dtype == np.uint16


def test_labels_and_metadata(tmp_path):
    recs = [
        Record(np.zeros((4, 4, 3), np.uint8), "cat", {"src": "a.png", "n": [1, 2]}),
        Record(np.ones((4, 4, 3), np.uint8), 7, {}),
        Record(np.ones((4, 4, 3), np.uint8), -(1 << 63), {"ü": None}),
        Record(np.ones((4, 4, 3), np.uint8), "7", {}),
    ]
    p = write(tmp_path / "l.lmdb", recs)
    with LmdbBackend.open(p) as r:
        labels = r.labels()
        assert labels == ["cat", 7, -(1 << 63), "7"]
        assert [type(x) for x in labels] == [str, int, int, str]
        got = list(r)
    assert all(a == b for a, b in zip(recs, got))


def test_labels_without_touching_pixels(tmp_path):
    p = write(tmp_path / "l.lmdb", list(SyntheticDataset(count=200)))
    with LmdbBackend.open(p) as r:
        assert len(r.labels()) == 200
        assert not r._indexed  # the block index (pixels) was never read


@pytest.mark.parametrize("level", [0, 1, 9])
def test_png_encoding_round_trip(tmp_path, level):
    recs = list(SyntheticDataset(count=30, variable=(8, 40), seed=4))
    recs += list(SyntheticDataset(count=5, channels=1, bits=16, seed=5))
    recs += list(SyntheticDataset(count=5, channels=4, bits=16, seed=6))  # Pillow cannot: stored raw
    recs.append(Record(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8), 0, {}))
    p = write(tmp_path / "png.lmdb", recs, encoding="png", png_level=level)
    with LmdbBackend.open(p) as r:
        assert r.manifest["options"]["encoding"] == "png"
        assert r.manifest["options"]["png_level"] == level
        r._ensure_index()
        # a record is a PNG exactly when its PNG is smaller than its raw pixels (at level 0 never;
        # a small noisy image may not be either)
        from imgtui.backends.lmdb.store import _png_encode

        want = [(d := _png_encode(rec.image, level)) is not None and len(d) < rec.image.nbytes for rec in recs]
        assert (r._ent["enc"] == 1).tolist() == want
        if level > 0:
            assert sum(want[:30]) >= 25  # most of the 8-bit images
        assert (r._ent["enc"][30:40] == 0).sum() >= 5  # 16-bit RGBA records stay raw
        got = list(r)
        assert r.verify().ok
    assert all(a == b for a, b in zip(recs, got))


def test_png_is_smaller_on_smooth_images(tmp_path):
    recs = list(SyntheticDataset(count=50, size=64))
    for r in recs:
        r.image[:] = r.image[:1, :1]  # flat colour: compresses well
    raw = write(tmp_path / "raw.lmdb", recs)
    png = write(tmp_path / "png.lmdb", recs, encoding="png")
    from imgtui.backends.base import path_size

    assert path_size(png) < path_size(raw)
    assert all(a == b for a, b in zip(recs, read_all(png)))


@pytest.mark.parametrize(
    "opts,msg",
    [
        ({"encoding": "jpeg"}, "lmdb: option encoding must be 'raw' or 'png', got 'jpeg'"),
        ({"png_level": 10}, "lmdb: option png_level must be an integer from 0 to 9, got 10"),
        ({"png_level": True}, "lmdb: option png_level must be an integer"),
        ({"colour": 1}, "lmdb: unknown option(s) colour"),
        ({"map_size": 10}, "lmdb: option map_size must be an integer"),
    ],
)
def test_bad_options(tmp_path, opts, msg):
    with pytest.raises(ImgtuiError) as ei:
        LmdbBackend.writer(tmp_path / "x.lmdb", **opts)
    assert str(ei.value).startswith(msg)
    assert "\n" not in str(ei.value)
    assert not (tmp_path / "x.lmdb").exists()


_shapes = st.tuples(st.integers(1, 9), st.integers(1, 9), st.sampled_from([None, 1, 3, 4]))
_labels = st.one_of(st.integers(-(1 << 63), (1 << 63) - 1), st.text(max_size=8))
_meta = st.dictionaries(st.text(max_size=5), st.one_of(st.integers(-1000, 1000), st.text(max_size=5), st.none()), max_size=3)


@st.composite
def _records(draw):
    out = []
    for _ in range(draw(st.integers(0, 12))):
        h, w, c = draw(_shapes)
        dt = draw(st.sampled_from([np.uint8, np.uint16]))
        shape = (h, w) if c is None else (h, w, c)
        seed = draw(st.integers(0, 2**32 - 1))
        img = np.random.default_rng(seed).integers(0, np.iinfo(dt).max + 1, shape, dtype=dt)
        out.append(Record(img, draw(_labels), draw(_meta)))
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(recs=_records(), enc=st.sampled_from(["raw", "png"]), block=st.sampled_from([4096, 65536]))
def test_property_round_trip(tmp_path_factory, recs, enc, block):
    p = tmp_path_factory.mktemp("h") / "s.lmdb"
    write(p, recs, encoding=enc, block_bytes=block)
    with LmdbBackend.open(p) as r:
        assert len(r) == len(recs)
        got = list(r)
        assert r.labels() == [x.label for x in recs]
        assert r.verify().ok
    assert all(a == b for a, b in zip(recs, got))


def test_map_grows_by_itself(tmp_path):
    recs = list(SyntheticDataset(count=700, size=40))  # ~3.4 MB, far more than a 64 KiB map
    p = write(tmp_path / "g.lmdb", recs, map_size=65536, batch_size=100)
    with LmdbBackend.open(p) as r:
        assert r.manifest["options"]["map_size"] == 65536
        got = list(r)
        assert r.verify().ok
    assert all(a == b for a, b in zip(recs, got))


def test_incomplete_store(tmp_path):
    p = tmp_path / "i.lmdb"
    w = LmdbBackend.writer(p)
    w.__enter__()
    w.write_many(SyntheticDataset(count=600))  # some batches committed, no manifest
    w._env.close()  # as if the process were killed now
    assert not p.exists()  # built beside the store's path
    p = w.build_path
    with pytest.raises(IncompleteStoreError) as ei:
        LmdbBackend.open(p)
    assert str(ei.value) == (
        f"{p} is incomplete: its writer did not finish (interrupted or killed); re-create it with --overwrite"
    )
    empty = tmp_path / "e.lmdb"
    lmdb.open(str(empty), max_dbs=MAX_DBS).close()
    with pytest.raises(IncompleteStoreError):
        LmdbBackend.open(empty)


def _edit_manifest(p, **changes):
    env = lmdb.open(str(p), max_dbs=MAX_DBS)
    db = env.open_db(DB_META)
    with env.begin(write=True) as txn:
        m = json.loads(txn.get(MANIFEST_KEY, db=db))
        m.update(changes)
        txn.put(MANIFEST_KEY, json.dumps(m).encode(), db=db)
    env.close()


def test_newer_format_version(tmp_path):
    p = write(tmp_path / "n.lmdb", list(SyntheticDataset(count=3)))
    _edit_manifest(p, format_version=FORMAT_VERSION + 1)
    with pytest.raises(FormatVersionError) as ei:
        LmdbBackend.open(p)
    assert str(ei.value) == (
        f"{p} uses imgtui format version {FORMAT_VERSION + 1}; this imgtui reads up to {FORMAT_VERSION} (upgrade imgtui)"
    )


def test_existing_destination_without_overwrite(tmp_path):
    recs = list(SyntheticDataset(count=5))
    p = write(tmp_path / "x.lmdb", recs)
    before = (p / "data.mdb").read_bytes()
    with pytest.raises(StoreExistsError) as ei:
        LmdbBackend.writer(p)
    assert str(ei.value) == f"{p} already exists; choose another destination or pass --overwrite"
    assert (p / "data.mdb").read_bytes() == before
    assert all(a == b for a, b in zip(recs, read_all(p)))


def test_overwrite_failure_keeps_old_store(tmp_path):
    recs = list(SyntheticDataset(count=20))
    p = write(tmp_path / "x.lmdb", recs)
    before = (p / "data.mdb").read_bytes()
    with pytest.raises(RuntimeError):
        with LmdbBackend.writer(p, overwrite=True, batch_size=10) as w:
            w.write_many(SyntheticDataset(count=50, seed=9))
            raise RuntimeError("boom")
    assert (p / "data.mdb").read_bytes() == before
    assert all(a == b for a, b in zip(recs, read_all(p)))
    assert sorted(os.listdir(tmp_path)) == ["x.lmdb"]
    # and a successful overwrite replaces it
    new = list(SyntheticDataset(count=7, seed=9))
    write(p, new, overwrite=True)
    assert all(a == b for a, b in zip(new, read_all(p)))
    assert sorted(os.listdir(tmp_path)) == ["x.lmdb"]


def test_corrupt_byte_is_reported_by_verify(tmp_path):
    recs = list(SyntheticDataset(count=200))
    p = write(tmp_path / "c.lmdb", recs)
    # find record 123's pixels in the file by their bytes
    data = bytearray((p / "data.mdb").read_bytes())
    needle = recs[123].image.tobytes()
    pos = data.find(needle)
    assert pos > 0 and data.find(needle, pos + 1) == -1
    data[pos + 100] ^= 0xFF
    (p / "data.mdb").write_bytes(bytes(data))
    with LmdbBackend.open(p) as r:
        res = r.verify()
    assert not res.ok
    assert len(res.errors) == 1 and res.errors[0].startswith("record 123: pixel checksum mismatch")
    assert "FAILED" in res.summary()


def test_missing_block_is_reported(tmp_path):
    p = write(tmp_path / "m.lmdb", list(SyntheticDataset(count=300)))
    env = lmdb.open(str(p), max_dbs=MAX_DBS)
    db = env.open_db(b"blocks")
    with env.begin(write=True) as txn:
        assert txn.delete((85).to_bytes(8, "big"), db=db)
    env.close()
    with LmdbBackend.open(p) as r:
        assert r[0] is not None
        with pytest.raises(CorruptStoreError, match="record 100 cannot be read"):
            r[100]
        res = r.verify()
    assert not res.ok
    assert res.errors[0].startswith("record 85: cannot be read")
    assert any("records 85-169: block missing" in e for e in res.errors)


def test_truncated_data_file(tmp_path):
    p = write(tmp_path / "t.lmdb", list(SyntheticDataset(count=300)))
    data = p / "data.mdb"
    size = data.stat().st_size
    os.truncate(data, size // 2)
    with pytest.raises(CorruptStoreError) as ei:
        LmdbBackend.open(p)
    msg = str(ei.value)
    assert "\n" not in msg and "truncated" in msg and str(data) in msg
    os.truncate(data, 100)
    with pytest.raises(CorruptStoreError) as ei:
        LmdbBackend.open(p)
    assert "\n" not in str(ei.value) and str(data) in str(ei.value)


def test_two_readers_same_store(tmp_path):
    recs = list(SyntheticDataset(count=10))
    p = write(tmp_path / "a.lmdb", recs)
    r1 = LmdbBackend.open(p)
    r2 = LmdbBackend.open(p)
    assert r1[3] == r2[3] == recs[3]
    r1.close()
    assert r2[4] == recs[4]
    r2.close()


def test_too_large_image_is_refused(tmp_path, monkeypatch):
    import imgtui.backends.lmdb.store as mod

    monkeypatch.setattr(mod, "MAX_VALUE_BYTES", 10_000)
    from imgtui.errors import InvalidRecordError

    with LmdbBackend.writer(tmp_path / "big.lmdb") as w:
        w.write(Record(np.zeros((10, 10, 3), np.uint8), 0, {}))
        with pytest.raises(InvalidRecordError) as ei:
            w.write(Record(np.zeros((100, 100, 3), np.uint8), 0, {}))
    assert str(ei.value).startswith("record 1: image of 30,000 bytes is too large for one LMDB value")
    assert len(read_all(tmp_path / "big.lmdb")) == 1


def test_empty_store(tmp_path):
    p = write(tmp_path / "z.lmdb", [])
    with LmdbBackend.open(p) as r:
        assert len(r) == 0 and list(r) == [] and r.labels() == [] and r.verify().ok


def test_single_lookup_reads_only_its_block_and_matches_the_index(tmp_path):
    import imgtui

    ds = SyntheticDataset(count=300, size=40, seed=9)  # 4,800-byte images: ~54 per block
    dest = tmp_path / "one.lmdb"
    with imgtui.writer(dest, "lmdb") as w:
        w.write_many(ds)
    with imgtui.open(dest) as r:
        assert r[257] == ds.record(257) and r[0] == ds.record(0) and r[-1] == ds.record(299)
        assert not r._indexed  # no scan of every block for single lookups
        r._ensure_index()
        assert r[257] == ds.record(257)
