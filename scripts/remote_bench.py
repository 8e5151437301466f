"""Reads of a store at a URL against a real S3-compatible server on localhost (moto), per backend:
sequential (every record) and random batches of 64, local vs the object store, cold (empty cache)
vs cached. Needs moto[server], s3fs, boto3 (the test extras). Prints a markdown table.

    python scripts/remote_bench.py [--count 2000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--batches", type=int, default=30)
    args = ap.parse_args()
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    work = Path(tempfile.mkdtemp(prefix="imgtui-remote-bench-"))
    os.environ.update(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION="us-east-1",
                      AWS_ENDPOINT_URL=f"http://{host}:{port}", IMGTUI_CACHE=str(work / "cache"))
    import boto3

    boto3.client("s3").create_bucket(Bucket="bench")
    import imgtui
    from imgtui.backends import available, remote
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

    def rand(url: str) -> float:
        t = time.perf_counter()
        with imgtui.open(url) as r:
            for b in batches:
                r.get_images(b)
        return len(batches) * 64 / (time.perf_counter() - t)

    print(f"{args.count:,} records of 32x32x3 uint8; random: {args.batches} batches of 64; server: moto on localhost\n")
    print("| backend | local seq rec/s | S3 cold: open s, seq rec/s | S3 cached: seq rec/s | local random rec/s | S3 cold random rec/s | S3 cached random rec/s |")
    print("|---|---|---|---|---|---|---|")
    for backend in [b for b in ("disk", "lmdb", "hdf5", "webdataset", "zarr") if b in available()]:
        local = work / f"s.{backend}"
        with imgtui.writer(local, backend) as w:
            w.write_many(recs)
        url = f"s3://bench/s.{backend}"
        remote.upload(local, url)
        _o, local_seq = seq(str(local))
        local_rand = rand(str(local))
        remove_path(work / "cache")
        cold_open, cold_seq = seq(url)
        cached_seq = seq(url)[1]
        remove_path(work / "cache")
        cold_rand = rand(url)
        cached_rand = rand(url)
        print(f"| {backend} | {local_seq:,.0f} | {cold_open:.2f} s, {cold_seq:,.0f} | {cached_seq:,.0f} | "
              f"{local_rand:,.0f} | {cold_rand:,.0f} | {cached_rand:,.0f} |")
    os.environ["IMGTUI_RANGED_MIN"] = "0"  # HDF5 read by ranged requests, no download
    remove_path(work / "cache")
    url = "s3://bench/s.hdf5"
    ranged_open, ranged_seq = seq(url)
    print(f"\nHDF5 by ranged requests (no download): open {ranged_open:.2f} s, seq {ranged_seq:,.0f} rec/s, "
          f"random {rand(url):,.0f} rec/s")
    server.stop()
    remove_path(work)


if __name__ == "__main__":
    main()
