"""DICOM folders as a dataset source (optional extra ``imgtui[dicom]``, which brings pydicom).

Each image frame becomes a record:
- image: the pixel array with its real values and its own dtype: uint8/uint16/uint32, signed
  int8/int16/int32 (CT is int16) and float32/float64 (Float Pixel Data) stay as they are.
  Stores written by imgtui before 0.2 hold signed pixels shifted by +32768 into uint16 with
  ``"stored_offset": -32768`` in the record's metadata (original value = stored + offset); they
  read as they were written, and :func:`real_values` undoes the shift for either kind of record.
- label: the value of a chosen tag (default ``Modality``) or the ``label`` column of a CSV
  (``file,label``).
- metadata: rescale slope/intercept, window centre/width, pixel spacing and other
  non-identifying acquisition tags (ALLOWED_TAGS) plus where the record came from: with
  de-identification (the default) ``file_ref`` = ``file-NNNNNN``, the file's position in the sorted
  list of the folder's DICOM files (hospital exports often name files after the patient, so the
  name is not copied); with ``allow_identifying=True`` the file's relative path as ``file``.

With ``series=True`` (``--series``) the files of one series (same SeriesInstanceUID) become one
3-D record, D x H x W: slices ordered by their position along the slice normal
(ImagePositionPatient on the normal of ImageOrientationPatient), else by InstanceNumber, else by
file name; a series file with several frames gives its frames in order. Its metadata: the first
slice's tags, ``slices``, ``series_ref`` (``series-NNNN``, never the UID), ``slice_positions``
(mm along the normal, when the files have positions) and ``spacing`` (slice step, then
PixelSpacing). A series whose slices differ in size or pixel type is one-line error (or skipped).

Patient-identifying attributes (the DICOM PS3.15 basic de-identification profile: names, IDs,
dates, addresses, UIDs, institution, physicians, free-text descriptions ...) are never copied
unless ``allow_identifying=True``; asking for one of them in ``extra_tags`` without that flag is
an error.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..errors import DatasetError
from ..records import DTYPE_CODES, DTYPES_TEXT, Record
from .base import Dataset

#: acquisition tags copied into metadata by default: none of them identifies a patient
ALLOWED_TAGS = (
    "Modality", "BodyPartExamined", "PhotometricInterpretation", "Rows", "Columns",
    "BitsAllocated", "BitsStored", "PixelRepresentation", "SamplesPerPixel",
    "RescaleSlope", "RescaleIntercept", "RescaleType", "WindowCenter", "WindowWidth",
    "PixelSpacing", "SliceThickness", "SpacingBetweenSlices", "ImageOrientationPatient",
    "KVP", "MagneticFieldStrength", "EchoTime", "RepetitionTime", "FlipAngle",
    "Manufacturer", "ManufacturerModelName", "ImageType", "InstanceNumber",
)

#: attributes of the basic de-identification profile (PS3.15 table E.1-1), by keyword
IDENTIFYING_TAGS = frozenset("""
PatientName PatientID PatientBirthDate PatientBirthTime PatientSex PatientAge PatientAddress
PatientTelephoneNumbers PatientMotherBirthName OtherPatientIDs OtherPatientNames
OtherPatientIDsSequence PatientBirthName PatientSize PatientWeight MilitaryRank BranchOfService
MedicalRecordLocator EthnicGroup Occupation AdditionalPatientHistory PatientComments
PatientInsurancePlanCodeSequence PatientReligiousPreference CountryOfResidence RegionOfResidence
ResponsiblePerson ResponsibleOrganization IssuerOfPatientID PregnancyStatus
ReferringPhysicianName ReferringPhysicianAddress ReferringPhysicianTelephoneNumbers
PerformingPhysicianName NameOfPhysiciansReadingStudy PhysiciansOfRecord OperatorsName
RequestingPhysician ScheduledPerformingPhysicianName
InstitutionName InstitutionAddress InstitutionalDepartmentName StationName DeviceSerialNumber
AccessionNumber StudyID StudyDate SeriesDate AcquisitionDate ContentDate StudyTime SeriesTime
AcquisitionTime ContentTime AcquisitionDateTime InstanceCreationDate InstanceCreationTime
StudyInstanceUID SeriesInstanceUID SOPInstanceUID FrameOfReferenceUID MediaStorageSOPInstanceUID
ReferencedSOPInstanceUID StorageMediaFileSetUID IrradiationEventUID
StudyDescription SeriesDescription ImageComments RequestedProcedureDescription
PerformedProcedureStepDescription AdmittingDiagnosesDescription DerivationDescription
ProtocolName PerformedProcedureStepID RequestAttributesSequence ContentSequence
""".split())


def _require_pydicom():
    try:
        import pydicom  # noqa: F401
    except ImportError:
        raise DatasetError(
            "reading DICOM needs pydicom: install it with  python -m pip install 'imgtui[dicom]'"
        ) from None
    import pydicom

    return pydicom


def _json_value(value: Any) -> Any:
    """DICOM values (MultiValue, DSfloat, IS, PersonName ...) as plain JSON values."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [_json_value(v) for v in value]
    if isinstance(value, bytes):
        return None
    if isinstance(value, float) or type(value).__name__ in ("DSfloat", "DSdecimal"):
        return float(value)
    if isinstance(value, int) or type(value).__name__ == "IS":
        return int(value)
    return str(value)


def is_dicom_file(path: Path) -> bool:
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def find_dicom_files(root: Path, limit: int | None = None) -> list[Path]:
    files = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix.lower() in (".dcm", ".dicom"):
            files.append(p)
            if limit is not None and len(files) >= limit:
                break
    return files


class DicomDataset(Dataset):
    kind = "dicom"

    def __init__(
        self,
        root: str | Path,
        *,
        label_tag: str = "Modality",
        labels_csv: str | Path | None = None,
        extra_tags: tuple[str, ...] = (),
        allow_identifying: bool = False,
        on_error: str = "stop",
        warn: Callable[[str], None] | None = None,
        series: bool = False,
    ) -> None:
        self.pydicom = _require_pydicom()
        self.series = bool(series)
        self.root = Path(root)
        if not self.root.exists():
            raise DatasetError(f"{self.root}: no such file or folder")
        bad = sorted(t for t in (*extra_tags, label_tag) if t in IDENTIFYING_TAGS)
        if bad and not allow_identifying:
            raise DatasetError(
                f"refusing to copy patient-identifying DICOM attribute(s) {', '.join(bad)}; "
                "pass allow_identifying=True only if the store may hold identifying data"
            )
        self.label_tag, self.extra_tags = label_tag, tuple(extra_tags)
        self.allow_identifying = allow_identifying
        if on_error not in ("stop", "skip"):
            raise DatasetError(f"on_error must be 'stop' or 'skip', got {on_error!r}")
        self.on_error, self.warn = on_error, warn
        self.files = [self.root] if self.root.is_file() else find_dicom_files(self.root)
        if not self.files:
            raise DatasetError(f"{self.root}: no DICOM files (*.dcm) found")
        self._file_index = {self._rel(p): k for k, p in enumerate(self.files)}
        self.labels: dict[str, str] | None = None
        if labels_csv is not None:
            self.labels = self._read_labels(Path(labels_csv))

    def _read_labels(self, path: Path) -> dict[str, str]:
        try:
            with open(path, newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
        except OSError as exc:
            raise DatasetError(f"{path}: cannot read labels ({exc.strerror})") from None
        if not rows or "file" not in rows[0] or "label" not in rows[0]:
            raise DatasetError(f"{path}: labels CSV needs a header with 'file' and 'label' columns")
        return {r["file"]: r["label"] for r in rows}

    @property
    def length(self) -> int | None:
        return None  # multi-frame files add records; known only after reading headers

    def describe(self) -> str:
        what = ", one 3-D record per series" if self.series else ""
        return f"DICOM folder {self.root} ({len(self.files):,} files{what})"

    def _rel(self, path: Path) -> str:
        return path.name if self.root.is_file() else str(path.relative_to(self.root))

    def _fail(self, msg: str) -> None:
        if self.on_error == "skip":
            if self.warn is not None:
                self.warn(msg)
            return
        raise DatasetError(msg)

    def read_file(self, path: Path) -> list[Record]:
        """All frames of one file as records (DatasetError naming the file when it cannot)."""
        pydicom = self.pydicom
        rel = self._rel(path)
        try:
            ds = pydicom.dcmread(path)
        except Exception as exc:
            raise DatasetError(f"{rel}: not a readable DICOM file ({str(exc).splitlines()[0]})") from None
        if "PixelData" not in ds:
            raise DatasetError(f"{rel}: DICOM file has no pixel data")
        try:
            arr = ds.pixel_array
        except Exception as exc:
            text = " ".join(str(exc).split())
            if "missing dependencies" in text or "plugin" in text.lower() or isinstance(exc, NotImplementedError):
                tsx = ds.file_meta.TransferSyntaxUID.name if "TransferSyntaxUID" in ds.file_meta else "compressed"
                raise DatasetError(
                    f"{rel}: pixel data uses {tsx} and no decoder for it is installed "
                    "(install pylibjpeg with pylibjpeg-libjpeg/-openjpeg, or gdcm)"
                ) from None
            raise DatasetError(f"{rel}: pixel data cannot be decoded ({text[:200]})") from None
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        if frames == 1:
            arr = arr[None]
        meta_common = self._metadata(ds, rel)
        label = self._label(ds, rel)
        records = []
        for f, frame in enumerate(arr):
            frame = self._pixels(np.asarray(frame), rel)
            if samples == 1 and frame.ndim != 2:
                raise DatasetError(f"{rel}: unexpected pixel array shape {frame.shape}")
            meta = dict(meta_common)
            if frames > 1:
                meta["frame"] = f
            records.append(Record(np.ascontiguousarray(frame), label, meta))
        return records

    def _pixels(self, a: np.ndarray, rel: str) -> np.ndarray:
        """The frame as it is (native byte order): every DICOM pixel type is a record dtype."""
        dt = a.dtype.newbyteorder("=")
        if dt not in DTYPE_CODES:
            raise DatasetError(f"{rel}: {a.dtype} pixels are not supported (imgtui stores {DTYPES_TEXT})")
        return a.astype(dt, copy=False)

    def _label(self, ds: Any, rel: str) -> int | str:
        if self.labels is not None:
            if rel not in self.labels:
                raise DatasetError(f"{rel}: no row for this file in the labels CSV")
            value = self.labels[rel]
            return int(value) if value.lstrip("-").isdigit() else value
        value = ds.get(self.label_tag)
        if value is None:
            return ""
        value = _json_value(value)
        return value if isinstance(value, (int, str)) else str(value)

    def _metadata(self, ds: Any, rel: str) -> dict:
        if self.allow_identifying:
            meta: dict[str, Any] = {"file": rel}
        else:  # a file name may name the patient: a reference that does not
            meta = {"file_ref": f"file-{self._file_index[rel]:06d}"}
        for tag in (*ALLOWED_TAGS, *self.extra_tags):
            if tag in IDENTIFYING_TAGS and not self.allow_identifying:
                continue
            if tag in ds:
                value = _json_value(ds.get(tag))
                if value is not None:
                    meta[tag] = value
        return meta

    def __iter__(self) -> Iterator[Record]:
        if self.series:
            yield from self._series_records()
            return
        for path in self.files:
            try:
                recs = self.read_file(path)
            except DatasetError as exc:
                self._fail(str(exc))
                continue
            yield from recs


    # -- series -----------------------------------------------------------------------------
    def _series_of(self) -> list[list[tuple[tuple, Path]]]:
        """The files grouped by SeriesInstanceUID (in order of first appearance), each group
        sorted: [(sort key, path), ...]. Only headers are read here."""
        groups: dict[str, list[tuple[tuple, Path]]] = {}
        for n, path in enumerate(self.files):
            try:
                ds = self.pydicom.dcmread(path, stop_before_pixels=True)
            except Exception as exc:
                self._fail(f"{self._rel(path)}: not a readable DICOM file ({str(exc).splitlines()[0]})")
                continue
            uid = str(ds.get("SeriesInstanceUID", "") or f"no-series-{n}")
            groups.setdefault(uid, []).append((_slice_key(ds, n), path))
        return [sorted(g, key=lambda kp: kp[0]) for g in groups.values()]

    def _series_records(self) -> Iterator[Record]:
        for k, group in enumerate(self._series_of()):
            rels = [self._rel(p) for _key, p in group]
            where = f"series-{k:04d} ({rels[0]}{f' … {rels[-1]}' if len(rels) > 1 else ''})"
            try:
                frames: list[Record] = []
                for _key, path in group:
                    frames.extend(self.read_file(path))
                first = frames[0].image
                odd = next((j for j, r in enumerate(frames) if r.image.shape != first.shape or r.image.dtype != first.dtype), None)
                if odd is not None:
                    raise DatasetError(
                        f"{where}: slice {odd} is {'x'.join(map(str, frames[odd].image.shape))} {frames[odd].image.dtype}, "
                        f"slice 0 {'x'.join(map(str, first.shape))} {first.dtype}: not one volume (import it without --series)"
                    )
            except DatasetError as exc:
                self._fail(str(exc))
                continue
            volume = np.stack([r.image for r in frames])
            if volume.ndim == 3 and volume.shape[-1] in (1, 3, 4):  # keep it a volume, not an image with channels
                volume = volume[..., None]
            meta = {key: v for key, v in frames[0].metadata.items() if key not in ("InstanceNumber", "frame")}
            meta.update(series_ref=f"series-{k:04d}", slices=len(frames))
            positions = [key[1] for key, _p in group if key[0] == 0]
            if len(positions) == len(group) == len(frames):
                meta["slice_positions"] = [round(float(v), 6) for v in positions]
                step = float(np.median(np.diff(positions))) if len(positions) > 1 else None
                spacing = meta.get("PixelSpacing")
                if step is not None and isinstance(spacing, list) and len(spacing) == 2:
                    meta["spacing"] = [round(step, 6), *spacing]
            yield Record(volume, frames[0].label, meta)


def _slice_key(ds: Any, n: int) -> tuple:
    """How a file sorts within its series: (0, position along the slice normal) when the header has
    ImagePositionPatient and ImageOrientationPatient, else (1, InstanceNumber), else (2, file order)."""
    try:
        ipp = [float(v) for v in ds.ImagePositionPatient]
        iop = [float(v) for v in ds.ImageOrientationPatient]
        if len(ipp) == 3 and len(iop) == 6:
            normal = np.cross(iop[:3], iop[3:])
            return (0, float(np.dot(normal, ipp)), n)
    except (AttributeError, TypeError, ValueError):
        pass
    number = ds.get("InstanceNumber")
    try:
        return (1, float(number), n)
    except (TypeError, ValueError):
        return (2, float(n), n)


def real_values(record: Record) -> np.ndarray:
    """The record's pixels as the scanner's stored values: the image itself, or, for a record of a
    store written before signed pixels were kept as int16 (``stored_offset`` in its metadata), the
    uint16 image shifted back (as int32)."""
    offset = (record.metadata or {}).get("stored_offset")
    if isinstance(offset, int) and not isinstance(offset, bool) and offset and record.image.dtype.kind == "u":
        return record.image.astype(np.int32) + offset
    return record.image
