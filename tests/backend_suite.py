"""The conformance suite every backend passes (modelled on zarr-python's ``StoreTests``).

A backend's test file is one subclass::

    class TestLmdb(BackendSuite):
        backend = "lmdb"

It runs round trips over shapes, dtypes, labels and metadata (hypothesis), variable sizes,
append/overwrite/delete, checked reads and verify against bit flips, one writer at a time,
readers during a change, an injected full disk, and the fault-injection tests: for each of
convert, convert --overwrite, append, overwrite and delete, a child process is killed at
deterministic points (after a batch, just before the switch, just after it) and at random
moments; the store must then open with exactly the old or the new records and verify, and the
same command must run again. ``scripts/torture.py`` runs the random kills many times.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import imgtui
from imgtui.backends import get_backend, open_store
from imgtui.backends.safety import WriterLock, is_locked, stale_temporaries
from imgtui.datasets import SyntheticDataset
from imgtui.errors import ImgtuiError, InvalidRecordError, StoreChangedError, StoreExistsError
from imgtui.records import SUPPORTED_DTYPES, Record

#: every dtype a record may have
DTYPES = tuple(dt.name for dt in SUPPORTED_DTYPES)
#: float bit patterns that a conversion would lose: quiet NaN with a payload, negative NaN, a
#: signalling NaN, -0.0, +-inf, the smallest subnormal
FLOAT_SPECIALS = {
    "float32": [0x7FC00123, 0xFFC00000, 0x7F800001, 0x80000000, 0x7F800000, 0xFF800000, 0x00000001],
    "float64": [0x7FF8000000000123, 0xFFF8000000000000, 0x7FF0000000000001, 0x8000000000000000,
                0x7FF0000000000000, 0xFFF0000000000000, 0x0000000000000001],
}


def make_image(dtype: str, shape: tuple, seed: int) -> np.ndarray:
    """Random pixels of ``dtype`` over its whole range; floats get the special bit patterns first."""
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt == np.bool_:
        return rng.random(shape) < 0.5
    if dt.kind == "f":
        img = (rng.standard_normal(shape) * 1e3).astype(dt)
        bits = img.reshape(-1).view(f"u{dt.itemsize}")
        special = np.array(FLOAT_SPECIALS[dt.name], dtype=bits.dtype)[: bits.size]
        bits[: special.size] = special
        return img
    info = np.iinfo(dt)
    return rng.integers(info.min, info.max, shape, dtype=dt, endpoint=True)


def dtype_records(shapes=((6, 5), (6, 5, 1), (6, 5, 3))) -> list[Record]:
    """One record of every dtype x shape, with labels and metadata."""
    out = []
    for k, dtype in enumerate(DTYPES):
        for j, shape in enumerate(shapes):
            out.append(Record(make_image(dtype, shape, 10 * k + j), k * 10 + j, {"dtype": dtype, "shape": list(shape)}))
    return out

OPS = ("convert", "convert_overwrite", "append", "overwrite", "delete")
POINTS = ("batch:1", "commit", "committed")  # more points and many random kills: scripts/torture.py

# what a child runs: one operation on a store, records from seeded synthetic datasets (the parent
# computes the same old and new records); IMGTUI_FAULT in its environment stops it somewhere
CHILD = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    import imgtui
    from imgtui.datasets import SyntheticDataset
    from imgtui.records import Record
    op, backend, path, options = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    def recs(count, seed):
        out = list(SyntheticDataset(count=count, seed=seed, size=(8, 8), channels=3))
        if os.environ.get("IMGTUI_TEST_VOLUMES"):
            out = [Record(np.stack([r.image, r.image[::-1], r.image[:, ::-1]]), r.label, r.metadata) for r in out]
        if os.environ.get("IMGTUI_TEST_VARYING"):
            out = [Record(r.image[: 8 - k % 4], r.label, r.metadata) for k, r in enumerate(out)]
        return out
    if op in ("convert", "convert_overwrite"):
        with imgtui.writer(path, backend, overwrite=op == "convert_overwrite", batch_size=64, **options) as w:
            w.write_many(recs(600, 2))
    elif op == "append":
        imgtui.append(path, recs(600, 3))
    elif op == "overwrite":
        imgtui.overwrite(path, {i: r for i, r in zip(range(0, 100, 7), recs(100, 4))})
    elif op == "delete":
        imgtui.delete(path, range(0, 100, 3))
    print("done")
    """
)


def recs(count: int, seed: int) -> list[Record]:
    """Seeded 8x8x3 records; 3x8x8x3 volumes of them with IMGTUI_TEST_VOLUMES=1 in the environment,
    5-8 rows high with IMGTUI_TEST_VARYING=1 (the child processes see them too:
    ``scripts/torture.py --volumes/--varying`` kills changes of such records that way)."""
    out = list(SyntheticDataset(count=count, seed=seed, size=(8, 8), channels=3))
    if os.environ.get("IMGTUI_TEST_VOLUMES"):
        out = [Record(np.stack([r.image, r.image[::-1], r.image[:, ::-1]]), r.label, r.metadata) for r in out]
    if os.environ.get("IMGTUI_TEST_VARYING"):
        out = [Record(r.image[: 8 - k % 4], r.label, r.metadata) for k, r in enumerate(out)]
    return out


def expected(op: str) -> tuple[list[Record] | None, list[Record]]:
    """(old records or None when the path is new, new records) of ``op``."""
    base = recs(100, 1)
    if op == "convert":
        return None, recs(600, 2)
    if op == "convert_overwrite":
        return base, recs(600, 2)
    if op == "append":
        return base, base + recs(600, 3)
    if op == "overwrite":
        new = list(base)
        for i, r in zip(range(0, 100, 7), recs(100, 4)):
            new[i] = r
        return base, new
    if op == "delete":
        return base, [r for i, r in enumerate(base) if i % 3]
    raise ValueError(op)


def read_all(path: Path) -> list[Record] | None:
    if not path.exists():
        return None
    with open_store(path) as r:
        got = list(r)
        v = r.verify()
        assert v.ok, v.summary()
    return got


def run_child(op: str, backend: str, path: Path, options: dict, fault: str | None = None,
              kill_after: float | None = None) -> subprocess.CompletedProcess | int:
    env = dict(os.environ)
    env.pop("IMGTUI_FAULT", None)
    if fault:
        env["IMGTUI_FAULT"] = fault
    argv = [sys.executable, "-c", CHILD, op, backend, str(path), json.dumps(options)]
    if kill_after is None:
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(kill_after)
    proc.send_signal(signal.SIGKILL)
    return proc.wait()


class BackendSuite:
    backend: str = ""
    #: writer options used by every test
    options: dict = {}
    #: the format version a store says when its records vary in shape or dtype and the backend's
    #: layout for such records needs a newer imgtui than the records alone (HDF5: 5, its packed
    #: ``pixels``); None: the records decide
    varying_format_version: int | None = None

    def want_version(self, version: int, varying: bool) -> int:
        return max(version, self.varying_format_version or 0) if varying else version

    # -- helpers -----------------------------------------------------------------------------
    def path(self, tmp_path: Path, name: str = "s") -> Path:
        return tmp_path / (name + get_backend(self.backend).suffix)

    def make(self, tmp_path: Path, records: list[Record], name: str = "s", **kw) -> Path:
        p = self.path(tmp_path, name)
        with imgtui.writer(p, self.backend, **{**self.options, **kw}) as w:
            w.write_many(records)
        return p

    def assert_store(self, path: Path, records: list[Record]) -> None:
        with open_store(path) as r:
            assert len(r) == len(records)
            for i, (a, b) in enumerate(zip(r, records)):
                assert a == b, f"record {i} differs"
            assert r.labels() == [x.label for x in records]
            arr = r.labels_array()
            assert isinstance(arr, np.ndarray) and len(arr) == len(records)
            assert arr.tolist() == [x.label for x in records]
            assert [type(v) for v in arr.tolist()] == [type(x.label) for x in records]
            if all(type(x.label) is int for x in records):
                assert arr.dtype == np.int64
            else:
                assert arr.dtype == object
            v = r.verify()
            assert v.ok, v.summary()

    def assert_no_leftovers(self, path: Path) -> None:
        assert stale_temporaries(path) == []
        assert is_locked(path) is None  # a killed writer's lock died with it
        with open_store(path) as r:
            assert r.leftovers() == []
        assert imgtui.repair(path)["actions"] == []
        # a killed writer may leave its (unlocked, empty) lock file; the next writer or repair removes it
        assert not [n for n in os.listdir(path.parent) if n.endswith(".imgtui-lock")]

    # -- round trips ---------------------------------------------------------------------------
    @settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.differing_executors])
    @given(data=st.data())
    def test_round_trip_shapes_dtypes_labels_metadata(self, tmp_path_factory, data):
        tmp = tmp_path_factory.mktemp("rt")
        n = data.draw(st.integers(1, 6))
        dtype = data.draw(st.sampled_from(DTYPES))
        channels = data.draw(st.sampled_from([None, 1, 3, 4]))
        records = []
        for i in range(n):
            h, w = data.draw(st.integers(1, 17)), data.draw(st.integers(1, 17))
            shape = (h, w) if channels is None else (h, w, channels)
            img = make_image(dtype, shape, data.draw(st.integers(0, 2**32 - 1)))
            label = data.draw(st.one_of(st.integers(-(2**40), 2**40), st.text(max_size=8).filter(lambda s: "\x00" not in s)))
            meta = data.draw(st.dictionaries(st.text(max_size=5), st.one_of(st.integers(-99, 99), st.text(max_size=5)), max_size=3))
            records.append(Record(img, label, meta))
        p = self.make(tmp, records)
        self.assert_store(p, records)

    # -- every dtype ------------------------------------------------------------------------------
    @pytest.mark.parametrize("dtype", DTYPES)
    def test_every_dtype_round_trips_bit_exact(self, tmp_path, dtype):
        """dtype x (HxW, HxWx1, HxWx3): a store of one dtype and shape (the fixed layouts) read
        back by every read path, bit-exact; the dtype is in the manifest and info()."""
        for shape in ((7, 5), (7, 5, 1), (7, 5, 3)):
            records = [Record(make_image(dtype, shape, s), s, {}) for s in range(5)]
            p = self.make(tmp_path, records, name=f"s{len(shape)}{shape[-1]}")
            self.assert_store(p, records)
            with open_store(p) as r:
                assert r.info()["dtypes"] == {dtype: 5}
                order = [3, 0, 4, 4, 1]
                got = r.get_images(order)
                want = np.stack([records[i].image for i in order])
                assert isinstance(got, np.ndarray) and got.dtype == want.dtype and got.shape == want.shape
                assert got.tobytes() == want.tobytes()
                assert [x == records[i] for i, x in zip(order, r.get_many(order))] == [True] * 5
                assert r[-1] == records[-1]

    def test_format_version_says_which_records_need_a_newer_imgtui(self, tmp_path):
        """Stores of uint8/uint16 records stay format version 2 (older imgtui reads them); a store
        holding other dtypes, written or appended, says 3 (older imgtui then says 'upgrade')."""
        from imgtui.backends.base import DTYPES_FORMAT_VERSION, PLAIN_FORMAT_VERSION

        p = self.make(tmp_path, recs(3, 1))
        with open_store(p) as r:
            assert r.info()["format_version"] == PLAIN_FORMAT_VERSION == 2
        imgtui.append(p, [Record(make_image("float32", (8, 8, 3), 1), 1, {})])
        with open_store(p) as r:
            assert r.info()["format_version"] == self.want_version(DTYPES_FORMAT_VERSION, varying=True) >= 3
        q = self.make(tmp_path, dtype_records()[6:9], name="q")
        varying = len({(x.image.shape, x.image.dtype) for x in dtype_records()[6:9]}) > 1
        with open_store(q) as r:
            assert r.info()["format_version"] == self.want_version(3, varying)

    # -- 3-D records ------------------------------------------------------------------------------
    VOLUME_SHAPES = ((4, 6, 5), (3, 6, 5, 3), (2, 6, 5, 1), (1, 6, 7), (5, 2, 2, 4))

    @pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "float32", "bool"])
    def test_volumes_round_trip_bit_exact(self, tmp_path, dtype):
        """DxHxW and DxHxWxC records, one shape per store (the fixed layouts) and all mixed with
        images in one store, read back by every read path; the store says format version 4 and
        its shapes."""
        from imgtui.backends.base import VOLUMES_FORMAT_VERSION

        for k, shape in enumerate(self.VOLUME_SHAPES):
            records = [Record(make_image(dtype, shape, 7 * k + s), s, {"z": s}) for s in range(4)]
            p = self.make(tmp_path, records, name=f"v{k}")
            self.assert_store(p, records)
            with open_store(p) as r:
                info = r.info()
                assert info["format_version"] == VOLUMES_FORMAT_VERSION == 4
                assert info["shapes"] == {"x".join(map(str, shape)): 4}
                got = r.get_images([2, 0, 3])
                want = np.stack([records[i].image for i in (2, 0, 3)])
                assert isinstance(got, np.ndarray) and got.shape == want.shape and got.dtype == want.dtype
                assert got.tobytes() == want.tobytes()
        mixed = [Record(make_image(dtype, shape, 50 + j), j, {}) for j, shape in
                 enumerate(((6, 5), *self.VOLUME_SHAPES, (6, 5, 3), (6, 5, 2)))]
        p = self.make(tmp_path, mixed, name="mixed")
        self.assert_store(p, mixed)
        with open_store(p) as r:
            assert [im.shape for im in r.get_images([1, 0, 2])] == [mixed[i].image.shape for i in (1, 0, 2)]

    def test_volumes_append_overwrite_delete(self, tmp_path):
        """Changes bring volumes into an image store (which then says version 4) and take them out."""
        base = recs(5, 1)
        p = self.make(tmp_path, base)
        vols = [Record(make_image("int16", (3, 8, 8), 60 + s), 100 + s, {"v": s}) for s in range(3)]
        imgtui.append(p, vols)
        want = base + vols
        self.assert_store(p, want)
        with open_store(p) as r:
            assert r.info()["format_version"] == self.want_version(4, varying=True)
        repl = {0: Record(make_image("float32", (2, 8, 8, 3), 70), 7, {}), 6: recs(1, 9)[0]}
        imgtui.overwrite(p, repl)
        for i, rec in repl.items():
            want[i] = rec
        self.assert_store(p, want)
        imgtui.delete(p, [1, 5])
        want = [x for i, x in enumerate(want) if i not in (1, 5)]
        self.assert_store(p, want)
        self.assert_no_leftovers(p)

    def test_write_array_of_volumes(self, tmp_path):
        """``write_array`` of an N x D x H x W array writes N volumes, as ``write`` does."""
        arr = make_image("uint16", (3, 4, 6, 5), 5)
        p = self.path(tmp_path)
        with imgtui.writer(p, self.backend, **self.options) as w:
            w.write_array(arr, [0, 1, 2])
        self.assert_store(p, [Record(arr[i], i, {}) for i in range(3)])

    def test_mixed_dtypes_in_one_store(self, tmp_path):
        """Records of different dtypes (and shapes) in one store: each keeps its own dtype."""
        records = dtype_records()
        p = self.make(tmp_path, records)
        self.assert_store(p, records)
        with open_store(p) as r:
            assert r.info()["dtypes"] == {dt: 3 for dt in DTYPES}
            got = r.get_images([5, 0, 14])
            assert [im.dtype.name for im in got] == [records[i].image.dtype.name for i in (5, 0, 14)]

    def test_dtype_append_overwrite_delete(self, tmp_path):
        """Changes bring records of other dtypes into a float32 store."""
        base = [Record(make_image("float32", (6, 5), s), s, {}) for s in range(6)]
        p = self.make(tmp_path, base)
        more = dtype_records()
        imgtui.append(p, more)
        want = base + more
        self.assert_store(p, want)
        repl = {1: Record(make_image("float64", (6, 5, 3), 99), 7, {"x": 1}),
                4: Record(make_image("bool", (6, 5), 98), 8, {}),
                8: Record(make_image("int16", (6, 5), 97), 9, {})}
        imgtui.overwrite(p, repl)
        for i, rec in repl.items():
            want[i] = rec
        self.assert_store(p, want)
        imgtui.delete(p, [0, 2, 10])
        want = [x for i, x in enumerate(want) if i not in (0, 2, 10)]
        self.assert_store(p, want)
        with open_store(p) as r:
            assert sum(r.info()["dtypes"].values()) == len(want)
        self.assert_no_leftovers(p)

    @pytest.mark.parametrize("dtype", ["complex64", "int64", "uint64", "float16", "object", "U3"])
    def test_unsupported_dtype_is_one_line_error(self, tmp_path, dtype):
        p = self.path(tmp_path)
        bad = np.zeros((4, 4), dtype)
        with pytest.raises(InvalidRecordError) as exc:
            with imgtui.writer(p, self.backend, **self.options) as w:
                w.write(Record(make_image("float32", (4, 4), 1), 0, {}))
                w.write(Record(bad, 1, {}))
        msg = str(exc.value)
        assert "\n" not in msg and "record 1 image: unsupported dtype" in msg and "float32" in msg
        assert not p.exists()
        with pytest.raises(InvalidRecordError, match="unsupported dtype"):
            with imgtui.writer(p, self.backend, **self.options) as w:
                w.write_array(np.zeros((2, 4, 4), dtype), [0, 1])
        assert not p.exists()

    def test_float_store_bit_flips_are_caught(self, tmp_path):
        """A flipped bit anywhere in a float store (NaNs, -0.0 and all) is never returned as data."""
        old = [Record(make_image(dt, (16, 16), i), i, {"k": i}) for i, dt in enumerate(["float32"] * 6 + ["float64"] * 2)]
        self._flip_bits(tmp_path, old, trials=40, seed=11, labels_by_verify=True)

    def test_flipped_bit_in_float_pixels_is_caught(self, tmp_path):
        """One bit flipped in the stored bytes of a float record (in a NaN payload: still a NaN,
        which a value comparison would not notice; in -0.0: still == 0.0) is refused on read and
        reported by verify. The record's bytes are found verbatim in the store's files (raw
        layouts; the disk backend at png_level=0 writes uncompressed TIFF)."""
        img = make_image("float32", (16, 16), 5)
        bits = img.reshape(-1).view(np.uint32)
        assert bits[0] == 0x7FC00123 and bits[3] == 0x80000000  # a NaN with a payload, -0.0
        records = [Record(make_image("float32", (16, 16), s), s, {}) for s in range(3)]
        records[1] = Record(img, 1, {})
        extra = {"png_level": 0} if self.backend == "disk" else {}
        needle = img.tobytes()
        for word, flip in ((0, 1 << 4), (3, 1)):  # NaN payload bit; -0.0 -> smallest negative subnormal
            p = self.make(tmp_path, records, name=f"f{word}", **extra)
            files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
            found = False
            for f in files:  # every copy (LMDB may keep a stale page holding the same bytes)
                data = bytearray(f.read_bytes())
                pos = data.find(needle)
                while pos >= 0:
                    found = True
                    data[pos + 4 * word] ^= flip
                    pos = data.find(needle, pos + 1)
                f.write_bytes(bytes(data))
            if not found:
                pytest.skip(f"{self.backend} {self.options}: pixels are not stored verbatim (compressed)")
            with open_store(p) as r:
                assert r[0] == records[0]
                with pytest.raises(ImgtuiError, match="record 1"):
                    r[1]
                v = r.verify()
                assert not v.ok and "record 1" in v.errors[0]

    def test_variable_sizes_and_mixed_labels(self, tmp_path):
        rng = np.random.default_rng(7)
        records = [Record(rng.integers(0, 65535, (5 + i, 9 - i % 4, 3), dtype=np.uint16), i if i % 2 else f"c{i}",
                          {"i": i}) for i in range(9)]
        self.assert_store(self.make(tmp_path, records), records)

    # -- labels as one numpy array -------------------------------------------------------------
    def test_labels_array_of_int_labels_is_int64_8_bytes_a_record(self, tmp_path):
        rng = np.random.default_rng(3)
        labels = [int(v) for v in rng.integers(-(2**40), 2**40, 300)]
        records = [Record(np.full((2, 3), i % 251, np.uint8), lab) for i, lab in enumerate(labels)]
        p = self.make(tmp_path, records)
        with open_store(p) as r:
            arr = r.labels_array()
            assert arr.dtype == np.int64 and arr.shape == (300,) and arr.nbytes == 8 * 300
            assert arr.tolist() == labels
            assert r.labels() == labels and all(type(v) is int for v in r.labels())
            arr2 = r.labels_array().copy()  # the reader's own column is not changed through it
            arr2[:] = 0
            assert r.labels_array().tolist() == labels and r[5].label == labels[5]
            assert r.verify().ok

    @pytest.mark.parametrize("kind", ("str", "mixed"))
    def test_labels_array_of_str_and_mixed_labels_is_an_object_array(self, tmp_path, kind):
        labels = [f"cls-{i % 7}" if (kind == "str" or i % 3) else i for i in range(50)]
        records = [Record(np.full((2, 2), i, np.uint8), lab, {"i": i} if i % 5 == 0 else {}) for i, lab in enumerate(labels)]
        p = self.make(tmp_path, records)
        with open_store(p) as r:
            arr = r.labels_array()
            assert arr.dtype == object and arr.tolist() == labels
            assert [type(v) for v in arr.tolist()] == [type(v) for v in labels]
            assert r.labels() == labels

    def test_dataset_labels_come_from_the_label_column_as_python_values(self, tmp_path):
        records = [Record(np.full((2, 2), i, np.uint8), i * 3 if i % 2 else f"s{i}") for i in range(10)]
        ints = [Record(np.full((2, 2), i, np.uint8), i * 3) for i in range(10)]
        for name, recs in (("mixed", records), ("ints", ints)):
            ds = imgtui.dataset(self.make(tmp_path, recs, name=name))
            got = [ds[i][1] for i in range(10)] + [ds[-1][1]]
            assert got == [x.label for x in recs] + [recs[-1].label]
            assert all(type(a) is type(b.label) for a, b in zip(got, recs))
            batch = ds.__getitems__([3, -2, 0])
            assert [lab for _im, lab in batch] == [recs[3].label, recs[-2].label, recs[0].label]
            assert all(type(lab) in (int, str) for _im, lab in batch)
            ds.close()

    def test_empty_store(self, tmp_path):
        p = self.make(tmp_path, [])
        self.assert_store(p, [])

    # -- changes -----------------------------------------------------------------------------
    @pytest.mark.parametrize("op", ("append", "overwrite", "delete"))
    def test_append_overwrite_delete(self, tmp_path, op):
        old, new = expected(op)
        p = self.make(tmp_path, old)
        if op == "append":
            rep = imgtui.append(p, recs(600, 3))
        elif op == "overwrite":
            rep = imgtui.overwrite(p, {i: r for i, r in zip(range(0, 100, 7), recs(100, 4))})
        else:
            rep = imgtui.delete(p, range(0, 100, 3))
        assert rep["operation"] == op and rep["count"] == len(new)
        self.assert_store(p, new)
        self.assert_no_leftovers(p)

    def test_changes_in_sequence(self, tmp_path):
        base = recs(50, 1)
        p = self.make(tmp_path, base)
        imgtui.append(p, recs(30, 2))
        imgtui.delete(p, [0, 49, 79])
        imgtui.overwrite(p, {3: recs(1, 9)[0]})
        want = (base + recs(30, 2))
        want = [r for i, r in enumerate(want) if i not in (0, 49, 79)]
        want[3] = recs(1, 9)[0]
        self.assert_store(p, want)
        self.assert_no_leftovers(p)

    def test_bad_record_rolls_back(self, tmp_path):
        old = recs(20, 1)
        p = self.make(tmp_path, old)

        def gen():
            yield from recs(300, 5)
            yield Record(np.zeros((4, 4), np.complex64), 1, {})

        with pytest.raises(InvalidRecordError, match="nothing was appended"):
            imgtui.append(p, gen())
        self.assert_store(p, old)
        self.assert_no_leftovers(p)

    def test_exists_without_overwrite(self, tmp_path):
        old = recs(3, 1)
        p = self.make(tmp_path, old)
        with pytest.raises(StoreExistsError):
            imgtui.writer(p, self.backend)
        self.assert_store(p, old)

    # -- one writer at a time --------------------------------------------------------------------
    def test_second_writer_fails_at_once_naming_the_first(self, tmp_path):
        old = recs(10, 1)
        p = self.make(tmp_path, old)
        with WriterLock(p, "test"):
            res = run_child("append", self.backend, p, self.options)
            assert res.returncode != 0
            last = res.stderr.strip().splitlines()[-1]
            assert f"is being written by process {os.getpid()}" in last
            res = run_child("convert_overwrite", self.backend, p, self.options)
            assert res.returncode != 0 and "is being written by process" in res.stderr
        self.assert_store(p, old)

    def test_two_concurrent_appends_never_lose_records(self, tmp_path):
        old = recs(100, 1)
        p = self.make(tmp_path, old)
        procs = [subprocess.Popen([sys.executable, "-c", CHILD, "append", self.backend, str(p), json.dumps(self.options)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        outs = [pr.communicate(timeout=120) for pr in procs]
        codes = [pr.returncode for pr in procs]
        got = read_all(p)
        ok = codes.count(0)
        assert ok >= 1
        # each successful append added its 600 records; a refused one added none, with one clear line
        assert got == old + recs(600, 3) * ok
        for code, (_out, err) in zip(codes, outs):
            if code:
                assert "is being written by process" in err.strip().splitlines()[-1]

    # -- readers during a change -----------------------------------------------------------------
    def test_reader_open_during_a_change_never_sees_wrong_records(self, tmp_path):
        old, new = expected("overwrite")
        p = self.make(tmp_path, old)
        r = open_store(p)
        try:
            assert r[5] == old[5]
            res = run_child("overwrite", self.backend, p, self.options)
            assert res.returncode == 0, res.stderr
            for i in range(len(old)):
                try:
                    rec = r[i]
                except StoreChangedError:
                    continue  # told to reopen: fine
                assert rec == old[i] or rec == new[i], f"record {i}: neither old nor new"
        finally:
            r.close()
        self.assert_store(p, new)

    # -- fault injection -------------------------------------------------------------------------
    def _prepare(self, tmp_path: Path, op: str) -> Path:
        old, _ = expected(op)
        p = self.path(tmp_path)
        if old is not None:
            self.make(tmp_path, old)
        return p

    def _check_after_kill(self, p: Path, op: str) -> str:
        """The store is exactly the old or the new one and verifies; the command runs again."""
        old, new = expected(op)
        got = read_all(p)
        if got == new:
            outcome = "new"
        elif got == old:
            outcome = "old"
        else:
            pytest.fail(f"{op}: after the kill the store holds neither the old nor the new records")
        if got is not None:
            with open_store(p) as r:
                notes = r.leftovers()
            actions = imgtui.repair(p)["actions"]
            assert bool(notes) <= bool(actions)  # what info/verify announce, repair does
            assert read_all(p) == got  # repair never changes the records
        if outcome == "old":
            res = run_child(op, self.backend, p, self.options)
            assert res.returncode == 0, res.stderr
            assert read_all(p) == new
        self.assert_no_leftovers(p)
        return outcome

    @pytest.mark.parametrize("op", OPS)
    @pytest.mark.parametrize("point", POINTS)
    def test_kill_at_each_point_leaves_old_or_new(self, tmp_path, op, point):
        p = self._prepare(tmp_path, op)
        res = run_child(op, self.backend, p, self.options, fault=f"kill:{point}")
        outcome = self._check_after_kill(p, op)
        if res.returncode == 0:
            assert outcome == "new"  # the point was never reached (e.g. one batch only)
        else:
            assert res.returncode == -signal.SIGKILL
            # before the switch: old; after it: new
            assert outcome == ("new" if point == "committed" else "old")

    @pytest.mark.parametrize("op", ("append", "overwrite"))
    def test_kill_at_commit_of_a_change_of_volumes_leaves_old_or_new(self, tmp_path, op, monkeypatch):
        """The kill-safety of changes holds for 3-D records too (HDF5 widens its shapes on its copy)."""
        monkeypatch.setenv("IMGTUI_TEST_VOLUMES", "1")
        assert recs(1, 1)[0].image.shape == (3, 8, 8, 3)
        for point in ("batch:1", "commit"):
            (tmp_path / point).mkdir()
            p = self._prepare(tmp_path / point, op)
            res = run_child(op, self.backend, p, self.options, fault=f"kill:{point}")
            outcome = self._check_after_kill(p, op)
            assert outcome == ("new" if res.returncode == 0 else "old")
            assert read_all(p)[0].image.ndim == 4

    @pytest.mark.parametrize("op", ("append", "overwrite", "delete"))
    def test_kill_during_a_change_of_varying_shapes_leaves_old_or_new(self, tmp_path, op, monkeypatch):
        """The kill-safety of changes holds for a store of records of varying shapes (HDF5's
        variable-shape layout: bytes appended to ``pixels``, offsets moved, or a rewrite)."""
        monkeypatch.setenv("IMGTUI_TEST_VARYING", "1")
        assert [r.image.shape[0] for r in recs(5, 1)] == [8, 7, 6, 5, 8]
        for point in ("batch:1", "commit", "committed"):
            (tmp_path / point).mkdir()
            p = self._prepare(tmp_path / point, op)
            res = run_child(op, self.backend, p, self.options, fault=f"kill:{point}")
            outcome = self._check_after_kill(p, op)
            if res.returncode == 0:
                assert outcome == "new"
            else:
                assert outcome == ("new" if point == "committed" else "old")

    @pytest.mark.parametrize("op", OPS)
    def test_random_kills(self, tmp_path, op):
        rnd = random.Random(hash((self.backend, op)) & 0xFFFF)
        (tmp_path / "timing").mkdir()
        p = self._prepare(tmp_path / "timing", op)
        t0 = time.perf_counter()
        res = run_child(op, self.backend, p, self.options)
        assert res.returncode == 0, res.stderr
        span = time.perf_counter() - t0
        for k in range(2):  # a few in CI; scripts/torture.py --torture N for many
            d = tmp_path / f"k{k}"
            d.mkdir()
            p = self._prepare(d, op)
            run_child(op, self.backend, p, self.options, kill_after=rnd.uniform(0.05, span))
            self._check_after_kill(p, op)

    @pytest.mark.parametrize("op", ("convert", "append", "overwrite", "delete"))
    @pytest.mark.parametrize("point", ("batch", "commit"))
    def test_injected_disk_full_keeps_the_old_store(self, tmp_path, op, point):
        p = self._prepare(tmp_path, op)
        res = run_child(op, self.backend, p, self.options, fault=f"enospc:{point}")
        old, new = expected(op)
        if res.returncode == 0:  # this operation does not pass that point
            assert read_all(p) == new
            return
        assert res.returncode == 1
        lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
        assert "No space left" in lines[-1] or "disk full" in lines[-1], res.stderr[-500:]
        assert read_all(p) == old
        if old is not None:
            self.assert_no_leftovers(p)
        else:
            assert stale_temporaries(p) == []
    # -- damage is never returned as data ----------------------------------------------------------
    def test_bit_flips_are_caught(self, tmp_path):
        old = [Record(np.full((16, 16, 3), i, np.uint8), i, {"k": i}) for i in range(20)]
        self._flip_bits(tmp_path, old, trials=12)

    def _flip_bits(self, tmp_path, old: list[Record], trials: int, seed: int = 5, labels_by_verify: bool = False) -> None:
        """Flip one random bit of one random file ``trials`` times: reading must raise or return the
        records as written. With ``labels_by_verify``, labels and metadata read wrong count only if
        verify() passes too (checked reads cover the pixels; labels and metadata are covered by the
        manifest's labels_digest, which verify checks)."""
        p = self.make(tmp_path, old)
        files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file() and q.name != "lock.mdb")
        rng = random.Random(seed)
        wrong = 0
        for trial in range(trials):
            f = rng.choice(files)
            data = bytearray(f.read_bytes())
            if not data:
                continue
            pos = rng.randrange(len(data))
            data[pos] ^= 1 << rng.randrange(8)
            saved = f.read_bytes()
            f.write_bytes(bytes(data))
            try:
                with open_store(p) as r:
                    got = []
                    for i in range(len(r)):
                        got.append(r[i])
                    if len(got) == len(old) and got != old:
                        pixels_same = all(a.image.dtype == b.image.dtype and a.image.shape == b.image.shape
                                          and a.image.tobytes() == b.image.tobytes() for a, b in zip(got, old))
                        if not labels_by_verify or not pixels_same or r.verify().ok:
                            wrong += 1  # damaged data returned without an error
            except (ImgtuiError, IndexError):
                pass  # refused: fine
            finally:
                f.write_bytes(saved)
        assert wrong == 0

    def test_reader_open_during_repeated_changes_by_another_process(self, tmp_path):
        """A reader left open while another process overwrites every record again and again: each
        read is the old record or 'the store changed since it was opened; reopen it', never another
        record's pixels (the hostile tester saw 44 of 25,000 wrong on LMDB, and a disk reader could
        meet a later change's file under a name it knew)."""
        old = recs(300, 1)
        p = self.make(tmp_path, old)
        code = ("import imgtui\nfrom imgtui.datasets import SyntheticDataset\n"
                "for s in range(2, 5):\n"
                "    new = list(SyntheticDataset(count=300, seed=s, size=(8, 8), channels=3))\n"
                f"    imgtui.overwrite({str(p)!r}, dict(enumerate(new)))\n")
        r = open_store(p)
        try:
            child = subprocess.Popen([sys.executable, "-c", code])
            reads = 0
            while child.poll() is None or reads == 0:
                for i in range(0, 300, 3):
                    try:
                        rec = r[i]
                    except StoreChangedError:
                        continue
                    reads += 1
                    assert rec == old[i], f"record {i}: not the record the reader opened"
            assert child.wait() == 0
        finally:
            r.close()

    # -- the write path (issue 13) -------------------------------------------------------------
    def test_batches_are_bounded_by_bytes(self, tmp_path):
        """The writer hands its backend at most ``max_batch_bytes`` of pixels (plus the image that
        passed the bound) per batch, whatever the record count: memory is bounded by bytes for any
        image size (by record count alone, 512-1,024 records of 16-bit 512x512 images were
        +0.5-1.1 GB)."""
        p = self.path(tmp_path)
        recs = [Record(make_image("uint16", (40 + i % 7, 50), i), i % 3, {"i": i} if i % 5 == 0 else {})
                for i in range(60)]
        seen: list[int] = []
        with imgtui.writer(p, self.backend, **self.options) as w:
            w.max_batch_bytes = 20_000
            write_batch = w._write_batch

            def spy(records, sums, start):
                seen.append(sum(r.image.nbytes for r in records))
                write_batch(records, sums, start)

            w._write_batch = spy
            w.write_many(recs)
        assert len(seen) > 5 and max(seen) < 20_000 + max(r.image.nbytes for r in recs)
        self.assert_store(p, recs)

    @pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32", "bool"])
    def test_write_array_writes_what_write_writes(self, tmp_path, dtype):
        """``write_array`` (a backend's vectorised path, blocks of any size, mixed with ``write``)
        makes the store that writing the same records one by one makes: same records, same
        checksums, same labels digest."""
        n = 700
        imgs = np.stack([make_image(dtype, (5, 4, 3), i) for i in range(n)])
        labels = [(i * 7) % 11 for i in range(n)]
        # metadata on some records of the blocks from 269 on (the blocks before have none)
        metas = [{"source_index": i, "é": [i]} if i >= 269 and i % 3 else {} for i in range(n)]
        want = [Record(imgs[i], labels[i], metas[i]) for i in range(n)]
        a = self.path(tmp_path, "a")
        with imgtui.writer(a, self.backend, **self.options) as w:
            w.write_many(want[:5])
            pos = 5
            for k in (64, 1, 200, 3, 300):
                w.write_array(imgs[pos : pos + k], labels[pos : pos + k], metas[pos : pos + k])
                pos += k
            w.write_many(want[pos : pos + 7])
            pos += 7
            w.write_array(imgs[pos:], np.array(labels[pos:]), metas[pos:])
        b = self.make(tmp_path, want, name="b")
        self.assert_store(a, want)
        with open_store(a) as ra, open_store(b) as rb:
            assert ra.manifest["labels_digest"] == rb.manifest["labels_digest"]
            idx = np.arange(n)
            assert np.array_equal(ra._stored_checksums(idx), rb._stored_checksums(idx))

    def test_write_array_of_class_names_writes_what_write_writes(self, tmp_path):
        """``write_array`` with str labels (class names, as an image folder gives them, some not
        ASCII) and file-name metadata, blocks of any size, then int labels (the store goes mixed)
        and str again: the same store as writing the records one by one."""
        n = 600
        imgs = np.stack([make_image("uint8", (6, 5, 3), i) for i in range(n)])
        names = ["cat", "dög", "bird", "ẞ tree"]
        labels: list = [names[(i * 5) % 4] for i in range(n)]
        labels[400:410] = list(range(10))
        metas = [{"file": f"{labels[i]}/{i:04d}.jpg"} for i in range(n)]
        want = [Record(imgs[i], labels[i], metas[i]) for i in range(n)]
        a = self.path(tmp_path, "a")
        with imgtui.writer(a, self.backend, **self.options) as w:
            pos = 0
            for k in (300, 1, 99, 10, 190):
                w.write_array(imgs[pos : pos + k], labels[pos : pos + k], metas[pos : pos + k])
                pos += k
        b = self.make(tmp_path, want, name="b")
        self.assert_store(a, want)
        with open_store(a) as ra, open_store(b) as rb:
            assert ra.manifest["labels_digest"] == rb.manifest["labels_digest"]
            assert ra.labels_array().tolist() == labels
            assert ra.verify().ok

    def test_a_class_name_with_nul_in_write_array_round_trips_or_names_its_record(self, tmp_path):
        """A str label some backends cannot hold (NUL: HDF5 strings) in a ``write_array`` block:
        stored as it is, or refused with the one-line error of the record-by-record path."""
        imgs = np.stack([make_image("uint8", (4, 4), i) for i in range(20)])
        labels = ["a"] * 20
        labels[13] = "b\x00c"
        p = self.path(tmp_path)
        try:
            with imgtui.writer(p, self.backend, **self.options) as w:
                w.write_array(imgs, labels)
        except InvalidRecordError as exc:
            assert str(exc).startswith("record 13 label") and "\n" not in str(exc)
            return
        self.assert_store(p, [Record(imgs[i], labels[i], {}) for i in range(20)])
