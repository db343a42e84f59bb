"""Run reporting: progress lines, metrics CSV, run summaries, run folders and run labels.

Shared by the command line, the paper's experiments and the dashboard; nothing here trains.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import torch
from tqdm import tqdm

from ._files import csv_text
from .checkpoint import save_checkpoint
from .evaluation import equivariance_error, invariance_error
from .snapshot import Snapshot, SnapshotConfig, take_snapshot
from .symmetries import lemma1_check
from .training import Record, Run, Trainer

FINAL_EVAL_SAMPLES = 256  # K of the final test log-likelihood in summary.json


def run_folder(label: str) -> str:
    """A :func:`~ehflow_core.run.run_label` as a folder name (ASCII, no slash): ``"kappa=0.01_seed1"``."""
    return label.replace("κ", "kappa").replace("/", "_")


def progress(
    records: Iterable[Record],
    total: int,
    label: str = "",
    stream: IO[str] | None = None,
    seconds: float | None = None,
) -> Iterator[Record]:
    """Pass records through while a tqdm bar on ``stream`` (default: standard error at the time of
    the call) shows the steps done, the average speed and the ETA, the training bound and the last
    test L_K, and evaluation as its own phase: the share of the wall time spent evaluating.

    The speed is the average over the call so far, evaluations included (what the remaining steps
    will take), computed from the records' own clock, and so is the ETA. A divergence is written
    on a line of its own above the bar.

    ``seconds``: the run's wall-clock budget, counted on the records' clock. The bar then follows
    whichever of ``total`` steps and the budget ends first: its length is the steps the budget
    will allow at the average speed (at most ``total``), and a run that ends on time ends full.
    """
    bar = StatusBar(
        total=total,
        desc=label,
        file=sys.stderr if stream is None else stream,
        mininterval=0.25,
        dynamic_ncols=True,
        bar_format="{desc} {percentage:3.0f}%|{bar}| {n}/{total} {status}",
    )
    first: Record | None = None
    last_eval: Record | None = None
    evaluating = 0.0  # seconds spent evaluating so far
    with bar:
        for record in records:
            first = first or record
            if record.eval_seconds is not None:
                last_eval, evaluating = record, evaluating + record.eval_seconds
            if record.event:
                bar.write(f"{label} {record.message}")
            steps = total if seconds is None else _steps_in_budget(record, first, total, seconds)
            bar.status = _status(record, first, steps, last_eval, evaluating)
            bar.total = steps
            bar.update(record.step - bar.n)
            if seconds is not None and record.seconds >= seconds:  # the budget ended the run
                bar.total = record.step
                bar.refresh()
            yield record


def _steps_in_budget(record: Record, first: Record, total: int, seconds: float) -> int:
    """The steps a run will have made when ``seconds`` run out, at its average speed (at most ``total``)."""
    left = max(seconds - record.seconds, 0.0) * _average_speed(record, first)
    return max(min(total, record.step + round(left)), record.step)


def _average_speed(record: Record, first: Record) -> float:
    """Steps per second since the first record (the recent speed until there are two)."""
    if record.step > first.step and record.seconds > first.seconds:
        return (record.step - first.step) / (record.seconds - first.seconds)
    return record.steps_per_s


class StatusBar(tqdm):
    """tqdm with a ``{status}`` field of our own for ``bar_format`` (tqdm's postfix starts with a comma)."""

    status = ""

    @property
    def format_dict(self) -> dict[str, Any]:
        return {**super().format_dict, "status": self.status}


def _status(record: Record, first: Record, total: int, last_eval: Record | None, evaluating: float) -> str:
    """The bar's right-hand side: average steps/s, ETA, bound, test L_K and the evaluation phase."""
    average = _average_speed(record, first)
    left = max(total - record.step, 0) / max(average, 1e-9)
    eta = f" ETA {tqdm.format_interval(left)}" if left < 360_000 else ""
    test = f" test L_K {last_eval.test_log_likelihood:.3f}" if last_eval else ""
    share = f" · evaluation {100 * evaluating / record.seconds:.0f}% of the time" if record.seconds > 0 else ""
    return f"{average:5.1f} steps/s{eta} bound {record.train_bound:.3f}{test}{share}"


# -- outputs ---------------------------------------------------------------------------------------
def metrics_csv(records: Sequence[Record]) -> str:
    """One CSV row per record (columns: the union of every record's fields)."""
    return csv_text([r.to_row() for r in records])


def write_metrics(records: Sequence[Record], path: Path) -> None:
    """Write :func:`metrics_csv` to ``path``."""
    path.write_text(metrics_csv(records))


def read_metrics(path: Path) -> list[Record]:
    """The records of a metrics CSV written by :func:`write_metrics` (exactly: see :meth:`Record.from_row`)."""
    with path.open(newline="") as fh:
        return [Record.from_row(row) for row in csv.DictReader(fh)]


def summarise(
    run: Run, records: Sequence[Record], n_samples: int = FINAL_EVAL_SAMPLES, interrupted: bool = False
) -> dict[str, Any]:
    """The numbers a run is judged by (docs/cli.md lists them); ``n_samples``: K of the test
    and train L_K (and at most 128 samples for the invariance readout); ``interrupted``: the run
    was stopped before its budget ended (``steps`` says where)."""
    flow, target = run.eval_flow, run.target
    rng = torch.Generator(device=flow.device).manual_seed(run.config.seed + 99)
    with torch.no_grad():
        test_ll = float(flow.log_likelihood(run.test_data, n_samples, rng).mean())
        test_elbo = float(flow.elbo(run.test_data, 1, rng).mean())
        train_ll = None
        if run.train_data is not None:
            train_ll = float(flow.log_likelihood(run.train_data[:2048], n_samples, rng).mean())
    good = [r for r in records if r.event is None]
    tail = good[-50:]
    summary: dict[str, Any] = {
        "target": target.name,
        "test_log_likelihood": test_ll,
        "test_elbo": test_elbo,
        "train_log_likelihood": train_ll,
        "n_samples": n_samples,
        "n_test": len(run.test_data),
        "train_bound": sum(r.train_bound for r in tail) / len(tail) if tail else None,
        "constraint": run.measure_constraints(),
        "lam": run.lam,
        "kappa": run.kappa,
        "steps": run.step,
        "interrupted": interrupted,
        "seconds": run.seconds,
        "divergences": sum(1 for r in records if r.event == "diverged"),
        "lemma1": lemma1_check(flow.base, run.generators) if run.generators else {},
        "config": run.config.to_dict(),
    }
    if target.has_log_prob:
        entropy, stderr = target.entropy()
        summary.update(entropy=entropy, entropy_stderr=stderr, gap_nats=-test_ll - entropy)
    with_action = [g for g in run.generators if g.has_action]
    if with_action:
        g = with_action[0]
        report = invariance_error(flow, g, run.test_data[:128], n_samples=min(128, n_samples), seed=run.config.seed)
        summary["invariance_error"] = {"generator": g.name, **report.__dict__}
        summary["equivariance_error"] = {gg.name: equivariance_error(flow, gg) for gg in with_action}
    else:
        summary["invariance_error"] = None
    return summary


def write_run(
    trainer: Trainer,
    records: Sequence[Record],
    out: Path,
    sizes: SnapshotConfig | None = None,
    n_samples: int = FINAL_EVAL_SAMPLES,
    interrupted: bool = False,
) -> tuple[dict[str, Any], Snapshot]:
    """metrics.csv, summary.json, checkpoint.pt and figures for one run; returns the summary
    (:func:`summarise` with ``n_samples`` and ``interrupted``) and the snapshot the figures were
    drawn from (``sizes``: its sizes). The metrics and the checkpoint are written first: they are
    what resumes the run."""
    from .figures import (  # plotly: imported only when figures are written
        constraint_figure,
        curves_figure,
        density_figure,
        energy_figure,
        trajectory_figure,
        write_figure,
    )

    out.mkdir(parents=True, exist_ok=True)
    write_metrics(records, out / "metrics.csv")
    save_checkpoint(trainer, out / "checkpoint.pt")
    summary = summarise(trainer, records, n_samples, interrupted)
    snap = take_snapshot(trainer.eval_flow, trainer.target, sizes or SnapshotConfig(n_samples=4000, grid=100))
    files = []
    files += write_figure(density_figure(snap), out / "density")
    files += write_figure(energy_figure(snap), out / "energies")
    files += write_figure(trajectory_figure(snap), out / "trajectories")
    files += write_figure(
        curves_figure({"run": records}, title="Log-likelihood", **trainer.config.estimators), out / "curves"
    )
    if trainer.generators:
        files += write_figure(constraint_figure(records), out / "constraint")
    summary["figures"] = [f.name for f in files]
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary, snap
