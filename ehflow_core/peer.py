"""A standard flow beside the Hamiltonian one: a neural spline flow (or RealNVP) from zuko, trained
by maximum likelihood on the same data, so a comparison is one object away.

Its log-likelihood is exact (a spline flow's change of variables with its log-determinant), where
the Hamiltonian flow reports the importance-weighted bound L_K ≤ log p: a comparison of the two is
tilted against the Hamiltonian flow by the bound's slack. Sizes are zuko's usual ones and the
benchmarks' (docs/results.md): NSF with 3 transforms of 8 bins, RealNVP with 4, MLPs of 128 × 128,
Adam at 1e-3.
"""

from __future__ import annotations

import time

import torch
from torch import Tensor

from ._checks import check_choice, check_int
from .optim import Adam
from .targets import Target

KINDS = ("nsf", "realnvp")
LR = 1e-3


def peer_model(kind: str, dim: int = 2) -> torch.nn.Module:
    """An untrained zuko flow over R^dim: ``"nsf"`` (neural spline flow) or ``"realnvp"``."""
    import zuko  # imported when a peer is made: the app and the library need it only then

    check_choice("kind", kind, KINDS)
    if kind == "realnvp":
        return zuko.flows.RealNVP(features=dim, transforms=4, hidden_features=(128, 128))
    return zuko.flows.NSF(features=dim, transforms=3, bins=8, hidden_features=(128, 128))


class PeerTrainer:
    """A zuko flow trained by maximum likelihood: a batch of the data per :meth:`step`, Adam.

    Args:
        kind: ``"nsf"`` or ``"realnvp"`` (:func:`peer_model`).
        target: the density to learn (fresh samples each step unless ``train_data`` is given).
        train_data: a fixed training set (n, d), or None for infinite data.
        seed: the initialisation's and the batches' seed (torch's global RNG is left alone).
        batch: points per step.
    """

    def __init__(self, kind: str, target: Target, train_data: Tensor | None, seed: int, batch: int = 256) -> None:
        self.batch = check_int("batch", batch, minimum=1)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.model = peer_model(kind, target.dim)
        self.optimizer = Adam(self.model.parameters(), LR)
        self.target, self.train_data = target, None if train_data is None else train_data.float()
        self.rng = torch.Generator().manual_seed(seed)
        self.steps, self.seconds = 0, 0.0  # steps taken and their wall time

    def step(self) -> float:
        """One maximum-likelihood step; returns the batch's mean log p."""
        began = time.perf_counter()
        if self.train_data is None:
            x = self.target.sample(self.batch, self.rng)
        else:
            x = self.train_data[torch.randint(len(self.train_data), (self.batch,), generator=self.rng)]
        log_p = self.model().log_prob(x).mean()
        self.optimizer.zero_grad()
        (-log_p).backward()
        self.optimizer.step()
        self.steps += 1
        self.seconds += time.perf_counter() - began
        return float(log_p.detach())

    @torch.no_grad()
    def log_likelihood(self, x: Tensor) -> float:
        """The mean exact log p of the points ``x`` (n, d)."""
        return float(self.model().log_prob(x.float()).mean())

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0) -> Tensor:
        """``n`` samples of the learned density (n, d), the same for the same ``seed`` and weights."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.model().sample((check_int("n", n, minimum=1),))
