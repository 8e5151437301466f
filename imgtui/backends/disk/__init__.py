"""The disk backend: a folder with one lossless PNG (or TIFF, for signed, 32-bit and float pixels) per record, a CSV table and a manifest.

``store.py`` writes and reads it, ``mutator.py`` changes it; see ``store.py`` for the layout.
"""

from __future__ import annotations

from pathlib import Path

from ..base import Backend, Capabilities, Option
from .mutator import DiskMutator
from .store import (  # noqa: F401
    COLUMNS,
    DEFAULT_PNG_LEVEL,
    FILES_PER_FOLDER,
    IMAGES,
    MANIFEST,
    TABLE,
    DiskReader,
    DiskWriter,
    _is_disk_folder,
    decode_png,
    encode_png,
    image_name,
)


class DiskBackend(Backend):
    name = "disk"
    display_name = "disk (PNG files)"
    description = "a folder with one lossless PNG (TIFF for signed/32-bit/float pixels) per record, records.csv and manifest.json"
    colour = "#4c9be8"
    suffix = ""
    writer_cls = DiskWriter
    reader_cls = DiskReader
    mutator_cls = DiskMutator
    options = (
        Option("png_level", int, DEFAULT_PNG_LEVEL, "PNG zlib compression level (0 = none, 9 = smallest)", min=0, max=9),
    )
    capabilities = Capabilities(single_file=False, parallel_readers=True, parallel_threads=True)
    benchmark_by_default = True

    @classmethod
    def detect(cls, path: Path) -> bool:
        path = Path(path)
        if not path.is_dir():
            return False
        named = cls.manifest_names_me(path, MANIFEST)
        if named is not None:
            return named
        if (path / MANIFEST).is_file():  # a manifest that cannot be read: the reader says what is wrong
            return _is_disk_folder(path)
        if not _is_disk_folder(path):
            return False
        try:  # an incomplete store: records.csv written by imgtui (our header) + images/
            with open(path / TABLE, encoding="utf-8", newline="") as f:
                return f.readline().strip() == ",".join(COLUMNS)
        except (OSError, UnicodeDecodeError):
            return False

    @classmethod
    def recipe(cls) -> str:
        return (
            "pandas.read_csv(T, dtype={'label': str}) lists every record, where T is the table manifest.json "
            "names ('table'; records.csv until the store is changed); "
            "PIL.Image.open(file) reads each PNG (reshape to the shape column; 16-bit RGB/RGBA files "
            "need a 16-bit reader such as imgtui.backends.disk.decode_png or OpenCV; a bool record is a 0/255 "
            "8-bit PNG: image > 0); int8/int16/uint32/int32/float32/float64 records are baseline TIFF files (.tif, "
            "deflate, SampleFormat int/float): tifffile.imread reads them exactly, Pillow the 1-channel int16/int32/"
            "float32 ones; ImageJ/Fiji opens baseline TIFF but makes float64 and 32-bit integers float32; "
            "a 3-D record (DxHxW[xC]) is a multi-page TIFF of its slices: tifffile.imread gives the stack"
        )
