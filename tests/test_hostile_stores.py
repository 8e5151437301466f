"""Hostile or damaged stores get one-line errors and never reach outside the store (issue 10,
items 12 and 14): a crafted disk table, a damaged metadata cell, a forged record count, unreadable
files."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import lmdb
import numpy as np
import pytest

import imgtui
from imgtui.backends import open_store
from imgtui.errors import CorruptStoreError, ImgtuiError
from imgtui.records import Record
from test_hostile_inputs import _without_root_powers  # root ignores file permissions: drop that power


def _disk_store(tmp_path, n=4):
    p = tmp_path / "s"
    with imgtui.writer(p, "disk") as w:
        for i in range(n):
            w.write(Record(np.full((4, 4), i, np.uint8), i, {"k": i}))
    return p


def _edit_table(p, fn):
    m = json.loads((p / "manifest.json").read_text())
    t = p / (m.get("table") or "records.csv")
    with open(t, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    fn(rows)
    with open(t, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)


@pytest.mark.parametrize("name", ["../victim.png", "/etc/passwd", "images/000/../../../x.png", "records.csv"])
def test_a_table_naming_a_file_outside_the_store_is_refused(tmp_path, name):
    p = _disk_store(tmp_path)
    victim = tmp_path / "victim.png"
    victim.write_bytes(b"precious")
    _edit_table(p, lambda rows: rows[2].__setitem__(1, name))
    # refused before anything is read: on the record's own read, and by the table's full parse
    for read in (lambda r: r[1], lambda r: r.labels(), lambda r: r.get_many([0, 1])):
        with pytest.raises(CorruptStoreError, match="is not a PNG under images/ of the store") as ei:
            read(open_store(p))
        assert "\n" not in str(ei.value)
    with pytest.raises(ImgtuiError):
        imgtui.delete(p, [1])  # refused before anything is removed
    assert victim.read_bytes() == b"precious"


def test_a_damaged_metadata_cell_is_one_line(tmp_path):
    p = _disk_store(tmp_path)
    _edit_table(p, lambda rows: rows[3].__setitem__(7, '{"k": 2'))
    with open_store(p) as r:
        assert r[0].metadata == {"k": 0}
        with pytest.raises(CorruptStoreError, match=r"record 2: its metadata is not valid JSON$"):
            r[2]


def test_a_forged_record_count_is_refused_not_a_memory_error(tmp_path):
    p = tmp_path / "s.lmdb"
    with imgtui.writer(p, "lmdb") as w:
        w.write(Record(np.zeros((4, 4), np.uint8), 0, {}))
    env = lmdb.open(str(p), max_dbs=4)
    db = env.open_db(b"meta")
    with env.begin(write=True) as txn:
        m = json.loads(txn.get(b"manifest", db=db))
        m["count"] = 10**12
        txn.put(b"manifest", json.dumps(m).encode(), db=db)
    env.close()
    with pytest.raises(CorruptStoreError, match="the manifest says 1,000,000,000,000 records, more than data.mdb"):
        open_store(p)


@pytest.mark.parametrize("backend", ["hdf5", "lmdb", "disk"])
def test_an_unreadable_store_says_permission_denied(tmp_path, backend):
    prefix = _without_root_powers()
    if prefix is None:
        pytest.skip("cannot drop root's file-permission override here")
    p = tmp_path / ("s.h5" if backend == "hdf5" else f"s.{backend}")
    with imgtui.writer(p, backend) as w:
        w.write(Record(np.zeros((4, 4), np.uint8), 0, {}))
    os.chmod(p, 0o000)
    os.chmod(tmp_path, 0o755)
    try:
        res = subprocess.run([*prefix, sys.executable, "-m", "imgtui", "info", str(p)],
                             capture_output=True, text=True, timeout=60)
    finally:
        os.chmod(p, 0o755)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 1 and len(lines) == 1, res.stderr
    assert lines[0] == f"imgtui: error: {p}: permission denied (cannot read it)"


def test_swapped_labels_and_forged_metadata_fail_verify(tmp_path):
    """Labels and metadata are covered by the manifest's labels_digest (issue 10 item 7): swapping two
    labels keeps the label counts, so only the digest catches it; so does an edited metadata cell."""
    p = _disk_store(tmp_path)
    with open_store(p) as r:
        assert r.verify().ok

    def swap(rows):
        rows[1][2], rows[2][2] = rows[2][2], rows[1][2]

    _edit_table(p, swap)
    with open_store(p) as r:
        v = r.verify()
    assert not v.ok and "labels_digest" in v.errors[-1]
    _edit_table(p, swap)  # back
    _edit_table(p, lambda rows: rows[3].__setitem__(7, '{"k":99}'))
    with open_store(p) as r:
        v = r.verify()
    assert not v.ok and "labels_digest" in v.errors[-1]


def test_forged_lmdb_metadata_fails_verify(tmp_path):
    p = tmp_path / "s.lmdb"
    with imgtui.writer(p, "lmdb") as w:
        for i in range(5):
            w.write(Record(np.full((4, 4), i, np.uint8), i, {"dose": i}))
    env = lmdb.open(str(p), max_dbs=4)
    db = env.open_db(b"labels")
    with env.begin(write=True) as txn:
        k, v = next(iter(txn.cursor(db=db)))
        items = json.loads(v)
        items[2][1] = {"dose": 1000}
        txn.put(k, json.dumps(items).encode(), db=db)
    env.close()
    with open_store(p) as r:
        v = r.verify()
    assert not v.ok and "labels_digest" in v.errors[-1]
