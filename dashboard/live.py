"""A training run that lives in one browser session, trained in a process of its own.

No Streamlit here. :class:`LiveRun` is the page's handle on a worker process
(:mod:`dashboard.worker`): buttons and live settings become commands on a socket, and a reader
thread folds the worker's updates (state, step counter, new curve records, snapshots) into a
:class:`View` that the page and its live panel's feed copy out under a lock. The server process only
draws; training never holds its GIL, so the controls stay responsive while a run trains.

Lifetimes: Reset starts a new run in the same process (it is warm: no import, no start-up). The
process exits when its run is closed, when the ``LiveRun`` is garbage collected (Streamlit dropped
the session), or when the server dies (its end of the socket closes). Training stops by itself
when no page view arrived for ``HEARTBEAT_TIMEOUT`` seconds (the tab was closed).
"""

from __future__ import annotations

import asyncio
import atexit
import bisect
import logging
import os
import pickle
import secrets
import socket
import subprocess
import sys
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING

from .protocol import (
    Beat,
    CheckpointReply,
    CheckpointRequest,
    Close,
    Command,
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
HEARTBEAT_TIMEOUT = 1.0  # seconds without a page view before the worker stops training
REPLY_TIMEOUT = 60.0  # seconds to wait for a checkpoint from the worker
CLOSE_SOON_TIMEOUT = 60.0  # seconds a dropped run's process has to exit before it is killed
CURVE_CAP = 3000  # records kept per curve (older ones are thinned): a long run refreshes as cheaply as a short one
# One OpenMP thread from the start: torch.set_num_threads(1) after torch's first op leaves a
# second OpenMP thread spinning while idle, taking CPU from the page.
WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@dataclass(frozen=True)
class View:
    """What the page draws, copied out under the lock."""

    state: str  # "starting", "ready", "training", "paused", "diverged", "stopped", "closed"
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


# -- worker processes ------------------------------------------------------------------------------
class _Worker:
    """A worker process and the server's end of its socket."""

    def __init__(self) -> None:
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
        self.conn = Connection(ours.detach())
        self.send_lock = threading.Lock()

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def send(self, message: Command) -> None:
        with self.send_lock:
            self.send_unlocked(message)

    def send_unlocked(self, message: Command) -> None:
        """Send, the caller holding ``send_lock``."""
        try:
            self.conn.send_bytes(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))
        except OSError:  # the process is gone; the reader thread reports it
            pass

    def close(self, timeout: float = 10.0) -> None:
        """Ask the process to exit and wait for it (``timeout`` seconds, then kill it)."""
        self.send(Close())
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.conn.close()

    def close_soon(self) -> None:
        """:meth:`close` without waiting: a thread of its own waits for the process, so whatever
        thread drops a run (the server's event loop, when Streamlit frees a session) never blocks."""
        # No one waits, so the process may take its time (it runs at a low priority: on a busy
        # machine its last step and its exit can take many seconds).
        threading.Thread(target=self.close, args=(CLOSE_SOON_TIMEOUT,), name="ehflow-close-worker", daemon=True).start()


_spare: _Worker | None = None
_spare_lock = threading.Lock()
_WORKERS: weakref.WeakSet[_Worker] = weakref.WeakSet()
_RUNS: weakref.WeakValueDictionary[str, LiveRun] = weakref.WeakValueDictionary()  # token -> run


def prestart() -> None:
    """Start the server's first worker now, before the page's own imports: it imports torch and
    warms its optimiser in parallel, and the first session takes it. Later sessions start their
    own (a spare kept warm at all times would cost a core for seconds whenever one is taken)."""
    global _spare
    with _spare_lock:
        if _spare is None and not _WORKERS:
            _spare = _new_worker()


def _new_worker() -> _Worker:
    worker = _Worker()
    _WORKERS.add(worker)
    return worker


def _take_worker() -> _Worker:
    global _spare
    with _spare_lock:
        worker, _spare = _spare, None
    return worker if worker is not None and worker.alive else _new_worker()


@atexit.register
def _close_all() -> None:
    """Close every worker before the interpreter exits."""
    for worker in list(_WORKERS):
        worker.close()


def find_run(token: str) -> LiveRun | None:
    """The live run with this token, or None (its session has ended)."""
    return _RUNS.get(token)


# -- the page's handle ---------------------------------------------------------------------------
class _Shared:
    """State written by the reader thread and read by the page, under ``lock``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.replies: list[CheckpointReply] = []
        self.changed = threading.Condition(self.lock)  # notified on every message from the worker
        # Async waiters (the live panel's requests), woken on every message from the worker.
        self.waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self.version = 0  # never reset: a chart's version names one picture across Resets
        self.reset(0, [])

    def reset(self, generation: int, labels: list[str]) -> None:
        self.generation = generation
        self.seq_seen = -1  # the last command the worker reported handling
        self.state = "starting"
        self.message: str | None = None
        self.busy = False
        self.step, self.step_by_run, self.steps_per_s = 0, {name: 0 for name in labels}, 0.0
        self.kappa: float | None = None
        self.lr: float | None = None
        self.snapshot: Snapshot | None = None
        self.curves: dict[str, list[Record]] = {name: [] for name in labels}
        self.symmetry: dict[str, float] = {}


def _read(conn: Connection, shared: _Shared, worker_sent: list[int], process: subprocess.Popen) -> None:
    """The reader thread: fold the worker's messages into ``shared`` until the socket closes (then
    reap the process if it has exited, so a crashed worker is not left a zombie)."""
    try:
        while True:
            message = pickle.loads(conn.recv_bytes())
            with shared.lock:
                match message:
                    case CheckpointReply():
                        shared.replies.append(message)
                    case Update():
                        _apply(shared, message, worker_sent[0])
                _notify(shared)
    except (EOFError, OSError):
        pass
    try:
        process.wait(5)  # a crashed worker: reaped at once; a closing one: its closer waits too
    except subprocess.TimeoutExpired:
        pass
    with shared.lock:  # the process has gone: say so unless the run was closed on purpose
        if shared.state not in ("closed", "diverged"):
            shared.state, shared.busy = "stopped", False
            shared.message = shared.message or "The training process ended. Press Reset to start a new run."
        _notify(shared)


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
        shared.state, shared.message, shared.busy = update.state, update.message, update.busy


class LiveRun:
    """One session's run (one trainer, or several κ in sweep mode) in its worker process."""

    def __init__(self, settings: Settings, target: Target) -> None:
        self._worker = _take_worker()
        self._shared = _Shared()
        self._sent = [0]  # seq of the last state-changing command (a list: the reader reads it)
        self._generation = 0
        self._reader = threading.Thread(
            target=_read,
            args=(self._worker.conn, self._shared, self._sent, self._worker.process),
            name="ehflow-reader",
            daemon=True,
        )
        self._reader.start()
        self._finalizer = weakref.finalize(self, _Worker.close_soon, self._worker)
        # The page's charts fetch this run's figures by its token (unguessable: another tab cannot).
        self.token = secrets.token_urlsafe(16)
        self.feed_cache: tuple[int, str] | None = None  # the chart feed's figures, by version
        self.feed_lock = threading.Lock()  # one build of them at a time
        _RUNS[self.token] = self
        self.reset(settings, target)

    # -- control from the page ---------------------------------------------------------------------
    def reset(self, settings: Settings, target: Target) -> None:
        """A new run from ``settings`` (same seed: same start), in the same warm process."""
        from ehflow_core.reporting import run_label  # torch: imported by the page by now, not at start-up

        settings.train_config()  # invalid settings raise here, in the page, not in the worker
        self.settings, self.target = settings, target
        self.primary_label = run_label(settings.kappa)
        labels = [run_label(k) for k in settings.sweep_kappas()] if settings.sweep else [self.primary_label]
        self._generation += 1
        with self._shared.lock:
            self._shared.reset(self._generation, labels)
        generation = self._generation
        self._command(lambda seq: Start(seq, generation, settings, target, HEARTBEAT_TIMEOUT))
        self._requested = (settings.kappa, settings.lr)  # the new run starts with them

    def _command(
        self,
        make: Callable[[int], Start | Play | Pause | TrainSteps],
        state: str | None = None,
        busy: bool | None = None,
    ) -> None:
        """Send a state-changing command, made with its number; ``state``/``busy`` show at once,
        until the worker confirms."""
        with self._worker.send_lock:  # commands leave in the order of their numbers
            with self._shared.lock:
                self._sent[0] += 1
                seq = self._sent[0]
                if state is not None:
                    self._shared.state = state
                if busy is not None:
                    self._shared.busy = busy
            self._worker.send_unlocked(make(seq))

    def beat(self, want_snapshot: bool = False) -> None:
        """Called on every page view: the worker trains only while views keep coming.

        ``want_snapshot``: the page's live panel asks for the next snapshot.
        """
        self._worker.send(Beat(want_snapshot))

    def play(self) -> None:
        if self.state in ("diverged", "stopped", "closed"):
            return
        self._command(Play, state="training", busy=True)

    def pause(self) -> None:
        self._command(Pause, state="paused" if self.state == "training" else None, busy=False)

    def step(self, n: int = 10) -> None:
        """Train ``n`` steps then pause (a no-op while busy, so a click delivered twice does not
        double the steps)."""
        if self.busy or self.state in ("diverged", "stopped", "closed"):
            return
        self._command(lambda seq: TrainSteps(seq, n), busy=True)

    def set_live(self, kappa: float | None, lr: float, wait: float = 0.0) -> None:
        """Apply a new κ (single-run mode) and learning rate from the worker's next step on.

        ``wait``: seconds to wait for the worker to report them in use (so the page that moved a
        slider can show its effect in the same rerun); returns early when it does. Values already
        asked for are neither sent nor waited for again (the page calls this on every rerun).
        """
        if (kappa, lr) == self._requested:
            return
        self._requested = (kappa, lr)
        self._worker.send(SetLive(kappa, lr))
        if wait <= 0:
            return
        s = self._shared

        def applied() -> bool:
            return s.lr == lr and (self.settings.sweep or s.kappa == kappa) or s.state in ("stopped", "closed")

        with s.lock:
            s.changed.wait_for(applied, wait)

    def checkpoint_bytes(self) -> bytes:
        """The primary run's checkpoint (for the download button)."""
        with self._shared.lock:
            self._shared.replies.clear()
        self._worker.send(CheckpointRequest())
        with self._shared.lock:
            if not self._shared.changed.wait_for(lambda: self._shared.replies or not self.worker_alive, REPLY_TIMEOUT):
                raise RuntimeError(f"no checkpoint from the training process within {REPLY_TIMEOUT:.0f} s")
            if not self._shared.replies:
                raise RuntimeError("the training process has ended: no checkpoint")
            reply = self._shared.replies.pop()
        if reply.data is None:
            raise RuntimeError(f"the checkpoint failed: {reply.error}")
        return reply.data

    def close(self) -> None:
        """Stop the worker process and wait for it and for the reader thread (the page's own
        close; a run that is garbage collected closes without waiting)."""
        with self._shared.lock:
            self._shared.state, self._shared.busy = "closed", False
        self._finalizer.detach()
        self._worker.close()
        self._reader.join(10)

    # -- what the page reads -----------------------------------------------------------------------
    @property
    def state(self) -> str:
        return self._shared.state

    @property
    def busy(self) -> bool:
        """Training, or working through requested steps."""
        return self._shared.busy

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
        return self._worker.alive

    @property
    def threads_alive(self) -> bool:
        """Whether the worker process or the reader thread still runs."""
        return self.worker_alive or self._reader.is_alive()

    def view(self) -> View:
        s = self._shared
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
            )
