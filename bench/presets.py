"""The dashboard's presets at a lesson's length: how close each gets to its target in 30 s and 60 s.

    python -m bench.presets [--presets fig2a,two_rings,...] [--kinetics mlp,convex] [--seconds 30,60]
                            [--seeds 2] [--workers 2] [--log10-lr X] [--merge] [--out bench/results/presets.json]

Each preset's configuration as the dashboard builds it (``Settings().with_preset(name)``: its
target, base, κ, learning rate, a constant rate), with the kinetic energy of ``--kinetics``,
trained headless on one torch thread, as a dashboard training process trains it (the dashboard
streams at ~70 % of this speed while it draws: docs/benchmarks.md). After each budget of
``--seconds`` (training time), the test gap is measured: L_256 on 2,048 fresh points minus the
target's entropy; for Figure 2B also U's wells at the modes on the dashboard's own pictures
(:func:`~ehflow_core.snapshot.attractor_report`). Runs go ``--workers`` at a time (one core each).
The paper's preset keeps the paper's MLP kinetic energy. ``--log10-lr`` trains at
another learning rate than the presets' own (the slider's value, 10^X). ``--merge`` replaces the rows of the runs
measured again in an existing file and keeps the others (its command then lists both invocations).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from bench.provenance import KEYS, markdown_table, merged_provenance, provenance, write_results

PRESETS = ("fig2a", "paper", "fig2b", "two_rings", "core_and_ring", "grid9", "two_moons")


def gap_meter(target, seed: int) -> Callable[[Any], float]:
    """The test gap of a preset's run, as a function of its flow: L_256 on 2,048 fresh points
    (their own seed) minus the target's entropy, in nats, to 4 decimals. The points and the
    entropy (100,000 samples) are drawn once, here, for every budget the run is measured at."""
    import torch

    test, entropy = target.sample(2048, torch.Generator().manual_seed(seed + 10_000)), target.entropy()[0]

    def gap(flow) -> float:
        with torch.no_grad():
            ll = float(flow.log_likelihood(test.to(flow.dtype), 256, torch.Generator().manual_seed(seed)).mean())
        return round(-ll - entropy, 4)

    return gap


def run(
    preset: str, kinetic: str, seed: int, budgets: list[float], log10_lr: float | None = None
) -> list[dict[str, Any]]:
    """One run of ``preset`` with ``kinetic`` (and the learning rate 10^``log10_lr``, default the
    preset's): a row per budget (cumulative training seconds)."""
    import numpy as np
    import torch

    from dashboard.settings import Settings
    from dashboard.slot import VIEW_SIZES
    from ehflow_core.snapshot import attractor_report, take_snapshot
    from ehflow_core.training import Trainer

    torch.set_num_threads(1)
    settings = Settings(seed=seed).with_preset(preset)
    if log10_lr is not None:
        settings = dataclasses.replace(settings, log10_lr=log10_lr)
    config = settings.train_config()
    config = config.replace(flow=config.flow.replace(kinetic=kinetic), eval_every=10**9)
    target = settings.make_target()
    trainer = Trainer(config, target)
    gap = gap_meter(target, seed)
    rows = []
    for budget in budgets:
        for _ in trainer.train(seconds=budget - trainer.seconds):
            pass
        row = {"preset": preset, "kinetic": kinetic, "log10_lr": settings.log10_lr, "seed": seed, "seconds": budget,
               "steps": trainer.step, "gap_nats": gap(trainer.eval_flow)}  # fmt: skip
        if preset == "fig2b":
            snapshot = take_snapshot(trainer.eval_flow, target, VIEW_SIZES)
            row.update(attractor_report(snapshot, np.asarray(target.centres)))
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def _key(row: dict[str, Any]) -> tuple[str, str, float]:
    """What a row measured, but its seed and budget: preset, K and the learning rate's log10."""
    return row["preset"], row["kinetic"], row["log10_lr"]


def markdown(result: dict[str, Any]) -> str:
    """The results file as a Markdown table: each preset's gap (mean over seeds, and each seed's)
    by kinetic energy and budget (docs/presets.md shows it; a test holds them equal)."""
    rows = result["rows"]
    budgets = sorted({r["seconds"] for r in rows})
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((*_key(r), r["seconds"]), []).append(r)

    def cell(group: list[dict[str, Any]]) -> str:
        each = ", ".join(f"{r['gap_nats']:.3f}" for r in group)
        wells = [f"{r['modes_with_minimum']}/8 {'minima' if r['wells_are'].startswith('minima') else 'maxima'}"
                 for r in group if "modes_with_minimum" in r]  # fmt: skip
        return f"{statistics.fmean(r['gap_nats'] for r in group):.3f} ({each})" + (
            f"; wells {', '.join(wells)}" if wells else ""
        )

    head = ["preset", "K", "lr", *(f"gap at {b:g} s (seeds)" for b in budgets), f"steps at {budgets[-1]:g} s"]
    return markdown_table(
        head,
        (
            [preset, kinetic, f"10^{log10_lr:g}", *(cell(groups[(preset, kinetic, log10_lr, b)]) for b in budgets),
             f"{statistics.fmean(r['steps'] for r in groups[(preset, kinetic, log10_lr, budgets[-1])]):,.0f}"]
            for preset, kinetic, log10_lr in dict.fromkeys(_key(r) for r in rows)
        ),
    )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--kinetics", default="mlp,convex")
    parser.add_argument("--seconds", default="30,60", help="budgets of training time, comma-separated")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="bench/results/presets.json")
    parser.add_argument("--merge", action="store_true", help="replace these runs' rows in --out, keep the rest")
    parser.add_argument("--log10-lr", type=float, help="train at 10^X instead of each preset's learning rate")
    args = parser.parse_args(argv)
    budgets = sorted(float(s) for s in args.seconds.split(","))
    jobs = [
        (preset, kinetic, seed)
        for preset in args.presets.split(",")
        for kinetic in args.kinetics.split(",")
        if not (preset == "paper" and kinetic != "mlp")  # the paper's configuration keeps its MLP K
        for seed in range(args.seeds)
    ]
    with ProcessPoolExecutor(args.workers) as pool:
        futures = [pool.submit(run, *job, budgets, args.log10_lr) for job in jobs]
        rows = [row for future in futures for row in future.result()]
    result = {**provenance("presets", "bench.presets", argv, machine="one torch thread per run"), "rows": rows}
    out = Path(args.out)
    if args.merge and out.exists():
        old = json.loads(out.read_text())
        again = {(*_key(r), r["seed"]) for r in rows}
        kept = [r for r in old["rows"] if (*_key(r), r["seed"]) not in again]
        order = list(dict.fromkeys(_key(r) for r in old["rows"] + rows))  # the table's order
        merged = sorted(kept + rows, key=lambda r: (order.index(_key(r)), r["seconds"], r["seed"]))
        result.update(merged_provenance(old, {key: result[key] for key in KEYS}), rows=merged)
    print(markdown(result))
    write_results(out, result)


if __name__ == "__main__":
    main()
