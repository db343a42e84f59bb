"""Pictures as pixels: maps and trajectories drawn into PNG images with numpy.

The live dashboard shows its map panels as images under plotly.js's axes (``raster=True`` in
:mod:`ehflow_core.figures`): the browser swaps a picture instead of redrawing a heatmap or the
trajectories' many SVG markers. Lines and dots are drawn with numpy, colour tables come from
plotly's colour scales, and Pillow encodes the PNG.

Images cover the square ``[lo, hi]²`` of a grid's cells; row 0 is the top (largest y), as seen.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import plotly.colors as pc
from PIL import Image


def rgb(colour: str) -> np.ndarray:
    """A plotly colour ("#1f77b4", "rgb(…)") as three floats in [0, 255]."""
    return np.array(pc.unlabel_rgb(pc.convert_colors_to_same_type([colour], "rgb")[0][0]), dtype=np.float64)


def colour_table(scale: Any) -> np.ndarray:
    """A plotly colour scale (a name or ``[[stop, colour], ...]``) as 256 colours: (256, 3) uint8."""
    scale = pc.get_colorscale(scale) if isinstance(scale, str) else scale
    stops = np.array([float(stop) for stop, _ in scale])
    colours = np.array([rgb(colour) for _, colour in scale])
    t = np.linspace(0.0, 1.0, 256)
    return np.stack([np.interp(t, stops, colours[:, i]) for i in range(3)], axis=1).round().astype(np.uint8)


def colourise(z: np.ndarray, scale: Any) -> np.ndarray:
    """Values (h, w) as RGBA (h, w, 4) uint8 coloured like plotly.js's heatmap: linear from min(z)
    to max(z) (its automatic zmin/zmax); NaN and ±inf transparent."""
    z = np.asarray(z, dtype=np.float64)
    finite = np.isfinite(z)
    lo, hi = (z[finite].min(), z[finite].max()) if finite.any() else (0.0, 1.0)
    scaled = np.where(finite, (z - lo) / (hi - lo if hi > lo else 1.0), 0.0)
    out = np.empty((*z.shape, 4), np.uint8)
    out[..., :3] = colour_table(scale)[np.clip(np.rint(scaled * 255), 0, 255).astype(np.intp)]
    out[..., 3] = np.where(finite, 255, 0)
    return out


def png_data_uri(image: np.ndarray, level: int = 6) -> str:
    """An (h, w, 3) RGB or (h, w, 4) RGBA uint8 image (row 0 on top) as a ``data:image/png`` URI
    (zlib ``level`` 0–9)."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"image must have shape (h, w, 3) or (h, w, 4), got {image.shape}")
    buffer = io.BytesIO()
    Image.fromarray(image, "RGB" if image.shape[2] == 3 else "RGBA").save(buffer, "PNG", compress_level=level)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def heatmap_png(z: np.ndarray, scale: Any) -> str:
    """A grid z (n, n), indexed [y, x], as a PNG data URI: one pixel per cell, largest y on top."""
    return png_data_uri(colourise(z, scale)[::-1])


def _to_pixels(points: np.ndarray, lo: float, hi: float, size: int) -> np.ndarray:
    """Data coordinates (..., 2) as (column, row) pixel coordinates, pixel centres at integers."""
    scale = size / (hi - lo)
    return np.stack([(points[..., 0] - lo) * scale - 0.5, (hi - points[..., 1]) * scale - 0.5], axis=-1)


def _splat(pixels: np.ndarray, weights: np.ndarray, size: int) -> np.ndarray:
    """Add ``weights`` at sub-pixel positions (N, 2) into a (size, size) image, bilinearly."""
    base = np.floor(pixels)
    frac = pixels - base
    base = base.astype(np.intp)
    out = np.zeros(size * size)
    for dx in (0, 1):
        for dy in (0, 1):
            col, row = base[:, 0] + dx, base[:, 1] + dy
            w = weights * np.where(dx, frac[:, 0], 1 - frac[:, 0]) * np.where(dy, frac[:, 1], 1 - frac[:, 1])
            inside = (col >= 0) & (col < size) & (row >= 0) & (row < size)
            out += np.bincount(row[inside] * size + col[inside], weights=w[inside], minlength=size * size)
    return out.reshape(size, size)


def line_coverage(paths: np.ndarray, lo: float, hi: float, size: int, spacing: float = 0.5) -> np.ndarray:
    """How much of each pixel the polylines cover: (size, size) in [0, 1], anti-aliased.

    ``paths`` (T + 1, P, 2) in data coordinates: P polylines of T segments, drawn one pixel wide.
    Each segment is first clipped to the image (Liang–Barsky), then sampled at the midpoints of
    parts at most ``spacing`` pixels long, each splatted bilinearly with its part's length: a
    pixel crossed by a line through its centre gets 1.
    """
    px = _to_pixels(np.asarray(paths, dtype=np.float64), lo, hi, size)
    a, b = px[:-1].reshape(-1, 2), px[1:].reshape(-1, 2)
    ok = np.isfinite(a).all(axis=1) & np.isfinite(b).all(axis=1)
    a, b = a[ok], b[ok]
    d = b - a
    t0, t1 = np.zeros(len(a)), np.ones(len(a))
    edge_lo, edge_hi = -1.0, size + 0.0  # one pixel of margin: lines leaving the picture fade at its edge
    for axis in (0, 1):
        p, start = d[:, axis], a[:, axis]
        moving = p != 0
        with np.errstate(divide="ignore", invalid="ignore"):
            ta, tb = (edge_lo - start) / p, (edge_hi - start) / p
        inside = (start >= edge_lo) & (start <= edge_hi)
        t_enter = np.where(moving, np.minimum(ta, tb), np.where(inside, -np.inf, np.inf))
        t_leave = np.where(moving, np.maximum(ta, tb), np.where(inside, np.inf, -np.inf))
        t0, t1 = np.maximum(t0, t_enter), np.minimum(t1, t_leave)
    keep = t0 < t1
    a, d = a[keep] + t0[keep, None] * d[keep], d[keep] * (t1 - t0)[keep, None]
    length = np.hypot(d[:, 0], d[:, 1])
    n = np.maximum(np.ceil(length / spacing).astype(np.intp), 1)  # samples per segment, at the
    segment = np.repeat(np.arange(len(a)), n)  # midpoints of n equal parts: joints are not counted twice
    first = np.repeat(np.cumsum(n) - n, n)
    t = (np.arange(len(segment)) - first + 0.5) / np.repeat(n, n)
    samples = a[segment] + t[:, None] * d[segment]
    return np.clip(_splat(samples, np.repeat(length / n, n), size), 0.0, 1.0)


def dot_pixels(points: np.ndarray, lo: float, hi: float, size: int, diameter: float) -> np.ndarray:
    """The pixels of round dots of ``diameter`` pixels at ``points`` (N, 2), as flat indices
    (row · size + column) into a (size, size) image, each once."""
    px = _to_pixels(np.asarray(points, dtype=np.float64), lo, hi, size)
    px = np.rint(px[np.isfinite(px).all(axis=1)]).astype(np.intp)
    r = diameter / 2
    span = np.arange(-int(r), int(r) + 1)
    dx, dy = (g.ravel() for g in np.meshgrid(span, span))
    disc = dx**2 + dy**2 <= r**2
    col = (px[:, 0, None] + dx[disc]).ravel()
    row = (px[:, 1, None] + dy[disc]).ravel()
    inside = (col >= 0) & (col < size) & (row >= 0) & (row < size)
    return np.unique(row[inside] * size + col[inside])


def paint(image: np.ndarray, colour: np.ndarray, pixels: np.ndarray) -> None:
    """Set the ``pixels`` (flat indices, as :func:`dot_pixels` gives) of an image (h, w, c) to ``colour`` (c,)."""
    image.reshape(-1, image.shape[-1])[pixels] = colour
