"""The built-in default dataset: deterministic synthetic images, CIFAR-like unless told otherwise."""

from __future__ import annotations

import threading
from typing import Iterator

import numpy as np

from ..errors import DatasetError
from ..records import DTYPE_CODES, DTYPES_TEXT, Record
from .base import Dataset


class SyntheticDataset(Dataset):
    """``count`` images generated from ``seed``; record i is the same whatever else is asked.

    - fixed size: ``size`` (HxW, int or (h, w)); variable sizes: ``variable=(lo, hi)`` draws H and W
      independently from [lo, hi] per record.
    - ``channels``: 1 (stored as HxW), 3 or 4; ``bits``: 8 (uint8) or 16 (uint16).
    - ``dtype``: any record dtype instead (overrides ``bits``): float32/float64 images hold values
      around -300..700 (CT-like), int8/int16/int32 the same gradients centred on 0, uint32 values up to
      ~4e9, bool a thresholded mask.
    - ``num_labels`` integer labels; metadata carries the seed-derived ``source_index``.

    Images are smooth gradients plus noise, so PNG compresses them roughly like photographs.
    """

    kind = "synthetic"

    def __init__(
        self,
        count: int = 1000,
        size: int | tuple[int, int] = 32,
        variable: tuple[int, int] | None = None,
        channels: int = 3,
        bits: int = 8,
        num_labels: int = 10,
        seed: int = 0,
        metadata: bool = True,
        dtype: str | None = None,
    ) -> None:
        if count < 0:
            raise DatasetError(f"synthetic: count must be >= 0, got {count}")
        if channels not in (1, 3, 4):
            raise DatasetError(f"synthetic: channels must be 1, 3 or 4, got {channels}")
        if bits not in (8, 16):
            raise DatasetError(f"synthetic: bits must be 8 or 16, got {bits}")
        if dtype is not None:
            try:
                dt = np.dtype(dtype)
            except TypeError:
                dt = None
            if dt not in DTYPE_CODES:
                raise DatasetError(f"synthetic: dtype must be one of {DTYPES_TEXT}, got {dtype!r}")
            if dt in (np.uint8, np.uint16):
                bits, dt = 8 * dt.itemsize, None  # the same images as bits=8/16
            dtype = dt
        self.dtype = dtype
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        if h <= 0 or w <= 0:
            raise DatasetError(f"synthetic: size must be positive, got {h}x{w}")
        if variable is not None:
            lo, hi = variable
            if not 0 < lo <= hi:
                raise DatasetError(f"synthetic: variable size range must be 0 < lo <= hi, got {lo}-{hi}")
        if num_labels < 1:
            raise DatasetError("synthetic: num_labels must be >= 1")
        self.count, self.size, self.variable = int(count), (int(h), int(w)), variable
        self.channels, self.bits, self.num_labels, self.seed = channels, bits, num_labels, seed
        self.with_metadata = metadata

    @property
    def length(self) -> int:
        return self.count

    def describe(self) -> str:
        if self.variable:
            size = f"{self.variable[0]}-{self.variable[1]} px x{self.channels}"
        else:
            size = f"{self.size[0]}x{self.size[1]}x{self.channels}"
        kind = self.dtype.name if self.dtype is not None else f"uint{self.bits}"
        return f"synthetic {self.count:,} x {size} {kind} (seed {self.seed})"

    def _rng(self, i: int) -> np.random.Generator:
        """Record ``i``'s random stream: Philox keyed by (seed, i), counter from 0. One generator per
        thread, re-keyed per record (a new ``default_rng((seed, i))`` cost ~80 us of SeedSequence
        hashing, most of a small record's time: 1,000,000 records were 10 minutes to convert)."""
        local = _LOCAL.__dict__
        gen = local.get("gen")
        if gen is None:
            gen = local["gen"] = np.random.Generator(np.random.Philox(key=0))
            local["state"] = gen.bit_generator.state
        state = local["state"]
        state["state"]["key"][0] = self.seed & _U64
        state["state"]["key"][1] = i
        state["state"]["counter"][:] = 0
        state["buffer_pos"] = 4  # the buffer is empty: the first draw starts at counter 0
        state["has_uint32"] = 0
        gen.bit_generator.state = state
        return gen

    def record(self, i: int) -> Record:
        if not 0 <= i < self.count:
            raise IndexError(i)
        rng = self._rng(i)
        if self.variable:
            h, w = (int(v) for v in rng.integers(self.variable[0], self.variable[1] + 1, size=2))
        else:
            h, w = self.size
        c = self.channels
        base = (rng.random(c) * 0.6).astype(np.float32)
        ry, rx = rng.random(2) * 0.4
        gy = _ramp(h, ry)[:, None, None]
        gx = _ramp(w, rx)[None, :, None]
        v = rng.random((h, w, c), dtype=np.float32)
        v *= np.float32(0.15)
        v += base
        v += gy
        v += gx  # about 0..1.15, never below 0
        if self.dtype is not None:
            img = _other_dtype(v, self.dtype)
        else:
            top = 255 if self.bits == 8 else 65535
            np.minimum(v, np.float32(1.0), out=v)
            v *= np.float32(top)
            img = v.astype(np.uint8 if self.bits == 8 else np.uint16)
        if c == 1:
            img = img[:, :, 0]
        label = int(rng.integers(0, self.num_labels))
        meta = {"source_index": i} if self.with_metadata else {}
        return Record(np.ascontiguousarray(img), label, meta)

    def records_at(self, indices) -> Iterator[Record]:
        for i in sorted(set(indices)):
            yield self.record(i)

    def __iter__(self) -> Iterator[Record]:
        for i in range(self.count):
            yield self.record(i)


_LOCAL = threading.local()
_U64 = (1 << 64) - 1


def _ramp(n: int, top: float) -> np.ndarray:
    """``n`` float32 values from 0 to about ``top``, evenly spaced (np.linspace without its ~30 us
    of overhead)."""
    if n == 1:
        return np.zeros(1, np.float32)
    return np.arange(n, dtype=np.float32) * np.float32(top / (n - 1))


#: dtype -> (scale, shift) applied to the 0..~1.15 gradients before the cast
_SCALES = {"int8": (200.0, -0.5), "int16": (2000.0, -0.3), "int32": (2e6, -0.5), "uint32": (3.7e9, 0.0),
           "float32": (1000.0, -0.3), "float64": (1000.0, -0.3)}


def _other_dtype(v: np.ndarray, dt: np.dtype) -> np.ndarray:
    """The gradients ``v`` (float32, about 0..1.15) as pixels of ``dt`` (not uint8/uint16)."""
    if dt == np.bool_:
        return v > 0.6
    scale, shift = _SCALES[dt.name]
    x = (v.astype(np.float64) + shift) * scale
    if dt.kind == "f":
        return x.astype(dt)
    info = np.iinfo(dt)
    return np.clip(np.rint(x), info.min, info.max).astype(dt)
