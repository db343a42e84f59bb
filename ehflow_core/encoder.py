r"""The variational encoder :math:`h(p \mid q) = \mathcal{N}(p; \mu(q), \mathrm{diag}\,\sigma(q)^2)`."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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

    def reparameterise(self, q: Tensor, eps: Tensor, path_scale: LateGradScale | None = None) -> tuple[Tensor, Tensor]:
        """``p = μ(q) + σ(q) ε`` and ``log h(p | q)`` for noise ε (S, B, d): shapes (S, B, d), (S, B).

        ``path_scale``, for the doubly-reparameterised gradient (docs/maths.md): the same values,
        but ``log h`` sees the encoder's parameters only through ``p`` (its score term is dropped),
        and the gradient reaching the encoder through each ``p`` is scaled by the weights the
        caller sets on ``path_scale`` after the forward pass, (S, B, 1).
        """
        mean, scale = self(q)
        p = mean + scale * eps
        if path_scale is None:
            log_h = (-0.5 * eps * eps - torch.log(scale) - 0.5 * math.log(2 * math.pi)).sum(-1)
            return p, log_h
        p = path_scale(p)  # same values; the path gradient scaled later
        mean, scale = mean.detach(), scale.detach()
        z = (p - mean) / scale  # equals ε, but differentiable in p
        log_h = (-0.5 * z * z - torch.log(scale) - 0.5 * math.log(2 * math.pi)).sum(-1)
        return p, log_h
