r"""ehflow_core: equivariant Hamiltonian flows (Rezende, Racanière, Higgins, Toth, 2019).

A density on :math:`\mathbb{R}^d` is the image of a simple base density :math:`\pi` on the phase
space :math:`s = (q, p)` under a leapfrog-integrated Hamiltonian flow with
:math:`H(q, p) = K(p) + U(q)`; the momentum is latent and inferred by a Gaussian encoder. Symmetry
generators :math:`g` enter through the Poisson bracket: :math:`\{g, H\} = 0` makes the flow
equivariant and, with an invariant base, the learned density invariant.

Glossary (names used throughout, as in docs/maths.md):
    q, p        position (the data) and latent momentum, each (B, d)
    H, K, U     Hamiltonian, kinetic energy K(p), potential energy U(q)
    dt          leapfrog step size; ``n_steps`` leapfrog steps make one flow
    step        one training (optimiser) step; ``max_steps`` of them make a run
    g           a symmetry generator g(q, p); ``{f, g}`` the Poisson bracket
    kappa (κ)   constraint precision: the target value of E_π[{g, H}²]
    lam (λ)     Lagrange multiplier of a constraint
    Shapes      B batch, T time steps, d degrees of freedom, G generators, S samples,
                M ensemble members
"""

from .checkpoint import load_checkpoint, load_trainer, save_checkpoint
from .config import FlowConfig
from .distributions import BaseDensity, SoftUniform, StandardNormal
from .encoder import GaussianEncoder
from .ensemble import EnsembleTrainer, kappa_sweep, train_ensemble
from .evaluation import (
    Grid,
    InvarianceReport,
    embed_plane,
    equivariance_error,
    evaluate_in_batches,
    invariance_error,
    make_grid,
)
from .flow import HamiltonianFlow
from .hamiltonian import Hamiltonian
from .integrators import leapfrog, leapfrog_step, leapfrog_trajectory
from .symmetries import (
    Closure,
    Generator,
    RotationGenerator,
    TranslationGenerator,
    bracket_with_hamiltonian,
    constraint_values,
    function_generator,
    lemma1_check,
    poisson_bracket,
    rotation_generator,
    so_generators,
    structure_constants,
    translation_generator,
)
from .targets import TARGETS, Target, load_points, make_target
from .training import Record, Run, TrainConfig, Trainer

__all__ = [
    "BaseDensity",
    "Closure",
    "EnsembleTrainer",
    "FlowConfig",
    "GaussianEncoder",
    "Generator",
    "Grid",
    "Hamiltonian",
    "HamiltonianFlow",
    "InvarianceReport",
    "Record",
    "RotationGenerator",
    "Run",
    "SoftUniform",
    "StandardNormal",
    "TARGETS",
    "Target",
    "TrainConfig",
    "Trainer",
    "TranslationGenerator",
    "bracket_with_hamiltonian",
    "constraint_values",
    "embed_plane",
    "equivariance_error",
    "evaluate_in_batches",
    "function_generator",
    "invariance_error",
    "kappa_sweep",
    "leapfrog",
    "leapfrog_trajectory",
    "leapfrog_step",
    "lemma1_check",
    "load_checkpoint",
    "load_points",
    "load_trainer",
    "make_target",
    "make_grid",
    "poisson_bracket",
    "rotation_generator",
    "save_checkpoint",
    "so_generators",
    "structure_constants",
    "train_ensemble",
    "translation_generator",
]

__version__ = "0.1.0"
