"""The dashboard's runs on a Ray cluster (``EHFLOW_RAY_ADDRESS``): the same run handle, the same
records, a dead actor reported, bad addresses refused, and no Ray at all without an address.

The session's Ray cluster on this machine (``conftest.start_local_ray``, ~6 s to start) hosts the
actors: the module is marked slow. The browser test of the dashboard on Ray is in ``test_browser.py``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest
from conftest import as_server_pool, start_local_ray, wait_until

from dashboard import live, live_chart
from dashboard import pool as pool_module
from dashboard.live import LiveRun
from dashboard.pool import Pool
from dashboard.settings import Settings

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def patient_heartbeat(monkeypatch):
    """Tests poll from Python, not from a page: a long heartbeat."""
    monkeypatch.setattr(live, "HEARTBEAT_TIMEOUT", 60.0)


@pytest.fixture(scope="module")
def ray_pool(ray_session):
    """A pool of Ray actors on the session's two-CPU Ray cluster (this process is its driver)."""
    start_local_ray()
    made = Pool(ray_address="auto")
    yield made
    made.close()


@pytest.fixture
def on_ray(ray_pool, monkeypatch):
    return as_server_pool(ray_pool, monkeypatch)


def _run(**changes) -> LiveRun:
    settings = Settings(batch=64, **changes)
    return LiveRun(settings, settings.make_target())


def _steps(run: LiveRun, n: int) -> list[tuple[int, float, float]]:
    run.step(n)
    assert wait_until(lambda: run.view().step == n and not run.busy, timeout=120), run.view().message
    return [(r.step, r.loss, r.train_bound) for r in run.view().curves[run.primary_label]]


def test_a_run_on_ray_gives_the_local_pools_records_and_a_checkpoint(on_ray, monkeypatch):
    run = _run()
    assert on_ray.stats()["backend"] == "ray" and on_ray.size == 2  # one actor per CPU of the cluster
    on_ray_records = _steps(run, 20)
    view = run.view()
    assert view.state == "paused" and view.snapshot is not None and view.version >= 2
    caption = live_chart.status(run)["caption"]
    assert "It trains on the Ray cluster, in a ray actor on node " in caption  # its node, by id
    assert not re.search(r"\d+\.\d+\.\d+\.\d+", caption), caption  # and no address shown to every user
    data = run.checkpoint_bytes()
    run.close()
    assert not run.hosted and on_ray.stats()["runs"] == 0  # freed in its actor

    local_pool = Pool(workers=1)  # the same settings in a process of this machine
    monkeypatch.setattr(pool_module, "_pool", local_pool)
    try:
        here = _run()
        assert _steps(here, 20) == on_ray_records  # one torch thread each: the same numbers
        assert len(here.checkpoint_bytes()) == len(data)
    finally:
        local_pool.close()


def test_a_dead_actor_stops_its_runs_with_the_reason_and_the_next_run_gets_a_new_one(on_ray, local_ray):
    run = _run()
    run.play()
    assert wait_until(lambda: run.view().step > 0, timeout=120)
    (host,) = [w for w in on_ray.workers if run.id in w.runs]
    local_ray.kill(host.actor)  # as a node's loss would
    assert wait_until(lambda: run.state == "stopped", timeout=30)
    assert "The training actor on the Ray cluster died" in (run.view().message or "")
    assert not run.worker_alive and on_ray.stats()["training"] == 0
    after = _run()
    assert after.host is not host
    after.step(5)
    assert wait_until(lambda: after.view().step == 5, timeout=120)
    after.close()


@pytest.mark.parametrize(
    "address, message",
    [
        ("127.0.0.1:1", "EHFLOW_RAY_ADDRESS: cannot reach a Ray cluster at '127.0.0.1:1'"),
        ("nowhere", "EHFLOW_RAY_ADDRESS: expected 'auto', 'host:port' or 'ray://host:port', got 'nowhere'"),
    ],
)
def test_a_bad_ray_address_fails_fast_in_one_line(address, message):
    started = time.perf_counter()
    with pytest.raises(ValueError) as caught:
        Pool(ray_address=address)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)
    assert time.perf_counter() - started < 10  # no retries against a dead address


def test_the_server_with_a_bad_ray_address_stops_at_once_saying_why():
    from dashboard.server import ROOT, _free_port

    args = ["--server.headless", "true", "--server.port", str(_free_port())]
    env = {**os.environ, "EHFLOW_RAY_ADDRESS": "127.0.0.1:1"}
    result = subprocess.run(
        [sys.executable, "-m", "streamlit", "run", "dashboard/app.py", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "ehflow dashboard: EHFLOW_RAY_ADDRESS: cannot reach a Ray cluster at '127.0.0.1:1'" in result.stderr
    assert "Traceback" not in result.stderr


def test_without_an_address_the_dashboard_never_imports_ray():
    code = (
        "import os, sys; os.environ.pop('EHFLOW_RAY_ADDRESS', None)\n"
        "from dashboard import live; from dashboard.pool import Pool; from dashboard.settings import Settings\n"
        "pool = Pool(workers=1); s = Settings(batch=64); run = live.LiveRun(s, s.make_target())\n"
        "from dashboard import live_chart; live_chart.warm_imports(); import ehflow_core.sweep\n"
        "print(pool.stats()['backend'], 'ray' in sys.modules); pool.close()\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.stdout.split() == ["local", "False"], result.stderr
