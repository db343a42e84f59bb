"""The live run's bookkeeping that needs no worker process: bounded curve history, sent as it grows."""

from __future__ import annotations

import json

from dashboard.live_chart import NO_CONSTRAINT, Figures, extension
from dashboard.run_state import CURVE_CAP, thin
from ehflow_core.figures import constraint_spec, curves_spec
from ehflow_core.training import Record


def _record(step: int) -> Record:
    return Record(step=step, seconds=0.0, steps_per_s=1.0, train_bound=-3.0, loss=3.0, grad_norm=1.0,
                  constraint={}, lam={}, kappa=None, test_log_likelihood=-2.9 if step % 50 == 0 else None)  # fmt: skip


def test_a_long_curve_is_thinned_to_its_cap_keeping_the_recent_past_and_the_whole_span():
    cap = 300
    curve: list[Record] = []
    for start in range(0, 100_000, 10):  # records arrive as the worker sends them, 10 at a time
        curve.extend(_record(s) for s in range(start + 1, start + 11))
        if len(curve) > cap:
            curve = thin(curve, cap)
    steps = [r.step for r in curve]
    assert len(curve) <= cap and steps == sorted(steps) and len(set(steps)) == len(steps)
    assert steps[0] == 1 and steps[-1] == 100_000  # the whole span: first and latest record
    assert steps[-cap // 2 :] == list(range(100_000 - cap // 2 + 1, 100_001))  # the recent past, every step
    evals = [r.step for r in curve if r.test_log_likelihood is not None]
    for tenth in range(10):  # evaluations survive across the whole run, evenly
        assert any(tenth * 10_000 < e <= (tenth + 1) * 10_000 for e in evals), tenth
    short = [_record(s) for s in range(1, 101)]
    assert thin(short, cap) == short


def _grown(drawn: dict, ext: dict) -> dict:
    """What the live panel draws from ``ext`` on top of ``drawn`` (live_panel.js, ``chart.extend``)."""
    data = [
        {**trace, "x": old["x"][:keep] + trace["x"], "y": old["y"][:keep] + trace["y"]}
        for old, trace, keep in zip(drawn["data"], ext["data"], ext["keep"], strict=True)
    ]
    return {"data": data, "layout": ext["layout"]}


def test_growing_curves_are_sent_as_their_new_points_and_rebuilt_exactly_after_each_thinning():
    curve, drawn = [], {}
    appended = {"curves": 0, "constraint": 0}
    rebuilt = {"curves": 0, "constraint": 0}
    for start in range(0, 12_000, 50):
        for step in range(start + 1, start + 51):
            curve.append(_record(step))
            curve[-1].constraint, curve[-1].lam, curve[-1].kappa = {"L_12": 1 / step}, {"L_12": step / 10}, 0.01
        curve = thin(curve, CURVE_CAP) if len(curve) > CURVE_CAP else curve
        for key, spec in (("curves", curves_spec({"run": curve})), ("constraint", constraint_spec(curve))):
            if key in drawn:
                ext = extension(drawn[key], spec)
                assert ext is not None
                if ext["append"]:  # Plotly.extendTraces: the same layout and traces, points at the ends
                    assert ext["keep"] == [len(t["x"]) for t in drawn[key]["data"]]
                    assert ext["layout"] == drawn[key]["layout"]
                    appended[key] += 1
                else:
                    rebuilt[key] += 1
                assert _grown(drawn[key], ext) == spec
                if not rebuilt[key]:
                    assert sum(len(t["x"]) for t in ext["data"]) <= 2 * 50  # the new records' points
            drawn[key] = spec
    # Most updates only append; a thinning, a short run's wider smoothing window and a log axis
    # reaching another decade rebuild the chart from the points kept.
    for key in appended:
        assert appended[key] > 3 * rebuilt[key] > 0, (key, appended, rebuilt)
    whole = drawn["curves"]
    assert extension(whole, {**whole, "data": whole["data"][:1]}) is None  # a trace fewer: the whole figure


def test_the_feed_sends_a_figure_the_page_has_as_its_hash_and_a_grown_curve_as_new_points():
    curve = [_record(s) for s in range(1, 601)]  # past 500 records the smoothing window stays put
    older = Figures(1)
    older.add({"curves": curves_spec({"run": curve}), "constraint": None})
    curve += [_record(s) for s in range(601, 651)]
    newer = Figures(2, sent=older.sent)
    newer.add({"curves": curves_spec({"run": curve}), "constraint": None})
    whole = json.loads(newer.answer(set()))
    assert whole["curves"]["figure"]["data"][0]["x"][-1] == 650 and whole["constraint"] == {"note": NO_CONSTRAINT}
    same = json.loads(newer.answer({newer.hashes["curves"]}))
    assert same["curves"] == {"hash": newer.hashes["curves"]}
    grown = json.loads(newer.answer({older.hashes["curves"], "not-a-hash"}))["curves"]
    assert grown["base"] == older.hashes["curves"] and grown["hash"] == newer.hashes["curves"]
    assert grown["extend"]["append"] and grown["extend"]["data"][0]["x"] == [650]  # one test point, at 650
    assert len(json.dumps(grown)) < len(json.dumps(whole["curves"])) / 5
