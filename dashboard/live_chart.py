"""The live panel: one component that shows the run's readouts and charts and keeps them current.

Why not ``st.plotly_chart`` in a fragment that reruns: ``st.plotly_chart`` re-creates a chart
whenever its figure changes, so a chart refreshed several times a second is blank much of the
time (../shared/STREAMLIT.md measured 42–55 % visible), and every fragment rerun costs the
browser 30–60 ms of Streamlit's own rendering whether or not a new snapshot came.

So the live data leaves the script. The page mounts one component (Streamlit components v2, no
iframe) with its run's token. In the browser it keeps the readouts and one ``<div>`` per chart,
and long-polls ``/api/live/<token>?since=<version>`` (:func:`feed`, a route of the server's
``st.App``): the answer comes as soon as the worker sends a snapshot newer than ``since`` or the
run's state, κ or learning rate change, else after ``FEED_WAIT`` seconds with the readouts alone.
Each new figure is drawn with ``Plotly.react``; when it differs from the drawn one only in its
images (a map panel built with ``raster=True``) the chart swaps the images alone
(``Plotly.relayout``, ~1 ms against ~30 ms for a redraw), and an unchanged figure is not redrawn.
Every request is also the page's heartbeat for its run and asks for the next snapshot. plotly.js
is served from the app's own static folder (copied from the plotly wheel), so the page works
offline.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import plotly
import streamlit as st
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dashboard import live

if TYPE_CHECKING:
    from ehflow_core.figures import Spec

STATIC = Path(__file__).parent / "static"
PLOTLY_JS = "plotly.min.js"
FEED = "api/live"
FEED_WAIT = 0.5  # seconds a request waits for a new snapshot (under the worker's heartbeat timeout)
FEED_TICK = 0.02  # seconds between looks at the run's version while a request waits
# Never cached; not gzipped either (Streamlit's middleware would compress every answer, mostly
# base64 PNG that does not shrink, on the event loop).
_NO_STORE = {"Cache-Control": "no-store", "Content-Encoding": "identity"}
_background: set[asyncio.Task] = set()  # prebuilds; the event loop keeps only weak references
# The panels, row by row: (key, height in pixels); a row of one spans the page.
LAYOUT = [[("density", 380), ("energies", 380)], [("trajectories", 420)], [("curves", 380), ("constraint", 380)]]
NO_CONSTRAINT = "No generator: the constraint panel appears when the rotation generator is on."
CURVES_TITLE = "Train (dashed) and test log-likelihood"
METRICS = [("state", "State"), ("step", "Step"), ("steps_per_s", "Steps / s"), ("test_ll", "Test log-likelihood")]
SYMMETRY_METRICS = [
    ("invariance_spread", "Invariance spread of log p̂ (nats)"),
    ("invariance_noise", "…its Monte-Carlo noise floor"),
    ("equivariance_error", "Equivariance error ‖T(Rs) − R T(s)‖"),
]

_CSS = """
.ehflow-metrics { display: grid; grid-template-columns: repeat(4, minmax(0, 1fr)); gap: 1rem; }
.ehflow-metrics.ehflow-symmetry { grid-template-columns: repeat(3, minmax(0, 1fr)); margin-bottom: 1rem; }
.ehflow-metric-label { font-size: 14px; color: rgba(49, 51, 63, 0.6); }
.ehflow-metric-value { font-size: 2.25rem; line-height: 1.3; color: rgb(49, 51, 63); white-space: nowrap;
  overflow: hidden; text-overflow: ellipsis; }
.ehflow-caption { font-size: 14px; color: rgba(49, 51, 63, 0.6); margin: 0.25rem 0 1rem; min-height: 1.3em; }
.ehflow-message { padding: 1rem; border-radius: 0.5rem; margin-bottom: 1rem;
  background: rgba(28, 131, 225, 0.1); color: rgb(0, 66, 128); }
.ehflow-message.ehflow-error { background: rgba(255, 43, 43, 0.09); color: rgb(125, 53, 59); }
.ehflow-charts { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 1rem; }
.ehflow-note { font-size: 14px; color: rgba(49, 51, 63, 0.6); }
"""

_JS = """
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function loadPlotly(src) {
  if (!window.__ehflowPlotly) {
    window.__ehflowPlotly = new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = src;
      script.onload = resolve;
      script.onerror = reject;
      document.head.appendChild(script);
    });
  }
  return window.__ehflowPlotly;
}

function element(parent, tag, className, text) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (text !== undefined) el.textContent = text;
  parent.appendChild(el);
  return el;
}

function metric(parent, label) {
  const box = element(parent, "div", "ehflow-metric");
  box.dataset.testid = "ehflowMetric";
  element(box, "div", "ehflow-metric-label", label);
  return element(box, "div", "ehflow-metric-value");
}

function setText(el, text) { if (el.textContent !== text) el.textContent = text; }

function build(parentElement, data) {
  const root = element(parentElement, "div", "ehflow-live");
  const metrics = element(root, "div", "ehflow-metrics");
  root._values = {};
  for (const [key, label] of data.metrics) root._values[key] = metric(metrics, label);
  root._caption = element(root, "p", "ehflow-caption");
  root._message = element(root, "div", "ehflow-message");
  root._message.hidden = true;
  root._symmetry = element(root, "div", "ehflow-metrics ehflow-symmetry");
  root._symmetry.hidden = true;
  for (const [key, label] of data.symmetry_metrics) root._values[key] = metric(root._symmetry, label);
  const charts = element(root, "div", "ehflow-charts");
  for (const row of data.layout) {
    for (const [key, height] of row) {
      const div = element(charts, "div", "ehflow-chart");
      div.dataset.key = key;
      div.style.minHeight = `${height}px`;
      if (row.length === 1) div.style.gridColumn = "1 / -1";
    }
  }
  // Charts have a fixed width (plotly's autosize measures the page on every redraw): follow resizes.
  new ResizeObserver(() => {
    for (const div of charts.querySelectorAll("div.ehflow-chart")) {
      if (div._fullLayout && div._fullLayout.width !== div.clientWidth) {
        window.Plotly.relayout(div, {width: div.clientWidth});
      }
    }
  }).observe(charts);
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && root._undrawn && root.isConnected) draw(root, root._undrawn);
  });
  return root;
}

function showStatus(root, status) {
  if (root._stamp !== undefined && status.stamp <= root._stamp) return;  // an older answer
  root._stamp = status.stamp;
  root._training = status.training;
  for (const [key, el] of Object.entries(root._values)) {
    if (status.values[key] !== undefined) setText(el, status.values[key]);
  }
  setText(root._caption, status.caption);
  root._message.hidden = !status.message;
  setText(root._message, status.message || "");
  root._message.classList.toggle("ehflow-error", status.state === "diverged");
  root._symmetry.hidden = status.values.invariance_spread === undefined;
}

function drawChart(div, chart, version, width) {
  const t0 = performance.now();
  if (chart.note !== undefined) {  // no figure for this panel: say why
    if (div._fullLayout) window.Plotly.purge(div);
    div.className = "ehflow-chart ehflow-note";
    div.textContent = chart.note;
    div.dataset.frame = div.dataset.hash = "";
  } else if (chart.hash === div.dataset.hash && div._fullLayout) {
    // The same figure (a curve without a new point, a paused run's maps): nothing to redraw.
  } else {
    const fig = chart.figure;
    div.dataset.hash = chart.hash;
    if (chart.frame && div.dataset.frame === chart.frame && div._fullLayout) {
      const update = {};  // same figure but for its images: swap them, redraw nothing else
      fig.layout.images.forEach((image, i) => { update[`images[${i}].source`] = image.source; });
      window.Plotly.relayout(div, update);
    } else {
      if (!div._fullLayout) { div.textContent = ""; div.className = "ehflow-chart"; }
      fig.layout.width = width;
      window.Plotly.react(div, fig.data, fig.layout, {displayModeBar: false});
      div.dataset.frame = chart.frame;
    }
    div.dataset.ms = String(Number(div.dataset.ms || 0) + performance.now() - t0);
    div.dataset.draws = String(Number(div.dataset.draws || 0) + 1);
  }
  div.dataset.version = String(version);
}

async function fetchFeed(url) {
  try {
    const response = await fetch(url, {cache: "no-store"});
    if (response.ok) return await response.json();
  } catch (err) { /* the server is restarting or gone */ }
  await sleep(1000);  // try again in a second
  return null;
}

async function poll(root) {
  let token = root._data.token, since = -1, seen = false;
  let next = fetchFeed(`${root._data.feed}/${token}?since=${since}`);
  for (;;) {
    const body = await next;
    seen = seen || root.isConnected;
    if (seen && !root.isConnected) return;  // the page dropped the live panel
    const data = root._data;
    if (data.token !== token) {  // a new run: start over
      token = data.token;
      since = -1;
      next = fetchFeed(`${data.feed}/${token}?since=${since}`);
      continue;
    }
    const fresh = body !== null && body.charts && body.version > since;
    if (fresh) since = body.version;
    // Ask for the next snapshot before drawing this one: the worker and the server make it
    // while the browser draws. A hidden tab asks for none (want=0): its run trains faster.
    next = fetchFeed(`${data.feed}/${token}?since=${since}&want=${document.hidden ? 0 : 1}`);
    if (body === null) continue;
    try {
      showStatus(root, body.status);
      // The page's buttons were drawn for a run that was (or was not) training: when that
      // changes behind its back (divergence, a process that died), rerun the page, once per run.
      if (root._training !== data.training && root._stamp > data.stamp && root._asked !== data.stamp) {
        root._asked = data.stamp;
        root._setTrigger("sync", body.status.state);
      }
      // A hidden tab draws nothing (nothing to see, and its timers are throttled to one a
      // second, which would hold back the requests that keep its run training): the latest
      // answer is drawn when the tab shows again.
      if (fresh && document.hidden) root._undrawn = body;
      if (fresh && !document.hidden) await draw(root, body);
    } catch (err) {  // keep polling whatever happened to one answer
      console.error("ehflow: live panel update failed", err);
    }
  }
}

function draw(root, body) {  // one drawing at a time, in order
  root._undrawn = null;
  root._drawing = (root._drawing || Promise.resolve())
    .then(() => drawAll(root, body))
    .catch((err) => console.error("ehflow: drawing failed", err));
  return root._drawing;
}

async function drawAll(root, body) {
  await loadPlotly(root._data.src);
  const divs = Array.from(root.querySelectorAll("div.ehflow-chart"));
  const widths = divs.map((div) => div.clientWidth);  // measured once, before any redraw
  for (const [i, div] of divs.entries()) {
    const chart = body.charts[div.dataset.key];
    if (chart === undefined) continue;
    try {
      drawChart(div, chart, body.version, widths[i]);
    } catch (err) {  // one chart's failure must not stop the others
      console.error(`ehflow: drawing ${div.dataset.key} failed`, err);
      div.dataset.errors = String(Number(div.dataset.errors || 0) + 1);
    }
    await sleep(0);  // let the page handle input between charts
  }
}

export default function(component) {
  const { parentElement, setTriggerValue } = component;
  if (component.data.preload) { loadPlotly(component.data.src); return; }  // start loading plotly.js
  const data = JSON.parse(component.data.json);
  let root = parentElement.querySelector("div.ehflow-live");
  const fresh = !root;
  if (fresh) root = build(parentElement, data);
  root._data = data;
  root._setTrigger = setTriggerValue;
  showStatus(root, data.status);  // what the page knew when it ran; the feed keeps it current
  if (fresh) poll(root);
}
"""

_component = st.components.v2.component("ehflow_live_charts", js=_JS, css=_CSS, isolate_styles=False)


# -- the page's side -----------------------------------------------------------------------------
def ensure_plotly_js() -> None:
    """Copy plotly.min.js from the installed plotly package into the app's static folder."""
    target = STATIC / PLOTLY_JS
    source = Path(plotly.__file__).parent / "package_data" / PLOTLY_JS
    if not target.exists() or target.stat().st_size != source.stat().st_size:
        STATIC.mkdir(exist_ok=True)
        shutil.copyfile(source, target)


def preload_plotly() -> None:
    """Start loading plotly.js (3.5 MB) in the browser now, before the first chart needs it."""
    _component(data={"preload": True, "src": f"app/static/{PLOTLY_JS}"}, key="plotly_preload", height=0)


def live_charts(run: live.LiveRun, on_sync: Callable[[], None]) -> None:
    """The run's readouts and charts, kept current by the browser from ``/api/live/<token>``.

    ``on_sync``: called (and the page rerun) when the run stops or starts training without the
    page asking (it diverged, its process died), so the page's Train/Pause button follows.
    """
    data = {
        "token": run.token, "feed": FEED, "src": f"app/static/{PLOTLY_JS}", "layout": LAYOUT,
        "metrics": METRICS, "symmetry_metrics": SYMMETRY_METRICS, "status": status(run),
    }  # fmt: skip
    data["stamp"], data["training"] = data["status"]["stamp"], data["status"]["training"]
    # Sent as one JSON string: Streamlit checks each value of a dict for a dataframe, which
    # imports pandas (1.1 s, on the first page's critical path) for any list among them.
    _component(data={"json": json.dumps(data)}, key="live_charts", on_sync_change=on_sync)


# -- the server's side ---------------------------------------------------------------------------
def warm_imports() -> None:
    """Import what the page and the feed need (torch, plotly, the figures) ahead of the first page."""
    for name in ("ehflow_core.figures", "ehflow_core.cli", "dashboard.settings", "dashboard.teaching"):
        importlib.import_module(name)


def routes() -> list[Route]:
    """The server's extra route: each session's chart feed."""
    return [Route(f"/{FEED}/{{token}}", feed, methods=["GET"])]


async def feed(request: Request) -> Response:
    """``GET /api/live/<token>?since=<version>[&want=0]``: the run's readouts, and its figures once it
    has a snapshot newer than ``since``.

    Answers ``{"version": v, "status": {...}, "charts": {key: {"figure", "frame"} | {"note"}}}``
    as soon as the run's snapshot version passes ``since``, or its state, κ or learning rate
    change; else ``{"version", "status"}`` after ``FEED_WAIT`` seconds. 404 for a token that names
    no run (the session ended), 400 for a bad ``since``.
    """
    run = live.find_run(request.path_params["token"])
    if run is None:
        return JSONResponse({"error": "no live run with this token (the session ended: reload the page)"}, 404)
    try:
        since = int(request.query_params.get("since", "-1"))
    except ValueError:
        got = request.query_params.get("since")
        return JSONResponse({"error": f"since must be an integer snapshot version, got {got!r}"}, 400)
    # Every request asks for the next snapshot (but a hidden tab's, ``want=0``): while the browser
    # draws this answer, the worker makes the next one and the server builds its figures (prebuild).
    run.beat(want_snapshot=request.query_params.get("want", "1") != "0")
    await _wait_for_newer(run, since, run.status_key)
    charts_json = await run_in_threadpool(figures_json, run) if run.version > since else None
    body = {"version": run.version if charts_json is None else charts_json[0], "status": status(run)}
    text = json.dumps(body, separators=(",", ":"))
    if charts_json is not None:  # spliced in as text: the figures are serialised once per version
        text = f'{text[:-1]},"charts":{charts_json[1]}}}'
        _background.add(task := asyncio.create_task(prebuild(run, charts_json[0])))
        task.add_done_callback(_background.discard)
    return Response(text, media_type="application/json", headers=_NO_STORE)


async def prebuild(run: live.LiveRun, sent: int) -> None:
    """Build the figures of the snapshot after ``sent`` as soon as it arrives, so the page's next
    request finds them ready instead of waiting for them (after FEED_WAIT, leave it to that request)."""
    await _wait_for_newer(run, sent)
    if run.version > sent:
        await run_in_threadpool(figures_json, run)


async def _wait_for_newer(run: live.LiveRun, since: int, status_key: tuple | None = None) -> None:
    """Return once the run has a snapshot newer than ``since``, or its ``status_key`` (when given)
    changed, or after ``FEED_WAIT`` seconds. No thread is held while waiting: many tabs cost nothing."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + FEED_WAIT
    while run.version <= since and (status_key is None or run.status_key == status_key) and loop.time() < deadline:
        await asyncio.sleep(FEED_TICK)


def status(run: live.LiveRun) -> dict:
    """The readouts, formatted: state, step, steps/s, test log-likelihood, κ and learning rate in
    use, the run's message, the symmetry readout; ``stamp`` orders answers in the browser."""
    view = run.view()
    records = view.curves.get(run.primary_label, [])
    last = next((r for r in reversed(records) if r.test_log_likelihood is not None), None)
    values = {
        "state": view.state,
        "step": f"{view.step:,}",
        "steps_per_s": f"{view.steps_per_s:.0f}",
        "test_ll": "—" if last is None else f"{last.test_log_likelihood:.3f}",
    }
    if view.symmetry:
        values["invariance_spread"] = f"{view.symmetry['invariance_spread']:.3f}"
        values["invariance_noise"] = f"{view.symmetry['invariance_noise']:.3f}"
        values["equivariance_error"] = f"{view.symmetry['equivariance_error']:.4f}"
    caption = ""
    if view.lr is not None:
        kappa = "none (no constraint)" if view.kappa is None else f"{view.kappa:.3g}"
        caption = f"In use by the trainer now: κ = {kappa}, learning rate = {view.lr:.3g}"
    return {
        "stamp": time.monotonic(),
        "state": view.state,
        "training": view.state == "training",
        "values": values,
        "caption": caption,
        "message": view.message,
    }


def figures_json(run: live.LiveRun) -> tuple[int, str]:
    """The latest snapshot's version and its figures as JSON, built once per version (kept on the run)."""
    with run.feed_lock:  # a request and a prebuild may ask at once: build once
        view = run.view()
        cached = run.feed_cache
        if cached is None or cached[0] != view.version:
            charts_ = {} if view.snapshot is None else charts(view, run.primary_label, run.settings.generator_on)
            cached = run.feed_cache = (view.version, json.dumps(charts_))
        return cached


def charts(view: live.View, primary: str, constrained: bool) -> dict[str, dict]:
    """Each panel's ``{"figure", "frame", "hash"}`` for ``view``: ``hash`` names the figure,
    ``frame`` all of it but its pictures. The constraint panel (of the ``primary`` run) is a
    ``{"note"}`` instead unless the run is ``constrained``."""
    from ehflow_core.figures import constraint_spec, curves_spec, density_spec, energy_spec, spec_json, trajectory_spec

    snap = view.snapshot
    specs = {
        "density": density_spec(snap, raster=True),
        "energies": energy_spec(snap, raster=True),
        "trajectories": trajectory_spec(snap, raster=True),
        "curves": curves_spec(view.curves, title=CURVES_TITLE),
    }
    if constrained:
        specs["constraint"] = constraint_spec(view.curves[primary])
    heights = {key: height for row in LAYOUT for key, height in row}
    out: dict[str, dict] = {"constraint": {"note": NO_CONSTRAINT}}
    for key, spec in specs.items():
        spec["layout"] = {**spec["layout"], "height": heights[key], "autosize": False}
        text = spec_json(spec)
        out[key] = {"figure": json.loads(text), "frame": frame(spec), "hash": _digest(text)}
    return out


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
