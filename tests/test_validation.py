"""Bad input is rejected at the public boundary with a message naming argument, expectation, value."""

from __future__ import annotations

import pytest
import torch
from conftest import make_flow

from ehflow_core import (
    FlowConfig,
    SoftUniform,
    StandardNormal,
    equivariance_error,
    function_generator,
    make_grid,
    poisson_bracket,
    rotation_generator,
    so_generators,
    structure_constants,
    translation_generator,
)


@pytest.mark.parametrize(
    "changes, error, message",
    [
        ({"dt": 0.0}, ValueError, r"dt must be a finite number > 0, got 0.0"),
        ({"dt": -0.1}, ValueError, r"dt must be a finite number > 0, got -0.1"),
        ({"dt": float("nan")}, ValueError, r"dt must be a finite number, got nan"),
        ({"dt": float("inf")}, ValueError, r"dt must be a finite number, got inf"),
        ({"dt": "0.1"}, TypeError, r"dt must be a real number, got '0.1'"),
        ({"n_steps": 0}, ValueError, r"n_steps must be an integer >= 1, got 0"),
        ({"n_steps": 2.5}, TypeError, r"n_steps must be an integer, got 2.5"),
        ({"dim": 0}, ValueError, r"dim must be an integer >= 1, got 0"),
        ({"hidden": ()}, ValueError, r"hidden must hold at least one integer"),
        ({"hidden": (128, 0)}, ValueError, r"hidden\[1\] must be an integer >= 1, got 0"),
        ({"base": "uniform"}, ValueError, r"base must be one of 'normal', 'soft_uniform'; got 'uniform'"),
        (
            {"encoder_covariance": "cholesky"},
            ValueError,
            r"encoder_covariance must be one of 'diagonal', 'full'; got 'cholesky'",
        ),
        ({"base_sigma": -1.0}, ValueError, r"base_sigma must be a finite number > 0, got -1.0"),
        ({"dtype": "float16"}, ValueError, r"dtype must be one of 'float32', 'float64'; got 'float16'"),
        ({"device": "tpu"}, ValueError, r"device must be 'cpu' or 'cuda'"),
        ({"invariant_blocks": ((0, 2),)}, ValueError, r"invariant_blocks indices must lie in 0..1 \(dim=2\)"),
        ({"invariant_blocks": ((0, 1), (1,))}, ValueError, r"invariant_blocks must be disjoint"),
        ({"shared_hamiltonian": 1}, TypeError, r"shared_hamiltonian must be a bool, got 1"),
    ],
)
def test_bad_config_is_rejected_by_name(changes, error, message):
    with pytest.raises(error, match=message):
        FlowConfig(**changes)


def test_frozen_config_cannot_be_mutated():
    with pytest.raises(AttributeError):
        FlowConfig().dt = 3.0  # type: ignore[misc]


@pytest.fixture(scope="module")
def flow():
    return make_flow()


@pytest.mark.parametrize(
    "q, p, message",
    [
        (torch.zeros(4, 3), torch.zeros(4, 3), r"q must have shape \(B, 2\), got \(4, 3\)"),
        (torch.zeros(4), torch.zeros(4), r"q must have shape \(B, 2\), got \(4,\)"),
        (torch.zeros(0, 2), torch.zeros(0, 2), r"q must hold at least one point"),
        (torch.zeros(4, 2), torch.zeros(5, 2), r"q and p must have the same shape, got q \(4, 2\) and p \(5, 2\)"),
        (torch.tensor([[0.0, float("nan")]]), torch.zeros(1, 2), r"q must be finite; row 0 holds \[0.0, nan\]"),
        (torch.zeros(1, 2), torch.tensor([[float("inf"), 0.0]]), r"p must be finite; row 0 holds \[inf, 0.0\]"),
    ],
)
def test_bad_states_are_rejected(flow, q, p, message):
    q, p = q.double(), p.double()
    for method in (flow.forward_flow, flow.inverse_flow, flow.log_prob_joint, flow.trajectory, flow.hamiltonian):
        with pytest.raises(ValueError, match=message):
            method(q, p)


def test_bad_data_and_sample_counts_are_rejected(flow):
    q = torch.zeros(3, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"n_samples must be an integer >= 1, got 0"):
        flow.elbo(q, n_samples=0)
    with pytest.raises(ValueError, match=r"n_samples must be an integer >= 1, got -5"):
        flow.log_likelihood(q, n_samples=-5)
    with pytest.raises(TypeError, match=r"q must be a floating-point tensor, got dtype torch.int64"):
        flow.elbo(torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(TypeError, match=r"q must be a torch.Tensor of shape \(B, 2\), got list"):
        flow.elbo([[0.0, 0.0]])
    with pytest.raises(ValueError, match=r"q must be finite; row 1"):
        flow.log_likelihood(torch.tensor([[0.0, 0.0], [float("nan"), 1.0]], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"n must be an integer >= 1, got 0"):
        flow.sample(0)
    with pytest.raises(ValueError, match=r"n_steps must be an integer >= 1, got 0"):
        flow.trajectory(q, q, n_steps=0)


@pytest.mark.parametrize(
    "build, error, message",
    [
        (lambda: rotation_generator(0, 2, 2), ValueError, r"j must index a coordinate in 0..1 \(dim=2\), got 2"),
        (lambda: rotation_generator(1, 1, 3), ValueError, r"two different axes, got i = j = 1"),
        (lambda: rotation_generator(-1, 1, 3), ValueError, r"i must be an integer >= 0, got -1"),
        (lambda: so_generators(1), ValueError, r"dim must be an integer >= 2, got 1"),
        (lambda: translation_generator(3, 2), ValueError, r"i must index a coordinate in 0..1 \(dim=2\), got 3"),
        (lambda: function_generator(42, "g", 2), TypeError, r"fn must be callable"),
        (lambda: function_generator(lambda q, p: q[:, 0], "", 2), ValueError, r"name must be a non-empty string"),
        (lambda: structure_constants([]), ValueError, r"generators must hold at least one generator"),
        (lambda: StandardNormal(0), ValueError, r"dim must be an integer >= 1, got 0"),
        (lambda: SoftUniform(2, sigma=0.0), ValueError, r"sigma must be a finite number > 0, got 0.0"),
        (lambda: SoftUniform(2, beta=float("nan")), ValueError, r"beta must be a finite number, got nan"),
        (lambda: make_grid(1.0, -1.0, 10), ValueError, r"hi must be greater than lo, got lo=1.0, hi=-1.0"),
        (lambda: make_grid(-1.0, 1.0, 1), ValueError, r"n must be an integer >= 2, got 1"),
    ],
)
def test_bad_generator_and_density_arguments(build, error, message):
    with pytest.raises(error, match=message):
        build()


def test_bracket_rejects_functions_of_the_wrong_shape():
    q = torch.zeros(4, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"g\(q, p\) must return shape \(4,\), got torch.Size\(\[4, 2\]\)"):
        poisson_bracket(rotation_generator(0, 1, 2), lambda q, p: q * p, q, q)
    with pytest.raises(TypeError, match=r"f must be callable"):
        poisson_bracket("H", rotation_generator(0, 1, 2), q, q)


def test_user_generator_without_action_is_refused_for_equivariance(flow):
    g = function_generator(lambda q, p: q[:, 0] * p[:, 1], "shear", 2)
    with pytest.raises(ValueError, match=r"generator 'shear' has no finite group action"):
        equivariance_error(flow, g)


def test_base_log_prob_rejects_wrong_dimension():
    with pytest.raises(ValueError, match=r"x must have shape \(B, 4\), got \(3, 2\)"):
        StandardNormal(4).log_prob(torch.zeros(3, 2))
