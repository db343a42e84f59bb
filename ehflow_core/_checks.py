"""Argument checks for public boundaries.

Every message names the argument, what was expected and what was given, so a user
(or the dashboard, which shows these messages verbatim) can fix the input.
"""

from __future__ import annotations

import math
from numbers import Real

import torch
from torch import Tensor


def check_int(name: str, value: object, *, minimum: int | None = None) -> int:
    """Return ``value`` as an int, or raise if it is not an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return value


def check_float(
    name: str,
    value: object,
    *,
    positive: bool = False,
    nonzero: bool = False,
    minimum: float | None = None,
    maximum: float | None = None,
) -> float:
    """Return ``value`` as a finite float, or raise naming the constraint it breaks."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    if nonzero and value == 0:
        raise ValueError(f"{name} must be a finite non-zero number, got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value  # type: ignore[return-value]


def check_points(name: str, x: object, dim: int, *, finite: bool = True) -> Tensor:
    """Check that ``x`` is a tensor of shape (B, dim) with B >= 1 and finite entries."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, {dim}), got {type(x).__name__}")
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"{name} must have shape (B, {dim}), got {tuple(x.shape)}")
    if x.shape[0] < 1:
        raise ValueError(f"{name} must hold at least one point, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if finite and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).any(dim=1).nonzero()[0, 0])
        raise ValueError(f"{name} must be finite; row {bad} holds {x[bad].tolist()}")
    return x


def check_state(q: object, p: object, dim: int) -> tuple[Tensor, Tensor]:
    """Check a phase-space state: q and p both of shape (B, dim), same B, finite."""
    q = check_points("q", q, dim)
    p = check_points("p", p, dim)
    if q.shape != p.shape:
        raise ValueError(f"q and p must have the same shape, got q {tuple(q.shape)} and p {tuple(p.shape)}")
    if q.dtype != p.dtype:
        raise TypeError(f"q and p must have the same dtype, got {q.dtype} and {p.dtype}")
    return q, p
