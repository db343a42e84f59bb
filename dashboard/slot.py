"""One run hosted by a training process (:class:`Slot`): its trainer (or a sweep's batched
ensemble), its state, and its turn (a training step, then the snapshot, symmetry readout or
update that is due, paced so that pictures take at most a third of the run's CPU time). The
process that hosts slots is :mod:`dashboard.worker`."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterator

from torch import Tensor

from ehflow_core import equivariance_error, invariance_error
from ehflow_core.checkpoint import checkpoint_bytes
from ehflow_core.ensemble import EnsembleTrainer
from ehflow_core.flow import HamiltonianFlow
from ehflow_core.peer import PeerTrainer
from ehflow_core.run import run_label
from ehflow_core.snapshot import Snapshot, SnapshotConfig, kde_on_grid, take_snapshot
from ehflow_core.targets import HOLDOUT, DataTarget, Target, split_points
from ehflow_core.training import Record, Run, Trainer

from .protocol import (
    ENDED,
    Beat,
    CheckpointReply,
    CheckpointRequest,
    Command,
    Pause,
    Play,
    Reply,
    SetLive,
    Start,
    TrainSteps,
    Update,
)
from .settings import PEER_LABEL

log = logging.getLogger("ehflow.dashboard.worker")

# 80 trajectories show the attractors; each costs leapfrog steps in every snapshot.
VIEW_SIZES = SnapshotConfig(extent=4.0, grid=60, n_samples=800, n_paths=80, integrated_steps=30, bandwidth=0.2)
SNAPSHOT_SHARE = 1 / 3  # at most this share of the process's CPU time goes to snapshots
SNAPSHOT_EVERY = 0.2  # and no more often than this (seconds)
# A snapshot is taken when the page's live panel asks for one (each of its requests does), or,
# with no panel asking (a page view without a browser, as in tests), at least this often
# (seconds). Snapshots nobody draws would take CPU from training and from drawing.
SNAPSHOT_UNASKED = 1.0
SYMMETRY_EVERY = 5.0  # seconds between invariance/equivariance readouts
UPDATE_EVERY = 0.1  # seconds between updates without a new snapshot (step counter, curves)


def keep(record: Record) -> bool:
    """Records the curves keep: every evaluation, every 10th step, every event."""
    return record.test_elbo is not None or record.step % 10 == 0 or bool(record.event)


class Slot:
    """One run hosted by the process (one trainer, or a batched ensemble in κ-sweep mode) and its state.

    ``post(run_id, reply)`` sends to the server. ``cpu`` (this run's CPU seconds: training,
    snapshots, readouts) paces its snapshots; ``share`` is its place in the fair-share order.
    """

    def __init__(self, run_id: str, post: Callable[[str, Reply], None]) -> None:
        self.run_id = run_id
        self._post = post
        self.stepper: Trainer | EnsembleTrainer | None = None
        self.peer: PeerTrainer | None = None  # a standard flow trained beside the primary run, for as long
        self.flow_seconds = 0.0  # the flow's training time (steps and evaluations), the peer's measure
        self.runs: dict[str, Run] = {}  # label -> run (one, or every κ of a sweep)
        self.rounds: Iterator[dict[str, Record]] | None = None
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
        self.latest: dict[str, Record] = {}  # each run's last record
        self.last_record: Record | None = None
        self.next_update = 0.0
        self.cpu = 0.0  # CPU seconds this run has used
        self.share = 0.0  # the fair-share clock: CPU seconds, raised to the others' level on waking
        self.was_active = False
        # Snapshots and readouts get SNAPSHOT_SHARE of the run's own CPU time, however much the
        # browser, the server and the other runs leave it: after each, training alone runs until
        # ``cpu`` passes ``paid_until``. (Wall-time pacing would let a snapshot's waits throttle the
        # refreshes, and a fixed rate would take up to half of a starved run's time from training.)
        self.paid_until = 0.0
        self.next_snapshot = self.next_symmetry = self.last_snapshot = 0.0  # wall clock

    @property
    def primary(self) -> Run:
        return self.runs[self.primary_label]

    @property
    def labels(self) -> list[str]:
        """The names of the curves this run sends: its runs', and the peer's."""
        return [*self.runs, PEER_LABEL] if self.peer is not None else list(self.runs)

    @property
    def busy(self) -> bool:
        return self.running or self.budget > 0

    @property
    def active(self) -> bool:
        """Busy, and a page looked recently."""
        return bool(self.runs) and self.busy and time.monotonic() - self.last_beat <= self.heartbeat_timeout

    # -- messages ----------------------------------------------------------------------------------
    def post(self, message: Reply) -> None:
        self._post(self.run_id, message)

    def send(
        self, snapshot: Snapshot | None = None, symmetry: dict[str, float] | None = None, records: bool = True
    ) -> None:
        """The run's state to the server, with the records kept since the last send (``records``:
        False from the reader thread, while the loop may be adding to them)."""
        run = self.primary if self.runs else None
        self.post(
            Update(
                generation=self.generation,
                seq=self.seq,
                state=self.state,
                message=self.message,
                busy=self.busy,
                step=run.step if run else 0,
                step_by_run={name: r.step for name, r in self.runs.items()},
                steps_per_s=self.last_record.steps_per_s if self.last_record and self.running else 0.0,
                kappa=run.kappa if run else None,
                lr=self.stepper.lr if self.stepper else None,
                records=self.records if records else {},
                snapshot=snapshot,
                symmetry=symmetry,
            )
        )
        if records:
            self.records = {name: [] for name in self.labels}
            self.next_update = time.monotonic() + UPDATE_EVERY

    def handle(self, message: Command, out_of_turn: bool = False) -> None:
        """Act on one command of this run (``Close`` and ``Drop`` are the host's); ``out_of_turn``:
        handled by the host's reader thread while the loop may be in a turn (Beat, SetLive)."""
        match message:
            case Beat(want_snapshot=want):
                self.last_beat = time.monotonic()
                self.wanted = self.wanted or want
            case SetLive(kappa=kappa, lr=lr):
                self.set_live(kappa, lr)
                self.send(records=not out_of_turn)  # the page waits for this to show the new values
            case CheckpointRequest(ticket=ticket):
                self.post(self.checkpoint(ticket))
            case Start() | Play() | Pause() | TrainSteps():
                self.seq = message.seq
                self.change_state(message)
                self.send()
            case _:
                raise TypeError(f"unknown command {message!r}")

    def change_state(self, command: Start | Play | Pause | TrainSteps) -> None:
        ready = bool(self.runs) and self.state not in ENDED
        match command:
            case Start():
                try:
                    self.start(command)
                except ValueError as err:  # settings the page validated should not get here
                    self.runs, self.state, self.message = {}, "stopped", f"Could not start the run: {err}"
            case Play() if ready:
                self.last_beat = time.monotonic()
                self.running = True
                self.state = "training"
            case Pause():
                self.running = False
                if self.state == "training":
                    self.state = "paused"
            case TrainSteps(n=n) if ready and not self.busy:
                self.last_beat = time.monotonic()
                self.budget = n

    def checkpoint(self, ticket: int) -> CheckpointReply:
        """The primary run's checkpoint (with its slice of a sweep's Adam state), or why not."""
        try:
            if isinstance(self.stepper, EnsembleTrainer):
                state = self.stepper.member_optimizer_state(self.primary_label)
                return CheckpointReply(ticket, checkpoint_bytes(self.primary, state))
            return CheckpointReply(ticket, checkpoint_bytes(self.primary))
        except Exception as err:  # the page shows the reason instead of a file
            log.exception("checkpoint failed")
            return CheckpointReply(ticket, None, str(err))

    def start(self, command: Start) -> None:
        """A new run (Reset): its trainers, a picture of the untrained model, then the optimiser."""
        self.generation, self.heartbeat_timeout = command.generation, command.heartbeat_timeout
        settings, target = command.settings, command.target
        self.stepper, self.runs, self.rounds, self.target, self.peer = None, {}, None, target, None
        self.flow_seconds = 0.0
        self.running, self.budget, self.last_record, self.snapshot = False, 0, None, None
        self.state, self.message = "starting", None
        config = settings.train_config()
        train: Tensor | None = None
        test: Tensor | None = None
        if isinstance(target, DataTarget):  # the user's points: a held-out share is the test set, the rest trains
            train, test = split_points(target.points, HOLDOUT, settings.seed)
        self.primary_label = settings.primary_label()  # the slider's κ, also in sweep mode
        if settings.sweeping:  # every κ of the sweep trained as one batched model
            kappas = settings.sweep_kappas()
            labels = [run_label(k) for k in kappas]
            configs = [config.replace(kappa=k) for k in kappas]
            ensemble = EnsembleTrainer(configs, target, labels=labels, train_data=train, test_data=test)
            self.stepper, self.runs = ensemble, ensemble.runs_by_label
            self.rounds = ensemble.train(more_steps=10**9)
        else:
            trainer = Trainer(config, target, train_data=train, test_data=test)
            self.stepper, self.runs = trainer, {self.primary_label: trainer}
            self.rounds = ({self.primary_label: r} for r in trainer.train(more_steps=10**9))
        if settings.peer:  # the same training points (and test points) as the flow, its batch size
            primary = self.primary
            self.peer = PeerTrainer("nsf", target, primary.train_data, settings.seed, settings.batch)
        self.records, self.latest = {name: [] for name in self.labels}, {}
        self.take_snapshot()
        self.stepper.optimizer  # noqa: B018  (built now: the first step must not outlast a heartbeat)
        self.state = "ready"

    def set_live(self, kappa: float | None, lr: float) -> None:
        """A new κ (single-run mode) and learning rate, from the next step on."""
        if self.stepper is None:
            return
        self.stepper.set_lr(lr)
        if isinstance(self.stepper, Trainer):
            self.stepper.set_kappa(kappa)

    def fail(self, err: Exception) -> None:
        """Stop this run with the reason (the process and its other runs go on)."""
        self.stop(f"Training stopped: {err}. Press Reset to start a new run.")

    def stop(self, message: str) -> None:
        """Stop training with ``message`` for the page, and tell the server."""
        self.running, self.budget = False, 0
        self.state, self.message = "stopped", message
        self.send()

    # -- training ----------------------------------------------------------------------------------
    def train_round(self) -> bool:
        """One step of every run; False when a run diverged."""
        assert self.rounds is not None
        began = time.perf_counter()
        records = next(self.rounds, None) or {}
        self.flow_seconds += time.perf_counter() - began
        for name, record in records.items():
            if keep(record):
                self.records[name].append(record)
            self.latest[name] = record
            if name == self.primary_label:
                self.last_record = record
            if record.event == "diverged":
                self.running, self.budget = False, 0
                self.state = "diverged"
                self.message = f"Training stopped ({name}): {record.message} Press Reset after changing dt."
                return False
        if self.peer is not None and self.last_record is not None:
            self.train_peer(self.last_record)
        return True

    def train_peer(self, record: Record) -> None:
        """The peer trains until it has had the flow's training time (equal wall time, the flow's
        evaluations counted in its time), and is scored, exactly, on the same test (and training)
        points whenever the run is evaluated (``record`` is the primary run's latest)."""
        assert self.peer is not None
        log_p = math.nan
        while self.peer.seconds < self.flow_seconds:
            log_p = self.peer.step()
        if record.test_log_likelihood is None:
            return
        run = self.primary
        self.records[PEER_LABEL].append(
            Record(
                step=record.step, seconds=self.peer.seconds, steps_per_s=0.0, train_bound=log_p, loss=-log_p,
                grad_norm=math.nan, constraint={}, lam={}, kappa=None,
                test_log_likelihood=self.peer.log_likelihood(run.eval_test),
                train_log_likelihood=None if run.eval_train is None else self.peer.log_likelihood(run.eval_train),
            )
        )  # fmt: skip

    def evaluate_latest(self) -> None:
        """Evaluate each run at the step it reached (the Step button's presses end between
        evaluations, and its readout would show no likelihood), into its last record, sent next."""
        for name, record in self.latest.items():
            if record.test_log_likelihood is not None or record.event is not None:
                continue
            for key, value in self.runs[name].evaluate().items():
                setattr(record, key, value)
            if not self.records[name] or self.records[name][-1] is not record:  # not kept yet
                self.records[name].append(record)

    def members(self) -> dict[str, HamiltonianFlow] | None:
        """A sweep's flows by label, drawn side by side in the snapshots (None: one run)."""
        return {name: run.eval_flow for name, run in self.runs.items()} if len(self.runs) > 1 else None

    def take_snapshot(self) -> None:
        assert self.target is not None
        self.snapshot = take_snapshot(
            self.primary.eval_flow, self.target, VIEW_SIZES, previous=self.snapshot, members=self.members()
        )
        if self.peer is not None:
            samples = self.peer.sample(VIEW_SIZES.n_samples).double().numpy()
            peer_kde = kde_on_grid(samples, self.snapshot.xs, VIEW_SIZES.bandwidth)
            self.snapshot = dataclasses.replace(self.snapshot, peer=(PEER_LABEL, peer_kde))
        self.send(snapshot=self.snapshot)

    def measure_symmetry(self) -> None:
        """The invariance and equivariance readout (sent on its own, not with a snapshot)."""
        assert self.target is not None
        run = self.primary
        gens = [g for g in self.target.generators() if g.has_action]
        if not gens:
            return
        report = invariance_error(run.eval_flow, gens[0], run.test_data[:32], n_angles=6, n_samples=32)
        symmetry = {
            "invariance_spread": report.spread,
            "invariance_noise": report.noise_floor,
            "equivariance_error": equivariance_error(run.eval_flow, gens[0], n_points=256),
        }
        self.send(symmetry=symmetry)

    def turn(self) -> None:
        """One turn: a training step, then the snapshot, readout or update that is due."""
        began = time.thread_time()
        ok = self.train_round()
        if self.budget > 0:
            self.budget -= 1
            if self.budget == 0 or not ok:
                if ok and not self.running:
                    self.state = "paused"
                    self.evaluate_latest()
                self.take_snapshot()
                self.measure_symmetry()
        else:
            now, trained = time.monotonic(), time.thread_time()
            paced = self.cpu + trained - began >= self.paid_until
            asked = self.wanted or now >= self.last_snapshot + SNAPSHOT_UNASKED
            if not ok or (paced and now >= self.next_snapshot and asked):
                self.wanted, self.last_snapshot, self.next_snapshot = False, now, now + SNAPSHOT_EVERY
                self.take_snapshot()
                self.pay(began, trained)
                return
            if paced and now >= self.next_symmetry:
                self.measure_symmetry()
                self.next_symmetry = time.monotonic() + SYMMETRY_EVERY
                self.pay(began, trained)
                return
            if now >= self.next_update:
                self.send()
        self.charge(time.thread_time() - began)

    def pay(self, began: float, extra_from: float) -> None:
        """Charge the turn that began at ``began``; the work after ``extra_from`` (a snapshot or a
        readout) buys training alone until the run's CPU time passes ``paid_until``."""
        extra = time.thread_time() - extra_from
        self.charge(time.thread_time() - began)
        self.paid_until = self.cpu + extra * (1 - SNAPSHOT_SHARE) / SNAPSHOT_SHARE

    def charge(self, seconds: float) -> None:
        self.cpu += seconds
        self.share += seconds
