"""Figure 2A, kept: the ring's soft SO(2) constraint across κ, with infinite data and with 200
points, against the unconstrained flow and the symmetry built in exactly; seed by seed.

    python -m bench.fig2a [--seeds 5] [--workers 2] [--work runs/bench_fig2a] [--out bench/results/fig2a.json]

The soft-constraint runs are a sweep (:func:`~ehflow_core.sweep.run_sweep`, ``--work`` keeps its
folders, so a stopped benchmark resumes), as ``python -m ehflow_core sweep --target ring --kappa
0.001,0.01,none --n-train 200,none --steps 2000 --eval-every 200 --n-test 1024 --final-samples 256``
trains them. The exact runs are the unconstrained run's configuration with an exactly invariant H
(``--hard-symmetry``: K and U of |p|² and |q|²), on the same seeds, so the same training and test
points. Each row keeps the run's final summary: test and train L_256, the gap to the target's
entropy, E[{g,H}²] and the invariance spread with its noise floor.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import statistics
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

KAPPAS: tuple[float | None, ...] = (0.001, 0.01, None)
N_TRAIN = 200
STEPS, EVAL_EVERY, N_TEST, FINAL_SAMPLES = 2000, 200, 1024, 256
RUNS = ("κ=0.001", "κ=0.01", "none", "exact")  # the table's rows in each regime, in this order
REGIMES = ("finite", "infinite")


def _spec(seeds: int, steps: int):
    from ehflow_core.sweep_grid import SweepSpec

    return SweepSpec(
        target=("ring",), kappa=KAPPAS, seeds=tuple(range(seeds)), n_train=(N_TRAIN, None), steps=steps,
        eval_every=EVAL_EVERY, n_test=N_TEST, final_samples=FINAL_SAMPLES,
    )  # fmt: skip


def _row(regime: str, run: str, seed: int, summary: dict[str, Any]) -> dict[str, Any]:
    invariance = summary.get("invariance_error") or {}
    return {
        "regime": regime, "run": run, "seed": seed, "steps": summary["steps"],
        "test_log_likelihood": summary["test_log_likelihood"],
        "train_log_likelihood": summary.get("train_log_likelihood"),
        "gap_nats": summary["gap_nats"], "constraint": sum((summary.get("constraint") or {}).values()),
        "invariance_spread": invariance.get("spread"), "invariance_noise_floor": invariance.get("noise_floor"),
        "seconds": summary.get("seconds"),
    }  # fmt: skip


def exact(seed: int, n_train: int | None, steps: int) -> dict[str, Any]:
    """The unconstrained run of ``seed`` with an exactly rotation-invariant H, trained on one thread."""
    import torch

    from ehflow_core.reporting import summarise
    from ehflow_core.targets import make_target
    from ehflow_core.training import Trainer

    torch.set_num_threads(1)
    run = next(r for r in _spec(seed + 1, steps).runs if r.kappa is None and r.seed == seed and r.n_train == n_train)
    config = run.config()
    config = dataclasses.replace(config, flow=dataclasses.replace(config.flow, invariant_blocks=((0, 1),)))
    trainer = Trainer(config, make_target("ring"))
    records = list(trainer.train())
    row = _row("infinite" if n_train is None else "finite", "exact", seed, summarise(trainer, records, FINAL_SAMPLES))
    print(json.dumps(row), flush=True)
    return row


def soft(seeds: int, steps: int, work: Path, workers: int) -> list[dict[str, Any]]:
    """The sweep's runs (resumed from ``work``), as rows."""
    from ehflow_core.run import run_label
    from ehflow_core.sweep import run_sweep
    from ehflow_core.sweep_backends import LocalBackend

    spec = _spec(seeds, steps)
    run_sweep(spec, work, LocalBackend(workers))
    rows = []
    for run in spec.runs:
        summary = json.loads((work / "runs" / run.key / "summary.json").read_text())
        rows.append(_row("infinite" if run.n_train is None else "finite", run_label(run.kappa), run.seed, summary))
    return rows


def markdown(result: dict[str, Any]) -> str:
    """The table: per regime and run, the gap and train − test as mean ± sd [95 % interval] over the
    seeds, the test L_256 difference from the unconstrained run of the same seed (positive: better),
    and E[{g,H}²] and the invariance spread as mean ± sd (in brackets, the spread's noise floor:
    the same statistic at θ = 0)."""
    from bench.provenance import markdown_table
    from ehflow_core.sweep_tables import format_stat, mean_interval

    rows = result["rows"]

    def stat(regime: str, run: str, key: str, digits: int | None, interval: bool = True) -> str:
        values = [r[key] for r in rows if r["regime"] == regime and r["run"] == run and r[key] is not None]
        return format_stat(mean_interval(values), digits, interval) if values else "—"

    def paired(regime: str, run: str) -> str:
        none = {r["seed"]: r["test_log_likelihood"] for r in rows if r["regime"] == regime and r["run"] == "none"}
        diffs = [
            r["test_log_likelihood"] - none[r["seed"]]
            for r in rows
            if r["regime"] == regime and r["run"] == run and r["seed"] in none
        ]
        return format_stat(mean_interval(diffs), 3) if run != "none" and diffs else "—"

    def train_minus_test(regime: str, run: str) -> str:
        diffs = [
            r["train_log_likelihood"] - r["test_log_likelihood"]
            for r in rows
            if r["regime"] == regime and r["run"] == run and r["train_log_likelihood"] is not None
        ]
        return format_stat(mean_interval(diffs), 3) if diffs else "—"

    table = []
    for regime in REGIMES:
        for run in RUNS:
            seeds = sum(r["regime"] == regime and r["run"] == run for r in rows)
            spread = stat(regime, run, "invariance_spread", 3, interval=False)
            noise = statistics.fmean(
                r["invariance_noise_floor"] for r in rows if r["regime"] == regime and r["run"] == run
            )
            table.append([
                f"{regime} ({N_TRAIN})" if regime == "finite" else regime, run, seeds,
                stat(regime, run, "gap_nats", 3), paired(regime, run), train_minus_test(regime, run),
                stat(regime, run, "constraint", None, interval=False), f"{spread} ({noise:.3f})",
            ])  # fmt: skip
    head = (
        "regime", "run", "seeds", "gap to entropy (nats)", "test L_256 − none's, paired", "train − test",
        "E[{g,H}²]", "invariance spread (noise)",
    )  # fmt: skip
    return markdown_table(head, table)


def main(argv: list[str] | None = None) -> None:
    from bench.provenance import provenance, write_results

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work", default="runs/bench_fig2a", help="the sweep's folders (resumable)")
    parser.add_argument("--out", default="bench/results/fig2a.json")
    args = parser.parse_args(argv)
    began = provenance("fig2a", "bench.fig2a", argv, machine="one torch thread per run")  # the code measured
    rows = soft(args.seeds, args.steps, Path(args.work), args.workers)
    jobs = [(seed, n_train) for n_train in (N_TRAIN, None) for seed in range(args.seeds)]
    with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:  # torch: no fork
        rows += list(pool.map(exact, *zip(*jobs), [args.steps] * len(jobs)))
    from ehflow_core.targets import make_target

    entropy, stderr = make_target("ring").entropy()
    result = {**began, "entropy": entropy, "entropy_stderr": stderr, "rows": rows}
    write_results(args.out, result)
    print(markdown(result))


if __name__ == "__main__":
    main()
