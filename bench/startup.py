"""How long a fresh process takes to its first optimiser step, and a tiny command-line run.

    python -m bench.startup [--reps 5] [--out bench/results/startup.json]

Every command-line run, dashboard training process, Ray actor and sweep segment is a fresh Python
process, and the first call of any ``torch.optim`` optimiser imports ``torch._dynamo``. Measured
in fresh processes, alternating (so a noisy machine slows each alike), ``--reps`` times each:

- the first step of ``torch.optim.Adam(fused=True)`` against that of
  :class:`ehflow_core.optim.Adam` (the same kernel without ``torch.optim``), after ``import torch``;
- the wall time of a tiny command-line run: ``python -m ehflow_core train --steps 20 --hidden 16 16``
  (the process's start, 20 steps, the final evaluation and figures).

Reported: the median seconds of each, from the process's own clock (first step) or from outside
(the run).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.provenance import markdown_table, provenance, write_results

ROOT = Path(__file__).resolve().parents[1]
FIRST_STEP = """
import time, torch
{setup}
w = torch.zeros(8, requires_grad=True)
began = time.perf_counter()
optimiser = {make}
w.square().sum().backward()
optimiser.step()
print(time.perf_counter() - began)
"""
OPTIMISERS = {
    "torch.optim.Adam": ("", "torch.optim.Adam([w], lr=1e-3, fused=True)"),
    "ehflow_core.optim.Adam": ("from ehflow_core.optim import Adam", "Adam([w], lr=1e-3)"),
}
CLI_RUN = ["train", "--steps", "20", "--hidden", "16", "16", "--eval-every", "1000"]


def first_step(name: str) -> float:
    """Seconds from building ``name`` to the end of its first step, in a fresh process."""
    setup, make = OPTIMISERS[name]
    code = FIRST_STEP.format(setup=setup, make=make)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return float(done.stdout.strip())


def cli_run() -> float:
    """Wall seconds of the tiny command-line run, from outside its process."""
    with tempfile.TemporaryDirectory() as out:
        began = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "ehflow_core", *CLI_RUN, "--out", out], cwd=ROOT, capture_output=True, check=True
        )
        return time.perf_counter() - began


def measure(reps: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in (*OPTIMISERS, "command-line run")}
    for _ in range(reps):
        for name in OPTIMISERS:
            times[name].append(first_step(name))
        times["command-line run"].append(cli_run())
    return times


def markdown(result: dict[str, Any]) -> str:
    """The table of docs/benchmarks.md: the median (and range) of each measure, in seconds."""
    rows = []
    for name, values in result["seconds"].items():
        what = f"first step of `{name}`" if name in OPTIMISERS else f"`python -m ehflow_core {' '.join(CLI_RUN)}`"
        rows.append([what, f"{statistics.median(values):.3f}", f"{min(values):.3f}–{max(values):.3f}"])
    return markdown_table(["in a fresh process", "median (s)", "range (s)"], rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out", default="bench/results/startup.json")
    args = parser.parse_args(argv)
    here = provenance("startup", "bench.startup", argv, machine="fresh processes, torch's default threads")
    result = {**here, "reps": args.reps, "cli_run": CLI_RUN, "seconds": measure(args.reps)}
    write_results(args.out, result)
    print(markdown(result))


if __name__ == "__main__":
    main()
