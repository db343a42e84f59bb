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

function note(root, text) {  // the panel's last events, with their times (read by the browser tests on a stall)
  (root._log = root._log || []).push(`${Math.round(performance.now())} ${text}`);
  if (root._log.length > 60) root._log.shift();
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
  layOut(charts, data.layout);
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

function layOut(charts, layout) {  // the chart boxes, row by row (a row of one spans the page)
  for (const div of Array.from(charts.children)) { if (div._fullLayout) window.Plotly.purge(div); div.remove(); }
  for (const row of layout) {
    for (const [key, height] of row) {
      const div = element(charts, "div", "ehflow-chart");
      div.dataset.key = key;
      div.style.minHeight = `${height}px`;
      if (row.length === 1) div.style.gridColumn = "1 / -1";
    }
  }
  charts.dataset.layout = JSON.stringify(layout);
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
  let drew = true;
  if (chart.note !== undefined) {  // no figure for this panel: say why
    drew = false;
    if (div._fullLayout) window.Plotly.purge(div);
    div.className = "ehflow-chart ehflow-note";
    div.textContent = chart.note;
    div.dataset.frame = div.dataset.hash = "";
  } else if (chart.hash === div.dataset.hash && div._fullLayout) {
    // The same figure (a curve without a new point, a paused run's maps): nothing to redraw.
    drew = false;
  } else if (chart.figure === undefined && (chart.base !== div.dataset.hash || !div._fullLayout)) {
    // Sent as a change to (or as) a figure this chart does not have: ask for whole figures next.
    throw new Error(`${div.dataset.key}: no figure ${chart.base || chart.hash} to build on`);
  } else if (chart.extend) {  // a curve that grew: its new points alone
    const ext = chart.extend;
    div.dataset.at = ext.append ? "extendTraces" : "react (extend)";  // where a drawing is (diagnostics)
    if (ext.append) {
      const indices = ext.data.map((_, i) => i);
      window.Plotly.extendTraces(div, {x: ext.data.map((t) => t.x), y: ext.data.map((t) => t.y)}, indices);
    } else {  // thinned, smoothed anew, or restyled: the points kept, then the new ones
      const data = ext.data.map((trace, i) => ({
        ...trace,
        x: Array.from(div.data[i].x.slice(0, ext.keep[i])).concat(trace.x),
        y: Array.from(div.data[i].y.slice(0, ext.keep[i])).concat(trace.y),
      }));
      window.Plotly.react(div, data, {...ext.layout, width}, {displayModeBar: false});
    }
    div.dataset.hash = chart.hash;
    div.dataset.extends = String(Number(div.dataset.extends || 0) + 1);
  } else {
    const fig = chart.figure;
    div.dataset.hash = chart.hash;
    if (chart.frame && div.dataset.frame === chart.frame && div._fullLayout) {
      const update = {};  // same figure but for its images: swap them, redraw nothing else
      fig.layout.images.forEach((image, i) => { update[`images[${i}].source`] = image.source; });
      div.dataset.at = "relayout";
      window.Plotly.relayout(div, update);
    } else {
      if (!div._fullLayout) { div.textContent = ""; div.className = "ehflow-chart"; }
      fig.layout.width = width;
      div.dataset.at = "react";
      window.Plotly.react(div, fig.data, fig.layout, {displayModeBar: false});
      div.dataset.frame = chart.frame;
    }
  }
  if (drew) {
    div.dataset.ms = String(Number(div.dataset.ms || 0) + performance.now() - t0);
    div.dataset.draws = String(Number(div.dataset.draws || 0) + 1);
  }
  div.dataset.version = String(version);
  div.dataset.at = "done";
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
    note(root, body === null ? "answer: none" : `answer v${body.version} ${body.charts ? "charts" : "status"} ${body.status.state}`);
    seen = seen || root.isConnected;
    if (seen && !root.isConnected) return;  // the page dropped the live panel
    const data = root._data;
    if (data.token !== token) {  // a new run: start over
      token = data.token;
      since = -1;
      root._have = null;
      next = fetchFeed(`${data.feed}/${token}?since=${since}`);
      continue;
    }
    const fresh = body !== null && body.charts && body.version > since;
    if (fresh) since = body.version;
    // The figures the page will have drawn by the next answer (none for a hidden tab, which
    // draws only the latest answer, later): those come back as their hashes, curves as new points.
    if (fresh) root._have = document.hidden ? null : hashes(body);
    const have = root._have ? `&have=${root._have}` : "";
    // Ask for the next snapshot before drawing this one: the worker and the server make it
    // while the browser draws. A hidden tab asks for none (want=0): its run trains faster.
    next = fetchFeed(`${data.feed}/${token}?since=${since}&want=${document.hidden ? 0 : 1}${have}`);
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

function hashes(body) {
  return Object.values(body.charts).map((chart) => chart.hash).filter((hash) => hash).join(",");
}

function draw(root, body) {  // one drawing at a time, in order
  root._undrawn = null;
  note(root, `queue v${body.version}`);
  root._drawing = (root._drawing || Promise.resolve())
    .then(() => drawAll(root, body))
    .catch((err) => console.error("ehflow: drawing failed", err));
  return root._drawing;
}

async function drawAll(root, body) {
  note(root, `draw v${body.version}`);
  await loadPlotly(root._data.src);
  const widths = new Map();  // measured once, before any redraw
  for (const div of root.querySelectorAll("div.ehflow-chart")) widths.set(div.dataset.key, div.clientWidth);
  for (const [key, width] of widths) {
    // The chart's element as the page has it now (not as it was when this drawing began).
    const div = root.querySelector(`div.ehflow-chart[data-key="${key}"]`);
    if (!div) continue;
    const chart = body.charts[key];
    root.dataset.drawing = `${body.version} ${key}`;  // where a drawing is (diagnostics)
    div.dataset.seen = `${body.version}${chart === undefined ? " (none)" : ""}`;
    if (chart === undefined) continue;
    div.dataset.at = "start";
    try {
      drawChart(div, chart, body.version, width);
    } catch (err) {  // one chart's failure must not stop the others
      console.error(`ehflow: drawing ${key} failed`, err);
      div.dataset.errors = String(Number(div.dataset.errors || 0) + 1);
      div.dataset.error = String(err);
      root._have = null;  // whole figures from the next request on
    }
    await sleep(0);  // let the page handle input between charts
  }
  root.dataset.drawing = `${body.version} done`;
  note(root, `drawn v${body.version}`);
}

export default function(component) {
  const { parentElement, setTriggerValue } = component;
  if (component.data.preload) { loadPlotly(component.data.src); return; }  // start loading plotly.js
  const data = JSON.parse(component.data.json);
  let root = parentElement.querySelector("div.ehflow-live");
  const fresh = !root;
  if (fresh) root = build(parentElement, data);
  const charts = root.querySelector("div.ehflow-charts");
  if (charts.dataset.layout !== JSON.stringify(data.layout)) {  // a sweep's rows, or a single run's again
    layOut(charts, data.layout);
    root._have = null;  // whole figures for the new boxes
  }
  root._data = data;
  root._setTrigger = setTriggerValue;
  showStatus(root, data.status);  // what the page knew when it ran; the feed keeps it current
  if (fresh) poll(root);
}
