"""The messages between the server (:mod:`dashboard.live`) and a training process (:mod:`dashboard.worker`).

Plain frozen dataclasses, pickled over one socket per process as pairs ``(run_id, message)``: a
process hosts many runs, and the run id says whose message it is (plain ``pickle``: torch's
multiprocessing reductions would send tensors as shared-memory handles). Each side dispatches
with ``match``.

Commands that change the run's state carry ``seq``, numbered by the server; every :class:`Update`
echoes the last one the worker handled, so the server knows when a state it reads is older than a
button just pressed. ``generation`` numbers the runs (Reset starts a new one in the same process);
updates of an older run are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the server imports this module before torch
    from ehflow_core.snapshot import Snapshot
    from ehflow_core.targets import Target
    from ehflow_core.training import Record

    from .settings import Settings


# -- server → worker -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Start:
    """A new run from ``settings`` (Reset)."""

    seq: int
    generation: int
    settings: Settings
    target: Target
    heartbeat_timeout: float  # seconds without a Beat before training pauses by itself


@dataclass(frozen=True)
class Play:
    seq: int


@dataclass(frozen=True)
class Pause:
    seq: int


@dataclass(frozen=True)
class TrainSteps:
    """Train ``n`` steps, then pause (the Step button)."""

    seq: int
    n: int


@dataclass(frozen=True)
class SetLive:
    """Settings that apply from the next training step on."""

    kappa: float | None  # ignored in sweep mode (each run has its own κ)
    lr: float


@dataclass(frozen=True)
class Beat:
    """A page is looking; ``want_snapshot``: its live panel asks for the next snapshot."""

    want_snapshot: bool


@dataclass(frozen=True)
class CheckpointRequest:
    """Send the primary run's checkpoint; the reply carries the same ``ticket``."""

    ticket: int


@dataclass(frozen=True)
class Drop:
    """Free the run (its model, optimiser, data and records); the process answers :class:`Freed`."""


@dataclass(frozen=True)
class Close:
    """End the process (its run id is ignored)."""


@dataclass(frozen=True)
class Pace:
    """The most runs training in any one process of the pool (its run id is ignored): a process
    with fewer trains its runs at that pace, not faster, so every training run of a class gets
    about the same steps/s whichever process it landed in (the CPU left goes to the server)."""

    runs: int


Command = Start | Play | Pause | TrainSteps | SetLive | Beat | CheckpointRequest | Drop | Close | Pace


# -- worker → server -------------------------------------------------------------------------------
# A run's states, defined here once. The worker reports WORKER_STATES (``Update.state``); the server
# adds "queued" (waiting in the pool's line for a place to train) and "closed" (its page went away).
WORKER_STATES = ("starting", "ready", "training", "paused", "diverged", "stopped")
STATES = ("starting", "ready", "queued", "training", "paused", "diverged", "stopped", "closed")
ENDED = ("diverged", "stopped", "closed")  # a run in these trains no more (Reset starts a new one)


@dataclass(frozen=True)
class Update:
    """The worker's state, new curve records, and a new snapshot or symmetry readout if any."""

    generation: int
    seq: int  # the last state command handled
    state: str  # one of WORKER_STATES
    message: str | None
    busy: bool  # training, or working through requested steps
    step: int  # of the primary run
    step_by_run: dict[str, int]  # every run of a sweep
    steps_per_s: float
    kappa: float | None  # the κ and learning rate the primary run uses now
    lr: float | None
    records: dict[str, list[Record]] = field(default_factory=dict)  # kept records since the last update
    snapshot: Snapshot | None = None
    symmetry: dict[str, float] | None = None


@dataclass(frozen=True)
class CheckpointReply:
    ticket: int  # the request's
    data: bytes | None  # None when it failed
    error: str | None = None


@dataclass(frozen=True)
class Freed:
    """The run is gone from the process (the answer to :class:`Drop`)."""


Reply = Update | CheckpointReply | Freed
