"""A run's state on the server: what a training host last reported (:class:`Shared`, under its
lock), the copy the page draws (:class:`View`), and the rules that fold a host's updates into it
(:func:`apply_update`, with curves thinned by :func:`thin`). No Streamlit, no torch at import."""

from __future__ import annotations

import asyncio
import bisect
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .protocol import (
    CheckpointReply,
    Update,
)

if TYPE_CHECKING:  # nothing heavy at import: prestart() runs before the page imports torch
    from ehflow_core.snapshot import Snapshot
    from ehflow_core.training import Record


CURVE_CAP = 3000  # records kept per curve (older ones are thinned): a long run refreshes as cheaply as a short one


@dataclass(frozen=True)
class View:
    """What the page draws, copied out under the lock."""

    state: str  # one of protocol.STATES
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
class Shared:
    """A run's state written by its process's reader thread and read by the page, under ``lock``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.replies: dict[int, CheckpointReply] = {}  # by ticket, until the asker takes it
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
        notify(self)


def notify(shared: Shared) -> None:
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


def apply_update(shared: Shared, update: Update, sent_seq: int) -> None:
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
