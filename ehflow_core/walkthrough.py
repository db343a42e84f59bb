r"""One point carried through the flow part by part: the leapfrog's half-steps, for teaching.

Sampling runs the flow forward from a base state; the likelihood runs it backwards from a data
point (docs/maths.md, "Leapfrog" and "Generative model and likelihood"):

- **forward** (sampling, base → data): :math:`(q_0, p_0) \sim \pi`, then the steps
  :math:`T_1, \dots, T_n` with step size ``dt``;
- **inverse** (likelihood, data → base): a data point :math:`q`, its momentum drawn from the
  encoder :math:`p \sim h(p \mid q)`, then the same steps in reverse order with ``−dt``; the state
  reached is scored by :math:`\log \pi`, and :math:`\log \pi(T^{-1}(q, p)) - \log h(p \mid q)` is
  one sample of the ELBO.

Each leapfrog step is three parts (:data:`~ehflow_core.integrators.SUBSTEPS`): a half-step of p by
:math:`-\nabla U(q)`, a step of q by :math:`\nabla K(p)`, a second half-step of p. The Hamiltonian
of the step is nearly, not exactly, kept across it (leapfrog keeps a nearby "shadow"
Hamiltonian); what is kept exactly is phase-space volume (:mod:`ehflow_core.liouville`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ._checks import check_choice, check_points
from .evaluation import embed_plane, evaluate_in_batches, make_grid
from .flow import HamiltonianFlow
from .integrators import SUBSTEPS, leapfrog_substeps

DIRECTIONS = ("forward", "inverse")


@dataclass(frozen=True)
class Walkthrough:
    """A point's states after each part of each leapfrog step, and the energies around each step.

    ``q``, ``p``: (3n + 1, d), state 0 the start (``parts[0]`` says where it came from) and state
    3i + j the state after part j of the i-th step applied (``parts``). ``hamiltonians``: (n,) the
    index of the flow's Hamiltonian each applied step uses (reversed for the inverse).
    ``energy_before`` and ``energy_after``: (n,) that Hamiltonian's H at the step's start and end.
    ``energies``: (3n + 1,) each state's H under the Hamiltonian of the step its part belongs to
    (the start's: the first step's). ``log_base``: log π of the base state (the start forward, the
    end inverse); ``log_encoder``: log h(p | q) of the encoder's draw (inverse only, else None).
    """

    direction: str
    dt: float  # signed: negative for the inverse
    q: np.ndarray
    p: np.ndarray
    parts: tuple[str, ...]
    hamiltonians: tuple[int, ...]
    energy_before: np.ndarray
    energy_after: np.ndarray
    energies: np.ndarray
    log_base: float
    log_encoder: float | None

    @property
    def n_states(self) -> int:
        return len(self.parts)

    def step_of(self, index: int) -> int:
        """The applied step (0-based) whose part made state ``index``; -1 for the start."""
        return (index - 1) // 3 if index > 0 else -1


def as_float64(flow: HamiltonianFlow) -> HamiltonianFlow:
    """A float64 copy of ``flow`` (the same weights, in eval mode), for exact teaching numbers."""
    copy = HamiltonianFlow(dataclasses.replace(flow.config, dtype="float64", device="cpu"))
    copy.load_state_dict(flow.state_dict())
    return copy.eval()


def walk(
    flow: HamiltonianFlow, direction: str, q: Tensor | None = None, generator: torch.Generator | None = None
) -> Walkthrough:
    """Carry one point through ``flow`` part by part (see the module).

    Args:
        flow: the flow (its dtype is used; :func:`as_float64` for exact numbers).
        direction: ``"forward"`` (sampling) or ``"inverse"`` (likelihood).
        q: (d,) the starting position: forward, the base state's q (its p drawn from the base; both
            bases here are products over coordinates, so that is π's own conditional); inverse, the
            data point. None: forward draws the whole state from π; inverse needs a point.
        generator: for the draws (π's, the encoder's).
    """
    check_choice("direction", direction, DIRECTIONS)
    if q is None and direction == "inverse":
        raise ValueError("q: the inverse direction starts from a data point; got None")
    with torch.no_grad():
        q0, p0 = flow.sample_base(1, generator)
        if q is not None:
            q0 = check_points("q", q.reshape(1, -1).to(flow.dtype), flow.dim)
        dt, order = flow.config.dt, list(range(flow.config.n_steps))
        hs = flow.hamiltonian_list
        index = [0 if flow.config.shared_hamiltonian else i for i in order]
        log_encoder = None
        if direction == "inverse":
            dt, index = -dt, index[::-1]
            eps = flow.encoder.noise(q0, 1, generator)
            p_drawn, log_h = flow.encoder.reparameterise(q0, eps)
            p0, log_encoder = p_drawn[0], float(log_h[0, 0])
        steps = [(hs[i].grad_K, hs[i].grad_U) for i in index]
        q_path, p_path = leapfrog_substeps(q0, p0, dt, steps)  # (3n + 1, 1, d)
        starts, ends = range(0, 3 * len(steps), 3), range(3, 3 * len(steps) + 1, 3)
        before = [float(hs[i](q_path[s], p_path[s])[0]) for i, s in zip(index, starts, strict=True)]
        after = [float(hs[i](q_path[e], p_path[e])[0]) for i, e in zip(index, ends, strict=True)]
        owner = [index[max((k - 1) // 3, 0)] for k in range(len(q_path))]
        energies = [float(hs[i](q_path[k], p_path[k])[0]) for k, i in enumerate(owner)]
        base_at = 0 if direction == "forward" else -1
        log_base = float(flow.base._log_prob(torch.cat([q_path[base_at], p_path[base_at]], dim=-1))[0])
    return Walkthrough(
        direction=direction,
        dt=dt,
        q=q_path[:, 0].cpu().numpy(),
        p=p_path[:, 0].cpu().numpy(),
        parts=("base" if direction == "forward" else "encoder",) + SUBSTEPS * len(steps),
        hamiltonians=tuple(index),
        energy_before=np.array(before),
        energy_after=np.array(after),
        energies=np.array(energies),
        log_base=log_base,
        log_encoder=log_encoder,
    )


def energy_maps(flow: HamiltonianFlow, extent: float = 4.0, n: int = 60) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every Hamiltonian's U and K on an ``n`` × ``n`` grid over [−extent, extent]² (other coordinates
    0): ``(xs (n,), U (H, n, n), K (H, n, n))``, grids indexed [y, x]."""
    grid = make_grid(-extent, extent, n, dtype=flow.dtype, device=flow.device)
    plane = embed_plane(grid.points, flow.dim)

    def on_grid(energy) -> np.ndarray:
        return evaluate_in_batches(energy, plane).view(grid.shape).cpu().numpy()

    hs = flow.hamiltonian_list
    return (
        grid.xs.cpu().numpy(),
        np.stack([on_grid(h.potential) for h in hs]),
        np.stack([on_grid(h.kinetic) for h in hs]),
    )


def describe(walk: Walkthrough, index: int) -> str:
    """What state ``index`` of ``walk`` is, in a sentence or two of Markdown (the step-through's caption)."""
    if not 0 <= index < walk.n_states:
        raise ValueError(f"index must be in 0..{walk.n_states - 1}, got {index}")
    n, dt = len(walk.hamiltonians), walk.dt
    if index == 0:
        if walk.direction == "forward":
            return f"**Start**: a state (q, p) drawn from the base π, log π(q, p) = {walk.log_base:.3f}."
        return (
            f"**Start**: the data point q, and a momentum p drawn from the encoder h(p | q), "
            f"log h(p | q) = {walk.log_encoder:.3f}. The flow now runs backwards (dt = {dt:g}), to the base."
        )
    step, part = walk.step_of(index), (index - 1) % 3
    h = hamiltonian_name(walk, step)
    if walk.direction == "forward":
        where = f"**Leapfrog step {step + 1} of {n} ({h}), part {part + 1} of 3**"
        kick, drift = f"p ← p − ({dt:g}/2) ∇U(q)", f"q ← q + {dt:g} ∇K(p)"
    else:  # the steps undone in reverse order, with −dt
        where = f"**Undoing leapfrog step {n - step} of {n} ({h}), part {part + 1} of 3**"
        kick, drift = f"p ← p + ({-dt:g}/2) ∇U(q)", f"q ← q − {-dt:g} ∇K(p)"
    if part == 0:
        text = f"{where}: half-step of p, {kick}. The force −∇U(q) changes p; q stays."
    elif part == 1:
        text = f"{where}: step of q, {drift}. q moves along ∇K(p) (for K = |p|²/2, along p); p stays."
    else:
        before, after = walk.energy_before[step], walk.energy_after[step]
        text = (
            f"{where}: second half-step of p, {kick.replace('(q)', '(q′)')}. Over this step {h} went from "
            f"{before:.4f} to {after:.4f} (Δ = {after - before:+.2e}): nearly kept, not exactly, while the "
            f"volume of phase space is kept exactly."
        )
    if index == walk.n_states - 1:
        if walk.direction == "forward":
            text += " **Done**: q is a sample of the model (p is dropped)."
        else:
            assert walk.log_encoder is not None  # the inverse draws p from the encoder
            elbo = walk.log_base - walk.log_encoder
            text += (
                f" **Done**: the base state, log π = {walk.log_base:.3f}; log π − log h = {elbo:.3f} is one "
                f"sample of the ELBO of q (the bound the flow trains)."
            )
    return text


def hamiltonian_name(walk: Walkthrough, step: int) -> str:
    """The Hamiltonian of applied step ``step``: "H" when the flow shares one, else "H₁", "H₂", …"""
    if len(set(walk.hamiltonians)) == 1:
        return "H"
    return "H" + "".join("₀₁₂₃₄₅₆₇₈₉"[int(c)] for c in str(walk.hamiltonians[step] + 1))
