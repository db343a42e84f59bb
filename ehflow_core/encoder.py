r"""The variational encoder :math:`h(p \mid q) = \mathcal{N}(p; \mu(q), L(q) L(q)^\top)`, with :math:`L(q)`
diagonal (the paper's :math:`\mathrm{diag}\,\sigma(q)`) or lower triangular (a full covariance)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import check_choice
from .config import ENCODER_COVARIANCES
from .nets import relu_mlp

_MIN_SCALE = 1e-3  # keeps log h finite and the ELBO's gradients bounded


class LateGradScale:
    r"""A gradient scale known only after the forward pass (for DReG in one pass, docs/maths.md).

    ``late(x)`` is the identity on x; the gradient that later flows back through it is multiplied
    by the ``weights`` given to :meth:`set` once the forward pass has computed them (they broadcast
    against x). Backpropagating before :meth:`set` raises. Works under ``torch.func.vmap``.
    """

    def __init__(self) -> None:
        self.weights: Tensor | None = None

    def __call__(self, x: Tensor) -> Tensor:
        return _ScaleGradient.apply(x, self)

    def set(self, weights: Tensor) -> None:
        """The scale of the gradient through every tensor this object was applied to (detached)."""
        self.weights = weights.detach()


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; backward multiplies by the weights of a :class:`LateGradScale`."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, late: LateGradScale) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor, LateGradScale], output: Tensor) -> None:
        ctx.late = inputs[1]

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        weights = ctx.late.weights
        if weights is None:
            raise RuntimeError("LateGradScale: backward reached the scaled tensor before set(weights) was called")
        return grad * weights, None


class GaussianEncoder(nn.Module):
    r"""Gaussian encoder over the latent momentum: relu MLPs for the mean :math:`\mu(q)` and the
    Cholesky factor :math:`L(q)` of the covariance.

    ``covariance="diagonal"`` (the paper's): :math:`L = \mathrm{diag}\,\sigma(q)`, the scale net
    ``[d, *hidden, d]``. ``"full"``: :math:`L` lower triangular, the scale net ``[d, *hidden,
    d(d+1)/2]`` giving its diagonal and, row by row, the entries below it. Either way the diagonal
    is :math:`\mathrm{softplus}(\rho(q)) + 10^{-3}`, positive and numerically safe. The true
    posterior :math:`p(p \mid q)` of a flow that squeezes q is stretched along a tilted direction
    of p (volume preservation), which only the full factor can follow (docs/maths.md).
    """

    def __init__(self, dim: int, hidden: tuple[int, ...], covariance: str = "diagonal") -> None:
        super().__init__()
        self.dim, self.covariance = dim, check_choice("covariance", covariance, ENCODER_COVARIANCES)
        n_below = dim * (dim - 1) // 2 if covariance == "full" else 0
        self.mean_net = relu_mlp((dim, *hidden, dim))
        self.scale_net = relu_mlp((dim, *hidden, dim + n_below))
        # (n_below, d·d): where each entry below the diagonal goes in the flattened L (a matmul,
        # so the encoder works under torch.func.vmap)
        rows, cols = torch.tril_indices(dim, dim, -1)[:, :n_below]
        place = torch.zeros(n_below, dim * dim)
        place[torch.arange(n_below), rows * dim + cols] = 1.0
        self.register_buffer("_place", place, persistent=False)

    def forward(self, q: Tensor) -> tuple[Tensor, Tensor]:
        """Mean (B, d) and the diagonal of L (B, d): with a diagonal covariance, the scale σ(q)."""
        mean, diagonal, _ = self.factor(q)
        return mean, diagonal

    def factor(self, q: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Mean (B, d), the diagonal of L (B, d), and the entries of L below it placed in a (B, d, d)
        matrix (None for a diagonal covariance)."""
        out = self.scale_net(q)
        diagonal = F.softplus(out[..., : self.dim]) + _MIN_SCALE
        below = None
        if self.covariance == "full" and self.dim > 1:
            below = (out[..., self.dim :] @ self._place).unflatten(-1, (self.dim, self.dim))
        return self.mean_net(q), diagonal, below

    @staticmethod
    def noise(q: Tensor, n_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """Standard-normal noise ε for ``n_samples`` draws per position: shape (S, B, d)."""
        return torch.randn((n_samples, *q.shape), dtype=q.dtype, device=q.device, generator=generator)

    def reparameterise(self, q: Tensor, eps: Tensor, path_scale: LateGradScale | None = None) -> tuple[Tensor, Tensor]:
        """``p = μ(q) + L(q) ε`` and ``log h(p | q)`` for noise ε (S, B, d): shapes (S, B, d), (S, B).

        ``log h = −½|ε|² − Σ_i log L_ii − (d/2) log 2π``. ``path_scale``, for the
        doubly-reparameterised gradient (docs/maths.md): the same values, but ``log h`` sees the
        encoder's parameters only through ``p`` (its score term is dropped; ε is recovered as
        ``L⁻¹(p − μ)`` with μ and L held fixed), and the gradient reaching the encoder through each
        ``p`` is scaled by the weights the caller sets on ``path_scale`` after the forward pass, (S, B, 1).
        """
        mean, diagonal, below = self.factor(q)
        p = mean + diagonal * eps
        if below is not None:
            p = p + (below @ eps.unsqueeze(-1)).squeeze(-1)
        if path_scale is None:
            return p, _log_normal(eps, diagonal)
        p = path_scale(p)  # same values; the path gradient scaled later
        centred = p - mean.detach()
        if below is None:
            z = centred / diagonal.detach()  # equals ε, but differentiable in p
        else:
            factor = (below + torch.diag_embed(diagonal)).detach()
            z = torch.linalg.solve_triangular(factor, centred.unsqueeze(-1), upper=False).squeeze(-1)
        return p, _log_normal(z, diagonal.detach())


def _log_normal(z: Tensor, diagonal: Tensor) -> Tensor:
    """log N(μ + L z; μ, L Lᵀ) = −½|z|² − Σ log L_ii − (d/2) log 2π, over the last axis."""
    return (-0.5 * z * z - torch.log(diagonal) - 0.5 * math.log(2 * math.pi)).sum(-1)
