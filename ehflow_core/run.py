r"""One training run (docs/maths.md, "Constrained training"): its config, records and step rules.

Minimise over the flow's parameters, with multipliers :math:`\lambda_k \ge 0` held fixed,

.. math:: \mathcal{L} = -\frac{1}{B}\sum_b \mathcal{B}(q_b) + \sum_k \lambda_k (C_k - \kappa_k),
          \qquad C_k = E_{s \sim \pi}[\{g_k, H\}^2],

with :math:`\mathcal{B}` the training bound (the ELBO, or the importance-weighted :math:`L_K`;
both in :mod:`ehflow_core.objectives`),
then move each multiplier GECO-style: a moving average :math:`\hat c_k \leftarrow \alpha \hat c_k
+ (1 - \alpha)(C_k - \kappa_k)/\kappa_k` of the *relative* violation, and
:math:`\log\lambda_k \leftarrow \mathrm{clamp}(\log\lambda_k + \nu \tanh \hat c_k)`. λ rises while
the constraint is violated and falls once it holds. When κ changes mid-run (:meth:`Run.set_kappa`)
the multipliers' state follows it (docs/maths.md, "Changing κ mid-run").

A :class:`Run` holds one run's state and the rules each of its steps follows; the loop that
applies them, to one run or to a batched ensemble, is :class:`~ehflow_core.training.Stepper`.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ._checks import check_choice, check_float, check_int
from .config import FlowConfig, JsonConfig
from .flow import GRAD_MODES, HamiltonianFlow
from .objectives import CONSTRAINT_AT, OBJECTIVES, Noise, Objective
from .symmetries import Generator, constraint_values
from .targets import Target

log = logging.getLogger(__name__)

DIVERGENCE_ACTIONS = ("stop", "continue")
LR_SCHEDULES = ("constant", "cosine")
# c in the average's β_t = min(β, (1 + t) / (c + t)): its memory grows as about t / c steps, so the
# average follows a loss that still falls fast (docs/maths.md, "Averaged weights")
AVERAGE_WARMUP = 40


def average_beta(beta: float, step: int, warmup: float = AVERAGE_WARMUP) -> float:
    r"""The weights' average's factor after applied step t: :math:`\beta_t = \min(\beta, (1 + t) / (c + t))`,
    c = ``warmup`` (docs/maths.md, "Averaged weights")."""
    return min(beta, (1 + step) / (warmup + step))


# The paper's training choices, where the library's defaults depart from them (see TrainConfig.as_paper).
PAPER_TRAINING: dict[str, Any] = {
    "objective": "elbo", "train_samples": 1, "batch": 256, "lr": 3e-4, "lr_schedule": "constant", "warmup_steps": 0,
    "warmup_fraction": 0.0,
}  # fmt: skip
PAPER_FLOW: dict[str, Any] = {
    "kinetic": "mlp", "shared_hamiltonian": True, "potential_init_scale": 1.0, "kinetic_init_scale": 1.0,
    "encoder_covariance": "diagonal",
}  # fmt: skip


@dataclass(frozen=True)
class TrainConfig(JsonConfig):
    """Everything that defines a training run besides the target (validated on construction).

    The defaults are the fastest-learning settings of the quality study (docs/results.md: DReG with K = 8,
    batch 64, Adam at 5e-3 after a short warm-up with a cosine decay, a Hamiltonian per leapfrog step);
    :meth:`as_paper` gives the paper's configuration.
    """

    flow: FlowConfig = field(default_factory=FlowConfig)  # the model
    kappa: float | None = None  # constraint precision κ > 0 for every generator; None: unconstrained
    n_train: int | None = None  # size of a fixed training set (finite data); None: fresh samples each step
    batch: int = 64  # data points per step (the paper: 256)
    lr: float = 5e-3  # Adam's peak learning rate (the paper: 3e-4)
    lr_schedule: str = "cosine"  # "cosine": decay to 0 over the run's budget (max_steps or seconds); or "constant"
    # A linear learning-rate warm-up that ends after ``warmup_steps`` steps or ``warmup_fraction`` of
    # the run's budget (as the cosine decay measures it), whichever comes first; 0 leaves a bound out,
    # both 0: no warm-up.
    warmup_steps: int = 300
    warmup_fraction: float = 0.1
    max_steps: int = 2000  # training steps of the run (it also ends at ``seconds``, whichever comes first)
    seconds: float | None = None  # wall-clock budget in seconds; None: no budget
    seed: int = 0  # seeds initialisation, data and noise: same seed, same run
    objective: str = "dreg"  # the bound trained on: "elbo" (the paper's), "iwae" (L_K) or "dreg" (L_K, DReG gradient)
    train_samples: int = 8  # K: momentum samples per data point in the training bound (the paper: 1)
    eval_every: int = 100  # training steps between evaluations on (a fixed subsample of) the test set
    n_test: int = 2048  # test points (fresh samples from the target, drawn once)
    eval_points: int = 512  # evaluations during training use a fixed subsample of this many test (and train) points
    eval_samples: int = 32  # K of the importance-weighted test log-likelihood L_K during training
    constraint_batch: int = 256  # base samples s ~ π per step for the constraint C_k
    # Where C_k's brackets are evaluated: "base", on base samples (the paper's E_π); or "base+data",
    # also at the batch's data points, each with a momentum from the encoder (where the data are).
    constraint_at: str = "base"
    lam_init: float = 1.0  # initial multiplier λ
    geco_alpha: float = 0.99  # moving-average factor α of the violation
    geco_rate: float = 0.01  # multiplier rate ν (largest change of log λ per step)
    log_lam_max: float = 9.0  # log λ is clamped to [−log_lam_max, log_lam_max]
    grad_clip: float | None = None  # clip each run's gradient norm to this value; None: no clipping
    max_loss: float = 1e6  # a loss above this (or non-finite) counts as divergence
    on_divergence: str = "stop"  # after a divergence: "stop", or "continue" (skip the step)
    max_divergences: int = 20  # with "continue": stop after this many divergences in a row
    grad_mode: str = "fast"  # "fast" (closed-form gradients) or "reference" (plain autograd; same numbers, slower)
    # β of an exponential moving average of the weights, which evaluations, summaries, checkpoints'
    # models and the dashboard's pictures show (training steps the weights themselves); None: the
    # last weights. It stands in for a decay where the learning rate is constant (the dashboard's).
    average: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.flow, FlowConfig):
            raise TypeError(f"flow must be a FlowConfig, got {type(self.flow).__name__}")
        if self.kappa is not None:
            object.__setattr__(self, "kappa", check_float("kappa", self.kappa, positive=True))
        if self.n_train is not None:
            check_int("n_train", self.n_train, minimum=2)
        for name in ("batch", "max_steps", "train_samples", "eval_every", "n_test", "eval_samples", "eval_points"):
            check_int(name, getattr(self, name), minimum=1)
        check_int("constraint_batch", self.constraint_batch, minimum=1)
        check_int("warmup_steps", self.warmup_steps, minimum=0)
        object.__setattr__(
            self, "warmup_fraction", check_float("warmup_fraction", self.warmup_fraction, minimum=0.0, maximum=1.0)
        )
        check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        check_int("seed", self.seed, minimum=0)
        check_int("max_divergences", self.max_divergences, minimum=1)
        object.__setattr__(self, "lr", check_float("lr", self.lr, positive=True))
        if self.seconds is not None:
            object.__setattr__(self, "seconds", check_float("seconds", self.seconds, positive=True))
        if self.average is not None:
            object.__setattr__(self, "average", check_float("average", self.average, minimum=0.0, maximum=0.9999))
        object.__setattr__(self, "lam_init", check_float("lam_init", self.lam_init, positive=True))
        check_float("geco_alpha", self.geco_alpha, minimum=0.0, maximum=0.999999)
        check_float("geco_rate", self.geco_rate, minimum=0.0)
        check_float("log_lam_max", self.log_lam_max, positive=True)
        if self.grad_clip is not None:
            check_float("grad_clip", self.grad_clip, positive=True)
        check_float("max_loss", self.max_loss, positive=True)
        check_choice("on_divergence", self.on_divergence, DIVERGENCE_ACTIONS)
        check_choice("objective", self.objective, OBJECTIVES)
        check_choice("constraint_at", self.constraint_at, CONSTRAINT_AT)
        check_choice("grad_mode", self.grad_mode, GRAD_MODES)

    @property
    def estimators(self) -> dict[str, Any]:
        """What the curves show, for their names (:func:`~ehflow_core.figures.curves_spec`): the
        training bound on the batches (``"ELBO"`` or ``"L_8"``) and K of the evaluations' L_K."""
        return {"bound": "ELBO" if self.objective == "elbo" else f"L_{self.train_samples}", "k": self.eval_samples}

    def as_paper(self) -> TrainConfig:
        """This configuration with the paper's training choices (:data:`PAPER_TRAINING`,
        :data:`PAPER_FLOW`): the single-sample ELBO, batch 256, Adam at a constant 3e-4, one
        Hamiltonian with an MLP kinetic energy, PyTorch's default initialisation. The reproduction
        of the paper's figures uses it."""
        return self.replace(flow=self.flow.replace(**PAPER_FLOW), **PAPER_TRAINING)

    @classmethod
    def starting_from(cls, paper: bool = False, flow: dict[str, Any] | None = None, **changes: Any) -> TrainConfig:
        """The library's defaults, or the paper's configuration (``paper``), with ``flow`` (changes
        to the FlowConfig) and ``changes`` (to the TrainConfig) applied."""
        config = cls().as_paper() if paper else cls()
        return config.replace(flow=config.flow.replace(**(flow or {})), **changes)

    @classmethod
    def _from_plain(cls, data: dict[str, Any]) -> dict[str, Any]:
        if isinstance(data.get("flow"), dict):
            data["flow"] = FlowConfig.from_dict(data["flow"])
        return data


@dataclass
class Record:
    """One training step's numbers (evaluation fields only every ``eval_every`` steps, else None)."""

    step: int  # training steps completed
    seconds: float  # wall-clock training time so far
    steps_per_s: float  # recent training speed
    train_bound: float  # the training bound on this step's batch (ELBO, or L_K for "iwae" and "dreg")
    loss: float  # the Lagrangian minimised this step
    grad_norm: float  # gradient norm before clipping
    constraint: dict[str, float]  # C_k = E_π[{g_k, H}²] per generator (unconstrained runs: eval steps only)
    lam: dict[str, float]  # λ_k per generator (0 for an unconstrained run)
    kappa: float | None  # κ in force
    test_elbo: float | None = None  # mean ELBO on the test set
    test_log_likelihood: float | None = None  # mean L_K on the test set
    train_log_likelihood: float | None = None  # mean L_K on (up to n_test points of) the training data
    eval_seconds: float | None = None  # wall time this step's evaluation took (counted in the next step's seconds)
    event: str | None = None  # "diverged" when this step was rejected
    message: str | None = None  # what happened and the likely cause

    def to_row(self) -> dict[str, Any]:
        """Flat dict for CSV: constraint and λ become ``constraint_<name>`` and ``lam_<name>``."""
        row = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("constraint", "lam")}
        row.update({f"constraint_{k}": v for k, v in self.constraint.items()})
        row.update({f"lam_{k}": v for k, v in self.lam.items()})
        return row

    @classmethod
    def from_row(cls, row: dict[str, str]) -> Record:
        """The record a row of a metrics CSV (:meth:`to_row`, written by ``csv``) was made from:
        floats written by ``repr`` read back exactly, empty cells as None."""
        values: dict[str, Any] = {"constraint": {}, "lam": {}}
        for key, text in row.items():
            if key.startswith(("constraint_", "lam_")):
                group, name = key.split("_", 1)
                if text != "":
                    values[group][name] = float(text)
            elif key in _RECORD_FIELDS:
                values[key] = None if text == "" else int(text) if key == "step" else _RECORD_FIELDS[key](text)
        return cls(**values)


# How each plain field of a Record reads back from its CSV cell (constraint_* and lam_* are floats).
_RECORD_FIELDS: dict[str, Any] = {
    f.name: str if f.name in ("event", "message") else float
    for f in dataclasses.fields(Record)
    if f.name not in ("constraint", "lam")
}


@dataclass
class StepResult:
    """What one training step did to one run, before it becomes a :class:`Record`."""

    loss: float  # the Lagrangian
    train_bound: float  # the training bound on the batch
    grad_norm: float = math.nan  # the run's gradient norm before clipping (NaN: not computed)
    constraint: dict[str, float] = field(default_factory=dict)  # C_k by generator name (constrained steps)
    problem: str | None = None  # why the step was rejected; None: it was applied

    @property
    def accepted(self) -> bool:
        return self.problem is None


class Run:
    """One training run's state and its step rules: the flow, data, RNG, multipliers and counters.

    A run holds no optimiser: a :class:`Trainer` (a run with its own Adam) or an
    :class:`~ehflow_core.ensemble.EnsembleTrainer` (one Adam over M runs' stacked weights) steps it.

    Args:
        config: the run's :class:`TrainConfig`.
        target: the density to learn (samples; ``log_prob`` for reporting, if it has one).
        generators: symmetry generators of the constraint (default: the target's own).
        train_data: a fixed training set (n, d) for user data (overrides ``n_train``).
        test_data: a fixed test set (n, d) (default: ``n_test`` fresh samples of the target).
    """

    def __init__(
        self,
        config: TrainConfig,
        target: Target,
        generators: Sequence[Generator] | None = None,
        train_data: Tensor | None = None,
        test_data: Tensor | None = None,
    ) -> None:
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        if target.dim != config.flow.dim:
            raise ValueError(f"target {target.name!r} has dim {target.dim}, but config.flow.dim is {config.flow.dim}")
        self.config = config
        self.target = target
        self.generators = list(target.generators() if generators is None else generators)
        for g in self.generators:
            if g.dim != config.flow.dim:
                raise ValueError(f"generator {g.name!r} acts on dim {g.dim}, but the flow has dim {config.flow.dim}")
        with torch.random.fork_rng(devices=[]):  # the seed fixes the initialisation; torch's global RNG is left alone
            torch.manual_seed(config.seed)
            self.flow = HamiltonianFlow(config.flow).use_grad_mode(config.grad_mode)
        # The weights' moving average (config.average), a flow of its own that no optimiser steps.
        self.averaged = None if config.average is None else copy.deepcopy(self.flow).requires_grad_(False)
        self.objective = Objective(self.flow, self.generators, config.objective, config.constraint_at)
        self.kappa = config.kappa
        device, dtype = self.flow.device, self.flow.dtype
        self.rng = torch.Generator(device=device).manual_seed(config.seed)
        # Targets sample on the CPU: on another device the batches get a CPU generator of their own.
        self.sample_rng = self.rng if device.type == "cpu" else torch.Generator().manual_seed(config.seed + 2)
        data_rng = data_generator(config.seed)
        G = len(self.generators)
        self.log_lam = torch.full((G,), math.log(config.lam_init), dtype=torch.float64)
        self.violation = torch.zeros(G, dtype=torch.float64)  # moving average ĉ_k
        self.multiplier_kappa = config.kappa  # the κ that ĉ_k and λ_k were last moved under
        if train_data is None and config.n_train is not None:
            train_data = target.sample(config.n_train, data_rng, dtype=torch.float64)
        self.train_data = None if train_data is None else train_data.to(device=device, dtype=dtype)
        if test_data is None:
            test_data = target.sample(config.n_test, data_rng, dtype=torch.float64)
        self.test_data = test_data.to(device=device, dtype=dtype)
        self.eval_test = _subsample(self.test_data, config.eval_points, config.seed + 5)
        self.eval_train = (
            None if self.train_data is None else _subsample(self.train_data, config.eval_points, config.seed + 6)
        )
        self.step = 0
        self.seconds = 0.0
        self.stopped = False  # a divergence ended this run (with ``on_divergence="stop"``)
        self._consecutive_divergences = 0

    # -- live settings -------------------------------------------------------------------------
    def set_kappa(self, kappa: float | None) -> None:
        """Change κ (None: drop the constraint) from the next step on.

        The multipliers' state follows the new κ, so that no κ, however far or briefly it was
        moved, keeps acting after it was left (docs/maths.md, "Changing κ mid-run"): the averaged
        relative violation ĉ is re-expressed against the new κ (the average C it stands for is
        kept), and a looser κ scales λ down by κ_old / κ_new (λκ is kept); a stricter κ leaves λ
        to rise at the multiplier's own bounded rate. Dropping the constraint (None) and taking it
        up again rebases from the κ the multipliers last moved under.
        """
        kappa = None if kappa is None else check_float("kappa", kappa, positive=True)
        old = self.multiplier_kappa
        if kappa is not None and old is not None and kappa != old:
            self.violation = (self.violation + 1.0) * (old / kappa) - 1.0
            if kappa > old:
                limit = self.config.log_lam_max
                self.log_lam = (self.log_lam - math.log(kappa / old)).clamp(-limit, limit)
        if kappa is not None:
            self.multiplier_kappa = kappa
        self.kappa = kappa

    @property
    def lam(self) -> dict[str, float]:
        """λ_k by generator name (0 while unconstrained)."""
        if self.kappa is None:
            return {g.name: 0.0 for g in self.generators}
        return {g.name: float(v) for g, v in zip(self.generators, self.log_lam.exp())}

    @property
    def eval_flow(self) -> HamiltonianFlow:
        """The model the run shows: the weights' moving average where ``config.average`` is set,
        else the trained flow itself. Evaluations, summaries and pictures use it."""
        return self.flow if self.averaged is None else self.averaged

    @property
    def constrained(self) -> bool:
        """Whether the constraint is in force (a κ and at least one generator)."""
        return self.kappa is not None and len(self.generators) > 0

    # -- the step rules ------------------------------------------------------------------------
    def _batch(self) -> Tensor:
        B = self.config.batch
        if self.train_data is None:
            return self.target.sample(B, self.sample_rng, dtype=self.flow.dtype).to(self.flow.device)
        idx = torch.randint(len(self.train_data), (B,), generator=self.rng, device=self.rng.device)
        return self.train_data[idx]

    def draw(self) -> Noise:
        """This step's data batch and noise from the run's RNG (batch, encoder, then base samples)."""
        x = self._batch()
        eps = self.flow.encoder.noise(x, self.config.train_samples, self.rng)
        if not self.constrained:
            return Noise(x, eps, None, None)
        return Noise(x, eps, *self.flow.sample_base(self.config.constraint_batch, generator=self.rng))

    def lagrangian(self, bound: Tensor, constraint: Tensor | None) -> Tensor:
        """−bound + Σ_k λ_k (C_k − κ): ``bound`` the training bound (a scalar), ``constraint`` (G,) or None."""
        if constraint is None or self.kappa is None or not self.generators:
            return -bound
        lam = self.log_lam.exp().to(device=constraint.device, dtype=constraint.dtype)
        return -bound + (lam * (constraint - self.kappa)).sum(-1)

    def _rejected(self, what: str, value: float, lr: float) -> str:
        return (
            f"step {self.step + 1}: the {what} became {value}; the step was rejected and the model kept "
            f"its last finite weights. Likely cause: the leapfrog step dt={self.flow.config.dt} or the "
            f"learning rate {lr:g} is too large."
        )

    def assess(self, loss: Tensor, bound: Tensor, lr: float) -> StepResult:
        """The step's result so far: rejected when the loss is non-finite or above ``max_loss``."""
        result = StepResult(loss=float(loss.detach()), train_bound=float(bound.detach()))
        if not math.isfinite(result.loss) or abs(result.loss) > self.config.max_loss:
            result.problem = self._rejected("loss", result.loss, lr)
        return result

    def accept(self, result: StepResult, constraint: Tensor | None, grad_norm: float, lr: float) -> None:
        """After backpropagation: reject a non-finite gradient norm; else move the multipliers."""
        result.grad_norm = grad_norm
        if not math.isfinite(grad_norm):
            result.problem = self._rejected("gradient norm", grad_norm, lr)
            return
        if constraint is not None and self.kappa is not None and self.generators:
            constraint = constraint.detach().double().cpu()
            self._update_multipliers(constraint, self.kappa)
            result.constraint = {g.name: float(c) for g, c in zip(self.generators, constraint)}

    def _update_multipliers(self, constraint: Tensor, kappa: float) -> None:
        cfg = self.config
        relative = (constraint - kappa) / kappa
        self.violation = cfg.geco_alpha * self.violation + (1 - cfg.geco_alpha) * relative
        step = cfg.geco_rate * torch.tanh(self.violation)
        self.log_lam = (self.log_lam + step).clamp(-cfg.log_lam_max, cfg.log_lam_max)

    def count(self, result: StepResult) -> None:
        """Count an applied step; a rejected one counts towards ``max_divergences`` instead."""
        if result.accepted:
            self.step += 1
            self._consecutive_divergences = 0
            self._average()
        else:
            self._consecutive_divergences += 1

    @torch.no_grad()
    def _average(self) -> None:
        r"""After applied step t: :math:`\bar\theta \leftarrow \beta_t \bar\theta + (1 - \beta_t)\theta`
        with :math:`\beta_t` of :func:`average_beta`: a memory of about t / c steps, so the average
        does not lag behind the fast start (docs/maths.md, "Averaged weights")."""
        if self.averaged is None or self.config.average is None:
            return
        beta = average_beta(self.config.average, self.step)
        averaged: list[Tensor] = list(self.averaged.parameters())
        torch._foreach_lerp_(averaged, [p.detach() for p in self.flow.parameters()], 1.0 - beta)

    def conclude(self, result: StepResult, rate: float, last: bool) -> Record:
        """The step's :class:`Record` (evaluated on evaluation steps and when ``last``); a rejected
        step the run may not continue after stops the run."""
        cfg = self.config
        record = Record(
            step=self.step,
            seconds=self.seconds,
            steps_per_s=rate,
            train_bound=result.train_bound,
            loss=result.loss,
            grad_norm=result.grad_norm,
            constraint=result.constraint,
            lam=self.lam,
            kappa=self.kappa,
        )
        if not result.accepted:
            record.event, record.message = "diverged", result.problem
            log.warning(result.problem)
            self.stopped = cfg.on_divergence == "stop" or self._consecutive_divergences >= cfg.max_divergences
            return record
        if self.step % cfg.eval_every == 0 or last:
            began = time.perf_counter()
            if not record.constraint:  # unconstrained: measured on evaluation steps only
                record.constraint = self.measure_constraints()
            for key, value in self.evaluate().items():
                setattr(record, key, value)
            record.eval_seconds = time.perf_counter() - began
        return record

    # -- evaluation ----------------------------------------------------------------------------
    @torch.no_grad()
    def measure_constraints(self) -> dict[str, float]:
        """C_k = E_π[{g_k, H}²] per generator on fresh base samples (a seeded, separate RNG)."""
        flow = self.eval_flow
        rng = torch.Generator(device=flow.device).manual_seed(self.config.seed + 11 + self.step)
        q0, p0 = flow.sample_base(self.config.constraint_batch, generator=rng)
        reference = flow.grad_mode == "reference"
        values = constraint_values(flow.hamiltonian_list, self.generators, q0, p0, reference=reference)
        return {g.name: float(c) for g, c in zip(self.generators, values)}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float | None]:
        """Test ELBO and test and train L_K (K = ``eval_samples``) on ``eval_test`` and
        ``eval_train``: fixed random subsamples of at most ``eval_points`` points, so evaluation
        costs the same whatever the data's size (a run's summary evaluates the whole test set once,
        at the end)."""
        cfg, flow = self.config, self.eval_flow
        rng = torch.Generator(device=flow.device).manual_seed(cfg.seed + 7 + self.step)
        train_ll = None
        if self.eval_train is not None:
            train_ll = float(flow.log_likelihood(self.eval_train, cfg.eval_samples, rng).mean())
        return {
            "test_elbo": float(flow._log_weights(self.eval_test, 1, rng).mean()),
            "test_log_likelihood": float(flow.log_likelihood(self.eval_test, cfg.eval_samples, rng).mean()),
            "train_log_likelihood": train_ll,
        }


def run_label(kappa: float | None, seed: int | None = None) -> str:
    """A run's name in curves, tables and sweeps: ``"κ=0.01"``, or ``"none"`` without the
    constraint; with ``"/seed1"`` appended when ``seed`` is given."""
    label = "none" if kappa is None else f"κ={kappa:.3g}"
    return label if seed is None else f"{label}/seed{seed}"


def data_generator(seed: int) -> torch.Generator:
    """The generator a run of ``seed`` draws its data from: its training set (``n_train`` points),
    then its test set. Apart from the one for batches and noise, so the data do not depend on the
    model's size; a peer drawing from it sees the very same points."""
    return torch.Generator().manual_seed(seed + 1_000_003)


def _subsample(points: Tensor, n: int, seed: int) -> Tensor:
    """At most ``n`` of ``points`` (N, d), drawn without replacement with ``seed`` (all of them when N <= n)."""
    if len(points) <= n:
        return points
    index = torch.randperm(len(points), generator=torch.Generator().manual_seed(seed))[:n]
    return points[index.to(points.device)]
