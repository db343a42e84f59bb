"""Sweeps: a grid of runs (targets × κ × seeds × data sizes × step size, leapfrog steps and
learning rate), trained on this machine or on a Ray cluster, resumable, with a results table.

The unit of work is a *segment*: :func:`train_segment` trains one run from its last checkpoint
(bytes) up to a step and returns the new checkpoint and the segment's records. The driver
(:func:`run_sweep`) writes every segment's result into the run's folder before it asks for the
next one, so workers need no shared file system, a worker that dies costs at most one segment
(``checkpoint_every`` steps) of its run, and running the same sweep again skips finished runs and
resumes unfinished ones from their last checkpoint. A run's folder is named by a hash of its full
configuration (:attr:`RunSpec.key`).

Backends (:func:`make_backend`): ``"local"``, a pool of processes on this machine (one run per
process, one torch thread each); ``"ray"``, Ray tasks on a cluster (``address``), or on a local
Ray instance started for the sweep. Both run the same :func:`train_segment` with one torch
thread, so a sweep's records are the same on either (CPU, float64: exactly).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import IO, Any

from ._files import write_atomic
from .reporting import StatusBar, metrics_csv, read_metrics
from .sweep_backends import Backend, LocalBackend, RayBackend, Segment, first_line, make_backend
from .sweep_grid import FINAL, FIXED_KEYS, GRID_KEYS, STATUSES, RunSpec, SweepSpec
from .sweep_tables import paired_with_unconstrained, write_results

# The sweep's public names, importable from here (the driver) as from the modules that define them.
__all__ = [
    "FIXED_KEYS", "GRID_KEYS", "Backend", "LocalBackend", "RayBackend", "RunSpec", "Segment", "SweepSpec",
    "make_backend", "paired_with_unconstrained", "run_and_report", "run_sweep",
]  # fmt: skip


# -- the driver ------------------------------------------------------------------------------------
def run_sweep(
    spec: SweepSpec,
    out: str | Path,
    backend: Backend,
    stream: IO[str] | None = sys.stderr,
) -> list[dict[str, Any]]:
    """Run every run of ``spec`` not finished yet in ``out`` on ``backend``; write each run's
    folder (``runs/<key>/``: config, metrics, checkpoint, summary), ``results.csv`` (a row a
    run), ``table.md`` and ``table.json`` (mean ± sd and a 95 % interval over seeds per setting).
    Returns the rows. Ctrl-C stops it, leaving everything written so far: run it again to resume.
    """
    out = Path(out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    (out / "spec.json").write_text(json.dumps(spec.to_mapping(), indent=2))
    runs = {run.key: run for run in spec.runs}
    queued = [key for key in runs if _state(out, key)["status"] not in FINAL]  # failed runs are tried again
    for key in queued:
        folder = out / "runs" / key
        folder.mkdir(exist_ok=True)
        (folder / "config.json").write_text(
            json.dumps({"run": dataclasses.asdict(runs[key]), "config": runs[key].config().to_dict()}, indent=2)
        )
    status = _Progress(len(runs), len(runs) - len(queued), stream)
    try:
        waiting = list(queued)
        while waiting or backend.pending:
            while waiting and len(backend.pending) < backend.capacity:
                key = waiting.pop(0)
                checkpoint, step = _checkpoint(out, key)
                until = min(step + spec.checkpoint_every, runs[key].steps)
                backend.submit(key, runs[key], checkpoint, until, spec.points(runs[key]))
                status.started(key)
            key, result = backend.next_done()
            if isinstance(result, BaseException):
                _write_outcome(out, key, "failed", f"{type(result).__name__}: {first_line(result)}")
                status.ended(key, "failed")
                continue
            _write_segment(out, key, result)
            status.segment(key, result)
            if result.status is None:
                waiting.insert(0, key)  # the run's next segment, ahead of runs not started
            else:
                status.ended(key, result.status)
    finally:
        backend.close()
        status.close()
    rows = [_row(out, run) for run in spec.runs]
    write_results(out, rows, spec.runs)
    return rows


def run_and_report(name: str, spec: SweepSpec, out: Path, backend: Backend) -> list[dict[str, Any]]:
    """:func:`run_sweep` for the command line (``sweep``, ``reproduce fig2a --backend``): says what
    runs where, how to resume after Ctrl-C, then prints ``table.md`` and the runs' outcomes."""
    print(f"{name}: {len(spec.runs)} runs on {backend.name} ({backend.capacity} at once) into {out}/", file=sys.stderr)
    try:
        rows = run_sweep(spec, out, backend)
    except KeyboardInterrupt:
        print(f"\n{name} stopped: what finished is in {out}/; run the same command again to resume", file=sys.stderr)
        raise
    print((out / "table.md").read_text())
    counts = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
    print(", ".join(f"{n} {s}" for s, n in counts.items() if n) + f"; wrote {out}/results.csv, table.md, table.json")
    return rows


def _state(out: Path, key: str) -> dict[str, Any]:
    path = out / "runs" / key / "outcome.json"
    return json.loads(path.read_text()) if path.exists() else {"status": None}


def _checkpoint(out: Path, key: str) -> tuple[bytes | None, int]:
    """The run's last checkpoint and its step (None, 0: not started). Records past the checkpoint
    (a segment written halfway when the driver stopped) are dropped, so they are not counted twice."""
    path = out / "runs" / key / "checkpoint.pt"
    if not path.exists():
        return None, 0
    data = path.read_bytes()
    step = _checkpoint_step(data)
    metrics = out / "runs" / key / "metrics.csv"
    if metrics.exists():
        records = read_metrics(metrics)
        kept = [r for r in records if r.step <= step]
        if len(kept) < len(records):
            write_atomic(metrics, metrics_csv(kept))
    return data, step


def _write_segment(out: Path, key: str, segment: Segment) -> None:
    """Append the segment's records, then replace the checkpoint (atomically), then the outcome."""
    folder = out / "runs" / key
    metrics = folder / "metrics.csv"
    if segment.records:  # every record's columns (an evaluation step may add some): metrics_csv's union
        earlier = read_metrics(metrics) if metrics.exists() else []
        write_atomic(metrics, metrics_csv([*earlier, *segment.records]))
    write_atomic(folder / "checkpoint.pt", segment.checkpoint)
    (folder / "node.txt").write_text(segment.node)
    if segment.status is not None:
        (folder / "summary.json").write_text(json.dumps(segment.summary, indent=2))
        _write_outcome(out, key, segment.status, segment.message)


def _write_outcome(out: Path, key: str, status: str, message: str | None) -> None:
    (out / "runs" / key / "outcome.json").write_text(json.dumps({"status": status, "message": message}))


def _row(out: Path, run: RunSpec) -> dict[str, Any]:
    folder = out / "runs" / run.key
    outcome = _state(out, run.key)
    summary_path = folder / "summary.json"
    summary = (json.loads(summary_path.read_text()) if summary_path.exists() else None) or {}
    constraint = summary.get("constraint") or {}
    node = (folder / "node.txt").read_text() if (folder / "node.txt").exists() else ""
    row: dict[str, Any] = {**dataclasses.asdict(run), "key": run.key, "node": node}
    row.update(
        status=outcome["status"] or "unfinished",
        steps=summary["steps"] if "steps" in summary else _steps_done(folder),
        constraint=sum(constraint.values()) if constraint else None,
        message=outcome.get("message"),
    )
    for name in ("test_log_likelihood", "gap_nats", "train_log_likelihood", "seconds"):
        row[name] = summary.get(name)
    return row


def _steps_done(folder: Path) -> int:
    """An unfinished run's steps: its last checkpoint's (0 before the first)."""
    path = folder / "checkpoint.pt"
    return _checkpoint_step(path.read_bytes()) if path.exists() else 0


def _checkpoint_step(data: bytes) -> int:
    from .checkpoint import read_checkpoint

    return int(read_checkpoint(data)["step"])


# -- progress --------------------------------------------------------------------------------------
class _Progress:
    """One line for the whole sweep: runs done, running and queued, the ETA, and where runs run."""

    def __init__(self, total: int, done: int, stream: IO[str] | None) -> None:
        self.bar = None if stream is None else StatusBar(
            total=total, initial=done, file=stream, unit="run", mininterval=0.5, dynamic_ncols=True,
            bar_format="sweep {n}/{total} runs done |{bar}| {status}",
        )  # fmt: skip
        self.total, self.done, self.skipped = total, done, done
        self.running: dict[str, str] = {}  # key -> node
        self.outcomes: dict[str, int] = {}
        self.began = time.perf_counter()

    def started(self, key: str) -> None:
        if key not in self.running:
            self.running[key] = "…"  # its node is known once its first segment is back
            self._draw()

    def segment(self, key: str, result: Segment) -> None:
        self.running[key] = result.node
        self._draw()

    def ended(self, key: str, outcome: str) -> None:
        self.running.pop(key, None)
        self.done += 1
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        self._draw()
        if self.bar is not None:
            self.bar.update(1)

    def _draw(self) -> None:
        if self.bar is None:
            return
        queued = self.total - self.done - len(self.running)
        finished_now = self.done - self.skipped
        elapsed = time.perf_counter() - self.began
        eta = ""
        if finished_now:
            left = elapsed / finished_now * (self.total - self.done)
            eta = f", ETA {StatusBar.format_interval(left)}"
        nodes: dict[str, int] = {}
        for node in self.running.values():
            nodes[node] = nodes.get(node, 0) + 1
        where = ", ".join(f"{n}: {c}" for n, c in sorted(nodes.items()))
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items()))
        self.bar.status = (
            f"{len(self.running)} running{f' ({where})' if where else ''}, {queued} queued{eta}"
            f"{f'; {outcomes}' if outcomes else ''}"
        )
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
