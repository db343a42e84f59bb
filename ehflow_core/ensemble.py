r"""Batched ensembles: M training runs of one architecture trained as one model (stacked weights).

A κ sweep (Figure 2A) trains the same flow with different κ and seeds. Here the M runs'
parameters are stacked along a leading axis (M, ...) and one step evaluates every run's
:class:`~ehflow_core.training.Objective` with ``torch.func.vmap``: batched matmuls instead of M
small ones. Each member is a :class:`~ehflow_core.training.Run` (its RNG, data, test set,
multipliers, evaluation) whose flow's parameters are *views* into the stacked tensors, so
``runs[label].flow`` is always the current model. The step rules are the ones of
:class:`~ehflow_core.training.Stepper`, shared with :class:`~ehflow_core.training.Trainer`. Adam is
elementwise, so one Adam over the stacked tensors is M independent Adams: an ensemble reproduces
its members trained one by one (to rounding; tested in float64), and a member's slice of the
Adam state (:meth:`EnsembleTrainer.member_optimizer_state`) resumes it as a run of its own.

Divergence: a member whose step is rejected keeps its weights and Adam moments (they are
restored after the shared optimiser step); with ``on_divergence="stop"`` it is frozen from then on
while the others train. (With ``"continue"`` its Adam step count runs on with the ensemble's, so
after a rejected step it no longer matches a run of its own exactly.)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.func import functional_call, stack_module_state, vmap

from .run import run_label
from .symmetries import Generator
from .targets import Target
from .training import Record, Run, Stepper, TrainConfig

# Fields that may differ between members; everything else must be equal (one architecture, one batch).
_MEMBER_FIELDS = ("kappa", "seed", "n_train")


class EnsembleTrainer(Stepper):
    """Train the runs ``configs`` (differing only in κ, seed and ``n_train``) as one batched model.

    :meth:`train` yields, per step, a dict ``label -> Record`` for every member still training.

    Args:
        configs: one :class:`TrainConfig` per member, M >= 1.
        target: the density every member learns.
        generators: symmetry generators (default: the target's own).
        labels: a name per member (default: :func:`~ehflow_core.run.run_label`, with the seed
            when seeds differ).
        train_data, test_data: every member's fixed training and test sets (user data), as for
            :class:`~ehflow_core.run.Run`.
    """

    def __init__(
        self,
        configs: Sequence[TrainConfig],
        target: Target,
        generators: Sequence[Generator] | None = None,
        labels: Sequence[str] | None = None,
        train_data: Tensor | None = None,
        test_data: Tensor | None = None,
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
            labels = [run_label(c.kappa, c.seed if with_seed else None) for c in configs]
        labels = list(labels)
        if len(labels) != len(configs) or len(set(labels)) != len(labels):
            raise ValueError(f"labels must be {len(configs)} distinct names, one per config, got {labels}")
        self.config = configs[0]
        self._labels = labels
        self._runs = [Run(c, target, generators, train_data, test_data) for c in configs]

        objectives = [run.objective for run in self.runs]
        params, self._buffers = stack_module_state(objectives)  # name -> (M, ...)
        self._params = {name: p.detach().requires_grad_(True) for name, p in params.items()}
        for m, objective in enumerate(objectives):  # members' parameters become views of the stack
            for name, p in objective.named_parameters():
                p.data = self._params[name].data[m]
        self._template = objectives[0]
        self._vmapped = vmap(self._member_terms)
        self.step = 0
        self.seconds = 0.0

    def __len__(self) -> int:
        return len(self._runs)

    @property
    def runs(self) -> list[Run]:
        return self._runs

    @property
    def labels(self) -> list[str]:
        return self._labels

    @property
    def runs_by_label(self) -> dict[str, Run]:
        """label -> the member's :class:`~ehflow_core.training.Run` (its ``flow`` holds the current weights)."""
        return dict(zip(self.labels, self.runs))

    # -- the Stepper's pieces ------------------------------------------------------------------
    def _parameters(self) -> list[Tensor]:
        return list(self._params.values())

    def _member_terms(self, params: dict[str, Tensor], buffers: dict[str, Tensor], *noise: Tensor) -> Any:
        return functional_call(self._template, (params, buffers), noise)

    def _terms(self, active: list[int]) -> tuple[Tensor, Tensor | None]:
        """Every member's draw, in its own RNG's order, stacked (x (M, B, d), eps (M, S, B, d),
        q0, p0 (M, B_c, d)) and evaluated at once. Stopped members draw nothing and unconstrained
        ones no base samples: zeros stand in (their terms are not used)."""
        draws = {m: self.runs[m].draw() for m in active}
        x = next(iter(draws.values())).x
        shape = {"x": x.shape, "eps": (self.config.train_samples, *x.shape)}
        shape["q0"] = shape["p0"] = (self.config.constraint_batch, x.shape[-1])
        columns = []
        for name in ("x", "eps", "q0", "p0"):
            filler = x.new_zeros(shape[name])
            column = [getattr(draws[m], name) if m in draws else None for m in range(len(self))]
            columns.append(torch.stack([filler if t is None else t for t in column]))
        bound, constraint = self._vmapped(self._params, self._buffers, *columns)  # (M,), (M, G)
        return bound, constraint

    def _grads(self) -> list[Tensor]:
        return [p.grad for p in self._params.values() if p.grad is not None]

    def _optimizer_step(self, frozen: list[int]) -> None:
        """Adam step for all members, then put back the weights and Adam moments of ``frozen``."""
        params = self._parameters()
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

    def _count_round(self) -> None:
        self.step += 1

    # -- checkpoints ---------------------------------------------------------------------------
    def member_optimizer_state(self, label: str) -> dict[str, Any]:
        """The member's slice of the ensemble's Adam state, as the ``state_dict`` of an Adam over
        that member's ``flow.parameters()``: loaded into a :class:`~ehflow_core.training.Trainer`,
        it resumes the member as if it had always trained alone."""
        if label not in self.labels:
            raise ValueError(f"label must name a member of the ensemble, one of {self.labels}; got {label!r}")
        m = self.labels.index(label)
        full = self.optimizer.state_dict()
        names = list(self._params)  # the optimiser's parameter order
        flow_names = [f"flow.{n}" for n, _ in self.runs[m].flow.named_parameters()]
        state = {}
        for i, name in enumerate(flow_names):
            entry = full["state"].get(names.index(name))
            if entry is not None:
                state[i] = {k: v.clone() if k == "step" else v[m].clone() for k, v in entry.items()}
        group = {k: v for k, v in full["param_groups"][0].items() if k != "params"}
        return {"state": state, "param_groups": [{**group, "params": list(range(len(flow_names)))}]}

    # -- the loop ------------------------------------------------------------------------------
    def train(self, more_steps: int | None = None, seconds: float | None = None) -> Iterator[dict[str, Record]]:
        """Train every member for up to ``more_steps`` more steps (default: until ``config.max_steps``)
        or ``seconds`` of wall time, yielding ``label -> Record`` each step for the members that stepped.

        Stop consuming at any time; calling again resumes where it stopped.
        """
        return self._rounds(more_steps, seconds)


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

    Labels are :func:`~ehflow_core.run.run_label`'s (``"κ=0.01"``, ``"none"``); this is
    Figure 2A's data.
    """
    settings: list[float | None] = [*kappas, *([None] if include_baseline else [])]
    return train_ensemble([config.replace(kappa=k) for k in settings], target)[1]
