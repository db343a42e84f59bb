"""Command line: ``python -m ehflow_core train …`` and ``python -m ehflow_core reproduce fig2a|fig2b``.

Every run writes into ``--out DIR``: ``metrics.csv`` (one row per record), ``summary.json``,
``checkpoint.pt`` and figures (HTML always, PNG where Kaleido can render).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from .checkpoint import save_checkpoint
from .config import BASES, DTYPES, FlowConfig
from .evaluation import equivariance_error, invariance_error
from .snapshot import Snapshot, SnapshotConfig
from .symmetries import (
    Generator,
    RotationGenerator,
    lemma1_check,
    rotation_generator,
    so_generators,
    translation_generator,
)
from .targets import TARGETS, DataTarget, Target, load_points, make_target
from .training import Record, TrainConfig, Trainer

log = logging.getLogger("ehflow_core")

FINAL_EVAL_SAMPLES = 256  # K of the final test log-likelihood in summary.json


# -- progress --------------------------------------------------------------------------------------
def progress(records: Iterable[Record], total: int, label: str = "", stream=sys.stderr) -> Iterator[Record]:
    """Pass records through while drawing a one-line progress bar (at most 4 redraws a second)."""
    last_draw = 0.0
    last_eval: Record | None = None
    record = None
    for record in records:
        if record.test_log_likelihood is not None:
            last_eval = record
        if record.event:
            stream.write(f"\n{label} {record.message}\n")
        now = time.perf_counter()
        if now - last_draw > 0.25:
            last_draw = now
            _draw(record, total, label, last_eval, stream)
        yield record
    if record is not None:
        _draw(record, total, label, last_eval, stream)
        stream.write("\n")


def _draw(record: Record, total: int, label: str, last_eval: Record | None, stream) -> None:
    share = min(record.step / max(total, 1), 1.0)
    bar = "#" * int(24 * share) + "." * (24 - int(24 * share))
    test = f" test L_K {last_eval.test_log_likelihood:.3f}" if last_eval else ""
    stream.write(
        f"\r{label} [{bar}] {record.step}/{total} {record.steps_per_s:5.0f} steps/s elbo {record.train_elbo:.3f}{test} "
    )
    stream.flush()


# -- outputs ---------------------------------------------------------------------------------------
def metrics_csv(records: Sequence[Record]) -> str:
    """One CSV row per record (columns: the union of every record's fields)."""
    rows = [r.to_row() for r in records]
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_metrics(records: Sequence[Record], path: Path) -> None:
    """Write :func:`metrics_csv` to ``path``."""
    path.write_text(metrics_csv(records))


def summarise(trainer: Trainer, records: Sequence[Record]) -> dict[str, Any]:
    """The numbers a run is judged by (see the README's "Outputs")."""
    flow, target = trainer.flow, trainer.target
    rng = torch.Generator(device=flow.device).manual_seed(trainer.config.seed + 99)
    with torch.no_grad():
        test_ll = float(flow.log_likelihood(trainer.test_data, FINAL_EVAL_SAMPLES, rng).mean())
        test_elbo = float(flow.elbo(trainer.test_data, 1, rng).mean())
        train_ll = None
        if trainer.train_data is not None:
            train_ll = float(flow.log_likelihood(trainer.train_data[:2048], FINAL_EVAL_SAMPLES, rng).mean())
    good = [r for r in records if r.event is None]
    tail = good[-50:]
    summary: dict[str, Any] = {
        "target": target.name,
        "test_log_likelihood": test_ll,
        "test_elbo": test_elbo,
        "train_log_likelihood": train_ll,
        "n_samples": FINAL_EVAL_SAMPLES,
        "n_test": len(trainer.test_data),
        "train_elbo": sum(r.train_elbo for r in tail) / len(tail) if tail else None,
        "constraint": trainer.measure_constraints(),
        "lam": trainer.lam,
        "kappa": trainer.kappa,
        "steps": trainer.step,
        "seconds": trainer.seconds,
        "divergences": sum(1 for r in records if r.event == "diverged"),
        "lemma1": lemma1_check(flow.base, trainer.generators) if trainer.generators else {},
        "config": trainer.config.to_dict(),
    }
    if target.has_log_prob:
        entropy, stderr = target.entropy()
        summary.update(entropy=entropy, entropy_stderr=stderr, gap_nats=-test_ll - entropy)
    with_action = [g for g in trainer.generators if g.has_action]
    if with_action:
        g = with_action[0]
        report = invariance_error(flow, g, trainer.test_data[:128], n_samples=128, seed=trainer.config.seed)
        summary["invariance_error"] = {"generator": g.name, **report.__dict__}
        summary["equivariance_error"] = {gg.name: equivariance_error(flow, gg) for gg in with_action}
    else:
        summary["invariance_error"] = None
    return summary


def write_run(
    trainer: Trainer, records: Sequence[Record], out: Path, sizes: SnapshotConfig | None = None
) -> tuple[dict[str, Any], Snapshot]:
    """metrics.csv, summary.json, checkpoint.pt and figures for one run; returns the summary and
    the snapshot the figures were drawn from (``sizes``: its sizes)."""
    from .figures import (
        constraint_figure,
        curves_figure,
        density_figure,
        energy_figure,
        trajectory_figure,
        write_figure,
    )
    from .snapshot import take_snapshot

    out.mkdir(parents=True, exist_ok=True)
    write_metrics(records, out / "metrics.csv")
    summary = summarise(trainer, records)
    save_checkpoint(trainer, out / "checkpoint.pt")
    snap = take_snapshot(trainer.flow, trainer.target, sizes or SnapshotConfig(n_samples=4000, grid=100))
    files = []
    files += write_figure(density_figure(snap), out / "density")
    files += write_figure(energy_figure(snap), out / "energies")
    files += write_figure(trajectory_figure(snap), out / "trajectories")
    files += write_figure(curves_figure({"run": records}, title="Log-likelihood"), out / "curves")
    if trainer.generators:
        files += write_figure(constraint_figure(records), out / "constraint")
    summary["figures"] = [f.name for f in files]
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary, snap


# -- train -----------------------------------------------------------------------------------------
def parse_generators(spec: str, dim: int) -> list[Generator]:
    """'so' (all rotations), 'none', or a comma list like 'L12,L34,P1' (1-based indices)."""
    spec = spec.strip()
    if spec == "so":
        return so_generators(dim)
    if spec == "none":
        return []
    gens: list[Generator] = []
    for item in spec.split(","):
        item = item.strip()
        if len(item) == 3 and item[0] == "L" and item[1:].isdigit():
            gens.append(rotation_generator(int(item[1]) - 1, int(item[2]) - 1, dim))
        elif len(item) == 2 and item[0] == "P" and item[1].isdigit():
            gens.append(translation_generator(int(item[1]) - 1, dim))
        else:
            raise ValueError(f"--generators: expected 'so', 'none' or items like L12 or P1, got {item!r}")
    return gens


def _data_target(args: argparse.Namespace) -> tuple[Target, torch.Tensor, torch.Tensor]:
    points = load_points(args.data)
    if args.test_data:
        test = load_points(args.test_data)
        if test.shape[1] != points.shape[1]:
            raise ValueError(f"{args.test_data}: has {test.shape[1]} columns, but {args.data} has {points.shape[1]}")
        train = points
    else:
        n_test = max(1, int(round(args.holdout * len(points))))
        perm = torch.randperm(len(points), generator=torch.Generator().manual_seed(args.seed))
        test, train = points[perm[:n_test]], points[perm[n_test:]]
        log.info("holding out %d of %d points (%.0f%%) as the test set", n_test, len(points), 100 * args.holdout)
    return DataTarget(train, name=Path(args.data).stem, description=f"points from {args.data}"), train, test


def run_train(args: argparse.Namespace) -> dict[str, Any]:
    train_data = test_data = None
    if args.data:
        target, train_data, test_data = _data_target(args)
    else:
        target = make_target(args.target, n_modes=args.n_modes)
    generators = target.generators() if args.generators is None else parse_generators(args.generators, target.dim)
    flow = FlowConfig(
        dim=target.dim,
        hidden=tuple(args.hidden),
        n_steps=args.n_steps,
        dt=args.dt,
        base=args.base,
        base_sigma=args.base_sigma,
        base_beta=args.base_beta,
        shared_hamiltonian=not args.per_step_hamiltonians,
        invariant_blocks=_hard_blocks(generators, target.dim) if args.hard_symmetry else None,
        dtype=args.dtype,
        device=args.device,
    )
    config = TrainConfig(
        flow=flow,
        kappa=args.kappa,
        n_train=args.n_train,
        batch=args.batch,
        lr=args.lr,
        steps=args.steps,
        seconds=args.seconds,
        seed=args.seed,
        eval_every=args.eval_every,
        eval_samples=args.eval_samples,
        grad_clip=args.grad_clip,
        on_divergence=args.on_divergence,
    )
    trainer = Trainer(config, target, generators, train_data=train_data, test_data=test_data)
    records = list(progress(trainer.train(), config.steps, label=target.name))
    summary, _ = write_run(trainer, records, Path(args.out))
    _print_summary(summary, Path(args.out))
    return summary


def _hard_blocks(generators: Sequence[Generator], dim: int) -> tuple[tuple[int, ...], ...]:
    """Blocks of coordinates joined by the rotation generators (for an exactly invariant H)."""
    parent = list(range(dim))

    def find(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    rotations = [g for g in generators if isinstance(g, RotationGenerator)]
    if not rotations:
        raise ValueError("--hard-symmetry needs rotation generators (e.g. --generators so)")
    for g in rotations:
        parent[find(g.i)] = find(g.j)
    blocks: dict[int, list[int]] = {}
    for i in range(dim):
        blocks.setdefault(find(i), []).append(i)
    return tuple(tuple(b) for b in blocks.values() if len(b) > 1)


def _print_summary(summary: dict[str, Any], out: Path) -> None:
    lines = [f"wrote {out}/ (metrics.csv, summary.json, checkpoint.pt, figures)"]
    lines.append(f"  test log-likelihood L_{summary['n_samples']}: {summary['test_log_likelihood']:.4f} nats")
    if "gap_nats" in summary:
        lines.append(
            f"  entropy of the target: {summary['entropy']:.4f}; gap (test NLL − entropy): {summary['gap_nats']:.4f}"
        )
    if summary["constraint"]:
        lines.append(f"  constraint E[{{g,H}}²]: {summary['constraint']}  λ: {summary['lam']}")
    print("\n".join(lines))


# -- parser ----------------------------------------------------------------------------------------
def _positive_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ehflow_core", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train one flow and write metrics, summary, checkpoint, figures")
    source = train.add_mutually_exclusive_group()
    source.add_argument("--target", default="ring", help=f"built-in target: {', '.join(TARGETS)} (default ring)")
    source.add_argument("--data", help="user data: a .csv or .npy file of points (n × d)")
    train.add_argument("--test-data", help="test points for --data (default: hold out --holdout of --data)")
    train.add_argument("--holdout", type=float, default=0.2, help="share of --data held out as test set (default 0.2)")
    train.add_argument("--n-modes", type=_positive_int, help="number of Gaussians for --target gaussians")
    train.add_argument("--kappa", type=_positive_float, help="constraint precision κ (absent: unconstrained)")
    train.add_argument("--generators", help="'so', 'none' or e.g. 'L12,L34' (default: the target's own)")
    train.add_argument("--hard-symmetry", action="store_true", help="K and U exactly invariant under the rotations")
    train.add_argument("--n-train", type=_positive_int, help="fixed training set size (absent: infinite data)")
    train.add_argument("--steps", type=_positive_int, default=2000)
    train.add_argument("--seconds", type=_positive_float, help="wall-clock budget (whichever ends first)")
    train.add_argument("--dt", type=_positive_float, default=FlowConfig.dt)
    train.add_argument("--n-steps", type=_positive_int, default=FlowConfig.n_steps, help="leapfrog steps")
    train.add_argument("--per-step-hamiltonians", action="store_true", help="a separate H_i per leapfrog step")
    train.add_argument("--hidden", type=_positive_int, nargs="+", default=list(FlowConfig.hidden))
    train.add_argument("--base", choices=BASES, default=FlowConfig.base)
    train.add_argument("--base-sigma", type=_positive_float, default=FlowConfig.base_sigma)
    train.add_argument("--base-beta", type=_positive_float, default=FlowConfig.base_beta)
    train.add_argument("--lr", type=_positive_float, default=TrainConfig.lr)
    train.add_argument("--batch", type=_positive_int, default=TrainConfig.batch)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--eval-every", type=_positive_int, default=TrainConfig.eval_every)
    train.add_argument("--eval-samples", type=_positive_int, default=TrainConfig.eval_samples, help="K of L_K")
    train.add_argument("--grad-clip", type=_positive_float)
    train.add_argument("--on-divergence", choices=("stop", "continue"), default="stop")
    train.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    train.add_argument("--device", default="cpu")
    train.add_argument("--out", default="runs/train", help="output folder (default runs/train)")

    rep = sub.add_parser("reproduce", help="the paper's experiments: fig2a (SO(2) ring, κ sweep) or fig2b")
    rep.add_argument("figure", choices=("fig2a", "fig2b"))
    rep.add_argument("--quick", action="store_true", help="a size that runs in a few minutes on 2 CPU cores")
    rep.add_argument("--seeds", type=_positive_int, help="number of seeds (default: 1 quick, 3 full)")
    rep.add_argument("--out", help="output folder (default runs/<figure>)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")  # quiet third-party INFO logs
    log.setLevel(logging.INFO)
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            run_train(args)
        else:
            from .experiments import reproduce

            reproduce(args.figure, quick=args.quick, seeds=args.seeds, out=Path(args.out or f"runs/{args.figure}"))
    except (ValueError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    return 0
