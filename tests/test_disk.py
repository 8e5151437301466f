"""The disk backend: one PNG per record, records.csv, manifest.json."""

from __future__ import annotations

import csv
import io
import json
import os
import struct
import threading
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from imgtui.backends import detect_backend, get_backend, open_store, open_writer
from imgtui.backends.disk import (
    FILES_PER_FOLDER,
    DiskBackend,
    DiskReader,
    DiskWriter,
    decode_png,
    encode_png,
)
from imgtui.errors import (
    CorruptStoreError,
    FormatVersionError,
    ImgtuiError,
    IncompleteStoreError,
    StoreExistsError,
    WrongBackendError,
)
from imgtui.records import Record, checksum

RNG = np.random.default_rng(1234)


def rand(shape, dtype=np.uint8):
    return RNG.integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)


def write(path, records, **kw):
    with open_writer(path, "disk", **kw) as w:
        w.write_many(records)
    return path


def read_all(path):
    with open_store(path) as r:
        return list(r)


@pytest.fixture(params=["serial", "thread", "process"])
def pool_mode(request, monkeypatch):
    """Run a test with each encoder pool (tiny batches so the pool really runs)."""
    monkeypatch.setattr(DiskWriter, "workers", 2)
    monkeypatch.setattr(DiskWriter, "pool_kind", request.param)
    monkeypatch.setattr(DiskWriter, "default_batch_size", 4)
    made = []
    real = DiskWriter._make_pool

    def spy(self):
        alone = threading.active_count() == 1
        pool = real(self)
        want = "ProcessPoolExecutor" if request.param == "process" and alone else "ThreadPoolExecutor"
        made.append((type(pool).__name__, want))
        return pool

    monkeypatch.setattr(DiskWriter, "_make_pool", spy)
    yield request.param
    assert (not made) if request.param == "serial" else (made and all(a == b for a, b in made))


# -- round trips ---------------------------------------------------------------------------
SHAPES = [
    ((7, 5), np.uint8),
    ((7, 5, 3), np.uint8),
    ((7, 5, 4), np.uint8),
    ((7, 5, 1), np.uint8),
    ((6, 9), np.uint16),
    ((6, 9, 1), np.uint16),
    ((6, 9, 3), np.uint16),
    ((6, 9, 4), np.uint16),
    ((1, 1), np.uint8),
    ((1, 1, 3), np.uint16),
]


def test_round_trip_all_kinds(tmp_path, pool_mode):
    recs = [Record(rand(s, d), i, {"i": i}) for i, (s, d) in enumerate(SHAPES * 2)]
    write(tmp_path / "s", recs)
    got = read_all(tmp_path / "s")
    assert got == recs
    assert all(g.image.flags.writeable for g in got)
    with open_store(tmp_path / "s") as r:
        assert r.backend == "disk" and len(r) == len(recs)
        assert r[-1] == recs[-1]
        assert r.verify().ok


def test_full_uint16_range_bit_exact(tmp_path):
    # every byte order mistake shows up with values whose high and low bytes differ
    vals = np.array([0, 1, 255, 256, 257, 0x00FF, 0xFF00, 0x1234, 0x8000, 65534, 65535], np.uint16)
    gray = np.resize(vals, (4, 11))
    rgb = np.stack([gray, gray[::-1], 65535 - gray], axis=-1)
    rgba = np.concatenate([rgb, gray[..., None]], axis=-1)
    recs = [Record(gray, 0), Record(rgb, 1), Record(rgba, 2), Record(gray.astype(">u2"), 3)]
    write(tmp_path / "s", recs)
    got = read_all(tmp_path / "s")
    assert got[:3] == recs[:3]
    assert np.array_equal(got[3].image, gray) and got[3].image.dtype == np.dtype(np.uint16)
    # the files are real 16-bit PNGs: Pillow sees the gray one as I;16 with the same values
    with Image.open(tmp_path / "s" / "images" / "000" / "000000.png") as im:
        assert im.mode.startswith("I;16") and np.array_equal(np.asarray(im).astype(np.uint16), gray)
    raw = (tmp_path / "s" / "images" / "000" / "000001.png").read_bytes()
    assert struct.unpack(">IIBB", raw[16:26]) == (11, 4, 16, 2)  # width, height, depth 16, RGB


def test_variable_shapes_and_labels(tmp_path):
    recs = []
    for i in range(30):
        h, w = RNG.integers(1, 40, 2)
        shape = (h, w) if i % 3 == 0 else (h, w, [1, 3, 4][i % 3])
        label = [i, "7", f"cls-{i}", -(2**63), 2**63 - 1, "", "ünï, \"q\""][i % 7]
        recs.append(Record(rand(shape, [np.uint8, np.uint16][i % 2]), label, {}))
    write(tmp_path / "s", recs)
    got = read_all(tmp_path / "s")
    assert got == recs
    assert type(got[1].label) is str and got[1].label == "7"  # a str that looks like an int stays str
    with open_store(tmp_path / "s") as r:
        labels = r.labels()
        assert labels == [rec.label for rec in recs]
        assert [type(x) for x in labels] == [type(rec.label) for rec in recs]


def test_metadata_unicode_commas_quotes_newlines(tmp_path):
    md = {"name": 'a, "quoted" name', "ü": "日本語 ✓", "lines": "one\ntwo\r\nthree", "n": [1, 2.5, None],
          "nested": {"x": {"y": True}}}
    recs = [Record(rand((4, 4)), "a,b", md), Record(rand((4, 4)), 'q"q', {}), Record(rand((4, 4)), 3, {"k": ""})]
    # carriage returns, NUL, BOM and line separators inside labels survive the CSV table
    recs += [Record(rand((2, 2)), lab, {lab: lab}) for lab in ("a\rb", "\r", "x\n", "\x00z", "\u2028", "\ufeffq", "\r\n")]
    write(tmp_path / "s", recs)
    assert read_all(tmp_path / "s") == recs


def test_table_is_plain_csv(tmp_path):
    recs = [Record(rand((5, 6, 3)), "7", {"a": "x,y"}), Record(rand((5, 6), np.uint16), 2, {})]
    write(tmp_path / "s", recs)
    with open(tmp_path / "s" / "records.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["file"] for r in rows] == ["images/000/000000.png", "images/000/000001.png"]
    assert rows[0]["label"] == "7" and rows[0]["label_type"] == "str"
    assert rows[1]["label"] == "2" and rows[1]["label_type"] == "int"
    assert rows[0]["shape"] == "5x6x3" and rows[1]["dtype"] == "uint16"
    assert int(rows[0]["crc32"]) == checksum(recs[0].image)
    assert json.loads(rows[0]["metadata"]) == {"a": "x,y"}
    # and a plain PIL read of an 8-bit file gives the pixels
    with Image.open(tmp_path / "s" / rows[0]["file"]) as im:
        assert np.array_equal(np.asarray(im), recs[0].image)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_property_round_trip(tmp_path_factory, data):
    n = data.draw(st.integers(1, 6))
    recs = []
    for _ in range(n):
        h = data.draw(st.integers(1, 12))
        w = data.draw(st.integers(1, 12))
        ch = data.draw(st.sampled_from([None, 1, 3, 4]))
        dt = data.draw(st.sampled_from([np.uint8, np.uint16]))
        shape = (h, w) if ch is None else (h, w, ch)
        seed = data.draw(st.integers(0, 2**32 - 1))
        img = np.random.default_rng(seed).integers(0, np.iinfo(dt).max + 1, shape, dtype=dt)
        label = data.draw(st.one_of(st.integers(-(2**63), 2**63 - 1), st.text(max_size=8)))
        md = data.draw(st.dictionaries(st.text(max_size=5), st.one_of(st.text(max_size=6), st.integers(), st.booleans()),
                                       max_size=3))
        recs.append(Record(img, label, md))
    path = tmp_path_factory.mktemp("prop") / "s"
    write(path, recs)
    assert read_all(path) == recs


def test_pngs_decode_with_any_reader_bit_exact():
    for shape, dt in SHAPES:
        a = rand(shape, dt)
        data = encode_png(a, 6)
        assert np.array_equal(decode_png(data).reshape(a.shape), a)
        if not (dt == np.uint16 and len(shape) == 3 and shape[2] > 1):
            assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))).astype(dt).reshape(a.shape), a)


def _ref_png16(img: np.ndarray, filters: list[int]) -> bytes:
    """A slow reference PNG writer for 16-bit RGB with the given per-row filters (0-4)."""
    h, w, c = img.shape
    rows = img.astype(">u2").view(np.uint8).reshape(h, -1).astype(np.int32)
    bpp = c * 2
    out = bytearray()
    prev = np.zeros(rows.shape[1], np.int32)
    for r in range(h):
        f = filters[r % len(filters)]
        x = rows[r]
        line = []
        for i in range(len(x)):
            a = x[i - bpp] if i >= bpp else 0
            b = prev[i]
            cc = prev[i - bpp] if i >= bpp else 0
            if f == 0:
                pred = 0
            elif f == 1:
                pred = a
            elif f == 2:
                pred = b
            elif f == 3:
                pred = (a + b) // 2
            else:
                p = a + b - cc
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - cc)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else cc)
            line.append((x[i] - pred) & 0xFF)
        out.append(f)
        out.extend(bytes(line))
        prev = x

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(tag)))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(bytes(out))) + chunk(b"IEND", b""))


def test_16bit_decoder_handles_every_png_filter():
    img = rand((6, 5, 3), np.uint16)
    for filters in ([0], [1], [2], [3], [4], [0, 1, 2, 3, 4]):
        assert np.array_equal(decode_png(_ref_png16(img, filters)), img), filters


def test_decoder_reads_pngs_written_by_pillow():
    # Pillow picks its own (adaptive) filters: decode_png must still be bit-exact
    for shape, dt in [((9, 7), np.uint8), ((9, 7, 3), np.uint8), ((9, 7, 4), np.uint8), ((9, 7), np.uint16)]:
        a = rand(shape, dt)
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG", compress_level=9)
        got = decode_png(buf.getvalue())
        assert got.dtype == a.dtype and np.array_equal(got, a)
        got.flags.writeable = True  # decoded arrays are ordinary writable arrays


def test_16bit_gray_alpha_decodes_to_two_channels():
    ga = rand((3, 4, 2), np.uint16)
    raw = b"".join(b"\0" + row.astype(">u2").tobytes() for row in ga)

    def chunk(tag, body):
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 3, 16, 4, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    got = decode_png(png)
    assert got.dtype == np.uint16 and np.array_equal(got, ga)


def test_16bit_decoder_rejects_damage():
    data = bytearray(encode_png(rand((4, 4, 3), np.uint16)))
    data[45] ^= 0xFF  # inside IDAT
    with pytest.raises(ValueError, match="CRC error"):
        decode_png(bytes(data))
    with pytest.raises(ValueError, match="truncated|IEND"):
        decode_png(bytes(data[:40]))


# -- layout ---------------------------------------------------------------------------------
def test_subfolders_never_exceed_the_bound(tmp_path):
    img = np.zeros((1, 1), np.uint8)
    write(tmp_path / "s", (Record(img, i % 3) for i in range(2500)))
    per_folder = Counter()
    for dirpath, _dirs, files in os.walk(tmp_path / "s" / "images"):
        if files:
            per_folder[os.path.relpath(dirpath, tmp_path / "s")] = len(files)
    assert sorted(per_folder) == ["images/000", "images/001", "images/002"]
    assert max(per_folder.values()) <= FILES_PER_FOLDER
    assert sum(per_folder.values()) == 2500
    assert sorted(os.listdir(tmp_path / "s")) == ["images", "manifest.json", "records.csv"]
    with open_store(tmp_path / "s") as r:
        assert len(r) == 2500 and r[2499].label == 2499 % 3 and r.verify().ok


def test_manifest_and_options(tmp_path):
    write(tmp_path / "s", [Record(rand((3, 3)), 1)], png_level=9)
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert m["backend"] == "disk" and m["format"] == "imgtui" and m["count"] == 1
    assert m["options"] == {"png_level": 9}
    assert open_store(tmp_path / "s").info()["options"] == {"png_level": 9}
    assert DiskWriter.check_options({}) == {"png_level": 1}
    assert DiskWriter.check_options({"png_level": "0"}) == {"png_level": 0}


@pytest.mark.parametrize("opts,msg", [
    ({"png_level": 10}, "disk: png_level must be a whole number from 0 to 9, got 10"),
    ({"png_level": -1}, "disk: png_level must be a whole number from 0 to 9, got -1"),
    ({"png_level": "fast"}, "disk: png_level must be a whole number from 0 to 9, got 'fast'"),
    ({"png_level": 2.5}, "disk: png_level must be a whole number from 0 to 9, got 2.5"),
    ({"png_level": True}, "disk: png_level must be a whole number from 0 to 9, got True"),
    ({"png_level": float("inf")}, "disk: png_level must be a whole number from 0 to 9, got inf"),
    ({"png_level": None}, "disk: png_level must be a whole number from 0 to 9, got None"),
    ({"compression": "gzip"}, "disk: unknown option(s) compression (the disk backend takes png_level)"),
])
def test_bad_options(tmp_path, opts, msg):
    with pytest.raises(ImgtuiError) as ei:
        open_writer(tmp_path / "s", "disk", **opts)
    assert str(ei.value) == msg
    assert not (tmp_path / "s").exists()


def test_backend_registry_and_detect(tmp_path):
    assert get_backend("disk") is DiskBackend and DiskBackend.name == "disk" and DiskBackend.suffix == ""
    write(tmp_path / "s", [Record(rand((3, 3)), 1)])
    assert DiskBackend.detect(tmp_path / "s") and detect_backend(tmp_path / "s") == "disk"
    (tmp_path / "s" / "manifest.json").unlink()
    assert DiskBackend.detect(tmp_path / "s")  # incomplete, still recognised
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "a.png").write_bytes(b"")
    assert not DiskBackend.detect(tmp_path / "plain")
    assert not DiskBackend.detect(tmp_path / "plain" / "a.png")
    with pytest.raises(WrongBackendError, match="is not a disk store"):
        DiskReader(tmp_path / "plain")


# -- safety ---------------------------------------------------------------------------------
def test_incomplete_store(tmp_path):
    write(tmp_path / "s", [Record(rand((3, 3)), 1)])
    (tmp_path / "s" / "manifest.json").unlink()
    with pytest.raises(IncompleteStoreError) as ei:
        open_store(tmp_path / "s")
    assert str(ei.value) == (f"{tmp_path / 's'} is incomplete: its writer did not finish "
                             "(interrupted or killed); re-create it with --overwrite")


def test_unfinished_writer_builds_beside_the_store(tmp_path):
    w = open_writer(tmp_path / "s", "disk", batch_size=2)
    w.__enter__()
    w.write_many(Record(rand((3, 3)), i) for i in range(5))  # two batches on disk, no manifest
    assert not (tmp_path / "s").exists()  # nothing half-written at the store's path
    assert w.build_path.parent == tmp_path and ".imgtui-tmp-" in w.build_path.name
    assert (w.build_path / "records.csv").read_text().count("\n") == 5
    with pytest.raises(IncompleteStoreError):
        open_store(w.build_path)
    w.close()
    assert len(open_store(tmp_path / "s")) == 5
    assert sorted(os.listdir(tmp_path)) == ["s"]  # no temporary and no lock file left


def test_exists_without_overwrite_leaves_old_store(tmp_path):
    old = [Record(rand((4, 4)), "old")]
    write(tmp_path / "s", old)
    before = sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "s").rglob("*"))
    with pytest.raises(StoreExistsError, match="already exists; choose another destination or pass --overwrite"):
        open_writer(tmp_path / "s", "disk")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "s").rglob("*")) == before
    assert read_all(tmp_path / "s") == old


def test_error_while_overwriting_keeps_old_store(tmp_path, pool_mode):
    old = [Record(rand((4, 4, 3)), i) for i in range(3)]
    write(tmp_path / "s", old)
    with pytest.raises(RuntimeError, match="boom"):
        with open_writer(tmp_path / "s", "disk", overwrite=True) as w:
            for i in range(20):
                w.write(Record(rand((4, 4)), 100 + i))
            raise RuntimeError("boom")
    assert read_all(tmp_path / "s") == old
    assert sorted(os.listdir(tmp_path)) == ["s"]  # no temporary folder left behind
    new = [Record(rand((2, 2)), "new")]
    write(tmp_path / "s", new, overwrite=True)
    assert read_all(tmp_path / "s") == new and sorted(os.listdir(tmp_path)) == ["s"]


def test_error_on_a_new_store_removes_it(tmp_path, pool_mode):
    with pytest.raises(RuntimeError):
        with open_writer(tmp_path / "s", "disk") as w:
            w.write_many(Record(rand((4, 4)), i) for i in range(20))
            raise RuntimeError("boom")
    assert not (tmp_path / "s").exists()


def test_newer_format_version(tmp_path):
    write(tmp_path / "s", [Record(rand((3, 3)), 1)])
    mpath = tmp_path / "s" / "manifest.json"
    m = json.loads(mpath.read_text())
    m["format_version"] = 99
    mpath.write_text(json.dumps(m))
    from imgtui.backends.base import FORMAT_VERSION

    with pytest.raises(FormatVersionError, match=f"uses imgtui format version 99; this imgtui reads up to {FORMAT_VERSION} "):
        open_store(tmp_path / "s")


def test_wrong_backend_and_damaged_manifest(tmp_path):
    write(tmp_path / "s", [Record(rand((3, 3)), 1)])
    mpath = tmp_path / "s" / "manifest.json"
    m = json.loads(mpath.read_text())
    mpath.write_text(json.dumps(dict(m, backend="lmdb")))
    with pytest.raises(WrongBackendError, match="is a lmdb store, not disk"):
        DiskReader(tmp_path / "s")
    mpath.write_text("{not json")
    with pytest.raises(CorruptStoreError, match="manifest.json: cannot be read"):
        DiskReader(tmp_path / "s")


def test_damaged_table_is_a_one_line_error(tmp_path):
    write(tmp_path / "s", [Record(rand((3, 3)), 1), Record(rand((3, 3)), 2)])
    t = tmp_path / "s" / "records.csv"
    lines = t.read_text().splitlines(keepends=True)
    t.write_text(lines[0] + lines[1] + lines[2].replace(",uint8,", ",complex64,"))
    # the table is parsed whole when first needed, its one row when one record is read first:
    # either way the damaged row is refused before any of its data is returned
    with pytest.raises(CorruptStoreError, match=r"records.csv line 3: bad shape '3x3' or dtype 'complex64'$"):
        open_store(tmp_path / "s")[1]
    with pytest.raises(CorruptStoreError, match=r"records.csv line 3: bad shape '3x3' or dtype 'complex64'$"):
        open_store(tmp_path / "s").labels()
    assert open_store(tmp_path / "s")[0].label == 1
    # a dtype the table may hold, but not for a PNG file: refused, not misread
    t.write_text(lines[0] + lines[1] + lines[2].replace(",uint8,", ",float32,"))
    for read in (lambda r: r[1], lambda r: r.labels()):
        with pytest.raises(CorruptStoreError, match=r"records.csv line 3: file 'images/000/000001.png' is not a TIFF under images/ of the store \(the float32 records' files are .tif\)"):
            read(open_store(tmp_path / "s"))


def test_open_parses_no_table_and_reads_one_row(tmp_path):
    recs = [Record(rand((4, 5, 3)), i % 3 if i % 2 else f"s{i}", {"i": i}) for i in range(30)]
    write(tmp_path / "s", recs)
    r = open_store(tmp_path / "s")
    assert "_crc" not in r.__dict__ and len(r) == 30
    assert r[17] == recs[17] and r[-1] == recs[-1] and r[0] == recs[0]
    assert "_crc" not in r.__dict__  # single reads parsed their rows only
    assert r.get_many([3, 17, 29]) == [recs[3], recs[17], recs[29]]  # the whole table, parsed now
    assert "_crc" in r.__dict__ and r.labels() == [x.label for x in recs] and r[17] == recs[17]


def test_a_label_with_a_line_break_is_read_by_the_full_parse(tmp_path):
    recs = [Record(rand((3, 3)), "two\nlines" if i == 2 else i, {}) for i in range(6)]
    write(tmp_path / "s", recs)
    assert json.loads((tmp_path / "s" / "manifest.json").read_text())["table_bytes"] is None
    r = open_store(tmp_path / "s")
    assert r[4] == recs[4] and r[2] == recs[2] and r.labels()[2] == "two\nlines"


def test_open_trusts_the_recorded_table_size_and_finds_rows_by_bisection(tmp_path, monkeypatch):
    """The writer records the size of a one-line-per-row table: open counts no lines at that size,
    and a row far from where rows of the average length would put it (long metadata up front) is
    found by bisecting on the line indices; a table edited since is counted as before."""
    import imgtui.backends.disk.store as ds

    recs = [Record(rand((1, 1)), i, {"pad": "x" * (3000 if i < 40 else 1)}) for i in range(400)]
    write(tmp_path / "s", recs)
    t = tmp_path / "s" / "records.csv"
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert m["table_bytes"] == t.stat().st_size
    counted = []
    real = ds._line_count
    monkeypatch.setattr(ds, "_line_count", lambda data: counted.append(1) or real(data))
    bisected = []
    bisect = ds._bisect_row
    monkeypatch.setattr(ds, "_bisect_row", lambda data, i, key: bisected.append(i) or bisect(data, i, key))
    r = open_store(tmp_path / "s")
    assert counted == [] and "_crc" not in r.__dict__
    some = (399, 41, 200, 0, 39, 350)
    assert [r[i] for i in some] == [recs[i] for i in some]
    assert 200 in bisected  # 58 KB from where rows of the average length would put it
    fresh = ds.DiskReader(tmp_path / "s")
    fresh._load_table()  # the full parse: every row's values
    assert [r._row(i)[1:4] for i in range(400)] == [
        (fresh._label(i), fresh._shape_list[fresh._shape_codes[i]], int(fresh._crc[i])) for i in range(400)
    ]
    # one byte more in the last row: the size differs, the lines are counted (and rows still read)
    t.write_bytes(t.read_bytes()[:-2] + b" \r\n")
    r = open_store(tmp_path / "s")
    assert counted == [1] and r[0] == recs[0]


def test_an_append_records_the_new_table_size(tmp_path):
    import imgtui

    write(tmp_path / "s", [Record(rand((2, 2)), i) for i in range(5)])
    imgtui.append(tmp_path / "s", [Record(rand((2, 2)), 9)])
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert m["table_bytes"] == (tmp_path / "s" / m["table"]).stat().st_size
    assert len(open_store(tmp_path / "s")) == 6


def test_a_table_missing_a_middle_row_is_refused_on_open(tmp_path):
    write(tmp_path / "s", [Record(rand((3, 3)), i) for i in range(6)])
    t = tmp_path / "s" / "records.csv"
    lines = t.read_text().splitlines(keepends=True)
    t.write_text("".join(lines[:3] + lines[4:]))
    with pytest.raises(CorruptStoreError, match="records.csv line 4: index '3', expected 2$"):
        open_store(tmp_path / "s")


def test_disk_files_per_dtype_read_without_imgtui(tmp_path):
    """uint8/uint16/bool records are PNG files, the others TIFF files that Pillow (1-channel
    int16/int32/float32) and tifffile (every dtype, when installed) read with the exact values."""
    import io

    from PIL import Image

    from backend_suite import DTYPES, make_image

    recs = [Record(make_image(dt, (5, 6), k), k) for k, dt in enumerate(DTYPES)]
    recs += [Record(make_image(dt, (5, 6, 3), k), k) for k, dt in enumerate(DTYPES)]
    write(tmp_path / "s", recs)
    import csv

    rows = list(csv.DictReader(open(tmp_path / "s" / "records.csv", newline="")))
    try:
        import tifffile
    except ImportError:
        tifffile = None
    for row, rec in zip(rows, recs):
        data = (tmp_path / "s" / row["file"]).read_bytes()
        dt = rec.image.dtype
        assert row["dtype"] == dt.name
        if dt in (np.uint8, np.uint16, np.bool_):
            assert row["file"].endswith(".png") and data[:8] == b"\x89PNG\r\n\x1a\n"
            if dt == np.bool_:
                px = np.asarray(Image.open(io.BytesIO(data)))
                assert set(np.unique(px)) <= {0, 255} and np.array_equal(px > 0, rec.image)
            continue
        assert row["file"].endswith(".tif") and data[:4] == b"II*\0"
        if rec.image.ndim == 2 and dt.name in ("int16", "int32", "float32"):
            px = np.asarray(Image.open(io.BytesIO(data)))
            assert np.array_equal(px.astype(dt), rec.image, equal_nan=dt.kind == "f")
        if tifffile is not None:
            px = tifffile.imread(io.BytesIO(data))
            assert px.dtype == dt and px.tobytes() == rec.image.tobytes()


# -- verify ---------------------------------------------------------------------------------
@pytest.fixture
def store(tmp_path):
    recs = [Record(rand((6, 6, 3)), i) for i in range(12)]
    return write(tmp_path / "s", recs)


def _problems(path):
    with open_store(path) as r:
        res = r.verify()
    assert not res.ok
    assert all("\n" not in e for e in res.errors)
    return res.errors


def test_verify_missing_file(store):
    (store / "images/000/000003.png").unlink()
    errs = _problems(store)
    assert "record 3: image file images/000/000003.png is missing" in errs
    assert any(e.startswith("record 3: cannot be read (") and "000003.png" in e for e in errs)
    with pytest.raises(CorruptStoreError, match="000003.png: image file of record 3 is missing"):
        open_store(store)[3]


def test_verify_extra_file(store):
    (store / "images/000/000099.png").write_bytes(encode_png(rand((6, 6, 3))))
    assert _problems(store) == ["images/000/000099.png: extra file not listed in records.csv"]


def test_verify_renamed_file(store):
    os.rename(store / "images/000/000004.png", store / "images/000/000004-renamed.png")
    errs = _problems(store)
    assert "record 4: image file images/000/000004.png is missing" in errs
    assert "images/000/000004-renamed.png: extra file not listed in records.csv" in errs


def test_verify_corrupt_png(store):
    f = store / "images/000/000005.png"
    data = bytearray(f.read_bytes())
    data[50:60] = b"\0" * 10
    f.write_bytes(bytes(data))
    errs = _problems(store)
    assert len(errs) == 1
    assert errs[0].startswith("record 5: cannot be read (") and "000005.png" in errs[0]
    with pytest.raises(CorruptStoreError, match=r"000005.png: record 5 is not a readable PNG"):
        open_store(store)[5]


def test_verify_truncated_png(store):
    f = store / "images/000/000006.png"
    f.write_bytes(f.read_bytes()[:30])
    errs = _problems(store)
    assert len(errs) == 1 and errs[0].startswith("record 6: cannot be read (") and "000006.png" in errs[0]


def test_verify_pixel_change_that_still_decodes(store):
    f = store / "images/000/000007.png"
    img = np.asarray(Image.open(f)).copy()
    img[2, 3, 1] ^= 1
    Image.fromarray(img).save(f)  # a valid PNG with one pixel changed
    errs = _problems(store)
    assert len(errs) == 1 and errs[0].startswith("record 7: pixel checksum mismatch (stored ")


def test_verify_wrong_shape_png(store):
    Image.fromarray(rand((5, 6, 3))).save(store / "images/000/000008.png")
    errs = _problems(store)
    assert len(errs) == 1 and "record 8" in errs[0] and "records.csv says 6x6x3 uint8" in errs[0]


def test_verify_row_count_differs_from_manifest(store):
    t = store / "records.csv"
    lines = t.read_text().splitlines(keepends=True)
    t.write_text("".join(lines[:-1]))  # cut at a row boundary: refused, not read as a smaller store
    with pytest.raises(CorruptStoreError, match="records.csv has 11 rows but manifest.json says 12 records; "
                                                "the store is damaged$"):
        open_store(store)


def test_verify_stray_file_in_store_folder(store):
    (store / "notes.txt").write_text("hi")
    assert _problems(store) == ["notes.txt: unexpected file in the store folder"]


def test_a_change_killed_before_its_journal_rename_leaves_a_noted_temporary(store):
    """A change killed inside atomic_write_text (the journal written, not yet renamed) leaves the
    old store and ``..imgtui-change.json.tmp-<pid>``: verify passes and names it, repair says it
    removed it (scripts/torture.py: 1 disk append in 750 kills came out 'wrong' for this)."""
    import imgtui

    before = list(open_store(store))
    tmp = store / "..imgtui-change.json.tmp-4242"
    tmp.write_text('{"op": "append", "from_generation": 0, "to_generation": 1}')
    with open_store(store) as r:
        res = r.verify()
    assert res.ok, res.errors
    assert res.notes == [f"{tmp.name}: a temporary of an interrupted change; the records read are not affected "
                         f"(imgtui repair {store} removes it)"]
    assert imgtui.repair(store)["actions"] == [f"removed {tmp.name}, a temporary of an interrupted change"]
    assert not tmp.exists()
    with open_store(store) as r:
        assert list(r) == before and r.verify().notes == []


# -- reader ---------------------------------------------------------------------------------
def test_process_pool_falls_back_to_threads_when_caller_has_threads(tmp_path, monkeypatch):
    monkeypatch.setattr(DiskWriter, "workers", 2)
    monkeypatch.setattr(DiskWriter, "pool_kind", "process")
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        w = DiskWriter(tmp_path / "s")
        pool = w._make_pool()
        assert type(pool).__name__ == "ThreadPoolExecutor"
        pool.shutdown()
    finally:
        stop.set()
        t.join()


def test_reader_batches_and_thread_pool(store, monkeypatch):
    with open_store(store) as r:
        serial = r.get_many(range(12))
    monkeypatch.setattr(DiskReader, "workers", 2)
    with open_store(store) as r:
        many = r.get_many(list(range(12)) * 4)
        assert many == serial * 4
        assert [len(b) for b in r.iter_batches(5)] == [5, 5, 2]
        imgs = r.get_images([0, 3, -1])
        assert imgs.shape == (3, 6, 6, 3) and np.array_equal(imgs[2], serial[11].image)
    with pytest.raises(IndexError, match="record index 12 out of range for a store of 12 records"):
        open_store(store)[12]


def test_labels_do_not_touch_images(store):
    for p in (store / "images").rglob("*.png"):
        p.unlink()
    with open_store(store) as r:
        assert r.labels() == list(range(12))
        assert r.info()["count"] == 12


def test_empty_store(tmp_path):
    with open_writer(tmp_path / "s", "disk"):
        pass
    with open_store(tmp_path / "s") as r:
        assert len(r) == 0 and r.labels() == [] and list(r) == [] and r.verify().ok


def test_real_cifar_sample_round_trip(tmp_path):
    root = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "cifar10-test"
    if not root.is_dir():
        pytest.skip("cifar10-test is not available")
    files = sorted((root / "cat").glob("*.jpg"))[:20]
    recs = [Record(np.asarray(Image.open(f).convert("RGB")), "cat", {"file": f.name}) for f in files]
    write(tmp_path / "s", recs)
    assert read_all(tmp_path / "s") == recs
