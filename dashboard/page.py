"""The page script: what each browser session runs (``streamlit run dashboard/app.py`` serves it).

Layout and session state only: the maths lives in ``ehflow_core``, the figures in
``ehflow_core.figures``, the training process in ``dashboard.live``, the live charts (fed by
their own route, not by reruns) in ``dashboard.live_chart``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

import streamlit as st

from dashboard import teaching
from dashboard.drawing import drawing
from dashboard.figures_page import figures_page
from dashboard.lessons import lessons
from dashboard.live import LiveRun
from dashboard.live_chart import live_charts, preload_plotly
from dashboard.settings import (
    BASES,
    BATCHES,
    DATA_TARGETS,
    LIMITS,
    PRESET_FIELDS,
    PRESETS,
    Settings,
    code,
    read_upload,
    safe_name,
)  # fmt: skip
from ehflow_core.reporting import metrics_csv
from ehflow_core.targets import HOLDOUT, DataTarget

log = logging.getLogger("ehflow.dashboard")

LIVE_WAIT = 0.3  # seconds a rerun waits for the trainer to confirm a new κ / learning rate


# -- settings ------------------------------------------------------------------------------------
def _init_state() -> None:
    """Seed the widgets once per session, from the URL (validated) or the defaults.

    Every run draws every settings widget (a control that does not apply is disabled, not left
    out): Streamlit drops the value of a widget a run does not draw, and one drawn again later
    would come back with a stale value."""
    if "settings_initialised" in st.session_state:
        return
    settings, notices = Settings.from_query(st.query_params.to_dict())
    for field in dataclasses.fields(Settings):
        st.session_state[f"w_{field.name}"] = getattr(settings, field.name)
    st.session_state["url_notices"] = notices
    st.session_state["settings_initialised"] = True


def _on_preset_change() -> None:
    settings = _settings_from_widgets().with_preset(st.session_state["w_preset"])
    for name in PRESET_FIELDS:
        st.session_state[f"w_{name}"] = getattr(settings, name)


def _settings_from_widgets() -> Settings:
    return Settings(**{f.name: st.session_state[f"w_{f.name}"] for f in dataclasses.fields(Settings)})


def sidebar() -> Settings:
    """The controls; returns the settings they describe.

    Each widget's value lives in the session (seeded from the URL, changed by presets), and each is
    also given it as its default: a widget the browser draws anew then starts from the session's
    value, never from its minimum (our best explanation, not proven, of a browser test in which a
    key press to the κ slider's minimum changed nothing)."""
    sb = st.sidebar
    now = st.session_state
    sb.header("Experiment")
    sb.selectbox(
        "Preset / target", list(PRESETS), index=list(PRESETS).index(now["w_preset"]),
        format_func=lambda k: PRESETS[k].label, key="w_preset",
        on_change=_on_preset_change, help="The density to learn. Figure 2A and 2B are the paper's experiments.",
    )  # fmt: skip
    sb.caption(PRESETS[st.session_state["w_preset"]].help)
    if PRESETS[st.session_state["w_preset"]].target == "upload":
        _upload(sb)
    users = PRESETS[st.session_state["w_preset"]].target in DATA_TARGETS  # the user's points: always a finite set
    sb.toggle(
        "Finite data",
        now["w_finite"],
        key="w_finite",
        disabled=users,
        help=f"Your points are the data: {1 - HOLDOUT:.0%} train, {HOLDOUT:.0%} are held out as the test set."
        if users
        else "Off: fresh samples every step (infinite data). On: a fixed training set of N points, drawn once "
        "with the seed.",
    )
    lo, hi = LIMITS["n_train"]
    sb.number_input(
        "Training points N", lo, hi, now["w_n_train"], step=50, key="w_n_train",
        disabled=users or not now["w_finite"],
        help="Size of the fixed training set (with finite data).",
    )  # fmt: skip
    sb.selectbox(
        "Base density π", BASES, index=BASES.index(now["w_base"]), key="w_base",
        help="π(q, p) before the flow. N(0, I) is rotation invariant (Lemma 1 holds); the soft-uniform is not.",
    )  # fmt: skip
    sb.header("Symmetry")
    sb.toggle(
        "Rotation generator g = q₁p₂ − q₂p₁",
        now["w_generator_on"],
        key="w_generator_on",
        help="Constrain E_π[{g, H}²] ≤ κ with a Lagrange multiplier λ.",
    )
    generator_on = st.session_state["w_generator_on"]
    sb.toggle(
        "Exact symmetry (K, U of |p|², |q|²)",
        now["w_exact"],
        key="w_exact",
        disabled=not generator_on,
        help="Instead of the soft constraint: K and U are networks of |p|² and |q|², so {g, H} = 0 for every "
        "weight and the learned density is exactly rotation invariant. κ has nothing to do then. Needs a Reset.",
    )
    constrained = _settings_from_widgets().kappa is not None  # the soft constraint in force (Settings' rule)
    lo, hi = LIMITS["log10_kappa"]
    sb.slider(
        "log₁₀ κ (constraint precision)", lo, hi, now["w_log10_kappa"], step=0.25, key="w_log10_kappa",
        disabled=not constrained,
        help="κ is the tolerated mean squared Poisson bracket {g, H}²: smaller κ, stricter symmetry. Applies live.",
    )  # fmt: skip
    sb.toggle(
        "κ sweep (κ/10, κ, 10κ and no constraint side by side)",
        now["w_sweep"],
        key="w_sweep",
        disabled=not constrained,
        help="Trains four models at once and overlays their likelihood curves."
        if constrained
        else "Needs the soft constraint (the rotation generator on, exact symmetry off): "
        "without one every κ would train the same model.",
    )
    sb.header("Flow and optimiser")
    lo, hi = LIMITS["dt"]
    sb.slider(
        "Step size dt",
        lo,
        hi,
        now["w_dt"],
        step=0.05,
        key="w_dt",
        help="Leapfrog step size. Very large values make training diverge.",
    )
    lo, hi = LIMITS["n_steps"]
    sb.slider(
        "Leapfrog steps n", lo, hi, now["w_n_steps"], key="w_n_steps",
        help="Steps of the flow T = T_n ∘ … ∘ T_1 (the paper uses 2).",
    )  # fmt: skip
    lo, hi = LIMITS["log10_lr"]
    sb.slider(
        "log₁₀ learning rate", lo, hi, now["w_log10_lr"], step=0.25, key="w_log10_lr",
        help="Adam's learning rate. Applies live.",
    )  # fmt: skip
    sb.select_slider("Batch size", BATCHES, now["w_batch"], key="w_batch", help="Data points per training step.")
    lo, hi = LIMITS["seed"]
    sb.number_input(
        "Seed", lo, hi, now["w_seed"], key="w_seed",
        help="Same seed, same initialisation and data: Reset reproduces a run.",
    )  # fmt: skip
    sb.header("Compare")
    sb.toggle(
        "A neural spline flow beside it (peer)",
        now["w_peer"],
        key="w_peer",
        help="A standard flow (zuko's NSF) trained on the same data for the same time as the Hamiltonian flow: "
        "its exact test log p joins the curves, its density the density panel. It takes half of the run's "
        "training time. Needs a Reset.",
    )
    return _settings_from_widgets()


def _upload(container) -> None:
    file = container.file_uploader("CSV of 2-D points (x,y per row)", type=["csv", "txt"], key="w_upload")
    if file is None:
        return
    key = (file.name, file.size)
    if st.session_state.get("upload_name") == key:
        return
    rejected = st.session_state.get("upload_rejected")
    if rejected is not None and rejected[0] == key:  # the same rejected file: say so again, parse nothing
        container.error(rejected[1])
        return
    try:
        points = read_upload(file)
    except ValueError as err:
        message = f"Upload rejected, nothing changed: {code(str(err), limit=300)}"
        st.session_state["upload_rejected"] = (key, message)
        container.error(message)
        return
    st.session_state["uploaded"] = DataTarget(
        points, name=safe_name(Path(file.name).stem), description=f"{len(points)} points from {safe_name(file.name)}"
    )
    st.session_state["upload_name"] = key
    container.success(f"Loaded {len(points)} points from {code(file.name)}; press Reset to train on them.")


# -- the run -------------------------------------------------------------------------------------
def _reset(settings: Settings) -> None:
    """A new run from ``settings``; in the session's training process if it still runs."""
    run: LiveRun | None = st.session_state.get("run")
    try:
        target = settings.make_target(_data(settings))
        if run is not None and run.worker_alive:
            run.reset(settings, target)
        else:
            st.session_state["run"] = LiveRun(settings, target, session_alive=_session_alive(), client=_client())
    except ValueError as err:
        st.session_state["run_error"] = f"Could not start the run: {code(str(err), limit=300)}"
        return
    except OSError as err:  # the training process could not be started
        st.session_state["run_error"] = f"Could not start the training process: {code(str(err), limit=300)}"
        return
    st.session_state.pop("run_error", None)


def _data(settings: Settings) -> DataTarget | None:
    """The user's points for ``settings``' preset: the drawing or the upload (None for a built-in target)."""
    target = PRESETS[settings.preset].target
    return st.session_state.get("drawn" if target == "draw" else "uploaded") if target in DATA_TARGETS else None


def _new_drawing(run: LiveRun | None, settings: Settings) -> bool:
    """Whether the drawing preset has a drawing that ``run`` does not learn yet (Train then starts
    a run on it)."""
    drawn = st.session_state.get("drawn")
    return PRESETS[settings.preset].target == "draw" and drawn is not None and (run is None or run.target is not drawn)


def _client() -> str:
    """The browser this session runs in, for the pool's limits per browser: a hash of the token of
    Streamlit's XSRF cookie, which every tab of a browser shares ("" without one: no limit)."""
    raw = st.context.cookies.get("_streamlit_xsrf")
    if not isinstance(raw, str) or not raw:  # no cookie (XSRF protection off), or no browser (AppTest)
        return ""
    try:
        from streamlit.web.server.starlette.starlette_app_utils import decode_xsrf_token_string

        token = decode_xsrf_token_string(raw)[0] or raw.encode()
    except Exception:  # another format: the cookie as it is
        token = raw.encode()
    return hashlib.sha256(token).hexdigest()[:16]  # the token itself is a secret: never kept


def _session_alive() -> Callable[[], bool] | None:
    """Whether this session's browser is still connected, as Streamlit's runtime knows it (None
    where there is no runtime, as under AppTest): the pool frees the run of a closed tab with it."""
    from streamlit.runtime import Runtime
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    if ctx is None or not Runtime.exists():
        return None
    runtime, session_id = Runtime.instance(), ctx.session_id
    return lambda: runtime.is_active_session(session_id)


def _set_training(on: bool, settings: Settings) -> None:
    """Start or pause; idempotent, so a click that Streamlit happens to deliver twice (a fragment
    rerun racing the full rerun) cannot toggle back. Train on a new drawing first starts a run on it."""
    if on and _new_drawing(st.session_state.get("run"), settings):
        _reset(settings)
    run: LiveRun | None = st.session_state.get("run")
    if run is None:
        return
    if on:
        run.play()
    else:
        run.pause()


def _step() -> None:
    run: LiveRun | None = st.session_state.get("run")
    if run is not None:
        run.step(10)


def controls(settings: Settings, sb) -> LiveRun | None:
    """Train, Step and Reset in ``sb`` (the top of the sidebar: on a laptop's screen without
    scrolling), and the run they drive."""
    run: LiveRun | None = st.session_state.get("run")
    if run is None and "run_error" not in st.session_state:
        _reset(settings)
        run = st.session_state.get("run")
    c1, c2, c3 = sb.columns(3)
    training = run is not None and run.state in ("training", "queued")  # Pause also leaves the line
    fresh = _new_drawing(run, settings)
    c1.button(
        "Pause" if training and not fresh else "Train", type="primary", use_container_width=True,
        disabled=run is None and not fresh, on_click=_set_training, args=(not training or fresh, settings),
        help="Start or pause training; the panels update live.",
    )  # fmt: skip
    c2.button(
        "Step", use_container_width=True, disabled=run is None or training, on_click=_step,
        help="Train 10 steps, then pause.",
    )  # fmt: skip
    c3.button(
        "Reset", use_container_width=True, on_click=_reset, args=(settings,),
        help="New model from the current settings (same seed: same start).",
    )  # fmt: skip
    run = st.session_state.get("run")
    if run is None:
        if not fresh:
            st.warning(st.session_state.get("run_error", "No run yet."))
        return None
    if fresh:
        sb.info("A new drawing: **Train** starts a run on it (this discards the current run).")
    elif run.settings.model_key() != settings.model_key():
        # Nothing of the new settings reaches the running run, not even κ or the learning rate:
        # another preset's κ ("none" for Figure 2B) must not change the model on screen before Reset.
        sb.info("Model or data settings changed: press **Reset** to apply them (this discards the current run).")
    else:
        run.set_live(settings.kappa, settings.lr, wait=LIVE_WAIT)
    return run


def _synced() -> None:
    """The run started or stopped training by itself: the rerun that follows redraws the buttons."""


def downloads(run: LiveRun) -> None:
    st.sidebar.header("Export")

    def metrics() -> bytes:
        curves = run.view().curves
        return metrics_csv([r for records in curves.values() for r in records]).encode()

    def checkpoint() -> bytes:
        try:
            return run.checkpoint_bytes()
        except (RuntimeError, OSError) as err:  # the training process ended after the page was drawn
            log.warning("checkpoint download failed: %s", err)
            return f"No checkpoint: {err}. Press Reset to start a new run.".encode()

    alive = run.worker_alive
    name, holds = "checkpoint.pt", "The model, its optimiser state and its configuration."
    if run.settings.sweeping:  # the download holds one member of the sweep: say which
        name = f"checkpoint_{safe_name(run.primary_label.replace('κ=', 'kappa_'))}.pt"
        holds = f"The sweep's {run.primary_label} member (the slider's κ), with its optimiser state."
    st.sidebar.download_button("Metrics (CSV)", metrics, "metrics.csv", "text/csv", on_click="ignore")
    st.sidebar.download_button(
        "Model (checkpoint)", checkpoint, name, on_click="ignore", disabled=not alive,
        help=holds if alive else "The training process has ended: press Reset to start a new run.",
    )  # fmt: skip
    st.sidebar.download_button(
        "Figures (HTML)", functools.partial(figures_page, run), "figures.html", "text/html", on_click="ignore"
    )


def main() -> None:
    st.set_page_config(page_title="ehflow — equivariant Hamiltonian flows", layout="wide")
    preload_plotly()
    _init_state()
    st.title("Equivariant Hamiltonian flows, live")
    st.caption(
        "A base density on phase space (q, p) is pushed through leapfrog steps of a learned H = K(p) + U(q); "
        "a symmetry generator g enters through the constraint E[{g, H}²] ≤ κ. Press **Train** and watch."
    )
    for notice in st.session_state.get("url_notices", []):
        st.warning(notice)
    top = st.sidebar.container()  # the buttons, drawn once the settings below are known
    settings = sidebar()
    st.query_params.from_dict(settings.to_query())
    if PRESETS[settings.preset].target == "draw":
        drawing()
    run = controls(settings, top)
    if run is None:
        return
    run.beat()  # the live panel's requests beat too; this one covers a page without them (tests)
    live_charts(run, on_sync=_synced)
    lessons(run)
    downloads(run)
    teaching.explain()


try:
    main()
except Exception as err:  # no traceback ever reaches the page
    log.exception("dashboard error")
    shown = code(str(err), limit=300)
    st.error(f"Something went wrong: {shown}. The page is still usable; press Reset if the run looks stuck.")
