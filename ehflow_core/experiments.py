"""The paper's two experiments (Figure 2), as functions the command line calls.

Figure 2A: the SO(2) ring with an N(0, I) base and the rotation generator; train and test
log-likelihood for several κ and unconstrained, with infinite data and with a fixed training set.
Figure 2B: eight Gaussians on a circle from a soft-uniform base (its default σ and β, see
:class:`~ehflow_core.config.FlowConfig`); the potential U learns a well per mode and base samples
flow towards them. It shares one Hamiltonian between the leapfrog steps (the integrated flow, run
for many steps, needs one).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint import save_checkpoint
from .ensemble import EnsembleTrainer
from .interrupts import StopRequest, until_stopped
from .reporting import progress, run_folder, summarise, write_metrics, write_run
from .run import run_label
from .snapshot import SnapshotConfig, attractor_report, take_snapshot
from .sweep import Backend, SweepSpec, paired_with_unconstrained, run_and_report
from .sweep_tables import format_stat, mean_interval
from .targets import GaussianMixture, make_target
from .training import Record, TrainConfig, Trainer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fig2aSize:
    steps: int  # training steps per run
    kappas: tuple[float, ...]  # constrained runs (plus one unconstrained run)
    n_train: int  # training-set size of the finite regime
    seeds: int  # seeds per setting
    eval_every: int  # steps between test evaluations
    n_test: int = 1024  # test points per run
    final_samples: int = 256  # K of the final test and train L_K


FIG2A = {
    "quick": Fig2aSize(steps=400, kappas=(0.01,), n_train=200, seeds=1, eval_every=100),
    "full": Fig2aSize(steps=2000, kappas=(0.001, 0.01, 0.1), n_train=200, seeds=3, eval_every=200),
}


@dataclass(frozen=True)
class Fig2bSize:
    steps: int  # training steps
    eval_every: int  # steps between test evaluations
    n_test: int = 1024  # test points
    final_samples: int = 256  # K of the final test L_K


FIG2B = {"quick": Fig2bSize(steps=600, eval_every=200), "full": Fig2bSize(steps=6000, eval_every=500)}
# The training Figure 2B used before it trained the library's defaults: the single-sample ELBO,
# batch 256, a constant 1e-3. With the convex K both grow a well at every mode; the defaults fit
# the density better (docs/results.md, "Figure 2B"). Kept for that comparison (bench.fig2b).
FIG2B_TRAINING = {"objective": "elbo", "train_samples": 1, "batch": 256, "lr": 1e-3, "lr_schedule": "constant"}
# Figure 2B's model, for the command line and the dashboard's preset: the paper's soft-uniform base,
# one Hamiltonian for every step (so the integrated flow exists), and a convex K, so that U's wells
# are its minima, where the paper draws them (an MLP K lands on the time-reversed solution, wells at
# U's maxima: docs/results.md). ``--paper`` keeps the paper's MLP K.
FIG2B_FLOW: dict[str, Any] = {"base": "soft_uniform", "shared_hamiltonian": True, "kinetic": "convex"}


def reproduce_fig2a(size: Fig2aSize, out: Path, paper: bool = False, stop: StopRequest | None = None) -> dict[str, Any]:
    """Train every (regime, κ, seed) of Figure 2A (one batched ensemble per regime) and write curves,
    per-run metrics, checkpoints and a summary; with the library's training defaults, or the
    paper's (``paper``). A ``stop`` request ends training after the step in progress: the runs so
    far are written as they are (summaries marked interrupted, checkpoints that
    :func:`~ehflow_core.checkpoint.load_trainer` continues) and the regimes not begun are skipped."""
    from .figures import curves_figure, density_figure, energy_figure, write_figure  # plotly, when needed

    target = make_target("ring")
    entropy, entropy_se = target.entropy()
    results: dict[str, Any] = {
        "entropy": entropy, "entropy_stderr": entropy_se, "size": asdict(size), "paper": paper, "regimes": {},
        "interrupted": None,
    }  # fmt: skip
    for regime, n_train in (("infinite", None), ("finite", size.n_train)):
        if stop is not None and stop.requested:
            break
        settings = [(kappa, seed) for kappa in (*size.kappas, None) for seed in range(size.seeds)]
        configs = [
            TrainConfig.starting_from(
                paper, kappa=kappa, n_train=n_train, max_steps=size.steps, seed=seed, eval_every=size.eval_every,
                n_test=size.n_test, eval_samples=32,
            )
            for kappa, seed in settings
        ]  # fmt: skip
        labels = [run_label(kappa, seed) for kappa, seed in settings]
        ensemble = EnsembleTrainer(configs, target, labels=labels)  # every (κ, seed) of the regime at once
        runs: dict[str, list[Record]] = {label: [] for label in labels}

        def steps() -> Iterator[Record]:
            for records in until_stopped(ensemble.train(), stop):
                for label, record in records.items():
                    runs[label].append(record)
                yield next(iter(records.values()))

        list(progress(steps(), size.steps, label=f"{regime}: {len(configs)} runs as one batched ensemble"))
        interrupted = ensemble.step < size.steps and not all(run.stopped for run in ensemble.runs)
        curves: dict[str, list[Record]] = {}
        table: dict[str, Any] = {}
        for kappa in (*size.kappas, None):
            finals: dict[str, list[float]] = {}
            for seed in range(size.seeds):
                name = run_label(kappa, seed)
                run, records = ensemble.runs_by_label[name], runs[name]
                run_dir = out / regime / run_folder(name)
                run_dir.mkdir(parents=True, exist_ok=True)
                write_metrics(records, run_dir / "metrics.csv")
                save_checkpoint(run, run_dir / "checkpoint.pt", ensemble.member_optimizer_state(name))
                summary = summarise(run, records, size.final_samples, interrupted)
                (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
                for key in ("test_log_likelihood", "train_log_likelihood", "gap_nats"):
                    if summary.get(key) is not None:
                        finals.setdefault(key, []).append(summary[key])
                finals.setdefault("constraint", []).append(summary["constraint"]["L_12"])
                finals.setdefault("invariance_spread", []).append(summary["invariance_error"]["spread"])
                finals.setdefault("invariance_noise_floor", []).append(summary["invariance_error"]["noise_floor"])
                if seed == 0:
                    curves[run_label(kappa)] = records
                if seed == 0 and kappa == size.kappas[-1] and regime == "infinite":
                    snap = take_snapshot(run.eval_flow, target, SnapshotConfig(n_samples=4000, grid=100))
                    write_figure(density_figure(snap), out / "fig2a_density")
                    write_figure(energy_figure(snap), out / "fig2a_energies")
            row = table[run_label(kappa)] = {key: mean_interval(values) for key, values in finals.items()}
            if "train_log_likelihood" in finals:
                gaps = [a - b for a, b in zip(finals["train_log_likelihood"], finals["test_log_likelihood"])]
                row["train_minus_test"] = mean_interval(gaps)
        title = f"Figure 2A, {regime} data: L_K across κ"
        if interrupted:
            title += f" (interrupted at step {ensemble.step:,} of {size.steps:,})"
            results["interrupted"] = {"regime": regime, "step": ensemble.step}
        write_figure(curves_figure(curves, title=title, **configs[0].estimators), out / f"fig2a_{regime}")
        results["regimes"][regime] = table
    (out / "summary.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(fig2a_markdown(results))
    print(fig2a_markdown(results))
    return results


def fig2a_markdown(results: dict[str, Any]) -> str:
    """The Figure 2A table (mean ± sd [95 % interval] over seeds, as a sweep's tables state them) as Markdown."""
    lines = [
        f"Target entropy (the floor of test NLL): {results['entropy']:.3f} ± {results['entropy_stderr']:.3f} nats."
    ]
    if results.get("interrupted"):
        stopped = results["interrupted"]
        lines.append(
            f"**Interrupted**: the {stopped['regime']} regime at step {stopped['step']:,} of "
            f"{results['size']['steps']:,}; its rows are of the runs as they were then, and later regimes are missing."
        )
    lines += [
        "",
        "| regime | run | test L_256 | train L_256 | train − test | gap to entropy | E[{g,H}²] "
        "| invariance spread (noise) |",
        "|---|---|---|---|---|---|---|---|",
    ]

    for regime, table in results["regimes"].items():
        for label, row in table.items():
            cells = [
                regime,
                label,
                format_stat(row.get("test_log_likelihood"), 3),
                format_stat(row.get("train_log_likelihood"), 3),
                format_stat(row.get("train_minus_test"), 3),
                format_stat(row.get("gap_nats"), 3),
                format_stat(row.get("constraint"), 4),
                f"{format_stat(row.get('invariance_spread'), 3)} ({format_stat(row.get('invariance_noise_floor'), 3)})",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def reproduce_fig2b(
    size: Fig2bSize,
    out: Path,
    seed: int = 0,
    paper: bool = False,
    stop: StopRequest | None = None,
    kinetic: str | None = None,
    training: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``FIG2B_FLOW`` on eight Gaussians from a soft-uniform base and report the attractors of
    U (with the library's training defaults, or the paper's configuration with ``paper``). A
    ``stop`` request ends training after the step in progress and writes the run as it is (its
    summary marked interrupted). ``kinetic`` and ``training`` replace ``FIG2B_FLOW``'s K and the
    training defaults (e.g. ``FIG2B_TRAINING``), for the comparisons in docs/results.md."""
    from .figures import trajectory_figure, write_figure  # plotly, when needed

    target = make_target("gaussians8")
    assert isinstance(target, GaussianMixture)
    flow = {key: value for key, value in FIG2B_FLOW.items() if not (paper and key == "kinetic")}
    if kinetic is not None:
        flow["kinetic"] = kinetic
    training = {} if training is None else training
    config = TrainConfig.starting_from(
        paper, flow=flow, max_steps=size.steps,
        eval_every=size.eval_every, seed=seed, n_test=size.n_test, eval_samples=32, **({} if paper else training),
    )  # fmt: skip
    trainer = Trainer(config, target, generators=[])
    records = list(progress(until_stopped(trainer.train(), stop), size.steps, label="fig2b"))
    sizes = SnapshotConfig(n_samples=4000, grid=120, integrated_steps=40)
    interrupted = stop is not None and stop.requested
    summary, snap = write_run(trainer, records, out, sizes, size.final_samples, interrupted)
    write_figure(trajectory_figure(snap), out / "fig2b_trajectories")
    summary["attractors"] = attractor_report(snap, np.asarray(target.centres))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    a = summary["attractors"]
    print(
        f"fig2b: test L_256 {summary['test_log_likelihood']:.3f} (entropy {summary['entropy']:.3f}); "
        f"wells are the {a['wells_are']}; U has {a['n_minima']} wells, "
        f"{a['modes_with_minimum']}/{a['n_modes']} modes have one within 0.5 "
        f"(mean distance {a['mean_mode_to_minimum']:.2f}); share of integrated-flow positions near a mode "
        f"{a['share_near_modes_flow']:.2f} vs {a['share_near_modes_base']:.2f} for the base samples"
    )
    return summary


def fig2a_sweep(size: Fig2aSize, paper: bool = False) -> SweepSpec:
    """Figure 2A's runs as a sweep: every κ and the unconstrained run, infinite data and
    ``size.n_train`` points, ``size.seeds`` seeds; the same configurations as the batched path."""
    return SweepSpec(
        target=("ring",), kappa=(*size.kappas, None), seeds=tuple(range(size.seeds)), n_train=(None, size.n_train),
        steps=size.steps, eval_every=size.eval_every, paper=paper, n_test=size.n_test, final_samples=size.final_samples,
    )  # fmt: skip


def reproduce(
    figure: str,
    quick: bool,
    seeds: int | None,
    out: Path,
    paper: bool = False,
    backend: Backend | None = None,
    stop: StopRequest | None = None,
) -> dict[str, Any]:
    """Entry point of ``python -m ehflow_core reproduce``. ``backend`` (Figure 2A only): train
    each run as a run of a sweep there (resumable, :func:`~ehflow_core.sweep.run_sweep`) instead of
    one batched ensemble per regime on this machine; the table is then the sweep's, with each κ
    paired against the unconstrained run of the same seed. ``stop``: a request that ends the
    training early and writes what the runs have (without a backend)."""
    if backend is not None and figure != "fig2a":
        backend.close()
        raise ValueError(f"--backend: only fig2a is a sweep (fig2b is one run), got {figure}")
    out.mkdir(parents=True, exist_ok=True)
    mode = "quick" if quick else "full"
    if quick:
        print(f"{figure} --quick: a smoke run (tiny sizes, one seed): it shows the pipeline works, not the result.")
    if figure == "fig2a":
        size = FIG2A[mode]
        if seeds is not None:
            size = Fig2aSize(**{**asdict(size), "seeds": seeds})
        if backend is not None:
            rows = run_and_report("fig2a", fig2a_sweep(size, paper), out, backend)
            return {"rows": rows, "paired": paired_with_unconstrained(rows)}
        return reproduce_fig2a(size, out, paper, stop)
    return reproduce_fig2b(FIG2B[mode], out, paper=paper, stop=stop)
