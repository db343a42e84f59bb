"""The live charts: one component that fetches each new snapshot's figures and draws them in place.

Why not ``st.plotly_chart`` in a fragment that reruns: ``st.plotly_chart`` re-creates a chart
whenever its figure changes, so a chart refreshed several times a second is blank much of the
time (../shared/STREAMLIT.md measured 42–55 % visible), and every fragment rerun costs the
browser 30–60 ms of Streamlit's own rendering whether or not a new snapshot came.

So the charts leave the script. The page mounts one component (Streamlit components v2, no
iframe) with its run's token. In the browser it keeps one ``<div>`` per chart and long-polls
``/api/live/<token>?since=<version>`` (:func:`feed`, a route of the server's ``st.App``): the
answer comes as soon as the worker sends a snapshot newer than ``since``, or after ``FEED_WAIT``
seconds with the version alone. Each new figure is drawn with ``Plotly.react``; when it differs
from the drawn one only in its images (a map panel built with ``raster=True``) the chart swaps the
images alone (``Plotly.relayout``, ~1 ms against ~30 ms for a redraw). Every request is also the
page's heartbeat for its run. plotly.js is served from the app's own static folder (copied from
the plotly wheel), so the page works offline.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import json
import shutil
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
# The panels, row by row: (key, height in pixels); a row of one spans the page.
LAYOUT = [[("density", 380), ("energies", 380)], [("trajectories", 420)], [("curves", 380), ("constraint", 380)]]
NO_CONSTRAINT = "No generator: the constraint panel appears when the rotation generator is on."
CURVES_TITLE = "Train (dashed) and test log-likelihood"

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

function drawChart(div, chart, version) {
  const t0 = performance.now();
  if (chart.note !== undefined) {  // no figure for this panel: say why
    if (div._fullLayout) window.Plotly.purge(div);
    div.textContent = chart.note;
    div.style.color = "rgba(49, 51, 63, 0.6)";  // Streamlit's caption grey
    div.style.fontSize = "14px";
    div.dataset.frame = "";
  } else {
    const fig = chart.figure;
    if (chart.frame && div.dataset.frame === chart.frame && div._fullLayout) {
      const update = {};  // same figure but for its images: swap them, redraw nothing else
      fig.layout.images.forEach((image, i) => { update[`images[${i}].source`] = image.source; });
      window.Plotly.relayout(div, update);
    } else {
      if (!div._fullLayout) div.textContent = "";
      window.Plotly.react(div, fig.data, fig.layout, {displayModeBar: false, responsive: true});
      div.dataset.frame = chart.frame;
    }
    div.dataset.ms = String(Number(div.dataset.ms || 0) + performance.now() - t0);
    div.dataset.draws = String(Number(div.dataset.draws || 0) + 1);
  }
  div.dataset.version = String(version);
}

async function poll(root, data) {
  let token = null, since = -1, seen = false;
  for (;;) {
    seen = seen || root.isConnected;
    if (seen && !root.isConnected) return;  // the page dropped the charts
    if (root.dataset.token !== token) { token = root.dataset.token; since = -1; }  // a new run
    let body = null;
    try {
      const response = await fetch(`${data.feed}/${token}?since=${since}`, {cache: "no-store"});
      if (response.ok) body = await response.json();
    } catch (err) { /* the server is restarting or gone: try again in a second */ }
    if (body === null) { await sleep(1000); continue; }
    if (!body.charts || body.version <= since) continue;
    await loadPlotly(data.src);
    for (const div of root.querySelectorAll("div.ehflow-chart")) {
      const chart = body.charts[div.dataset.key];
      if (chart === undefined) continue;
      drawChart(div, chart, body.version);
      await sleep(0);  // let the page handle input between charts
    }
    since = body.version;
  }
}

export default function(component) {
  const { data, parentElement } = component;
  if (data.preload) { loadPlotly(data.src); return; }  // no charts yet: start loading plotly.js
  let root = parentElement.querySelector("div.ehflow-live");
  if (root) { root.dataset.token = data.token; return; }  // polling already
  root = document.createElement("div");
  root.className = "ehflow-live";
  root.dataset.token = data.token;
  root.style.cssText = "display:grid;grid-template-columns:minmax(0,1fr) minmax(0,1fr);gap:1rem;width:100%";
  for (const row of data.layout) {
    for (const [key, height] of row) {
      const div = document.createElement("div");
      div.className = "ehflow-chart";
      div.dataset.key = key;
      div.style.cssText = `min-height:${height}px` + (row.length === 1 ? ";grid-column:1 / -1" : "");
      root.appendChild(div);
    }
  }
  parentElement.appendChild(root);
  poll(root, data);
}
"""

_component = st.components.v2.component("ehflow_live_charts", js=_JS, isolate_styles=False)


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


def live_charts(run: live.LiveRun) -> None:
    """The run's live charts: drawn and kept current by the browser, from ``/api/live/<token>``."""
    data = {"token": run.token, "feed": FEED, "src": f"app/static/{PLOTLY_JS}", "layout": LAYOUT}
    _component(data=data, key="live_charts")


# -- the server's side ---------------------------------------------------------------------------
def warm_imports() -> None:
    """Import what the page and the feed need (torch, plotly, the figures) ahead of the first page."""
    for name in ("ehflow_core.figures", "ehflow_core.cli", "dashboard.settings", "dashboard.teaching"):
        importlib.import_module(name)


def routes() -> list[Route]:
    """The server's extra route: each session's chart feed."""
    return [Route(f"/{FEED}/{{token}}", feed, methods=["GET"])]


async def feed(request: Request) -> Response:
    """``GET /api/live/<token>?since=<version>``: the run's figures once it has a newer snapshot.

    Answers ``{"version": v, "charts": {key: {"figure", "frame"} | {"note"}}}`` as soon as the
    run's snapshot version passes ``since``, or ``{"version": v}`` after ``FEED_WAIT`` seconds.
    404 for a token that names no run (the session ended), 400 for a bad ``since``.
    """
    run = live.find_run(request.path_params["token"])
    if run is None:
        return JSONResponse({"error": "no live run with this token (the session ended: reload the page)"}, 404)
    try:
        since = int(request.query_params.get("since", "-1"))
    except ValueError:
        got = request.query_params.get("since")
        return JSONResponse({"error": f"since must be an integer snapshot version, got {got!r}"}, 400)
    run.beat()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + FEED_WAIT
    while run.version <= since and loop.time() < deadline:
        await asyncio.sleep(FEED_TICK)  # no thread held while waiting: many tabs cost nothing
    if run.version <= since:
        return JSONResponse({"version": run.version}, headers={"Cache-Control": "no-store"})
    body = await run_in_threadpool(payload, run)
    return Response(body, media_type="application/json", headers={"Cache-Control": "no-store"})


def payload(run: live.LiveRun) -> str:
    """The JSON answer for the run's latest snapshot, built once per version and kept on the run."""
    view = run.view()
    cached = run.feed_cache
    if cached is not None and cached[0] == view.version:
        return cached[1]
    answer: dict = {"version": view.version}
    if view.snapshot is not None:
        answer["charts"] = charts(view, run.primary_label)
    body = json.dumps(answer, separators=(",", ":"))
    run.feed_cache = (view.version, body)
    return body


def charts(view: live.View, primary: str) -> dict[str, dict]:
    """Each panel's ``{"figure", "frame"}`` for ``view``, or ``{"note"}`` for a panel it lacks."""
    from ehflow_core.figures import constraint_spec, curves_spec, density_spec, energy_spec, spec_json, trajectory_spec

    snap, records = view.snapshot, view.curves[primary]
    specs = {
        "density": density_spec(snap, raster=True),
        "energies": energy_spec(snap, raster=True),
        "trajectories": trajectory_spec(snap, raster=True),
        "curves": curves_spec(view.curves, title=CURVES_TITLE),
    }
    if records and records[-1].constraint:
        specs["constraint"] = constraint_spec(records)
    heights = {key: height for row in LAYOUT for key, height in row}
    out: dict[str, dict] = {"constraint": {"note": NO_CONSTRAINT}}
    for key, spec in specs.items():
        spec["layout"] = {**spec["layout"], "height": heights[key], "autosize": True}
        out[key] = {"figure": json.loads(spec_json(spec)), "frame": frame(spec)}
    return out


def frame(spec: Spec) -> str:
    """A key for everything in ``spec`` but its images' pictures ("" when it has no images)."""
    from ehflow_core.figures import spec_json

    images = spec["layout"].get("images")
    if not images:
        return ""
    blanked = {**spec, "layout": {**spec["layout"], "images": [{**image, "source": None} for image in images]}}
    return hashlib.blake2b(spec_json(blanked).encode(), digest_size=8).hexdigest()
