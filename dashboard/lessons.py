"""The teaching views under the live panel: step one point through the leapfrog, carry a patch of
phase space through the flow (Lemma 1's unit Jacobian), turn the density by θ.

They run in a fragment, so their buttons rerun only this part of the page, and they work on a
frozen float64 copy of the run's model, taken from its checkpoint when the run starts or when
asked ("Use the latest model"): training goes on meanwhile, and the numbers are exact. The
maths is :mod:`ehflow_core.walkthrough`, :mod:`ehflow_core.liouville` and
:func:`ehflow_core.snapshot.turn`; the figures :mod:`ehflow_core.lesson_figures`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import streamlit as st

from dashboard.live import REPLY_TIMEOUT
from dashboard.settings import DIRECTIONS, LIMITS, code, url_value

if TYPE_CHECKING:
    from dashboard.live import LiveRun
    from ehflow_core.flow import HamiltonianFlow

log = logging.getLogger("ehflow.dashboard")

PLOT_CONFIG = {"displayModeBar": False}
T = TypeVar("T")
TAKE_WAIT = 10.0  # seconds a page run waits at most for the model before it draws without it


@dataclass(frozen=True)
class Frozen:
    """The model the views use: the run (its token and generation) and step it was taken at."""

    key: tuple[str, int]
    step: int
    flow: HamiltonianFlow
    xs: np.ndarray  # (n,) the maps' grid
    potentials: np.ndarray  # (H, n, n)
    kinetics: np.ndarray  # (H, n, n)


def _freeze(run: LiveRun, data: bytes) -> Frozen:
    """A float64 copy of the model in the checkpoint ``data``, and its energy maps."""
    from ehflow_core.checkpoint import load_checkpoint, read_checkpoint
    from ehflow_core.walkthrough import as_float64, energy_maps

    flow = as_float64(load_checkpoint(data))
    xs, potentials, kinetics = energy_maps(flow)
    return Frozen((run.token, run.generation), int(read_checkpoint(data)["step"]), flow, xs, potentials, kinetics)


def _frozen(run: LiveRun) -> tuple[Frozen | None, str | None, bool]:
    """The session's frozen model, taken again after a Reset (a new model) or when asked; with
    what the views should say of it, and whether a request is still on its way.

    The page never waits long on the training process (a page run that waits holds every click of
    its session behind it): the checkpoint is asked for with a ticket and waited for at most
    ``TAKE_WAIT`` seconds (it usually comes in well under one); if it is not there yet, the views
    say so and offer a button, and any later run of the views takes it (a request older than
    ``REPLY_TIMEOUT`` is asked again). The model in use, if any, stays meanwhile. Nothing is drawn
    here, so the views' widgets keep their places in the page. Nothing here starts a run of the
    page (``st.rerun``): with a fragment that did, the browser test of Pause failed in 2 of 4 CI
    runs (the live panel left a picture behind; suspected, not proven, to be the cause).
    """
    key = (run.token, run.generation)
    frozen: Frozen | None = st.session_state.get("lesson_model")
    current = frozen if frozen is not None and frozen.key == key else None
    if current is not None and not st.session_state.get("lesson_refresh"):
        return current, None, False
    asked = st.session_state.get("lesson_asked")  # (key, ticket, when)
    if asked is None or asked[0] != key or time.monotonic() - asked[2] > REPLY_TIMEOUT:  # lost: ask again
        _forget_asked(run)
        asked = st.session_state["lesson_asked"] = (key, run.ask_checkpoint(), time.monotonic())
    try:
        data = run.checkpoint_reply(asked[1], TAKE_WAIT)
        if data is None:
            return current, "The training process is busy: the model is on its way.", True
        del st.session_state["lesson_asked"]
        frozen = st.session_state["lesson_model"] = _freeze(run, data)
    except (RuntimeError, OSError, ValueError) as err:  # it failed, the process ended, or it cannot be read
        st.session_state.pop("lesson_asked", None)
        log.warning("lesson model: %s", err)
        why = f"The model could not be taken from the training process ({code(str(err), 200)}): press Reset."
        return None, why, False
    st.session_state.pop("lesson_refresh", None)
    return frozen, None, False


def _forget_asked(run: LiveRun) -> None:
    """Forget the request under way, and its answer if it came (no one will take it)."""
    asked = st.session_state.pop("lesson_asked", None)
    if asked is not None:
        run.forget_checkpoint(asked[1])


def _refresh(run: LiveRun) -> None:
    st.session_state["lesson_refresh"] = True
    _forget_asked(run)


def _restart_walk() -> None:
    st.session_state.pop("lesson_walk", None)


def _new_point(run: LiveRun) -> None:
    """A point for the walk: the data's (a target sample) for the likelihood, the base's for sampling."""
    import torch

    seed = st.session_state.get("lesson_seed", 0) + 1
    st.session_state["lesson_seed"] = seed
    rng = torch.Generator().manual_seed(seed)
    if st.session_state["w_direction"] == "inverse":
        q = run.target.sample(1, rng, dtype=torch.float64)[0, :2]
    else:
        q = torch.randn(2, generator=rng, dtype=torch.float64)
        frozen: Frozen | None = st.session_state.get("lesson_model")
        if frozen is not None:  # the run's own base (normal or soft-uniform)
            q = frozen.flow.sample_base(1, rng)[0][0]
    st.session_state["w_lesson_q1"], st.session_state["w_lesson_q2"] = round(float(q[0]), 2), round(float(q[1]), 2)
    st.session_state["lesson_point_for"] = st.session_state["w_direction"]


def _move(by: int) -> None:
    """Back or Next: the walk's position moves (a walk changed since starts again: see _step_through)."""
    walk, index = st.session_state.get("lesson_walk", (None, 0))
    st.session_state["lesson_walk"] = (walk, max(0, index + by))


def _url(name: str) -> None:
    """A view setting changed: the URL follows (a fragment's rerun does not rewrite it)."""
    st.query_params[name] = url_value(st.session_state[f"w_{name}"])


# The views' widgets: their values are kept while the views are closed (Streamlit drops the value
# of a widget a run does not draw), so the URL and the views keep them.
LESSON_WIDGETS = ("w_direction", "w_lesson_radius", "w_theta", "w_lesson_q1", "w_lesson_q2")


@st.fragment
def lessons(run: LiveRun) -> None:
    """The teaching views, in tabs, for ``run``'s model, in a section that is closed until opened.

    Closed, nothing of them runs or is sent: no model is taken from the training process, no
    figure is drawn, and the browser never loads the plotly.js that Streamlit's charts need (4.7 MB
    here): each page load, and each rerun of a slider or button, costs the browser and the server
    less. Opening or closing the section reruns this fragment alone."""
    state = st.session_state
    section = st.expander(
        "**Take the flow apart**: step through the leapfrog, the volume it keeps, the density turned by θ",
        key="lessons_open", on_change="rerun",
    )  # fmt: skip
    if not section.open:
        for key in LESSON_WIDGETS:
            if key in state:
                state[key] = state[key]
        return
    with section:
        _views(run)


def _views(run: LiveRun) -> None:
    state = st.session_state
    if "w_lesson_q1" not in state or state.get("lesson_point_for") != state["w_direction"]:
        _new_point(run)  # the first point, or one for the direction just chosen
    frozen, note, pending = _frozen(run)  # no model: the views say why, and still draw their controls
    left, right = st.columns([4, 1])
    with left:  # one line, whatever it says, so that the widgets below keep their places
        if frozen is not None and note is None:
            note = (
                f"These views use the model as trained at step {frozen.step:,} (a float64 copy: exact numbers); "
                "training goes on meanwhile."
            )
        st.caption(note or "")
    if pending:  # a fragment's button: this part of the page runs again, and takes the model if it is here
        right.button("Show the model", use_container_width=True)
    else:
        right.button("Use the latest model", on_click=_refresh, args=(run,), use_container_width=True)
    stepping, volume, turning = st.tabs(["Step through the leapfrog", "Volume kept (Liouville)", "Turn by θ"])
    with stepping:
        walked = _step_through(run, frozen)
    with volume:
        _volume(frozen, walked)
    with turning:
        _turn(run)


def _step_through(run: LiveRun, frozen: Frozen | None):
    import torch

    from ehflow_core.lesson_figures import walkthrough_spec
    from ehflow_core.walkthrough import describe, walk

    st.markdown(
        "One point, one part of one leapfrog step at a time. **Sampling** starts from the base π and runs the "
        "flow forward; **likelihood** starts from a data point, draws its momentum from the encoder h(p | q) "
        "and runs the flow backwards, to where π scores it."
    )
    c1, c2, c3, c4 = st.columns([2, 1, 1, 1.2])
    # Each widget is given its current value as its default too: one drawn anew (its place in the page
    # changed) then starts from it, and never sends back a value of its own.
    state = st.session_state
    c1.radio(
        "Direction", DIRECTIONS, index=DIRECTIONS.index(state["w_direction"]), key="w_direction", horizontal=True,
        on_change=_url, args=("direction",),
        format_func=lambda d: "Sampling: base → data" if d == "forward" else "Likelihood: data → base",
    )  # fmt: skip
    c2.number_input("q₁", -6.0, 6.0, value=state["w_lesson_q1"], step=0.1, key="w_lesson_q1")
    c3.number_input("q₂", -6.0, 6.0, value=state["w_lesson_q2"], step=0.1, key="w_lesson_q2")
    c4.button("Pick a point for me", on_click=_new_point, args=(run,), use_container_width=True)
    if frozen is None:
        return None
    q = torch.tensor([st.session_state["w_lesson_q1"], st.session_state["w_lesson_q2"]], dtype=torch.float64)
    seed, direction = st.session_state.get("lesson_seed", 0), st.session_state["w_direction"]
    # The position belongs to one walk (model, direction, point, draw): any other starts at its beginning.
    identity = (frozen.key, frozen.step, direction, *q.tolist(), seed)
    result = _kept("walk", identity, lambda: walk(frozen.flow, direction, q, torch.Generator().manual_seed(seed)))
    walked, index = st.session_state.get("lesson_walk", (identity, 0))
    index = min(index, result.n_states - 1) if walked in (identity, None) else 0
    st.session_state["lesson_walk"] = (identity, index)
    b1, b2, b3, b4 = st.columns([1, 1.4, 1, 3])
    b1.button("◀ Back", on_click=_move, args=(-1,), disabled=index == 0, use_container_width=True)
    b2.button(
        "Next half-step ▶", on_click=_move, args=(1,), disabled=index == result.n_states - 1, type="primary",
        use_container_width=True,
    )  # fmt: skip
    b3.button("Restart", on_click=_restart_walk, disabled=index == 0, use_container_width=True)
    b4.markdown(f"State {index} of {result.n_states - 1}")
    st.markdown(describe(result, index))
    step = max(result.step_of(index), 0)
    m1, m2, m3 = st.columns(3)
    m1.metric("H at this step's start", f"{result.energy_before[step]:.4f}")
    m2.metric("H now (same H)", f"{result.energies[index]:.4f}")
    m3.metric("p now", f"({result.p[index, 0]:.2f}, {result.p[index, 1]:.2f})")
    figure = _kept(
        "walk_figure", (identity, index),
        lambda: _figure(walkthrough_spec(result, index, frozen.xs, frozen.potentials, frozen.kinetics), 420),
    )  # fmt: skip
    st.plotly_chart(figure, config=PLOT_CONFIG, key="lesson_walk_chart")
    return identity, result


def _volume(frozen: Frozen | None, walked: tuple[tuple, Any] | None) -> None:
    """The patch around the step-through's first state; ``walked``: that walk's identity and result."""
    import torch

    from ehflow_core.lesson_figures import patch_spec
    from ehflow_core.liouville import FRICTION, carry_patch

    st.markdown(
        "A small disc of states around the step-through's starting state (q, p), carried whole by the flow. "
        "Every part of a leapfrog step is a shear, so the map keeps phase-space volume (det ∂T/∂s = 1, "
        "Lemma 1) and more: the symplectic area, the sum of the patch's areas in the (q₁, p₁) and (q₂, p₂) "
        "planes. The planes trade area, the sum stays. That is why this flow's density needs no "
        "log-determinant. The contrast map runs the same steps but keeps only "
        f"{1 - FRICTION:.0%} of the momentum after each (friction): its areas shrink."
    )
    lo, hi = LIMITS["lesson_radius"]
    radius = st.session_state["w_lesson_radius"]  # its default too, as in _step_through
    st.slider("Patch radius", lo, hi, radius, step=0.05, key="w_lesson_radius", on_change=_url, args=("lesson_radius",))
    if frozen is None or walked is None:
        return
    identity, walk = walked

    def patch_figure():
        patch = carry_patch(frozen.flow, torch.as_tensor(walk.q[0]), torch.as_tensor(walk.p[0]), radius)
        return patch, _figure(patch_spec(patch), 440)

    patch, figure = _kept("patch", (identity, radius), patch_figure)
    a = patch.areas
    c1, c2, c3 = st.columns(3)
    c1.metric("Area before", f"{a['start']:.6f}")
    c2.metric("Area after the flow", f"{a['leapfrog']:.6f}", f"{a['leapfrog'] - a['start']:+.1e}", delta_color="off")
    c3.metric("Area after the damped map", f"{a['damped']:.6f}", f"{a['damped'] - a['start']:+.1e}", delta_color="off")
    d1, d2, _ = st.columns(3)
    d1.metric("det ∂T/∂s of the flow", f"{patch.determinants['leapfrog']:.8f}")
    d2.metric("det of the damped map", f"{patch.determinants['damped']:.6f}")
    st.plotly_chart(figure, config=PLOT_CONFIG, key="lesson_patch_chart")


def _turn(run: LiveRun) -> None:
    from ehflow_core.lesson_figures import turned_spec
    from ehflow_core.snapshot import turn

    st.markdown(
        "Turn the densities by θ and compare each with itself. A density invariant under rotation (the "
        "ring, with the symmetry) looks the same turned, so its difference is noise (the KDE's own); "
        "the 8 Gaussians match themselves only every 45°. The live panel's *Rotation invariant?* readout "
        "measures the learned density's spread over turns through log p̂ itself."
    )
    lo, hi = LIMITS["theta"]
    theta = st.session_state["w_theta"]  # its default too, as in _step_through
    st.slider("Turn by θ (degrees)", lo, hi, theta, step=5.0, key="w_theta", on_change=_url, args=("theta",))
    view = run.view()
    snapshot = view.snapshot
    if snapshot is None:
        st.info("No picture yet: the run is still starting.")
        return

    def turned_figure():
        turned = turn(snapshot, math.radians(theta))
        return turned, _figure(turned_spec(snapshot, turned), 330)

    turned, figure = _kept("turn", (view.version, theta), turned_figure)
    c1, c2, _ = st.columns(3)
    c1.metric("Target: ∫|turned − as is|", f"{turned.target_l1:.3f}")
    c2.metric("Learned: ∫|turned − as is|", f"{turned.model_l1:.3f}")
    st.plotly_chart(figure, config=PLOT_CONFIG, key="lesson_turn_chart")


def _kept(name: str, key: tuple, compute: Callable[[], T]) -> T:
    """``compute()``, kept in the session under ``name`` until ``key`` changes: a page run that
    changes nothing here (a slider of the sidebar, a training page's rerun) recomputes nothing."""
    kept = st.session_state.get(f"lesson_kept_{name}")
    if kept is None or kept[0] != key:
        kept = st.session_state[f"lesson_kept_{name}"] = (key, compute())
    return kept[1]


def _figure(spec: dict, height: int):
    from ehflow_core.figures import as_figure

    spec["layout"]["height"] = height
    return as_figure(spec)
