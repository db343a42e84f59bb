"""The command line's Figure 2B, kept: ``reproduce fig2b`` (full size) per seed, its attractors and gap.

    python -m bench.fig2b [--seeds 2] [--workers 2] [--kinetic mlp] [--training fig2b] [--out FILE]

Runs :func:`~ehflow_core.experiments.reproduce_fig2b` as ``python -m ehflow_core reproduce fig2b
--seed N`` does (one torch thread each, ``--workers`` at a time, its run folders in a temporary
directory) and keeps what its summaries say of U's wells at the 8 modes
(:func:`~ehflow_core.snapshot.attractor_report`) and of the test likelihood. ``--kinetic mlp``
trains an MLP K instead of ``FIG2B_FLOW``'s convex one; ``--training defaults`` the library's
training defaults (what ``reproduce fig2b`` trains), ``--training fig2b`` the earlier ``FIG2B_TRAINING``
(the comparisons of docs/results.md, "Figure 2B"). The default ``--out`` is the file of what
``reproduce fig2b`` trains; the earlier training's is ``bench/results/fig2b.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

KEPT = ("steps", "test_log_likelihood", "gap_nats", "attractors")


def run(seed: int, kinetic: str | None = None, training: str = "defaults") -> dict[str, Any]:
    import torch

    from ehflow_core.experiments import FIG2B, FIG2B_FLOW, FIG2B_TRAINING, reproduce_fig2b

    torch.set_num_threads(1)
    chosen = FIG2B_TRAINING if training == "fig2b" else {}
    with tempfile.TemporaryDirectory() as out:
        summary = reproduce_fig2b(FIG2B["full"], Path(out), seed=seed, kinetic=kinetic, training=chosen)
    flow = {**FIG2B_FLOW, **({"kinetic": kinetic} if kinetic else {})}
    row = {"seed": seed, "flow": flow, "training": chosen or "the library's defaults"}
    row.update({key: summary.get(key) for key in KEPT})
    print(json.dumps(row), flush=True)
    return row


def markdown(*results: dict[str, Any]) -> str:
    """The rows of ``results`` (results files of this benchmark) as one table: per run, its K and
    training (the library's defaults named by the commit they were measured at: they change), the
    test gap, and what the attractor report says of U's wells and the flow's points."""
    from bench.provenance import markdown_table

    table = []
    for result in results:
        for row in result["rows"]:
            a = row["attractors"]
            training = row.get("training", "fig2b")
            table.append([
                row["flow"]["kinetic"],
                f"the defaults of `{result['commit']}`" if training == "the library's defaults" else "Figure 2B's",
                row["seed"], f"{row['gap_nats']:.3f}", a["wells_are"], f"{a['modes_with_minimum']} of {a['n_modes']}",
                f"{a['mean_mode_to_minimum']:.2f}" if math.isfinite(a["mean_mode_to_minimum"] or math.inf) else "—",
                a["n_minima"] - a["modes_with_minimum"],
                f"{a['share_near_modes_flow']:.0%} ({a['share_near_modes_base']:.0%})",
            ])  # fmt: skip
    head = (
        "K", "training", "seed", "gap (nats)", "wells are", "modes with a well", "mean distance", "other wells",
        "time near a mode: flow (base)",
    )  # fmt: skip
    return markdown_table(head, table)


def main(argv: list[str] | None = None) -> None:
    from bench.provenance import provenance, write_results

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--kinetic", choices=["convex", "mlp"], help="K (default: FIG2B_FLOW's)")
    parser.add_argument("--training", choices=["defaults", "fig2b"], default="defaults")
    parser.add_argument("--out", default="bench/results/fig2b_defaults_convex.json")
    args = parser.parse_args(argv)
    seeds = range(args.seeds)
    with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:  # torch: no fork
        rows = list(pool.map(run, seeds, [args.kinetic] * len(seeds), [args.training] * len(seeds)))
    result = {**provenance("fig2b", "bench.fig2b", argv, machine="one torch thread per run"), "rows": rows}
    write_results(args.out, result)


if __name__ == "__main__":
    main()
