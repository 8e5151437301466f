"""Open a store + read one record: milliseconds per backend, one fresh process per measurement.

    PYTHONPATH=. python scripts/open_bench.py STORE [STORE ...] [--runs 7] [--json out.json]

Each measurement is a new Python process that first imports imgtui and the store's backend module
(imports are not timed: a training job or the browser pays them once), then times
``imgtui.open(STORE)`` + ``r[k]`` for a random k, and the first read of a second record. The table
gives medians over ``--runs`` processes (the page cache is warm after the first run).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CHILD = r"""
import random, sys, time
if sys.path and sys.path[0] == "":
    del sys.path[0]  # imgtui from PYTHONPATH (or the installed one), not from the current folder
import imgtui
from imgtui.backends import detect_backend, get_backend
path = sys.argv[1]
get_backend(detect_backend(path))  # import the backend's module (h5py, lmdb, zarr ...) untimed
import importlib
for m in ("imgtui.backends.disk.store", "imgtui.backends.lmdb.store", "imgtui.backends.hdf5.store",
          "imgtui.backends.webdataset.store", "imgtui.backends.zarr.store", "imgtui.backends.sharded"):
    try:
        importlib.import_module(m)
    except ImportError:
        pass
rng = random.Random(int(sys.argv[2]))
t0 = time.perf_counter()
r = imgtui.open(path)
t1 = time.perf_counter()
n = len(r)
rec = r[rng.randrange(n)]
t2 = time.perf_counter()
r[rng.randrange(n)]
t3 = time.perf_counter()
assert rec.image.size
print((t1 - t0) * 1e3, (t2 - t0) * 1e3, (t3 - t2) * 1e3, n, r.backend)
"""


def measure(path: str, runs: int) -> dict:
    opens, firsts, seconds = [], [], []
    n = backend = None
    for k in range(runs):
        out = subprocess.run([sys.executable, "-c", CHILD, path, str(k)], capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"{path}: {out.stderr.strip().splitlines()[-1]}")
        o, f, s, n, backend = out.stdout.split()
        opens.append(float(o))
        firsts.append(float(f))
        seconds.append(float(s))
    return {
        "path": path, "backend": backend, "count": int(n), "runs": runs,
        "open_ms": statistics.median(opens), "open_read_one_ms": statistics.median(firsts),
        "next_read_ms": statistics.median(seconds), "open_read_one_all_ms": firsts,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stores", nargs="+")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--json")
    a = ap.parse_args()
    rows = [measure(p, a.runs) for p in a.stores]
    print(f"{'backend':<11} {'records':>9} {'open ms':>8} {'open+read1 ms':>14} {'next read ms':>13}  store")
    for r in rows:
        print(f"{r['backend']:<11} {r['count']:>9,} {r['open_ms']:>8.2f} {r['open_read_one_ms']:>14.2f} {r['next_read_ms']:>13.3f}  {r['path']}")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
