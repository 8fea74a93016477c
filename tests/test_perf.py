"""`bench perf` wiring at tiny cost: the three denoiser families build and run, and the partial
checkpointing report's plans stay within their budgets (timings themselves are never asserted)."""

from __future__ import annotations

import pytest
import torch

from bench.harness.perf import MODELS, _perf_model, measure_budget_ratios, measure_step_ratio


@pytest.mark.parametrize("name", MODELS)
def test_perf_models_cover_the_three_families(name: str) -> None:
    model = _perf_model(name)
    x = torch.rand(1, *model.shape) * 2 - 1
    with torch.no_grad():
        assert model.call(x).shape == x.shape
    defense = model.make_defense(10)
    assert defense.network_calls >= 10 and defense.nfe >= 5


def test_step_ratio_counts_the_recomputed_calls_for_its_bound() -> None:
    """(a)'s checkpointed bound comes from the network calls actually recomputed: every reverse
    step's call but the last step's (which backward reaches first) is run twice."""
    r = measure_step_ratio("toy", batch=2, eot=1, repeats=1)
    calls = _perf_model("toy").network_calls(10)
    assert r["recomputed_calls"] == calls - 1
    assert 1.0 < r["bound_checkpoint"] < 1.0 + r["recomputed_calls"] * r["unet_fwd_s"] / (calls * r["unet_fwd_bwd_s"]) + 1e-9


def test_budget_report_plans_fit_their_budgets() -> None:
    rows = measure_budget_ratios("toy", batch=2, eot=2, repeats=1, shares=(1.0, 0.3), sweep=False)
    assert [r["share"] for r in rows] == [1.0, 0.3]
    assert rows[0]["fraction"] <= rows[1]["fraction"]
    assert rows[1]["fraction"] > 0.0 or rows[1]["chunk"] < 4  # memory saved by checkpointing or by chunks
    for r in rows:
        assert 1.0 <= r["bound"] <= 1.0 + r["fraction"]
        assert r["peak_mib"] <= r["budget_mib"] * 1.0001, r


def test_one_perf_run_prints_every_section_asked_for(monkeypatch, capsys) -> None:
    """`bench perf --model … --adjoint … --adjoint-dt … --leaderboard N` is one process, one report."""
    import bench.harness.adjoint as adjoint
    import bench.harness.perf as perf
    from bench.cli.main import main

    calls = []
    monkeypatch.setattr(perf, "perf_sections", lambda **kw: calls.append(("models", kw["models"])) or ["MODELS"])
    monkeypatch.setattr(adjoint, "run_adjoint_comparison",
                        lambda models, batch, dts: calls.append(("adjoint", models, dts)) or "ADJOINT")
    monkeypatch.setattr(perf, "measure_leaderboard_build", lambda n: calls.append(("site", n)) or "SITE")
    assert main(["perf", "--model", "toy", "--adjoint", "toy", "--adjoint-dt", "1e-3", "--adjoint-dt", "2.5e-4",
                 "--leaderboard", "30"]) == 0
    assert calls == [("models", ["toy"]), ("adjoint", ["toy"], [1e-3, 2.5e-4]), ("site", 30)]
    assert capsys.readouterr().out.split() == ["MODELS", "ADJOINT", "SITE"]
    calls.clear()
    assert main(["perf", "--leaderboard", "30"]) == 0  # a section flag alone: only that section
    assert calls == [("site", 30)]
