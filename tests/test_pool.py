"""The dashboard's training pool: many runs per process, fair shares, admission, freeing, shutdown.

Training processes take seconds to start: the module is marked slow.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import pickle
import re
import subprocess
import sys
import threading
import time

import pytest
from conftest import as_server_pool, wait_until
from starlette.requests import Request

from dashboard import live, live_chart, worker
from dashboard import pool as pool_module
from dashboard.live import LiveRun
from dashboard.pool import Pool
from dashboard.protocol import Close, Play, SetLive, Start
from dashboard.settings import Settings

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def patient_heartbeat(monkeypatch):
    """Tests poll from Python, not from a page: a long heartbeat unless a test sets its own."""
    monkeypatch.setattr(live, "HEARTBEAT_TIMEOUT", 60.0)


@pytest.fixture(scope="module")
def shared_pool():
    """One single-process pool for the module's tests (a process takes seconds to start)."""
    made = Pool(workers=1, max_training=8)
    yield made
    made.close()


@pytest.fixture
def one_process(shared_pool, monkeypatch):
    """The module's pool as the server's, with no run left over from another test."""
    return as_server_pool(shared_pool, monkeypatch)


def _run(session_alive=None, client="", **changes) -> LiveRun:
    settings = Settings(batch=64, **changes)
    return LiveRun(settings, settings.make_target(), session_alive=session_alive, client=client)


def _losses(run: LiveRun) -> list[tuple[int, float, float]]:
    return [(r.step, r.loss, r.train_bound) for r in run.view().curves[run.primary_label]]


def test_runs_in_one_process_do_not_interfere(one_process):
    alone = _run()
    alone.step(20)
    assert wait_until(lambda: alone.view().step == 20 and not alone.busy)
    expected = _losses(alone)
    alone.close()
    # Two runs with the same seed in the same process, their steps interleaved, and a third with
    # another seed training beside them: each gives the records of a run alone.
    a, b, c = _run(), _run(), _run(seed=7)
    try:
        assert a.host is b.host is c.host
        c.play()
        a.step(20)
        b.step(20)
        assert wait_until(lambda: not a.busy and not b.busy and a.view().step == b.view().step == 20)
        assert _losses(a) == expected and _losses(b) == expected and len(expected) == 2  # steps 10, 20
        assert c.view().step > 0
    finally:
        for run in (a, b, c):
            run.close()


def test_training_runs_share_their_process_fairly(one_process):
    runs = [_run(), _run(seed=3), _run(sweep=True)]  # a sweep's step costs more: shares are in CPU time
    try:
        assert wait_until(lambda: all(r.state == "ready" for r in runs))
        for run in runs:
            run.play()
        assert wait_until(lambda: min(r.view().step for r in runs) >= 5, timeout=120)
        time.sleep(2)
        view = runs[0].view()
        assert view.sharing == 2  # shown to the page: its steps/s is a share
        firsts = [r.view().step for r in runs[:2]]
        assert min(firsts) / max(firsts) > 0.5, firsts  # equal work, equal shares
        assert all(r.view().state == "training" for r in runs)
    finally:
        for run in runs:
            run.close()


def test_admission_over_the_limit_waits_in_line_and_starts_when_a_place_frees(one_process, monkeypatch):
    made = one_process
    monkeypatch.setattr(made, "max_training", 1)
    first, second, third = _run(), _run(), _run()
    try:
        assert wait_until(lambda: all(r.state == "ready" for r in (first, second, third)))
        first.play()
        second.play()
        third.step(5)
        assert second.state == third.state == "queued"
        assert second.view().message.startswith("The server is busy: 1 run ahead of yours")
        assert third.view().message.startswith("The server is busy: 2 runs ahead of yours")
        time.sleep(0.5)
        assert second.view().step == 0 and third.view().step == 0  # nothing trains while it waits
        assert made.stats()["training"] == 1 and made.stats()["waiting"] == 2
        first.pause()  # a place frees: the first in line starts, and the next moves up
        assert wait_until(lambda: second.view().state == "training" and second.view().step > 0)
        assert wait_until(lambda: third.view().message.startswith("The server is busy: 1 run ahead of yours"))
        second.pause()
        assert wait_until(lambda: third.view().step == 5 and not third.busy)  # its Step ran, then its place freed
        assert wait_until(lambda: made.stats()["training"] == 0 and made.stats()["waiting"] == 0)
        third.play()
        third.pause()  # Pause while waiting or training: the place is given back either way
        assert made.stats()["training"] == 0
    finally:
        for run in (first, second, third):
            run.close()


def test_while_runs_wait_training_runs_take_turns(one_process, monkeypatch):
    made = one_process
    monkeypatch.setattr(made, "max_training", 1)
    monkeypatch.setattr(pool_module, "TURN", 1.0)
    first, second = _run(), _run(seed=1)
    try:
        assert wait_until(lambda: first.state == second.state == "ready")
        first.play()
        second.play()
        assert second.state == "queued"
        assert wait_until(lambda: second.state == "training" and first.state == "queued", timeout=30)
        paused_at = first.view().step
        assert wait_until(lambda: first.state == "training" and second.state == "queued", timeout=30)
        assert wait_until(lambda: first.view().step > paused_at)  # it resumed where it paused
        assert made.stats()["training"] == 1 and made.stats()["waiting"] == 1
        second.pause()  # leaves the line: nobody waits, so the first keeps training past its turn
        time.sleep(2.5)
        assert first.state == "training" and made.stats()["waiting"] == 0
    finally:
        first.close()
        second.close()


def _feed(token: str) -> tuple[int, dict]:
    scope = {
        "type": "http", "method": "GET", "path": f"/api/live/{token}", "path_params": {"token": token},
        "query_string": b"since=-1", "headers": [],
    }  # fmt: skip
    response = asyncio.run(live_chart.feed(Request(scope)))
    return response.status_code, json.loads(response.body)


def test_a_closed_sessions_run_is_freed_and_its_feed_answers_404(one_process, monkeypatch):
    monkeypatch.setattr(live, "HEARTBEAT_TIMEOUT", 0.5)
    monkeypatch.setattr(one_process, "free_after", 1.0)
    connected = [True]
    run = _run(session_alive=lambda: connected[0])
    try:
        run.play()
        code, _ = _feed(run.token)
        assert code == 200 and wait_until(lambda: run.view().step > 0)
        connected[0] = False  # the tab closed (Streamlit keeps the session for a while; we don't wait for it)
        code, body = _feed(run.token)
        assert code == 404 and "no live run" in body["error"]
        time.sleep(1.0)
        stopped = run.view().step
        for _ in range(3):  # its feed's requests are no heartbeat: the run stays stopped
            assert _feed(run.token)[0] == 404
        time.sleep(0.3)
        assert run.view().step == stopped or run.state == "closed"
        assert wait_until(lambda: run.state == "closed" and not run.hosted, timeout=15)  # freed in its process
        assert "freed" in run.view().message and run.view().snapshot is None
        assert live.find_run(run.token) is None and one_process.stats()["runs"] == 0
    finally:
        run.close()


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("EHFLOW_WORKERS", "0", "EHFLOW_WORKERS must be a positive integer (a number of processes or runs), got '0'"),
        ("EHFLOW_MAX_RUNS", "four", "EHFLOW_MAX_RUNS must be a positive integer (a number of processes or runs)"),
        ("EHFLOW_FREE_AFTER", "-1", "EHFLOW_FREE_AFTER must be a number of seconds, 0 or more, got '-1'"),
        ("EHFLOW_FREE_AFTER", "inf", "EHFLOW_FREE_AFTER must be a number of seconds, 0 or more, got 'inf'"),
        ("EHFLOW_FREE_AFTER", "soon", "EHFLOW_FREE_AFTER must be a number of seconds, 0 or more, got 'soon'"),
    ],
)
def test_a_bad_server_setting_is_refused_by_name(monkeypatch, name, text, message):
    monkeypatch.setenv(name, text)
    with pytest.raises(ValueError, match=re.escape(message)):
        Pool()


def test_a_closed_tabs_grace_is_a_server_setting(monkeypatch):
    monkeypatch.setenv("EHFLOW_FREE_AFTER", "2.5")
    made = Pool(workers=1)
    try:
        assert made.free_after == 2.5
    finally:
        made.close()
    monkeypatch.delenv("EHFLOW_FREE_AFTER")
    made = Pool(workers=1)
    try:
        assert made.free_after == pool_module.FREE_AFTER == 10.0
    finally:
        made.close()


def test_a_process_that_closes_again_and_again_under_load_exits_cleanly():
    """Closed at once, and 1.5 s after its start, on busy cores: it exits cleanly (a warm-up thread
    still importing torch's compiler once made this abort it)."""
    # Both cores busy, at the process's own low priority (a busier machine only makes it slower).
    burner = "import os; os.nice(10)\nwhile True: pass"
    burn = [subprocess.Popen([sys.executable, "-c", burner]) for _ in range(2)]
    try:
        codes = []
        for delay in (0.0, 1.5):
            made = Pool(workers=1)
            made.prestart()
            time.sleep(delay)
            (worker,) = made.workers
            made.close()
            codes.append(worker.process.returncode)
        assert codes == [0, 0]
    finally:
        for process in burn:
            process.kill()
            process.wait()


def test_a_slider_move_is_confirmed_in_the_middle_of_a_long_turn(monkeypatch):
    """A snapshot, an evaluation or a symmetry readout makes a turn of up to ~0.4 s; the new κ is
    in use, and reported, without waiting for it: the host's reader thread applies it at once."""
    server_end, host_end = multiprocessing.Pipe()
    host = worker.Host(host_end)
    in_turn, turn_may_end = threading.Event(), threading.Event()

    def long_turn(slot):  # a turn that lasts until the test has its answer (or 60 s)
        in_turn.set()
        turn_may_end.wait(60)

    monkeypatch.setattr(worker.Slot, "turn", long_turn)
    loop = threading.Thread(target=host.loop)
    loop.start()
    settings = Settings(batch=64)

    def send(message) -> None:
        server_end.send_bytes(pickle.dumps(("run", message)))

    def kappas_until(kappa: float) -> list[float | None]:  # κ in use, as each update reported it
        seen: list[float | None] = []
        while kappa not in seen and server_end.poll(10):
            seen.append(pickle.loads(server_end.recv_bytes())[1].kappa)
        return seen

    try:
        send(Start(1, 1, settings, settings.make_target(), 60.0))
        send(Play(2))
        assert in_turn.wait(120)
        send(SetLive(kappa=0.5, lr=1e-3))
        during = kappas_until(0.5)
        confirmed_in_turn = not turn_may_end.is_set()
        assert 0.5 in during and confirmed_in_turn, during
        assert host.slots["run"].stepper.kappa == 0.5  # in use from the step under way or the next
    finally:
        turn_may_end.set()
        send(Close())
        loop.join(30)
    assert not loop.is_alive() and not host.reader.is_alive()  # the reader is joined on the way out


def test_an_exception_in_the_reader_ends_its_runs_with_the_reason(monkeypatch):
    """A message the server cannot fold: the process is stopped and its runs say why, instead of
    staying "training" with nobody reading them."""
    pool = as_server_pool(Pool(workers=1, max_training=8), monkeypatch)
    try:
        run = _run()
        assert wait_until(lambda: run.version > 0)
        (host,) = [w for w in pool.workers if run.id in w.runs]

        def broken(data: bytes) -> None:
            raise RuntimeError("a message the server cannot fold")

        monkeypatch.setattr(host, "_fold", broken)
        run.step(10)
        assert wait_until(lambda: run.state == "stopped", timeout=30)
        assert "could not read its training process (RuntimeError), which was stopped" in run.view().message
        assert wait_until(lambda: not host.alive) and pool.stats()["runs"] == 0
    finally:
        pool.close()


def test_one_browsers_tabs_hold_at_most_its_share_while_another_browsers_tab_trains(one_process, monkeypatch):
    """Ten tabs of one browser: six runs hosted (the seventh refused, saying why), two of them
    training and the rest waiting with the reason; another browser's tab trains at once."""
    monkeypatch.setattr(one_process, "client_training", 2)
    monkeypatch.setattr(one_process, "client_runs", 6)
    runs: list[LiveRun] = []
    try:
        for _ in range(10):
            try:
                runs.append(_run(client="student"))
            except OSError as err:
                refused = str(err)
                break
        assert len(runs) == 6 and "already has 6 runs on the server, the most one browser may have" in refused
        for run in runs:
            run.play()
        assert wait_until(lambda: sum(run.state == "training" for run in runs) == 2)
        queued = [run for run in runs if run.state == "queued"]
        assert len(queued) == 4 and "This browser already trains 2 runs" in (queued[0].view().message or "")
        other = _run(client="teacher")
        runs.append(other)
        other.play()
        assert wait_until(lambda: other.state == "training")
        runs[0].pause()  # the student's place frees: the next of the student's runs takes it
        assert wait_until(lambda: sum(run.state == "training" for run in runs[:6]) == 2 and runs[0].state != "training")
    finally:
        for run in runs:
            run.close()


def test_a_process_with_fewer_training_runs_trains_them_at_the_pools_pace():
    """Pace 3 and one active run here: after each turn of t seconds the process waits 2 t (handling
    commands meanwhile), so its run gets a third of a core, as each run of a process with three does."""
    host = worker.Host(worker.Mailbox())
    host.pace, host.active = 3, 1
    waited = []
    host.receive = lambda timeout: waited.append(timeout) or time.sleep(timeout) or True
    began = time.monotonic()
    assert host.paced(0.05)
    assert 0.1 <= time.monotonic() - began < 0.5 and waited and waited[0] <= 0.1
    host.receive = lambda timeout: False  # the server closed its end meanwhile: the loop ends
    assert not host.paced(0.05)
