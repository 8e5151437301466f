"""imgtui.dataset / ImageDataset: a picklable map-style dataset read from worker processes."""

import multiprocessing
import os
import pickle
from functools import partial

import numpy as np
import pytest

import imgtui
from imgtui.convert import convert
from imgtui.datasets import SyntheticDataset
from imgtui.errors import ImgtuiError, StoreNotFoundError
from imgtui.loader import ImageDataset
from imgtui.convert.parallel import convert_sharded

COUNT = 40


def make_store(tmp_path, kind):
    ds = SyntheticDataset(count=COUNT, variable=(4, 10), seed=11)
    if kind == "sharded":
        path = tmp_path / "sharded"
        convert_sharded(ds, path, "lmdb", shards=3)
    else:
        path = tmp_path / {"disk": "s.disk", "lmdb": "s.lmdb", "hdf5": "s.h5"}[kind]
        convert(ds, path, kind)
    return path, ds


def read_one(dataset, i):
    image, label = dataset[i]
    return i, os.getpid(), image.dtype.str, image.shape, image.tobytes(), label


def read_in_child(blob):
    dataset = pickle.loads(blob)
    image, label = dataset[3]
    return image.tobytes(), image.shape, label, len(dataset)


@pytest.mark.parametrize("kind", ["disk", "lmdb", "hdf5", "sharded"])
def test_pool_of_spawned_workers_reads_every_record_once(tmp_path, kind):
    path, ds = make_store(tmp_path, kind)
    dataset = imgtui.dataset(path)
    assert isinstance(dataset, ImageDataset) and len(dataset) == COUNT
    dataset[0]  # an open reader in the parent must not travel to the workers
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        results = pool.map(partial(read_one, dataset), range(COUNT), chunksize=5)
    assert sorted(r[0] for r in results) == list(range(COUNT))
    assert os.getpid() not in {r[1] for r in results}
    for i, _pid, dtype, shape, data, label in results:
        want = ds.record(i)
        assert (dtype, shape, label) == (want.image.dtype.str, want.image.shape, want.label)
        assert data == want.image.tobytes()


@pytest.mark.parametrize("kind", ["lmdb", "hdf5"])
def test_pickled_open_dataset_reads_in_another_process(tmp_path, kind):
    path, ds = make_store(tmp_path, kind)
    dataset = ImageDataset(path)
    assert dataset.reader is not None and dataset[3][1] == ds.record(3).label
    blob = pickle.dumps(dataset)
    state = pickle.loads(blob).__dict__
    assert state["_reader"] is None and state["_pid"] is None
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        data, shape, label, n = pool.apply(read_in_child, (blob,))
    want = ds.record(3)
    assert (data, shape, label, n) == (want.image.tobytes(), want.image.shape, want.label, COUNT)
    assert dataset[3][0].tobytes() == want.image.tobytes()  # the parent keeps working


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.parametrize("backend", ["lmdb", "hdf5", "disk"])
def test_reopens_after_fork(tmp_path, backend):
    """A store opened (and read) in the parent: a forked child opens its own reader, and the
    parent's reader still reads afterwards (LMDB environments are closed before a fork and
    reopened on the next read)."""
    path, ds = make_store(tmp_path, backend)
    dataset = ImageDataset(path)
    parent_reader = dataset.reader
    assert dataset[3][1] == ds.record(3).label
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        try:
            image, label = dataset[5]
            ok = dataset.reader is not parent_reader and np.array_equal(image, ds.record(5).image) and label == ds.record(5).label
            os.write(w, b"ok" if ok else b"wrong")
        except BaseException as exc:  # noqa: BLE001
            os.write(w, repr(exc).encode()[:500])
        os._exit(0)
    os.close(w)
    got = os.read(r, 600)
    os.waitpid(pid, 0)
    os.close(r)
    assert got == b"ok"
    image, label = dataset[6]  # the parent's reader, reopened
    assert dataset.reader is parent_reader
    assert np.array_equal(image, ds.record(6).image) and label == ds.record(6).label


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_workers(tmp_path):
    path, ds = make_store(tmp_path, "hdf5")
    dataset = ImageDataset(path)
    dataset[0]
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:
        results = pool.map(partial(read_one, dataset), range(COUNT))
    assert [r[4] for r in results] == [ds.record(i).image.tobytes() for i in range(COUNT)]


def test_transform_and_image_only(tmp_path):
    path, ds = make_store(tmp_path, "hdf5")
    dataset = imgtui.dataset(path, transform=lambda rec: (rec.image.shape, rec.metadata))
    assert dataset[7] == (ds.record(7).image.shape, ds.record(7).metadata)
    only = ImageDataset(path, with_label=False)
    assert np.array_equal(only[-1], ds.record(COUNT - 1).image)
    with pytest.raises(IndexError):
        only[COUNT]
    assert repr(only).startswith("ImageDataset(") and "40 records, hdf5" in repr(only)
    only.close()
    assert np.array_equal(only[1], ds.record(1).image)  # reopens after close


def test_missing_store_is_one_line(tmp_path):
    with pytest.raises(StoreNotFoundError) as err:
        imgtui.dataset(tmp_path / "nope.h5")
    assert str(err.value) == f"{tmp_path / 'nope.h5'}: no such file or folder"
    assert isinstance(err.value, ImgtuiError)
