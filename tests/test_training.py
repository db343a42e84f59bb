"""Training engine: learning, multipliers, the constraint's effect, divergence, reproducibility, checkpoints."""

from __future__ import annotations

import copy
import dataclasses
import json
import math

import pytest
import torch

from ehflow_core import FlowConfig
from ehflow_core.checkpoint import load_checkpoint, load_trainer, read_checkpoint, save_checkpoint
from ehflow_core.ensemble import kappa_sweep
from ehflow_core.targets import make_target
from ehflow_core.training import Record, TrainConfig, Trainer

SMALL = FlowConfig(hidden=(32, 32), encoder_hidden=(32, 32))


def small_config(**changes) -> TrainConfig:
    base = dict(
        flow=SMALL, batch=64, lr=3e-3, max_steps=100, eval_every=50, n_test=256, eval_samples=16, constraint_batch=128
    )
    base.update(changes)
    return TrainConfig(**base)


def _comparable(record: Record) -> dict:
    row = dataclasses.asdict(record)
    row.pop("seconds")
    row.pop("steps_per_s")
    row.pop("eval_seconds")
    return row


def test_short_run_improves_the_test_likelihood():
    # a constant rate: a cosine decay over 200 steps spends half of this short run at a small rate
    trainer = Trainer(small_config(max_steps=200, lr_schedule="constant"), make_target("ring"))
    before = trainer.evaluate()["test_log_likelihood"]
    records = list(trainer.train())
    after = records[-1].test_log_likelihood
    assert len(records) == 200 and records[-1].step == 200
    assert after > before + 0.3, (before, after)
    assert [r.step for r in records if r.test_log_likelihood is not None] == [50, 100, 150, 200]


def test_multiplier_rises_while_violated_and_falls_once_it_holds():
    target = make_target("ring")
    strict = Trainer(small_config(kappa=1e-8, max_steps=60, geco_rate=0.05), target)
    lam = [r.lam["L_12"] for r in strict.train()]
    assert lam[-1] > lam[0] and all(b >= a for a, b in zip(lam, lam[1:]))
    loose = Trainer(small_config(kappa=1e3, max_steps=60, geco_rate=0.05), target)
    lam = [r.lam["L_12"] for r in loose.train()]
    assert lam[-1] < lam[0] and all(b <= a for a, b in zip(lam, lam[1:]))


def test_huge_dt_gives_a_divergence_record_and_keeps_finite_weights():
    config = small_config(flow=SMALL.replace(dt=1e20), max_steps=20)
    trainer = Trainer(config, make_target("ring"))
    before = {k: v.clone() for k, v in trainer.flow.state_dict().items()}
    records = list(trainer.train())
    assert records[-1].event == "diverged"
    assert "dt=1e+20" in records[-1].message and "too large" in records[-1].message
    assert trainer.step == 0
    for key, value in trainer.flow.state_dict().items():
        assert torch.isfinite(value).all() and torch.equal(value, before[key]), key


def test_continue_on_divergence_stops_after_max_in_a_row():
    config = small_config(flow=SMALL.replace(dt=1e20), on_divergence="continue", max_divergences=3)
    records = list(Trainer(config, make_target("ring")).train())
    assert [r.event for r in records] == ["diverged"] * 3


def test_same_seed_same_records_in_float64():
    config = small_config(flow=SMALL.replace(dtype="float64"), kappa=0.01, n_train=100, max_steps=30, eval_every=10)
    first = [_comparable(r) for r in Trainer(config, make_target("ring")).train()]
    second = [_comparable(r) for r in Trainer(config, make_target("ring")).train()]
    assert first == second
    other = [_comparable(r) for r in Trainer(config.replace(seed=1), make_target("ring")).train()]
    assert other != first


def test_finite_data_uses_a_fixed_training_set_and_reports_train_likelihood():
    trainer = Trainer(small_config(n_train=50, max_steps=50), make_target("ring"))
    assert trainer.train_data.shape == (50, 2)
    fixed = trainer.train_data.clone()
    records = list(trainer.train())
    assert torch.equal(trainer.train_data, fixed)
    assert records[-1].train_log_likelihood is not None
    infinite = list(Trainer(small_config(max_steps=50), make_target("ring")).train())
    assert infinite[-1].train_log_likelihood is None


def test_budget_in_steps_and_seconds_and_resume():
    trainer = Trainer(small_config(max_steps=1000), make_target("ring"))
    assert len(list(trainer.train(more_steps=7))) == 7 and trainer.step == 7
    assert len(list(trainer.train(more_steps=5))) == 5 and trainer.step == 12
    records = list(trainer.train(seconds=0.5))
    assert 0 < len(records) < 988 and records[-1].test_log_likelihood is not None  # evaluated at the end


def test_live_kappa_and_learning_rate():
    trainer = Trainer(small_config(max_steps=100, warmup_steps=0, warmup_fraction=0.0), make_target("ring"))
    assert trainer.lam == {"L_12": 0.0}
    trainer.set_kappa(0.5)
    trainer.set_lr(1e-2)
    record = next(trainer.train(more_steps=1))
    assert record.kappa == 0.5 and record.lam["L_12"] > 0 and "L_12" in record.constraint
    assert trainer.optimizer.param_groups[0]["lr"] == 1e-2
    with pytest.raises(ValueError, match=r"kappa must be a finite number > 0, got -1.0"):
        trainer.set_kappa(-1.0)


def test_a_kappa_change_rebases_the_multipliers_state(tmp_path):
    trainer = Trainer(small_config(kappa=0.01), make_target("ring"))
    trainer.log_lam = torch.tensor([math.log(50.0)], dtype=torch.float64)
    trainer.violation = torch.tensor([0.4], dtype=torch.float64)  # the average C is 1.4 κ = 0.014
    trainer.set_kappa(0.1)  # looser: the same average C is 0.14 of the new κ; λκ is kept
    assert trainer.violation.item() == pytest.approx(0.014 / 0.1 - 1)
    assert trainer.lam["L_12"] == pytest.approx(5.0)
    trainer.set_kappa(0.001)  # stricter: λ is left to rise at its own rate, the violation is re-expressed
    assert trainer.lam["L_12"] == pytest.approx(5.0)
    assert trainer.violation.item() == pytest.approx(0.014 / 0.001 - 1)
    trainer.set_kappa(None)
    assert trainer.lam == {"L_12": 0.0} and trainer.multiplier_kappa == 0.001
    trainer = load_trainer(save_checkpoint(trainer, tmp_path / "checkpoint.pt"))  # a checkpoint keeps it
    assert trainer.kappa is None and trainer.multiplier_kappa == 0.001
    trainer.set_kappa(0.01)  # taken up again: rebased from the κ the multipliers last moved under
    assert trainer.lam["L_12"] == pytest.approx(0.5) and trainer.violation.item() == pytest.approx(0.4)
    trainer.log_lam = torch.tensor([-8.0], dtype=torch.float64)
    trainer.set_kappa(1e6)  # λ stays within its clamp
    assert trainer.log_lam.item() == -trainer.config.log_lam_max


@pytest.fixture
def one_thread():
    """One torch thread for a long run of a small model: its step is bound by each op's overhead,
    not by arithmetic, and a second thread only waits at every op for the first, the longer when
    other processes share the cores."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.slow
def test_kappa_moved_far_and_back_loses_nothing(one_thread):
    """A trained run's κ moved to 1e-4 for 500 steps and back to 1: λ falls back at once and the
    test likelihood is back within 0.05 nats of the untouched run's 200 steps later (the
    multipliers' old rule kept λ rising to ~1,300 and lost 0.23 nats)."""
    config = small_config(kappa=1.0, lr_schedule="constant", max_steps=10**6, eval_every=10**6, n_test=512)
    trained = Trainer(config, make_target("ring"))
    list(trained.train(more_steps=300))
    untouched, moved = copy.deepcopy(trained), copy.deepcopy(trained)
    list(untouched.train(more_steps=700))
    moved.set_kappa(1e-4)
    list(moved.train(more_steps=500))
    strict_lam = moved.lam["L_12"]
    assert strict_lam > 10 * trained.lam["L_12"]  # the strict κ was in force
    moved.set_kappa(1.0)
    after = [record.lam["L_12"] for record in moved.train(more_steps=200)]
    assert max(after) < strict_lam / 1000 and after[-1] <= after[0]
    gap = untouched.evaluate()["test_log_likelihood"] - moved.evaluate()["test_log_likelihood"]
    assert gap < 0.05, gap


def test_warm_up_then_cosine_decay_over_the_budget():
    config = small_config(max_steps=20, lr=1e-2, warmup_steps=4, warmup_fraction=0.0, lr_schedule="cosine")
    trainer = Trainer(config, make_target("ring"))
    rates = []
    for _ in trainer.train():
        rates.append(trainer.optimizer.param_groups[0]["lr"])  # the rate the step just used
    assert rates[:4] == pytest.approx([1e-2 * (s + 1) / 4 * 0.5 * (1 + math.cos(math.pi * s / 20)) for s in range(4)])
    assert rates[10] == pytest.approx(1e-2 * 0.5 * (1 + math.cos(math.pi * 10 / 20)))
    assert all(a < b for a, b in zip(rates[:3], rates[1:4])) and all(a > b for a, b in zip(rates[3:], rates[4:]))
    assert rates[-1] == pytest.approx(1e-2 * 0.5 * (1 + math.cos(math.pi * 19 / 20)))
    assert trainer.lr == 0.0 and trainer.base_lr == 1e-2  # the budget is spent
    trainer.set_lr(5e-3)
    assert trainer.base_lr == 5e-3
    timed = Trainer(small_config(max_steps=10**9, seconds=60.0, lr_schedule="cosine"), make_target("ring"))
    timed.seconds = 45.0  # three quarters of the wall-time budget spent
    assert timed.lr == pytest.approx(3e-3 * 0.5 * (1 + math.cos(math.pi * 0.75)))


@pytest.mark.parametrize(
    ("warmup_steps", "warmup_fraction", "ends_after"),
    [(0, 0.0, 1), (8, 0.0, 8), (0, 0.25, 10), (8, 0.25, 8), (30, 0.25, 10)],  # whichever bound comes first
)
def test_the_warm_up_ends_after_its_steps_or_its_share_of_the_budget_whichever_comes_first(
    warmup_steps, warmup_fraction, ends_after
):
    config = small_config(
        max_steps=40, lr=1e-2, lr_schedule="constant", warmup_steps=warmup_steps, warmup_fraction=warmup_fraction
    )
    trainer = Trainer(config, make_target("ring"))
    rates = []
    for _ in trainer.train():
        rates.append(trainer.optimizer.param_groups[0]["lr"])
    by_steps = [(s + 1) / warmup_steps if warmup_steps else 0.0 for s in range(40)]
    by_budget = [(s + 1) / 40 / warmup_fraction if warmup_fraction else 0.0 for s in range(40)]
    warm = warmup_steps or warmup_fraction
    assert rates == pytest.approx([1e-2 * (min(1.0, max(a, b)) if warm else 1.0) for a, b in zip(by_steps, by_budget)])
    assert all(r < 1e-2 for r in rates[: ends_after - 1])
    assert rates[ends_after - 1 :] == pytest.approx([1e-2] * (41 - ends_after))
    timed = Trainer(small_config(max_steps=10**9, seconds=100.0, lr_schedule="constant", lr=1e-2), make_target("ring"))
    timed.seconds = 4.0  # 4 % of the budget spent: 40 % of the default warm-up's tenth
    assert timed.lr == pytest.approx(1e-2 * 0.4)


def test_checkpoint_round_trip_and_resume_equals_uninterrupted(tmp_path):
    config = small_config(
        flow=SMALL.replace(dtype="float64"), kappa=0.01, max_steps=20, eval_every=10, lr_schedule="cosine",
        warmup_steps=3,
    )  # fmt: skip
    target = make_target("ring")
    straight = Trainer(config, target)
    expected = [_comparable(r) for r in straight.train()]

    first = Trainer(config, target)
    head = [_comparable(r) for r in first.train(more_steps=10)]
    path = save_checkpoint(first, tmp_path / "checkpoint.pt")
    flow = load_checkpoint(path)
    q, p = torch.randn(16, 2, dtype=torch.float64), torch.randn(16, 2, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(flow.log_prob_joint(q, p), first.flow.log_prob_joint(q, p))
        assert torch.equal(flow.forward_flow(q, p)[0], first.flow.forward_flow(q, p)[0])
    resumed = load_trainer(path)
    tail = [_comparable(r) for r in resumed.train()]
    assert head + tail == expected


def _first_layers(trainer: Trainer) -> list[torch.Tensor]:
    """The weights of U's and K's first layers, for every Hamiltonian of the trainer's flow."""
    energies = [e for h in trainer.flow.hamiltonians for e in (h.U, h.K)]
    return [(e.ridges if hasattr(e, "ridges") else e.hidden_layers[0]).weight for e in energies]


@pytest.mark.parametrize("kinetic", ["mlp", "convex"])
def test_column_major_first_layers_train_as_row_major_ones_and_keep_their_layout(tmp_path, kinetic):
    """The energies' first layers are stored column-major (a faster layout for the skinny
    products of the closed-form gradient: nets.column_major_). The same run with those weights
    row-major gives the same records in float64 (to rounding: the sums run in another order);
    the layout survives Adam's steps and a checkpoint's resume, and Adam's moments take it too."""
    config = small_config(flow=SMALL.replace(dtype="float64", kinetic=kinetic), kappa=0.01, max_steps=12, eval_every=6)
    target = make_target("ring")
    fast, plain = Trainer(config, target), Trainer(config, target)
    for weight in _first_layers(plain):
        weight.data = weight.data.contiguous()

    def column_major(weight: torch.Tensor) -> bool:
        return weight.stride() == (1, weight.shape[0])

    assert all(column_major(w) and not w.is_contiguous() for w in _first_layers(fast))
    for ours, theirs in zip(fast.train(), plain.train()):
        a, b = _comparable(ours), _comparable(theirs)
        assert a.keys() == b.keys()
        for key, value in a.items():
            if isinstance(value, (float, dict)):
                assert value == pytest.approx(b[key], rel=1e-9, abs=1e-12), key
            else:
                assert value == b[key], key
    state = fast.optimizer.state
    assert all(column_major(w) and column_major(state[w]["exp_avg"]) for w in _first_layers(fast))
    resumed = load_trainer(save_checkpoint(fast, tmp_path / "checkpoint.pt"))
    assert all(column_major(w) for w in _first_layers(resumed))
    assert all(torch.equal(a, b) for a, b in zip(_first_layers(resumed), _first_layers(fast)))


def test_a_checkpoint_from_before_the_schedule_kinetic_init_and_encoder_options_resumes_as_it_ran(tmp_path):
    before = small_config(max_steps=5, flow=SMALL.replace(encoder_covariance="diagonal"))  # as a run of then was
    path = save_checkpoint(Trainer(before, make_target("ring")), tmp_path / "new.pt")
    state = read_checkpoint(path)
    plain = json.loads(state["train_config"])
    for key in ("lr_schedule", "warmup_steps", "warmup_fraction"):
        del plain[key]
    for key in ("kinetic", "potential_init_scale", "kinetic_init_scale", "encoder_covariance"):
        del plain["flow"][key]
    torch.save({**state, "train_config": json.dumps(plain)}, tmp_path / "old.pt")
    config = load_trainer(tmp_path / "old.pt").config
    assert (config.lr_schedule, config.warmup_steps, config.warmup_fraction, config.flow.kinetic) == (
        "constant", 0, 0.0, "mlp",
    )  # fmt: skip
    assert (config.flow.potential_init_scale, config.flow.kinetic_init_scale) == (1.0, 1.0)  # PyTorch's init
    assert config.flow.encoder_covariance == "diagonal"
    assert load_trainer(path).config.lr_schedule == "cosine"


def test_bad_checkpoints_are_rejected(tmp_path):
    trainer = Trainer(small_config(max_steps=1), make_target("ring"))
    good = save_checkpoint(trainer, tmp_path / "good.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"truncated.pt: not a readable ehflow checkpoint"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state": torch.zeros(3)}, foreign)
    with pytest.raises(ValueError, match=r"foreign.pt: not an ehflow checkpoint"):
        load_checkpoint(foreign)
    text = tmp_path / "text.pt"
    text.write_text("hello")
    with pytest.raises(ValueError, match=r"text.pt: not a readable ehflow checkpoint"):
        read_checkpoint(text)
    with pytest.raises(ValueError, match=r"nothing.pt: no such file"):
        load_checkpoint(tmp_path / "nothing.pt")


def test_kappa_sweep_labels_and_lengths():
    runs = kappa_sweep(small_config(max_steps=10, eval_every=5), make_target("ring"), [0.1, 0.01])
    assert list(runs) == ["κ=0.1", "κ=0.01", "none"]
    assert all(len(records) == 10 for records in runs.values())
    assert runs["none"][-1].lam == {"L_12": 0.0} and runs["κ=0.1"][-1].kappa == 0.1


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"kappa": 0.0}, r"kappa must be a finite number > 0, got 0.0"),
        ({"batch": 0}, r"batch must be an integer >= 1, got 0"),
        ({"lr": float("nan")}, r"lr must be a finite number, got nan"),
        ({"n_train": 1}, r"n_train must be an integer >= 2, got 1"),
        ({"on_divergence": "panic"}, r"on_divergence must be one of 'stop', 'continue'; got 'panic'"),
        ({"lr_schedule": "linear"}, r"lr_schedule must be one of 'constant', 'cosine'; got 'linear'"),
        ({"warmup_steps": -1}, r"warmup_steps must be an integer >= 0, got -1"),
        ({"warmup_fraction": 1.5}, r"warmup_fraction must be <= 1.0, got 1.5"),
        ({"warmup_fraction": -0.1}, r"warmup_fraction must be >= 0.0, got -0.1"),
    ],
)
def test_bad_train_config(changes, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**changes)


def test_target_and_flow_dimensions_must_agree():
    with pytest.raises(ValueError, match=r"target 'shell3d' has dim 3, but config.flow.dim is 2"):
        Trainer(small_config(), make_target("shell3d"))


@pytest.mark.parametrize("kappa", [None, 0.01])
def test_metrics_csv_reads_back_to_the_same_records(tmp_path, kappa):
    from ehflow_core.reporting import read_metrics, write_metrics

    records = list(Trainer(small_config(kappa=kappa, max_steps=20, eval_every=10), make_target("ring")).train())
    write_metrics(records, tmp_path / "metrics.csv")
    assert read_metrics(tmp_path / "metrics.csv") == records
