"""The live run's bookkeeping that needs no worker process: bounded curve history."""

from __future__ import annotations

from dashboard.live import thin
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
