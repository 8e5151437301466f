import numpy as np
import pytest

from imgtui.datasets import SyntheticDataset, open_dataset
from imgtui.errors import DatasetError, InvalidRecordError
from imgtui.records import Record, checksum, validate_record


def test_synthetic_default_is_cifar_like_and_deterministic():
    ds = open_dataset("synthetic:count=5")
    recs = list(ds)
    assert len(ds) == 5 and len(recs) == 5
    assert recs[0].image.shape == (32, 32, 3) and recs[0].image.dtype == np.uint8
    again = list(SyntheticDataset(count=5))
    assert all(a == b for a, b in zip(recs, again))
    assert all(0 <= r.label < 10 for r in recs)


def test_synthetic_variable_16bit_gray():
    ds = open_dataset("synthetic:count=20,variable=8-40,channels=1,bits=16,seed=3")
    shapes = {r.image.shape for r in ds}
    assert len(shapes) > 1
    assert all(len(s) == 2 and 8 <= s[0] <= 40 and 8 <= s[1] <= 40 for s in shapes)
    assert all(r.image.dtype == np.uint16 for r in ds)
    assert max(int(r.image.max()) for r in ds) > 255


@pytest.mark.parametrize("spec,msg", [
    ("synthetic:count=ten", "bad value"),
    ("synthetic:colour=3", "bad synthetic option"),
    ("synthetic:channels=2", "channels must be 1, 3 or 4"),
])
def test_synthetic_bad_spec(spec, msg):
    with pytest.raises(DatasetError, match=msg):
        open_dataset(spec)


def test_missing_dataset_path(tmp_path):
    with pytest.raises(DatasetError, match="no such file"):
        open_dataset(str(tmp_path / "nope"))


@pytest.mark.parametrize("image,msg", [
    (np.zeros((4, 4), np.complex64), "unsupported dtype complex64 \\(imgtui stores uint8, uint16, int16, uint32, "
                                     "int32, float32, float64, bool, int8\\)"),
    (np.zeros((4, 4), np.float16), "unsupported dtype float16"),
    (np.zeros((4, 4), np.int64), "unsupported dtype int64"),
    (np.zeros((4, 4), "U2"), "unsupported dtype <U2"),
    (np.zeros((2, 4, 4, 2), np.uint8), "unsupported channel count 2 in a DxHxWxC volume"),
    (np.zeros((0, 4), np.uint8), "0 pixels"),
    (np.zeros((3, 0, 4), np.uint8), "0 pixels"),
    (np.zeros((2, 2, 2, 3, 1), np.uint8), "expected HxW, HxWxC, DxHxW or DxHxWxC, got 5 dimensions"),
    (np.zeros(4, np.uint8), "got 1 dimensions"),
    ([[1, 2]], "expected a numpy array"),
])
def test_bad_images(image, msg):
    with pytest.raises(InvalidRecordError, match=msg):
        validate_record(Record(image, 0, {}), 7)


@pytest.mark.parametrize("shape,volume,packed", [
    ((5, 7), False, (0, 5, 7, 0)),
    ((5, 7, 1), False, (0, 5, 7, 1)),
    ((5, 7, 3), False, (0, 5, 7, 3)),
    ((5, 7, 4), False, (0, 5, 7, 4)),
    ((5, 7, 2), True, (5, 7, 2, 0)),
    ((40, 64, 64), True, (40, 64, 64, 0)),
    ((2, 5, 7, 1), True, (2, 5, 7, 1)),
    ((2, 5, 7, 3), True, (2, 5, 7, 3)),
])
def test_volumes_and_images_each_have_one_packed_shape(shape, volume, packed):
    """A 3-D record is DxHxW (last axis not 1, 3 or 4) or DxHxWxC; every accepted shape packs to
    one (D, H, W, C) and back, the form the backends' indexes keep."""
    from imgtui.records import is_volume, shape4, shape_from4, shapes4

    img = validate_record(Record(np.zeros(shape, np.int16), 0, {}), 0).image
    assert img.shape == shape and is_volume(shape) is volume
    assert shape4(shape) == packed and shape_from4(*packed) == shape
    old = np.array([[5, 7, 0], [5, 7, 3]])  # an N x 3 index of stores written before volumes
    assert shapes4(old).tolist() == [[0, 5, 7, 0], [0, 5, 7, 3]]


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int8", "int16", "uint32", "int32", "float32", "float64", "bool"])
def test_every_record_dtype_is_accepted_and_byte_swapped_to_native(dtype):
    from backend_suite import make_image

    img = make_image(dtype, (3, 4, 3), 1)
    rec = validate_record(Record(img, 0, {}))
    assert rec.image.dtype == np.dtype(dtype) and rec.image.tobytes() == img.tobytes()
    swapped = img.astype(img.dtype.newbyteorder(">" if np.little_endian else "<"))
    rec2 = validate_record(Record(swapped, 0, {}))
    assert rec2.image.dtype.isnative and rec2.image.tobytes() == img.tobytes()
    assert checksum(rec2.image) == checksum(img)


def test_bool_from_other_bytes_is_stored_as_its_truth_values():
    raw = np.array([[0, 1], [2, 255]], np.uint8).view(bool)
    rec = validate_record(Record(raw, 0, {}))
    assert rec.image.view(np.uint8).tolist() == [[0, 1], [1, 1]]


def test_record_equality_is_bit_exact_for_floats():
    a = np.array([np.nan, 0.0], np.float32)[None]
    b = a.copy()
    assert Record(a, 0) == Record(b, 0)  # NaN equals the same NaN (np.array_equal says no)
    b.view(np.uint32)[0, 0] ^= 1  # another NaN payload
    assert Record(a, 0) != Record(b, 0)
    c = a.copy()
    c[0, 1] = -0.0
    assert Record(a, 0) != Record(c, 0)  # -0.0 is not 0.0 bit for bit


def test_synthetic_dtype_option():
    for dt in ("int8", "int16", "uint32", "int32", "float32", "float64", "bool"):
        ds = open_dataset(f"synthetic:count=3,size=6x5,channels=3,dtype={dt}")
        recs = list(ds)
        assert all(r.image.dtype == np.dtype(dt) and r.image.shape == (6, 5, 3) for r in recs)
        assert recs == list(SyntheticDataset(count=3, size=(6, 5), dtype=dt)) and dt in ds.describe()
    assert list(SyntheticDataset(count=2, dtype="uint16")) == list(SyntheticDataset(count=2, bits=16))
    with pytest.raises(DatasetError, match="dtype must be one of uint8, uint16"):
        open_dataset("synthetic:dtype=complex64")


def test_bad_label_and_metadata():
    img = np.zeros((2, 2), np.uint8)
    with pytest.raises(InvalidRecordError, match="label must be an int or a str"):
        validate_record(Record(img, 1.5, {}))
    with pytest.raises(InvalidRecordError, match="not JSON-serialisable"):
        validate_record(Record(img, 1, {"x": object()}))


def test_checksum_sees_every_pixel_and_byte_order_is_normalised():
    a = np.arange(12, dtype=np.uint16).reshape(3, 4)
    b = a.copy()
    b[2, 3] += 1
    assert checksum(a) != checksum(b)
    big = a.astype(">u2")
    rec = validate_record(Record(big, 0))
    assert rec.image.dtype == np.dtype("=u2") and np.array_equal(rec.image, a)


def test_medical_scenario_is_16bit_variable_gray():
    ds = open_dataset("medical:count=6")
    recs = list(ds)
    assert len(recs) == 6
    assert all(r.image.dtype == np.uint16 and r.image.ndim == 2 for r in recs)
    assert all(256 <= s <= 768 for r in recs for s in r.image.shape)
    assert len({r.image.shape for r in recs}) > 1
    assert len(open_dataset("medical")) == 2000


def test_reports_are_typed_and_read_as_the_mappings_the_api_documented(tmp_path):
    import json

    import imgtui
    from imgtui.reports import ChangeReport, ConvertReport, RepairReport

    store = tmp_path / "s.lmdb"
    with imgtui.writer(store, "lmdb") as w:
        w.write(Record(np.zeros((2, 2), np.uint8), 0))
    r = imgtui.append(store, [Record(np.ones((2, 2), np.uint8), 1)])
    assert isinstance(r, ChangeReport) and r.count == 2 and r["count"] == 2 and r.operation == "append"
    assert set(dict(r)) == {"operation", "backend", "path", "records", "count", "seconds", "in_place", "how",
                            "bytes_before", "bytes_after"}
    assert json.loads(json.dumps(r.to_dict()))["records"] == 1
    with pytest.raises(KeyError):
        r["nope"]
    rep = imgtui.repair(store)
    assert isinstance(rep, RepairReport) and rep.actions == [] and rep == {"path": str(store), "backend": "lmdb",
                                                                          "actions": []}
    from imgtui.convert import convert
    from imgtui.datasets import open_dataset

    c = convert(open_dataset("synthetic:count=3,size=4"), tmp_path / "c.h5", "hdf5")
    assert isinstance(c, ConvertReport) and c.count == 3 and c["backend"] == "hdf5" and c.bytes_on_disk > 0
