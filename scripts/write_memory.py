"""Peak memory of each backend's writer: RSS growth while writing a streamed set of images.

    PYTHONPATH=. python scripts/write_memory.py [--backends disk,lmdb,hdf5,zarr,webdataset]
        [--count 2000] [--min 256] [--max 768] [--dtype uint16] [--channels 1] [--workdir DIR]
        [--json out.json]

The default set is the "16-bit variable set" of issue 13: 2,000 uint16 images of random sizes
256-768 px a side. The images are generated one at a time by a generator (never held in memory):
a writer that keeps memory bounded shows a small growth, one that batches by record count or
keeps encoded blobs shows a growth near a batch of images.

Each backend runs in a fresh Python process that imports imgtui and the backend, makes one noise
image of the largest size (the pixels are cut from it; numpy's first allocations count in the baseline), notes VmHWM (the kernel's
peak RSS, /proc/self/status) after resetting it (writing 5 to /proc/self/clear_refs resets the
high-water mark; where that is not allowed the baseline is the current RSS), writes the store and
reports the peak growth. Disk's encoder processes are measured too (their peak RSS, summed over
children, from getrusage RUSAGE_CHILDREN: an upper bound, the largest child only).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import json, os, resource, sys, time
if sys.path and sys.path[0] == "":
    del sys.path[0]
import numpy as np
from imgtui.backends import open_writer, get_backend
from imgtui.records import Record

backend, path, count, lo, hi, dtype, channels, seed = sys.argv[1:9]
count, lo, hi, channels, seed = int(count), int(lo), int(hi), int(channels), int(seed)
dtype = np.dtype(dtype)
get_backend(backend)

def status(key):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0

# the pixels come from one noise image of the largest size, made before the baseline: making
# each image must not cost more than the image itself (temporaries would count as the writer's)
_rng = np.random.default_rng(seed)
_noise = _rng.integers(0, np.iinfo(dtype).max if dtype.kind in "iu" else 255, size=(hi + 64, hi),
                       dtype=dtype if dtype.kind in "iu" else np.uint8).astype(dtype, copy=False)

def records():
    rng = np.random.default_rng(seed)
    for i in range(count):
        h, w = (int(v) for v in rng.integers(lo, hi + 1, size=2))
        off = int(rng.integers(0, 64))
        img = _noise[off : off + h, :w].copy()  # a fresh array per record
        if channels != 1:
            img = np.repeat(img[:, :, None], channels, axis=2)
        yield Record(img, i % 10, {})

next(records())  # warm numpy's allocations
try:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset VmHWM to the current RSS
    base = status("VmHWM")
except OSError:
    base = status("VmRSS")
t0 = time.perf_counter()
raw = 0
with open_writer(path, backend) as w:
    for rec in records():
        raw += rec.image.nbytes
        w.write(rec)
dt = time.perf_counter() - t0
peak = status("VmHWM")
children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
print(json.dumps({"backend": backend, "base_mb": base / 1e6, "peak_mb": peak / 1e6,
                  "growth_mb": (peak - base) / 1e6, "child_peak_mb": children / 1e6,
                  "raw_mb": raw / 1e6, "seconds": dt}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", default="disk,lmdb,hdf5,zarr,webdataset")
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--min", type=int, default=256)
    ap.add_argument("--max", type=int, default=768)
    ap.add_argument("--dtype", default="uint16")
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir")
    ap.add_argument("--json")
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(dir=a.workdir, prefix="imgtui-wmem-") as tmp:
        for k, b in enumerate(a.backends.split(",")):
            path = os.path.join(tmp, f"store-{k}-{b}")
            out = subprocess.run(
                [sys.executable, "-c", CHILD, b, path, str(a.count), str(a.min), str(a.max), a.dtype,
                 str(a.channels), str(a.seed)],
                capture_output=True, text=True,
            )
            if out.returncode:
                raise SystemExit(f"{b}: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}")
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"{row['backend']:<11} growth {row['growth_mb']:8.1f} MB  (peak {row['peak_mb']:7.1f} MB, "
                  f"children {row['child_peak_mb']:6.1f} MB)  {row['raw_mb']:8.1f} MB raw in {row['seconds']:6.2f} s",
                  flush=True)
            subprocess.run(["rm", "-rf", path])
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
