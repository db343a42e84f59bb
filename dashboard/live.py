"""Sessions' training runs, hosted by a fixed pool of training processes.

No Streamlit here. :class:`LiveRun` is the page's handle on its run; where the run lives (which
process of the :class:`Pool`) is the pool's business, not the page's. Buttons and live settings
become commands on that process's socket; one reader thread per process folds its updates
(state, step counter, new curve records, snapshots) into each run's :class:`View`, which the page
and its live panel's feed copy out under a lock. The server process only draws; training never
holds its GIL, so the controls stay responsive while runs train.

The pool (``EHFLOW_WORKERS`` processes, default one per core) shares its processes' time fairly
between the runs that train (:mod:`dashboard.worker`), and admits at most ``EHFLOW_MAX_RUNS``
training runs at once (default four per process); a run over the limit waits in line, told its
place, and starts when one ends. With ``EHFLOW_RAY_ADDRESS`` set, the pool's hosts are Ray actors
on that cluster (:class:`_RayWorker`, each a :class:`~dashboard.worker.ActorHost`) instead of
processes of this machine, behind the same handle; without it Ray is never imported.

Lifetimes: Reset starts a new run in the same slot. A run is freed (its memory returned in its
process) when the page closes it, when its session's tab has been gone ``EHFLOW_FREE_AFTER``
seconds (default ``FREE_AFTER``; the page passes ``session_alive``), or when the ``LiveRun`` is
garbage collected (Streamlit dropped the session). Nothing here waits for a process on the
caller's thread: frees are sent by the pool's housekeeping thread. Training pauses by itself when
no page view arrived for ``HEARTBEAT_TIMEOUT`` seconds. The processes exit when the server does
(``close_pool``, at exit, or when their socket closes).
"""

from __future__ import annotations

import asyncio
import atexit
import bisect
import itertools
import logging
import math
import os
import pickle
import queue
import secrets
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .protocol import (
    Beat,
    CheckpointReply,
    CheckpointRequest,
    Close,
    Command,
    Drop,
    Freed,
    Pace,
    Pause,
    Play,
    SetLive,
    Start,
    TrainSteps,
    Update,
)

if TYPE_CHECKING:  # nothing heavy at import: prestart() runs before the page imports torch
    from ehflow_core.snapshot import Snapshot
    from ehflow_core.targets import Target
    from ehflow_core.training import Record

    from .settings import Settings

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
HEARTBEAT_TIMEOUT = 1.0  # seconds without a page view before a run stops training
REPLY_TIMEOUT = 60.0  # seconds to wait for a checkpoint from the worker
CLOSE_TIMEOUT = 30.0  # seconds a process has to exit when the server stops (it may still be importing torch)
ACTOR_START_TIMEOUT = 120.0  # seconds a Ray actor may take to start (placed, torch imported)
FREE_AFTER = 10.0  # default seconds after its tab is gone before its run is freed (a reconnect keeps it)
HOUSEKEEPING_EVERY = 1.0  # seconds between the housekeeping thread's checks of the sessions
RUNS_PER_WORKER = 4  # the default admission limit, per process
# One browser (a client: Streamlit's XSRF cookie, the same in all of a browser's tabs) may train at
# most this many runs at once and host at most CLIENT_RUNS, whatever its number of tabs: ten tabs
# of one student cannot take a class's places (EHFLOW_CLIENT_TRAINING, EHFLOW_CLIENT_RUNS).
CLIENT_TRAINING = 2
CLIENT_RUNS = 6
TURN = 120.0  # seconds a run trains while others wait before it gives its place to the first in line
CURVE_CAP = 3000  # records kept per curve (older ones are thinned): a long run refreshes as cheaply as a short one
# One OpenMP thread from the start: torch.set_num_threads(1) after torch's first op leaves a
# second OpenMP thread spinning while idle, taking CPU from the page.
WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _env_number(
    name: str, default: Any, parse: Callable[[str], Any], valid: Callable[[Any], bool], expected: str
) -> Any:
    """The environment variable ``name`` parsed by ``parse`` (``default`` when unset); a value that
    does not parse or is not ``valid`` is a ``ValueError`` naming the variable and ``expected``."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = parse(text)
    except ValueError:
        value = None
    if value is None or not valid(value):
        raise ValueError(f"{name} must be {expected}, got {text!r}")
    return value


def _env_count(name: str, default: int) -> int:
    """A positive integer from the environment variable ``name`` (``default`` when unset)."""
    return _env_number(name, default, int, lambda v: v >= 1, "a positive integer (a number of processes or runs)")


def _env_seconds(name: str, default: float) -> float:
    """A number of seconds ≥ 0 from the environment variable ``name`` (``default`` when unset)."""
    return _env_number(name, default, float, lambda v: 0 <= v < math.inf, "a number of seconds, 0 or more")


@dataclass(frozen=True)
class View:
    """What the page draws, copied out under the lock."""

    state: str  # "starting", "ready", "queued", "training", "paused", "diverged", "stopped", "closed"
    message: str | None
    step: int  # of the primary run
    steps_per_s: float
    snapshot: Snapshot | None
    version: int  # increases with every new snapshot, across Resets too
    curves: dict[str, list[Record]]  # label -> records (every eval step and every 10th step)
    symmetry: dict[str, float]  # invariance spread / noise, equivariance error
    step_by_run: dict[str, int] = field(default_factory=dict)  # label -> step, every run of the sweep
    kappa: float | None = None  # the κ and learning rate the primary trainer uses now
    lr: float | None = None
    sharing: int = 0  # other runs training in the same process now
    host: str = ""  # where the run trains, on a Ray cluster ("ray actor on <node>"); "" on this machine


# -- a run's state on the server -------------------------------------------------------------------
class _Shared:
    """A run's state written by its process's reader thread and read by the page, under ``lock``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.replies: list[CheckpointReply] = []
        self.changed = threading.Condition(self.lock)  # notified on every message from the worker
        # Async waiters (the live panel's requests), woken on every message from the worker.
        self.waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self.version = 0  # never reset: a chart's version names one picture across Resets
        self.waiting = False  # in the pool's line for a place to train (its message says where)
        self.reset(0, [])

    def reset(self, generation: int, labels: list[str]) -> None:
        self.generation = generation
        self.seq_seen = -1  # the last command the worker reported handling
        self.state = self.worker_state = "starting"  # shown / as the worker last reported it
        self.message: str | None = None
        self.busy = False
        self.step, self.step_by_run, self.steps_per_s = 0, {name: 0 for name in labels}, 0.0
        self.kappa: float | None = None
        self.lr: float | None = None
        self.snapshot: Snapshot | None = None
        self.curves: dict[str, list[Record]] = {name: [] for name in labels}
        self.symmetry: dict[str, float] = {}

    def end(self, state: str, message: str | None) -> None:
        """The run is over ("closed", or "stopped" with its process): not busy, out of the line,
        with ``state`` and ``message`` unless it was already closed or diverged; the caller holds
        ``lock``."""
        if self.state not in ("closed", "diverged"):
            self.state, self.message = state, message or self.message
        self.busy, self.waiting = False, False
        _notify(self)


def _notify(shared: _Shared) -> None:
    """Wake every waiter (threads and event loops); the caller holds ``shared.lock``."""
    shared.changed.notify_all()
    for loop, event in shared.waiters:
        try:
            loop.call_soon_threadsafe(event.set)
        except RuntimeError:  # that loop has closed: nobody waits there any more
            pass


def thin(records: list[Record], cap: int) -> list[Record]:
    """A curve's records, thinned to at most ``cap``: the newest half of ``cap`` kept as they
    are, the older ones resampled evenly in step (evaluation records and the others each to an
    eighth of ``cap``, so a thinning frees about a quarter of ``cap`` and runs once per that many
    new records, not on every update), so the history stays bounded however long the run, spans
    the whole run, and the recent past stays detailed. The first record is always kept."""
    if len(records) <= cap:
        return records
    split = len(records) - cap // 2
    older, newer = records[:split], records[split:]
    kept = {0}
    for stream in (
        [i for i, r in enumerate(older) if r.test_log_likelihood is not None],
        [i for i, r in enumerate(older) if r.test_log_likelihood is None],
    ):
        n = cap // 8
        if len(stream) <= n:
            kept.update(stream)
            continue
        steps = [older[i].step for i in stream]
        for k in range(n):  # the record at or after each of n evenly spaced steps
            target = steps[0] + (steps[-1] - steps[0]) * k / (n - 1)
            kept.add(stream[min(bisect.bisect_left(steps, target), len(stream) - 1)])
    return [older[i] for i in sorted(kept)] + newer


def _apply(shared: _Shared, update: Update, sent_seq: int) -> None:
    if update.generation != shared.generation or shared.state == "closed":
        return  # an update of the run before the last Reset, or one still in flight when the run was closed
    for name, records in update.records.items():
        curve = shared.curves.setdefault(name, [])
        curve.extend(records)
        if len(curve) > CURVE_CAP:
            curve[:] = thin(curve, CURVE_CAP)
    shared.step, shared.step_by_run, shared.steps_per_s = update.step, update.step_by_run, update.steps_per_s
    shared.kappa, shared.lr = update.kappa, update.lr
    if update.snapshot is not None:
        shared.snapshot = update.snapshot
        shared.version += 1
    if update.symmetry is not None:
        shared.symmetry = update.symmetry
    shared.seq_seen = update.seq
    if update.seq == sent_seq:  # the worker has seen every command: its state is current
        shared.worker_state, shared.busy = update.state, update.busy
        if not shared.waiting:
            shared.state, shared.message = update.state, update.message


# -- the pool's hosts -------------------------------------------------------------------------------
class _Host:
    """The server's end of a training host: the runs it hosts, sending commands to it in order,
    and folding its messages into its runs (a host's reader thread calls :meth:`_fold`)."""

    name = ""  # for the pool's stats: the process id, or the Ray actor's node

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.send_lock = threading.Lock()
        # run id -> (its shared state, the seq counter of its commands); a run is hosted while here
        self.runs: dict[str, tuple[_Shared, list[int]]] = {}

    @property
    def alive(self) -> bool:
        raise NotImplementedError

    def _transmit(self, data: bytes) -> None:
        """Send one pickled ``(run_id, message)``, the caller holding ``send_lock``."""
        raise NotImplementedError

    def wait_closed(self, timeout: float = CLOSE_TIMEOUT) -> int:
        """Wait for the host, asked to exit, to do so (``timeout`` seconds, then kill it); its exit code."""
        raise NotImplementedError

    def send(self, run_id: str, message: Command) -> None:
        with self.send_lock:
            self.send_unlocked(run_id, message)

    def send_unlocked(self, run_id: str, message: Command) -> None:
        """Send, the caller holding ``send_lock``."""
        try:
            self._transmit(pickle.dumps((run_id, message), pickle.HIGHEST_PROTOCOL))
        except OSError:  # the host is gone; the reader thread reports it
            pass

    def close(self, timeout: float = CLOSE_TIMEOUT) -> int:
        """Ask the host to exit and wait for it (``timeout`` seconds, then kill it); its exit code."""
        self.send("", Close())
        return self.wait_closed(timeout)

    def _fold(self, data: bytes) -> None:
        """One message from the host, into its run."""
        run_id, message = pickle.loads(data)
        hosted = self.runs.get(run_id)
        if hosted is None:
            return
        shared, sent = hosted
        with shared.lock:
            match message:
                case Freed():
                    self.runs.pop(run_id, None)
                case CheckpointReply():
                    shared.replies.append(message)
                case Update():
                    _apply(shared, message, sent[0])
            _notify(shared)
        if isinstance(message, Update) and not message.busy:
            self.pool.finished(run_id, message.seq)

    def _ended(self, reason: str) -> None:
        """The host is gone: its runs stop, with ``reason``, and give up their places."""
        for shared, _ in list(self.runs.values()):
            with shared.lock:
                shared.end("stopped", f"{reason}. Press Reset to start a new run.")
        self.pool.worker_ended(self, list(self.runs))
        self.runs.clear()


class _Worker(_Host):
    """A training process of this machine, the server's end of its socket, and the thread that reads it."""

    def __init__(self, pool: Pool) -> None:
        super().__init__(pool)
        ours, theirs = socket.socketpair()
        args = [sys.executable, "-m", "dashboard.worker"]
        env = {**os.environ, **WORKER_ENV}
        if os.name == "nt":  # no fd inheritance: the socket travels as a share blob on stdin
            self.process = subprocess.Popen([*args, "-"], cwd=ROOT, env=env, stdin=subprocess.PIPE)
            assert self.process.stdin is not None
            self.process.stdin.write(theirs.share(self.process.pid))  # type: ignore[attr-defined]
            self.process.stdin.close()
        else:
            fd = theirs.fileno()
            self.process = subprocess.Popen([*args, str(fd)], cwd=ROOT, env=env, pass_fds=[fd])
        theirs.close()
        self.name = f"pid {self.process.pid}"
        self.conn = Connection(ours.detach())
        self.reader = threading.Thread(target=self._read, name=f"ehflow-reader-{self.process.pid}", daemon=True)
        self.reader.start()

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def _transmit(self, data: bytes) -> None:
        self.conn.send_bytes(data)

    def _read(self) -> None:
        """Fold the process's messages into its runs until the socket closes; then reap the
        process (a crashed one is not left a zombie) and tell its runs why they stopped. Any
        other failure (a message the server cannot read or fold) ends the process too: its runs
        are told why rather than left "training" with nobody reading them."""
        reason = "The training process ended"
        try:
            while True:
                self._fold(self.conn.recv_bytes())
        except (EOFError, OSError):
            pass
        except Exception as err:
            log.exception("reading training process %s", self.process.pid)
            reason = f"The server could not read its training process ({type(err).__name__}), which was stopped"
            self.process.kill()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            pass
        code = self.process.poll()
        self._ended(reason + ("" if code is None else f" (exit code {code})"))

    def wait_closed(self, timeout: float = CLOSE_TIMEOUT) -> int:
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.reader.join(timeout)
        self.conn.close()
        return code


class _RayWorker(_Host):
    """A :class:`~dashboard.worker.ActorHost` on the Ray cluster (``EHFLOW_RAY_ADDRESS``), and the
    thread that long-polls its messages. Not restarted by Ray: a dead actor's runs report "stopped"
    with the reason, as a dead process's do, and the pool starts another for the next run."""

    POLL = 0.5  # seconds a collect waits for the actor's first message

    def __init__(self, pool: Pool) -> None:
        super().__init__(pool)
        self.ray = pool.ray
        self.actor = pool.actor_class.remote()
        self.number = 0  # of the last command sent (the actor puts them back in order)
        self.done = threading.Event()
        self.name = "ray actor (starting)"
        self.reader = threading.Thread(target=self._read, name="ehflow-ray-reader", daemon=True)
        self.reader.start()

    @property
    def alive(self) -> bool:
        return not self.done.is_set()

    def _transmit(self, data: bytes) -> None:
        self.number += 1
        try:
            self.actor.deliver.remote(self.number, data)
        except Exception as err:  # Ray has shut down (the server is exiting)
            raise OSError(str(err)) from err

    def _read(self) -> None:
        from ehflow_core.sweep_backends import first_line  # torch: imported by the page by now

        reason = "The training actor ended"
        try:
            try:
                node = self.ray.get(self.actor.node.remote(), timeout=ACTOR_START_TIMEOUT)
            except self.ray.exceptions.GetTimeoutError:
                raise RuntimeError(f"no free CPU for it on the cluster within {ACTOR_START_TIMEOUT:.0f} s") from None
            self.name = f"ray actor on node {node.rsplit('/', 1)[-1]}"  # its id: no address on the page
            while (batch := self.ray.get(self.actor.collect.remote(self.POLL))) is not None:
                for data in batch:
                    self._fold(data)
        except Exception as err:  # the actor, its node or the connection to the cluster died
            reason = f"The training actor on the Ray cluster died ({first_line(err, 200) or type(err).__name__})"
        self.done.set()
        try:
            self.ray.kill(self.actor)
        except Exception:  # already gone, or Ray has shut down
            pass
        self._ended(reason)

    def wait_closed(self, timeout: float = CLOSE_TIMEOUT) -> int:
        self.reader.join(timeout)
        if self.reader.is_alive():  # it did not stop in time: kill it (the reader then ends)
            self.ray.kill(self.actor)
            self.reader.join(timeout)
            return 1
        return 0


@dataclass
class _Place:
    """A run's place to train: since when, and the number of the command (Play or Step) sent on it."""

    seq: int | None = None
    since: float = field(default_factory=time.monotonic)


class Pool:
    """The training hosts and the runs they host: placement, admission, freeing.

    Hosts are processes of this machine, or, with ``ray_address`` (default: the environment's
    ``EHFLOW_RAY_ADDRESS``; ``"auto"``, ``"host:port"`` or ``"ray://host:port"``), Ray actors on
    that cluster, one CPU each, by default as many as it has CPUs. Without an address Ray is
    neither imported nor started.
    """

    def __init__(
        self, workers: int | None = None, max_training: int | None = None, ray_address: str | None = None
    ) -> None:
        address = ray_address or os.environ.get("EHFLOW_RAY_ADDRESS", "").strip() or None
        self.host_class: type[_Host] = _Worker
        cpus = os.cpu_count() or 1
        if address is not None:
            from dashboard.worker import ActorHost
            from ehflow_core.sweep_backends import connect_ray

            self.ray, _ = connect_ray(address, setting="EHFLOW_RAY_ADDRESS")
            self.actor_class = self.ray.remote(num_cpus=1, max_concurrency=4)(ActorHost)
            self.host_class = _RayWorker
            cpus = max(1, int(self.ray.cluster_resources().get("CPU", 1)))
        self.size = workers if workers is not None else _env_count("EHFLOW_WORKERS", cpus)
        self.max_training = max_training or _env_count("EHFLOW_MAX_RUNS", RUNS_PER_WORKER * self.size)
        self.free_after = _env_seconds("EHFLOW_FREE_AFTER", FREE_AFTER)  # a closed tab's grace, in seconds
        self.client_training = _env_count("EHFLOW_CLIENT_TRAINING", CLIENT_TRAINING)  # places per client
        self.client_runs = _env_count("EHFLOW_CLIENT_RUNS", CLIENT_RUNS)  # runs hosted per client
        self.lock = threading.Lock()
        self.workers: list[_Host] = []
        self.runs: weakref.WeakValueDictionary[str, LiveRun] = weakref.WeakValueDictionary()  # run id -> run
        self.tokens: weakref.WeakValueDictionary[str, LiveRun] = weakref.WeakValueDictionary()  # feed token -> run
        self.training: dict[str, _Place] = {}  # run id -> its place to train
        self.pace = 0  # the most training runs of any one process, as last told to the processes
        self.waiting: list[str] = []  # run ids, first come first served
        self.drops: queue.SimpleQueue[tuple[_Host, str]] = queue.SimpleQueue()
        self._ids = itertools.count(1)
        self.closed = False
        self._housekeeper = threading.Thread(target=self._housekeep, name="ehflow-pool", daemon=True)
        self._housekeeper.start()

    @property
    def backend(self) -> str:
        """Where the runs train: "local" (processes of this machine) or "ray"."""
        return "ray" if self.host_class is _RayWorker else "local"

    # -- processes -------------------------------------------------------------------------------
    def prestart(self) -> None:
        """Start the first process now: it imports torch and warms up while the server starts."""
        with self.lock:
            if not self.workers:
                self.workers.append(self.host_class(self))

    def place(self, client: str = "") -> tuple[_Host, str]:
        """A process for a new run, and the run's id: a new process while the pool is not full
        and every process hosts a run, else the one with the fewest training runs, then runs.
        ``client``: the browser asking; one that hosts ``client_runs`` runs already gets none."""
        with self.lock:
            if self.closed:
                raise OSError("the dashboard's server is shutting down")
            if client and sum(run.client == client for run in list(self.runs.values())) >= self.client_runs:
                raise OSError(
                    f"this browser already has {self.client_runs} runs on the server, the most one browser may "
                    "have: close one of its other tabs, then reload this one"
                )
            self.workers = [w for w in self.workers if w.alive]
            started = None
            if len(self.workers) < self.size and all(len(w.runs) for w in self.workers):
                started = self.host_class(self)
                self.workers.append(started)

            def load(worker: _Host) -> tuple[int, int]:
                hosted = list(worker.runs)  # a copy: the reader thread removes freed runs
                return sum(run_id in self.training for run_id in hosted), len(hosted)

            chosen, pace = min(self.workers, key=load), self.pace
        if started is not None and pace:
            started.send("", Pace(pace))  # a new process trains at the pool's pace too
        return chosen, f"r{next(self._ids)}"

    def worker_ended(self, worker: _Host, run_ids: list[str]) -> None:
        """A process ended (the reader saw its socket close): its runs give up their places."""
        with self.lock:
            if worker in self.workers:
                self.workers.remove(worker)
        for run_id in run_ids:
            self.release(run_id)

    def sharing(self, run: LiveRun) -> int:
        """Other runs training in ``run``'s process now."""
        with self.lock:
            return sum(other in self.training for other in list(run._worker.runs) if other != run.id)

    # -- admission -------------------------------------------------------------------------------
    def admit(self, run: LiveRun) -> bool:
        """A place to train for ``run`` (True), or a place in the waiting line (False): while the
        places are taken, or its browser trains ``client_training`` runs already."""
        with self.lock:
            if run.id in self.training:
                return True
            admitted = run.id not in self.waiting and len(self.training) < self.max_training
            admitted = admitted and self._client_may_train(run)
            if admitted:
                self.training[run.id] = _Place()
            else:
                if run.id not in self.waiting:
                    self.waiting.append(run.id)
                self._tell_waiting()
        if admitted:
            self._repace()
        return admitted

    def _repace(self) -> None:
        """Tell every process the pool's pace (:class:`~dashboard.protocol.Pace`) when it changed:
        the most training runs any one process has."""
        with self.lock:
            counts = [sum(run_id in self.training for run_id in list(w.runs)) for w in self.workers]
            pace = max(counts, default=0)
            if pace == self.pace:
                return
            self.pace, workers = pace, list(self.workers)
        for worker in workers:
            worker.send("", Pace(pace))

    def _client_may_train(self, run: LiveRun) -> bool:
        """Whether ``run``'s browser has a place left; the caller holds ``lock``."""
        if not run.client:
            return True
        training = [self.runs.get(run_id) for run_id in self.training]
        return sum(other is not None and other.client == run.client for other in training) < self.client_training

    def took(self, run_id: str, seq: int) -> None:
        """The command numbered ``seq`` (Play or Step) went out on the run's place."""
        with self.lock:
            if run_id in self.training:
                self.training[run_id].seq = seq

    def finished(self, run_id: str, seq: int) -> None:
        """The process reports the run idle after command ``seq``: a place it held is free."""
        with self.lock:
            place = self.training.get(run_id)
            if place is None or place.seq is None or seq < place.seq:
                return
        self.release(run_id)

    def release(self, run_id: str, requeue: bool = False) -> None:
        """``run_id`` gives up its place (or its place in line); the first waiting runs start.
        ``requeue``: a run that gives up its place waits again, at the back of the line."""
        starting = []
        with self.lock:
            if run_id in self.waiting:
                self.waiting.remove(run_id)
            if self.training.pop(run_id, None) is not None and requeue:
                self.waiting.append(run_id)
            for waiting_id in list(self.waiting):  # in order, passing runs whose browser has its places
                if len(self.training) >= self.max_training:
                    break
                run = self.runs.get(waiting_id)
                if run is None:
                    self.waiting.remove(waiting_id)
                elif self._client_may_train(run):
                    self.waiting.remove(waiting_id)
                    self.training[run.id] = _Place()
                    starting.append(run)
            self._tell_waiting()
        for run in starting:  # outside the lock: starting sends on the run's socket
            run._begin()
        self._repace()

    def rotate(self) -> None:
        """While runs wait, a run that has trained ``TURN`` seconds on its place goes to the back
        of the line (paused, to resume when its turn comes again), so a class takes turns."""
        now = time.monotonic()
        with self.lock:
            waiting = [self.runs.get(run_id) for run_id in self.waiting]
            if not any(run is not None and self._client_may_train(run) for run in waiting):
                return  # nobody waits, or only the runs of browsers that train their share already
            done = [self.runs.get(run_id) for run_id, place in self.training.items() if now - place.since >= TURN]
        for run in done:
            if run is not None:
                run._yield_turn()

    def _tell_waiting(self) -> None:
        """Tell each waiting run its place in line; the caller holds ``lock``."""
        for ahead, run_id in enumerate(self.waiting):
            run = self.runs.get(run_id)
            if run is None:
                continue
            n = len(self.training) + ahead
            shared = run._shared
            with shared.lock:
                shared.waiting, shared.state = True, "queued"
                if len(self.training) < self.max_training and not self._client_may_train(run):
                    runs = f"{self.client_training} run{'s' if self.client_training != 1 else ''}"
                    shared.message = (
                        f"This browser already trains {runs}, the most one browser may at once: yours starts "
                        "when one of them pauses or closes."
                    )
                else:
                    shared.message = (
                        f"The server is busy: {n} run{'s' if n != 1 else ''} ahead of yours "
                        f"({self.max_training} train at once, in turns of {TURN / 60:.0f} min while others wait). "
                        "Yours starts when a place frees."
                    )
                _notify(shared)

    # -- freeing -----------------------------------------------------------------------------------
    def register(self, run: LiveRun) -> None:
        with self.lock:
            self.runs[run.id] = run
            self.tokens[run.token] = run

    def find(self, token: str) -> LiveRun | None:
        with self.lock:
            return self.tokens.get(token)

    def unlist(self, token: str) -> None:
        """The run's feed answers no more (at once; its memory goes with :meth:`forget`)."""
        with self.lock:
            self.tokens.pop(token, None)

    def forget(self, worker: _Host, run_id: str) -> None:
        """Free ``run_id`` in its process, from the housekeeping thread (callable from anywhere,
        a garbage collection included: it only queues)."""
        self.drops.put((worker, run_id))

    def _housekeep(self) -> None:
        """Send the frees as they come, and every ``HOUSEKEEPING_EVERY`` seconds free the runs
        whose tabs have gone and rotate the turns (a steady stream of frees does not put it off)."""
        due = time.monotonic()
        while True:
            try:
                worker, run_id = self.drops.get(timeout=max(0.0, due - time.monotonic()))
            except queue.Empty:
                pass
            else:
                self.release(run_id)
                worker.send(run_id, Drop())
            if time.monotonic() >= due:
                self._free_abandoned()
                self.rotate()
                due = time.monotonic() + HOUSEKEEPING_EVERY

    def _free_abandoned(self) -> None:
        now = time.monotonic()
        for run in list(self.runs.values()):
            if run._session_alive is None or run.state == "closed":
                continue
            try:
                alive = run._session_alive()
            except Exception:  # the server is shutting down
                continue
            if alive:
                run._gone_since = None
            elif run._gone_since is None:
                run._gone_since = now
            elif now - run._gone_since >= self.free_after:
                run.free(
                    f"This run was freed {self.free_after:g} s after its page closed. Press Reset to start another."
                )

    def close(self) -> None:
        """Close every process (at exit, and on SIGTERM/SIGINT through it): all asked first, then waited for."""
        with self.lock:
            self.closed = True
            workers, self.workers = list(self.workers), []
        for worker in workers:
            worker.send("", Close())
        for worker in workers:
            worker.wait_closed()

    def stats(self) -> dict:
        """Processes, runs, training and waiting runs, for the server's status route and benchmarks."""
        with self.lock:
            return {
                "backend": self.backend,
                "workers": [{"host": w.name, "runs": len(w.runs)} for w in self.workers],
                "runs": sum(len(w.runs) for w in self.workers),
                "training": len(self.training),
                "waiting": len(self.waiting),
                "max_training": self.max_training,
            }


_pool: Pool | None = None
_pool_lock = threading.Lock()


def pool() -> Pool:
    """The server's pool (made on first use, sized from the environment)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool.closed:
            _pool = Pool()
        return _pool


def prestart() -> None:
    """Start the pool's first process now, before the page's own imports: it imports torch and
    warms its optimiser in parallel, and the first session's run goes there."""
    pool().prestart()


@atexit.register
def close_pool() -> None:
    """Close every training process (before the interpreter exits)."""
    if _pool is not None:
        _pool.close()


def find_run(token: str) -> LiveRun | None:
    """The live run with this feed token, or None (its session has ended, or it was freed)."""
    return None if _pool is None else _pool.find(token)


# -- the page's handle ---------------------------------------------------------------------------
class LiveRun:
    """One session's run (one trainer, or several κ in sweep mode), hosted by a process of the pool.

    ``session_alive``: whether the session's page is still connected (the page passes Streamlit's
    answer); once it has said no for the pool's ``free_after`` seconds the run is freed and its
    feed answers 404. None: only ``close`` or garbage collection free the run.
    """

    def __init__(
        self,
        settings: Settings,
        target: Target,
        session_alive: Callable[[], bool] | None = None,
        client: str = "",
    ) -> None:
        self._pool = pool()
        self.client = client  # the browser the run belongs to ("": no limit per browser applies)
        self._worker, self.id = self._pool.place(client)
        self._shared = _Shared()
        self._sent = [0]  # seq of the last state-changing command (a list: the reader reads it)
        self._generation = 0
        self._session_alive = session_alive
        self._gone_since: float | None = None
        self._waiting_for: Callable[[int], Play | TrainSteps] | None = None  # the command a waiting run will send
        self._worker.runs[self.id] = (self._shared, self._sent)
        # The page's charts fetch this run's figures by its token (unguessable: another tab cannot).
        self.token = secrets.token_urlsafe(16)
        self.feed_cache: Any = None  # the chart feed's figures of the latest version (live_chart.Figures)
        self.feed_lock = threading.Lock()  # one build of them at a time
        self.figures_page: tuple[int, bytes] | None = None  # the Figures download: (version, page)
        self._pool.register(self)
        self._finalizer = weakref.finalize(self, self._pool.forget, self._worker, self.id)
        self.reset(settings, target)

    # -- control from the page ---------------------------------------------------------------------
    def reset(self, settings: Settings, target: Target) -> None:
        """A new run from ``settings`` (same seed: same start), in the same warm process."""
        from ehflow_core.reporting import run_label  # torch: imported by the page by now, not at start-up

        settings.train_config()  # invalid settings raise here, in the page, not in the worker
        self._pool.release(self.id)
        self.settings, self.target = settings, target
        self.primary_label = settings.primary_label()
        labels = [run_label(k) for k in settings.sweep_kappas()] if settings.sweeping else [self.primary_label]
        self._generation += 1
        with self._shared.lock:
            self._shared.reset(self._generation, labels)
            self._shared.waiting, self._waiting_for = False, None
        generation = self._generation
        self._command(lambda seq: Start(seq, generation, settings, target, HEARTBEAT_TIMEOUT))
        self._requested = (settings.kappa, settings.lr)  # the new run starts with them

    def _command(
        self,
        make: Callable[[int], Start | Play | Pause | TrainSteps],
        state: str | None = None,
        busy: bool | None = None,
    ) -> int:
        """Send a state-changing command, made with its number (returned); ``state``/``busy``
        show at once, until the worker confirms."""
        with self._worker.send_lock:  # commands leave in the order of their numbers
            with self._shared.lock:
                self._sent[0] += 1
                seq = self._sent[0]
                if state is not None:
                    self._shared.state = state
                if busy is not None:
                    self._shared.busy = busy
            self._worker.send_unlocked(self.id, make(seq))
        return seq

    def _train(self, make: Callable[[int], Play | TrainSteps], state: str | None) -> None:
        """Train (Play or Step) on a place of the pool's, or wait in line for one."""
        if self._pool.admit(self):
            self._pool.took(self.id, self._command(make, state=state, busy=True))
        else:
            self._waiting_for = make

    def _begin(self) -> None:
        """A place came free for this waiting run: send what it waited to do."""
        make, self._waiting_for = self._waiting_for, None
        with self._shared.lock:
            self._shared.waiting = False
        if make is None or self.state in ("diverged", "stopped", "closed"):
            self._pool.release(self.id)
            return
        self._pool.took(self.id, self._command(make, state="training" if make is Play else None, busy=True))

    def _yield_turn(self) -> None:
        """Its turn is over while others wait: pause, and wait at the back of the line to resume."""
        if self.state != "training":  # a Step's few steps finish on their own
            return
        self._waiting_for = Play
        self._command(Pause, busy=False)
        self._pool.release(self.id, requeue=True)

    def beat(self, want_snapshot: bool = False) -> None:
        """Called on every page view: the worker trains only while views keep coming.

        ``want_snapshot``: the page's live panel asks for the next snapshot.
        """
        self._worker.send(self.id, Beat(want_snapshot))

    def play(self) -> None:
        if self.state in ("diverged", "stopped", "closed", "queued"):
            return
        self._train(Play, state="training")

    def pause(self) -> None:
        """Pause training, or leave the waiting line."""
        if self.state == "queued":
            self._waiting_for = None
            with self._shared.lock:
                self._shared.waiting = False
                self._shared.state, self._shared.message = self._shared.worker_state, None
                _notify(self._shared)
        else:
            self._command(Pause, state="paused" if self.state == "training" else None, busy=False)
        self._pool.release(self.id)

    def step(self, n: int = 10) -> None:
        """Train ``n`` steps then pause (a no-op while busy, so a click delivered twice does not
        double the steps)."""
        if self.busy or self.state in ("diverged", "stopped", "closed", "queued"):
            return
        self._train(lambda seq: TrainSteps(seq, n), state=None)

    def set_live(self, kappa: float | None, lr: float, wait: float = 0.0) -> None:
        """Apply a new κ (single-run mode) and learning rate from the worker's next step on.

        ``wait``: seconds to wait for the worker to report them in use (so the page that moved a
        slider can show its effect in the same rerun); returns early when it does. Values already
        asked for are neither sent nor waited for again (the page calls this on every rerun).
        """
        if (kappa, lr) == self._requested:
            return
        self._requested = (kappa, lr)
        self._worker.send(self.id, SetLive(kappa, lr))
        if wait <= 0:
            return
        s = self._shared

        def applied() -> bool:
            return s.lr == lr and (self.settings.sweeping or s.kappa == kappa) or s.state in ("stopped", "closed")

        with s.lock:
            s.changed.wait_for(applied, wait)

    def checkpoint_bytes(self) -> bytes:
        """The primary run's checkpoint (for the download button)."""
        with self._shared.lock:
            self._shared.replies.clear()
        self._worker.send(self.id, CheckpointRequest())
        with self._shared.lock:
            if not self._shared.changed.wait_for(lambda: self._shared.replies or not self.worker_alive, REPLY_TIMEOUT):
                raise RuntimeError(f"no checkpoint from the training process within {REPLY_TIMEOUT:.0f} s")
            if not self._shared.replies:
                raise RuntimeError("the training process has ended: no checkpoint")
            reply = self._shared.replies.pop()
        if reply.data is None:
            raise RuntimeError(f"the checkpoint failed: {reply.error}")
        return reply.data

    def free(self, reason: str | None = None) -> None:
        """End the run without waiting: its place and its feed go now, its memory in its process
        as soon as the process reads the request."""
        with self._shared.lock:
            self._shared.end("closed", reason)
            self._shared.snapshot, self._shared.curves = None, {}  # the server's copy of its pictures and curves
        self._waiting_for = None
        self.feed_cache = self.figures_page = None
        self._finalizer.detach()
        self._pool.unlist(self.token)
        self._pool.forget(self._worker, self.id)

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """:meth:`free`, then wait until the process reports the run gone (``timeout`` seconds)."""
        self.free()
        deadline = time.monotonic() + timeout
        while self.hosted and time.monotonic() < deadline:
            time.sleep(0.02)

    # -- what the page reads -----------------------------------------------------------------------
    @property
    def state(self) -> str:
        return self._shared.state

    @property
    def busy(self) -> bool:
        """Training, or working through requested steps."""
        return self._shared.busy

    @property
    def hosted(self) -> bool:
        """Whether a process still holds this run (False once freed, or once its process ended)."""
        return self.id in self._worker.runs

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Return once ``predicate()`` holds, checked after each message from the worker, or after
        ``timeout`` seconds. An event-loop wait: no thread is held, so many tabs cost nothing."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        waiter = (loop, asyncio.Event())
        with self._shared.lock:
            self._shared.waiters.add(waiter)
        try:
            while True:
                waiter[1].clear()  # before the check: a message after it sets the event again
                remaining = deadline - loop.time()
                if predicate() or remaining <= 0:
                    return
                try:
                    await asyncio.wait_for(waiter[1].wait(), remaining)
                except TimeoutError:
                    return
        finally:
            with self._shared.lock:
                self._shared.waiters.discard(waiter)

    @property
    def status_key(self) -> tuple:
        """What changes when the page's readouts must change at once: state, message, κ, lr."""
        s = self._shared
        return (s.state, s.message, s.busy, s.kappa, s.lr)

    @property
    def version(self) -> int:
        """The version of the latest snapshot (0 before the first)."""
        return self._shared.version

    @property
    def confirmed(self) -> bool:
        """Whether the worker has reported handling every command sent so far."""
        with self._shared.lock:
            return self._shared.seq_seen == self._sent[0]

    @property
    def worker_alive(self) -> bool:
        """Whether the run can still train: its process runs and still hosts it."""
        return self._worker.alive and self.hosted and self.state != "closed"

    @property
    def session_alive(self) -> bool:
        """Whether the run's page is still connected (True when the page gave no way to ask)."""
        return self._session_alive is None or self._session_alive()

    def view(self) -> View:
        s = self._shared
        sharing = self._pool.sharing(self) if s.state == "training" else 0
        with s.lock:
            return View(
                state=s.state,
                message=s.message,
                step=s.step,
                steps_per_s=s.steps_per_s,
                snapshot=s.snapshot,
                version=s.version,
                curves={k: list(v) for k, v in s.curves.items()},
                symmetry=dict(s.symmetry),
                step_by_run=dict(s.step_by_run),
                kappa=s.kappa,
                lr=s.lr,
                sharing=sharing,
                host=self._worker.name if self._pool.backend == "ray" else "",
            )
