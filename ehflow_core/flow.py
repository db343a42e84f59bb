r"""The Hamiltonian flow generative model (paper §2; docs/maths.md, "Generative model and likelihood").

:math:`s_0 = (q_0, p_0) \sim \pi`, :math:`s_n = T_n \circ \dots \circ T_1(s_0)` with leapfrog steps
:math:`T_i`; the data are :math:`q_n`, the momentum :math:`p_n` is latent. The joint density is
:math:`\log p(q, p) = \log \pi(T^{-1}(q, p))` (no log-determinant: each step is volume preserving),
and the marginal :math:`\log p(q)` is bounded below by the ELBO and the importance-weighted
:math:`L_K` with the encoder :math:`h(p \mid q)`.
"""

from __future__ import annotations

import logging
import math
from typing import cast

import torch
from torch import Tensor, nn

from ._checks import check_choice, check_int, check_points, check_state
from .config import FlowConfig
from .distributions import BaseDensity, SoftUniform, StandardNormal
from .encoder import GaussianEncoder, LateGradScale
from .hamiltonian import Hamiltonian
from .integrators import Step, leapfrog, leapfrog_trajectory

log = logging.getLogger(__name__)

# L_K is computed over chunks of at most this many states (points × samples): a chunk's
# (states, width) activations stay small enough for the CPU's caches (one large piece is slower:
# docs/benchmarks.md), and memory stays bounded for any K.
_STATES_PER_CHUNK = 4096
GRAD_MODES = ("fast", "reference")


def resolve_device(name: str) -> torch.device:
    """``torch.device(name)``, or the CPU with a warning when CUDA is asked for but unavailable."""
    if name.startswith("cuda") and not torch.cuda.is_available():
        log.warning("device %r requested but CUDA is not available; using the CPU", name)
        return torch.device("cpu")
    return torch.device(name)


def make_base(config: FlowConfig) -> BaseDensity:
    """The base density π over the state s = (q, p) in R^{2d} that ``config`` names."""
    if config.base == "normal":
        return StandardNormal(2 * config.dim)
    return SoftUniform(2 * config.dim, config.base_sigma, config.base_beta)


class HamiltonianFlow(nn.Module):
    r"""A density on :math:`\mathbb{R}^d` defined by a leapfrog-integrated Hamiltonian flow.

    Exactly invertible and volume preserving for any ``dt``. With ``shared_hamiltonian`` (the
    paper's choice) every step uses the same :math:`H`, so the flow can be run for more steps than
    it was trained with (the "integrated flow", whose attractors are the minima of :math:`U`); the
    default is a separate :math:`H_i` per step, which learns faster.

    Args:
        config: architecture and integrator; see :class:`FlowConfig`.

    Attributes:
        grad_mode: how energy gradients are computed (not part of the model, so not in the config):
            ``"fast"`` — closed-form energy gradients, ∇U reused between leapfrog steps;
            ``"reference"`` — plain ``create_graph`` autograd and the textbook leapfrog loop, the
            correctness oracle the fast path is tested and benchmarked against. Same numbers.
    """

    grad_mode: str = "fast"

    def __init__(self, config: FlowConfig | None = None) -> None:
        super().__init__()
        if config is None:
            config = FlowConfig()
        if not isinstance(config, FlowConfig):
            raise TypeError(f"config must be a FlowConfig, got {type(config).__name__}")
        self.config = config
        n_hamiltonians = 1 if config.shared_hamiltonian else config.n_steps
        self.hamiltonians = nn.ModuleList(
            Hamiltonian(
                config.dim,
                config.hidden,
                config.invariant_blocks,
                config.kinetic,
                config.harmonic,
                config.kinetic_init_scale,
                config.potential_init_scale,
            )
            for _ in range(n_hamiltonians)
        )
        self.encoder = GaussianEncoder(config.dim, config.encoder_hidden, config.encoder_covariance)
        self.base = make_base(config)
        self.to(dtype=config.torch_dtype, device=resolve_device(config.device))

    # -- bookkeeping -------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.config.dim

    @property
    def dtype(self) -> torch.dtype:
        return self.config.torch_dtype

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    def _hamiltonian(self, step: int) -> Hamiltonian:
        check_int("step", step, minimum=0)
        if step >= len(self.hamiltonians):
            raise ValueError(
                f"step must be in 0..{len(self.hamiltonians) - 1} for this flow "
                f"({len(self.hamiltonians)} Hamiltonian(s)), got {step}"
            )
        return self.hamiltonian_list[step]

    @property
    def hamiltonian_list(self) -> list[Hamiltonian]:
        """The Hamiltonians: one when shared, else one per leapfrog step."""
        return cast(list[Hamiltonian], list(self.hamiltonians))

    def use_grad_mode(self, grad_mode: str) -> HamiltonianFlow:
        """Compute energy gradients the ``"fast"`` or the ``"reference"`` way (see the class); returns self."""
        self.grad_mode = check_choice("grad_mode", grad_mode, GRAD_MODES)
        return self

    @property
    def _reuse(self) -> bool:
        return self.grad_mode == "fast"

    def _grads(self, h: Hamiltonian) -> Step:
        return (h.grad_K, h.grad_U) if self.grad_mode == "fast" else (h.grad_K_autograd, h.grad_U_autograd)

    def _leapfrog_grads(self, n_steps: int | None = None) -> list[Step]:
        """The (grad_K, grad_U) of each of ``n_steps`` leapfrog steps (default: the flow's), in order."""
        n = self.config.n_steps if n_steps is None else n_steps
        hamiltonians = self.hamiltonian_list
        if self.config.shared_hamiltonian:
            return [self._grads(hamiltonians[0])] * n
        return [self._grads(h) for h in hamiltonians]

    # -- the flow ------------------------------------------------------------------------------
    def _forward(self, q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        return leapfrog(q, p, self.config.dt, self._leapfrog_grads(), self._reuse)

    def _inverse(self, q: Tensor, p: Tensor, grad_U_q: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return leapfrog(q, p, -self.config.dt, self._leapfrog_grads()[::-1], self._reuse, grad_U_q)

    def forward_flow(self, q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        """T(q, p): base state -> data state, q and p each (B, d)."""
        q, p = check_state(q, p, self.dim)
        return self._forward(q, p)

    def inverse_flow(self, q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        """T⁻¹(q, p): the same steps in reverse order with -dt; exact for any dt."""
        q, p = check_state(q, p, self.dim)
        return self._inverse(q, p)

    def trajectory(self, q: Tensor, p: Tensor, n_steps: int | None = None) -> tuple[Tensor, Tensor]:
        """Every state of the flow from (q, p): ``(q_path, p_path)``, each (T + 1, B, d).

        ``n_steps`` defaults to the trained number of steps; with a shared Hamiltonian any
        ``n_steps >= 1`` runs the integrated flow for longer.
        """
        q, p = check_state(q, p, self.dim)
        if n_steps is not None:
            check_int("n_steps", n_steps, minimum=1)
            if not self.config.shared_hamiltonian and n_steps != self.config.n_steps:
                raise ValueError(
                    f"n_steps must equal the trained {self.config.n_steps} for a flow with a separate "
                    f"Hamiltonian per step (shared_hamiltonian=False), got {n_steps}"
                )
        return leapfrog_trajectory(q, p, self.config.dt, self._leapfrog_grads(n_steps), self._reuse)

    # -- densities -----------------------------------------------------------------------------
    def _log_prob_joint(self, q: Tensor, p: Tensor, grad_U_q: Tensor | None = None) -> Tensor:
        q0, p0 = self._inverse(q, p, grad_U_q)
        return self.base._log_prob(torch.cat([q0, p0], dim=-1))

    def log_prob_joint(self, q: Tensor, p: Tensor) -> Tensor:
        """Exact log p(q, p) = log π(T⁻¹(q, p)) of each state: (B,)."""
        q, p = check_state(q, p, self.dim)
        return self._log_prob_joint(q, p)

    def _first_grad_U(self, q: Tensor) -> Tensor | None:
        """The fast path's first ∇U of T⁻¹, at the data points q (B, d), the same for every momentum
        drawn there (None on the reference path, which computes every gradient by autograd)."""
        return self._leapfrog_grads()[-1][1](q) if self._reuse else None

    def _log_weights(
        self, q: Tensor, n_samples: int, generator: torch.Generator | None = None, grad_U_q: Tensor | None = None
    ) -> Tensor:
        """log π(T⁻¹(q, p_k)) − log h(p_k | q) for p_k ~ h(· | q): shape (S, B); ``grad_U_q``: the
        :meth:`_first_grad_U` of q when the caller has it (computed here otherwise)."""
        return self._log_weights_from_noise(q, self.encoder.noise(q, n_samples, generator), grad_U_q=grad_U_q)

    def _log_weights_from_noise(
        self, q: Tensor, eps: Tensor, path_scale: LateGradScale | None = None, grad_U_q: Tensor | None = None
    ) -> Tensor:
        """The log weights of :meth:`_log_weights` for given standard-normal noise ``eps`` (S, B, d);
        ``path_scale`` as in :meth:`GaussianEncoder.reparameterise`, ``grad_U_q`` as in :meth:`_log_weights`."""
        p, log_h = self.encoder.reparameterise(q, eps, path_scale)  # (S, B, d), (S, B)
        n = eps.shape[0]

        def per_sample(x: Tensor) -> Tensor:  # (B, d) -> (S B, d), the same for each of the S momenta
            return x.expand(n, *x.shape).reshape(-1, self.dim)

        # The fast path's first ∇U of T⁻¹ is at the data point, the same for its S momenta: once per point.
        first = self._first_grad_U(q) if grad_U_q is None else grad_U_q
        log_joint = self._log_prob_joint(
            per_sample(q), p.reshape(-1, self.dim), None if first is None else per_sample(first)
        )
        return log_joint.view(n, -1) - log_h

    def elbo(self, q: Tensor, n_samples: int = 1, generator: torch.Generator | None = None) -> Tensor:
        """ELBO(q) = E_{p~h(p|q)}[log π(T⁻¹(q, p)) − log h(p|q)] (paper eq. 1), averaged over
        ``n_samples`` reparameterised draws; q (B, d) -> (B,). A lower bound on log p(q)."""
        q = check_points("q", q, self.dim)
        check_int("n_samples", n_samples, minimum=1)
        return self._log_weights(q, n_samples, generator).mean(0)

    def log_likelihood(self, q: Tensor, n_samples: int = 64, generator: torch.Generator | None = None) -> Tensor:
        """Importance-weighted bound L_K(q) = logsumexp_k w_k − log K with K = ``n_samples``.

        ELBO ≤ L_K ≤ L_{K+1} ≤ log p(q) in expectation, and L_K → log p(q) as K grows.
        q (B, d) -> (B,). Computed in chunks of samples, each drawing its noise in turn (the same
        draws as one piece where each chunk's count of normals is a multiple of 16, torch's block).
        """
        q = check_points("q", q, self.dim)
        check_int("n_samples", n_samples, minimum=1)
        chunk = max(1, _STATES_PER_CHUNK // q.shape[0])
        first = self._first_grad_U(q)  # once for every chunk
        log_w = torch.cat(
            [self._log_weights(q, min(chunk, n_samples - s), generator, first) for s in range(0, n_samples, chunk)]
        )
        return torch.logsumexp(log_w, dim=0) - math.log(n_samples)

    def sample_base(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Draw ``n`` base states s_0 ~ π, returned as (q_0, p_0), each (n, d)."""
        s = self.base.sample(n, dtype=self.dtype, device=self.device, generator=generator)
        return s[:, : self.dim], s[:, self.dim :]

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` points q_n of the model: s_0 ~ π, flowed forward, momentum dropped. (n, d)."""
        return self._forward(*self.sample_base(n, generator))[0]

    # -- energies ------------------------------------------------------------------------------
    def kinetic(self, p: Tensor, step: int = 0) -> Tensor:
        """K(p) of the Hamiltonian of ``step`` (0 when shared): p (B, d) -> (B,)."""
        return self._hamiltonian(step).kinetic(check_points("p", p, self.dim))

    def potential(self, q: Tensor, step: int = 0) -> Tensor:
        """U(q) of the Hamiltonian of ``step``: q (B, d) -> (B,)."""
        return self._hamiltonian(step).potential(check_points("q", q, self.dim))

    def hamiltonian(self, q: Tensor, p: Tensor, step: int = 0) -> Tensor:
        """H(q, p) = K(p) + U(q) of the Hamiltonian of ``step``: (B,)."""
        q, p = check_state(q, p, self.dim)
        return self._hamiltonian(step)(q, p)
