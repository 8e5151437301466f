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
    _drop_entries(p)  # a store written before the entries copy existed
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


def _drop_entries(p) -> None:
    import lmdb

    env = lmdb.open(str(p), max_dbs=4, subdir=True)
    with env.begin(write=True) as txn:
        assert txn.delete(b"entries", db=env.open_db(b"meta", txn=txn))
    env.close()


def test_the_writers_entries_copy_builds_the_index_without_reading_a_block(tmp_path, monkeypatch):
    """The writer keeps every block's record table in ``meta`` (entries/<k>, 2 MiB values, and a
    header stamped with the manifest): the index comes from it and the blocks' B-tree pages, no
    block page is read (cold at 1,000,000 records: tens of seconds -> well under one). A change
    rewrites the manifest: its readers scan the blocks again; a copy that does not fit the
    blocks is not used."""
    import lmdb
    import numpy as np

    import imgtui
    from imgtui.backends import open_store
    from imgtui.backends.lmdb import store as lmdb_store
    from imgtui.records import Record

    monkeypatch.setattr(lmdb_store, "ENTRIES_CHUNK", 64)  # several entries/<k> values
    records = [Record(np.full((8, 8, 3), i % 251, np.uint8), i % 5, {}) for i in range(600)]
    p = tmp_path / "s.lmdb"
    with imgtui.writer(p, "lmdb", block_bytes=4096) as w:
        w.write_many(records[:300])
        w.write_array(np.stack([x.image for x in records[300:]]), [x.label for x in records[300:]])
    scans = []
    real_scan = lmdb_store.LmdbReader._scan_blocks
    monkeypatch.setattr(lmdb_store.LmdbReader, "_scan_blocks", lambda self: scans.append(1) or real_scan(self))
    monkeypatch.setattr(lmdb_store, "LOOKUP_MIN_RECORDS", 100)
    with open_store(p) as r:
        idx = [599, 0, 77, 300, 301, 450]
        assert np.array_equal(r.get_images(idx), np.stack([records[i].image for i in idx]))
        assert r._indexed and scans == []  # the first small batch: the index, from the copy
        assert list(r) == records and scans == []
        assert r.verify().ok and scans == [1]  # verify compares the copy with the blocks' own tables
    scans.clear()
    # every change writes the copy anew with its manifest (and then where the blocks are)
    imgtui.append(p, [Record(np.full((8, 8, 3), 7, np.uint8), 1, {})])
    imgtui.overwrite(p, {3: Record(np.full((8, 8, 3), 9, np.uint8), 2, {})})
    with open_store(p) as r:
        r._ensure_index()
        assert scans == [] and r[600].image[0, 0, 0] == 7 and r[3].image[0, 0, 0] == 9 and r[599] == records[599]
        want = [x.label for x in records]
        want[3] = 2
        assert r._labels_copy().tolist() == want + [1] and r.labels_array().tolist() == want + [1]
        assert r.verify().ok
    scans.clear()
    # a change killed after its commit, before it placed the blocks: readers scan (and read right)
    env = lmdb.open(str(p), max_dbs=4, subdir=True)
    with env.begin(write=True) as txn:
        assert txn.delete(b"entries-blocks", db=env.open_db(b"meta", txn=txn))
    env.close()
    with open_store(p) as r:
        assert r[600].image[0, 0, 0] == 7 and r[599] == records[599] and scans == [1]
    # the copy rewritten for the changed store is used again; one pointing a record outside its
    # block is not
    with open_store(p) as r:
        rows = real_scan(r)[0]
    scans.clear()

    def put_entries(rows) -> None:
        env = lmdb.open(str(p), max_dbs=4, subdir=True)
        with env.begin(write=True) as txn:
            meta = env.open_db(b"meta", txn=txn)
            raw = bytes(txn.get(b"manifest", db=meta))
            stamp = lmdb_store._manifest_stamp(raw)
            txn.put(b"entries", lmdb_store.ENTRIES_HEADER.pack(lmdb_store.ENTRIES_MAGIC, len(rows), 64, stamp), db=meta)
            for k in range(0, len(rows), 64):
                txn.put(b"entries/%012d" % (k // 64), rows[k : k + 64].tobytes(), db=meta)
        env.close()
        env = lmdb.open(str(p), max_dbs=4, subdir=True)
        with env.begin(write=True, buffers=True) as txn:  # where the blocks are now
            blocks = env.open_db(b"blocks", txn=txn)
            txn.put(b"entries-blocks", lmdb_store.block_places(txn, blocks, len(rows), stamp),
                    db=env.open_db(b"meta", txn=txn))
        env.close()

    put_entries(rows)
    with open_store(p) as r:
        r._ensure_index()
        assert scans == [] and r[600].image[0, 0, 0] == 7
    bad = rows.copy()
    bad["offset"][0] = 1 << 30  # record 0's pixels far past the end of its block
    put_entries(bad)
    with open_store(p) as r:
        r._ensure_index()
        assert scans == [1] and r[0] == records[0] and r.verify().ok
    # a copy that fits the blocks but differs from their tables is used, and verify says so
    odd = rows.copy()
    odd["crc"][5] ^= 1
    put_entries(odd)
    with open_store(p) as r:
        res = r.verify()
        assert not res.ok and any("entries copy in the meta database differs" in e for e in res.errors)
    # block places outside the map, or not where LMDB finds the blocks: not used (never read there)
    put_entries(rows)
    for shift in (1 << 40, 4096):
        env = lmdb.open(str(p), max_dbs=4, subdir=True)
        with env.begin(write=True) as txn:
            meta = env.open_db(b"meta", txn=txn)
            raw = bytes(txn.get(b"entries-blocks", db=meta))
            at = np.frombuffer(raw, lmdb_store.BLOCK_AT, offset=8).copy()
            at["offset"][-1] += shift
            txn.put(b"entries-blocks", raw[:8] + at.tobytes(), db=meta)
        env.close()
        with open_store(p) as r:
            assert r._block_places() is None and r[600].image[0, 0, 0] == 7


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


def test_the_labels_copy_is_read_for_int_labels_and_checked_by_verify(tmp_path, monkeypatch):
    """Labels (int or str, with or without metadata) are also kept in meta as the distinct labels
    plus one int32 code a record, which labels_array() reads instead of parsing every labels block;
    a copy that differs from the labels blocks is reported by verify."""
    import lmdb
    import numpy as np

    import imgtui
    from imgtui.backends import open_store
    from imgtui.backends.lmdb import store as lmdb_store
    from imgtui.records import Record

    p = tmp_path / "s.lmdb"
    recs = [Record(np.full((4, 4), i, np.uint8), i * 7 - 50, {"i": i} if i % 2 else {}) for i in range(90)]
    with imgtui.writer(p, "lmdb", block_bytes=4096) as w:
        w.write_many(recs[:40])
        w.write_array(np.stack([x.image for x in recs[40:]]), [x.label for x in recs[40:]], [x.metadata for x in recs[40:]])
    with open_store(p) as r:
        assert r._labels_copy().tolist() == [x.label for x in recs]
        assert r.labels_array().tolist() == [x.label for x in recs] and r.labels() == [x.label for x in recs]
        assert r.verify().ok
    env = lmdb.open(str(p), max_dbs=4, subdir=True)
    with env.begin(write=True) as txn:
        meta = env.open_db(b"meta", txn=txn)
        raw = bytearray(txn.get(b"entries-labels", db=meta))
        size = int.from_bytes(raw[8:12], "little")
        raw[12 + size : 16 + size] = (1).to_bytes(4, "little")  # record 0's code: another label
        txn.put(b"entries-labels", bytes(raw), db=meta)
    env.close()
    with open_store(p) as r:
        res = r.verify()
        assert not res.ok and any("labels copy in the meta database differs" in e for e in res.errors)
    # str and int labels together: distinct labels plus codes (1 and "1" are two labels)
    q = tmp_path / "t.lmdb"
    mixed = ["cat", 3, "1", 1, "dog", "cat", 3] * 5
    with imgtui.writer(q, "lmdb", block_bytes=4096) as w:
        w.write_many([Record(np.zeros((2, 2), np.uint8), lab) for lab in mixed])
    with open_store(q) as r:
        copy = r._labels_copy()
        assert copy.dtype == object and copy.tolist() == mixed and r.labels() == mixed
        assert [type(x) for x in r.labels()[:4]] == [str, int, str, int] and r.verify().ok
    # more distinct labels than LABELS_MAX_DISTINCT: no copy, labels read from the blocks
    monkeypatch.setattr(lmdb_store, "LABELS_MAX_DISTINCT", 3)
    with imgtui.writer(tmp_path / "v.lmdb", "lmdb") as w:
        w.write_many([Record(np.zeros((2, 2), np.uint8), lab) for lab in mixed])
    with open_store(tmp_path / "v.lmdb") as r:
        assert r._entries_fresh() and r._labels_copy() is None and r.labels() == mixed
