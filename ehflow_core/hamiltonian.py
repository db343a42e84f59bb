r"""The separable Hamiltonian :math:`H(q, p) = K(p) + U(q)` with softplus-MLP energies."""

from __future__ import annotations

from torch import Tensor, nn

from .nets import ConvexKinetic, EnergyMLP, InvariantEnergyMLP


class Hamiltonian(nn.Module):
    r""":math:`H(q, p) = K(p) + U(q)`, both softplus MLPs ``[d, *hidden, 1]``.

    With ``kinetic="convex"``, K is a :class:`~ehflow_core.nets.ConvexKinetic` (strictly convex,
    ½|p|² at initialisation) of width ``hidden[0]``. With ``invariant_blocks`` both energies are
    functions of the squared norms of those blocks of coordinates, so :math:`\{L_{ij}, H\} = 0`
    exactly for every rotation inside a block. With ``harmonic`` each MLP energy also carries a
    learnable ½e^a|x|² (a convex K has its own), so the untrained H is close to the harmonic
    oscillator's ½|p|² + ½|q|². ``kinetic_init_scale`` and ``potential_init_scale`` scale the
    first layer of K's and U's MLP at initialisation (:class:`~ehflow_core.nets.EnergyMLP`; a
    convex K has none).
    """

    def __init__(
        self,
        dim: int,
        hidden: tuple[int, ...],
        invariant_blocks: tuple[tuple[int, ...], ...] | None = None,
        kinetic: str = "mlp",
        harmonic: bool = False,
        kinetic_init_scale: float = 1.0,
        potential_init_scale: float = 1.0,
    ) -> None:
        super().__init__()
        k_scale, u_scale = kinetic_init_scale, potential_init_scale
        if invariant_blocks is None:
            self.K: EnergyMLP | ConvexKinetic = (
                ConvexKinetic(dim, hidden[0]) if kinetic == "convex" else EnergyMLP(dim, hidden, harmonic, k_scale)
            )
            self.U: EnergyMLP = EnergyMLP(dim, hidden, harmonic, u_scale)
        else:
            self.K = InvariantEnergyMLP(dim, hidden, invariant_blocks, harmonic, k_scale)
            self.U = InvariantEnergyMLP(dim, hidden, invariant_blocks, harmonic, u_scale)

    def kinetic(self, p: Tensor) -> Tensor:
        """K(p): p with shape (B, d) -> (B,)."""
        return self.K(p)

    def potential(self, q: Tensor) -> Tensor:
        """U(q): q with shape (B, d) -> (B,)."""
        return self.U(q)

    def forward(self, q: Tensor, p: Tensor) -> Tensor:
        """H(q, p) = K(p) + U(q): q, p with shape (B, d) -> (B,)."""
        return self.K(p) + self.U(q)

    def grad_K(self, p: Tensor) -> Tensor:
        """∇K(p) = ∂H/∂p, shape (B, d)."""
        return self.K.grad(p)

    def grad_U(self, q: Tensor) -> Tensor:
        """∇U(q) = ∂H/∂q, shape (B, d)."""
        return self.U.grad(q)

    def grad_K_autograd(self, p: Tensor) -> Tensor:
        """∇K(p) by autograd (the reference path), shape (B, d)."""
        return self.K.grad_autograd(p)

    def grad_U_autograd(self, q: Tensor) -> Tensor:
        """∇U(q) by autograd (the reference path), shape (B, d)."""
        return self.U.grad_autograd(q)
