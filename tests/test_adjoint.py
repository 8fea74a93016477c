"""The adjoint anchor at tiny size: DiffPure's torchsde adjoint and our exact gradient on the same
network, input, forward noise and Brownian path (skipped with a message when torchsde is absent)."""

from __future__ import annotations

import pytest
import torch

from bench.core.defense import DEFENSES
from tests.conftest import TinyClassifier

torchsde = pytest.importorskip("torchsde", reason="torchsde not installed: pip install -e '.[perf]'")


def test_same_brownian_path_same_forward_and_our_gradient_is_exact() -> None:
    from bench.harness.adjoint import compare_gradients, shared_noise

    diffpure = DEFENSES.get("diffpure")
    defense = diffpure.for_testing(diffpure.config_cls(t_star=0.02, dt=0.004)).double()
    classifier = TinyClassifier().double().eval().requires_grad_(False)
    torch.manual_seed(0)
    x, y = torch.rand(2, 1, 8, 8, dtype=torch.float64), torch.tensor([1, 7])
    result = compare_gradients(defense, classifier, x, y, seed=3)
    assert result["steps"] == 5
    assert result["output_max_abs_diff"] < 1e-10  # the same discretised solver on the same path
    assert -1.0 <= result["cosine"] <= 1.0 and 0.0 <= result["sign_agreement"] <= 1.0
    assert result["ours_seconds"] > 0 and result["adjoint_peak_bytes"] > 0

    # ours is the exact gradient of that solver: central finite differences along random directions
    noise, _, _ = shared_noise(defense, 2, (1, 8, 8), 3, torch.float64)
    loss = lambda inp: torch.nn.functional.cross_entropy(  # noqa: E731
        classifier(defense.purify(inp, noise)), y, reduction="sum")
    inp = x.clone().requires_grad_(True)
    grad = torch.autograd.grad(loss(inp), inp)[0]
    for k in range(3):
        direction = torch.randn(x.shape, generator=torch.Generator().manual_seed(k), dtype=torch.float64)
        h = 1e-5
        numeric = (loss(x + h * direction) - loss(x - h * direction)) / (2 * h)
        assert float((grad * direction).sum()) == pytest.approx(float(numeric), rel=1e-6, abs=1e-9)
