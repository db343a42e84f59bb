"""Quality at equal wall time: the Hamiltonian flow against RealNVP and a neural spline flow (zuko).

Tasks: the ring and 8 Gaussians with infinite data (a fresh batch every step), and the ring with
500 training points. Every model gets the same wall-clock budget, batch 256, Adam with lr 1e-3,
the same training points and the same 2048 test points, and is evaluated at the same ten moments
of its budget (evaluation time is not counted). Reported: the best and the final test NLL minus
the target's true entropy, and for finite data the train − test log-likelihood gap.

The Hamiltonian flow's test NLL is an importance-weighted bound (L_K with K = 128, an *upper*
bound on its true NLL); the peers' likelihoods are exact. The comparison is tilted against us
by the bound's slack.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ehflow_core import TrainConfig, Trainer
from ehflow_core.peer import LR, PeerTrainer
from ehflow_core.targets import Target, make_target

BATCH = 256


@dataclass(frozen=True)
class PeerSizes:
    seconds: float  # training wall time per model per task
    evaluations: int  # test evaluations, evenly spread over the budget
    n_test: int  # test points
    k_eval: int  # K of the Hamiltonian flow's importance-weighted L_K


def peer_sizes(seconds: float, smoke: bool = False) -> PeerSizes:
    return PeerSizes(seconds, 2, 256, 8) if smoke else PeerSizes(seconds, 10, 2048, 128)


@dataclass(frozen=True)
class Task:
    name: str
    target: str
    n_train: int | None  # None: infinite data


TASKS = (Task("ring", "ring", None), Task("gaussians8", "gaussians8", None), Task("ring_500", "ring", 500))


class _Ours:
    """The Hamiltonian flow (paper configuration, optional SO(2) constraint) behind the same interface."""

    def __init__(self, kappa: float | None, target: Target, train_data: Tensor | None, seed: int, k: int) -> None:
        config = (
            TrainConfig()
            .as_paper()
            .replace(kappa=kappa, batch=BATCH, lr=LR, max_steps=10**9, eval_every=10**9, seed=seed)
        )
        self.trainer = Trainer(config, target, train_data=train_data)
        self.steps = self.trainer.train()
        self.rng = torch.Generator().manual_seed(seed + 5)
        self.k = k

    def step(self) -> None:
        next(self.steps)

    @torch.no_grad()
    def log_likelihood(self, x: Tensor) -> float:
        return float(self.trainer.eval_flow.log_likelihood(x, self.k, self.rng).mean())


MODELS: dict[str, Callable[[Target, Tensor | None, int, int], Any]] = {
    "hamiltonian_kappa0.01": lambda t, d, s, k: _Ours(0.01, t, d, s, k),
    "hamiltonian_none": lambda t, d, s, k: _Ours(None, t, d, s, k),
    "realnvp": lambda t, d, s, k: PeerTrainer("realnvp", t, d, s, BATCH),
    "nsf": lambda t, d, s, k: PeerTrainer("nsf", t, d, s, BATCH),
}


def run_task(task: Task, sizes: PeerSizes, seed: int = 0) -> dict[str, Any]:
    """Every model on one task at ``sizes.seconds`` of training each."""
    target = make_target(task.target)
    entropy, _ = target.entropy()
    data_rng = torch.Generator().manual_seed(1234 + seed)
    test = target.sample(sizes.n_test, data_rng)
    train = None if task.n_train is None else target.sample(task.n_train, data_rng)
    out: dict[str, Any] = {"entropy": entropy, "n_train": task.n_train, "models": {}}
    for name, make in MODELS.items():
        model = make(target, train, seed, sizes.k_eval)
        history, steps, spent = [], 0, 0.0
        for _ in range(sizes.evaluations):
            start = time.perf_counter()
            while time.perf_counter() - start < sizes.seconds / sizes.evaluations:
                model.step()
                steps += 1
            spent += time.perf_counter() - start
            history.append(-model.log_likelihood(test))
        row: dict[str, Any] = {
            "steps": steps,
            "seconds": spent,
            "best_test_nll_minus_entropy": min(history) - entropy,
            "final_test_nll_minus_entropy": history[-1] - entropy,
        }
        if train is not None:
            row["train_minus_test_ll"] = model.log_likelihood(train) + history[-1]
        if not all(math.isfinite(h) for h in history):
            row["note"] = "non-finite test NLL during training"
        out["models"][name] = row
    return out


def peers(sizes: PeerSizes) -> dict[str, Any]:
    """All tasks at ``sizes``."""
    return {**sizes.__dict__, "seconds_per_model": sizes.seconds, "tasks": {t.name: run_task(t, sizes) for t in TASKS}}
