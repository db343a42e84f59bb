r"""Symmetry generators, Poisson brackets, and the symmetry constraint (docs/maths.md, "Symmetries").

A generator is a scalar function :math:`g(q, p)`; it acts by :math:`s \to s + \epsilon \{s, g\}`.
The Poisson bracket is

.. math:: \{f, g\} = \sum_i \frac{\partial f}{\partial q_i}\frac{\partial g}{\partial p_i}
          - \frac{\partial f}{\partial p_i}\frac{\partial g}{\partial q_i},

so that :math:`\dot s = \{s, H\}`. The flow of :math:`H` is equivariant under :math:`g` when
:math:`\{g, H\} = 0`; training penalises :math:`C_k = E_{s \sim \pi}[\{g_k, H\}^2]`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor

from ._checks import check_int, check_state
from .distributions import BaseDensity
from .hamiltonian import Hamiltonian

ScalarFn = Callable[[Tensor, Tensor], Tensor]
"""A scalar function of the state, (q, p) each (B, d) -> (B,), row by row."""


class Generator:
    """A named symmetry generator g(q, p) on a d-dimensional configuration space.

    Call it as ``g(q, p) -> (B,)``. Built-in generators know their gradients in closed form and
    their finite group action (:meth:`act`); a user function gets autograd gradients.
    """

    def __init__(self, fn: ScalarFn, name: str, dim: int) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be callable as fn(q, p) -> (B,), got {type(fn).__name__}")
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        self.fn = fn
        self.name = name
        self.dim = check_int("dim", dim, minimum=1)

    def __call__(self, q: Tensor, p: Tensor) -> Tensor:
        return self.fn(q, p)

    def grad(self, q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        """(∂g/∂q, ∂g/∂p), each (B, d), by autograd (built-ins override this in closed form)."""
        with torch.enable_grad():
            q_ = q.detach().requires_grad_(True)
            p_ = p.detach().requires_grad_(True)
            dq, dp = torch.autograd.grad(self.fn(q_, p_).sum(), (q_, p_), allow_unused=True)
        return (torch.zeros_like(q) if dq is None else dq), (torch.zeros_like(p) if dp is None else dp)

    has_action: bool = False  # whether act() knows the finite group element exp(θ g)

    def act(self, q: Tensor, p: Tensor, theta: Tensor | float) -> tuple[Tensor, Tensor]:
        """The finite transformation exp(θ {·, g}) of the state; ``theta`` a float or shape (B,)."""
        raise NotImplementedError(
            f"generator {self.name!r} is a user function: its finite group action is not known; "
            "use a rotation or translation generator for equivariance checks"
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, dim={self.dim})"


class RotationGenerator(Generator):
    r"""Rotation in the plane (i, j): :math:`L_{ij} = q_i p_j - q_j p_i`.

    It moves :math:`q_i` by :math:`-\epsilon q_j` and :math:`q_j` by :math:`+\epsilon q_i`, and
    :math:`p` the same way; the finite element is the rotation by θ in that plane.
    """

    has_action = True

    def __init__(self, i: int, j: int, dim: int) -> None:
        check_int("dim", dim, minimum=2)
        for name, v in (("i", i), ("j", j)):
            check_int(name, v, minimum=0)
            if v >= dim:
                raise ValueError(f"{name} must index a coordinate in 0..{dim - 1} (dim={dim}), got {v}")
        if i == j:
            raise ValueError(f"a rotation plane needs two different axes, got i = j = {i}")
        self.i, self.j = i, j
        name = f"L_{i + 1}{j + 1}" if max(i, j) < 9 else f"L_{i + 1}_{j + 1}"  # L_12, or L_1_12 past 9 axes
        super().__init__(self._value, name, dim)

    def _value(self, q: Tensor, p: Tensor) -> Tensor:
        return q[:, self.i] * p[:, self.j] - q[:, self.j] * p[:, self.i]

    def grad(self, q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        dq, dp = _rotation_gradients([self], q, p)
        return dq[0], dp[0]

    def rotate(self, x: Tensor, theta: Tensor | float) -> Tensor:
        """Rotate the (i, j) plane of x (B, d) by θ: x_i' = cos θ x_i − sin θ x_j, x_j' = sin θ x_i + cos θ x_j."""
        theta = torch.as_tensor(theta, dtype=x.dtype, device=x.device)
        c, s = torch.cos(theta), torch.sin(theta)
        out = x.clone()
        out[:, self.i] = c * x[:, self.i] - s * x[:, self.j]
        out[:, self.j] = s * x[:, self.i] + c * x[:, self.j]
        return out

    def act(self, q: Tensor, p: Tensor, theta: Tensor | float) -> tuple[Tensor, Tensor]:
        return self.rotate(q, theta), self.rotate(p, theta)


class TranslationGenerator(Generator):
    """Translation of q_i: g = p_i (moves q_i by ε, leaves p unchanged)."""

    has_action = True

    def __init__(self, i: int, dim: int) -> None:
        check_int("dim", dim, minimum=1)
        check_int("i", i, minimum=0)
        if i >= dim:
            raise ValueError(f"i must index a coordinate in 0..{dim - 1} (dim={dim}), got {i}")
        self.i = i
        super().__init__(lambda q, p: p[:, i], f"P_{i + 1}", dim)

    def grad(self, q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        dp = torch.zeros_like(p)
        dp[:, self.i] = 1.0
        return torch.zeros_like(q), dp

    def act(self, q: Tensor, p: Tensor, theta: Tensor | float) -> tuple[Tensor, Tensor]:
        q = q.clone()
        q[:, self.i] = q[:, self.i] + torch.as_tensor(theta, dtype=q.dtype, device=q.device)
        return q, p


@functools.lru_cache(maxsize=64)
def _rotation_matrices(
    planes: tuple[tuple[int, int], ...], dim: int, dtype: torch.dtype, device: torch.device
) -> Tensor:
    r""":math:`M_k = e_j e_i^\top - e_i e_j^\top` for each plane (i, j): (G, d, d), built once per set."""
    m = torch.zeros(len(planes), dim, dim, dtype=dtype)
    for k, (i, j) in enumerate(planes):
        m[k, j, i], m[k, i, j] = 1.0, -1.0
    return m.to(device)


def _rotation_gradients(rotations: Sequence[RotationGenerator], q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
    r"""(∂L_ij/∂q, ∂L_ij/∂p) of G rotations at once, each (G, B, d): the rows of :meth:`RotationGenerator.grad`.

    :math:`\partial_q L_{ij} = p_j e_i - p_i e_j = p M` and :math:`\partial_p L_{ij} = q_i e_j - q_j e_i = -q M`
    with :math:`M = e_j e_i^\top - e_i e_j^\top` (products, not in-place writes: ``vmap`` batches them).
    """
    m = _rotation_matrices(tuple((r.i, r.j) for r in rotations), q.shape[-1], q.dtype, q.device)
    return p @ m, -(q @ m)


def generator_gradients(generators: Sequence[Generator], q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
    """(∂g_k/∂q, ∂g_k/∂p) of every generator at the states (q, p), each (G, B, d). They do not depend
    on H, so one call serves every Hamiltonian's brackets (:func:`brackets_with_gradients`); a set of
    rotations (all of so(d), say) is two small products whatever G."""
    if all(type(g) is RotationGenerator for g in generators):
        return _rotation_gradients(cast(Sequence[RotationGenerator], generators), q, p)
    grads = [g.grad(q, p) for g in generators]
    return torch.stack([dq for dq, _ in grads]), torch.stack([dp for _, dp in grads])


def brackets_with_gradients(gradients: tuple[Tensor, Tensor], dH_dq: Tensor, dH_dp: Tensor) -> Tensor:
    """{g_k, H} = ∂g_k/∂q · ∂H/∂p − ∂g_k/∂p · ∂H/∂q for G generators from their
    :func:`generator_gradients` (G, B, d) and H's gradients (B, d): shape (G, B)."""
    dg_dq, dg_dp = gradients
    return (dg_dq * dH_dp).sum(-1) - (dg_dp * dH_dq).sum(-1)


def rotation_generator(i: int, j: int, dim: int) -> RotationGenerator:
    """The generator L_ij = q_i p_j − q_j p_i of rotations in the (i, j) plane of R^dim (0-based)."""
    return RotationGenerator(i, j, dim)


def so_generators(dim: int) -> list[RotationGenerator]:
    """The basis {L_ij : i < j} of so(dim): dim (dim − 1) / 2 generators."""
    check_int("dim", dim, minimum=2)
    return [RotationGenerator(i, j, dim) for i in range(dim) for j in range(i + 1, dim)]


def translation_generator(i: int, dim: int) -> TranslationGenerator:
    """The generator p_i of translations of q_i."""
    return TranslationGenerator(i, dim)


def function_generator(fn: ScalarFn, name: str, dim: int) -> Generator:
    """Wrap any scalar function fn(q, p) -> (B,) as a generator (gradients by autograd)."""
    return Generator(fn, name, dim)


def _as_function(f: object, name: str) -> ScalarFn:
    if not callable(f):
        raise TypeError(f"{name} must be callable as {name}(q, p) -> (B,), got {type(f).__name__}")
    return f  # type: ignore[return-value]


def poisson_bracket(f: ScalarFn, g: ScalarFn, q: Tensor, p: Tensor) -> Tensor:
    """{f, g}(q, p) = Σ_i ∂f/∂q_i ∂g/∂p_i − ∂f/∂p_i ∂g/∂q_i for each state, by autograd: (B,).

    ``f`` and ``g`` are functions (q, p) -> (B,) acting row by row (generators, a Hamiltonian, or
    plain functions). The result keeps its graph, so brackets nest ({f, {g, h}}) and are
    differentiable in any parameters of f and g.
    """
    f, g = _as_function(f, "f"), _as_function(g, "g")
    if not isinstance(q, Tensor) or q.ndim != 2:
        raise ValueError(f"q must be a tensor of shape (B, d), got {getattr(q, 'shape', type(q).__name__)}")
    q, p = check_state(q, p, q.shape[1])
    with torch.enable_grad():
        if not q.requires_grad:
            q = q.detach().requires_grad_(True)
        if not p.requires_grad:
            p = p.detach().requires_grad_(True)
        grads = []
        for name, fn in (("f", f), ("g", g)):
            value = fn(q, p)
            if not isinstance(value, Tensor) or value.shape != q.shape[:1]:
                shape = getattr(value, "shape", type(value).__name__)
                raise ValueError(f"{name}(q, p) must return shape ({q.shape[0]},), got {shape}")
            dq, dp = torch.autograd.grad(value.sum(), (q, p), create_graph=True, allow_unused=True)
            grads.append((torch.zeros_like(q) if dq is None else dq, torch.zeros_like(p) if dp is None else dp))
    (fq, fp), (gq, gp) = grads
    return (fq * gp - fp * gq).sum(-1)


def bracket_with_hamiltonian(generator: Generator, hamiltonian: Hamiltonian, q: Tensor, p: Tensor) -> Tensor:
    r"""{g, H} = ∂g/∂q · ∇K(p) − ∂g/∂p · ∇U(q), shape (B,), differentiable in H's parameters.

    Uses the closed-form energy gradients of the softplus MLPs; equal to
    ``poisson_bracket(g, H, q, p)``, which the tests check.
    """
    return brackets_with_gradients(
        generator_gradients([generator], q, p), hamiltonian.grad_U(q), hamiltonian.grad_K(p)
    )[0]


def constraint_values(
    hamiltonians: Sequence[Hamiltonian],
    generators: Sequence[Generator],
    q: Tensor,
    p: Tensor,
    reference: bool = False,
) -> Tensor:
    r"""The constraints :math:`C_k = E_s[\{g_k, H\}^2]` over the states (q, p), each (B, d): shape (G,).

    Pass base samples :math:`s \sim \pi` for the paper's constraint. With several Hamiltonians
    (one per step) :math:`C_k` is the mean over them. Differentiable in the Hamiltonians' θ.
    Each Hamiltonian's gradients ∇U(q) and ∇K(p) are computed once, in closed form, for all G
    generators, and the generators' gradients once for every Hamiltonian. ``reference=True`` is
    the definition instead: each bracket by plain autograd
    (:func:`poisson_bracket`), G gradients per Hamiltonian; the tests hold the two equal.
    """
    if not generators:
        return q.new_zeros(0)
    gradients = None if reference else generator_gradients(generators, q, p)  # once for every H
    per_h = []  # (G,) for each Hamiltonian
    for h in hamiltonians:
        if gradients is None:
            brackets = torch.stack([poisson_bracket(g, h, q, p) for g in generators])
        else:
            brackets = brackets_with_gradients(gradients, h.grad_U(q), h.grad_K(p))  # ∇U, ∇K once
        per_h.append(brackets.square().mean(-1))  # (G, B) -> (G,)
    return torch.stack(per_h).mean(0)


def lemma1_check(
    base: BaseDensity, generators: Sequence[Generator], n_points: int = 4096, seed: int = 0
) -> dict[str, float]:
    r"""Lemma 1's premise for the base: :math:`E_\pi[\{g, \log\pi\}^2]` per generator, by name.

    Zero (to rounding) when π is invariant under g — e.g. :math:`\mathcal{N}(0, I)` and rotations.
    A translation, or the soft-uniform base with rotations, gives a clearly positive value: the
    learned density is then *not* guaranteed to be invariant, whatever κ.
    """
    check_int("n_points", n_points, minimum=1)
    out = {}
    gen = torch.Generator().manual_seed(seed)
    s = base.sample(n_points, dtype=torch.float64, generator=gen)
    for g in generators:
        d = g.dim
        if base.dim != 2 * d:
            raise ValueError(f"base has dimension {base.dim}, expected 2 × generator dim = {2 * d}")
        q, p = s[:, :d], s[:, d:]
        value = poisson_bracket(g, lambda q, p: base._log_prob(torch.cat([q, p], -1)), q, p)
        out[g.name] = float(value.detach().square().mean())
    return out


@dataclass(frozen=True)
class Closure:
    """Structure constants c of a set of generators: {g_a, g_b} ≈ Σ_c c[a, b, c] g_c."""

    names: tuple[str, ...]
    constants: Tensor  # (G, G, G)
    residual: float  # largest relative residual of the least-squares fits
    closed: bool  # residual below tolerance: the span is a Lie algebra


def structure_constants(
    generators: Sequence[Generator], n_points: int = 256, seed: int = 0, tol: float = 1e-8
) -> Closure:
    """Fit {g_a, g_b} onto span{g_c} at random states (float64) to find the structure constants.

    A residual near zero means the brackets close (a Lie algebra); otherwise the set needs more
    generators. so(3): {L_12, L_23} = −L_13.
    """
    if not generators:
        raise ValueError("generators must hold at least one generator, got an empty sequence")
    dim = generators[0].dim
    if any(g.dim != dim for g in generators):
        raise ValueError(f"generators must share one dim, got {[g.dim for g in generators]}")
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(n_points, dim, generator=gen, dtype=torch.float64)
    p = torch.randn(n_points, dim, generator=gen, dtype=torch.float64)
    basis = torch.stack([g(q, p) for g in generators], dim=1)  # (N, G)
    G = len(generators)
    constants = torch.zeros(G, G, G, dtype=torch.float64)
    residual = 0.0
    for a in range(G):
        for b in range(G):
            target = poisson_bracket(generators[a], generators[b], q, p).detach()  # (N,)
            coef = torch.linalg.lstsq(basis, target.unsqueeze(-1)).solution.squeeze(-1)
            constants[a, b] = coef
            norm = float(target.norm())
            if norm > 0:
                residual = max(residual, float((basis @ coef - target).norm()) / norm)
    return Closure(tuple(g.name for g in generators), constants, residual, residual < tol)
