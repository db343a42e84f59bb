"""Quality at a fixed wall-clock budget: test NLL − the target's entropy, for training settings side by side.

    python -m bench.quality [--targets ring,gaussians8] [--settings default,paper,nsf,realnvp]
                            [--seconds 30] [--seeds 3] [--kappa K] [--merge] [--out bench/results/quality.json]

Each run trains from scratch for ``--seconds`` of wall time on 2 torch threads (no evaluation
while training), then scores the model once: importance-weighted test log-likelihood L_K
(K = ``--k``, default 256) on 2,048 fresh test points, against the target's true entropy (the gap
is KL(target ‖ model), bounded above). Seeds differ in initialisation, data and noise. Results go
to a JSON file, one row per (target, setting, seed), written after every run, and a table of
mean ± sd to standard output. ``default`` is the library's defaults; the other settings are changes
to the paper's configuration (``SETTINGS``); ``nsf`` and ``realnvp`` are zuko's flows.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from ehflow_core import invariance_error
from ehflow_core.targets import make_target
from ehflow_core.training import TrainConfig, Trainer

# The levers, as changes to the paper's configuration (TrainConfig().as_paper(): ELBO, batch 256,
# Adam at 3e-4, one shared Hamiltonian with an MLP K); a "flow" entry holds changes to the
# FlowConfig. "default" is the library's defaults, unchanged.
DREG8_B64 = {"lr": 3e-3, "objective": "dreg", "train_samples": 8, "batch": 64}
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
}
N_TEST = 2048
PEERS = ("nsf", "realnvp")  # zuko's flows, trained by maximum likelihood (bench.peers); exact test NLL


def run_peer(target_name: str, kind: str, seconds: float, seed: int) -> dict[str, Any]:
    """A zuko flow trained for ``seconds`` on fresh batches; scored on the same test points as ours."""
    from bench.peers import _Peer

    target = make_target(target_name)
    entropy, entropy_se = target.entropy()
    peer = _Peer(kind, target, None, seed)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        peer.step()
        steps += 1
    spent = time.perf_counter() - start
    test = target.sample(N_TEST, torch.Generator().manual_seed(seed + 10_000))
    nll = -peer.log_likelihood(test)
    return {
        "target": target_name, "setting": kind, "config": {"zuko": kind}, "seed": seed, "kappa": None,
        "budget_s": seconds, "steps": steps, "seconds": round(spent, 1), "K": None, "test_nll": nll, "entropy": entropy,
        "entropy_stderr": entropy_se, "gap_nats": nll - entropy,
    }  # fmt: skip


def run(target_name: str, setting: str, seconds: float, seed: int, kappa: float | None, k: int) -> dict[str, Any]:
    if setting in PEERS:
        return run_peer(target_name, setting, seconds, seed)
    target = make_target(target_name)
    entropy, entropy_se = target.entropy()
    changes = dict(SETTINGS[setting])
    flow = {"base": "soft_uniform" if target_name == "gaussians8" else "normal", **changes.pop("flow", {})}
    config = TrainConfig.starting_from(
        setting != "default", flow=flow, kappa=kappa if target.generators() else None, max_steps=10**9,
        seconds=seconds, seed=seed, eval_every=10**9, n_test=N_TEST, **changes,
    )  # fmt: skip
    trainer = Trainer(config, target)
    for _ in trainer.train():  # evaluated once, at the end (on the fixed subsample): not scored
        pass
    rng = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        test_ll = float(trainer.flow.log_likelihood(trainer.test_data, k, rng).mean())
    row = {
        "target": target_name, "setting": setting, "config": config.to_dict(), "seed": seed,
        "kappa": config.kappa, "budget_s": seconds, "steps": trainer.step, "seconds": round(trainer.seconds, 1), "K": k,
        "test_nll": -test_ll, "entropy": entropy, "entropy_stderr": entropy_se, "gap_nats": -test_ll - entropy,
    }  # fmt: skip
    gens = [g for g in target.generators() if g.has_action]
    if gens:
        report = invariance_error(trainer.flow, gens[0], trainer.test_data[:128], n_samples=128)
        row.update(invariance_spread=report.spread, invariance_noise_floor=report.noise_floor)
    return row


def table(rows: list[dict[str, Any]]) -> str:
    """Mean ± sd of the gap over seeds, with the steps each setting made, as Markdown."""
    lines = ["| target | setting | seeds | steps | test NLL − entropy (nats) |", "|---|---|---|---|---|"]
    groups: dict[tuple[str, str, float | None, float], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["target"], r["setting"], r["kappa"], r["budget_s"]), []).append(r)
    for (target, setting, kappa, budget), group in groups.items():
        gaps = [r["gap_nats"] for r in group]
        sd = statistics.stdev(gaps) if len(gaps) > 1 else 0.0
        steps = statistics.fmean(r["steps"] for r in group)
        name = setting + ("" if kappa is None else f", κ={kappa:g}")
        gap = f"{statistics.fmean(gaps):.3f} ± {sd:.3f}"
        lines.append(f"| {target}, {budget:.0f} s | {name} | {len(group)} | {steps:.0f} | {gap} |")
    return "\n".join(lines)


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
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="bench/results/quality.json")
    parser.add_argument("--merge", action="store_true", help="add the rows to those already in --out")
    args = parser.parse_args(argv)
    unknown = [s for s in args.settings.split(",") if s not in (*SETTINGS, *PEERS)]
    if unknown:
        parser.error(f"--settings: unknown {unknown}; choose from {', '.join((*SETTINGS, *PEERS))}")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    old = json.loads(out.read_text()).get("rows", []) if args.merge and out.exists() else []
    rows: list[dict[str, Any]] = []
    for target in args.targets.split(","):
        for setting in args.settings.split(","):
            for seed in range(args.seeds):
                rows.append(run(target, setting, args.seconds, seed, args.kappa, args.k))
                r = rows[-1]
                print(
                    f"[quality] {target} {setting} seed {seed}: {r['steps']} steps, gap {r['gap_nats']:.3f}", flush=True
                )
                result = {
                    "benchmark": "quality",
                    "when": time.strftime("%Y-%m-%d %H:%M"),
                    "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
                    "torch": torch.__version__,
                    "rows": old + rows,
                }
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps(result, indent=2))  # after every run: an interrupted study keeps its rows
    print(table(result["rows"]))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
