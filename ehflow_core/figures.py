"""Figure builders: pure functions from snapshots and records to Plotly figures.

The only module that imports Plotly. Each figure is first built as a plain dict (``*_spec``:
``{"data": [...], "layout": {...}}``), which costs about a millisecond; the live dashboard sends
that dict straight to plotly.js (:func:`spec_json`). ``*_figure`` wraps a spec in a validated
``go.Figure`` for the command line, which writes it to HTML (and PNG where Kaleido can render).
With ``raster=True`` the heatmaps are PNG images under the axes (:func:`heatmap_png`) instead of
heatmap traces: the live dashboard then swaps only the images of a map panel, ~1 ms in the browser
against ~30 ms for plotly.js to redraw the panel (it redraws every axis whenever a trace changes).
Building through ``go.Figure``/``make_subplots`` took ~140 ms for the dashboard's five figures,
held the GIL, and slowed the training thread beside it.
"""

from __future__ import annotations

import base64
import struct
import zlib
from collections.abc import Callable, Mapping, Sequence
from functools import wraps
from pathlib import Path
from typing import Any

import numpy as np
import plotly.colors as pc
import plotly.graph_objects as go
import plotly.io as pio

from .snapshot import Snapshot
from .training import Record

Spec = dict[str, Any]
"""A Plotly figure as plain data: ``{"data": [trace, ...], "layout": {...}}``."""

# Explicit template: importing streamlit switches Plotly's default to one that renders black
# outside Streamlit, and "none" is the cheapest to build.
TEMPLATE = "none"
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
_LAYOUT = dict(margin=dict(l=40, r=20, t=50, b=40), font=dict(size=12), paper_bgcolor="white")
# Wells of U dark, ridges light (plotly.js's named "Greys" runs the other way): spelled out.
_GREYS = [[i / (len(pc.sequential.Greys_r) - 1), c] for i, c in enumerate(pc.sequential.Greys_r)]
_SPACING = 0.08  # horizontal gap between side-by-side panels, as a fraction of the width


def _typed_arrays(value: Any) -> Any:
    """Float arrays as plotly.js typed arrays (base64 float32): a third of the JSON of decimals,
    and decoded in the browser without parsing. Arrays with NaN stay lists with null: plotly.js
    breaks a line at null but not at a NaN inside a typed array."""
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
        if np.isnan(value).any():
            return np.where(np.isnan(value), None, np.round(value, 4).astype(object)).tolist()  # 4 decimals: plenty
        array = np.ascontiguousarray(value, dtype="<f4")
        typed = {"dtype": "f4", "bdata": base64.b64encode(array.tobytes()).decode("ascii")}
        return typed if array.ndim == 1 else {**typed, "shape": ", ".join(map(str, array.shape))}
    if isinstance(value, dict):
        return {k: _typed_arrays(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_typed_arrays(v) for v in value]
    return value


def spec_json(spec: Spec) -> str:
    """A spec as the JSON plotly.js draws, float arrays as base64 float32 typed arrays."""
    return pio.to_json(_typed_arrays(spec), validate=False)


def _as_figure(build: Callable[..., Spec]) -> Callable[..., go.Figure]:
    """``*_figure`` from ``*_spec``: the same figure as a validated ``go.Figure``."""

    @wraps(build)
    def figure(*args: Any, **kwargs: Any) -> go.Figure:
        fig = go.Figure(build(*args, **kwargs))
        fig.update_layout(template=TEMPLATE)
        return fig

    figure.__doc__ = f"{build.__doc__}\n\nReturned as a ``go.Figure`` (see :func:`{build.__name__}`)."
    return figure


def _panels(titles: Sequence[str], square: bool = True) -> dict[str, Any]:
    """Layout of ``len(titles)`` side-by-side panels with titles (what ``make_subplots`` makes)."""
    n = len(titles)
    width = (1 - _SPACING * (n - 1)) / n
    layout: dict[str, Any] = {"annotations": []}
    for i, title in enumerate(titles):
        lo, suffix = i * (width + _SPACING), "" if i == 0 else str(i + 1)
        layout[f"xaxis{suffix}"] = {"domain": [lo, lo + width], "anchor": f"y{suffix}"}
        layout[f"yaxis{suffix}"] = {"domain": [0.0, 1.0], "anchor": f"x{suffix}"}
        if square:
            layout[f"yaxis{suffix}"].update(scaleanchor=f"x{suffix}", scaleratio=1)
        layout["annotations"].append(
            dict(text=title, x=lo + width / 2, y=1.0, xref="paper", yref="paper", xanchor="center",
                 yanchor="bottom", showarrow=False, font=dict(size=14))
        )  # fmt: skip
    return layout


def _in_panel(trace: dict[str, Any], col: int) -> dict[str, Any]:
    """Put ``trace`` in panel ``col`` (1-based)."""
    suffix = "" if col == 1 else str(col)
    return {**trace, "xaxis": f"x{suffix}", "yaxis": f"y{suffix}"}


def _rgb(color: str) -> tuple[float, float, float]:
    return pc.unlabel_rgb(pc.convert_colors_to_same_type([color], "rgb")[0][0])


def _colour_table(scale: Any) -> np.ndarray:
    """A plotly colorscale (a name or ``[[stop, colour], ...]``) as 256 RGB colours: (256, 3) uint8."""
    scale = pc.get_colorscale(scale) if isinstance(scale, str) else scale
    stops = np.array([float(stop) for stop, _ in scale])
    colours = np.array([_rgb(colour) for _, colour in scale])
    t = np.linspace(0.0, 1.0, 256)
    return np.stack([np.interp(t, stops, colours[:, i]) for i in range(3)], axis=1).round().astype(np.uint8)


def _png(rgba: np.ndarray) -> bytes:
    """An (h, w, 4) uint8 array as PNG bytes (8-bit RGBA, rows top to bottom)."""
    h, w, _ = rgba.shape
    rows = np.concatenate([np.zeros((h, 1), np.uint8), rgba.reshape(h, 4 * w)], axis=1)  # filter 0 per row

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def heatmap_png(z: np.ndarray, scale: Any) -> str:
    """A grid z (n, n), indexed [y, x], as a PNG data URI coloured like plotly.js's heatmap.

    Colours run linearly from min(z) to max(z) (plotly.js's automatic zmin/zmax); NaN cells are
    transparent. The image's first row is the grid's last (largest y), as the picture is seen.
    """
    z = np.asarray(z, dtype=np.float64)
    finite = np.isfinite(z)
    lo, hi = (z[finite].min(), z[finite].max()) if finite.any() else (0.0, 1.0)
    scaled = np.where(finite, (z - lo) / (hi - lo if hi > lo else 1.0), 0.0)
    rgba = np.empty((*z.shape, 4), np.uint8)
    rgba[..., :3] = _colour_table(scale)[np.clip(np.rint(scaled * 255), 0, 255).astype(np.intp)]
    rgba[..., 3] = np.where(finite, 255, 0)
    return "data:image/png;base64," + base64.b64encode(_png(rgba[::-1])).decode("ascii")


def _heatmap(
    xs: np.ndarray, z: np.ndarray, scale: Any, name: str, col: int, raster: bool, opacity: float = 1.0
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A heatmap of z over xs × xs in panel ``col``: (trace, layout images).

    As a trace, ``zsmooth="fast"`` paints one canvas pixel per grid cell and lets the browser
    interpolate: smooth, and ~10× cheaper to redraw than plotly.js's default of painting every
    screen pixel. With ``raster`` the trace is an empty placeholder (it keeps the panel's axes)
    and the picture is a PNG image stretched over the grid's cells, smoothed by the browser too.
    """
    if not raster:
        trace = dict(type="heatmap", x=xs, y=xs, z=z, colorscale=scale, showscale=False, zsmooth="fast", name=name)
        return _in_panel({**trace, "opacity": opacity} if opacity < 1 else trace, col), []
    half = float(xs[1] - xs[0]) / 2
    suffix = "" if col == 1 else str(col)
    size = float(xs[-1] - xs[0]) + 2 * half
    image = dict(
        source=heatmap_png(z, scale), xref=f"x{suffix}", yref=f"y{suffix}", x=float(xs[0]) - half,
        y=float(xs[-1]) + half, sizex=size, sizey=size, sizing="stretch", layer="below", opacity=opacity,
    )  # fmt: skip
    placeholder = dict(type="scatter", x=[], y=[], mode="markers", name=name, hoverinfo="skip")
    return _in_panel(placeholder, col), [image]


def _map_ranges(layout: dict[str, Any], xs: np.ndarray) -> None:
    """Fix the axes of square map panels to the grid's cells: no autorange pass on each redraw.
    No grid lines: they would cross a map drawn as an image (images lie under the grid)."""
    half = float(xs[1] - xs[0]) / 2
    for key, axis in layout.items():
        if key.startswith(("xaxis", "yaxis")):
            axis.update(range=[float(xs[0]) - half, float(xs[-1]) + half], showgrid=False, zeroline=False)


def _heatmaps(title: str, xs: np.ndarray, panels: Sequence[tuple[str, np.ndarray, str]], raster: bool) -> Spec:
    data, images = [], []
    for col, (name, z, scale) in enumerate(panels, start=1):
        trace, image = _heatmap(xs, z, scale, name, col, raster)
        data.append(trace)
        images += image
    layout = _panels([p[0] for p in panels])
    _map_ranges(layout, xs)
    if images:
        layout["images"] = images
    return {"data": data, "layout": {**layout, "title": {"text": title}, **_LAYOUT}}


def density_spec(snapshot: Snapshot, raster: bool = False) -> Spec:
    """Target vs learned density: KDEs of samples side by side (and the model's L_K if present).
    ``raster``: heatmaps as images (see :func:`_heatmap`)."""
    panels = [("target (KDE)", snapshot.target_kde, "Viridis"), ("learned (KDE)", snapshot.model_kde, "Viridis")]
    if snapshot.log_density is not None:
        panels.append(("learned log p(q) (L_K)", snapshot.log_density, "Viridis"))
    return _heatmaps("Target vs learned density", snapshot.xs, panels, raster)


def energy_spec(snapshot: Snapshot, raster: bool = False) -> Spec:
    """Heatmaps of the kinetic energy K(p) and the potential energy U(q); ``raster`` as above."""
    return _heatmaps(
        "Learned energies",
        snapshot.xs,
        [("kinetic K(p)", snapshot.kinetic, "Cividis"), ("potential U(q)", snapshot.potential, "Cividis")],
        raster,
    )


def _path_traces(paths: np.ndarray, color: str, name: str) -> list[dict[str, Any]]:
    """Polylines for (T + 1, P, 2) paths in one trace (NaN separates paths), plus end points."""
    T1, P, _ = paths.shape
    sep = np.full((1, P, 2), np.nan)
    lines = np.concatenate([paths, sep]).transpose(1, 0, 2).reshape(-1, 2)  # (P·(T+2), 2)
    return [
        dict(type="scatter", x=lines[:, 0], y=lines[:, 1], mode="lines", line=dict(color=color, width=1),
             opacity=0.5, name=name),
        dict(type="scatter", x=paths[-1, :, 0], y=paths[-1, :, 1], mode="markers", marker=dict(color=color, size=4),
             name=f"{name}: end"),
    ]  # fmt: skip


def trajectory_spec(snapshot: Snapshot, raster: bool = False) -> Spec:
    """Base samples moved by one leapfrog step, and by the integrated flow, over a map of U
    (``raster``: that map as an image, see :func:`_heatmap`)."""
    steps = snapshot.integrated.shape[0] - 1
    layout = _panels(["single leapfrog step", f"integrated flow ({steps} steps)"])
    _map_ranges(layout, snapshot.xs)
    data, images = [], []
    for col, paths in ((1, snapshot.single_step), (2, snapshot.integrated)):
        # U as a faint heatmap, not filled contours: plotly.js traces contours in the browser,
        # ~100 ms per panel, which capped the dashboard's refresh rate.
        background, image = _heatmap(snapshot.xs, snapshot.potential, _GREYS, "U(q)", col, raster, opacity=0.45)
        images += image
        start = dict(
            type="scatter", x=paths[0, :, 0], y=paths[0, :, 1], mode="markers", marker=dict(color="#999", size=3),
            name="base sample",
        )  # fmt: skip
        data += [background] + [_in_panel(t, col) for t in (start, *_path_traces(paths, COLORS[0], "path"))]
    layout.update(title={"text": "Leapfrog trajectories and attractors"}, showlegend=False, **_LAYOUT)
    if images:
        layout["images"] = images
    return {"data": data, "layout": layout}


def _series(records: Sequence[Record], field: str) -> tuple[list[int], list[float]]:
    pairs = [(r.step, getattr(r, field)) for r in records if getattr(r, field) is not None and r.event is None]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def curves_spec(runs: Mapping[str, Sequence[Record]], title: str = "Log-likelihood across κ") -> Spec:
    """Train (dashed) and test (solid) log-likelihood L_K against step, one colour per run."""
    data = []
    for i, (label, records) in enumerate(runs.items()):
        color = COLORS[i % len(COLORS)]
        steps, test = _series(records, "test_log_likelihood")
        data.append(dict(type="scatter", x=steps, y=test, mode="lines", line=dict(color=color), name=f"{label} test"))
        steps, train = _series(records, "train_log_likelihood")
        if not train:  # infinite data: the training batches' ELBO stands for the training curve
            steps, train = _series(records, "train_elbo")
            steps, train = _smooth(steps, train)
        data.append(
            dict(type="scatter", x=steps, y=train, mode="lines", line=dict(color=color, dash="dash"),
                 name=f"{label} train")
        )  # fmt: skip
    layout = dict(
        title={"text": title}, xaxis={"title": {"text": "step"}},
        yaxis={"title": {"text": "log-likelihood (nats)"}}, **_LAYOUT,
    )  # fmt: skip
    return {"data": data, "layout": layout}


def _smooth(steps: list[int], values: list[float]) -> tuple[list[int], list[float]]:
    """Moving average over a tenth of the points (at most 50), so short runs show a curve too."""
    window = max(1, min(50, len(values) // 10))
    if window == 1:
        return steps, values
    kernel = np.ones(window) / window
    smooth = np.convolve(values, kernel, mode="valid")
    return steps[window - 1 :], smooth.tolist()


def constraint_spec(records: Sequence[Record]) -> Spec:
    """Constraint values {g, H}² and multipliers λ over training, on log axes."""
    layout = _panels(["constraint E[{g, H}²]", "multiplier λ"], square=False)
    layout["yaxis"]["type"] = layout["yaxis2"]["type"] = "log"
    data = []
    names = sorted({k for r in records for k in r.constraint})
    for i, name in enumerate(names):
        color = COLORS[i % len(COLORS)]
        pts = [(r.step, r.constraint[name]) for r in records if name in r.constraint]
        lam = [(r.step, r.lam.get(name, 0.0)) for r in records]
        for col, label, xy in ((1, name, pts), (2, f"λ {name}", lam)):
            trace = dict(type="scatter", x=[p[0] for p in xy], y=[p[1] for p in xy], name=label, line=dict(color=color))
            data.append(_in_panel(trace, col))
    kappas = sorted({r.kappa for r in records if r.kappa is not None})
    layout["shapes"] = [
        dict(
            type="line", xref="x domain", yref="y", x0=0, x1=1, y0=kappa, y1=kappa, line=dict(dash="dot", color="#888")
        )
        for kappa in kappas
    ]
    layout.update(title={"text": "Symmetry constraint"}, **_LAYOUT)
    return {"data": data, "layout": layout}


density_figure = _as_figure(density_spec)
energy_figure = _as_figure(energy_spec)
trajectory_figure = _as_figure(trajectory_spec)
curves_figure = _as_figure(curves_spec)
constraint_figure = _as_figure(constraint_spec)


def write_figure(fig: go.Figure, path_without_suffix: str | Path, inline: bool = False) -> list[Path]:
    """Write ``fig`` as HTML and, where Kaleido and a browser are available, as PNG.

    The HTML loads ``plotly.min.js`` from its own folder (written once beside it), so a folder of
    figures works offline without inlining 4.8 MB of JavaScript into every file (``inline=True``
    makes one self-contained file instead). Returns the files written."""
    base = Path(path_without_suffix)
    html = base.with_suffix(".html")
    fig.write_html(html, include_plotlyjs=True if inline else "directory", full_html=True)
    written = [html]
    try:
        fig.write_image(base.with_suffix(".png"), width=1000, height=480, scale=1)
        written.append(base.with_suffix(".png"))
    except Exception:  # no kaleido or no browser: PNG is optional
        pass
    return written
