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


@pytest.mark.parametrize("defense, per_step", [("dp_ddpm", 1), ("diffpure", 1), ("dp_edm", 2)])
def test_step_ratio_counts_the_recomputed_calls_for_its_bound(defense: str, per_step: int, monkeypatch) -> None:
    """(a)'s checkpointed bound comes from the network calls actually recomputed: every reverse
    step's calls but the last step's (which backward reaches first) run twice — also where torch's
    early stop ends a recomputation inside the network (DiffPure's step saves nothing after it)."""
    import bench.harness.perf as perf
    from tests.conftest import tiny_model

    model = tiny_model(defense)
    net = next(getattr(model.defense, a) for a in ("unet", "score_net", "denoiser") if hasattr(model.defense, a))
    tiny = perf.PerfModel("tiny", net, model.classifier, (1, 8, 8), lambda x: x, lambda _steps: model.defense)
    monkeypatch.setitem(perf._current, "tiny", tiny)
    r = measure_step_ratio("tiny", batch=2, eot=1, repeats=1)
    steps = -(-model.defense.network_calls // per_step)  # EDM's Heun: 2 calls per step, the last 1
    assert r["recomputed_calls"] == (steps - 1) * per_step
    assert r["bound_checkpoint"] >= 1.0


def test_budget_report_plans_fit_their_budgets() -> None:
    rows = measure_budget_ratios("toy", batch=2, eot=2, repeats=1, shares=(1.0, 0.3), sweep=False)
    assert [r["share"] for r in rows] == [1.0, 0.3]
    # which in-budget plan wins is decided by timing the candidates (bench.core.memory.plan_gradient), so
    # the fractions of the two budgets are not ordered under CPU contention; that each plan fits is asserted
    assert rows[1]["fraction"] > 0.0 or rows[1]["chunk"] < 4  # memory saved by checkpointing or by chunks
    for r in rows:
        # the bound 1 + f * fwd / (fwd + bwd) is a ratio of two measured times; under CPU contention the
        # measured forward can exceed the measured forward+backward, so only its form is asserted here
        assert r["bound"] >= 1.0 and (r["bound"] == 1.0) == (r["fraction"] == 0.0)
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


def test_the_leaderboard_timing_runs_at_small_n_and_writes_a_report(tmp_path) -> None:
    from bench.cli.main import main
    from bench.harness import perf

    line = perf.measure_leaderboard_build(30)
    assert line.startswith("(e) leaderboard build: 30 records") and "target <= 5 s" in line
    assert float(line.split("; ")[1].split(" CPU seconds in all processes")[0]) > 0
    report = tmp_path / "performance-report.md"
    assert main(["perf", "--leaderboard", "24", "--report", str(report)]) == 0
    text = report.read_text()
    assert text.startswith("# Performance report (generated)") and "- commit:" in text and "24 records" in text
