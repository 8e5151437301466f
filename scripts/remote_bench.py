"""Reads of a store at a URL against a real S3-compatible server on localhost (moto), per backend:
sequential (every record, ``iter_batches(256)``) and random batches of 64 (``get_images``,
checksum-checked), local vs the object store, each read "in place" (ranged requests: WebDataset
tar members through the index, disk image files, Zarr chunks through zarr's FsspecStore, HDF5
through ``remote.RangedFile``) and "download" (``IMGTUI_RANGED=0``: the whole store fetched into
the local cache on first use). "cold" starts with an empty cache, "again" opens the URL a second
time (a downloaded store is then read from the cache; an in-place one reads at the URL again).
"fetched" counts the bytes s3fs received for the cold read (sequential / random). Needs
moto[server], s3fs, boto3 (the test extras). Prints a markdown table.

    python scripts/remote_bench.py [--count 2000] [--batches 30] [--backends webdataset,zarr]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

FETCHED = [0]


def _count_s3fs_bytes() -> None:
    """Count the bytes s3fs receives: ranged and whole reads (``_cat_file``), downloads
    (``_get_file``) and file objects' reads (``S3File._fetch_range``)."""
    import s3fs

    cat, get, fetch = s3fs.S3FileSystem._cat_file, s3fs.S3FileSystem._get_file, s3fs.core.S3File._fetch_range

    async def _cat_file(self, *a, **k):
        data = await cat(self, *a, **k)
        FETCHED[0] += len(data)
        return data

    async def _get_file(self, rpath, lpath, *a, **k):
        out = await get(self, rpath, lpath, *a, **k)
        try:
            FETCHED[0] += os.path.getsize(lpath)
        except OSError:
            pass
        return out

    def _fetch_range(self, start, end):
        data = fetch(self, start, end)
        FETCHED[0] += len(data)
        return data

    s3fs.S3FileSystem._cat_file = _cat_file
    s3fs.S3FileSystem._get_file = _get_file
    s3fs.core.S3File._fetch_range = _fetch_range


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n < 1e8 else f"{n / 1e6:.0f} MB"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--batches", type=int, default=30)
    ap.add_argument("--backends", default="disk,lmdb,hdf5,webdataset,zarr")
    args = ap.parse_args()
    from moto.server import ThreadedMotoServer

    import logging

    logging.disable(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    work = Path(tempfile.mkdtemp(prefix="imgtui-remote-bench-"))
    os.environ.update(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION="us-east-1",
                      AWS_ENDPOINT_URL=f"http://{host}:{port}", IMGTUI_CACHE=str(work / "cache"))
    import boto3

    boto3.client("s3").create_bucket(Bucket="bench")
    _count_s3fs_bytes()
    import imgtui
    from imgtui.backends import available, path_size, remote
    from imgtui.backends.safety import remove_path
    from imgtui.datasets import SyntheticDataset

    recs = list(SyntheticDataset(count=args.count, size=32))
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, args.count, 64) for _ in range(args.batches)]

    def seq(url: str) -> tuple[float, float]:
        t = time.perf_counter()
        with imgtui.open(url) as r:
            t_open = time.perf_counter() - t
            n = sum(1 for _ in r.iter_batches(256) for _rec in _)
        return t_open, n / (time.perf_counter() - t)

    def first(url: str) -> tuple[float, int]:
        """Cold: open and read one random batch (what a reader of a small part of a store pays)."""
        remove_path(work / "cache")
        FETCHED[0] = 0
        t = time.perf_counter()
        with imgtui.open(url) as r:
            r.get_images(batches[0])
        return time.perf_counter() - t, FETCHED[0]

    def rand(url: str) -> float:
        t = time.perf_counter()
        with imgtui.open(url) as r:
            for b in batches:
                r.get_images(b)
        return len(batches) * 64 / (time.perf_counter() - t)

    print(f"{args.count:,} records of 32x32x3 uint8; sequential: every record; random: {args.batches} batches of 64; "
          "server: moto on localhost\n")
    print("| backend | read | store | local seq rec/s | S3 cold: open s, seq rec/s | S3 again: seq rec/s | local random rec/s "
          "| S3 cold random rec/s | S3 again random rec/s | fetched cold: seq / random | cold open + 1 batch: s, fetched |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for backend in [b for b in args.backends.split(",") if b in available()]:
        local = work / f"s.{backend}"
        with imgtui.writer(local, backend) as w:
            w.write_many(recs)
        url = f"s3://bench/s.{backend}"
        remote.upload(local, url)
        _o, local_seq = seq(str(local))
        local_rand = rand(str(local))
        modes = ["download"] if backend == "lmdb" else ["in place", "download"]
        for mode in modes:
            os.environ["IMGTUI_RANGED"] = "0" if mode == "download" else "1"
            os.environ["IMGTUI_RANGED_MIN"] = "0"  # HDF5 in place however small (the default: 64 MB)
            remove_path(work / "cache")
            FETCHED[0] = 0
            cold_open, cold_seq = seq(url)
            fetched_seq = FETCHED[0]
            again_seq = seq(url)[1]
            remove_path(work / "cache")
            FETCHED[0] = 0
            cold_rand = rand(url)
            fetched_rand = FETCHED[0]
            again_rand = rand(url)
            t_first, fetched_first = first(url)
            print(f"| {backend} | {mode} | {_mb(path_size(local))} | {local_seq:,.0f} | {cold_open:.2f} s, {cold_seq:,.0f} | "
                  f"{again_seq:,.0f} | {local_rand:,.0f} | {cold_rand:,.0f} | {again_rand:,.0f} | "
                  f"{_mb(fetched_seq)} / {_mb(fetched_rand)} | {t_first:.2f} s, {_mb(fetched_first)} |", flush=True)
    server.stop()
    remove_path(work)


if __name__ == "__main__":
    main()
