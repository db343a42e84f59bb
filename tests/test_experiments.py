"""The paper's experiments at a tiny size that still asserts what they claim, and generator specs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ehflow_core.cli import parse_generators
from ehflow_core.experiments import FIG2B, FIG2B_FLOW, Fig2aSize, Fig2bSize, reproduce_fig2a, reproduce_fig2b
from ehflow_core.targets import make_target
from ehflow_core.training import TrainConfig, Trainer

TINY_2A = Fig2aSize(steps=100, kappas=(0.001,), n_train=100, seeds=1, eval_every=100, n_test=256, final_samples=16)


@pytest.mark.slow
def test_fig2a_the_constraint_makes_the_flow_symmetric_in_both_regimes(tmp_path, capsys):
    results = reproduce_fig2a(TINY_2A, tmp_path)
    assert set(results["regimes"]) == {"infinite", "finite"}
    for regime, table in results["regimes"].items():
        assert set(table) == {"κ=0.001", "none"}
        on, off = table["κ=0.001"], table["none"]
        # The claim's mechanism: the constraint drives E_π[{g, H}²] down, and the learned density
        # is more invariant under rotations than without it.
        assert on["constraint"]["mean"] < 0.2 * off["constraint"]["mean"], regime
        assert on["invariance_spread"]["mean"] < off["invariance_spread"]["mean"], regime
        for row in table.values():
            assert np.isfinite(row["test_log_likelihood"]["mean"]) and row["gap_nats"]["mean"] > 0  # above the entropy
    assert "train_minus_test" in results["regimes"]["finite"]["none"]
    assert json.loads((tmp_path / "summary.json").read_text())["regimes"] == json.loads(json.dumps(results["regimes"]))
    for name in ("fig2a_infinite.html", "fig2a_finite.html", "fig2a_density.html", "results.md"):
        assert (tmp_path / name).exists(), name
    assert (tmp_path / "finite" / "kappa=0.001_seed0" / "metrics.csv").exists()
    assert "| finite | none |" in capsys.readouterr().out


@pytest.mark.slow
def test_fig2b_grows_a_well_of_u_at_the_modes_as_its_minima_and_the_flow_gathers_there(tmp_path):
    """What Figure 2B draws: the learned U has wells (local minima: the convex K rules out the
    time-reversed solution, whose wells are maxima) at the target's modes, and the integrated flow
    carries base samples towards them, more of its positions near a mode than the base's own. The
    command line's quick reproduction (``reproduce fig2b --quick``, seed 0: 600 steps; the full
    one's five seeds are bench.fig2b's), evaluated on fewer test points: a few seconds."""
    steps = FIG2B["quick"].steps
    size = Fig2bSize(steps=steps, eval_every=steps, n_test=256, final_samples=16)
    untrained = Trainer(
        TrainConfig(flow=TrainConfig().flow.replace(**FIG2B_FLOW), n_test=256), make_target("gaussians8"), generators=[]
    )
    before = untrained.evaluate()["test_log_likelihood"]
    summary = reproduce_fig2b(size, tmp_path)
    assert summary["test_log_likelihood"] > before + 0.2, (before, summary["test_log_likelihood"])
    attractors = summary["attractors"]
    assert attractors["wells_are"] == "minima of U", attractors
    assert attractors["n_modes"] == 8 and attractors["modes_with_minimum"] == 8, attractors
    assert attractors["share_near_modes_flow"] > 1.5 * attractors["share_near_modes_base"], attractors
    for name in ("fig2b_trajectories.html", "density.html", "energies.html", "checkpoint.pt", "metrics.csv"):
        assert (tmp_path / name).exists(), name


@pytest.mark.parametrize(
    "spec, names",
    [
        ("L12,L34", ["L_12", "L_34"]),
        ("L1_12, P12", ["L_1_12", "P_12"]),
        ("L_10_11,L_12", ["L_10_11", "L_12"]),
        ("so", [f"L_{i}{j}" for i in range(1, 10) for j in range(i + 1, 10)] + ["L_1_10"]),
        ("none", []),
    ],
)
def test_generator_specs_name_axes_of_any_size(spec, names):
    gens = parse_generators(spec, 12)
    if spec == "so":
        assert len(gens) == 66 and all(n in [g.name for g in gens] for n in names)
    else:
        assert [g.name for g in gens] == names


@pytest.mark.parametrize(
    "spec, message",
    [
        ("L13", r"'L13': axes are numbered 1..2 \(the data have 2 columns\), got 3"),
        ("L0_1", r"'L0_1': axes are numbered 1..2 \(the data have 2 columns\), got 0"),
        ("R12", r"'R12': expected 'so', 'none' or items like L12, L1_12 or P1"),
        ("L11", r"'L11': a rotation plane needs two different axes"),
        ("L12,L_12", r"each generator at most once, got \['L_12', 'L_12'\]"),
    ],
)
def test_bad_generator_specs_are_rejected_by_name(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_generators(spec, 2)


class _StopAfter:
    """A stop request that turns on after ``checks`` reads (as a Ctrl-C part-way through would)."""

    def __init__(self, checks: int) -> None:
        self.checks = checks

    @property
    def requested(self) -> bool:
        self.checks -= 1
        return self.checks < 0


def test_an_interrupted_fig2a_writes_its_runs_and_their_checkpoints_continue(tmp_path):
    from ehflow_core.checkpoint import load_trainer

    size = Fig2aSize(steps=40, kappas=(0.01,), n_train=50, seeds=1, eval_every=20, n_test=64, final_samples=8)
    results = reproduce_fig2a(size, tmp_path, stop=_StopAfter(12))  # a check per regime, then one a step
    assert results["interrupted"] == {"regime": "infinite", "step": 12} and set(results["regimes"]) == {"infinite"}
    assert "**Interrupted**: the infinite regime at step 12 of 40" in (tmp_path / "results.md").read_text()
    folder = tmp_path / "infinite" / "kappa=0.01_seed0"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["steps"] == 12
    resumed = load_trainer(folder / "checkpoint.pt")
    assert resumed.step == 12 and resumed.kappa == 0.01
    assert [r.step for r in resumed.train()][-1] == 40
