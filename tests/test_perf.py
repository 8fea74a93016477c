"""`bench perf` wiring at tiny cost: the three denoiser families build and run, and the partial
checkpointing report's plans stay within their budgets (timings themselves are never asserted)."""

from __future__ import annotations

import pytest
import torch

from bench.harness.perf import MODELS, _perf_model, measure_budget_ratios


@pytest.mark.parametrize("name", MODELS)
def test_perf_models_cover_the_three_families(name: str) -> None:
    model = _perf_model(name)
    x = torch.rand(1, *model.shape) * 2 - 1
    with torch.no_grad():
        assert model.call(x).shape == x.shape
    defense = model.make_defense(10)
    assert defense.network_calls >= 10 and defense.nfe >= 5


def test_budget_report_plans_fit_their_budgets() -> None:
    rows = measure_budget_ratios("toy", batch=2, eot=2, repeats=1, shares=(1.0, 0.3), sweep=False)
    assert [r["share"] for r in rows] == [1.0, 0.3]
    assert rows[0]["fraction"] <= rows[1]["fraction"] and rows[1]["fraction"] > 0.0
    for r in rows:
        assert 1.0 <= r["bound"] <= 1.0 + r["fraction"]
        assert r["peak_mib"] <= r["budget_mib"] * 1.0001, r
