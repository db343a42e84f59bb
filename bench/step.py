"""The training step, side by side with a textbook autograd step of the same model (issue "speed").

    python -m bench.step [--steps 30] [--reps 5] [--threads 1,2] [--out bench/results/step.json]

For each workload and torch thread count, in one process and alternating (so a shared, noisy
machine slows both alike): the project's ``Trainer`` step against :class:`PlainStep`, a plain
``create_graph`` autograd implementation written here, which carries none of the project's
overheads (records, evaluations, gradient norms, divergence checks). Reported: steps/s of each
(median of ``--reps`` timings of ``--steps`` steps; of ``eval_every`` steps for a workload that
evaluates, so each timing holds one evaluation), their ratio, where the project's step spends
its time (cProfile, by function), and a roofline: the step's floating-point operations
(as torch's profiler counts them) against this machine's measured matmul rate.

Workloads (the ring, κ = 0.001, width 128, two leapfrog steps, dt 0.5, float32):
- ``defaults``: the library's defaults (DReG with K = 8, batch 64, a H per leapfrog step) with its
  default evaluation (L_32 on 512 test points every 100 steps), against a plain IWAE K = 8, batch
  64 step with one shared H (which does less work: no second pass, one H).
- ``paper``: the paper's configuration (ELBO, batch 256, one shared H), no evaluation, against a
  plain ELBO batch 256 step.
- ``sweep of 4``: a κ sweep's segment, the defaults at κ = 0.001, 0.01, 0.1 and unconstrained as
  one batched ensemble (``EnsembleTrainer``, vmap over members), against four plain IWAE steps.
- ``4 runs, one process``: four ``Trainer`` s with the defaults stepped in turn, as one dashboard
  training process hosting four runs does, against four plain IWAE steps.

A step of the two four-run workloads is one step of each of the four runs.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import math
import pstats
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from bench.provenance import markdown_table, provenance, write_results
from ehflow_core import TrainConfig, Trainer
from ehflow_core.ensemble import EnsembleTrainer
from ehflow_core.targets import make_target

KAPPA = 0.001
NEVER = 10**9  # steps: "no limit" and "no evaluation"
DEFAULTS = TrainConfig(kappa=KAPPA, max_steps=NEVER)
SWEEP_KAPPAS = (KAPPA, 0.01, 0.1, None)
IWAE = dict(k=8, batch=64, iwae=True)
WORKLOADS: dict[str, dict[str, Any]] = {
    "defaults": {"configs": [DEFAULTS], "plain": IWAE},
    "paper": {
        "configs": [TrainConfig(kappa=KAPPA, max_steps=NEVER, eval_every=NEVER).as_paper()],
        "plain": dict(k=1, batch=256, iwae=False),
    },
    "sweep of 4": {"configs": [DEFAULTS.replace(kappa=k) for k in SWEEP_KAPPAS], "ensemble": True, "plain": IWAE},
    "4 runs, one process": {"configs": [DEFAULTS.replace(seed=s) for s in range(4)], "plain": IWAE},
}


def _mlp(sizes: tuple[int, ...], act: type[nn.Module]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), act()]
    return nn.Sequential(*layers[:-1])


class PlainStep:
    """A textbook step of the same model: K and U softplus MLPs [2, 128, 128, 1] (one H shared by
    the two leapfrog steps), a relu Gaussian encoder, the inverse flow with ∇U and ∇K from
    ``torch.autograd.grad(create_graph=True)``, the bound (L_K or ELBO) on a batch of the ring,
    the constraint E_π[{g, H}²] with g = q₁p₂ − q₂p₁ on 256 base samples (λ fixed at 1), Adam."""

    def __init__(
        self, k: int, batch: int, iwae: bool, dt: float = 0.5, n_steps: int = 2, width: int = 128, device: str = "cpu"
    ) -> None:
        torch.manual_seed(0)
        self.K, self.U = _mlp((2, width, width, 1), nn.Softplus), _mlp((2, width, width, 1), nn.Softplus)
        self.mean, self.scale = _mlp((2, width, width, 2), nn.ReLU), _mlp((2, width, width, 2), nn.ReLU)
        self.k, self.batch, self.iwae, self.dt, self.n_steps = k, batch, iwae, dt, n_steps
        modules = (self.K, self.U, self.mean, self.scale)
        params = [p for m in modules for p in m.to(device).parameters()]
        self.opt = torch.optim.Adam(params, lr=3e-3)
        self.target = make_target("ring")
        # As the project's trainer does: the target samples on the CPU, the noise on the device.
        self.sample_rng, self.rng = torch.Generator().manual_seed(0), torch.Generator(device).manual_seed(0)
        self.device = torch.device(device)

    @staticmethod
    def _grad(f: nn.Module, x: Tensor) -> Tensor:
        return torch.autograd.grad(f(x).sum(), x, create_graph=True)[0]

    def _inverse(self, q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        dt = -self.dt
        for _ in range(self.n_steps):
            p = p - dt / 2 * self._grad(self.U, q)
            q = q + dt * self._grad(self.K, p)
            p = p - dt / 2 * self._grad(self.U, q)
        return q, p

    def __call__(self) -> None:
        x = self.target.sample(self.batch, self.sample_rng).to(self.device)  # (B, 2)
        mean, scale = self.mean(x), nn.functional.softplus(self.scale(x)) + 1e-3
        eps = torch.randn(self.k, *x.shape, generator=self.rng, device=self.device)
        p = (mean + scale * eps).reshape(-1, 2).requires_grad_(True)
        q = x.expand(self.k, *x.shape).reshape(-1, 2).requires_grad_(True)
        q0, p0 = self._inverse(q, p)
        log_base = -0.5 * (q0.pow(2) + p0.pow(2)).sum(-1) - 2 * math.log(2 * math.pi)
        log_h = (-0.5 * eps.pow(2) - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_w = log_base.view(self.k, -1) - log_h
        bound = (torch.logsumexp(log_w, 0) - math.log(self.k)).mean() if self.iwae else log_w.mean()
        qc = torch.randn(256, 2, generator=self.rng, device=self.device)
        pc = torch.randn(256, 2, generator=self.rng, device=self.device)
        qc.requires_grad_(True)
        pc.requires_grad_(True)
        dU, dK = self._grad(self.U, qc), self._grad(self.K, pc)
        bracket = (pc[:, 1] * dK[:, 0] - pc[:, 0] * dK[:, 1]) + (qc[:, 1] * dU[:, 0] - qc[:, 0] * dU[:, 1])
        loss = -bound + (bracket.pow(2).mean() - KAPPA)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()


def _rates(
    steps: dict[str, Callable[[], None]], n: int, reps: int, sync: Callable[[], None] = lambda: None
) -> dict[str, float]:
    """Steps/s of each step function: a warm-up, then ``reps`` alternating timings of ``n`` steps;
    ``sync`` waits for the device's queued work (``torch.cuda.synchronize`` on a GPU)."""
    for step in steps.values():
        for _ in range(5):
            step()
    sync()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(reps):
        for name, step in steps.items():
            began = time.perf_counter()
            for _ in range(n):
                step()
            sync()
            times[name].append(time.perf_counter() - began)
    return {name: n / statistics.median(t) for name, t in times.items()}


def _project_step(configs: list[TrainConfig], ensemble: bool = False) -> Callable[[], None]:
    """One step of each of the runs of ``configs``: one batched ensemble, or trainers stepped in turn."""
    target = make_target("ring")
    if ensemble:
        rounds = EnsembleTrainer(configs, target).train()
        return lambda: next(rounds) and None
    runs = [Trainer(config, target).train() for config in configs]

    def step() -> None:
        for steps in runs:
            next(steps)

    return step


def _plain_steps(n: int, plain: dict[str, Any], device: str = "cpu") -> Callable[[], None]:
    """One step of each of ``n`` plain models on ``device``."""
    models = [PlainStep(**plain, device=device) for _ in range(n)]

    def step() -> None:
        for model in models:
            model()

    return step


def _profile(step: Callable[[], None], n: int) -> dict[str, float]:
    """Share of the project's step time in its main parts (cProfile's cumulative time)."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(n):
        step()
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = max(stats.total_tt, 1e-9)  # type: ignore[attr-defined]
    parts = {
        "training bound (forward)": "training_bound", "constraint (forward)": "constraint_values",
        "backward": "backward", "Adam": "ehflow_core/optim.py:step", "evaluation": "evaluate",
        "gradient norms and clipping": "clip_grad_norms_", "drawing the batch and noise": "draw",
        "the record": "conclude",
    }  # fmt: skip
    shares: dict[str, float] = {}
    for label, name in parts.items():
        where, _, fn_name = name.rpartition(":")  # "file:function" where a bare name is ambiguous
        cumulative = [
            v[3]
            for (file, _, fn), v in stats.stats.items()  # type: ignore[attr-defined]
            if fn == fn_name and file.endswith(where)
        ]
        shares[label] = round(max(cumulative, default=0.0) / total, 3)
    return shares


def _flops(step: Callable[[], None]) -> float:
    """Floating-point operations of one step, as torch's profiler counts them (its matmuls)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        step()
    return float(sum(event.flops or 0 for event in prof.key_averages()))


def _matmul_rate() -> float:
    """This machine's float32 matmul rate (FLOP/s) at the step's shapes (512 × 128 by 128 × 128)."""
    a, b = torch.randn(512, 128), torch.randn(128, 128)
    for _ in range(50):
        a @ b
    n, began = 2000, time.perf_counter()
    for _ in range(n):
        a @ b
    return 2 * 512 * 128 * 128 * n / (time.perf_counter() - began)


# The goals of issue "speed", as the smallest ratio that meets them.
GOALS = {"defaults": 1.5, "paper": 1.3}


def markdown(result: dict[str, Any]) -> str:
    """docs/benchmarks.md's two tables (speeds and profiles) from a results file of :func:`main`;
    a test holds the docs to it."""

    def verdict(workload: str, ratio: float) -> str:
        goal = GOALS.get(workload)
        return "—" if goal is None else f"≥ {goal}: " + ("met" if ratio >= goal else "**not met**")

    rows = result["rows"]
    speeds = markdown_table(
        ["workload", "threads", "project steps/s", "plain steps/s", "ratio", "goal"],
        (
            [r["workload"], r["threads"], f"{r['project_steps_per_s']:.1f}", f"{r['plain_steps_per_s']:.1f}",
             f"{r['ratio']:.2f}", verdict(r["workload"], r["ratio"])]
            for r in rows
        ),
    )  # fmt: skip
    parts = list(rows[0]["project_profile"])
    profiles = markdown_table(
        ["workload", "threads", *parts],
        ([r["workload"], r["threads"], *(f"{100 * r['project_profile'][p]:.0f} %" for p in parts)] for r in rows),
    )
    return speeds + "\n\n" + profiles


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps", type=int, default=30, help="steps per timing (at least a run's eval_every, where it evaluates)"
    )
    parser.add_argument("--reps", type=int, default=5, help="timings per step (the median is reported)")
    parser.add_argument("--threads", default="1,2", help="torch thread counts, comma-separated")
    parser.add_argument("--out", default="bench/results/step.json")
    args = parser.parse_args(argv)
    rows = []
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        rate = _matmul_rate()
        for name, workload in WORKLOADS.items():
            configs = workload["configs"]
            # A timing that evaluates holds exactly one evaluation: the median of shorter ones would leave it out.
            every = configs[0].eval_every
            n = args.steps if every >= NEVER else max(args.steps, every)
            project = _project_step(configs, workload.get("ensemble", False))
            plain = _plain_steps(len(configs), workload["plain"])
            rates = _rates({"project": project, "plain": plain}, n, args.reps)
            flops = _flops(plain)
            row = {
                "workload": name, "threads": threads, "project_steps_per_s": round(rates["project"], 1),
                "plain_steps_per_s": round(rates["plain"], 1), "ratio": round(rates["project"] / rates["plain"], 2),
                "plain_gflop_per_step": round(flops / 1e9, 3), "matmul_gflop_per_s": round(rate / 1e9, 1),
                "roofline_steps_per_s": round(rate / flops, 1), "project_profile": _profile(project, n),
            }  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
    write_results(args.out, {**provenance("step", "bench.step", argv), "kappa": KAPPA, "rows": rows})


if __name__ == "__main__":
    main()
