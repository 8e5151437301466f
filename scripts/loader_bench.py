"""PyTorch DataLoader over ``imgtui.dataset`` vs a memmap floor: records/s, one run, same data.

    PYTHONPATH=. python scripts/loader_bench.py NAME=STORE [NAME=STORE ...] [--repeats 3] [--json out.json]

For every store: a ``DataLoader(ds, batch_size=64, shuffle=True, num_workers=0)`` over
``imgtui.dataset(STORE)`` for one epoch, timed; ``--repeats`` epochs, the median is reported.
Rows:

- ``imgtui``: the dataset as users get it (PyTorch >= 2.1 calls its ``__getitems__``);
- ``imgtui per-item``: the same dataset with ``__getitems__`` hidden (one ``__getitem__`` per record);
- ``memmap floor``: the same images saved in one ``.npy`` (labels in another), opened with
  ``np.load(mmap_mode='r')`` in the same kind of map-style Dataset (``__getitem__`` copies one row;
  the ``batched`` floor also has ``__getitems__`` doing one fancy-indexed gather);
- ``litdata``: LitData's ``StreamingDataset`` over the same records (when ``litdata`` is installed
  and ``--litdata`` is given), written once with ``litdata.optimize``.

Ratios are against the per-item memmap floor of the same store's images. Numbers on a shared
machine are noisy: compare within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import imgtui

try:
    import torch
    from torch.utils.data import DataLoader, Dataset
except ImportError:  # pragma: no cover
    raise SystemExit("loader_bench needs torch (pip install torch --index-url https://download.pytorch.org/whl/cpu)")


class MemmapDataset(Dataset):
    """The floor: one .npy of N x H x W x C images (np.load mmap_mode='r') and one of labels."""

    def __init__(self, images: str, labels: str) -> None:
        self.images_path, self.labels_path = images, labels
        self._mm = self._lab = None
        self._n = len(np.load(labels, mmap_mode="r"))

    def _open(self) -> None:
        if self._mm is None:
            self._mm = np.load(self.images_path, mmap_mode="r")
            self._lab = np.load(self.labels_path)

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int):
        self._open()
        return np.array(self._mm[i]), self._lab[i].item()


class BatchedMemmapDataset(MemmapDataset):
    def __getitems__(self, indices):
        self._open()
        idx = np.asarray(indices)
        imgs = self._mm[np.sort(idx)]  # one gather in file order
        order = np.argsort(np.argsort(idx))
        imgs = imgs[order]
        labs = self._lab[idx].tolist()  # python ints or strs, as __getitem__
        return [(imgs[k], labs[k]) for k in range(len(idx))]


class PerItem(Dataset):
    """``ds`` with only ``__getitem__`` (hides ``__getitems__``)."""

    def __init__(self, ds) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i):
        return self.ds[i]


def epoch_rate(ds, batch_size: int, workers: int, seed: int, max_batches: int = 0) -> float:
    g = torch.Generator()
    g.manual_seed(seed)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers, generator=g)
    n = 0
    t0 = time.perf_counter()
    for k, batch in enumerate(loader):
        n += len(batch[0]) if isinstance(batch, (list, tuple)) else len(batch)
        if max_batches and k + 1 >= max_batches:
            break
    return n / (time.perf_counter() - t0)


def floor_files(store: str, cache: Path) -> tuple[str, str]:
    """The store's images and labels as two .npy files (made once, reused)."""
    name = Path(store).name
    imgs, labs = cache / f"{name}.images.npy", cache / f"{name}.labels.npy"
    if not imgs.exists():
        with imgtui.open(store) as r:
            np.save(imgs, r.get_images(range(len(r))))
            labels = r.labels()
            ints = all(type(x) is int for x in labels)
            np.save(labs, np.asarray(labels, dtype=np.int64 if ints else str))
    return str(imgs), str(labs)


def litdata_dataset(store: str, cache: Path):
    import litdata as ld

    out = cache / f"{Path(store).name}.litdata"
    if not out.exists():
        images, labels = floor_files(store, cache)
        arr, lab = np.load(images, mmap_mode="r"), np.load(labels)

        def fn(i):
            return {"image": np.array(arr[i]), "label": int(lab[i])}

        ld.optimize(fn=fn, inputs=list(range(len(lab))), output_dir=str(out), chunk_bytes="64MB", num_workers=1)

    class LD(Dataset):
        def __init__(self):
            self.ds = ld.StreamingDataset(str(out))

        def __len__(self):
            return len(self.ds)

        def __getitem__(self, i):
            d = self.ds[i]
            return d["image"], d["label"]

    return LD()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stores", nargs="+", help="NAME=STORE")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--max-batches", type=int, default=0, help="time at most this many batches per epoch (0: all)")
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "imgtui-loader-bench"))
    ap.add_argument("--litdata", action="store_true", help="add LitData's StreamingDataset as a peer")
    ap.add_argument("--json")
    a = ap.parse_args()
    cache = Path(a.cache)
    cache.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    rows = []
    for spec in a.stores:
        name, _, store = spec.partition("=")
        images, labels = floor_files(store, cache)
        ds = imgtui.dataset(store)
        methods = {
            "memmap floor": MemmapDataset(images, labels),
            "memmap floor batched": BatchedMemmapDataset(images, labels),
            "imgtui": ds,
            "imgtui per-item": PerItem(ds),
        }
        if not hasattr(type(ds), "__getitems__"):
            del methods["imgtui per-item"]  # the same thing
        if a.litdata:
            methods["litdata"] = litdata_dataset(store, cache)
        rates: dict[str, list[float]] = {m: [] for m in methods}
        for rep in range(a.repeats):  # interleaved: each repeat measures every method once
            for m, d in methods.items():
                rates[m].append(epoch_rate(d, a.batch_size, a.workers, seed=rep, max_batches=a.max_batches))
        floor = statistics.median(rates["memmap floor"])
        for m, rs in rates.items():
            med = statistics.median(rs)
            rows.append({"dataset": name, "store": store, "backend": ds.backend if m.startswith("imgtui") else m,
                         "method": m, "records_per_s": med, "vs_floor": med / floor, "all": rs})
            print(f"{name:<14} {m:<22} {med:>10,.0f} records/s  {med / floor:5.2f}x floor   "
                  f"({', '.join(f'{r:,.0f}' for r in rs)})", flush=True)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"batch_size": a.batch_size, "workers": a.workers, "repeats": a.repeats, "max_batches": a.max_batches,
                       "torch": torch.__version__, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    sys.exit(main())
