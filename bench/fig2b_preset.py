"""The dashboard's Figure 2B preset at a wall-time budget: does U grow a well at every mode?

    python -m bench.fig2b_preset [--seconds 60] [--seeds 2] [--kinetic mlp,convex] [--training preset,cli]

Trains the preset's configuration (``dashboard.settings``) on one torch thread, as the dashboard's
training process does (without the page's snapshots competing for it), then reports the
attractors of U (:func:`~ehflow_core.snapshot.attractor_report`, on the dashboard's own picture
sizes) and the test gap (L_256 on 2,048 points − entropy). Rows go to
``bench/results/fig2b_preset.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.provenance import provenance
from dashboard.settings import Settings
from dashboard.slot import VIEW_SIZES
from ehflow_core.experiments import FIG2B_TRAINING
from ehflow_core.snapshot import attractor_report, take_snapshot
from ehflow_core.training import Trainer


def run(kinetic: str, seconds: float, seed: int, training: str = "preset") -> dict[str, Any]:
    settings = Settings(seed=seed).with_preset("fig2b")
    config = settings.train_config()
    config = config.replace(flow=config.flow.replace(kinetic=kinetic), seconds=seconds, eval_every=10**9)
    if training != "preset":  # the command line's Figure 2B training (FIG2B_TRAINING), at its rate or another
        lr = FIG2B_TRAINING["lr"] if training == "cli" else float(training.removeprefix("cli@"))
        config = config.replace(**{**FIG2B_TRAINING, "lr": lr})
    target = settings.make_target()
    trainer = Trainer(config, target, generators=[])
    for _ in trainer.train():
        pass
    report = attractor_report(take_snapshot(trainer.eval_flow, target, VIEW_SIZES), np.asarray(target.centres))
    with torch.no_grad():
        test = target.sample(2048, torch.Generator().manual_seed(seed + 10_000))
        ll = float(trainer.eval_flow.log_likelihood(test, 256, torch.Generator().manual_seed(seed)).mean())
    return {"kinetic": kinetic, "training": training, "seed": seed, "seconds": seconds, "steps": trainer.step,
            "gap_nats": -ll - target.entropy()[0], **report}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--kinetic", default="mlp", help="comma-separated: mlp, convex")
    parser.add_argument(
        "--training", default="preset",
        help="comma-separated: preset (the dashboard's), cli (the command line's Figure 2B training: ELBO, "
        "batch 256, 1e-3), cli@LR (the same at another learning rate)",
    )  # fmt: skip
    parser.add_argument("--out", default="bench/results/fig2b_preset.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for kinetic in args.kinetic.split(","):
        for training in args.training.split(","):
            for seed in range(args.seeds):
                rows.append(run(kinetic, args.seconds, seed, training))
                _report(rows, args.out)


def _report(rows: list[dict[str, Any]], out: str) -> None:
    r = rows[-1]
    print(
        f"[fig2b preset] K {r['kinetic']}, {r['training']} training, seed {r['seed']}: {r['steps']} steps, "
        f"gap {r['gap_nats']:.3f}, "
        f"{r['modes_with_minimum']}/{r['n_modes']} modes with a well ({r['wells_are']}), "
        f"flow near modes {r['share_near_modes_flow']:.2f} vs base {r['share_near_modes_base']:.2f}",
        flush=True,
    )
    result = {**provenance("fig2b_preset", "bench.fig2b_preset", machine="1 torch thread"), "rows": rows}
    Path(out).write_text(json.dumps(result, indent=2))


def markdown(result: dict[str, Any]) -> str:
    """The rows of a results file as the docs' table."""
    from bench.provenance import markdown_table

    head = (
        "K", "training", "seed", "steps", "gap (nats)", "modes with a well", "wells are",
        "time near a mode: flow (base)",
    )  # fmt: skip
    return markdown_table(
        head,
        [
            [
                r["kinetic"], r["training"], r["seed"], f"{r['steps']:,}", f"{r['gap_nats']:.3f}",
                f"{r['modes_with_minimum']} of {r['n_modes']}", r["wells_are"],
                f"{r['share_near_modes_flow']:.0%} ({r['share_near_modes_base']:.0%})",
            ]
            for r in result["rows"]
        ],
    )  # fmt: skip


if __name__ == "__main__":
    main()
