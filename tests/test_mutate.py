"""Changing stores: append, overwrite and delete through imgtui.append/overwrite/delete and
``imgtui append``; reports, statistics, rollback and a killed append."""

import importlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import imgtui
from imgtui.backends import mutate
from imgtui.cli import main
from imgtui.datasets import SyntheticDataset
from imgtui.errors import ImgtuiError, IncompleteStoreError, InvalidRecordError, StoreNotFoundError
from imgtui.records import Record

# (backend, writer options): HDF5 both ways, since a contiguous dataset cannot grow in place
KINDS = [("disk", {}), ("lmdb", {}), ("hdf5", {"layout": "chunked"}), ("hdf5", {"layout": "contiguous"})]
IDS = ["disk", "lmdb", "hdf5-chunked", "hdf5-contiguous"]
N = 40


def records(count, seed, **kw):
    return list(SyntheticDataset(count=count, seed=seed, **kw))


def make(tmp_path, backend, options, recs, name="s"):
    path = tmp_path / (f"{name}.h5" if backend == "hdf5" else f"{name}.{backend}")
    with imgtui.writer(path, backend, expected_count=len(recs), **options) as w:
        w.write_many(recs)
    return path


def check_store(path, expected):
    """Bit-exact records (pixels, labels, metadata), verify ok, and the manifest statistics."""
    with imgtui.open(path) as r:
        assert len(r) == len(expected)
        got = list(r)
        for i, (a, b) in enumerate(zip(got, expected)):
            assert a == b, f"record {i} differs"
        v = r.verify()
        assert v.ok, v.summary()
        info = r.info()
    assert info["count"] == len(expected)
    assert info["labels"] == dict(Counter(str(x.label) for x in expected))
    assert info["shapes"] == dict(Counter("x".join(map(str, x.image.shape)) for x in expected))
    assert info["raw_bytes"] == sum(x.image.nbytes for x in expected)
    assert set(info["label_kinds"]) == {"int" if isinstance(x.label, int) else "str" for x in expected}
    return info


def check_report(rep, op, backend, k, in_place):
    assert rep["operation"] == op and rep["backend"] == backend and rep["records"] == k
    assert rep["in_place"] is in_place, rep["how"]
    assert isinstance(rep["how"], str) and rep["how"] and "\n" not in rep["how"]
    assert rep["seconds"] >= 0 and rep["bytes_before"] > 0 and rep["bytes_after"] > 0


@pytest.mark.parametrize("backend,options", KINDS, ids=IDS)
def test_append_ten_percent(tmp_path, backend, options):
    base = records(N, 1)
    path = make(tmp_path, backend, options, base)
    extra = records(N // 10, 2)
    extra[0] = Record(extra[0].image, "a str label", {"note": "ünïcode", "k": [1, 2]})
    rep = imgtui.append(path, extra)
    rewrite = options.get("layout") == "contiguous"
    check_report(rep, "append", backend, len(extra), not rewrite)
    assert rep["count"] == N + len(extra)
    if rewrite:
        assert "contiguous" in rep["how"] and "rewr" in rep["how"]
    check_store(path, base + extra)


@pytest.mark.parametrize("backend,options", KINDS, ids=IDS)
def test_append_from_a_generator_and_empty(tmp_path, backend, options):
    base = records(N, 1)
    path = make(tmp_path, backend, options, base)
    extra = records(7, 3)
    rep = imgtui.append(path, (r for r in extra))  # unknown length
    assert rep["records"] == 7
    check_store(path, base + extra)
    rep = imgtui.append(path, [])
    assert rep["records"] == 0
    check_store(path, base + extra)


@pytest.mark.parametrize("backend,options", KINDS, ids=IDS)
def test_overwrite_same_shape_in_place(tmp_path, backend, options):
    base = records(N, 1)
    path = make(tmp_path, backend, options, base)
    new = {0: Record(np.full((32, 32, 3), 9, np.uint8), 7, {"changed": True}), N - 1: records(1, 8)[0]}
    rep = imgtui.overwrite(path, new)
    check_report(rep, "overwrite", backend, 2, True)
    want = list(base)
    for i, r in new.items():
        want[i] = r
    check_store(path, want)


@pytest.mark.parametrize("backend,options", KINDS, ids=IDS)
def test_overwrite_other_shape(tmp_path, backend, options):
    base = records(N, 1)
    path = make(tmp_path, backend, options, base)
    odd = Record(np.arange(20 * 11, dtype=np.uint16).reshape(20, 11), "odd", {"x": 1})
    rep = imgtui.overwrite(path, {-1: odd, 5: base[6]})
    check_report(rep, "overwrite", backend, 2, backend != "hdf5")  # HDF5: fixed -> variable layout, a rewrite
    if backend == "hdf5":
        assert "variable" in rep["how"]
    want = list(base)
    want[-1], want[5] = odd, base[6]
    info = check_store(path, want)
    assert info["dtypes"] == {"uint8": N - 1, "uint16": 1}


@pytest.mark.parametrize("backend,options", KINDS, ids=IDS)
def test_delete_one_percent_shifts_records(tmp_path, backend, options):
    base = records(N, 1)
    path = make(tmp_path, backend, options, base)
    rep = imgtui.delete(path, [3, N - 1, 3])  # a repeated index is deleted once
    check_report(rep, "delete", backend, 2, backend != "hdf5")
    if backend == "hdf5":
        assert "rewrote" in rep["how"]
    want = [r for i, r in enumerate(base) if i not in (3, N - 1)]
    check_store(path, want)
    # and the store keeps working: append after a delete (disk: file names must not collide)
    extra = records(5, 4)
    imgtui.append(path, extra)
    check_store(path, want + extra)
    imgtui.delete(path, range(len(want) + 5))
    check_store(path, [])
    imgtui.append(path, extra[:2])
    check_store(path, extra[:2])


@pytest.mark.parametrize("backend,options", KINDS, ids=IDS)
def test_mixed_labels_and_variable_shapes(tmp_path, backend, options):
    base = records(30, 1, variable=(8, 24))
    path = make(tmp_path, backend, options, base)
    extra = [Record(np.ones((5, 6, 4), np.uint8), "s", {}), Record(np.ones((3, 3), np.uint16), 12, {"a": None})]
    imgtui.append(path, extra)
    want = base + extra
    check_store(path, want)
    imgtui.overwrite(path, {30: Record(np.zeros((4, 4, 1), np.uint8), 3, {})})  # the only str label goes
    want[30] = Record(np.zeros((4, 4, 1), np.uint8), 3, {})
    info = check_store(path, want)
    assert info["label_kinds"] == ["int"]
    imgtui.delete(path, [0, 31])
    check_store(path, [r for i, r in enumerate(want) if i not in (0, 31)])


@pytest.mark.parametrize("backend,options", KINDS, ids=IDS)
@pytest.mark.parametrize("small_txns", [False, True], ids=["one-txn", "many-txns"])
def test_bad_record_rolls_the_append_back(tmp_path, backend, options, small_txns, monkeypatch):
    if small_txns:
        for mod in (mutate, *(importlib.import_module(f"imgtui.backends.{b}.mutator") for b in ("disk", "lmdb", "hdf5"))):
            monkeypatch.setattr(mod, "TXN_BYTES", 1, raising=False)  # LMDB: one transaction per block group
            monkeypatch.setattr(mod, "BATCH", 4, raising=False)
        if backend == "lmdb":
            options = {"block_bytes": 4096}  # a block per record: the append spans many transactions
    base = records(N, 1)
    path = make(tmp_path, backend, options, base)
    before = sorted(os.listdir(tmp_path))

    def gen():
        yield from records(20, 5)
        yield Record(np.zeros((4, 4), np.complex64), 1, {})

    calls = []
    lm = importlib.import_module("imgtui.backends.lmdb.mutator").LmdbMutator
    real = lm._write
    monkeypatch.setattr(lm, "_write", lambda self, fn: (calls.append(1), real(self, fn))[1])
    with pytest.raises(InvalidRecordError) as ei:
        imgtui.append(path, gen())
    if backend == "lmdb":  # one: nothing was written before the bad record but the cleanup; many: steps, then the cleanup
        assert len(calls) > 2 if small_txns else len(calls) == 1
    msg = str(ei.value)
    assert msg == (f"cannot append to {path}: record {N + 20} image: unsupported dtype complex64 "
                   "(imgtui stores uint8, uint16, int16, uint32, int32, float32, float64, bool, int8); nothing was appended")
    check_store(path, base)
    assert sorted(os.listdir(tmp_path)) == before  # no temporary file left next to the store


@pytest.mark.parametrize("backend,options", KINDS[:3], ids=IDS[:3])
def test_bad_input_errors_touch_nothing(tmp_path, backend, options):
    base = records(10, 1)
    path = make(tmp_path, backend, options, base)
    with pytest.raises(IndexError, match="record index 10 out of range for a store of 10 records"):
        imgtui.overwrite(path, {10: base[0]})
    with pytest.raises(IndexError, match="record index -11 out of range"):
        imgtui.delete(path, [0, -11])
    with pytest.raises(InvalidRecordError, match="record 2 label: a label must be an int or a str, got bool"):
        imgtui.overwrite(path, {2: Record(base[0].image, True, {})})
    with pytest.raises(ImgtuiError, match="record 1 is given twice"):
        imgtui.overwrite(path, {1: base[0], -9: base[0]})
    with pytest.raises(StoreNotFoundError, match="no such store"):
        imgtui.append(tmp_path / "nothing", base)
    check_store(path, base)


def test_hdf5_label_nul_is_refused(tmp_path):
    base = records(5, 1)
    path = make(tmp_path, "hdf5", {}, base)
    with pytest.raises(InvalidRecordError, match="HDF5 strings cannot contain NUL"):
        imgtui.overwrite(path, {0: Record(base[0].image, "a\x00b", {})})
    check_store(path, base)


def test_lmdb_open_reader_is_refused(tmp_path):
    base = records(5, 1)
    path = make(tmp_path, "lmdb", {}, base)
    r = imgtui.open(path)
    try:
        with pytest.raises(ImgtuiError, match="close its readers before changing it"):
            imgtui.append(path, base)
    finally:
        r.close()
    imgtui.append(path, base)
    check_store(path, base + base)


# -- a killed append ----------------------------------------------------------------------------
KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    from imgtui.backends import mutate
    from imgtui.datasets import SyntheticDataset
    mutate.TXN_BYTES = 1 << 16      # LMDB: many transactions, so a kill can land between them
    mutate.BATCH = 32
    def slow():
        for k, rec in enumerate(SyntheticDataset(count=4000, seed=9)):
            if k == 200:
                print("started", flush=True)
            if k >= 200:
                time.sleep(0.002)
            yield rec
    mutate.append(sys.argv[1], slow())
    print("finished", flush=True)
""")


@pytest.mark.parametrize("backend,options", KINDS, ids=IDS)
def test_killed_append_leaves_old_new_or_incomplete(tmp_path, backend, options):
    base = records(N, 1)
    path = make(tmp_path, backend, options, base)
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "started"
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    new = records(4000, 9)
    try:
        r = imgtui.open(path)
    except IncompleteStoreError as exc:
        assert "is incomplete" in str(exc)
        return
    with r:  # a complete store: the old one or the new one, with the right pixels
        assert len(r) in (N, N + 4000)
        v = r.verify()
        assert v.ok, v.summary()
        want = base + new[: len(r) - N]
        for i in range(0, len(r), 97):
            assert r[i] == want[i]


# -- the CLI ------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["disk", "lmdb", "hdf5"])
def test_cli_append_round_trip(tmp_path, backend, capsys):
    base = records(20, 1)
    path = make(tmp_path, backend, {}, base)
    assert main(["append", "synthetic:count=6,seed=4", str(path), "-q"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{path} ({backend}): ")
    assert "now 26 records" in out and "MB on disk" in out and "records/s" in out
    check_store(path, base + records(6, 4))
    # another store as the source
    other = make(tmp_path, backend, {}, records(3, 7), name="other")
    assert main(["append", str(other), str(path), "-q"]) == 0
    check_store(path, base + records(6, 4) + records(3, 7))


def test_cli_append_errors(tmp_path, capsys):
    base = records(10, 1)
    disk = make(tmp_path, "disk", {}, base)

    def err(*argv):
        assert main(["append", *map(str, argv), "-q"]) == 1
        cap = capsys.readouterr()
        assert cap.out == ""
        lines = cap.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("imgtui: error: ")
        return lines[0][len("imgtui: error: "):]

    assert err("synthetic:count=2", tmp_path / "missing") == f"{tmp_path / 'missing'}: no such store"
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "notes.txt").write_text("hi")
    assert err("synthetic:count=2", plain) == f"{plain} is not an imgtui store (no disk, LMDB or HDF5 store found there)"
    np.save(tmp_path / "f.npy", np.zeros((2, 4, 4), np.float16))
    assert "float16" in err(tmp_path / "f.npy", disk)
    assert err(tmp_path / "nope.npz", disk) == f"{tmp_path / 'nope.npz'}: no such file or folder"
    assert err(disk, disk).startswith(f"cannot append {disk} to ")  # refused before anything is read
    sharded = tmp_path / "sharded"
    assert main(["convert", "synthetic:count=6", str(sharded), "-b", "disk", "--shards", "2", "-q"]) == 0
    capsys.readouterr()
    assert err("synthetic:count=2", sharded) == (
        f"{sharded} is a sharded store: change its shards one by one, or convert it into a single store")
    check_store(disk, base)
    os.unlink(disk / "manifest.json")
    assert err("synthetic:count=2", disk).startswith(f"{disk} is incomplete")


def test_refused_writer_names_a_holder_that_has_not_written_its_line_yet(tmp_path):
    """Seen in CI: two writers started together; the refused one read the lock file between the
    holder's flock and its line, and said "another process". It waits briefly for the line."""
    import fcntl
    import threading

    from imgtui.backends.safety import StoreLockedError, WriterLock, lock_path

    store = tmp_path / "s.lmdb"
    store.mkdir()
    lp = lock_path(store)
    fd = os.open(lp, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the holder has the lock, its line not yet
        timer = threading.Timer(0.15, lambda: os.write(fd, b"process 4242 (append: imgtui append)\n"))
        timer.start()
        with pytest.raises(StoreLockedError) as err:
            WriterLock(store, "append").acquire()
        timer.join()
        assert "is being written by process 4242 (append" in str(err.value)
    finally:
        os.close(fd)


def test_a_writer_refused_just_as_the_holder_finishes_takes_the_lock(tmp_path, monkeypatch):
    """The holder unlinks its lock file when it finishes: a second writer whose try came just
    before that takes the lock at the path's new file instead of being refused with "another
    process" (seen: two appends started together, one refused naming a writer already gone)."""
    from imgtui.backends import safety

    p = tmp_path / "s.lmdb"
    p.mkdir()
    first = safety.WriterLock(p, "first").acquire()
    read_holder = safety._holder

    def holder_finishing(lp, patience=0.0):
        first.release()  # the holder ends between the second writer's failed try and this read
        return read_holder(lp, patience)

    monkeypatch.setattr(safety, "_holder", holder_finishing)
    second = safety.WriterLock(p, "second").acquire()
    try:
        assert safety.is_locked(p) and "second" in safety.lock_path(p).read_text()
    finally:
        second.release()
    monkeypatch.setattr(safety, "_holder", read_holder)
    with safety.WriterLock(p, "third"):  # a live holder still refuses, naming itself
        with pytest.raises(safety.StoreLockedError, match=f"is being written by process {os.getpid()} "):
            safety.WriterLock(p, "fourth").acquire()
