"""Start the dashboard's server in a process of its own, on a free local port, and stop it.

    with serve() as server:        # `streamlit run dashboard/app.py`, headless, on 127.0.0.1
        open_browser_at(server.url)

Used by the browser tests, the dashboard benchmark and the screenshot script, and handy for a
scripted demo. ``CHROMIUM_ARGS`` are the flags those open Debian's headless Chromium with.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@dataclass(frozen=True)
class Server:
    url: str  # http://127.0.0.1:<port>
    process: subprocess.Popen

    @property
    def pid(self) -> int:
        return self.process.pid


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(start_timeout: float = 120.0, quiet: bool = True, env: dict[str, str] | None = None) -> Iterator[Server]:
    """The dashboard's server, healthy (``/_stcore/health`` answers ``ok``) before this yields;
    terminated (killed after 30 s) on exit. ``env``: variables to set for it (``EHFLOW_WORKERS``,
    ``EHFLOW_RAY_ADDRESS``, ...). Raises ``RuntimeError`` when it exits early or does not answer
    within ``start_timeout`` seconds."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "dashboard/app.py", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true"],
        cwd=ROOT, env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL if quiet else None, stderr=subprocess.STDOUT if quiet else None,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the dashboard's server exited with code {process.returncode} before answering")
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the dashboard's server did not answer its health check within {start_timeout:.0f} s"
                )
            time.sleep(0.1)
        yield Server(url, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
