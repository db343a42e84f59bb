"""Draw your own data: a drawing surface (its code is ``draw_panel.js``) where a learner sprays
2-D points with a brush, erases, undoes and clears; the page checks the points as it checks an
upload (:func:`dashboard.settings.read_drawing`) and keeps the last good drawing as the run's data.
Train then learns them (the page restarts the run on a changed drawing), with 20 % held out.
"""

from __future__ import annotations

import json
from pathlib import Path

import streamlit as st

from dashboard.settings import DRAW_LIMITS, code, read_drawing
from ehflow_core.targets import HOLDOUT, DataTarget

EXTENT = 4.0  # the surface spans [−4, 4]², the live panel's maps

_component = st.components.v2.component(
    "ehflow_draw",
    js=(Path(__file__).parent / "draw_panel.js").read_text(encoding="utf-8"),
    css=(Path(__file__).parent / "draw_panel.css").read_text(encoding="utf-8"),
    isolate_styles=False,
)


def drawing() -> None:
    """The drawing surface and what the page made of it; the good drawing is ``st.session_state["drawn"]``."""
    st.subheader("Draw your data")
    left, right = st.columns([3, 2])
    with left:
        drawn: DataTarget | None = st.session_state.get("drawn")
        start = [] if drawn is None else drawn.points.tolist()
        config = {"points": start, "extent": EXTENT, "max_points": DRAW_LIMITS.max_rows}
        result = _component(
            data={"json": json.dumps(config)}, key="draw", default={"points": start}, on_points_change=_no_op
        )
    raw = result.points if result.points is not None else start
    key = json.dumps(raw)[:200_000]  # what was last checked (a rejected drawing is said again, not reparsed)
    if st.session_state.get("drawing_checked", ("", None))[0] != key:
        message = None
        try:
            points = read_drawing(raw)
        except ValueError as err:
            message = f"Not used yet: {code(str(err), limit=200)}"
        else:
            st.session_state["drawn"] = DataTarget(points, name="drawing", description=f"{len(points)} drawn points")
        st.session_state["drawing_checked"] = (key, message)
    with right:
        st.markdown(
            "Click and drag (or drag on the touchpad) to **spray** points with the brush; **Erase** removes "
            "them, **Undo** takes back a stroke. Then press **Train**: the flow learns your points at once "
            f"({HOLDOUT:.0%} are held out to measure the test likelihood). At least {DRAW_LIMITS.min_rows} and at "
            f"most {DRAW_LIMITS.max_rows:,} points."
        )
        message = st.session_state["drawing_checked"][1]
        drawn = st.session_state.get("drawn")
        if message:
            st.warning(message + (" The last good drawing stays in use." if drawn is not None else ""))
        if drawn is not None:
            st.caption(f"In use: {len(drawn.points):,} points.")
            st.download_button(
                "Download the drawing (CSV)", lambda: drawing_csv(drawn), "drawing.csv", "text/csv", on_click="ignore",
                help="Reload it later with the preset 'Your own data (CSV)'.",
            )  # fmt: skip


def drawing_csv(target: DataTarget) -> str:
    """A drawing as the CSV the Download button gives (a header, three decimals): the upload reads it back."""
    return "x,y\n" + "".join(f"{x:.3f},{y:.3f}\n" for x, y in target.points.tolist())


def _no_op() -> None:
    """A new drawing reruns the page, which reads it (a state needs a callback to be kept)."""
