"""A sweep's grid: :class:`RunSpec` (one run, named by a hash of its configuration) and
:class:`SweepSpec` (the lists whose combinations are the runs, from flags or a TOML/JSON file).
The driver is :mod:`ehflow_core.sweep`."""

from __future__ import annotations

import hashlib
import itertools
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._checks import check_choice, check_int
from .reporting import FINAL_EVAL_SAMPLES
from .run import TrainConfig
from .targets import HOLDOUT

_DEFAULTS = TrainConfig()
# A run's outcome: "finished", "diverged" or "failed" (its task failed after Ray's retries). A sweep
# run again keeps the FINAL ones and tries a failed run again.
FINAL = ("finished", "diverged")
STATUSES = (*FINAL, "failed", "unfinished")  # every run's status in results.csv


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: its grid point and the sweep's fixed settings."""

    target: str
    kappa: float | None
    seed: int
    n_train: int | None
    dt: float
    n_steps: int
    lr: float
    steps: int
    eval_every: int
    paper: bool = False
    n_test: int = _DEFAULTS.n_test  # test points, drawn once per run
    final_samples: int = FINAL_EVAL_SAMPLES  # K of the summary's test L_K
    # A run on a data file: ``target`` is the file's path as given, its points travel with each
    # segment (the driver reads the file), and the seed's random ``holdout`` share is the test set.
    data_sha256: str | None = None  # of the file's points (an edited file makes new runs)
    dim: int = 2
    holdout: float = HOLDOUT

    def config(self) -> TrainConfig:
        """The run's training configuration (validated: a bad value raises ``ValueError``)."""
        return TrainConfig.starting_from(
            self.paper, flow={"dt": self.dt, "n_steps": self.n_steps, "dim": self.dim}, kappa=self.kappa,
            n_train=self.n_train, lr=self.lr, max_steps=self.steps, seed=self.seed, eval_every=self.eval_every,
            n_test=self.n_test,
        )  # fmt: skip

    @property
    def key(self) -> str:
        """A hash of the full configuration and target: the run's folder name (same run, same name)."""
        full = {"target": self.target, "config": self.config().to_dict(), "final_samples": self.final_samples}
        if self.data_sha256 is not None:
            full.update(data_sha256=self.data_sha256, holdout=self.holdout)
        text = json.dumps(full, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


# -- the grid --------------------------------------------------------------------------------------
_UNSET = object()
# The grid's axes: a run's coordinates (fields of RunSpec), in the order the grid loops over them
# (seed innermost). Every list of them derives from this one: the spec's keys, the results' columns,
# a setting's columns (the axes but the seed) and the curves' groups (the setting but κ).
AXES = ("target", "n_train", "dt", "n_steps", "lr", "kappa", "seed")
# The spec's keys that take lists: the axes (``seeds`` for the seed), and data files beside targets.
GRID_KEYS = ("target", "data", *("seeds" if axis == "seed" else axis for axis in AXES[1:]))
FIXED_KEYS = ("steps", "eval_every", "checkpoint_every", "paper", "n_test", "final_samples", "holdout")  # one value


@dataclass(frozen=True)
class SweepSpec:
    """A grid of runs: every combination of the lists (``None`` in ``kappa``: unconstrained; in
    ``n_train``: infinite data), each trained for ``steps`` steps, checkpointed every
    ``checkpoint_every`` steps. The keys are the command line's (``sweep --help``).

    ``data``: data files (``.csv`` or ``.npy``, read now: a missing or bad file is a ``ValueError``
    here, on the driver), swept like the built-in ``target`` names; each run holds out a random
    ``holdout`` share of the file (by its seed) as its test set and trains on the rest, so its
    ``n_train`` must be None. :meth:`from_mapping` (the command line, spec files) drops the default
    target when only data files are given.
    """

    target: tuple[str, ...] = ("ring",)
    data: tuple[str, ...] = ()
    kappa: tuple[float | None, ...] = (None,)
    seeds: tuple[int, ...] = (0,)
    n_train: tuple[int | None, ...] = (None,)
    dt: tuple[float, ...] = (_DEFAULTS.flow.dt,)
    n_steps: tuple[int, ...] = (_DEFAULTS.flow.n_steps,)
    lr: tuple[float, ...] = (_DEFAULTS.lr,)
    steps: int = 2000
    eval_every: int = 200
    checkpoint_every: int = 500
    paper: bool = False
    n_test: int = _DEFAULTS.n_test
    final_samples: int = FINAL_EVAL_SAMPLES
    holdout: float = HOLDOUT
    _runs: tuple[RunSpec, ...] = field(init=False, repr=False, compare=False)
    _points: dict[str, Any] = field(init=False, repr=False, compare=False)  # data file -> its points (numpy)

    def __post_init__(self) -> None:
        from .targets import TARGETS

        for name in GRID_KEYS:
            values = tuple(getattr(self, name))
            if not values and name not in ("target", "data"):
                raise ValueError(f"{name}: the grid is empty (give at least one value)")
            twice = next((v for i, v in enumerate(values) if v in values[:i]), _UNSET)
            if twice is not _UNSET:
                raise ValueError(f"{name}: {twice!r} is given twice")
            object.__setattr__(self, name, values)
        if not self.target and not self.data:
            raise ValueError("target: the grid is empty (give at least one target or data file)")
        if not isinstance(self.paper, bool):
            raise TypeError(f"paper must be true or false, got {self.paper!r}")
        for name in self.target:
            check_choice("target", name, tuple(TARGETS))
        check_int("steps", self.steps, minimum=1)
        check_int("eval_every", self.eval_every, minimum=1)
        check_int("checkpoint_every", self.checkpoint_every, minimum=1)
        check_int("final_samples", self.final_samples, minimum=1)
        sources = [(name, None, 2) for name in self.target] + self._read_data()
        fixed: dict[str, Any] = dict(
            steps=self.steps, eval_every=self.eval_every, paper=self.paper, n_test=self.n_test,
            final_samples=self.final_samples, holdout=self.holdout,
        )  # fmt: skip
        runs = tuple(
            RunSpec(target=target, data_sha256=sha, dim=dim, **dict(zip(AXES[1:], point)), **fixed)
            for target, sha, dim in sources
            for point in itertools.product(*(getattr(self, key) for key in GRID_KEYS[2:]))
        )
        for run in runs:
            run.config()  # every value checked by TrainConfig, by name
        object.__setattr__(self, "_runs", runs)

    def _read_data(self) -> list[tuple[str, str, int]]:
        """Read and check every data file (kept for :meth:`points`): (path, hash of its points, dim)."""
        import numpy as np

        from .targets import holdout_size, load_points

        points: dict[str, Any] = {}
        sources = []
        if self.data and any(n is not None for n in self.n_train):
            raise ValueError("n_train: a data file's training set is its own rows (less the held-out share); "
                             "give n_train none (or leave it out) when sweeping over data files")  # fmt: skip
        for path in self.data:
            if not isinstance(path, str):
                raise TypeError(f"data: expected file paths, got {path!r}")
            try:
                rows = load_points(path)
                holdout_size(self.holdout, len(rows))
            except ValueError as err:
                raise ValueError(f"data: {err}") from None
            array = np.ascontiguousarray(rows.numpy())
            points[path] = array
            digest = hashlib.sha256(str(array.shape).encode() + array.tobytes()).hexdigest()
            sources.append((path, digest, array.shape[1]))
        object.__setattr__(self, "_points", points)
        return sources

    def points(self, run: RunSpec) -> Any:
        """The points of ``run``'s data file (a numpy array), or None for a built-in target."""
        return self._points.get(run.target) if run.data_sha256 is not None else None

    @property
    def runs(self) -> tuple[RunSpec, ...]:
        return self._runs

    def to_mapping(self) -> dict[str, Any]:
        """The spec as a plain table (lists for the grid): :meth:`from_mapping`'s inverse."""
        return {k: list(getattr(self, k)) if k in GRID_KEYS else getattr(self, k) for k in GRID_KEYS + FIXED_KEYS}

    @classmethod
    def from_mapping(cls, data: dict[str, Any], source: str = "spec") -> SweepSpec:
        """A spec from a TOML/JSON table with the command line's names (``target``, ``data``,
        ``kappa``, ``seeds``, ``n_train``, ``dt``, ``n_steps``, ``lr``: a value or a list,
        ``"none"`` for None; ``steps``, ``eval_every``, ``checkpoint_every``, ``paper``,
        ``n_test``, ``final_samples``, ``holdout``: one value each). Data files without a
        ``target`` sweep the files alone."""
        unknown = sorted(set(data) - set(GRID_KEYS) - set(FIXED_KEYS))
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {unknown}; known: {sorted(GRID_KEYS + FIXED_KEYS)}")
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key in GRID_KEYS:
                items = value if isinstance(value, list) else [value]
                values[key] = tuple(None if isinstance(v, str) and v.lower() == "none" else v for v in items)
            else:
                values[key] = value
        if values.get("data") and "target" not in values:
            values["target"] = ()
        try:
            return cls(**values)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{source}: {err}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> SweepSpec:
        """A spec from a ``.toml`` or ``.json`` file (see :meth:`from_mapping`)."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"spec file {str(path)!r} does not exist")
        try:
            if path.suffix == ".toml":
                data = tomllib.loads(path.read_text())
            elif path.suffix == ".json":
                data = json.loads(path.read_text())
            else:
                raise ValueError(f"expected a .toml or .json file, got {path.suffix or 'no suffix'!r}")
        except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"spec file {str(path)!r} is not valid {path.suffix[1:].upper()}: {err}") from None
        if not isinstance(data, dict):
            raise ValueError(f"spec file {str(path)!r}: expected a table of keys, got {type(data).__name__}")
        return cls.from_mapping(data, source=f"spec file {str(path)!r}")
