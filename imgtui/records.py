"""The record model: an image array, a label and a metadata dict, plus validation and checksums."""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np
import xxhash

from .errors import InvalidRecordError

Label = Union[int, str]

#: dtypes a record image may have, each stored bit-exact by every backend (float NaN payloads and
#: -0.0 included: pixels are copied as bytes, never converted). The number is the dtype's code in
#: the binary indexes of the LMDB, WebDataset and Zarr backends (1 and 2 were the only codes
#: before, so stores written then keep reading).
DTYPE_CODES = {
    np.dtype(np.uint8): 1,
    np.dtype(np.uint16): 2,
    np.dtype(np.int16): 3,
    np.dtype(np.uint32): 4,
    np.dtype(np.int32): 5,
    np.dtype(np.float32): 6,
    np.dtype(np.float64): 7,
    np.dtype(np.bool_): 8,
    np.dtype(np.int8): 9,
}
#: code -> the dtype as stored (little-endian)
CODE_DTYPES = {code: dt.newbyteorder("<") for dt, code in DTYPE_CODES.items()}
SUPPORTED_DTYPES = tuple(DTYPE_CODES)
#: dtype name (``str(dtype)``, as manifests and tables write it) -> native dtype
DTYPE_NAMES = {dt.name: dt for dt in SUPPORTED_DTYPES}
#: the one-line list used in error messages
DTYPES_TEXT = ", ".join(dt.name for dt in SUPPORTED_DTYPES)
#: channel counts allowed for HxWxC images
SUPPORTED_CHANNELS = (1, 3, 4)
#: the largest single image imgtui accepts (bytes of pixels); PNG and LMDB values stay below 2 GiB
MAX_IMAGE_BYTES = (1 << 31) - 1


@dataclass
class Record:
    image: np.ndarray
    label: Label = 0
    metadata: dict = field(default_factory=dict)

    @property
    def meta_json(self) -> str:
        """The metadata as compact JSON (cached when the record was validated for writing)."""
        text = self.__dict__.get("_meta_json")
        if text is None:
            text = dumps_metadata(self.metadata)
        return text

    def __eq__(self, other: object) -> bool:  # bit-exact equality, used by tests and verify
        if not isinstance(other, Record):
            return NotImplemented
        return (
            self.label == other.label
            and type(self.label) is type(other.label)
            and self.metadata == other.metadata
            and self.image.dtype == other.image.dtype
            and self.image.shape == other.image.shape
            and same_pixels(self.image, other.image)
        )


def same_pixels(a: np.ndarray, b: np.ndarray) -> bool:
    """True when two arrays of one dtype and shape hold the same bytes: NaN equals the same NaN
    (payload included) and -0.0 differs from 0.0, unlike ``np.array_equal``."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind in "f":
        a = np.ascontiguousarray(a).view(f"u{a.dtype.itemsize}")
        b = np.ascontiguousarray(b).view(f"u{b.dtype.itemsize}")
    return bool(np.array_equal(a, b))


def validate_image(image: Any, where: str = "image") -> np.ndarray:
    """Return ``image`` as a C-contiguous native-endian array, or raise InvalidRecordError."""
    if not isinstance(image, np.ndarray):
        raise InvalidRecordError(f"{where}: expected a numpy array, got {type(image).__name__}")
    dt = image.dtype
    if not dt.isnative and dt.newbyteorder("=") in DTYPE_CODES:
        image = image.astype(dt.newbyteorder("="))  # a byte swap: every value (NaN payloads too) kept
        dt = image.dtype
    if dt not in DTYPE_CODES:
        raise InvalidRecordError(f"{where}: unsupported dtype {dt} (imgtui stores {DTYPES_TEXT})")
    if image.ndim == 4:
        if image.shape[3] not in SUPPORTED_CHANNELS:
            raise InvalidRecordError(
                f"{where}: unsupported channel count {image.shape[3]} in a DxHxWxC volume (use 1, 3 or 4)"
            )
    elif image.ndim not in (2, 3):
        raise InvalidRecordError(
            f"{where}: expected HxW, HxWxC, DxHxW or DxHxWxC, got {image.ndim} dimensions {tuple(image.shape)}"
        )
    if 0 in image.shape:
        raise InvalidRecordError(f"{where}: image has 0 pixels (shape {tuple(image.shape)})")
    if image.nbytes > MAX_IMAGE_BYTES:
        raise InvalidRecordError(
            f"{where}: image of {image.nbytes:,} bytes is too large (limit {MAX_IMAGE_BYTES:,})"
        )
    image = np.ascontiguousarray(image)
    if dt == np.bool_ and image.view(np.uint8).max(initial=0) > 1:
        # a bool array viewed from other bytes: store its truth values (0/1), which is what
        # numpy compares and what every backend can write back exactly
        image = image.view(np.uint8) != 0
    return image


def is_volume(shape: tuple) -> bool:
    """A 3-D record: DxHxWxC, or a 3-D array whose last axis is not a channel count (1, 3 or 4).
    An HxWx1/3/4 array is an image with channels; a DxHxW volume whose width is 1, 3 or 4 is stored
    bit-exact all the same (every backend keeps the shape as given), only shown as an image."""
    return len(shape) == 4 or (len(shape) == 3 and shape[2] not in SUPPORTED_CHANNELS)


def shape4(shape: tuple) -> tuple[int, int, int, int]:
    """A record's shape as the (D, H, W, C) the backends' indexes keep: D = 0 for an image, C = 0
    for no channel axis. Every shape validate_image accepts maps to one tuple and back."""
    if len(shape) == 2:
        return (0, int(shape[0]), int(shape[1]), 0)
    if len(shape) == 3:
        if shape[2] in SUPPORTED_CHANNELS:
            return (0, int(shape[0]), int(shape[1]), int(shape[2]))
        return (int(shape[0]), int(shape[1]), int(shape[2]), 0)
    d, h, w, c = shape
    return (int(d), int(h), int(w), int(c))


def shape_from4(d: int, h: int, w: int, c: int) -> tuple[int, ...]:
    """The inverse of :func:`shape4`."""
    head = (int(h), int(w)) if not d else (int(d), int(h), int(w))
    return head + ((int(c),) if c else ())


def shapes4(shapes: np.ndarray) -> np.ndarray:
    """An N x 3 (H, W, C) index of stores written before 3-D records, or an N x 4 (D, H, W, C)
    one, as N x 4."""
    shapes = np.asarray(shapes)
    if shapes.ndim == 2 and shapes.shape[1] == 3:
        return np.concatenate([np.zeros((len(shapes), 1), shapes.dtype), shapes], axis=1)
    return shapes


def shape_of_key(key: str) -> tuple[int, ...] | None:
    """The shape a manifest's shape key names (``"40x64x64"`` -> (40, 64, 64)); None if it is not one."""
    try:
        return tuple(int(v) for v in str(key).split("x"))
    except ValueError:
        return None


def shape_text(shape: tuple | str) -> str:
    """``32x32x3``; a volume says so: ``volume 40x64x64``. ``shape`` may be a manifest's shape key
    (``"40x64x64"``)."""
    if isinstance(shape, str):
        parsed = shape_of_key(shape)
        if parsed is None:
            return shape
        shape = parsed
    text = "x".join(map(str, shape))
    return f"volume {text}" if is_volume(shape) else text


def validate_label(label: Any, where: str = "label") -> Label:
    if isinstance(label, (bool, np.bool_)):
        raise InvalidRecordError(f"{where}: a label must be an int or a str, got bool")
    if isinstance(label, (int, np.integer)):
        value = int(label)
        if not -(1 << 63) <= value < (1 << 63):
            raise InvalidRecordError(f"{where}: integer label {value} does not fit in 64 bits")
        return value
    if isinstance(label, (str, np.str_)):
        return str(label)
    raise InvalidRecordError(f"{where}: a label must be an int or a str, got {type(label).__name__}")


def metadata_json(metadata: Any, where: str = "metadata") -> tuple[dict, str]:
    """Check ``metadata`` and return it with its compact JSON text (computed once)."""
    if metadata is None or (type(metadata) is dict and not metadata):
        return {}, "{}"
    if not isinstance(metadata, dict):
        raise InvalidRecordError(f"{where}: metadata must be a dict, got {type(metadata).__name__}")
    try:
        return metadata, _ENCODER.encode(metadata)
    except (TypeError, ValueError) as exc:
        raise InvalidRecordError(f"{where}: metadata is not JSON-serialisable ({exc})") from None


def validate_metadata(metadata: Any, where: str = "metadata") -> dict:
    return metadata_json(metadata, where)[0]


def validate_record(record: Any, index: int | None = None) -> Record:
    """Check a record (or an (image, label[, metadata]) tuple) and return a clean Record."""
    where = "record" if index is None else f"record {index}"
    if isinstance(record, tuple):
        record = Record(*record)
    if not isinstance(record, Record):
        raise InvalidRecordError(f"{where}: expected a Record, got {type(record).__name__}")
    meta, text = metadata_json(record.metadata, f"{where} metadata")
    rec = Record(
        validate_image(record.image, f"{where} image"),
        validate_label(record.label, f"{where} label"),
        meta,
    )
    rec.__dict__["_meta_json"] = text
    return rec


def _crc32(image: np.ndarray) -> int:
    return zlib.crc32(memoryview(np.ascontiguousarray(image)).cast("B")) & 0xFFFFFFFF


def _xxh3(image: np.ndarray) -> int:
    return xxhash.xxh3_64_intdigest(memoryview(np.ascontiguousarray(image)).cast("B")) & 0xFFFFFFFF


#: per-record checksum algorithms by the name a manifest's ``checksum`` field gives; stores
#: written before the field existed use crc32. New stores use xxh3 (the low 32 bits of XXH3-64):
#: 3.4x cheaper than crc32 on 10,000 CIFAR images and ~10x on large ones, which keeps checked
#: reads cheap (measured here: crc32 19.7 ms, xxh3 5.8 ms, a plain copy 6.6 ms for 10,000 32x32x3).
CHECKSUMS = {"crc32": _crc32, "xxh3": _xxh3}
#: the same functions on a contiguous bytes-like object (mask the result to 32 bits)
RAW_CHECKSUMS = {"crc32": zlib.crc32, "xxh3": xxhash.xxh3_64_intdigest}
#: what new stores use
CHECKSUM = "xxh3"


def checksum_fn(kind: str | None):
    """The checksum function of a store whose manifest says ``checksum: kind`` (None: crc32)."""
    try:
        return CHECKSUMS[kind or "crc32"]
    except KeyError:
        raise InvalidRecordError(f"unknown checksum kind {kind!r} (known: {', '.join(CHECKSUMS)})") from None


class LabelDigest:
    """One checksum over every record's label and metadata, in record order (XXH3-64), kept in
    the manifest as ``labels_digest``: verify recomputes it, so swapped labels, a forged metadata
    cell or a table cut short are caught (the per-record checksums cover the pixels)."""

    def __init__(self) -> None:
        self._h = xxhash.xxh3_64()

    def add(self, label: Label, meta_json: str) -> None:
        kind = "i" if isinstance(label, int) else "s"
        self._h.update(f"{kind}:{label}\x1f{meta_json or '{}'}\x1e".encode("utf-8", "surrogatepass"))

    def add_many(self, labels: list, metas_json: list | None = None) -> None:
        """``add`` for many records in one hash update (the same digest as one ``add`` each)."""
        if not labels:
            return
        if metas_json is None and set(map(type, labels)) == {int}:
            text = "i:" + "\x1f{}\x1ei:".join(map(str, labels)) + "\x1f{}\x1e"
        elif set(map(type, labels)) == {int} and "" not in metas_json:
            text = "".join(map("i:{}\x1f{}\x1e".format, labels, metas_json))  # no Python frame per record
        else:
            metas = metas_json if metas_json is not None else ("{}",) * len(labels)
            text = "".join(
                f"{'i' if isinstance(lab, int) else 's'}:{lab}\x1f{meta or '{}'}\x1e" for lab, meta in zip(labels, metas)
            )
        self._h.update(text.encode("utf-8", "surrogatepass"))

    def add_record(self, label: Label, metadata: dict) -> None:
        self.add(label, dumps_metadata(metadata))

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def checksum(image: np.ndarray, kind: str = CHECKSUM) -> int:
    """32-bit checksum of the pixel bytes (C order, native byte order): xxh3 for new stores."""
    return CHECKSUMS[kind](image)


#: one encoder for all metadata: json.dumps with options builds a new encoder per call
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def dumps_metadata(metadata: dict) -> str:
    return _ENCODER.encode(metadata) if metadata else "{}"


def loads_metadata(text: str | bytes) -> dict:
    return json.loads(text) if text else {}
