r"""Training: the loop that steps one run (:class:`Trainer`) or M runs as one batched model
(:class:`~ehflow_core.ensemble.EnsembleTrainer`) by the same rules, written once in :class:`Stepper`:

1. **draw** each run's data batch and noise from its own RNG (:meth:`Run.draw`);
2. evaluate the training bound (:func:`~ehflow_core.objectives.training_bound`: ELBO or importance
   weighted) and the constraints, and each run's **Lagrangian** (:meth:`Run.lagrangian`);
3. **reject** a run whose loss is non-finite or above ``max_loss`` (:meth:`Run.assess`);
4. backpropagate the accepted losses, **clip** each run's gradient norm (:func:`clip_grad_norms_`),
   and reject a run whose gradient norm is not finite;
5. the optimiser steps the accepted runs only; the accepted runs' multipliers move (:meth:`Run.accept`);
6. **record**: count the step and build its :class:`Record`, with an evaluation on evaluation
   steps (:meth:`Run.conclude`).

Training is a generator of plain :class:`Record` s; the consumer decides when to stop, and the
trainer keeps all state, so calling :meth:`Trainer.train` again resumes. The run's own pieces
(:class:`TrainConfig`, :class:`Record`, :class:`Run`) live in :mod:`ehflow_core.run` and are
importable from here too.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from ._checks import check_float, check_int
from .objectives import OBJECTIVES, training_bound
from .optim import Adam, fused_adam_supported
from .run import Record, Run, StepResult, TrainConfig

__all__ = [
    "OBJECTIVES",
    "Record",
    "Run",
    "Stepper",
    "TrainConfig",
    "Trainer",
    "clip_grad_norms_",
    "training_bound",
]


def clip_grad_norms_(grads: Sequence[Tensor], max_norm: float | None) -> Tensor:
    """Each of M runs' gradient norm over all its parameters, and clip it to ``max_norm`` in place.

    ``grads``: one tensor per parameter, each (M, ...) with run m's gradient at index m. Returns
    the norms before clipping, (M,). Clipping scales run m's gradients by
    ``min(1, max_norm / (norm_m + 1e-6))``, as ``torch.nn.utils.clip_grad_norm_`` does for one run.
    """
    if len(grads[0]) == 1:  # one run: torch's fused norms, one call for every tensor
        norms = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(list(grads)))).reshape(1)
    else:
        norms = torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(g.reshape(len(g), -1), dim=1) for g in grads]), dim=0
        )
    if max_norm is not None:
        scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        if bool((scale < 1.0).any()):  # (the norms are read on the host next anyway)
            for g in grads:
                g.mul_(scale.to(g.dtype).view(-1, *[1] * (g.ndim - 1)))
    return norms


class Stepper:
    """The training loop over M >= 1 runs, one :class:`Run` each: the step rules of the module
    docstring, applied to every run that has not stopped. Subclasses say how the runs' training
    bounds and constraints are computed, where their gradients live and how the optimiser steps."""

    config: TrainConfig  # the settings every run shares (optimiser, budget, clipping)
    step: int  # steps taken (a Trainer: its run's applied steps; an ensemble: its rounds)
    seconds: float  # wall-clock training time
    _optimizer: Adam | torch.optim.Adam | None = None  # built on first use
    _lr: float | None = None  # a learning rate set before the optimiser was built (None: the config's)

    # -- what a subclass provides --------------------------------------------------------------
    @property
    def runs(self) -> list[Run]:
        """The runs trained together, M >= 1."""
        raise NotImplementedError

    @property
    def labels(self) -> list[str]:
        """A name per run, in the order of :attr:`runs`."""
        raise NotImplementedError

    def _parameters(self) -> list[Tensor]:
        raise NotImplementedError

    def _terms(self, active: list[int]) -> tuple[Tensor, Tensor | None]:
        """Training bounds (M,) and constraints (M, G) (None: no run is constrained) of the runs' next draws."""
        raise NotImplementedError

    def _grads(self) -> list[Tensor]:
        """The gradients, one (M, ...) tensor per parameter (views: clipping them clips the gradients)."""
        raise NotImplementedError

    def _optimizer_step(self, frozen: list[int]) -> None:
        """Step the optimiser for every run but the ``frozen`` ones."""
        raise NotImplementedError

    def _count_round(self) -> None:
        """After every run of a step was counted (an ensemble counts its rounds here)."""

    # -- shared --------------------------------------------------------------------------------
    @property
    def optimizer(self) -> Adam | torch.optim.Adam:
        """Adam over the weights, built on first use. Its parameter group also holds ``base_lr``,
        the rate the schedule scales (so a checkpoint keeps it). On the CPU and CUDA it is
        :class:`~ehflow_core.optim.Adam`, torch's fused kernel (one pass over each tensor, not ~10)
        without ``torch.optim``'s import of its compiler (seconds); elsewhere ``torch.optim.Adam``."""
        if self._optimizer is None:
            base, params = self.base_lr, self._parameters()
            lr = base * self._lr_factor()
            self._optimizer = Adam(params, lr) if fused_adam_supported(params) else torch.optim.Adam(params, lr=lr)
            self._optimizer.param_groups[0]["base_lr"] = base
        return self._optimizer

    @property
    def base_lr(self) -> float:
        """The learning rate the schedule scales (``config.lr`` unless :meth:`set_lr` changed it)."""
        if self._optimizer is not None:
            group = self._optimizer.param_groups[0]
            return float(group.get("base_lr", group["lr"]))
        return self.config.lr if self._lr is None else self._lr

    @property
    def lr(self) -> float:
        """The learning rate in force for the next step: :attr:`base_lr` times the schedule's factor."""
        return self.base_lr * self._lr_factor()

    def _spent(self, step: int) -> float:
        """The fraction of the run's budget spent at ``step``: steps of ``max_steps`` or seconds of
        ``seconds``, whichever is further along."""
        config = self.config
        spent = step / config.max_steps
        if config.seconds is not None:
            spent = max(spent, self.seconds / config.seconds)
        return min(spent, 1.0)

    def _lr_factor(self) -> float:
        r"""The schedule's factor at this point of the run: a linear warm-up that ends after
        ``warmup_steps`` steps or ``warmup_fraction`` of the budget, whichever comes first, times,
        with ``lr_schedule="cosine"``, :math:`\tfrac12(1 + \cos \pi t)` where ``t`` is the fraction
        of the run's budget spent (:meth:`_spent`)."""
        config = self.config
        factor = 1.0
        if config.warmup_steps or config.warmup_fraction:
            done = 0.0  # how far the warm-up is along after this step: the further of its two bounds
            if config.warmup_steps:
                done = (self.step + 1) / config.warmup_steps
            if config.warmup_fraction:
                done = max(done, self._spent(self.step + 1) / config.warmup_fraction)
            factor = min(1.0, done)
        if config.lr_schedule == "cosine":
            factor *= 0.5 * (1.0 + math.cos(math.pi * self._spent(self.step)))
        return factor

    def set_lr(self, lr: float) -> None:
        """Change the base learning rate from the next step on."""
        lr = check_float("lr", lr, positive=True)
        if self._optimizer is None:
            self._lr = lr
            return
        for group in self._optimizer.param_groups:
            group["base_lr"] = lr

    def _train_step(self) -> dict[int, StepResult]:
        """One step of every run that has not stopped: run index -> its result."""
        active = [m for m, run in enumerate(self.runs) if not run.stopped]
        bound, constraint = self._terms(active)  # (M,), (M, G) or None
        lr = self.lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        results: dict[int, StepResult] = {}
        constraints: dict[int, Tensor | None] = {}  # (G,) per constrained run
        losses = []
        for m in active:
            run = self.runs[m]
            constraints[m] = constraint[m] if constraint is not None and run.constrained else None
            loss = run.lagrangian(bound[m], constraints[m])
            results[m] = run.assess(loss, bound[m], lr)
            if results[m].accepted:
                losses.append(loss)
        self.optimizer.zero_grad()  # gradients dropped, not zeroed (torch's default too)
        norms = torch.full((len(self.runs),), math.nan)
        if losses:
            torch.stack(losses).sum().backward()
            norms = clip_grad_norms_(self._grads(), self.config.grad_clip)
        for m, result in results.items():
            if result.accepted:
                self.runs[m].accept(result, constraints[m], float(norms[m]), lr)
        frozen = [m for m in range(len(self.runs)) if m not in results or not results[m].accepted]
        if len(frozen) < len(self.runs):
            self._optimizer_step(frozen)
        return results

    def _rounds(self, more_steps: int | None, seconds: float | None) -> Iterator[dict[str, Record]]:
        """Train for up to ``more_steps`` more steps (default: until ``config.max_steps``) or
        ``seconds`` of wall time (default ``config.seconds``): label -> Record each step, for the
        runs that stepped."""
        end = (
            self.config.max_steps if more_steps is None else self.step + check_int("more_steps", more_steps, minimum=0)
        )
        clock = _Clock(self.step, self.seconds, self.config.seconds if seconds is None else seconds)
        while self.step < end and not all(run.stopped for run in self.runs):
            results = self._train_step()
            for m, result in results.items():
                self.runs[m].count(result)
            self._count_round()
            self.seconds, rate = clock.tick(self.step)
            last = self.step == end or clock.out_of_time
            records = {}
            for m, result in results.items():
                run = self.runs[m]
                run.seconds = self.seconds
                records[self.labels[m]] = run.conclude(result, rate, last)
            yield records
            if clock.out_of_time:
                return


class Trainer(Run, Stepper):
    """One run with its own Adam; :meth:`train` yields a :class:`Record` a step.

    Takes the arguments of :class:`Run`.
    """

    @property
    def runs(self) -> list[Run]:
        return [self]

    @property
    def labels(self) -> list[str]:
        return ["run"]

    def _parameters(self) -> list[Tensor]:
        return list(self.flow.parameters())

    def _terms(self, active: list[int]) -> tuple[Tensor, Tensor | None]:
        bound, constraint = self.objective(*self.draw())
        return bound.unsqueeze(0), None if constraint is None else constraint.unsqueeze(0)

    def _grads(self) -> list[Tensor]:
        return [p.grad.unsqueeze(0) for p in self.flow.parameters() if p.grad is not None]

    def _optimizer_step(self, frozen: list[int]) -> None:
        self.optimizer.step()

    def optimizer_state(self) -> dict[str, Any]:
        """Adam's state dict, for a checkpoint."""
        return self.optimizer.state_dict()

    def train(self, more_steps: int | None = None, seconds: float | None = None) -> Iterator[Record]:
        """Train for up to ``more_steps`` more steps (default: until ``config.max_steps`` in total)
        or ``seconds`` of wall time (default ``config.seconds``), yielding one :class:`Record` a step.

        Stop consuming at any time; calling again resumes where it stopped.
        """
        for records in self._rounds(more_steps, seconds):
            yield records["run"]


class _Clock:
    """Wall time of a training call: total seconds, a moving steps/s, and the time budget."""

    def __init__(self, step: int, seconds: float, budget: float | None) -> None:
        self.budget = None if budget is None else check_float("seconds", budget, positive=True)
        self.started = time.perf_counter()
        self.base_seconds = seconds
        self.now = 0.0
        self.window: list[tuple[int, float]] = [(step, 0.0)]

    def tick(self, step: int) -> tuple[float, float]:
        """Note that ``step`` steps are done: returns (total seconds, recent steps/s)."""
        self.now = time.perf_counter() - self.started
        self.window = [*self.window[-19:], (step, self.now)]
        (s0, t0), (s1, t1) = self.window[0], self.window[-1]
        return self.base_seconds + self.now, (s1 - s0) / max(t1 - t0, 1e-9)

    @property
    def out_of_time(self) -> bool:
        return self.budget is not None and self.now >= self.budget
