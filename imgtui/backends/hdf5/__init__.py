"""The HDF5 backend: one .h5 file written with h5py.

``store.py`` writes and reads it, ``mutator.py`` changes it; see ``store.py`` for the layout.
"""

from __future__ import annotations

from pathlib import Path

import h5py

from ..base import Backend, Capabilities, Option
from .mutator import Hdf5Mutator
from .store import (  # noqa: F401
    COMPRESSIONS,
    LAYOUTS,
    Hdf5Reader,
    Hdf5Writer,
    _attr_str,
    _has_signature,
    _imgtui_marker_in_head,
)


class Hdf5Backend(Backend):
    name = "hdf5"
    display_name = "HDF5"
    description = "one .h5 file: an N x H x W x C array (or vlen bytes + shapes), labels, metadata, checksums"
    colour = "#5fbf6a"
    writer_cls = Hdf5Writer
    reader_cls = Hdf5Reader
    mutator_cls = Hdf5Mutator
    suffix = ".h5"
    options = (
        Option("layout", str, "auto", "images dataset layout", choices=LAYOUTS),
        Option("compression", str, "none", "filter of the pixel datasets (images, or pixels of varying shapes)", choices=COMPRESSIONS),
        Option("level", int, None, "gzip level 0-9 (compression=gzip)", min=0, max=9,
               requires=("compression", ("gzip",)), implied=4),
        Option("chunk_records", int, None, "records per chunk (default: ~1 MiB chunks)", min=1, max=1 << 30),
    )
    capabilities = Capabilities(
        append_in_place=True, overwrite_in_place=True, delete_in_place=False,
        single_file=True, parallel_readers=True, parallel_threads=False,
    )
    benchmark_by_default = True

    @classmethod
    def detect(cls, path: Path) -> bool:
        p = Path(path)
        if not p.is_file() or not _has_signature(p):
            return False
        if _imgtui_marker_in_head(p):
            # the writer's root attributes (format "imgtui", format_version ...) in the first
            # KiBs: an imgtui file, known without an h5py open (the reader opens it next: one
            # open instead of two, ~0.5 ms of "open + read one record"); the reader then says
            # what is wrong with it, if anything
            return True
        try:
            with h5py.File(p, "r") as f:
                return _attr_str(f.attrs.get("format")) == "imgtui"
        except (OSError, KeyError, ValueError, RuntimeError):
            # HDF5 refuses to open it (or its damaged metadata fails a checksum): an imgtui file whose writer was killed (or is still running)
            # or a truncated/damaged one. The writer flushes its root attributes first, so an
            # imgtui file names itself in its first bytes; the reader then explains what is wrong.
            return _imgtui_marker_in_head(p)

    @classmethod
    def recipe(cls) -> str:
        return (
            "h5py.File(path)['images'][i] is record i (N x H x W [x C]); labels in 'labels' "
            "(a str label is an int where 'label_is_int' is 1), metadata JSON in 'metadata'; "
            "variable shapes: shape = f['shapes'][i] without its zeros ((D, H, W, C), D = 0 for an image, C = 0 for "
            "no channels), dtype = ['<u1','<u2','<i2','<u4','<i4','<f4','<f8','?','<i1'][f['dtypes'][i]], "
            "o = f['offsets'][i]: np.frombuffer(f['pixels'][o : o + prod(shape) * dtype.itemsize], dtype).reshape(shape) "
            "(stores before format version 5: np.frombuffer(f['images_flat'][i], dtype))"
        )
