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
import threading
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


_lock = threading.Lock()
_bodies: dict[tuple[str, bool], bytes] = {}  # (path, gzipped) -> body


def body(path: str, zipped: bool) -> bytes:
    """The asset's bytes, gzipped when ``zipped`` (made once per server and kept: a few MB in all)."""
    with _lock:
        cached = _bodies.get((path, zipped))
    if cached is None:
        raw = files()[path].read_bytes()
        cached = gzip.compress(raw, compresslevel=6) if zipped else raw
        with _lock:
            _bodies[(path, zipped)] = cached
    return cached


def response(path: str, accept_encoding: str, data: bytes | None = None) -> Response:
    """The asset's response (``data``: its body, when already at hand)."""
    zipped = path.endswith(COMPRESSIBLE) and "gzip" in accept_encoding
    media_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
    headers = {"Cache-Control": CACHE, "Vary": "Accept-Encoding", "Content-Encoding": "gzip" if zipped else "identity"}
    return Response(body(path, zipped) if data is None else data, media_type=media_type, headers=headers)


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
        accept = Headers(scope=scope).get("accept-encoding", "")
        zipped = asset.endswith(COMPRESSIBLE) and "gzip" in accept
        with _lock:
            data = _bodies.get((asset, zipped))
        if data is None:  # the first request for it: read (and compress) off the event loop
            data = await run_in_threadpool(body, asset, zipped)
        await response(asset, accept, data)(scope, receive, send)
