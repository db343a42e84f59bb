"""GPU check: the core on ``device="cuda"`` — exactness, training, checkpoints — and steps/s there.

    python -m bench.gpu_check [--out bench/results/gpu.json]

Run where a CUDA device exists (the project's CI has none). Exits non-zero if any check fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.provenance import provenance
from ehflow_core import FlowConfig, HamiltonianFlow, equivariance_error, invariance_error, rotation_generator
from ehflow_core.checkpoint import load_checkpoint, load_trainer, save_checkpoint
from ehflow_core.targets import make_target
from ehflow_core.training import TrainConfig, Trainer


def steps_per_s(config: TrainConfig, seconds: float = 5.0) -> float:
    trainer = Trainer(config, make_target("ring"))
    list(trainer.train(more_steps=20))
    torch.cuda.synchronize()
    start, first = time.perf_counter(), trainer.step
    for _ in trainer.train(seconds=seconds):
        pass
    torch.cuda.synchronize()
    return (trainer.step - first) / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results/gpu.json")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device here")
        return 2
    checks: dict[str, object] = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    failures = []

    def check(name: str, ok: bool, value: object) -> None:
        checks[name] = value
        if not ok:
            failures.append(name)

    for dtype, tol in (("float64", 1e-10), ("float32", 1e-5)):
        torch.manual_seed(0)
        flow = HamiltonianFlow(FlowConfig(dtype=dtype, device="cuda", dt=1.0, n_steps=3))
        q, p = flow.sample_base(4096)
        with torch.no_grad():
            back = flow.inverse_flow(*flow.forward_flow(q, p))
        err = max(float((back[0] - q).abs().max()), float((back[1] - p).abs().max()))
        check(f"inverse_error_{dtype}", err < tol, err)
        check(f"on_cuda_{dtype}", flow.sample(8).device.type == "cuda", flow.sample(8).device.type)
    radial = HamiltonianFlow(FlowConfig(dtype="float64", device="cuda", invariant_blocks=((0, 1),)))
    g = rotation_generator(0, 1, 2)
    eq = equivariance_error(radial, g)
    check("equivariance_error_radial", eq < 1e-10, eq)
    inv = invariance_error(radial, g, n_samples=64)
    check("invariance_spread_over_noise_radial", inv.spread < 1.5 * inv.noise_floor, [inv.spread, inv.noise_floor])

    config = TrainConfig(flow=FlowConfig(device="cuda"), kappa=0.01, max_steps=300, eval_every=100, lr=3e-3)
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
    huge = Trainer(TrainConfig(flow=FlowConfig(device="cuda", dt=1e20), max_steps=5), make_target("ring"))
    check("divergence_caught", list(huge.train())[-1].event == "diverged", "diverged")

    speed = {}
    for batch in (256, 4096, 65536):
        speed[f"batch_{batch}"] = round(
            steps_per_s(TrainConfig(flow=FlowConfig(device="cuda"), kappa=0.01).as_paper().replace(batch=batch)), 1
        )
    checks["train_steps_per_s_paper_config_float32"] = speed
    checks["failures"] = failures
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    checks = {**provenance("gpu_check", "bench.gpu_check"), **checks}
    out.write_text(json.dumps(checks, indent=2))
    print(json.dumps(checks, indent=2))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
