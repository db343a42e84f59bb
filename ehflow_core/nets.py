r"""Networks: scalar softplus energies with closed-form input gradients, and relu MLPs.

A softplus MLP :math:`E(x) = w_L^\top s(W_{L-1} \cdots s(W_1 x + b_1) \cdots) + b_L` has the
input gradient

.. math:: \nabla_x E = W_1^\top \big(\sigma(h_1) \odot W_2^\top(\sigma(h_2) \odot \cdots w_L)\big),

with :math:`h_l` the pre-activations and :math:`\sigma = s'` the logistic sigmoid. Computing it as
this chain of matmuls is ordinary differentiable torch code: the leapfrog flow needs
:math:`\nabla U` *inside* the training graph, and this avoids ``create_graph`` autograd.
This is the *fast path*; :meth:`EnergyMLP.grad_autograd` (``create_graph`` autograd of
:meth:`EnergyMLP.forward`) is the *reference path* it is tested against and benchmarked with.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def column_major_(layer: nn.Linear) -> nn.Linear:
    r"""Store ``layer``'s weight (out, in) column-major (its transpose contiguous), in place.

    An energy's first layer has few inputs (d = 2 on a plane), so the products that involve its
    weight are skinny: the closed-form gradient's last factor ``(B, width) @ (width, d)`` and, in the
    backward pass, the weight's own gradient. MKL's sgemm computes those several times faster when
    the ``(width, d)`` operand is column-major (docs/benchmarks.md, the training step); values,
    shape, names and state dicts are unchanged, and the optimiser's state takes the same strides.
    """
    layer.weight.data = layer.weight.data.t().contiguous().t()
    return layer


def autograd_grad(energy: nn.Module, x: Tensor) -> Tensor:
    r"""The reference input gradient :math:`\nabla_x E(x)` of a scalar energy by autograd, (B, d) -> (B, d).

    Keeps its graph (``create_graph``) whenever grad mode is on, so it is differentiable in θ and in
    x like the closed forms; under ``torch.no_grad`` it returns a plain tensor.
    """
    create_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        x_in = x if x.requires_grad else x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(energy(x_in).sum(), x_in, create_graph=create_graph)
    return g


class EnergyMLP(nn.Module):
    r"""Scalar energy :math:`E: \mathbb{R}^d \to \mathbb{R}`, a softplus MLP ``[d, *hidden, 1]``.

    Softplus, not relu: training through the Poisson bracket and the leapfrog flow needs
    second derivatives of :math:`E`.

    With ``quadratic=True`` the energy also carries a learnable :math:`\tfrac12 e^{a}|x|^2`
    (:math:`a = 0` at the start): :math:`E(x) = \tfrac12 e^{a}|x|^2 + \mathrm{MLP}(x)`, so
    :math:`\nabla_x E = e^{a} x + \nabla_x \mathrm{MLP}`. Both energies of a flow built this
    way start near the harmonic oscillator's, whose flow turns phase space (docs/maths.md).

    ``init_scale`` s multiplies the first layer's weights and biases at initialisation
    (:math:`W_1 \leftarrow s W_1`, :math:`b_1 \leftarrow s b_1`): each softplus feature
    :math:`s(w^\top x + b)` keeps its hinge where it was and bends over a length 1/s of
    PyTorch's default, so the untrained energy already has curvature on the data's scale
    (docs/maths.md, "Initialisation"; ``FlowConfig.potential_init_scale`` and ``kinetic_init_scale``).

    Args:
        dim: input dimension ``d``.
        hidden: widths of the hidden layers, e.g. ``(128, 128)``.
        quadratic: add the learnable quadratic term.
        init_scale: the first layer's scale s at initialisation (1: PyTorch's default).
    """

    def __init__(self, dim: int, hidden: tuple[int, ...], quadratic: bool = False, init_scale: float = 1.0) -> None:
        super().__init__()
        widths = (dim, *hidden)
        self.hidden_layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.out = nn.Linear(widths[-1], 1)
        self.log_scale = nn.Parameter(torch.zeros(())) if quadratic else None  # a: the quadratic's curvature e^a
        with torch.no_grad():
            for param in self.hidden_layers[0].parameters():
                param.mul_(init_scale)
        column_major_(self.linear_layers[0])

    @property
    def linear_layers(self) -> list[nn.Linear]:
        """The hidden layers, typed (``nn.ModuleList`` iterates as plain modules)."""
        return cast(list[nn.Linear], list(self.hidden_layers))

    def _features(self, x: Tensor) -> Tensor:
        """The network's input features of x (the identity here)."""
        return x

    def _input_grad(self, x: Tensor, feature_grad: Tensor) -> Tensor:
        """Chain rule from the gradient with respect to the features to that with respect to x."""
        return feature_grad

    def _pre_activations(self, x: Tensor) -> list[Tensor]:
        """Hidden pre-activations ``h_l``, each (B, width); the last layer's softplus is skipped
        (the gradient needs only its sigmoid)."""
        first, *rest = self.linear_layers  # (a slice of the ModuleList would build a new module per call)
        hs = [first(self._features(x))]
        for layer in rest:
            hs.append(layer(F.softplus(hs[-1])))
        return hs

    def forward(self, x: Tensor) -> Tensor:
        """Energy of each point: x with shape (B, d) -> (B,)."""
        energy = self.out(F.softplus(self._pre_activations(x)[-1])).squeeze(-1)
        if self.log_scale is not None:
            energy = energy + 0.5 * self.log_scale.exp() * (x * x).sum(-1)
        return energy

    def _feature_grad(self, hs: list[Tensor]) -> Tensor:
        """Backward chain of matmuls from the output to the first layer's input: (B, d_in)."""
        g = self.out.weight  # (1, width), broadcast over the batch
        for layer, h in zip(reversed(self.linear_layers), reversed(hs)):
            g = (g * torch.sigmoid(h)) @ layer.weight  # (B, width_in)
        return g

    def grad(self, x: Tensor) -> Tensor:
        r"""Closed-form :math:`\nabla_x E(x)`: x with shape (B, d) -> (B, d), differentiable in θ."""
        g = self._input_grad(x, self._feature_grad(self._pre_activations(x)))
        return g if self.log_scale is None else g + self.log_scale.exp() * x

    def grad_autograd(self, x: Tensor) -> Tensor:
        r"""Reference :math:`\nabla_x E(x)` by autograd, (B, d) -> (B, d) (see :func:`autograd_grad`)."""
        return autograd_grad(self, x)

    def zero_(self) -> EnergyMLP:
        """Make the energy identically zero (its output layer zeroed), so its gradient vanishes."""
        if self.log_scale is not None:
            raise ValueError("zero_() needs an energy without the quadratic term (quadratic=False)")
        with torch.no_grad():
            self.out.weight.zero_()
            self.out.bias.zero_()
        return self


class InvariantEnergyMLP(EnergyMLP):
    r"""Energy that is exactly invariant under rotations within blocks of coordinates.

    :math:`E(x) = \mathrm{MLP}(r_1^2, \dots, r_m^2)` with :math:`r_b^2 = \sum_{i \in b} x_i^2`.
    One block holding every coordinate gives an :math:`SO(d)`-invariant (radial) energy; blocks
    ``((0, 1), (2, 3))`` give :math:`SO(2) \times SO(2)`. Squared norms keep :math:`E` smooth at
    the origin; the gradient is :math:`\nabla_x E = 2 x \odot (A \nabla_r E)` with :math:`A` the
    (d, m) block-membership matrix.
    """

    def __init__(
        self,
        dim: int,
        hidden: tuple[int, ...],
        blocks: tuple[tuple[int, ...], ...],
        quadratic: bool = False,
        init_scale: float = 1.0,
    ) -> None:
        super().__init__(len(blocks), hidden, quadratic, init_scale)
        membership = torch.zeros(dim, len(blocks))
        for b, block in enumerate(blocks):
            membership[list(block), b] = 1.0
        self.membership: Tensor
        self.register_buffer("membership", membership)  # (d, m)

    def _features(self, x: Tensor) -> Tensor:
        return (x * x) @ self.membership  # (B, m)

    def _input_grad(self, x: Tensor, feature_grad: Tensor) -> Tensor:
        return 2.0 * x * (feature_grad @ self.membership.T)  # (B, m) -> (B, d)


class ConvexKinetic(nn.Module):
    r"""A convex kinetic energy that starts as the harmonic oscillator's :math:`\tfrac12|p|^2`.

    .. math:: K(p) = \tfrac12 e^{a} |p|^2 + \sum_j c_j\, s(w_j^\top p + b_j), \qquad c_j = s(v_j) > 0,

    with :math:`s` the softplus. Each ridge is convex (the softplus of an affine map, with a
    positive weight) and the quadratic is strictly convex, so :math:`K` is strictly convex
    (:math:`\nabla^2 K \succeq e^{a} I`) for every value of the parameters: the learned flow cannot
    take the time-reversed (concave-:math:`K`) solution. It starts near :math:`\tfrac12|p|^2`
    (:math:`a = 0`, :math:`v_j = -4`, so :math:`c_j \approx 0.018`). Gradient in closed form:
    :math:`\nabla K = e^{a} p + W^\top (c \odot \sigma(W p + b))`.

    Args:
        dim: dimension ``d`` of p.
        width: number of softplus ridges (the hidden layer's width).
    """

    def __init__(self, dim: int, width: int) -> None:
        super().__init__()
        self.ridges = column_major_(nn.Linear(dim, width))
        self.log_weights = nn.Parameter(torch.full((width,), -4.0))  # v: c = softplus(v)
        self.log_scale = nn.Parameter(torch.zeros(()))  # a: the quadratic's curvature e^a

    def forward(self, p: Tensor) -> Tensor:
        """K(p): (B, d) -> (B,)."""
        c = F.softplus(self.log_weights)
        return 0.5 * self.log_scale.exp() * (p * p).sum(-1) + F.softplus(self.ridges(p)) @ c

    def grad(self, p: Tensor) -> Tensor:
        r"""Closed-form :math:`\nabla_p K`: (B, d) -> (B, d), differentiable in θ."""
        c = F.softplus(self.log_weights)
        return self.log_scale.exp() * p + (torch.sigmoid(self.ridges(p)) * c) @ self.ridges.weight

    def grad_autograd(self, p: Tensor) -> Tensor:
        r"""Reference :math:`\nabla_p K` by autograd (see :func:`autograd_grad`)."""
        return autograd_grad(self, p)


def relu_mlp(sizes: tuple[int, ...]) -> nn.Sequential:
    """A relu MLP with layer sizes ``sizes`` (no activation after the last layer)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)
