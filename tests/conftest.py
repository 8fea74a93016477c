"""Shared fixtures: tiny random-weight models so most tests run in well under a second."""

from __future__ import annotations

import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one torch thread per xdist worker (and per CLI process a test starts): workers x threads must not
    # exceed the cores, or every worker slows down many times over
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
from torch import nn

from bench.core.defense import DEFENSES, DefendedClassifier
from bench.core.memory import MemoryPlan
from bench.core.noise import NoiseSource
from bench.core.settings import parse_setting
from bench.core.target import StochasticTarget
from bench.core.vote import with_vote


class TinyClassifier(nn.Module):
    """A random conv classifier for (B, C, 8, 8) inputs in [0, 1]."""

    def __init__(self, channels: int = 1, classes: int = 10) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.net = nn.Sequential(nn.Conv2d(channels, 8, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(8 * 64, classes))

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        return self.net[:3](x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def tiny_model(defense_name: str, dtype: torch.dtype = torch.float32, **config: object) -> DefendedClassifier:
    cls = DEFENSES.get(defense_name)
    defense = with_vote(cls.for_testing(cls.config_cls(**config) if config else None))
    return DefendedClassifier(defense, TinyClassifier()).to(dtype).eval().requires_grad_(False)


def make_target(model: DefendedClassifier, setting: str, sample_ids: list[int], seed: int = 0, checkpoint: bool = False, chunk: int = 10_000) -> StochasticTarget:
    plan = MemoryPlan(checkpoint, chunk, 1)
    return StochasticTarget(model, parse_setting(setting), NoiseSource(seed), sample_ids, plan, MemoryPlan(False, chunk, 1))


@pytest.fixture
def images() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return 0.2 + 0.6 * torch.rand(4, 1, 8, 8, generator=generator)


def assert_matches_finite_differences(loss, x: torch.Tensor, name: str, tolerance: float, h: float = 1e-6,
                                      directions: int = 3) -> None:
    """Central finite differences of the scalar ``loss`` along random directions equal autograd's
    directional derivative at ``x`` to relative ``tolerance``."""
    x_req = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(x_req), x_req)
    generator = torch.Generator().manual_seed(5)
    for _ in range(directions):
        v = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        with torch.no_grad():
            numeric = (loss(x + h * v) - loss(x - h * v)) / (2 * h)
        analytic = (grad * v).sum()
        rel = abs(float(numeric - analytic)) / max(abs(float(analytic)), 1e-12)
        assert rel < tolerance, f"{name}: finite differences {float(numeric)} vs autograd {float(analytic)} (rel {rel:.2e})"


@pytest.fixture(scope="session")
def exported_records(tmp_path_factory) -> tuple:
    """Two real toy runs (dp_ddim vs pgd_eot, white and dw_both; 6 images, 3 draws) exported as
    records: ``(results root, [white record, dw_both record])``. The store is ``root/runs.db``."""
    from sqlalchemy.orm import Session

    from bench.harness.runner import RunRequest, execute_run, start_run
    from bench.harness.store import Run, open_store
    from bench.publish.records import export_run

    root = tmp_path_factory.mktemp("lb")
    engine = open_store(f"sqlite:///{root / 'runs.db'}")
    paths = []
    for setting in ("white", "dw_both"):
        request = RunRequest(defense="dp_ddim", attack="pgd_eot", setting=setting, n_samples=6, eval_draws=3,
                             defense_options={"nfe": 5}, attack_options={"steps": 2, "eot": 2})
        run_id, parts = start_run(engine, request)
        execute_run(engine, run_id, parts=parts)
        with Session(engine) as session:
            paths.append(export_run(session.get(Run, run_id), root / "results"))
    return root / "results", paths
