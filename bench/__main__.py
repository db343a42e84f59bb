"""The benchmark suite: speed of the training step, scaling, κ sweeps, refresh time, memory, peers.

    python -m bench [--smoke] [--only paths,sweep,...] [--peer-seconds 60] [--threads 2]
                    [--out bench/results/suite.json] [--merge]

Writes a JSON file and prints a Markdown table (the README's benchmark section shows it).
``--smoke`` runs every measure at tiny sizes: CI runs it so the suite cannot rot; its numbers mean
nothing.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from . import peers, speed
from .provenance import provenance, write_results

SECTIONS = ("paths", "scaling", "sweep", "constraint", "dashboard_refresh", "memory", "peers", "gpu")
GOALS = {"speedup": "≥ 3×", "sweep": "≤ 2× one run", "refresh": "≤ 150 ms"}


def run(sections: list[str], sizes: speed.Sizes, peer_sizes: peers.PeerSizes, threads: int) -> dict[str, Any]:
    result: dict[str, Any] = {
        **provenance("suite", "bench", machine=f"{torch.get_num_threads()} torch threads"),
        "torch": torch.__version__,
        "sizes": sizes.__dict__,
    }
    for section in sections:
        started = time.perf_counter()
        result.setdefault("section_when", {})[section] = result["when"]
        result.setdefault("section_commit", {})[section] = result["commit"]
        if section in speed.MEASURES:
            result[section] = speed.MEASURES[section](sizes)
        elif section == "memory":
            result[section] = speed.memory(sizes, threads)
        elif section == "peers":
            result[section] = peers.peers(peer_sizes)
        elif section == "gpu":
            result[section] = _gpu(sizes)
        print(f"[bench] {section}: {time.perf_counter() - started:.0f} s", flush=True)
    return result


def _gpu(sizes: speed.Sizes) -> dict[str, Any]:
    """Steps/s on CUDA where a GPU exists (an absolute time means something only there)."""
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device here; python -m bench.gpu_check on a CUDA machine"}
    rates = {}
    for batch in sizes.batches:
        config = speed.PAPER.replace(batch=batch, constraint_batch=batch, flow=speed.PAPER.flow.replace(device="cuda"))
        rates[str(batch)] = speed._median_rate({"fast": speed._steps(config)}, sizes)["fast"]
    return {"device": torch.cuda.get_device_name(), "steps_per_s_by_batch": rates}


def table(result: dict[str, Any]) -> str:
    """The results as Markdown."""
    lines = [f"Machine: {result['machine']}; torch {result['torch']}; {result['when']}.", ""]
    lines += ["| measure | result | goal |", "|---|---|---|"]
    if "paths" in result:
        p = result["paths"]
        lines.append(f"| reference path (autograd), paper config | {p['reference_steps_per_s']:.1f} steps/s | |")
        lines.append(f"| fast path, paper config | {p['fast_steps_per_s']:.1f} steps/s | |")
        lines.append(f"| fast path / reference | {p['speedup']:.2f}× | {GOALS['speedup']} |")
    if "sweep" in result:
        s = result["sweep"]
        lines.append(
            f"| κ sweep ({s['members']} runs), batched, per step | {s['batched_over_one_run']:.2f}× one run "
            f"(sequential: {s['sequential_over_one_run']:.2f}×) | {GOALS['sweep']} |"
        )
    if "dashboard_refresh" in result:
        d = result["dashboard_refresh"]
        lines.append(f"| dashboard refresh (snapshot) | {d['snapshot_ms']:.0f} ms | {GOALS['refresh']} |")
        lines.append(f"| dashboard figures (5 Plotly figures) | {d['figures_ms']:.0f} ms | |")
    if "memory" in result:
        for key, m in result["memory"].items():
            lines.append(
                f"| peak RSS, training, {key.replace('_', ' ')} | {m['peak_rss_mb']:.0f} MB "
                f"({m['rss_before_training_mb']:.0f} MB before the first step) | |"
            )
    if "constraint" in result:
        lines += ["", "The constraint for all of so(d), value and gradient, 256 base samples (ms per call):", ""]
        lines += ["| group | generators | autograd (definition) | ∇H per generator | ∇H once (training) |"]
        lines += ["|---|---|---|---|---|"]
        for group, c in result["constraint"].items():
            lines.append(
                f"| {group.replace('so', 'so(')}) | {c['generators']} | {c['reference_ms']:.1f} | "
                f"{c['per_generator_ms']:.1f} | {c['fast_ms']:.1f} |"
            )
    if "scaling" in result:
        lines += ["", "Fast-path steps/s, one setting changed at a time from the paper configuration:", ""]
        for name, rates in result["scaling"].items():
            cells = ", ".join(f"{k}: {v:.1f}" for k, v in rates.items())
            lines.append(f"- {name}: {cells}")
    if "peers" in result:
        lines += ["", f"Test NLL − true entropy (nats) at {result['peers']['seconds_per_model']:.0f} s per model:", ""]
        tasks = result["peers"]["tasks"]
        models = list(next(iter(tasks.values()))["models"])
        lines += ["| task | " + " | ".join(models) + " |", "|---" * (len(models) + 1) + "|"]
        for task, r in tasks.items():
            cells = []
            for m in models:
                row = r["models"][m]
                cell = f"{row['best_test_nll_minus_entropy']:.3f}"
                if "train_minus_test_ll" in row:
                    cell += f" (gap {row['train_minus_test_ll']:.3f})"
                cells.append(cell)
            lines.append(f"| {task} | " + " | ".join(cells) + " |")
    if "gpu" in result and "skipped" not in result["gpu"]:
        g = result["gpu"]
        cells = ", ".join(f"batch {k}: {v:.0f}" for k, v in g["steps_per_s_by_batch"].items())
        lines += ["", f"GPU ({g['device']}) steps/s: {cells}"]
    return "\n".join(lines)


def merged(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``new``'s sections over ``old``'s (``--merge``): each section keeps the date and commit it
    was measured at, and the file's commit lists every section's, in order."""
    when = {**{k: old["when"] for k in SECTIONS if k in old}, **old.get("section_when", {})}
    commits = {**{k: old["commit"] for k in SECTIONS if k in old}, **old.get("section_commit", {})}
    result = {
        **old, **new,
        "section_when": {**when, **new["section_when"]},
        "section_commit": {**commits, **new["section_commit"]},
    }  # fmt: skip
    result["commit"] = ", ".join(dict.fromkeys(result["section_commit"][k] for k in SECTIONS if k in result))
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (CI): checks the suite runs, not speed")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {', '.join(SECTIONS)}")
    parser.add_argument("--peer-seconds", type=float, default=60.0, help="training seconds per model per task")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the README's numbers use 2)")
    parser.add_argument("--out", default="bench/results/suite.json")
    parser.add_argument("--merge", action="store_true", help="update only the sections run in an existing --out")
    args = parser.parse_args(argv)
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        parser.error(f"--only: unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    sizes = speed.SMOKE if args.smoke else speed.FULL
    peer_sizes = peers.peer_sizes(0.25 if args.smoke else args.peer_seconds, smoke=args.smoke)
    result = run(sections, sizes, peer_sizes, args.threads)
    out = Path(args.out)
    if args.merge and out.exists():  # keep the sections not re-run; each section records when it ran
        result = merged(json.loads(out.read_text()), result)
    print(table(result))
    write_results(out, result)


if __name__ == "__main__":
    main()
