"""Checkpoints: config + weights + optimiser + multipliers + step, loadable with ``weights_only=True``.

The file holds only tensors, numbers, strings, lists and dicts, so ``torch.load(weights_only=True)``
reads it without unpickling arbitrary objects; anything else is rejected with a clear message.

A :class:`~ehflow_core.training.Trainer` checkpoints with its own Adam state; a member of an
:class:`~ehflow_core.ensemble.EnsembleTrainer` with its slice of the ensemble's
(``ensemble.member_optimizer_state(label)``). Either resumes as a :class:`Trainer` that continues
exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ._files import write_atomic
from .flow import HamiltonianFlow
from .symmetries import Generator
from .targets import Target, make_target
from .training import Run, TrainConfig, Trainer

FORMAT = "ehflow-checkpoint"
VERSION = 2
# Version 1 named some config fields differently; they are renamed on reading.
_RENAMED = {1: {"steps": "max_steps", "path": "grad_mode", "n_elbo_samples": "train_samples"}}
# Fields added later: a file without them was written before they existed, when the run behaved as these values.
_ADDED = {"lr_schedule": "constant", "warmup_steps": 0, "warmup_fraction": 0.0, "constraint_at": "base"}
_ADDED_FLOW = {
    "kinetic": "mlp", "potential_init_scale": 1.0, "kinetic_init_scale": 1.0, "encoder_covariance": "diagonal",
}  # fmt: skip


def checkpoint_state(run: Run, optimizer_state: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything needed to resume ``run``, as a weights-only-safe dict.

    ``optimizer_state``: the run's Adam state dict; None takes a :class:`Trainer`'s own.
    """
    if optimizer_state is None:
        if not isinstance(run, Trainer):
            raise TypeError(
                f"optimizer_state is needed for a {type(run).__name__} (an ensemble member: pass "
                "ensemble.member_optimizer_state(label)); only a Trainer has an optimiser of its own"
            )
        optimizer_state = run.optimizer_state()
    return {
        "format": FORMAT,
        "version": VERSION,
        "train_config": json.dumps(run.config.to_dict()),
        "target": run.target.name,
        "generators": [g.name for g in run.generators],
        "model": run.flow.state_dict(),
        "averaged": None if run.averaged is None else run.averaged.state_dict(),
        "optimizer": optimizer_state,
        "log_lam": run.log_lam.clone(),
        "violation": run.violation.clone(),
        "kappa": run.kappa,
        "multiplier_kappa": run.multiplier_kappa,
        "step": run.step,
        "seconds": run.seconds,
        "rng": run.rng.get_state(),
        "sample_rng": run.sample_rng.get_state(),
    }


def save_checkpoint(run: Run, path: str | Path, optimizer_state: dict[str, Any] | None = None) -> Path:
    """Write ``run``'s state to ``path`` (atomically: a partial write never replaces a good file);
    ``optimizer_state`` as in :func:`checkpoint_state`."""
    return write_atomic(Path(path), checkpoint_bytes(run, optimizer_state))


def checkpoint_bytes(run: Run, optimizer_state: dict[str, Any] | None = None) -> bytes:
    """The checkpoint as bytes (for a download button); arguments as in :func:`checkpoint_state`."""
    buffer = io.BytesIO()
    torch.save(checkpoint_state(run, optimizer_state), buffer)
    return buffer.getvalue()


def read_checkpoint(source: str | Path | bytes) -> dict[str, Any]:
    """Read and check a checkpoint file (or its bytes); raises ``ValueError`` if it is not one."""
    name = "checkpoint bytes" if isinstance(source, bytes) else str(source)
    if not isinstance(source, bytes) and not Path(source).is_file():
        raise ValueError(f"{name}: no such file")
    try:
        state = torch.load(io.BytesIO(source) if isinstance(source, bytes) else source, weights_only=True)
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise ValueError(f"{name}: not a readable ehflow checkpoint (truncated or not a torch file): {err}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{name}: not an ehflow checkpoint (no '{FORMAT}' marker)")
    if state.get("version") not in (*_RENAMED, VERSION):
        raise ValueError(f"{name}: checkpoint version {state.get('version')!r} is not supported (expected {VERSION})")
    missing = {"train_config", "model", "optimizer", "log_lam", "violation", "step"} - set(state)
    if missing:
        raise ValueError(f"{name}: checkpoint is missing {sorted(missing)}")
    return state


def _flow_from_state(state: dict[str, Any], name: str, averaged: bool = False) -> tuple[TrainConfig, HamiltonianFlow]:
    """The run's configuration and its flow: the trained weights, or with ``averaged`` the weights'
    moving average where the checkpoint holds one."""
    plain = json.loads(state["train_config"])
    for old, new in _RENAMED.get(state["version"], {}).items():
        if old in plain:
            plain[new] = plain.pop(old)
    plain = {**_ADDED, **plain}
    if isinstance(plain.get("flow"), dict):
        plain["flow"] = {**_ADDED_FLOW, **plain["flow"]}
    config = TrainConfig.from_dict(plain)
    flow = HamiltonianFlow(config.flow)
    try:
        flow.load_state_dict(state["averaged"] if averaged and state.get("averaged") else state["model"])
    except RuntimeError as err:
        raise ValueError(f"{name}: weights do not match the stored configuration: {err}") from None
    return config, flow


def load_checkpoint(path: str | Path | bytes) -> HamiltonianFlow:
    """A ready :class:`HamiltonianFlow` (in eval mode) from a checkpoint written by :func:`save_checkpoint`:
    the model the run showed (its weights' moving average where the run kept one)."""
    state = read_checkpoint(path)
    name = str(path) if not isinstance(path, bytes) else "checkpoint bytes"
    _, flow = _flow_from_state(state, name, averaged=True)
    return flow.eval()


def load_trainer(
    path: str | Path | bytes,
    target: Target | None = None,
    train_data: Tensor | None = None,
    test_data: Tensor | None = None,
    generators: Sequence[Generator] | None = None,
) -> Trainer:
    """Resume training from a checkpoint (``target`` defaults to the built-in target it names;
    ``train_data`` and ``test_data``: a user-data run's sets, as it was started with;
    ``generators``: the run's, when they were not the target's own)."""
    state = read_checkpoint(path)
    name = str(path) if not isinstance(path, bytes) else "checkpoint bytes"
    config, flow = _flow_from_state(state, name)
    target = target if target is not None else make_target(state["target"])
    trainer = Trainer(config, target, generators, train_data=train_data, test_data=test_data)
    stored = state.get("generators")
    names = [g.name for g in trainer.generators]
    if stored is not None and names != list(stored):
        raise ValueError(f"{name}: the run was trained with the generators {list(stored)}, got {names}")
    trainer.flow.load_state_dict(flow.state_dict())
    if trainer.averaged is not None:  # absent from the file: the run kept none, so it starts from the weights
        trainer.averaged.load_state_dict(state.get("averaged") or flow.state_dict())
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.log_lam = state["log_lam"].clone()
    trainer.violation = state["violation"].clone()
    trainer.kappa = state["kappa"]
    trainer.multiplier_kappa = state.get("multiplier_kappa", state["kappa"])  # absent: written before κ could move
    trainer.step = int(state["step"])
    trainer.seconds = float(state.get("seconds", 0.0))
    if "rng" in state:
        trainer.rng.set_state(state["rng"])
    if "sample_rng" in state and trainer.sample_rng is not trainer.rng:
        trainer.sample_rng.set_state(state["sample_rng"])
    return trainer
