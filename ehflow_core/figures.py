"""Figure builders: pure functions from snapshots and records to Plotly figures.

The only module that imports Plotly. Each figure is first built as a plain dict (``*_spec``:
``{"data": [...], "layout": {...}}``), cheap to build; the live dashboard sends that dict straight
to plotly.js (:func:`spec_json`). ``*_figure`` wraps a spec in a validated ``go.Figure`` for the
command line, which writes it to HTML (and PNG where Kaleido can render); building every live
figure through ``go.Figure`` would cost many times more, under the GIL.
With ``raster=True`` the map panels are PNG images under the axes (:mod:`ehflow_core.raster`)
instead of heatmap and scatter traces: the live dashboard then swaps only the images, where
plotly.js would redraw every axis of a panel whenever a trace changes. The command line keeps the
traces, which show values on hover. (Measured costs: docs/benchmarks.md.)
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from functools import wraps
from pathlib import Path
from typing import Any

import numpy as np
import plotly.colors as pc
import plotly.graph_objects as go
import plotly.io as pio

from .raster import colourise, dot_pixels, heatmap_png, line_coverage, paint, png_data_uri, rgb
from .snapshot import Snapshot, kinetic_is_dome
from .training import Record

Spec = dict[str, Any]
"""A Plotly figure as plain data: ``{"data": [trace, ...], "layout": {...}}``."""

# Explicit template: importing streamlit switches Plotly's default to one that renders black
# outside Streamlit, and "none" is the cheapest to build.
TEMPLATE = "none"
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
_MARGIN = dict(l=40, r=20, t=50, b=40)
_LAYOUT = dict(margin=_MARGIN, font=dict(size=12), paper_bgcolor="white")
# Wells of U dark, ridges light (plotly.js's named "Greys" runs the other way): spelled out.
_GREYS = [[i / (len(pc.sequential.Greys_r) - 1), c] for i, c in enumerate(pc.sequential.Greys_r)]
_SPACING = 0.08  # horizontal gap between side-by-side panels, as a fraction of the width


def _typed_arrays(value: Any) -> Any:
    """Float arrays as plotly.js typed arrays (base64 float32): a third of the JSON of decimals,
    and decoded in the browser without parsing. Arrays with NaN stay lists with null: plotly.js
    breaks a line at null but not at a NaN inside a typed array."""
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
        if np.isnan(value).any():
            rounded = np.round(value, 4).astype(object)  # 4 decimals: plenty
            rounded[np.isnan(value)] = None
            return rounded.tolist()
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


def as_figure(spec: Spec) -> go.Figure:
    """A figure spec as a validated ``go.Figure`` with the project's template."""
    fig = go.Figure(spec)
    fig.update_layout(template=TEMPLATE)
    return fig


def _as_figure(build: Callable[..., Spec]) -> Callable[..., go.Figure]:
    """``*_figure`` from ``*_spec``: the same figure as a validated ``go.Figure``."""

    @wraps(build)
    def figure(*args: Any, **kwargs: Any) -> go.Figure:
        return as_figure(build(*args, **kwargs))

    figure.__doc__ = f"{build.__doc__}\n\nReturned as a ``go.Figure`` (see :func:`{build.__name__}`)."
    return figure


def _panels(titles: Sequence[str], square: bool = True) -> dict[str, Any]:
    """Layout of ``len(titles)`` side-by-side panels with titles (what ``make_subplots`` makes)."""
    n = len(titles)
    width = (1 - _SPACING * (n - 1)) / n
    layout: dict[str, Any] = {"annotations": []}
    for i, title in enumerate(titles):
        lo, suffix = i * (width + _SPACING), "" if i == 0 else str(i + 1)
        layout[f"xaxis{suffix}"] = {"domain": [lo, lo + width], "anchor": f"y{suffix}", "automargin": True}
        layout[f"yaxis{suffix}"] = {"domain": [0.0, 1.0], "anchor": f"x{suffix}", "automargin": True}
        if square:  # the panel shrinks to its square, rather than an axis stretching past the picture
            layout[f"yaxis{suffix}"].update(scaleanchor=f"x{suffix}", scaleratio=1, constrain="domain")
            layout[f"xaxis{suffix}"].update(constrain="domain")
        layout["annotations"].append(
            dict(text=title, x=lo + width / 2, y=1.0, xref="paper", yref="paper", xanchor="center",
                 yanchor="bottom", showarrow=False, font=dict(size=14))
        )  # fmt: skip
    return layout


def _in_panel(trace: dict[str, Any], col: int) -> dict[str, Any]:
    """Put ``trace`` in panel ``col`` (1-based)."""
    suffix = "" if col == 1 else str(col)
    return {**trace, "xaxis": f"x{suffix}", "yaxis": f"y{suffix}"}


def _heatmap(xs: np.ndarray, z: np.ndarray, scale: Any, name: str, **style: Any) -> dict[str, Any]:
    """A heatmap of z over xs × xs. ``zsmooth="fast"`` paints one canvas pixel per grid cell and
    lets the browser interpolate: smooth, and much cheaper to redraw than plotly.js's default of
    painting every screen pixel."""
    return dict(
        type="heatmap", x=xs, y=xs, z=z, colorscale=scale, zsmooth="fast", name=name, **{"showscale": False, **style}
    )


def _picture(source: str, xs: np.ndarray, col: int, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A PNG (data URI) stretched over the cells of the grid xs × xs in panel ``col``, under the
    axes (the browser smooths it when scaling): (placeholder trace that keeps the panel's axes, image)."""
    half = float(xs[1] - xs[0]) / 2
    suffix = "" if col == 1 else str(col)
    size = float(xs[-1] - xs[0]) + 2 * half
    image = dict(
        source=source, xref=f"x{suffix}", yref=f"y{suffix}", x=float(xs[0]) - half, y=float(xs[-1]) + half,
        sizex=size, sizey=size, sizing="stretch", layer="below",
    )  # fmt: skip
    placeholder = dict(type="scatter", x=[], y=[], mode="markers", name=name, hoverinfo="skip")
    return _in_panel(placeholder, col), image


def _map_ranges(layout: dict[str, Any], xs: np.ndarray) -> None:
    """Fix the axes of square map panels to the grid's cells: no autorange pass on each redraw.
    No grid lines: they would cross a map drawn as an image (images lie under the grid)."""
    half = float(xs[1] - xs[0]) / 2
    for key, axis in layout.items():
        if key.startswith(("xaxis", "yaxis")):
            axis.update(range=[float(xs[0]) - half, float(xs[-1]) + half], showgrid=False, zeroline=False)


def _colour_bar(z: np.ndarray, col: int, n: int) -> tuple[dict[str, Any], float, float]:
    """The colour bar of map ``z`` in panel ``col`` of ``n`` (horizontal, under the panel: beside it,
    it would sit on the next panel's labels), and z's range."""
    width = (1 - _SPACING * (n - 1)) / n
    finite = z[np.isfinite(z)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    bar = dict(
        orientation="h", x=(col - 1) * (width + _SPACING) + width / 2, xanchor="center", y=-0.16, yanchor="top",
        len=0.8 * width, thickness=8, outlinewidth=0, tickfont=dict(size=10),
    )  # fmt: skip
    return bar, lo, max(hi, lo + 1e-9)


def _heatmaps(title: str, xs: np.ndarray, panels: Sequence[tuple[str, np.ndarray, str]], raster: bool) -> Spec:
    """Maps side by side, each with its colour bar (a picture's is carried by its placeholder
    trace: two invisible markers coloured at the map's extremes)."""
    data, images = [], []
    for col, (name, z, scale) in enumerate(panels, start=1):
        bar, lo, hi = _colour_bar(z, col, len(panels))
        if raster:
            placeholder, image = _picture(heatmap_png(z, scale), xs, col, name)
            corner = [float(xs[0])] * 2
            marker = dict(color=[lo, hi], cmin=lo, cmax=hi, colorscale=scale, showscale=True, colorbar=bar, opacity=0)
            data.append({**placeholder, "x": corner, "y": corner, "marker": marker, "showlegend": False})
            images.append(image)
        else:
            data.append(_in_panel(_heatmap(xs, z, scale, name, showscale=True, colorbar=bar), col))
    layout = _panels([p[0] for p in panels])
    _map_ranges(layout, xs)
    if images:
        layout["images"] = images
    style = {**_LAYOUT, "margin": {**_MARGIN, "b": 80}}  # room for the colour bars
    return {"data": data, "layout": {**layout, "title": {"text": title}, "showlegend": False, **style}}


def density_spec(snapshot: Snapshot, raster: bool = False) -> Spec:
    """Target vs learned density: KDEs of samples side by side (and the model's L_K if present).
    ``raster``: the maps as pictures (see :func:`_picture`)."""
    panels = [("target (KDE)", snapshot.target_kde, "Viridis"), ("learned (KDE)", snapshot.model_kde, "Viridis")]
    if snapshot.members:  # a sweep: every run's learned density, each labelled
        panels = panels[:1] + [(f"learned, {label}", kde, "Viridis") for label, kde, _ in snapshot.members]
    if snapshot.peer is not None:
        panels.append((f"{snapshot.peer[0]} (KDE)", snapshot.peer[1], "Viridis"))
    if snapshot.log_density is not None:
        panels.append(("learned log p(q) (L_K)", snapshot.log_density, "Viridis"))
    return _heatmaps("Target vs learned density", snapshot.xs, panels, raster)


def energy_spec(snapshot: Snapshot, raster: bool = False) -> Spec:
    """Heatmaps of the kinetic energy K(p) and the potential energy U(q); ``raster`` as above.

    The title says which H is drawn (with a H per leapfrog step, the first step's), and the U
    panel where its wells are: when K learned a dome (a maximum at p = 0) the flow runs
    time-reversed and samples gather at U's maxima, not its minima (docs/maths.md)."""
    title = "Learned energies"
    if not snapshot.integrable:
        title += f" (H of leapfrog step 1 of {len(snapshot.integrated) - 1})"
    potential = "potential U(q)"
    if kinetic_is_dome(snapshot.kinetic):
        potential += ": K is a dome, so U's maxima are the wells"
    if snapshot.members:  # a sweep: every run's potential, each labelled
        members = [(f"U(q), {label}", u, "Cividis") for label, _, u in snapshot.members]
        return _heatmaps(title.replace("energies", "potentials of each run"), snapshot.xs, members, raster)
    return _heatmaps(
        title,
        snapshot.xs,
        [("kinetic K(p)", snapshot.kinetic, "Cividis"), (potential, snapshot.potential, "Cividis")],
        raster,
    )


# The trajectory panels' style, shared by the traces and the picture drawn for raster=True.
_U_OPACITY, _PATH_OPACITY, _START, _START_SIZE, _END_SIZE = 0.45, 0.5, "#999", 3, 4
TRAJECTORY_PIXELS = 400  # side of the raster picture of a trajectory panel
# A long integrated flow is drawn as its attractors show: where each path ends, with a trail of its
# last TRAIL steps fading out (80 whole 30-step paths were a tangle).
TRAIL = 8


def _path_traces(paths: np.ndarray, color: str, name: str) -> list[dict[str, Any]]:
    """Polylines for (T + 1, P, 2) paths in one trace (NaN separates paths), plus end points."""
    T1, P, _ = paths.shape
    sep = np.full((1, P, 2), np.nan)
    lines = np.concatenate([paths, sep]).transpose(1, 0, 2).reshape(-1, 2)  # (P·(T+2), 2)
    return [
        dict(type="scatter", x=lines[:, 0], y=lines[:, 1], mode="lines", line=dict(color=color, width=1),
             opacity=_PATH_OPACITY, name=name),
        dict(type="scatter", x=paths[-1, :, 0], y=paths[-1, :, 1], mode="markers",
             marker=dict(color=color, size=_END_SIZE), name=f"{name}: end"),
    ]  # fmt: skip


def _u_picture(potential: np.ndarray) -> str:
    """U in faint greys on white, as the traces of :func:`trajectory_spec` draw it: one pixel per cell."""
    colours = colourise(potential, _GREYS)[::-1, :, :3].astype(np.float32)
    return png_data_uri(np.rint(255.0 + _U_OPACITY * (colours - 255.0)).astype(np.uint8))


def trajectory_png(paths: np.ndarray, xs: np.ndarray, size: int = TRAJECTORY_PIXELS) -> str:
    """The paths (T + 1, P, 2) of one trajectory panel as a transparent picture over the grid xs × xs,
    drawn as the traces of :func:`trajectory_spec` draw them: thin lines at opacity ½, grey start
    and coloured end points; past ``TRAIL`` steps, only the last ``TRAIL`` steps of each path, fading
    towards the past. The browser lays it over the picture of U (:func:`_u_picture`)."""
    half = float(xs[1] - xs[0]) / 2
    lo, hi = float(xs[0]) - half, float(xs[-1]) + half
    image = np.zeros((size, size, 4), dtype=np.uint8)
    image[..., :3] = rgb(COLORS[0])
    opaque = np.uint8(255)
    if len(paths) > TRAIL + 1:  # a trail: segment k from the end at opacity ∝ (TRAIL − k) / TRAIL
        alpha = np.zeros((size, size))
        for k in range(TRAIL):
            segment = paths[len(paths) - k - 2 : len(paths) - k]
            alpha = np.maximum(alpha, (TRAIL - k) / TRAIL * line_coverage(segment, lo, hi, size))
        image[..., 3] = np.rint(255 * np.minimum(1.0, alpha))
    else:
        image[..., 3] = np.rint(255 * np.minimum(1.0, _PATH_OPACITY * line_coverage(paths, lo, hi, size)))
    # Where the paths began (grey; also what is left to see while the flow still sends them out of view).
    paint(image, np.append(rgb(_START), opaque), dot_pixels(paths[0], lo, hi, size, _START_SIZE))
    paint(image, np.append(rgb(COLORS[0]), opaque), dot_pixels(paths[-1], lo, hi, size, _END_SIZE))
    return png_data_uri(image, level=1)


VIEW_SHARE = 0.8  # the integrated flow is drawn while at least this share of its points is in view


def _in_view(paths: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """The paths (T + 1, P, 2) up to the last step before which at least ``VIEW_SHARE`` of the
    points stayed on the map xs × xs (at least one step): a flow that sends its points away
    is drawn while they can be seen, not as an empty panel."""
    half = float(xs[1] - xs[0]) / 2
    inside = ((paths >= xs[0] - half) & (paths <= xs[-1] + half)).all(-1).mean(-1) >= VIEW_SHARE  # (T + 1,)
    leaves = np.flatnonzero(~inside[1:])
    return paths if not len(leaves) else paths[: max(int(leaves[0]) + 1, 2)]


def trajectory_spec(snapshot: Snapshot, raster: bool = False) -> Spec:
    """Base samples moved by one leapfrog step, and by the integrated flow, over a map of U
    (``raster``: each panel two pictures, U under the paths: :func:`_u_picture`, :func:`trajectory_png`)."""
    integrated = _in_view(snapshot.integrated, snapshot.xs)
    steps, total = len(integrated) - 1, len(snapshot.integrated) - 1
    count = f"{steps} steps" if steps == total else f"{steps} of {total} steps: then most points leave the view"
    # A H per step has no integrated flow: the panel then shows the flow's own steps, and says so.
    flow_title = f"integrated flow ({count})" if snapshot.integrable else f"the flow's leapfrog steps ({count})"
    if steps > TRAIL:
        flow_title += f": the last {TRAIL}, fading"
    layout = _panels(["single leapfrog step", flow_title])
    _map_ranges(layout, snapshot.xs)
    data, images = [], []
    u_picture = _u_picture(snapshot.potential) if raster else ""
    for col, paths in ((1, snapshot.single_step), (2, integrated)):
        if raster:
            placeholder, u_image = _picture(u_picture, snapshot.xs, col, "U(q)")
            _, path_image = _picture(trajectory_png(paths, snapshot.xs), snapshot.xs, col, "path")
            # The paths' picture lies above the (empty) traces: plotly.js keys each layer's images
            # by position, so two pictures on the same cells in one layer would draw only one.
            data.append(placeholder)
            images += [u_image, {**path_image, "layer": "above"}]
            continue
        # U as a faint heatmap, not filled contours: plotly.js traces contours in the browser on
        # every redraw, which capped the dashboard's refresh rate.
        background = _heatmap(snapshot.xs, snapshot.potential, _GREYS, "U(q)", opacity=_U_OPACITY)
        start = dict(
            type="scatter", x=paths[0, :, 0], y=paths[0, :, 1], mode="markers",
            marker=dict(color=_START, size=_START_SIZE), name="base sample",
        )  # fmt: skip
        shown = paths[-(TRAIL + 1) :]  # the attractor view: each path's last TRAIL steps and its end
        data += [_in_panel(t, col) for t in (background, start, *_path_traces(shown, COLORS[0], "path"))]
    layout.update(title={"text": "Leapfrog trajectories and attractors"}, showlegend=False, **_LAYOUT)
    if images:
        layout["images"] = images
    return {"data": data, "layout": layout}


def _series(records: Sequence[Record], field: str) -> tuple[list[int], list[float]]:
    pairs = [(r.step, getattr(r, field)) for r in records if getattr(r, field) is not None and r.event is None]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def curves_spec(
    runs: Mapping[str, Sequence[Record]],
    title: str = "Log-likelihood across κ",
    bound: str = "bound",
    k: int | None = None,
    exact: Collection[str] = (),
) -> Spec:
    """Train (dashed) and test (solid) log-likelihood against step, one colour per run.

    Each curve is named for its estimator (``TrainConfig.estimators`` gives ``bound`` and ``k``):
    with finite data both are L_k, on (a fixed subsample of) the training points and the test
    points, like for like; with infinite data every batch is fresh, so the dashed curve is the
    training batches' ``bound`` (ELBO or L_K, smoothed), named "train L_8 (batches)". A single
    run's curves are named for the estimator alone (its label, say a κ it no longer trains with,
    would only mislead); several runs' carry their labels. The runs named in ``exact`` (a peer
    flow) report exact log-likelihoods: their curves are named "log p".
    """
    data = []
    for i, (label, records) in enumerate(runs.items()):
        estimator, batches = (" log p", "log p") if label in exact else (f" L_{k}" if k else "", bound)
        color = COLORS[i % len(COLORS)]
        steps, test = _series(records, "test_log_likelihood")
        label = label if len(runs) > 1 else ""
        test_name = f"{label} test{estimator}".strip()
        data.append(dict(type="scatter", x=steps, y=test, mode="lines", line=dict(color=color), name=test_name))
        steps, train = _series(records, "train_log_likelihood")
        name = f"{label} train{estimator}".strip()
        if not train:  # infinite data: the training batches' bound stands for the training curve
            steps, train = _series(records, "train_bound")
            steps, train = _smooth(steps, train)
            name = f"{label} train {batches} (batches)".strip()
        data.append(
            dict(type="scatter", x=steps, y=train, mode="lines", line=dict(color=color, dash="dash"), name=name)
        )
    layout = dict(
        title={"text": title}, xaxis={"title": {"text": "step"}, "automargin": True},
        yaxis={"title": {"text": "nats (higher is better)"}, "automargin": True}, **_LAYOUT,
    )  # fmt: skip
    return {"data": data, "layout": layout}


_SUBSCRIPTS = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")


def generator_label(name: str, alone: bool = True) -> str:
    """A generator's name as a reader knows it, never as "L_12" (which reads like the bound L_K):
    a rotation ``L_ij`` is the angular momentum g (g₁₂ beside others), a translation ``P_i`` the
    momentum p_i; other names as they are."""
    parts = name.split("_")
    if len(parts) in (2, 3) and parts[0] == "L" and all(p.isdigit() for p in parts[1:]):
        axes = parts[1] if len(parts) == 2 else f"{parts[1]},{parts[2]}"
        return "angular momentum g" if alone else f"angular momentum g{axes.translate(_SUBSCRIPTS)}"
    if len(parts) == 2 and parts[0] == "P" and parts[1].isdigit():
        return f"momentum p{parts[1].translate(_SUBSCRIPTS)}"
    return name


def _smooth(steps: list[int], values: list[float]) -> tuple[list[int], list[float]]:
    """Moving average over a tenth of the points (at most 50), so short runs show a curve too."""
    window = max(1, min(50, len(values) // 10))
    if window == 1:
        return steps, values
    kernel = np.ones(window) / window
    smooth = np.convolve(values, kernel, mode="valid")
    return steps[window - 1 :], smooth.tolist()


def _value_axis(values: Sequence[float]) -> dict[str, Any]:
    """A y axis for positive values: logarithmic when they span a decade or more, labelled with
    full values at 1, 2 and 5 per decade (at each decade alone when that would be more than 8
    labels); linear (plotly's ticks) over a narrower range, where a log axis shows one label."""
    positive = [v for v in values if v > 0 and math.isfinite(v)]
    if not positive or max(positive) / min(positive) < 10:
        return {"type": "linear"}
    lo, hi = min(positive), max(positive)
    decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    ticks = [m * 10.0**k for k in decades for m in (1, 2, 5) if lo / 1.2 <= m * 10.0**k <= hi * 1.2]
    if len(ticks) > 8:
        ticks = [10.0**k for k in decades if lo / 1.2 <= 10.0**k <= hi * 1.2]
    return {"type": "log", "tickvals": ticks, "ticktext": [f"{t:g}" for t in ticks]}


def constraint_spec(records: Sequence[Record]) -> Spec:
    """Constraint values {g, H}² and multipliers λ over training, on log axes, and the κ in
    force now (the last record's) as a labelled dotted line: the κ a slider left is not drawn."""
    layout = _panels(["constraint E[{g, H}²]", "multiplier λ"], square=False)
    data = []
    names = sorted({k for r in records for k in r.constraint})
    values: tuple[list[float], list[float]] = ([], [])  # each panel's values, for its axis
    for i, name in enumerate(names):
        color = COLORS[i % len(COLORS)]
        pts = [(r.step, r.constraint[name]) for r in records if name in r.constraint]
        lam = [(r.step, r.lam.get(name, 0.0)) for r in records]
        generator = generator_label(name, alone=len(names) == 1)
        for col, label, xy, dash in ((1, f"{{g, H}}², {generator}", pts, "solid"), (2, f"λ, {generator}", lam, "dash")):
            trace = dict(
                type="scatter", x=[p[0] for p in xy], y=[p[1] for p in xy], name=label,
                line=dict(color=color, dash=dash),
            )  # fmt: skip
            data.append(_in_panel(trace, col))
            values[col - 1].extend(p[1] for p in xy)
    kappa = records[-1].kappa if records else None  # the κ in force now
    for axis, panel in (("yaxis", [*values[0], *([kappa] if kappa else [])]), ("yaxis2", values[1])):
        layout[axis].update(_value_axis(panel))
    for axis in ("xaxis", "xaxis2"):
        layout[axis]["title"] = {"text": "step"}
    if kappa is not None:
        tag = dict(text=f"κ = {kappa:.3g}", textposition="end", yanchor="bottom", font=dict(size=11, color="#666"))
        layout["shapes"] = [
            dict(type="line", xref="x domain", yref="y", x0=0, x1=1, y0=kappa, y1=kappa,
                 line=dict(dash="dot", color="#888"), label=tag)
        ]  # fmt: skip
    legend = dict(orientation="h", x=0, y=-0.3, yanchor="top")  # under the panels, not beside them
    style = {**_LAYOUT, "margin": {**_MARGIN, "b": 90}}
    layout.update(title={"text": "Symmetry constraint"}, legend=legend, **style)
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
