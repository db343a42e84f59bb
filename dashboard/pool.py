"""The pool of training hosts and the runs they host: placement (a new run goes to the host with
the fewest training runs), admission (at most ``EHFLOW_MAX_RUNS`` train at once, at most
``EHFLOW_CLIENT_TRAINING`` per browser; the others wait in line and take turns), the pace that
gives every training run about the same share, and freeing the runs of closed tabs. One pool per
server (:func:`pool`); its hosts are processes of this machine or, with ``EHFLOW_RAY_ADDRESS``,
Ray actors (docs/hosting.md)."""

from __future__ import annotations

import atexit
import itertools
import logging
import math
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .links import ActorLink, HostLink, ProcessLink
from .protocol import (
    Close,
    Drop,
    Pace,
)
from .run_state import Shared, notify

log = logging.getLogger(__name__)

FREE_AFTER = 10.0  # default seconds after its tab is gone before its run is freed (a reconnect keeps it)
HOUSEKEEPING_EVERY = 1.0  # seconds between the housekeeping thread's checks of the sessions
RUNS_PER_WORKER = 4  # the default admission limit, per process
# One browser (a client: Streamlit's XSRF cookie, the same in all of a browser's tabs) may train at
# most this many runs at once and host at most CLIENT_RUNS, whatever its number of tabs: ten tabs
# of one student cannot take a class's places (EHFLOW_CLIENT_TRAINING, EHFLOW_CLIENT_RUNS).
CLIENT_TRAINING = 2
CLIENT_RUNS = 6
TURN = 120.0  # seconds a run trains while others wait before it gives its place to the first in line


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


class PooledRun(Protocol):
    """What the pool needs of a run it hosts (:class:`~dashboard.live.LiveRun`)."""

    id: str
    token: str
    client: str
    shared: Shared
    host: HostLink
    gone_since: float | None
    session_probe: Callable[[], bool] | None

    @property
    def state(self) -> str: ...

    def free(self, reason: str | None = None) -> None: ...

    def begin_turn(self) -> None: ...

    def yield_turn(self) -> None: ...


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
        self.host_class: type[HostLink] = ProcessLink
        cpus = os.cpu_count() or 1
        if address is not None:
            from dashboard.worker import ActorHost
            from ehflow_core.sweep_backends import connect_ray

            self.ray, _ = connect_ray(address, setting="EHFLOW_RAY_ADDRESS")
            self.actor_class = self.ray.remote(num_cpus=1, max_concurrency=4)(ActorHost)
            self.host_class = ActorLink
            cpus = max(1, int(self.ray.cluster_resources().get("CPU", 1)))
        self.size = workers if workers is not None else _env_count("EHFLOW_WORKERS", cpus)
        self.max_training = max_training or _env_count("EHFLOW_MAX_RUNS", RUNS_PER_WORKER * self.size)
        self.free_after = _env_seconds("EHFLOW_FREE_AFTER", FREE_AFTER)  # a closed tab's grace, in seconds
        self.client_training = _env_count("EHFLOW_CLIENT_TRAINING", CLIENT_TRAINING)  # places per client
        self.client_runs = _env_count("EHFLOW_CLIENT_RUNS", CLIENT_RUNS)  # runs hosted per client
        self.lock = threading.Lock()
        self.workers: list[HostLink] = []
        self.runs: weakref.WeakValueDictionary[str, PooledRun] = weakref.WeakValueDictionary()  # run id -> run
        self.tokens: weakref.WeakValueDictionary[str, PooledRun] = weakref.WeakValueDictionary()  # feed token -> run
        self.training: dict[str, _Place] = {}  # run id -> its place to train
        self.pace = 0  # the most training runs of any one process, as last told to the processes
        self.waiting: list[str] = []  # run ids, first come first served
        self.drops: queue.SimpleQueue[tuple[HostLink, str]] = queue.SimpleQueue()
        self._ids = itertools.count(1)
        self.closed = False
        self._housekeeper = threading.Thread(target=self._housekeep, name="ehflow-pool", daemon=True)
        self._housekeeper.start()

    @property
    def backend(self) -> str:
        """Where the runs train: "local" (processes of this machine) or "ray"."""
        return "ray" if self.host_class is ActorLink else "local"

    # -- processes -------------------------------------------------------------------------------
    def prestart(self) -> None:
        """Start the first process now: it imports torch while the server starts."""
        with self.lock:
            if not self.workers:
                self.workers.append(self.host_class(self))

    def place(self, client: str = "") -> tuple[HostLink, str]:
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

            chosen = min(self.workers, key=lambda w: (self._training_in(w), len(w.runs)))
            pace = self.pace
        if started is not None and pace:
            started.send("", Pace(pace))  # a new process trains at the pool's pace too
        return chosen, f"r{next(self._ids)}"

    def worker_ended(self, worker: HostLink, run_ids: list[str]) -> None:
        """A process ended (the reader saw its socket close): its runs give up their places."""
        with self.lock:
            if worker in self.workers:
                self.workers.remove(worker)
        for run_id in run_ids:
            self.release(run_id)

    def sharing(self, run: PooledRun) -> int:
        """Other runs training in ``run``'s process now."""
        with self.lock:
            return self._training_in(run.host, but=run.id)

    def _training_in(self, host: HostLink, but: str = "") -> int:
        """Runs of ``host`` training now (``but`` one); the caller holds ``lock``."""
        return sum(
            run_id in self.training for run_id in list(host.runs) if run_id != but
        )  # a copy: the reader frees runs

    # -- admission -------------------------------------------------------------------------------
    def admit(self, run: PooledRun) -> bool:
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
            pace = max((self._training_in(w) for w in self.workers), default=0)
            if pace == self.pace:
                return
            self.pace, workers = pace, list(self.workers)
        for worker in workers:
            worker.send("", Pace(pace))

    def _client_may_train(self, run: PooledRun) -> bool:
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
            run.begin_turn()
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
                run.yield_turn()

    def _tell_waiting(self) -> None:
        """Tell each waiting run its place in line; the caller holds ``lock``."""
        for ahead, run_id in enumerate(self.waiting):
            run = self.runs.get(run_id)
            if run is None:
                continue
            n = len(self.training) + ahead
            shared = run.shared
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
                notify(shared)

    # -- freeing -----------------------------------------------------------------------------------
    def register(self, run: PooledRun) -> None:
        with self.lock:
            self.runs[run.id] = run
            self.tokens[run.token] = run

    def find(self, token: str) -> PooledRun | None:
        with self.lock:
            return self.tokens.get(token)

    def unlist(self, token: str) -> None:
        """The run's feed answers no more (at once; its memory goes with :meth:`forget`)."""
        with self.lock:
            self.tokens.pop(token, None)

    def forget(self, worker: HostLink, run_id: str) -> None:
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
            if run.session_probe is None or run.state == "closed":
                continue
            try:
                alive = run.session_probe()
            except Exception:  # the server is shutting down
                continue
            if alive:
                run.gone_since = None
            elif run.gone_since is None:
                run.gone_since = now
            elif now - run.gone_since >= self.free_after:
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
    """Start the pool's first process now, before the page's own imports: it imports torch in
    parallel, and the first session's run goes there."""
    pool().prestart()


@atexit.register
def close_pool() -> None:
    """Close every training process (before the interpreter exits)."""
    if _pool is not None:
        _pool.close()


def find_run(token: str) -> PooledRun | None:
    """The live run with this feed token, or None (its session has ended, or it was freed)."""
    return None if _pool is None else _pool.find(token)
