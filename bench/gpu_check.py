"""GPU check: the core on ``device="cuda"`` — exactness, training, checkpoints — and steps/s there.

    python -m bench.gpu_check [--out bench/results/gpu.json] [--device cuda] [--seconds 5]

Run where a CUDA device exists (the project's CI has none). Exits non-zero if any check fails.
Speeds: the paper's configuration and the defaults at several batch sizes, and the project's step
side by side with ``bench.step``'s textbook autograd step on the device (the defaults and the
paper's configuration, alternating timings in one process). ``--device cpu`` runs the same checks
on the CPU at small sizes, to try the script before spending a GPU's time on it. Where the
code runs from a copy of the working tree, ``EHFLOW_COMMIT`` names the commit measured (it takes
precedence over git's answer there).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.provenance import provenance
from bench.step import WORKLOADS, _plain_steps, _project_step, _rates
from ehflow_core import FlowConfig, HamiltonianFlow, equivariance_error, invariance_error, rotation_generator
from ehflow_core.checkpoint import load_checkpoint, load_trainer, save_checkpoint
from ehflow_core.targets import make_target
from ehflow_core.training import TrainConfig, Trainer


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def steps_per_s(config: TrainConfig, seconds: float) -> float:
    """The trainer's steps/s over ``seconds`` after 20 steps of warm-up (its own evaluations included)."""
    device = config.flow.device
    trainer = Trainer(config, make_target("ring"))
    list(trainer.train(more_steps=20))
    _sync(device)
    start, first = time.perf_counter(), trainer.step
    for _ in trainer.train(seconds=seconds):
        pass
    _sync(device)
    return (trainer.step - first) / (time.perf_counter() - start)


def side_by_side(device: str, steps: int, reps: int) -> dict[str, dict[str, float]]:
    """``bench.step``'s defaults and paper workloads on ``device``: the project's step against the
    textbook autograd step, alternating, steps/s and their ratio."""
    rows = {}
    for name in ("defaults", "paper"):
        workload = WORKLOADS[name]
        configs = [c.replace(flow=c.flow.replace(device=device)) for c in workload["configs"]]
        steps_fns = {"project": _project_step(configs), "plain": _plain_steps(1, workload["plain"], device)}
        rates = _rates(steps_fns, steps, reps, sync=lambda: _sync(device))
        rows[name] = {
            "project_steps_per_s": round(rates["project"], 1), "plain_steps_per_s": round(rates["plain"], 1),
            "ratio": round(rates["project"] / rates["plain"], 2),
        }  # fmt: skip
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results/gpu.json")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="cpu: a dry run at small sizes")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds of training per speed")
    args = parser.parse_args()
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here")
        return 2
    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu (dry run)"
    checks: dict[str, object] = {"device": name, "torch": torch.__version__}
    failures = []

    def check(name: str, ok: bool, value: object) -> None:
        checks[name] = value
        if not ok:
            failures.append(name)

    for dtype, tol in (("float64", 1e-10), ("float32", 1e-5)):
        torch.manual_seed(0)
        flow = HamiltonianFlow(FlowConfig(dtype=dtype, device=device, dt=1.0, n_steps=3))
        q, p = flow.sample_base(4096)
        with torch.no_grad():
            back = flow.inverse_flow(*flow.forward_flow(q, p))
        err = max(float((back[0] - q).abs().max()), float((back[1] - p).abs().max()))
        check(f"inverse_error_{dtype}", err < tol, err)
        check(f"on_device_{dtype}", flow.sample(8).device.type == device, flow.sample(8).device.type)
    radial = HamiltonianFlow(FlowConfig(dtype="float64", device=device, invariant_blocks=((0, 1),)))
    g = rotation_generator(0, 1, 2)
    eq = equivariance_error(radial, g)
    check("equivariance_error_radial", eq < 1e-10, eq)
    inv = invariance_error(radial, g, n_samples=64)
    check("invariance_spread_over_noise_radial", inv.spread < 1.5 * inv.noise_floor, [inv.spread, inv.noise_floor])

    config = TrainConfig(flow=FlowConfig(device=device), kappa=0.01, max_steps=300, eval_every=100, lr=3e-3)
    trainer = Trainer(config, make_target("ring"))
    records = list(trainer.train())
    check("train_test_ll_improves", records[-1].test_log_likelihood > records[99].test_log_likelihood - 0.05,
          [records[99].test_log_likelihood, records[-1].test_log_likelihood])  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        path = save_checkpoint(trainer, Path(tmp) / "c.pt")
        loaded = load_checkpoint(path)
        q = trainer.test_data[:64]
        with torch.no_grad():
            same = torch.equal(loaded.forward_flow(q, q)[0], trainer.flow.forward_flow(q, q)[0])
        check("checkpoint_round_trip", same, same)
        resumed = load_trainer(path)
        check("resume_continues", next(resumed.train(more_steps=1)).step == 301, resumed.step)
    huge = Trainer(TrainConfig(flow=FlowConfig(device=device, dt=1e20), max_steps=5), make_target("ring"))
    check("divergence_caught", list(huge.train())[-1].event == "diverged", "diverged")

    small = device == "cpu"
    base = TrainConfig(flow=FlowConfig(device=device), kappa=0.01)
    for label, config, batches in (
        ("paper_config", base.as_paper(), (256, 4096) if small else (256, 4096, 65536)),
        ("defaults", base, (64, 1024) if small else (64, 1024, 16384)),
    ):
        checks[f"train_steps_per_s_{label}_float32"] = {
            f"batch_{batch}": round(steps_per_s(config.replace(batch=batch), args.seconds), 1) for batch in batches
        }
    checks["side_by_side_with_plain_autograd"] = side_by_side(device, 5 if small else 50, 3 if small else 5)
    checks["failures"] = failures
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    here = provenance("gpu_check", "bench.gpu_check", machine=name)
    # A device machine gets a copy of the working tree, whose git (if any) may not know its commit.
    here["commit"] = os.environ.get("EHFLOW_COMMIT") or here["commit"]
    checks = {**here, **checks}
    out.write_text(json.dumps(checks, indent=2))
    print(json.dumps(checks, indent=2))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
