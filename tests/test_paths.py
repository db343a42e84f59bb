"""The fast path equals the reference (plain autograd) path, in float64."""

from __future__ import annotations

import pytest
import torch
from conftest import make_flow

from ehflow_core import FlowConfig
from ehflow_core.checkpoint import load_trainer, save_checkpoint
from ehflow_core.ensemble import EnsembleTrainer, train_ensemble
from ehflow_core.targets import make_target
from ehflow_core.training import TrainConfig, Trainer

# PyTorch's initialisation (init scales 1) with the outputs ×5 below: the tolerances are set for it
F64 = FlowConfig(hidden=(32, 32), encoder_hidden=(32, 32), dtype="float64", n_steps=3, potential_init_scale=1.0)


def _config(grad_mode: str, **changes) -> TrainConfig:
    base = dict(flow=F64, batch=64, lr=3e-3, max_steps=6, eval_every=3, n_test=128, eval_samples=8, constraint_batch=64)
    return TrainConfig(grad_mode=grad_mode, **{**base, **changes})


def _one_step(trainer: Trainer) -> tuple[float, dict[str, torch.Tensor]]:
    """Loss and parameter gradients of the trainer's next step (without applying it)."""
    loss = trainer.lagrangian(*trainer.objective(*trainer.draw()))
    trainer.optimizer.zero_grad()
    loss.backward()
    return float(loss.detach()), {n: p.grad.clone() for n, p in trainer.flow.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("objective", ["elbo", "iwae", "dreg"])
@pytest.mark.parametrize("kappa", [0.01, None])
@pytest.mark.parametrize("shared", [True, False])
def test_fast_and_reference_paths_give_the_same_loss_and_gradients(objective, kappa, shared):
    target = make_target("ring")
    flow = F64.replace(shared_hamiltonian=shared)
    changes = dict(kappa=kappa, flow=flow, objective=objective, train_samples=4)
    fast = Trainer(_config("fast", **changes), target)
    reference = Trainer(_config("reference", **changes), target)
    with torch.no_grad():  # scale the energies up so the flow is far from the identity
        for trainer in (fast, reference):
            for h in trainer.flow.hamiltonians:
                h.K.out.weight.mul_(5.0)
                h.U.out.weight.mul_(5.0)
    loss_fast, grads_fast = _one_step(fast)
    loss_ref, grads_ref = _one_step(reference)
    assert loss_fast == pytest.approx(loss_ref, rel=1e-12, abs=1e-12)
    assert grads_fast.keys() == grads_ref.keys()
    # Every parameter of K, U and the encoder gets a gradient (the constraint reaches K and U).
    assert len(grads_fast) == len(list(fast.flow.parameters())) - 2 * len(fast.flow.hamiltonians)  # out biases
    for name, g in grads_fast.items():
        assert torch.allclose(g, grads_ref[name], rtol=1e-9, atol=1e-12), name
        assert g.abs().max() > 0, name


def test_fast_and_reference_training_runs_agree():
    target = make_target("ring")
    fast = list(Trainer(_config("fast", kappa=0.05), target).train())
    reference = list(Trainer(_config("reference", kappa=0.05), target).train())
    for a, b in zip(fast, reference, strict=True):
        assert a.loss == pytest.approx(b.loss, rel=1e-9)
        assert a.constraint["L_12"] == pytest.approx(b.constraint["L_12"], rel=1e-9)
        assert a.lam == pytest.approx(b.lam, rel=1e-12)
    assert fast[-1].test_log_likelihood == pytest.approx(reference[-1].test_log_likelihood, rel=1e-9)


def test_fast_and_reference_paths_sample_the_same_points():
    flow = make_flow(n_steps=4, shared_hamiltonian=True)  # the integrated flow (12 steps) needs one H
    draws = {}
    for mode in ("fast", "reference"):
        flow.use_grad_mode(mode)
        draws[mode] = flow.sample(200, torch.Generator().manual_seed(3))
        q_path, _ = flow.trajectory(*flow.sample_base(20, torch.Generator().manual_seed(4)), n_steps=12)
        draws[mode + "_trajectory"] = q_path
    assert not torch.allclose(draws["fast"], flow.sample_base(200, torch.Generator().manual_seed(3))[0])
    assert torch.allclose(draws["fast"], draws["reference"], atol=1e-12)
    assert torch.allclose(draws["fast_trajectory"], draws["reference_trajectory"], atol=1e-12)


def test_grad_mode_is_validated():
    with pytest.raises(ValueError, match="grad_mode must be one of 'fast', 'reference'; got 'slow'"):
        _config("slow")
    with pytest.raises(ValueError, match="grad_mode must be one of"):
        make_flow().use_grad_mode("autograd")


# -- batched ensembles ---------------------------------------------------------------------------
def _members(**changes) -> list[TrainConfig]:
    base = _config("fast", max_steps=12, eval_every=6, **changes)
    return [base.replace(kappa=0.01), base.replace(kappa=0.1, seed=1), base.replace(kappa=None, n_train=50)]


# 0.15 clips most steps: per-member norms; harmonic energies add a stacked scalar weight per energy
@pytest.mark.parametrize("grad_clip, harmonic", [(None, False), (0.15, False), (None, True)])
def test_batched_ensemble_equals_its_members_trained_one_by_one(grad_clip, harmonic):
    target = make_target("ring")
    configs = _members(grad_clip=grad_clip, flow=F64.replace(harmonic=harmonic))
    ensemble, runs = train_ensemble(configs, target)
    assert ensemble.labels == ["κ=0.01/seed0", "κ=0.1/seed1", "none/seed0"]
    for config, label in zip(configs, ensemble.labels):
        alone = Trainer(config, target)
        records = list(alone.train())
        assert len(runs[label]) == len(records) == 12
        for a, b in zip(records, runs[label]):
            assert (a.step, a.kappa, a.constraint.keys()) == (b.step, b.kappa, b.constraint.keys())
            assert a.grad_norm == pytest.approx(b.grad_norm, rel=1e-9)
            assert a.loss == pytest.approx(b.loss, rel=1e-10)
            assert a.lam == pytest.approx(b.lam, rel=1e-12)
            assert a.constraint == pytest.approx(b.constraint, rel=1e-9)
        assert records[-1].test_log_likelihood == pytest.approx(runs[label][-1].test_log_likelihood, rel=1e-10)
        if grad_clip is not None:  # the clip was active (norms are reported before clipping)
            assert sum(r.grad_norm > grad_clip for r in records) >= 6
        member = ensemble.runs_by_label[label]
        for p, q in zip(alone.flow.parameters(), member.flow.parameters(), strict=True):
            assert torch.allclose(p, q, rtol=1e-10, atol=1e-12)
        sample = member.flow.sample(50, torch.Generator().manual_seed(0))
        assert torch.allclose(sample, alone.flow.sample(50, torch.Generator().manual_seed(0)), atol=1e-10)


def test_a_diverging_member_is_frozen_while_the_others_train():
    target = make_target("ring")
    ensemble = EnsembleTrainer(_members(), target)
    bad = ensemble.runs[1]
    with torch.no_grad():
        bad.flow.hamiltonians[0].U.out.weight.mul_(1e9)  # a view: changes the stacked weights too
    frozen = {n: p.detach().clone() for n, p in bad.flow.named_parameters()}
    steps = list(ensemble.train())
    assert len(steps) == 12
    assert steps[0]["κ=0.1/seed1"].event == "diverged" and "loss" in steps[0]["κ=0.1/seed1"].message
    assert all("κ=0.1/seed1" not in records for records in steps[1:])
    for name, p in bad.flow.named_parameters():
        assert torch.equal(p, frozen[name]), name
    alone = list(Trainer(_members()[0], target).train())
    assert [r.loss for r in alone] == pytest.approx([s["κ=0.01/seed0"].loss for s in steps], rel=1e-10)


def test_ensemble_rejects_members_that_differ_in_more_than_kappa_seed_and_data():
    base = _members()[0]
    with pytest.raises(ValueError, match=r"configs\[1\] differs from configs\[0\] in \['batch'\]"):
        EnsembleTrainer([base, base.replace(batch=32)], make_target("ring"))
    with pytest.raises(ValueError, match="configs must hold at least one"):
        EnsembleTrainer([], make_target("ring"))
    with pytest.raises(ValueError, match="labels must be 2 distinct names"):
        EnsembleTrainer([base, base.replace(kappa=0.5)], make_target("ring"), labels=["a", "a"])


def test_a_sweep_members_checkpoint_resumes_exactly_as_the_uninterrupted_run(tmp_path):
    """A member's checkpoint carries its slice of the ensemble's Adam state: resumed alone, it
    continues as the member trained alone from the start would have."""
    target = make_target("ring")
    configs = _members()
    ensemble = EnsembleTrainer(configs, target)
    list(ensemble.train(more_steps=5))
    for m, label in enumerate(ensemble.labels):
        state = ensemble.member_optimizer_state(label)
        alone = Trainer(configs[m], target)
        head = list(alone.train(more_steps=5))
        expected = alone.optimizer_state()["state"]
        assert state["state"].keys() == expected.keys() and len(expected) > 20  # every parameter with a gradient
        for i, entry in expected.items():
            for key, value in entry.items():
                assert torch.allclose(state["state"][i][key], value, rtol=1e-9, atol=1e-15), (i, key)
        path = save_checkpoint(ensemble.runs[m], tmp_path / f"{m}.pt", state)
        resumed = list(load_trainer(path).train())
        straight = list(alone.train())
        assert len(head) == 5
        assert [r.step for r in resumed] == [r.step for r in straight] == list(range(6, 13))
        for a, b in zip(resumed, straight, strict=True):
            assert a.loss == pytest.approx(b.loss, rel=1e-10)
            assert a.grad_norm == pytest.approx(b.grad_norm, rel=1e-9)
            assert a.lam == pytest.approx(b.lam, rel=1e-12)
            assert a.constraint == pytest.approx(b.constraint, rel=1e-9)


def test_a_member_without_its_optimizer_state_is_refused():
    ensemble = EnsembleTrainer(_members(), make_target("ring"))
    with pytest.raises(TypeError, match="optimizer_state is needed for a Run"):
        save_checkpoint(ensemble.runs[0], "unused.pt")
    with pytest.raises(ValueError, match=r"label must name a member of the ensemble, one of \['κ=0.01/seed0'"):
        ensemble.member_optimizer_state("κ=7")
