"""Lossless baseline TIFF for the pixel types PNG cannot hold (int8, int16, uint32, int32, float32,
float64), written and read with numpy + zlib.

What imgtui writes: classic little-endian TIFF (``II*\\0``), one image (IFD), one strip, chunky
samples (HxWxC interleaved as in numpy), ``BitsPerSample`` 8/16/32/64 and ``SampleFormat`` 1
(unsigned), 2 (signed) or 3 (IEEE float), ``Photometric`` MinIsBlack for 1 channel and RGB for 3
and 4 (the 4th an ``ExtraSamples`` unassociated alpha), ``Compression`` Adobe Deflate (8) with no
predictor, or none (1) at level 0. The samples are the array's bytes exactly (little-endian), so
NaN payloads and -0.0 survive. Checked here: ``tifffile.imread`` (an independent reader) returns
every dtype and channel count bit-exact; Pillow reads the 1-channel int16/int32/float32 ones
(modes I and F) with their values and refuses the rest. Baseline TIFF with SampleFormat is what
libtiff-based tools and ImageJ/Fiji open (ImageJ converts float64 and 32-bit integers to float32;
not tested here).

The reader parses exactly this subset (either byte order, any number of strips, compression
1/8/32946) and refuses anything else with a ValueError; the size is checked from the header and
a strip is never inflated past the bytes the header allows (no TIFF bomb).
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

#: numpy kind -> TIFF SampleFormat
_SAMPLE_FORMAT = {"u": 1, "i": 2, "f": 3}
_TAGS = {256: "width", 257: "height", 258: "bits", 259: "compression", 262: "photometric",
         273: "offsets", 277: "spp", 278: "rows_per_strip", 279: "counts", 284: "planar",
         317: "predictor", 339: "sample_format"}
_TYPES = {1: "B", 3: "H", 4: "I", 16: "Q"}  # BYTE, SHORT, LONG, LONG8 (never written)
TIFF_DTYPES = tuple(np.dtype(t) for t in ("int8", "int16", "uint32", "int32", "float32", "float64"))


def encode_tiff(image: np.ndarray, level: int = 1) -> bytes:
    """A standard lossless TIFF of an HxW or HxWxC (C in 1, 3, 4) integer or float array."""
    return b"II*\0" + struct.pack("<I", 8) + _page(image, level, 8, last=True)


def encode_tiff_pages(volume: np.ndarray, level: int = 1) -> bytes:
    """A multi-page TIFF of a DxHxW or DxHxWxC volume: one page (IFD and strip) per slice, in
    order, as ImageJ/Fiji, tifffile and libtiff tools read a stack."""
    parts = [b"II*\0", struct.pack("<I", 8)]
    pos = 8
    for k in range(volume.shape[0]):
        page = _page(volume[k], level, pos, last=k == volume.shape[0] - 1)
        parts.append(page)
        pos += len(page)
    return b"".join(parts)


def _page(image: np.ndarray, level: int, start: int, last: bool) -> bytes:
    """One page at file offset ``start``: its IFD, the IFD's long values, the strip; padded to an
    even length; the IFD's next-page offset is the byte after it (0 when ``last``)."""
    h, w = image.shape[:2]
    spp = 1 if image.ndim == 2 else image.shape[2]
    dt = image.dtype
    if dt.kind not in _SAMPLE_FORMAT:
        raise ValueError(f"TIFF: cannot store dtype {dt}")
    raw = np.ascontiguousarray(image, dtype=dt.newbyteorder("<")).view(np.uint8).reshape(-1)
    comp = 8 if level > 0 else 1
    data = zlib.compress(raw, level) if comp == 8 else raw.tobytes()
    bits = 8 * dt.itemsize
    fmt = _SAMPLE_FORMAT[dt.kind]
    entries: list[tuple[int, int, list[int]]] = [  # (tag, type, values)
        (256, 4, [w]),
        (257, 4, [h]),
        (258, 3, [bits] * spp),
        (259, 3, [comp]),
        (262, 3, [1 if spp == 1 else 2]),
        (273, 4, [0]),  # the strip offset, filled in below
        (277, 3, [spp]),
        (278, 4, [h]),
        (279, 4, [len(data)]),
        (284, 3, [1]),
    ]
    if spp == 4:
        entries.append((338, 3, [2]))  # the 4th sample is unassociated alpha
    entries.append((339, 3, [fmt] * spp))
    ifd_size = 2 + 12 * len(entries) + 4
    extra = bytearray()
    pos_extra = start + ifd_size

    def pack_values(typ: int, vals: list[int]) -> bytes:
        return struct.pack(f"<{len(vals)}{_TYPES[typ]}", *vals)

    # values longer than 4 bytes live after the IFD; the pixels follow them, 8-byte aligned
    sizes = {3: 2, 4: 4}
    for tag, typ, vals in entries:
        if sizes[typ] * len(vals) > 4:
            extra += pack_values(typ, vals)
            if len(extra) % 2:
                extra += b"\0"
    data_off = pos_extra + len(extra)
    pad = (-data_off) % 8
    data_off += pad
    ifd = bytearray(struct.pack("<H", len(entries)))
    extra_pos = pos_extra
    for tag, typ, vals in entries:
        if tag == 273:
            vals = [data_off]
        payload = pack_values(typ, vals)
        if len(payload) > 4:
            ifd += struct.pack("<HHII", tag, typ, len(vals), extra_pos)
            extra_pos += len(payload) + (len(payload) % 2)
        else:
            ifd += struct.pack("<HHI", tag, typ, len(vals)) + payload.ljust(4, b"\0")
    size = len(ifd) + 4 + len(extra) + pad + len(data)
    if not last:
        size += size % 2  # the next IFD starts on a word boundary
    ifd += struct.pack("<I", 0 if last else start + size)  # the next page's IFD follows this page
    page = b"".join((bytes(ifd), bytes(extra), b"\0" * pad, data))
    return page + b"\0" * (size - len(page))


def tiff_info(data: bytes, off: int | None = None) -> dict:
    """The tags of the first image (or of the page whose IFD is at ``off``) of a TIFF this module
    can read (ValueError otherwise)."""
    if len(data) < 8 or data[:4] not in (b"II*\0", b"MM\0*"):
        raise ValueError("not a TIFF file")
    bo = "<" if data[:2] == b"II" else ">"
    if off is None:
        (off,) = struct.unpack_from(bo + "I", data, 4)
    if off + 2 > len(data):
        raise ValueError("TIFF directory past the end of the file (truncated)")
    (n,) = struct.unpack_from(bo + "H", data, off)
    if off + 2 + 12 * n + 4 > len(data):
        raise ValueError("TIFF directory past the end of the file (truncated)")
    tags: dict = {}
    for k in range(n):
        tag, typ, count, value = struct.unpack_from(bo + "HHI4s", data, off + 2 + 12 * k)
        name = _TAGS.get(tag)
        if name is None:
            continue
        code = _TYPES.get(typ)
        if code is None or count == 0 or count > (1 << 24):
            raise ValueError(f"TIFF tag {tag} has an unsupported type {typ} or count {count}")
        size = struct.calcsize(code) * count
        if size <= 4:
            raw = value[:size]
        else:
            (p,) = struct.unpack(bo + "I", value)
            if p + size > len(data):
                raise ValueError(f"TIFF tag {tag} points past the end of the file")
            raw = data[p : p + size]
        tags[name] = list(struct.unpack(f"{bo}{count}{code}", raw))
    (tags["next_ifd"],) = struct.unpack_from(bo + "I", data, off + 2 + 12 * n)  # 0: a single image
    for need in ("width", "height", "bits", "offsets", "counts"):
        if need not in tags:
            raise ValueError(f"TIFF has no {need} tag")
    tags["byteorder"] = bo
    return tags


def tiff_size(data: bytes) -> tuple[int, int]:
    """(height, width) from a TIFF's directory, without decoding it."""
    t = tiff_info(data)
    return t["height"][0], t["width"][0]


def decode_tiff_pages(data: bytes, pages: int) -> np.ndarray:
    """Decode a multi-page TIFF of exactly ``pages`` pages of one size and type (what
    :func:`encode_tiff_pages` writes) to a DxHxW[xC] array; ValueError for any other page count,
    a loop in the page chain or pages that differ."""
    out = []
    seen: set[int] = set()
    off = None
    while True:
        if len(out) == pages:
            raise ValueError(f"TIFF has more than the {pages} pages expected")
        t = tiff_info(data, off)
        page = _decode_page(data, t)
        if out and (page.shape != out[0].shape or page.dtype != out[0].dtype):
            raise ValueError(f"TIFF page {len(out) + 1} is {page.shape} {page.dtype}, page 1 {out[0].shape} {out[0].dtype}")
        out.append(page)
        off = t["next_ifd"]
        if not off:
            break
        if off in seen or off < 8:
            raise ValueError("TIFF pages form a loop")
        seen.add(off)
    if len(out) != pages:
        raise ValueError(f"TIFF has {len(out)} pages, expected {pages}")
    return np.stack(out)


def decode_tiff(data: bytes) -> np.ndarray:
    """Decode a TIFF of the subset imgtui writes to a native-order array (HxW, or HxWxC)."""
    return _decode_page(data, tiff_info(data))


def _decode_page(data: bytes, t: dict) -> np.ndarray:
    h, w = t["height"][0], t["width"][0]
    spp = t.get("spp", [1])[0]
    bits = t["bits"]
    fmt = t.get("sample_format", [1])
    comp = t.get("compression", [1])[0]
    if len(set(bits)) != 1 or len(set(fmt)) != 1 or len(bits) not in (1, spp) or len(fmt) not in (1, spp):
        raise ValueError("TIFF samples of different types are not supported")
    if t.get("planar", [1])[0] != 1 or t.get("predictor", [1])[0] != 1:
        raise ValueError("TIFF with planar samples or a predictor is not supported")
    if comp not in (1, 8, 32946):
        raise ValueError(f"TIFF compression {comp} is not supported (imgtui writes deflate or none)")
    kind = {1: "u", 2: "i", 3: "f"}.get(fmt[0])
    if kind is None or bits[0] not in (8, 16, 32, 64) or (kind == "f" and bits[0] < 32) or spp not in (1, 3, 4):
        raise ValueError(f"TIFF with {spp} samples of format {fmt[0]} and {bits[0]} bits is not supported")
    dt = np.dtype(f"{t['byteorder']}{kind}{bits[0] // 8}")
    want = h * w * spp * dt.itemsize
    offsets, counts = t["offsets"], t["counts"]
    if len(offsets) != len(counts):
        raise ValueError("TIFF strip offsets and byte counts differ in number")
    parts = []
    got = 0
    for o, c in zip(offsets, counts):
        if o + c > len(data):
            raise ValueError("TIFF strip runs past the end of the file (truncated)")
        piece = data[o : o + c]
        if comp != 1:
            z = zlib.decompressobj()
            try:
                piece = z.decompress(piece, want - got + 1)  # never inflate more than the header allows
            except zlib.error as exc:
                raise ValueError(f"TIFF strip cannot be inflated ({exc})") from None
            if not z.eof:
                raise ValueError("TIFF strip is truncated or larger than the image")
        got += len(piece)
        if got > want:
            break
        parts.append(piece)
    if got != want:
        raise ValueError(f"TIFF image data has {got:,} bytes, expected {want:,}")
    arr = np.frombuffer(b"".join(parts), dt).reshape((h, w) if spp == 1 else (h, w, spp))
    return arr.astype(dt.newbyteorder("="))  # a writable native copy (the bytes unchanged)
