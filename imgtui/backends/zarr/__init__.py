"""The Zarr v3 backend: a folder that is a zarr v3 group (the chunked-array format OME-Zarr builds on).

``store.py`` writes and reads it (see there for the layout). Changes (append, overwrite, delete)
rewrite the store beside itself and switch it in atomically (``RewriteMutator``).
Needs the optional extra: ``pip install 'imgtui[zarr]'`` (zarr-python >= 3).
"""

from __future__ import annotations

from pathlib import Path

from ..base import Backend, Capabilities, Option
from ..mutate import RewriteMutator
from ..base import LazyClass
from .layout import COMPRESSORS, MANIFEST, read_group_attrs  # noqa: F401


class ZarrBackend(Backend):
    name = "zarr"
    display_name = "Zarr (v3 chunked arrays)"
    description = "a zarr v3 group (a folder): an N x H x W x C array in sharded chunks (or flat bytes + offsets), labels, metadata, checksums"
    colour = "#b061c9"
    writer_cls = LazyClass("imgtui.backends.zarr.store", "ZarrWriter")
    reader_cls = LazyClass("imgtui.backends.zarr.store", "ZarrReader")
    mutator_cls = RewriteMutator
    suffix = ".zarr"
    options = (
        Option("compressor", str, "none", "codec of the pixel chunks (blosc: zstd with byte shuffle)", choices=COMPRESSORS),
        Option("compression_level", int, None, "level of the compressor: zstd 1-22 (3), blosc and gzip 0-9 (5, 6)", min=0, max=22,
               requires=("compressor", ("zstd", "blosc", "gzip"))),
        Option("chunk_records", int, None, "records per chunk (default: whole records filling ~256 KiB, 64 KiB compressed)", min=1, max=1 << 30),
        Option("shard_records", int, None, "records per shard file, a multiple of chunk_records (default: ~16 MiB; 0: no sharding)", min=0, max=1 << 30),
    )
    capabilities = Capabilities(
        append_in_place=False, overwrite_in_place=False, delete_in_place=False,
        single_file=False, parallel_readers=True, parallel_threads=True,
    )

    @classmethod
    def detect(cls, path: Path) -> bool:
        p = Path(path)
        if not p.is_dir():
            return False
        attrs = read_group_attrs(p)
        return attrs is not None and attrs.get("backend") == cls.name

    @classmethod
    def recipe(cls) -> str:
        return (
            "g = zarr.open_group(path, mode='r'); g['images'][i] is record i (N x H x W [x C]); "
            "variable shapes: o = g['offsets']; np.frombuffer(g['pixels'][o[i]:o[i+1]].tobytes(), "
            "['<u1','<u2','<i2','<u4','<i4','<f4','<f8','?','<i1'][g['dtypes'][i]]).reshape(g['shapes'][i] without its zeros: (D, H, W, C), D = 0 for an image, C = 0 for no channels); labels in "
            "g['labels'] (a str label is an int where g['label_is_int'] is 1), metadata JSON in "
            "g['metadata']; complete when imgtui-manifest.json is there"
        )
