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
        # readability only: every record read, nothing to compare the pixels with, and it says so
        assert res.ok and res.checked == 12 and res.errors == []
        assert res.summary() == ("OK (readability only): 12 records read; the article's LMDB layout stores no "
                                 "checksums, so their pixels cannot be verified")
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
        assert r.verify().ok and "readability only" in r.verify().summary()


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


# -- the article's stores as sources: convert, info, verify, export, append, browser -----------------
import imgtui  # noqa: E402
from imgtui.backends import available, open_store  # noqa: E402
from imgtui.cli import main  # noqa: E402
from imgtui.datasets import open_dataset  # noqa: E402


def _article_stores(tmp_path, images, labels):
    """The three stores, written by the article's own functions (``imgtui.backends.article``)."""
    out = {}
    for kind in ("lmdb", "hdf5", "disk"):
        d = tmp_path / f"article-{kind}"
        d.mkdir()
        if kind == "lmdb":
            out[kind] = article.store_many_lmdb(images, labels, d)
        elif kind == "hdf5":
            out[kind] = article.store_many_hdf5(images, labels, d)
        else:
            article.store_many_disk(images, labels, d)
            out[kind] = d
    return out


_TARGETS = [b for b in ("disk", "lmdb", "hdf5", "webdataset", "zarr") if b in available()]


@pytest.mark.parametrize("target", _TARGETS)
def test_article_stores_convert_bit_exact_to_every_backend(tmp_path, data, target, capsys):
    images, labels = data
    for kind, src in _article_stores(tmp_path, images, labels).items():
        dest = tmp_path / f"{kind}-to-{target}{'.h5' if target == 'hdf5' else ''}"
        assert main(["convert", str(src), str(dest), "-b", target, "-q"]) == 0, capsys.readouterr().err
        assert f"wrote 12 records to {dest}" in capsys.readouterr().out
        with open_store(dest) as r:
            assert r.backend == target and len(r) == 12 and r.labels() == labels
            for rec, im in zip(r, images):
                assert rec.image.dtype == np.uint8 and rec.image.shape == im.shape
                assert rec.image.tobytes() == im.tobytes()


def test_article_stores_info_verify_export_and_dataset(tmp_path, data, capsys):
    images, labels = data
    names = {"lmdb": "LMDB", "hdf5": "HDF5", "disk": "PNG + CSV folder"}
    for kind, src in _article_stores(tmp_path, images, labels).items():
        assert main(["info", str(src)]) == 0
        out = capsys.readouterr().out
        assert out.splitlines()[0] == (
            f"{src}: article-format {names[kind]} (from the classic comparison), 12 records, no checksums")
        assert "shapes: 32x32x3 (12)" in out and "dtypes: uint8 (12)" in out
        assert f"labels ({len(set(labels))}):" in out
        assert main(["verify", str(src), "-q"]) == 0
        out = capsys.readouterr().out
        assert out.strip() == (f"{src}: OK (readability only): 12 records read; the article's "
                               f"{ {'lmdb': 'LMDB', 'hdf5': 'HDF5', 'disk': 'disk (PNG + CSV)'}[kind]} layout "
                               "stores no checksums, so their pixels cannot be verified")
        exp = tmp_path / f"export-{kind}"
        assert main(["export", str(src), str(exp), "-q"]) == 0
        capsys.readouterr()
        back = open_dataset(exp)
        assert [r.image.tobytes() for r in back] == [im.tobytes() for im in images]
        assert [r.label for r in back] == labels
        # a dataset for the app: kind "store" (the browser opens it directly), described as the article's
        ds = open_dataset(str(src))
        assert ds.kind == "store" and ds.length == 12
        assert ds.describe() == f"article-format {names[kind]} (from the classic comparison) {src} (12 records, no checksums)"
        assert ds.summary()["sample_note"] == "all 12 records"
        with imgtui.open(src) as r:  # the Python API too
            assert r.backend == f"article-{kind}" and r[5].image.tobytes() == images[5].tobytes()


def test_article_stores_append_as_source_not_as_target(tmp_path, data, capsys):
    images, labels = data
    stores = _article_stores(tmp_path, images, labels)
    target = tmp_path / "t.lmdb"
    assert main(["convert", str(stores["hdf5"]), str(target), "-b", "lmdb", "-q"]) == 0
    assert main(["append", str(stores["lmdb"]), str(target), "-q"]) == 0
    with open_store(target) as r:
        assert len(r) == 24 and r.labels() == labels + labels
        assert r[13].image.tobytes() == images[1].tobytes()
    capsys.readouterr()
    for kind, src in stores.items():
        assert main(["append", str(target), str(src), "-q"]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1
        assert "(from the classic comparison): imgtui reads it but does not change it; bring it in first" in err
    with ArticleLmdbReader(stores["lmdb"]) as r:
        assert len(r) == 12  # unchanged


def test_crafted_article_pickle_refused_by_convert_without_running_code(tmp_path, data, capsys):
    marker = tmp_path / "PWNED"

    class Touch:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil_lmdb"
    env = lmdb.open(str(path), map_size=1 << 20)
    with env.begin(write=True) as txn:
        txn.put(b"00000000", pickle.dumps(article.CIFAR_Image(data[0][0], 1)))
        txn.put(b"00000001", pickle.dumps(Touch()))
    env.close()
    dest = tmp_path / "out.h5"
    assert main(["convert", str(path), str(dest), "-b", "hdf5", "-q"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [f"imgtui: error: {path}: record 1: refusing to unpickle {os.system.__module__}.system"]
    assert not marker.exists() and not dest.exists()
    assert main(["verify", str(path), "-q"]) == 1
    assert not marker.exists()


def test_imgtui_article_store_opens_the_browser(tmp_path, data, monkeypatch):
    from imgtui.tui import app as app_mod
    from imgtui.tui.screens.browser import open_any_store

    calls = []
    monkeypatch.setattr(app_mod, "run_app", lambda **kw: calls.append(kw) or 0)
    for kind, src in _article_stores(tmp_path, *data).items():
        assert main([str(src)]) == 0 and calls[-1]["browse"] == str(src)
        assert main(["browse", str(src)]) == 0 and calls[-1]["browse"] == str(src)
        with open_any_store(str(src)) as r:  # what the browser opens
            assert r.backend == f"article-{kind}" and r[11].image.tobytes() == data[0][11].tobytes()


def test_browser_heading_names_the_article_format(tmp_path, data):
    from imgtui.tui.screens.browser import info_text, open_any_store, store_info

    src = _article_stores(tmp_path, *data)["lmdb"]
    with open_any_store(str(src)) as r:
        text = info_text(store_info(r, str(src))).plain
    assert text.startswith(f"article-format LMDB (from the classic comparison) {src}\n12 records, no checksums")
