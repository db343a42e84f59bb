"""The Figures download: the run's figures as one self-contained HTML page, laid out like the
live panel and titled with what the run is, built once per snapshot version."""

from __future__ import annotations

from html import escape as html_escape

from dashboard import live
from dashboard.live_chart import PLOTLY_JS, layout_for, panel_specs
from dashboard.run_state import View
from dashboard.settings import PRESETS, Settings


def figures_page(run: live.LiveRun) -> bytes:
    """The Figures download of the run's latest snapshot: built once per snapshot version and kept
    on the run, so a class clicking it again and again costs one page per version, not one a click."""
    with run.feed_lock:
        view = run.view()
        cached = run.figures_page
        if cached is None or cached[0] != view.version:
            if view.snapshot is None:  # the run is still starting
                page = b"<html><body>No figures yet: the run is still starting.</body></html>"
            else:
                page = figures_document(view, run.primary_label, run.settings).encode()
            cached = run.figures_page = (view.version, page)
        return cached[1]


def figures_document(view: View, primary: str, settings: Settings) -> str:
    """The run's figures as one self-contained HTML page (the Figures download), laid out like the
    live panel: its rows (``LAYOUT``), each figure at the panel's height and the row's width, the
    maps as the live panel's pictures and the rest as plotly traces (values on hover); titled with
    what the run is (preset, data, run, step, test log-likelihood), and carrying the vendored
    plotly.js basic bundle the live panel uses (1.2 MB; plotly's full bundle, 4.6 MB, is what a
    heatmap trace would need)."""
    from ehflow_core.figures import as_figure

    specs = panel_specs(view, primary, settings, raster=True)
    rows = []
    for row in layout_for(settings):
        cells = []
        for key, height in row:
            if key not in specs:
                continue
            html = as_figure(specs[key]).to_html(
                include_plotlyjs=False, full_html=False, default_width="100%", default_height=f"{height}px",
                config={"responsive": True, "displayModeBar": False},
            )  # fmt: skip
            cells.append(f"<div>{html}</div>")
        if cells:
            grid = f"display:grid;grid-template-columns:repeat({len(cells)},minmax(0,1fr));gap:16px;margin-bottom:16px"
            rows.append(f"<div style='{grid}'>{''.join(cells)}</div>")
    title = html_escape(figures_title(view, primary, settings))
    script = PLOTLY_JS.read_text(encoding="utf-8").replace("</script", "<\\/script")
    head = f"<meta charset='utf-8'><title>{title}</title><script>{script}</script>"
    heading = f"<h1 style='font:600 18px sans-serif;margin:0 0 12px'>{title}</h1>"
    return f"<!doctype html><html><head>{head}</head><body style='margin:16px'>{heading}{''.join(rows)}</body></html>"


def figures_title(view: View, primary: str, settings: Settings) -> str:
    """What the figures show, in one line: preset, data, the run (its κ), step and the last test L_K."""
    records = view.curves.get(primary, [])
    last = next((r for r in reversed(records) if r.test_log_likelihood is not None), None)
    parts = [f"ehflow: {PRESETS[settings.preset].label}", f"run {primary}", f"step {view.step:,}"]
    if settings.finite:
        parts.insert(2, f"{settings.n_train:,} training points")
    if last is not None:
        parts.append(
            f"test L_{settings.train_config().eval_samples} {last.test_log_likelihood:.3f} at step {last.step:,}"
        )
    return " · ".join(parts)
