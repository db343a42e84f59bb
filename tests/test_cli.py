"""The command line: train writes what it promises; the paper's reproductions run at --quick size."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ehflow_core import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--hidden", "16", "16", "--batch", "64", "--eval-every", "10", "--eval-samples", "8"]


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ehflow_core", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def test_train_writes_metrics_summary_checkpoint_and_figures(tmp_path):
    out = tmp_path / "run"
    result = run_cli(
        "train", "--target", "ring", "--kappa", "0.01", "--n-train", "100", "--steps", "30", *SMALL, "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    with (out / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 30 and {"step", "train_elbo", "constraint_L_12", "lam_L_12", "test_log_likelihood"} <= set(
        rows[0]
    )
    summary = json.loads((out / "summary.json").read_text())
    for key in ("test_elbo", "test_log_likelihood", "n_samples", "train_elbo", "entropy", "gap_nats", "constraint",
                "lam", "invariance_error", "steps", "seconds", "config"):  # fmt: skip
        assert key in summary, key
    assert summary["steps"] == 30 and summary["config"]["kappa"] == 0.01 and summary["config"]["n_train"] == 100
    assert summary["gap_nats"] == pytest.approx(-summary["test_log_likelihood"] - summary["entropy"])
    assert set(summary["constraint"]) == {"L_12"} and summary["lam"]["L_12"] > 0
    for name in ("density", "energies", "trajectories", "curves", "constraint"):
        assert (out / f"{name}.html").stat().st_size > 1000
    flow = load_checkpoint(out / "checkpoint.pt")
    assert flow.config.hidden == (16, 16) and flow.sample(5).shape == (5, 2)
    assert "test log-likelihood" in result.stdout


def test_train_on_user_csv_with_holdout_and_named_generators(tmp_path):
    data = tmp_path / "points.csv"
    rng = np.random.default_rng(0)
    np.savetxt(data, rng.normal(size=(200, 4)), delimiter=",", header="a,b,c,d", comments="")
    out = tmp_path / "run"
    result = run_cli(
        "train",
        "--data",
        str(data),
        "--generators",
        "L12,L34",
        "--kappa",
        "0.1",
        "--steps",
        "12",
        *SMALL,
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_test"] == 40 and set(summary["constraint"]) == {"L_12", "L_34"}
    assert "entropy" not in summary  # user data has no exact density


def test_bad_data_file_is_a_clear_error_not_a_traceback(tmp_path):
    data = tmp_path / "bad.csv"
    data.write_text("x,y\n1,2\n3,oops\n")
    result = run_cli("train", "--data", str(data), "--steps", "5", "--out", str(tmp_path / "o"))
    assert result.returncode == 2
    assert "bad.csv: row 3: 'oops' is not a number" in result.stderr and "Traceback" not in result.stderr
    result = run_cli("train", "--dt", "-1", "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "expected a finite number > 0, got -1" in result.stderr


def test_reproduce_fig2a_quick(tmp_path):
    out = tmp_path / "fig2a"
    result = run_cli("reproduce", "fig2a", "--quick", "--out", str(out))
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["regimes"]) == {"infinite", "finite"}
    for table in summary["regimes"].values():
        assert set(table) == {"kappa=0.01", "none"}
        for row in table.values():
            assert np.isfinite(row["test_log_likelihood"]["mean"])
    assert "train_minus_test" in summary["regimes"]["finite"]["none"]
    for name in ("fig2a_infinite.html", "fig2a_finite.html", "fig2a_density.html", "results.md"):
        assert (out / name).exists(), name
    assert (out / "finite" / "none_seed0" / "metrics.csv").exists()


def test_reproduce_fig2b_quick(tmp_path):
    out = tmp_path / "fig2b"
    result = run_cli("reproduce", "fig2b", "--quick", "--out", str(out))
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    attractors = summary["attractors"]
    assert attractors["n_modes"] == 8 and 0 <= attractors["share_near_modes_flow"] <= 1
    for name in ("fig2b_trajectories.html", "density.html", "energies.html", "checkpoint.pt", "metrics.csv"):
        assert (out / name).exists(), name
    assert torch.isfinite(torch.tensor(summary["test_log_likelihood"]))
