r"""The variational encoder :math:`h(p \mid q) = \mathcal{N}(p; \mu(q), \mathrm{diag}\,\sigma(q)^2)`."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .nets import relu_mlp

_MIN_SCALE = 1e-3  # keeps log h finite and the ELBO's gradients bounded


class GaussianEncoder(nn.Module):
    r"""Gaussian encoder over the latent momentum, as in the paper: relu MLPs ``[d, *hidden, d]``.

    :math:`\mu(q)` and :math:`\sigma(q) = \mathrm{softplus}(\rho(q)) + 10^{-3}` are two separate
    relu MLPs; the softplus with a floor keeps the scale positive and numerically safe.
    """

    def __init__(self, dim: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.mean_net = relu_mlp((dim, *hidden, dim))
        self.scale_net = relu_mlp((dim, *hidden, dim))

    def forward(self, q: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and scale of h(p | q), each with shape (B, d)."""
        return self.mean_net(q), F.softplus(self.scale_net(q)) + _MIN_SCALE

    @staticmethod
    def noise(q: Tensor, n_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """Standard-normal noise ε for ``n_samples`` draws per position: shape (S, B, d)."""
        return torch.randn((n_samples, *q.shape), dtype=q.dtype, device=q.device, generator=generator)

    def reparameterise(self, q: Tensor, eps: Tensor, path_weights: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``p = μ(q) + σ(q) ε`` and ``log h(p | q)`` for noise ε (S, B, d): shapes (S, B, d), (S, B).

        ``path_weights`` (S, B), for the doubly-reparameterised gradient (docs/maths.md): the same
        values, but ``log h`` sees the encoder's parameters only through ``p`` (its score term is
        dropped), and the gradient reaching the encoder through each ``p`` is scaled by its weight.
        """
        mean, scale = self(q)
        p = mean + scale * eps
        if path_weights is None:
            log_h = (-0.5 * eps * eps - torch.log(scale) - 0.5 * math.log(2 * math.pi)).sum(-1)
            return p, log_h
        p = p.detach() + path_weights.unsqueeze(-1) * (p - p.detach())  # same values; scaled path gradient
        mean, scale = mean.detach(), scale.detach()
        z = (p - mean) / scale  # equals ε, but differentiable in p
        log_h = (-0.5 * z * z - torch.log(scale) - 0.5 * math.log(2 * math.pi)).sum(-1)
        return p, log_h
