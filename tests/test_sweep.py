"""Sweeps (``ehflow_core.sweep``): the grid, the local and Ray backends, resuming, failures.

The Ray tests use the session's two-node Ray cluster on this machine (``local_ray``): the module
is marked slow.
"""

from __future__ import annotations

import csv
import io
import json
import re
import threading
import time

import pytest
import torch

from bench.sweep import kill_first_worker
from ehflow_core import experiments
from ehflow_core.cli import main
from ehflow_core.experiments import Fig2aSize
from ehflow_core.sweep import (
    LocalBackend,
    RayBackend,
    RunSpec,
    SweepSpec,
    make_backend,
    paired_with_unconstrained,
    run_sweep,
)

pytestmark = pytest.mark.slow

# 2 κ × 2 seeds, in 3 segments each (checkpoints at 5 and 10 steps); an evaluation at step 6 and 12.
GRID = dict(kappa=(0.01, None), seeds=(0, 1), steps=12, eval_every=6, checkpoint_every=5, n_test=128, final_samples=8)
VOLATILE = ("seconds", "steps_per_s", "eval_seconds")  # wall-clock columns


def _records(out, spec: SweepSpec) -> dict[str, list[dict[str, str]]]:
    """Each run's metrics rows, by run key, without the wall-clock columns."""
    runs = {}
    for run in spec.runs:
        rows = list(csv.DictReader(io.StringIO((out / "runs" / run.key / "metrics.csv").read_text())))
        runs[run.key] = [{k: v for k, v in row.items() if k not in VOLATILE} for row in rows]
    return runs


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    """The grid on the local backend, uninterrupted: the reference every other run is compared with."""
    spec = SweepSpec(**GRID)
    out = tmp_path_factory.mktemp("local")
    rows = run_sweep(spec, out, LocalBackend(workers=2), stream=None)
    return spec, out, rows


# -- the grid and its files ------------------------------------------------------------------------
def test_the_grid_is_every_combination_and_a_runs_folder_is_its_configs_hash():
    spec = SweepSpec(target=("ring", "two_moons"), kappa=(0.01, None), seeds=(0, 1, 2), n_train=(200, None))
    assert len(spec.runs) == 2 * 2 * 3 * 2
    assert len({run.key for run in spec.runs}) == len(spec.runs)
    again = SweepSpec(target=("two_moons", "ring"), kappa=(None, 0.01), seeds=(2, 1, 0), n_train=(None, 200))
    assert {run.key for run in again.runs} == {run.key for run in spec.runs}  # order does not matter
    run = spec.runs[0]
    assert RunSpec(**{**run.__dict__, "seed": 7}).key != run.key
    assert SweepSpec.from_mapping(spec.to_mapping()) == spec


def test_a_sweep_writes_each_run_and_a_table_over_seeds(local_sweep):
    spec, out, rows = local_sweep
    assert [r["status"] for r in rows] == ["finished"] * 4 and all(r["steps"] == 12 for r in rows)
    for run in spec.runs:
        folder = out / "runs" / run.key
        assert {"config.json", "metrics.csv", "checkpoint.pt", "summary.json", "outcome.json"} <= {
            f.name for f in folder.iterdir()
        }
        assert [int(r["step"]) for r in _records(out, spec)[run.key]] == list(range(1, 13))  # each step once
    results = list(csv.DictReader(io.StringIO((out / "results.csv").read_text())))
    assert len(results) == 4 and {"target", "kappa", "seed", "n_train", "status", "steps", "test_log_likelihood",
                                   "gap_nats"} <= set(results[0])  # fmt: skip
    table = json.loads((out / "table.json").read_text())
    assert len(table) == 2 and all(e["finished"] == 2 and e["seeds"] == [0, 1] for e in table)
    for entry in table:
        values = [float(r["gap_nats"]) for r in results if (r["kappa"] or None) == _csv(entry["kappa"])]
        stat = entry["gap_nats"]
        assert stat["mean"] == pytest.approx(sum(values) / 2)
        low, high = stat["ci95"]
        assert low < stat["mean"] < high  # t(1)'s interval is wide: 12.7 sd / √2 each side
        assert high - stat["mean"] == pytest.approx(12.706 * stat["sd"] / 2**0.5, rel=1e-3)
    assert "| ring | ∞ | 0.5 | 2 | 0.005 | none | 2 / 2 |" in (out / "table.md").read_text()
    curves = (out / "curves" / "ring_inf_dt0p5_steps2_lr0p005.html").read_text()  # one figure, both κ, seed 0
    assert {"κ=0.01 test L_32", "none test L_32", "none train L_8 (batches)"} <= _trace_names(curves)


def _trace_names(html: str) -> set[str]:
    """The trace names of a Plotly HTML page, as JSON strings decoded (plotly escapes non-ASCII
    characters as \\uXXXX when it writes with the standard json module, and not with orjson)."""
    return {json.loads(literal) for literal in re.findall(r'"name":("(?:[^"\\]|\\.)*")', html)}


def _csv(kappa):
    return None if kappa is None else str(kappa)


def test_running_a_finished_sweep_again_trains_nothing(local_sweep):
    spec, out, rows = local_sweep

    class NoWork:
        name, capacity, pending = "none", 1, {}

        def submit(self, *args):
            raise AssertionError("a finished run was trained again")

        def close(self):
            pass

    assert run_sweep(spec, out, NoWork(), stream=None) == rows


def test_a_stopped_sweep_resumes_from_its_checkpoints_with_the_same_records(local_sweep, tmp_path):
    """Ctrl-C after a few segments: run again, and every run ends with the uninterrupted records."""
    spec, reference, _ = local_sweep

    class StopAfter(LocalBackend):
        segments = 0

        def next_done(self):
            StopAfter.segments += 1
            if StopAfter.segments == 4:
                raise KeyboardInterrupt
            return super().next_done()

    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, tmp_path, StopAfter(workers=1), stream=None)
    started = [run for run in spec.runs if (tmp_path / "runs" / run.key / "checkpoint.pt").exists()]
    assert started and not (tmp_path / "results.csv").exists()
    rows = run_sweep(spec, tmp_path, LocalBackend(workers=1), stream=None)  # in this process: the same records
    assert [r["status"] for r in rows] == ["finished"] * 4
    assert _records(tmp_path, spec) == _records(reference, spec)


def test_reproduce_fig2a_on_a_backend_is_a_sweep_with_each_kappa_paired_against_none(tmp_path, monkeypatch, capsys):
    tiny = Fig2aSize(steps=10, kappas=(0.01,), n_train=100, seeds=2, eval_every=10, n_test=128, final_samples=8)
    monkeypatch.setitem(experiments.FIG2A, "quick", tiny)
    argv = ["reproduce", "fig2a", "--quick", "--backend", "local", "--workers", "1", "--out", str(tmp_path)]
    assert main(argv) == 0
    rows = list(csv.DictReader(io.StringIO((tmp_path / "results.csv").read_text())))
    assert len(rows) == 8 and {r["status"] for r in rows} == {"finished"}  # 2 κ × 2 regimes × 2 seeds
    test_ll = {(r["n_train"], r["kappa"], int(r["seed"])): float(r["test_log_likelihood"]) for r in rows}
    paired = json.loads((tmp_path / "paired.json").read_text())
    assert sorted((e["n_train"] or 0, e["kappa"], tuple(e["seeds"])) for e in paired) == [
        (0, 0.01, (0, 1)),
        (100, 0.01, (0, 1)),
    ]
    for entry in paired:
        n = "" if entry["n_train"] is None else str(entry["n_train"])
        diffs = [test_ll[(n, "0.01", seed)] - test_ll[(n, "", seed)] for seed in (0, 1)]
        assert entry["test_ll_minus_none"]["mean"] == pytest.approx(sum(diffs) / 2)
    assert "Against the unconstrained run of the same setting and seed" in capsys.readouterr().out
    # A seed whose unconstrained twin did not finish is left out of the pairing.
    parsed = run_sweep(experiments.fig2a_sweep(tiny), tmp_path, LocalBackend(workers=1), stream=None)  # trains nothing
    for row in parsed:
        if row["kappa"] is None and row["seed"] == 1:
            row["status"] = "failed"
    assert {tuple(e["seeds"]) for e in paired_with_unconstrained(parsed)} == {(0,)}
    assert all(e["test_ll_minus_none"]["sd"] is None for e in paired_with_unconstrained(parsed))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["reproduce", "fig2b", "--backend", "local"], "--backend: only fig2a is a sweep"),
        (["reproduce", "fig2a", "--address", "auto"], "--address and --workers are for --backend local|ray"),
    ],
)
def test_reproduce_refuses_a_backend_it_cannot_use_in_one_line(argv, message, capsys, tmp_path):
    assert main([*argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_a_sweep_over_a_data_file_sends_its_points_with_the_runs(tmp_path):
    import numpy as np

    from ehflow_core.targets import make_target

    points = make_target("two_moons").sample(300, torch.Generator().manual_seed(0), dtype=torch.float64).numpy()
    data = tmp_path / "moons.csv"
    np.savetxt(data, points, delimiter=",", header="x,y", comments="")
    spec = SweepSpec.from_mapping({"data": [str(data)], "kappa": [0.01, "none"], "steps": 6, "eval_every": 3,
                                   "checkpoint_every": 3, "final_samples": 8, "holdout": 0.25})  # fmt: skip
    assert [run.target for run in spec.runs] == [str(data)] * 2  # the files alone: no default target
    data.rename(tmp_path / "elsewhere.csv")  # read once, on the driver: the workers never open it
    rows = run_sweep(spec, tmp_path / "out", LocalBackend(workers=1), stream=None)
    assert [r["status"] for r in rows] == ["finished"] * 2
    assert all(r["gap_nats"] is None and np.isfinite(r["test_log_likelihood"]) for r in rows)  # no exact density
    summary = json.loads((tmp_path / "out" / "runs" / spec.runs[0].key / "summary.json").read_text())
    assert summary["n_test"] == 75  # a quarter of the file held out as the test set
    # The same file is the same runs; other points are other runs (their folder is new).
    (tmp_path / "elsewhere.csv").rename(data)
    assert [r.key for r in SweepSpec.from_mapping(spec.to_mapping()).runs] == [r.key for r in spec.runs]
    np.savetxt(data, points[:200], delimiter=",")
    assert not {r.key for r in SweepSpec.from_mapping(spec.to_mapping()).runs} & {r.key for r in spec.runs}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--data", "missing.csv"], "data: missing.csv: no such file"),
        (["--data", "{data}", "--n-train", "100"], "n_train: a data file's training set is its own rows"),
        (["--data", "{data}", "--holdout", "1.5"], "holdout: expected a share in (0, 1)"),
    ],
)
def test_a_sweep_refuses_a_bad_data_file_on_the_driver_in_one_line(argv, message, capsys, tmp_path):
    data = tmp_path / "points.csv"
    data.write_text("\n".join(f"{i % 7},{i % 5}" for i in range(50)))
    argv = [a.replace("{data}", str(data)) for a in argv]
    assert main(["sweep", *argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_a_diverging_run_is_recorded_with_its_reason_and_the_sweep_goes_on(tmp_path):
    spec = SweepSpec(dt=(0.5, 1e20), steps=4, eval_every=4, checkpoint_every=4, n_test=128, final_samples=8)
    rows = run_sweep(spec, tmp_path, LocalBackend(workers=1), stream=None)
    by_dt = {r["dt"]: r for r in rows}
    assert by_dt[0.5]["status"] == "finished"
    assert by_dt[1e20]["status"] == "diverged" and "too large" in by_dt[1e20]["message"]
    assert "1 / 1" in (tmp_path / "table.md").read_text()


# -- bad input -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "data, message",
    [
        ({"kapa": [0.1]}, r"unknown key\(s\) \['kapa'\]"),
        ({"seeds": []}, "seeds: the grid is empty"),
        ({"kappa": [-1.0]}, "kappa must be a finite number > 0, got -1.0"),
        ({"target": ["moon"]}, "target must be one of"),
        ({"steps": 0}, "steps must be an integer >= 1"),
        ({"seeds": [0, 1, 0]}, "seeds: 0 is given twice"),
        ({"paper": "yes"}, "paper must be true or false, got 'yes'"),
    ],
)
def test_a_bad_spec_is_refused_by_name(data, message):
    with pytest.raises(ValueError, match=message):
        SweepSpec.from_mapping(data, source="spec file 'x.toml'")


def test_spec_files_in_toml_and_json_and_bad_ones(tmp_path):
    toml = tmp_path / "s.toml"
    toml.write_text('target = "ring"\nkappa = [0.01, "none"]\nseeds = [0, 1]\nsteps = 50\n')
    spec = SweepSpec.from_file(toml)
    assert spec.kappa == (0.01, None) and spec.seeds == (0, 1) and spec.steps == 50 and len(spec.runs) == 4
    (tmp_path / "s.json").write_text(json.dumps(spec.to_mapping()))
    assert SweepSpec.from_file(tmp_path / "s.json") == spec
    with pytest.raises(ValueError, match="does not exist"):
        SweepSpec.from_file(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("kappa = [0.01,\n")
    with pytest.raises(ValueError, match="is not valid TOML"):
        SweepSpec.from_file(tmp_path / "bad.toml")
    (tmp_path / "s.yaml").write_text("kappa: 1")
    with pytest.raises(ValueError, match="expected a .toml or .json file"):
        SweepSpec.from_file(tmp_path / "s.yaml")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--kappa", "0.1,abc"], "argument --kappa: expected a number > 0, got 'abc'"),
        (["--seeds", ","], "argument --seeds: expected a comma-separated list"),
        (["--address", "auto"], "--address is for --backend ray"),
        (["--backend", "ray", "--address", "127.0.0.1:1"], "cannot reach a Ray cluster at '127.0.0.1:1'"),
        (["--backend", "ray", "--address", "nowhere"], "expected 'auto', 'host:port' or 'ray://host:port'"),
        (["--spec", "missing.toml"], "spec file 'missing.toml' does not exist"),
    ],
)
def test_the_sweep_command_answers_bad_input_in_one_line(argv, message, capsys, tmp_path):
    started = time.perf_counter()
    code = 2
    try:
        code = main(["sweep", *argv, "--out", str(tmp_path / "o")])
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert time.perf_counter() - started < 30  # fails fast: no retries against a dead address


# -- Ray -------------------------------------------------------------------------------------------
def test_ray_gives_the_local_backends_records(local_sweep, local_ray, tmp_path):
    spec, reference, local_rows = local_sweep
    backend = make_backend("ray")
    assert isinstance(backend, RayBackend) and backend.capacity == 2 and not backend.started
    rows = run_sweep(spec, tmp_path, backend, stream=None)
    assert _records(tmp_path, spec) == _records(reference, spec)
    same = ("test_log_likelihood", "gap_nats", "constraint", "status", "steps")
    assert [{k: r[k] for k in same} for r in rows] == [{k: r[k] for k in same} for r in local_rows]


def test_killing_a_ray_worker_mid_run_costs_one_segment_and_the_sweep_completes(local_sweep, local_ray, tmp_path):
    spec, reference, _ = local_sweep
    killed: list[int] = []
    killer = threading.Thread(target=kill_first_worker, args=(killed, 60))
    killer.start()
    rows = run_sweep(spec, tmp_path, make_backend("ray"), stream=None)
    killer.join()
    assert killed, "no Ray worker was seen running a segment"
    assert [r["status"] for r in rows] == ["finished"] * 4
    assert _records(tmp_path, spec) == _records(reference, spec)  # the retried segment started from its checkpoint


def test_a_two_node_cluster_runs_the_sweep_on_both_nodes(local_ray, tmp_path):
    """The session's cluster has two nodes (``conftest.start_local_ray``): the runs spread over both."""
    assert len([n for n in local_ray.nodes() if n["Alive"]]) == 2
    address = local_ray.get_runtime_context().gcs_address
    spec = SweepSpec(seeds=(0, 1, 2, 3), steps=10, eval_every=10, checkpoint_every=5, n_test=128, final_samples=8)
    rows = run_sweep(spec, tmp_path, make_backend("ray", address), stream=None)
    assert [r["status"] for r in rows] == ["finished"] * 4
    assert len({r["node"] for r in rows}) == 2, [r["node"] for r in rows]
