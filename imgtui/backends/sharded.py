"""Sharded stores: a folder of ordinary imgtui stores of one backend plus ``manifest.json``.

Layout of ``DEST/``::

    shard-00000.h5          each shard is a normal, complete imgtui store (disk, LMDB or HDF5)
    shard-00001.h5
    ...
    manifest.json           {"format": "imgtui-sharded", "format_version": 1, "backend": "hdf5",
                             "options": {...}, "count": N, "shards": [{"file", "range": [start, stop),
                             "count", "raw_bytes", "checksum"}, ...], ...}

The manifest is written last and atomically (temp file, fsync, ``os.replace``): a folder of shards
without it is an *incomplete* store (a conversion that was killed; ``--resume`` finishes it).
A shard's ``checksum`` is the crc32 over its per-record pixel crc32 list (uint32 little-endian,
see :func:`records_checksum`), so it can be re-checked without reading any pixels.

``ShardedReader`` reads such a folder like a single store: global index -> (shard, local index)
with bisect, shards opened lazily, ``get_many`` grouped per shard with order preserved.
"""

from __future__ import annotations

import json
import os
import re
import time
import zlib
from bisect import bisect_right
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .._version import __version__
from ..errors import (
    CorruptStoreError,
    FormatVersionError,
    ImgtuiError,
    IncompleteStoreError,
    StoreNotFoundError,
    WrongBackendError,
)
from ..records import Label, Record
from .base import ProgressFn, atomic_write_text, StoreReader, VerifyResult, _one_line, path_size

SHARDED_FORMAT = "imgtui-sharded"
SHARDED_FORMAT_VERSION = 1
MANIFEST = "manifest.json"
#: folder inside DEST holding the plan and one "done" record per finished shard while converting
PROGRESS_DIR = ".imgtui-shards"
#: suffix of a shard while its writer works on it (renamed to the final name when complete)
PARTIAL = ".partial"
CHECKSUM_KIND = "crc32 of the shard's per-record pixel crc32 list (uint32 little-endian)"

#: shard names: ``shard-NNNNN`` + a backend's suffix (from the registry) [+ ``.partial``]
_SHARD_RE = re.compile(r"^shard-(\d{5,})((?:\.[a-z0-9]+)?)(\.partial)?$")
#: shard names plus the temporaries their writers build beside them (``... .imgtui-tmp-PID``)
_ENTRY_RE = re.compile(r"^shard-(\d{5,})((?:\.[a-z0-9]+)?)(\.partial)?(\.imgtui-[a-z]+-\d+)?$")


def _suffix_backends() -> dict[str, str]:
    """Store suffix -> backend name, for every registered backend ('' is a folder store: disk)."""
    from .registry import BACKENDS, suffix_of

    out: dict[str, str] = {}
    for name in BACKENDS:
        try:
            suffix = suffix_of(name)
        except ImgtuiError:
            continue  # an optional backend that is not installed
        out.setdefault(suffix, name)
    out[""] = "disk"
    return out
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgtp]?)(i?)(b?)\s*$", re.IGNORECASE)


# -- names, sizes, plans -------------------------------------------------------------------------
def shard_file_name(index: int, backend: str) -> str:
    """``shard-00003.h5`` / ``shard-00003.lmdb`` / ``shard-00003`` (disk stores are folders)."""
    from . import get_backend

    return f"shard-{index:05d}{get_backend(backend).suffix}"


def parse_size(text: str | int) -> int:
    """``500MB`` -> 500_000_000, ``1GiB`` -> 1_073_741_824, ``4096`` -> 4096 bytes."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        m = _SIZE_RE.match(str(text))
        if not m or (m.group(3) and not m.group(2)):
            raise ImgtuiError(f"bad size {str(text)!r}: use a number with a unit, e.g. 500MB, 1GB or 1GiB")
        number, prefix, binary = float(m.group(1)), m.group(2).lower(), bool(m.group(3))
        power = "kmgtp".find(prefix) + 1 if prefix else 0
        value = int(number * (1024 if binary else 1000) ** power)
    if value <= 0:
        raise ImgtuiError(f"bad size {str(text)!r}: a shard size must be more than 0 bytes")
    return value


def format_size(n: int) -> str:
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= div:
            return f"{n / div:,.1f} {unit}"
    return f"{n:,} B"


def plan_by_count(total: int, shards: int) -> list[tuple[int, int]]:
    """``shards`` ranges [start, stop) covering ``total`` records as evenly as possible."""
    if shards < 1:
        raise ImgtuiError(f"--shards must be at least 1, got {shards}")
    shards = max(1, min(shards, total))
    base, extra = divmod(total, shards)
    out, start = [], 0
    for k in range(shards):
        stop = start + base + (1 if k < extra else 0)
        out.append((start, stop))
        start = stop
    return out


def plan_by_size(total: int, shard_bytes: int, bytes_per_record: float) -> list[tuple[int, int]]:
    """Ranges of about ``shard_bytes`` raw pixel bytes each (at least one record per shard)."""
    per = max(1, int(shard_bytes // max(1.0, bytes_per_record)))
    if total == 0:
        return [(0, 0)]
    return [(s, min(total, s + per)) for s in range(0, total, per)]


def records_checksum(crcs: Iterable[int]) -> int:
    """crc32 over a list of per-record crc32s stored as uint32 little-endian."""
    arr = np.asarray(list(crcs), dtype="<u4")
    return zlib.crc32(arr.tobytes()) & 0xFFFFFFFF


def store_checksum(reader: StoreReader) -> int:
    """The shard checksum of an open (single) store, from its stored per-record checksums."""
    crcs = []
    for i in range(len(reader)):
        c = reader._stored_checksum(i)
        if c is None:
            raise CorruptStoreError(f"{reader.path}: record {i} has no stored checksum")
        crcs.append(c)
    return records_checksum(crcs)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` atomically (temp file, fsync, ``os.replace``, directory fsync)."""
    atomic_write_text(path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")


# -- detection -----------------------------------------------------------------------------------
def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def shard_entries(path: Path) -> list[Path]:
    """Files/folders in ``path`` named like shards (``shard-00000...``), sorted."""
    try:
        return sorted(p for p in Path(path).iterdir() if _ENTRY_RE.match(p.name))
    except OSError:
        return []


def is_sharded(path: str | os.PathLike) -> bool:
    """True for a folder holding a sharded manifest, or shards without one (an incomplete store)."""
    p = Path(path)
    if not p.is_dir():
        return False
    m = _load_json(p / MANIFEST) if (p / MANIFEST).is_file() else None
    if isinstance(m, dict) and m.get("format") == SHARDED_FORMAT:
        return True
    if isinstance(m, dict) and m.get("format") == "imgtui":
        return False  # a disk store's own manifest
    # without a manifest: the progress folder a conversion creates first, or a first shard (cheap
    # checks only, so detecting a folder of 100,000 images stays fast)
    return (p / PROGRESS_DIR).is_dir() or any(
        (p / f"shard-00000{suffix}{part}").exists() for suffix in _suffix_backends() for part in ("", PARTIAL)
    )


def sharded_backend(path: str | os.PathLike) -> str:
    """The backend of the shards in a sharded folder (from its manifest, else from shard names)."""
    p = Path(path)
    m = _load_json(p / MANIFEST)
    if isinstance(m, dict) and m.get("format") == SHARDED_FORMAT and isinstance(m.get("backend"), str):
        return m["backend"]
    plan = _load_json(p / PROGRESS_DIR / "plan.json")
    if isinstance(plan, dict) and isinstance(plan.get("backend"), str):
        return plan["backend"]
    for e in shard_entries(p):
        return _suffix_backends().get(_ENTRY_RE.match(e.name).group(2) or "", "disk")
    return "disk"


def incomplete_message(path: Path) -> str:
    return (
        f"{path} is an incomplete sharded store: it has no {MANIFEST} (its conversion was interrupted or "
        "killed); finish it with --resume or re-create it with --overwrite"
    )


def read_sharded_manifest(path: str | os.PathLike) -> dict:
    """Load and check ``path/manifest.json``; one-line errors for every way it can be wrong."""
    p = Path(path)
    if not p.exists():
        raise StoreNotFoundError(f"{p}: no such file or folder")
    mpath = p / MANIFEST
    if not mpath.is_file():
        if is_sharded(p):
            raise IncompleteStoreError(incomplete_message(p))
        raise WrongBackendError(f"{p} is not a sharded imgtui store (no {MANIFEST} in it)")
    m = _load_json(mpath)
    if not isinstance(m, dict):
        raise CorruptStoreError(f"{mpath}: cannot be read as JSON; the sharded store is damaged")
    if m.get("format") != SHARDED_FORMAT:
        raise WrongBackendError(f"{p} is not a sharded imgtui store ({MANIFEST} is not an {SHARDED_FORMAT} manifest)")
    v = m.get("format_version")
    if not isinstance(v, int) or v > SHARDED_FORMAT_VERSION:
        raise FormatVersionError(
            f"{p} uses imgtui sharded format version {v}; this imgtui reads up to {SHARDED_FORMAT_VERSION} (upgrade imgtui)"
        )
    try:
        shards = m["shards"]
        expect = 0
        for s in shards:
            start, stop = (int(x) for x in s["range"])
            if start != expect or stop < start or int(s["count"]) != stop - start or not _SHARD_RE.match(str(s["file"])):
                raise ValueError(s.get("file"))
            if "/" in s["file"] or "\\" in s["file"] or s["file"] in (".", ".."):
                raise ValueError(s["file"])
            expect = stop
        if int(m["count"]) != expect:
            raise ValueError("count")
        str(m["backend"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptStoreError(f"{mpath}: the shard list is inconsistent ({_one_line(exc)}); the sharded store is damaged") from None
    return m


def make_sharded_manifest(
    backend: str, options: dict, entries: list[dict], *, source: str = "", shard_size: int | None = None
) -> dict:
    """The top-level manifest from the shard entries (each with its shard's statistics)."""
    shapes: Counter = Counter()
    dtypes: Counter = Counter()
    labels: Counter = Counter()
    kinds: set = set()
    shapes_trunc = labels_trunc = False
    shards = []
    for e in entries:
        st = e.get("stats", {})
        shapes.update(st.get("shapes", {}))
        dtypes.update(st.get("dtypes", {}))
        labels.update(st.get("labels", {}))
        kinds.update(st.get("label_kinds", []))
        shapes_trunc |= bool(st.get("shapes_truncated"))
        labels_trunc |= bool(st.get("labels_truncated"))
        shards.append({k: e[k] for k in ("file", "range", "count", "raw_bytes", "checksum", "bytes_on_disk") if k in e})
    return {
        "format": SHARDED_FORMAT,
        "format_version": SHARDED_FORMAT_VERSION,
        "imgtui_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "backend": backend,
        "options": options,
        "source": source,
        "shard_size": shard_size,
        "count": sum(int(e["count"]) for e in entries),
        "raw_bytes": sum(int(e.get("raw_bytes", 0)) for e in entries),
        "checksum_kind": CHECKSUM_KIND,
        "shards": shards,
        "shapes": dict(shapes.most_common()),
        "shapes_truncated": shapes_trunc,
        "dtypes": dict(dtypes),
        "labels": dict(labels.most_common()),
        "labels_truncated": labels_trunc,
        "label_kinds": sorted(kinds),
    }


# -- reader --------------------------------------------------------------------------------------
class ShardedReader(StoreReader):
    """A sharded folder read as one store. ``backend`` is the shards' backend; ``sharded`` is True."""

    sharded = True
    checks_reads = False  # each shard's reader checks its own records

    def __init__(self, path: str | os.PathLike, backend: str | None = None,
                 fetch: Callable[[str], Any] | None = None,
                 open_remote: Callable[[str, str], StoreReader | None] | None = None) -> None:
        """``fetch(file)``: for a store at a URL, brings shard ``file`` into the local mirror at
        ``path`` on first use (``backends.remote``); shards are then checked when fetched.
        ``open_remote(file, backend)``: shard ``file`` opened in place at the URL (ranged reads),
        or None to fetch it."""
        super().__init__(path)
        self._fetch = fetch
        self._open_remote = open_remote
        self._readers: list[StoreReader | None] = []
        m = read_sharded_manifest(self.path)
        if backend is not None and backend not in (m["backend"], "sharded"):
            raise WrongBackendError(f"{self.path} is a sharded {m['backend']} store, not {backend}")
        self.manifest = m
        self.backend = m["backend"]  # type: ignore[misc]  # per instance: the shards' backend
        self._shards: list[dict] = m["shards"]
        self._starts = [int(s["range"][0]) for s in self._shards]
        self._n = int(m["count"])
        self._readers = [None] * len(self._shards)
        for s in self._shards if fetch is None else ():
            if not (self.path / s["file"]).exists():
                raise StoreNotFoundError(self._missing_message(s))

    def _missing_message(self, s: dict) -> str:
        a, b = s["range"]
        return (
            f"{self.path}: shard {s['file']} (records {a:,}-{b - 1:,}) is missing; "
            "the sharded store is damaged (restore the file or re-create the store)"
        )

    @property
    def shard_files(self) -> list[str]:
        return [s["file"] for s in self._shards]

    def __len__(self) -> int:
        return self._n

    def shard(self, k: int) -> StoreReader:
        """Shard ``k``'s reader, opened on first use."""
        r = self._readers[k]
        if r is None:
            from . import open_store

            s = self._shards[k]
            p = self.path / s["file"]
            r = self._open_remote(s["file"], self.backend) if self._open_remote is not None else None
            if r is None and self._fetch is not None:
                try:
                    self._fetch(s["file"])
                except StoreNotFoundError:
                    raise StoreNotFoundError(self._missing_message(s)) from None
            if r is None and not p.exists():
                raise StoreNotFoundError(self._missing_message(s))
            if r is None:
                r = open_store(p, self.backend)
            r.check_reads = self.check_reads
            if len(r) != int(s["count"]):
                n = len(r)
                r.close()
                raise CorruptStoreError(
                    f"{self.path}: shard {s['file']} holds {n:,} records but the manifest says {int(s['count']):,}"
                )
            self._readers[k] = r
        return r

    def locate(self, index: int) -> tuple[int, int]:
        """Global (non-negative, in range) index -> (shard number, index inside the shard)."""
        k = bisect_right(self._starts, index) - 1
        while int(self._shards[k]["count"]) == 0 or index >= int(self._shards[k]["range"][1]):
            k += 1  # never for valid indices except past empty shards sharing a start
        return k, index - self._starts[k]

    def _read(self, index: int) -> Record:
        k, j = self.locate(index)
        return self.shard(k)._read(j)

    def get_many(self, indices: Sequence[int]) -> list[Record]:
        idx = [self._index(i) for i in indices]
        groups: dict[int, tuple[list[int], list[int]]] = {}
        for pos, i in enumerate(idx):
            k, j = self.locate(i)
            g = groups.setdefault(k, ([], []))
            g[0].append(pos)
            g[1].append(j)
        out: list[Record | None] = [None] * len(idx)
        for k, (positions, local) in groups.items():
            for pos, rec in zip(positions, self.shard(k).get_many(local)):
                out[pos] = rec
        return out  # type: ignore[return-value]

    def iter_batches(self, batch_size: int = 256):
        for k in range(len(self._shards)):
            if int(self._shards[k]["count"]) == 0:
                continue
            yield from self.shard(k).iter_batches(batch_size)

    def _labels(self) -> list[Label]:
        out: list[Label] = []
        for k in range(len(self._shards)):
            if int(self._shards[k]["count"]):
                out.extend(self.shard(k).labels())
        return out

    def _labels_array(self) -> np.ndarray:
        parts = [self.shard(k).labels_array() for k in range(len(self._shards)) if int(self._shards[k]["count"])]
        if not parts:
            return np.zeros(0, np.int64)
        if all(p.dtype == np.int64 for p in parts):
            return np.concatenate(parts)
        return np.concatenate([p.astype(object) for p in parts])

    def _stored_checksum(self, index: int) -> int | None:
        k, j = self.locate(index)
        return self.shard(k)._stored_checksum(j)

    def close(self) -> None:
        for k, r in enumerate(getattr(self, "_readers", [])):
            if r is not None:
                try:
                    r.close()
                finally:
                    self._readers[k] = None

    def info(self) -> dict:
        d = super().info()
        m = self.manifest
        from . import get_backend

        d.update(
            recipe=(
                f"{MANIFEST} lists the shards in order with their record ranges; each shard is an ordinary "
                f"{self.backend} store: {get_backend(self.backend).recipe()}"
            ),
            sharded=True,
            shards=len(self._shards),
            shard_size=m.get("shard_size"),
            source=m.get("source"),
            shard_list=[
                {
                    "file": s["file"],
                    "range": list(s["range"]),
                    "count": s["count"],
                    "raw_bytes": s.get("raw_bytes"),
                    "bytes_on_disk": path_size(self.path / s["file"]) if (self.path / s["file"]).exists() else None,
                }
                for s in self._shards
            ],
        )
        return d

    def verify(
        self,
        progress: ProgressFn | None = None,
        cancel: Callable[[], bool] | None = None,
        max_errors: int = 100,
    ) -> VerifyResult:
        """Verify each shard (its checksum in the manifest, then every record's pixels).

        Problems name the shard and the record: ``shard-00002.h5 record 17 (global 2017): ...``.
        """
        errors: list[str] = []
        checked = 0
        complete = True
        listed = {s["file"] for s in self._shards}
        for k, s in enumerate(self._shards):
            if cancel is not None and cancel():
                complete = False
                break
            name, start, count = s["file"], int(s["range"][0]), int(s["count"])
            try:
                r = self.shard(k)
            except Exception as exc:
                errors.append(f"{name}: cannot be opened ({_one_line(exc)})")
                checked += count
                continue
            try:
                got = store_checksum(r)
                want = s.get("checksum")
                if want is not None and f"{got:08x}" != str(want):
                    errors.append(f"{name}: its record checksums do not match the manifest (stored {want}, got {got:08x})")
            except Exception as exc:
                errors.append(f"{name}: its record checksums cannot be read ({_one_line(exc)})")

            def shard_progress(done: int, total: int, _base: int = checked) -> None:
                if progress is not None:
                    progress(_base + done, self._n)

            try:
                res = r.verify(progress=shard_progress, cancel=cancel, max_errors=max(1, max_errors - len(errors)))
            except Exception as exc:
                errors.append(f"{name}: verification failed ({_one_line(exc)})")
                checked += count
                continue
            for e in res.errors:
                errors.append(_rename_problem(name, start, e))
            checked += res.checked
            if res.checked < count and not res.errors:
                complete = False
            if len(errors) >= max_errors:
                break
        if not (self.path / MANIFEST).is_file():
            errors.append(f"{MANIFEST} is missing")
        for p in shard_entries(self.path):
            if p.name not in listed:
                errors.append(f"{p.name}: not listed in {MANIFEST} (a leftover of an interrupted conversion?)")
        return VerifyResult(ok=not errors and complete and checked == self._n, checked=checked, errors=errors)


_RECORD_RE = re.compile(r"^record (\d+)(:?)(.*)$", re.DOTALL)


def _rename_problem(shard: str, start: int, problem: str) -> str:
    m = _RECORD_RE.match(problem)
    if m:
        local = int(m.group(1))
        return f"{shard} record {local} (global {start + local}){m.group(2)}{m.group(3)}"
    return f"{shard}: {problem}"
