"""The weights' moving average (``TrainConfig.average``): what it computes, and that everything that
shows a run's model (evaluations, checkpoints, an ensemble's members) shows the average."""

from __future__ import annotations

import pytest
import torch
from test_cli import cli
from test_training import SMALL, small_config

from ehflow_core.checkpoint import load_checkpoint, load_trainer, save_checkpoint
from ehflow_core.ensemble import EnsembleTrainer
from ehflow_core.targets import make_target
from ehflow_core.training import TrainConfig, Trainer

F64 = SMALL.replace(dtype="float64")


def test_the_averaged_weights_are_the_moving_average_of_the_trained_ones():
    """θ̄_t = β_t θ̄_{t−1} + (1 − β_t) θ_t with β_t = min(β, (1 + t)/(c + t)), from θ̄_0 = θ_0."""
    trainer = Trainer(small_config(flow=F64, kappa=0.01, average=0.15, max_steps=8, lr=1e-2), make_target("ring"))
    expected = [p.detach().clone() for p in trainer.flow.parameters()]
    for record in trainer.train():
        beta = min(0.15, (1 + record.step) / (40 + record.step))  # c = AVERAGE_WARMUP; β from step 6
        expected = [beta * e + (1 - beta) * p.detach() for e, p in zip(expected, trainer.flow.parameters())]
    assert trainer.step == 8
    averaged = list(trainer.averaged.parameters())
    for e, a in zip(expected, averaged, strict=True):
        assert torch.allclose(e, a, rtol=0, atol=1e-14)
    assert not any(a.requires_grad for a in averaged)  # no optimiser reaches the average
    moved = max(float((a - p.detach()).abs().max()) for a, p in zip(averaged, trainer.flow.parameters()))
    assert moved > 1e-5  # the average lags the weights: it is not a copy of them


def test_evaluations_and_checkpoints_show_the_average_and_a_resumed_run_continues_it(tmp_path):
    config = small_config(flow=F64, kappa=0.01, average=0.9, max_steps=20, eval_every=10, lr=1e-2)
    target = make_target("ring")
    straight = Trainer(config, target)
    expected = [(r.step, r.test_log_likelihood) for r in straight.train()]

    first = Trainer(config, target)
    head = [(r.step, r.test_log_likelihood) for r in first.train(more_steps=10)]
    assert first.eval_flow is first.averaged
    # The record's test likelihood is the averaged model's (the evaluation's RNG seeded as it was).
    rng = torch.Generator().manual_seed(config.seed + 7 + first.step)
    with torch.no_grad():
        first.averaged._log_weights(first.eval_test, 1, rng)  # the test ELBO draws first
        shown = float(first.averaged.log_likelihood(first.eval_test, config.eval_samples, rng).mean())
    assert head[-1][1] == pytest.approx(shown, rel=1e-12)
    path = save_checkpoint(first, tmp_path / "c.pt")
    q, p = torch.randn(16, 2, dtype=torch.float64), torch.randn(16, 2, dtype=torch.float64)
    with torch.no_grad():  # the saved model is the average, not the last weights
        saved = load_checkpoint(path).log_prob_joint(q, p)
        assert torch.equal(saved, first.averaged.log_prob_joint(q, p))
        assert not torch.allclose(saved, first.flow.log_prob_joint(q, p))
    tail = [(r.step, r.test_log_likelihood) for r in load_trainer(path).train()]
    assert head + tail == expected


def test_an_ensemble_member_averages_as_its_run_does_alone():
    target = make_target("ring")
    configs = [small_config(flow=F64, kappa=k, average=0.8, max_steps=6, eval_every=3) for k in (0.01, None)]
    ensemble = EnsembleTrainer(configs, target)
    for _ in ensemble.train():
        pass
    for config, run in zip(configs, ensemble.runs, strict=True):
        alone = Trainer(config, target)
        list(alone.train())
        for a, b in zip(alone.averaged.parameters(), run.averaged.parameters(), strict=True):
            assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)


def test_without_an_average_the_run_shows_its_own_weights():
    trainer = Trainer(small_config(max_steps=2), make_target("ring"))
    assert trainer.averaged is None and trainer.eval_flow is trainer.flow


@pytest.mark.parametrize(
    "average, message", [(1.0, r"average must be <= 0.9999, got 1.0"), (-0.5, r"average must be >= 0.0, got -0.5")]
)
def test_a_bad_average_is_rejected_by_name(average, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(average=average)


def test_the_command_line_takes_an_average_and_rejects_a_bad_one(tmp_path, capsys):
    code, _, err = cli(capsys, "train", "--average", "2", "--steps", "2", "--out", str(tmp_path / "o"))
    assert code == 2 and "average must be <= 0.9999, got 2.0" in err and "Traceback" not in err
    code, _, _ = cli(
        capsys, "train", "--average", "0.9", "--steps", "3", "--eval-every", "3", "--hidden", "16", "16",
        "--out", str(tmp_path / "a"),
    )  # fmt: skip
    assert code == 0
    config = load_trainer(tmp_path / "a" / "checkpoint.pt").config
    assert config.average == 0.9
