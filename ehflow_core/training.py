r"""Constrained training (MATH.md "Constrained training"): the Lagrangian and GECO multipliers.

Minimise over the flow's parameters, with multipliers :math:`\lambda_k \ge 0` held fixed,

.. math:: \mathcal{L} = -\frac{1}{B}\sum_b \mathrm{ELBO}(q_b) + \sum_k \lambda_k (C_k - \kappa_k),
          \qquad C_k = E_{s \sim \pi}[\{g_k, H\}^2],

then move each multiplier GECO-style: a moving average :math:`\hat c_k \leftarrow \alpha \hat c_k
+ (1 - \alpha)(C_k - \kappa_k)/\kappa_k` of the *relative* violation, and
:math:`\log\lambda_k \leftarrow \mathrm{clamp}(\log\lambda_k + \nu \tanh \hat c_k)`. λ rises while
the constraint is violated and falls once it holds. (Relative to MATH.md's
:math:`\lambda \leftarrow \lambda e^{\nu \hat c}`, dividing by κ and bounding the step with tanh
lets one rate ν serve κ values across several decades.)

Training is a generator of plain :class:`Record` s; the consumer decides when to stop, and the
:class:`Trainer` object keeps all state, so calling :meth:`Trainer.train` again resumes.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from ._checks import check_choice, check_float, check_int
from .config import FlowConfig, JsonConfig
from .flow import PATHS, HamiltonianFlow
from .symmetries import Generator, constraint_values
from .targets import Target

log = logging.getLogger(__name__)

DIVERGENCE_ACTIONS = ("stop", "continue")


@dataclass(frozen=True)
class TrainConfig(JsonConfig):
    """Everything that defines a training run besides the target (validated on construction)."""

    flow: FlowConfig = field(default_factory=FlowConfig)  # the model
    kappa: float | None = None  # constraint precision κ > 0 for every generator; None: unconstrained
    n_train: int | None = None  # size of a fixed training set (finite data); None: fresh samples each step
    batch: int = 256  # data points per step
    lr: float = 3e-4  # Adam learning rate (the paper's)
    steps: int = 2000  # training steps (the run also ends at ``seconds``, whichever comes first)
    seconds: float | None = None  # wall-clock budget in seconds; None: no budget
    seed: int = 0  # seeds initialisation, data and noise: same seed, same run
    n_elbo_samples: int = 1  # momentum samples per data point in the training ELBO
    eval_every: int = 100  # steps between evaluations on the test set
    n_test: int = 2048  # test points (fresh samples from the target, drawn once)
    eval_samples: int = 64  # K of the importance-weighted test log-likelihood L_K
    constraint_batch: int = 256  # base samples s ~ π per step for the constraint C_k
    lam_init: float = 1.0  # initial multiplier λ
    geco_alpha: float = 0.99  # moving-average factor α of the violation
    geco_rate: float = 0.01  # multiplier rate ν (largest change of log λ per step)
    log_lam_max: float = 9.0  # log λ is clamped to [−log_lam_max, log_lam_max]
    grad_clip: float | None = None  # clip the gradient norm to this value; None: no clipping
    max_loss: float = 1e6  # a loss above this (or non-finite) counts as divergence
    on_divergence: str = "stop"  # after a divergence: "stop", or "continue" (skip the step)
    max_divergences: int = 20  # with "continue": stop after this many divergences in a row
    path: str = "fast"  # gradients: "fast" (closed form) or "reference" (plain autograd; same numbers, slower)

    def __post_init__(self) -> None:
        if not isinstance(self.flow, FlowConfig):
            raise TypeError(f"flow must be a FlowConfig, got {type(self.flow).__name__}")
        if self.kappa is not None:
            object.__setattr__(self, "kappa", check_float("kappa", self.kappa, positive=True))
        if self.n_train is not None:
            check_int("n_train", self.n_train, minimum=2)
        for name in ("batch", "steps", "n_elbo_samples", "eval_every", "n_test", "eval_samples", "constraint_batch"):
            check_int(name, getattr(self, name), minimum=1)
        check_int("seed", self.seed, minimum=0)
        check_int("max_divergences", self.max_divergences, minimum=1)
        object.__setattr__(self, "lr", check_float("lr", self.lr, positive=True))
        if self.seconds is not None:
            object.__setattr__(self, "seconds", check_float("seconds", self.seconds, positive=True))
        object.__setattr__(self, "lam_init", check_float("lam_init", self.lam_init, positive=True))
        check_float("geco_alpha", self.geco_alpha, minimum=0.0, maximum=0.999999)
        check_float("geco_rate", self.geco_rate, minimum=0.0)
        check_float("log_lam_max", self.log_lam_max, positive=True)
        if self.grad_clip is not None:
            check_float("grad_clip", self.grad_clip, positive=True)
        check_float("max_loss", self.max_loss, positive=True)
        check_choice("on_divergence", self.on_divergence, DIVERGENCE_ACTIONS)
        check_choice("path", self.path, PATHS)

    @classmethod
    def _from_plain(cls, data: dict[str, Any]) -> dict[str, Any]:
        if isinstance(data.get("flow"), dict):
            data["flow"] = FlowConfig.from_dict(data["flow"])
        return data


@dataclass
class Record:
    """One training step's numbers (evaluation fields only every ``eval_every`` steps, else None)."""

    step: int  # steps completed
    seconds: float  # wall-clock training time so far
    steps_per_s: float  # recent training speed
    train_elbo: float  # mean ELBO of this step's batch
    loss: float  # the Lagrangian minimised this step
    grad_norm: float  # gradient norm before clipping
    constraint: dict[str, float]  # C_k = E_π[{g_k, H}²] per generator (unconstrained runs: eval steps only)
    lam: dict[str, float]  # λ_k per generator (0 for an unconstrained run)
    kappa: float | None  # κ in force
    test_elbo: float | None = None  # mean ELBO on the test set
    test_log_likelihood: float | None = None  # mean L_K on the test set
    train_log_likelihood: float | None = None  # mean L_K on (up to n_test points of) the training data
    event: str | None = None  # "diverged" when this step was rejected
    message: str | None = None  # what happened and the likely cause

    def to_row(self) -> dict[str, Any]:
        """Flat dict for CSV: constraint and λ become ``constraint_<name>`` and ``lam_<name>``."""
        row = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("constraint", "lam")}
        row.update({f"constraint_{k}": v for k, v in self.constraint.items()})
        row.update({f"lam_{k}": v for k, v in self.lam.items()})
        return row


class Noise(NamedTuple):
    """One step's random inputs, drawn from the run's RNG in a fixed order."""

    x: Tensor  # data batch (B, d)
    eps: Tensor  # encoder noise (S, B, d)
    q0: Tensor | None  # base samples of the constraint (B_c, d); None when unconstrained
    p0: Tensor | None


class Objective(nn.Module):
    r"""One step's ELBO and constraints as a pure function of the noise: ``forward(x, eps, q0, p0)``.

    Returns the batch-mean ELBO (a scalar) and :math:`C_k = E_\pi[\{g_k, H\}^2]` (G,), or None
    without base samples (an unconstrained step). A module
    so that :class:`~ehflow_core.ensemble.EnsembleTrainer` can ``vmap`` it over stacked weights.
    """

    def __init__(self, flow: HamiltonianFlow, generators: Sequence[Generator]) -> None:
        super().__init__()
        self.flow = flow
        self.generators = list(generators)

    def forward(self, x: Tensor, eps: Tensor, q0: Tensor | None, p0: Tensor | None) -> tuple[Tensor, Tensor | None]:
        elbo = self.flow._log_weights_from_noise(x, eps).mean()
        if q0 is None or p0 is None:  # unconstrained: no base samples were drawn
            return elbo, None
        hamiltonians = list(self.flow.hamiltonians)
        reference = self.flow.path == "reference"
        return elbo, constraint_values(hamiltonians, self.generators, q0, p0, reference=reference)


def initial_flow(config: TrainConfig) -> HamiltonianFlow:
    """The flow a :class:`Trainer` with ``config`` starts from (the seed fixes the initialisation).

    Building it costs no optimiser: the dashboard draws the untrained model with it while the
    first ``torch.optim.Adam`` (which imports ``torch._dynamo``, ~3 s) is still being built.
    """
    torch.manual_seed(config.seed)
    return HamiltonianFlow(config.flow).use_path(config.path)


class Trainer:
    """Owns a flow, its optimiser, multipliers, data and RNG; :meth:`train` yields records.

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
        self.flow = initial_flow(config)
        self.objective = Objective(self.flow, self.generators)
        self.kappa = config.kappa
        self.optimizer = torch.optim.Adam(self.flow.parameters(), lr=config.lr)
        device, dtype = self.flow.device, self.flow.dtype
        self.rng = torch.Generator(device=device).manual_seed(config.seed)
        data_rng = torch.Generator().manual_seed(config.seed + 1_000_003)
        G = len(self.generators)
        self.log_lam = torch.full((G,), math.log(config.lam_init), dtype=torch.float64)
        self.violation = torch.zeros(G, dtype=torch.float64)  # moving average ĉ_k
        if train_data is None and config.n_train is not None:
            train_data = target.sample(config.n_train, data_rng, dtype=torch.float64)
        self.train_data = None if train_data is None else train_data.to(device=device, dtype=dtype)
        if test_data is None:
            test_data = target.sample(config.n_test, data_rng, dtype=torch.float64)
        self.test_data = test_data.to(device=device, dtype=dtype)
        self.step = 0
        self.seconds = 0.0
        self._consecutive_divergences = 0

    # -- live settings -------------------------------------------------------------------------
    def set_kappa(self, kappa: float | None) -> None:
        """Change κ (None: drop the constraint) from the next step on."""
        self.kappa = None if kappa is None else check_float("kappa", kappa, positive=True)

    def set_lr(self, lr: float) -> None:
        """Change the learning rate from the next step on."""
        lr = check_float("lr", lr, positive=True)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    @property
    def lam(self) -> dict[str, float]:
        if self.kappa is None:
            return {g.name: 0.0 for g in self.generators}
        return {g.name: float(v) for g, v in zip(self.generators, self.log_lam.exp())}

    # -- one step ------------------------------------------------------------------------------
    def _batch(self) -> Tensor:
        B = self.config.batch
        if self.train_data is None:
            cpu_rng = self.rng if self.rng.device.type == "cpu" else None
            x = self.target.sample(B, cpu_rng, dtype=self.flow.dtype)
            return x.to(self.flow.device)
        idx = torch.randint(len(self.train_data), (B,), generator=self.rng, device=self.rng.device)
        return self.train_data[idx]

    def _update_multipliers(self, constraint: Tensor) -> None:
        cfg = self.config
        relative = (constraint.detach().double().cpu() - self.kappa) / self.kappa
        self.violation = cfg.geco_alpha * self.violation + (1 - cfg.geco_alpha) * relative
        step = cfg.geco_rate * torch.tanh(self.violation)
        self.log_lam = (self.log_lam + step).clamp(-cfg.log_lam_max, cfg.log_lam_max)

    def _diverged(self, what: str, value: float) -> str:
        return (
            f"step {self.step + 1}: the {what} became {value}; the step was rejected and the model kept "
            f"its last finite weights. Likely cause: the leapfrog step dt={self.flow.config.dt} or the "
            f"learning rate {self.optimizer.param_groups[0]['lr']:g} is too large."
        )

    @property
    def constrained(self) -> bool:
        """Whether the constraint is in force (a κ and at least one generator)."""
        return self.kappa is not None and len(self.generators) > 0

    def _draw(self) -> Noise:
        """This step's data batch and noise from the run's RNG (batch, encoder, then base samples)."""
        x = self._batch()
        eps = self.flow.encoder.noise(x, self.config.n_elbo_samples, self.rng)
        if not self.constrained:
            return Noise(x, eps, None, None)
        return Noise(x, eps, *self.flow.sample_base(self.config.constraint_batch, generator=self.rng))

    def _lagrangian(self, elbo: Tensor, constraint: Tensor | None) -> Tensor:
        """−ELBO + Σ_k λ_k (C_k − κ); with ``elbo`` (...) and ``constraint`` (..., G) or None."""
        if constraint is None or not self.constrained:
            return -elbo
        lam = self.log_lam.exp().to(device=constraint.device, dtype=constraint.dtype)
        return -elbo + (lam * (constraint - self.kappa)).sum(-1)

    def _check_loss(self, values: dict[str, Any]) -> str | None:
        """A divergence message when the loss is non-finite or above ``max_loss``, else None."""
        if not math.isfinite(values["loss"]) or abs(values["loss"]) > self.config.max_loss:
            return self._diverged("loss", values["loss"])
        return None

    def _after_step(self, values: dict[str, Any], constraint: Tensor | None, grad_norm: float) -> None:
        """Book-keeping after an accepted step: multipliers and the step's reported values."""
        values["grad_norm"] = grad_norm
        if constraint is not None and self.constrained:
            self._update_multipliers(constraint)
            values["constraint"] = {g.name: float(c) for g, c in zip(self.generators, constraint.detach())}

    def _train_step(self) -> tuple[dict[str, Any], str | None]:
        elbo, constraint = self.objective(*self._draw())
        loss = self._lagrangian(elbo, constraint)
        self.optimizer.zero_grad(set_to_none=True)
        values: dict[str, Any] = {"loss": float(loss.detach()), "train_elbo": float(elbo.detach())}
        problem = self._check_loss(values)
        if problem is not None:
            return values, problem
        loss.backward()
        max_norm = self.config.grad_clip if self.config.grad_clip is not None else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.flow.parameters(), max_norm))
        if not math.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            return values, self._diverged("gradient norm", grad_norm)
        self.optimizer.step()
        self._after_step(values, constraint, grad_norm)
        return values, None

    # -- evaluation ----------------------------------------------------------------------------
    @torch.no_grad()
    def measure_constraints(self) -> dict[str, float]:
        """C_k = E_π[{g_k, H}²] per generator on fresh base samples (a seeded, separate RNG)."""
        rng = torch.Generator(device=self.flow.device).manual_seed(self.config.seed + 11 + self.step)
        q0, p0 = self.flow.sample_base(self.config.constraint_batch, generator=rng)
        reference = self.flow.path == "reference"
        values = constraint_values(list(self.flow.hamiltonians), self.generators, q0, p0, reference=reference)
        return {g.name: float(c) for g, c in zip(self.generators, values)}

    @torch.no_grad()
    def evaluate(self) -> dict[str, Any]:
        """Test ELBO and test and train L_K (K = ``eval_samples``)."""
        cfg = self.config
        rng = torch.Generator(device=self.flow.device).manual_seed(cfg.seed + 7 + self.step)
        train_ll = None
        if self.train_data is not None:
            train_ll = float(self.flow.log_likelihood(self.train_data[: cfg.n_test], cfg.eval_samples, rng).mean())
        return {
            "test_elbo": float(self.flow._log_weights(self.test_data, 1, rng).mean()),
            "test_log_likelihood": float(self.flow.log_likelihood(self.test_data, cfg.eval_samples, rng).mean()),
            "train_log_likelihood": train_ll,
        }

    # -- the loop ------------------------------------------------------------------------------
    def _conclude(self, values: dict[str, Any], problem: str | None, rate: float, last: bool) -> tuple[Record, bool]:
        """Count the step, build its :class:`Record` (evaluated on evaluation steps and when
        ``last``), and say whether the run must stop (a divergence it may not continue after)."""
        cfg = self.config
        if problem is None:
            self.step += 1
            self._consecutive_divergences = 0
        record = Record(
            step=self.step,
            seconds=self.seconds,
            steps_per_s=rate,
            train_elbo=values["train_elbo"],
            loss=values["loss"],
            grad_norm=values.get("grad_norm", math.nan),
            constraint=values.get("constraint", {}),
            lam=self.lam,
            kappa=self.kappa,
        )
        if problem is not None:
            record.event, record.message = "diverged", problem
            log.warning(problem)
            self._consecutive_divergences += 1
            return record, cfg.on_divergence == "stop" or self._consecutive_divergences >= cfg.max_divergences
        if self.step % cfg.eval_every == 0 or last:
            if not record.constraint:  # unconstrained: measured on evaluation steps only
                record.constraint = self.measure_constraints()
            for key, value in self.evaluate().items():
                setattr(record, key, value)
        return record, False

    def train(self, steps: int | None = None, seconds: float | None = None) -> Iterator[Record]:
        """Train for up to ``steps`` more steps (default: until ``config.steps`` in total) or
        ``seconds`` of wall time (default ``config.seconds``), yielding one :class:`Record` a step.

        Stop consuming at any time; calling again resumes where it stopped.
        """
        end_step = self.config.steps if steps is None else self.step + check_int("steps", steps, minimum=0)
        clock = _Clock(self.step, self.seconds, self.config.seconds if seconds is None else seconds)
        while self.step < end_step:
            values, problem = self._train_step()
            self.seconds, rate = clock.tick(self.step + (problem is None))
            record, stop = self._conclude(values, problem, rate, self.step + 1 == end_step or clock.out_of_time)
            yield record
            if stop or clock.out_of_time:
                return


class _Clock:
    """Wall time of a training call: total seconds, a moving steps/s, and the time budget."""

    def __init__(self, step: int, seconds: float, budget: float | None) -> None:
        self.budget = None if budget is None else check_float("seconds", budget, positive=True)
        self.started = time.perf_counter()
        self.base_seconds = seconds
        self.now = 0.0
        self.window: list[tuple[int, float]] = [(step, 0.0)]

    def tick(self, step: int) -> tuple[float, float]:
        """Note that ``step`` steps are done: returns (total seconds, recent steps/s)."""
        self.now = time.perf_counter() - self.started
        self.window = [*self.window[-19:], (step, self.now)]
        (s0, t0), (s1, t1) = self.window[0], self.window[-1]
        return self.base_seconds + self.now, (s1 - s0) / max(t1 - t0, 1e-9)

    @property
    def out_of_time(self) -> bool:
        return self.budget is not None and self.now >= self.budget
