"""A sweep's results: ``results.csv``, the tables over seeds (mean ± sd and a 95 % interval per
setting; each κ paired with its unconstrained twin), and the curves, from the runs' folders. The
driver is :mod:`ehflow_core.sweep`."""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._files import csv_text, write_atomic
from .run import Record
from .sweep_grid import AXES, RunSpec

RESULT_COLUMNS = (
    "key", *AXES, "status", "steps", "test_log_likelihood", "gap_nats", "train_log_likelihood", "constraint",
    "seconds", "node", "message",
)  # fmt: skip
SETTING_COLUMNS = tuple(axis for axis in AXES if axis != "seed")  # a setting: a run but its seed
CURVE_AXES = tuple(axis for axis in SETTING_COLUMNS if axis != "kappa")  # a figure of curves: one line per κ
METRICS = ("test_log_likelihood", "gap_nats", "train_log_likelihood", "constraint")  # aggregated over seeds


def write_results(out: Path, rows: Sequence[dict[str, Any]], runs: Sequence[RunSpec] = ()) -> None:
    """``results.csv`` (a row a run), ``table.json`` and ``table.md`` (each setting's metrics over
    its finished seeds, :func:`aggregate`), ``paired.json`` (and a second table in ``table.md``:
    each κ against its unconstrained twin, :func:`paired_with_unconstrained`), and, for ``runs``,
    Figure 2A-style curves."""
    write_atomic(out / "results.csv", csv_text(rows, RESULT_COLUMNS))
    table, paired = aggregate(rows), paired_with_unconstrained(rows)
    (out / "table.json").write_text(json.dumps(table, indent=2))
    (out / "paired.json").write_text(json.dumps(paired, indent=2))
    (out / "table.md").write_text(table_markdown(table, paired))
    if runs:
        write_curves(out, rows, runs)


def write_curves(out: Path, rows: Sequence[dict[str, Any]], runs: Sequence[RunSpec]) -> list[Path]:
    """For each setting but κ (target, data size, dt, leapfrog steps, lr), the train and test
    curves of every κ, from its first finished seed: ``curves/<setting>.html`` (``.`` written ``p``)."""
    from .figures import curves_figure, write_figure
    from .reporting import read_metrics
    from .run import run_label

    by_key = {run.key: run for run in runs}
    groups: dict[tuple, dict[str, list[Record]]] = {}
    for row in sorted((r for r in rows if r["status"] == "finished"), key=lambda r: r["seed"]):
        run = by_key[row["key"]]
        curves = groups.setdefault(tuple(getattr(run, axis) for axis in CURVE_AXES), {})
        label = run_label(run.kappa)
        if label not in curves:
            curves[label] = read_metrics(out / "runs" / run.key / "metrics.csv")
    written = []
    (out / "curves").mkdir(exist_ok=True)
    for (target, n_train, dt, n_steps, lr), curves in groups.items():
        data = "infinite data" if n_train is None else f"{n_train} points"
        source = re.sub(r"[^A-Za-z0-9_-]+", "_", target)  # a data file's path: one safe name
        name = f"{source}_{'inf' if n_train is None else n_train}_dt{dt:g}_steps{n_steps}_lr{lr:g}".replace(".", "p")
        estimators = next(r for r in runs if r.target == target).config().estimators
        title = f"{target}, {data}, dt {dt:g}, {n_steps} leapfrog steps, lr {lr:g}: L_K across κ"
        written += write_figure(curves_figure(curves, title=title, **estimators), out / "curves" / name)
    return written


def mean_interval(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sd and the 95 % interval of the mean (Student's t) over seeds; sd and interval None
    for one value. Every table over seeds (a sweep's, Figure 2A's) states its numbers so."""
    from scipy import stats

    mean = statistics.fmean(values)
    if len(values) < 2:
        return {"mean": mean, "sd": None, "ci95": None}
    sd = statistics.stdev(values)
    half = float(stats.t.ppf(0.975, len(values) - 1)) * sd / math.sqrt(len(values))
    return {"mean": mean, "sd": sd, "ci95": [mean - half, mean + half]}


def aggregate(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per setting (the rows but their seed): the count of runs, finished and not, and
    each metric's mean, sd and 95 % interval (Student's t) over the finished seeds."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[c] for c in SETTING_COLUMNS), []).append(row)
    table = []
    for setting, members in groups.items():
        done = [r for r in members if r["status"] == "finished"]
        entry: dict[str, Any] = dict(zip(SETTING_COLUMNS, setting))
        entry.update(runs=len(members), finished=len(done), seeds=[r["seed"] for r in done])
        for metric in METRICS:
            values = [float(r[metric]) for r in done if r[metric] not in (None, "")]
            if values:
                entry[metric] = mean_interval(values)
        table.append(entry)
    return table


def paired_with_unconstrained(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each constrained setting whose unconstrained twin (the same setting with κ none) is in
    the sweep: the test log-likelihood of the constrained run minus the unconstrained one's, seed
    by seed (the seeds both finished), as mean, sd and 95 % interval. Positive: the constraint
    helped. Pairing removes the spread the seeds share (the same data, the same start)."""
    finished = {
        (tuple(r[c] for c in SETTING_COLUMNS), r["seed"]): float(r["test_log_likelihood"])
        for r in rows
        if r["status"] == "finished" and r["test_log_likelihood"] not in (None, "")
    }
    table = []
    for setting in dict.fromkeys(setting for setting, _ in finished):  # in order, once each
        if setting[-1] is None:
            continue
        twin = (*setting[:-1], None)
        seeds = sorted(seed for (s, seed) in finished if s == setting and (twin, seed) in finished)
        if not seeds:
            continue
        diffs = [finished[(setting, seed)] - finished[(twin, seed)] for seed in seeds]
        table.append(
            {**dict(zip(SETTING_COLUMNS, setting)), "seeds": seeds, "test_ll_minus_none": mean_interval(diffs)}
        )
    return table


def table_markdown(table: Sequence[dict[str, Any]], paired: Sequence[dict[str, Any]] = ()) -> str:
    """The aggregated table as Markdown: mean ± sd [95 % interval] over the finished seeds; then,
    when given, the paired differences against the unconstrained runs."""
    head = "| target | n_train | dt | leapfrog steps | lr | κ | finished / runs | test L_256 | gap (nats) | E[{g,H}²] |"
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for e in table:
        cells = [
            *_setting_cells(e), _none(e["kappa"], "none"), f"{e['finished']} / {e['runs']}",
            *(format_stat(e.get(m)) for m in ("test_log_likelihood", "gap_nats", "constraint")),
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    if paired:
        head = "| target | n_train | dt | leapfrog steps | lr | κ | seeds | test L_256: κ − none (paired) |"
        lines += ["", "Against the unconstrained run of the same setting and seed (positive: the constraint helped):"]
        lines += ["", head, "|---" * (head.count("|") - 1) + "|"]
        for e in paired:
            cells = [
                *_setting_cells(e),
                _none(e["kappa"], "none"),
                str(len(e["seeds"])),
                format_stat(e["test_ll_minus_none"]),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _setting_cells(entry: dict[str, Any]) -> list[str]:
    return [
        entry["target"],
        _none(entry["n_train"], "∞"),
        f"{entry['dt']:g}",
        str(entry["n_steps"]),
        f"{entry['lr']:g}",
    ]


def _none(value: Any, shown: str) -> str:
    return shown if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def format_stat(stat: dict[str, Any] | None, digits: int | None = None, interval: bool = True) -> str:
    """A :func:`mean_interval` as a table cell: ``mean ± sd [low, high]`` (``mean ± sd`` without
    ``interval``), or the mean alone for one seed; ``digits`` decimals (None: 4 significant digits)."""
    if not stat:
        return "—"
    number = (lambda x: f"{x:.4g}") if digits is None else (lambda x: f"{x:.{digits}f}")
    if stat["sd"] is None:
        return f"{number(stat['mean'])} (one seed)"
    low, high = stat["ci95"]
    bracket = f" [{number(low)}, {number(high)}]" if interval else ""
    return f"{number(stat['mean'])} ± {number(stat['sd'])}{bracket}"
