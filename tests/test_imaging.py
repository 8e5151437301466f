"""Pure image helpers behind the TUI image view."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from rich.color import Color

from imgtui.tui import imaging


def test_imaging_does_not_import_textual():
    code = "import imgtui.tui.imaging, sys; assert 'textual' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    "shape, box, want",
    [
        ((100, 200), (50, 50), (25, 50)),  # wide image: width limits
        ((200, 100), (50, 50), (50, 25)),  # tall image: height limits
        ((32, 32), (80, 40), (40, 40)),  # small image is enlarged to the box
        ((1, 1000), (10, 10), (1, 10)),  # never 0 pixels
    ],
)
def test_fit_size_keeps_aspect(shape, box, want):
    assert imaging.fit_size(shape[0], shape[1], *box) == want


def test_fit_size_without_upscale_keeps_small_images():
    assert imaging.fit_size(32, 16, 80, 80, upscale=False) == (32, 16)


def test_downscale_keeps_aspect_and_returns_rgb():
    img = np.zeros((120, 240), np.uint8)
    out = imaging.downscale(img, 60, 60)
    assert out.shape == (30, 60, 3) and out.dtype == np.uint8
    rgba = np.full((10, 20, 4), 255, np.uint8)
    out = imaging.downscale(rgba, 10, 10)
    assert out.shape == (5, 10, 3)


def test_downscale_averages_blocks():
    img = np.array([[0, 255], [255, 0]], np.uint8)
    big = np.kron(img, np.ones((4, 4), np.uint8))  # 8x8 checkerboard of 4x4 blocks
    out = imaging.downscale(big, 2, 2)
    assert out.shape == (2, 2, 3)
    np.testing.assert_array_equal(out[..., 0], img)


def test_window_16bit_maps_min_to_0_and_max_to_255():
    img = np.array([[1000, 2000], [3000, 5000]], np.uint16)
    out = imaging.window_to_uint8(img)
    assert out.dtype == np.uint8
    assert out.min() == 0 and out.max() == 255
    assert out[0, 0] == 0 and out[1, 1] == 255
    assert out[0, 1] == round((2000 - 1000) * 255 / 4000)


def test_window_percentile_ignores_hot_pixel():
    img = np.full((100, 100), 1000, np.uint16)
    img[:50] = 2000
    img[0, 0] = 65535  # one hot pixel
    out = imaging.window_to_uint8(img, "percentile", (1, 99))
    assert out[99, 99] == 0 and out[10, 10] == 255


def test_window_constant_and_uint8():
    assert not imaging.window_to_uint8(np.full((3, 3), 7, np.uint16)).any()
    img8 = np.arange(9, dtype=np.uint8).reshape(3, 3)
    assert imaging.window_to_uint8(img8) is img8
    with pytest.raises(ValueError):
        imaging.window_to_uint8(np.zeros((2, 2), np.uint16), "nope")


def test_window_float_uses_percentiles_and_ignores_nan_and_inf():
    rng = np.random.default_rng(0)
    img = rng.uniform(-1000.0, 3000.0, (100, 100)).astype(np.float32)
    img[0, :5] = [np.nan, np.inf, -np.inf, 1e30, -1e30]  # would flatten a min/max window
    out = imaging.window_to_uint8(img)
    assert out.dtype == np.uint8 and out.shape == img.shape
    assert out[0, 0] == 0 and out[0, 1] == 255 and out[0, 2] == 0 and out[0, 3] == 255 and out[0, 4] == 0
    lo, hi = np.percentile(img[np.isfinite(img)], (1, 99))
    body = img[1:]
    want = np.clip(np.rint((body.astype(np.float64) - lo) * 255.0 / (hi - lo)), 0, 255)
    assert np.abs(out[1:].astype(int) - want).max() <= 1
    assert 0.0 < (out[1:] == 0).mean() < 0.05 and 0.0 < (out[1:] == 255).mean() < 0.05
    assert not imaging.window_to_uint8(np.full((3, 3), np.nan, np.float64)).any()
    assert not imaging.window_to_uint8(np.full((3, 3), 2.5, np.float32)).any()


def test_window_bool_signed_and_wide_integers():
    mask = np.array([[True, False], [False, True]])
    np.testing.assert_array_equal(imaging.window_to_uint8(mask), [[255, 0], [0, 255]])
    ct = np.array([[-1024, 0], [1000, 3071]], np.int16)
    out = imaging.window_to_uint8(ct)
    assert out[0, 0] == 0 and out[1, 1] == 255 and out[0, 1] == round(1024 * 255 / 4095)
    big = np.array([[4_000_000_000, 4_000_000_001], [0, 2_000_000_000]], np.uint32)
    out = imaging.window_to_uint8(big)
    assert out[1, 0] == 0 and out[0, 1] == 255 and out[1, 1] == 127  # 2e9 of 4e9: exact in float64
    for dt in ("int8", "int32", "float64"):
        img = np.arange(-6, 6).reshape(3, 4).astype(dt)
        out = imaging.window_to_uint8(img)
        assert out[0, 0] == 0 and out[-1, -1] == 255


@pytest.mark.parametrize("dtype", ["int8", "int16", "uint32", "int32", "float32", "float64", "bool"])
def test_thumbnail_of_every_dtype(dtype):
    from backend_suite import make_image

    for shape in ((9, 7), (9, 7, 1), (9, 7, 3), (9, 7, 4)):
        text = imaging.thumbnail(make_image(dtype, shape, 3), 7, 5)
        assert text.plain.count("\n") == 4 and len(text.plain.split("\n")[0]) == 7


def _style_at(text, offset):
    """The Style of the span covering ``offset`` (each cell is covered by exactly one span)."""
    (span,) = [s for s in text.spans if s.start <= offset < s.end]
    return span.style


def test_half_block_text_for_2x2_image():
    rgb = np.array(
        [[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [255, 255, 255]]], np.uint8
    )
    text = imaging.half_block_text(rgb)
    lines = text.split("\n")
    assert len(lines) == 1
    assert text.plain == "\u2580\u2580"
    styles = [_style_at(text, i) for i in range(2)]
    assert styles[0].color == Color.from_rgb(255, 0, 0)
    assert styles[0].bgcolor == Color.from_rgb(0, 0, 255)
    assert styles[1].color == Color.from_rgb(0, 255, 0)
    assert styles[1].bgcolor == Color.from_rgb(255, 255, 255)


def test_half_block_text_odd_height_and_size():
    rgb = np.zeros((5, 7, 3), np.uint8)
    text = imaging.half_block_text(rgb)
    lines = text.plain.split("\n")
    assert len(lines) == 3 and all(len(line) == 7 for line in lines)
    last = _style_at(text, len(text.plain) - 1)
    assert last.bgcolor is None and last.color == Color.from_rgb(0, 0, 0)


def test_thumbnail_fits_cells():
    img = (np.arange(64 * 128, dtype=np.uint16).reshape(64, 128) * 7).astype(np.uint16)
    text = imaging.thumbnail(img, columns=40, rows=20)
    lines = text.plain.split("\n")
    # 128x64 pixels into 40 columns x 40 pixel rows: width limits -> 40x20 pixels -> 10 lines
    assert len(lines) == 10 and all(len(line) == 40 for line in lines)


def test_a_volume_is_drawn_as_its_middle_slice_windowed_over_the_whole_volume():
    """Thumbnails, the compare view and pixel terminals draw a 3-D record's middle slice, with the
    window of the whole volume (a slice of one grey level stays that grey, not black)."""
    from imgtui.tui.imaging import depth_of, display_rgb, plane

    vol = np.stack([np.full((6, 8), 100 * k, np.uint16) for k in range(5)])  # slices 0, 100, ..., 400
    assert depth_of(vol) == 5 and depth_of(vol[0]) == 0 and depth_of(np.zeros((4, 4, 3), np.uint8)) == 0
    assert plane(vol).tolist() == vol[2].tolist() and plane(vol, 9).tolist() == vol[4].tolist()
    rgb = display_rgb(vol)
    assert rgb.shape == (6, 8, 3) and (rgb == 128).all()  # 200 of 0..400
    assert imaging.thumbnail(vol, 8, 3).spans == imaging.thumbnail(np.full((6, 8), 128, np.uint8), 8, 3).spans
    rgbvol = np.zeros((3, 4, 4, 3), np.uint8)
    rgbvol[1, :, :, 0] = 255
    assert (display_rgb(rgbvol)[..., 0] == 255).all()
