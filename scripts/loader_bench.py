"""PyTorch DataLoader over ``imgtui.dataset`` vs a memmap floor and the peer formats: records/s, one run, same data.

    PYTHONPATH=. python scripts/loader_bench.py NAME=STORE [NAME=STORE ...] [--peers LIST|all] [--repeats 3] [--json out.json]

Stores given under one NAME are the same dataset in several backends (``cifar=c.lmdb cifar=c.h5``):
they share one floor, one copy of each peer and one timing loop. Every row is one epoch of
``DataLoader(ds, batch_size=64, num_workers=0)``, timed; ``--repeats`` epochs (interleaved: each
repeat times every row once), the median is reported. Map-style rows are loaded with
``shuffle=True``; iterable rows (WebDataset, MDS, LitData) shuffle themselves as their
documentation shows (``shuffle=True`` in a DataLoader does not apply to an iterable dataset), and
their rows say so. Rows:

- ``imgtui <backend>``: the dataset as users get it (PyTorch >= 2.1 calls its ``__getitems__``);
- ``imgtui <backend> per-item``: the same dataset with ``__getitems__`` hidden (one ``__getitem__``
  per record);
- ``memmap floor``: the same images saved in one ``.npy`` (labels in another), opened with
  ``np.load(mmap_mode='r')`` in the same kind of map-style Dataset (``__getitem__`` copies one row;
  the ``batched`` floor also has ``__getitems__`` doing one fancy-indexed gather). Same-shape images
  only: with images of varying shape there is no floor row (it says so);
- peers (``--peers webdataset,litdata,mds,zarr`` or ``all``; ``--litdata`` is ``--peers litdata``),
  each written once with the writer of ``imgtui bench --peers`` (``imgtui.bench.peers``: the image
  with its own dtype and shape, the label) into ``--cache``, and read as its documentation shows
  for PyTorch:

  - ``webdataset`` (iterable): ``wds.WebDataset(shards, shardshuffle=100).shuffle(1000).decode()
    .to_tuple("npy", <label>)``: shuffles shards and samples in a 1,000-sample buffer;
  - ``litdata`` (iterable): ``litdata.StreamingDataset(dir, shuffle=True, transform=...)``;
  - ``mds`` (iterable): ``streaming.StreamingDataset(local=dir, shuffle=True, batch_size=64)``,
    subclassed with a ``__getitem__`` giving (image, label), as its docs show;
  - ``zarr`` (map-style, ``shuffle=True``): the group's ``images`` array and its labels;
    ``__getitems__`` is one orthogonal selection (``get_orthogonal_selection``) per batch. A plain
    array needs one shape and dtype for every image.

  A peer whose package is missing, or that cannot hold the images, is left out with one line.

Images of varying shape cannot be stacked by ``default_collate``: every row of such a NAME then
collates a batch as a list of image tensors (each a copy, as default_collate's stack copies) and a
tensor (or list) of labels.

Checks (a failure stops the script): the first batch of every row is compared bit-exact (pixels,
dtype, shape, label and its type) with the records of the NAME's first store, found by their pixels
(a shuffled batch carries no indices); every timed epoch must yield as many records as the store has.

Ratios are against the per-item memmap floor and against the ``imgtui`` row of the NAME's first
store. Numbers on a shared machine are noisy: compare within one run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np

import imgtui
from imgtui.bench import peers
from imgtui.bench.methods import NULL_CTX, Data, Handle
from imgtui.records import Record, same_pixels

try:
    import torch
    from torch.utils.data import DataLoader, Dataset, default_collate
except ImportError:  # pragma: no cover
    raise SystemExit("loader_bench needs torch (pip install torch --index-url https://download.pytorch.org/whl/cpu)")

#: WebDataset's sample shuffle buffer and shard shuffle (the values its docs show)
WDS_BUFFER, WDS_SHARDSHUFFLE = 1000, 100


# -- map-style datasets over one N x ... image array --------------------------------------------------
class ArrayDataset(Dataset):
    """Map-style over an N x ... image array and its labels, opened lazily in each process
    (``_open``); ``__getitem__`` copies one row. ``batch`` is one gather (``_gather``) per batch,
    for subclasses that offer ``__getitems__``."""

    def __init__(self, n: int) -> None:
        self._n = n
        self._arrays: tuple[Any, list] | None = None

    def _open(self) -> tuple[Any, list]:
        """(images, labels as Python values)."""
        raise NotImplementedError

    def _gather(self, images: Any, idx: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def arrays(self) -> tuple[Any, list]:
        if self._arrays is None:
            self._arrays = self._open()
        return self._arrays

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int):
        images, labels = self.arrays()
        return np.array(images[i]), labels[i]

    def batch(self, indices) -> list:
        images, labels = self.arrays()
        idx = np.asarray(indices, dtype=np.int64)
        imgs = self._gather(images, idx)
        return [(imgs[k], labels[i]) for k, i in enumerate(idx.tolist())]


class MemmapDataset(ArrayDataset):
    """The floor: one .npy of N x H x W x C images (np.load mmap_mode='r') and one of labels."""

    def __init__(self, images: str, labels: str) -> None:
        self.images_path, self.labels_path = images, labels
        super().__init__(len(np.load(labels, mmap_mode="r")))

    def _open(self) -> tuple[Any, list]:
        return np.load(self.images_path, mmap_mode="r"), np.load(self.labels_path).tolist()

    def _gather(self, images: Any, idx: np.ndarray) -> np.ndarray:
        imgs = images[np.sort(idx)]  # one gather in file order
        return imgs[np.argsort(np.argsort(idx))]


class BatchedMemmapDataset(MemmapDataset):
    def __getitems__(self, indices):
        return self.batch(indices)


class ZarrDataset(ArrayDataset):
    """A peer: the ``images`` array and the labels of the Zarr group ``imgtui.bench.peers`` writes."""

    def __init__(self, handle: Handle) -> None:
        self.path, self.kind = str(handle.path), handle.extra["label"]
        super().__init__(handle.count)

    def _open(self) -> tuple[Any, list]:
        import zarr

        root = zarr.open_group(self.path, mode="r")
        return root["images"], [peers.dec_label(v, self.kind) for v in root["labels"][:]]

    def _gather(self, images: Any, idx: np.ndarray) -> np.ndarray:
        return images.get_orthogonal_selection((idx,))

    def __getitems__(self, indices):
        return self.batch(indices)


class PerItem(Dataset):
    """``ds`` with only ``__getitem__`` (hides ``__getitems__``)."""

    def __init__(self, ds) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i):
        return self.ds[i]


# -- the rows ------------------------------------------------------------------------------------------
@dataclass
class Row:
    dataset: Any
    backend: str
    store: str
    #: False: an iterable dataset that shuffles itself (DataLoader's shuffle=True does not apply)
    loader_shuffle: bool = True
    note: str = ""


def iterable_note(how: str) -> str:
    return f"iterable: {how}; DataLoader shuffle=True does not apply"


def webdataset_row(handle: Handle, batch_size: int) -> Row:
    import webdataset as wds

    ds = (wds.WebDataset(handle.extra["shards"], shardshuffle=WDS_SHARDSHUFFLE, empty_check=False)
          .shuffle(WDS_BUFFER).decode().to_tuple("npy", handle.extra["label"]))
    return Row(ds, "webdataset", str(handle.path), False,
               iterable_note(f"shuffles shards ({WDS_SHARDSHUFFLE}) and samples in its {WDS_BUFFER:,}-sample buffer"))


def _litdata_pair(kind: str, sample: dict) -> tuple:
    return sample["image"], peers.dec_label(sample["label"], kind)


def litdata_row(handle: Handle, batch_size: int) -> Row:
    import litdata as ld

    ds = ld.StreamingDataset(str(handle.path.resolve()), shuffle=True,
                             transform=partial(_litdata_pair, handle.extra["label"]))
    return Row(ds, "litdata", str(handle.path), False, iterable_note("StreamingDataset(shuffle=True) shuffles itself"))


def mds_row(handle: Handle, batch_size: int) -> Row:
    from streaming import StreamingDataset

    kind, raw = handle.extra["label"], handle.extra["raw"]

    class Pairs(StreamingDataset):  # the docs' way to turn samples into what the model takes
        def __getitem__(self, i):
            s = super().__getitem__(i)
            return (s["image"] if raw else peers.from_npy(s["image"])), peers.dec_label(s["label"], kind)

    ds = Pairs(local=str(handle.path), shuffle=True, batch_size=batch_size)
    return Row(ds, "mds", str(handle.path), False,
               iterable_note(f"StreamingDataset(shuffle=True, batch_size={batch_size}) shuffles itself"))


def zarr_row(handle: Handle, batch_size: int) -> Row:
    return Row(ZarrDataset(handle), "zarr", str(handle.path), True,
               "map-style; __getitems__ is one get_orthogonal_selection per batch")


PEER_ROWS: dict[str, Callable[[Handle, int], Row]] = {
    "webdataset": webdataset_row, "litdata": litdata_row, "mds": mds_row, "zarr": zarr_row,
}


# -- data, floor files and peer stores ------------------------------------------------------------------
def load_data(store: str) -> Data:
    """Every record of ``store`` in memory (images stacked when they share one shape and dtype):
    what the floor files, the peers' writers and the first-batch check get."""
    with imgtui.open(store) as r:
        records = [rec for batch in r.iter_batches() for rec in batch]
    first = records[0].image if records else None
    stacked = None
    if first is not None and all(x.image.shape == first.shape and x.image.dtype == first.dtype for x in records):
        stacked = np.stack([x.image for x in records])
        records = [Record(stacked[i], x.label, x.metadata) for i, x in enumerate(records)]
    return Data(records, stacked, sum(x.image.nbytes for x in records))


def floor_files(key: str, data: Data, cache: Path) -> tuple[str, str]:
    """The images and labels as two .npy files (made once, reused)."""
    imgs, labs = cache / f"{key}.images.npy", cache / f"{key}.labels.npy"
    if not imgs.exists():
        labels = data.labels
        ints = all(type(x) is int for x in labels)
        np.save(labs, np.asarray(labels, dtype=np.int64 if ints else str))
        np.save(imgs, data.stacked)
    return str(imgs), str(labs)


def peer_store(name: str, key: str, data: Data, cache: Path) -> Handle:
    """The peer's store of ``data``, written once with ``imgtui.bench.peers`` and reused after."""
    folder = (cache / f"{key}.{name}").resolve()
    done = folder / "handle.json"
    if done.exists():
        h = json.loads(done.read_text())
        if Path(h["path"]).is_relative_to(folder):  # else a copy of another folder's store: write anew
            return Handle(Path(h["path"]), h["count"], h["extra"])
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    t0 = time.perf_counter()
    handle = peers.make_peer(name).store_many(folder, data, NULL_CTX)
    print(f"  wrote the {name} store of {data.n:,} records in {time.perf_counter() - t0:.1f} s: {handle.path}", flush=True)
    done.write_text(json.dumps({"path": str(handle.path), "count": handle.count, "extra": handle.extra}))
    return handle


def peer_skip(name: str, data: Data) -> str | None:
    """Why peer ``name`` cannot run here on ``data`` (one line), or None."""
    return peers.missing(name) or peers.make_peer(name).cannot("store_many", data)


# -- loading, checking, timing ----------------------------------------------------------------------------
def ragged_collate(batch: list) -> list:
    """Images of varying shape: a list of image tensors and the labels as default_collate makes them.
    Each image is copied, as default_collate's stack copies same-shape images: a row that returns
    views of its store's memory (imgtui's LMDB) gets the same work as one that decodes into new arrays."""
    images, labels = zip(*batch)
    return [[torch.from_numpy(np.array(x)) for x in images], default_collate(list(labels))]


def loader(row: Row, batch_size: int, workers: int, seed: int, collate: Callable | None) -> DataLoader:
    g = torch.Generator()
    g.manual_seed(seed)
    return DataLoader(row.dataset, batch_size=batch_size, shuffle=row.loader_shuffle, num_workers=workers,
                      generator=g, collate_fn=collate)


def digest(image: np.ndarray) -> tuple:
    return image.dtype.str, image.shape, hashlib.blake2b(np.ascontiguousarray(image).data, digest_size=16).digest()


class Truth:
    """The records of a store, found by their pixels (a shuffled batch carries no indices)."""

    def __init__(self, store: str, data: Data) -> None:
        self.store, self.records = store, data.records
        self.by_pixels: dict[tuple, list[int]] = defaultdict(list)
        for i, r in enumerate(data.records):
            self.by_pixels[digest(r.image)].append(i)

    def check_batch(self, row_name: str, batch: Any, want: int) -> None:
        """Raise SystemExit unless every (image, label) of ``batch`` is a record of the store, bit-exact."""
        images, labels = batch
        if len(images) != want or len(labels) != want:
            raise SystemExit(f"{row_name}: the first batch has {len(images)} images and {len(labels)} labels, not {want}")
        for k in range(want):
            image = images[k].numpy() if isinstance(images[k], torch.Tensor) else np.asarray(images[k])
            label = labels[k].item() if isinstance(labels[k], torch.Tensor) else labels[k]
            if not any(same_pixels(image, self.records[i].image) and type(label) is type(self.records[i].label)
                       and label == self.records[i].label for i in self.by_pixels.get(digest(image), ())):
                raise SystemExit(f"{row_name}: WRONG DATA: sample {k} of the first batch ({image.dtype} {image.shape}, "
                                 f"label {label!r}) is no record of {self.store} (pixels, dtype, shape and label compared)")


def epoch_rate(dl: DataLoader, max_batches: int = 0) -> tuple[float, int]:
    """records/s of one epoch of ``dl`` (at most ``max_batches`` batches) and the records it gave."""
    n = 0
    t0 = time.perf_counter()
    for k, batch in enumerate(dl):
        n += len(batch[0]) if isinstance(batch, (list, tuple)) else len(batch)
        if max_batches and k + 1 >= max_batches:
            break
    return n / (time.perf_counter() - t0), n


def dataset_rows(name: str, stores: list[str], data: Data, peer_names: list[str], batch_size: int,
                 cache: Path) -> tuple[dict[str, Row], list[dict]]:
    """The rows of one NAME, and what could not run (each said in one line)."""
    rows: dict[str, Row] = {}
    skipped: list[dict] = []

    def skip(row: str, why: str) -> None:
        print(f"{name}: {row}: skipped: {why}", flush=True)
        skipped.append({"dataset": name, "row": row, "why": why})

    key = f"{name}-{data.n}"
    if data.stacked is not None:
        images, labels = floor_files(key, data, cache)
        rows["memmap floor"] = Row(MemmapDataset(images, labels), "numpy", images)
        rows["memmap floor batched"] = Row(BatchedMemmapDataset(images, labels), "numpy", images)
    else:
        skip("memmap floor", "the images vary in shape or dtype, and one .npy holds one shape")
    for store in stores:
        ds = imgtui.dataset(store)
        rows[f"imgtui {ds.backend}"] = Row(ds, ds.backend, store)
        if hasattr(type(ds), "__getitems__"):
            rows[f"imgtui {ds.backend} per-item"] = Row(PerItem(ds), ds.backend, store)
    for peer in peer_names:
        why = peer_skip(peer, data)
        if why:
            skip(peer, why)
            continue
        rows[peer] = PEER_ROWS[peer](peer_store(peer, key, data, cache), batch_size)
        print(f"{name}: {peer}: {rows[peer].note}", flush=True)
    return rows, skipped


def parse_peers(a: argparse.Namespace) -> list[str]:
    asked = {p.strip() for p in (a.peers or "").split(",") if p.strip()}
    if "all" in asked:
        asked = set(peers.PEERS)
    if a.litdata:
        asked.add("litdata")
    unknown = asked - set(peers.PEERS)
    if unknown:
        raise SystemExit(f"--peers: unknown {', '.join(sorted(unknown))} (choose from {', '.join(peers.PEERS)} or all)")
    return [p for p in peers.PEERS if p in asked]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stores", nargs="+", help="NAME=STORE (stores under one NAME: the same dataset)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--max-batches", type=int, default=0, help="time at most this many batches per epoch (0: all)")
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "imgtui-loader-bench"),
                    help="folder for the floor files and peer stores (made once, reused)")
    ap.add_argument("--peers", default="", help=f"comma list of {','.join(peers.PEERS)} or all: peer rows")
    ap.add_argument("--litdata", action="store_true", help="the same as --peers litdata")
    ap.add_argument("--json")
    a = ap.parse_args()
    peer_names = parse_peers(a)
    cache = Path(a.cache)
    cache.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    groups: dict[str, list[str]] = {}
    for spec in a.stores:
        name, _, store = spec.partition("=")
        groups.setdefault(name, []).append(store)
    load_before = os.getloadavg()
    out, skipped = [], []
    for name, stores in groups.items():
        data = load_data(stores[0])
        truth = Truth(stores[0], data)
        rows, skips = dataset_rows(name, stores, data, peer_names, a.batch_size, cache)
        skipped += skips
        collate = None if data.stacked is not None else ragged_collate
        if collate is not None:
            print(f"{name}: images of varying shape: every row collates a batch as a list of image tensors (copies)", flush=True)
        for m, row in rows.items():  # untimed: the first batch of every row, checked bit-exact
            truth.check_batch(f"{name} {m}", next(iter(loader(row, a.batch_size, a.workers, -1, collate))),
                              min(a.batch_size, data.n))
        print(f"{name}: the first batch of every row matches {stores[0]} bit-exact", flush=True)
        rates: dict[str, list[float]] = {m: [] for m in rows}
        for rep in range(a.repeats):  # interleaved: each repeat measures every row once
            for m, row in rows.items():
                rate, n = epoch_rate(loader(row, a.batch_size, a.workers, rep, collate), a.max_batches)
                if not a.max_batches and n != data.n:
                    raise SystemExit(f"{name} {m}: an epoch gave {n:,} records, the store has {data.n:,}")
                rates[m].append(rate)
        floor = statistics.median(rates["memmap floor"]) if "memmap floor" in rates else None
        ref_name = next(m for m in rows if m.startswith("imgtui "))
        ref = statistics.median(rates[ref_name])
        for m, rs in rates.items():
            med, row = statistics.median(rs), rows[m]
            out.append({"dataset": name, "store": row.store, "backend": row.backend, "method": m, "records_per_s": med,
                        "vs_floor": med / floor if floor else None, "vs_imgtui": med / ref, "imgtui_ref": ref_name,
                        "loader_shuffle": row.loader_shuffle, "note": row.note, "all": rs})
            vs_floor = f"{med / floor:6.2f}x floor" if floor else "     - floor"
            print(f"{name:<14} {m:<26} {med:>10,.0f} records/s {vs_floor} {med / ref:6.2f}x {ref_name}   "
                  f"({', '.join(f'{r:,.0f}' for r in rs)})", flush=True)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"batch_size": a.batch_size, "workers": a.workers, "repeats": a.repeats, "max_batches": a.max_batches,
                       "torch": torch.__version__, "load_before": load_before, "load_after": os.getloadavg(),
                       "rows": out, "skipped": skipped}, fh, indent=1)


if __name__ == "__main__":
    sys.exit(main())
