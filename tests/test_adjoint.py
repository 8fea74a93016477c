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
    # ours checkpoints as few steps as the memory allowance (3x the adjoint's peak) permits
    assert result["ours_fraction"] == 1.0 or result["ours_peak_bytes"] <= 3.0 * result["adjoint_peak_bytes"]

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


@pytest.mark.parametrize("budget, expected", [(50.0, 1.0), (100.0, 1.0), (130.0, 0.7), (1e9, 0.0)])
def test_fraction_within_takes_the_fewest_checkpointed_steps_that_fit(budget: float, expected: float) -> None:
    from bench.harness.adjoint import fraction_within

    # peak 100 bytes with every step checkpointed, +10 per unchecked step of 10, +5 unmodelled when f < 0.5
    peak = lambda f: 100 + round((1 - f) * 10) * 10 + (5 if f < 0.5 else 0)  # noqa: E731
    fraction = fraction_within(peak, budget, 10)
    assert fraction == pytest.approx(expected)
    assert fraction == 1.0 or peak(fraction) <= budget
    assert fraction_within(lambda f: 120 + (1 - f) * 50, 1000, 10) == pytest.approx(0.0)
    # the linear guess overshoots when the peak grows faster than the probe showed: stepped back until it fits
    steep = lambda f: 100 + 10 * round((1 - f) * 10) ** 2  # noqa: E731
    fraction = fraction_within(steep, 200, 10)
    assert steep(fraction) <= 200 and fraction == pytest.approx(0.7)
