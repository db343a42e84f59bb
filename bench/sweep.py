"""The sweep's backends: the local pool against Ray, scale-out on a simulated cluster, a killed worker.

    python -m bench.sweep [--steps 60] [--seeds 3] [--out bench/results/sweep.json]

A Figure 2A-shaped grid (κ ∈ {0.01, none} × {200 points, infinite data} × seeds; ``--steps`` steps a
run, checkpoints every half run, 512 test points, L_32 at the end), timed:

- **local vs Ray on this machine**: the local backend (2 processes) against Ray on a local
  instance of 2 CPUs; Ray's overhead is its wall time over the local one's, minus 1 (its start is
  timed apart);
- **scale-out**: ``ray.cluster_utils.Cluster`` with 1 and 2 nodes of 1 CPU each, on this machine:
  runs/hour against nodes (a machine with 2 cores cannot show more than 2 nodes' worth);
- **fault tolerance**: the Ray sweep again while the first Ray worker seen running a segment is
  SIGKILLed: the sweep must complete, and its extra wall time is the lost segment;
- **batching** (``--only batching`` runs this alone): a step of one run against a step of a
  batched ensemble of M runs (``EnsembleTrainer``), both on one torch thread, as a sweep worker
  trains: whether a worker would gain by training several runs as one batched model.

Rows go to ``--out`` (JSON) and a table to standard output.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.provenance import provenance
from ehflow_core.sweep import LocalBackend, RayBackend, SweepSpec, run_sweep


def grid(steps: int, seeds: int) -> SweepSpec:
    return SweepSpec(
        kappa=(0.01, None), n_train=(200, None), seeds=tuple(range(seeds)), steps=steps, eval_every=steps,
        checkpoint_every=max(1, steps // 2), n_test=512, final_samples=32,
    )  # fmt: skip


def timed_sweep(spec: SweepSpec, backend: Any) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as out:
        began = time.perf_counter()
        rows = run_sweep(spec, Path(out), backend, stream=None)
        seconds = time.perf_counter() - began
    statuses = [r["status"] for r in rows]
    return {
        "seconds": seconds, "runs": len(rows), "finished": statuses.count("finished"),
        "runs_per_hour": 3600 * len(rows) / seconds, "nodes": sorted({r["node"] for r in rows}),
    }  # fmt: skip


def kill_first_worker(killed: list[int], deadline_s: float = 120) -> None:
    """SIGKILL the first Ray worker process seen running a segment (its title names the task)."""
    deadline = time.monotonic() + deadline_s
    while not killed and time.monotonic() < deadline:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    title = f.read()
            except OSError:
                continue
            if title.startswith(b"ray::train_segment"):
                os.kill(int(pid), signal.SIGKILL)
                killed.append(int(pid))
                return
        time.sleep(0.05)


def batching(sizes: tuple[int, ...] = (2, 4, 6, 12)) -> dict[str, Any]:
    """Seconds per step of one run and of batched ensembles of ``sizes`` runs (κ 0.01 and none ×
    seeds), on one torch thread, the library's defaults on the ring (``bench.speed``'s interleaved
    median timing); ``runs_per_run_time`` above 1 means the ensemble trains more runs per second
    than one run alone."""
    import torch

    from bench.speed import SMOKE, _median_rate
    from ehflow_core.ensemble import EnsembleTrainer
    from ehflow_core.run import TrainConfig
    from ehflow_core.targets import make_target
    from ehflow_core.training import Trainer

    torch.set_num_threads(1)
    target, config = make_target("ring"), TrainConfig(eval_every=10**6)
    runs = {"1": Trainer(config, target).train()}
    for m in sizes:
        configs = [config.replace(kappa=k, seed=s) for s in range(m // 2) for k in (0.01, None)]
        runs[str(m)] = EnsembleTrainer(configs, target).train()
    rates = _median_rate(runs, dataclasses.replace(SMOKE, warmup=5, steps=15, reps=3))
    one = 1 / rates["1"]
    result: dict[str, Any] = {"one_run_seconds_per_step": one, "ensembles": {}}
    for m in sizes:
        seconds = 1 / rates[str(m)]
        result["ensembles"][str(m)] = {"seconds_per_step": seconds, "runs_per_run_time": m * one / seconds}
        print(f"batched ensemble of {m}: {seconds / one:.2f}× a run's step, {m * one / seconds:.2f} runs per run-time")
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="training steps a run")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per setting")
    parser.add_argument("--out", default="bench/results/sweep.json")
    parser.add_argument("--only", choices=("batching",), help="run this section alone (the file's others are kept)")
    args = parser.parse_args(argv)
    if args.only == "batching":
        out = Path(args.out)
        kept = json.loads(out.read_text()) if out.exists() else {}
        out.parent.mkdir(parents=True, exist_ok=True)
        measured = {"batching": batching(), "batching_provenance": provenance("sweep", "bench.sweep", argv)}
        out.write_text(json.dumps({**kept, **measured}, indent=2))
        return

    import ray
    from ray.cluster_utils import Cluster

    spec = grid(args.steps, args.seeds)
    result: dict[str, Any] = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count()}
    result["grid"] = {"runs": len(spec.runs), "steps": spec.steps, "checkpoint_every": spec.checkpoint_every}
    result["local"] = timed_sweep(spec, LocalBackend(workers=2))
    print(f"local, 2 processes: {result['local']['seconds']:.1f} s", flush=True)

    began = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    result["ray_start_seconds"] = time.perf_counter() - began
    result["ray"] = timed_sweep(spec, RayBackend())
    result["ray_overhead"] = result["ray"]["seconds"] / result["local"]["seconds"] - 1
    print(f"Ray, local instance of 2 CPUs: {result['ray']['seconds']:.1f} s", flush=True)

    killed: list[int] = []
    killer = threading.Thread(target=kill_first_worker, args=(killed,))
    killer.start()
    result["ray_killed_worker"] = {**timed_sweep(spec, RayBackend()), "killed": len(killed)}
    killer.join()
    print(f"Ray with a worker killed: {result['ray_killed_worker']['seconds']:.1f} s", flush=True)
    ray.shutdown()

    result["cluster"] = {}
    for nodes in (1, 2):
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
        for _ in range(nodes - 1):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        try:
            result["cluster"][str(nodes)] = timed_sweep(spec, RayBackend(cluster.address))
        finally:
            ray.shutdown()
            cluster.shutdown()
        print(f"cluster of {nodes} node(s): {result['cluster'][str(nodes)]['seconds']:.1f} s", flush=True)
    one, two = (result["cluster"][k]["runs_per_hour"] for k in ("1", "2"))
    result["scaling_2_nodes"] = two / one
    result["batching"] = batching()

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({**provenance("sweep", "bench.sweep", argv), **result}, indent=2))
    print(markdown(result))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()


def markdown(result: dict[str, Any]) -> str:
    """The docs' table of the backends (with each goal, met or not) and the batching sentence."""
    from bench.provenance import markdown_table

    def met(ok: bool) -> str:
        return "**met**" if ok else "**not met**"

    local, ray, killed = result["local"], result["ray"], result["ray_killed_worker"]
    one, two = result["cluster"]["1"], result["cluster"]["2"]
    scaling = result["scaling_2_nodes"]
    extra = killed["seconds"] - ray["seconds"]
    rows = [
        ["local: 2 processes, one torch thread each", local, ""],
        [
            f"Ray: a local instance of 2 CPUs (its start, {result['ray_start_seconds']:.1f} s, apart)", ray,
            f"overhead ≤ 10 %: {met(result['ray_overhead'] <= 0.10)} ({100 * result['ray_overhead']:+.0f} %)",
        ],
        [
            "Ray, one worker SIGKILLed mid-segment", killed,
            f"completes, loses at most a segment: {met(killed['finished'] == killed['runs'] and killed['killed'] > 0)} "
            f"(all {killed['finished']} of {killed['runs']} finished, {extra:+.1f} s)",
        ],
        ["Ray cluster, 1 node × 1 CPU", one, ""],
        [
            "Ray cluster, 2 nodes × 1 CPU", two,
            f"throughput ∝ CPUs within 15 %: {met(scaling >= 1.7)} ({scaling:.2f}× for 2×)",
        ],
    ]  # fmt: skip
    table = markdown_table(
        ("backend", "wall time", "runs/hour", "goal"),
        [[name, f"{r['seconds']:.1f} s", f"{r['runs_per_hour']:.0f}", goal] for name, r, goal in rows],
    )
    b = result["batching"]
    sizes = list(b["ensembles"])
    costs = [b["ensembles"][n]["seconds_per_step"] / b["one_run_seconds_per_step"] for n in sizes]
    worth = [b["ensembles"][n]["runs_per_run_time"] for n in sizes]
    sentence = (
        f"A step of a batched ensemble of {', '.join(sizes[:-1])} and {sizes[-1]} runs costs "
        f"{', '.join(f'{c:.2f}×' for c in costs[:-1])} and {costs[-1]:.2f}× a single run's step "
        f"({1000 * b['one_run_seconds_per_step']:.0f} ms; medians of 3 interleaved timings), i.e. "
        f"{min(worth):.2f}–{max(worth):.2f} runs' worth of progress per run-time."
    )
    return table + "\n\n" + sentence
