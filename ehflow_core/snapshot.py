"""Plain numpy data behind every picture: densities, energies, trajectories, attractors.

A :class:`Snapshot` is gathered from a flow and a target in one call and turned into figures by
:mod:`ehflow_core.figures`; the command line and the dashboard share both steps. For d > 2 the
pictures show the plane of the first two coordinates (the others at 0 for energies).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ._checks import check_float, check_int
from .evaluation import embed_plane, evaluate_in_batches, make_grid
from .flow import HamiltonianFlow
from .targets import Target


@dataclass(frozen=True)
class SnapshotConfig:
    """Sizes of the pictures (the dashboard's defaults; the command line may ask for more)."""

    extent: float = 4.0  # the grid spans [-extent, extent]² in q (and in p for K)
    grid: int = 60  # grid points per side
    n_samples: int = 1000  # model and target samples for the KDEs
    bandwidth: float = 0.2  # KDE bandwidth
    n_paths: int = 150  # base samples drawn as trajectories
    integrated_steps: int = 30  # leapfrog steps of the integrated flow
    log_density: bool = False  # also evaluate the model's L_K on the grid (slower)
    log_density_samples: int = 16  # K for that grid

    def __post_init__(self) -> None:
        check_float("extent", self.extent, positive=True)
        check_int("grid", self.grid, minimum=2)
        for name in ("n_samples", "n_paths", "integrated_steps", "log_density_samples"):
            check_int(name, getattr(self, name), minimum=1)
        check_float("bandwidth", self.bandwidth, positive=True)


@dataclass(frozen=True)
class Snapshot:
    """Arrays for the panels; grids are (n, n) indexed [y, x] over ``xs``."""

    xs: np.ndarray  # (n,)
    target_kde: np.ndarray  # (n, n) density of target samples
    model_kde: np.ndarray  # (n, n) density of model samples
    kinetic: np.ndarray  # (n, n) K(p) over the p-plane
    potential: np.ndarray  # (n, n) U(q) over the q-plane
    single_step: np.ndarray  # (2, P, 2) q before and after one leapfrog step
    integrated: np.ndarray  # (T + 1, P, 2) q along the integrated flow (its trained steps: see ``integrable``)
    model_samples: np.ndarray  # (N, 2)
    target_samples: np.ndarray  # (N, 2)
    log_density: np.ndarray | None  # (n, n) L_K of the model, if asked for
    integrable: bool = True  # one H for all steps, integrated on; False: ``integrated`` is the trained steps
    # Every run of a sweep, in order, the snapshot's own flow among them: (label, model KDE, U) (n, n) each.
    members: tuple[tuple[str, np.ndarray, np.ndarray], ...] = ()
    peer: tuple[str, np.ndarray] | None = None  # a peer flow trained beside it: (label, its KDE (n, n))


def kde_on_grid(samples: np.ndarray, xs: np.ndarray, bandwidth: float) -> np.ndarray:
    r"""Gaussian KDE of 2-D ``samples`` (N, 2) on the grid xs × xs: (n, n), indexed [y, x].

    :math:`\hat p(x, y) = \frac{1}{N}\sum_i \mathcal{N}(x; s_{i1}, h^2)\,\mathcal{N}(y; s_{i2}, h^2)`
    — the same estimate as scikit-learn's ``KernelDensity(kernel="gaussian", bandwidth=h)`` (a
    test checks it). The isotropic kernel factorises over the two axes, so the grid of sums is
    one (n, N) @ (N, n) product of 1-D kernels: exact, and ~100× cheaper than the n² × N kernel
    matrix at the dashboard's sizes.
    """
    samples = np.asarray(samples, dtype=np.float64)
    xs = np.asarray(xs, dtype=np.float64)

    def kernel(axis: int) -> np.ndarray:  # (n, N): exp(−(x_j − s_i)² / 2h²) along one axis
        # Clamping the exponent at −80 keeps exp() out of the denormal range (several times
        # slower on x86) and changes each kernel by less than e^-80.
        return np.exp(np.maximum(-0.5 * ((xs[:, None] - samples[None, :, axis]) / bandwidth) ** 2, -80.0))

    return kernel(1) @ kernel(0).T / (len(samples) * 2 * math.pi * bandwidth**2)


def rotate_points(points: np.ndarray, theta: float) -> np.ndarray:
    """2-D ``points`` (N, 2) turned counter-clockwise by ``theta`` radians about the origin."""
    c, s = math.cos(theta), math.sin(theta)
    return np.asarray(points, dtype=np.float64) @ np.array([[c, s], [-s, c]])


@dataclass(frozen=True)
class Turned:
    """A snapshot's densities and the same densities turned by ``theta`` (KDEs of the turned
    samples: with an isotropic kernel that is the KDE itself turned, p̂(R₋θ x)), on the snapshot's
    grid, with the L1 distance ∫|p̂_θ − p̂| dx of each (0 for a density invariant under the turn; 2
    for two that do not overlap). The KDE's own sampling noise puts a floor under the model's."""

    theta: float
    model: np.ndarray  # (n, n) the model's KDE turned
    target: np.ndarray  # (n, n) the target's KDE turned
    model_l1: float
    target_l1: float


def turn(snapshot: Snapshot, theta: float, bandwidth: float = SnapshotConfig.bandwidth) -> Turned:
    """The model's and the target's densities of ``snapshot`` turned by ``theta`` (see :class:`Turned`)."""
    check_float("theta", theta)
    xs = snapshot.xs
    cell = float(xs[1] - xs[0]) ** 2

    def turned(samples: np.ndarray, kde: np.ndarray) -> tuple[np.ndarray, float]:
        rotated = kde_on_grid(rotate_points(samples, theta), xs, bandwidth)
        return rotated, float(np.abs(rotated - kde).sum() * cell)

    model, model_l1 = turned(snapshot.model_samples, snapshot.model_kde)
    target, target_l1 = turned(snapshot.target_samples, snapshot.target_kde)
    return Turned(theta, model, target, model_l1, target_l1)


@torch.no_grad()
def take_snapshot(
    flow: HamiltonianFlow,
    target: Target,
    config: SnapshotConfig = SnapshotConfig(),
    seed: int = 0,
    previous: Snapshot | None = None,
    members: Mapping[str, HamiltonianFlow] | None = None,
) -> Snapshot:
    """Gather every panel's data from ``flow`` and ``target`` (deterministic for a given seed).

    ``previous``: a snapshot of the same target and sizes whose target samples and KDE are reused
    (they do not change while the model trains). ``members``: the flows of a sweep by label
    (``flow`` among them), whose learned densities and potentials are drawn side by side.
    """
    rng = torch.Generator(device=flow.device).manual_seed(seed)
    grid = make_grid(-config.extent, config.extent, config.grid, dtype=flow.dtype, device=flow.device)
    plane = embed_plane(grid.points, flow.dim)
    h = flow.hamiltonian_list[0]
    xs = grid.xs.cpu().numpy()
    model = flow.sample(config.n_samples, generator=rng)[:, :2].cpu().numpy()
    if previous is None:
        cpu_rng = torch.Generator().manual_seed(seed + 1)
        truth = target.sample(config.n_samples, cpu_rng, dtype=torch.float64)[:, :2].numpy()
        target_kde = kde_on_grid(truth, xs, config.bandwidth)
    else:
        truth, target_kde = previous.target_samples, previous.target_kde
    q0, p0 = flow.sample_base(config.n_paths, generator=rng)
    q_path, _ = flow.trajectory(q0, p0, n_steps=config.integrated_steps if flow.config.shared_hamiltonian else None)

    def on_grid(function: Callable[[Tensor], Tensor], batch: int = 4096) -> np.ndarray:
        return evaluate_in_batches(function, plane, batch).view(grid.shape).cpu().numpy()

    log_density = None
    if config.log_density:
        log_density = on_grid(lambda x: flow.log_likelihood(x, config.log_density_samples, rng), 1024)
    model_kde, potential = kde_on_grid(model, xs, config.bandwidth), on_grid(h.potential)
    drawn = []
    for label, member in (members or {}).items():  # a sweep's other flows: their density and U
        if member is not flow:
            samples = member.sample(config.n_samples, generator=rng)[:, :2].cpu().numpy()
            drawn.append(
                (label, kde_on_grid(samples, xs, config.bandwidth), on_grid(member.hamiltonian_list[0].potential))
            )
        else:
            drawn.append((label, model_kde, potential))
    return Snapshot(
        xs=xs,
        target_kde=target_kde,
        model_kde=model_kde,
        kinetic=on_grid(h.kinetic),
        potential=potential,
        single_step=q_path[:2, :, :2].cpu().numpy(),
        integrated=q_path[:, :, :2].cpu().numpy(),
        model_samples=model,
        target_samples=truth,
        log_density=log_density,
        integrable=flow.config.shared_hamiltonian,
        members=tuple(drawn),
    )


def potential_minima(potential: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Strict local minima of U on the grid (each lower than its 8 neighbours): (M, 2) points."""
    u = potential
    inner = u[1:-1, 1:-1]
    is_min = np.ones_like(inner, dtype=bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                is_min &= inner < u[1 + dy : u.shape[0] - 1 + dy, 1 + dx : u.shape[1] - 1 + dx]
    iy, ix = np.nonzero(is_min)
    return np.stack([xs[ix + 1], xs[iy + 1]], axis=1)


def kinetic_is_dome(kinetic: np.ndarray) -> bool:
    """Whether K on its grid (n, n) peaks in the middle (p = 0) rather than rising away from it:
    the time-reversed solution, where the flow's attractors are the maxima of U."""
    n = len(kinetic)
    centre = kinetic[n // 2 - 1 : n // 2 + 1, n // 2 - 1 : n // 2 + 1].mean()
    return bool(centre > np.concatenate([kinetic[0], kinetic[-1]]).mean())


def attractor_report(snapshot: Snapshot, modes: np.ndarray, radius: float = 0.5) -> dict[str, float | int | str]:
    """How well U's wells and the integrated flow match the target's modes (M, 2).

    Returns the number of modes with a well of U (a local minimum; a maximum when the learned
    K is concave, see below) within ``radius``, the mean distance from each mode to its nearest
    well, and the share of integrated-flow positions (all
    times after the first step) within ``radius`` of some mode, against the same share for the
    base samples (time 0), which shows how much the flow concentrates mass at the modes.
    """
    # (K, U) and (−K, −U) give the same trajectories run backwards in time, and training may land
    # on either: when the learned K is concave (largest at p = 0) the wells are the maxima of U.
    sign = -1.0 if kinetic_is_dome(snapshot.kinetic) else 1.0
    minima = potential_minima(sign * snapshot.potential, snapshot.xs)
    if len(minima):
        dist = np.linalg.norm(modes[:, None, :] - minima[None, :, :], axis=-1).min(axis=1)
    else:
        dist = np.full(len(modes), np.inf)

    def share_near(points: np.ndarray) -> float:
        d = np.linalg.norm(points.reshape(-1, 1, 2) - modes[None], axis=-1).min(axis=1)
        return float((d < radius).mean())

    return {
        "wells_are": "minima of U" if sign > 0 else "maxima of U (the learned K is concave)",
        "n_modes": int(len(modes)),
        "n_minima": int(len(minima)),
        "modes_with_minimum": int((dist < radius).sum()),
        "mean_mode_to_minimum": float(dist.mean()),
        "share_near_modes_base": share_near(snapshot.integrated[0]),
        "share_near_modes_flow": share_near(snapshot.integrated[1:]),
    }
