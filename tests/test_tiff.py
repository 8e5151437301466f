"""imgtui's TIFF codec (imgtui/tiff.py): exact round trips, and damaged or hostile files refused."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend_suite import make_image
from imgtui.tiff import TIFF_DTYPES, decode_tiff, encode_tiff, tiff_size


@settings(max_examples=40, deadline=None)
@given(dtype=st.sampled_from([dt.name for dt in TIFF_DTYPES]), h=st.integers(1, 40), w=st.integers(1, 40),
       channels=st.sampled_from([None, 3, 4]), level=st.sampled_from([0, 1, 9]), seed=st.integers(0, 2**31))
def test_round_trip_bit_exact(dtype, h, w, channels, level, seed):
    shape = (h, w) if channels is None else (h, w, channels)
    img = make_image(dtype, shape, seed)
    data = encode_tiff(img, level)
    assert tiff_size(data) == (h, w)
    got = decode_tiff(data)
    assert got.dtype == img.dtype and got.shape == img.shape and got.tobytes() == img.tobytes()
    assert got.flags.writeable


def test_big_endian_file_reads():
    """A big-endian (MM) file written by another tool decodes to the same values."""
    img = make_image("float32", (3, 4), 1)
    raw = img.astype(">f4").tobytes()
    entries = [(256, 4, 4), (257, 4, 3), (258, 3, 32), (259, 3, 1), (262, 3, 1), (273, 4, 0),
               (277, 3, 1), (278, 4, 3), (279, 4, len(raw)), (339, 3, 3)]
    off = 8 + 2 + 12 * len(entries) + 4
    ifd = struct.pack(">H", len(entries))
    for tag, typ, val in entries:
        val = off if tag == 273 else val
        ifd += struct.pack(">HHI", tag, typ, 1) + (struct.pack(">HH", val, 0) if typ == 3 else struct.pack(">I", val))
    data = b"MM\0*" + struct.pack(">I", 8) + ifd + b"\0\0\0\0" + raw
    got = decode_tiff(data)
    assert got.dtype == np.float32 and got.tobytes() == img.tobytes()


@pytest.mark.parametrize("cut", [3, 20, 100, -1])
def test_truncated_file_is_refused(cut):
    data = encode_tiff(make_image("int16", (20, 20), 2), 1)
    with pytest.raises(ValueError):
        decode_tiff(data[:cut])


def test_inflate_bomb_is_refused_without_inflating_it():
    """A 1x1 header with a strip that inflates to 100 MB: refused after at most 2 bytes."""
    data = bytearray(encode_tiff(np.zeros((1, 1), np.int16), 1))
    bomb = zlib.compress(bytes(100 << 20), 9)
    # the strip is the file's tail: replace it and its byte count
    (ifd,) = struct.unpack_from("<I", data, 4)
    (n,) = struct.unpack_from("<H", data, ifd)
    for k in range(n):
        tag = struct.unpack_from("<H", data, ifd + 2 + 12 * k)[0]
        if tag == 273:
            (start,) = struct.unpack_from("<I", data, ifd + 2 + 12 * k + 8)
        if tag == 279:
            struct.pack_into("<I", data, ifd + 2 + 12 * k + 8, len(bomb))
    data = bytes(data[:start]) + bomb
    with pytest.raises(ValueError, match="truncated or larger than the image"):
        decode_tiff(data)


def test_unsupported_files_are_refused():
    with pytest.raises(ValueError, match="not a TIFF"):
        decode_tiff(b"\x89PNG\r\n\x1a\n" + bytes(40))
    with pytest.raises(ValueError, match="cannot store dtype"):
        encode_tiff(np.zeros((2, 2), np.complex64))
