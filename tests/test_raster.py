"""Pictures as pixels (ehflow_core.raster): lines, dots and PNG, checked pixel by pixel."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image  # Pillow comes with streamlit

from ehflow_core.figures import COLORS, trajectory_png
from ehflow_core.raster import dot_pixels, line_coverage, png_data_uri, rgb

LO, HI, SIZE = 0.0, 10.0, 10  # one data unit per pixel: pixel (col, row) has its centre at (col + ½, 9.5 − row)


def _decode(uri: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))


@pytest.mark.parametrize("channels", [3, 4])
def test_png_round_trips_through_pillow(channels):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(7, 5, channels), dtype=np.uint8)
    np.testing.assert_array_equal(_decode(png_data_uri(image)), image)


def test_a_line_through_pixel_centres_covers_exactly_its_pixels():
    paths = np.array([[[2.5, 4.5]], [[7.5, 4.5]]])  # (T + 1 = 2, P = 1, 2): row 5, columns 2..7
    cover = line_coverage(paths, LO, HI, SIZE)
    expected = np.zeros((SIZE, SIZE))
    expected[5, 3:7] = 1.0  # inner pixels fully covered
    expected[5, [2, 7]] = cover[5, [2, 7]]  # the two end pixels: half covered, about
    np.testing.assert_allclose(cover, expected, atol=1e-9)
    assert cover[5, 2] == pytest.approx(0.5, abs=0.1) and cover[5, 7] == pytest.approx(0.5, abs=0.1)


def test_coverage_adds_up_to_the_length_inside_the_picture():
    # A diagonal inside the picture covers its length in pixels (anti-aliased across two rows).
    inside = line_coverage(np.array([[[1.0, 1.0]], [[8.0, 8.0]]]), LO, HI, SIZE)
    assert inside.sum() == pytest.approx(7 * np.sqrt(2), rel=0.05)
    # A segment from far away is clipped at the picture: the same coverage as its inside part,
    # and no cost proportional to its length (1e9 pixels would not fit in memory).
    far = line_coverage(np.array([[[-1e9, 4.5]], [[5.0, 4.5]]]), LO, HI, SIZE)
    near = line_coverage(np.array([[[-1.0, 4.5]], [[5.0, 4.5]]]), LO, HI, SIZE)
    np.testing.assert_allclose(far, near, atol=0.02)  # the same pixels (sampled at other points)
    assert line_coverage(np.array([[[20.0, 20.0]], [[30.0, 25.0]]]), LO, HI, SIZE).sum() == 0  # all outside
    assert line_coverage(np.array([[[np.nan, 1.0]], [[3.0, 3.0]]]), LO, HI, SIZE).sum() == 0  # not finite: skipped


def test_dots_are_discs_of_the_given_diameter():
    pixels = dot_pixels(np.array([[4.5, 4.5], [4.6, 4.4], [100.0, 100.0]]), LO, HI, SIZE, diameter=3)
    rows, cols = np.divmod(pixels, SIZE)  # two dots on one pixel count once; the one outside, not at all
    assert len(pixels) == 9 and set(rows) == {4, 5, 6} and set(cols) == {3, 4, 5}  # 3×3 around row 5, col 4
    assert len(dot_pixels(np.array([[4.5, 4.5]]), LO, HI, SIZE, diameter=4)) == 13  # radius 2: 13 pixels


def test_trajectory_picture_draws_start_grey_end_coloured_lines_at_half_opacity_and_nothing_else():
    xs = np.linspace(-3.5, 3.5, 8)  # cells of width 1 over [-4, 4]
    paths = np.array([[[-2.0, 0.0]], [[0.0, 0.0]], [[2.0, 0.0]]])  # one path along y = 0, left to right
    picture = _decode(trajectory_png(paths, xs, size=80)).astype(float)  # RGBA, 10 pixels per unit
    assert picture.shape == (80, 80, 4)
    assert picture[:30, :, 3].max() == 0 and picture[50:, :, 3].max() == 0  # transparent off the path: U shows
    row = 40  # y = 0 lies between rows 39 and 40
    np.testing.assert_allclose(picture[row, 20], [*rgb("#999"), 255], atol=1)  # start dot at x = −2, opaque
    np.testing.assert_allclose(picture[row, 60], [*rgb(COLORS[0]), 255], atol=1)  # end dot at x = 2
    line = picture[row - 1 : row + 1, 40]  # the line at x = 0, anti-aliased over two rows
    np.testing.assert_allclose(line[:, :3], [rgb(COLORS[0])] * 2, atol=1)
    assert line[:, 3].sum() == pytest.approx(0.5 * 255, abs=3)  # a pixel's worth of line at opacity ½
