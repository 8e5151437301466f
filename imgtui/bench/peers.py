"""Peer methods: the formats users pick instead of imgtui, each written and read the way its own
documentation shows, so ``imgtui bench`` puts them beside imgtui's backends on the user's images.

Like the article's methods and the floor, a peer is a reference apart from imgtui's backends
(method ``peer``, backend = the peer's name):

- ``webdataset``: tar shards written with ``webdataset.ShardWriter`` (its default shard limits),
  read with ``webdataset.WebDataset(urls).decode()``. No index: ``read_one`` scans the record's
  shard; random batches are not a thing WebDataset does (it shuffles with a buffer).
- ``litdata``: ``litdata.optimize`` (default workers, ``chunk_bytes="64MB"``, ``keep_data_ordered``:
  without it the workers share one queue and record i is not the i-th sample), read with
  ``litdata.StreamingDataset`` (iteration; ``ds[i]`` for single records and random batches).
- ``mds``: MosaicML Streaming's ``MDSWriter`` (default shard size, no compression), read with
  ``streaming.StreamingDataset(local=...)`` (iteration; ``ds[i]``).
- ``zarr``: one plain Zarr array of the stacked images (chunks of whole images, about 1 MB,
  zarr's default codecs) next to a labels and a metadata array in a group, as zarr's docs show;
  fixed-shape images only.

Every record is stored losslessly: the image as an array of its own dtype and shape (npy bytes
where a format has no such dtype), the label as an int (when every label is one) or as JSON
text, the metadata as its JSON text. Each peer's store is read back once and compared bit-exact
(pixels, label and its type, metadata) before its figures count (``verify``).

The packages are optional (``pip install 'imgtui[peers]'``); a peer whose package is missing
is left out with one line (``missing``). Nothing here is imported unless a peer is asked for.
"""

from __future__ import annotations

import bisect
import contextlib
import importlib
import io
import json
import signal
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ImgtuiError, one_line
from ..records import Record
from .methods import BATCH, NULL_CTX, Ctx, Data, Handle, Method, RandomReader

#: the method name of every peer row
PEER = "peer"
#: the peers, in the order their rows come
PEERS = ("webdataset", "litdata", "mds", "zarr")
#: the Python package each peer needs
PACKAGES = {"webdataset": "webdataset", "litdata": "litdata", "mds": "streaming", "zarr": "zarr"}
#: the experiments a peer takes part in (the others are imgtui's own: slices, mutate, processes...)
PEER_EXPERIMENTS = ("store_one", "store_many", "read_one", "read_many", "random_batches", "disk_usage")
INSTALL = "pip install 'imgtui[peers]'"


def missing(name: str) -> str | None:
    """None when the peer can run here, else why not (one line, says what to install)."""
    pkg = PACKAGES[name]
    try:
        importlib.import_module(pkg)
    except ImportError as exc:
        what = (getattr(exc, "name", None) or "").split(".")[0]
        if what and what != pkg:  # the package is there, one of its own dependencies is not
            return f"not installed ({pkg} needs {what}; {INSTALL})"
        return f"not installed ({INSTALL})"
    except Exception as exc:  # installed but broken (e.g. a binary built for another torch)
        return f"{pkg} cannot be imported: {one_line(exc)} ({INSTALL})"
    return None


def make_peer(name: str) -> "PeerMethod":
    if name not in PEER_CLASSES:
        raise ImgtuiError(f"unknown peer {name!r} (choose from {', '.join(PEERS)})")
    why = missing(name)
    if why is not None:
        raise ImgtuiError(f"peer {name}: {why}")
    return PEER_CLASSES[name]()


# -- lossless encoding of labels and metadata -------------------------------------------------------
def label_kind(data: Data) -> str:
    """"int" when every label is an int, else "json" (JSON text keeps 1 and "1" apart)."""
    return "int" if all(type(r.label) is int for r in data.records) else "json"


def enc_label(label: Any, kind: str) -> Any:
    return int(label) if kind == "int" else json.dumps(label)


def dec_label(value: Any, kind: str) -> Any:
    if kind == "int":
        return int(value)
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    return json.loads(str(value))


def npy_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(image), allow_pickle=False)
    return buf.getvalue()


def from_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


class PeerMethod(Method):
    """A peer format behind the benchmark's Method interface (method ``peer``)."""

    method = PEER
    #: experiment -> why this peer does not do it (one line; noted instead of a figure)
    cannot_do: dict[str, str] = {}
    #: experiment -> how this peer does it when that is not what the name suggests (one line, noted)
    how: dict[str, str] = {}

    def cannot(self, experiment: str, data: Data) -> str | None:
        """Why this peer cannot run ``experiment`` on ``data`` (a note), or None."""
        return self.cannot_do.get(experiment)

    def check_data(self, data: Data) -> None:
        why = self.cannot("store_many", data)
        if why:
            raise ImgtuiError(why)

    def read_records(self, handle: Handle) -> list[Record]:
        """Every record as stored (image, label, metadata), for ``verify``."""
        raise NotImplementedError

    def verify(self, handle: Handle, data: Data, ctx: Ctx = NULL_CTX) -> None:
        """Raise ImgtuiError unless every record reads back bit-exact (pixels, label, metadata)."""
        got = self.read_records(handle)
        if len(got) != data.n:
            raise ImgtuiError(f"read back {len(got):,} records of {data.n:,}")
        for i, (a, want) in enumerate(zip(got, data.records)):
            if a != Record(want.image, want.label, json.loads(want.meta_json)):
                raise ImgtuiError(f"record {i} read back differs from the source")
            if (i + 1) % BATCH == 0:
                ctx.advance(BATCH)
        ctx.advance(data.n % BATCH)

    @staticmethod
    def _store_dir(folder: Path) -> Path:
        d = folder / "store"
        d.mkdir()
        return d


class _ListReader(RandomReader):
    """Random batches as ``[get(i) for i in batch]`` over one opened dataset."""

    def __init__(self, ds: Any, get) -> None:
        self.ds, self.get = ds, get

    def batch(self, indices):
        return [self.get(self.ds, int(i)) for i in indices]

    def close(self) -> None:
        self.ds = None


# -- WebDataset ------------------------------------------------------------------------------------
class WebDatasetPeer(PeerMethod):
    backend = "webdataset"
    cannot_do = {
        "random_batches": "no random access by index (WebDataset streams tar shards in order; its "
                          "shuffle is a buffer over the stream)",
    }
    how = {"read_one": "no index: opens the record's shard and streams it up to the record's key"}

    def options_text(self) -> str:
        return "ShardWriter(maxcount=100000,maxsize=3e9),decode()"

    def store_many(self, folder: Path, data: Data, ctx: Ctx) -> Handle:
        import webdataset as wds

        d = self._store_dir(folder)
        kind = label_kind(data)
        lab = "cls" if kind == "int" else "label.json"
        starts: list[int] = []
        with wds.ShardWriter(str(d / "shard-%06d.tar"), verbose=0) as sw:
            for i, r in enumerate(data.records):
                shard = sw.shard
                sw.write({"__key__": f"{i:09d}", "npy": np.ascontiguousarray(r.image),
                          lab: enc_label(r.label, kind) if kind == "int" else json.dumps(r.label).encode(),
                          "json": r.meta_json.encode()})
                if sw.shard != shard or not starts:
                    starts.append(i)
                if (i + 1) % BATCH == 0:
                    ctx.advance(BATCH)
        ctx.advance(data.n % BATCH)
        shards = sorted(str(p) for p in d.glob("shard-*.tar"))
        return Handle(d, data.n, {"shards": shards, "starts": starts, "label": lab})

    def _dataset(self, urls):
        import webdataset as wds

        return wds.WebDataset(urls, shardshuffle=False, empty_check=False)

    def read_many(self, handle: Handle, ctx: Ctx) -> tuple[list, list]:
        images, labels = ctx.collect(), []
        lab = handle.extra["label"]
        for img, label in self._dataset(handle.extra["shards"]).decode().to_tuple("npy", lab):
            images.append(img)
            labels.append(label)
            if len(images) % BATCH == 0:
                ctx.advance(BATCH)
        ctx.advance(len(images) % BATCH)
        return images, labels

    def read_one(self, handle: Handle, index: int) -> np.ndarray:
        """No index: open the record's shard and stream it up to the record's key."""
        s = bisect.bisect_right(handle.extra["starts"], index) - 1
        key = f"{index:09d}"
        ds = self._dataset([handle.extra["shards"][s]]).select(lambda x: x["__key__"] == key).decode().to_tuple("npy")
        for (img,) in ds:
            return img
        raise ImgtuiError(f"record {index} not found in its shard")

    def read_records(self, handle: Handle) -> list[Record]:
        lab = handle.extra["label"]
        kind = "int" if lab == "cls" else "json"
        out = []
        for s in self._dataset(handle.extra["shards"]).decode():
            label = s[lab]
            out.append(Record(s["npy"], int(label) if kind == "int" else label, s["json"]))
        return out


# -- LitData ----------------------------------------------------------------------------------------
def _litdata_sample(item):
    """litdata.optimize's ``fn``: one input (image, label, metadata JSON) to one sample."""
    image, label, meta = item
    return {"image": image, "label": label, "meta": meta}


class _SignalShim:
    """``signal`` for litdata's data processor, without ``signal.signal``: it installs a Ctrl-C
    handler, which Python allows in the main thread only, and the benchmark times its work in a
    worker thread (it handles Ctrl-C itself)."""

    def __getattr__(self, name: str):
        return getattr(signal, name)

    @staticmethod
    def signal(signum, handler):
        return None


@contextlib.contextmanager
def _no_sigint_handler():
    from litdata.processing import data_processor as dp

    if threading.current_thread() is threading.main_thread() or getattr(dp, "signal", None) is not signal:
        yield
        return
    dp.signal = _SignalShim()  # type: ignore[assignment]
    try:
        yield
    finally:
        dp.signal = signal  # type: ignore[assignment]


class _StreamingPeer(PeerMethod):
    """LitData and MDS: a ``StreamingDataset`` of {"image", "label", "meta"} samples, read in
    order for read_many and by index for read_one."""

    def _dataset(self, handle: Handle):
        raise NotImplementedError

    @staticmethod
    def _image(handle: Handle, value) -> np.ndarray:
        return value

    def read_many(self, handle: Handle, ctx: Ctx) -> tuple[list, list]:
        images, labels = ctx.collect(), []
        for s in self._dataset(handle):
            images.append(self._image(handle, s["image"]))
            labels.append(s["label"])
            if len(images) % BATCH == 0:
                ctx.advance(BATCH)
        ctx.advance(len(images) % BATCH)
        return images, labels

    def read_one(self, handle: Handle, index: int) -> np.ndarray:
        return self._image(handle, self._dataset(handle)[index]["image"])


class LitDataPeer(_StreamingPeer):
    backend = "litdata"

    def options_text(self) -> str:
        return "optimize(chunk_bytes=64MB,keep_data_ordered=True,num_workers=default),StreamingDataset"

    def store_many(self, folder: Path, data: Data, ctx: Ctx) -> Handle:
        import litdata as ld

        ctx.check()
        d = folder / "store"
        kind = label_kind(data)
        inputs = [(np.ascontiguousarray(r.image), enc_label(r.label, kind), r.meta_json) for r in data.records]
        with _no_sigint_handler():
            ld.optimize(fn=_litdata_sample, inputs=inputs, output_dir=str(d.resolve()), chunk_bytes="64MB",
                        keep_data_ordered=True, verbose=False)
        ctx.advance(data.n)
        return Handle(d, data.n, {"label": kind})

    def _dataset(self, handle: Handle):
        import litdata as ld

        return ld.StreamingDataset(str(handle.path.resolve()))


    def open_random(self, handle: Handle) -> RandomReader:
        return _ListReader(self._dataset(handle), lambda ds, i: ds[i]["image"])

    def read_records(self, handle: Handle) -> list[Record]:
        kind = handle.extra["label"]
        return [Record(s["image"], dec_label(s["label"], kind), json.loads(s["meta"])) for s in self._dataset(handle)]


# -- MosaicML Streaming (MDS) ---------------------------------------------------------------------
#: the dtypes MDS's ``ndarray`` encoding stores; others go as npy bytes
MDS_DTYPES = ("uint8", "int8", "uint16", "int16", "float16", "uint32", "int32", "float32", "uint64", "int64", "float64")


class MDSPeer(_StreamingPeer):
    backend = "mds"

    def options_text(self) -> str:
        return "MDSWriter(defaults),StreamingDataset(local,shuffle=False)"

    def store_many(self, folder: Path, data: Data, ctx: Ctx) -> Handle:
        from streaming import MDSWriter

        d = folder / "store"
        kind = label_kind(data)
        raw = all(r.image.dtype.name in MDS_DTYPES for r in data.records)
        columns = {"image": "ndarray" if raw else "bytes", "label": "int" if kind == "int" else "str", "meta": "str"}
        with MDSWriter(out=str(d), columns=columns) as w:
            for i, r in enumerate(data.records):
                w.write({"image": np.ascontiguousarray(r.image) if raw else npy_bytes(r.image),
                         "label": enc_label(r.label, kind), "meta": r.meta_json})
                if (i + 1) % BATCH == 0:
                    ctx.advance(BATCH)
        ctx.advance(data.n % BATCH)
        return Handle(d, data.n, {"label": kind, "raw": raw})

    def _dataset(self, handle: Handle):
        from streaming import StreamingDataset

        return StreamingDataset(local=str(handle.path), shuffle=False, batch_size=64)

    @staticmethod
    def _image(handle: Handle, value) -> np.ndarray:
        return value if handle.extra["raw"] else from_npy(value)


    def open_random(self, handle: Handle) -> RandomReader:
        return _ListReader(self._dataset(handle), lambda ds, i: self._image(handle, ds[i]["image"]))

    def read_records(self, handle: Handle) -> list[Record]:
        kind = handle.extra["label"]
        return [Record(self._image(handle, s["image"]), dec_label(s["label"], kind), json.loads(s["meta"]))
                for s in self._dataset(handle)]


# -- Zarr, a plain array ------------------------------------------------------------------------------
#: about this many bytes of whole images per chunk (zarr's docs: chunks of at least 1 MB)
ZARR_CHUNK_BYTES = 1 << 20


class ZarrPeer(PeerMethod):
    backend = "zarr"

    def cannot(self, experiment: str, data: Data) -> str | None:
        if data.stacked is None:
            return "a plain Zarr array needs one shape and dtype for every image (these vary)"
        return None

    def options_text(self) -> str:
        return "create_array(chunks=~1MB of whole images,default codecs)"

    def store_one(self, folder: Path, record: Record) -> Handle:
        return self.store_many(folder, Data([record], record.image[None], record.image.nbytes), NULL_CTX)

    @staticmethod
    def _rows(stacked: np.ndarray) -> int:
        return max(1, ZARR_CHUNK_BYTES // max(1, stacked[0].nbytes)) if len(stacked) else 1

    def store_many(self, folder: Path, data: Data, ctx: Ctx) -> Handle:
        import zarr

        st = data.stacked
        if st is None:
            raise ImgtuiError(self.cannot("store_many", data) or "")
        d = folder / "store.zarr"
        kind = label_kind(data)
        k = self._rows(st)
        root = zarr.open_group(str(d), mode="w")
        images = root.create_array("images", shape=st.shape, chunks=(k,) + st.shape[1:], dtype=st.dtype)
        labels = root.create_array("labels", shape=(data.n,), chunks=(max(1, data.n),),
                                   dtype="int64" if kind == "int" else str)
        meta = root.create_array("metadata", shape=(data.n,), chunks=(max(1, data.n),), dtype=str)
        step = k * max(1, (8 << 20) // max(1, k * (st[0].nbytes if len(st) else 1)))
        for s in range(0, data.n, step):
            images[s : s + step] = st[s : s + step]
            ctx.advance(min(step, data.n - s))
        if data.n:
            labels[:] = np.array([enc_label(r.label, kind) for r in data.records],
                                 dtype=np.int64 if kind == "int" else object)
            meta[:] = np.array([r.meta_json for r in data.records], dtype=object)
        return Handle(d, data.n, {"label": kind, "rows": k})

    def read_many(self, handle: Handle, ctx: Ctx) -> tuple[list, list]:
        import zarr

        root = zarr.open_group(str(handle.path), mode="r")
        images = root["images"]
        n = images.shape[0]
        step = handle.extra["rows"] * max(1, (8 << 20) // max(1, handle.extra["rows"] * int(np.prod(images.shape[1:])) * images.dtype.itemsize))
        out = ctx.collect()
        for s in range(0, n, step):
            out.append(images[s : s + step])
            ctx.advance(min(step, n - s))
        return out, list(root["labels"][:])

    def read_one(self, handle: Handle, index: int) -> np.ndarray:
        import zarr

        return zarr.open_array(str(handle.path / "images"), mode="r")[index]

    def open_random(self, handle: Handle) -> RandomReader:
        import zarr

        return _ZarrReader(zarr.open_array(str(handle.path / "images"), mode="r"))

    def read_records(self, handle: Handle) -> list[Record]:
        import zarr

        root = zarr.open_group(str(handle.path), mode="r")
        kind = handle.extra["label"]
        images, labels, meta = root["images"][:], root["labels"][:], root["metadata"][:]
        return [Record(images[i], dec_label(labels[i], kind), json.loads(str(meta[i]))) for i in range(len(images))]


class _ZarrReader(RandomReader):
    def __init__(self, arr) -> None:
        self.arr = arr

    def batch(self, indices):
        return self.arr.get_orthogonal_selection((np.asarray(indices, dtype=np.int64),))

    def close(self) -> None:
        self.arr = None


PEER_CLASSES: dict[str, type[PeerMethod]] = {
    "webdataset": WebDatasetPeer, "litdata": LitDataPeer, "mds": MDSPeer, "zarr": ZarrPeer,
}
