"""Quality at a fixed wall-clock budget: the ring, infinite data, with and without the SO(2) constraint.

    python -m bench.quality [--seconds 180] [--kappa 0.01] [--lr 3e-4] [--out bench/results/quality.json]

Reports test NLL (importance-weighted, K = 256, 2048 fresh test points) minus the target's true
entropy, and the invariance error of the learned density, on 2 torch threads. The goal (issue
"training and experiments"): within 0.10 nats of the entropy in 3 minutes with default settings.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from ehflow_core import FlowConfig, invariance_error, rotation_generator
from ehflow_core.targets import make_target
from ehflow_core.training import TrainConfig, Trainer

K = 256


def run(seconds: float, kappa: float | None, lr: float, seed: int) -> dict:
    target = make_target("ring")
    entropy, entropy_se = target.entropy()
    config = TrainConfig(
        flow=FlowConfig(), kappa=kappa, lr=lr, max_steps=10**9, seconds=seconds, seed=seed, eval_every=500
    )
    trainer = Trainer(config, target)
    best = -float("inf")
    for record in trainer.train():
        if record.test_log_likelihood is not None:
            best = max(best, record.test_log_likelihood)
    rng = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        test_ll = float(trainer.flow.log_likelihood(trainer.test_data, K, rng).mean())
    report = invariance_error(trainer.flow, rotation_generator(0, 1, 2), trainer.test_data[:128], n_samples=128)
    return {
        "kappa": kappa,
        "lr": lr,
        "steps": trainer.step,
        "seconds": round(trainer.seconds, 1),
        "test_nll": -test_ll,
        "entropy": entropy,
        "entropy_stderr": entropy_se,
        "gap_nats": -test_ll - entropy,
        "best_eval_gap_nats_K64": -best - entropy,
        "invariance_spread": report.spread,
        "invariance_noise_floor": report.noise_floor,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--kappa", type=float, default=0.01, help="κ of the constrained run")
    parser.add_argument("--lr", type=float, default=TrainConfig.lr)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="bench/results/quality.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [run(args.seconds, kappa, args.lr, args.seed) for kappa in (None, args.kappa)]
    result = {
        "benchmark": "quality",
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
        "torch": torch.__version__,
        "K": K,
        "runs": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"{'run':>12} {'steps':>6} {'test NLL':>9} {'entropy':>8} {'gap':>7} {'inv. spread (noise)':>20}")
    for r in rows:
        label = "none" if r["kappa"] is None else f"κ={r['kappa']:g}"
        print(
            f"{label:>12} {r['steps']:>6} {r['test_nll']:>9.3f} {r['entropy']:>8.3f} {r['gap_nats']:>7.3f} "
            f"{r['invariance_spread']:>10.3f} ({r['invariance_noise_floor']:.3f})"
        )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
