"""The hdf5 backend passes the shared conformance suite (tests/backend_suite.py)."""

from backend_suite import BackendSuite


class TestHdf5(BackendSuite):
    backend = "hdf5"
    varying_format_version = 5


class TestHdf5Contiguous(BackendSuite):
    backend = "hdf5"
    options = {"layout": "contiguous"}
    varying_format_version = 5


def test_large_store_reads_only_the_rows_of_a_batch_from_labels_and_checksums(tmp_path, monkeypatch):
    """Past COLUMN_MAX_RECORDS a batch reads its own rows of the labels and checksums columns
    instead of loading both whole; records, order, duplicates and checked reads are the same."""
    import numpy as np
    import pytest

    import imgtui
    from imgtui.backends import open_store
    from imgtui.backends.hdf5 import store as hdf5_store
    from imgtui.errors import CorruptStoreError
    from imgtui.records import Record

    records = [Record(np.full((3, 3), i % 256, np.uint8), (i * 7) % 50, {"i": i} if i % 9 == 0 else {}) for i in range(5000)]
    p = tmp_path / "s.h5"
    with imgtui.writer(p, "hdf5") as w:
        w.write_many(records)
    monkeypatch.setattr(hdf5_store, "COLUMN_MAX_RECORDS", 100)
    idx = [4999, 3, 17, 3, -1, 4096, 4095, 0]
    with open_store(p) as r:
        assert r.get_many(idx) == [records[i] for i in idx]
        assert np.array_equal(r.get_images(idx), np.stack([records[i].image for i in idx]))
        assert r.get_many(range(10, 20)) == records[10:20]
        assert "labels" not in r._cache and "checksums" not in r._cache
        assert r._col_maps["checksums"] is not None and r._col_maps["labels"] is not None  # gathered from a map
        assert r.labels_array().tolist() == [x.label for x in records]
    import h5py

    with h5py.File(p, "r+") as f:
        f["checksums"][4095] ^= 1
    with open_store(p) as r:
        with pytest.raises(CorruptStoreError, match="record 4095"):
            r.get_images([5, 4095])
