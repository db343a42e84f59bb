"""A training process of the dashboard's pool: it hosts many sessions' runs and shares its time between them.

    python -m dashboard.worker FD        (started by :mod:`dashboard.links`, never by hand)

or, with ``EHFLOW_RAY_ADDRESS`` set, an :class:`ActorHost`: the same :class:`Host` in a Ray actor
on the cluster, its socket replaced by method calls.

Streamlit's server is one Python interpreter. A training thread inside it would share the GIL
with the event loop and the page's reruns, so runs train in a few processes of their own (the
pool: one per core by default), each talking to the server over one socket. Every message on it
is a pair ``(run_id, message)`` of :mod:`dashboard.protocol`: a process hosts one :class:`Slot` per
run, made by the run's first :class:`~dashboard.protocol.Start` and freed by
:class:`~dashboard.protocol.Drop`, so a run costs its model, optimiser, data and records (a few
MB), not a Python+torch process.

Fair shares: the :class:`Host` loop gives the next turn (one training step, and the snapshot or
readout due) to the active run that has used the least CPU time, as a fair-share scheduler
does; a run that waited (paused, or no page looking) joins at the others' level, not below it.

A run trains only while heartbeats (:class:`~dashboard.protocol.Beat`, sent by each page view and
each live-panel request) are fresh: a closed tab stops its training within ``heartbeat_timeout``
seconds. A beat that wants a snapshot asks for the next one, so snapshots follow the page's pace.
One run's failure stops that run with its reason; the others train on. The process exits on
:class:`~dashboard.protocol.Close` or when the server's end of the socket closes (the server died).
"""

from __future__ import annotations

import logging
import os
import pickle
import queue
import socket
import sys
import threading
import time
from multiprocessing.connection import Connection

import torch

from .protocol import (
    Beat,
    Close,
    Command,
    Drop,
    Freed,
    Pace,
    Reply,
    SetLive,
    Start,
)
from .slot import Slot

log = logging.getLogger("ehflow.dashboard.worker")


class Host:
    """The process's runs (one :class:`Slot` per run id) and the loop that shares its time between them.

    A reader thread takes the commands off ``conn`` as they arrive. The loop handles them between
    turns, in order; but a :class:`~dashboard.protocol.SetLive` or a
    :class:`~dashboard.protocol.Beat` with nothing queued before it is handled by the reader at
    once, even in the middle of a long turn (a snapshot, an evaluation, a symmetry readout take
    up to ~0.4 s): a moved slider is in use, and confirmed, from the step under way or the next.
    Both only set numbers that the step reads (κ, the learning rate, the heartbeat's time).
    """

    def __init__(self, conn: Connection | Mailbox) -> None:
        self.conn = conn
        self.slots: dict[str, Slot] = {}
        self.inbox: queue.Queue[tuple[str, Command] | None] = queue.Queue()  # None: the server is gone
        self.queued = 0  # commands read and not yet handled (the one being handled included)
        self.handling = threading.Lock()  # one command at a time, whichever thread handles it
        self.sending = threading.Lock()  # replies come from both threads
        self.stopping = threading.Event()
        self.reader = threading.Thread(target=self.read, name="ehflow-reader", daemon=True)
        self.pace = 0  # the most training runs of any process of the pool (Pace); 0: no pacing
        self.active = 0  # this process's active runs at the last look

    def post(self, run_id: str, message: Reply) -> None:
        data = pickle.dumps((run_id, message), pickle.HIGHEST_PROTOCOL)
        with self.sending:
            self.conn.send_bytes(data)

    def read(self) -> None:
        """The reader thread: every command from ``conn``, queued in order or handled at once."""
        try:
            while not self.stopping.is_set():
                if not self.conn.poll(0.2):
                    continue
                run_id, message = pickle.loads(self.conn.recv_bytes())
                with self.handling:
                    if self.queued == 0 and run_id in self.slots and isinstance(message, SetLive | Beat):
                        self.handle(run_id, message, out_of_turn=True)
                        continue
                    self.queued += 1
                self.inbox.put((run_id, message))
                if isinstance(message, Close):
                    return
        except (EOFError, OSError):  # the server closed its end: it is gone
            pass
        except Exception:  # a command that cannot be read: the process cannot go on
            log.exception("reading the server's commands failed")
        self.inbox.put(None)

    def handle(self, run_id: str, message: Command, out_of_turn: bool = False) -> bool:
        """Act on one command; False when the process should exit."""
        match message:
            case Close():
                return False
            case Pace(runs=runs):
                self.pace = runs
                return True
            case Drop():
                self.slots.pop(run_id, None)
                self.post(run_id, Freed())
                return True
            case Start():
                self.slots.setdefault(run_id, Slot(run_id, self.post))
        slot = self.slots.get(run_id)
        if slot is None:  # a message for a run already dropped
            return True
        try:
            slot.handle(message, out_of_turn)
        except OSError:
            raise
        except Exception as err:  # this run fails, not the process
            log.exception("run %s failed on %s", run_id, type(message).__name__)
            slot.fail(err)
        return True

    def receive(self, timeout: float) -> bool:
        """Handle every command queued within ``timeout``; False when the process should exit."""
        try:
            while True:
                item = self.inbox.get(timeout=timeout) if timeout > 0 else self.inbox.get_nowait()
                if item is None:
                    return False
                with self.handling:
                    try:
                        if not self.handle(*item):
                            return False
                    finally:
                        self.queued -= 1
                timeout = 0.0
        except queue.Empty:
            return True
        except (EOFError, OSError):  # a reply could not be sent: the server closed its end
            return False

    def next_slot(self) -> Slot | None:
        """The active run with the least CPU time on the fair-share clock. A run that just became
        active joins at the level of the others (so waiting earns no burst that starves them)."""
        active = []
        for slot in self.slots.values():
            if slot.active:
                active.append(slot)
            else:
                slot.was_active = False
        self.active = len(active)
        if not active:
            return None
        running = [slot.share for slot in active if slot.was_active]
        floor = min(running, default=0.0)
        for slot in active:
            if not slot.was_active:
                slot.share, slot.was_active = max(slot.share, floor), True
        return min(active, key=lambda slot: slot.share)

    def loop(self) -> None:
        """Turns and commands until a Close or the server's end closes; the reader is joined."""
        self.reader.start()
        try:
            slot: Slot | None = None
            # Idle (no run active at the last look): wait for a command; a run only becomes active by one.
            while self.receive(0.0 if slot is not None else 0.2):
                slot = self.next_slot()
                if slot is None:
                    continue
                began = time.monotonic()
                try:
                    slot.turn()
                except OSError:
                    raise
                except Exception as err:  # this run fails, not the process
                    log.exception("run %s failed", slot.run_id)
                    slot.fail(err)
                if self.pace > self.active and not self.paced(time.monotonic() - began):
                    return
        finally:
            self.stopping.set()
            self.reader.join()

    def paced(self, turn: float) -> bool:
        """After a turn of ``turn`` seconds, wait (handling commands) so that this process's runs
        train at the pool's pace: its ``active`` runs get ``active / pace`` of a core between them,
        one ``pace``-th each, as the runs of the busiest process do. False when it should exit."""
        deadline = time.monotonic() + turn * (self.pace / self.active - 1)
        while (left := deadline - time.monotonic()) > 0:
            if not self.receive(left):
                return False
        return True

    def stop_all(self, reason: str) -> None:
        """Tell every run why the process stops (best effort: the socket may be gone)."""
        for slot in self.slots.values():
            try:
                slot.stop(reason)
            except OSError:
                return


class Mailbox:
    """The three methods of a :class:`~multiprocessing.connection.Connection` that :class:`Host`
    uses, over two queues: ``inbox`` (commands, filled by :meth:`ActorHost.deliver`) and ``outbox``
    (replies, emptied by :meth:`ActorHost.collect`)."""

    def __init__(self) -> None:
        self.inbox: queue.Queue[bytes] = queue.Queue()
        self.outbox: queue.Queue[bytes | None] = queue.Queue()  # None: the host has stopped
        self._held: bytes | None = None

    def poll(self, timeout: float) -> bool:
        if self._held is None:
            try:
                self._held = self.inbox.get(timeout=timeout)
            except queue.Empty:
                return False
        return True

    def recv_bytes(self) -> bytes:
        self.poll(3600.0)
        data, self._held = self._held, None
        assert data is not None
        return data

    def send_bytes(self, data: bytes) -> None:
        self.outbox.put(data)


class ActorHost:
    """A :class:`Host` in a Ray actor (made by :mod:`dashboard.pool` with ``num_cpus=1`` and a few
    threads, when ``EHFLOW_RAY_ADDRESS`` is set): the server delivers each command, numbered, by
    :meth:`deliver` (Ray may run two calls out of order: they are put back in order here), and
    long-polls the replies with :meth:`collect`. The messages are the socket's, pickled the same way."""

    def __init__(self) -> None:
        torch.set_num_threads(1)
        self.mailbox = Mailbox()
        self.lock = threading.Lock()
        self.expected = 1  # the number of the next command to hand to the host
        self.early: dict[int, bytes] = {}  # commands that arrived before an earlier one
        self.stopped = False
        self.loop = threading.Thread(target=self._loop, name="ehflow-host", daemon=True)
        self.loop.start()

    def _loop(self) -> None:
        host = Host(self.mailbox)
        try:
            host.loop()
        except Exception as err:
            log.exception("training actor failed")
            host.stop_all(f"Training stopped: the training actor failed ({err}). Press Reset to start a new run.")
        finally:
            self.mailbox.outbox.put(None)

    def deliver(self, number: int, data: bytes) -> None:
        """Command number ``number`` (1, 2, ...), handed to the host once every earlier one has been."""
        with self.lock:
            self.early[number] = data
            while self.expected in self.early:
                self.mailbox.inbox.put(self.early.pop(self.expected))
                self.expected += 1

    def collect(self, timeout: float) -> list[bytes] | None:
        """The replies waiting, after waiting up to ``timeout`` seconds for the first; None once
        the host has stopped (a Close) and every reply has been collected."""
        box = self.mailbox.outbox
        batch: list[bytes] = []
        wait = timeout
        while not self.stopped:
            try:
                item = box.get(timeout=wait) if wait > 0 else box.get_nowait()
            except queue.Empty:
                return batch
            if item is None:
                self.stopped = True
            else:
                batch.append(item)
                wait = 0.0
        return batch or None

    def node(self) -> str:
        """Where this actor runs (the Ray node's IP and the start of its id)."""
        from ehflow_core.sweep_backends import node_name

        return node_name()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if hasattr(os, "nice"):
        os.nice(10)
    if argv[0] == "-":  # Windows: the socket arrives as a share blob on stdin
        sock = socket.fromshare(sys.stdin.buffer.read())  # type: ignore[attr-defined]
    else:
        sock = socket.socket(fileno=int(argv[0]))
    conn = Connection(sock.detach())
    # One intra-op thread: the process shares the cores with the server and the browser, and an
    # oversubscribed OpenMP pool (spinning threads) slowed training several-fold in our runs.
    torch.set_num_threads(1)
    host = Host(conn)
    try:
        host.loop()
    except Exception as err:  # tell the pages why, then exit
        log.exception("training process failed")
        host.stop_all(f"Training stopped: the training process failed ({err}). Press Reset to start a new run.")
    finally:
        conn.close()
    # Leave without finalising the interpreter (nothing of ours is left to flush): a daemon thread
    # still inside torch's native code when the interpreter finalises aborts the process
    # ("terminate called without an active exception", exit -6).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
