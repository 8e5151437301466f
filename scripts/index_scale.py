"""How the index of a store holds at 1M, 10M and 100M records (issue 15, "an index that scales").

Builds HDF5 and LMDB stores of tiny records (8x8 uint8 images, 64 bytes of pixels, int labels
0..999, no metadata) straight from numpy, without going through ``imgtui.writer`` (whose per-record
validation runs at ~50k records/s here: 100M records would take over half an hour per backend),
then measures each store in fresh processes:

- ``open``: ``imgtui.open(path)`` time (the first open of a process includes imgtui's lazy imports
  of its backends; ``reopen_s`` is a second open) and the process's resident memory after it
  (above the baseline of a process that imported imgtui, numpy, h5py and lmdb);
- ``batch``: 64 random records with ``get_images`` (what ``imgtui.dataset`` reads) and with
  ``get_many`` (records with labels), checked against their stored checksums: the first batch,
  the median of the next 20 (``cold``: the store's files are dropped from the page cache with
  ``posix_fadvise(DONTNEED)`` before the store is opened, so new random records come from the
  device) and the median of the same 20 batches again (``warm``: from the page cache);
- ``labels``: ``labels_array()`` time and the memory it adds (int64: 8 bytes a record), and for
  comparison ``labels()`` (a Python list) up to 10M records;
- ``ranged`` (HDF5): the store opened as a ``file://`` URL with ranged reads (``IMGTUI_RANGED_MIN=0``):
  bytes fetched to open it, to read one record and a random batch of 64.

The stores built here are ordinary imgtui stores: the same datasets, blocks, checksums (xxh3),
manifest and ``labels_digest`` the writers make, so the normal reader opens them and ``--verify``
runs ``imgtui.open(path).verify()`` over every record (used at 1M to check the builder).

    python scripts/index_scale.py run --backends hdf5,lmdb --counts 1000000,10000000,100000000 --out /tmp/scale
    python scripts/index_scale.py run ... --verify-upto 1000000   # verify the stores up to 1M records
    python scripts/index_scale.py measure open PATH               # one measurement, JSON on stdout

Not built here: disk (100M PNG files and a 100M-row CSV table), Zarr (its writer is being changed)
and WebDataset (two tar members, >= 2 KiB, a record: 200 GB at 100M). Stores are removed after
their measurements unless ``--keep``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

H, W = 8, 8
REC_BYTES = H * W
CHUNK = 1 << 20  # records built per step
N_LABELS = 1000


def label_of(i: np.ndarray) -> np.ndarray:
    return (i.astype(np.int64) * 7919) % N_LABELS


def pixel_of(i: np.ndarray) -> np.ndarray:
    """Record i's 8x8 image: every pixel (i * 31 + 7) % 256."""
    return ((i.astype(np.int64) * 31 + 7) % 256).astype(np.uint8)


class _Tables:
    """Per-distinct-value checksums and label-digest pieces, so that building is vectorised."""

    def __init__(self) -> None:
        from imgtui.records import CHECKSUM, checksum_fn

        fn = checksum_fn(CHECKSUM)
        self.kind = CHECKSUM
        self.crc = np.array([fn(np.full((H, W), v, np.uint8)) for v in range(256)], dtype=np.uint32)
        self.digest_piece = [f"i:{lab}\x1f{{}}\x1e".encode() for lab in range(N_LABELS)]
        import xxhash

        self.digest = xxhash.xxh3_64()

    def add_digest(self, labels: np.ndarray) -> None:
        self.digest.update(b"".join(map(self.digest_piece.__getitem__, labels.tolist())))


def _stats(n: int):
    from imgtui.backends.base import WriteStats

    counts = _label_counts(n)
    return WriteStats(
        count=n, raw_bytes=n * REC_BYTES, shapes=Counter({f"{H}x{W}": n} if n else {}),
        dtypes=Counter({"uint8": n} if n else {}),
        labels=Counter({str(k): int(c) for k, c in enumerate(counts.tolist()) if c}), label_kinds={"int"} if n else set(),
    )


def _label_counts(n: int) -> np.ndarray:
    out = np.zeros(N_LABELS, np.int64)
    for a in range(0, n, CHUNK):
        out += np.bincount(label_of(np.arange(a, min(n, a + CHUNK))), minlength=N_LABELS)
    return out


# -- builders ------------------------------------------------------------------------------------
def build_hdf5(path: Path, n: int) -> None:
    import h5py

    from imgtui.backends.base import make_manifest
    from imgtui.backends.hdf5.store import LIBVER, PLAIN_FORMAT_VERSION, Hdf5Writer, _new1d, _STR
    from imgtui._version import __version__

    t = _Tables()
    options = Hdf5Writer.check_options({})
    requested = dict(options)
    options.update(layout="contiguous", chunk_records=None)
    with h5py.File(path, "w", libver=LIBVER) as f:
        f.attrs["format"] = "imgtui"
        f.attrs["format_version"] = PLAIN_FORMAT_VERSION
        f.attrs["backend"] = "hdf5"
        f.attrs["imgtui_version"] = __version__
        f.attrs["options"] = json.dumps(requested)
        images = f.create_dataset("images", shape=(n, H, W), dtype=np.uint8, fill_time="never")
        _new1d(f, "labels", np.int64, n)
        _new1d(f, "metadata", _STR, n)  # every record's metadata is empty: never read (metadata_records 0)
        _new1d(f, "checksums", np.uint32, n)
        for a in range(0, n, CHUNK):
            i = np.arange(a, min(n, a + CHUNK))
            px = pixel_of(i)
            images.write_direct(np.ascontiguousarray(np.broadcast_to(px[:, None, None], (len(i), H, W))),
                                dest_sel=np.s_[a : a + len(i)])
            labs = label_of(i)
            f["labels"][a : a + len(i)] = labs
            f["checksums"][a : a + len(i)] = t.crc[px]
            t.add_digest(labs)
        manifest = make_manifest("hdf5", _stats(n), options, checksum=t.kind, labels_digest=t.digest.hexdigest(),
                                 hdf5={"images_layout": "fixed" if n else "empty", "label_mode": "int", "metadata_records": 0,
                                       "requested_options": requested, "notes": ["built by scripts/index_scale.py"],
                                       "image_shape": [H, W], "image_dtype": "uint8"})
        f.attrs["options"] = json.dumps(options)
        f.attrs["manifest"] = json.dumps(manifest)
        f.flush()
        f.attrs["complete"] = np.uint8(1)


def build_lmdb(path: Path, n: int) -> None:
    import lmdb

    from imgtui.backends.base import make_manifest
    from imgtui.backends.lmdb.store import (
        DB_BLOCKS, DB_LABELS, DB_META, ENTRY, HEADER, LAYOUT, MAGIC, MANIFEST_KEY, MAX_DBS, LmdbWriter, _key,
    )

    t = _Tables()
    options = LmdbWriter.check_options({})
    rpb = max(1, options["block_bytes"] // REC_BYTES)  # as the writer picks it from the first record
    est = n * (REC_BYTES + ENTRY.itemsize + 12) + (64 << 20)
    path.mkdir()
    env = lmdb.open(str(path), subdir=True, map_size=int(est * 1.3), max_dbs=MAX_DBS, sync=False,
                    metasync=False, readahead=False, meminit=False, writemap=False)
    dbb, dbl, dbm = env.open_db(DB_BLOCKS), env.open_db(DB_LABELS), env.open_db(DB_META)
    nblocks = 0
    per_txn = max(1, (64 << 20) // (rpb * REC_BYTES))
    pending: list[tuple[bytes, bytes, bytes]] = []

    def put() -> None:
        with env.begin(write=True) as txn:
            txn.cursor(db=dbb).putmulti([(k, v) for k, v, _ in pending], append=True)
            txn.cursor(db=dbl).putmulti([(k, lab) for k, _, lab in pending], append=True)
        pending.clear()

    for first in range(0, n, rpb):
        i = np.arange(first, min(n, first + rpb))
        cnt = len(i)
        px = pixel_of(i)
        labs = label_of(i)
        ent = np.zeros(cnt, ENTRY)
        start = HEADER.size + cnt * ENTRY.itemsize
        ent["offset"] = start + np.arange(cnt, dtype=np.int64) * REC_BYTES
        ent["nbytes"] = REC_BYTES
        ent["crc"] = t.crc[px]
        ent["h"], ent["w"], ent["c"], ent["ndim"], ent["dtype"], ent["enc"] = H, W, 0, 2, 1, 0
        pixels = np.repeat(px, REC_BYTES)
        value = b"".join([HEADER.pack(MAGIC, cnt, first), ent.tobytes(), pixels.tobytes()])
        lab_json = ("[" + ",".join(map("[{},{{}}]".format, labs.tolist())) + "]").encode()
        pending.append((_key(first), value, lab_json))
        t.add_digest(labs)
        nblocks += 1
        if len(pending) >= per_txn:
            put()
    if pending:
        put()
    manifest = make_manifest("lmdb", _stats(n), options, checksum=t.kind, labels_digest=t.digest.hexdigest(),
                             layout=LAYOUT, records_per_block=rpb, uniform_blocks=True, blocks=nblocks)
    env.sync(True)
    with env.begin(write=True) as txn:
        txn.put(MANIFEST_KEY, json.dumps(manifest, separators=(",", ":")).encode(), db=dbm)
    env.sync(True)
    used = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    env.close()
    data = path / "data.mdb"
    if data.stat().st_size > used:
        os.truncate(data, used)


BUILDERS = {"hdf5": build_hdf5, "lmdb": build_lmdb}
SUFFIX = {"hdf5": ".h5", "lmdb": ".lmdb"}


# -- measuring (each in a fresh process) ---------------------------------------------------------
def _rss() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process in bytes."""
    got = _status()
    return got["VmRSS"], got["VmHWM"]


def _anon() -> int:
    """RssAnon: the process's private memory (RSS also counts pages of mapped store files, which
    belong to the page cache and are shared)."""
    return _status()["RssAnon"]


def _status() -> dict:
    got = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS:", "VmHWM:", "RssAnon:")):
                k, v = line.split(":")
                got[k] = int(v.split()[0]) * 1024
    return got


def _drop_cache(path: Path) -> None:
    """Ask the kernel to drop the store's clean pages from the page cache (no root needed)."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    for p in files:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd) if os.access(p, os.W_OK) else None
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def measure(what: str, path: Path) -> dict:
    import h5py  # noqa: F401  (the baseline includes the libraries every backend loads)
    import lmdb  # noqa: F401

    import imgtui
    from imgtui.backends import open_store  # noqa: F401

    gc.collect()
    base, _ = _rss()
    base_anon = _anon()
    out: dict = {"what": what}
    if what == "batch":
        _drop_cache(path)
    t = time.perf_counter()
    r = imgtui.open(path)
    out["open_s"] = time.perf_counter() - t
    out["rss_open_mb"] = (_rss()[0] - base) / 1e6
    out["anon_open_mb"] = (_anon() - base_anon) / 1e6
    if what == "labels_array":  # a second open in the same process: without the first one's imports
        t = time.perf_counter()
        imgtui.open(path).close()
        out["reopen_s"] = time.perf_counter() - t
    n = len(r)
    out["count"] = n
    rng = np.random.default_rng(0)
    if what == "batch":
        t = time.perf_counter()
        imgtui.open(path).close()
        out["reopen_s"] = time.perf_counter() - t
        for k, fn in enumerate(("get_images", "get_many")):
            rng = np.random.default_rng(k)
            batches = [rng.integers(0, n, 64) for _ in range(21)]
            for phase in ("cold", "warm"):  # new random records (from the device), then the same again
                times = []
                for idx in batches:
                    t = time.perf_counter()
                    got = getattr(r, fn)(idx)
                    times.append(time.perf_counter() - t)
                    assert len(got) == 64
                if phase == "cold":
                    out[f"{fn}_first_ms"] = times[0] * 1e3
                out[f"{fn}_{phase}_median_ms"] = statistics.median(times[1:]) * 1e3
                out[f"{fn}_{phase}_records_per_s"] = 64 / statistics.median(times[1:])
        # a record read back equals what the builder wrote
        i = int(rng.integers(0, n))
        rec = r[i]
        assert rec.label == int(label_of(np.array([i]))[0]) and (rec.image == pixel_of(np.array([i]))[0]).all()
        out["rss_after_batches_mb"] = (_rss()[0] - base) / 1e6
        out["anon_after_batches_mb"] = (_anon() - base_anon) / 1e6
    elif what == "labels_array":
        t = time.perf_counter()
        arr = r.labels_array()
        out["labels_s"] = time.perf_counter() - t
        out["labels_dtype"] = str(arr.dtype)
        out["labels_nbytes_mb"] = arr.nbytes / 1e6
        out["rss_labels_mb"] = (_rss()[0] - base) / 1e6
        out["anon_labels_mb"] = (_anon() - base_anon) / 1e6
        out["peak_rss_mb"] = (_rss()[1] - base) / 1e6
        assert arr[n // 3] == label_of(np.array([n // 3]))[0]
    elif what == "labels_list":
        t = time.perf_counter()
        lst = r.labels()
        out["labels_s"] = time.perf_counter() - t
        out["rss_labels_mb"] = (_rss()[0] - base) / 1e6
        out["anon_labels_mb"] = (_anon() - base_anon) / 1e6
        out["peak_rss_mb"] = (_rss()[1] - base) / 1e6
        assert len(lst) == n
    elif what == "ranged":
        # the same store as a URL (file://: fsspec's local filesystem, the code path of s3:// and
        # https://), read with ranged requests: bytes fetched to open it, read one record, a batch
        r.close()
        os.environ["IMGTUI_RANGED_MIN"] = "0"
        os.environ.setdefault("IMGTUI_CACHE", str(path.parent / ".imgtui-cache"))
        out["file_mb"] = path.stat().st_size / 1e6
        for block in ("64KiB", "1MiB"):
            os.environ["IMGTUI_RANGED_BLOCK"] = block
            t = time.perf_counter()
            r = imgtui.open(f"file://{path.resolve()}")
            out[f"url_{block}_open_s"] = time.perf_counter() - t
            fh = r._fileobj
            out[f"url_{block}_open_fetched_kb"] = fh.fetched / 1e3
            t = time.perf_counter()
            r[int(rng.integers(0, n))]
            out[f"url_{block}_record_s"] = time.perf_counter() - t
            out[f"url_{block}_record_fetched_kb"] = fh.fetched / 1e3
            t = time.perf_counter()
            r.get_images(rng.integers(0, n, 64))
            out[f"url_{block}_batch_s"] = time.perf_counter() - t
            out[f"url_{block}_batch_fetched_kb"] = fh.fetched / 1e3
            out[f"url_{block}_requests"] = fh.requests
            r.close()
    elif what == "verify":
        t = time.perf_counter()
        v = r.verify()
        out["verify_s"] = time.perf_counter() - t
        out["verify_ok"] = v.ok
        out["verify_summary"] = v.summary()
    r.close()
    return out


def _child(what: str, path: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    res = subprocess.run([sys.executable, __file__, "measure", what, str(path)], capture_output=True, text=True, env=env)
    if res.returncode:
        return {"what": what, "error": (res.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(res.stdout)


def run(backends: list[str], counts: list[int], out: Path, keep: bool, verify_upto: int, list_upto: int) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for n in counts:
        for b in backends:
            path = out / f"scale-{n}{SUFFIX[b]}"
            if path.exists():
                shutil.rmtree(path) if path.is_dir() else path.unlink()
            t = time.perf_counter()
            BUILDERS[b](path, n)
            row: dict = {"backend": b, "count": n, "build_s": time.perf_counter() - t}
            from imgtui.backends.base import path_size

            row["store_gb"] = path_size(path) / 1e9
            whats = ["batch", "labels_array"] + (["labels_list"] if n <= list_upto else []) + (["verify"] if n <= verify_upto else [])
            whats += ["ranged"] if b == "hdf5" else []
            for what in whats:
                row[what] = _child(what, path)
            results.append(row)
            print(json.dumps(row), flush=True)
            if not keep:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--backends", default="hdf5,lmdb")
    r.add_argument("--counts", default="1000000,10000000")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--keep", action="store_true")
    r.add_argument("--verify-upto", type=int, default=1_000_000)
    r.add_argument("--list-upto", type=int, default=10_000_000)
    r.add_argument("--json", type=Path, help="append the results to this JSON-lines file")
    m = sub.add_parser("measure")
    m.add_argument("what", choices=("batch", "labels_array", "labels_list", "verify", "ranged"))
    m.add_argument("path", type=Path)
    b = sub.add_parser("build")
    b.add_argument("backend", choices=tuple(BUILDERS))
    b.add_argument("count", type=int)
    b.add_argument("path", type=Path)
    a = ap.parse_args()
    if a.cmd == "measure":
        print(json.dumps(measure(a.what, a.path)))
    elif a.cmd == "build":
        BUILDERS[a.backend](a.path, a.count)
    else:
        rows = run(a.backends.split(","), [int(float(c)) for c in a.counts.split(",")], a.out, a.keep, a.verify_upto, a.list_upto)
        if a.json:
            with open(a.json, "a") as fh:
                for row in rows:
                    fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
