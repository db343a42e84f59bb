"""The weights' average in a lesson: how far it lags at first, what it gains later, by its warm-up.

    python -m bench.average [--presets two_rings,two_moons,...] [--seeds 2] [--checks 400,2400]
                            [--warmups 10,40] [--out bench/results/average.json]

Each dashboard preset that shows the average (all but the paper's), as the dashboard builds it,
trained headless on two torch threads (steps, not seconds, are compared); beside its weights θ,
averages θ̄ with β_t = min(β, (1 + t) / (c + t)) for each warm-up constant c (docs/maths.md,
"Averaged weights"; the training is the same for all, so one run serves every c). At each check
the test gap (L_256 on 2,048 fresh points minus the target's entropy) of θ and of each θ̄.
docs/results.md shows the table (:func:`markdown`; a test holds them equal): early, a short memory
keeps the average from lagging behind a loss that still falls fast (the 400-step pictures of
docs/presets.md); later, the longer memory removes the constant rate's noise.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
from typing import Any

from bench.presets import PRESETS, gap_meter
from bench.provenance import markdown_table, provenance, write_results


def run(preset: str, seed: int, checks: list[int], warmups: list[int]) -> list[dict[str, Any]]:
    """Train ``preset`` (seed ``seed``) to the last check; a row per check with the gaps of the
    weights and of each warm-up's average."""
    import torch

    from dashboard.settings import Settings
    from ehflow_core.run import average_beta
    from ehflow_core.training import Trainer

    torch.set_num_threads(2)
    settings = Settings(seed=seed).with_preset(preset)
    config = settings.train_config()
    beta = config.average
    assert beta is not None, f"the {preset} preset shows its own weights"
    target = settings.make_target()
    trainer = Trainer(config.replace(max_steps=max(checks), eval_every=10**9, seconds=None, average=None), target)
    averages = {c: copy.deepcopy(trainer.flow) for c in warmups}
    measure = gap_meter(target, seed)
    rows = []
    for step, _ in enumerate(trainer.train(), 1):
        with torch.no_grad():
            weights = [p.detach() for p in trainer.flow.parameters()]
            for c, average in averages.items():
                torch._foreach_lerp_(list(average.parameters()), weights, 1.0 - average_beta(beta, step, c))
        if step in checks:
            gaps = {str(c): measure(average) for c, average in averages.items()}
            row = {"preset": preset, "seed": seed, "step": step, "beta": beta, "weights": measure(trainer.flow)}
            rows.append({**row, "averages": gaps})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown(result: dict[str, Any]) -> str:
    """The results file as a Markdown table: per preset and check, the mean gap over the seeds of the
    weights and of each warm-up's average (the lowest in bold)."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in result["rows"]:
        groups.setdefault((r["preset"], r["step"]), []).append(r)
    warmups = list(result["rows"][0]["averages"])
    head = ["preset", "steps", "seeds", "weights θ", *(f"average, c = {c}" for c in warmups)]
    rows = []
    for (preset, step), runs in groups.items():
        means = [statistics.fmean(r["weights"] for r in runs)]
        means += [statistics.fmean(r["averages"][c] for r in runs) for c in warmups]
        best = min(means)
        cells = [f"**{m:.3f}**" if m == best else f"{m:.3f}" for m in means]
        rows.append([preset, f"{step:,}", len(runs), *cells])
    return markdown_table(head, rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default=",".join(p for p in PRESETS if p != "paper"))
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--checks", default="400,2400", help="comma-separated steps at which to score")
    parser.add_argument("--warmups", default="10,40", help="comma-separated warm-up constants c")
    parser.add_argument("--out", default="bench/results/average.json")
    args = parser.parse_args(argv)
    checks = [int(s) for s in args.checks.split(",")]
    warmups = [int(c) for c in args.warmups.split(",")]
    here = provenance("average", "bench.average", argv, machine="two torch threads")
    runs = [(preset, seed) for preset in args.presets.split(",") for seed in range(args.seeds)]
    rows = [row for preset, seed in runs for row in run(preset, seed, checks, warmups)]
    result = {**here, "rows": rows}
    write_results(args.out, result)
    print(markdown(result))


if __name__ == "__main__":
    main()
