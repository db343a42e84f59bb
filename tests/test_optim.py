"""Adam on torch's fused kernel without torch.optim: the same steps and state dicts as torch's
fused Adam, and no import of torch's compiler."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ehflow_core.optim import Adam

ROOT = Path(__file__).resolve().parents[1]


def _weights(dtype: torch.dtype) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(*shape, generator=g, dtype=dtype).requires_grad_() for shape in ((5, 3), (3,), (2, 2))]


def _loss(weights: list[torch.Tensor], step: int) -> torch.Tensor:
    """A loss of the first two weights only (the third never has a gradient), changing each step."""
    w, b = weights[0], weights[1]
    x = torch.linspace(-1, 1, 15, dtype=w.dtype).reshape(5, 3) * (1 + step)
    return ((x * w).sum(0) + b).pow(2).sum() + w.abs().sum()


def _train(optimiser, weights: list[torch.Tensor], steps: range) -> None:
    for step in steps:
        optimiser.param_groups[0]["lr"] = 1e-2 / (1 + step)  # the rate changes between steps, as the schedule does
        optimiser.zero_grad()
        _loss(weights, step).backward()
        optimiser.step()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_steps_are_torchs_fused_adam_bit_for_bit(dtype):
    ours, theirs = _weights(dtype), _weights(dtype)
    mine, reference = Adam(ours, lr=1e-2), torch.optim.Adam(theirs, lr=1e-2, fused=True)
    _train(mine, ours, range(7))
    _train(reference, theirs, range(7))
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
    assert torch.equal(ours[2], _weights(dtype)[2]) and ours[2] not in mine.state  # no gradient: untouched
    for i, p in enumerate(theirs[:2]):
        for key, value in reference.state[p].items():
            assert torch.equal(mine.state[ours[i]][key], value), key


def test_loaded_moments_take_their_weights_layout_and_a_wrong_shape_is_named():
    """Moments saved row-major (a checkpoint from before the column-major first layers, or an
    ensemble member's slice) and loaded for a column-major weight continue as the uninterrupted
    run: the fused kernel walks a weight and its moments as flat memory, so they must share strides."""
    straight = _weights(torch.float64)
    _train(Adam(straight, lr=1e-2), straight, range(6))
    head = _weights(torch.float64)
    first = Adam(head, lr=1e-2)
    _train(first, head, range(3))
    tail = [w.detach().clone() for w in head]
    tail[0] = tail[0].t().contiguous().t()  # (5, 3) stored column-major
    tail = [w.requires_grad_() for w in tail]
    second = Adam(tail, lr=1e-2)
    second.load_state_dict(first.state_dict())
    assert second.state[tail[0]]["exp_avg"].stride() == tail[0].stride() == (1, 5)
    _train(second, tail, range(3, 6))
    assert all(torch.allclose(a, b, rtol=1e-12, atol=0) for a, b in zip(tail, straight))
    state = first.state_dict()
    state["state"][0]["exp_avg"] = state["state"][0]["exp_avg"][:, :1]
    with pytest.raises(ValueError, match=r"exp_avg of weight 0 must have the weight's shape \(5, 3\), got \(5, 1\)"):
        Adam(_weights(torch.float64), lr=1e-2).load_state_dict(state)


def test_state_dicts_load_in_either_direction_and_training_continues_identically():
    """A checkpoint written by torch.optim.Adam (before this class) resumes here, and one written
    here resumes in torch.optim.Adam: both continue exactly as the uninterrupted run."""
    straight = _weights(torch.float64)
    _train(torch.optim.Adam(straight, lr=1e-2, fused=True), straight, range(6))

    head = _weights(torch.float64)
    theirs = torch.optim.Adam(head, lr=1e-2, fused=True)
    _train(theirs, head, range(3))
    theirs.param_groups[0]["base_lr"] = 5e-3  # a key of our own in the group travels too
    resumed = [w.detach().clone().requires_grad_() for w in head]
    mine = Adam(resumed, lr=1.0)
    mine.load_state_dict(theirs.state_dict())
    assert mine.param_groups[0]["base_lr"] == 5e-3 and mine.param_groups[0]["params"] == resumed
    _train(mine, resumed, range(3, 6))
    assert all(torch.equal(a, b) for a, b in zip(resumed, straight))

    head = _weights(torch.float64)
    mine = Adam(head, lr=1e-2)
    _train(mine, head, range(3))
    saved = mine.state_dict()
    back = [w.detach().clone().requires_grad_() for w in head]
    theirs = torch.optim.Adam(back, lr=1.0, fused=True)
    theirs.load_state_dict(saved)
    _train(theirs, back, range(3, 6))
    assert all(torch.equal(a, b) for a, b in zip(back, straight))
    # Loading copies: training on leaves the state dict it came from as it was.
    again = Adam([w.detach().clone().requires_grad_() for w in head], lr=1.0)
    before = {i: {k: v.clone() for k, v in entry.items()} for i, entry in saved["state"].items()}
    again.load_state_dict(saved)
    _train(again, again.param_groups[0]["params"], range(3, 4))
    assert all(torch.equal(saved["state"][i][k], v) for i, entry in before.items() for k, v in entry.items())


def test_bad_weights_and_state_dicts_are_rejected_with_what_was_expected():
    with pytest.raises(ValueError, match="floating-point weights on the CPU or CUDA"):
        Adam([torch.zeros(3, dtype=torch.int64)], lr=1e-3)
    mine = Adam(_weights(torch.float32), lr=1e-3)
    other = Adam(_weights(torch.float32)[:2], lr=1e-3)
    with pytest.raises(ValueError, match=r"one group of 3 weights; got groups of \[2\]"):
        mine.load_state_dict(other.state_dict())


@pytest.mark.slow
def test_training_in_a_fresh_process_never_imports_torchs_compiler():
    """The reason for the class: torch.optim's first call imports torch._dynamo (seconds), which
    every command-line run, training process and sweep segment paid before its first step."""
    script = (
        "import sys\n"
        "from ehflow_core import TrainConfig, Trainer\n"
        "from ehflow_core.peer import PeerTrainer\n"
        "from ehflow_core.targets import make_target\n"
        "trainer = Trainer(TrainConfig(max_steps=2, batch=8, n_test=16, eval_every=1), make_target('ring'))\n"
        "list(trainer.train())\n"
        "PeerTrainer('nsf', make_target('ring'), None, seed=0, batch=8).step()\n"
        "print(sorted(m for m in sys.modules if m.startswith('torch._dynamo')))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
