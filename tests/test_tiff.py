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


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "float32", "float64"])
@pytest.mark.parametrize("shape", [(4, 6, 5), (3, 6, 5, 3), (1, 7, 9), (2, 5, 4, 4)])
def test_volume_pages_round_trip_and_pillow_reads_the_stack(dtype, shape):
    """A DxHxW[xC] volume is a multi-page TIFF, one page per slice: read back bit-exact, and
    Pillow (an independent reader) sees D frames with the slices' values."""
    import io

    from PIL import Image

    from imgtui.tiff import decode_tiff_pages, encode_tiff_pages

    vol = make_image(dtype, shape, 3)
    data = encode_tiff_pages(vol, 1)
    got = decode_tiff_pages(data, shape[0])
    assert got.dtype == vol.dtype and got.shape == (vol.shape if len(shape) == 3 or shape[3] != 1 else shape[:3])
    assert got.reshape(vol.shape).tobytes() == vol.tobytes()
    assert tiff_size(data) == shape[1:3]
    if dtype in ("uint8", "uint16", "int16", "float32") and len(shape) == 3:
        im = Image.open(io.BytesIO(data))
        assert im.n_frames == shape[0]
        for k in range(shape[0]):
            im.seek(k)
            assert np.asarray(im).astype(vol.dtype).tobytes() == vol[k].tobytes()  # NaN payloads too


def test_volume_with_other_page_count_or_a_page_loop_is_refused():
    from imgtui.tiff import decode_tiff_pages, encode_tiff_pages

    vol = make_image("int16", (3, 4, 5), 1)
    data = encode_tiff_pages(vol, 0)
    with pytest.raises(ValueError, match="has 3 pages, expected 4"):
        decode_tiff_pages(data, 4)
    with pytest.raises(ValueError, match="more than the 2 pages"):
        decode_tiff_pages(data, 2)
    # the last page's next-IFD offset pointed back at the first page: a loop, not an endless read
    first = struct.unpack_from("<I", data, 4)[0]
    offs = [first]
    while True:
        (n,) = struct.unpack_from("<H", data, offs[-1])
        (nxt,) = struct.unpack_from("<I", data, offs[-1] + 2 + 12 * n)
        if not nxt:
            break
        offs.append(nxt)
    (n,) = struct.unpack_from("<H", data, offs[-1])
    looped = bytearray(data)
    struct.pack_into("<I", looped, offs[-1] + 2 + 12 * n, offs[1])
    with pytest.raises(ValueError, match="loop|more than"):
        decode_tiff_pages(bytes(looped), 10)
