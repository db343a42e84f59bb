"""The generative model: bounds ELBO ≤ L_K ≤ log p, exact limits, shapes, dtypes, devices, grids."""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import make_flow, randn

from ehflow_core import (
    FlowConfig,
    HamiltonianFlow,
    TrainConfig,
    embed_plane,
    evaluate_in_batches,
    invariance_error,
    make_grid,
    rotation_generator,
)


def test_elbo_below_importance_weighted_bound_which_grows_with_k(flow):
    torch.manual_seed(0)
    q = flow.sample(2000).detach()
    with torch.no_grad():
        elbo = flow.elbo(q, n_samples=4).mean()
        bounds = [flow.log_likelihood(q, n_samples=k).mean() for k in (1, 4, 16, 64)]
    assert elbo < bounds[1]
    assert abs(float(bounds[0] - elbo)) < 0.1  # L_1 is an unbiased one-sample ELBO
    for smaller, larger in zip(bounds, bounds[1:]):
        assert smaller < larger
    assert float(bounds[-1] - bounds[0]) > 0.05  # the gap is real for this random encoder


def test_the_bound_in_chunks_is_the_bound_of_the_same_draws_in_one_piece(flow):
    """log_likelihood computes L_K over chunks of samples (4,096 states each), each drawing its
    noise in turn: with 512 points a chunk holds 8 samples, 8,192 normals (a multiple of torch's
    block of 16), so the 4 chunks draw what one piece draws and L_K is that piece's logsumexp."""
    q, k = randn(512, 2), 32
    with torch.no_grad():
        chunked = flow.log_likelihood(q, k, torch.Generator().manual_seed(3))
        log_w = flow._log_weights(q, k, torch.Generator().manual_seed(3))  # (32, 512) in one piece
    assert torch.allclose(chunked, torch.logsumexp(log_w, 0) - math.log(k), rtol=0, atol=1e-12)


def _zero_hamiltonian_with_known_encoder(shift: float, scale: float) -> HamiltonianFlow:
    flow = make_flow()
    for h in flow.hamiltonians:
        h.K.zero_()
        h.U.zero_()
    with torch.no_grad():  # h(p|q) = N(shift, scale²): a wider proposal keeps the IW estimator stable
        flow.encoder.mean_net[-1].weight.zero_()
        flow.encoder.mean_net[-1].bias.fill_(shift)
        flow.encoder.scale_net[-1].weight.zero_()
        flow.encoder.scale_net[-1].bias.zero_()  # L's entries below the diagonal, where it has them, are 0
        flow.encoder.scale_net[-1].bias[:2].fill_(math.log(math.expm1(scale - 1e-3)))
    return flow


def test_the_full_covariance_encoder_is_the_gaussian_of_its_cholesky_factor():
    """log h(p | q) is N(μ, L Lᵀ)'s, with L lower triangular (its entries placed row by row, d = 3);
    in one dimension the full and the diagonal encoder are the same function."""
    flow = make_flow(dim=3, encoder_covariance="full")
    q, eps = randn(5, 3, seed=1), randn(4, 5, 3, seed=2)
    p, log_h = flow.encoder.reparameterise(q, eps)
    mean, diagonal, below = flow.encoder.factor(q)
    rows, cols = torch.tril_indices(3, 3, -1)
    assert below is not None and torch.equal(below, below.tril(-1)) and bool((below[:, rows, cols] != 0).all())
    factor = torch.diag_embed(diagonal) + below
    assert torch.allclose(p, mean + (factor @ eps.unsqueeze(-1)).squeeze(-1), atol=1e-12)
    expected = torch.distributions.MultivariateNormal(mean, scale_tril=factor).log_prob(p)
    assert torch.allclose(log_h, expected, atol=1e-10)
    one_d = [make_flow(dim=1, encoder_covariance=c).encoder for c in ("diagonal", "full")]
    x, e = randn(6, 1, seed=3), randn(2, 6, 1, seed=4)
    assert all(torch.equal(a, b) for a, b in zip(*(enc.reparameterise(x, e) for enc in one_d)))


def test_zeroed_energies_give_identity_flow_and_lk_converges_to_normal():
    flow = _zero_hamiltonian_with_known_encoder(shift=0.4, scale=1.4)
    q, p = randn(64, 2, seed=1), randn(64, 2, seed=2)
    qn, pn = flow.forward_flow(q, p)
    assert torch.equal(qn, q) and torch.equal(pn, p)
    exact = -0.5 * q.square().sum(-1) - math.log(2 * math.pi)  # log N(q; 0, I_2)
    torch.manual_seed(0)
    with torch.no_grad():
        errors = [float((flow.log_likelihood(q, n_samples=k) - exact).abs().mean()) for k in (1, 32, 4096)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.01
    with torch.no_grad():
        joint = flow.log_prob_joint(q, p)
    assert torch.allclose(joint, exact - 0.5 * p.square().sum(-1) - math.log(2 * math.pi))


def test_gradients_reach_every_parameter(flow):
    q = randn(32, 2, seed=3)
    (-flow.elbo(q, n_samples=2).mean()).backward()
    for name, param in flow.named_parameters():
        if name.endswith("out.bias"):  # constant energy offsets cancel in the flow
            continue
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_shapes_energies_and_sampling(flow):
    q, p = randn(7, 2, seed=4), randn(7, 2, seed=5)
    assert flow.kinetic(p).shape == flow.potential(q).shape == flow.hamiltonian(q, p).shape == (7,)
    assert torch.allclose(flow.hamiltonian(q, p), flow.kinetic(p) + flow.potential(q))
    assert flow.elbo(q, n_samples=3).shape == (7,) and flow.log_likelihood(q, 5).shape == (7,)
    gen = torch.Generator().manual_seed(3)
    s1 = flow.sample(11, generator=gen)
    s2 = flow.sample(11, generator=torch.Generator().manual_seed(3))
    assert s1.shape == (11, 2) and torch.equal(s1, s2)


def test_per_step_hamiltonians_differ_and_are_addressable():
    flow = make_flow(shared_hamiltonian=False, n_steps=3)
    assert len(flow.hamiltonians) == 3
    q = randn(5, 2)
    assert not torch.allclose(flow.potential(q, step=0), flow.potential(q, step=2))
    with pytest.raises(ValueError, match="step must be in 0..2"):
        flow.potential(q, step=3)
    with pytest.raises(ValueError, match="separate Hamiltonian per step"):
        flow.trajectory(q, q, n_steps=10)


def test_convex_kinetic_energy_is_half_p_squared_plus_a_convex_function():
    """Hess K ⪰ e^a I for any parameters (K − ½e^a|p|² is a positive sum of convex ridges), so K
    is strictly convex; its closed-form gradient is autograd's; it starts near the harmonic ½|p|²."""
    flow = make_flow(kinetic="convex")
    K = flow.hamiltonians[0].K
    p = randn(6, 2, seed=7)
    untrained_gap = (flow.kinetic(p) - 0.5 * (p * p).sum(-1)).detach()
    assert torch.allclose(untrained_gap, untrained_gap.mean(), atol=0.1)  # a near-constant offset
    with torch.no_grad():
        for param in K.parameters():
            param.normal_(generator=torch.Generator().manual_seed(1))  # far from initialisation
    assert torch.allclose(K.grad(p), K.grad_autograd(p), atol=1e-12)
    for point in p:
        hessian = torch.autograd.functional.hessian(lambda x: K(x.unsqueeze(0)).squeeze(0), point)
        assert torch.linalg.eigvalsh(hessian).min() >= float(K.log_scale.detach().exp()) - 1e-10
    with pytest.raises(ValueError, match=r"kinetic='convex' cannot be combined with invariant_blocks"):
        FlowConfig(kinetic="convex", invariant_blocks=((0, 1),))
    with pytest.raises(ValueError, match=r"kinetic must be one of 'mlp', 'convex'; got 'quadratic'"):
        FlowConfig(kinetic="quadratic")


def test_harmonic_flow_with_silent_mlps_is_the_oscillators_leapfrog_and_keeps_the_normal_base():
    """With ``harmonic=True`` and the MLP parts silenced, H_i = ½|p|² + ½|q|² exactly: each leapfrog
    step is the linear map M (half kick, drift, half kick) with det M = 1, so the flow is M^n, and
    from the N(0, I) base the marginal of q stays close to N(0, I): q moves with p from the start."""
    flow = make_flow(harmonic=True, n_steps=3, dt=0.4)
    with torch.no_grad():
        for h in flow.hamiltonians:
            for energy in (h.K, h.U):
                energy.out.weight.zero_()
                energy.out.bias.zero_()
    dt = 0.4
    kick = torch.tensor([[1.0, 0.0], [-dt / 2, 1.0]], dtype=torch.float64)  # (q, p) -> (q, p − dt/2 q)
    drift = torch.tensor([[1.0, dt], [0.0, 1.0]], dtype=torch.float64)  # (q, p) -> (q + dt p, p)
    step = kick @ drift @ kick
    assert abs(float(torch.linalg.det(step)) - 1.0) < 1e-12
    M = torch.linalg.matrix_power(step, 3)
    q, p = randn(4000, 2, seed=1), randn(4000, 2, seed=2)
    qn, pn = flow.forward_flow(q, p)
    expected_q = M[0, 0] * q + M[0, 1] * p  # M acts on each coordinate's (q_i, p_i) pair
    expected_p = M[1, 0] * q + M[1, 1] * p
    assert torch.allclose(qn, expected_q, atol=1e-12) and torch.allclose(pn, expected_p, atol=1e-12)
    assert float(M[0, 1]) > 0.9  # q_n depends on p_0: the free motion, not the identity
    assert torch.allclose(
        qn.var(0), torch.full((2,), float(M[0, 0] ** 2 + M[0, 1] ** 2), dtype=torch.float64), rtol=0.1
    )
    assert abs(float(M[0, 0] ** 2 + M[0, 1] ** 2) - 1.0) < 0.05  # near N(0, I): leapfrog nearly preserves |q|²+|p|²
    with pytest.raises(ValueError, match=r"zero_\(\) needs an energy without the quadratic term"):
        flow.hamiltonians[0].U.zero_()
    with pytest.raises(TypeError, match=r"harmonic must be a bool, got 'yes'"):
        FlowConfig(harmonic="yes")


@pytest.mark.parametrize("blocks", [None, ((0, 1),)])
def test_init_scales_multiply_the_first_layers_of_u_and_k_and_keep_their_hinges(blocks):
    """``potential_init_scale`` and ``kinetic_init_scale`` scale the first layer's weights and
    biases of U's and K's MLP (everything else as PyTorch initialises it, for the same seed), so
    each softplus feature keeps its hinge −b/|w| and bends more sharply; the paper's
    configuration keeps PyTorch's initialisation."""
    flows = []
    for u_scale, k_scale in ((1.0, 1.0), (10.0, 3.0)):
        torch.manual_seed(5)
        config = FlowConfig(
            hidden=(16, 8), invariant_blocks=blocks, potential_init_scale=u_scale, kinetic_init_scale=k_scale
        )
        flows.append(HamiltonianFlow(config))
    for (name, plain), (_, scaled) in zip(flows[0].named_parameters(), flows[1].named_parameters()):
        factor = {".U.hidden_layers.0.": 10.0, ".K.hidden_layers.0.": 3.0}
        expected = next((f * plain for key, f in factor.items() if key in name), plain)
        assert torch.equal(scaled, expected), name
    plain_u, scaled_u = (f.hamiltonians[0].U.hidden_layers[0] for f in flows)
    hinge = -plain_u.bias / plain_u.weight.norm(dim=1)
    assert torch.allclose(hinge, -scaled_u.bias / scaled_u.weight.norm(dim=1))
    paper = TrainConfig(flow=FlowConfig(kinetic_init_scale=3.0)).as_paper().flow
    assert (paper.potential_init_scale, paper.kinetic_init_scale) == (1.0, 1.0)
    for bad, error in ((0.0, ValueError), (float("nan"), ValueError), ("3", TypeError)):
        with pytest.raises(error, match="potential_init_scale"):
            FlowConfig(potential_init_scale=bad)


def test_float32_default_and_float64_on_request():
    assert HamiltonianFlow(FlowConfig(hidden=(8,), encoder_hidden=(8,))).sample(3).dtype == torch.float32
    assert make_flow().sample(3).dtype == torch.float64


def test_cuda_when_available_cpu_otherwise(caplog):
    with caplog.at_level(logging.WARNING):
        flow = HamiltonianFlow(FlowConfig(hidden=(8,), encoder_hidden=(8,), device="cuda"))
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert flow.device.type == expected and flow.sample(4).device.type == expected
    if not torch.cuda.is_available():
        assert "CUDA is not available" in caplog.text


def test_config_round_trips_through_json():
    config = FlowConfig(dim=4, hidden=(64, 32), invariant_blocks=((0, 1), (2, 3)), base="soft_uniform", dt=0.3)
    again = FlowConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    with pytest.raises(ValueError, match="unknown FlowConfig field"):
        FlowConfig.from_dict({"dimm": 2})


def test_grid_evaluation_in_batches_matches_direct_evaluation(flow):
    grid = make_grid(-3.0, 3.0, 17, dtype=torch.float64)
    assert grid.points.shape == (17 * 17, 2) and grid.shape == (17, 17)
    # Row-major in y: reshaped values are indexed [y, x].
    assert torch.equal(grid.points.view(17, 17, 2)[2, 5], torch.stack([grid.xs[5], grid.ys[2]]))
    batched = evaluate_in_batches(flow.hamiltonians[0].potential, grid.points, batch_size=50)
    with torch.no_grad():
        assert torch.allclose(batched, flow.hamiltonians[0].potential(grid.points))
    assert embed_plane(grid.points, 4, axes=(1, 3))[:, [0, 2]].abs().max() == 0


def test_invariance_error_separates_radial_from_generic_flow():
    g = rotation_generator(0, 1, 2)
    q = randn(32, 2, seed=6)
    radial = invariance_error(make_flow(invariant_blocks=((0, 1),)), g, q, n_samples=256)
    generic = invariance_error(make_flow(), g, q, n_samples=256)
    # A radial H with an N(0, I) base is exactly invariant: only estimator noise remains.
    assert radial.spread < 1.5 * radial.noise_floor
    assert generic.spread > 2 * generic.noise_floor


def test_soft_uniform_closed_form_matches_paper_product_form():
    from ehflow_core import SoftUniform

    base = SoftUniform(1, sigma=3.0, beta=2.5)
    x = torch.linspace(-8, 8, 20001, dtype=torch.float64)[:, None]
    a = 1.5
    unnormalised = torch.sigmoid(2.5 * (x + a)) * torch.sigmoid(-2.5 * (x - a))
    ratio = base.log_prob(x) - torch.log(unnormalised[:, 0])
    assert torch.allclose(ratio, ratio[0].expand_as(ratio), atol=1e-10)  # same shape up to a constant
    # And it integrates to one.
    assert torch.trapezoid(base.log_prob(x).exp(), x[:, 0]).item() == pytest.approx(1.0, abs=1e-6)
    assert not torch.isnan(F.softplus(x)).any()


@pytest.mark.parametrize("sigma,beta", [(4.0, 4.0), (1.0, 10.0), (2.0, 0.5)])
def test_soft_uniform_integrates_to_one_and_samples_match_its_cdf(sigma, beta):
    from scipy.stats import kstest

    from ehflow_core import SoftUniform

    base = SoftUniform(1, sigma, beta)
    half = sigma / 2 + 40 / beta
    x = torch.linspace(-half, half, 40001, dtype=torch.float64)[:, None]
    assert torch.trapezoid(base.log_prob(x).exp(), x[:, 0]).item() == pytest.approx(1.0, abs=1e-6)
    samples = base.sample(20000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))[:, 0]
    cdf = lambda v: base.cdf(torch.as_tensor(v, dtype=torch.float64)).numpy()  # noqa: E731
    assert kstest(samples.numpy(), cdf).pvalue > 1e-3
    # A CDF of the wrong width is rejected by the same test (the check has power).
    wrong = SoftUniform(1, sigma * 1.5, beta * 0.7)
    assert kstest(samples.numpy(), lambda v: wrong.cdf(torch.as_tensor(v, dtype=torch.float64)).numpy()).pvalue < 1e-3


def test_standard_normal_matches_torch_distributions():
    from ehflow_core import StandardNormal

    x = randn(10, 4)
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(x).sum(-1)
    assert torch.allclose(StandardNormal(4).log_prob(x), expected)
