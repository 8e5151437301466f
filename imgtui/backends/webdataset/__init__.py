"""The WebDataset backend: WebDataset-style tar shards (``NNNNNNNNN.npy``/``.png`` + ``.cls``/``.txt``
+ ``.json`` members) that the ``webdataset`` package streams, plus an index of member offsets that
gives imgtui random access.

``store.py`` writes and reads it (see there for the layout); changes rewrite the store beside
itself and switch it in atomically (``RewriteMutator``).
"""

from __future__ import annotations

from pathlib import Path

from ..base import Backend, Capabilities, Option
from ..mutate import RewriteMutator
from .store import (  # noqa: F401
    DEFAULT_SHARD_BYTES,
    ENCODINGS,
    INDEX,
    INDEX_DTYPE,
    MANIFEST,
    MAX_SHARD_BYTES,
    MIN_SHARD_BYTES,
    WdsReader,
    WdsWriter,
    _load_manifest,
    looks_like_store,
    npy_header,
    record_key,
    shard_name,
)


class WebDatasetBackend(Backend):
    name = "webdataset"
    display_name = "WebDataset (tar shards)"
    description = "tar shards of .npy/.png + .cls/.txt + .json members (webdataset's format), index.npy of member offsets"
    colour = "#b07cd8"
    suffix = ".wds"
    writer_cls = WdsWriter
    reader_cls = WdsReader
    mutator_cls = RewriteMutator
    options = (
        Option("encoding", str, "raw", "image member: raw = .npy (exact pixels), png = lossless .png", choices=ENCODINGS),
        Option("png_level", int, 1, "PNG level when encoding=png", min=0, max=9, requires=("encoding", ("png",))),
        Option("shard_bytes", int, DEFAULT_SHARD_BYTES, "bytes per tar shard (a new shard starts before one would pass it)",
               min=MIN_SHARD_BYTES, max=MAX_SHARD_BYTES),
    )
    # a change rewrites the whole store (tar members cannot be taken out or replaced in place)
    capabilities = Capabilities(
        append_in_place=False, overwrite_in_place=False, delete_in_place=False,
        single_file=False, parallel_readers=True, parallel_threads=True,
    )

    @classmethod
    def detect(cls, path: Path) -> bool:
        p = Path(path)
        if not p.is_dir():
            return False
        named = cls.manifest_names_me(p, MANIFEST)
        return looks_like_store(p) if named is None else named

    @classmethod
    def recipe(cls) -> str:
        return (
            "webdataset.WebDataset('STORE/shard-{000000..NNNNNN}.tar', shardshuffle=False).decode() yields per "
            "record {'__key__': index (9 digits), 'npy': image (or 'png' bytes), 'cls': int label or 'txt': str "
            "label, 'json': metadata when not empty}; `tar tf STORE/shard-000000.tar` lists the members; "
            "np.load('STORE/index.npy') gives each record's shard, member offsets and sizes for random access"
        )
