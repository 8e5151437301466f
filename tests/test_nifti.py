"""NIfTI volumes as a source (optional nibabel): one 3-D record per volume or one record per slice
(--slices), spacing and affine kept."""

from __future__ import annotations

import numpy as np
import pytest

nib = pytest.importorskip("nibabel")

import imgtui  # noqa: E402
from imgtui.cli import main  # noqa: E402
from imgtui.datasets import open_dataset  # noqa: E402
from imgtui.errors import DatasetError  # noqa: E402

AFFINE = np.array([[0.5, 0, 0, -10], [0, 0.75, 0, 20], [0, 0, 2.5, 5], [0, 0, 0, 1]])


def _save(path, arr, affine=AFFINE):
    nib.save(nib.Nifti1Image(arr, affine), str(path))
    return path


def test_volume_slices_uint8_and_int16_bit_exact(tmp_path):
    rng = np.random.default_rng(3)
    u8 = rng.integers(0, 256, (7, 6, 4), dtype=np.uint8)
    ct = rng.integers(-1024, 3071, (7, 6, 3)).astype(np.int16)
    _save(tmp_path / "mask.nii", u8)
    _save(tmp_path / "ct.nii.gz", ct)
    ds = open_dataset(tmp_path / "mask.nii", slices=True)
    recs = list(ds)
    assert len(recs) == ds.length == 4
    for k, r in enumerate(recs):
        assert r.image.dtype == np.uint8 and np.array_equal(r.image, u8[:, :, k])
        assert r.metadata["slice"] == k and r.metadata["slices"] == 4 and r.metadata["dtype"] == "uint8"
        assert r.metadata["spacing"] == [0.5, 0.75, 2.5]
        assert np.allclose(r.metadata["affine"], AFFINE)
    ct_recs = list(open_dataset(f"{tmp_path / 'ct.nii.gz'}:slices=yes"))
    for k, r in enumerate(ct_recs):
        assert r.metadata["dtype"] == "int16" and "stored_offset" not in r.metadata
        assert r.image.dtype == np.int16 and np.array_equal(r.image, ct[:, :, k])  # the real values, as stored


def test_folder_of_volumes_labels_and_cli_convert(tmp_path, capsys):
    rng = np.random.default_rng(4)
    vols = {}
    for cls in ("healthy", "tumour"):
        (tmp_path / "src" / cls).mkdir(parents=True)
        vols[cls] = rng.integers(0, 65535, (5, 4, 2), dtype=np.uint16)
        _save(tmp_path / "src" / cls / "a.nii.gz", vols[cls])
    dest = tmp_path / "v.lmdb"
    assert main(["convert", str(tmp_path / "src"), str(dest), "-b", "lmdb", "-q", "--slices"]) == 0
    with imgtui.open(dest) as r:
        assert len(r) == 4 and r.labels() == ["healthy", "healthy", "tumour", "tumour"]
        assert np.array_equal(r[3].image, vols["tumour"][:, :, 1]) and r[3].image.dtype == np.uint16
        assert r[3].metadata["file"] == "tumour/a.nii.gz" and r[3].metadata["slice"] == 1


def test_one_line_refusals(tmp_path, capsys):
    _save(tmp_path / "flat.nii", np.arange(12, dtype=np.uint8).reshape(4, 3, 1))
    (rec,) = list(open_dataset(tmp_path / "flat.nii"))  # a single slice is one 2-D record without --slices
    assert np.array_equal(rec.image, np.arange(12, dtype=np.uint8).reshape(4, 3))
    (tmp_path / "bad.nii").write_bytes(b"not a nifti file at all")
    assert main(["convert", str(tmp_path / "bad.nii"), str(tmp_path / "o.h5"), "-b", "hdf5", "-q", "--slices"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"imgtui: error: {tmp_path / 'bad.nii'}: not a readable NIfTI file")
    assert main(["convert", "synthetic:count=2", str(tmp_path / "s.h5"), "-b", "hdf5", "-q", "--slices"]) == 1
    assert capsys.readouterr().err.strip() == "imgtui: error: --slices applies to NIfTI volumes (.nii, .nii.gz) only"
    pet = np.linspace(-1.5, 7.25, 18, dtype=np.float32).reshape(3, 3, 2)
    pet[0, 0, 1] = np.nan
    _save(tmp_path / "pet.nii.gz", pet)
    got = list(open_dataset(tmp_path / "pet.nii.gz", slices=True))
    assert [r.image.dtype for r in got] == [np.float32, np.float32]  # stored as they are
    assert all(r.image.tobytes() == np.ascontiguousarray(pet[:, :, k]).tobytes() for k, r in enumerate(got))
    nib.save(nib.Nifti1Image(np.ones((3, 3, 2), np.int64), AFFINE, dtype=np.int64), str(tmp_path / "wide.nii.gz"))
    with pytest.raises(DatasetError, match=r"wide\.nii\.gz: int64 voxels are not supported"):
        open_dataset(tmp_path / "wide.nii.gz", slices=True)


@pytest.mark.parametrize("backend", ["disk", "lmdb", "hdf5"])
def test_volume_is_one_3d_record_in_every_backend(tmp_path, backend, capsys):
    """Without --slices a 3-D volume is one K x I x J record (record[k] = data[:, :, k]), a 4-D
    series one record per volume; stored and read back bit-exact, spacing and affine kept."""
    rng = np.random.default_rng(7)
    ct = rng.integers(-1024, 3071, (9, 8, 5)).astype(np.int16)
    series = rng.standard_normal((6, 7, 4, 2)).astype(np.float32)
    narrow = rng.integers(0, 255, (6, 3, 4), dtype=np.uint8)  # J = 3 voxels: kept a volume, not RGB
    src = tmp_path / "src"
    src.mkdir()
    _save(src / "a_ct.nii.gz", ct)
    _save(src / "b_series.nii.gz", series)
    _save(src / "c_narrow.nii", narrow)
    ds = open_dataset(src)
    recs = list(ds)
    assert ds.length == len(recs) == 4 and "one 3-D record per volume" in ds.describe()
    assert recs[0].image.shape == (5, 9, 8) and recs[0].image.dtype == np.int16
    assert all(np.array_equal(recs[0].image[k], ct[:, :, k]) for k in range(5))
    for t in (0, 1):
        r = recs[1 + t]
        assert r.image.shape == (4, 6, 7) and r.metadata["volume"] == t and r.metadata["volumes"] == 2
        assert all(r.image[k].tobytes() == np.ascontiguousarray(series[:, :, k, t]).tobytes() for k in range(4))
    assert recs[3].image.shape == (4, 6, 3, 1)
    assert np.array_equal(recs[3].image[2, :, :, 0], narrow[:, :, 2])
    assert recs[0].metadata["spacing"] == [0.5, 0.75, 2.5] and recs[0].metadata["slices"] == 5
    assert main(["info", str(src / "a_ct.nii.gz")]) == 0
    assert "shapes: volume 5x9x8 (1)" in capsys.readouterr().out  # info reads it as convert does
    dest = tmp_path / ("v" + {"disk": "", "lmdb": ".lmdb", "hdf5": ".h5"}[backend])
    assert main(["convert", str(src), str(dest), "-b", backend, "-q"]) == 0
    with imgtui.open(dest) as r:
        assert list(r) == recs and r.verify().ok
        # 3-D records need version 4; HDF5 keeps records of varying shapes packed (version 5)
        assert r.info()["format_version"] == (5 if backend == "hdf5" else 4)
