"""Leapfrog: exact inverse, unit Jacobian, O(dt²) energy error, ∇U reuse, closed-form gradients."""

from __future__ import annotations

import pytest
import torch
from conftest import TOL, make_flow, randn

from ehflow_core import leapfrog, leapfrog_trajectory
from ehflow_core.nets import EnergyMLP, InvariantEnergyMLP


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("dt", [0.05, 0.5, 2.0])
@pytest.mark.parametrize("shared", [True, False])
def test_inverse_flow_undoes_forward_flow(dtype, dt, shared):
    flow = make_flow(
        dt=dt, n_steps=3, shared_hamiltonian=shared, dtype="float64" if dtype == torch.float64 else "float32"
    )
    q, p = randn(256, 2, seed=1, dtype=dtype), randn(256, 2, seed=2, dtype=dtype)
    with torch.no_grad():
        qn, pn = flow.forward_flow(q, p)
        q0, p0 = flow.inverse_flow(qn, pn)
    assert (qn - q).abs().max() > 1e-3, "the flow should move points (else the test is void)"
    scale = 1 + max(float(qn.abs().max()), float(pn.abs().max()))
    assert torch.allclose(q0, q, atol=TOL[dtype] * scale, rtol=0)
    assert torch.allclose(p0, p, atol=TOL[dtype] * scale, rtol=0)


@pytest.mark.parametrize("dt", [0.3, 1.5])
@pytest.mark.parametrize("shared", [True, False])
def test_flow_jacobian_has_unit_determinant(dt, shared):
    flow = make_flow(dt=dt, n_steps=2, shared_hamiltonian=shared)
    d = flow.dim

    def flow_map(s: torch.Tensor) -> torch.Tensor:
        q, p = flow.forward_flow(s[None, :d], s[None, d:])
        return torch.cat([q, p], dim=-1)[0]

    for seed in range(4):
        s = randn(2 * d, seed=seed)
        jac = torch.autograd.functional.jacobian(flow_map, s)
        assert (jac - torch.eye(2 * d, dtype=jac.dtype)).abs().max() > 1e-3  # not the identity
        sign, logabsdet = torch.linalg.slogdet(jac)
        assert sign == 1
        assert abs(float(logabsdet)) < 1e-8


def _harmonic_energy_error(dt: float, total_time: float = 5.0) -> float:
    """Largest |H(t) − H(0)| of leapfrog on H = |p|²/2 + |q|²/2 over [0, total_time]."""
    n = round(total_time / dt)
    q, p = randn(64, 3, seed=3), randn(64, 3, seed=4)
    identity = lambda x: x  # noqa: E731  ∇(|x|²/2) = x
    q_path, p_path = leapfrog_trajectory(q, p, dt, [(identity, identity)] * n)
    energy = 0.5 * (q_path.square().sum(-1) + p_path.square().sum(-1))  # (T+1, B)
    return float((energy - energy[0]).abs().max())


def test_energy_error_is_second_order_in_dt():
    errors = [_harmonic_energy_error(dt) for dt in (0.2, 0.1, 0.05)]
    ratios = [errors[0] / errors[1], errors[1] / errors[2]]
    for ratio in ratios:
        assert 3.6 < ratio < 4.4, (errors, ratios)


def test_inverse_is_exact_not_only_second_order():
    # With dt = 1 the forward map is far from the identity, yet -dt in reverse order undoes it.
    identity = lambda x: x  # noqa: E731
    cubic = lambda x: x**3  # noqa: E731
    steps = [(identity, cubic), (cubic, identity)]
    q, p = randn(32, 2, seed=5), randn(32, 2, seed=6)
    qn, pn = leapfrog(q, p, 1.0, steps)
    q0, p0 = leapfrog(qn, pn, -1.0, steps[::-1])
    assert (qn - q).abs().max() > 0.1
    assert torch.allclose(q0, q, atol=1e-12) and torch.allclose(p0, p, atol=1e-12)


@pytest.mark.parametrize("n_steps", [1, 2, 5])
def test_grad_U_is_reused_between_steps(n_steps):
    calls = {"U": 0, "K": 0}

    def grad_U(x):
        calls["U"] += 1
        return x

    def grad_K(x):
        calls["K"] += 1
        return x

    leapfrog(randn(4, 2), randn(4, 2), 0.1, [(grad_K, grad_U)] * n_steps)
    assert calls == {"U": n_steps + 1, "K": n_steps}


@pytest.mark.parametrize("reuse", [True, False])
def test_a_known_first_gradient_replaces_the_first_evaluation(reuse):
    sizes = []

    def grad_U(x):
        sizes.append(len(x))
        return torch.sin(x)

    q, p, steps = randn(4, 2, seed=1), randn(4, 2, seed=2), [(torch.tanh, grad_U)] * 3
    computed = leapfrog(q, p, 0.3, steps, reuse)
    n_calls = len(sizes)
    known = leapfrog(q, p, 0.3, steps, reuse, grad_U_q=torch.sin(q))
    assert len(sizes) - n_calls == n_calls - 1
    assert all(torch.equal(a, b) for a, b in zip(computed, known))


@pytest.mark.parametrize("n_samples", [1, 8])
def test_the_first_gradient_of_the_inverse_is_computed_once_per_data_point(n_samples):
    """The K momenta of a data point share its first ∇U of T⁻¹: the fast path computes it on the B
    points, not the K·B states (the reference path on all of them), with the same log weights."""

    def recording(evaluate, seen):
        def grad(x):
            seen.append(len(x))
            return evaluate(x)

        return grad

    q, eps = randn(5, 2, seed=1), randn(n_samples, 5, 2, seed=2)
    sizes, log_w = {"fast": [], "reference": []}, {}
    for mode, method in (("fast", "grad"), ("reference", "grad_autograd")):
        flow = make_flow(n_steps=2, shared_hamiltonian=False).use_grad_mode(mode)
        U = flow.hamiltonian_list[-1].U  # the potential of T⁻¹'s first step
        setattr(U, method, recording(getattr(U, method), sizes[mode]))
        log_w[mode] = flow._log_weights_from_noise(q, eps)
    assert sizes["fast"] == [5, 5 * n_samples] and sizes["reference"] == [5 * n_samples] * 2
    assert torch.allclose(log_w["fast"], log_w["reference"], atol=1e-12)


def test_trajectory_matches_forward_flow_and_runs_longer():
    flow = make_flow(shared_hamiltonian=True)  # one H, so the flow runs on past its trained steps
    q, p = randn(16, 2, seed=7), randn(16, 2, seed=8)
    with torch.no_grad():
        q_path, p_path = flow.trajectory(q, p)
        qn, pn = flow.forward_flow(q, p)
        q_long, _ = flow.trajectory(q, p, n_steps=20)
    assert q_path.shape == (flow.config.n_steps + 1, 16, 2) and p_path.shape == q_path.shape
    assert torch.equal(q_path[0], q) and torch.allclose(q_path[-1], qn) and torch.allclose(p_path[-1], pn)
    assert q_long.shape == (21, 16, 2)
    assert torch.allclose(q_long[: flow.config.n_steps + 1], q_path)


@pytest.mark.parametrize("quadratic", [False, True])
@pytest.mark.parametrize("blocks", [None, ((0, 1), (2,))])
def test_closed_form_energy_gradient_matches_autograd(blocks, quadratic):
    torch.manual_seed(0)
    net = (
        EnergyMLP(3, (16, 8, 4), quadratic) if blocks is None else InvariantEnergyMLP(3, (16, 8), blocks, quadratic)
    ).double()
    if quadratic:
        with torch.no_grad():
            net.log_scale.fill_(0.3)  # a curvature other than 1, so e^a is tested, not assumed
    x = randn(50, 3, seed=9).requires_grad_(True)
    (reference,) = torch.autograd.grad(net(x).sum(), x, create_graph=True)
    grad = net.grad(x)
    assert torch.allclose(grad, reference, atol=1e-12)
    assert torch.allclose(net.grad_autograd(x), reference, atol=1e-12)
    # Second derivatives (what training differentiates through) agree as well, in θ and in x.
    for wrt in (net.out.weight, net.hidden_layers[0].weight, x, *([net.log_scale] if quadratic else [])):
        (g1,) = torch.autograd.grad(grad.square().sum(), wrt, retain_graph=True)
        (g2,) = torch.autograd.grad(reference.square().sum(), wrt, retain_graph=True)
        assert torch.allclose(g1, g2, atol=1e-12)
    with torch.no_grad():  # the reference works without grad mode, too
        assert torch.allclose(net.grad_autograd(x), reference, atol=1e-12)
