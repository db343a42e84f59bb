"""Checkpoints: config + weights + optimiser + multipliers + step, loadable with ``weights_only=True``.

The file holds only tensors, numbers, strings, lists and dicts, so ``torch.load(weights_only=True)``
reads it without unpickling arbitrary objects; anything else is rejected with a clear message.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import torch

from .flow import HamiltonianFlow
from .targets import Target, make_target
from .training import TrainConfig, Trainer

FORMAT = "ehflow-checkpoint"
VERSION = 1


def checkpoint_state(trainer: Trainer) -> dict[str, Any]:
    """Everything needed to resume ``trainer``, as a weights-only-safe dict."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "train_config": json.dumps(trainer.config.to_dict()),
        "target": trainer.target.name,
        "generators": [g.name for g in trainer.generators],
        "model": trainer.flow.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "log_lam": trainer.log_lam.clone(),
        "violation": trainer.violation.clone(),
        "kappa": trainer.kappa,
        "step": trainer.step,
        "seconds": trainer.seconds,
        "rng": trainer.rng.get_state(),
    }


def save_checkpoint(trainer: Trainer, path: str | Path) -> Path:
    """Write ``trainer``'s state to ``path`` (atomically: a partial write never replaces a good file)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(checkpoint_state(trainer), tmp)
    tmp.replace(path)
    return path


def checkpoint_bytes(trainer: Trainer) -> bytes:
    """The checkpoint as bytes (for a download button)."""
    buffer = io.BytesIO()
    torch.save(checkpoint_state(trainer), buffer)
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
    if state.get("version") != VERSION:
        raise ValueError(f"{name}: checkpoint version {state.get('version')!r} is not supported (expected {VERSION})")
    missing = {"train_config", "model", "optimizer", "log_lam", "violation", "step"} - set(state)
    if missing:
        raise ValueError(f"{name}: checkpoint is missing {sorted(missing)}")
    return state


def _flow_from_state(state: dict[str, Any], name: str) -> tuple[TrainConfig, HamiltonianFlow]:
    config = TrainConfig.from_dict(json.loads(state["train_config"]))
    flow = HamiltonianFlow(config.flow)
    try:
        flow.load_state_dict(state["model"])
    except RuntimeError as err:
        raise ValueError(f"{name}: weights do not match the stored configuration: {err}") from None
    return config, flow


def load_checkpoint(path: str | Path | bytes) -> HamiltonianFlow:
    """A ready :class:`HamiltonianFlow` (in eval mode) from a checkpoint written by :func:`save_checkpoint`."""
    state = read_checkpoint(path)
    _, flow = _flow_from_state(state, str(path) if not isinstance(path, bytes) else "checkpoint bytes")
    return flow.eval()


def load_trainer(path: str | Path | bytes, target: Target | None = None) -> Trainer:
    """Resume training from a checkpoint (``target`` defaults to the built-in target it names)."""
    state = read_checkpoint(path)
    name = str(path) if not isinstance(path, bytes) else "checkpoint bytes"
    config, flow = _flow_from_state(state, name)
    trainer = Trainer(config, target if target is not None else make_target(state["target"]))
    trainer.flow.load_state_dict(flow.state_dict())
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.log_lam = state["log_lam"].clone()
    trainer.violation = state["violation"].clone()
    trainer.kappa = state["kappa"]
    trainer.step = int(state["step"])
    trainer.seconds = float(state.get("seconds", 0.0))
    if "rng" in state:
        trainer.rng.set_state(state["rng"])
    return trainer
