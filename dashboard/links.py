"""The server's links to its training hosts: :class:`ProcessLink`, a training process of this
machine over a socket, and :class:`ActorLink`, a :class:`~dashboard.worker.ActorHost` on a Ray
cluster; both the server's end of a host (:mod:`dashboard.worker` is the other end). Each sends a
run's commands in order and, on a reader thread of its own, folds the host's messages into its
runs' :class:`~dashboard.run_state.Shared` state."""

from __future__ import annotations

import logging
import os
import pickle
import socket
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

from .protocol import (
    CheckpointReply,
    Close,
    Command,
    Freed,
    Update,
)
from .run_state import Shared, apply_update, notify

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
CLOSE_TIMEOUT = 30.0  # seconds a process has to exit when the server stops (it may still be importing torch)
ACTOR_START_TIMEOUT = 120.0  # seconds a Ray actor may take to start (placed, torch imported)
# One OpenMP thread from the start: torch.set_num_threads(1) after torch's first op leaves a
# second OpenMP thread spinning while idle, taking CPU from the page.
WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


class Coordinator(Protocol):
    """What a link needs of the pool that made it (:class:`~dashboard.pool.Pool`)."""

    ray: Any  # the Ray module, with ``EHFLOW_RAY_ADDRESS``
    actor_class: Any  # the Ray actor class of ActorHost

    def finished(self, run_id: str, seq: int) -> None: ...

    def worker_ended(self, worker: HostLink, run_ids: list[str]) -> None: ...


# -- the pool's hosts -------------------------------------------------------------------------------
class HostLink:
    """The server's end of a training host: the runs it hosts, sending commands to it in order,
    and folding its messages into its runs (a host's reader thread calls :meth:`_fold`)."""

    name = ""  # for the pool's stats: the process id, or the Ray actor's node

    def __init__(self, pool: Coordinator) -> None:
        self.pool = pool
        self.send_lock = threading.Lock()
        # run id -> (its shared state, the seq counter of its commands); a run is hosted while here
        self.runs: dict[str, tuple[Shared, list[int]]] = {}

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
                    shared.replies[message.ticket] = message
                case Update():
                    apply_update(shared, message, sent[0])
            notify(shared)
        if isinstance(message, Update) and not message.busy:
            self.pool.finished(run_id, message.seq)

    def _ended(self, reason: str) -> None:
        """The host is gone: its runs stop, with ``reason``, and give up their places."""
        for shared, _ in list(self.runs.values()):
            with shared.lock:
                shared.end("stopped", f"{reason}. Press Reset to start a new run.")
        self.pool.worker_ended(self, list(self.runs))
        self.runs.clear()


class ProcessLink(HostLink):
    """A training process of this machine, the server's end of its socket, and the thread that reads it."""

    def __init__(self, pool: Coordinator) -> None:
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


class ActorLink(HostLink):
    """A :class:`~dashboard.worker.ActorHost` on the Ray cluster (``EHFLOW_RAY_ADDRESS``), and the
    thread that long-polls its messages. Not restarted by Ray: a dead actor's runs report "stopped"
    with the reason, as a dead process's do, and the pool starts another for the next run."""

    POLL = 0.5  # seconds a collect waits for the actor's first message

    def __init__(self, pool: Coordinator) -> None:
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
