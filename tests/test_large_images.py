"""Medical-sized images: 2048x2048 uint16 and a mix from 64x64 to 4096x4096 round-trip in every backend."""

import numpy as np
import pytest

import imgtui
from imgtui import Record

BACKENDS = ["disk", "lmdb", "hdf5"]


def big_records():
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:2048, 0:2048]
    scan = ((yy * 7 + xx * 3) % 4096 * 16).astype(np.uint16) + rng.integers(0, 16, (2048, 2048), dtype=np.uint16)
    return [
        Record(scan, "ct", {"RescaleSlope": 1.0, "RescaleIntercept": -1024.0, "WindowCenter": 40}),
        Record(rng.integers(0, 256, (64, 64), dtype=np.uint8), "tiny", {}),
        Record((rng.integers(0, 4096, (4096, 4096)) * 16).astype(np.uint16), "huge", {"size": 4096}),
        Record(rng.integers(0, 65536, (1500, 900, 3), dtype=np.uint16), "rgb16", {}),
        Record(rng.integers(0, 256, (700, 1900, 4), dtype=np.uint8), 3, {}),
    ]


@pytest.mark.parametrize("backend", BACKENDS)
def test_large_and_mixed_sizes_round_trip(tmp_path, backend):
    recs = big_records()
    dest = tmp_path / ("s.h5" if backend == "hdf5" else f"s.{backend}")
    with imgtui.writer(dest, backend) as w:
        for r in recs:
            w.write(r)
    with imgtui.open(dest) as r:
        assert len(r) == len(recs)
        for i, want in enumerate(recs):
            assert r[i] == want, f"record {i} differs"
        assert r.verify().ok
        info = r.info()
        assert info["shapes"]["2048x2048"] == 1 and info["shapes"]["4096x4096"] == 1


def test_hdf5_stores_mixed_sizes_as_packed_bytes_plus_offsets_and_shapes(tmp_path):
    import h5py

    recs = big_records()[:3]
    dest = tmp_path / "s.h5"
    with imgtui.writer(dest, "hdf5") as w:
        w.write_many(recs)
    with h5py.File(dest, "r") as f:
        names = set(f.keys())
    assert {"pixels", "offsets", "shapes"} <= names and "images_flat" not in names
    with imgtui.open(dest) as r:
        assert np.array_equal(r[2].image, recs[2].image)


def test_preview_downsamples_instead_of_drawing_full_resolution():
    from imgtui.tui.imaging import thumbnail

    scan = big_records()[0].image
    text = thumbnail(scan, 40, 20)
    lines = text.plain.splitlines()
    assert len(lines) <= 20 and max(len(line) for line in lines) <= 40


@pytest.mark.parametrize("backend", ["lmdb", "hdf5", "disk"])
def test_reading_and_changing_large_volumes_holds_a_few_at_a_time(tmp_path, backend):
    """Iteration (convert, export, verify) and changes take records in batches of about 64 MB, not
    256 records: 8 volumes of 20 MiB are read 3, 3 and 2 at a time, and changed 4 at a time."""
    from imgtui.backends import open_store
    from imgtui.backends.mutate import BATCH_BYTES, _batches
    from imgtui.records import Record

    vols = [Record(np.full((5, 1024, 1024), k, np.float32), k, {}) for k in range(8)]  # 20 MiB each
    p = tmp_path / {"lmdb": "v.lmdb", "hdf5": "v.h5", "disk": "v"}[backend]
    with imgtui.writer(p, backend) as w:
        w.write_many(vols)
    with open_store(p) as r:
        assert r.batch_records(256) == 3
        batches = list(r.iter_batches(256))
        assert [len(b) for b in batches] == [3, 3, 2]
        assert [int(x.image[0, 0, 0]) for b in batches for x in b] == list(range(8))
    assert [len(b) for b in _batches(vols, 256)] == [4, 4] and BATCH_BYTES == 64 << 20
    assert [len(b) for b in _batches([(v.image, 0) for v in vols[:3]], 2)] == [2, 1]
