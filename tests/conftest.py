"""Shared fixtures: small float64 flows with fixed seeds (math checks run in float64)."""

from __future__ import annotations

import time

import pytest
import torch

from ehflow_core import FlowConfig, HamiltonianFlow
from ehflow_core.nets import EnergyMLP

# Tolerances per dtype for identities that hold exactly in exact arithmetic.
TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


def make_flow(seed: int = 0, **changes) -> HamiltonianFlow:
    """A small flow (width 32) in float64 unless told otherwise, with weights scaled up so the
    flow moves points far from the identity: PyTorch's initialisation (both init scales 1) with
    each MLP's output layer ×5, which the tests' tolerances were set for."""
    torch.manual_seed(seed)
    changes.setdefault("potential_init_scale", 1.0)
    changes.setdefault("hidden", (32, 32))
    changes.setdefault("encoder_hidden", (32, 32))
    changes.setdefault("dtype", "float64")
    flow = HamiltonianFlow(FlowConfig(**changes))
    with torch.no_grad():
        for h in flow.hamiltonians:
            for energy in (h.K, h.U):
                if isinstance(energy, EnergyMLP):  # a convex K is left as initialised
                    energy.out.weight.mul_(5.0)
    return flow


@pytest.fixture
def flow() -> HamiltonianFlow:
    return make_flow()


def encoder_factor(flow: HamiltonianFlow, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The encoder's mean (B, d) and its whole Cholesky factor L (B, d, d), built from
    ``GaussianEncoder.factor``'s diagonal and the entries below it (none for a diagonal covariance)."""
    mean, diagonal, below = flow.encoder.factor(q)
    return mean, torch.diag_embed(diagonal) + (0.0 if below is None else below)


def randn(*shape: int, seed: int = 1, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def wait_until(predicate, timeout: float = 60.0) -> bool:
    """Poll ``predicate`` every 50 ms until it holds (True) or ``timeout`` seconds pass (False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def as_server_pool(pool, monkeypatch):
    """``pool`` as the dashboard server's pool for one test, with no run left from another test."""
    from dashboard import pool as pool_module

    monkeypatch.setattr(pool_module, "_pool", pool)
    assert wait_until(lambda: pool.stats()["runs"] == 0, timeout=30)
    return pool


_cluster = None  # the session's Ray cluster (ray.cluster_utils.Cluster), started by its first user


def start_local_ray():
    """Ray, connected to the session's cluster on this machine: two nodes of one CPU each (~6 s to
    start, once), so that every Ray test, the two-node one included, shares one cluster and its
    warm workers. This process is its driver."""
    import ray  # in requirements-dev.txt: a missing Ray fails, it does not skip
    from ray.cluster_utils import Cluster

    global _cluster
    if _cluster is None:
        _cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
        _cluster.add_node(num_cpus=1)
        _cluster.wait_for_nodes()
    if not ray.is_initialized():
        ray.init(address=_cluster.address, log_to_driver=False, logging_level="ERROR")
    return ray


@pytest.fixture(scope="session")
def ray_session():
    """Shuts the session's Ray cluster down at the end (see :func:`start_local_ray`)."""
    yield
    import ray

    ray.shutdown()
    if _cluster is not None:
        _cluster.shutdown()


@pytest.fixture
def local_ray(ray_session):
    return start_local_ray()
