"""The dashboard's live runs (the pool's processes, pause, step, heartbeat, admission, freeing),
its feed, and the page via AppTest.

Training processes take seconds to start: the module is marked slow.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import gzip
import json
import os
import signal
import time
from html import escape as html_escape
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import wait_until
from starlette.requests import Request
from streamlit.testing.v1 import AppTest

from dashboard import figures_page, live, live_chart
from dashboard.live import LiveRun
from dashboard.settings import PRESETS, Settings
from ehflow_core.checkpoint import read_checkpoint
from ehflow_core.targets import DataTarget

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "page.py")
pytestmark = pytest.mark.slow


# -- the live run ---------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def patient_heartbeat(monkeypatch):
    """Tests poll from Python, not from a page: a long heartbeat unless a test sets its own."""
    monkeypatch.setattr(live, "HEARTBEAT_TIMEOUT", 60.0)


def _small_run(**changes) -> LiveRun:
    settings = Settings(batch=64, **changes)
    return LiveRun(settings, settings.make_target())


def test_play_pause_step_and_close_free_the_run():
    run = _small_run()
    try:
        run.play()  # pressed before the worker finished starting: it trains once it has
        assert wait_until(lambda: run.view().step >= 5)
        run.pause()
        assert wait_until(lambda: run.confirmed and run.view().state == "paused" and not run.busy)
        paused_at = run.view().step
        time.sleep(0.5)
        assert run.view().step == paused_at and run.view().state == "paused"
        run.step(7)
        run.step(7)  # a click delivered twice while busy: ignored
        assert wait_until(lambda: run.view().step == paused_at + 7 and not run.busy)
        time.sleep(0.3)
        assert run.view().step == paused_at + 7
        assert run.view().snapshot is not None and run.view().version >= 1
    finally:
        run.close()
    assert not run.hosted and run.view().state == "closed" and live.find_run(run.token) is None


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_training_runs_in_its_own_process():
    run = _small_run()
    try:
        assert wait_until(lambda: run.state == "ready")
        worker = run.host.process.pid
        ours, theirs, step = sum(os.times()[:2]), _cpu_seconds(worker), run.view().step
        run.play()
        assert wait_until(lambda: run.view().step >= step + 20)
        run.pause()
        ours, theirs = sum(os.times()[:2]) - ours, _cpu_seconds(worker) - theirs
        assert theirs > 0.2 and ours < theirs, (ours, theirs)  # the steps were computed over there
    finally:
        run.close()


def test_live_kappa_and_learning_rate_reach_the_running_trainer():
    run = _small_run()
    try:
        run.play()
        assert wait_until(lambda: run.view().kappa == pytest.approx(0.01))
        run.set_live(0.5, 1e-3)
        assert wait_until(lambda: run.view().kappa == 0.5 and run.view().lr == 1e-3)  # as the trainer reports them
    finally:
        run.close()


def test_training_stops_without_heartbeat_and_a_view_resumes_it(monkeypatch):
    monkeypatch.setattr(live, "HEARTBEAT_TIMEOUT", 0.5)
    run = _small_run()
    try:
        run.play()
        assert wait_until(lambda: run.view().step > 0)

        def settled() -> bool:  # no page looked: the tab is gone, so training stops
            before = run.view().step
            time.sleep(0.6)
            return run.view().step == before

        assert wait_until(settled, timeout=30)
        stopped_at = run.view().step
        assert run.worker_alive  # the model is kept, in case the page was only slow
        run.beat()  # a page view after all: training resumes
        assert wait_until(lambda: run.view().step > stopped_at)
    finally:
        run.close()
    assert not run.hosted


def test_a_dropped_session_frees_its_run_and_keeps_the_process():
    run = _small_run()
    worker, run_id = run.host, run.id
    assert wait_until(lambda r=run: r.view().snapshot is not None)
    del run  # Streamlit dropped the session and its state
    gc.collect()
    assert wait_until(lambda: run_id not in worker.runs, timeout=30)  # the process confirmed it freed the run
    assert worker.alive  # and stays, warm, for the next session


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="stops the process with SIGSTOP")
def test_freeing_a_run_never_waits_for_its_process():
    """Streamlit frees a session in whatever thread drops it (the event loop, in practice), and the
    pool frees closed tabs' runs: neither may wait on a process, even one that does not answer."""
    run = _small_run()
    other = _small_run()
    assert wait_until(lambda o=other: run.state == "ready" and o.state == "ready")
    worker = run.host
    os.kill(worker.process.pid, signal.SIGSTOP)  # a process that answers nothing
    try:
        began = time.perf_counter()
        run.free("test")
        del other
        gc.collect()  # the finalizer runs here, in this thread
        took = time.perf_counter() - began
        assert took < 0.5, took
        assert run.state == "closed" and live.find_run(run.token) is None
    finally:
        os.kill(worker.process.pid, signal.SIGCONT)
    assert wait_until(lambda: not run.hosted, timeout=30)


def test_reset_starts_a_new_run_in_the_same_process():
    run = _small_run()
    try:
        pid = run.host.process.pid
        run.step(5)
        assert wait_until(lambda: run.view().step == 5 and not run.busy)
        first = run.view().snapshot
        run.reset(Settings(batch=64), Settings().make_target())
        assert run.view().step == 0 and run.view().curves == {"κ=0.01": []}
        assert wait_until(lambda: run.state == "ready")
        assert run.host.process.pid == pid
        assert run.view().step == 0
        # Same seed, same start: the untrained model's picture is the first run's before training.
        again = _small_run()
        try:
            assert wait_until(lambda: again.view().snapshot is not None)
            np.testing.assert_allclose(run.view().snapshot.potential, again.view().snapshot.potential)
            assert not np.allclose(first.potential, run.view().snapshot.potential)  # 5 steps moved U
        finally:
            again.close()
    finally:
        run.close()


def test_sweep_mode_trains_every_kappa_and_the_baseline():
    run = _small_run(sweep=True, log10_kappa=-2.0)
    try:
        assert list(run.view().curves) == ["κ=0.001", "κ=0.01", "κ=0.1", "none"]
        assert run.primary_label == "κ=0.01"
        run.step(3)
        assert wait_until(lambda: set(run.view().step_by_run.values()) == {3} and not run.busy)
        assert run.view().kappa == pytest.approx(0.01)
        # The sweep is one batched ensemble: a live learning rate reaches its shared optimiser.
        run.set_live(0.01, 1e-3)
        run.step(2)
        assert wait_until(lambda: set(run.view().step_by_run.values()) == {5} and run.view().lr == 1e-3)
        # The download of a sweep's run carries its slice of the ensemble's Adam state: it resumes.
        state = read_checkpoint(run.checkpoint_bytes())
        assert json.loads(state["train_config"])["kappa"] == pytest.approx(0.01) and state["step"] == 5
        moments = state["optimizer"]["state"]
        assert len(moments) > 20 and all(int(entry["step"]) == 5 for entry in moments.values())
    finally:
        run.close()


def test_checkpoints_asked_at_once_each_reach_their_asker_and_no_one_waits_for_one():
    """The teaching views ask for the model without waiting while a download may ask too: each
    answer goes to its own ticket, and one asked after two steps holds those steps."""
    run = _small_run()
    try:
        first = run.ask_checkpoint()
        run.step(2)
        assert wait_until(lambda: run.view().step == 2 and not run.busy)
        second = run.ask_checkpoint()
        assert wait_until(lambda: {first, second} <= set(run.shared.replies))
        assert read_checkpoint(run.checkpoint_reply(second))["step"] == 2
        assert read_checkpoint(run.checkpoint_reply(first))["step"] == 0
        assert run.checkpoint_reply(first) is None  # taken once
    finally:
        run.close()
    with pytest.raises(RuntimeError, match="has ended"):
        run.checkpoint_reply(run.ask_checkpoint(), wait=1.0)


def test_divergence_shows_a_message_and_keeps_finite_weights():
    run = _small_run(dt=1e20)  # far beyond the slider: the loss overflows at once
    try:
        run.play()
        assert wait_until(lambda: run.view().state == "diverged")
        assert "too large" in run.view().message and "Reset" in run.view().message
        state = read_checkpoint(run.checkpoint_bytes())  # the model as the worker keeps it
        assert all(torch.isfinite(p).all() for p in state["model"].values())
        run.play()  # no restart after a divergence
        time.sleep(0.3)
        assert run.view().state == "diverged"
    finally:
        run.close()


# -- the live panel's feed ------------------------------------------------------------------------
def _feed(token: str, since: str = "-1") -> tuple[int, dict]:
    """GET /api/live/<token>?since=… through the route's handler (an ASGI request, no network)."""
    scope = {
        "type": "http", "method": "GET", "path": f"/api/live/{token}", "path_params": {"token": token},
        "query_string": f"since={since}".encode(), "headers": [],
    }  # fmt: skip
    response = asyncio.run(live_chart.feed(Request(scope)))
    return response.status_code, json.loads(response.body)


def test_the_feed_sends_each_snapshot_once_with_every_panel_and_the_readouts():
    run = _small_run()
    try:
        assert wait_until(lambda: run.state == "ready" and run.version > 0)
        code, body = _feed(run.token)
        assert code == 200 and body["version"] == run.version
        assert set(body["charts"]) == {"density", "energies", "trajectories", "curves", "constraint"}
        density = body["charts"]["density"]
        sources = [image["source"] for image in density["figure"]["layout"]["images"]]
        assert len(sources) == 2 and all(s.startswith("data:image/png;base64,") for s in sources)
        assert density["frame"] and body["charts"]["curves"]["frame"] == ""  # only map panels swap pictures
        assert len({chart["hash"] for chart in body["charts"].values()}) == 5  # each figure named by its content
        assert "note" not in body["charts"]["constraint"]  # the default run has a generator
        status = body["status"]
        assert status["values"]["state"] == "ready" and status["values"]["step"] == "0" and not status["training"]
        assert status["caption"].startswith("In use by the trainer now: κ = 0.01")
        # Nothing newer: the answer (after the wait) has the readouts but no figures.
        code, again = _feed(run.token, str(body["version"]))
        assert code == 200 and "charts" not in again and again["status"]["stamp"] > status["stamp"]
        # Training: asking for a newer snapshot gets one, with the step counter moving.
        run.play()
        deadline = time.monotonic() + 60
        code, later = _feed(run.token, str(body["version"]))
        while "charts" not in later and time.monotonic() < deadline:
            code, later = _feed(run.token, str(body["version"]))
        assert later["version"] > body["version"] and later["status"]["values"]["state"] == "training"
        assert later["status"]["training"]
    finally:
        run.close()


def test_the_feed_says_why_a_panel_is_missing_and_rejects_bad_requests():
    run = _small_run(generator_on=False)
    try:
        assert wait_until(lambda: run.state == "ready" and run.version > 0)
        code, body = _feed(run.token)
        assert code == 200 and body["charts"]["constraint"] == {"note": live_chart.NO_CONSTRAINT}
        assert "κ = none (no constraint)" in body["status"]["caption"]
        exact = _small_run(exact=True)  # the rotation generator on, but nothing to constrain
        try:
            assert wait_until(lambda: exact.state == "ready" and exact.version > 0)
            code, answer = _feed(exact.token)
            assert code == 200 and answer["charts"]["constraint"] == {"note": live_chart.EXACT_SYMMETRY}
            assert "κ = none (exact symmetry: nothing to constrain)" in answer["status"]["caption"]
        finally:
            exact.close()
        code, body = _feed(run.token, "abc")
        assert code == 400 and "since must be an integer" in body["error"] and "'abc'" in body["error"]
        code, body = _feed("not-a-token")
        assert code == 404 and "no live run" in body["error"]
    finally:
        run.close()


def test_plotly_js_is_served_gzipped_once_or_whole():
    def get(accept_encoding: str):
        scope = {
            "type": "http", "method": "GET", "path": f"/{live_chart.PLOTLY_SRC}", "query_string": b"",
            "headers": [(b"accept-encoding", accept_encoding.encode())],
        }  # fmt: skip
        return asyncio.run(live_chart.plotly_js(Request(scope)))

    zipped, plain = get("gzip, deflate, br"), get("")
    assert zipped.headers["content-encoding"] == "gzip" and zipped.headers["vary"] == "Accept-Encoding"
    assert gzip.decompress(zipped.body) == live_chart.PLOTLY_JS.read_bytes()
    assert len(zipped.body) < live_chart.PLOTLY_JS.stat().st_size / 2
    # Whole, and marked so: Streamlit's gzip middleware leaves it alone rather than compress it per request.
    assert plain.headers["content-encoding"] == "identity" and plain.path == live_chart.PLOTLY_JS
    assert live_chart.plotly_js_gzip() is live_chart.plotly_js_gzip()  # compressed once per server


def test_the_figures_download_is_laid_out_like_the_live_panel():
    run = _small_run()
    try:
        assert wait_until(lambda: run.version > 0)
        html = figures_page.figures_document(run.view(), run.primary_label, run.settings)
        assert html.count("Plotly.newPlot(") == 5  # the five panels, with traces
        # The panel's rows: two figures, two, one; each at its panel's height.
        assert html.count("grid-template-columns:repeat(2,") == 2 and html.count("grid-template-columns:repeat(1,") == 1
        assert html.count("height:340px") == 2 and html.count("height:360px") == 2 and html.count("height:420px") == 1
        without = figures_page.figures_document(
            run.view(), run.primary_label, dataclasses.replace(run.settings, generator_on=False)
        )
        assert without.count("Plotly.newPlot(") == 4
        # Titled with what it shows, and carrying the vendored basic bundle, not plotly's full one.
        view = run.view()
        title = f"ehflow: {PRESETS[run.settings.preset].label} · run {run.primary_label} · step {view.step:,}"
        assert f"<title>{html_escape(title)}" in figures_page.figures_document(view, run.primary_label, run.settings)
        page = figures_page.figures_page(run)
        assert len(page) < 2e6 and b"plotly.js (basic - minified)" in page and f"step {view.step:,}".encode() in page
    finally:
        run.close()


def test_the_figures_download_is_built_once_per_snapshot_version():
    """40 clicks on the Figures download: one page for the version, not 40 (a class clicking away
    does not grow the server)."""
    import tracemalloc

    run = _small_run()
    try:
        assert wait_until(lambda: run.version > 0)
        run.pause()
        assert wait_until(lambda: not run.busy)
        first = figures_page.figures_page(run)
        tracemalloc.start()
        try:
            pages = [figures_page.figures_page(run) for _ in range(40)]
            grown = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert all(page is first for page in pages) and grown < 1e6, grown
        run.step(10)
        assert wait_until(lambda: figures_page.figures_page(run) is not first)  # a new version: a new page
    finally:
        run.close()


# -- the app --------------------------------------------------------------------------------------
@pytest.fixture
def app():
    at = AppTest.from_file(APP, default_timeout=120)
    yield at
    run = at.session_state["run"] if "run" in at.session_state else None
    if run is not None:
        run.close()


def _readouts(app: AppTest) -> dict[str, str]:
    """The live panel's readouts as the page sent them (a custom component: its data in proto.json)."""
    data = [json.loads(e.proto.json) for e in app.get("bidi_component")]
    (panel,) = [json.loads(d["json"]) for d in data if "json" in d]  # the other one preloads plotly.js
    return panel["status"]["values"]


def test_app_runs_without_exception_and_shows_the_default_experiment(app):
    app.run()
    assert not app.exception and not app.error
    run = app.session_state["run"]
    assert run.target.name == "ring" and run.settings == Settings()
    assert wait_until(lambda: run.state == "ready")  # the worker process has built the model
    app.run()
    assert [b.label for b in app.sidebar.button] == ["Train", "Step", "Reset"]
    assert _readouts(app)["state"] == "ready"
    formulas = [element.value for element in app.get("latex")]  # the teaching panels
    assert len(formulas) >= 5
    # The model panel: the change of variables, with the log-determinant that vanishes here, and L_K
    # written as the expectation it is.
    assert any(r"\det" in f and r"+ 0" in f for f in formulas), formulas
    assert any("L_K(q) = \\mathbb{E}" in f for f in formulas), formulas


def test_widgets_map_to_configs_and_model_changes_apply_on_reset(app):
    app.run()
    app.slider(key="w_dt").set_value(1.0).run()
    assert app.session_state["run"].settings.dt == 0.5
    assert any("press **Reset**" in i.value for i in app.sidebar.info)
    app.sidebar.button[2].click().run()  # Reset
    run = app.session_state["run"]
    assert run.settings.dt == 1.0 and not app.sidebar.info
    app.slider(key="w_log10_kappa").set_value(-3.0).run()  # a live setting: no Reset needed
    assert not app.sidebar.info
    assert app.query_params["log10_kappa"] == "-3" and app.query_params["dt"] == "1"


def test_the_sweep_toggle_is_disabled_without_a_generator(app):
    app.run()
    assert not app.toggle(key="w_sweep").disabled
    app.toggle(key="w_generator_on").set_value(False).run()
    sweep = app.toggle(key="w_sweep")
    assert sweep.disabled and "Needs the soft constraint" in sweep.help
    assert app.toggle(key="w_exact").disabled  # exact symmetry needs the generator too


def test_exact_symmetry_disables_kappa_and_its_sweep_and_applies_on_reset(app):
    app.run()
    app.toggle(key="w_exact").set_value(True).run()
    assert app.slider(key="w_log10_kappa").disabled and app.toggle(key="w_sweep").disabled
    assert any("press **Reset**" in i.value for i in app.sidebar.info)
    app.sidebar.button[2].click().run()  # Reset
    run = app.session_state["run"]
    assert run.settings.exact_symmetry and run.primary_label == "exact" and app.query_params["exact"] == "1"
    assert run.settings.train_config().flow.invariant_blocks == ((0, 1),) and not app.exception


def test_presets_load(app):
    app.run()
    app.selectbox(key="w_preset").set_value("fig2b").run()
    assert app.session_state["w_base"] == "soft_uniform" and app.session_state["w_generator_on"] is False
    app.sidebar.button[2].click().run()
    assert app.session_state["run"].target.name == "gaussians8" and not app.exception


def test_train_and_pause_from_the_page(app):
    app.run()
    app.sidebar.button[0].click().run()  # Train
    run = app.session_state["run"]
    assert run.view().state == "training" and app.sidebar.button[0].label == "Pause"
    assert wait_until(lambda: run.view().step > 3)
    app.run()
    readouts = _readouts(app)
    assert readouts["state"] == "training" and int(readouts["step"].replace(",", "")) > 3
    app.sidebar.button[0].click().run()  # Pause
    assert run.view().state == "paused" and not app.exception


def test_a_training_process_that_died_leaves_the_page_up_and_reset_starts_another(app):
    app.run()
    run = app.session_state["run"]
    assert wait_until(lambda: run.state == "ready")
    run.host.process.kill()  # as the OS would (out of memory, say)
    assert wait_until(lambda: not run.worker_alive)
    app.run()
    assert not app.exception
    model = next(b for b in app.get("download_button") if b.proto.label == "Model (checkpoint)")
    assert model.proto.disabled  # no checkpoint to fetch from a dead process
    app.sidebar.button[2].click().run()  # Reset: a new process
    new = app.session_state["run"]
    assert new is not run and wait_until(lambda: new.state == "ready") and not app.exception


def test_bad_query_params_fall_back_with_a_notice():
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params.update({"dt": "-3", "preset": "bogus", "seed": "abc"})
    at.run()
    try:
        assert not at.exception
        notices = [w.value for w in at.warning]
        assert len(notices) == 3 and any("`dt`=`-3`" in n for n in notices)
        assert at.session_state["run"].settings == Settings()
    finally:
        at.session_state["run"].close()


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "no numeric rows found"),
        (b"x,y\n1,2\n3,abc\n", "row 3: 'abc' is not a number"),
        (b"1,2\nnan,2\n" + b"1,2\n" * 30, "row 2: holds a non-finite value"),
        (b"1\n" * 30, "expected at least 2 columns"),
        (b"1,2,3\n" * 30, "expected at most 2 columns"),
        (b"1,2\n" * 60_000, "more than 50000 rows"),
    ],
    ids=["empty", "not-numeric", "nan", "one-column", "three-columns", "too-many-rows"],
)
def test_bad_upload_gives_a_message_and_changes_nothing(app, content, message):
    app.run()
    app.selectbox(key="w_preset").set_value("upload").run()
    before = app.session_state["run"]
    app.sidebar.get("file_uploader")[0].set_value(("points.csv", content, "text/csv")).run()
    assert not app.exception
    assert any(message in e.value for e in app.sidebar.error), [e.value for e in app.sidebar.error]
    assert "uploaded" not in app.session_state and app.session_state["run"] is before


def test_good_upload_trains_on_the_points_after_reset(app):
    app.run()
    app.selectbox(key="w_preset").set_value("upload").run()
    rows = "\n".join(f"{0.1 * i},{-0.05 * i}" for i in range(40)).encode()
    app.sidebar.get("file_uploader")[0].set_value(("mine.csv", b"x,y\n" + rows, "text/csv")).run()
    assert any("Loaded 40 points" in s.value for s in app.sidebar.success)
    app.sidebar.button[2].click().run()
    assert app.session_state["run"].target.name == "mine" and not app.exception


def test_a_control_that_does_not_apply_is_disabled_and_keeps_its_value(app):
    """Under a data preset the finite-data controls do not apply: they are disabled, not left out
    (Streamlit drops an undrawn widget's value), and have their values when they apply again."""
    app.run()
    assert app.number_input(key="w_n_train").disabled  # infinite data: N does not apply
    app.toggle(key="w_finite").set_value(True).run()
    app.number_input(key="w_n_train").set_value(800).run()
    app.selectbox(key="w_preset").set_value("draw").run()
    assert not app.exception and app.toggle(key="w_finite").disabled and app.number_input(key="w_n_train").disabled
    app.selectbox(key="w_preset").set_value("fig2a").run()
    assert not app.exception and not app.toggle(key="w_finite").disabled
    assert app.toggle(key="w_finite").value and app.number_input(key="w_n_train").value == 800


def test_streamlits_assets_come_from_memory_gzipped_and_nothing_else_is_served():
    """The static-assets middleware: an asset is its file, gzipped for a browser that accepts it;
    a path that is not an asset (a traversal, an unknown file, a page) passes through to Streamlit."""
    from dashboard.static_assets import ROOT, StaticAssets, files

    passed = []

    async def streamlit_app(scope, receive, send):
        passed.append(scope["path"])

    def get(path: str, encoding: str = "gzip") -> tuple[dict, bytes]:
        sent = []

        async def send(message):
            sent.append(message)

        async def receive():
            return {"type": "http.request"}

        scope = {"type": "http", "method": "GET", "path": path, "headers": [(b"accept-encoding", encoding.encode())]}
        asyncio.run(StaticAssets(streamlit_app)(scope, receive, send))
        if not sent:
            return {}, b""
        return {k.decode(): v.decode() for k, v in sent[0]["headers"]}, b"".join(m.get("body", b"") for m in sent[1:])

    script = next(path for path in files() if path.endswith(".js"))
    headers, body = get(f"/static/{script}")
    assert headers["content-encoding"] == "gzip" and "immutable" in headers["cache-control"]
    assert gzip.decompress(body) == (ROOT / script).read_bytes()
    headers, body = get(f"/static/{script}", encoding="")
    assert headers["content-encoding"] == "identity" and body == (ROOT / script).read_bytes()
    for path in ("/static/../../index.html", "/static/js/nope.js", "/", "/api/pool", "/static/%2e%2e/index.html"):
        assert get(path) == ({}, b"") and passed[-1] == path


@pytest.mark.parametrize("sweep", [False, True])
def test_the_users_points_are_split_a_held_out_share_tests_and_the_rest_trains(sweep):
    from dashboard.protocol import Start
    from dashboard.slot import Slot
    from ehflow_core.targets import HOLDOUT

    points = torch.randn(200, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    settings = Settings(batch=64, sweep=sweep).with_preset("upload")
    slot = Slot("run", post=lambda *_: None)
    slot.start(Start(1, 1, settings, DataTarget(points), 60.0))
    assert len(slot.runs) == (4 if sweep else 1)
    for run in slot.runs.values():
        train, test = run.train_data.double(), run.test_data.double()
        assert len(test) == round(HOLDOUT * 200) and len(train) == 200 - len(test)
        rows = {tuple(r) for r in train.tolist()}
        assert not rows & {tuple(r) for r in test.tolist()}  # no test point is trained on
        assert rows | {tuple(r) for r in test.tolist()} == {tuple(r) for r in points.float().double().tolist()}


def test_the_peer_trains_as_long_as_the_flow_and_is_scored_exactly_on_the_same_test_points():
    from dashboard.protocol import Start
    from dashboard.settings import PEER_LABEL
    from dashboard.slot import Slot

    sent = []
    settings = Settings(batch=64, peer=True, finite=True, n_train=300)
    slot = Slot("run", post=lambda _, update: sent.append(update))
    slot.start(Start(1, 1, settings, settings.make_target(), 60.0))
    assert settings.labels() == ["κ=0.01", PEER_LABEL] and slot.labels == settings.labels()
    for _ in range(settings.train_config().eval_every):
        assert slot.train_round()
    flow = slot.primary
    assert flow.step == 50 and slot.peer.steps > 0
    assert slot.peer.seconds >= slot.flow_seconds  # it caught up with the flow's training time...
    assert slot.peer.seconds - slot.flow_seconds < 0.5  # ...by at most one of its steps
    (scored,) = slot.records[PEER_LABEL]  # scored where the flow was evaluated, on the same points
    assert scored.step == 50 and scored.test_log_likelihood == pytest.approx(slot.peer.log_likelihood(flow.eval_test))
    assert scored.train_log_likelihood == pytest.approx(slot.peer.log_likelihood(flow.eval_train))
    with torch.no_grad():  # an exact density: its log p integrates to 1 over the plane (grid sum)
        xs = torch.linspace(-6, 6, 241)
        grid = torch.cartesian_prod(xs, xs)
        mass = slot.peer.model().log_prob(grid).exp().sum() * (xs[1] - xs[0]) ** 2
    assert float(mass) == pytest.approx(1.0, abs=0.02)
    slot.take_snapshot()
    label, kde = slot.snapshot.peer
    assert label == PEER_LABEL and kde.shape == slot.snapshot.model_kde.shape and kde.sum() > 0
    assert any(PEER_LABEL in u.records for u in sent)


def test_a_sweep_with_the_peer_sends_every_members_curve_and_the_peers():
    from dashboard.protocol import Start
    from dashboard.settings import PEER_LABEL
    from dashboard.slot import Slot

    sent = []
    settings = Settings(batch=32, peer=True, sweep=True)
    slot = Slot("run", post=lambda _, update: sent.append(update))
    slot.start(Start(1, 1, settings, settings.make_target(), 60.0))
    assert slot.labels == settings.labels() and len(slot.labels) == 5 and slot.labels[-1] == PEER_LABEL
    for _ in range(settings.train_config().eval_every):
        assert slot.train_round()
    assert slot.peer.seconds >= slot.flow_seconds > 0  # as long as the whole ensemble trained
    slot.send()
    assert set(sent[-1].records) == set(settings.labels()) and len(sent[-1].records[PEER_LABEL]) == 1
