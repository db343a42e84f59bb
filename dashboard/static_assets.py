"""Streamlit's own static assets (its JavaScript, CSS and fonts), served from memory, gzipped once.

Every new browser asks for them once (a class of fresh browsers: once each). Streamlit serves
them with starlette's ``StaticFiles``, uncompressed, each file read in chunks through a thread
handoff on the server's event loop (docs/benchmarks.md, the classroom's opening tail). This ASGI
middleware (Streamlit reserves ``/static/`` for itself: no route may claim it) answers the same
paths from a table of the files that exist (nothing outside it is ever read), each file gzipped
once per server, in one send; anything else passes through to Streamlit.
"""

from __future__ import annotations

import functools
import gzip
import mimetypes
from pathlib import Path

import streamlit
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

# The assets' names carry their content's hash: a browser may keep them for a year (as Streamlit says).
CACHE = "public, immutable, max-age=31536000"
COMPRESSIBLE = (".js", ".css", ".json", ".map", ".svg", ".txt", ".html", ".ttf")
ROOT = Path(streamlit.__file__).parent / "static" / "static"
PREFIX = "static"  # the assets' paths on the server: /static/js/…, /static/css/…, /static/media/…


@functools.cache
def files() -> dict[str, Path]:
    """Every asset by its path under ``/static/``, listed once."""
    if not ROOT.is_dir():
        return {}
    return {path.relative_to(ROOT).as_posix(): path for path in ROOT.rglob("*") if path.is_file()}


_bodies: dict[tuple[str, bool], bytes] = {}  # (path, gzipped) -> body, made once per server (a few MB in all)


def body(path: str, zipped: bool) -> bytes:
    """The asset's bytes, gzipped when ``zipped``: read (and compressed) on first use, then kept.
    Two first requests at once may both make it; the bodies are equal, either is kept."""
    if (path, zipped) not in _bodies:
        raw = files()[path].read_bytes()
        _bodies[(path, zipped)] = gzip.compress(raw, compresslevel=6) if zipped else raw
    return _bodies[(path, zipped)]


class StaticAssets:
    """ASGI middleware: ``GET /static/<path>`` of one of Streamlit's assets, from memory."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" and scope.get("method") in ("GET", "HEAD") else ""
        asset = path[len(PREFIX) + 2 :] if path.startswith(f"/{PREFIX}/") else ""
        if asset not in files():
            await self.app(scope, receive, send)
            return
        zipped = asset.endswith(COMPRESSIBLE) and "gzip" in Headers(scope=scope).get("accept-encoding", "")
        # Made once, off the event loop; afterwards a dictionary lookup.
        data = _bodies.get((asset, zipped)) or await run_in_threadpool(body, asset, zipped)
        media_type = mimetypes.guess_type(asset)[0] or "application/octet-stream"
        encoding = "gzip" if zipped else "identity"
        headers = {"Cache-Control": CACHE, "Vary": "Accept-Encoding", "Content-Encoding": encoding}
        await Response(data, media_type=media_type, headers=headers)(scope, receive, send)
