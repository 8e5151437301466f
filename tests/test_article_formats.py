import os
import pickle

import lmdb
import numpy as np
import pytest

from imgtui.backends import article
from imgtui.backends.article import (
    ArticleDiskReader,
    ArticleHdf5Reader,
    ArticleLmdbReader,
    detect_article,
    open_article,
    restricted_loads,
)
from imgtui.backends.lmdb import LmdbBackend
from imgtui.errors import CorruptStoreError, WrongBackendError


@pytest.fixture
def data():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    labels = [int(x) for x in rng.integers(0, 10, 12)]
    return images, labels


def test_article_lmdb(tmp_path, data):
    images, labels = data
    path = article.store_many_lmdb(images, labels, tmp_path)
    assert path == tmp_path / "12_lmdb"
    assert detect_article(path) == "article-lmdb"
    imgs, labs = article.read_many_lmdb(12, tmp_path)
    assert labs == labels and all(np.array_equal(a, b) for a, b in zip(imgs, images))
    with ArticleLmdbReader(path) as r:
        assert r.backend == "article-lmdb" and len(r) == 12
        recs = list(r)
        assert [x.label for x in recs] == labels and r.labels() == labels
        assert all(np.array_equal(x.image, im) for x, im in zip(recs, images))
        assert recs[0].image.shape == (32, 32, 3) and recs[0].image.dtype == np.uint8
        res = r.verify()
        assert not res.ok and res.checked == 12
        assert res.errors == [f"{path}: the article's LMDB layout stores no checksums; 12 records were read but their pixels cannot be verified"]
    # the imgtui LMDB reader says what it is instead of calling it incomplete
    with pytest.raises(WrongBackendError, match="Real Python article's way"):
        LmdbBackend.open(path)


def test_article_numpy_labels_and_main_module_pickles(tmp_path, data, monkeypatch):
    import sys

    images, _ = data
    # as if CIFAR_Image were defined in the user's script (__main__), as in the article
    monkeypatch.setattr(article.CIFAR_Image, "__module__", "__main__")
    monkeypatch.setattr(sys.modules["__main__"], "CIFAR_Image", article.CIFAR_Image, raising=False)
    obj = article.CIFAR_Image(images[0], np.int64(7))
    for proto in (0, 2, pickle.HIGHEST_PROTOCOL):
        raw = pickle.dumps(obj, protocol=proto)
        assert b"__main__" in raw
        loaded = restricted_loads(raw)
        assert loaded.label == 7 and np.array_equal(loaded.get_image(), images[0])


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_malicious_pickle_is_refused(tmp_path, data):
    with pytest.raises(CorruptStoreError) as ei:
        restricted_loads(pickle.dumps(Evil()))
    assert str(ei.value) in ("refusing to unpickle posix.system", "refusing to unpickle os.system")
    # inside a store: the reader names the record
    path = tmp_path / "evil_lmdb"
    env = lmdb.open(str(path), map_size=1 << 20)
    with env.begin(write=True) as txn:
        txn.put(b"00000000", pickle.dumps(article.CIFAR_Image(data[0][0], 1)))
        txn.put(b"00000001", pickle.dumps(Evil()))
    env.close()
    with ArticleLmdbReader(path) as r:
        assert r[0].label == 1
        with pytest.raises(CorruptStoreError, match=r"record 1: refusing to unpickle (posix|os)\.system"):
            r[1]
        res = r.verify()
        assert res.errors[0].startswith("record 1: cannot be read")


def test_article_hdf5(tmp_path, data):
    images, labels = data
    path = article.store_many_hdf5(images, labels, tmp_path)
    assert path.name == "12_many.h5" and detect_article(path) == "article-hdf5"
    imgs, labs = article.read_many_hdf5(12, tmp_path)
    assert np.array_equal(imgs, images) and labs.tolist() == labels
    with ArticleHdf5Reader(path) as r:
        assert len(r) == 12 and r.labels() == labels
        assert all(np.array_equal(x.image, im) for x, im in zip(r, images))
        got = r.get_images([5, 1, 5])
        assert np.array_equal(got, images[[5, 1, 5]])
        assert [x.label for x in r.get_many([3, 0])] == [labels[3], labels[0]]
        assert not r.verify().ok


def test_article_disk(tmp_path, data):
    images, labels = data
    article.store_many_disk(images, labels, tmp_path)
    assert (tmp_path / "0.png").is_file() and (tmp_path / "12.csv").is_file()
    assert detect_article(tmp_path) == "article-disk"
    imgs, labs = article.read_many_disk(12, tmp_path)
    assert labs == labels and all(np.array_equal(a, b) for a, b in zip(imgs, images))
    with open_article(tmp_path) as r:
        assert isinstance(r, ArticleDiskReader) and len(r) == 12
        assert all(np.array_equal(x.image, im) for x, im in zip(r, images))
        assert r.labels() == labels
    os.remove(tmp_path / "3.png")
    with ArticleDiskReader(tmp_path) as r:
        with pytest.raises(CorruptStoreError, match="3.png is missing"):
            r[3]


def test_detect_article_none(tmp_path):
    assert detect_article(tmp_path) is None
    p = tmp_path / "s.lmdb"
    with LmdbBackend.writer(p) as w:
        w.write((np.zeros((2, 2), np.uint8), 0))
    assert detect_article(p) is None
    with pytest.raises(WrongBackendError):
        open_article(tmp_path)
