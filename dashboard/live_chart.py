"""A Plotly chart that updates in place (``Plotly.react``) instead of being re-created.

``st.plotly_chart`` re-creates a chart whenever its figure changes, so a chart refreshed several
times a second is blank much of the time (../shared/STREAMLIT.md measured 42–55 % visible).
This custom component (Streamlit components v2, no iframe) keeps one ``<div>`` per key and calls
``Plotly.react`` on it with each new figure: the chart never disappears. When a new figure differs
from the one drawn only in its images (a map panel built with ``raster=True``), the chart swaps
the images alone (``Plotly.relayout``, ~1 ms against ~30 ms for a redraw). plotly.js is served from
the app's own static folder (copied from the plotly wheel), so the page works offline.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

import plotly
import streamlit as st

from ehflow_core.figures import Spec, spec_json

STATIC = Path(__file__).parent / "static"
PLOTLY_JS = "plotly.min.js"

_JS = """
export default function(component) {
  const { data, parentElement } = component;
  const load = () => {
    if (!window.__ehflowPlotly) {
      window.__ehflowPlotly = new Promise((resolve, reject) => {
        const script = document.createElement("script");
        script.src = data.src;
        script.onload = resolve;
        script.onerror = reject;
        document.head.appendChild(script);
      });
    }
    return window.__ehflowPlotly;
  };
  if (data.preload) { load(); return; }  // no chart: start loading plotly.js early
  let div = parentElement.querySelector("div.ehflow-chart");
  if (!div) {
    div = document.createElement("div");
    div.className = "ehflow-chart";
    div.style.width = "100%";
    parentElement.appendChild(div);
  }
  const draw = () => {
    if (div.dataset.version === String(data.version)) return;
    const t0 = performance.now();
    const fig = JSON.parse(data.figure);  // parsed here: the received data is read-only
    if (data.frame && div.dataset.frame === data.frame && div._fullLayout) {
      const update = {};  // same figure but for its images: swap them, redraw nothing else
      fig.layout.images.forEach((image, i) => { update[`images[${i}].source`] = image.source; });
      window.Plotly.relayout(div, update);
    } else {
      window.Plotly.react(div, fig.data, fig.layout, {displayModeBar: false, responsive: true});
      div.dataset.frame = data.frame;
    }
    div.dataset.ms = String(Number(div.dataset.ms || 0) + performance.now() - t0);
    div.dataset.version = String(data.version);
    div.dataset.draws = String(Number(div.dataset.draws || 0) + 1);
  };
  if (window.Plotly) { draw(); return; }
  load().then(draw);
}
"""

_component = st.components.v2.component("ehflow_live_chart", js=_JS, isolate_styles=False)


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


def _frame(spec: Spec) -> str:
    """A key for everything in ``spec`` but its images' pictures ("" when it has no images)."""
    images = spec["layout"].get("images")
    if not images:
        return ""
    frame = {**spec, "layout": {**spec["layout"], "images": [{**image, "source": None} for image in images]}}
    return hashlib.blake2b(spec_json(frame).encode(), digest_size=8).hexdigest()


def live_chart(build: Callable[[], Spec], key: str, version: int, height: int = 380) -> None:
    """Draw the figure spec ``build()`` in the chart ``key``; a new ``version`` updates it in place.

    The figure's JSON is cached per key and version in the session, so a fragment rerun without
    new data re-sends the cached string instead of rebuilding the figure. (Sending ``null`` for
    an unchanged figure instead lost charts: Streamlit may drop the deltas of a fragment run that
    a full rerun overtakes, and the browser then never got the figure.)
    """
    cache = st.session_state.setdefault("_chart_cache", {})
    cached = cache.get(key)
    if cached is None or cached[0] != version:
        spec = build()
        spec["layout"] = {**spec["layout"], "height": height, "autosize": True}
        cached = cache[key] = (version, spec_json(spec), _frame(spec))
    data = {"figure": cached[1], "frame": cached[2], "version": version, "src": f"app/static/{PLOTLY_JS}"}
    _component(data=data, key=key, height=height)
