"""Where a sweep's runs train: the unit of work (:func:`train_segment`: one run from its last
checkpoint up to a step) and the backends that run it (:class:`LocalBackend`, a pool of processes
here; :class:`RayBackend`, Ray tasks on a cluster), and the connection to Ray. The driver is
:mod:`ehflow_core.sweep`."""

from __future__ import annotations

import functools
import logging
import os
import socket
import sys
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._checks import check_choice, check_int
from .run import Record
from .sweep_grid import RunSpec

BACKENDS = ("local", "ray")


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
