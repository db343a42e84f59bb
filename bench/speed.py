"""Speed measures of the benchmark suite: training steps/s, scaling, sweeps, refresh time, memory.

Every timing is the median of several repetitions after a warm-up; every comparison is a ratio of
numbers measured in the same process, interleaved, so that a noisy shared machine affects both.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ehflow_core import EnsembleTrainer, FlowConfig, TrainConfig, Trainer
from ehflow_core.targets import ProductTarget, Target, make_target


@dataclass(frozen=True)
class Sizes:
    """How much work each measure does (``FULL`` for the README's table, ``SMOKE`` for CI)."""

    warmup: int  # steps before timing
    steps: int  # steps per timed repetition
    reps: int  # repetitions (the median is reported)
    batches: tuple[int, ...]
    n_steps: tuple[int, ...]
    dims: tuple[int, ...]
    widths: tuple[int, ...]
    sweep_kappas: tuple[float, ...]
    memory_steps: int
    memory_batches: tuple[int, ...]  # batch sizes of the memory probes
    constraint_dims: tuple[int, ...]  # d of the so(d) constraint timings


FULL = Sizes(
    warmup=10, steps=30, reps=5, batches=(64, 256, 1024, 4096), n_steps=(1, 2, 4, 8, 16), dims=(2, 3, 4, 8),
    widths=(32, 64, 128, 256), sweep_kappas=(0.001, 0.003, 0.01, 0.03, 0.1), memory_steps=200,
    memory_batches=(256, 4096), constraint_dims=(2, 3, 4, 8),
)  # fmt: skip
SMOKE = Sizes(
    warmup=1, steps=2, reps=2, batches=(64,), n_steps=(1,), dims=(2,), widths=(32,), sweep_kappas=(0.01,),
    memory_steps=3, memory_batches=(256,), constraint_dims=(2, 4),
)  # fmt: skip

PAPER = TrainConfig().as_paper().replace(kappa=0.01, max_steps=10**9, eval_every=10**9)
"""The paper's configuration: d = 2, width 128, two leapfrog steps, batch 256, SO(2) on, float32."""


def target_of_dim(dim: int) -> Target:
    """The benchmark's target in each dimension: ring (2), shell (3), products of rings (4, 8)."""
    if dim == 2:
        return make_target("ring")
    if dim == 3:
        return make_target("shell3d")
    if dim % 2 == 0:
        return ProductTarget(f"rings{dim}d", f"{dim // 2} independent rings", [make_target("ring")] * (dim // 2))
    raise ValueError(f"dim must be 2, 3 or even, got {dim}")


def _median_rate(runs: dict[str, Iterator[Any]], sizes: Sizes) -> dict[str, float]:
    """Steps/s of each iterator (one item = one step): warm up, then ``reps`` interleaved timings."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for it in runs.values():
        for _ in range(sizes.warmup):
            next(it)
    for _ in range(sizes.reps):
        for name, it in runs.items():
            start = time.perf_counter()
            for _ in range(sizes.steps):
                next(it)
            times[name].append(time.perf_counter() - start)
    return {name: sizes.steps / statistics.median(t) for name, t in times.items()}


def _steps(config: TrainConfig, target: Target | None = None) -> Iterator[Any]:
    return Trainer(config, target or make_target("ring")).train()


def paths(sizes: Sizes) -> dict[str, Any]:
    """Reference (plain autograd) against fast path, the paper's configuration."""
    rates = _median_rate({"reference": _steps(PAPER.replace(grad_mode="reference")), "fast": _steps(PAPER)}, sizes)
    return {**{f"{k}_steps_per_s": v for k, v in rates.items()}, "speedup": rates["fast"] / rates["reference"]}


def scaling(sizes: Sizes) -> dict[str, Any]:
    """Fast-path steps/s against batch size, leapfrog steps, dimension and width (one change at a time)."""
    out: dict[str, Any] = {}
    for name, values, make in (
        ("batch", sizes.batches, lambda v: (PAPER.replace(batch=v, constraint_batch=v), None)),
        ("n_steps", sizes.n_steps, lambda v: (PAPER.replace(flow=PAPER.flow.replace(n_steps=v)), None)),
        ("dim", sizes.dims, lambda v: (PAPER.replace(flow=PAPER.flow.replace(dim=v)), target_of_dim(v))),
        ("width", sizes.widths, lambda v: (PAPER.replace(flow=PAPER.flow.replace(hidden=(v, v))), None)),
    ):
        runs = {str(v): _steps(*make(v)) for v in values}
        out[name] = _median_rate(runs, sizes)
    return out


def sweep(sizes: Sizes) -> dict[str, Any]:
    """A κ sweep (``sweep_kappas`` plus the baseline): seconds per step, batched against sequential."""
    target = make_target("ring")
    configs = [PAPER.replace(kappa=k) for k in (*sizes.sweep_kappas, None)]

    def sequential() -> Iterator[None]:
        iterators = [Trainer(c, target).train() for c in configs]
        while True:
            for it in iterators:
                next(it)
            yield None

    runs = {"one_run": _steps(PAPER), "sequential": sequential(), "batched": EnsembleTrainer(configs, target).train()}
    rates = _median_rate(runs, sizes)
    one = 1 / rates["one_run"]
    return {
        "members": len(configs),
        "seconds_per_step": {k: 1 / v for k, v in rates.items()},
        "batched_over_one_run": (1 / rates["batched"]) / one,
        "sequential_over_one_run": (1 / rates["sequential"]) / one,
        "batched_speedup_over_sequential": rates["batched"] / rates["sequential"],
    }


def constraint(sizes: Sizes) -> dict[str, Any]:
    """The constraint C_k = E_π[{g_k, H}²] for all of so(d), value and gradient to H's weights
    (the paper's width, 256 base samples), three ways: the autograd definition (``reference``),
    closed-form brackets recomputing ∇H for each generator (``per_generator``), and ∇U, ∇K once per
    Hamiltonian for every generator (``fast``, what training uses). Milliseconds per call."""
    import torch

    from ehflow_core import HamiltonianFlow, bracket_with_hamiltonian, constraint_values, so_generators

    out: dict[str, Any] = {}
    for dim in sizes.constraint_dims:
        flow = HamiltonianFlow(FlowConfig(dim=dim))
        gens = so_generators(dim)
        q, p = flow.sample_base(256, torch.Generator().manual_seed(0))
        hamiltonians = flow.hamiltonian_list

        def per_generator() -> Any:
            rows = [
                torch.stack([bracket_with_hamiltonian(g, h, q, p).square().mean() for h in hamiltonians]) for g in gens
            ]
            return torch.stack(rows).mean(-1)

        def calls(compute: Callable[[], Any]) -> Iterator[None]:
            while True:
                flow.zero_grad(set_to_none=True)
                compute().sum().backward()
                yield None

        runs = {
            "reference": calls(lambda: constraint_values(hamiltonians, gens, q, p, reference=True)),
            "per_generator": calls(per_generator),
            "fast": calls(lambda: constraint_values(hamiltonians, gens, q, p)),
        }
        rates = _median_rate(runs, sizes)
        out[f"so{dim}"] = {"generators": len(gens), **{f"{k}_ms": 1000 / v for k, v in rates.items()}}
    return out


def dashboard_refresh(sizes: Sizes) -> dict[str, Any]:
    """One full dashboard refresh at its default sizes: samples, KDEs, heatmaps, trajectories
    (``take_snapshot``), and separately the five figures' JSON as the dashboard sends it (its map
    panels drawn as pictures, ``raster=True``)."""
    from dashboard.slot import VIEW_SIZES
    from ehflow_core.figures import constraint_spec, curves_spec, density_spec, energy_spec, spec_json, trajectory_spec
    from ehflow_core.snapshot import take_snapshot

    trainer = Trainer(PAPER.replace(eval_every=5), make_target("ring"))
    records = list(trainer.train(more_steps=10))
    snap = None

    def refresh() -> Iterator[None]:
        nonlocal snap
        while True:
            snap = take_snapshot(trainer.flow, trainer.target, VIEW_SIZES, previous=snap)
            yield None

    def figures() -> Iterator[None]:
        while True:
            for build in (density_spec, energy_spec, trajectory_spec):
                spec_json(build(snap, raster=True))
            spec_json(curves_spec({"κ=0.01": records}))
            spec_json(constraint_spec(records))
            yield None

    per_call = Sizes(**{**sizes.__dict__, "warmup": 2, "steps": 1, "reps": max(3, sizes.reps)})
    rates = _median_rate({"snapshot": refresh(), "figures": figures()}, per_call)
    return {"snapshot_ms": 1000 / rates["snapshot"], "figures_ms": 1000 / rates["figures"], "sizes": str(VIEW_SIZES)}


_MEMORY_PROBE = """
import json, torch
from ehflow_core import Trainer
from ehflow_core.targets import make_target
from bench.speed import PAPER


def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB -> MB


torch.set_num_threads({threads})
trainer = Trainer(PAPER.replace(batch={batch}, constraint_batch={batch}), make_target("ring"))
before = status("VmRSS")
with open("/proc/self/clear_refs", "w") as f:  # reset the peak (VmHWM) to the current RSS
    f.write("5")
for _ in trainer.train(more_steps={steps}):
    pass
print(json.dumps({{"rss_before_training_mb": before, "peak_rss_mb": status("VmHWM")}}))
"""


def memory(sizes: Sizes, threads: int) -> dict[str, Any]:
    """Peak resident memory while training, in a fresh process per batch size (256 and 4096; 256
    alone for the smoke run): the peak is reset after start-up, so it is training's own
    high-water mark over the model's set-up."""
    probes = {  # at once: each measures its own process's memory, not time
        f"batch_{batch}": subprocess.Popen(
            [sys.executable, "-c", _MEMORY_PROBE.format(threads=threads, batch=batch, steps=sizes.memory_steps)],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for batch in sizes.memory_batches
    }
    out = {}
    for name, probe in probes.items():
        stdout, _ = probe.communicate()
        if probe.returncode != 0:
            raise RuntimeError(f"the memory probe ({name}) failed with exit code {probe.returncode}")
        out[name] = json.loads(stdout.strip().splitlines()[-1])
    return out


MEASURES: dict[str, Callable[..., dict[str, Any]]] = {
    "paths": paths,
    "scaling": scaling,
    "sweep": sweep,
    "constraint": constraint,
    "dashboard_refresh": dashboard_refresh,
}
