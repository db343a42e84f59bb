"""The plateau: what the flow's energies do while its likelihood stalls near the base's (issue "every target").

    python -m bench.plateau [--targets two_rings,core_and_ring,grid9] [--kinetics mlp,convex]
                            [--steps 0,200,600,1000,1400] [--out bench/results/plateau.json]

Trains the library's defaults (unconstrained, a constant learning rate, one torch thread) and, at
each of ``--steps``, measures on a fresh batch: the gap (test L_16 on 512 points minus the
target's entropy), the mean size of ∇K(p) and ∇U(q) of the first leapfrog step's Hamiltonian at
N(0, I) points, how much ∇K varies with p (its standard deviation over those points: how strongly
the flow's q depends on the latent momentum), and the gradient norm of the training bound with
respect to K's, U's and the encoder's weights (summed over the Hamiltonians).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch

from bench.provenance import markdown_table, provenance, write_results
from ehflow_core.targets import make_target
from ehflow_core.training import TrainConfig, Trainer


def _probe(trainer: Trainer, entropy: float) -> dict[str, float]:
    """The energies' gradients and the weights' gradient norms at the trainer's current weights."""
    x = trainer._batch()
    eps = trainer.flow.encoder.noise(x, trainer.config.train_samples, trainer.rng)
    bound, _ = trainer.objective(x, eps, None, None)
    trainer.flow.zero_grad(set_to_none=True)
    (-bound).backward()
    norms = {"K": 0.0, "U": 0.0, "encoder": 0.0}
    for name, p in trainer.flow.named_parameters():
        part = "encoder" if name.startswith("encoder") else name.split(".")[2]
        norms[part] += float(p.grad.square().sum()) if p.grad is not None else 0.0
    trainer.flow.zero_grad(set_to_none=True)
    h = trainer.flow.hamiltonian_list[0]
    with torch.no_grad():
        points = torch.randn(2048, trainer.flow.dim, generator=torch.Generator().manual_seed(0))
        grad_k, grad_u = h.grad_K(points), h.grad_U(points)
        gap = -trainer.evaluate()["test_log_likelihood"] - entropy  # type: ignore[operator]
    return {
        "gap_nats": round(gap, 3),
        "grad_K_size": round(float(grad_k.norm(dim=1).mean()), 3),
        "grad_K_spread": round(float(grad_k.std(0).mean()), 3),
        "grad_U_size": round(float(grad_u.norm(dim=1).mean()), 3),
        **{f"weights_grad_{part}": round(value**0.5, 4) for part, value in norms.items()},
    }


def run(target_name: str, kinetic: str, steps: list[int], seed: int = 0) -> list[dict[str, Any]]:
    target = make_target(target_name)
    entropy = target.entropy()[0]
    config = TrainConfig.starting_from(
        flow={"kinetic": kinetic}, kappa=None, seed=seed, lr_schedule="constant", max_steps=10**9,
        eval_every=10**9, eval_samples=16,
    )  # fmt: skip
    trainer = Trainer(config, target)
    records = trainer.train()
    rows = []
    for step in steps:
        while trainer.step < step:
            next(records)
        rows.append({"target": target_name, "kinetic": kinetic, "seed": seed, "step": step, **_probe(trainer, entropy)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


COLUMNS = {
    "gap_nats": "gap (nats)", "grad_K_size": "mean ǀ∇Kǀ", "grad_K_spread": "sd of ∇K over p",
    "grad_U_size": "mean ǀ∇Uǀ", "weights_grad_K": "ǀ∂L/∂θ_Kǀ", "weights_grad_U": "ǀ∂L/∂θ_Uǀ",
    "weights_grad_encoder": "ǀ∂L/∂φǀ",
}  # fmt: skip


def markdown(result: dict[str, Any]) -> str:
    """The results file as one Markdown table (docs/results.md shows it; a test holds them equal)."""
    return markdown_table(
        ["target", "K", "step", *COLUMNS.values()],
        ([r["target"], r["kinetic"], r["step"], *(f"{r[key]:g}" for key in COLUMNS)] for r in result["rows"]),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="two_rings,core_and_ring,grid9")
    parser.add_argument("--kinetics", default="mlp,convex")
    parser.add_argument("--steps", default="0,200,600,1000,1400")
    parser.add_argument("--out", default="bench/results/plateau.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    steps = sorted(int(s) for s in args.steps.split(","))
    rows = [
        row
        for target in args.targets.split(",")
        for kinetic in args.kinetics.split(",")
        for row in run(target, kinetic, steps)
    ]
    result = {**provenance("plateau", "bench.plateau", argv), "rows": rows}
    print(markdown(result))
    write_results(args.out, result)


if __name__ == "__main__":
    main()
