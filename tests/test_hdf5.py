"""HDF5 backend: layouts, variable shapes, labels, failure modes, verify."""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import imgtui
from imgtui.backends import detect_backend, get_backend, open_store, path_size
from imgtui.backends.hdf5 import Hdf5Backend, Hdf5Reader
from imgtui.backends.hdf5 import store as H
from imgtui.errors import (
    CorruptStoreError,
    FormatVersionError,
    ImgtuiError,
    IncompleteStoreError,
    InvalidRecordError,
    StoreExistsError,
    WrongBackendError,
)
from imgtui.records import Record


def make_records(n, shape=(6, 5, 3), dtype=np.uint8, seed=0, labels=None, meta=True):
    rng = np.random.default_rng(seed)
    hi = 256 if np.dtype(dtype) == np.uint8 else 65536
    out = []
    for i in range(n):
        lab = labels(i) if labels else i % 7
        md = {"i": i, "name": f"r{i}", "nested": {"ü": [1, 2.5, None]}} if meta else {}
        out.append(Record(rng.integers(0, hi, shape, dtype=np.int64).astype(dtype), lab, md))
    return out


def write(path, records, **kw):
    with Hdf5Backend.writer(path, **kw) as w:
        w.write_many(records)
    return path


def read_all(path):
    with Hdf5Backend.open(path) as r:
        return list(r), r.info()


def assert_same(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g == w  # Record.__eq__: bit-exact pixels, shape, dtype, label type, metadata


# -- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "opts,layout,compression",
    [
        ({"expected_count": 23}, "contiguous", None),
        ({"layout": "contiguous", "expected_count": 23}, "contiguous", None),
        ({}, "chunked", None),
        ({"layout": "chunked", "chunk_records": 4}, "chunked", None),
        ({"compression": "gzip", "level": 6}, "chunked", "gzip"),
        ({"compression": "lzf", "chunk_records": 3}, "chunked", "lzf"),
    ],
)
def test_fixed_round_trip(tmp_path, opts, layout, compression):
    recs = make_records(23)
    p = write(tmp_path / "s.h5", recs, batch_size=5, **opts)
    got, info = read_all(p)
    assert_same(got, recs)
    assert info["options"]["layout"] == layout
    assert info["options"]["compression"] == (compression or "none")
    with h5py.File(p, "r") as f:
        ds = f["images"]
        assert ds.shape == (23, 6, 5, 3) and ds.dtype == np.uint8
        assert (ds.chunks is None) == (layout == "contiguous")
        assert ds.compression == compression
        assert f["labels"].dtype == np.int64
        assert f.attrs["format"] == "imgtui" and f.attrs["backend"] == "hdf5"
        assert json.loads(f.attrs["manifest"])["count"] == 23
        if opts.get("chunk_records"):
            assert ds.chunks[0] == opts["chunk_records"]
    assert not list(tmp_path.glob("*imgtui-*"))  # no temporary files left


def test_contiguous_without_expected_count_is_rewritten_contiguous(tmp_path):
    recs = make_records(10)
    p = write(tmp_path / "s.h5", recs, layout="contiguous", batch_size=3)
    got, info = read_all(p)
    assert_same(got, recs)
    assert info["options"]["layout"] == "contiguous"
    assert "rewritten contiguous" in " ".join(info["hdf5"]["notes"])
    with h5py.File(p, "r") as f:
        assert f["images"].chunks is None and f["images"].shape[0] == 10


@pytest.mark.parametrize("expected,layout", [(4, "chunked"), (50, "contiguous")])
def test_expected_count_wrong(tmp_path, expected, layout):
    recs = make_records(12)
    p = write(tmp_path / "s.h5", recs, expected_count=expected, batch_size=5)
    got, info = read_all(p)
    assert_same(got, recs)
    assert info["options"]["layout"] == layout
    with h5py.File(p, "r") as f:
        assert f["images"].shape[0] == 12


def test_compression_switches_contiguous_to_chunked(tmp_path):
    recs = make_records(5)
    p = write(tmp_path / "s.h5", recs, layout="contiguous", compression="gzip", expected_count=5)
    got, info = read_all(p)
    assert_same(got, recs)
    assert info["options"]["layout"] == "chunked"
    assert any("needs chunked storage" in n for n in info["hdf5"]["notes"])


def test_variable_shapes_from_the_start(tmp_path):
    shapes = [(4, 5, 3), (7, 2), (3, 3, 1), (9, 8, 4), (4, 5)]
    recs = []
    for i, s in enumerate(shapes * 3):
        dt = np.uint16 if i % 2 else np.uint8
        recs.append(make_records(1, s, dt, seed=i)[0])
    p = write(tmp_path / "s.h5", recs, batch_size=4)
    got, info = read_all(p)
    assert_same(got, recs)
    assert info["hdf5"]["images_layout"] == "variable"
    with h5py.File(p, "r") as f:
        assert "images" not in f
        assert f["shapes"][1].tolist() == [0, 7, 2, 0] and f["shapes"][2].tolist() == [0, 3, 3, 1]
        assert f["dtypes"][0] == 0 and f["dtypes"][1] == 1
        assert "images_flat" not in f and f["offsets"][2] - f["offsets"][1] == 7 * 2 * 2  # a 7x2 uint16 image
        assert f["pixels"].shape == (sum(r.image.nbytes for r in recs),)
    assert info["format_version"] == 5  # older imgtui says "upgrade", not "damaged"


@pytest.mark.parametrize("expected_count", [None, 30])
def test_migration_fixed_to_variable_mid_stream(tmp_path, expected_count):
    recs = make_records(13) + make_records(2, (3, 4), np.uint16, seed=1) + make_records(5, seed=2)
    p = write(tmp_path / "s.h5", recs, batch_size=4, expected_count=expected_count, compression="none")
    got, info = read_all(p)
    assert_same(got, recs)
    assert info["hdf5"]["images_layout"] == "variable"
    assert any("record 13 has shape (3, 4) uint16" in n for n in info["hdf5"]["notes"])
    assert not list(tmp_path.glob("*imgtui-*"))
    with h5py.File(p, "r") as f:
        assert "images" not in f and f["offsets"].shape == (20,)
    # the fixed layout's bytes did not stay behind in the file (the empty chunks of the small
    # datasets, and one 64 KiB chunk of pixels, make up most of a store this small)
    assert path_size(p) < 3 * sum(r.image.nbytes for r in recs) + 300_000


def test_sixteen_bit_round_trip(tmp_path):
    recs = make_records(9, (5, 4, 3), np.uint16)
    assert max(int(r.image.max()) for r in recs) > 255
    for opts in ({}, {"compression": "gzip"}):
        p = write(tmp_path / f"s{len(opts)}.h5", recs, **opts)
        got, _ = read_all(p)
        assert_same(got, recs)
        assert got[0].image.dtype == np.uint16


def test_gray_hw_and_hw1_stay_distinct(tmp_path):
    hw = make_records(3, (5, 6))
    hw1 = make_records(3, (5, 6, 1))
    got, _ = read_all(write(tmp_path / "a.h5", hw))
    assert_same(got, hw) and got[0].image.shape == (5, 6)
    got, _ = read_all(write(tmp_path / "b.h5", hw1))
    assert_same(got, hw1) and got[0].image.shape == (5, 6, 1)
    both = hw + hw1  # same pixels count, different shape: variable layout
    got, info = read_all(write(tmp_path / "c.h5", both))
    assert_same(got, both)
    assert [g.image.shape for g in got] == [(5, 6)] * 3 + [(5, 6, 1)] * 3


@pytest.mark.parametrize(
    "labels,kind",
    [
        (lambda i: i * 1000 - (1 << 62), "int"),
        (lambda i: f"cat-{i}-ünïcode", "str"),
        (lambda i: i if i < 6 else f"s{i}", "mixed"),  # ints first, then strs (labels migrate)
        (lambda i: f"s{i}" if i < 6 else i, "mixed"),  # strs first, then ints
        (lambda i: str(i) if i % 2 else i, "mixed"),  # "3" (str) vs 3 (int) in one batch
    ],
)
def test_labels_round_trip_with_types(tmp_path, labels, kind):
    recs = make_records(11, labels=labels, meta=False)
    p = write(tmp_path / "s.h5", recs, batch_size=4)
    got, info = read_all(p)
    assert_same(got, recs)
    with Hdf5Backend.open(p) as r:
        assert r.labels() == [x.label for x in recs]
        assert [type(x) for x in r.labels()] == [type(x.label) for x in recs]
    with h5py.File(p, "r") as f:
        assert (f["labels"].dtype == np.int64) == (kind == "int")
        assert ("label_is_int" in f) == (kind == "mixed")


def test_metadata_round_trip(tmp_path):
    recs = make_records(4)
    recs[1].metadata = {}
    recs[2].metadata = {"text": "a\x00b \"quoted\" 😀", "n": -1, "f": 0.1, "l": [[], {}]}
    got, _ = read_all(write(tmp_path / "s.h5", recs))
    assert_same(got, recs)
    assert got[2].metadata["text"] == "a\x00b \"quoted\" 😀"


def test_no_metadata_skips_metadata_reads(tmp_path):
    recs = make_records(5, meta=False)
    p = write(tmp_path / "s.h5", recs)
    with Hdf5Backend.open(p) as r:
        assert r.manifest["hdf5"]["metadata_records"] == 0
        assert all(x.metadata == {} for x in r)


def test_empty_store(tmp_path):
    p = write(tmp_path / "s.h5", [])
    with Hdf5Backend.open(p) as r:
        assert len(r) == 0 and list(r) == [] and r.labels() == []
        assert r.verify().ok and r.get_many([]) == []
    assert Hdf5Backend.detect(p)


# -- property test ------------------------------------------------------------------------------

_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=6)
_json = st.one_of(st.none(), st.booleans(), st.integers(-(10**12), 10**12), _text)


@st.composite
def records_strategy(draw):
    n = draw(st.integers(0, 12))
    fixed = draw(st.booleans())
    base_shape = (draw(st.integers(1, 5)), draw(st.integers(1, 5)), draw(st.sampled_from([0, 1, 3, 4])))
    base_dtype = draw(st.sampled_from([np.uint8, np.uint16]))
    recs = []
    for i in range(n):
        if fixed:
            h, w, c = base_shape
            dt = base_dtype
        else:
            h, w = draw(st.integers(1, 5)), draw(st.integers(1, 5))
            c = draw(st.sampled_from([0, 1, 3, 4]))
            dt = draw(st.sampled_from([np.uint8, np.uint16]))
        shape = (h, w) if c == 0 else (h, w, c)
        seed = draw(st.integers(0, 2**32 - 1))
        hi = 256 if dt == np.uint8 else 65536
        img = np.random.default_rng(seed).integers(0, hi, shape).astype(dt)
        label = draw(st.one_of(st.integers(-(2**63), 2**63 - 1), _text))
        meta = draw(st.dictionaries(_text, _json, max_size=3))
        recs.append(Record(img, label, meta))
    return recs


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    recs=records_strategy(),
    batch_size=st.integers(1, 5),
    opts=st.sampled_from([{}, {"layout": "contiguous"}, {"compression": "lzf"}, {"compression": "gzip", "level": 1}]),
    give_count=st.booleans(),
)
def test_property_bit_exact_round_trip(recs, batch_size, opts, give_count):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "s.h5"
        kw = dict(opts, batch_size=batch_size)
        if give_count:
            kw["expected_count"] = len(recs)
        write(p, recs, **kw)
        with Hdf5Backend.open(p) as r:
            assert_same(list(r), recs)
            assert r.labels() == [x.label for x in recs]
            if recs:
                idx = list(range(len(recs)))[::-1] + [0]
                assert_same(r.get_many(idx), [recs[i] for i in idx])
            assert r.verify().ok


# -- failure modes ------------------------------------------------------------------------------

INCOMPLETE = "is incomplete: its writer did not finish (interrupted or killed); re-create it with --overwrite"


def test_missing_complete_attribute_is_incomplete(tmp_path):
    p = write(tmp_path / "s.h5", make_records(3))
    with h5py.File(p, "r+") as f:
        del f.attrs["complete"]
    with pytest.raises(IncompleteStoreError) as ei:
        Hdf5Backend.open(p)
    assert str(ei.value) == f"{p} {INCOMPLETE}"
    assert Hdf5Backend.detect(p)


def test_killed_writer_leaves_an_incomplete_store(tmp_path):
    p = tmp_path / "killed.h5"
    code = (
        "import os, numpy as np\n"
        "from imgtui.backends.hdf5 import Hdf5Backend\n"
        "from imgtui.records import Record\n"
        f"w = Hdf5Backend.writer({str(p)!r}, batch_size=2).__enter__()\n"
        "for i in range(7): w.write(Record(np.zeros((4, 4, 3), np.uint8), i))\n"
        "os._exit(0)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert not p.exists()  # the writer builds beside the store's path
    (tmp,) = [q for q in tmp_path.iterdir() if q.name.startswith("killed.h5.imgtui-tmp-")]
    assert Hdf5Backend.detect(tmp) and detect_backend(tmp) == "hdf5"
    with pytest.raises(IncompleteStoreError) as ei:
        open_store(tmp)
    assert str(ei.value) == f"{tmp} {INCOMPLETE}"
    write(p, make_records(2))  # the next writer of that path removes the killed one's temporary
    assert sorted(q.name for q in tmp_path.iterdir()) == ["killed.h5"]


def _edit_manifest(path, **changes):
    with h5py.File(path, "r+") as f:
        m = json.loads(f.attrs["manifest"])
        m.update(changes)
        f.attrs["manifest"] = json.dumps(m)


def test_newer_format_version(tmp_path):
    p = write(tmp_path / "s.h5", make_records(2))
    _edit_manifest(p, format_version=99)
    with pytest.raises(FormatVersionError, match="uses imgtui format version 99"):
        Hdf5Backend.open(p)


def test_wrong_backend_in_manifest(tmp_path):
    p = write(tmp_path / "s.h5", make_records(2))
    _edit_manifest(p, backend="lmdb")
    with pytest.raises(WrongBackendError, match="is a lmdb store, not hdf5"):
        Hdf5Backend.open(p)


def test_non_hdf5_file(tmp_path):
    p = tmp_path / "x.h5"
    p.write_bytes(b"this is not hdf5 at all\n" * 10)
    assert not Hdf5Backend.detect(p)
    with pytest.raises(CorruptStoreError) as ei:
        Hdf5Backend.open(p)
    assert str(ei.value) == f"{p} is not an HDF5 file (it does not start with the HDF5 signature)"


def test_plain_hdf5_without_imgtui_attributes(tmp_path):
    p = tmp_path / "plain.h5"
    with h5py.File(p, "w") as f:
        f["images"] = np.zeros((2, 3, 3), np.uint8)
    assert not Hdf5Backend.detect(p)
    with pytest.raises(CorruptStoreError, match="is an HDF5 file but not an imgtui store"):
        Hdf5Backend.open(p)


@pytest.mark.parametrize("keep", [0.5, 0.02])
def test_truncated_file_one_line_error(tmp_path, keep):
    p = write(tmp_path / "s.h5", make_records(40, (16, 16, 3)), expected_count=40)
    size = p.stat().st_size
    with open(p, "r+b") as fh:
        fh.truncate(int(size * keep))
    with pytest.raises(CorruptStoreError) as ei:
        with Hdf5Backend.open(p) as r:
            list(r)
    msg = str(ei.value)
    assert "\n" not in msg and msg.startswith(str(p))
    assert "damaged or truncated" in msg or "cannot read" in msg
    assert detect_backend(p) == "hdf5"  # so open_store explains the damage too
    with pytest.raises(CorruptStoreError, match="damaged or truncated"):
        open_store(p)


def test_dest_exists_without_overwrite(tmp_path):
    p = write(tmp_path / "s.h5", make_records(3))
    before = p.read_bytes()
    with pytest.raises(StoreExistsError, match="already exists"):
        Hdf5Backend.writer(p)
    assert p.read_bytes() == before


def test_exception_while_overwriting_keeps_old_store(tmp_path):
    old = make_records(4)
    p = write(tmp_path / "s.h5", old)
    with pytest.raises(RuntimeError):
        with Hdf5Backend.writer(p, overwrite=True, batch_size=2) as w:
            w.write_many(make_records(5, seed=9))
            w.write_many(make_records(3, (2, 2), seed=5))  # forces a migration first
            raise RuntimeError("boom")
    got, _ = read_all(p)
    assert_same(got, old)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["s.h5"]


def test_overwrite_replaces_store(tmp_path):
    p = write(tmp_path / "s.h5", make_records(4))
    new = make_records(6, seed=3)
    write(p, new, overwrite=True)
    got, _ = read_all(p)
    assert_same(got, new)


def test_invalid_record_is_refused_and_store_still_written(tmp_path):
    p = tmp_path / "s.h5"
    recs = make_records(3)
    with Hdf5Backend.writer(p) as w:
        w.write(recs[0])
        with pytest.raises(InvalidRecordError, match="record 1 label: HDF5 strings cannot contain NUL"):
            w.write(Record(recs[1].image, "a\x00b"))
        with pytest.raises(InvalidRecordError, match="record 1 label: not encodable as UTF-8"):
            w.write(Record(recs[1].image, "\ud800"))
        w.write(recs[1])
    got, _ = read_all(p)
    assert_same(got, recs[:2])


@pytest.mark.parametrize("opts", [{"expected_count": 10}, {"layout": "chunked", "chunk_records": 3}, {"compression": "gzip"}])
def test_flipped_pixel_is_reported_by_verify(tmp_path, opts):
    p = write(tmp_path / "s.h5", make_records(10), **opts)
    with Hdf5Backend.open(p) as r:
        assert r.verify().ok
    with h5py.File(p, "r+") as f:
        f["images"][3, 1, 2, 0] ^= 0xFF
    with Hdf5Backend.open(p) as r:
        res = r.verify()
    assert not res.ok and res.checked == 10
    assert len(res.errors) == 1 and res.errors[0].startswith("record 3: pixel checksum mismatch")


def test_flipped_pixel_in_variable_store(tmp_path):
    recs = make_records(3) + make_records(3, (4, 4), seed=2)
    p = write(tmp_path / "s.h5", recs)
    with h5py.File(p, "r+") as f:
        f["pixels"][f["offsets"][4]] ^= 0xFF
    with Hdf5Backend.open(p) as r:
        res = r.verify()
    assert [e.split(":")[0] for e in res.errors] == ["record 4"]


# -- reader API ---------------------------------------------------------------------------------


def test_info_content(tmp_path):
    recs = make_records(7, (6, 5, 3))
    p = write(tmp_path / "s.h5", recs, compression="gzip", level=3, expected_count=7)
    with Hdf5Backend.open(p) as r:
        info = r.info()
    assert info["backend"] == "hdf5" and info["count"] == 7 and info["complete"] is True
    assert info["shapes"] == {"6x5x3": 7} and info["dtypes"] == {"uint8": 7}
    assert info["raw_bytes"] == 7 * 6 * 5 * 3
    assert info["bytes_on_disk"] == path_size(p) > 0
    assert info["options"] == {"layout": "chunked", "compression": "gzip", "level": 3, "chunk_records": 7}
    assert info["hdf5"]["images_layout"] == "fixed" and info["hdf5"]["compression"] == "gzip"
    assert info["format_version"] == 2 and info["label_kinds"] == ["int"]


def test_get_images_and_get_many(tmp_path):
    recs = make_records(30)
    for opts in ({"expected_count": 30}, {"chunk_records": 4}):
        p = write(tmp_path / f"s{len(opts)}{list(opts)[0]}.h5", recs, **opts)
        with Hdf5Backend.open(p) as r:
            idx = [5, 29, 0, 5, -1, 13, 12]
            imgs = r.get_images(idx)
            assert isinstance(imgs, np.ndarray) and imgs.shape == (7, 6, 5, 3)
            assert np.array_equal(imgs, np.stack([recs[i].image for i in idx]))
            assert np.array_equal(r.get_images(np.array([3, 4, 5])), np.stack([recs[i].image for i in (3, 4, 5)]))
            assert_same(r.get_many(idx), [recs[i] for i in idx])
            assert r[-2] == recs[28]
            assert_same([x for b in r.iter_batches(7) for x in b], recs)
            with pytest.raises(IndexError, match="out of range"):
                r.get_many([1, 30])
            with pytest.raises(IndexError, match="out of range"):
                r[-31]


def test_get_images_variable_returns_list(tmp_path):
    recs = make_records(2) + make_records(2, (3, 3), seed=1)
    with Hdf5Backend.open(write(tmp_path / "s.h5", recs)) as r:
        imgs = r.get_images([3, 0])
        assert isinstance(imgs, list) and imgs[0].shape == (3, 3) and imgs[1].shape == (6, 5, 3)
        same = r.get_images([0, 1])
        assert isinstance(same, np.ndarray) and same.shape == (2, 6, 5, 3)


def test_closed_reader_refuses(tmp_path):
    r = Hdf5Backend.open(write(tmp_path / "s.h5", make_records(2)))
    r.close()
    with pytest.raises(ImgtuiError, match="reader is closed"):
        r.labels()


@pytest.mark.parametrize(
    "opts,msg",
    [
        ({"colour": 3}, "hdf5: unknown option(s) colour"),
        ({"layout": "spiral"}, "hdf5: layout must be one of auto, contiguous, chunked"),
        ({"compression": "zstd"}, "hdf5: compression must be one of none, gzip, lzf"),
        ({"compression": "gzip", "level": 12}, "hdf5: gzip level must be 0-9"),
        ({"level": 3}, "hdf5: option level applies only to compression=gzip"),
        ({"chunk_records": 0}, "hdf5: chunk_records must be at least 1"),
        ({"chunk_records": "many"}, "hdf5: chunk_records must be an integer"),
    ],
)
def test_bad_options(tmp_path, opts, msg):
    with pytest.raises(ImgtuiError) as ei:
        Hdf5Backend.writer(tmp_path / "s.h5", **opts)
    assert str(ei.value).startswith(msg)
    assert not (tmp_path / "s.h5").exists()


def test_public_api_and_detection(tmp_path):
    recs = make_records(3)
    p = tmp_path / "s.h5"
    with imgtui.writer(p, "hdf5", expected_count=3) as w:
        w.write_many(recs)
    assert get_backend("h5") is Hdf5Backend and Hdf5Backend.suffix == ".h5"
    assert detect_backend(p) == "hdf5"
    with imgtui.open(p) as r:
        assert isinstance(r, Hdf5Reader)
        assert_same(list(r), recs)
    assert not Hdf5Backend.detect(tmp_path)
    assert Hdf5Backend.recipe()


def test_shared_cifar_sample_if_present(tmp_path):
    src = Path("/work/shared/datasets/cifar10-test")
    if not src.exists():
        pytest.skip("no /work/shared/datasets/cifar10-test")
    from imgtui.datasets import open_dataset

    try:
        ds = open_dataset(str(src))
    except ImgtuiError as exc:
        pytest.skip(f"cannot read the shared sample: {exc}")
    recs = []
    for rec in ds:
        recs.append(rec)
        if len(recs) == 200:
            break
    got, _ = read_all(write(tmp_path / "c.h5", recs))
    assert_same(got, recs)


def _as_written_before_packing(path: Path) -> None:
    """Turn a variable-shape store into what imgtui wrote before format version 5: each image a
    vlen uint8 object in ``images_flat`` (no ``pixels``/``offsets``), the manifest's version the
    lowest its records need."""
    from imgtui.backends.base import format_version_for
    from imgtui.records import shape_from4, shapes4

    with h5py.File(path, "r+") as f:
        pixels, offsets = f["pixels"][()], f["offsets"][()]
        shapes, codes = shapes4(f["shapes"][()]), f["dtypes"][()]
        flat = np.empty(len(offsets), dtype=h5py.vlen_dtype(np.uint8))
        for i, (o, shp, c) in enumerate(zip(offsets, shapes, codes)):
            nbytes = int(np.prod(shape_from4(*shp))) * H.CODE_DTYPES[int(c)].itemsize
            flat[i] = pixels[o : o + nbytes]
        del f["pixels"], f["offsets"]
        ds = f.create_dataset("images_flat", shape=(len(flat),), maxshape=(None,), chunks=(64,), dtype=flat.dtype)
        if len(flat):
            ds.write_direct(flat)
        m = json.loads(f.attrs["manifest"])
        m["format_version"] = format_version_for(m["dtypes"], bool(shapes[:, 0].any()))
        f.attrs["manifest"] = json.dumps(m)


def _as_written_before_volumes(path: Path) -> None:
    """Turn a variable-shape store into what imgtui wrote before 3-D records: ``shapes`` N x 3
    (and vlen ``images_flat``, as stores were then)."""
    _as_written_before_packing(path)
    with h5py.File(path, "r+") as f:
        rows = f["shapes"][()]
        assert rows.shape[1] == 4 and not rows[:, 0].any()
        del f["shapes"]
        f.create_dataset("shapes", data=rows[:, 1:], maxshape=(None, 3), chunks=(64, 3), dtype=np.int64)


@pytest.mark.parametrize("change", ["append", "overwrite"])
def test_store_with_n_by_3_shapes_reads_and_takes_volumes(tmp_path, change):
    """A variable-shape store written before 3-D records (shapes N x 3) still reads bit-exact, and
    a change bringing a volume widens its shapes to N x 4 without losing a record."""
    rng = np.random.default_rng(3)
    old = [Record(rng.integers(0, 255, s, dtype=np.uint8), i, {}) for i, s in enumerate([(4, 5), (6, 5, 3), (3, 3, 1)])]
    p = tmp_path / "old.h5"
    with imgtui.writer(p, "hdf5") as w:
        w.write_many(old)
    _as_written_before_volumes(p)
    with open_store(p) as r:
        assert list(r) == old and r.verify().ok
    vol = Record(rng.standard_normal((3, 4, 6)).astype(np.float32), 9, {"v": 1})
    if change == "append":
        imgtui.append(p, [vol])
        want = old + [vol]
    else:
        imgtui.overwrite(p, {1: vol})
        want = [old[0], vol, old[2]]
    with h5py.File(p, "r") as f:
        assert f["shapes"].shape == (len(want), 4)
    with open_store(p) as r:
        assert list(r) == want and r.verify().ok and r.info()["format_version"] == 4


# -- the packed variable-shape layout (format version 5) and the vlen one before it ------------


def _variable_records(n=12, seed=5):
    rng = np.random.default_rng(seed)
    kinds = [((9, 7), np.uint16), ((5, 6, 3), np.uint8), ((4, 3, 4), np.float32), ((8, 8), np.int16), ((3, 3, 1), bool)]
    out = []
    for i in range(n):
        shape, dt = kinds[i % len(kinds)]
        shape = (shape[0] + i % 3,) + shape[1:]
        im = (rng.standard_normal(shape) * 1000).astype(dt) if dt != bool else rng.random(shape) > 0.5
        out.append(Record(im, i if i % 4 else f"s{i}", {"i": i} if i % 2 else {}))
    return out


def test_store_of_format_4_vlen_layout_reads_appends_overwrites_and_deletes(tmp_path):
    """A variable-shape store written before version 5 (vlen ``images_flat``) reads bit-exact;
    appends and overwrites keep its layout (an older imgtui still reads it); a delete rewrites it
    packed (version 5). Nothing lost at any step."""
    recs = _variable_records()
    p = write(tmp_path / "old.h5", recs)
    _as_written_before_packing(p)
    with open_store(p) as r:
        assert list(r) == recs and r.verify().ok and r.info()["format_version"] == 3
        idx = [7, 0, 7, 3]
        assert all(np.array_equal(a, recs[i].image) for a, i in zip(r.get_images(idx), idx))
    more = _variable_records(4, seed=9)
    imgtui.append(p, more)
    new = Record(np.arange(30, dtype=np.uint16).reshape(5, 6), 77, {"new": True})
    imgtui.overwrite(p, {2: new})
    want = recs + more
    want[2] = new
    with h5py.File(p, "r") as f:
        assert "images_flat" in f and "pixels" not in f and f["images_flat"].shape == (len(want),)
    with open_store(p) as r:
        assert list(r) == want and r.verify().ok and r.info()["format_version"] == 3
    imgtui.delete(p, [0, 5])
    want = [x for i, x in enumerate(want) if i not in (0, 5)]
    with h5py.File(p, "r") as f:
        assert "images_flat" not in f and f["offsets"].shape == (len(want),)
    with open_store(p) as r:
        assert list(r) == want and r.verify().ok and r.info()["format_version"] == 5


def test_packed_overwrite_appends_the_new_bytes_and_moves_the_offset(tmp_path):
    recs = _variable_records()
    p = write(tmp_path / "s.h5", recs)
    with h5py.File(p, "r") as f:
        size, off3 = f["pixels"].shape[0], int(f["offsets"][3])
    new = Record(np.full((40, 30, 3), 7, dtype=np.uint8), 3, {"big": 1})
    imgtui.overwrite(p, {3: new})
    with h5py.File(p, "r") as f:
        assert f["pixels"].shape[0] == size + new.image.nbytes and int(f["offsets"][3]) == size != off3
    with open_store(p) as r:
        assert list(r) == recs[:3] + [new] + recs[4:] and r.verify().ok


@pytest.mark.parametrize("compression", ["none", "gzip", "lzf"])
def test_variable_store_pixels_are_compressed_and_read_bit_exact(tmp_path, compression):
    rng = np.random.default_rng(1)
    recs = [Record(np.repeat(rng.integers(0, 4000, (h, 1), dtype=np.uint16), 300, axis=1), i)
            for i, h in enumerate(range(100, 160))]  # 60 smooth 16-bit images, ~2.2 MB raw
    p = write(tmp_path / f"{compression}.h5", recs, compression=compression)
    raw = sum(r.image.nbytes for r in recs)
    with h5py.File(p, "r") as f:
        assert f["pixels"].compression == (None if compression == "none" else compression)
    if compression == "none":
        assert path_size(p) > raw
    else:
        assert path_size(p) < raw / 4
    with open_store(p) as r:
        assert list(r) == recs and r.verify().ok
        idx = [59, 3, 3, 40]
        assert all(np.array_equal(a, recs[i].image) for a, i in zip(r.get_images(idx), idx))
        # uncompressed chunks are copied from a map of the file; compressed ones read by HDF5
        assert (r._pix_map is not None) == (compression == "none")


def test_offset_outside_the_pixels_is_a_one_line_error(tmp_path):
    recs = _variable_records()
    p = write(tmp_path / "s.h5", recs)
    with h5py.File(p, "r+") as f:
        f["offsets"][4] = f["pixels"].shape[0] - 3
        f["offsets"][6] = -8
    with open_store(p) as r:
        assert r[3] == recs[3]
        with pytest.raises(CorruptStoreError, match=r"an image's bytes .* lie outside 'pixels'") as e:
            r[4]
        assert "\n" not in str(e.value)
        res = r.verify()
    assert not res.ok and [x.split(":")[0] for x in res.errors] == ["record 4", "record 6"]


def test_pixel_bytes_moved_between_records_fail_the_checksum(tmp_path):
    recs = [Record(np.full((4, 4), i, dtype=np.uint8), i) for i in range(5)]
    p = write(tmp_path / "s.h5", recs + [Record(np.zeros((2, 2), np.uint8), 9)])
    with h5py.File(p, "r+") as f:
        f["offsets"][1] = f["offsets"][2]  # record 1 now points at record 2's bytes
    with open_store(p) as r:
        res = r.verify()
    assert [x.split(":")[0] for x in res.errors] == ["record 1"]


def test_a_label_that_is_not_utf8_is_a_one_line_error(tmp_path):
    recs = make_records(6, labels=lambda i: ["cat", "dög"][i % 2])
    p = write(tmp_path / "s.h5", recs)
    with open_store(p) as r:
        assert r.labels() == [x.label for x in recs] and r.labels_array().tolist() == r.labels()
    with h5py.File(p, "r+") as f:
        f["labels"][3] = b"d\xf6g"  # latin-1 bytes, not UTF-8
    with open_store(p) as r:
        for call in (r.labels, r.labels_array, lambda: r[3]):
            with pytest.raises(CorruptStoreError, match="a label is not valid UTF-8") as e:
                call()
            assert "\n" not in str(e.value) and str(p) in str(e.value)
        assert r[2] == recs[2]


def test_plain_h5py_reads_the_packed_layout_with_the_recipe(tmp_path):
    """What ``Hdf5Backend.recipe()`` says for variable shapes, done with h5py and numpy only."""
    recs = _variable_records()
    p = write(tmp_path / "s.h5", recs)
    codes = ['<u1', '<u2', '<i2', '<u4', '<i4', '<f4', '<f8', '?', '<i1']
    with h5py.File(p, "r") as f:
        for i, rec in enumerate(recs):
            shape = tuple(int(x) for x in f["shapes"][i] if x)
            dtype = np.dtype(codes[f["dtypes"][i]])
            o = int(f["offsets"][i])
            im = np.frombuffer(f["pixels"][o : o + int(np.prod(shape)) * dtype.itemsize], dtype).reshape(shape)
            assert im.dtype == rec.image.dtype and np.array_equal(im, rec.image)
    recipe = Hdf5Backend.recipe()
    assert "f['offsets'][i]" in recipe and "f['pixels'][o : o + prod(shape) * dtype.itemsize]" in recipe
