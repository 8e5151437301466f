"""The lmdb backend passes the shared conformance suite (tests/backend_suite.py)."""

from backend_suite import BackendSuite


class TestLmdb(BackendSuite):
    backend = "lmdb"


def test_large_store_reads_batches_without_the_whole_store_index(tmp_path, monkeypatch):
    """Past INDEX_MAX_RECORDS a batch reads only its own records' blocks (no 56-byte-a-record
    index over every block); the records, labels and checked reads are the same."""
    import numpy as np

    import imgtui
    from imgtui.backends import open_store
    from imgtui.backends.lmdb import store as lmdb_store
    from imgtui.records import Record

    records = [Record(np.full((16, 16), i % 256, np.uint8), i % 7 if i % 11 else f"s{i}", {"i": i} if i % 13 == 0 else {})
               for i in range(600)]
    p = tmp_path / "s.lmdb"
    with imgtui.writer(p, "lmdb", block_bytes=4096) as w:  # 16 records a block: many blocks
        w.write_many(records)
    idx = [599, 3, 17, 3, -1, 255, 256, 0, 42]
    with open_store(p) as r:
        want_many = r.get_many(idx)
        want_images = r.get_images(idx)
    monkeypatch.setattr(lmdb_store, "INDEX_MAX_RECORDS", 100)
    with open_store(p) as r:
        assert r.get_many(idx) == want_many
        assert np.array_equal(r.get_images(idx), want_images)
        assert r.labels_array().tolist() == [x.label for x in records]
        assert not r._indexed and r._label_cache is None  # neither whole-store index was built
    # a damaged pixel is still refused by a lookup-only batch read
    _lookup_batch_refuses_a_flipped_pixel(p, 300)


def test_single_label_lookup_in_a_labels_block():
    """A labels block without strings is read item by item; anything else (strings, metadata,
    nested arrays, odd numbers) is parsed as JSON or refused, never misread."""
    import pytest

    from imgtui.backends.lmdb.store import _LabelsBlock, _int_labels_block

    b = _LabelsBlock(b"[[3,{}],[-5,{}],[100,{}]]")
    assert b.starts is not None and [b[j] for j in range(3)] == [(3, {}), (-5, {}), (100, {})]
    with pytest.raises(IndexError):
        b[3]
    assert _LabelsBlock(b'[["x",{}],[4,{"a":[1]}]]')[1] == [4, {"a": [1]}]  # JSON
    assert _LabelsBlock(b"[[3,{}],[[1,2],{}]]").starts is None  # a nested array: JSON
    for raw in (b"[[1,2,{}]]", b"[[1_0,{}]]", b"[[--1,{}]]", b"[[1.5,{}]]"):
        with pytest.raises(ValueError):
            _LabelsBlock(raw)[0]
    assert _int_labels_block(b"[[3,{}],[-5,{}]]").tolist() == [3, -5]
    for raw in (b'[["x",{}]]', b'[[3,{"a":1}]]', b"[[3,,{}]]", b"[[--3,{}]]", b"[]", b"[[99999999999999999999999,{}]]"):
        assert _int_labels_block(raw) is None


def test_small_batches_of_a_big_store_read_their_own_blocks_until_the_index_pays(tmp_path, monkeypatch):
    """From LOOKUP_MIN_RECORDS, random batches do not build the whole-store index (one pass over
    every block: 1.2 s warm, 54 s cold at 1,000,000 records) until their lookups add up to
    1/LOOKUP_BUDGET of the store; the pixels, checked reads and errors are the same either way."""
    import numpy as np

    import imgtui
    from imgtui.backends import open_store
    from imgtui.backends.lmdb import store as lmdb_store
    from imgtui.records import Record

    records = [Record(np.full((8, 8, 3), i % 251, np.uint8), i % 5, {}) for i in range(600)]
    p = tmp_path / "s.lmdb"
    with imgtui.writer(p, "lmdb", block_bytes=4096) as w:  # 21 records a block
        w.write_many(records)
    monkeypatch.setattr(lmdb_store, "LOOKUP_MIN_RECORDS", 100)
    monkeypatch.setattr(lmdb_store, "LOOKUP_BUDGET", 4)  # 150 records by lookups, then the index
    rng = np.random.default_rng(5)
    with open_store(p) as r:
        for _ in range(16):  # 16 batches of 9: 144 records, within the budget
            idx = rng.integers(0, 600, 9)
            assert np.array_equal(r.get_images(idx), np.stack([records[i].image for i in idx]))
            assert not r._indexed
        assert [x.label for x in r.get_many([7, 599, 1, 2, 3, 4, 5])] == [2, 4, 1, 2, 3, 4, 0]  # 151 > 150
        assert r._indexed  # past the budget: the index was built
        assert np.array_equal(r.get_images([3, 598]), np.stack([records[3].image, records[598].image]))
    # a big batch (a sequential read) builds the index at once
    with open_store(p) as r:
        assert np.array_equal(r.get_images(range(0, 200)), np.stack([x.image for x in records[:200]]))
        assert r._indexed
    # a damaged pixel is refused by a lookup batch too
    _lookup_batch_refuses_a_flipped_pixel(p, 300)


def _lookup_batch_refuses_a_flipped_pixel(p, index: int) -> None:
    """Flip the first pixel byte of record ``index`` in its block; a batch read by lookups (no
    whole-store index) must refuse it with a one-line error naming the record."""
    import lmdb
    import pytest

    from imgtui.backends import open_store
    from imgtui.errors import CorruptStoreError

    with open_store(p) as r:
        e, _view, first = r._locate(index)
        off = int(e["offset"])
    env = lmdb.open(str(p), max_dbs=4, subdir=True)
    with env.begin(write=True) as txn:
        db = env.open_db(b"blocks", txn=txn)
        key = first.to_bytes(8, "big")
        v = bytearray(txn.get(key, db=db))
        v[off] ^= 0xFF
        txn.put(key, bytes(v), db=db)
    env.close()
    with open_store(p) as r:
        with pytest.raises(CorruptStoreError, match=f"record {index}"):
            r.get_images([5, index])
        assert not r._indexed
