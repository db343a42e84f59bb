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
from ehflow_core.cli import main, parse_args

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--hidden", "16", "16", "--batch", "64", "--eval-every", "10", "--eval-samples", "8"]


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m ehflow_core ARGS`` in a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "ehflow_core", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """The command line's ``main(ARGS)`` in this process: (exit code, stdout, stderr)."""
    try:
        code = main(list(args))
    except SystemExit as exit_:  # argparse's own errors
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_train_writes_metrics_summary_checkpoint_and_figures(tmp_path):
    out = tmp_path / "run"
    result = run_cli(
        "train", "--target", "ring", "--kappa", "0.01", "--n-train", "100", "--steps", "30", *SMALL, "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    with (out / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 30 and {"step", "train_bound", "constraint_L_12", "lam_L_12", "test_log_likelihood"} <= set(
        rows[0]
    )
    summary = json.loads((out / "summary.json").read_text())
    for key in ("test_elbo", "test_log_likelihood", "n_samples", "train_bound", "entropy", "gap_nats", "constraint",
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


def test_train_on_user_csv_with_holdout_and_named_generators(tmp_path, capsys):
    data = tmp_path / "points.csv"
    rng = np.random.default_rng(0)
    np.savetxt(data, rng.normal(size=(200, 4)), delimiter=",", header="a,b,c,d", comments="")
    out = tmp_path / "run"
    code, _, err = cli(capsys, "train", "--data", str(data), "--generators", "L12,L34", "--kappa", "0.1", "--steps", "12",
                       *SMALL, "--out", str(out))  # fmt: skip
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_test"] == 40 and set(summary["constraint"]) == {"L_12", "L_34"}
    assert "entropy" not in summary  # user data has no exact density


def test_bad_data_file_is_a_clear_error_not_a_traceback(tmp_path, capsys):
    data = tmp_path / "bad.csv"
    data.write_text("x,y\n1,2\n3,oops\n")
    code, _, err = cli(capsys, "train", "--data", str(data), "--steps", "5", "--out", str(tmp_path / "o"))
    assert code == 2
    assert "bad.csv: row 3: 'oops' is not a number" in err and "Traceback" not in err
    code, _, err = cli(capsys, "train", "--dt", "-1", "--out", str(tmp_path / "o"))
    assert code == 2 and "expected a number > 0, got '-1'" in err


def test_argument_errors_are_one_line_that_names_the_value_and_points_to_the_help(tmp_path, capsys):
    for argv, message in [
        (["train", "--steps", "abc"], "argument --steps: expected an integer >= 1, got 'abc'"),
        (["train", "--lr", "inf"], "argument --lr: expected a finite number > 0, got 'inf'"),
        (["train", "--warmup-steps", "-2"], "argument --warmup-steps: expected an integer >= 0, got '-2'"),
        (["train", "--seed", "1.5"], "argument --seed: expected an integer, got '1.5'"),
    ]:
        code, _, err = cli(capsys, *argv, "--out", str(tmp_path / "o"))
        assert code == 2 and err.strip().count("\n") == 0, err  # one line, no usage block
        assert message in err and "_int" not in err and "(usage: python -m ehflow_core train --help)" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_cuda_asked_for_without_cuda_is_an_error_and_auto_runs_on_the_cpu(tmp_path, capsys):
    code, _, err = cli(capsys, "train", "--device", "cuda", "--steps", "1", "--out", str(tmp_path / "o"))
    assert code == 2 and "--device cuda: CUDA is not available on this machine" in err
    assert not (tmp_path / "o").exists()
    out = tmp_path / "auto"
    code, _, err = cli(capsys, "train", "--device", "auto", "--steps", "2", *SMALL, "--out", str(out))
    assert code == 0, err
    assert json.loads((out / "summary.json").read_text())["config"]["flow"]["device"] == "cpu"  # what ran


def test_help_shows_defaults_without_markup(capsys):
    with pytest.raises(SystemExit):
        parse_args(["train", "--help"])
    text = capsys.readouterr().out
    assert "(default: 64)" in text and "(default: dreg)" in text and "gaussians (with --n-modes)" in text
    assert "``" not in text


def test_reproduce_rejects_an_unknown_figure_and_generators_are_parsed_by_name(tmp_path, capsys):
    code, _, err = cli(capsys, "reproduce", "fig3", "--out", str(tmp_path))
    assert code == 2 and "invalid choice: 'fig3'" in err
    code, _, err = cli(capsys, "train", "--generators", "L1_9", "--steps", "1", "--out", str(tmp_path / "o"))
    assert code == 2 and "'L1_9': axes are numbered 1..2 (the data have 2 columns), got 9" in err


def test_paper_flag_gives_the_papers_configuration_and_explicit_options_still_win(tmp_path, capsys):
    defaults = parse_args(["train"])
    assert (defaults.objective, defaults.train_samples, defaults.batch, defaults.lr, defaults.lr_schedule) == (
        "dreg", 8, 64, 5e-3, "cosine",
    )  # fmt: skip
    assert (defaults.warmup_steps, defaults.warmup_fraction) == (300, 0.1)
    assert defaults.per_step_hamiltonians and defaults.kinetic == "mlp"
    paper = parse_args(["train", "--paper"])
    assert (paper.objective, paper.train_samples, paper.batch, paper.lr, paper.lr_schedule) == (
        "elbo", 1, 256, 3e-4, "constant",
    )  # fmt: skip
    assert not paper.per_step_hamiltonians and paper.warmup_steps == 0 and paper.warmup_fraction == 0
    assert (defaults.potential_init_scale, paper.potential_init_scale, paper.kinetic_init_scale) == (10.0, 1.0, 1.0)
    assert (defaults.encoder_covariance, paper.encoder_covariance) == ("full", "diagonal")
    mixed = parse_args(["train", "--lr", "1e-3", "--paper", "--per-step-hamiltonians"])
    assert mixed.lr == 1e-3 and mixed.per_step_hamiltonians and mixed.objective == "elbo"
    assert not parse_args(["train", "--no-per-step-hamiltonians"]).per_step_hamiltonians
    code, _, err = cli(capsys, "train", "--warmup-steps", "-3", "--out", str(tmp_path / "o"))
    assert code == 2 and "expected an integer >= 0, got '-3'" in err
    code, _, err = cli(capsys, "train", "--kinetic", "cubic", "--out", str(tmp_path / "o"))
    assert code == 2 and "invalid choice: 'cubic'" in err
    code, _, err = cli(capsys, "train", "--potential-init-scale", "0", "--out", str(tmp_path / "o"))
    assert code == 2 and "--potential-init-scale" in err and "'0'" in err


def test_the_progress_line_shows_the_average_speed_an_eta_and_the_evaluations_share():
    """80 slow steps (evaluations among them) and 20 fast ones: the line shows the average over the
    call, and the time the remaining steps will take at it, not the recent steps' speed; and what
    share of the time went to evaluation."""
    import io

    from ehflow_core.reporting import progress
    from ehflow_core.run import Record

    def record(step: int, seconds: float, recent: float) -> Record:
        evaluated = step % 20 == 0  # 5 evaluations of 0.162 s: 0.81 s of the 8.2 s, 10 %
        return Record(
            step, seconds, recent, -3.0, 3.0, 1.0, {}, {}, None,
            test_log_likelihood=-2.5 - step / 1000 if evaluated else None, eval_seconds=0.162 if evaluated else None,
        )  # fmt: skip

    records = [record(i, 0.1 * i, 10.0) for i in range(1, 81)]  # 10 steps/s
    records += [record(i, 8.0 + 0.01 * (i - 80), 100.0) for i in range(81, 101)]  # then 100 steps/s
    stream = io.StringIO()
    assert list(progress(iter(records), 1000, label="ring", stream=stream)) == records
    last = stream.getvalue().strip().split("\r")[-1]
    assert "100/1000" in last, last
    average = 99 / (8.2 - 0.1)  # 12.2 steps/s
    assert f"{average:5.1f} steps/s" in last and "100.0 steps/s" not in last, last
    assert "test L_K -2.600" in last and "evaluation 10% of the time" in last, last
    left = 900 / average
    assert f"ETA {int(left // 60):02d}:{int(left % 60):02d}" in last, last  # tqdm's format


def _records_without_timing(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    return [{k: v for k, v in row.items() if k not in ("seconds", "steps_per_s", "eval_seconds")} for row in rows]


INTERRUPTED = ["train", "--kappa", "0.01", "--steps", "150", "--dtype", "float64", *SMALL, "--eval-every", "50"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> list[dict]:
    """The records of ``INTERRUPTED`` run straight through (one run for both signals' tests)."""
    out = tmp_path_factory.mktemp("straight")
    straight = run_cli(*INTERRUPTED, "--out", str(out))
    assert straight.returncode == 0, straight.stderr
    return _records_without_timing(out / "metrics.csv")


@pytest.mark.slow
@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_an_interrupted_train_writes_its_work_and_resume_continues_it_exactly(tmp_path, signal_name, uninterrupted):
    """SIGTERM or Ctrl-C mid-run: metrics, a checkpoint and a summary marked interrupted, exit 130;
    ``--resume`` then ends with the records of the uninterrupted run, step for step. (Both signals
    set the same flag, read between steps, and the same code writes the run: the resume is run
    once, after Ctrl-C.)"""
    import signal
    import threading

    out = tmp_path / "stopped"
    process = subprocess.Popen(
        [sys.executable, "-m", "ehflow_core", *INTERRUPTED, "--out", str(out)],
        cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    seen: list[str] = []

    def watch() -> None:  # the bar's "n/150": signal once the run is a little way in
        buffer = ""
        while char := process.stderr.read(1):
            buffer += char
            seen.append(char)
            steps = [int(n) for n in re_steps.findall(buffer)]
            if steps and 20 <= steps[-1] < 120 and not signalled.is_set():
                signalled.set()
                process.send_signal(getattr(signal, signal_name))

    import re

    re_steps = re.compile(r"\| (\d+)/150")
    signalled = threading.Event()
    reader = threading.Thread(target=watch, daemon=True)
    reader.start()
    process.wait(timeout=300)
    reader.join(timeout=30)  # the reader alone reads standard error, to its end
    stderr = "".join(seen)
    assert signalled.is_set(), stderr
    assert process.returncode == 130, stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and 20 <= summary["steps"] < 150, summary["steps"]
    assert f"interrupted at step {summary['steps']}" in stderr and f"--resume {out}" in stderr
    assert len(_records_without_timing(out / "metrics.csv")) == summary["steps"]
    if signal_name == "SIGTERM":
        return

    resumed = run_cli("train", "--resume", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {out} at step {summary['steps']}" in resumed.stderr
    assert json.loads((out / "summary.json").read_text())["interrupted"] is False
    assert _records_without_timing(out / "metrics.csv") == uninterrupted


def test_resume_refuses_what_it_cannot_continue(tmp_path, capsys):
    code, _, err = cli(capsys, "train", "--resume", str(tmp_path / "nothing"))
    assert code == 2 and "expected a run folder with checkpoint.pt and metrics.csv" in err
    code, _, err = cli(capsys, "train", "--kappa", "inf")
    assert code == 2 and "expected a finite number > 0, got 'inf'" in err


def test_the_bar_follows_a_seconds_budget_that_ends_first():
    """A 2 s budget at 10 steps/s against 1,000 steps: the bar is about 20 steps long and ends full,
    not at 2 % of 1,000."""
    import io

    from ehflow_core.reporting import progress
    from ehflow_core.run import Record

    records = [Record(i, 0.1 * i, 10.0, -3.0, 3.0, 1.0, {}, {}, None) for i in range(1, 21)]
    stream = io.StringIO()
    assert list(progress(iter(records), 1000, label="ring", stream=stream, seconds=2.0)) == records
    lines = stream.getvalue().strip().split("\r")
    assert "100%" in lines[-1] and "20/20" in lines[-1], lines[-1]
    assert not any("/1000" in line for line in lines[1:]), lines  # (before the first step the speed is unknown)


def test_the_console_script_is_the_command_line():
    """``pip install`` puts an ``ehflow`` command beside the interpreter (pyproject's console script)."""
    script = Path(sys.executable).parent / "ehflow"
    assert script.exists(), f"{script} is missing: reinstall the project (pip install -r requirements.txt)"
    result = subprocess.run([str(script), "train", "--steps", "abc"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "argument --steps: expected an integer >= 1, got 'abc'" in result.stderr
