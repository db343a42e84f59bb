"""Figure builders: pure functions from snapshots and records to Plotly figures.

The only module that imports Plotly. The command line writes these figures to HTML (and PNG
where Kaleido can render), and the dashboard draws the same figures live.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .snapshot import Snapshot
from .training import Record

# Explicit template: importing streamlit switches Plotly's default to one that renders black
# outside Streamlit, and "none" is the cheapest to build (a few ms a figure).
TEMPLATE = "none"
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
_LAYOUT = dict(template=TEMPLATE, margin=dict(l=40, r=20, t=50, b=40), font=dict(size=12), paper_bgcolor="white")


def _square_axes(fig: go.Figure, n_cols: int) -> None:
    for i in range(1, n_cols + 1):
        suffix = "" if i == 1 else str(i)
        fig.update_layout(**{f"yaxis{suffix}": dict(scaleanchor=f"x{suffix}", scaleratio=1)})


def _heatmaps(title: str, xs: np.ndarray, panels: Sequence[tuple[str, np.ndarray, str]]) -> go.Figure:
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p[0] for p in panels], horizontal_spacing=0.08)
    for col, (name, z, scale) in enumerate(panels, start=1):
        fig.add_trace(go.Heatmap(x=xs, y=xs, z=z, colorscale=scale, showscale=False, name=name), row=1, col=col)
    _square_axes(fig, len(panels))
    fig.update_layout(title=title, **_LAYOUT)
    return fig


def density_figure(snapshot: Snapshot) -> go.Figure:
    """Target vs learned density: KDEs of samples side by side (and the model's L_K if present)."""
    panels = [("target (KDE)", snapshot.target_kde, "Viridis"), ("learned (KDE)", snapshot.model_kde, "Viridis")]
    if snapshot.log_density is not None:
        panels.append(("learned log p(q) (L_K)", snapshot.log_density, "Viridis"))
    return _heatmaps("Target vs learned density", snapshot.xs, panels)


def energy_figure(snapshot: Snapshot) -> go.Figure:
    """Heatmaps of the kinetic energy K(p) and the potential energy U(q)."""
    return _heatmaps(
        "Learned energies",
        snapshot.xs,
        [("kinetic K(p)", snapshot.kinetic, "Cividis"), ("potential U(q)", snapshot.potential, "Cividis")],
    )


def _path_traces(paths: np.ndarray, color: str, name: str) -> list[go.Scatter]:
    """Polylines for (T + 1, P, 2) paths in one trace (None separates paths), plus end points."""
    T1, P, _ = paths.shape
    sep = np.full((1, P, 2), np.nan)
    lines = np.concatenate([paths, sep]).transpose(1, 0, 2).reshape(-1, 2)  # (P·(T+2), 2)
    return [
        go.Scatter(x=lines[:, 0], y=lines[:, 1], mode="lines", line=dict(color=color, width=1), opacity=0.5, name=name),
        go.Scatter(
            x=paths[-1, :, 0], y=paths[-1, :, 1], mode="markers", marker=dict(color=color, size=4), name=f"{name}: end"
        ),
    ]


def trajectory_figure(snapshot: Snapshot) -> go.Figure:
    """Base samples moved by one leapfrog step, and by the integrated flow, over contours of U."""
    steps = snapshot.integrated.shape[0] - 1
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=["single leapfrog step", f"integrated flow ({steps} steps)"],
        horizontal_spacing=0.08,
    )
    for col, paths in ((1, snapshot.single_step), (2, snapshot.integrated)):
        contour = go.Contour(
            x=snapshot.xs, y=snapshot.xs, z=snapshot.potential, colorscale="Greys", showscale=False, opacity=0.45,
            contours=dict(coloring="fill"), line=dict(width=0.5), name="U(q)",
        )  # fmt: skip
        fig.add_trace(contour, row=1, col=col)
        start = go.Scatter(
            x=paths[0, :, 0], y=paths[0, :, 1], mode="markers", marker=dict(color="#999", size=3), name="base sample"
        )
        fig.add_trace(start, row=1, col=col)
        for trace in _path_traces(paths, COLORS[0], "path"):
            fig.add_trace(trace, row=1, col=col)
    lim = float(snapshot.xs[-1])
    fig.update_xaxes(range=[-lim, lim])
    fig.update_yaxes(range=[-lim, lim])
    _square_axes(fig, 2)
    fig.update_layout(title="Leapfrog trajectories and attractors", showlegend=False, **_LAYOUT)
    return fig


def _series(records: Sequence[Record], field: str) -> tuple[list[int], list[float]]:
    pairs = [(r.step, getattr(r, field)) for r in records if getattr(r, field) is not None and r.event is None]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def curves_figure(runs: Mapping[str, Sequence[Record]], title: str = "Log-likelihood across κ") -> go.Figure:
    """Train (dashed) and test (solid) log-likelihood L_K against step, one colour per run."""
    fig = go.Figure()
    for i, (label, records) in enumerate(runs.items()):
        color = COLORS[i % len(COLORS)]
        steps, test = _series(records, "test_log_likelihood")
        fig.add_trace(go.Scatter(x=steps, y=test, mode="lines", line=dict(color=color), name=f"{label} test"))
        steps, train = _series(records, "train_log_likelihood")
        if not train:  # infinite data: the training batches' ELBO stands for the training curve
            steps, train = _series(records, "train_elbo")
            steps, train = _smooth(steps, train)
        fig.add_trace(
            go.Scatter(x=steps, y=train, mode="lines", line=dict(color=color, dash="dash"), name=f"{label} train")
        )
    fig.update_layout(title=title, xaxis_title="step", yaxis_title="log-likelihood (nats)", **_LAYOUT)
    return fig


def _smooth(steps: list[int], values: list[float]) -> tuple[list[int], list[float]]:
    """Moving average over a tenth of the points (at most 50), so short runs show a curve too."""
    window = max(1, min(50, len(values) // 10))
    if window == 1:
        return steps, values
    kernel = np.ones(window) / window
    smooth = np.convolve(values, kernel, mode="valid")
    return steps[window - 1 :], smooth.tolist()


def constraint_figure(records: Sequence[Record]) -> go.Figure:
    """Constraint values {g, H}² and multipliers λ over training, on log axes."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=["constraint E[{g, H}²]", "multiplier λ"])
    names = sorted({k for r in records for k in r.constraint})
    for i, name in enumerate(names):
        color = COLORS[i % len(COLORS)]
        pts = [(r.step, r.constraint[name]) for r in records if name in r.constraint]
        fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], name=name, line=dict(color=color)), 1, 1)
        lam = [(r.step, r.lam.get(name, 0.0)) for r in records]
        fig.add_trace(
            go.Scatter(x=[p[0] for p in lam], y=[p[1] for p in lam], name=f"λ {name}", line=dict(color=color)), 1, 2
        )
    kappas = {r.kappa for r in records if r.kappa is not None}
    for kappa in kappas:
        fig.add_hline(y=kappa, line=dict(dash="dot", color="#888"), row=1, col=1)
    fig.update_yaxes(type="log")
    fig.update_layout(title="Symmetry constraint", **_LAYOUT)
    return fig


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
