"""ehflow dashboard: watch an equivariant Hamiltonian flow learn, live.

    streamlit run dashboard/app.py

The server: Streamlit runs the page script (:mod:`dashboard.page`) for each browser session, and
one extra route, ``/api/live/<token>``, streams each session's live charts to its page
(:mod:`dashboard.live_chart`) without rerunning the script. Importing this module starts the
first training process and warms the page's heavy imports (torch, plotly) in the background, so
both are ready, or nearly, when the first browser connects.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import streamlit as st
from starlette.middleware import Middleware

from dashboard import live_chart, pool  # both light: no torch at import
from dashboard.static_assets import StaticAssets

try:
    pool.prestart()
except ValueError as err:  # a bad EHFLOW_* setting (workers, runs, grace, Ray address): say which, and stop
    print(f"ehflow dashboard: {err}", file=sys.stderr, flush=True)
    os._exit(2)
# Not a daemon: a server stopped (Ctrl-C, SIGTERM) in its first seconds must not finalise the
# interpreter while this thread is inside torch's import (the interpreter then waits forever on what
# the thread holds), so the exit waits for the imports to end (seconds).
threading.Thread(target=live_chart.warm_imports, name="ehflow-warm-imports", daemon=False).start()

# Streamlit's own assets from memory, gzipped once (dashboard/static_assets.py): a class of new
# browsers asking for them at once held the event loop up.
app = st.App(Path(__file__).with_name("page.py"), routes=live_chart.routes(), middleware=[Middleware(StaticAssets)])
