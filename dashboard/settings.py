"""The dashboard's settings: one frozen dataclass built from widgets or URL query parameters.

Pure Python (no Streamlit): the mapping from settings to the core's configs is tested directly.
"""

from __future__ import annotations

import dataclasses
import io
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ehflow_core.experiments import FIG2B_FLOW
from ehflow_core.run import PAPER_TRAINING, run_label
from ehflow_core.targets import HOLDOUT, DataLimits, DataTarget, Target, make_target, parse_csv
from ehflow_core.training import TrainConfig
from ehflow_core.walkthrough import DIRECTIONS  # the step-through's: sampling, likelihood

if TYPE_CHECKING:
    from torch import Tensor


PEER_LABEL = "NSF peer"  # the peer flow's name in the curves and the density panel
# 3e-3 from the first step: the library's peak rate (TrainConfig.lr, 5e-3) comes after a warm-up,
# which a lesson's first 400 steps cannot wait for.
DEFAULT_LOG10_LR = -2.5


@dataclass(frozen=True)
class Preset:
    label: str  # shown in the picker
    target: str  # a built-in target name, or "upload"
    base: str
    generator_on: bool
    log10_kappa: float
    help: str
    log10_lr: float = DEFAULT_LOG10_LR  # its learning rate, unless it learns better at another (docs/presets.md)
    paper: bool = False  # train with the paper's configuration (TrainConfig.as_paper) instead of the library's
    shared_hamiltonian: bool = False  # one H for all steps, so the integrated flow (and its attractors) exists
    kinetic: str = "mlp"  # K(p): the library's MLP, or "convex" where it learns this preset better (docs/presets.md)


PAPER_LOG10_LR = -3.5  # the slider's nearest value to the paper's 3e-4 (it moves in quarter decades)
SLOW_LOG10_LR = -3.0  # 1e-3: core and ring and the grid learn better at it (docs/presets.md)


BASES = ("normal", "soft_uniform")  # the base densities the page offers

PRESETS: dict[str, Preset] = {
    "fig2a": Preset("Fig. 2A: SO(2) ring", "ring", "normal", True, -2.0, "The paper's symmetric experiment."),
    "paper": Preset(
        "Fig. 2A: the paper's setup",
        "ring",
        "normal",
        True,
        -2.0,
        "The paper's training: single-sample ELBO, batch 256, Adam at 3e-4 (slider: 3.2e-4), one Hamiltonian. "
        "Slower to learn than the other presets, which use this project's defaults.",
        log10_lr=PAPER_LOG10_LR,
        paper=True,
    ),
    "fig2b": Preset(
        "Fig. 2B: 8 Gaussians, wells",
        "gaussians8",
        FIG2B_FLOW["base"],
        False,
        -2.0,
        "Multimodal target; U grows a well (a minimum: K is convex) at each mode. One Hamiltonian for all "
        "steps, so the integrated flow exists.",
        shared_hamiltonian=FIG2B_FLOW["shared_hamiltonian"],
        kinetic=FIG2B_FLOW["kinetic"],
    ),
    "two_rings": Preset(
        "Two rings (SO(2))",
        "two_rings",
        "normal",
        True,
        -1.0,  # κ = 0.1: at 0.01 the multiplier holds the flow back and the outer ring is late (docs/presets.md)
        "Radial, two shells. κ starts at 0.1, looser than the other presets: the rings form sooner.",
    ),  # fmt: skip
    "core_and_ring": Preset(
        "Core and ring (SO(2))", "core_and_ring", "normal", True, -2.0, "A blob inside a ring.", SLOW_LOG10_LR
    ),
    "grid9": Preset(
        "3×3 grid of Gaussians", "grid9", "normal", False, -2.0, "Nine modes on a square grid.", SLOW_LOG10_LR
    ),
    "two_moons": Preset("Two moons", "two_moons", "normal", False, -2.0, "Two interleaved half circles."),
    "draw": Preset(
        "Draw your own data",
        "draw",
        "normal",
        False,
        -2.0,
        f"Spray points with the mouse on the drawing surface, then press Train. {HOLDOUT:.0%} are held out as "
        "the test set.",
    ),  # fmt: skip
    "upload": Preset(
        "Your own data (CSV)",
        "upload",
        "normal",
        True,
        -2.0,
        f"Upload a CSV of points. {HOLDOUT:.0%} are held out as the test set.",
    ),
}
DATA_TARGETS = ("draw", "upload")  # the presets whose points the user gives

LIMITS = {
    "log10_kappa": (-5.0, 1.0),
    "dt": (0.05, 5.0),
    "n_steps": (1, 8),
    "log10_lr": (-4.5, -2.0),
    "batch": (32, 1024),
    "n_train": (20, 5000),
    "seed": (0, 10_000),
    "theta": (0.0, 360.0),
    "lesson_radius": (0.1, 0.8),
}


@dataclass(frozen=True)
class Settings:
    """Everything the sidebar controls. ``MODEL_FIELDS`` need a Reset; the rest apply live."""

    preset: str = "fig2a"
    base: str = "normal"  # "normal" or "soft_uniform"
    generator_on: bool = True  # the target's rotation generators in the constraint
    log10_kappa: float = -2.0  # κ = 10 ** log10_kappa
    dt: float = 0.5
    n_steps: int = 2
    log10_lr: float = DEFAULT_LOG10_LR  # learning rate = 10 ** log10_lr
    batch: int = TrainConfig.batch
    finite: bool = False  # finite data regime
    n_train: int = 500
    seed: int = 0
    sweep: bool = False  # κ-sweep mode: several κ and the baseline side by side
    exact: bool = False  # K and U exactly invariant under the rotation instead of the soft constraint
    peer: bool = False  # a neural spline flow trained beside it, on the same data for the same time
    # The teaching views' (dashboard.lessons): they change no model.
    direction: str = "inverse"  # the step-through's direction
    theta: float = 45.0  # the turn, in degrees
    lesson_radius: float = 0.3  # the patch's radius

    MODEL_FIELDS = (
        "preset", "base", "dt", "n_steps", "batch", "finite", "n_train", "seed", "sweeping", "exact_symmetry", "peer",
    )  # fmt: skip

    @property
    def exact_symmetry(self) -> bool:
        """Exactly invariant energies in force: the toggle is on and the rotation generator too.
        ``K`` and ``U`` are then functions of ``|p|²`` and ``|q|²``: ``{g, H} = 0`` for every weight."""
        return self.exact and self.generator_on

    @property
    def kappa(self) -> float | None:
        """κ of the soft constraint; None without a generator, or with exact symmetry (nothing to constrain)."""
        return 10.0**self.log10_kappa if self.generator_on and not self.exact else None

    @property
    def sweeping(self) -> bool:
        """κ-sweep mode in force: the toggle is on and there is a constraint to sweep (without one
        every κ would train the same model)."""
        return self.sweep and self.kappa is not None

    @property
    def lr(self) -> float:
        return 10.0**self.log10_lr

    def primary_label(self) -> str:
        """The slider's run's name in the curves: its κ, ``"none"``, or ``"exact"`` with exact symmetry."""
        return "exact" if self.exact_symmetry else run_label(self.kappa)

    def model_key(self) -> tuple:
        """Settings that define the model and data: a change needs a Reset."""
        return tuple(getattr(self, f) for f in self.MODEL_FIELDS)

    def train_config(self) -> TrainConfig:
        """The run's configuration: the library's defaults, or the paper's for a paper preset; the
        sliders' values (step size, learning rate, batch, …) apply to either."""
        preset = PRESETS[self.preset]
        flow = {"dt": self.dt, "n_steps": self.n_steps, "base": self.base}
        if not preset.paper:  # the paper's configuration keeps its MLP K
            flow["kinetic"] = preset.kinetic
        if preset.shared_hamiltonian:
            flow["shared_hamiltonian"] = True
        if self.exact_symmetry:  # every target here is 2-D, rotated by g = q₁p₂ − q₂p₁
            flow["invariant_blocks"] = ((0, 1),)
        return TrainConfig.starting_from(
            preset.paper,
            flow=flow,
            lr_schedule="constant",  # the run has no end: the learning rate is the slider's
            warmup_steps=0,  # ... from the first step (a lesson shows its first 400 steps)
            warmup_fraction=0.0,
            # ... so the page shows the weights' moving average, which a constant rate needs
            # (docs/results.md, "Averaged weights"); the paper's preset shows its own weights.
            average=None if preset.paper else 0.99,
            kappa=self.kappa,
            n_train=self.n_train if self.finite else None,
            batch=self.batch,
            lr=self.lr,
            max_steps=10**9,  # the page decides when to stop
            seed=self.seed,
            eval_every=50,
            n_test=512,
            eval_samples=16,
        )

    def make_target(self, data: DataTarget | None = None) -> Target:
        """The preset's target: a built-in one, or ``data``, the user's points (drawn or uploaded)."""
        target = PRESETS[self.preset].target
        if target not in DATA_TARGETS:
            return make_target(target)
        if data is None:
            if target == "upload":
                raise ValueError("upload a CSV file of 2-D points first")
            raise ValueError(f"draw at least {DRAW_LIMITS.min_rows} points first")
        return data

    def labels(self) -> list[str]:
        """The curves' names: every κ of a sweep or the one run, and the peer's."""
        labels = [run_label(k) for k in self.sweep_kappas()] if self.sweeping else [self.primary_label()]
        return labels + [PEER_LABEL] if self.peer else labels

    def sweep_kappas(self) -> list[float | None]:
        """κ values of the sweep mode: three decades around the slider's κ, and the baseline."""
        return [10.0 ** (self.log10_kappa + k) for k in (-1, 0, 1)] + [None]

    # -- URL -------------------------------------------------------------------------------------
    def to_query(self) -> dict[str, str]:
        return {f.name: url_value(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_query(cls, params: dict[str, Any]) -> tuple[Settings, list[str]]:
        """Settings from URL parameters; each invalid value falls back to its default, with a notice.

        Notices are Markdown in which every user-provided name and value is an inline code span
        (:func:`code`), so a crafted link cannot put a link, an image or markup into the page.
        """
        values: dict[str, Any] = {}
        notices: list[str] = []
        defaults = cls()
        for f in dataclasses.fields(cls):
            if f.name not in params:
                continue
            raw = params[f.name]
            raw = raw[-1] if isinstance(raw, list) and raw else raw  # a repeated key: the last value
            try:
                values[f.name] = _parse(f.name, str(raw), type(getattr(defaults, f.name)))
            except ValueError as err:
                notices.append(
                    f"URL parameter {code(f.name)}={code(str(raw))} ignored ({err}); "
                    f"using {code(url_value(getattr(defaults, f.name)))}"
                )
        unknown = sorted(set(map(str, params)) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            shown = ", ".join(code(name) for name in unknown[:5])
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            notices.append(f"unknown URL parameter(s) ignored: {shown}{more}")
        settings = cls(**values)
        if "preset" in values and "base" not in values:  # a preset brings its own defaults
            settings = settings.with_preset(settings.preset)
        return settings, notices

    def with_preset(self, name: str) -> Settings:
        """These settings with a preset's: its target, base, generator and κ, its learning rate, and
        its batch (the paper's for a paper preset, the default otherwise)."""
        preset = PRESETS[name]
        return dataclasses.replace(
            self, preset=name, base=preset.base, generator_on=preset.generator_on, log10_kappa=preset.log10_kappa,
            log10_lr=preset.log10_lr, batch=PAPER_TRAINING["batch"] if preset.paper else Settings.batch,
        )  # fmt: skip


PRESET_FIELDS = ("base", "generator_on", "log10_kappa", "log10_lr", "batch")  # what with_preset sets


def url_value(value: Any) -> str:
    """A setting's value as the URL writes it."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def code(text: str, limit: int = 40) -> str:
    """``text`` as a Markdown inline code span, safe to show whatever it holds: control characters
    escaped (``repr``), backticks replaced, cut to ``limit`` characters."""
    shown = repr(text)[1:-1].replace("`", "'")
    if len(shown) > limit:
        shown = shown[: limit - 1] + "…"
    return f"`{shown}`"


def safe_name(text: str, limit: int = 40) -> str:
    """A user's file name for labels and figure titles: letters, digits, ``._-`` and spaces only."""
    kept = "".join(c if c.isalnum() or c in "._- " else "_" for c in text).strip() or "upload"
    return kept[:limit]


BATCHES = (32, 64, 128, 256, 512, 1024)  # the batch slider's values


def _parse(name: str, raw: str, kind: type) -> Any:
    """One URL value as a field of type ``kind``; ``ValueError`` (a plain-text reason) if it is not one."""
    if len(raw) > 64:
        raise ValueError(f"expected at most 64 characters, got {len(raw)}")
    if kind is bool:
        if raw not in ("0", "1", "true", "false"):
            raise ValueError("expected 0 or 1")
        return raw in ("1", "true")
    if kind is str:
        choices = {"preset": tuple(PRESETS), "direction": DIRECTIONS}.get(name, BASES)
        if raw not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return raw
    try:
        number = float(raw)
    except ValueError:
        raise ValueError("expected a number") from None
    if not math.isfinite(number):
        raise ValueError("expected a finite number")
    if kind is int and number != int(number):
        raise ValueError("expected an integer")
    value = int(number) if kind is int else number
    lo, hi = LIMITS.get(name, (-math.inf, math.inf))
    if not lo <= value <= hi:
        raise ValueError(f"expected a value in [{lo}, {hi}]")
    if name == "batch" and value not in BATCHES:
        raise ValueError(f"expected one of {', '.join(map(str, BATCHES))}")
    return value


UPLOAD_LIMITS = DataLimits(min_rows=20, max_rows=50_000, max_dim=2)
UPLOAD_MAX_BYTES = 4_000_000  # 50,000 rows of two numbers fit in ~2 MB (Streamlit itself stops at 5 MB)


DRAW_LIMITS = DataLimits(min_rows=UPLOAD_LIMITS.min_rows, max_rows=2_000, max_dim=2)  # a drawing's bounds


def read_drawing(points: Any) -> Tensor:
    """A drawing's points (the drawing surface's list of ``[x, y]``), checked as an upload's rows
    are (:func:`~ehflow_core.targets.parse_csv`) but within ``DRAW_LIMITS``; ``ValueError`` says why not."""
    if not isinstance(points, list):
        raise ValueError(f"drawing: expected a list of [x, y] points, got {type(points).__name__}")
    if len(points) > DRAW_LIMITS.max_rows:
        raise ValueError(f"drawing: {len(points):,} points; at most {DRAW_LIMITS.max_rows:,}")
    rows = (",".join(map(str, p)) if isinstance(p, list | tuple) else str(p) for p in points)
    return parse_csv(rows, "drawing", DRAW_LIMITS)


def read_upload(file: Any) -> Tensor:
    """An uploaded file's points (``file``: Streamlit's ``UploadedFile``, or any binary file with
    ``name`` and ``size``), read line by line: reading stops at the first bad row or the row limit,
    and a file over ``UPLOAD_MAX_BYTES`` is not read at all. ``ValueError`` says why not."""
    if file.size > UPLOAD_MAX_BYTES:
        raise ValueError(f"{file.name}: {file.size / 1e6:.1f} MB; at most {UPLOAD_MAX_BYTES / 1e6:.0f} MB")
    file.seek(0)
    lines = io.TextIOWrapper(file, encoding="utf-8", errors="replace")
    try:
        return parse_csv(lines, file.name, UPLOAD_LIMITS)
    finally:
        lines.detach()  # leave the upload open (a closed wrapper would close it)
        file.seek(0)
