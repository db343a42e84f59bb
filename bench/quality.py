"""Quality at a fixed wall-clock budget: test NLL − the target's entropy, for training settings side by side.

    python -m bench.quality [--targets ring,gaussians8] [--settings default,paper,nsf,realnvp]
                            [--seconds 30] [--seeds 3] [--kappa K] [--n-train N] [--merge]
                            [--out bench/results/quality.json]

Each run trains from scratch for ``--seconds`` of wall time on 2 torch threads (no evaluation
while training), then scores the model once: importance-weighted test log-likelihood L_K
(K = ``--k``, default 256) on 2,048 fresh test points, against the target's true entropy (the gap
is KL(target ‖ model), bounded above). Seeds differ in initialisation, data and noise. Results go
to a JSON file, one row per (target, setting, seed), written after every run, and a table of
mean ± sd [95 % interval] to standard output. ``default`` is the library's defaults; the other settings are changes
to the paper's configuration (``SETTINGS``); ``nsf`` and ``realnvp`` are zuko's flows.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from bench.provenance import markdown_table, merged_provenance, provenance
from ehflow_core import invariance_error
from ehflow_core.run import data_generator
from ehflow_core.sweep_tables import format_stat, mean_interval
from ehflow_core.targets import make_target
from ehflow_core.training import TrainConfig, Trainer

# The levers, as changes to the paper's configuration (TrainConfig().as_paper(): ELBO, batch 256,
# Adam at 3e-4, one shared Hamiltonian with an MLP K); a "flow" entry holds changes to the
# FlowConfig. "default" is the library's defaults, unchanged; "default_*" are changes to them.
DREG8_B64 = {"lr": 3e-3, "objective": "dreg", "train_samples": 8, "batch": 64}
DASHBOARD_RATE = {"lr_schedule": "constant", "lr": 10**-2.5, "warmup_steps": 0, "warmup_fraction": 0.0}
SETTINGS: dict[str, dict[str, Any]] = {
    "default": {},
    "paper": {},
    "elbo": {"lr": 3e-3},
    "iwae8": {"lr": 3e-3, "objective": "iwae", "train_samples": 8},
    "dreg8": {"lr": 3e-3, "objective": "dreg", "train_samples": 8},
    "dreg8_b64": DREG8_B64,
    "dreg8_b64_cvx": {**DREG8_B64, "flow": {"kinetic": "convex"}},
    "dreg8_b64_cvx_ps": {**DREG8_B64, "flow": {"kinetic": "convex", "shared_hamiltonian": False}},
    "dreg8_b64_ps": {**DREG8_B64, "flow": {"shared_hamiltonian": False}},
    "dreg8_b64_cos": {**DREG8_B64, "lr_schedule": "cosine"},
    "dreg8_b64_ps_cos": {**DREG8_B64, "lr_schedule": "cosine", "flow": {"shared_hamiltonian": False}},
    "iwae8_b64": {"lr": 3e-3, "objective": "iwae", "train_samples": 8, "batch": 64},
    # Changes to the defaults (names starting "default_").
    "default_soft_uniform": {"flow": {"base": "soft_uniform"}},
    # A strictly convex K (½e^a|p|² plus positive softplus ridges, nets.ConvexKinetic): it moves q
    # with p from the first step, and cannot take the time-reversed (concave K) solution.
    "default_convex": {"flow": {"kinetic": "convex"}},
    # K and U each with a learnable ½e^a|x|² (a = 0 at the start): the untrained flow turns
    # phase space like the harmonic oscillator, off the flat-K saddle of docs/results.md.
    "default_harmonic": {"flow": {"harmonic": True}},
    # K and U exactly invariant under rotations of the plane (functions of |p|² and |q|²): the
    # flow is equivariant by construction, so the learned density is exactly invariant.
    "default_hard": {"flow": {"invariant_blocks": ((0, 1),)}},
    # The soft constraint's brackets also at the batch's data points (with the encoder's momentum),
    # not only at base samples: where the data are (TrainConfig.constraint_at).
    "default_data": {"constraint_at": "base+data"},
    # Both: the convex K (no plateau on the radial targets) with the brackets also at the data.
    "default_convex_data": {"constraint_at": "base+data", "flow": {"kinetic": "convex"}},
    # PyTorch's initialisation of U's first layer (FlowConfig.potential_init_scale = 1): the
    # defaults before the first layer's scale (docs/maths.md, "Initialisation").
    "default_pytorch_init": {"flow": {"potential_init_scale": 1.0}},
    # Levers on top of U's first layer ×10 (issue "every target": two rings and two moons at 30 s).
    "default_u20": {"flow": {"potential_init_scale": 20.0}},
    "default_k3": {"flow": {"kinetic_init_scale": 3.0}},
    "default_lr6e3": {"lr": 6e-3},
    "default_k4": {"train_samples": 4},
    # Capacity for two moons: a third leapfrog step (the same integration time), a third hidden layer.
    "default_s3": {"flow": {"n_steps": 3, "dt": 1 / 3}},
    "default_deep": {"flow": {"hidden": (128, 128, 128)}},
    # Cheap levers for two moons: a larger batch, a higher peak rate after a warm-up, a longer
    # integration time (a larger dt, or a third step of the same dt).
    "default_b128": {"batch": 128},
    "default_lr5e3_warm": {"lr": 5e-3, "warmup_steps": 300, "warmup_fraction": 0.0},
    # The defaults before the warm-up was adopted: Adam at 3e-3 from the first step.
    "default_before_warmup": {"lr": 3e-3, "warmup_steps": 0, "warmup_fraction": 0.0},
    "default_dt75": {"flow": {"dt": 0.75}},
    "default_s3_long": {"flow": {"n_steps": 3}},
    # The encoder with a full covariance L(q)L(q)ᵀ (L lower triangular) instead of diag σ(q)²: the
    # posterior of p is stretched along a tilted direction where the flow squeezes q. The defaults
    # since it was measured (quality_full_cov.json, where "default" is the diagonal).
    "default_full_cov": {"flow": {"encoder_covariance": "full"}},
    "default_diagonal": {"flow": {"encoder_covariance": "diagonal"}},
    # More steps in the budget for two moons, two rings, core and ring (the bound is tight there
    # with the full covariance: L_256 = L_4096): one leapfrog step of the same integration time,
    # narrower energies, a smaller batch, and the same points as fewer data with more momenta.
    "default_s1": {"flow": {"n_steps": 1, "dt": 1.0}},
    "default_w64": {"flow": {"hidden": (64, 64)}},
    "default_b32": {"batch": 32},
    "default_k16_b32": {"train_samples": 16, "batch": 32},
    # The dashboard's learning rate: constant at 10^-2.5 (a lesson has no end to decay towards), and
    # the same showing the weights' moving average (TrainConfig.average), as the dashboard does.
    "default_const": DASHBOARD_RATE,
    "default_const_avg": {**DASHBOARD_RATE, "average": 0.99},
    # The constraint's precision on the targets with a rotation, instead of --kappa: the two-rings
    # preset's κ = 0.1 (docs/presets.md), and no constraint at all.
    "default_kappa0.1": {"kappa": 0.1},
    "default_unconstrained": {"kappa": None},
    # The multiplier held back on finite data, where at κ = 0.001 it overshoots to ~10³ early and
    # stalls learning: λ capped at e³ ≈ 20, or log λ moving at most 0.003 a step (not 0.01).
    "default_lam_cap3": {"log_lam_max": 3.0},
    "default_geco3e3": {"geco_rate": 0.003},
    # Half the base samples for the constraint's estimate (128, not 256): a cheaper step.
    "default_cb128": {"constraint_batch": 128},
    "default_kappa0.1_cb128": {"kappa": 0.1, "constraint_batch": 128},
}
N_TEST = 2048
PEERS = ("nsf", "realnvp")  # zuko's flows, trained by maximum likelihood (bench.peers); exact test NLL


def _data(target, seed: int, n_train: int | None) -> tuple[torch.Tensor | None, torch.Tensor]:
    """The training set (``n_train`` points, or None: fresh batches) and the test points, drawn as a
    ``Trainer`` draws them (one generator, the training set first), so peers see the same points."""
    data_rng = data_generator(seed)
    train = None if n_train is None else target.sample(n_train, data_rng, dtype=torch.float64)
    return train, target.sample(N_TEST, data_rng, dtype=torch.float64)


def run_peer(target_name: str, kind: str, seconds: float, seed: int, n_train: int | None = None) -> dict[str, Any]:
    """A zuko flow trained for ``seconds`` (of training time); scored on the same test points as
    ours. With a finite training set, also its best test NLL, checked after every second of
    training: early stopping on the test set itself, an optimistic score for the peer."""
    from bench.peers import BATCH
    from ehflow_core.peer import PeerTrainer

    target = make_target(target_name)
    entropy, entropy_se = target.entropy()
    train, test = (x if x is None else x.to(torch.get_default_dtype()) for x in _data(target, seed, n_train))
    assert test is not None
    peer = PeerTrainer(kind, target, train, seed, BATCH)
    steps, trained, best, next_check = 0, 0.0, math.inf, 1.0
    while trained < seconds:
        began = time.perf_counter()
        peer.step()
        trained += time.perf_counter() - began
        steps += 1
        if n_train is not None and trained >= next_check:
            best, next_check = min(best, -peer.log_likelihood(test)), next_check + 1.0
    nll = -peer.log_likelihood(test)
    row = {
        "target": target_name, "setting": kind, "config": {"zuko": kind}, "seed": seed, "kappa": None,
        "n_train": n_train, "budget_s": seconds, "steps": steps, "seconds": round(trained, 1), "K": None,
        "test_nll": nll, "entropy": entropy, "entropy_stderr": entropy_se, "gap_nats": nll - entropy,
    }  # fmt: skip
    if n_train is not None:
        row["best_gap_nats"] = min(best, nll) - entropy
    return row


def run(
    target_name: str, setting: str, seconds: float, seed: int, kappa: float | None, k: int, n_train: int | None = None
) -> dict[str, Any]:
    if setting in PEERS:
        return run_peer(target_name, setting, seconds, seed, n_train)
    target = make_target(target_name)
    entropy, entropy_se = target.entropy()
    changes = dict(SETTINGS[setting])
    kappa = changes.pop("kappa", kappa)
    # The paper's Figure 2B draws the 8 Gaussians from a soft-uniform base, so do the settings
    # that start from its configuration; the defaults keep their own base, N(0, I).
    paper_2b = target_name == "gaussians8" and not setting.startswith("default")
    flow = {**({"base": "soft_uniform"} if paper_2b else {}), **changes.pop("flow", {})}
    config = TrainConfig.starting_from(
        not setting.startswith("default"), flow=flow, kappa=kappa if target.generators() else None, max_steps=10**9,
        seconds=seconds, seed=seed, eval_every=10**9, n_test=N_TEST, n_train=n_train, **changes,
    )  # fmt: skip
    trainer = Trainer(config, target)
    for _ in trainer.train():  # evaluated once, at the end (on the fixed subsample): not scored
        pass
    rng = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        test_ll = float(trainer.eval_flow.log_likelihood(trainer.test_data, k, rng).mean())
    row = {
        "target": target_name, "setting": setting, "config": config.to_dict(), "seed": seed,
        "kappa": config.kappa, "n_train": n_train, "budget_s": seconds, "steps": trainer.step,
        "seconds": round(trainer.seconds, 1), "K": k,
        "test_nll": -test_ll, "entropy": entropy, "entropy_stderr": entropy_se, "gap_nats": -test_ll - entropy,
    }  # fmt: skip
    gens = [g for g in target.generators() if g.has_action]
    if gens:
        report = invariance_error(trainer.eval_flow, gens[0], trainer.test_data[:128], n_samples=128)
        row.update(invariance_spread=report.spread, invariance_noise_floor=report.noise_floor)
    return row


def table(rows: list[dict[str, Any]]) -> str:
    """The gap over seeds (mean ± sd [95 % interval], as every table over seeds states it), with the
    steps each setting made, as Markdown."""
    head = ["target", "setting", "seeds", "steps", "test NLL − entropy (nats)", "best, early-stopped on the test set"]
    table_rows: list[list[Any]] = []
    groups: dict[tuple[str, str, float | None, float, int | None], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["target"], r["setting"], r["kappa"], r["budget_s"], r.get("n_train")), []).append(r)
    for (target, setting, kappa, budget, n_train), group in groups.items():
        steps = statistics.fmean(r["steps"] for r in group)
        name = setting + ("" if kappa is None else f", κ={kappa:g}")
        data = "" if n_train is None else f", {n_train} points"
        best = [r["best_gap_nats"] for r in group if "best_gap_nats" in r]
        gaps = _stat([r["gap_nats"] for r in group])
        table_rows.append(
            [f"{target}{data}, {budget:.0f} s", name, len(group), f"{steps:.0f}", gaps, _stat(best) if best else "—"]
        )
    return markdown_table(head, table_rows)


def _stat(values: list[float]) -> str:
    return format_stat(mean_interval(values), 3)


def against_peer(
    rows: list[dict[str, Any]],
    settings: list[str],
    peer: str = "nsf",
    margin: float = 0.02,
    beside: tuple[str, ...] = (),
) -> str:
    """Each target's gap under ``settings`` beside ``peer`` 's (and ``beside`` 's, without a
    verdict), as Markdown: mean ± sd over seeds (seeds, mean steps), and a verdict for each setting
    against the peer at equal wall time: "ahead" or "behind" where the 95 % intervals of the two
    means do not overlap, "level" where they do, and whether the mean is within ``margin`` nats of
    the peer's (the issue's goal)."""
    groups: dict[tuple[str, float], dict[str, list[dict[str, Any]]]] = {}
    for r in rows:
        groups.setdefault((r["target"], r["budget_s"]), {}).setdefault(r["setting"], []).append(r)
    shown = (*settings, peer, *beside)
    header = ["target, budget", *shown, *(f"{s} against {peer}" for s in settings)]
    table_rows: list[list[Any]] = []
    for (target, budget), by_setting in groups.items():
        stats = {s: mean_interval([r["gap_nats"] for r in by_setting.get(s, [])]) for s in shown if by_setting.get(s)}

        def cell(setting: str) -> str:
            if setting not in stats:
                return "—"
            group = by_setting[setting]
            return (
                f"{format_stat(stats[setting], 3)} ({len(group)}, {statistics.fmean(r['steps'] for r in group):,.0f})"
            )

        def verdict(setting: str) -> str:
            if setting not in stats or peer not in stats:
                return "—"
            ours, theirs = stats[setting], stats[peer]
            if ours["ci95"] is None or theirs["ci95"] is None:
                word = "one seed"
            elif ours["ci95"][1] < theirs["ci95"][0]:
                word = "ahead"
            elif ours["ci95"][0] > theirs["ci95"][1]:
                word = "behind"
            else:
                word = "level"
            within = "within" if ours["mean"] - theirs["mean"] <= margin else "not within"
            return f"{word}; {ours['mean'] - theirs['mean']:+.3f}, {within} {margin:g}"

        table_rows.append([f"{target}, {budget:.0f} s", *(cell(s) for s in shown), *(verdict(s) for s in settings)])
    return markdown_table(header, table_rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="ring", help="comma-separated built-in targets")
    parser.add_argument(
        "--settings", default="default,paper,nsf,realnvp", help=f"comma-separated: {', '.join((*SETTINGS, *PEERS))}"
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="training wall time per run")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--kappa", type=float, help="κ for targets with a generator (absent: unconstrained)")
    parser.add_argument("--k", type=int, default=256, help="K of the final test L_K")
    parser.add_argument("--n-train", type=int, help="a fixed training set of N points (absent: fresh batches)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="bench/results/quality.json")
    parser.add_argument("--merge", action="store_true", help="add the rows to those already in --out")
    args = parser.parse_args(argv)
    unknown = [s for s in args.settings.split(",") if s not in (*SETTINGS, *PEERS)]
    if unknown:
        parser.error(f"--settings: unknown {unknown}; choose from {', '.join((*SETTINGS, *PEERS))}")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    before = json.loads(out.read_text()) if args.merge and out.exists() else {"rows": []}
    here = provenance("quality", "bench.quality", machine=f"{torch.get_num_threads()} torch threads")
    rows: list[dict[str, Any]] = []
    for target in args.targets.split(","):
        for setting in args.settings.split(","):
            for seed in range(args.seeds):
                began = time.strftime("%Y-%m-%d %H:%M")
                r = run(target, setting, args.seconds, seed, args.kappa, args.k, args.n_train)
                rows.append({**r, "commit": here["commit"], "when": began, "command": here["command"]})
                print(
                    f"[quality] {target} {setting} seed {seed}: {r['steps']} steps, gap {r['gap_nats']:.3f}", flush=True
                )
                result = {**merged_provenance(before, here), "torch": torch.__version__, "rows": before["rows"] + rows}
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps(result, indent=2))  # after every run: an interrupted study keeps its rows
    print(table(result["rows"]))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
