r"""Evaluation: functions on grids (for heatmaps), equivariance and invariance measures.

Equivariance of the flow under a group element :math:`R`: :math:`E_s \|T(Rs) - R\,T(s)\|`.
Invariance of the learned marginal: the spread of :math:`\log \hat p(R_\theta q)` over angles θ
at fixed q, with :math:`\log \hat p` the importance-weighted :math:`L_K`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ._checks import check_float, check_int, check_points
from .flow import HamiltonianFlow
from .symmetries import Generator


@dataclass(frozen=True)
class Grid:
    """A regular n × n grid on [lo, hi]²; ``points`` (n², 2) is row-major in y, so a value
    vector reshaped to (n, n) is indexed [y, x] (the layout of a heatmap)."""

    xs: Tensor  # (n,)
    ys: Tensor  # (n,)
    points: Tensor  # (n * n, 2)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.ys.numel(), self.xs.numel())


def make_grid(
    lo: float, hi: float, n: int, *, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
) -> Grid:
    """A regular n × n grid on the square [lo, hi]²."""
    lo = check_float("lo", lo)
    hi = check_float("hi", hi)
    if hi <= lo:
        raise ValueError(f"hi must be greater than lo, got lo={lo}, hi={hi}")
    check_int("n", n, minimum=2)
    xs = torch.linspace(lo, hi, n, dtype=dtype, device=device)
    yy, xx = torch.meshgrid(xs, xs, indexing="ij")
    return Grid(xs, xs.clone(), torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=-1))


def embed_plane(points: Tensor, dim: int, axes: tuple[int, int] = (0, 1)) -> Tensor:
    """Place 2-D points (N, 2) into the plane ``axes`` of R^dim, other coordinates zero: (N, dim)."""
    check_points("points", points, 2)
    if dim < 2 or not all(0 <= a < dim for a in axes) or axes[0] == axes[1]:
        raise ValueError(f"axes must be two different coordinates in 0..{dim - 1}, got {axes}")
    out = points.new_zeros(points.shape[0], dim)
    out[:, axes[0]], out[:, axes[1]] = points[:, 0], points[:, 1]
    return out


@torch.no_grad()
def evaluate_in_batches(fn: Callable[[Tensor], Tensor], points: Tensor, batch_size: int = 4096) -> Tensor:
    """fn applied to ``points`` (N, ...) in batches of ``batch_size`` rows, without gradients: (N,)."""
    check_int("batch_size", batch_size, minimum=1)
    return torch.cat([fn(points[i : i + batch_size]) for i in range(0, points.shape[0], batch_size)])


def equivariance_error(flow: HamiltonianFlow, generator: Generator, n_points: int = 1024, seed: int = 0) -> float:
    r"""Monte-Carlo :math:`E_{s \sim \pi, \theta \sim U(-\pi, \pi)} \|T(R_\theta s) - R_\theta T(s)\|`.

    Zero for a Hamiltonian that commutes with the generator ({g, H} = 0), whatever dt.
    """
    check_int("n_points", n_points, minimum=1)
    if not generator.has_action:
        raise ValueError(f"generator {generator.name!r} has no finite group action to test equivariance with")
    gen = torch.Generator(device=flow.device).manual_seed(seed)
    q, p = flow.sample_base(n_points, generator=gen)
    theta = (2 * torch.rand(n_points, generator=gen, dtype=q.dtype, device=q.device) - 1) * math.pi
    with torch.no_grad():
        lhs = flow.forward_flow(*generator.act(q, p, theta))
        rhs = generator.act(*flow.forward_flow(q, p), theta)
        diff = torch.cat([lhs[0] - rhs[0], lhs[1] - rhs[1]], dim=-1)
    return float(diff.norm(dim=-1).mean())


@dataclass(frozen=True)
class InvarianceReport:
    """Spread (std over angles, averaged over points) of log p̂(R_θ q), in nats.

    ``noise_floor`` is the same spread with θ = 0 every time: the Monte-Carlo noise of the
    L_K estimator alone. A spread near the floor means no detectable non-invariance.
    """

    spread: float
    noise_floor: float
    n_samples: int  # K of the L_K estimator
    n_angles: int
    n_points: int


def invariance_error(
    flow: HamiltonianFlow,
    generator: Generator,
    q: Tensor | None = None,
    *,
    n_points: int = 128,
    n_angles: int = 8,
    n_samples: int = 128,
    seed: int = 0,
) -> InvarianceReport:
    r"""How far the learned marginal :math:`\hat p(q)` is from invariant under ``generator``.

    For each point q (given, or drawn from the model) evaluate :math:`L_K(R_{\theta_a} q)` at
    ``n_angles`` evenly spaced angles (random offset) and report the mean over points of the
    standard deviation over angles, beside the same statistic at θ = 0 (the estimator's noise).
    """
    for name, v in (("n_points", n_points), ("n_angles", n_angles), ("n_samples", n_samples)):
        check_int(name, v, minimum=2 if name == "n_angles" else 1)
    if not generator.has_action:
        raise ValueError(f"generator {generator.name!r} has no finite group action to test invariance with")
    rng = torch.Generator(device=flow.device).manual_seed(seed)  # local: no global RNG side effect
    with torch.no_grad():
        if q is None:
            q = flow.sample(n_points, generator=rng)
        q = check_points("q", q, flow.dim)
        offset = torch.rand((), generator=rng, device=flow.device).item()
        angles = (torch.arange(n_angles, dtype=torch.float64) / n_angles + offset) * 2 * math.pi
        zeros = torch.zeros_like(q)
        rotated = torch.stack(
            [flow.log_likelihood(generator.act(q, zeros, float(a))[0], n_samples, rng) for a in angles]
        )
        repeated = torch.stack([flow.log_likelihood(q, n_samples, rng) for _ in range(n_angles)])
    return InvarianceReport(
        spread=float(rotated.std(0).mean()),
        noise_floor=float(repeated.std(0).mean()),
        n_samples=n_samples,
        n_angles=n_angles,
        n_points=q.shape[0],
    )
