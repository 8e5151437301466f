"""Dataset sources: image folders, CIFAR python batches, .npz/.npy arrays, and open_dataset dispatch."""

from __future__ import annotations

import io
import itertools
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgtui.datasets import open_dataset
from imgtui.datasets.cifar import CifarDataset, SafeUnpickler, is_cifar_batch, is_cifar_dir
from imgtui.datasets.folder import FolderDataset, decode_image
from imgtui.datasets.npz import NpzDataset
from imgtui.errors import DatasetError
from imgtui.records import validate_record

SHARED_CIFAR = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "cifar10-test"
RNG = np.random.default_rng(1234)


def rgb(h=6, w=5):
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def gray(h=6, w=5):
    return RNG.integers(0, 256, (h, w), dtype=np.uint8)


def save(path: Path, arr: np.ndarray, fmt: str | None = None, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt, **kw)
    return path


def write_rgb16_tiff(path: Path, arr: np.ndarray) -> None:
    """A minimal uncompressed little-endian 16-bit RGB TIFF (Pillow cannot write one)."""
    h, w, c = arr.shape
    data = arr.astype("<u2").tobytes()
    bps_off, data_off = 8, 8 + 2 * c
    ifd_off = data_off + len(data)

    def short(tag, value):
        return struct.pack("<HHIHH", tag, 3, 1, value, 0)

    def long(tag, value, typ=4, count=1):
        return struct.pack("<HHII", tag, typ, count, value)

    entries = [long(256, w), long(257, h), long(258, bps_off, typ=3, count=c), short(259, 1),
               short(262, 2), long(273, data_off), short(277, c), long(278, h), long(279, len(data)),
               short(284, 1)]
    out = b"II*\x00" + struct.pack("<I", ifd_off) + struct.pack("<" + "H" * c, *[16] * c) + data
    out += struct.pack("<H", len(entries)) + b"".join(entries) + struct.pack("<I", 0)
    path.write_bytes(out)


# -- image decoding ---------------------------------------------------------------------------

def test_decode_modes_lossless(tmp_path):
    a_rgb, a_gray = rgb(), gray()
    a_rgba = RNG.integers(0, 256, (4, 7, 4), dtype=np.uint8)
    a16 = (np.arange(6 * 7, dtype=np.uint16).reshape(6, 7) * 1500)  # values up to 61,500
    cases = {
        "a.png": (a_rgb, a_rgb), "b.bmp": (a_rgb, a_rgb), "c.tif": (a_rgb, a_rgb),
        "d.png": (a_gray, a_gray), "e.png": (a_rgba, a_rgba), "f.png": (a16, a16), "g.tiff": (a16, a16),
    }
    for name, (src, want) in cases.items():
        save(tmp_path / name, src)
        got = decode_image(tmp_path / name)
        assert got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want), name
    assert decode_image(tmp_path / "f.png").max() == 61500


def test_decode_converted_modes(tmp_path):
    a_gray = gray()
    Image.fromarray(a_gray).convert("LA").save(tmp_path / "la.png")
    la = decode_image(tmp_path / "la.png")
    assert la.shape == (6, 5, 4) and np.array_equal(la[..., 0], a_gray) and (la[..., 3] == 255).all()
    Image.fromarray(a_gray > 128).save(tmp_path / "bw.png")
    bw = decode_image(tmp_path / "bw.png")
    assert bw.dtype == np.uint8 and bw.shape == (6, 5) and set(np.unique(bw)) <= {0, 255}
    Image.fromarray(rgb()).convert("P").save(tmp_path / "p.png")
    assert decode_image(tmp_path / "p.png").shape == (6, 5, 3)
    Image.fromarray(rgb()).convert("CMYK").save(tmp_path / "cmyk.jpg")
    cmyk = decode_image(tmp_path / "cmyk.jpg")
    assert cmyk.shape == (6, 5, 3) and cmyk.dtype == np.uint8
    jpg = decode_image(save(tmp_path / "x.jpeg", rgb(16, 16), quality=95))
    assert jpg.shape == (16, 16, 3) and jpg.dtype == np.uint8


def test_decode_16bit_rgb_tiff_is_lossless(tmp_path):
    a = RNG.integers(0, 65536, (5, 7, 3), dtype=np.uint16)
    write_rgb16_tiff(tmp_path / "rgb16.tif", a)
    got = decode_image(tmp_path / "rgb16.tif")
    assert got.dtype == np.uint16 and np.array_equal(got, a)


def test_decode_16bit_colour_png_is_lossless(tmp_path):
    from imgtui.backends.disk import encode_png

    for shape in [(5, 7, 3), (4, 6, 4)]:
        a = RNG.integers(0, 65536, shape, dtype=np.uint16)
        (tmp_path / "c.png").write_bytes(encode_png(a))
        got = decode_image(tmp_path / "c.png")
        assert got.dtype == np.uint16 and np.array_equal(got, a)
    # 16-bit gray+alpha (written by hand: colour type 4, filter 0)
    import zlib
    ga = RNG.integers(0, 65536, (3, 4, 2), dtype=np.uint16)
    raw = b"".join(b"\0" + row.astype(">u2").tobytes() for row in ga)

    def chunk(tag, body):
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 3, 16, 4, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    (tmp_path / "ga.png").write_bytes(png)
    got = decode_image(tmp_path / "ga.png")
    assert got.shape == (3, 4, 4) and got.dtype == np.uint16
    assert np.array_equal(got[..., 0], ga[..., 0]) and np.array_equal(got[..., 2], ga[..., 0])
    assert np.array_equal(got[..., 3], ga[..., 1])
    (tmp_path / "bad.png").write_bytes(png[:-30])
    with pytest.raises(DatasetError, match=r"bad\.png: "):
        decode_image(tmp_path / "bad.png")


def test_decode_truncated_and_garbage(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(rgb(64, 64)).save(buf, format="JPEG")
    (tmp_path / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(DatasetError, match=r"cut\.jpg: corrupt or truncated image \(image file is truncated"):
        decode_image(tmp_path / "cut.jpg")
    (tmp_path / "junk.png").write_bytes(b"not a png at all")
    with pytest.raises(DatasetError, match=r"junk\.png: not a readable image \(unknown or corrupt format\)"):
        decode_image(tmp_path / "junk.png")
    png = rgb()
    save(tmp_path / "misnamed.jpg", png, fmt="PNG")  # the extension is only a hint
    assert np.array_equal(decode_image(tmp_path / "misnamed.jpg"), png)
    f32 = np.arange(9, dtype=np.float32).reshape(3, 3) - 4.5
    Image.fromarray(f32).save(tmp_path / "float.tif", compression="tiff_lzw")  # Pillow's own float TIFF
    got = decode_image(tmp_path / "float.tif")
    assert got.dtype == np.float32 and np.array_equal(got, f32)


@pytest.mark.parametrize("dtype", ["int8", "int16", "uint32", "int32", "float32", "float64"])
def test_signed_wide_and_float_tiffs_import_exactly(tmp_path, dtype):
    from backend_suite import make_image
    from imgtui.tiff import encode_tiff

    for shape in ((4, 5), (4, 5, 3), (4, 5, 4)):
        img = make_image(dtype, shape, 1)
        (tmp_path / "x.tif").write_bytes(encode_tiff(img, 1))
        got = decode_image(tmp_path / "x.tif")
        assert got.dtype == img.dtype and got.shape == img.shape and got.tobytes() == img.tobytes()


# -- class sub-folders ------------------------------------------------------------------------

def make_class_folder(root: Path) -> dict[str, np.ndarray]:
    arrays = {
        "cat/1.png": rgb(), "cat/0.bmp": rgb(), "dog/a.tif": rgb(), "dog/deeper/b.png": gray(),
        "bird/x.png": (np.arange(20, dtype=np.uint16).reshape(4, 5) * 3000),
    }
    for rel, arr in arrays.items():
        save(root / rel, arr)
    (root / "dog" / "notes.txt").write_text("hello")
    (root / "README").write_text("hi")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "z.png").write_bytes(b"ignored")
    (root / "cat" / ".DS_Store").write_bytes(b"\0")
    return arrays


def test_class_folders(tmp_path):
    arrays = make_class_folder(tmp_path)
    ds = FolderDataset(tmp_path)
    assert ds.length == len(ds) == 5
    recs = list(ds)
    files = [r.metadata["file"] for r in recs]
    assert files == ["bird/x.png", "cat/0.bmp", "cat/1.png", "dog/a.tif", "dog/deeper/b.png"]
    assert [r.label for r in recs] == ["bird", "cat", "cat", "dog", "dog"]
    for r in recs:
        assert r.metadata == {"file": r.metadata["file"]}
        src = arrays[r.metadata["file"]]
        assert r.image.dtype == src.dtype and np.array_equal(r.image, src)
        validate_record(r)
    assert recs[0].image.dtype == np.uint16 and recs[0].image.max() == 57000
    assert sorted(ds.ignored) == ["README", "dog/notes.txt"]
    assert ds.describe() == f"folder {tmp_path}: 5 images, 3 classes; 2 non-image files ignored"
    # deterministic and repeatable, threaded or not
    assert list(FolderDataset(tmp_path, workers=0)) == recs == list(ds)


def test_threaded_decode_matches_sequential_and_limit(tmp_path):
    for i in range(150):
        save(tmp_path / f"c{i % 3}" / f"{i:03d}.png", rgb(3, 4))
    seq = list(FolderDataset(tmp_path, workers=0))
    par = list(FolderDataset(tmp_path, workers=3))
    assert len(seq) == 150 and seq == par
    lim = FolderDataset(tmp_path, limit=7)
    assert len(lim) == 7 and list(lim) == seq[:7]
    assert "(first 7 of 150)" in lim.describe()
    # a generator abandoned early shuts its pool down cleanly
    it = iter(FolderDataset(tmp_path, workers=2))
    assert next(it) == seq[0]
    it.close()


def test_corrupt_image_stop_and_skip(tmp_path):
    for i in range(3):
        save(tmp_path / "a" / f"{i}.png", rgb())
    (tmp_path / "a" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DatasetError, match=r"1\.png: "):
        list(FolderDataset(tmp_path))
    stop = iter(FolderDataset(tmp_path))
    assert next(stop).metadata["file"] == "a/0.png"  # records before the bad one still come
    messages: list[str] = []
    ds = FolderDataset(tmp_path, on_error="skip", warn=messages.append)
    recs = list(ds)
    assert [r.metadata["file"] for r in recs] == ["a/0.png", "a/2.png"]
    assert len(messages) == 1 and str(tmp_path / "a" / "1.png") in messages[0]
    assert messages[0].startswith("skipped ")
    assert ds.skipped == ["a/1.png"]
    with pytest.warns(RuntimeWarning, match=r"1\.png"):
        assert len(list(FolderDataset(tmp_path, on_error="skip"))) == 2
    with pytest.raises(DatasetError, match="on_error must be 'stop' or 'skip'"):
        FolderDataset(tmp_path, on_error="ignore")


def test_folder_errors(tmp_path):
    with pytest.raises(DatasetError, match=r"missing: no such folder"):
        FolderDataset(tmp_path / "missing")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DatasetError, match=r"file\.txt: not a folder"):
        FolderDataset(tmp_path / "file.txt")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match=r"empty: no images found \(looked for .*\.png"):
        FolderDataset(empty)
    (empty / "a.txt").write_text("x")
    with pytest.raises(DatasetError, match=r"no images found .*\(1 other files ignored\)"):
        FolderDataset(empty)
    flat = tmp_path / "flat"
    save(flat / "a.png", rgb())
    with pytest.raises(DatasetError, match=r"1 images but no class sub-folders and no labels\.csv"):
        FolderDataset(flat)
    recs = list(FolderDataset(flat, labels_csv=False))
    assert [(r.label, r.metadata) for r in recs] == [(0, {"file": "a.png"})]
    save(flat / "cls" / "b.png", rgb())
    with pytest.raises(DatasetError, match=r"1 images \(e\.g\. a\.png\) sit next to the class sub-folders"):
        FolderDataset(flat)


# -- flat folder + labels.csv ------------------------------------------------------------------

def make_flat(root: Path, csv_text: str, names=("a.png", "b.jpg", "c.bmp")) -> None:
    for name in names:
        save(root / name, rgb())
    (root / "labels.csv").write_text(csv_text)


def test_labels_csv_int_labels_and_metadata(tmp_path):
    make_flat(tmp_path, "file,label,split,note\nb.jpg,1,train,x\na.png,-2,test,\nc.bmp, 3 ,train,hello world\n")
    ds = FolderDataset(tmp_path)
    recs = list(ds)
    assert [r.label for r in recs] == [1, -2, 3] and all(type(r.label) is int for r in recs)
    assert recs[0].metadata == {"file": "b.jpg", "split": "train", "note": "x"}
    assert recs[1].metadata == {"file": "a.png", "split": "test", "note": ""}
    assert ds.describe() == f"folder {tmp_path}: 3 images, labels from labels.csv"
    assert ds.ignored == []  # labels.csv itself is not counted


def test_labels_csv_str_labels_when_any_is_not_int(tmp_path):
    make_flat(tmp_path, "\ufefffile,label\na.png,1\nb.jpg,cat\nc.bmp,2\n")  # BOM header too
    assert [r.label for r in FolderDataset(tmp_path)] == ["1", "cat", "2"]


def test_labels_csv_explicit_path_and_subpaths(tmp_path):
    save(tmp_path / "imgs" / "sub" / "a.png", rgb())
    save(tmp_path / "imgs" / "b.png", rgb())
    (tmp_path / "my.csv").write_text("path,Label\n./sub/a.png,7\nb.png,8\n")
    recs = list(FolderDataset(tmp_path / "imgs", labels_csv=tmp_path / "my.csv"))
    assert [(r.metadata["file"], r.label) for r in recs] == [("sub/a.png", 7), ("b.png", 8)]
    with pytest.raises(DatasetError, match=r"imgs/labels\.csv: labels file not found"):
        FolderDataset(tmp_path / "imgs", labels_csv=True)
    with pytest.raises(DatasetError, match=r"nope\.csv: labels file not found"):
        FolderDataset(tmp_path / "imgs", labels_csv=tmp_path / "nope.csv")


@pytest.mark.parametrize("csv_text,msg", [
    ("file,label\na.png,1\nb.jpg,2\n", r"labels\.csv: no row for image c\.bmp"),
    ("file,label\na.png,1\n", r"labels\.csv: no row for image b\.jpg and 1 more"),
    ("file,label\na.png,1\nb.jpg,2\nc.bmp,3\nd.png,4\n",
     r"labels\.csv line 5: row names d\.png, which does not exist in "),
    ("file,label\na.png,1\nb.jpg,2\nc.bmp,3\nnotes.txt,4\n",
     r"labels\.csv line 5: row names notes\.txt, which is not an image file in "),
    ("name,class\na.png,1\n", r"labels\.csv: bad header 'name,class' \(expected columns file,label"),
    ("file,label\na.png,1\nb.jpg,2\na.png,3\nc.bmp,3\n",
     r"labels\.csv line 4: duplicate row for a\.png \(first on line 2\)"),
    ("file,label\na.png,1\nb.jpg\nc.bmp,3\n", r"labels\.csv line 3: 1 fields, expected 2 like the header"),
    ("file,label\na.png,1\nb.jpg,\nc.bmp,3\n", r"labels\.csv line 3: empty label for b\.jpg"),
    ("", r"labels\.csv: empty file"),
    ("file,label,label\na.png,1,2\n", r"duplicate column names"),
])
def test_labels_csv_errors(tmp_path, csv_text, msg):
    make_flat(tmp_path, csv_text)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match=msg) as info:
        FolderDataset(tmp_path)
    assert "\n" not in str(info.value)


# -- CIFAR --------------------------------------------------------------------------------------

def cifar_batch(n: int, seed: int, cifar100: bool = False) -> dict:
    rng = np.random.default_rng(seed)
    d = {
        b"batch_label": b"training batch",
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{seed}_{i}.png".encode() for i in range(n)],
    }
    if cifar100:
        d[b"fine_labels"] = [int(x) for x in rng.integers(0, 100, n)]
        d[b"coarse_labels"] = [int(x) for x in rng.integers(0, 20, n)]
    else:
        d[b"labels"] = [int(x) for x in rng.integers(0, 10, n)]
    return d


def test_cifar10_folder(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = {"data_batch_10": cifar_batch(2, 3), "data_batch_2": cifar_batch(4, 1), "test_batch": cifar_batch(3, 2)}
    for i, (name, d) in enumerate(batches.items()):
        (folder / name).write_bytes(pickle.dumps(d, protocol=(2, 4, 5)[i]))
    names = [f"class{i}".encode() for i in range(10)]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}, protocol=2))
    (folder / "readme.html").write_text("x")
    assert is_cifar_dir(folder) and not is_cifar_dir(tmp_path)
    assert is_cifar_batch(folder / "test_batch") and not is_cifar_batch(folder / "batches.meta")
    ds = CifarDataset(folder)
    assert len(ds) == 9
    assert ds.describe() == f"CIFAR-10 {folder}: 9 images 32x32x3 from data_batch_2, data_batch_10, test_batch"
    recs = list(ds)
    order = [("data_batch_2", 4), ("data_batch_10", 2), ("test_batch", 3)]
    expected = [(name, i) for name, n in order for i in range(n)]
    for r, (name, i) in zip(recs, expected, strict=True):
        d = batches[name]
        want = d[b"data"][i].reshape(3, 32, 32).transpose(1, 2, 0)
        assert r.image.shape == (32, 32, 3) and r.image.dtype == np.uint8 and r.image.flags.c_contiguous
        assert np.array_equal(r.image, want)
        assert r.label == d[b"labels"][i] and type(r.label) is int
        assert r.metadata == {"filename": d[b"filenames"][i].decode(), "batch": name,
                              "label_name": f"class{r.label}"}
        validate_record(r)
    # red channel of the first pixel is data[0], green data[1024], blue data[2048]
    d0 = batches["data_batch_2"][b"data"][0]
    assert tuple(recs[0].image[0, 0]) == (d0[0], d0[1024], d0[2048])
    single = list(CifarDataset(folder / "test_batch"))
    assert single == recs[6:]


def test_cifar100_batch(tmp_path):
    d = cifar_batch(5, 7, cifar100=True)
    (tmp_path / "train").write_bytes(pickle.dumps(d, protocol=2))
    meta = {b"fine_label_names": [f"f{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"c{i}".encode() for i in range(20)]}
    (tmp_path / "meta").write_bytes(pickle.dumps(meta))
    recs = list(CifarDataset(tmp_path / "train"))
    assert [r.label for r in recs] == d[b"fine_labels"]
    r = recs[1]
    assert r.metadata == {"filename": "img_7_1.png", "batch": "train", "label_name": f"f{r.label}",
                          "coarse_label": d[b"coarse_labels"][1], "coarse_label_name": f"c{d[b'coarse_labels'][1]}"}


def py2_str(b: bytes) -> bytes:  # py2 str -> SHORT_BINSTRING / BINSTRING
    return (b"U" + bytes([len(b)]) + b) if len(b) < 256 else (b"T" + struct.pack("<i", len(b)) + b)


def py2_cifar_pickle(data: np.ndarray, labels: list[int], filenames: list[bytes]) -> bytes:
    """A CIFAR batch pickled the way Python 2's cPickle (protocol 2) wrote the original files."""
    n = data.shape[0]
    arr = (b"cnumpy.core.multiarray\n_reconstruct\n" + b"cnumpy\nndarray\n" + b"K\x00\x85" + py2_str(b"b") + b"\x87R"
           + b"(K\x01" + b"K" + bytes([n]) + b"M" + struct.pack("<H", 3072) + b"\x86"
           + b"cnumpy\ndtype\n" + py2_str(b"u1") + b"K\x00K\x01\x87R"
           + b"(K\x03" + py2_str(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
           + b"\x89" + py2_str(data.tobytes()) + b"tb")
    lab = b"](" + b"".join(b"K" + bytes([x]) for x in labels) + b"e"
    names = b"](" + b"".join(py2_str(f) for f in filenames) + b"e"
    return (b"\x80\x02}(" + py2_str(b"batch_label") + py2_str(b"testing batch 1 of 1") + py2_str(b"labels") + lab
            + py2_str(b"data") + arr + py2_str(b"filenames") + names + b"u.")


def test_cifar_python2_pickle(tmp_path):
    """The real CIFAR files were written by Python 2 (str keys/data become bytes)."""
    data = np.random.default_rng(3).integers(0, 256, (3, 3072), dtype=np.uint8)
    (tmp_path / "data_batch_1").write_bytes(py2_cifar_pickle(data, [3, 1, 4], [b"a.png", b"b.png", b"c.png"]))
    assert is_cifar_batch(tmp_path / "data_batch_1")
    recs = list(open_dataset(tmp_path / "data_batch_1"))
    assert [r.label for r in recs] == [3, 1, 4]
    assert [r.metadata for r in recs][2] == {"filename": "c.png", "batch": "data_batch_1"}
    assert np.array_equal(recs[1].image, data[1].reshape(3, 32, 32).transpose(1, 2, 0))


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def test_cifar_malicious_pickle_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    d = cifar_batch(2, 0)
    d[b"labels"] = Evil()
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps(d, protocol=2))
    assert is_cifar_batch(tmp_path / "data_batch_1")
    with pytest.raises(DatasetError) as info:
        CifarDataset(tmp_path / "data_batch_1")
    module = os.system.__module__  # "posix" on Linux
    assert str(info.value) == f"refusing to unpickle {module}.system from {tmp_path / 'data_batch_1'}"
    assert not (tmp_path / "pwned.txt").exists()
    with pytest.raises(DatasetError, match=r"refusing to unpickle builtins\.eval from x"):
        SafeUnpickler(io.BytesIO(pickle.dumps(eval)), "x").load()


@pytest.mark.parametrize("payload,msg", [
    (b"\x80\x02garbage", r"data_batch_1: not a readable CIFAR batch file \("),
    (pickle.dumps([1, 2], protocol=2), r"data_batch_1: not a CIFAR batch \(expected a dict, got list\)"),
    (pickle.dumps({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, protocol=2),
     r"data_batch_1: CIFAR 'data' must be N x 3072 uint8, got 2x3072 float32"),
    (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, protocol=2),
     r"data_batch_1: CIFAR labels must be 2 integers"),
    (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}, protocol=2),
     r"data_batch_1: CIFAR batch has no 'labels' or 'fine_labels'"),
])
def test_cifar_bad_batches(tmp_path, payload, msg):
    (tmp_path / "data_batch_1").write_bytes(payload)
    with pytest.raises(DatasetError, match=msg):
        CifarDataset(tmp_path / "data_batch_1")


def test_cifar_empty_folder(tmp_path):
    with pytest.raises(DatasetError, match=r"no CIFAR batch files"):
        CifarDataset(tmp_path)


# -- npz / npy ----------------------------------------------------------------------------------

def test_npz_medmnist_style(tmp_path, monkeypatch):
    rng = np.random.default_rng(5)
    arrays = {
        "train_images": rng.integers(0, 256, (40, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 9, (40, 1), dtype=np.uint8),
        "val_images": rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
        "val_labels": rng.integers(0, 9, (6, 1)),
        "test_images": rng.integers(0, 256, (9, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 9, (9, 1)),
    }
    path = tmp_path / "pathmnist.npz"
    np.savez_compressed(path, **arrays)
    monkeypatch.setattr("imgtui.datasets.npz._CHUNK_BYTES", 28 * 28 * 3)  # several slices
    ds = NpzDataset(path)
    assert len(ds) == 40
    assert ds.describe() == f"npz {path}:train: 40 images 28x28 uint8, labels from train_labels"
    recs = list(ds)
    assert len(recs) == 40
    for i, r in enumerate(recs):
        assert np.array_equal(r.image, arrays["train_images"][i]) and r.image.flags.writeable
        assert r.label == int(arrays["train_labels"][i, 0]) and type(r.label) is int
        assert r.metadata == {"index": i, "split": "train"}
    test = list(NpzDataset(path, key="test"))
    assert len(test) == 9 and np.array_equal(test[8].image, arrays["test_images"][8])
    with pytest.raises(DatasetError, match=r"no split or array 'nope' \(arrays: test_images, test_labels"):
        NpzDataset(path, key="nope")


def test_npz_pairs_multilabel_and_strings(tmp_path):
    rng = np.random.default_rng(6)
    x = rng.integers(0, 65536, (4, 5, 6, 3), dtype=np.uint16)
    np.savez(tmp_path / "xy.npz", x=x, y=np.array([[0, 1, 1], [1, 0, 0], [0, 0, 0], [1, 1, 1]]))
    recs = list(NpzDataset(tmp_path / "xy.npz"))
    assert [r.label for r in recs] == ["0,1,1", "1,0,0", "0,0,0", "1,1,1"]
    assert all(np.array_equal(r.image, x[i]) and r.image.dtype == np.uint16 for i, r in enumerate(recs))
    np.savez(tmp_path / "s.npz", images=x, labels=np.array(["a", "b", "c", "d"]))
    assert [r.label for r in NpzDataset(tmp_path / "s.npz")] == ["a", "b", "c", "d"]
    np.savez(tmp_path / "two.npz", a=x, b=x)
    with pytest.raises(DatasetError, match=r"cannot tell which array holds the images \(arrays: a, b\)"):
        NpzDataset(tmp_path / "two.npz")
    assert [r.label for r in NpzDataset(tmp_path / "two.npz", key="b")] == [0] * 4
    np.savez(tmp_path / "bad.npz", images=x, labels=np.zeros(3, int))
    with pytest.raises(DatasetError, match=r"bad\.npz:labels: labels shape 3 does not match 4 images"):
        NpzDataset(tmp_path / "bad.npz")
    np.savez(tmp_path / "fl.npz", images=x, labels=np.zeros(4))
    with pytest.raises(DatasetError, match=r"fl\.npz:labels: labels have dtype float64"):
        NpzDataset(tmp_path / "fl.npz")


def test_npy_mmap_and_byte_order(tmp_path):
    x = np.random.default_rng(7).integers(0, 65536, (12, 4, 5), dtype=np.uint16).astype(">u2")
    np.save(tmp_path / "a.npy", x)
    ds = NpzDataset(tmp_path / "a.npy")
    assert isinstance(ds._mmap, np.memmap)
    recs = list(ds)
    assert len(ds) == 12 and [r.label for r in recs] == [0] * 12
    assert all(r.image.dtype == np.uint16 and r.image.dtype.isnative for r in recs)
    assert all(np.array_equal(r.image, x[i]) for i, r in enumerate(recs))
    assert recs[3].metadata == {"index": 3}
    with pytest.raises(DatasetError, match=r"a \.npy file holds one array; it has no 'train' key"):
        NpzDataset(tmp_path / "a.npy", key="train")


def test_npy_other_integer_dtypes_are_converted_when_they_fit(tmp_path):
    small = np.arange(2 * 3 * 4, dtype=np.int64).reshape(2, 3, 4)
    np.save(tmp_path / "small.npy", small)
    ds = NpzDataset(tmp_path / "small.npy")
    assert ds.out_dtype == np.uint8 and np.array_equal(list(ds)[1].image, small[1])
    np.save(tmp_path / "mid.npy", small * 1000)
    assert list(NpzDataset(tmp_path / "mid.npy"))[1].image.dtype == np.uint16
    np.save(tmp_path / "neg.npy", small - 1)
    got = list(NpzDataset(tmp_path / "neg.npy"))[1].image
    assert got.dtype == np.int16 and np.array_equal(got, small[1] - 1)
    np.save(tmp_path / "big.npy", small * 100_000_000)
    assert list(NpzDataset(tmp_path / "big.npy"))[1].image.dtype == np.uint32
    np.save(tmp_path / "huge.npy", small - 2**40)
    with pytest.raises(DatasetError, match=r"huge\.npy: images of dtype int64 have values .*, outside int32 and uint32"):
        NpzDataset(tmp_path / "huge.npy")


@pytest.mark.parametrize("dtype", ["int8", "int16", "uint32", "int32", "float32", "float64", "bool", ">f4", ">i2"])
def test_npy_every_record_dtype_passes_through_exactly(tmp_path, dtype):
    from backend_suite import make_image

    x = np.stack([make_image(np.dtype(dtype).newbyteorder("=").name, (4, 5), s) for s in range(3)]).astype(dtype)
    np.save(tmp_path / "x.npy", x)
    recs = list(NpzDataset(tmp_path / "x.npy"))
    for i, r in enumerate(recs):
        assert r.image.dtype == np.dtype(dtype).newbyteorder("=") and r.image.dtype.isnative
        assert r.image.tobytes() == x[i].astype(r.image.dtype).tobytes()


@pytest.mark.parametrize("make,msg", [
    (lambda p: np.save(p / "f.npy", np.zeros((2, 3, 3), np.float16)),
     r"f\.npy: the images array has dtype float16; imgtui stores uint8, uint16, int16, .* pixels"),
    (lambda p: np.save(p / "f.npy", np.zeros((2, 3, 3), np.complex64)),
     r"f\.npy: the images array has dtype complex64; imgtui stores"),
    (lambda p: np.save(p / "f.npy", np.array([None, 1], dtype=object), allow_pickle=True),
     r"f\.npy: the images array is an object array; imgtui never unpickles"),
    (lambda p: np.savez(p / "f.npz", images=np.array([None, 1], dtype=object)),
     r"f\.npz:images: the images array is an object array; imgtui never unpickles"),
    (lambda p: np.savez(p / "f.npz", images=np.zeros((2, 3, 3), np.uint8), labels=np.array([None, 1], dtype=object)),
     r"f\.npz:labels: labels are an object array; imgtui never unpickles"),
    (lambda p: np.save(p / "f.npy", np.zeros((2, 3, 3, 2), np.uint8)),
     r"f\.npy: the images array has 2 channels in shape 2x3x3x2; use 1, 3 or 4"),
    (lambda p: np.save(p / "f.npy", np.zeros((2, 3, 8, 8), np.uint8)),
     r"channel-first N x C x H x W is not supported"),
    (lambda p: np.save(p / "f.npy", np.zeros((5, 7), np.uint8)),
     r"f\.npy: the images array has shape 5x7; expected N x H x W or N x H x W x C"),
    (lambda p: (p / "f.npz").write_bytes(b"PK not a zip"), r"f\.npz: not a readable \.npz file"),
    (lambda p: (p / "f.npy").write_bytes(b"\x93NUMPY junk"), r"f\.npy: not a valid \.npy array"),
])
def test_npz_refusals(tmp_path, make, msg):
    make(tmp_path)
    path = next(tmp_path.iterdir())
    with pytest.raises(DatasetError, match=msg):
        NpzDataset(path)


# -- open_dataset dispatch -----------------------------------------------------------------------

def test_open_dataset_dispatch(tmp_path):
    make_class_folder(tmp_path / "folder")
    assert type(open_dataset(tmp_path / "folder")).__name__ == "FolderDataset"
    assert open_dataset(str(tmp_path / "folder"), on_error="skip").on_error == "skip"
    flat = tmp_path / "flat"
    save(flat / "a.png", rgb())
    assert open_dataset(flat, labels_csv=False).layout == "unlabelled"
    cifar = tmp_path / "cifar-10-batches-py"
    cifar.mkdir()
    (cifar / "data_batch_1").write_bytes(pickle.dumps(cifar_batch(3, 0), protocol=2))
    assert isinstance(open_dataset(cifar), CifarDataset)
    assert isinstance(open_dataset(cifar / "data_batch_1"), CifarDataset)
    np.savez(tmp_path / "m.npz", train_images=np.zeros((2, 3, 3), np.uint8), test_images=np.ones((5, 3, 3), np.uint8))
    ds = open_dataset(f"{tmp_path / 'm.npz'}:test")
    assert isinstance(ds, NpzDataset) and len(ds) == 5 and ds.split == "test"
    np.save(tmp_path / "a.npy", np.zeros((3, 2, 2), np.uint8))
    assert len(open_dataset(tmp_path / "a.npy")) == 3
    with pytest.raises(DatasetError, match="no such file or folder"):
        open_dataset(tmp_path / "missing")


# -- the shared real CIFAR-10 JPEG folder (optional) ------------------------------------------------

@pytest.mark.skipif(not SHARED_CIFAR.is_dir(), reason="../shared/datasets/cifar10-test is not present")
def test_shared_cifar10_jpeg_folder():
    ds = FolderDataset(SHARED_CIFAR)
    assert len(ds) == 10_000 and ds.layout == "classes"
    sample = list(itertools.islice(FolderDataset(SHARED_CIFAR, limit=500), 500))
    assert len(sample) == 500
    assert all(r.image.shape == (32, 32, 3) and r.image.dtype == np.uint8 for r in sample)
    assert {r.label for r in sample} == {"airplane"}  # sorted order: class folders one after another
    assert ds.classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


# -- dataset summary: sampled over the whole set (issue 12 item 9) --------------------------------
def test_summary_samples_spread_over_a_folder_sorted_by_class(tmp_path):
    # 10 classes x 30 images, listed class by class: the first 200 files hold only 7 classes
    for c in range(10):
        for j in range(30):
            save(tmp_path / f"class{c}" / f"{j:03}.png", np.full((2, 3), c * 20 + j, np.uint8))
    ds = FolderDataset(tmp_path)
    decoded = []
    real = ds._decode
    ds._decode = lambda e: decoded.append(e[0]) or real(e)
    s = ds.summary(sample=50)
    assert s["count"] == 300 and s["sampled"] == 50 and s["spread"] is True
    assert s["sample_note"] == "sampled 50 of 300 spread over the set"
    assert sorted(s["labels"]) == [f"class{c}" for c in range(10)]
    assert sum(s["labels"].values()) == 50 and min(s["labels"].values()) >= 4
    assert len(decoded) == 50  # only the sampled files were decoded
    assert decoded[0] == "class0/000.png" and decoded[-1] == "class9/029.png"
    # a small set is read whole and says so
    small = open_dataset("synthetic:count=30,size=4")
    assert small.summary()["sample_note"] == "all 30 records" and small.summary()["sampled"] == 30
    assert open_dataset("synthetic:count=1000,size=4").summary()["sample_note"] == "sampled 200 of 1,000 spread over the set"


def test_summary_spread_indices_and_default_records_at():
    from imgtui.datasets.base import spread_indices

    for n, k in [(10_000, 200), (201, 200), (7, 3), (5, 5), (3, 1)]:
        idx = spread_indices(n, k)
        assert len(idx) == min(n, k) and idx == sorted(set(idx)) and idx[0] == 0
        assert k == 1 or idx[-1] == n - 1
    ds = open_dataset("synthetic:count=40,size=4")
    base_pick = list(type(ds).__mro__[1].records_at(ds, [39, 3, 3, 0]))  # the generic iterate-and-pick
    assert [r.image.tobytes() for r in base_pick] == [ds.record(i).image.tobytes() for i in (0, 3, 39)]


# -- every format Pillow reads, multi-frame files, the skip line, EXIF orientation (issue 14) ------
def make_mixed_folder(root: Path) -> dict:
    """One file of each format (class folder ``a``), an unknown extension holding a PNG, two text
    files and an unreadable JPEG. Returns {name: the pixels expected (a list for multi-frame)}."""
    from PIL import features

    d = root / "a"
    d.mkdir(parents=True)
    rng = np.random.default_rng(7)
    rgb_ = rng.integers(0, 256, (12, 10, 3), np.uint8)
    rgba = rng.integers(0, 256, (12, 10, 4), np.uint8)
    g = rng.integers(0, 256, (12, 10), np.uint8)
    want: dict = {}
    Image.fromarray(rgba).save(d / "lossless.webp", lossless=True)
    want["lossless.webp"] = rgba  # lossless WebP stays lossless
    frames = [Image.fromarray(rng.integers(0, 256, (8, 9, 3), np.uint8)).convert("P") for _ in range(3)]
    frames[0].save(d / "anim.gif", save_all=True, append_images=frames[1:], duration=50, loop=0, disposal=1)
    want["anim.gif"] = [np.asarray(f.convert("RGB")) for f in frames]
    Image.fromarray(g).save(d / "still.gif")
    want["still.gif"] = np.repeat(g[:, :, None], 3, axis=2)  # a palette image (of grays): RGB, like P PNG
    if features.check("jpg_2000"):
        Image.fromarray(rgb_).save(d / "x.jp2", irreversible=False)  # the reversible wavelet: lossless
        want["x.jp2"] = rgb_
    for name, arr in (("x.ppm", rgb_), ("x.pgm", g), ("x.tga", rgb_), ("x.bmp", rgb_), ("x.png", rgb_)):
        Image.fromarray(arr).save(d / name)
        want[name] = arr
    pages = [rng.integers(0, 256, (7, 5), np.uint8) for _ in range(3)]
    Image.fromarray(pages[0]).save(d / "pages.tif", save_all=True, append_images=[Image.fromarray(p) for p in pages[1:]])
    want["pages.tif"] = pages
    Image.fromarray(rgb_).save(d / "photo.jpg", quality=90)
    with Image.open(d / "photo.jpg") as im:
        want["photo.jpg"] = np.asarray(im.convert("RGB"))  # lossy: as Pillow decodes it
    Image.fromarray(rgb_).save(d / "mystery.dat", format="PNG")  # an unknown extension: read by content
    want["mystery.dat"] = rgb_
    (d / "notes.txt").write_text("hello")
    (d / "todo.txt").write_text("P6 is not an image header\n")
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return want


def test_mixed_folder_every_pillow_format_frames_and_skip_line(tmp_path):
    want = make_mixed_folder(tmp_path)
    warned = []
    ds = FolderDataset(tmp_path, on_error="skip", warn=warned.append)
    recs = list(ds)
    got: dict = {}
    for r in recs:
        name = r.metadata["file"].split("/")[-1]
        if "frame" in r.metadata:
            got.setdefault(name, []).append((r.metadata["frame"], r.metadata["frames"], r.image))
        else:
            assert name not in got
            got[name] = r.image
    assert sorted(got) == sorted(want)  # every image imported, broken.jpg and the .txt files not
    for name, exp in want.items():
        if isinstance(exp, list):
            assert [f[:2] for f in got[name]] == [(k, len(exp)) for k in range(len(exp))]
            for (_k, _n, img), e in zip(got[name], exp):
                assert img.dtype == np.uint8 and np.array_equal(img, e), name
        else:
            assert got[name].dtype == np.uint8 and np.array_equal(got[name], exp), name
    assert len(recs) == ds.length - 1 == len(want) + 2 + 2  # 3 GIF frames and 3 TIFF pages
    assert ds.skip_summary == "skipped 3 files: 2 .txt, 1 unreadable: a/broken.jpg"
    assert len(warned) == 1 and "broken.jpg" in warned[0]
    assert "(2 multi-frame: one record per frame)" in ds.describe()
    s = ds.summary()
    assert s["skipped"] == "skipped 3 files: 2 .txt, 1 unreadable: a/broken.jpg"
    assert s["exif"].startswith("EXIF orientation not applied")


def test_mixed_folder_cli_convert_and_info_print_the_skip_line(tmp_path, capsys):
    from imgtui.cli import main

    make_mixed_folder(tmp_path / "src")
    dest = tmp_path / "out.h5"
    assert main(["convert", str(tmp_path / "src"), str(dest), "-b", "hdf5", "-q", "--on-error", "skip"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == "imgtui: skipped 3 files: 2 .txt, 1 unreadable: a/broken.jpg"
    assert main(["info", str(tmp_path / "src")]) == 0
    out = capsys.readouterr().out
    assert "  skipped 3 files: 2 .txt, 1 unreadable: a/broken.jpg" in out.splitlines()
    assert "EXIF orientation not applied" in out
    # without --on-error skip the unreadable file stops the conversion, in one line
    assert main(["convert", str(tmp_path / "src"), str(tmp_path / "o2.h5"), "-b", "hdf5", "-q"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("imgtui: error: ") and "broken.jpg" in err[0]


def test_unknown_extensions_are_read_by_content_not_by_name(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    a, b = rgb(), gray()
    save(d / "IMG_0001", a, "PNG")  # no extension at all
    save(d / "scan.raw16", b, "TIFF")
    (d / "data.bin").write_bytes(bytes(range(256)))
    (d / "table.csv").write_text("a,b\n1,2\n")
    ds = FolderDataset(tmp_path)
    assert sorted(ds.files) == ["c/IMG_0001", "c/scan.raw16"]
    assert ds.skip_summary == "skipped 2 files: 1 .bin, 1 .csv"
    by = {r.metadata["file"]: r.image for r in ds}
    assert np.array_equal(by["c/IMG_0001"], a) and np.array_equal(by["c/scan.raw16"], b)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_a_choice(tmp_path, orientation):
    from PIL import ImageOps

    arr = np.random.default_rng(orientation).integers(0, 256, (16, 24, 3), np.uint8)
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = orientation
    path = tmp_path / "k" / "photo.jpg"
    path.parent.mkdir()
    im.save(path, quality=95, exif=exif.tobytes())
    with Image.open(path) as f:
        stored = np.asarray(f.convert("RGB"))
        upright = np.asarray(ImageOps.exif_transpose(f).convert("RGB"))
    assert np.array_equal(next(iter(FolderDataset(tmp_path))).image, stored)  # default: as stored
    ds = open_dataset(f"{tmp_path}:exif_rotate=yes")
    assert ds.exif_rotate and "EXIF orientation applied" in ds.describe()
    assert ds.summary()["exif"].startswith("EXIF orientation applied")
    assert np.array_equal(next(iter(ds)).image, upright)
    assert np.array_equal(next(iter(open_dataset(tmp_path, exif_rotate=True))).image, upright)


def test_exif_rotate_flag_in_the_cli_and_refused_for_other_sources(tmp_path, capsys):
    from imgtui.cli import main

    im = Image.fromarray(np.arange(6 * 4 * 3, dtype=np.uint8).reshape(6, 4, 3))
    exif = im.getexif()
    exif[0x0112] = 6
    (tmp_path / "src" / "k").mkdir(parents=True)
    im.save(tmp_path / "src" / "k" / "p.png", exif=exif.tobytes())
    assert main(["convert", str(tmp_path / "src"), str(tmp_path / "r.h5"), "-b", "hdf5", "-q", "--exif-rotate"]) == 0
    assert main(["convert", str(tmp_path / "src"), str(tmp_path / "n.h5"), "-b", "hdf5", "-q"]) == 0
    import imgtui

    with imgtui.open(tmp_path / "r.h5") as r, imgtui.open(tmp_path / "n.h5") as n:
        assert r[0].image.shape == (4, 6, 3) and n[0].image.shape == (6, 4, 3)
        assert np.array_equal(r[0].image, np.rot90(n[0].image, -1))
    capsys.readouterr()
    assert main(["convert", "synthetic:count=2", str(tmp_path / "s.h5"), "-b", "hdf5", "-q", "--exif-rotate"]) == 1
    assert "--exif-rotate applies to image folders only" in capsys.readouterr().err


def test_a_store_with_a_damaged_record_as_a_source_skips_it_when_asked(tmp_path):
    """The app summarises with skip (a store with one bad record must stay usable); convert
    --on-error skip leaves the record out and names it; the default stops with the record's error."""
    import imgtui
    from imgtui.cli import main
    from imgtui.datasets import open_dataset
    from imgtui.errors import ImgtuiError
    from imgtui.records import Record

    src = tmp_path / "src.disk"
    with imgtui.writer(src, "disk") as w:
        for i in range(6):
            w.write(Record(np.full((4, 5, 3), i, np.uint8), i, {"i": i}))
    png = sorted(src.rglob("*.png"))[2]
    data = bytearray(png.read_bytes())
    data[-20:-12] = b"\0" * 8  # inside the IDAT chunk / its CRC
    png.write_bytes(bytes(data))
    warned: list[str] = []
    summary = open_dataset(str(src), on_error="skip", warn=warned.append).summary()
    assert summary["sample_note"] == "all 6 records (1 could not be read)"
    assert len(warned) == 1 and "record 2" in warned[0]
    with pytest.raises(ImgtuiError, match="record 2"):
        open_dataset(str(src)).summary()
    assert main(["convert", str(src), str(tmp_path / "out.h5"), "-b", "hdf5", "--on-error", "skip", "-q"]) == 0
    out = imgtui.open(tmp_path / "out.h5")
    assert [r.label for r in out] == [0, 1, 3, 4, 5]
    assert all(np.array_equal(r.image, np.full((4, 5, 3), r.label, np.uint8)) for r in out)


def test_synthetic_record_i_is_the_same_whatever_else_is_asked():
    """Record i depends on (seed, i) only: any order, any thread, iteration or random access."""
    import threading

    from imgtui.datasets import SyntheticDataset

    for kw in ({"size": 9}, {"variable": (3, 12), "channels": 4, "bits": 16}, {"size": 6, "channels": 1, "dtype": "float32"},
               {"size": 1}, {"size": (2, 7), "dtype": "bool"}):
        ds = SyntheticDataset(count=40, seed=5, **kw)
        forward = list(ds)
        assert [ds.record(i) for i in reversed(range(40))][::-1] == forward
        assert list(ds.records_at([30, 2, 17])) == [forward[2], forward[17], forward[30]]
        from_threads: dict[int, object] = {}

        def read(part: range) -> None:
            for i in part:
                from_threads[i] = ds.record(i)

        threads = [threading.Thread(target=read, args=(range(k, 40, 3),)) for k in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [from_threads[i] for i in range(40)] == forward
        other = list(SyntheticDataset(count=40, seed=6, **kw))
        assert sum(a == b for a, b in zip(forward, other)) < 5  # another seed, other images
        assert len({r.image.tobytes() for r in forward}) > 35  # records differ from one another
