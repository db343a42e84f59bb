"""The flow's configuration: a frozen dataclass that validates itself and round-trips through JSON."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Self

import torch

from ._checks import check_choice, check_float, check_int

BASES = ("normal", "soft_uniform")
KINETICS = ("mlp", "convex")
ENCODER_COVARIANCES = ("diagonal", "full")
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _int_tuple(name: str, value: object, *, minimum: int, nonempty: bool = True) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)):
        raise TypeError(f"{name} must be a tuple of integers, got {value!r}")
    if nonempty and not value:
        raise ValueError(f"{name} must hold at least one integer, got {value!r}")
    return tuple(check_int(f"{name}[{i}]", v, minimum=minimum) for i, v in enumerate(value))


class JsonConfig:
    """Mixin for frozen config dataclasses: ``replace``, and a JSON round trip that rejects
    unknown keys by name (``_from_plain`` turns JSON lists back into tuples and sub-configs)."""

    def replace(self: Self, **changes: Any) -> Self:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict of every field."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Inverse of :meth:`to_dict`."""
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; expected a subset of {sorted(known)}")
        return cls(**cls._from_plain(dict(data)))

    @classmethod
    def _from_plain(cls, data: dict[str, Any]) -> dict[str, Any]:
        return data


@dataclass(frozen=True)
class FlowConfig(JsonConfig):
    """Architecture and integrator of a :class:`~ehflow_core.HamiltonianFlow`.

    Every field is checked on construction; an invalid value raises ``ValueError`` or ``TypeError``
    naming the field.
    """

    dim: int = 2  # d: dimension of the data q (and of the latent momentum p), >= 1
    hidden: tuple[int, ...] = (128, 128)  # hidden widths of the softplus MLPs K(p) and U(q)
    n_steps: int = 2  # n: leapfrog steps of the flow, >= 1 (the paper uses 2)
    dt: float = 0.5  # leapfrog step size, finite and > 0
    base: str = "normal"  # base density π of the state: "normal" or "soft_uniform"
    base_sigma: float = 3.0  # soft-uniform width σ > 0 (ignored for "normal")
    base_beta: float = 2.0  # soft-uniform edge sharpness β > 0 (ignored for "normal"; see docs/maths.md)
    # K(p): "mlp" (a softplus MLP, as in the paper) or "convex" (½|p|² plus positive softplus
    # ridges: strictly convex, starts as the harmonic oscillator's kinetic energy)
    kinetic: str = "mlp"
    # K and U each carry a learnable ½e^a|x|² (a = 0 at the start; a convex K has its own): the
    # untrained flow is close to the harmonic oscillator's, which turns phase space, so q moves
    # with p from the first step (False: plain MLPs, as in the paper)
    harmonic: bool = False
    # The first layer (weights and biases) of U's and of K's MLP times these at initialisation:
    # their softplus features bend over 1/scale of PyTorch's default length, so the untrained U
    # already curves on the scale of the target's modes (docs/maths.md, "Initialisation"; 1 is
    # PyTorch's default; a convex K has no MLP)
    potential_init_scale: float = 10.0
    kinetic_init_scale: float = 1.0
    # one H for every step (True, the paper's: the flow can then run longer, the integrated flow)
    # or a separate H_i per step (False: learns faster)
    shared_hamiltonian: bool = False
    # Exact symmetry: K and U become MLPs of the squared norms of these blocks of coordinates, e.g.
    # ((0, 1),) for a radial H in 2-D, ((0, 1), (2, 3)) for SO(2)×SO(2). None: generic K and U.
    invariant_blocks: tuple[tuple[int, ...], ...] | None = None
    encoder_hidden: tuple[int, ...] = (128, 128)  # hidden widths of the relu MLPs μ(q) and L(q)
    # The encoder's covariance L(q)L(q)ᵀ: "full" (L lower triangular: follows a posterior of p
    # stretched along a tilted direction; docs/maths.md) or "diagonal" (the paper's diag σ(q)²)
    encoder_covariance: str = "full"
    dtype: str = "float32"  # "float32" or "float64"
    device: str = "cpu"  # "cpu" or "cuda" (falls back to the CPU, with a warning, if unavailable)

    def __post_init__(self) -> None:
        check_int("dim", self.dim, minimum=1)
        object.__setattr__(self, "hidden", _int_tuple("hidden", self.hidden, minimum=1))
        check_int("n_steps", self.n_steps, minimum=1)
        object.__setattr__(self, "dt", check_float("dt", self.dt, positive=True))
        check_choice("base", self.base, BASES)
        object.__setattr__(self, "base_sigma", check_float("base_sigma", self.base_sigma, positive=True))
        object.__setattr__(self, "base_beta", check_float("base_beta", self.base_beta, positive=True))
        check_choice("kinetic", self.kinetic, KINETICS)
        if not isinstance(self.harmonic, bool):
            raise TypeError(f"harmonic must be a bool, got {self.harmonic!r}")
        for name in ("potential_init_scale", "kinetic_init_scale"):
            object.__setattr__(self, name, check_float(name, getattr(self, name), positive=True))
        if not isinstance(self.shared_hamiltonian, bool):
            raise TypeError(f"shared_hamiltonian must be a bool, got {self.shared_hamiltonian!r}")
        if self.invariant_blocks is not None:
            object.__setattr__(self, "invariant_blocks", self._checked_blocks(self.invariant_blocks))
            if self.kinetic == "convex":
                raise ValueError("kinetic='convex' cannot be combined with invariant_blocks (use kinetic='mlp')")
        object.__setattr__(self, "encoder_hidden", _int_tuple("encoder_hidden", self.encoder_hidden, minimum=1))
        check_choice("encoder_covariance", self.encoder_covariance, ENCODER_COVARIANCES)
        check_choice("dtype", self.dtype, tuple(DTYPES))
        if not isinstance(self.device, str) or self.device.split(":")[0] not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda' (optionally 'cuda:N'), got {self.device!r}")

    def _checked_blocks(self, blocks: object) -> tuple[tuple[int, ...], ...]:
        if not isinstance(blocks, (tuple, list)) or not blocks:
            raise ValueError(f"invariant_blocks must be a non-empty tuple of index tuples, got {blocks!r}")
        checked = tuple(_int_tuple("invariant_blocks block", b, minimum=0) for b in blocks)
        flat = [i for block in checked for i in block]
        if any(i >= self.dim for i in flat):
            raise ValueError(f"invariant_blocks indices must lie in 0..{self.dim - 1} (dim={self.dim}), got {blocks!r}")
        if len(set(flat)) != len(flat):
            raise ValueError(f"invariant_blocks must be disjoint, got {blocks!r}")
        return checked

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @classmethod
    def _from_plain(cls, data: dict[str, Any]) -> dict[str, Any]:
        for key in ("hidden", "encoder_hidden"):
            if isinstance(data.get(key), list):
                data[key] = tuple(data[key])
        if isinstance(data.get("invariant_blocks"), list):
            data["invariant_blocks"] = tuple(tuple(b) for b in data["invariant_blocks"])
        return data
