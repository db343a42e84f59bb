r"""Target densities: samplers with exact log-densities, their symmetry generators, and user data.

Radial targets in 2-D have :math:`p(x) = \rho(|x|) / (2\pi|x|)` where :math:`\rho` is the density
of the radius; a radius drawn from :math:`\mathcal{N}(\mu, s^2)` may be negative (it then lands on
the opposite side), so :math:`\rho(r) = \mathcal{N}(r; \mu, s^2) + \mathcal{N}(-r; \mu, s^2)`
exactly. In 3-D the normaliser is :math:`4\pi|x|^2`.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ._checks import check_float, check_int, check_points
from .symmetries import Generator, rotation_generator, so_generators

_LOG_2PI = math.log(2 * math.pi)


class Target:
    """A density to learn: ``sample``, exact ``log_prob`` where known, and its symmetry generators."""

    name: str = "target"
    description: str = ""
    has_log_prob: bool = True

    def __init__(self, dim: int) -> None:
        self.dim = dim

    def sample(self, n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
        """Draw ``n`` points, shape (n, d)."""
        check_int("n", n, minimum=1)
        return self._sample(n, generator, torch.float64).to(dtype)

    def _sample(self, n: int, generator: torch.Generator | None, dtype: torch.dtype) -> Tensor:
        raise NotImplementedError

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log-density of each point: (B, d) -> (B,)."""
        check_points("x", x, self.dim)
        return self._log_prob(x)

    def _log_prob(self, x: Tensor) -> Tensor:
        raise NotImplementedError(f"target {self.name!r} has no exact density")

    def generators(self) -> list[Generator]:
        """The generators of the target's continuous symmetries (empty if it has none)."""
        return []

    def entropy(self, n_points: int = 100_000, seed: int = 0) -> tuple[float, float]:
        """Monte-Carlo entropy −E[log p(x)] in nats and its standard error."""
        if not self.has_log_prob:
            raise ValueError(f"target {self.name!r} has no exact density, so no entropy")
        check_int("n_points", n_points, minimum=2)
        x = self.sample(n_points, torch.Generator().manual_seed(seed), dtype=torch.float64)
        neg = -self._log_prob(x)
        return float(neg.mean()), float(neg.std() / math.sqrt(n_points))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim})"


def _radius_log_density(r: Tensor, mus: Tensor, sigmas: Tensor, weights: Tensor) -> Tensor:
    """log ρ(r) for a mixture radius Σ_k w_k N(μ_k, s_k²), folded at 0: (B,) -> (B,)."""
    r = r[:, None]
    parts = []
    for sign in (1.0, -1.0):
        z = (sign * r - mus) / sigmas
        parts.append(torch.log(weights) - 0.5 * z * z - torch.log(sigmas) - 0.5 * _LOG_2PI)
    return torch.logsumexp(torch.cat(parts, dim=1), dim=1)


class RadialMixture(Target):
    r"""Rotation-invariant density in 2-D or 3-D whose radius is a Gaussian mixture, angle uniform.

    The radius is :math:`\sum_k w_k \mathcal{N}(\mu_k, s_k^2)`; an optional isotropic Gaussian
    core :math:`\mathcal{N}(0, c^2 I)` with weight ``core_weight`` is mixed in.
    """

    def __init__(
        self,
        name: str,
        description: str,
        mus: tuple[float, ...],
        sigmas: tuple[float, ...],
        weights: tuple[float, ...],
        dim: int = 2,
        core_weight: float = 0.0,
        core_scale: float = 0.5,
    ) -> None:
        super().__init__(dim)
        if dim not in (2, 3):
            raise ValueError(f"dim must be 2 or 3 for a radial mixture, got {dim}")
        self.name, self.description = name, description
        self.mus = torch.tensor(mus, dtype=torch.float64)
        self.sigmas = torch.tensor(sigmas, dtype=torch.float64)
        self.weights = torch.tensor(weights, dtype=torch.float64) / sum(weights)
        self.core_weight, self.core_scale = core_weight, core_scale

    def _sample(self, n, generator, dtype):
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        r = self.mus[k] + self.sigmas[k] * torch.randn(n, generator=generator, dtype=dtype)
        direction = torch.randn(n, self.dim, generator=generator, dtype=dtype)
        x = r[:, None] * direction / direction.norm(dim=1, keepdim=True)
        if self.core_weight > 0:
            core = torch.rand(n, generator=generator, dtype=dtype) < self.core_weight
            x[core] = self.core_scale * torch.randn(int(core.sum()), self.dim, generator=generator, dtype=dtype)
        return x

    def _log_prob(self, x):
        x = x.to(torch.float64)
        r = x.norm(dim=1).clamp_min(1e-300)
        # Surface of the sphere of radius r: 2πr in 2-D, 4πr² in 3-D.
        log_surface = (
            math.log(2 * math.pi) + torch.log(r) if self.dim == 2 else math.log(4 * math.pi) + 2 * torch.log(r)
        )
        ring = _radius_log_density(r, self.mus, self.sigmas, self.weights) - log_surface
        if self.core_weight == 0:
            return ring
        core = -0.5 * (x / self.core_scale).square().sum(1) - self.dim * (math.log(self.core_scale) + 0.5 * _LOG_2PI)
        return torch.logaddexp(ring + math.log1p(-self.core_weight), core + math.log(self.core_weight))

    def generators(self):
        return so_generators(self.dim)


class GaussianMixture(Target):
    """Mixture of isotropic Gaussians with equal weights at the given centres (C, d)."""

    def __init__(self, name: str, description: str, centres: Tensor, scale: float) -> None:
        super().__init__(centres.shape[1])
        self.name, self.description = name, description
        self.centres = centres.to(torch.float64)
        self.scale = scale

    def _sample(self, n, generator, dtype):
        k = torch.randint(len(self.centres), (n,), generator=generator)
        return self.centres[k] + self.scale * torch.randn(n, self.dim, generator=generator, dtype=dtype)

    def _log_prob(self, x):
        z = (x.to(torch.float64)[:, None, :] - self.centres) / self.scale  # (B, C, d)
        log_k = -0.5 * z.square().sum(-1) - self.dim * (math.log(self.scale) + 0.5 * _LOG_2PI)
        return torch.logsumexp(log_k, dim=1) - math.log(len(self.centres))


class TwoMoons(Target):
    r"""Two interleaved half circles blurred by :math:`\mathcal{N}(0, s^2 I)` noise.

    The density :math:`\frac{1}{2}\sum_m \frac{1}{\pi}\int_0^\pi \mathcal{N}(x; c_m(t), s^2 I)\,dt`
    is evaluated by the midpoint rule on 1024 nodes per moon (accurate far beyond float32 for s = 0.1).
    """

    name = "two_moons"
    description = "Two interleaved half circles with Gaussian noise (no continuous symmetry)."

    def __init__(self, noise: float = 0.1) -> None:
        super().__init__(2)
        self.noise = check_float("noise", noise, positive=True)
        t = (torch.arange(1024, dtype=torch.float64) + 0.5) * math.pi / 1024
        upper = torch.stack([torch.cos(t), torch.sin(t)], 1)
        lower = torch.stack([1 - torch.cos(t), 0.5 - torch.sin(t)], 1)
        self._offset = torch.tensor([-0.5, -0.25], dtype=torch.float64)  # centre the pair at 0
        self._nodes = 1.5 * (torch.cat([upper, lower]) + self._offset)  # (2N, 2), scaled to span ±2.25

    def _sample(self, n, generator, dtype):
        t = torch.rand(n, generator=generator, dtype=dtype) * math.pi
        lower = torch.rand(n, generator=generator, dtype=dtype) < 0.5
        x = torch.stack([torch.cos(t), torch.sin(t)], 1)
        x[lower] = torch.stack([1 - torch.cos(t[lower]), 0.5 - torch.sin(t[lower])], 1)
        return 1.5 * (x + self._offset) + self.noise * torch.randn(n, 2, generator=generator, dtype=dtype)

    def _log_prob(self, x):
        x = x.to(torch.float64)
        return torch.cat([self._log_prob_chunk(x[i : i + 1024]) for i in range(0, len(x), 1024)])

    def _log_prob_chunk(self, x: Tensor) -> Tensor:
        # |x − c|² = |x|² − 2 x·c + |c|² as one matmul (B, nodes): ~10× faster than forming
        # x − c, and exact to ~1e-14 in float64 at these scales.
        sq = (x.square().sum(1, keepdim=True) - 2 * x @ self._nodes.T + self._nodes.square().sum(1)).clamp_min(0)
        log_k = -0.5 * sq / self.noise**2 - 2 * math.log(self.noise) - _LOG_2PI
        return torch.logsumexp(log_k, dim=1) - math.log(len(self._nodes))


class ProductTarget(Target):
    """Independent product of targets on consecutive blocks of coordinates."""

    def __init__(self, name: str, description: str, factors: list[Target]) -> None:
        super().__init__(sum(f.dim for f in factors))
        self.name, self.description = name, description
        self.factors = factors

    def _sample(self, n, generator, dtype):
        return torch.cat([f._sample(n, generator, dtype) for f in self.factors], dim=1)

    def _log_prob(self, x):
        out, start = 0.0, 0
        for f in self.factors:
            out = out + f._log_prob(x[:, start : start + f.dim])
            start += f.dim
        return out

    def generators(self):
        gens, start = [], 0
        for f in self.factors:
            for g in f.generators():
                gens.append(rotation_generator(start + g.i, start + g.j, self.dim))
            start += f.dim
        return gens


class DataTarget(Target):
    """A fixed set of points (user data): sampling draws rows with replacement; no exact density."""

    has_log_prob = False

    def __init__(self, points: Tensor, name: str = "data", description: str = "User data") -> None:
        if not isinstance(points, Tensor) or points.ndim != 2:
            raise ValueError(f"points must be a tensor of shape (n, d), got {getattr(points, 'shape', points)!r}")
        check_points("points", points, points.shape[1])
        super().__init__(points.shape[1])
        self.points = points.to(torch.float64)
        self.name, self.description = name, description

    def _sample(self, n, generator, dtype):
        idx = torch.randint(len(self.points), (n,), generator=generator)
        return self.points[idx].to(dtype)

    def generators(self):
        return so_generators(self.dim)


def _circle(n: int, radius: float) -> Tensor:
    angles = torch.arange(n, dtype=torch.float64) * 2 * math.pi / n
    return radius * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)


def _ring() -> RadialMixture:
    return RadialMixture(
        "ring", "SO(2): radius ~ N(2, 0.25²), angle uniform (the paper's Figure 2A).", (2.0,), (0.25,), (1.0,)
    )


TARGETS: dict[str, Callable[[], Target]] = {
    "ring": _ring,
    "two_rings": lambda: RadialMixture(
        "two_rings",
        "SO(2): two concentric rings, radii 1 and 2.5 (s = 0.15), equal weights.",
        (1.0, 2.5),
        (0.15, 0.15),
        (1.0, 1.0),
    ),
    "core_and_ring": lambda: RadialMixture(
        "core_and_ring",
        "SO(2): a Gaussian core N(0, 0.4² I) (weight 0.3) inside a ring of radius 2.2.",
        (2.2,),
        (0.2,),
        (1.0,),
        core_weight=0.3,
        core_scale=0.4,
    ),
    "gaussians8": lambda: GaussianMixture(
        "gaussians8",
        "Multimodal: 8 Gaussians (s = 0.2) on a circle of radius 2 (the paper's Figure 2B).",
        _circle(8, 2.0),
        0.2,
    ),
    "grid9": lambda: GaussianMixture(
        "grid9",
        "Multimodal: a 3×3 grid of Gaussians (s = 0.2) with spacing 1.5.",
        torch.cartesian_prod(*(torch.tensor([-1.5, 0.0, 1.5], dtype=torch.float64),) * 2),
        0.2,
    ),
    "two_moons": TwoMoons,
    "shell3d": lambda: RadialMixture(
        "shell3d",
        "SO(3): a spherical shell in 3-D, radius ~ N(2, 0.25²), direction uniform.",
        (2.0,),
        (0.25,),
        (1.0,),
        dim=3,
    ),
    "rings4d": lambda: ProductTarget(
        "rings4d",
        "SO(2)×SO(2): the product of two independent rings in 4-D (commuting generators).",
        [_ring(), _ring()],
    ),
}


def make_target(name: str, n_modes: int | None = None) -> Target:
    """A built-in target by name (see ``TARGETS``); ``n_modes`` sets the Gaussians on a circle
    (``"gaussians"``, 8 by default; a run's own name ``"gaussians<n>"`` gives n of them)."""
    counted = re.fullmatch(r"gaussians([1-9]\d*)", name)
    if counted and n_modes is None and name not in TARGETS:
        n_modes = int(counted.group(1))
    if name == "gaussians" or (counted and n_modes is not None):
        n = check_int("n_modes", 8 if n_modes is None else n_modes, minimum=1)
        return GaussianMixture(
            f"gaussians{n}", f"Multimodal: {n} Gaussians (s = 0.2) on a circle of radius 2.", _circle(n, 2.0), 0.2
        )
    if name not in TARGETS:
        raise ValueError(
            f"target must be one of {', '.join(sorted(TARGETS))} or gaussians (with n_modes); got {name!r}"
        )
    return TARGETS[name]()


@dataclass(frozen=True)
class DataLimits:
    """Bounds on user data files."""

    min_rows: int = 10
    max_rows: int = 1_000_000
    max_dim: int = 16


HOLDOUT = 0.2  # the share of a data file held out as its test set, unless a test file or another share is given


def holdout_size(holdout: float, n: int) -> int:
    """The test rows that a ``holdout`` share of ``n`` points holds out (at least one, and fewer than
    ``n``); ``ValueError`` for a share outside (0, 1) or one that leaves no training point."""
    n_test = max(1, int(round(holdout * n)))
    if not 0 < holdout < 1 or n_test >= n:
        raise ValueError(f"holdout: expected a share in (0, 1) that leaves training points, got {holdout!r}")
    return n_test


def split_points(points: Tensor, holdout: float, seed: int) -> tuple[Tensor, Tensor]:
    """``(train, test)``: a random ``holdout`` share of ``points`` (:func:`holdout_size` rows) held
    out as the test set, the same for the same ``seed``."""
    n_test = holdout_size(holdout, len(points))
    perm = torch.randperm(len(points), generator=torch.Generator().manual_seed(seed))
    return points[perm[n_test:]], points[perm[:n_test]]


def load_points(path: str | Path, limits: DataLimits = DataLimits()) -> Tensor:
    """Load an (n, d) array of points from a ``.csv`` (optional header row) or ``.npy`` file.

    Raises ``ValueError`` naming the file, the row and the problem for anything that is not a
    finite numeric array with at least 2 columns and ``limits.min_rows``..``limits.max_rows`` rows.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except Exception as err:  # numpy raises several types for corrupt files
            raise ValueError(f"{path}: not a readable .npy array ({err})") from None
        if array.dtype.kind not in "iuf":
            raise ValueError(f"{path}: expected a numeric array, got dtype {array.dtype}")
        return validate_points(array.astype(np.float64), str(path), limits)
    if path.suffix.lower() not in (".csv", ".txt"):
        raise ValueError(f"{path}: expected a .csv or .npy file, got {path.suffix or 'no extension'!r}")
    with path.open(encoding="utf-8", errors="replace") as lines:  # (a byte-order mark is skipped)
        return parse_csv(lines, str(path), limits)


def parse_csv(text: str | Iterable[str], source: str = "data", limits: DataLimits = DataLimits()) -> Tensor:
    """Parse comma-separated numeric rows (an optional header of column names is skipped).

    ``text``: the file's text, or an iterable of its lines (an open text file): lines are read one
    at a time and reading stops at the first bad row or once ``limits.max_rows`` is exceeded, so a
    huge or hostile file costs no more than the rows it is allowed. Error messages quote at most 40
    characters of a cell or row. A row is refused by its cell count and its length before any of
    it is converted (a one-line file of millions of cells costs a count, not a conversion), and a
    byte-order mark before the first row (as spreadsheet programs write UTF-8) is skipped.
    """
    lines = io.StringIO(text) if isinstance(text, str) else text
    rows: list[list[float]] = []
    first = True
    header: int | None = None  # the header's column count
    longest = _MAX_CELL * limits.max_dim  # a row of max_dim numbers or column names is no longer
    for line_no, raw in enumerate(lines, 1):
        if line_no == 1:
            raw = raw.removeprefix("\ufeff")
        if raw.count(",") >= limits.max_dim:
            raise ValueError(
                f"{source}: row {line_no}: {raw.count(',') + 1:,} cells; expected at most {limits.max_dim} columns"
            )
        if len(raw) > longest:
            raise ValueError(f"{source}: row {line_no}: {len(raw):,} characters; a row has at most {longest}")
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        cells = [c.strip() for c in line.split(",")]
        try:
            row = [float(c) for c in cells]
        except ValueError:
            if first:  # a header row: names, not garbage (a binary file's first line is no header)
                if not all(c.isprintable() and "\ufffd" not in c and len(c) <= _MAX_CELL for c in cells):
                    raise ValueError(
                        f"{source}: row {line_no}: {_short(line)} is neither numbers nor a header of column names"
                    ) from None
                first, header = False, len(cells)
                continue
            bad = next(c for c in cells if not _is_float(c))
            raise ValueError(f"{source}: row {line_no}: {_short(bad)} is not a number") from None
        first = False
        if header is not None and not rows and len(row) != header:
            raise ValueError(f"{source}: row {line_no}: expected {header} columns like the header, got {len(row)}")
        if not all(math.isfinite(v) for v in row):
            raise ValueError(f"{source}: row {line_no}: holds a non-finite value: {_short(line)}")
        if rows and len(row) != len(rows[0]):
            raise ValueError(
                f"{source}: row {line_no}: expected {len(rows[0])} columns like the first row, got {len(row)}"
            )
        rows.append(row)
        if len(rows) > limits.max_rows:
            raise ValueError(f"{source}: more than {limits.max_rows} rows")
    if not rows:
        raise ValueError(f"{source}: no numeric rows found (the file is empty or holds only a header)")
    return validate_points(np.asarray(rows, dtype=np.float64), source, limits)


_MAX_CELL = 64  # characters of a cell of a data file: a number, or a column name


def _short(text: str, limit: int = 40) -> str:
    """``repr(text)``, cut to about ``limit`` characters (for error messages about user data)."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "…"


def _is_float(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def validate_points(array: np.ndarray, source: str = "data", limits: DataLimits = DataLimits()) -> Tensor:
    """Check an (n, d) float array of data points and return it as a float64 tensor."""
    if array.ndim != 2:
        raise ValueError(f"{source}: expected a 2-D array (rows × columns), got shape {array.shape}")
    n, d = array.shape
    if d < 2:
        raise ValueError(f"{source}: expected at least 2 columns (one per coordinate), got {d}")
    if d > limits.max_dim:
        raise ValueError(f"{source}: expected at most {limits.max_dim} columns, got {d}")
    if n < limits.min_rows:
        raise ValueError(f"{source}: expected at least {limits.min_rows} rows, got {n}")
    if n > limits.max_rows:
        raise ValueError(f"{source}: expected at most {limits.max_rows} rows, got {n}")
    finite = np.isfinite(array).all(axis=1)
    if not finite.all():
        row = int(np.argmin(finite))
        raise ValueError(f"{source}: row {row + 1} holds a non-finite value: {array[row].tolist()}")
    return torch.from_numpy(np.ascontiguousarray(array))
