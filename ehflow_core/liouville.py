r"""Phase-space volume kept: a small patch of states (q, p) carried through the flow whole.

Each leapfrog part is a shear (p moved by a function of q alone, or q by a function of p alone),
so the flow is *symplectic* (docs/maths.md, "Symplectic area"). It keeps the symplectic area of every
closed loop of states,

.. math:: \omega(\gamma) = \sum_i A_i(\gamma), \qquad A_i = \text{the oriented area of } \gamma
          \text{ projected on the } (q_i, p_i) \text{ plane},

(Poincaré's integral invariant; in one dimension it is the area itself), and with it the volume
of phase space: :math:`\det \partial T / \partial s = 1` (Liouville; Lemma 1's unit Jacobian).
A map that is not symplectic does not. The contrast here is the same leapfrog steps with
friction, each followed by :math:`p \leftarrow (1 - \gamma)\, p` (a damped, dissipative motion):
every step multiplies the symplectic area by :math:`1 - \gamma` and the volume by
:math:`(1 - \gamma)^d`, whatever the Hamiltonian, so a density carried by it would need the
log-determinant term :math:`d \log(1 - \gamma)` per step that the Hamiltonian flow does without.

The loop is a polygon of ``n`` states; its image is the polygon through the images of its
vertices, whose area differs from the image's true area by :math:`O(n^{-2})` (~1e-8 relative at
the default sizes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ._checks import check_float, check_int, check_points
from .flow import HamiltonianFlow
from .integrators import Step, leapfrog


def circle(q_centre: Tensor, p_centre: Tensor, radius: float, n: int = 720, plane: int = 0) -> tuple[Tensor, Tensor]:
    """A loop of ``n`` states: a circle of ``radius`` around ``(q_centre, p_centre)`` (each (d,))
    in the ``(q_plane, p_plane)`` plane, counter-clockwise; returns ``(q, p)``, each (n, d)."""
    check_float("radius", radius, positive=True)
    check_int("n", n, minimum=3)
    angles = torch.arange(n, dtype=q_centre.dtype) * (2 * math.pi / n)
    q, p = q_centre.expand(n, -1).clone(), p_centre.expand(n, -1).clone()
    q[:, plane] += radius * torch.cos(angles)
    p[:, plane] += radius * torch.sin(angles)
    return q, p


def plane_areas(q: Tensor, p: Tensor) -> Tensor:
    """The oriented area of the polygon ``(q, p)`` (each (n, d), a closed loop) projected on each
    ``(q_i, p_i)`` plane (the shoelace formula): (d,). Positive for a counter-clockwise loop."""
    q_next, p_next = q.roll(-1, dims=0), p.roll(-1, dims=0)
    return 0.5 * (q * p_next - q_next * p).sum(0)


def symplectic_area(q: Tensor, p: Tensor) -> float:
    """ω of the loop ``(q, p)``: the sum of :func:`plane_areas` (kept by every symplectic map)."""
    return float(plane_areas(q, p).sum())


FRICTION = 0.2  # γ of the contrast map: each step keeps 80 % of the momentum


def damped(q: Tensor, p: Tensor, dt: float, steps: list[Step], friction: float = FRICTION) -> tuple[Tensor, Tensor]:
    """The leapfrog ``steps``, each followed by ``p ← (1 − friction) p``: not symplectic (areas
    shrink by ``1 − friction`` a step), the contrast to :func:`~ehflow_core.integrators.leapfrog`."""
    check_float("friction", friction, minimum=0.0, maximum=1.0)
    for step in steps:
        q, p = leapfrog(q, p, dt, [step])
        p = (1.0 - friction) * p
    return q, p


@dataclass(frozen=True)
class Patch:
    """A loop of states before and after the flow and the contrast map: ``(q, p)`` arrays (n, d)
    each; ``areas``: their symplectic areas; ``plane_areas``: each one's (d,) projected areas;
    ``determinants``: each map's Jacobian determinant at the loop's centre (the start's is 1)."""

    loops: dict[str, tuple[np.ndarray, np.ndarray]]
    areas: dict[str, float]
    plane_areas: dict[str, np.ndarray]
    determinants: dict[str, float]


MAPS = ("start", "leapfrog", "damped")  # the patch's states: before, after the flow, after the contrast map


def carry_patch(flow: HamiltonianFlow, q_centre: Tensor, p_centre: Tensor, radius: float = 0.3, n: int = 720) -> Patch:
    """Carry a circle of states (:func:`circle`, in the (q₁, p₁) plane) through ``flow``'s leapfrog
    steps and through the same steps with friction (:func:`damped`); the areas before and after,
    and each map's Jacobian determinant at the centre. Use a float64 flow for exact numbers."""
    q_centre = check_points("q_centre", q_centre.reshape(1, -1).to(flow.dtype), flow.dim)[0]
    p_centre = check_points("p_centre", p_centre.reshape(1, -1).to(flow.dtype), flow.dim)[0]
    steps, dt, d = flow._leapfrog_grads(), flow.config.dt, flow.dim
    maps = {"leapfrog": lambda q, p: leapfrog(q, p, dt, steps), "damped": lambda q, p: damped(q, p, dt, steps)}
    q, p = circle(q_centre, p_centre, radius, n)
    loops = {"start": (q, p)}
    determinants = {"start": 1.0}
    for name, move in maps.items():
        with torch.no_grad():
            loops[name] = move(q, p)

        def as_map(s: Tensor, move=move) -> Tensor:
            q_new, p_new = move(s[None, :d], s[None, d:])
            return torch.cat([q_new, p_new], dim=-1)[0]

        jacobian = torch.autograd.functional.jacobian(as_map, torch.cat([q_centre, p_centre]))
        determinants[name] = float(torch.linalg.det(jacobian))
    return Patch(
        loops={k: (a.cpu().numpy(), b.cpu().numpy()) for k, (a, b) in loops.items()},
        areas={k: symplectic_area(*loop) for k, loop in loops.items()},
        plane_areas={k: plane_areas(*loop).cpu().numpy() for k, loop in loops.items()},
        determinants=determinants,
    )
