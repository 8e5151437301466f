"""Stores at URLs (``s3://``, ``gs://``, ``http(s)://``, ``file://``, any fsspec protocol): read in
place with ranged requests where the format allows it (see below), else through a local cache,
filled on first use, with a size limit and least-recently-used eviction (the way LitData caches
chunks).

Through the cache every backend reads a remote store as it reads a local one: LMDB needs a local
file for its memory map, and a whole store copied once is read at local speed afterwards. A
sharded store is fetched shard by shard: opening it fetches the manifest only, and each shard the
first time a record of it is read, so a reader that touches part of a large store downloads only
that part.

- the cache folder: ``$IMGTUI_CACHE`` (default ``~/.cache/imgtui``), its limit
  ``$IMGTUI_CACHE_LIMIT`` (bytes, or 50GB, 500MB, ...; default 50 GB);
- credentials and endpoints come from the protocol's usual environment (``AWS_ENDPOINT_URL``,
  ``AWS_ACCESS_KEY_ID``, ``GOOGLE_APPLICATION_CREDENTIALS``, ...), read by fsspec's filesystem;
- a cached copy is used while the remote file's size and modification time (or ETag) are
  unchanged, and fetched again when they change; downloads go to a temporary name and are switched
  in when complete, under a lock, so DataLoader workers on one machine download a file once and
  never see half of it.

Read in place instead of the cache (ranged requests, nothing downloaded but what opening needs),
where the format allows it:

- a single-file HDF5 store of at least ``$IMGTUI_RANGED_MIN`` bytes (default 64 MB; 0: always):
  h5py reads it through :class:`RangedFile`, a file object that fetches blocks of
  ``$IMGTUI_RANGED_BLOCK`` bytes (default 64 KiB) with ranged requests (``fs.cat_file(path,
  start, end)``, one request per run of missing blocks) and keeps the last 256 of them, so
  opening a store and reading a record fetch a few blocks, not the file. (Measured on a 76 MB
  store of 1M records: open 178 kB, one record 0.5 MB, a random batch of 64 8.7 MB in 133
  requests; with 1 MiB blocks 2.7 MB, 6.9 MB and 51 MB in 49 requests.)
- a WebDataset store (``webdataset/remote.py``): opening fetches ``manifest.json`` and
  ``index.npy``; a record is one ranged request for its tar members, found through the index; a
  batch's ranges are merged where they lie in one shard at most ``$IMGTUI_RANGED_GAP`` bytes
  apart (default 64 KiB: records in order are one request) and fetched concurrently
  (:class:`RemoteFiles`, ``fs.cat_ranges``).
- a disk store (``disk/remote.py``): opening fetches ``manifest.json`` and the table; a read
  fetches only its records' image files, a batch's concurrently (``fs.cat``), one request a file.
- a Zarr store (``zarr/remote.py``): opening fetches the manifest and the ``zarr.json`` files;
  zarr-python reads the chunks through its ``FsspecStore`` (ranged reads of shard indexes and
  chunks).
- a sharded store: opening fetches the manifest; each shard is opened as above when it can be (an
  HDF5 shard of at least ``$IMGTUI_RANGED_MIN``, WebDataset, disk and Zarr shards), else fetched
  into the cache on first use.

Records read in place are checksum-checked like local ones. ``verify`` of a WebDataset or disk
store at a URL fetches the shards (the images folder) into the cache first: it reads every byte.
LMDB needs a local file for its memory map and always goes through the cache (an upload leaves
out ``lock.mdb``: lmdb makes it again beside the cached copy). ``IMGTUI_RANGED=0`` turns reading
in place off: every store at a URL is downloaded whole into the cache on first use, as before.
Folder stores on a plain web server (no folder listings) are found by their manifest.
"""

from __future__ import annotations

import bisect
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..errors import CorruptStoreError, ImgtuiError, StoreNotFoundError, first_line

#: protocols read through the cache (a plain path is never a URL)
_URL_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
#: the sharded manifest's name (the same as ``sharded.MANIFEST``; not imported to keep this module low)
MANIFEST = "manifest.json"
#: the Zarr backend's manifest (inside the Zarr group)
ZARR_MANIFEST = "imgtui-manifest.json"
DEFAULT_LIMIT = 50 * 10**9
#: single-file stores at least this big are read with ranged requests where the format allows it
DEFAULT_RANGED_MIN = 64 * 10**6
DEFAULT_RANGED_BLOCK = 64 << 10
RANGED_BLOCKS_KEPT = 256
#: ranges of one batch at most this far apart are fetched by one request
DEFAULT_RANGED_GAP = 64 << 10


def is_url(path: Any) -> bool:
    return isinstance(path, str) and bool(_URL_RE.match(path)) and not path.startswith("synthetic")


def parse_size(text: str, name: str = "IMGTUI_CACHE_LIMIT") -> int:
    """``50GB``, ``500MB``, ``1GiB``, ``123`` -> bytes; one-line error otherwise."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([kKmMgGtT]?)(i?)[bB]?\s*", text or "")
    if not m:
        raise ImgtuiError(f"{name}={text!r} is not a size (use e.g. 50GB, 500MB or bytes)")
    base = 1024 if m.group(3) else 1000
    power = " KMGT".index(m.group(2).upper() or " ")
    return int(float(m.group(1)) * base ** power)


def cache_root() -> Path:
    return Path(os.environ.get("IMGTUI_CACHE") or Path.home() / ".cache" / "imgtui").expanduser()


def cache_limit() -> int:
    text = os.environ.get("IMGTUI_CACHE_LIMIT")
    return parse_size(text) if text else DEFAULT_LIMIT


def ranged_min() -> int:
    text = os.environ.get("IMGTUI_RANGED_MIN")
    return parse_size(text, "IMGTUI_RANGED_MIN") if text else DEFAULT_RANGED_MIN


def ranged_block() -> int:
    text = os.environ.get("IMGTUI_RANGED_BLOCK")
    return max(4096, parse_size(text, "IMGTUI_RANGED_BLOCK")) if text else DEFAULT_RANGED_BLOCK


class RangedFile(io.RawIOBase):
    """A read-only, seekable file object over one remote file, read with ranged requests in blocks
    of ``block`` bytes (the last ``keep`` blocks kept, least recently used dropped). ``fetched``
    and ``requests`` count what was transferred."""

    def __init__(self, fs: Any, path: str, size: int, url: str, block: int | None = None,
                 keep: int = RANGED_BLOCKS_KEPT) -> None:
        super().__init__()
        self.fs, self.path, self.size, self.url = fs, path, int(size), url
        self.block = int(block or ranged_block())
        self.keep = max(2, keep)
        self._blocks: OrderedDict[int, bytes] = OrderedDict()
        self._pos = 0
        self.fetched = 0
        self.requests = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self.size}[whence]
        pos = base + int(offset)
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        return pos

    def _fetch(self, first: int, last: int) -> None:
        """Blocks ``first..last`` (those not kept yet) with one request per run of missing blocks."""
        k = first
        while k <= last:
            if k in self._blocks:
                self._blocks.move_to_end(k)
                k += 1
                continue
            end = k
            while end + 1 <= last and end + 1 not in self._blocks:
                end += 1
            a, b = k * self.block, min(self.size, (end + 1) * self.block)
            try:
                data = self.fs.cat_file(self.path, start=a, end=b)
            except Exception as exc:
                raise OSError(f"{self.url}: reading bytes {a:,}-{b:,} failed ({first_line(exc)})") from None
            if len(data) != b - a:
                raise OSError(f"{self.url}: got {len(data):,} bytes for a range of {b - a:,} (the file changed?)")
            self.fetched += len(data)
            self.requests += 1
            for j in range(k, end + 1):
                self._blocks[j] = data[(j - k) * self.block : (j - k + 1) * self.block]
            k = end + 1
        while len(self._blocks) > max(self.keep, last - first + 1):
            self._blocks.popitem(last=False)

    def readinto(self, buf: Any) -> int:
        view = memoryview(buf).cast("B")
        pos = self._pos
        n = max(0, min(len(view), self.size - pos))
        if n == 0:
            return 0
        first, last = pos // self.block, (pos + n - 1) // self.block
        self._fetch(first, last)
        done = 0
        for k in range(first, last + 1):
            data = self._blocks[k]
            a = pos + done - k * self.block
            take = min(len(data) - a, n - done)
            view[done : done + take] = data[a : a + take]
            done += take
        self._pos = pos + done
        return done


def ranged_file(url: str, signature: bytes) -> RangedFile | None:
    """A :class:`RangedFile` over the single file at ``url`` when it is at least
    ``IMGTUI_RANGED_MIN`` bytes and starts with ``signature``; None otherwise (read it through the
    cache)."""
    fs, path = _filesystem(url.rstrip("/"))
    try:
        info = fs.info(path)
    except FileNotFoundError:
        return None  # the cache path says it in one line
    except Exception as exc:
        raise ImgtuiError(f"{url}: cannot be reached ({first_line(exc)})") from None
    size = int(info.get("size") or 0)
    if info.get("type") == "directory" or size < max(len(signature), ranged_min()):
        return None
    f = RangedFile(fs, path, size, url.rstrip("/"))
    try:
        head = f.read(len(signature))
    except OSError:
        return None
    f.seek(0)
    return f if head == signature else None


def whole_download() -> bool:
    """``IMGTUI_RANGED=0``: every store at a URL is downloaded whole into the cache (no ranged reads)."""
    return os.environ.get("IMGTUI_RANGED", "").strip().lower() in ("0", "off", "no", "false")


class Segments:
    """Byte ranges of a store's files fetched together for one batch: ``get(name, start, n)``
    gives the bytes when a fetched range holds them, else None."""

    def __init__(self) -> None:
        self._by: dict[str, tuple[list[int], list[bytes]]] = {}

    def add(self, name: str, start: int, data: bytes) -> None:
        starts, datas = self._by.setdefault(name, ([], []))
        j = bisect.bisect_right(starts, start)
        starts.insert(j, start)
        datas.insert(j, data)

    def get(self, name: str, start: int, n: int) -> memoryview | None:
        got = self._by.get(name)
        if got is None:
            return None
        starts, datas = got
        j = bisect.bisect_right(starts, start) - 1
        if j < 0 or start + n > starts[j] + len(datas[j]):
            return None
        a = start - starts[j]
        return memoryview(datas[j])[a : a + n]


def coalesce(ranges: list[tuple[str, int, int]], gap: int) -> list[tuple[str, int, int]]:
    """``(name, start, end)`` ranges merged per file where they overlap or lie at most ``gap``
    bytes apart (one request then fetches several records and the few bytes between them)."""
    out: list[tuple[str, int, int]] = []
    for name, a, b in sorted(ranges):
        if out and out[-1][0] == name and a <= out[-1][2] + gap:
            if b > out[-1][2]:
                out[-1] = (name, out[-1][1], b)
        else:
            out.append((name, a, b))
    return out


class RemoteFiles:
    """The files of a store folder at ``url``, read with ranged requests (``fs.cat_file``, or
    ``fs.cat_ranges`` for many ranges at once, which fsspec runs concurrently on its async
    filesystems: s3, gcs, http). ``fetched`` and ``requests`` count what was transferred."""

    def __init__(self, fs: Any, root: str, url: str) -> None:
        self.fs, self.root, self.url = fs, root.rstrip("/"), url.rstrip("/")
        self.fetched = 0
        self.requests = 0
        self._lock = threading.Lock()

    def path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def sizes(self, names: list[str]) -> dict[str, int]:
        """{name: size} of the files ``names`` that exist: one listing of the folder (or, where
        the protocol lists no folders, such as plain HTTP, a request per file)."""
        want = set(names)
        try:
            listing = self.fs.ls(self.root, detail=True)
            found = {str(e["name"]).rstrip("/").rsplit("/", 1)[-1]: int(e.get("size") or 0)
                     for e in listing if e.get("type") != "directory"}
            if want <= set(found):
                return {k: v for k, v in found.items() if k in want}
        except Exception:  # noqa: BLE001 (no folder listing, as on plain HTTP: a request per file)
            pass
        out = {}
        for name in names:
            try:
                out[name] = int(self.fs.info(self.path(name)).get("size") or 0)
            except FileNotFoundError:
                continue
            except Exception as exc:
                raise ImgtuiError(f"{self.url}/{name}: cannot be reached ({first_line(exc)})") from None
        return out

    def total_size(self) -> int | None:
        """Bytes of every file of the store at the URL (one listing: ``fs.du``); None when the
        protocol cannot list it (plain HTTP)."""
        return _remote_size(self.fs, self.root)

    def _count(self, n: int, requests: int = 1) -> None:
        with self._lock:
            self.fetched += n
            self.requests += requests

    def cat(self, name: str, start: int, end: int) -> bytes:
        """Bytes ``start:end`` of file ``name`` (one request); a one-line ImgtuiError when it fails."""
        try:
            data = self.fs.cat_file(self.path(name), start=start, end=end)
        except Exception as exc:
            raise ImgtuiError(f"{self.url}/{name}: reading bytes {start:,}-{end:,} failed ({first_line(exc)})") from None
        self._count(len(data))
        return data

    def cat_ranges(self, ranges: list[tuple[str, int, int]]) -> list[bytes]:
        """The bytes of every ``(name, start, end)``, fetched concurrently."""
        if len(ranges) == 1:
            return [self.cat(*ranges[0])]
        if not ranges:
            return []
        try:
            out = self.fs.cat_ranges([self.path(n) for n, _a, _b in ranges], [a for _n, a, _b in ranges],
                                     [b for _n, _a, b in ranges], on_error="return")
        except Exception as exc:
            raise ImgtuiError(f"{self.url}: reading {len(ranges)} ranges failed ({first_line(exc)})") from None
        for (name, a, b), data in zip(ranges, out):
            if isinstance(data, BaseException):
                raise ImgtuiError(f"{self.url}/{name}: reading bytes {a:,}-{b:,} failed ({first_line(data)})") from None
        self._count(sum(len(d) for d in out), len(out))
        return out

    def fetch(self, ranges: list[tuple[str, int, int]], gap: int | None = None) -> Segments:
        """The ranges coalesced (``coalesce``, ``gap`` default ``$IMGTUI_RANGED_GAP``) and fetched
        concurrently, as a :class:`Segments` to look the original ranges up in."""
        merged = coalesce(ranges, ranged_gap() if gap is None else gap)
        seg = Segments()
        for (name, a, _b), data in zip(merged, self.cat_ranges(merged)):
            seg.add(name, a, data)
        return seg

    def cat_files(self, names: list[str]) -> dict[str, bytes]:
        """Whole files, fetched concurrently (one request each): {name: bytes}; a missing one
        raises FileNotFoundError naming it."""
        if not names:
            return {}
        paths = [self.path(n) for n in names]
        try:  # as ranges from 0 to the end: s3fs asks the size first (a second request) for a whole file
            out = self.fs.cat_ranges(paths, [0] * len(paths), [None] * len(paths), on_error="return")
        except Exception as exc:
            raise ImgtuiError(f"{self.url}: reading {len(names)} files failed ({first_line(exc)})") from None
        got = {}
        for name, data in zip(names, out):
            if isinstance(data, FileNotFoundError) or data is None:
                raise FileNotFoundError(f"{self.url}/{name}")
            if isinstance(data, BaseException):
                raise ImgtuiError(f"{self.url}/{name}: reading failed ({first_line(data)})") from None
            got[name] = data
        self._count(sum(len(d) for d in got.values()), len(got))
        return got


def ranged_gap() -> int:
    """Ranges of one batch at most this many bytes apart are fetched by one request
    (``$IMGTUI_RANGED_GAP``, default 64 KiB)."""
    text = os.environ.get("IMGTUI_RANGED_GAP")
    return parse_size(text, "IMGTUI_RANGED_GAP") if text else DEFAULT_RANGED_GAP


def _filesystem(url: str) -> tuple[Any, str]:
    try:
        import fsspec
    except ImportError:
        raise ImgtuiError(f"{url}: reading stores at URLs needs fsspec (pip install 'imgtui[remote]')") from None
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:  # e.g. s3:// without s3fs installed
        raise ImgtuiError(f"{url}: {first_line(exc)}") from None


def _stamp(info: dict) -> dict:
    """What tells a changed remote file: size and ETag or modification time."""
    keys = ("size", "ETag", "etag", "mtime", "LastModified", "last_modified", "updated", "created", "md5Hash")
    return {k: str(info[k]) for k in keys if k in info and info[k] is not None}


def _entry(url: str) -> tuple[str, str]:
    """(cache key, file name) of the store at ``url``: one folder per URL, named after its last part."""
    url = url.rstrip("/")
    key = hashlib.sha256(url.encode()).hexdigest()[:16]
    return key, re.sub(r"[^A-Za-z0-9._-]+", "_", url.rsplit("/", 1)[-1]) or "store"


class RemoteStore:
    """The local mirror of the store at ``url``: ``local`` is the path to open."""

    def __init__(self, url: str, root: Path | None = None) -> None:
        self.url = url.rstrip("/")
        self.fs, self.path = _filesystem(self.url)
        key, name = _entry(self.url)
        self.entry = (root or cache_root()) / key
        self.local = self.entry / name
        self.sharded = False

    # -- remote side -----------------------------------------------------------------------------
    def _info(self, path: str) -> dict:
        try:
            return self.fs.info(path)
        except FileNotFoundError:
            raise StoreNotFoundError(f"{self.url}: no such file or folder") from None
        except Exception as exc:
            raise ImgtuiError(f"{self.url}: cannot be reached ({first_line(exc)})") from None

    # -- cache -----------------------------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.entry.mkdir(parents=True, exist_ok=True)
        with open(self.entry / ".lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _stamps(self) -> dict:
        """{relative path: remote stamp} of what the cache holds for this store."""
        try:
            data = json.loads((self.entry / "stamps.json").read_text())
        except (OSError, ValueError):
            return {}
        files = data.get("files") if isinstance(data, dict) and data.get("url") == self.url else None
        return files if isinstance(files, dict) else {}

    def _save_stamp(self, rel: str, stamp: dict) -> None:
        files = self._stamps()
        files[rel] = stamp
        tmp = self.entry / f"stamps.json.tmp-{os.getpid()}"
        tmp.write_text(json.dumps({"url": self.url, "files": files}))
        os.replace(tmp, self.entry / "stamps.json")

    def _download(self, remote: str, local: Path, rel: str, is_dir: bool) -> None:
        """Fetch ``remote`` to ``local`` unless the cached copy has the remote's stamp."""
        stamp = _stamp(self._info(remote))
        if local.exists() and self._stamps().get(rel) == stamp:
            return
        tmp = local.with_name(f"{local.name}.imgtui-part-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        try:
            if is_dir:
                self.fs.get(remote.rstrip("/") + "/", str(tmp), recursive=True)
            else:
                self.fs.get_file(remote, str(tmp))
        except Exception as exc:
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
            raise ImgtuiError(f"{self.url}: downloading {rel or 'the store'} failed ({first_line(exc)})") from None
        if local.is_dir():
            shutil.rmtree(local)
        elif local.exists():
            local.unlink()
        os.replace(tmp, local)
        self._save_stamp(rel, stamp)

    def open_local(self) -> Path:
        """Fetch what opening needs (the whole store, or a sharded store's manifest) and return
        the local path; the entry's use time is refreshed and the cache kept under its limit."""
        info = self._info(self.path)
        with self._locked():
            if info.get("type") == "directory":
                manifest = f"{self.path.rstrip('/')}/{MANIFEST}"
                self.sharded = self._is_sharded_manifest(manifest)
                if self.sharded:
                    self.local.mkdir(parents=True, exist_ok=True)
                    self._download(manifest, self.local / MANIFEST, MANIFEST, is_dir=False)
                else:
                    self._download(self.path, self.local, "", is_dir=True)
            else:
                self._download(self.path, self.local, "", is_dir=False)
            (self.entry / ".used").touch()
        evict(self.entry.parent, cache_limit(), keep=self.entry)
        return self.local

    # -- read in place: only the small files fetched, the rest by ranged requests ----------------
    def _small_json(self, remote: str) -> Any:
        try:
            with self.fs.open(remote, "rb") as fh:
                return json.loads(fh.read(16 << 20))
        except Exception:  # missing, not JSON, unreadable: not this kind of store
            return None

    def probe(self) -> tuple[str | None, dict]:
        """What the folder store at the URL is, from its manifest alone: ("sharded", manifest),
        (backend name, manifest) for a store whose manifest names its backend, else (None, {})
        (a single file, or a store without such a manifest: LMDB)."""
        try:
            info = self._info(self.path)
        except StoreNotFoundError:
            info = None  # plain HTTP answers no folder URL: its manifest may still be there
        if info is not None and info.get("type") != "directory":
            return None, {}
        for name in (MANIFEST, ZARR_MANIFEST):
            data = self._small_json(f"{self.path.rstrip('/')}/{name}")
            if isinstance(data, dict):
                if isinstance(data.get("shards"), list):
                    return "sharded", data
                if isinstance(data.get("backend"), str):
                    return data["backend"], data
        if info is None:
            raise StoreNotFoundError(f"{self.url}: no such file or folder")
        return None, {}

    def open_files(self, names: list[str]) -> Path:
        """Fetch only the files ``names`` of the folder store (its manifest, index or table) into
        the local mirror and return it: the reader reads the rest with ranged requests
        (:meth:`files`)."""
        with self._locked():
            if self.local.exists() and not self.local.is_dir():
                self.local.unlink()
            self.local.mkdir(parents=True, exist_ok=True)
            for name in names:
                try:
                    self._download(f"{self.path.rstrip('/')}/{name}", self.local / name, name, is_dir=False)
                except StoreNotFoundError:
                    raise CorruptStoreError(f"{self.url}: {name} is missing (the store is damaged or incomplete)") from None
            (self.entry / ".used").touch()
        evict(self.entry.parent, cache_limit(), keep=self.entry)
        return self.local

    def files(self) -> RemoteFiles:
        """The store's files for ranged reads."""
        return RemoteFiles(self.fs, self.path, self.url)

    def member_url(self, rel: str) -> str:
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            raise ImgtuiError(f"{self.url}: manifest names {rel!r}, outside the store")
        return f"{self.url}/{rel}"

    def open_member(self, rel: str, backend: str) -> Any:
        """Shard ``rel`` of a sharded store read in place (an HDF5 shard of at least
        ``$IMGTUI_RANGED_MIN`` by ranged requests, a WebDataset shard through its index), or None:
        fetch it into the cache (``fetch_member``)."""
        if whole_download():
            return None
        from . import _open_in_place, _open_ranged

        url = self.member_url(rel)
        try:
            r = _open_ranged(url, backend) if backend == "hdf5" else None
            if r is None:
                r, _sharded = _open_in_place(url, backend)
        except StoreNotFoundError:
            return None  # the caller says which shard is missing
        return r

    def _is_sharded_manifest(self, manifest: str) -> bool:
        try:
            with self.fs.open(manifest, "rb") as fh:
                data = json.loads(fh.read(1 << 20))
        except FileNotFoundError:
            return False
        except (ValueError, OSError):
            return False
        return isinstance(data, dict) and isinstance(data.get("shards"), list)

    def fetch_member(self, rel: str) -> Path:
        """One file or folder of the store (a shard), fetched on first use."""
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            raise ImgtuiError(f"{self.url}: manifest names {rel!r}, outside the store")
        remote = f"{self.path.rstrip('/')}/{rel}"
        info = self._info(remote)
        with self._locked():
            self._download(remote, self.local / rel, rel, is_dir=info.get("type") == "directory")
            (self.entry / ".used").touch()
        evict(self.entry.parent, cache_limit(), keep=self.entry)
        return self.local / rel


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(dirpath, f))
            except OSError:
                pass
    return total


def evict(root: Path, limit: int, keep: Path | None = None) -> list[Path]:
    """Remove the least recently used cache entries until the cache is under ``limit`` bytes
    (never ``keep``, the entry in use); returns what was removed."""
    if not root.is_dir():
        return []
    entries = []
    for e in root.iterdir():
        if e.is_dir():
            used = e / ".used"
            entries.append((used.stat().st_mtime if used.exists() else 0.0, e, _size(e)))
    total = sum(size for _t, _e, size in entries)
    removed = []
    for _t, e, size in sorted(entries, key=lambda x: x[0]):
        if total <= limit:
            break
        if keep is not None and e.resolve() == keep.resolve():
            continue
        try:
            with open(e / ".lock", "a+") as fh:  # not while another process fetches into it
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(e)
        except OSError:
            continue
        total -= size
        removed.append(e)
    return removed


def localize(url: str) -> tuple[Path, RemoteStore]:
    """The local path to open for ``url`` (fetched into the cache as needed) and its RemoteStore."""
    store = RemoteStore(url)
    started = time.monotonic()
    path = store.open_local()
    store.fetch_seconds = time.monotonic() - started  # type: ignore[attr-defined]
    return path, store


# -- writing to a URL: build locally, upload when complete, the manifest last -----------------------
def staging_path(url: str) -> Path:
    """Where ``imgtui convert SRC URL`` builds the store before uploading it (kept until the upload
    is complete, so ``--resume`` can go on from it)."""
    key, name = _entry(url)
    return cache_root() / "uploads" / key / name


def remote_exists(url: str) -> bool:
    fs, path = _filesystem(url)
    try:
        return bool(fs.exists(path))
    except Exception as exc:
        raise ImgtuiError(f"{url}: cannot be reached ({first_line(exc)})") from None


def _remote_size(fs: Any, path: str) -> int | None:
    try:
        if fs.isdir(path):
            return int(sum(fs.du(path, total=False).values())) if hasattr(fs, "du") else None
        return int(fs.info(path).get("size") or 0)
    except (FileNotFoundError, OSError):
        return None
    except Exception:
        return None


#: files of a store never uploaded: LMDB's reader lock table (lmdb makes it again where the store
#: is read; a copy of the writer's would only mislead readers on other machines)
SKIP_UPLOAD = ("lock.mdb",)


def _upload_files(src: Path) -> list[tuple[Path, str]]:
    """(file, path relative to ``src``) of every file of the folder ``src`` to upload."""
    out = []
    for dirpath, dirs, files in os.walk(src):
        dirs.sort()
        for f in sorted(files):
            if f not in SKIP_UPLOAD:
                p = Path(dirpath) / f
                out.append((p, p.relative_to(src).as_posix()))
    return out


def _upload_size(src: Path) -> int:
    """Bytes of ``src`` an upload sends (what a complete upload holds, for ``--resume``)."""
    if src.is_file():
        return src.stat().st_size
    return sum(p.stat().st_size for p, _rel in _upload_files(src))


def upload(local: Path, url: str, resume: bool = False, progress: Any = None) -> dict:
    """Upload the complete store at ``local`` to ``url``: a single file as one object; a folder
    file by file with ``manifest.json`` last (a reader sees no store until it is whole); a sharded
    store shard by shard, skipping with ``resume`` the shards already there at their full size.
    Returns {"files": uploaded, "skipped": already there, "bytes": uploaded bytes}."""
    fs, root = _filesystem(url)
    root = root.rstrip("/")
    done = {"files": 0, "skipped": 0, "bytes": 0}

    def put_file(src: Path, dest: str) -> None:
        parent = dest.rsplit("/", 1)[0]
        if parent and parent != dest:
            try:
                fs.makedirs(parent, exist_ok=True)
            except Exception:
                pass  # object stores have no folders
        fs.put(str(src), dest)

    def put(src: Path, dest: str) -> None:
        try:
            if src.is_dir():  # its files (without SKIP_UPLOAD: LMDB's lock.mdb), concurrently where fsspec can
                files = _upload_files(src)
                for parent in sorted({f"{dest}/{rel}".rsplit("/", 1)[0] for _f, rel in files}):
                    try:
                        fs.makedirs(parent, exist_ok=True)
                    except Exception:
                        pass  # object stores have no folders
                if files:
                    fs.put([str(f) for f, _rel in files], [f"{dest}/{rel}" for _f, rel in files])
            else:
                put_file(src, dest)
        except Exception as exc:
            raise ImgtuiError(f"uploading {src.name} to {url} failed ({first_line(exc)}); "
                              "run the same command with --resume to go on") from None
        done["files"] += 1
        done["bytes"] += _upload_size(src)
        if progress is not None:
            progress(done["files"])

    if local.is_file():
        if resume and _remote_size(fs, root) == local.stat().st_size:
            done["skipped"] += 1
        else:
            put(local, root)
        return done
    manifest = local / MANIFEST
    try:
        data = json.loads(manifest.read_text()) if manifest.is_file() else {}
    except ValueError:
        data = {}
    if isinstance(data, dict) and isinstance(data.get("shards"), list):  # sharded: shard by shard
        members = [local / str(s["file"]) for s in data["shards"]]
    else:
        members = sorted(p for p in local.iterdir()
                         if p.name != MANIFEST and not p.name.startswith(".") and p.name not in SKIP_UPLOAD)
    for m in members:
        dest = f"{root}/{m.name}"
        if resume and _remote_size(fs, dest) == _upload_size(m):
            done["skipped"] += 1
            continue
        put(m, dest)
    if manifest.is_file():
        put(manifest, f"{root}/{MANIFEST}")  # last: the store is there when this is
    return done
