"""The LMDB backend: records packed in blocks, one LMDB value per block.

``store.py`` writes and reads it, ``mutator.py`` changes it; see ``store.py`` for the layout.
"""

from __future__ import annotations

from pathlib import Path

from ..base import Backend, Capabilities, Option
from .mutator import LmdbMutator
from .store import (  # noqa: F401
    DEFAULT_BLOCK_BYTES,
    DEFAULT_MAP_SIZE,
    MIN_MAP_SIZE,
    LmdbReader,
    LmdbWriter,
    pack_block,
    unpack_block,
)


class LmdbBackend(Backend):
    name = "lmdb"
    display_name = "LMDB"
    description = "records packed in ~256 KiB blocks in a memory-mapped LMDB database (a folder)"
    colour = "#e8a33c"
    writer_cls = LmdbWriter
    reader_cls = LmdbReader
    mutator_cls = LmdbMutator
    suffix = ".lmdb"
    options = (
        Option("encoding", str, "raw", "how pixels are stored in a block", choices=("raw", "png")),
        Option("png_level", int, 1, "PNG level when encoding=png", min=0, max=9, requires=("encoding", ("png",))),
        Option("block_bytes", int, DEFAULT_BLOCK_BYTES, "bytes of pixels per LMDB value (block)", min=4096, max=1 << 30),
        Option("map_size", int, DEFAULT_MAP_SIZE, "initial map size in bytes (it grows by itself)", min=MIN_MAP_SIZE, max=1 << 50),
    )
    capabilities = Capabilities(single_file=False, parallel_readers=True, parallel_threads=True)
    benchmark_by_default = True

    @classmethod
    def detect(cls, path: Path) -> bool:
        p = Path(path)
        return p.is_dir() and (p / "data.mdb").is_file()

    @classmethod
    def recipe(cls) -> str:
        return (
            "lmdb.open(path, readonly=True, max_dbs=4) (keep the lock: a writer may change the store); db 'blocks': key = first record index "
            "(8-byte big-endian), value = '<4sIQ' header (b'IMB1', count, first) + count 32-byte entries "
            "'<u4 offset,nbytes,crc,h,w; <u2 c; u1 dtype(1=u8,2=u16,3=i16,4=u4,5=i4,6=f4,7=f8,8=bool,9=i1),ndim,enc(0=raw,1=png); <u4 d (depth of a 3-D record, 0 for an image); 3 pad' + payloads; "
            "db 'labels': same keys, JSON [[label, metadata], ...]; db 'meta': key 'manifest' (JSON)"
        )


