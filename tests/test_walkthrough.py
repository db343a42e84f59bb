"""The flow taken apart for teaching: leapfrog part by part, a patch's kept area, a density turned."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import encoder_factor, make_flow, randn

from ehflow_core import leapfrog_trajectory
from ehflow_core.integrators import leapfrog_substeps
from ehflow_core.liouville import FRICTION, carry_patch, circle, damped, plane_areas, symplectic_area
from ehflow_core.snapshot import Snapshot, kde_on_grid, rotate_points, turn
from ehflow_core.walkthrough import as_float64, walk


@pytest.mark.parametrize("shared", [True, False])
def test_every_third_substep_is_a_leapfrog_state_and_each_part_moves_one_of_q_or_p(shared):
    flow = make_flow(dt=0.4, n_steps=3, shared_hamiltonian=shared)
    q, p = randn(16, 2, seed=1), randn(16, 2, seed=2)
    steps = flow._leapfrog_grads()
    with torch.no_grad():
        q_parts, p_parts = leapfrog_substeps(q, p, 0.4, steps)
        q_path, p_path = leapfrog_trajectory(q, p, 0.4, steps)
    assert q_parts.shape == (10, 16, 2)
    assert torch.allclose(q_parts[::3], q_path, atol=1e-12) and torch.allclose(p_parts[::3], p_path, atol=1e-12)
    for i in range(1, 10):  # a kick moves p alone, a drift q alone
        moved_q = (q_parts[i] - q_parts[i - 1]).abs().max() > 1e-6
        moved_p = (p_parts[i] - p_parts[i - 1]).abs().max() > 1e-6
        assert (moved_q, moved_p) == ((True, False) if i % 3 == 2 else (False, True)), i
    kick = p_parts[1] - p_parts[0]  # the first half-step of p is −dt/2 ∇U(q)
    assert torch.allclose(kick, -0.2 * steps[0][1](q), atol=1e-12)


@pytest.mark.parametrize("shared", [True, False])
def test_the_inverse_walk_ends_where_the_flow_inverse_does_and_scores_one_elbo_sample(shared):
    flow = make_flow(dt=0.5, n_steps=2, shared_hamiltonian=shared)
    q = torch.tensor([1.0, -0.5], dtype=torch.float64)
    back = walk(flow, "inverse", q, torch.Generator().manual_seed(3))
    assert back.dt == -0.5 and back.parts == ("encoder", "kick", "drift", "kick", "kick", "drift", "kick")
    assert np.allclose(back.q[0], q.numpy())
    with torch.no_grad():
        q0, p0 = flow.inverse_flow(q[None], torch.as_tensor(back.p[0])[None])
        log_pi = flow.base.log_prob(torch.cat([q0, p0], -1))
    assert np.allclose(back.q[-1], q0[0].numpy(), atol=1e-12) and np.allclose(back.p[-1], p0[0].numpy(), atol=1e-12)
    assert back.log_base == pytest.approx(float(log_pi[0]), abs=1e-12)
    # the encoder's draw is scored: log π(T⁻¹(q, p)) − log h(p | q) is the ELBO's sample
    with torch.no_grad():
        mean, factor = encoder_factor(flow, q[None])
    expected = torch.distributions.MultivariateNormal(mean, scale_tril=factor).log_prob(torch.as_tensor(back.p[0]))
    assert back.log_encoder == pytest.approx(float(expected), abs=1e-10)
    assert back.hamiltonians == ((0, 0) if shared else (1, 0))


def test_the_forward_walk_keeps_the_picked_q_and_reports_each_steps_energy():
    flow = make_flow(dt=0.05, n_steps=2, shared_hamiltonian=False)
    fwd = walk(flow, "forward", torch.tensor([0.3, 0.2], dtype=torch.float64), torch.Generator().manual_seed(0))
    assert np.allclose(fwd.q[0], [0.3, 0.2])
    for i, h in enumerate(fwd.hamiltonians):
        s, e = 3 * i, 3 * i + 3
        with torch.no_grad():
            expected = [float(flow.hamiltonian(torch.as_tensor(fwd.q[k])[None], torch.as_tensor(fwd.p[k])[None], h)[0])
                        for k in (s, e)]  # fmt: skip
        assert [fwd.energy_before[i], fwd.energy_after[i]] == pytest.approx(expected, abs=1e-12)
        assert fwd.energies[e] == fwd.energy_after[i]  # the step's end, under the step's H
    # a small dt keeps each step's H nearly (leapfrog's error is O(dt³) per step), not exactly
    assert 0 < np.abs(fwd.energy_after - fwd.energy_before).max() < 1e-2


def test_walk_rejects_bad_input_by_name():
    flow = make_flow()
    with pytest.raises(ValueError, match="direction"):
        walk(flow, "sideways")
    with pytest.raises(ValueError, match="q: the inverse direction starts from a data point"):
        walk(flow, "inverse")
    with pytest.raises(ValueError, match="q"):
        walk(flow, "forward", torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))


def test_as_float64_copies_the_weights():
    flow = make_flow(dtype="float32")
    copy = as_float64(flow)
    q = randn(8, 2, seed=4)
    assert copy.dtype == torch.float64
    with torch.no_grad():
        assert torch.allclose(copy.potential(q), flow.potential(q.float()).double(), atol=1e-5)


def test_shoelace_areas_of_a_circle_and_a_linear_map():
    q, p = circle(torch.zeros(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64), 0.5, n=2000)
    assert plane_areas(q, p).tolist() == pytest.approx([math.pi * 0.25, 0.0], rel=1e-5)
    # on H = |p|²/2 + |q|²/2 leapfrog is linear, so its polygon's area is exactly kept, and
    # friction γ scales it by exactly (1 − γ) per step
    identity = lambda x: x  # noqa: E731
    q1, p1 = damped(q, p, 0.3, [(identity, identity)] * 2, friction=0.1)
    assert symplectic_area(q1, p1) == pytest.approx(symplectic_area(q, p) * 0.9**2, rel=1e-12)


@pytest.mark.parametrize("shared", [True, False])
def test_the_flow_keeps_a_patchs_symplectic_area_and_friction_does_not(shared):
    flow = make_flow(dt=0.5, n_steps=3, shared_hamiltonian=shared)
    patch = carry_patch(flow, torch.tensor([0.5, -0.3]), torch.tensor([0.2, 0.4]), radius=0.3)
    start, after, contrast = (patch.areas[k] for k in ("start", "leapfrog", "damped"))
    assert start == pytest.approx(math.pi * 0.09, rel=1e-4)
    assert abs(after - start) < 1e-6 * start  # kept (the polygon's O(n⁻²) error only)
    assert contrast == pytest.approx(start * (1 - FRICTION) ** 3, rel=1e-6)  # shrunk, a step at a time
    # the sum is kept, not each plane's area: the flow moves area between the planes
    assert abs(patch.plane_areas["leapfrog"][1]) > 1e-5
    assert patch.determinants["leapfrog"] == pytest.approx(1.0, abs=1e-10)
    assert patch.determinants["damped"] == pytest.approx((1 - FRICTION) ** 6, rel=1e-10)  # (1 − γ)^(d n)
    moved = np.abs(patch.loops["leapfrog"][0] - patch.loops["start"][0]).max()
    assert moved > 0.05  # the patch went somewhere (else the test is void)


def _snapshot(model: np.ndarray, target: np.ndarray) -> Snapshot:
    xs = np.linspace(-4, 4, 61)
    blank = np.zeros((61, 61))
    kde = lambda s: kde_on_grid(s, xs, 0.2)  # noqa: E731
    return Snapshot(xs, kde(target), kde(model), blank, blank, np.zeros((2, 1, 2)), np.zeros((3, 1, 2)),
                    model, target, None)  # fmt: skip


def test_turning_an_invariant_density_changes_little_and_a_one_sided_one_much():
    rng = np.random.default_rng(0)
    angles = rng.uniform(0, 2 * np.pi, 4000)
    ring = 2.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    blob = rng.normal([2.0, 0.0], 0.2, size=(4000, 2))
    turned = turn(_snapshot(blob, ring), math.pi / 2)
    assert turned.target_l1 < 0.15  # the ring: only the KDE's sampling noise
    assert turned.model_l1 > 1.9  # a blob turned by 90° no longer overlaps itself (2 is the most)
    assert np.allclose(rotate_points(np.array([[1.0, 0.0]]), math.pi / 2), [[0.0, 1.0]], atol=1e-12)
    peak = np.unravel_index(turned.model.argmax(), turned.model.shape)  # [y, x]: the blob went to (0, 2)
    assert abs(turned.model.shape[0] // 2 - peak[1]) <= 1 and peak[0] > 40
    assert turn(_snapshot(blob, ring), 0.0).model_l1 == 0.0
    with pytest.raises(ValueError, match="theta"):
        turn(_snapshot(blob, ring), float("nan"))


def test_the_captions_name_each_part_and_the_figure_draws_the_move_where_it_happened():
    from ehflow_core.lesson_figures import walkthrough_spec
    from ehflow_core.walkthrough import describe, energy_maps

    flow = make_flow(dt=0.5, n_steps=2, shared_hamiltonian=False)
    back = walk(flow, "inverse", torch.tensor([1.0, 0.5], dtype=torch.float64), torch.Generator().manual_seed(0))
    texts = [describe(back, i) for i in range(back.n_states)]
    assert "encoder" in texts[0] and "Undoing leapfrog step 2 of 2 (H₂), part 1 of 3" in texts[1]
    assert "step of q" in texts[2] and "Undoing leapfrog step 1 of 2 (H₁)" in texts[4]
    assert "one sample of the ELBO" in texts[-1]
    xs, potentials, kinetics = energy_maps(flow, n=11)
    assert potentials.shape == kinetics.shape == (2, 11, 11)
    for index, panel in ((1, "x2"), (2, "x")):  # a kick moves p (second panel), a drift q (first)
        arrows = [a for a in walkthrough_spec(back, index, xs, potentials, kinetics)["layout"]["annotations"]
                  if a.get("showarrow")]  # fmt: skip
        assert [a["xref"] for a in arrows] == [panel, "x3", "x3"]
        moved = back.p if panel == "x2" else back.q
        assert (arrows[0]["ax"], arrows[0]["x"]) == (moved[index - 1, 0], moved[index, 0])
        for phase in arrows[1:]:  # in phase space a kick is vertical (q stays), a drift horizontal (p stays)
            assert (phase["ax"] == phase["x"]) if panel == "x2" else (phase["ay"] == phase["y"])
    with pytest.raises(ValueError, match="index must be in 0..6"):
        describe(back, 7)
