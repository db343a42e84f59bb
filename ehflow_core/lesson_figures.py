"""Figures of the teaching views: a point stepped through the leapfrog, a patch of phase space
carried whole, a density turned by θ. Pure functions from :mod:`ehflow_core.walkthrough`,
:mod:`ehflow_core.liouville` and :mod:`ehflow_core.snapshot` data to figure specs (as in
:mod:`ehflow_core.figures`, whose helpers they share)."""

from __future__ import annotations

import math

import numpy as np

from .figures import _GREYS, _LAYOUT, COLORS, Spec, _heatmap, _in_panel, _map_ranges, _panels
from .liouville import Patch
from .snapshot import Snapshot, Turned
from .walkthrough import Walkthrough, hamiltonian_name

_NOW = COLORS[1]  # the current state and the move that made it
_PHASE = (COLORS[2], COLORS[3])  # each coordinate's (q_i, p_i) in phase space: green, purple


def _square_ranges(layout: dict, lo: float, hi: float) -> None:
    for key, axis in layout.items():
        if key.startswith(("xaxis", "yaxis")):
            axis.update(range=[lo, hi], showgrid=False, zeroline=False)


def _arrow(start: np.ndarray, end: np.ndarray, col: int, colour: str = "") -> dict:
    """An arrow from ``start`` to ``end`` (2-vectors) in panel ``col``."""
    suffix = "" if col == 1 else str(col)
    return dict(
        x=float(end[0]), y=float(end[1]), ax=float(start[0]), ay=float(start[1]), xref=f"x{suffix}",
        yref=f"y{suffix}", axref=f"x{suffix}", ayref=f"y{suffix}", showarrow=True, arrowhead=3, arrowsize=1.2,
        arrowwidth=2.5, arrowcolor=colour or _NOW, text="",
    )  # fmt: skip


def _path(points: np.ndarray, col: int, name: str, colour: str) -> list[dict]:
    """A path so far (lines and markers) and its last point, marked, in panel ``col``."""
    return [
        _in_panel(dict(type="scatter", x=points[:, 0], y=points[:, 1], mode="lines+markers", name=f"{name} so far",
                       line=dict(color=colour, width=2), marker=dict(size=5)), col),
        _in_panel(dict(type="scatter", x=points[-1:, 0], y=points[-1:, 1], mode="markers", name=f"{name} now",
                       marker=dict(color=_NOW, size=11, line=dict(color="white", width=1))), col),
    ]  # fmt: skip


def walkthrough_spec(
    walk: Walkthrough, index: int, xs: np.ndarray, potentials: np.ndarray, kinetics: np.ndarray
) -> Spec:
    """State ``index`` of ``walk`` in three panels: q over U(q) and p over K(p) of the step's
    Hamiltonian (``potentials``, ``kinetics``: (H, n, n) over ``xs``), and phase space, each
    coordinate's (q_i, p_i); each path so far, the current state marked, and the move that made it
    as an arrow (a half-step of p in the p panel, a step of q in the q panel; in phase space a
    half-step of p is vertical and a step of q horizontal: the shears). The axes span the whole
    walk, so they stay put while stepping."""
    if not 0 <= index < walk.n_states:
        raise ValueError(f"index must be in 0..{walk.n_states - 1}, got {index}")
    step = max(walk.step_of(index), 0)
    h = walk.hamiltonians[step]
    label = f" of {hamiltonian_name(walk, step)}"
    phase_title = "phase space: (q₁, p₁) green, (q₂, p₂) purple"
    layout = _panels([f"position q over U(q){label}", f"momentum p over K(p){label}", phase_title])
    states = np.concatenate([walk.q, walk.p, [[xs[0], xs[0]], [xs[-1], xs[-1]]]])
    lo, hi = float(states.min()) - 0.3, float(states.max()) + 0.3
    _square_ranges(layout, lo, hi)
    data, arrows = [], []
    moved_q = index > 0 and walk.parts[index] == "drift"
    for col, (path, energy, name) in enumerate(((walk.q, potentials[h], "q"), (walk.p, kinetics[h], "p")), start=1):
        data.append(_in_panel(_heatmap(xs, energy, _GREYS, "U(q)" if name == "q" else "K(p)", opacity=0.55), col))
        data += _path(path[: index + 1], col, name, COLORS[0])
        if index > 0 and moved_q == (name == "q"):
            arrows.append(_arrow(path[index - 1], path[index], col))
    for i in range(walk.q.shape[1]):  # phase space: (q_i, p_i) of each coordinate
        phase = np.stack([walk.q[: index + 1, i], walk.p[: index + 1, i]], axis=1)
        data += _path(phase, 3, f"(q{i + 1}, p{i + 1})", _PHASE[i % len(_PHASE)])
        if index > 0:
            arrows.append(_arrow(phase[-2], phase[-1], 3))
    layout["annotations"] += arrows
    layout["xaxis3"]["title"] = {"text": "q"}
    layout["yaxis3"]["title"] = {"text": "p"}
    title = "Sampling: base → data" if walk.direction == "forward" else "Likelihood: data → base"
    layout.update(title={"text": title}, showlegend=False, **_LAYOUT)
    return {"data": data, "layout": layout}


_LOOKS = {  # the patch's loops: colour, and what the legend calls each
    "start": ("#777", "before"),
    "leapfrog": (COLORS[0], "after the flow (leapfrog)"),
    "damped": (COLORS[1], "after the damped map (contrast)"),
}


def patch_spec(patch: Patch) -> Spec:
    """The patch before and after the flow and the contrast map, projected on the (q₁, p₁) and
    (q₂, p₂) planes, filled; the legend gives each loop's symplectic area (the sum over planes)."""
    dim = next(iter(patch.loops.values()))[0].shape[1]
    layout = _panels([f"(q{i + 1}, p{i + 1}) plane" for i in range(min(dim, 2))])
    for col in range(1, min(dim, 2) + 1):  # each plane framed on its own loops
        plane = np.concatenate([np.stack([q[:, col - 1], p[:, col - 1]]) for q, p in patch.loops.values()], axis=1)
        middle, half = plane.mean(axis=1), float(np.ptp(plane, axis=1).max()) / 2 + 0.2
        suffix = "" if col == 1 else str(col)
        layout[f"xaxis{suffix}"].update(range=[middle[0] - half, middle[0] + half], showgrid=False)
        layout[f"yaxis{suffix}"].update(range=[middle[1] - half, middle[1] + half], showgrid=False)
    data = []
    for key, (q, p) in patch.loops.items():
        colour, name = _LOOKS[key]
        for col in range(1, min(dim, 2) + 1):
            closed_q, closed_p = np.append(q[:, col - 1], q[0, col - 1]), np.append(p[:, col - 1], p[0, col - 1])
            data.append(
                _in_panel(dict(type="scatter", x=closed_q, y=closed_p, mode="lines", fill="toself", opacity=0.55,
                               line=dict(color=colour, width=2), name=f"{name}: area {patch.areas[key]:.6f}",
                               legendgroup=key, showlegend=col == 1), col)
            )  # fmt: skip
    for suffix in ("", "2"):
        layout[f"xaxis{suffix}"]["title"] = {"text": "q"}
        layout[f"yaxis{suffix}"]["title"] = {"text": "p"}
    legend = dict(orientation="h", x=0.5, xanchor="center", y=-0.18, yanchor="top")
    layout.update(title={"text": "A patch of phase space, carried"}, showlegend=True, legend=legend, **_LAYOUT)
    layout["margin"] = {**layout["margin"], "b": 90}
    return {"data": data, "layout": layout}


def turned_spec(snapshot: Snapshot, turned: Turned) -> Spec:
    """The target's and the learned density turned by θ, each beside its difference from itself
    (turned − as is, red where the turn added density, blue where it took some away); the titles
    give each difference's L1 size ∫|p̂_θ − p̂| (0: invariant under this turn, 2: no overlap)."""
    degrees = f"{math.degrees(turned.theta):.0f}°"
    panels = [
        (f"target turned by {degrees}", turned.target, "Viridis", False),
        (f"target: turned − as is (L1 {turned.target_l1:.2f})", turned.target - snapshot.target_kde, "RdBu_r", True),
        (f"learned turned by {degrees}", turned.model, "Viridis", False),
        (f"learned: turned − as is (L1 {turned.model_l1:.2f})", turned.model - snapshot.model_kde, "RdBu_r", True),
    ]
    layout = _panels([p[0] for p in panels])
    _map_ranges(layout, snapshot.xs)
    data = []
    for col, (name, z, scale, centred) in enumerate(panels, start=1):
        style = {}
        if centred:  # 0 in the middle of the colours, the same scale on both sides
            top = max(float(np.abs(z).max()), 1e-9)
            style = dict(zmin=-top, zmax=top)
        data.append(_in_panel(_heatmap(snapshot.xs, z, scale, name, **style), col))
    for annotation in layout["annotations"]:
        annotation["font"] = dict(size=11)
    layout.update(title={"text": f"Turned by θ = {degrees}"}, showlegend=False, **_LAYOUT)
    return {"data": data, "layout": layout}
