r"""Batched ensembles: M training runs of one architecture trained as one model (stacked weights).

A κ sweep (Figure 2A) trains the same flow with different κ and seeds. Here the M members'
parameters are stacked along a leading axis (M, ...) and one step evaluates every member's
:class:`~ehflow_core.training.Objective` with ``torch.func.vmap`` — batched matmuls instead of M
small ones. Each member keeps its own :class:`~ehflow_core.training.Trainer` for everything that is
not the network arithmetic (its RNG, data, test set, multipliers, evaluation), and its flow's
parameters are *views* into the stacked tensors, so ``members[m].flow`` is always the current
model. Adam is elementwise, so one Adam over the stacked tensors is M independent Adams: an
ensemble reproduces its members trained one by one (to rounding; tested in float64).

Divergence: a member whose step is rejected keeps its weights (they are restored after the shared
optimiser step); with ``on_divergence="stop"`` it is frozen from then on while the others train.
(With ``"continue"`` its Adam step count runs on with the ensemble's, so after a rejected step it
no longer matches a run of its own exactly.)
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.func import functional_call, stack_module_state, vmap

from ._checks import check_float, check_int
from .symmetries import Generator
from .targets import Target
from .training import Record, TrainConfig, Trainer, _Clock

# Fields that may differ between members; everything else must be equal (one architecture, one batch).
_MEMBER_FIELDS = ("kappa", "seed", "n_train")


def member_label(config: TrainConfig, with_seed: bool = False) -> str:
    """``"κ=0.01"`` or ``"none"`` (unconstrained), with ``"/seed1"`` when ``with_seed``."""
    label = "none" if config.kappa is None else f"κ={config.kappa:g}"
    return f"{label}/seed{config.seed}" if with_seed else label


class EnsembleTrainer:
    """Train the runs ``configs`` (differing only in κ, seed and ``n_train``) as one batched model.

    :meth:`train` yields, per step, a dict ``label -> Record`` for every member still training.

    Args:
        configs: one :class:`TrainConfig` per member, M >= 1.
        target: the density every member learns.
        generators: symmetry generators (default: the target's own).
        labels: a name per member (default: ``"κ=<value>"``/``"none"``, with the seed when seeds differ).
    """

    def __init__(
        self,
        configs: Sequence[TrainConfig],
        target: Target,
        generators: Sequence[Generator] | None = None,
        labels: Sequence[str] | None = None,
    ) -> None:
        configs = list(configs)
        if not configs:
            raise ValueError("configs must hold at least one TrainConfig, got an empty sequence")
        for i, c in enumerate(configs):
            if not isinstance(c, TrainConfig):
                raise TypeError(f"configs[{i}] must be a TrainConfig, got {type(c).__name__}")
        first = configs[0].to_dict()
        for i, c in enumerate(configs[1:], 1):
            diff = [k for k, v in c.to_dict().items() if k not in _MEMBER_FIELDS and v != first[k]]
            if diff:
                raise ValueError(
                    f"configs[{i}] differs from configs[0] in {diff}; ensemble members may differ only in "
                    f"{', '.join(_MEMBER_FIELDS)}"
                )
        if labels is None:
            with_seed = len({c.seed for c in configs}) > 1
            labels = [member_label(c, with_seed) for c in configs]
        labels = list(labels)
        if len(labels) != len(configs) or len(set(labels)) != len(labels):
            raise ValueError(f"labels must be {len(configs)} distinct names, one per config, got {labels}")
        self.config = configs[0]
        self.labels = labels
        self.members = [Trainer(c, target, generators) for c in configs]

        objectives = [m.objective for m in self.members]
        params, self._buffers = stack_module_state(objectives)  # name -> (M, ...)
        self._params = {name: p.detach().requires_grad_(True) for name, p in params.items()}
        for m, objective in enumerate(objectives):  # members' parameters become views of the stack
            for name, p in objective.named_parameters():
                p.data = self._params[name].data[m]
        self._template = objectives[0]
        self._terms = vmap(self._member_terms)
        self.optimizer = torch.optim.Adam(self._params.values(), lr=self.config.lr)
        self._stopped = [False] * len(self.members)
        self.step = 0
        self.seconds = 0.0

    def __len__(self) -> int:
        return len(self.members)

    @property
    def trainers(self) -> dict[str, Trainer]:
        """label -> the member's :class:`Trainer` (its ``flow`` holds the current weights)."""
        return dict(zip(self.labels, self.members))

    def set_lr(self, lr: float) -> None:
        """Change every member's learning rate from the next step on."""
        lr = check_float("lr", lr, positive=True)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        for member in self.members:
            member.set_lr(lr)

    # -- one step ------------------------------------------------------------------------------
    def _member_terms(self, params: dict[str, Tensor], buffers: dict[str, Tensor], *noise: Tensor) -> Any:
        return functional_call(self._template, (params, buffers), noise)

    def _stacked_noise(self) -> tuple[Tensor, ...]:
        """Every member's draw, in its own RNG's order, stacked: x (M, B, d), eps (M, S, B, d),
        q0, p0 (M, B_c, d). Unconstrained members draw no base samples; zeros stand in (λ = 0)."""
        draws = [member._draw() for member in self.members]
        x = draws[0].x
        filler = torch.zeros(self.config.constraint_batch, x.shape[-1], dtype=x.dtype, device=x.device)
        columns = [
            [d.x for d in draws],
            [d.eps for d in draws],
            [filler if d.q0 is None else d.q0 for d in draws],
            [filler if d.p0 is None else d.p0 for d in draws],
        ]
        return tuple(torch.stack(column) for column in columns)

    def _member_grad_norms(self) -> Tensor:
        """Each member's gradient norm over all its parameters: (M,)."""
        squares = [p.grad.reshape(len(self), -1).square().sum(1) for p in self._params.values() if p.grad is not None]
        return torch.stack(squares).sum(0).sqrt()

    def _train_step(self) -> dict[int, tuple[dict[str, Any], str | None]]:
        """One step of every member still training: member index -> (values, problem)."""
        elbo, constraint = self._terms(self._params, self._buffers, *self._stacked_noise())  # (M,), (M, G)
        outcomes: dict[int, tuple[dict[str, Any], str | None]] = {}
        total = elbo.new_zeros(())
        for m, member in enumerate(self.members):
            if self._stopped[m]:
                continue
            loss = member._lagrangian(elbo[m], constraint[m] if member.constrained else None)
            values: dict[str, Any] = {"loss": float(loss.detach()), "train_elbo": float(elbo[m].detach())}
            problem = member._check_loss(values)
            outcomes[m] = (values, problem)
            if problem is None:
                total = total + loss
        self.optimizer.zero_grad(set_to_none=True)
        if total.requires_grad:
            total.backward()
        norms = self._member_grad_norms() if total.requires_grad else torch.full((len(self),), math.nan)
        if self.config.grad_clip is not None:  # per member, as torch.nn.utils.clip_grad_norm_ does
            scale = (self.config.grad_clip / (norms + 1e-6)).clamp(max=1.0)
            for p in self._params.values():
                if p.grad is not None:
                    p.grad.mul_(scale.to(p.grad.dtype).view(-1, *[1] * (p.ndim - 1)))
        for m, (values, problem) in outcomes.items():
            if problem is None and not math.isfinite(float(norms[m])):
                outcomes[m] = (values, self.members[m]._diverged("gradient norm", float(norms[m])))
        frozen = [m for m in range(len(self)) if m not in outcomes or outcomes[m][1] is not None]
        self._step_optimizer(frozen)
        for m, (values, problem) in outcomes.items():
            if problem is None:
                member = self.members[m]
                member._after_step(values, constraint[m].detach() if member.constrained else None, float(norms[m]))
        return outcomes

    def _step_optimizer(self, frozen: list[int]) -> None:
        """Adam step for all members, then put back the weights and Adam moments of ``frozen``."""
        if len(frozen) == len(self):
            return
        params = list(self._params.values())
        kept = []
        if frozen:
            moments = [t for p in params for k, t in self.optimizer.state.get(p, {}).items() if k != "step"]
            kept = [(t, t.detach()[frozen].clone()) for t in params + moments]
            for p in params:  # a zero (not NaN) gradient keeps fresh moments at zero
                if p.grad is not None:
                    p.grad[frozen] = 0.0
        self.optimizer.step()
        with torch.no_grad():
            for t, old in kept:
                t[frozen] = old

    # -- the loop ------------------------------------------------------------------------------
    def train(self, steps: int | None = None, seconds: float | None = None) -> Iterator[dict[str, Record]]:
        """Train every member for up to ``steps`` more steps (default: until ``config.steps``) or
        ``seconds`` of wall time, yielding ``label -> Record`` each step for the members that stepped.

        Stop consuming at any time; calling again resumes where it stopped.
        """
        end_step = self.config.steps if steps is None else self.step + check_int("steps", steps, minimum=0)
        clock = _Clock(self.step, self.seconds, self.config.seconds if seconds is None else seconds)
        while self.step < end_step and not all(self._stopped):
            outcomes = self._train_step()
            self.step += 1
            self.seconds, rate = clock.tick(self.step)
            last = self.step == end_step or clock.out_of_time
            records = {}
            for m, (values, problem) in outcomes.items():
                member = self.members[m]
                member.seconds = self.seconds
                records[self.labels[m]], stop = member._conclude(values, problem, rate, last)
                self._stopped[m] = self._stopped[m] or stop
            yield records
            if clock.out_of_time:
                return


def train_ensemble(
    configs: Sequence[TrainConfig], target: Target, labels: Sequence[str] | None = None
) -> tuple[EnsembleTrainer, dict[str, list[Record]]]:
    """Train ``configs`` as one ensemble to the end: the trainer and ``label -> records``."""
    ensemble = EnsembleTrainer(configs, target, labels=labels)
    runs: dict[str, list[Record]] = {label: [] for label in ensemble.labels}
    for records in ensemble.train():
        for label, record in records.items():
            runs[label].append(record)
    return ensemble, runs


def kappa_sweep(
    config: TrainConfig, target: Target, kappas: Sequence[float], include_baseline: bool = True
) -> dict[str, list[Record]]:
    """Train ``config`` once per κ (and unconstrained) as one batched ensemble: label -> records.

    Labels are ``"κ=<value>"`` and ``"none"``; this is Figure 2A's data.
    """
    settings: list[float | None] = [*kappas, *([None] if include_baseline else [])]
    return train_ensemble([config.replace(kappa=k) for k in settings], target)[1]
