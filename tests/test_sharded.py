"""Sharded stores: layout, manifest, ShardedReader, detection, damage, CLI (in-process writing)."""

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

import imgtui
from imgtui.backends import detect_backend, open_store
from imgtui.convert import convert
from imgtui.backends.sharded import (
    MANIFEST,
    PROGRESS_DIR,
    ShardedReader,
    parse_size,
    plan_by_count,
    plan_by_size,
    records_checksum,
)
from imgtui.cli import main
from imgtui.datasets import SyntheticDataset, open_dataset
from imgtui.datasets.base import Dataset
from imgtui.errors import (
    CorruptStoreError,
    ImgtuiError,
    IncompleteStoreError,
    StoreExistsError,
    StoreNotFoundError,
)
from imgtui.convert.parallel import convert_sharded

BACKENDS = ["disk", "lmdb", "hdf5"]
SUFFIX = {"disk": "", "lmdb": ".lmdb", "hdf5": ".h5"}


def synth(count=90, **kw):
    kw.setdefault("variable", (4, 12))
    return SyntheticDataset(count=count, **kw)


class Unsized(Dataset):
    """A source that does not know its length (like a generator)."""

    kind = "unsized"

    def __init__(self, inner):
        self.inner = inner

    def __iter__(self):
        return iter(self.inner)


def one_line(exc) -> str:
    s = str(exc)
    assert "\n" not in s
    return s


# -- sizes and plans -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text,value",
    [("500MB", 500_000_000), ("1GB", 10**9), ("1GiB", 1 << 30), ("1.5kB", 1500), ("64KiB", 65536),
     ("4096", 4096), ("2 mb", 2_000_000), ("3M", 3_000_000), (1234, 1234)],
)
def test_parse_size(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "MB", "12XB", "-1MB", "0", "1iB", "1.2.3GB"])
def test_parse_size_rejects(text):
    with pytest.raises(ImgtuiError) as err:
        parse_size(text)
    assert one_line(err.value).startswith("bad size")


def test_plans():
    assert plan_by_count(10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert plan_by_count(2, 5) == [(0, 1), (1, 2)]
    assert plan_by_count(0, 3) == [(0, 0)]
    assert plan_by_size(10, 300, 100) == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert plan_by_size(3, 10, 100) == [(0, 1), (1, 2), (2, 3)]  # at least one record per shard
    with pytest.raises(ImgtuiError, match="at least 1"):
        plan_by_count(10, 0)


# -- round trips ---------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_round_trip_by_shard_count(tmp_path, backend):
    ds = synth(90, seed=3)
    dest = tmp_path / "sharded"
    res = convert_sharded(ds, dest, backend, shards=4)
    assert res["count"] == 90 and res["shards"] == 4 and res["reused"] == 0
    names = sorted(p.name for p in dest.iterdir())
    assert names == [MANIFEST] + [f"shard-{k:05d}{SUFFIX[backend]}" for k in range(4)]
    m = json.loads((dest / MANIFEST).read_text())
    assert m["format"] == "imgtui-sharded" and m["format_version"] == 1 and m["backend"] == backend
    assert m["count"] == 90 and [s["range"] for s in m["shards"]] == [[0, 23], [23, 46], [46, 68], [68, 90]]
    assert sum(s["raw_bytes"] for s in m["shards"]) == m["raw_bytes"] == sum(ds.record(i).image.nbytes for i in range(90))
    assert detect_backend(dest) == backend
    with open_store(dest) as r:
        assert isinstance(r, ShardedReader) and r.sharded and r.backend == backend
        assert len(r) == 90
        want = [ds.record(i) for i in range(90)]
        assert [r[i] for i in range(90)] == want
        assert r[-1] == want[-1]
        assert list(r) == want
        idx = [89, 0, 23, 22, 45, 46, 5, 89, -2]
        assert r.get_many(idx) == [want[i] for i in idx]
        assert r.labels() == [w.label for w in want]
        # each shard's checksum is the crc32 over its per-record crc32s
        for s in m["shards"]:
            a, b = s["range"]
            assert s["checksum"] == f"{records_checksum(r._stored_checksum(i) for i in range(a, b)):08x}"
        info = r.info()
        assert info["sharded"] and info["shards"] == 4 and info["count"] == 90 and info["backend"] == backend
        assert [s["count"] for s in info["shard_list"]] == [23, 23, 22, 22]
        v = r.verify()
        assert v.ok and v.checked == 90, v.errors
        with pytest.raises(IndexError):
            r[90]
    # imgtui.open and the store as a dataset source read it exactly like a single store
    with imgtui.open(dest) as r:
        assert r[50] == want[50]
    back = tmp_path / ("single" + SUFFIX[backend])
    convert(open_dataset(dest), back, backend)
    with open_store(back) as r:
        assert list(r) == want


def test_get_images_fixed_shape(tmp_path):
    ds = SyntheticDataset(count=20, size=6)
    convert_sharded(ds, tmp_path / "s", "hdf5", shards=3)
    with open_store(tmp_path / "s") as r:
        imgs = r.get_images([19, 0, 7])
        assert imgs.shape == (3, 6, 6, 3)
        assert np.array_equal(imgs[0], ds.record(19).image) and np.array_equal(imgs[2], ds.record(7).image)


@pytest.mark.parametrize("backend", ["lmdb", "hdf5"])
def test_shard_size_limits_raw_bytes(tmp_path, backend):
    ds = SyntheticDataset(count=50, size=10)  # 300 bytes per record
    res = convert_sharded(ds, tmp_path / "s", backend, shard_size="1kB")
    m = json.loads((tmp_path / "s" / MANIFEST).read_text())
    assert res["shards"] == len(m["shards"]) == 17  # 3 records (900 bytes) per shard
    assert all(s["raw_bytes"] <= 1000 for s in m["shards"]) and m["shard_size"] == 1000
    with open_store(tmp_path / "s") as r:
        assert list(r) == list(ds)


def test_unknown_length_cuts_shards_while_streaming(tmp_path):
    ds = SyntheticDataset(count=40, size=10)
    res = convert_sharded(Unsized(ds), tmp_path / "s", "hdf5", shard_size=1000, workers=2, warn=(w := []).append)
    assert res["shards"] == 14 and res["workers"] == 1
    assert "does not know its length" in w[0]
    with open_store(tmp_path / "s") as r:
        assert list(r) == list(ds)
    with pytest.raises(ImgtuiError) as err:
        convert_sharded(Unsized(ds), tmp_path / "t", "hdf5", shards=3)
    assert "--shards needs a dataset whose length is known" in one_line(err.value)
    assert not (tmp_path / "t").exists()


def test_empty_and_limited_sources(tmp_path):
    convert_sharded(SyntheticDataset(count=0), tmp_path / "e", "lmdb", shards=3)
    with open_store(tmp_path / "e") as r:
        assert len(r) == 0 and list(r) == [] and r.verify().ok
    ds = synth(50)
    convert_sharded(ds, tmp_path / "l", "hdf5", shards=2, limit=7)
    with open_store(tmp_path / "l") as r:
        assert list(r) == [ds.record(i) for i in range(7)]


# -- destination rules ---------------------------------------------------------------------------
def test_existing_destination_and_overwrite(tmp_path):
    dest = tmp_path / "s"
    convert_sharded(synth(30, seed=1), dest, "hdf5", shards=2)
    with pytest.raises(StoreExistsError) as err:
        convert_sharded(synth(30, seed=2), dest, "hdf5", shards=2)
    assert "already exists" in one_line(err.value)
    ds2 = synth(12, seed=2)
    convert_sharded(ds2, dest, "lmdb", shards=3, overwrite=True)
    with open_store(dest) as r:
        assert r.backend == "lmdb" and list(r) == list(ds2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]  # no temp folders left


def test_bad_options_fail_before_anything_is_written(tmp_path):
    with pytest.raises(ImgtuiError):
        convert_sharded(synth(10), tmp_path / "s", "hdf5", shards=2, options={"nonsense": 1})
    with pytest.raises(ImgtuiError, match="either --shards or --shard-size"):
        convert_sharded(synth(10), tmp_path / "s", "hdf5", shards=2, shard_size="1MB")
    assert not (tmp_path / "s").exists()


# -- incomplete and damaged stores ---------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_without_manifest_is_incomplete(tmp_path, backend):
    dest = tmp_path / "s"
    convert_sharded(synth(20), dest, backend, shards=2)
    (dest / MANIFEST).unlink()
    assert detect_backend(dest) == backend
    with pytest.raises(IncompleteStoreError) as err:
        open_store(dest)
    assert one_line(err.value) == (
        f"{dest} is an incomplete sharded store: it has no manifest.json (its conversion was interrupted "
        "or killed); finish it with --resume or re-create it with --overwrite"
    )


def test_failed_conversion_leaves_no_manifest(tmp_path):
    class Bad(SyntheticDataset):
        def record(self, i):
            rec = super().record(i)
            if i == 25:
                rec.image = rec.image.astype(np.complex64)
            return rec

    dest = tmp_path / "s"
    with pytest.raises(ImgtuiError) as err:
        convert_sharded(Bad(count=40, size=4), dest, "hdf5", shards=4)
    # the shard and the source record are named, not the shard-local index
    assert one_line(err.value).startswith("shard-00002.h5: source record 25 image: unsupported dtype complex64")
    assert not (dest / MANIFEST).exists()
    assert sorted(p.name for p in dest.iterdir()) == [PROGRESS_DIR, "shard-00000.h5", "shard-00001.h5"]
    with pytest.raises(IncompleteStoreError):
        open_store(dest)


def test_missing_shard(tmp_path):
    dest = tmp_path / "s"
    convert_sharded(synth(20), dest, "lmdb", shards=3)
    import shutil

    shutil.rmtree(dest / "shard-00001.lmdb")
    with pytest.raises(StoreNotFoundError) as err:
        open_store(dest)
    assert one_line(err.value) == (
        f"{dest}: shard shard-00001.lmdb (records 7-13) is missing; the sharded store is damaged "
        "(restore the file or re-create the store)"
    )


def test_manifest_pointing_at_missing_shard_and_bad_manifest(tmp_path):
    dest = tmp_path / "s"
    convert_sharded(synth(20), dest, "hdf5", shards=2)
    m = json.loads((dest / MANIFEST).read_text())
    m["shards"][1]["file"] = "shard-00007.h5"
    (dest / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(StoreNotFoundError, match="shard shard-00007.h5 .records 10-19. is missing"):
        open_store(dest)
    m["shards"][1]["file"] = "shard-00001.h5"
    m["count"] = 21
    (dest / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(CorruptStoreError, match="shard list is inconsistent"):
        open_store(dest)
    (dest / MANIFEST).write_text("{not json")
    with pytest.raises(CorruptStoreError) as err:
        open_store(dest)
    assert one_line(err.value) == f"{dest / MANIFEST}: cannot be read as JSON; the sharded store is damaged"


def test_verify_names_shard_and_record_of_flipped_pixels(tmp_path):
    ds = SyntheticDataset(count=30, size=4)
    dest = tmp_path / "s"
    convert_sharded(ds, dest, "hdf5", shards=3, options={"layout": "contiguous"})
    shard = dest / "shard-00002.h5"
    with h5py.File(shard, "r") as f:
        offset = f["images"].id.get_offset()
    rec_bytes = 4 * 4 * 3
    with open(shard, "r+b") as fh:  # flip one pixel byte of local record 7 = global record 27
        fh.seek(offset + 7 * rec_bytes + 5)
        b = fh.read(1)
        fh.seek(offset + 7 * rec_bytes + 5)
        fh.write(bytes([b[0] ^ 0xFF]))
    with open_store(dest) as r:
        res = r.verify()
    assert not res.ok and res.checked == 30
    assert len(res.errors) == 1
    assert res.errors[0].startswith("shard-00002.h5 record 7 (global 27): pixel checksum mismatch")


def test_verify_names_truncated_shard(tmp_path):
    dest = tmp_path / "s"
    convert_sharded(synth(30), dest, "hdf5", shards=3)
    shard = dest / "shard-00001.h5"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with open_store(dest) as r:
        assert r[0] == synth(30).record(0)  # the other shards still read
        with pytest.raises(ImgtuiError) as err:
            r[15]
        assert "shard-00001.h5" in one_line(err.value)
        res = r.verify()
    assert not res.ok
    assert [e for e in res.errors if e.startswith("shard-00001.h5: cannot be opened (")], res.errors
    assert all(e.startswith("shard-00001.h5") for e in res.errors)


def test_verify_reports_stray_shard(tmp_path):
    dest = tmp_path / "s"
    convert_sharded(synth(10), dest, "hdf5", shards=2)
    (dest / "shard-00005.h5.partial").write_bytes(b"x")
    with open_store(dest) as r:
        res = r.verify()
    assert not res.ok and res.errors == [
        "shard-00005.h5.partial: not listed in manifest.json (a leftover of an interrupted conversion?)"
    ]


# -- CLI -----------------------------------------------------------------------------------------
def test_cli_sharded_convert_info_verify(tmp_path, capsys):
    dest = tmp_path / "s"
    assert main(["convert", "synthetic:count=60,size=8", str(dest), "-b", "lmdb", "--shards", "3", "-q"]) == 0
    out = capsys.readouterr().out
    assert "wrote 60 records" in out and "3 lmdb shards" in out
    assert main(["info", str(dest)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{dest}: sharded lmdb store (3 shards), 60 records")
    assert main(["info", str(dest), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["shards"] == 3 and info["sharded"] is True
    assert main(["verify", str(dest), "-q"]) == 0
    assert "OK: 60 records verified" in capsys.readouterr().out
    # the existing behaviour without any sharding flag is unchanged: a single store
    single = tmp_path / "one.h5"
    assert main(["convert", "synthetic:count=5,size=8", str(single), "-b", "hdf5", "-q"]) == 0
    assert single.is_file()


def test_cli_sharded_errors(tmp_path, capsys):
    assert main(["convert", "synthetic:count=6", str(tmp_path / "s"), "-b", "hdf5", "--shard-size", "12XB", "-q"]) == 1
    err = capsys.readouterr().err
    assert err == "imgtui: error: bad size '12XB': use a number with a unit, e.g. 500MB, 1GB or 1GiB\n"
    assert main(["convert", "synthetic:count=6", str(tmp_path / "s"), "-b", "hdf5", "--shards", "0", "-q"]) == 1
    assert "--shards must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_labels_array_of_a_sharded_store_joins_its_shards(tmp_path):
    import numpy as np

    import imgtui
    from imgtui.backends.sharded import ShardedReader

    recs = [imgtui.Record(np.full((2, 2), i, np.uint8), i % 5) for i in range(30)]
    folder = tmp_path / "sh"
    folder.mkdir()
    from imgtui.backends.sharded import make_sharded_manifest, write_json_atomic, store_checksum

    entries = []
    for k, (a, b) in enumerate(((0, 10), (10, 10), (10, 30))):
        p = folder / f"shard-{k:05d}.h5"
        with imgtui.writer(p, "hdf5") as w:
            w.write_many(recs[a:b])
        with imgtui.open(p) as r:
            entries.append({"file": p.name, "range": [a, b], "count": b - a, "raw_bytes": 4 * (b - a),
                            "checksum": f"{store_checksum(r):08x}", "stats": r.manifest})
    write_json_atomic(folder / "manifest.json", make_sharded_manifest("hdf5", {}, entries))
    with imgtui.open(folder) as r:
        assert isinstance(r, ShardedReader)
        arr = r.labels_array()
        assert arr.dtype == np.int64 and arr.tolist() == [x.label for x in recs] == r.labels()
