r"""The training bound and the constraints of one step, as a pure function of its random inputs.

The bound :math:`\mathcal{B}` is the ELBO or the importance-weighted :math:`L_K` (with IWAE's or
the doubly-reparameterised gradient, docs/maths.md); the constraints are
:math:`C_k = E[\{g_k, H\}^2]` over the base's samples (and, with ``constraint_at="base+data"``,
the batch's points). :class:`~ehflow_core.run.Run` draws the inputs (:class:`Noise`) and combines
the two into its Lagrangian.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ._checks import check_choice
from .encoder import LateGradScale
from .flow import HamiltonianFlow
from .symmetries import Generator, constraint_values

OBJECTIVES = ("elbo", "iwae", "dreg")
CONSTRAINT_AT = ("base", "base+data")  # where the constraint's brackets are evaluated (TrainConfig.constraint_at)


class Noise(NamedTuple):
    """One step's random inputs, drawn from the run's RNG in a fixed order."""

    x: Tensor  # data batch (B, d)
    eps: Tensor  # encoder noise (S, B, d)
    q0: Tensor | None  # base samples of the constraint (B_c, d); None when unconstrained
    p0: Tensor | None


def training_bound(flow: HamiltonianFlow, x: Tensor, eps: Tensor, objective: str) -> Tensor:
    r"""The batch-mean training bound of ``objective`` for data x (B, d) and noise ``eps`` (K, B, d).

    - ``"elbo"``: the mean of the K log weights :math:`\log w_k = \log \pi(T^{-1}(x, p_k)) - \log h(p_k \mid x)`.
    - ``"iwae"``: :math:`L_K = \mathrm{logsumexp}_k \log w_k - \log K`, the importance-weighted bound
      (:meth:`HamiltonianFlow.log_likelihood` on the same noise).
    - ``"dreg"``: the same value :math:`L_K`; its gradient is IWAE's for the flow and the
      doubly-reparameterised one, :math:`\sum_k \tilde w_k^2 \, \partial \log w_k / \partial p_k \,
      \partial p_k / \partial \phi`, for the encoder (normalised weights :math:`\tilde w` of the same
      forward pass, applied to the encoder's path gradient in the backward pass). See docs/maths.md.
    """
    if objective == "elbo":
        return flow._log_weights_from_noise(x, eps).mean()
    log_k = math.log(eps.shape[0])
    if objective == "iwae":
        return (torch.logsumexp(flow._log_weights_from_noise(x, eps), 0) - log_k).mean()
    path_scale = LateGradScale()
    log_w = flow._log_weights_from_noise(x, eps, path_scale)  # log h sees φ only through p
    weights = torch.softmax(log_w.detach(), 0)  # w̃ (K, B), from this very pass
    path_scale.set(weights.unsqueeze(-1))  # the gradient reaching φ through p_k: scaled by w̃_k
    surrogate = (weights * log_w).sum(0).mean()  # its gradient: Σ w̃ ∇θ log w, and Σ w̃² (path) for φ
    value = (torch.logsumexp(log_w.detach(), 0) - log_k).mean()
    return value + (surrogate - surrogate.detach())


class Objective(nn.Module):
    r"""One step's training bound and constraints as a pure function of the noise:
    ``forward(x, eps, q0, p0)``.

    Returns the batch-mean bound of ``objective`` (a scalar, :func:`training_bound`) and
    :math:`C_k = E_\pi[\{g_k, H\}^2]` (G,), or None without base samples (an unconstrained step).
    With ``constraint_at="base+data"`` the mean is over the base samples and the batch's points
    ``x``, each with the momentum the encoder gives it for the first noise sample (the states
    where the data are; held fixed: only H's weights see the constraint's gradient).
    A module so that :class:`~ehflow_core.ensemble.EnsembleTrainer` can ``vmap`` it over stacked weights.
    """

    def __init__(
        self,
        flow: HamiltonianFlow,
        generators: Sequence[Generator],
        objective: str = "elbo",
        constraint_at: str = "base",
    ) -> None:
        super().__init__()
        self.flow = flow
        self.generators = list(generators)
        self.objective = check_choice("objective", objective, OBJECTIVES)
        self.constraint_at = check_choice("constraint_at", constraint_at, CONSTRAINT_AT)

    def forward(self, x: Tensor, eps: Tensor, q0: Tensor | None, p0: Tensor | None) -> tuple[Tensor, Tensor | None]:
        bound = training_bound(self.flow, x, eps, self.objective)
        if q0 is None or p0 is None:  # unconstrained: no base samples were drawn
            return bound, None
        if self.constraint_at == "base+data":
            p_data = self.flow.encoder.reparameterise(x, eps[:1])[0][0].detach()
            q0, p0 = torch.cat([q0, x]), torch.cat([p0, p_data])
        reference = self.flow.grad_mode == "reference"
        return bound, constraint_values(self.flow.hamiltonian_list, self.generators, q0, p0, reference=reference)
