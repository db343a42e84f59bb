"""Command line: ``python -m ehflow_core train …`` and ``python -m ehflow_core reproduce fig2a|fig2b``.

Argument errors are one line (with where to find the usage); ``--help`` shows every default.

Every run writes into ``--out DIR``: ``metrics.csv`` (one row per record), ``summary.json``,
``checkpoint.pt`` and figures (HTML always, PNG where Kaleido can render).
"""

from __future__ import annotations

import argparse
import logging
import re
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .checkpoint import load_trainer, read_checkpoint
from .cli_args import Parser, integer, listed, non_negative_float, non_negative_int, positive_float, positive_int
from .config import BASES, DTYPES, ENCODER_COVARIANCES, KINETICS, FlowConfig
from .experiments import reproduce
from .interrupts import INTERRUPTED_EXIT, StopRequest, until_stopped
from .objectives import CONSTRAINT_AT
from .reporting import FINAL_EVAL_SAMPLES, progress, read_metrics, write_run
from .run import LR_SCHEDULES
from .sweep_backends import BACKENDS
from .symmetries import Generator, RotationGenerator, rotation_generator, so_generators, translation_generator
from .targets import HOLDOUT, TARGETS, DataTarget, Target, load_points, make_target, split_points
from .training import OBJECTIVES, Record, TrainConfig, Trainer

log = logging.getLogger("ehflow_core")

# A rotation L_ij: "L12" (two single-digit axes), or "L1_12" / "L_1_12" (axes of any size).
_ROTATION = re.compile(r"L_?(?:(\d)(\d)|(\d+)_(\d+))")
_TRANSLATION = re.compile(r"P_?(\d+)")  # a translation P_i: "P1", "P_12"


# -- train -----------------------------------------------------------------------------------------
def parse_generators(spec: str, dim: int) -> list[Generator]:
    """'so' (all rotations), 'none', or a comma list of generators with 1-based axes: rotations
    ``L12`` or ``L1_12`` (axes of any size, as the generators name themselves past 9 axes) and
    translations ``P1`` or ``P12``."""
    spec = spec.strip()
    if spec == "so":
        return list(so_generators(dim))
    if spec == "none":
        return []
    gens: list[Generator] = []
    for item in (part.strip() for part in spec.split(",")):
        try:
            if rotation := _ROTATION.fullmatch(item):
                i, j = (_axis(a, dim) for a in rotation.groups() if a is not None)
                gens.append(rotation_generator(i, j, dim))
            elif translation := _TRANSLATION.fullmatch(item):
                gens.append(translation_generator(_axis(translation.group(1), dim), dim))
            else:
                raise ValueError("expected 'so', 'none' or items like L12, L1_12 or P1")
        except ValueError as err:
            raise ValueError(f"--generators: {item!r}: {err}") from None
    names = [g.name for g in gens]
    if len(set(names)) != len(names):
        raise ValueError(f"--generators: each generator at most once, got {names}")
    return gens


def _axis(text: str, dim: int) -> int:
    """A 1-based axis number of a generator spec as a 0-based index."""
    if not 1 <= int(text) <= dim:
        raise ValueError(f"axes are numbered 1..{dim} (the data have {dim} columns), got {text}")
    return int(text) - 1


def _data_target(args: argparse.Namespace) -> tuple[Target, torch.Tensor, torch.Tensor]:
    points = load_points(args.data)
    if args.test_data:
        test = load_points(args.test_data)
        if test.shape[1] != points.shape[1]:
            raise ValueError(f"{args.test_data}: has {test.shape[1]} columns, but {args.data} has {points.shape[1]}")
        train = points
    else:
        train, test = split_points(points, args.holdout, args.seed)
        log.info("holding out %d of %d points (%.0f%%) as the test set", len(test), len(points), 100 * args.holdout)
    return DataTarget(train, name=Path(args.data).stem, description=f"points from {args.data}"), train, test


def run_train(args: argparse.Namespace) -> dict[str, Any]:
    """``train``: a new run, or (``--resume``) the run in a folder continued from its checkpoint.
    Ctrl-C or SIGTERM ends it after the step in progress and writes what it has (``interrupted``
    in the summary); ``--resume`` on that folder then continues it exactly."""
    if args.resume:
        trainer, records = _resumed(args)
    else:
        trainer, records = _new_trainer(args), []
    config = trainer.config
    out = Path(args.out or args.resume or "runs/train")
    budget = None if config.seconds is None else max(config.seconds - trainer.seconds, 0.0)
    with StopRequest() as stop:
        if budget is None or budget > 0:
            steps = until_stopped(trainer.train(seconds=budget), stop)
            records += progress(steps, config.max_steps, label=trainer.target.name, seconds=config.seconds)
        began = time.perf_counter()
        n_test = len(trainer.test_data)
        print(f"final evaluation (L_{FINAL_EVAL_SAMPLES} on {n_test:,} test points) and figures…", file=sys.stderr)
        summary, _ = write_run(trainer, records, out, interrupted=stop.requested)
    print(f"final evaluation done in {time.perf_counter() - began:.1f} s", file=sys.stderr)
    _print_summary(summary, out)
    if stop.requested:
        print(f"interrupted at step {trainer.step:,}: continue it with --resume {out}", file=sys.stderr)
    return summary


def _new_trainer(args: argparse.Namespace) -> Trainer:
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
        kinetic=args.kinetic,
        encoder_covariance=args.encoder_covariance,
        potential_init_scale=args.potential_init_scale,
        kinetic_init_scale=args.kinetic_init_scale,
        invariant_blocks=_hard_blocks(generators, target.dim) if args.hard_symmetry else None,
        dtype=args.dtype,
        device=_device(args.device),
    )
    config = TrainConfig(
        flow=flow,
        kappa=args.kappa,
        n_train=args.n_train,
        batch=args.batch,
        lr=args.lr,
        lr_schedule=args.lr_schedule,
        warmup_steps=args.warmup_steps,
        warmup_fraction=args.warmup_fraction,
        average=args.average,
        max_steps=args.steps,
        seconds=args.seconds,
        seed=args.seed,
        eval_every=args.eval_every,
        eval_samples=args.eval_samples,
        grad_clip=args.grad_clip,
        objective=args.objective,
        constraint_at=args.constraint_at,
        train_samples=args.train_samples,
        on_divergence=args.on_divergence,
    )
    return Trainer(config, target, generators, train_data=train_data, test_data=test_data)


def _resumed(args: argparse.Namespace) -> tuple[Trainer, list[Record]]:
    """The run in ``--resume DIR`` as its checkpoint left it, and its records up to that step.
    A data run needs its ``--data`` (and ``--holdout``, ``--seed``) again; ``--kappa`` changes κ."""
    folder = Path(args.resume)
    path, metrics = folder / "checkpoint.pt", folder / "metrics.csv"
    if not path.is_file() or not metrics.is_file():
        raise ValueError(f"--resume {folder}: expected a run folder with checkpoint.pt and metrics.csv")
    state = read_checkpoint(path)
    train_data = test_data = target = None
    if args.data:
        target, train_data, test_data = _data_target(args)
    elif not _built_in(state["target"]):
        raise ValueError(f"--resume {folder}: the run learned {state['target']!r}; give its --data file again")
    dim = target.dim if target is not None else make_target(state["target"]).dim
    generators = parse_generators(",".join(state.get("generators") or []) or "none", dim)
    trainer = load_trainer(path, target, train_data, test_data, generators)
    if args.kappa is not None:
        trainer.set_kappa(args.kappa)
    records = [r for r in read_metrics(metrics) if r.step <= trainer.step]
    print(f"resuming {folder} at step {trainer.step:,} of {trainer.config.max_steps:,}", file=sys.stderr)
    return trainer, records


def _built_in(name: str) -> bool:
    try:
        make_target(name)
    except ValueError:
        return False
    return True


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
def _device(requested: str) -> str:
    """The device a run uses: ``auto`` is CUDA where present, else the CPU; CUDA asked for on a
    machine without it is an error (not a silent fallback that the summary would misreport)."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.split(":")[0] == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"--device {requested}: CUDA is not available on this machine; "
            "use --device cpu, or --device auto to use CUDA where it is present"
        )
    return requested


def build_parser(paper: bool = False) -> argparse.ArgumentParser:
    """The parser; ``paper``: train's defaults are the paper's configuration (``TrainConfig.as_paper``)."""
    defaults = TrainConfig.starting_from(paper)
    parser = Parser(
        prog="python -m ehflow_core",
        description="Train equivariant Hamiltonian flows and reproduce the paper's experiments.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    formatter = argparse.ArgumentDefaultsHelpFormatter

    train = sub.add_parser(
        "train", help="train one flow and write metrics, summary, checkpoint, figures", formatter_class=formatter
    )
    source = train.add_mutually_exclusive_group()
    source.add_argument(
        "--target", default="ring", help=f"built-in target: {', '.join(TARGETS)}, or gaussians (with --n-modes)"
    )
    source.add_argument("--data", help="user data: a .csv or .npy file of points (n × d)")
    train.add_argument("--test-data", help="test points for --data (default: hold out --holdout of --data)")
    train.add_argument("--holdout", type=positive_float, default=HOLDOUT, help="share of --data held out as test set")
    train.add_argument("--n-modes", type=positive_int, help="number of Gaussians for --target gaussians (8)")
    train.add_argument("--kappa", type=positive_float, help="constraint precision κ (absent: unconstrained)")
    train.add_argument(
        "--generators", help="'so', 'none' or e.g. 'L12,L34' or 'L1_12,P3' (1-based axes; absent: the target's own)"
    )
    train.add_argument("--hard-symmetry", action="store_true", help="K and U exactly invariant under the rotations")
    train.add_argument("--n-train", type=positive_int, help="fixed training set size (absent: infinite data)")
    train.add_argument("--steps", type=positive_int, default=TrainConfig.max_steps, help="training steps")
    train.add_argument(
        "--seconds", type=positive_float, help="wall-clock budget (whichever of it and --steps ends first)"
    )
    train.add_argument("--dt", type=positive_float, default=FlowConfig.dt, help="leapfrog step size")
    train.add_argument("--n-steps", type=positive_int, default=FlowConfig.n_steps, help="leapfrog steps")
    train.add_argument(
        "--per-step-hamiltonians", action=argparse.BooleanOptionalAction, default=not defaults.flow.shared_hamiltonian,
        help="a separate H_i per leapfrog step, or one H for all",
    )  # fmt: skip
    train.add_argument("--kinetic", choices=KINETICS, default=defaults.flow.kinetic, help="K(p): an MLP, or convex")
    for energy, name in (("potential", "U"), ("kinetic", "K")):  # the first layers' scales (docs/maths.md)
        default = getattr(defaults.flow, f"{energy}_init_scale")
        help_text = f"{name}'s first layer times this at initialisation (1: PyTorch's; an MLP only)"
        train.add_argument(f"--{energy}-init-scale", type=positive_float, default=default, help=help_text)
    train.add_argument("--hidden", type=positive_int, nargs="+", default=list(FlowConfig.hidden), help="K, U widths")
    train.add_argument("--base", choices=BASES, default=FlowConfig.base, help="base density of (q, p)")
    train.add_argument("--base-sigma", type=positive_float, default=FlowConfig.base_sigma, help="soft-uniform width")
    train.add_argument("--base-beta", type=positive_float, default=FlowConfig.base_beta, help="soft-uniform edges")
    train.add_argument(
        "--encoder-covariance", choices=ENCODER_COVARIANCES, default=defaults.flow.encoder_covariance,
        help="h(p | q)'s covariance: diagonal (the paper's) or full",
    )  # fmt: skip
    train.add_argument("--lr", type=positive_float, default=defaults.lr, help="Adam's learning rate")
    train.add_argument(
        "--lr-schedule", choices=LR_SCHEDULES, default=defaults.lr_schedule,
        help="cosine: decays to 0 over --steps or --seconds",
    )  # fmt: skip
    train.add_argument(
        "--warmup-steps", type=non_negative_int, default=defaults.warmup_steps,
        help="linear warm-up: ends after this many steps (0: no bound)",
    )  # fmt: skip
    train.add_argument(
        "--warmup-fraction", type=non_negative_float, default=defaults.warmup_fraction,
        help="... or after this fraction of the budget, whichever comes first (0: no bound)",
    )  # fmt: skip
    train.add_argument("--average", type=float, help="β: show and save the weights' moving average (constant lr)")
    train.add_argument("--batch", type=positive_int, default=defaults.batch, help="data points per step")
    train.add_argument("--seed", type=integer, default=0, help="initialisation, data and noise")
    train.add_argument(
        "--eval-every", type=positive_int, default=TrainConfig.eval_every, help="steps between evaluations"
    )
    train.add_argument("--eval-samples", type=positive_int, default=TrainConfig.eval_samples, help="K of the test L_K")
    train.add_argument("--grad-clip", type=positive_float, help="gradient norm clip (absent: none)")
    train.add_argument(
        "--objective", choices=OBJECTIVES, default=defaults.objective,
        help="training bound: elbo, iwae (L_K, K = --train-samples), dreg (L_K, DReG encoder gradient)",
    )  # fmt: skip
    train.add_argument(
        "--train-samples", type=positive_int, default=defaults.train_samples, help="K of the training bound"
    )
    train.add_argument(
        "--constraint-at", choices=CONSTRAINT_AT, default=defaults.constraint_at,
        help="where the constraint's brackets are evaluated: base samples (the paper's), or also at the data",
    )  # fmt: skip
    train.add_argument(
        "--on-divergence", choices=("stop", "continue"), default="stop", help="after a rejected step: stop, or go on"
    )
    train.add_argument("--dtype", choices=tuple(DTYPES), default="float32", help="floating-point precision")
    train.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, or auto (CUDA where present)")
    train.add_argument("--out", help="output folder (absent: runs/train, or the --resume folder)")
    train.add_argument(
        "--resume", metavar="DIR",
        help="continue the run in DIR (an interrupted one, say) from its checkpoint, with its own settings; "
        "only --kappa, --out and a data run's --data, --holdout and --seed apply",
    )  # fmt: skip
    train.add_argument(
        "--paper", action="store_true",
        help="the paper's configuration (single-sample ELBO, batch 256, Adam 3e-4, one H with an MLP K); "
        "options given explicitly still apply",
    )  # fmt: skip

    rep = sub.add_parser(
        "reproduce", help="the paper's experiments: fig2a (SO(2) ring, κ sweep) or fig2b", formatter_class=formatter
    )
    rep.add_argument("figure", choices=("fig2a", "fig2b"), help="which experiment")
    rep.add_argument(
        "--quick", action="store_true",
        help="a smoke run: tiny sizes and one seed, about 2 minutes on 2 CPU cores; it shows the pipeline "
        "works, its numbers are not the result",
    )  # fmt: skip
    rep.add_argument("--seeds", type=positive_int, help="number of seeds (absent: 1 with --quick, else 3)")
    rep.add_argument("--out", help="output folder (absent: runs/<figure>)")
    rep.add_argument("--paper", action="store_true", help="train with the paper's configuration, not the defaults")
    rep.add_argument(
        "--backend", choices=BACKENDS,
        help="fig2a: train each run as a run of a resumable sweep on this machine's processes (local) or on Ray, "
        "with the sweep's tables (absent: one batched ensemble per regime, here)",
    )  # fmt: skip
    rep.add_argument("--address", help="Ray: 'auto', 'host:port' or 'ray://host:port' (absent: a local Ray instance)")
    rep.add_argument("--workers", type=positive_int, help="local: runs at once (default: the core count)")

    sweep = sub.add_parser(
        "sweep", formatter_class=formatter,
        help="a grid of runs (targets × κ × seeds × data sizes × dt, leapfrog steps, lr), here or on a Ray cluster",
        description="Train every combination of the lists (comma-listed; 'none' in --kappa: unconstrained, "
        "in --n-train: infinite data), resumably: running the same sweep again skips finished runs and resumes "
        "the others from their last checkpoint. Writes results.csv, table.md and table.json into --out.",
    )  # fmt: skip
    sweep.add_argument("--spec", help="a .toml or .json file with these options' names (flags given here win)")
    sweep.add_argument("--target", type=listed(str), help=f"built-in targets: {', '.join(TARGETS)} (default: ring)")
    sweep.add_argument(
        "--data", type=listed(str),
        help="data files (.csv or .npy), swept like targets (without --target: the files alone); each run holds "
        "out --holdout of the file, drawn by its seed, as its test set; the driver reads them, workers need not",
    )  # fmt: skip
    sweep.add_argument("--kappa", type=listed(positive_float, none=True), help="κ values, or none (default: none)")
    sweep.add_argument("--seeds", type=listed(non_negative_int), help="seeds (default: 0)")
    sweep.add_argument("--n-train", type=listed(positive_int, none=True), help="training-set sizes, or none")
    sweep.add_argument("--dt", type=listed(positive_float), help=f"leapfrog step sizes (default: {FlowConfig.dt})")
    sweep.add_argument("--n-steps", type=listed(positive_int), help=f"leapfrog steps (default: {FlowConfig.n_steps})")
    sweep.add_argument("--lr", type=listed(positive_float), help=f"learning rates (default: {TrainConfig.lr})")
    sweep.add_argument("--steps", type=positive_int, help="training steps per run (default: 2000)")
    sweep.add_argument("--eval-every", type=positive_int, help="steps between evaluations (default: 200)")
    sweep.add_argument("--checkpoint-every", type=positive_int, help="steps between checkpoints (default: 500)")
    sweep.add_argument("--paper", action="store_true", default=None, help="the paper's training configuration")
    sweep.add_argument("--n-test", type=positive_int, help=f"test points per run (default: {TrainConfig.n_test})")
    sweep.add_argument(
        "--final-samples", type=positive_int, help=f"K of the final test L_K (default: {FINAL_EVAL_SAMPLES})"
    )
    sweep.add_argument("--holdout", type=positive_float, help=f"share of a data file held out as test set ({HOLDOUT})")
    sweep.add_argument("--out", default="runs/sweep", help="output folder")
    sweep.add_argument("--backend", choices=BACKENDS, default="local", help="this machine's processes, or Ray")
    sweep.add_argument("--address", help="Ray: 'auto', 'host:port' or 'ray://host:port' (absent: a local Ray instance)")
    sweep.add_argument("--workers", type=positive_int, help="runs at once here (default: the core count)")
    return parser


def run_sweep_command(args: argparse.Namespace) -> list[dict[str, Any]]:
    """``sweep``: the grid from --spec and the flags, on the chosen backend; prints the table."""
    from .sweep import FIXED_KEYS, GRID_KEYS, SweepSpec, make_backend, run_and_report

    data = SweepSpec.from_file(args.spec).to_mapping() if args.spec else {}
    for key in GRID_KEYS + FIXED_KEYS:
        if getattr(args, key) is not None:
            data[key] = getattr(args, key)
    spec = SweepSpec.from_mapping(data, source="sweep")
    return run_and_report("sweep", spec, Path(args.out), make_backend(args.backend, args.address, args.workers))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line; with ``train --paper``, the paper's values become the defaults."""
    args = build_parser().parse_args(argv)
    if args.command == "train" and args.paper:
        args = build_parser(paper=True).parse_args(argv)
    return args


def _reproduce_out(args: argparse.Namespace) -> Path:
    return Path(args.out or f"runs/{args.figure}")


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")  # quiet third-party INFO logs
    log.setLevel(logging.INFO)
    args = parse_args(argv)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler) if main_thread else None  # as Ctrl-C
    try:
        if args.command == "train":
            summary = run_train(args)
            return INTERRUPTED_EXIT if summary["interrupted"] else 0
        if args.command == "sweep":
            run_sweep_command(args)
        elif args.backend is not None:  # a sweep: Ctrl-C or SIGTERM leave its checkpoints to resume from
            if args.figure != "fig2a":  # refused before a backend starts
                raise ValueError(f"--backend: only fig2a is a sweep (fig2b is one run), got {args.figure}")
            from .sweep_backends import make_backend

            backend = make_backend(args.backend, args.address, args.workers)
            reproduce(args.figure, args.quick, args.seeds, _reproduce_out(args), paper=args.paper, backend=backend)
        else:
            if args.address is not None or args.workers is not None:
                raise ValueError("--address and --workers are for --backend local|ray")
            with StopRequest() as stop:  # Ctrl-C or SIGTERM: the runs end after their step and are written
                reproduce(args.figure, args.quick, args.seeds, _reproduce_out(args), args.paper, stop=stop)
            if stop.requested:
                return INTERRUPTED_EXIT
    except (ValueError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return INTERRUPTED_EXIT
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    return 0
