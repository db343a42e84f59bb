"""The training process behind one dashboard session.

    python -m dashboard.worker FD        (started by :mod:`dashboard.live`, never by hand)

Streamlit's server is one Python interpreter. A training thread inside it shared the GIL with the
event loop and the page's reruns: a slider move reached the server seconds late and training ran
at a third of its headless speed. Here a session's run trains in a process of its own, which
talks to the server over one socket (:class:`multiprocessing.connection.Connection`, pickled
tuples, plain ``pickle`` since torch's multiprocessing reductions would send tensors as shared
memory handles):

    server → worker   ("start", seq, generation, settings, target, heartbeat_timeout)
                      ("play", seq)  ("pause", seq)  ("step", seq, n)
                      ("live", kappa, lr)  ("beat", want)  ("checkpoint",)  ("close",)
    worker → server   ("update", patch)      patch: a dict of the fields of ``live.View`` that
                                              changed, plus "generation", "seq" and new "records"
                      ("checkpoint", bytes | None, error message | None)

``seq`` numbers the commands that change the run's state; every update echoes the last one
handled, so the server knows when a state it reads is older than a button just pressed.
``generation`` numbers the runs (Reset starts a new one in the same process); updates of an older
run are dropped. The worker trains only while heartbeats ("beat", sent by each page view) are
fresh: a closed tab stops its training within ``heartbeat_timeout`` seconds. A beat with ``want``
true asks for the next snapshot, so snapshots follow the page's pace. It exits on "close" or when
the server's end of the socket closes (the session was dropped, or the server died).
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
import sys
import threading
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection

import torch

from ehflow_core import equivariance_error, invariance_error
from ehflow_core.checkpoint import checkpoint_bytes
from ehflow_core.ensemble import EnsembleTrainer
from ehflow_core.reporting import run_label
from ehflow_core.snapshot import Snapshot, SnapshotConfig, take_snapshot
from ehflow_core.targets import Target
from ehflow_core.training import Record, Run, Trainer

from .settings import Settings

log = logging.getLogger("ehflow.dashboard.worker")

# 80 trajectories show the attractors; each costs leapfrog steps in every snapshot.
VIEW_SIZES = SnapshotConfig(extent=4.0, grid=60, n_samples=800, n_paths=80, integrated_steps=30, bandwidth=0.2)
SNAPSHOT_SHARE = 1 / 3  # at most this share of the process's CPU time goes to snapshots
SNAPSHOT_EVERY = 0.25  # and no more often than this (seconds)
# A snapshot is taken when the page's live panel asks for one (each of its requests does), or,
# with no panel asking (a page view without a browser, as in tests), at least this often
# (seconds). Snapshots nobody draws would take CPU from training and from drawing.
SNAPSHOT_UNASKED = 1.0
SYMMETRY_EVERY = 5.0  # seconds between invariance/equivariance readouts (~0.25 s of CPU each)
UPDATE_EVERY = 0.1  # seconds between updates without a new snapshot (step counter, curves)


def keep(record: Record) -> bool:
    """Records the curves keep: every evaluation, every 10th step, every event."""
    return record.test_elbo is not None or record.step % 10 == 0 or bool(record.event)


def warm_up() -> None:
    """Build a throwaway Adam: the first one imports ``torch._dynamo`` (2–3 s). Run in a thread
    from the process's start, beside the page's first run (its first picture needs no optimiser),
    so that a Train pressed as soon as the page shows does not wait for the import."""
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])


class Worker:
    """One session's run (one trainer, or a batched ensemble in κ-sweep mode) and its loop."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.trainers: dict[str, Trainer] = {}
        self.ensemble: EnsembleTrainer | None = None
        self.steps: Iterator[dict[str, Record]] | None = None
        self.target: Target | None = None
        self.primary_label = ""
        self.generation = 0
        self.seq = 0
        self.heartbeat_timeout = 1.0
        self.last_beat = time.monotonic()
        self.wanted = False  # the page's live panel asked for a snapshot
        self.running = False
        self.budget = 0  # steps still to do for the Step button
        self.state = "starting"
        self.message: str | None = None
        self.snapshot: Snapshot | None = None
        self.records: dict[str, list[Record]] = {}  # kept records not yet sent
        self.last_record: Record | None = None
        self.next_update = 0.0

    @property
    def primary(self) -> Trainer:
        return self.trainers[self.primary_label]

    @property
    def busy(self) -> bool:
        return self.running or self.budget > 0

    @property
    def active(self) -> bool:
        """Busy, and a page looked recently."""
        return bool(self.trainers) and self.busy and time.monotonic() - self.last_beat <= self.heartbeat_timeout

    # -- messages ----------------------------------------------------------------------------------
    def post(self, message: tuple) -> None:
        self.conn.send_bytes(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))

    def send(self, snapshot: Snapshot | None = None, symmetry: dict[str, float] | None = None) -> None:
        trainer = self.primary if self.trainers else None
        patch = {
            "generation": self.generation,
            "seq": self.seq,
            "state": self.state,
            "message": self.message,
            "busy": self.busy,
            "step": trainer.step if trainer else 0,
            "steps": {name: t.step for name, t in self.trainers.items()},
            "steps_per_s": self.last_record.steps_per_s if self.last_record and self.running else 0.0,
            "kappa": trainer.kappa if trainer else None,
            "lr": trainer.optimizer.param_groups[0]["lr"] if trainer else None,
            "records": self.records,
        }
        if snapshot is not None:
            patch["snapshot"] = snapshot
        if symmetry:
            patch["symmetry"] = symmetry
        self.post(("update", patch))
        self.records = {name: [] for name in self.trainers}
        self.next_update = time.monotonic() + UPDATE_EVERY

    def handle(self, message: tuple) -> bool:
        """Act on one command; False when the worker should exit."""
        kind = message[0]
        if kind == "close":
            return False
        if kind == "beat":
            self.last_beat = time.monotonic()
            self.wanted = self.wanted or message[1]
            return True
        if kind == "live":
            self.set_live(*message[1:])
            self.send()  # the page waits for this to show the new values
            return True
        if kind == "checkpoint":
            try:
                self.post(("checkpoint", checkpoint_bytes(self.primary), None))
            except Exception as err:  # the page shows the reason instead of a file
                log.exception("checkpoint failed")
                self.post(("checkpoint", None, str(err)))
            return True
        self.seq = message[1]
        if kind == "start":
            try:
                self.start(*message[2:])
            except ValueError as err:  # settings the page validated should not get here
                self.trainers, self.state, self.message = {}, "stopped", f"Could not start the run: {err}"
        elif kind == "play" and self.trainers and self.state != "diverged":
            self.last_beat = time.monotonic()
            self.running = True
            self.state = "training"
        elif kind == "pause":
            self.running = False
            if self.state == "training":
                self.state = "paused"
        elif kind == "step" and self.trainers and not self.busy and self.state != "diverged":
            self.last_beat = time.monotonic()
            self.budget = message[2]
        self.send()
        return True

    def start(self, generation: int, settings: Settings, target: Target, heartbeat_timeout: float) -> None:
        """A new run from ``settings`` (Reset): a picture of the untrained model first, then the
        trainers (their optimiser may still have to import torch._dynamo)."""
        self.generation, self.heartbeat_timeout = generation, heartbeat_timeout
        self.trainers, self.ensemble, self.steps, self.target = {}, None, None, target
        self.running, self.budget, self.last_record, self.snapshot = False, 0, None, None
        self.state, self.message = "starting", None
        config = settings.train_config()
        self.primary_label = label(settings.kappa)  # the slider's κ, also in sweep mode
        self.snapshot = take_snapshot(initial_flow(config), target, VIEW_SIZES)
        self.send(snapshot=self.snapshot)
        if settings.sweep:  # every κ of the sweep trained as one batched model
            kappas = settings.sweep_kappas()
            self.ensemble = EnsembleTrainer(
                [config.replace(kappa=k) for k in kappas], target, labels=[label(k) for k in kappas]
            )
            self.trainers = self.ensemble.trainers
            self.steps = self.ensemble.train(steps=10**9)
        else:
            trainer = Trainer(config, target)
            self.trainers = {self.primary_label: trainer}
            self.steps = ({self.primary_label: r} for r in trainer.train(steps=10**9))
        self.records = {name: [] for name in self.trainers}
        self.state = "ready"

    def set_live(self, kappa: float | None, lr: float) -> None:
        """A new κ (single-run mode) and learning rate, from the next step on."""
        if not self.trainers:
            return
        (self.ensemble or self.primary).set_lr(lr)
        if self.ensemble is None:
            self.primary.set_kappa(kappa)

    # -- training ----------------------------------------------------------------------------------
    def train_round(self) -> bool:
        """One step of every run; False when a run diverged."""
        assert self.steps is not None
        for name, record in (next(self.steps, None) or {}).items():
            if keep(record):
                self.records[name].append(record)
            if name == self.primary_label:
                self.last_record = record
            if record.event == "diverged":
                self.running, self.budget = False, 0
                self.state = "diverged"
                self.message = f"Training stopped ({name}): {record.message} Press Reset after changing dt."
                return False
        return True

    def take_snapshot(self) -> None:
        self.snapshot = take_snapshot(self.primary.flow, self.target, VIEW_SIZES, previous=self.snapshot)
        self.send(snapshot=self.snapshot)

    def measure_symmetry(self) -> None:
        """The invariance and equivariance readout (~0.25 s: sent on its own, not with a snapshot)."""
        trainer = self.primary
        gens = [g for g in self.target.generators() if g.has_action]
        if not gens:
            return
        report = invariance_error(trainer.flow, gens[0], trainer.test_data[:32], n_angles=6, n_samples=32)
        symmetry = {
            "invariance_spread": report.spread,
            "invariance_noise": report.noise_floor,
            "equivariance_error": equivariance_error(trainer.flow, gens[0], n_points=256),
        }
        self.send(symmetry=symmetry)

    def receive(self, timeout: float) -> bool:
        """Handle every command that arrives within ``timeout``; False when the worker should exit."""
        try:
            while self.conn.poll(timeout):
                if not self.handle(pickle.loads(self.conn.recv_bytes())):
                    return False
                timeout = 0.0
        except (EOFError, OSError):  # the server closed its end: the session is gone
            return False
        return True

    def loop(self) -> None:
        next_snapshot = next_symmetry = last_snapshot = 0.0  # wall clock
        # Snapshots and symmetry readouts get SNAPSHOT_SHARE of this process's own CPU time,
        # however much the browser and the server leave it (at nice 10, about half a core while
        # the page draws): after each, training alone runs until this thread's CPU time passes
        # ``credit``. Wall-time pacing let a snapshot's waits throttle the refreshes, and a fixed
        # rate took up to half of a starved process's time from training.
        credit = 0.0

        def spent(since_cpu: float) -> float:
            cost = time.thread_time() - since_cpu
            return time.thread_time() + cost * (1 - SNAPSHOT_SHARE) / SNAPSHOT_SHARE

        while self.receive(0.0 if self.active else 0.2):
            if not self.active:
                continue
            ok = self.train_round()
            if self.budget > 0:
                self.budget -= 1
                if self.budget == 0 or not ok:
                    if ok and not self.running:
                        self.state = "paused"
                    self.take_snapshot()
                    self.measure_symmetry()
                continue
            now, cpu = time.monotonic(), time.thread_time()
            paced = cpu >= credit
            if not ok or (paced and now >= next_snapshot and (self.wanted or now >= last_snapshot + SNAPSHOT_UNASKED)):
                self.wanted, last_snapshot, next_snapshot = False, now, now + SNAPSHOT_EVERY
                self.take_snapshot()
                credit = spent(cpu)
            elif paced and now >= next_symmetry:
                self.measure_symmetry()
                credit, next_symmetry = spent(cpu), time.monotonic() + SYMMETRY_EVERY
            elif now >= self.next_update:
                self.send()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if hasattr(os, "nice"):
        os.nice(10)
    sock = socket.fromshare(sys.stdin.buffer.read()) if argv[0] == "-" else socket.socket(fileno=int(argv[0]))
    conn = Connection(sock.detach())
    # One intra-op thread: the process shares the cores with the server and the browser, and an
    # oversubscribed OpenMP pool (spinning threads) slowed training several-fold in our runs.
    torch.set_num_threads(1)
    threading.Thread(target=warm_up, name="ehflow-warm-up", daemon=True).start()
    worker = Worker(conn)
    try:
        worker.loop()
    except Exception as err:  # tell the page why, then exit
        log.exception("training process failed")
        worker.state, worker.message, worker.running, worker.budget = "stopped", f"Training stopped: {err}", False, 0
        try:
            worker.send()
        except OSError:
            pass
    finally:
        conn.close()


if __name__ == "__main__":
    main()
