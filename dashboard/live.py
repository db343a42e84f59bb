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
on that cluster (:class:`ActorLink`, each a :class:`~dashboard.worker.ActorHost`) instead of
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
import itertools
import logging
import secrets
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .links import CLOSE_TIMEOUT
from .pool import find_run as find_hosted
from .pool import pool
from .protocol import (
    ENDED,
    Beat,
    CheckpointRequest,
    Pause,
    Play,
    SetLive,
    Start,
    TrainSteps,
)
from .run_state import Shared, View, notify

if TYPE_CHECKING:  # nothing heavy at import: prestart() runs before the page imports torch
    from ehflow_core.targets import Target

    from .settings import Settings

log = logging.getLogger(__name__)

HEARTBEAT_TIMEOUT = 1.0  # seconds without a page view before a run stops training
REPLY_TIMEOUT = 60.0  # seconds to wait for a checkpoint from the worker
_tickets = itertools.count(1)  # the checkpoint requests' numbers, unique in the server


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
        self.host, self.id = self._pool.place(client)
        self.shared = Shared()
        self._sent = [0]  # seq of the last state-changing command (a list: the reader reads it)
        self._generation = 0
        self.session_probe = session_alive  # None: the page gave no way to ask
        self.gone_since: float | None = None
        self._waiting_for: Callable[[int], Play | TrainSteps] | None = None  # the command a waiting run will send
        self.host.runs[self.id] = (self.shared, self._sent)
        # The page's charts fetch this run's figures by its token (unguessable: another tab cannot).
        self.token = secrets.token_urlsafe(16)
        self.feed_cache: Any = None  # the chart feed's figures of the latest version (live_chart.Figures)
        self.feed_lock = threading.Lock()  # one build of them at a time
        self.figures_page: tuple[int, bytes] | None = None  # the Figures download: (version, page)
        self._pool.register(self)
        self._finalizer = weakref.finalize(self, self._pool.forget, self.host, self.id)
        self.reset(settings, target)

    # -- control from the page ---------------------------------------------------------------------
    def reset(self, settings: Settings, target: Target) -> None:
        """A new run from ``settings`` (same seed: same start), in the same warm process."""
        self.train_config = settings.train_config()  # invalid settings raise here, in the page, not in the worker
        self._pool.release(self.id)
        self.settings, self.target = settings, target
        self.primary_label = settings.primary_label()
        labels = settings.labels()
        self._generation += 1
        with self.shared.lock:
            self.shared.reset(self._generation, labels)
            self.shared.waiting, self._waiting_for = False, None
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
        with self.host.send_lock:  # commands leave in the order of their numbers
            with self.shared.lock:
                self._sent[0] += 1
                seq = self._sent[0]
                if state is not None:
                    self.shared.state = state
                if busy is not None:
                    self.shared.busy = busy
            self.host.send_unlocked(self.id, make(seq))
        return seq

    def _train(self, make: Callable[[int], Play | TrainSteps], state: str | None) -> None:
        """Train (Play or Step) on a place of the pool's, or wait in line for one."""
        if self._pool.admit(self):
            self._pool.took(self.id, self._command(make, state=state, busy=True))
        else:
            self._waiting_for = make

    def begin_turn(self) -> None:
        """A place came free for this waiting run: send what it waited to do."""
        make, self._waiting_for = self._waiting_for, None
        with self.shared.lock:
            self.shared.waiting = False
        if make is None or self.state in ENDED:
            self._pool.release(self.id)
            return
        self._pool.took(self.id, self._command(make, state="training" if make is Play else None, busy=True))

    def yield_turn(self) -> None:
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
        self.host.send(self.id, Beat(want_snapshot))

    def play(self) -> None:
        if self.state in (*ENDED, "queued"):
            return
        self._train(Play, state="training")

    def pause(self) -> None:
        """Pause training, or leave the waiting line."""
        if self.state == "queued":
            self._waiting_for = None
            with self.shared.lock:
                self.shared.waiting = False
                self.shared.state, self.shared.message = self.shared.worker_state, None
                notify(self.shared)
        else:
            self._command(Pause, state="paused" if self.state == "training" else None, busy=False)
        self._pool.release(self.id)

    def step(self, n: int = 10) -> None:
        """Train ``n`` steps then pause (a no-op while busy, so a click delivered twice does not
        double the steps)."""
        if self.busy or self.state in (*ENDED, "queued"):
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
        self.host.send(self.id, SetLive(kappa, lr))
        if wait <= 0:
            return
        s = self.shared

        def applied() -> bool:
            return s.lr == lr and (self.settings.sweeping or s.kappa == kappa) or s.state in ("stopped", "closed")

        with s.lock:
            s.changed.wait_for(applied, wait)

    def ask_checkpoint(self) -> int:
        """Ask the worker for the primary run's checkpoint, without waiting; the ticket to collect
        it with :meth:`checkpoint_reply`."""
        ticket = next(_tickets)
        self.host.send(self.id, CheckpointRequest(ticket))
        return ticket

    def checkpoint_reply(self, ticket: int, wait: float = 0.0) -> bytes | None:
        """The checkpoint asked for with ``ticket`` once it is here (after waiting up to ``wait``
        seconds), taken: None while it is not. Raises RuntimeError when it failed or the training
        process has ended."""
        s = self.shared
        with s.lock:
            s.changed.wait_for(lambda: ticket in s.replies or not self.worker_alive, wait)
            reply = s.replies.pop(ticket, None)
        if reply is None:
            if not self.worker_alive:
                raise RuntimeError("the training process has ended: no checkpoint")
            return None
        if reply.data is None:
            raise RuntimeError(f"the checkpoint failed: {reply.error}")
        return reply.data

    def forget_checkpoint(self, ticket: int) -> None:
        """No one will take the checkpoint asked for with ``ticket``: drop it if it has come."""
        with self.shared.lock:
            self.shared.replies.pop(ticket, None)

    def checkpoint_bytes(self) -> bytes:
        """The primary run's checkpoint, waiting up to ``REPLY_TIMEOUT`` for it (the download button,
        which the browser asks for apart from the page's script)."""
        data = self.checkpoint_reply(self.ask_checkpoint(), REPLY_TIMEOUT)
        if data is None:
            raise RuntimeError(f"no checkpoint from the training process within {REPLY_TIMEOUT:.0f} s")
        return data

    def free(self, reason: str | None = None) -> None:
        """End the run without waiting: its place and its feed go now, its memory in its process
        as soon as the process reads the request."""
        with self.shared.lock:
            self.shared.end("closed", reason)
            self.shared.snapshot, self.shared.curves = None, {}  # the server's copy of its pictures and curves
        self._waiting_for = None
        self.feed_cache = self.figures_page = None
        self._finalizer.detach()
        self._pool.unlist(self.token)
        self._pool.forget(self.host, self.id)

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """:meth:`free`, then wait until the process reports the run gone (``timeout`` seconds)."""
        self.free()
        deadline = time.monotonic() + timeout
        while self.hosted and time.monotonic() < deadline:
            time.sleep(0.02)

    # -- what the page reads -----------------------------------------------------------------------
    @property
    def state(self) -> str:
        return self.shared.state

    @property
    def busy(self) -> bool:
        """Training, or working through requested steps."""
        return self.shared.busy

    @property
    def hosted(self) -> bool:
        """Whether a process still holds this run (False once freed, or once its process ended)."""
        return self.id in self.host.runs

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Return once ``predicate()`` holds, checked after each message from the worker, or after
        ``timeout`` seconds. An event-loop wait: no thread is held, so many tabs cost nothing."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        waiter = (loop, asyncio.Event())
        with self.shared.lock:
            self.shared.waiters.add(waiter)
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
            with self.shared.lock:
                self.shared.waiters.discard(waiter)

    @property
    def status_key(self) -> tuple:
        """What changes when the page's readouts must change at once: state, message, κ, lr."""
        s = self.shared
        return (s.state, s.message, s.busy, s.kappa, s.lr)

    @property
    def version(self) -> int:
        """The version of the latest snapshot (0 before the first)."""
        return self.shared.version

    @property
    def confirmed(self) -> bool:
        """Whether the worker has reported handling every command sent so far."""
        with self.shared.lock:
            return self.shared.seq_seen == self._sent[0]

    @property
    def generation(self) -> int:
        """How many times the run was (re)started: each Reset makes a new model."""
        return self._generation

    @property
    def worker_alive(self) -> bool:
        """Whether the run can still train: its process runs and still hosts it."""
        return self.host.alive and self.hosted and self.state != "closed"

    @property
    def session_alive(self) -> bool:
        """Whether the run's page is still connected (True when the page gave no way to ask)."""
        return self.session_probe is None or self.session_probe()

    def view(self) -> View:
        s = self.shared
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
                host=self.host.name if self._pool.backend == "ray" else "",
            )


def find_run(token: str) -> LiveRun | None:
    """The live run with this feed token, or None (its session has ended, or it was freed)."""
    run = find_hosted(token)
    return run if isinstance(run, LiveRun) else None
