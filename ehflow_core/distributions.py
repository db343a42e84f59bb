r"""Base densities :math:`\pi` on :math:`\mathbb{R}^{n}` with exact ``log_prob`` and ``sample``.

The flow's base is a density over the whole state :math:`s = (q, p)`, so it is built with
``n = 2d``; ``log_prob`` takes points with shape (B, n).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import check_float, check_int, check_points


class BaseDensity:
    """A factorised density on R^n: ``log_prob(x)`` (B, n) -> (B,), ``sample(n_points)`` -> (N, n)."""

    name: str = "base"

    def __init__(self, dim: int) -> None:
        self.dim = check_int("dim", dim, minimum=1)

    def _log_prob_coordinates(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _sample_standard(self, shape: tuple[int, int], generator: torch.Generator | None, **kw) -> Tensor:
        raise NotImplementedError

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log-density of each point: x with shape (B, n) -> (B,)."""
        check_points("x", x, self.dim)
        return self._log_prob(x)

    def _log_prob(self, x: Tensor) -> Tensor:
        """:meth:`log_prob` without argument checks, for internal hot paths."""
        return self._log_prob_coordinates(x).sum(-1)

    def sample(
        self,
        n: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Draw ``n`` independent points, shape (n, dim)."""
        check_int("n", n, minimum=1)
        return self._sample_standard((n, self.dim), generator, dtype=dtype, device=device)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim})"


class StandardNormal(BaseDensity):
    r""":math:`\mathcal{N}(0, I_n)`; invariant under every rotation of its coordinates."""

    name = "normal"

    def _log_prob_coordinates(self, x: Tensor) -> Tensor:
        return -0.5 * x * x - 0.5 * math.log(2 * math.pi)

    def _sample_standard(self, shape, generator, **kw) -> Tensor:
        return torch.randn(shape, generator=generator, **kw)


class SoftUniform(BaseDensity):
    r"""The soft-uniform density of the paper's footnote 6, normalised exactly.

    Per coordinate :math:`\pi(x) \propto f(\beta(x + a))\, f(-\beta(x - a))` with :math:`a = \sigma/2`
    and :math:`f` the logistic sigmoid. Normalised, this is

    .. math:: \pi(x) = \frac{f(\beta(x + a)) - f(\beta(x - a))}{2a}
              = \frac{1 - e^{-2a\beta}}{2a} f(\beta(x + a)) f(-\beta(x - a)),

    the density of :math:`U + L` with :math:`U \sim \mathrm{Uniform}(-a, a)` and :math:`L` logistic
    with scale :math:`1/\beta` — which is how :meth:`sample` draws exactly. Its CDF is
    :math:`F(x) = [\mathrm{softplus}(\beta(x + a)) - \mathrm{softplus}(\beta(x - a))] / (2a\beta)`.
    Not rotation invariant.

    Args:
        dim: number of coordinates ``n``.
        sigma: width σ > 0 of the flat top.
        beta: sharpness β > 0 of its edges.
    """

    name = "soft_uniform"

    def __init__(self, dim: int, sigma: float = 4.0, beta: float = 4.0) -> None:
        super().__init__(dim)
        self.sigma = check_float("sigma", sigma, positive=True)
        self.beta = check_float("beta", beta, positive=True)
        a = 0.5 * self.sigma
        # log of (1 - exp(-2aβ)) / (2a), computed stably for small 2aβ.
        self._log_norm = math.log(-math.expm1(-2 * a * self.beta)) - math.log(2 * a)

    def _log_prob_coordinates(self, x: Tensor) -> Tensor:
        a = 0.5 * self.sigma
        return F.logsigmoid(self.beta * (x + a)) + F.logsigmoid(-self.beta * (x - a)) + self._log_norm

    def cdf(self, x: Tensor) -> Tensor:
        """Per-coordinate CDF F(x), elementwise."""
        a = 0.5 * self.sigma
        return (F.softplus(self.beta * (x + a)) - F.softplus(self.beta * (x - a))) / (2 * a * self.beta)

    def _sample_standard(self, shape, generator, **kw) -> Tensor:
        a = 0.5 * self.sigma
        uniform = (2 * torch.rand(shape, generator=generator, **kw) - 1) * a
        u = torch.rand(shape, generator=generator, **kw).clamp(1e-12, 1 - 1e-7)
        logistic = (torch.log(u) - torch.log1p(-u)) / self.beta
        return uniform + logistic

    def __repr__(self) -> str:
        return f"SoftUniform(dim={self.dim}, sigma={self.sigma}, beta={self.beta})"
