"""The DICOM source: lossless pixels, windowing metadata, no patient-identifying data in stores."""

import shutil
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")

from imgtui.datasets import open_dataset  # noqa: E402
from imgtui.datasets.dicom import DicomDataset, real_values  # noqa: E402
from imgtui.errors import DatasetError  # noqa: E402

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def sample(name):
    p = TEST_FILES / name
    if not p.exists():
        pytest.skip(f"pydicom sample {name} not shipped with this pydicom")
    return p


@pytest.fixture
def dicom_dir(tmp_path):
    d = tmp_path / "scans"
    d.mkdir()
    for name in ("CT_small.dcm", "MR_small.dcm"):
        shutil.copy(sample(name), d / name)
    return d


def test_ct_pixels_lossless_as_int16_with_window_metadata(dicom_dir):
    ds = open_dataset(str(dicom_dir))
    assert isinstance(ds, DicomDataset)
    recs = list(ds)
    assert len(recs) == 2
    ct = recs[0]
    original = pydicom.dcmread(dicom_dir / "CT_small.dcm").pixel_array
    assert original.dtype == np.int16
    assert ct.image.dtype == np.int16 and ct.image.shape == original.shape
    assert "stored_offset" not in ct.metadata
    assert np.array_equal(ct.image, original) and real_values(ct) is ct.image
    assert ct.label == "CT"
    assert "RescaleSlope" in ct.metadata and "RescaleIntercept" in ct.metadata
    assert "file" not in ct.metadata and ct.metadata["file_ref"] == "file-000000"
    assert DicomDataset(dicom_dir, allow_identifying=True).read_file(dicom_dir / "CT_small.dcm")[0].metadata["file"] == "CT_small.dcm"


def test_a_file_named_after_the_patient_is_not_copied(dicom_dir, tmp_path):
    """Hospital exports often name files after the patient: with de-identification on, records keep a
    reference (the file's position in the sorted list), never the name."""
    d = tmp_path / "export"
    d.mkdir()
    shutil.copy(dicom_dir / "CT_small.dcm", d / "DOE^JOHN_1961-02-03.dcm")
    recs = list(DicomDataset(d))
    assert recs[0].metadata["file_ref"] == "file-000000"
    assert "DOE" not in repr(recs[0].metadata) and "1961" not in repr(recs[0].metadata)


def test_identifying_tags_never_copied(dicom_dir):
    raw = pydicom.dcmread(dicom_dir / "CT_small.dcm")
    assert str(raw.PatientName)  # the sample does carry a patient name
    for rec in open_dataset(str(dicom_dir)):
        for key in ("PatientName", "PatientID", "PatientBirthDate", "StudyInstanceUID", "InstitutionName"):
            assert key not in rec.metadata
        assert str(raw.PatientName) not in repr(rec.metadata)


def test_asking_for_identifying_tag_is_refused(dicom_dir):
    with pytest.raises(DatasetError, match="refusing to copy patient-identifying DICOM attribute"):
        DicomDataset(dicom_dir, extra_tags=("PatientName",))
    ds = DicomDataset(dicom_dir, extra_tags=("PatientName",), allow_identifying=True)
    assert "PatientName" in next(iter(ds)).metadata


def test_store_holds_no_patient_name(dicom_dir, tmp_path):
    backends = pytest.importorskip("imgtui.backends.hdf5")
    from imgtui.convert import convert

    dest = tmp_path / "scans.h5"
    convert(open_dataset(str(dicom_dir)), dest, "hdf5")
    name = str(pydicom.dcmread(dicom_dir / "CT_small.dcm").PatientName).encode()
    assert name not in dest.read_bytes()
    import imgtui

    with imgtui.open(dest) as r:
        assert r.verify().ok and r[0].image.dtype == np.int16 and "stored_offset" not in r[0].metadata
        assert r.info()["dtypes"] == {"int16": 2}  # CT_small and MR_small are both signed
    del backends


@pytest.mark.parametrize("backend", ["disk", "lmdb", "hdf5"])
def test_stores_with_the_old_offset_keep_reading(dicom_dir, tmp_path, backend):
    """Stores written before signed pixels were kept as int16 hold uint16 = value + 32768 and
    ``stored_offset: -32768``: they read as written, and real_values() gives the real values."""
    import imgtui
    from imgtui.records import Record

    ct = DicomDataset(dicom_dir).read_file(dicom_dir / "CT_small.dcm")[0]
    old = Record((ct.image.astype(np.int32) + 32768).astype(np.uint16), ct.label, {**ct.metadata, "stored_offset": -32768})
    dest = tmp_path / f"old.{backend}"
    with imgtui.writer(dest, backend) as w:
        w.write(old)
    with imgtui.open(dest) as r:
        got = r[0]
    assert got == old and got.image.dtype == np.uint16
    assert real_values(got).dtype == np.int32 and np.array_equal(real_values(got), ct.image)


def test_uint32_and_float_dicom_pixels_kept(tmp_path):
    """An RT dose grid (32-bit unsigned) and float pixels are stored as they are."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    d = tmp_path / "dose"
    d.mkdir()
    grid = (np.arange(12 * 10, dtype=np.uint32).reshape(12, 10) * 40_000_000).astype(np.uint32)
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.2"
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.Modality = "RTDOSE"
    ds.Rows, ds.Columns = grid.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 32
    ds.HighBit = 31
    ds.PixelRepresentation = 0
    ds.PixelData = grid.tobytes()
    ds.save_as(d / "dose.dcm", enforce_file_format=True)
    rec = DicomDataset(d).read_file(d / "dose.dcm")[0]
    assert rec.image.dtype == np.uint32 and np.array_equal(rec.image, grid) and rec.label == "RTDOSE"


def test_file_without_pixel_data_and_missing_decoder(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    shutil.copy(sample("rtplan.dcm"), d / "plan.dcm")
    with pytest.raises(DatasetError, match=r"plan.dcm: DICOM file has no pixel data"):
        list(DicomDataset(d))
    d2 = tmp_path / "jls"
    d2.mkdir()
    shutil.copy(sample("MR_small_jpeg_ls_lossless.dcm"), d2 / "jls.dcm")
    try:
        pydicom.dcmread(d2 / "jls.dcm").pixel_array
        pytest.skip("a JPEG-LS decoder is installed here")
    except Exception:
        pass
    with pytest.raises(DatasetError, match=r"jls.dcm: pixel data uses JPEG-LS .* no decoder for it is installed"):
        list(DicomDataset(d2))


def test_skip_mode_warns_and_continues(dicom_dir):
    shutil.copy(sample("rtplan.dcm"), dicom_dir / "zz_plan.dcm")
    warnings = []
    recs = list(DicomDataset(dicom_dir, on_error="skip", warn=warnings.append))
    assert len(recs) == 2
    assert len(warnings) == 1 and "zz_plan.dcm" in warnings[0]


def test_labels_from_csv(dicom_dir):
    (dicom_dir.parent / "labels.csv").write_text("file,label\nCT_small.dcm,1\nMR_small.dcm,0\n")
    recs = list(DicomDataset(dicom_dir, labels_csv=dicom_dir.parent / "labels.csv"))
    assert [r.label for r in recs] == [1, 0]


def _series(folder: Path, uid: str, depth: int, *, shape_of=None, order=None) -> list[np.ndarray]:
    """``depth`` slices of CT_small.dcm with their own pixels, positions along the slice normal and
    instance numbers, written under shuffled file names; returns the slices in position order."""
    folder.mkdir(parents=True, exist_ok=True)
    base = pydicom.dcmread(sample("CT_small.dcm"))
    rng = np.random.default_rng(len(uid))
    slices = []
    for z in range(depth):
        ds = pydicom.dcmread(sample("CT_small.dcm"))
        arr = rng.integers(-1000, 2000, base.pixel_array.shape).astype(np.int16)
        if shape_of is not None and z == shape_of:
            arr = arr[:32, :32].copy()
            ds.Rows, ds.Columns = arr.shape
        ds.PixelData = arr.tobytes()
        ds.SeriesInstanceUID = uid
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-10.0, 5.0, 100.0 - 2.5 * z]  # descending z: file order is not slice order
        ds.InstanceNumber = depth - z
        name = (order or (lambda z: f"img{(z * 7) % depth:03d}"))(z)
        ds.save_as(folder / f"{name}.dcm")
        slices.append(arr)
    return slices[::-1]  # ascending position along the normal (0, 0, 1)


def test_series_is_one_volume_ordered_by_position(tmp_path):
    """--series: the files of a series are one D x H x W int16 record, slices in order of position
    (not of file name), spacing from the positions; two series give two records; no UID copied."""
    from imgtui.cli import main

    import imgtui

    a = _series(tmp_path / "scans", "1.2.3.4.5", 6)
    b = _series(tmp_path / "scans" / "other", "1.2.3.4.6", 3)
    ds = open_dataset(tmp_path / "scans", series=True)
    recs = list(ds)
    assert len(recs) == 2 and "one 3-D record per series" in ds.describe()
    vol = recs[0].image
    assert vol.dtype == np.int16 and vol.shape == (6, *a[0].shape)
    assert all(np.array_equal(vol[k], a[k]) for k in range(6))
    assert np.array_equal(recs[1].image, np.stack(b))
    meta = recs[0].metadata
    assert meta["slices"] == 6 and meta["series_ref"] == "series-0000" and recs[1].metadata["series_ref"] == "series-0001"
    assert meta["slice_positions"] == [87.5, 90.0, 92.5, 95.0, 97.5, 100.0]
    assert meta["spacing"][0] == 2.5 and "1.2.3.4" not in repr(meta)
    store = tmp_path / "ct.h5"
    assert main(["convert", str(tmp_path / "scans"), str(store), "-b", "hdf5", "-q", "--series"]) == 0
    with imgtui.open(store) as r:
        assert list(r) == recs and r.info()["shapes"] == {f"6x{a[0].shape[0]}x{a[0].shape[1]}": 1,
                                                          f"3x{a[0].shape[0]}x{a[0].shape[1]}": 1}


def test_series_of_unequal_slices_is_one_line_or_skipped(tmp_path, capsys):
    from imgtui.cli import main

    _series(tmp_path / "bad", "9.9", 4, shape_of=2)
    with pytest.raises(DatasetError, match=r"series-0000 \(.*\): slice \d is 32x32 int16, slice 0 .*not one volume"):
        list(open_dataset(tmp_path / "bad", series=True))
    notes = []
    assert list(open_dataset(tmp_path / "bad", series=True, on_error="skip", warn=notes.append)) == []
    assert len(notes) == 1 and "not one volume" in notes[0]
    assert main(["convert", "synthetic:count=2", str(tmp_path / "s.h5"), "-b", "hdf5", "-q", "--series"]) == 1
    assert capsys.readouterr().err.strip() == "imgtui: error: --series applies to DICOM folders only"
