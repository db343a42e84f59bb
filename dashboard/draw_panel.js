// The drawing surface (dashboard/drawing.py): spray points with a brush, erase, undo, clear.
// The points live here while the page is open; each finished stroke sends them all to the page
// (setStateValue "points"), which checks them as it checks an upload.

const PIXELS = 440;  // the canvas's side in CSS pixels (smaller on a narrow page)
const HISTORY = 50;  // strokes that Undo can take back

function element(parent, tag, className, text) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (text !== undefined) el.textContent = text;
  parent.appendChild(el);
  return el;
}

function control(parent, label, input) {
  const box = element(parent, "label", "ehflow-draw-control");
  element(box, "span", "", label);
  box.appendChild(input);
  return input;
}

function range(min, max, step, value, name) {
  const input = document.createElement("input");
  Object.assign(input, { type: "range", min, max, step, value });
  input.setAttribute("aria-label", name);
  return input;
}

function build(parentElement, config) {
  const root = element(parentElement, "div", "ehflow-draw");
  const tools = element(root, "div", "ehflow-draw-tools");
  root._mode = "spray";
  const modes = {};
  for (const [mode, label] of [["spray", "Spray"], ["erase", "Erase"]]) {
    const b = modes[mode] = element(tools, "button", "ehflow-draw-button", label);
    b.type = "button";
    b.onclick = () => { root._mode = mode; showMode(root, modes); };
  }
  root._brush = control(tools, "Brush size", range(0.1, 1.0, 0.05, 0.35, "Brush size"));
  root._density = control(tools, "Density", range(1, 20, 1, 6, "Density (points per dab)"));
  const undo = element(tools, "button", "ehflow-draw-button", "Undo");
  undo.type = "button";
  undo.onclick = () => {
    if (!root._history.length) return;
    root._points = root._history.pop();
    changed(root);
  };
  const clear = element(tools, "button", "ehflow-draw-button", "Clear");
  clear.type = "button";
  clear.onclick = () => {
    if (!root._points.length) return;
    remember(root);
    root._points = [];
    changed(root);
  };
  const canvas = root._canvas = element(root, "canvas", "ehflow-draw-canvas");
  canvas.setAttribute("role", "application");
  canvas.setAttribute("aria-label", "Drawing surface: draw your data points with the mouse or touchpad");
  root._count = element(root, "p", "ehflow-draw-count");
  root._count.setAttribute("aria-live", "polite");
  root._points = config.points.slice();
  root._history = [];
  root._config = config;
  showMode(root, modes);
  size(root);
  new ResizeObserver(() => size(root)).observe(root);
  canvas.addEventListener("pointerdown", (event) => {
    event.preventDefault();
    canvas.setPointerCapture(event.pointerId);
    remember(root);
    root._stroke = { last: null, time: 0 };
    dab(root, event);
  });
  canvas.addEventListener("pointermove", (event) => { if (root._stroke) dab(root, event); });
  const end = () => {
    if (!root._stroke) return;
    root._stroke = null;
    changed(root);
  };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);
  return root;
}

function showMode(root, modes) {
  for (const [mode, button] of Object.entries(modes)) button.setAttribute("aria-pressed", String(mode === root._mode));
}

function remember(root) {
  root._history.push(root._points.slice());
  if (root._history.length > HISTORY) root._history.shift();
}

function size(root) {
  const side = Math.max(200, Math.min(PIXELS, root.clientWidth || PIXELS));
  const canvas = root._canvas, ratio = window.devicePixelRatio || 1;
  if (canvas._side === side && canvas._ratio === ratio) return;
  canvas._side = side; canvas._ratio = ratio;
  canvas.style.width = canvas.style.height = `${side}px`;
  canvas.width = canvas.height = Math.round(side * ratio);
  redraw(root);
}

function toData(root, event) {  // canvas pixels -> data coordinates ([-extent, extent]², y up)
  const box = root._canvas.getBoundingClientRect(), e = root._config.extent;
  return [((event.clientX - box.left) / box.width) * 2 * e - e, e - ((event.clientY - box.top) / box.height) * 2 * e];
}

function dab(root, event) {  // one touch of the brush: spray points into its disc, or erase them
  const [x, y] = toData(root, event), r = Number(root._brush.value), stroke = root._stroke;
  const now = performance.now();
  if (stroke.last && Math.hypot(x - stroke.last[0], y - stroke.last[1]) < r / 3 && now - stroke.time < 60) return;
  stroke.last = [x, y]; stroke.time = now;
  const e = root._config.extent;
  if (root._mode === "erase") {
    root._points = root._points.filter(([px, py]) => Math.hypot(px - x, py - y) > r);
  } else {
    const room = root._config.max_points - root._points.length;
    for (let i = 0; i < Math.min(Number(root._density.value), room); i++) {
      const angle = Math.random() * 2 * Math.PI, radius = r * Math.sqrt(Math.random());  // uniform in the disc
      const px = x + radius * Math.cos(angle), py = y + radius * Math.sin(angle);
      if (Math.abs(px) < e && Math.abs(py) < e) root._points.push([Math.round(px * 1000) / 1000, Math.round(py * 1000) / 1000]);
    }
  }
  redraw(root);
}

function changed(root) {
  redraw(root);
  root._setState("points", root._points);
}

function redraw(root) {
  const canvas = root._canvas, ctx = canvas.getContext("2d"), e = root._config.extent;
  const n = canvas.width, scale = n / (2 * e);
  const px = (x) => (x + e) * scale, py = (y) => (e - y) * scale;
  ctx.fillStyle = "#fafafa";
  ctx.fillRect(0, 0, n, n);
  ctx.strokeStyle = "#e2e2e2";
  ctx.lineWidth = 1;
  for (let v = -Math.floor(e); v <= Math.floor(e); v++) {
    ctx.beginPath(); ctx.moveTo(px(v), 0); ctx.lineTo(px(v), n); ctx.stroke();
    ctx.beginPath(); ctx.moveTo(0, py(v)); ctx.lineTo(n, py(v)); ctx.stroke();
  }
  ctx.strokeStyle = "#b0b0b0";
  ctx.beginPath(); ctx.moveTo(px(0), 0); ctx.lineTo(px(0), n); ctx.moveTo(0, py(0)); ctx.lineTo(n, py(0)); ctx.stroke();
  ctx.fillStyle = "#1f77b4";
  const dot = Math.max(1.5, 2 * (canvas._ratio || 1));
  for (const [x, y] of root._points) ctx.fillRect(px(x) - dot / 2, py(y) - dot / 2, dot, dot);
  const full = root._points.length >= root._config.max_points ? ` (the most a drawing holds)` : "";
  root._count.textContent = `${root._points.length.toLocaleString("en")} points drawn${full}`;
}

export default function(component) {
  const { parentElement, setStateValue } = component;
  const config = JSON.parse(component.data.json);
  let root = parentElement.querySelector("div.ehflow-draw");
  if (!root) root = build(parentElement, config);
  root._setState = setStateValue;
  root._config = config;
}
