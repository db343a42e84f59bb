"""Training bounds: the ELBO, the importance-weighted L_K (IWAE) and its doubly-reparameterised
gradient (DReG); evaluation on a fixed subsample. float64."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import encoder_factor, make_flow, randn

from ehflow_core import FlowConfig
from ehflow_core.ensemble import train_ensemble
from ehflow_core.targets import make_target
from ehflow_core.training import TrainConfig, Trainer, training_bound

F64 = FlowConfig(hidden=(32, 32), encoder_hidden=(32, 32), dtype="float64")


def _noise(x: torch.Tensor, k: int, seed: int = 3) -> torch.Tensor:
    return torch.randn((k, *x.shape), generator=torch.Generator().manual_seed(seed), dtype=x.dtype)


def test_iwae_is_above_the_elbo_on_the_same_samples_and_equals_the_lk_estimator():
    flow = make_flow()
    x = randn(128, 2, seed=4)
    eps = _noise(x, 8)
    with torch.no_grad():
        elbo = training_bound(flow, x, eps, "elbo")
        iwae = training_bound(flow, x, eps, "iwae")
        estimator = flow.log_likelihood(x, 8, torch.Generator().manual_seed(3)).mean()  # draws the same ε
        one = [float(training_bound(flow, x, eps[:1], objective)) for objective in ("iwae", "elbo")]
    assert iwae >= elbo + 1e-3  # Jensen, on the very same samples
    assert float(iwae) == pytest.approx(float(estimator), rel=1e-12, abs=1e-12)
    assert one[0] == pytest.approx(one[1], rel=1e-12)  # K = 1: the ELBO


def test_iwae_grows_with_k():
    flow = make_flow()
    x = randn(2048, 2, seed=5)
    with torch.no_grad():
        bounds = [float(training_bound(flow, x, _noise(x, k, seed=k), "iwae")) for k in (1, 4, 16, 64)]
    assert bounds == sorted(bounds) and bounds[-1] - bounds[0] > 0.05, bounds


def _grads(flow, value: torch.Tensor) -> dict[str, torch.Tensor]:
    flow.zero_grad(set_to_none=True)
    value.backward()
    return {n: p.grad.clone() for n, p in flow.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("covariance", ["diagonal", "full"])
def test_dreg_has_iwaes_value_and_the_gradient_of_its_surrogate(covariance):
    """DReG: the flow's gradient is IWAE's, Σ w̃ ∇θ log w; the encoder's is the autograd gradient
    of Σ sg(w̃²) log w with log h's parameters stopped (only the path through p remains)."""
    flow = make_flow(encoder_covariance=covariance)
    x = randn(64, 2, seed=6)
    eps = _noise(x, 6)
    dreg = training_bound(flow, x, eps, "dreg")
    assert float(dreg.detach()) == pytest.approx(float(training_bound(flow, x, eps, "iwae").detach()), rel=1e-12)
    got = _grads(flow, dreg)

    iwae_grads = _grads(flow, training_bound(flow, x, eps, "iwae"))
    mean, factor = encoder_factor(flow, x)  # L, (B, d, d)
    p = mean + (factor @ eps.unsqueeze(-1)).squeeze(-1)  # (K, B, d), differentiable in the encoder
    log_h = torch.distributions.MultivariateNormal(mean.detach(), scale_tril=factor.detach()).log_prob(p)
    log_joint = flow._log_prob_joint(x.expand(6, *x.shape).reshape(-1, 2), p.reshape(-1, 2)).view(6, -1)
    log_w = log_joint - log_h
    weights = torch.softmax(log_w.detach(), 0)
    surrogate = (weights.square() * log_w).sum(0).mean()
    encoder_grads = _grads(flow, surrogate)

    assert got.keys() == iwae_grads.keys()
    for name, grad in got.items():
        expected = encoder_grads[name] if name.startswith("encoder.") else iwae_grads[name]
        assert torch.allclose(grad, expected, rtol=1e-9, atol=1e-12), name
    changed = [n for n in got if n.startswith("encoder.") and not torch.allclose(got[n], iwae_grads[n], atol=1e-8)]
    assert changed, "DReG's encoder gradient should differ from IWAE's"


@pytest.mark.parametrize("objective", ["elbo", "iwae", "dreg"])
def test_every_bound_trains_and_batches_like_single_runs(objective):
    base = TrainConfig(
        flow=F64, objective=objective, train_samples=4, batch=64, lr=3e-3, max_steps=6, eval_every=3,
        n_test=128, eval_samples=8, constraint_batch=64,
    )  # fmt: skip
    target = make_target("ring")
    configs = [base.replace(kappa=0.01), base.replace(kappa=None, seed=1)]
    ensemble, runs = train_ensemble(configs, target)
    for config, label in zip(configs, ensemble.labels):
        alone = list(Trainer(config, target).train())
        for a, b in zip(alone, runs[label], strict=True):
            assert a.loss == pytest.approx(b.loss, rel=1e-10) and a.train_bound == pytest.approx(
                b.train_bound, rel=1e-10
            )
            assert a.grad_norm == pytest.approx(b.grad_norm, rel=1e-9)


def test_evaluation_on_a_subsample_agrees_with_the_full_test_set():
    trainer = Trainer(
        TrainConfig(flow=F64, n_test=4096, eval_points=512, eval_samples=8, n_train=3000), make_target("ring")
    )
    assert (
        trainer.eval_test.shape == (512, 2) and trainer.eval_train is not None and trainer.eval_train.shape == (512, 2)
    )
    rng = torch.Generator().manual_seed(0)
    with torch.no_grad():
        full = trainer.flow.log_likelihood(trainer.test_data, 8, rng)
        sub = trainer.evaluate()["test_log_likelihood"]
    stderr = float(full.std()) / math.sqrt(512)
    assert abs(sub - float(full.mean())) < 4 * stderr, (sub, float(full.mean()), stderr)
    small = Trainer(TrainConfig(flow=F64, n_test=100, eval_points=512), make_target("ring"))
    assert small.eval_test is small.test_data  # fewer points than the subsample: all of them


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"objective": "vi"}, r"objective must be one of 'elbo', 'iwae', 'dreg'; got 'vi'"),
        ({"train_samples": 0}, r"train_samples must be an integer >= 1, got 0"),
        ({"eval_points": 0}, r"eval_points must be an integer >= 1, got 0"),
    ],
)
def test_bad_objective_settings_are_rejected_by_name(changes, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**changes)


def test_a_late_gradient_scale_scales_the_gradient_and_refuses_to_be_used_unset():
    from ehflow_core.encoder import LateGradScale

    x = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64, requires_grad=True)
    late = LateGradScale()
    y = late(x)
    assert torch.equal(y, x)  # the identity, forward
    late.set(torch.tensor([0.5, 2.0, 0.0], dtype=torch.float64))
    (y.square().sum()).backward()
    assert torch.equal(x.grad, torch.tensor([1.0, 8.0, 0.0], dtype=torch.float64))  # 2x scaled
    unset = LateGradScale()
    with pytest.raises(RuntimeError, match="before set"):
        unset(x).sum().backward()


def test_the_constraint_at_the_data_adds_the_batchs_states_to_the_base_samples():
    """``constraint_at="base+data"``: C_k is the mean of {g, H}² over the base samples and the
    batch's points with the encoder's momentum for the first noise sample (those held fixed)."""
    from ehflow_core.objectives import Objective
    from ehflow_core.symmetries import constraint_values, rotation_generator

    flow = make_flow(n_steps=2)
    g = [rotation_generator(0, 1, 2)]
    x, eps = randn(16, 2, seed=1), randn(3, 16, 2, seed=2)
    q0, p0 = randn(32, 2, seed=3), randn(32, 2, seed=4)
    _, on_base = Objective(flow, g, "iwae")(x, eps, q0, p0)
    _, on_both = Objective(flow, g, "iwae", "base+data")(x, eps, q0, p0)
    with torch.no_grad():
        p_data = flow.encoder.reparameterise(x, eps[:1])[0][0]
        at_data = constraint_values(flow.hamiltonian_list, g, x, p_data)
    assert torch.allclose(on_base, constraint_values(flow.hamiltonian_list, g, q0, p0))
    assert torch.allclose(on_both, (32 * on_base + 16 * at_data) / 48)  # the mean over all 48 states
    assert abs(float(at_data - on_base.detach())) > 1e-3  # the data's states differ (else the test is void)
    with pytest.raises(ValueError, match="constraint_at"):
        Objective(flow, g, "iwae", "everywhere")


def test_a_sweep_with_the_constraint_at_the_data_trains_each_member_as_one_run_would():
    from ehflow_core.ensemble import EnsembleTrainer

    config = TrainConfig(
        flow=FlowConfig(hidden=(16, 16), encoder_hidden=(16, 16), dtype="float64"), batch=16, constraint_batch=32,
        max_steps=3, eval_every=100, n_test=32, eval_points=32, eval_samples=4, constraint_at="base+data",
    )  # fmt: skip
    target = make_target("ring")
    members = [config.replace(kappa=k) for k in (0.01, 0.1)]
    ensemble = [r for step in EnsembleTrainer(members, target).train() for r in step.values()]
    single = list(Trainer(members[1], target).train())
    batched, alone = ([r.constraint["L_12"] for r in records] for records in (ensemble[1::2], single))
    assert len(batched) == 3 and batched == pytest.approx(alone, rel=1e-9)
