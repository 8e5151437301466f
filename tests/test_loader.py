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


# -- __getitems__: PyTorch's batched fetch --------------------------------------------------------


def same_sample(a, b):
    """Bit-exact equality of two samples (an image, or (image, label), or a transform's tuple)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype
                and a.shape == b.shape and a.tobytes() == b.tobytes())
    if isinstance(a, (tuple, list)) and type(a) is type(b):
        return len(a) == len(b) and all(same_sample(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def image_and_meta(rec):
    return rec.image, rec.label, rec.metadata


@pytest.mark.parametrize("kind", ["disk", "lmdb", "hdf5", "sharded"])
def test_getitems_equals_getitem_bit_exact(tmp_path, kind):
    """Variable shapes; shuffled, repeated and negative indices; every form of sample."""
    path, ds = make_store(tmp_path, kind)
    idx = [17, 3, 3, 39, 0, -1, 22, 5, 38, 12]
    for kwargs in ({}, {"with_label": False}, {"transform": image_and_meta}):
        dataset = imgtui.dataset(path, **kwargs)
        batch = dataset.__getitems__(idx)
        single = [dataset[i] for i in idx]
        assert len(batch) == len(idx)
        assert all(same_sample(a, b) for a, b in zip(batch, single)), kwargs
        want = ds.record(17)
        first = batch[0] if kwargs.get("with_label", True) else (batch[0], want.label)
        assert same_sample(first[:2], (want.image, want.label))
        assert dataset.__getitems__([]) == []
        with pytest.raises(IndexError):
            dataset.__getitems__([1, COUNT])


@pytest.mark.parametrize("kind", ["lmdb", "hdf5"])
def test_getitems_uniform_images_and_string_labels(tmp_path, kind):
    """Same-shape records (the batch read's fast path) with string labels, against the source."""
    recs = [imgtui.Record(np.random.default_rng(i).integers(0, 256, (6, 5, 3), np.uint8), f"c{i % 3}", {"i": i})
            for i in range(300)]
    path = tmp_path / ("u.lmdb" if kind == "lmdb" else "u.h5")
    with imgtui.writer(path, kind) as w:
        w.write_many(recs)
    dataset = imgtui.dataset(path)
    idx = list(np.random.default_rng(1).permutation(300)[:64])
    batch = dataset.__getitems__(idx)
    for (image, label), i in zip(batch, idx):
        assert image.tobytes() == recs[i].image.tobytes() and image.shape == (6, 5, 3) and label == recs[i].label
    assert all(same_sample(a, dataset[i]) for a, i in zip(batch, idx))


def write_marked(path, kind, n=12):
    """Records whose pixels are one distinctive byte value each (200 + i), to find them in the file."""
    recs = [imgtui.Record(np.full((16, 16, 3), 200 + i, np.uint8), i, {}) for i in range(n)]
    with imgtui.writer(path, kind) as w:
        w.write_many(recs)
    return recs


@pytest.mark.parametrize("kind", ["lmdb", "hdf5"])
def test_getitems_refuses_a_damaged_record_in_one_line(tmp_path, kind):
    path = tmp_path / ("d.lmdb" if kind == "lmdb" else "d.h5")
    recs = write_marked(path, kind)
    f = path / "data.mdb" if kind == "lmdb" else path
    data = bytearray(f.read_bytes())
    pos = data.find(bytes([207]) * 768)  # record 7's pixels
    assert pos > 0
    data[pos + 100] ^= 0x10
    f.write_bytes(bytes(data))
    dataset = imgtui.dataset(path)
    assert same_sample(dataset.__getitems__([1, 2]), [(recs[1].image, 1), (recs[2].image, 2)])
    for fetch in (lambda: dataset.__getitems__([3, 7, 9]), lambda: dataset[7]):
        with pytest.raises(ImgtuiError) as err:
            fetch()
        msg = str(err.value)
        assert "record 7 is damaged" in msg and "\n" not in msg


def fetch_like_torch(dataset, batches):
    """What torch's _MapDatasetFetcher does: ``__getitems__`` when the dataset has it."""
    fetch = getattr(dataset, "__getitems__", None)
    out = []
    for b in batches:
        out.append(fetch(b) if fetch is not None else [dataset[i] for i in b])
    return out


@pytest.mark.parametrize("kind", ["lmdb", "hdf5"])
def test_fetch_loop_over_an_epoch_reads_every_record_once(tmp_path, kind):
    path, ds = make_store(tmp_path, kind)
    dataset = imgtui.dataset(path)
    order = np.random.default_rng(3).permutation(COUNT).tolist()
    batches = [order[k : k + 16] for k in range(0, COUNT, 16)]
    got = [s for batch in fetch_like_torch(dataset, batches) for s in batch]
    assert len(got) == COUNT
    for (image, label), i in zip(got, order):
        want = ds.record(i)
        assert image.tobytes() == want.image.tobytes() and image.shape == want.image.shape and label == want.label


class ProbeDataset(ImageDataset):
    """Says which process fetched each sample and which process opened the reader that read it."""

    def __getitems__(self, indices):
        out = super().__getitems__(indices)
        return [(image, label, os.getpid(), self._pid, id(self._reader)) for image, label in out]


@pytest.mark.parametrize("start", ["fork", "spawn"])
@pytest.mark.parametrize("kind", ["lmdb", "hdf5"])
def test_torch_dataloader_workers_open_their_own_store(tmp_path, kind, start):
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    if start not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {start} start method here")
    recs = [imgtui.Record(np.random.default_rng(i).integers(0, 256, (8, 8, 3), np.uint8), i % 10, {}) for i in range(256)]
    path = tmp_path / ("t.lmdb" if kind == "lmdb" else "t.h5")
    with imgtui.writer(path, kind) as w:
        w.write_many(recs)
    dataset = ProbeDataset(path)
    dataset[0]  # the parent opened (and read) its reader: the workers must not use it
    loader = DataLoader(dataset, batch_size=32, shuffle=True, num_workers=2,
                        multiprocessing_context=start, generator=torch.Generator().manual_seed(0))
    seen = {}
    pids = set()
    for images, labels, pid, opener, _reader in loader:
        assert images.shape[1:] == (8, 8, 3) and images.dtype == torch.uint8
        assert (pid == opener).all()  # each worker reads with a reader it opened itself
        pids.update(pid.tolist())
        for k in range(len(images)):
            seen[len(seen)] = (images[k].numpy().tobytes(), int(labels[k]))
    assert len(pids) == 2 and os.getpid() not in pids
    assert sorted(seen.values()) == sorted((r.image.tobytes(), r.label) for r in recs)
