"""The live panel: one component that shows the run's readouts and charts and keeps them current.

Why not ``st.plotly_chart`` in a fragment that reruns: ``st.plotly_chart`` re-creates a chart
whenever its figure changes, so a chart refreshed several times a second is blank much of the
time, and every fragment rerun costs the browser Streamlit's own rendering whether or not a new
snapshot came.

So the live data leaves the script. The page mounts one component (Streamlit components v2, no
iframe; its code is ``live_panel.js`` and ``live_panel.css``) with its run's token. In the browser
it keeps the readouts and one ``<div>`` per chart, and long-polls
``/api/live/<token>?since=<version>`` (:func:`feed`, a route of the server's ``st.App``): the
answer comes as soon as the worker sends a snapshot newer than ``since`` or the run's state, κ or
learning rate change, else after ``FEED_WAIT`` seconds with the readouts alone. Each new figure is
drawn with ``Plotly.react``; when it differs from the drawn one only in its images (a map panel
built with ``raster=True``) the chart swaps the images alone (``Plotly.relayout``), and an
unchanged figure is not redrawn. Every request is also the page's heartbeat for its run and asks
for the next snapshot. plotly.js (its "basic" bundle, vendored in ``dashboard/vendor/``) is served
by the server's own route (nothing is written into the source tree), so the page works offline.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import hashlib
import importlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import streamlit as st
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from dashboard import live, pool
from dashboard.run_state import View

if TYPE_CHECKING:
    from dashboard.settings import Settings
    from ehflow_core.figures import Spec
    from ehflow_core.targets import Target

# plotly.js's "basic" bundle (scatter, bar, pie, and the layout's images and shapes: all the live
# panel draws), a quarter of the size of the full bundle plotly.py ships, so the browser has less
# to parse before the first chart (docs/dashboard.md). MIT licensed, vendored with its licence.
PLOTLY_JS = Path(__file__).with_name("vendor") / "plotly-basic.min.js"
PLOTLY_SRC = "api/plotly.min.js"  # the route that serves it, relative to the page
FEED = "api/live"
POOL = "api/pool"
FEED_WAIT = 0.5  # seconds a request waits for a new snapshot (under the worker's heartbeat timeout)
# Never cached; not gzipped either (Streamlit's middleware would compress every answer, mostly
# base64 PNG that does not shrink, on the event loop).
_NO_STORE = {"Cache-Control": "no-store", "Content-Encoding": "identity"}
_background: set[asyncio.Task] = set()  # prebuilds; the event loop keeps only weak references
# The panels, row by row: (key, height in pixels); a row of one spans the page.
# The density and the curves come first, side by side: a laptop's screen (1366×768) shows both.
LAYOUT = [[("density", 340), ("curves", 340)], [("energies", 360), ("constraint", 360)], [("trajectories", 420)]]
# A κ sweep draws every run's density and potential side by side: those rows span the page.
SWEEP_LAYOUT = [
    [("density", 340)],
    [("curves", 340), ("constraint", 360)],
    [("energies", 360)],
    [("trajectories", 420)],
]
HEIGHTS = {key: height for row in LAYOUT for key, height in row}
EXTENDABLE = ("curves", "constraint")  # line charts whose points only grow (between thinnings)
REMEMBERED = 4  # versions of each kept per run, for the page to extend from
NO_CONSTRAINT = "No generator: the constraint panel appears when the rotation generator is on."
EXACT_SYMMETRY = (
    "Exact symmetry: K and U are functions of |p|² and |q|², so {g, H} = 0 for every weight and there is "
    "nothing to constrain."
)
CURVES_TITLE = "Log-likelihood bounds: test, training (dashed)"
METRICS = [
    ("state", "State"), ("step", "Step"), ("steps_per_s", "Steps / s"), ("test_ll", "Test log-likelihood L_K"),
    ("gap", "Gap to the target's entropy"),
]  # fmt: skip
SYMMETRY_METRICS = [
    ("invariance_spread", "Invariance spread of log p̂ (nats)"),
    ("invariance_noise", "…its Monte-Carlo noise floor"),
    ("invariant", "Rotation invariant?"),
    ("equivariance_error", "Equivariance error ‖T(Rs) − R T(s)‖"),
]
WITHIN_NOISE = 1.25  # a spread up to this many times its noise floor reads "invariant within noise"


_component = st.components.v2.component(
    "ehflow_live_charts",
    js=(Path(__file__).parent / "live_panel.js").read_text(encoding="utf-8"),
    css=(Path(__file__).parent / "live_panel.css").read_text(encoding="utf-8"),
    isolate_styles=False,
)


# -- the page's side -----------------------------------------------------------------------------
def preload_plotly() -> None:
    """Start loading plotly.js (1.2 MB) in the browser now, before the first chart needs it."""
    _component(data={"preload": True, "src": PLOTLY_SRC}, key="plotly_preload", height=0)


def layout_for(settings: Settings) -> list[list[tuple[str, int]]]:
    """The panels' rows for a run of ``settings`` (a sweep's maps span the page)."""
    return SWEEP_LAYOUT if settings.sweeping else LAYOUT


def live_charts(run: live.LiveRun, on_sync: Callable[[], None]) -> None:
    """The run's readouts and charts, kept current by the browser from ``/api/live/<token>``.

    ``on_sync``: called (and the page rerun) when the run stops or starts training without the
    page asking (it diverged, its process died), so the page's Train/Pause button follows.
    """
    now = status(run)
    data = {
        "token": run.token, "feed": FEED, "src": PLOTLY_SRC, "layout": layout_for(run.settings),
        "metrics": METRICS, "symmetry_metrics": SYMMETRY_METRICS, "status": now,
        "stamp": now["stamp"], "training": now["training"],
    }  # fmt: skip
    # Sent as one JSON string: Streamlit checks each value of a dict for a dataframe, which
    # imports pandas (seconds, on the first page's critical path) for any list among them.
    _component(data={"json": json.dumps(data)}, key="live_charts", on_sync_change=on_sync)


# -- the server's side ---------------------------------------------------------------------------
def warm_imports() -> None:
    """Import what the page and the feed need (torch, plotly, the figures) ahead of the first
    page, and gzip plotly.js for it."""
    plotly_js_gzip()
    for name in ("ehflow_core.figures", "ehflow_core.reporting", "dashboard.settings", "dashboard.teaching"):
        importlib.import_module(name)


def routes() -> list[Route]:
    """The server's extra routes: each session's chart feed, plotly.js, and the pool's load."""
    return [
        Route(f"/{FEED}/{{token}}", feed, methods=["GET"]),
        Route(f"/{PLOTLY_SRC}", plotly_js, methods=["GET"]),
        Route(f"/{POOL}", pool_status, methods=["GET"]),
    ]


async def pool_status(request: Request) -> Response:
    """``GET /api/pool``: the training pool's load: processes, runs hosted, training, waiting, the limit."""
    stats = pool.pool().stats()
    stats["workers"] = len(stats["workers"])  # counts only: no process ids to the world
    return JSONResponse(stats, headers=_NO_STORE)


async def plotly_js(request: Request) -> Response:
    """``GET /api/plotly.min.js``: the vendored plotly.js basic bundle (cached by the browser for a
    day), gzipped once per server (:func:`plotly_js_gzip`) for a browser that accepts it."""
    headers = {"Cache-Control": "public, max-age=86400", "Vary": "Accept-Encoding"}
    if "gzip" in request.headers.get("accept-encoding", ""):
        body = await run_in_threadpool(plotly_js_gzip)
        return Response(body, media_type="text/javascript", headers={**headers, "Content-Encoding": "gzip"})
    return FileResponse(PLOTLY_JS, media_type="text/javascript", headers={**headers, "Content-Encoding": "identity"})


@functools.cache
def plotly_js_gzip() -> bytes:
    """plotly.js, gzipped (400 kB). Made once: left to Streamlit's gzip middleware, every tab's
    request compressed 1.2 MB on the event loop (~0.4 s of it, blocking every other answer)."""
    return gzip.compress(PLOTLY_JS.read_bytes(), compresslevel=9)


async def feed(request: Request) -> Response:
    """``GET /api/live/<token>?since=<version>[&want=0][&have=<hash>,…]``: the run's readouts, and
    its figures once it has a snapshot newer than ``since``.

    Answers ``{"version": v, "status": {...}, "charts": {key: chart}}`` as soon as the run's
    snapshot version passes ``since``, or its state, κ or learning rate change; else
    ``{"version", "status"}`` after ``FEED_WAIT`` seconds. A chart is ``{"figure", "frame",
    "hash"}``, or ``{"note"}``; ``have`` names the figures the page has drawn (by hash), and a
    chart among them is sent as ``{"hash"}`` alone, and a curve chart that grew from one of them
    as its new points (``{"hash", "base", "extend"}``, :func:`extension`). 404 for a token that
    names no run (the session ended), 400 for a bad ``since``.
    """
    run = live.find_run(request.path_params["token"])
    if run is None or not run.session_alive:  # a closed tab's run: nothing answers, nothing restarts
        return JSONResponse({"error": "no live run with this token (the session ended: reload the page)"}, 404)
    try:
        since = int(request.query_params.get("since", "-1"))
    except ValueError:
        got = request.query_params.get("since", "")
        shown = got if len(got) <= 20 else got[:20] + "…"
        return JSONResponse({"error": f"since must be an integer snapshot version, got {shown!r}"}, 400)
    # A hint, never an error: hashes it does not know only cost the page whole figures.
    have = set(request.query_params.get("have", "").split(",")[: len(HEIGHTS)])
    # Every request asks for the next snapshot (but a hidden tab's, ``want=0``): while the browser
    # draws this answer, the worker makes the next one and the server builds its figures (prebuild).
    run.beat(want_snapshot=request.query_params.get("want", "1") != "0")
    await _wait_for_newer(run, since, run.status_key)
    charts_ = await run_in_threadpool(charts_answer, run, have) if run.version > since else None
    body = {"version": run.version if charts_ is None else charts_[0], "status": status(run)}
    text = json.dumps(body, separators=(",", ":"))
    if charts_ is not None:  # spliced in as text: each figure is serialised once per version
        text = f'{text[:-1]},"charts":{charts_[1]}}}'
        _background.add(task := asyncio.create_task(prebuild(run, charts_[0])))
        task.add_done_callback(_background.discard)
    return Response(text, media_type="application/json", headers=_NO_STORE)


async def prebuild(run: live.LiveRun, sent: int) -> None:
    """Build the figures of the snapshot after ``sent`` as soon as it arrives, so the page's next
    request finds them ready instead of waiting for them (after FEED_WAIT, leave it to that request)."""
    await _wait_for_newer(run, sent)
    if run.version > sent:
        await run_in_threadpool(figures_for, run)


async def _wait_for_newer(run: live.LiveRun, since: int, status_key: tuple | None = None) -> None:
    """Return once the run has a snapshot newer than ``since``, or its ``status_key`` (when given)
    changed, or after ``FEED_WAIT`` seconds."""

    def newer() -> bool:
        return run.version > since or (status_key is not None and run.status_key != status_key)

    await run.wait_for(newer, FEED_WAIT)


def status(run: live.LiveRun) -> dict:
    """The readouts, formatted: state, step, steps/s, test log-likelihood, κ and learning rate in
    use, the run's message, the symmetry readout; ``stamp`` orders answers in the browser."""
    view = run.view()
    records = view.curves.get(run.primary_label, [])
    last = next((r for r in reversed(records) if r.test_log_likelihood is not None), None)
    k = run.train_config.eval_samples
    entropy = target_entropy(run.target)
    values = {
        "state": view.state,
        "step": f"{view.step:,}",
        "steps_per_s": f"{view.steps_per_s:.0f}",
        "test_ll": "—" if last is None else f"{last.test_log_likelihood:.3f}",
        "gap": "—" if run.target.has_log_prob else "— (data: no exact density)",
    }
    if last is not None and last.test_log_likelihood is not None and entropy is not None:
        values["gap"] = f"{-last.test_log_likelihood - entropy:.3f} nats"
    if view.symmetry:
        spread, noise = view.symmetry["invariance_spread"], view.symmetry["invariance_noise"]
        values["invariance_spread"] = f"{spread:.3f}"
        values["invariance_noise"] = f"{noise:.3f}"
        ratio = spread / noise if noise > 0 else float("inf")
        values["invariant"] = "yes, within noise" if ratio <= WITHIN_NOISE else f"no: {ratio:.1f}× the noise floor"
        values["equivariance_error"] = f"{view.symmetry['equivariance_error']:.4f}"
    sentences = []
    if view.lr is not None:
        if view.kappa is not None:
            kappa = f"{view.kappa:.3g}"
        elif run.settings.exact_symmetry:
            kappa = "none (exact symmetry: nothing to constrain)"
        else:
            kappa = "none (no constraint)"
        sentences.append(f"In use by the trainer now: κ = {kappa}, learning rate = {view.lr:.3g}")
    if last is not None:
        perfect = "; a perfect model's gap to the target's entropy is 0" if entropy is not None else ""
        sentences.append(f"Test L_{k} measured at step {last.step:,}{perfect}")
    if run.settings.sweeping:
        sentences.append(
            f"A κ sweep: the maps show every run; the readouts, the constraint and the trajectories are the "
            f"{run.primary_label} run's (the slider's κ)"
        )
    if run.settings.peer:
        sentences.append(
            "A neural spline flow (the peer) trains beside it on the same points, for as long as the flow: "
            "the steps/s is the flow's, about half what it makes alone"
        )
    if view.sharing:
        others = f"{view.sharing} other run{'s' if view.sharing > 1 else ''}"
        sentences.append(f"This run shares its training process with {others}: its steps/s is its share")
    if view.host:
        sentences.append(f"It trains on the Ray cluster, in a {view.host}")
    caption = "".join(f"{sentence}. " for sentence in sentences).strip()
    return {
        "stamp": time.monotonic(),
        "state": view.state,
        "training": view.state == "training",
        "values": values,
        "caption": caption,
        "message": view.message,
    }


_entropies: dict[str, float | None] = {}  # target name -> its entropy (None while it is estimated)


def target_entropy(target: Target) -> float | None:
    """The target's entropy in nats (the floor of the test NLL); None where it has no exact
    density (uploaded data) or while it is being estimated: once per target name, on a thread of
    its own (Monte Carlo with 20,000 points: standard error ~0.005 nats; two moons' density takes
    seconds), so no answer of the feed waits for it."""
    if not target.has_log_prob:
        return None
    if target.name not in _entropies:
        _entropies[target.name] = None

        def estimate() -> None:
            _entropies[target.name] = target.entropy(n_points=20_000)[0]

        threading.Thread(target=estimate, name="ehflow-entropy", daemon=True).start()
    return _entropies[target.name]


def charts_answer(run: live.LiveRun, have: set[str]) -> tuple[int, str]:
    """The latest snapshot's version and its charts as JSON for a page that has ``have`` drawn."""
    figures = figures_for(run)
    return figures.version, figures.answer(have)


def figures_for(run: live.LiveRun) -> Figures:
    """The run's latest snapshot's figures, built once per version (kept on the run)."""
    with run.feed_lock:  # a request and a prebuild may ask at once: build once
        view = run.view()
        cached: Figures | None = run.feed_cache
        if cached is None or cached.version != view.version:
            sent = {} if cached is None else cached.sent
            cached = run.feed_cache = Figures(view.version, sent=sent)
            if view.snapshot is not None:
                note = EXACT_SYMMETRY if run.settings.exact_symmetry else NO_CONSTRAINT
                cached.add(charts(view, run.primary_label, run.settings), note)
        return cached


def panel_specs(view: View, primary: str, settings: Settings, raster: bool) -> dict[str, Spec]:
    """Each panel's figure spec for ``view`` at its panel's height (the constraint panel, of the
    ``primary`` run, only if ``settings`` has a constraint; the curves named for the estimators
    of its training configuration); ``raster``: the maps as pictures (the live panel), else as
    plotly traces with values on hover (the download)."""
    from dashboard.settings import PEER_LABEL
    from ehflow_core.figures import constraint_spec, curves_spec, density_spec, energy_spec, trajectory_spec

    snap = view.snapshot
    if snap is None:
        raise ValueError("charts need a snapshot: the run has not drawn its model yet")
    curves = view.curves
    if settings.peer and not settings.sweeping:  # the flow's curve beside the peer's: named as such
        curves = {("Hamiltonian flow" if k == primary else k): v for k, v in curves.items()}
    specs = {
        "density": density_spec(snap, raster=raster),
        "energies": energy_spec(snap, raster=raster),
        "trajectories": trajectory_spec(snap, raster=raster),
        "curves": curves_spec(curves, title=CURVES_TITLE, exact=(PEER_LABEL,), **settings.train_config().estimators),
    }
    if settings.kappa is not None:
        specs["constraint"] = constraint_spec(view.curves[primary])
    for key, spec in specs.items():
        spec["layout"] = {**spec["layout"], "height": HEIGHTS[key]}
    return specs


def charts(view: View, primary: str, settings: Settings) -> dict[str, Spec | None]:
    """Each panel's figure spec for ``view`` as the live panel draws it (``None`` for the
    constraint panel, a note, unless ``settings`` has a constraint; of the ``primary`` run)."""
    specs: dict[str, Spec | None] = {"constraint": None}
    for key, spec in panel_specs(view, primary, settings, raster=True).items():
        spec["layout"]["autosize"] = False
        specs[key] = spec
    return specs


@dataclass
class Figures:
    """One snapshot's figures as the feed sends them: ``texts``, each chart's JSON (``{"figure",
    "frame", "hash"}``, or ``{"note"}``), and ``hashes``; ``sent``: the curve charts
    (``EXTENDABLE``) of the last ``REMEMBERED`` versions by hash, ``(key, spec)``, to send the
    next one as its new points."""

    version: int
    texts: dict[str, str] = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)
    sent: dict[str, tuple[str, Spec]] = field(default_factory=dict)

    def add(self, specs: dict[str, Spec | None], note: str = NO_CONSTRAINT) -> None:
        """Add a version's charts; ``note``: what a panel without a figure (None) says instead."""
        from ehflow_core.figures import spec_json

        sent = dict(self.sent)
        for key, spec in specs.items():
            if spec is None:
                self.texts[key] = json.dumps({"note": note})
                continue
            text = spec_json(spec)
            digest = self.hashes[key] = _digest(text)
            self.texts[key] = f'{{"figure":{text},"frame":"{frame(spec)}","hash":"{digest}"}}'
            if key in EXTENDABLE:
                sent.pop(digest, None)
                sent[digest] = (key, spec)
        self.sent = dict(list(sent.items())[-REMEMBERED * len(EXTENDABLE) :])

    def answer(self, have: set[str]) -> str:
        """The charts as JSON for a page that has drawn the figures ``have`` (hashes): a chart it
        has as ``{"hash"}``, a curve chart that grew from one it has as its new points, the rest whole."""
        from ehflow_core.figures import spec_json

        parts = []
        for key, text in self.texts.items():
            digest = self.hashes.get(key)
            if digest in have:
                text = json.dumps({"hash": digest})
            elif key in EXTENDABLE and digest is not None:
                base = next((h for h in have if self.sent.get(h, ("",))[0] == key), None)
                grown = None if base is None else extension(self.sent[base][1], self.sent[digest][1])
                if grown is not None:
                    text = f'{{"hash":"{digest}","base":"{base}","extend":{spec_json(grown)}}}'
            parts.append(f"{json.dumps(key)}:{text}")
        return "{" + ",".join(parts) + "}"


def extension(old: Spec, new: Spec) -> Spec | None:
    """``new`` as ``old`` and what changed: per trace, ``keep``, how many of ``old``'s points
    ``new`` starts with, and ``new``'s trace with only the points after them; ``new``'s layout;
    ``append``: whether it is ``old`` plus points alone (the same layout and traces but for their
    ends: ``Plotly.extendTraces``). None when the traces are not lists of points or differ in number.

    A curve's history only grows between thinnings (``run_state.thin``), so most answers are a few points.
    """
    if len(old["data"]) != len(new["data"]):
        return None
    keep, data, append = [], [], old["layout"] == new["layout"]
    for a, b in zip(old["data"], new["data"], strict=True):
        if not all(isinstance(t.get(axis), list) for t in (a, b) for axis in ("x", "y")):
            return None
        n = min(_common(a["x"], b["x"]), _common(a["y"], b["y"]))
        keep.append(n)
        data.append({**b, "x": b["x"][n:], "y": b["y"][n:]})
        same_style = {**a, "x": None, "y": None} == {**b, "x": None, "y": None}
        append = append and same_style and n == len(a["x"]) == len(a["y"])
    return {"keep": keep, "data": data, "layout": new["layout"], "append": append}


def _common(a: list, b: list) -> int:
    """The length of the longest common start of ``a`` and ``b``."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n - 1  # a[:lo] == b[:lo] and a[:hi + 1] != b[:hi + 1]
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def frame(spec: Spec) -> str:
    """A key for everything in ``spec`` but its images' pictures ("" when it has no images)."""
    from ehflow_core.figures import spec_json

    images = spec["layout"].get("images")
    if not images:
        return ""
    blanked = {**spec, "layout": {**spec["layout"], "images": [{**image, "source": None} for image in images]}}
    return _digest(spec_json(blanked))


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()
