"""The zarr backend passes the shared conformance suite (tests/backend_suite.py), and its stores are
plain zarr v3 groups that zarr-python reads without imgtui."""

from __future__ import annotations

import json
import os
import shutil
from typing import ClassVar

import numpy as np
import pytest

pytest.importorskip("zarr", minversion="3")

import zarr
from backend_suite import BackendSuite, recs

import imgtui
from imgtui.backends import detect_backend, get_backend, open_store
from imgtui.errors import (
    CorruptStoreError,
    ImgtuiError,
    IncompleteStoreError,
    StoreChangedError,
)
from imgtui.records import Record


class TestZarr(BackendSuite):
    backend = "zarr"


class TestZarrZstdSmallShards(BackendSuite):
    """Compressed, several chunks per shard and several shards per store (the suite writes 600
    8x8x3 records: 38 shards of 16 records, 4 chunks each)."""

    backend = "zarr"
    options: ClassVar[dict] = {"compressor": "zstd", "chunk_records": 4, "shard_records": 16}


# -- zarr-specific ---------------------------------------------------------------------------------
def _write(path, records, **options):
    with imgtui.writer(path, "zarr", **options) as w:
        w.write_many(records)
    return path


def _images(n, shape, dtype=np.uint8, seed=0):
    rng = np.random.default_rng(seed)
    hi = 256 if dtype == np.uint8 else 65536
    return [rng.integers(0, hi, shape).astype(dtype) for _ in range(n)]


@pytest.mark.parametrize("shape", [(6, 5), (6, 5, 1), (6, 5, 3), (6, 5, 4)])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_plain_zarr_reads_the_fixed_layout(tmp_path, shape, dtype):
    imgs = _images(50, shape, dtype)
    records = [Record(im, f"c{i % 3}" if i % 4 == 0 else i, {"i": i} if i % 2 else {}) for i, im in enumerate(imgs)]
    p = _write(tmp_path / "s.zarr", records, chunk_records=4, shard_records=8)
    g = zarr.open_group(p, mode="r")
    assert g.attrs["imgtui"]["backend"] == "zarr" and g.attrs["imgtui"]["layout"] == "fixed"
    arr = g["images"]
    assert arr.shape == (50, *shape) and arr.dtype == np.dtype(dtype)  # HxW and HxWx1 stay distinct
    assert arr.chunks == (4, *shape) and arr.shards == (8, *shape)
    assert np.array_equal(arr[:], np.stack(imgs))
    labels, flags = g["labels"][:].tolist(), g["label_is_int"][:]
    assert [int(v) if f else v for v, f in zip(labels, flags)] == [r.label for r in records]
    assert [json.loads(t) if t else {} for t in g["metadata"][:].tolist()] == [r.metadata for r in records]
    manifest = json.loads((p / "imgtui-manifest.json").read_text())
    assert manifest["backend"] == "zarr" and manifest["count"] == 50
    with open_store(p) as r:
        assert g["checksums"][:].tolist() == [r.checksum_of(im) for im in imgs]


def test_plain_zarr_reads_the_variable_layout_with_the_recipe(tmp_path):
    rng = np.random.default_rng(3)
    records = [Record(rng.integers(0, 60000, (3 + i, 7 - i % 3, 3) if i % 2 else (4, 2 + i)).astype(
        np.uint16 if i % 3 else np.uint8), i) for i in range(12)]
    p = _write(tmp_path / "v.zarr", records)
    g = zarr.open_group(p, mode="r")
    assert "images" not in g and g.attrs["imgtui"]["layout"] == "variable"
    o = g["offsets"][:]
    for i, rec in enumerate(records):  # what ZarrBackend.recipe() says
        shape = [int(v) for v in g["shapes"][i]]
        shape = [v for v in shape if v]  # (D, H, W, C) without its zeros
        im = np.frombuffer(g["pixels"][o[i] : o[i + 1]].tobytes(), ["<u1", "<u2"][int(g["dtypes"][i])]).reshape(shape)
        assert im.dtype == rec.image.dtype and np.array_equal(im, rec.image)
    assert "g['images'][i]" in get_backend("zarr").recipe()


def test_default_sharding_keeps_the_file_count_small(tmp_path):
    records = [Record(im, i % 10) for i, im in enumerate(_images(5000, (8, 8, 3)))]
    p = _write(tmp_path / "s.zarr", records)
    files = [f for _, _, fs in os.walk(p) for f in fs]
    assert len(files) <= 12  # zarr.json per array + one shard per array + the manifest
    unsharded = _write(tmp_path / "u.zarr", records, chunk_records=1, shard_records=0)
    assert sum(len(fs) for _, _, fs in os.walk(unsharded)) > 5000  # one file per record


@pytest.mark.parametrize("options", [{}, {"compressor": "blosc", "chunk_records": 3, "shard_records": 9},
                                     {"compressor": "gzip", "compression_level": 1, "chunk_records": 1}])
def test_random_batches_in_any_order(tmp_path, options):
    imgs = _images(100, (4, 6, 3))
    p = _write(tmp_path / "s.zarr", [Record(im, i) for i, im in enumerate(imgs)], **options)
    idx = [99, 0, 17, 17, -1, 50, 3, 98]
    with open_store(p) as r:
        got = r.get_images(idx)
        assert isinstance(got, np.ndarray) and np.array_equal(got, np.stack([imgs[i] for i in idx]))
        assert [x.label for x in r.get_many(idx)] == [i % 100 for i in idx]
        assert np.array_equal(r.get_images(np.array([5, 6, 7])), np.stack(imgs[5:8]))
        with pytest.raises(IndexError):
            r.get_images([100])


@pytest.mark.parametrize("options", [{}, {"compressor": "zstd", "chunk_records": 3, "shard_records": 12},
                                     {"compressor": "blosc", "chunk_records": 5, "shard_records": 0},
                                     {"compressor": "gzip", "chunk_records": 1}, {"chunk_records": 7}])
@pytest.mark.parametrize("shape, dtype", [((5, 4), np.uint16), ((5, 4, 3), np.uint8), ("variable", np.uint16)])
def test_direct_chunk_reads_equal_zarr_python(tmp_path, options, shape, dtype):
    """The reader's direct chunk reads return what zarr-python returns, for every writer layout."""
    if shape == "variable":
        imgs = [_images(1, (3 + i % 5, 4, 3), dtype, seed=i)[0] for i in range(60)]
    else:
        imgs = _images(60, shape, dtype)
    p = _write(tmp_path / "s.zarr", [Record(im, i) for i, im in enumerate(imgs)], **options)
    batches = [range(60), [59, 0, 31, 31, 7], list(range(10, 40, 3)), [58, 59]]
    with open_store(p) as fast, open_store(p) as slow:
        name = "pixels" if shape == "variable" else "images"
        assert name in fast._maps  # the layouts this writer makes are read directly
        slow._maps.clear()  # ... and this one reads through zarr-python
        for idx in batches:
            a, b = fast.get_images(idx), slow.get_images(idx)
            assert all(np.array_equal(x, y) and x.dtype == y.dtype for x, y in zip(a, b))
            assert all(np.array_equal(x, imgs[i]) for x, i in zip(a, idx))


@pytest.mark.parametrize("options", [{}, {"compressor": "zstd", "chunk_records": 4, "shard_records": 16}])
def test_threads_share_one_reader(tmp_path, options):
    from concurrent.futures import ThreadPoolExecutor

    imgs = _images(200, (6, 6, 3))
    p = _write(tmp_path / "s.zarr", [Record(im, i) for i, im in enumerate(imgs)], **options)
    rng = np.random.default_rng(4)
    batches = [rng.integers(0, 200, 16) for _ in range(80)]
    with open_store(p) as r, ThreadPoolExecutor(4) as ex:
        outs = list(ex.map(r.get_images, batches))
    for b, out in zip(batches, outs):
        assert np.array_equal(out, np.stack([imgs[i] for i in b]))


@pytest.mark.parametrize("compressor", [None, "zstd"])
def test_direct_reads_of_chunks_never_written_give_the_fill_value(tmp_path, compressor):
    """Arrays written by zarr-python without empty chunks (not by imgtui's writer, which writes
    them all): unwritten chunks and shards read as 0, as zarr-python reads them."""
    from zarr.codecs import ZstdCodec

    from imgtui.backends.zarr.store import _ChunkMap

    g = zarr.open_group(tmp_path / "g.zarr", mode="w", zarr_format=3)
    a = g.create_array("images", shape=(64, 3, 2, 3), chunks=(2, 3, 2, 3), shards=(8, 3, 2, 3), dtype="uint16",
                       fill_value=0, compressors=[ZstdCodec()] if compressor else None,
                       config={"write_empty_chunks": False})
    data = np.random.default_rng(1).integers(1, 60000, a.shape).astype(np.uint16)
    data[4:6] = 0  # an empty chunk inside a shard
    data[16:24] = 0  # an empty shard (no file)
    a[:] = data
    m = _ChunkMap(tmp_path / "g.zarr", "images", json.loads((tmp_path / "g.zarr" / "images" / "zarr.json").read_text()))
    for rows in (np.arange(64), np.array([0, 4, 5, 7, 17, 30, 63]), np.arange(3, 9)):
        assert np.array_equal(m.read_rows(rows), data[rows])
    m.close()


def test_a_damaged_shard_index_is_refused(tmp_path):
    p = _write(tmp_path / "s.zarr", recs(40, 1), chunk_records=4, shard_records=20)
    shard = p / "images" / "c" / "1" / "0" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[-10] ^= 1  # inside the index
    shard.write_bytes(bytes(data))
    with open_store(p) as r:
        assert r[0] == recs(40, 1)[0]  # the other shard is fine
        with pytest.raises(CorruptStoreError, match="crc32c") as e:
            r[25]
        assert "\n" not in str(e.value)
        assert not r.verify().ok


def test_detect_and_open_by_path(tmp_path):
    p = _write(tmp_path / "s.zarr", recs(5, 1))
    assert detect_backend(p) == "zarr"
    with imgtui.open(p) if hasattr(imgtui, "open") else open_store(p) as r:
        assert len(r) == 5


def test_a_store_without_manifest_is_incomplete(tmp_path):
    p = _write(tmp_path / "s.zarr", recs(5, 1))
    (p / "imgtui-manifest.json").unlink()
    assert detect_backend(p) == "zarr"
    with pytest.raises(IncompleteStoreError) as e:
        open_store(p)
    assert "\n" not in str(e.value) and "incomplete" in str(e.value)


def test_a_plain_zarr_group_is_not_an_imgtui_store(tmp_path):
    g = zarr.open_group(tmp_path / "x.zarr", mode="w", zarr_format=3)
    g.create_array("images", shape=(2, 2), dtype="uint8")
    with pytest.raises(ImgtuiError):
        detect_backend(tmp_path / "x.zarr")
    with pytest.raises(CorruptStoreError, match="not an imgtui store"):
        open_store(tmp_path / "x.zarr", "zarr")


def test_damage_is_refused_in_one_line(tmp_path):
    old = recs(30, 1)
    p = _write(tmp_path / "s.zarr", old)
    # a flipped bit in the labels chunk: zarr's crc32c codec refuses it
    chunk = next((p / "labels").rglob("c/*"))
    data = bytearray(chunk.read_bytes())
    data[3] ^= 4
    chunk.write_bytes(bytes(data))
    with pytest.raises(CorruptStoreError) as e, open_store(p) as r:
        r[0]
    assert "\n" not in str(e.value)
    # a truncated array: its shape no longer matches the manifest
    p2 = _write(tmp_path / "t.zarr", old)
    meta = json.loads((p2 / "checksums" / "zarr.json").read_text())
    meta["shape"] = [29]
    (p2 / "checksums" / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(CorruptStoreError, match="'checksums' has shape"):
        open_store(p2)


@pytest.mark.parametrize("shard_records", [0, 10])
def test_a_missing_chunk_file_is_refused_and_named_by_verify(tmp_path, shard_records):
    p = _write(tmp_path / "s.zarr", recs(30, 1), chunk_records=5, shard_records=shard_records)
    os.remove(p / "images" / "c" / ("2" if shard_records == 0 else "1") / "0" / "0" / "0")
    with open_store(p) as r:
        assert r[0] == recs(30, 1)[0]
        with pytest.raises(CorruptStoreError, match="record 10 is damaged"):
            r.get_many(range(10, 15))  # read as the fill value (zeros): the pixel checksums differ
        v = r.verify()
    assert not v.ok and any("chunk files are missing" in e for e in v.errors)


def test_a_reader_notices_the_store_was_replaced(tmp_path):
    p = _write(tmp_path / "s.zarr", recs(20, 1))
    r = open_store(p)
    try:
        assert r[0] == recs(20, 1)[0]
        imgtui.overwrite(p, {0: recs(1, 9)[0]})
        with pytest.raises(StoreChangedError):
            r[1]
    finally:
        r.close()
    with open_store(p) as r:
        assert r[0] == recs(1, 9)[0]


def test_changes_are_rewrites_that_keep_the_options(tmp_path):
    p = _write(tmp_path / "s.zarr", recs(40, 1), compressor="zstd", chunk_records=4, shard_records=8)
    rep = imgtui.append(p, recs(5, 2))
    assert rep["in_place"] is False and "rewrote" in rep["how"]
    g = zarr.open_group(p, mode="r")
    assert g["images"].shards == (8, 8, 8, 3) and g["images"].shape[0] == 45
    with open_store(p) as r:
        assert r.info()["options"]["compressor"] == "zstd"


@pytest.mark.parametrize("options, message", [
    ({"compressor": "lz4"}, "zarr: compressor must be one of none, zstd, blosc, gzip, got 'lz4'"),
    ({"compression_level": 3}, "zarr: compression_level needs a compressor"),
    ({"compressor": "gzip", "compression_level": 12}, "zarr: gzip compression_level must be 0-9, got 12"),
    ({"chunk_records": 0}, "zarr: chunk_records must be at least 1, got 0"),
    ({"chunk_records": 4, "shard_records": 10}, "zarr: shard_records (10) must be a multiple of chunk_records (4)"),
    ({"colour": "red"}, "zarr: unknown option(s) colour"),
])
def test_bad_options_are_one_line_errors(tmp_path, options, message):
    with pytest.raises(ImgtuiError) as e:
        imgtui.writer(tmp_path / "s.zarr", "zarr", **options)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)
    assert not (tmp_path / "s.zarr").exists()


def test_convert_cli_writes_a_zarr_store(tmp_path):
    from imgtui.cli import main

    dest = tmp_path / "x.zarr"
    assert main(["convert", "synthetic:count=30,size=8", str(dest), "-b", "zarr", "--compressor", "zstd", "-q"]) == 0
    with open_store(dest) as r:
        assert len(r) == 30 and r.verify().ok and r.info()["zarr"]["compressor"] == "zstd"
    shutil.rmtree(dest)


def test_store_with_n_by_3_shapes_still_reads_and_takes_volumes(tmp_path):
    """A variable-shape store written before 3-D records (``shapes`` N x 3) reads bit-exact and
    verifies; appending a volume rewrites it with N x 4 shapes, every record kept."""
    rng = np.random.default_rng(5)
    old = [Record(rng.integers(0, 255, s, dtype=np.uint8), i, {}) for i, s in enumerate([(4, 5), (6, 5, 3), (3, 3, 1)])]
    p = tmp_path / "old.zarr"
    with imgtui.writer(p, "zarr") as w:
        w.write_many(old)
    g = zarr.open_group(str(p), mode="r+")
    rows = np.asarray(g["shapes"][:])
    assert rows.shape == (3, 4) and not rows[:, 0].any()
    del g["shapes"]
    g.create_array("shapes", data=rows[:, 1:].copy())
    with open_store(p) as r:
        assert list(r) == old and r.verify().ok
    vol = Record(rng.standard_normal((3, 4, 6)).astype(np.float32), 9, {})
    imgtui.append(p, [vol])
    assert zarr.open_group(str(p), mode="r")["shapes"].shape == (4, 4)
    with open_store(p) as r:
        assert list(r) == old + [vol] and r.verify().ok


def test_write_array_of_int_labels_goes_straight_to_the_columns(tmp_path, monkeypatch):
    """write_array with int labels into a fixed store writes the array as it is: no Record per
    image (the records path is not called); a str label or another shape falls back to it."""
    from imgtui.backends.zarr.store import ZarrWriter

    rng = np.random.default_rng(2)
    images = rng.integers(0, 255, (300, 8, 6, 3), dtype=np.uint8)
    calls = []
    real = ZarrWriter._write_batch
    monkeypatch.setattr(ZarrWriter, "_write_batch", lambda self, recs, sums, start: (calls.append(len(recs)), real(self, recs, sums, start))[1])
    p = tmp_path / "a.zarr"
    with imgtui.writer(p, "zarr", chunk_records=64) as w:
        w.write_array(images, list(range(300)), [{"k": i} if i % 7 == 0 else {} for i in range(300)])
        assert calls == []
        w.write_array(images[:5], ["a", "b", "c", "d", "e"])  # a str label: the records path
    assert calls == [5]
    with open_store(p) as r:
        assert len(r) == 305 and r.verify().ok
        assert r.get_images(range(300)).tobytes() == images.tobytes()
        assert r[7].metadata == {"k": 7} and r[8].metadata == {} and r[300].label == "a" and r[299].label == 299
