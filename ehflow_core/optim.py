"""Adam on torch's fused kernel, without ``torch.optim``.

The first call of any ``torch.optim`` optimiser in a process imports ``torch._dynamo`` (its
methods are wrapped to keep the compiler out): seconds before the first step of every
command-line run, dashboard training process, Ray actor and sweep segment, for a compiler this
code never uses (docs/benchmarks.md, "A process's start"). :class:`Adam` calls the same kernel as
``torch.optim.Adam(fused=True)``, ``torch._fused_adam_``, the same way, so its steps are
bitwise the same (a test holds them equal); its ``state_dict`` has ``torch.optim.Adam``'s
layout, so checkpoints load in either.

Adam (Kingma & Ba), for each weight θ with gradient g at step t, with β₁, β₂, ε and rate η::

    m ← β₁ m + (1 − β₁) g,    v ← β₂ v + (1 − β₂) g²,
    θ ← θ − η (m / (1 − β₁ᵗ)) / (√(v / (1 − β₂ᵗ)) + ε)
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

# The keys of a torch.optim.Adam parameter group (its defaults for fused=True), so that a state dict
# written by either class loads in the other.
_GROUP_DEFAULTS: dict[str, Any] = {
    "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False, "maximize": False,
    "foreach": None, "capturable": False, "differentiable": False, "fused": True, "decoupled_weight_decay": False,
}  # fmt: skip


def fused_adam_supported(params: Iterable[Tensor]) -> bool:
    """Whether torch has the fused kernel for every tensor of ``params`` (floating point, on the
    CPU or CUDA)."""
    return all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)


class Adam:
    """Adam over ``params`` (one parameter group), stepped by ``torch._fused_adam_``.

    The interface is the part of ``torch.optim.Adam`` this library uses: ``param_groups`` (a
    group's ``"lr"`` may be changed between steps), ``state`` (weight -> its ``step``,
    ``exp_avg``, ``exp_avg_sq``), :meth:`step`, :meth:`zero_grad`, :meth:`state_dict` and
    :meth:`load_state_dict`. A weight without a gradient is skipped, its moments untouched.
    """

    def __init__(self, params: Iterable[Tensor], lr: float) -> None:
        params = list(params)
        if not fused_adam_supported(params):
            raise ValueError("Adam needs floating-point weights on the CPU or CUDA (torch's fused kernel)")
        self.param_groups: list[dict[str, Any]] = [{"params": params, "lr": lr, **_GROUP_DEFAULTS}]
        self.state: dict[Tensor, dict[str, Tensor]] = {}

    def zero_grad(self) -> None:
        """Drop every gradient (``torch.optim``'s default, ``set_to_none=True``)."""
        for p in self.param_groups[0]["params"]:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """One Adam step of every weight that has a gradient (moments made at zero on its first)."""
        group = self.param_groups[0]
        by_kind: dict[tuple[torch.device, torch.dtype], list[list[Tensor]]] = {}
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state.get(p)
            if state is None:
                state = self.state[p] = {
                    "step": torch.zeros((), dtype=torch.float32, device=p.device),
                    "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                    "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
                }
            lists = by_kind.setdefault((p.device, p.dtype), [[], [], [], [], []])
            for column, t in zip(lists, (p, p.grad, state["exp_avg"], state["exp_avg_sq"], state["step"])):
                column.append(t)
        beta1, beta2 = group["betas"]
        for params, grads, exp_avgs, exp_avg_sqs, steps in by_kind.values():
            torch._foreach_add_(steps, 1)
            torch._fused_adam_(
                params, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, lr=group["lr"], beta1=beta1,
                beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"], maximize=False,
                grad_scale=None, found_inf=None,
            )  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        """``{"state": {index: {"step", "exp_avg", "exp_avg_sq"}}, "param_groups": [group with
        "params" as indices]}``, the layout of ``torch.optim.Adam.state_dict`` (its tensors, not copies)."""
        group = self.param_groups[0]
        params = group["params"]
        return {
            "state": {i: dict(self.state[p]) for i, p in enumerate(params) if p in self.state},
            "param_groups": [{**{k: v for k, v in group.items() if k != "params"}, "params": list(range(len(params)))}],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict of this class or of ``torch.optim.Adam`` over the same weights in the
        same order (copied: the loaded optimiser shares no tensor with ``state_dict``).

        The moments take their weight's strides, whatever the saved ones: the fused kernel walks a
        weight and its moments as flat memory, so a column-major weight (``nets.column_major_``)
        with row-major moments (a checkpoint from before, or an ensemble member's slice) would
        pair each weight with another's moments."""
        groups = state_dict["param_groups"]
        params = self.param_groups[0]["params"]
        if len(groups) != 1 or len(groups[0]["params"]) != len(params):
            sizes = [len(g["params"]) for g in groups]
            raise ValueError(f"state_dict must hold one group of {len(params)} weights; got groups of {sizes}")
        index = {saved: p for saved, p in zip(groups[0]["params"], params)}
        self.state = {}
        for saved, entry in state_dict["state"].items():
            p = index[saved]
            for k, v in entry.items():
                if k != "step" and v.shape != p.shape:
                    raise ValueError(
                        f"state_dict's {k} of weight {saved} must have the weight's shape {tuple(p.shape)}, "
                        f"got {tuple(v.shape)}"
                    )
            step = entry["step"].to(dtype=torch.float32, device=p.device, copy=True)
            self.state[p] = {k: step if k == "step" else torch.empty_like(p).copy_(v) for k, v in entry.items()}
        kept = {k: copy.deepcopy(v) for k, v in groups[0].items() if k != "params"}
        self.param_groups = [{**self.param_groups[0], **kept, "params": params}]
