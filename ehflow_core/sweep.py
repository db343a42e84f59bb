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

import csv
import dataclasses
import functools
import hashlib
import io
import json
import logging
import math
import os
import re
import socket
import statistics
import sys
import time
import tomllib
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ._checks import check_choice, check_int
from .reporting import FINAL_EVAL_SAMPLES
from .run import Record, TrainConfig

BACKENDS = ("local", "ray")
_DEFAULTS = TrainConfig()
# A run's outcome: "finished", "diverged" or "failed" (its task failed after Ray's retries). A sweep
# run again keeps the FINAL ones and tries a failed run again.
FINAL = ("finished", "diverged")


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: its grid point and the sweep's fixed settings."""

    target: str
    kappa: float | None
    seed: int
    n_train: int | None
    dt: float
    n_steps: int
    lr: float
    steps: int
    eval_every: int
    paper: bool = False
    n_test: int = _DEFAULTS.n_test  # test points, drawn once per run
    final_samples: int = FINAL_EVAL_SAMPLES  # K of the summary's test L_K
    # A run on a data file: ``target`` is the file's path as given, its points travel with each
    # segment (the driver reads the file), and the seed's random ``holdout`` share is the test set.
    data_sha256: str | None = None  # of the file's points (an edited file makes new runs)
    dim: int = 2
    holdout: float = 0.2

    def config(self) -> TrainConfig:
        """The run's training configuration (validated: a bad value raises ``ValueError``)."""
        return TrainConfig.starting_from(
            self.paper, flow={"dt": self.dt, "n_steps": self.n_steps, "dim": self.dim}, kappa=self.kappa,
            n_train=self.n_train, lr=self.lr, max_steps=self.steps, seed=self.seed, eval_every=self.eval_every,
            n_test=self.n_test,
        )  # fmt: skip

    @property
    def key(self) -> str:
        """A hash of the full configuration and target: the run's folder name (same run, same name)."""
        full = {"target": self.target, "config": self.config().to_dict(), "final_samples": self.final_samples}
        if self.data_sha256 is not None:
            full.update(data_sha256=self.data_sha256, holdout=self.holdout)
        text = json.dumps(full, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


# -- the grid --------------------------------------------------------------------------------------
_UNSET = object()
GRID_KEYS = ("target", "data", "kappa", "seeds", "n_train", "dt", "n_steps", "lr")  # lists
FIXED_KEYS = ("steps", "eval_every", "checkpoint_every", "paper", "n_test", "final_samples", "holdout")  # one value


@dataclass(frozen=True)
class SweepSpec:
    """A grid of runs: every combination of the lists (``None`` in ``kappa``: unconstrained; in
    ``n_train``: infinite data), each trained for ``steps`` steps, checkpointed every
    ``checkpoint_every`` steps. The keys are the command line's (``sweep --help``).

    ``data``: data files (``.csv`` or ``.npy``, read now: a missing or bad file is a ``ValueError``
    here, on the driver), swept like the built-in ``target`` names; each run holds out a random
    ``holdout`` share of the file (by its seed) as its test set and trains on the rest, so its
    ``n_train`` must be None. :meth:`from_mapping` (the command line, spec files) drops the default
    target when only data files are given.
    """

    target: tuple[str, ...] = ("ring",)
    data: tuple[str, ...] = ()
    kappa: tuple[float | None, ...] = (None,)
    seeds: tuple[int, ...] = (0,)
    n_train: tuple[int | None, ...] = (None,)
    dt: tuple[float, ...] = (_DEFAULTS.flow.dt,)
    n_steps: tuple[int, ...] = (_DEFAULTS.flow.n_steps,)
    lr: tuple[float, ...] = (_DEFAULTS.lr,)
    steps: int = 2000
    eval_every: int = 200
    checkpoint_every: int = 500
    paper: bool = False
    n_test: int = _DEFAULTS.n_test
    final_samples: int = FINAL_EVAL_SAMPLES
    holdout: float = 0.2
    _runs: tuple[RunSpec, ...] = field(init=False, repr=False, compare=False)
    _points: dict[str, Any] = field(init=False, repr=False, compare=False)  # data file -> its points (numpy)

    def __post_init__(self) -> None:
        from .targets import TARGETS

        for name in GRID_KEYS:
            values = tuple(getattr(self, name))
            if not values and name not in ("target", "data"):
                raise ValueError(f"{name}: the grid is empty (give at least one value)")
            twice = next((v for i, v in enumerate(values) if v in values[:i]), _UNSET)
            if twice is not _UNSET:
                raise ValueError(f"{name}: {twice!r} is given twice")
            object.__setattr__(self, name, values)
        if not self.target and not self.data:
            raise ValueError("target: the grid is empty (give at least one target or data file)")
        if not isinstance(self.paper, bool):
            raise TypeError(f"paper must be true or false, got {self.paper!r}")
        for name in self.target:
            check_choice("target", name, tuple(TARGETS))
        check_int("steps", self.steps, minimum=1)
        check_int("eval_every", self.eval_every, minimum=1)
        check_int("checkpoint_every", self.checkpoint_every, minimum=1)
        check_int("final_samples", self.final_samples, minimum=1)
        sources = [(name, None, 2) for name in self.target] + self._read_data()
        runs = tuple(
            RunSpec(
                target, kappa, seed, n_train, dt, n_steps, lr, self.steps, self.eval_every, self.paper, self.n_test,
                self.final_samples, sha, dim, self.holdout,
            )
            for target, sha, dim in sources for n_train in self.n_train for dt in self.dt for n_steps in self.n_steps
            for lr in self.lr for kappa in self.kappa for seed in self.seeds
        )  # fmt: skip
        for run in runs:
            run.config()  # every value checked by TrainConfig, by name
        object.__setattr__(self, "_runs", runs)

    def _read_data(self) -> list[tuple[str, str, int]]:
        """Read and check every data file (kept for :meth:`points`): (path, hash of its points, dim)."""
        import numpy as np

        from .targets import holdout_size, load_points

        points: dict[str, Any] = {}
        sources = []
        if self.data and any(n is not None for n in self.n_train):
            raise ValueError("n_train: a data file's training set is its own rows (less the held-out share); "
                             "give n_train none (or leave it out) when sweeping over data files")  # fmt: skip
        for path in self.data:
            if not isinstance(path, str):
                raise TypeError(f"data: expected file paths, got {path!r}")
            try:
                rows = load_points(path)
                holdout_size(self.holdout, len(rows))
            except ValueError as err:
                raise ValueError(f"data: {err}") from None
            array = np.ascontiguousarray(rows.numpy())
            points[path] = array
            digest = hashlib.sha256(str(array.shape).encode() + array.tobytes()).hexdigest()
            sources.append((path, digest, array.shape[1]))
        object.__setattr__(self, "_points", points)
        return sources

    def points(self, run: RunSpec) -> Any:
        """The points of ``run``'s data file (a numpy array), or None for a built-in target."""
        return self._points.get(run.target) if run.data_sha256 is not None else None

    @property
    def runs(self) -> tuple[RunSpec, ...]:
        return self._runs

    def to_mapping(self) -> dict[str, Any]:
        """The spec as a plain table (lists for the grid): :meth:`from_mapping`'s inverse."""
        return {k: list(getattr(self, k)) if k in GRID_KEYS else getattr(self, k) for k in GRID_KEYS + FIXED_KEYS}

    @classmethod
    def from_mapping(cls, data: dict[str, Any], source: str = "spec") -> SweepSpec:
        """A spec from a TOML/JSON table with the command line's names (``target``, ``data``,
        ``kappa``, ``seeds``, ``n_train``, ``dt``, ``n_steps``, ``lr``: a value or a list,
        ``"none"`` for None; ``steps``, ``eval_every``, ``checkpoint_every``, ``paper``,
        ``n_test``, ``final_samples``, ``holdout``: one value each). Data files without a
        ``target`` sweep the files alone."""
        unknown = sorted(set(data) - set(GRID_KEYS) - set(FIXED_KEYS))
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {unknown}; known: {sorted(GRID_KEYS + FIXED_KEYS)}")
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key in GRID_KEYS:
                items = value if isinstance(value, list) else [value]
                values[key] = tuple(None if isinstance(v, str) and v.lower() == "none" else v for v in items)
            else:
                values[key] = value
        if values.get("data") and "target" not in values:
            values["target"] = ()
        try:
            return cls(**values)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{source}: {err}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> SweepSpec:
        """A spec from a ``.toml`` or ``.json`` file (see :meth:`from_mapping`)."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"spec file {str(path)!r} does not exist")
        try:
            if path.suffix == ".toml":
                data = tomllib.loads(path.read_text())
            elif path.suffix == ".json":
                data = json.loads(path.read_text())
            else:
                raise ValueError(f"expected a .toml or .json file, got {path.suffix or 'no suffix'!r}")
        except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"spec file {str(path)!r} is not valid {path.suffix[1:].upper()}: {err}") from None
        if not isinstance(data, dict):
            raise ValueError(f"spec file {str(path)!r}: expected a table of keys, got {type(data).__name__}")
        return cls.from_mapping(data, source=f"spec file {str(path)!r}")


# -- the unit of work ------------------------------------------------------------------------------
@dataclass
class Segment:
    """What one segment of a run sends back to the driver."""

    checkpoint: bytes  # the run's state after the segment (load_trainer resumes it exactly)
    records: list[Record]  # one per step of the segment
    step: int  # steps done in all
    status: str | None  # None: more steps to go; else "finished" or "diverged"
    message: str | None = None  # why a run diverged or failed
    summary: dict[str, Any] | None = None  # the run's summary, when it ended
    node: str = ""  # where the segment ran (host name, or Ray node IP)


def train_segment(run: RunSpec, checkpoint: bytes | None, until: int, points: Any = None, threads: int = 1) -> Segment:
    """Train ``run`` from ``checkpoint`` (None: from scratch) up to step ``until`` on ``threads``
    torch threads; when the run ends (its last step, or a divergence that stops it), with its
    summary (:func:`~ehflow_core.reporting.summarise`). ``points``: a data-file run's points (the
    driver sends them: workers need not see the file)."""
    import torch

    from .checkpoint import checkpoint_bytes, load_trainer
    from .reporting import summarise
    from .targets import DataTarget, make_target, split_points
    from .training import Trainer

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)  # the same on every backend: sums, and so records, do not depend on where
    try:
        data: dict[str, Any] = {}
        if run.data_sha256 is None:
            target = make_target(run.target)
        elif points is None:
            raise ValueError(f"{run.target}: a data-file run needs its points")
        else:
            train, test = split_points(torch.as_tensor(points), run.holdout, run.seed)
            target = DataTarget(train, name=Path(run.target).stem, description=f"points from {run.target}")
            data = {"train_data": train, "test_data": test}
        if checkpoint:
            trainer = load_trainer(checkpoint, target, **data)
        else:
            trainer = Trainer(run.config(), target, **data)
        records = list(trainer.train(more_steps=max(until - trainer.step, 0)))
        diverged = next((r for r in records if r.event == "diverged"), None)
        status = None
        if trainer.stopped and diverged is not None:
            status = "diverged"
        elif trainer.step >= run.steps:
            status = "finished"
        summary = summarise(trainer, records, run.final_samples) if status else None
    finally:
        torch.set_num_threads(previous)
    message = diverged.message if diverged else None
    return Segment(checkpoint_bytes(trainer), records, trainer.step, status, message, summary, node_name())


def node_name() -> str:
    """Where this process runs: the Ray node's IP and the start of its id (nodes of a test cluster
    share an IP), or the host name outside Ray."""
    ray = sys.modules.get("ray")  # only a Ray worker has it imported
    if ray is not None and ray.is_initialized():
        return f"{ray.util.get_node_ip_address()}/{ray.get_runtime_context().get_node_id()[:6]}"
    return socket.gethostname()


# -- backends --------------------------------------------------------------------------------------
class LocalBackend:
    """Segments on this machine: ``workers`` runs at once (default: the core count) in a pool of
    processes, each on one torch thread; with one worker, in this process, one after another."""

    name = "local"

    def __init__(self, workers: int | None = None) -> None:
        import multiprocessing

        self.capacity = check_int("workers", workers if workers is not None else os.cpu_count() or 1, minimum=1)
        context = multiprocessing.get_context("spawn")  # torch in a forked child can deadlock
        self.pool = ProcessPoolExecutor(self.capacity, mp_context=context) if self.capacity > 1 else None
        self.pending: dict[Any, str] = {}  # a future (or, in this process, the job) -> its run's key

    def submit(self, key: str, run: RunSpec, checkpoint: bytes | None, until: int, points: Any = None) -> None:
        job = functools.partial(train_segment, run, checkpoint, until, points)  # hashable, by identity
        self.pending[self.pool.submit(job) if self.pool else job] = key

    def next_done(self) -> tuple[str, Segment | BaseException]:
        if self.pool is None:  # one job at a time, run here when its result is asked for
            job, key = self.pending.popitem()
            try:
                return key, job()
            except Exception as err:
                return key, err
        done: set = set()
        while not done:  # in slices, so that Ctrl-C reaches this thread
            done, _ = wait(list(self.pending), timeout=0.5, return_when=FIRST_COMPLETED)
        future = done.pop()
        key = self.pending.pop(future)
        error = future.exception()
        return key, error if error is not None else future.result()

    def close(self) -> None:
        """Stop the pool; segments still running (the sweep was interrupted) are killed, not
        waited for: their runs resume from their last checkpoint."""
        interrupted = bool(self.pending)
        self.pending.clear()
        if self.pool is None:
            return
        if interrupted:
            for process in list(getattr(self.pool, "_processes", {}).values()):  # no public way before 3.14
                process.terminate()
        self.pool.shutdown(wait=not interrupted, cancel_futures=True)


class RayBackend:
    """Segments as Ray tasks (one CPU each; Ray retries a task whose worker or node died up to
    ``retries`` times). ``address``: ``"auto"``, ``"host:port"`` or ``"ray://host:port"`` of a
    running cluster; None starts a local Ray instance for the sweep (``num_cpus``: its CPUs)."""

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None, retries: int = 3) -> None:
        self.ray, self.started = connect_ray(address, num_cpus)
        self.capacity = max(1, int(self.ray.cluster_resources().get("CPU", 1)))
        self.task = self.ray.remote(num_cpus=1, max_retries=retries)(train_segment)
        self.pending: dict[Any, str] = {}
        self.stored: dict[int, Any] = {}  # id of a data file's points -> their object ref

    def submit(self, key: str, run: RunSpec, checkpoint: bytes | None, until: int, points: Any = None) -> None:
        if points is not None:  # in Ray's object store once, not once per segment
            ref = self.stored.get(id(points))
            if ref is None:
                ref = self.stored[id(points)] = self.ray.put(points)
            points = ref
        self.pending[self.task.remote(run, checkpoint, until, points)] = key

    def next_done(self) -> tuple[str, Segment | BaseException]:
        ready, _ = self.ray.wait(list(self.pending), num_returns=1)
        key = self.pending.pop(ready[0])
        try:
            return key, self.ray.get(ready[0])
        except Exception as err:  # the task failed after its retries: the run is recorded as failed
            return key, err

    def close(self) -> None:
        for ref in self.pending:
            self.ray.cancel(ref, force=True)
        self.pending.clear()
        if self.started:
            self.ray.shutdown()


def first_line(err: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (at most ``limit`` characters; "" when it has none):
    Ray's and pickled errors carry whole tracebacks."""
    return (str(err).strip().splitlines() or [""])[0][:limit]


def connect_ray(address: str | None, num_cpus: int | None = None, setting: str = "--address") -> tuple[Any, bool]:
    """Ray, connected to the cluster at ``address`` (``"auto"``, ``"host:port"`` or
    ``"ray://host:port"``), or to a local instance started now (``address`` None; ``num_cpus``: its
    CPUs); and whether this call started the connection. An address that is malformed or where
    nothing listens fails fast with a one-line ``ValueError`` naming ``setting``."""
    try:
        import ray
    except ImportError:
        raise ValueError(f"{setting} needs Ray: pip install 'ray==2.60.0'") from None
    if address not in (None, "auto"):
        _check_reachable(address, setting)
    if ray.is_initialized():
        return ray, False
    try:
        ray.init(
            address=address, num_cpus=num_cpus if address is None else None, include_dashboard=False,
            log_to_driver=False, logging_level=logging.ERROR,
        )  # fmt: skip
    except (ConnectionError, RuntimeError, ValueError) as err:
        first = first_line(err, limit=10**6) or type(err).__name__
        raise ValueError(f"{setting}: cannot connect to a Ray cluster at {address!r}: {first}") from None
    return ray, True


def _check_reachable(address: str, setting: str) -> None:
    """Fail fast, in one line, when nothing listens at ``address`` (instead of Ray's long retries)."""
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"{setting}: expected 'auto', 'host:port' or 'ray://host:port', got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError as err:
        raise ValueError(f"{setting}: cannot reach a Ray cluster at {address!r}: {err.strerror or err}") from None


Backend = LocalBackend | RayBackend


def make_backend(name: str, address: str | None = None, workers: int | None = None) -> Backend:
    """The backend called ``name`` (``"local"`` or ``"ray"``); ``address`` is Ray's only."""
    check_choice("backend", name, BACKENDS)
    if name == "local":
        if address is not None:
            raise ValueError("--address is for --backend ray")
        return LocalBackend(workers)
    return RayBackend(address, num_cpus=workers)


# -- the driver ------------------------------------------------------------------------------------
RESULT_COLUMNS = (
    "key", "target", "kappa", "seed", "n_train", "dt", "n_steps", "lr", "status", "steps", "test_log_likelihood",
    "gap_nats", "train_log_likelihood", "constraint", "seconds", "node", "message",
)  # fmt: skip
METRICS = ("test_log_likelihood", "gap_nats", "train_log_likelihood", "constraint")  # aggregated over seeds


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
    counts = {s: sum(r["status"] == s for r in rows) for s in ("finished", "diverged", "failed", "unfinished")}
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
        rows = list(csv.DictReader(io.StringIO(metrics.read_text())))
        kept = [r for r in rows if int(r["step"]) <= step]
        if len(kept) < len(rows):
            _write_csv(metrics, kept, list(rows[0]))
    return data, step


def _write_segment(out: Path, key: str, segment: Segment) -> None:
    """Append the segment's records, then replace the checkpoint (atomically), then the outcome."""
    folder = out / "runs" / key
    rows = [r.to_row() for r in segment.records]
    metrics = folder / "metrics.csv"
    if rows:
        old = list(csv.DictReader(io.StringIO(metrics.read_text()))) if metrics.exists() else []
        columns = list(dict.fromkeys([*(old[0] if old else {}), *rows[0]]))
        _write_csv(metrics, [*old, *rows], columns)
    tmp = folder / "checkpoint.pt.tmp"
    tmp.write_bytes(segment.checkpoint)
    tmp.replace(folder / "checkpoint.pt")
    (folder / "node.txt").write_text(segment.node)
    if segment.status is not None:
        (folder / "summary.json").write_text(json.dumps(segment.summary, indent=2))
        _write_outcome(out, key, segment.status, segment.message)


def _write_outcome(out: Path, key: str, status: str, message: str | None) -> None:
    (out / "runs" / key / "outcome.json").write_text(json.dumps({"status": status, "message": message}))


def _write_csv(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(buffer.getvalue())
    tmp.replace(path)


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


def write_results(out: Path, rows: Sequence[dict[str, Any]], runs: Sequence[RunSpec] = ()) -> None:
    """``results.csv`` (a row a run), ``table.json`` and ``table.md`` (each setting's metrics over
    its finished seeds, :func:`aggregate`), ``paired.json`` (and a second table in ``table.md``:
    each κ against its unconstrained twin, :func:`paired_with_unconstrained`), and, for ``runs``,
    Figure 2A-style curves."""
    _write_csv(out / "results.csv", rows, RESULT_COLUMNS)
    table, paired = aggregate(rows), paired_with_unconstrained(rows)
    (out / "table.json").write_text(json.dumps(table, indent=2))
    (out / "paired.json").write_text(json.dumps(paired, indent=2))
    (out / "table.md").write_text(table_markdown(table, paired))
    if runs:
        write_curves(out, rows, runs)


def write_curves(out: Path, rows: Sequence[dict[str, Any]], runs: Sequence[RunSpec]) -> list[Path]:
    """For each setting but κ (target, data size, dt, leapfrog steps, lr), the train and test
    curves of every κ, from its first finished seed: ``curves/<setting>.html`` (``.`` written ``p``)."""
    from types import SimpleNamespace

    from .figures import curves_figure, write_figure
    from .reporting import run_label

    by_key = {run.key: run for run in runs}
    groups: dict[tuple, dict[str, list[Any]]] = {}
    for row in sorted((r for r in rows if r["status"] == "finished"), key=lambda r: r["seed"]):
        run = by_key[row["key"]]
        curves = groups.setdefault((run.target, run.n_train, run.dt, run.n_steps, run.lr), {})
        label = run_label(run.kappa)
        if label not in curves:
            metrics = (out / "runs" / run.key / "metrics.csv").read_text()
            curves[label] = [SimpleNamespace(**_parsed(r)) for r in csv.DictReader(io.StringIO(metrics))]
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


def _parsed(row: dict[str, str]) -> dict[str, Any]:
    """A metrics row's fields for the curves: numbers, or None where empty."""
    fields = ("step", "train_bound", "test_log_likelihood", "train_log_likelihood")
    parsed: dict[str, Any] = {f: float(row[f]) if row.get(f) else None for f in fields}
    parsed["step"] = int(row["step"])
    parsed["event"] = row.get("event") or None
    return parsed


SETTING_COLUMNS = ("target", "n_train", "dt", "n_steps", "lr", "kappa")


def _interval(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sd and the 95 % interval of the mean (Student's t); sd and interval None for one value."""
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
                entry[metric] = _interval(values)
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
        table.append({**dict(zip(SETTING_COLUMNS, setting)), "seeds": seeds, "test_ll_minus_none": _interval(diffs)})
    return table


def table_markdown(table: Sequence[dict[str, Any]], paired: Sequence[dict[str, Any]] = ()) -> str:
    """The aggregated table as Markdown: mean ± sd [95 % interval] over the finished seeds; then,
    when given, the paired differences against the unconstrained runs."""
    head = "| target | n_train | dt | leapfrog steps | lr | κ | finished / runs | test L_256 | gap (nats) | E[{g,H}²] |"
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for e in table:
        cells = [
            *_setting_cells(e), _none(e["kappa"], "none"), f"{e['finished']} / {e['runs']}",
            *(_stat(e.get(m)) for m in ("test_log_likelihood", "gap_nats", "constraint")),
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
                _stat(e["test_ll_minus_none"]),
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


def _stat(stat: dict[str, Any] | None) -> str:
    if not stat:
        return "—"
    if stat["sd"] is None:
        return f"{stat['mean']:.4g} (one seed)"
    low, high = stat["ci95"]
    return f"{stat['mean']:.4g} ± {stat['sd']:.2g} [{low:.4g}, {high:.4g}]"


# -- progress --------------------------------------------------------------------------------------
class _Progress:
    """One line for the whole sweep: runs done, running and queued, the ETA, and where runs run."""

    def __init__(self, total: int, done: int, stream: IO[str] | None) -> None:
        from .reporting import StatusBar

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
            eta = f", ETA {int(left // 60)}:{int(left % 60):02d}"
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
