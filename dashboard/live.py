"""A training run that lives in one browser session: a thread trains, the page draws snapshots.

No Streamlit here: the thread never calls ``st.*``. It trains in short chunks, and every few
hundred milliseconds swaps a fresh :class:`~ehflow_core.snapshot.Snapshot` in under a lock; the
page's fragment copies a :class:`View` out and draws it. A heartbeat from the page keeps the
thread alive: when no page has looked for ``HEARTBEAT_TIMEOUT`` seconds (the tab was closed), the
thread pauses and exits.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass

from ehflow_core import equivariance_error, invariance_error
from ehflow_core.ensemble import EnsembleTrainer
from ehflow_core.snapshot import Snapshot, SnapshotConfig, take_snapshot
from ehflow_core.targets import Target
from ehflow_core.training import Record, Trainer

from .settings import Settings

log = logging.getLogger(__name__)

HEARTBEAT_TIMEOUT = 1.0  # seconds without a page view before the thread stops itself
VIEW_SIZES = SnapshotConfig(extent=4.0, grid=60, n_samples=800, n_paths=120, integrated_steps=30, bandwidth=0.2)
SNAPSHOT_SHARE = 0.25  # at most this share of the thread's time goes to snapshots
SYMMETRY_EVERY = 3.0  # seconds between invariance/equivariance readouts


@dataclass(frozen=True)
class View:
    """What the page draws, copied out under the lock."""

    state: str  # "ready", "training", "paused", "diverged", "stopped"
    message: str | None
    step: int
    steps_per_s: float
    snapshot: Snapshot | None
    version: int  # increases with every new snapshot
    curves: dict[str, list[Record]]  # label -> records (every eval step and every 10th step)
    symmetry: dict[str, float]  # invariance spread / noise, equivariance error


_ALIVE: weakref.WeakSet[LiveRun] = weakref.WeakSet()
_UNSET = object()  # "no pending κ" (None is a valid κ: the constraint switched off)


@atexit.register
def _close_all() -> None:
    """Join every training thread before the interpreter exits (torch aborts otherwise)."""
    for run in list(_ALIVE):
        run.close()


def _label(kappa: float | None) -> str:
    return "none" if kappa is None else f"κ={kappa:.3g}"


class LiveRun:
    """One session's trainers (one, or several in κ-sweep mode) and the thread that drives them."""

    def __init__(self, settings: Settings, target: Target) -> None:
        self.settings = settings
        self.target = target
        config = settings.train_config()
        self.primary_label = _label(settings.kappa)  # the slider's κ, also in sweep mode
        self._ensemble: EnsembleTrainer | None = None
        if settings.sweep:  # every κ of the sweep trained as one batched model
            kappas = settings.sweep_kappas()
            self._ensemble = EnsembleTrainer(
                [config.replace(kappa=k) for k in kappas], target, labels=[_label(k) for k in kappas]
            )
            self.trainers = self._ensemble.trainers
        else:
            self.trainers = {self.primary_label: Trainer(config, target)}
        self._steps: Iterator[dict[str, Record]] | None = None
        self._curves: dict[str, list[Record]] = {label: [] for label in self.trainers}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._running = False
        self._step_budget = 0
        self._pending_lr: float | None = None
        self._pending_kappa: float | None | object = _UNSET
        self._snapshot: Snapshot | None = None
        self._version = 0
        self._symmetry: dict[str, float] = {}
        self._last_record: Record | None = None
        self.state = "ready"
        self.message: str | None = None
        self.heartbeat = time.monotonic()
        _ALIVE.add(self)

    # -- control from the page ---------------------------------------------------------------------
    @property
    def primary(self) -> Trainer:
        """The trainer whose pictures are shown (the slider's κ in sweep mode)."""
        return self.trainers[self.primary_label]

    def beat(self) -> None:
        """Called on every page view. A run without views for ``HEARTBEAT_TIMEOUT`` stops its
        thread (the tab was closed); if the page was only slow, this view starts it again."""
        self.heartbeat = time.monotonic()
        if self.busy and not self.thread_alive:
            self._ensure_thread()

    def play(self) -> None:
        if self.state == "diverged":
            return
        self.beat()
        self._running = True
        self.state = "training"
        self._ensure_thread()
        self._wake.set()

    def pause(self) -> None:
        self._running = False
        if self.state == "training":
            self.state = "paused"

    def step(self, n: int = 10) -> None:
        """Train ``n`` steps then pause (a no-op while training or still stepping, so a click
        delivered twice does not double the steps)."""
        if self.busy or self.state == "diverged":
            return
        self.beat()
        self._step_budget += n
        self._ensure_thread()
        self._wake.set()

    def set_live(self, kappa: float | None, lr: float) -> None:
        """Apply a new κ (single-run mode) and learning rate from the next step on."""
        with self._lock:
            self._pending_lr = lr
            if not self.settings.sweep:
                self._pending_kappa = kappa

    def close(self, timeout: float = 30.0) -> None:
        """Stop the thread and wait for it."""
        self._running = False
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.state == "training":
            self.state = "stopped"

    @property
    def busy(self) -> bool:
        """Training, or working through requested steps."""
        return self._running or self._step_budget > 0

    @property
    def thread_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def view(self) -> View:
        with self._lock:
            return View(
                state=self.state,
                message=self.message,
                step=self.primary.step,
                steps_per_s=self._last_record.steps_per_s if self._last_record and self._running else 0.0,
                snapshot=self._snapshot,
                version=self._version,
                curves={k: list(v) for k, v in self._curves.items()},
                symmetry=dict(self._symmetry),
            )

    def refresh(self) -> None:
        """Take a snapshot now (in the caller's thread; used when idle, e.g. after Reset)."""
        snap = take_snapshot(self.primary.flow, self.target, VIEW_SIZES, previous=self._snapshot)
        with self._lock:
            self._snapshot = snap
            self._version += 1

    # -- the thread --------------------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        if not self.thread_alive:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="ehflow-live", daemon=True)
            self._thread.start()

    def _apply_pending(self) -> None:
        with self._lock:
            lr, kappa = self._pending_lr, self._pending_kappa
            self._pending_lr, self._pending_kappa = None, _UNSET
        if lr is not None:
            (self._ensemble or self.primary).set_lr(lr)
        if kappa is not _UNSET:
            self.primary.set_kappa(kappa)  # type: ignore[arg-type]

    def _train_round(self) -> bool:
        """One step of every run; False when a run diverged."""
        if self._steps is None:
            if self._ensemble is not None:
                self._steps = self._ensemble.train(steps=10**9)
            else:
                self._steps = ({self.primary_label: r} for r in self.primary.train(steps=10**9))
        records = next(self._steps, None) or {}
        for label, record in records.items():
            with self._lock:
                if record.test_elbo is not None or record.step % 10 == 0 or record.event:
                    self._curves[label].append(record)
                if label == self.primary_label:
                    self._last_record = record
            if record.event == "diverged":
                self._running = False
                self._step_budget = 0
                self.state = "diverged"
                self.message = f"Training stopped ({label}): {record.message} Press Reset after changing dt."
                return False
        return True

    def _snapshot_now(self, with_symmetry: bool) -> None:
        trainer = self.primary
        snap = take_snapshot(trainer.flow, self.target, VIEW_SIZES, previous=self._snapshot)
        symmetry = {}
        if with_symmetry:
            gens = [g for g in self.target.generators() if g.has_action]
            if gens:
                g = gens[0]
                report = invariance_error(trainer.flow, g, trainer.test_data[:32], n_angles=6, n_samples=32)
                symmetry = {
                    "invariance_spread": report.spread,
                    "invariance_noise": report.noise_floor,
                    "equivariance_error": equivariance_error(trainer.flow, g, n_points=256),
                }
        with self._lock:
            self._snapshot = snap
            self._version += 1
            if symmetry:
                self._symmetry = symmetry

    def _loop(self) -> None:
        try:
            next_snapshot = 0.0
            next_symmetry = 0.0
            while not self._stop.is_set():
                now = time.monotonic()
                if now - self.heartbeat > HEARTBEAT_TIMEOUT:
                    log.info("no page view for %.1f s: the training thread stops", HEARTBEAT_TIMEOUT)
                    return
                if not self._running and self._step_budget <= 0:
                    self._wake.wait(0.2)
                    self._wake.clear()
                    continue
                self._apply_pending()
                ok = self._train_round()
                if self._step_budget > 0:
                    self._step_budget -= 1
                    if self._step_budget == 0 or not ok:
                        self._snapshot_now(with_symmetry=True)
                        if ok and not self._running:
                            self.state = "paused"
                        continue
                now = time.monotonic()
                if now >= next_snapshot or not ok:
                    symmetry = now >= next_symmetry
                    started = time.monotonic()
                    self._snapshot_now(with_symmetry=symmetry)
                    cost = time.monotonic() - started
                    next_snapshot = time.monotonic() + cost * (1 - SNAPSHOT_SHARE) / SNAPSHOT_SHARE
                    if symmetry:
                        next_symmetry = time.monotonic() + SYMMETRY_EVERY
        except Exception as err:  # never let a thread die silently: the page shows the message
            log.exception("training thread failed")
            self._running = False
            self.state = "stopped"
            self.message = f"Training stopped after an internal error: {err}"
