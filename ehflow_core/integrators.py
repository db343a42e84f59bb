r"""The leapfrog integrator, as pure functions of tensors and gradient functions.

One step of size ``dt`` for :math:`H = K(p) + U(q)` (docs/maths.md, "Leapfrog"):

.. math::
    p_{1/2} = p - \tfrac{dt}{2} \nabla U(q), \quad
    q' = q + dt\, \nabla K(p_{1/2}), \quad
    p' = p_{1/2} - \tfrac{dt}{2} \nabla U(q').

Each sub-step is a shear, so the Jacobian determinant is exactly 1 for any ``dt``, and the same
steps applied in reverse order with ``-dt`` are the exact inverse. ``∇U(q')`` of one step is
``∇U(q)`` of the next when both use the same potential: n steps cost n + 1 evaluations of ``∇U``
(``reuse=False``, the plain textbook loop of the reference path, costs 2n).

These functions keep no state and know nothing of modules or optimisers; the gradient functions
carry the parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor

GradFn = Callable[[Tensor], Tensor]
"""A gradient function x (B, d) -> ∇E(x) (B, d)."""

Step = tuple[GradFn, GradFn]
"""One leapfrog step's ``(grad_K, grad_U)``."""


def leapfrog_step(
    q: Tensor, p: Tensor, dt: float, grad_K: GradFn, grad_U: GradFn, grad_U_q: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """One leapfrog step; returns ``(q', p', ∇U(q'))`` so the next step can reuse ``∇U(q')``.

    Args:
        q, p: positions and momenta, each with shape (B, d).
        dt: step size (negative runs the step backwards).
        grad_K, grad_U: gradient functions of the kinetic and potential energies.
        grad_U_q: ``∇U(q)`` if already known, else None.
    """
    dU = grad_U(q) if grad_U_q is None else grad_U_q
    p_half = p - (0.5 * dt) * dU
    q_new = q + dt * grad_K(p_half)
    dU_new = grad_U(q_new)
    return q_new, p_half - (0.5 * dt) * dU_new, dU_new


def _states(
    q: Tensor, p: Tensor, dt: float, steps: Sequence[Step], reuse: bool, grad_U_q: Tensor | None = None
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield the state after each step; with ``reuse``, ``∇U`` carries over between consecutive
    steps with the same potential. ``grad_U_q``: the first step's ``∇U(q)``, if already known."""
    dU: Tensor | None = None
    previous_grad_U: GradFn | None = None
    for i, (grad_K, grad_U) in enumerate(steps):
        # Bound methods of one module compare equal (==), not identical (is).
        known = grad_U_q if i == 0 else dU if reuse and grad_U == previous_grad_U else None
        q, p, dU = leapfrog_step(q, p, dt, grad_K, grad_U, known)
        previous_grad_U = grad_U
        yield q, p


def leapfrog(
    q: Tensor, p: Tensor, dt: float, steps: Sequence[Step], reuse: bool = True, grad_U_q: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Apply the leapfrog steps ``steps`` in order: T_n ∘ … ∘ T_1 (q, p), each (B, d).

    The exact inverse is ``leapfrog(q', p', -dt, steps[::-1])``. ``reuse=False`` recomputes
    ``∇U`` at the start of every step (same result, more work: the reference path).
    ``grad_U_q``: the first step's ``∇U(q)`` (B, d) if the caller already has it (e.g. computed
    once for a point that many momenta share); None computes it.
    """
    for q_t, p_t in _states(q, p, dt, steps, reuse, grad_U_q):
        q, p = q_t, p_t
    return q, p


def leapfrog_trajectory(
    q: Tensor, p: Tensor, dt: float, steps: Sequence[Step], reuse: bool = True
) -> tuple[Tensor, Tensor]:
    """Every intermediate state of :func:`leapfrog`: ``(q_path, p_path)``, each (T + 1, B, d).

    Index 0 is the starting state and index T = ``len(steps)`` the final one.
    """
    qs, ps = [q], [p]
    for q_t, p_t in _states(q, p, dt, steps, reuse):
        qs.append(q_t)
        ps.append(p_t)
    return torch.stack(qs), torch.stack(ps)


SUBSTEPS = ("kick", "drift", "kick")
"""The parts of one leapfrog step, in order: half-step of p by −∇U, step of q by ∇K, half-step of p."""


def leapfrog_substeps(q: Tensor, p: Tensor, dt: float, steps: Sequence[Step]) -> tuple[Tensor, Tensor]:
    """Every part of :func:`leapfrog`, one state after each: ``(q_path, p_path)``, each (3T + 1, B, d).

    Index 0 is the starting state; index 3i + 1, 3i + 2, 3i + 3 are the states after step i's
    first half-step of p (``p − dt/2 ∇U(q)``), its step of q (``q + dt ∇K(p)``) and its second
    half-step of p (:data:`SUBSTEPS`), so every third state is :func:`leapfrog_trajectory`'s.
    For teaching (the dashboard's step-through) and for checking the integrator part by part.
    """
    qs, ps = [q], [p]
    for grad_K, grad_U in steps:
        p = p - (0.5 * dt) * grad_U(q)
        qs.append(q)
        ps.append(p)
        q = q + dt * grad_K(p)
        qs.append(q)
        ps.append(p)
        p = p - (0.5 * dt) * grad_U(q)
        qs.append(q)
        ps.append(p)
    return torch.stack(qs), torch.stack(ps)
