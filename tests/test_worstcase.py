"""The leaderboard's per-sample worst case: chosen by selection draws, scored by evaluation draws
(bench/publish/worstcase.py). The simulation shows the replaced min-of-estimates rule's winner's
curse and that the new estimator is unbiased for what it estimates."""

import numpy as np
import pytest

from bench.publish.worstcase import min_rule, selected_worst, selected_worst_rob_m, simulate_bias


def _accuracies(seed: int = 0, n: int = 256) -> np.ndarray:
    """Three attacks on n images, shaped like the toy track: most images broken by every attack,
    the rest at intermediate accuracies that differ between attacks."""
    rng = np.random.default_rng(seed)
    base = np.where(rng.random(n) < 0.6, 0.0, rng.beta(1.2, 2.0, n))
    spread = rng.normal(0, 0.12, (3, n))
    return np.clip(base + np.where(base > 0, spread, 0), 0, 1)


@pytest.mark.parametrize("correlation", [0.0, 0.5, 1.0])
def test_selected_worst_case_is_unbiased_and_the_min_rule_is_not(correlation: float) -> None:
    """Correlation 0: independent draws per attack; 1: every attack's draw k shares its noise
    (comonotone outcomes, where the min rule happens to be unbiased); the harness lies between."""
    report = simulate_bias(_accuracies(), draws=10, repeats=400, correlation=correlation, seed=1)
    print(f"\ncorrelation {correlation}: min-of-estimates rule bias "
          f"{report.min_rule_bias:+.4f} ± {report.min_rule_se:.4f}; selected worst case bias "
          f"{report.selected_bias:+.4f} ± {report.selected_se:.4f} (its choice is "
          f"{report.selected_gap:.4f} above the per-image minimum of the true accuracies)")
    assert abs(report.selected_bias) <= 0.005
    if correlation == 0.0:
        assert report.min_rule_bias < -0.01  # the winner's curse the old rule had
    assert report.selected_gap >= 0


def test_the_choice_uses_selection_draws_and_ties_split() -> None:
    # image 0: attack 0 looks strongest to the selection draws, attack 1 is strongest on evaluation
    select = np.array([[[0, 0, 0, 0]], [[1, 1, 1, 1]]], dtype=bool)
    evaluate = np.array([[[1, 1, 1, 0]], [[0, 0, 0, 0]]], dtype=bool)
    assert selected_worst(select, evaluate).tolist() == [0.75]
    assert min_rule(evaluate).tolist() == [0.0]
    tied = np.array([[[0, 1]], [[1, 0]]], dtype=bool)  # both 1/2: the two evaluations are averaged
    assert selected_worst(tied, np.array([[[1, 1]], [[0, 0]]], dtype=bool)).tolist() == [0.5]


def test_rob_m_of_the_chosen_attack() -> None:
    select = np.array([[[0, 0]], [[1, 1]]], dtype=bool)
    curve = selected_worst_rob_m(select, np.array([[1], [2]]), draws=2)
    assert curve.tolist() == [[0.5, 0.0]]  # attack 0: one of two draws correct


def test_leading_entry_axes_give_each_entry_its_own_result_bit_for_bit() -> None:
    """The site ranks all entries of a track at once as (entries, attacks, n, K) arrays; each
    entry's worst case, Rob(M), min rule and Rob(M) intervals equal its own computation exactly."""
    from bench.core.metrics import mean_intervals
    from bench.publish.worstcase import min_rule, selected_worst, selected_worst_rob_m

    rng = np.random.default_rng(5)
    entries, attacks, n, k = 7, 3, 64, 10
    select = rng.random((entries, attacks, n, k)) < rng.random((entries, attacks, n, 1))
    evaluate = rng.random((entries, attacks, n, k)) < rng.random((entries, attacks, n, 1))
    counts = evaluate.sum(axis=-1)
    worst, rob_m, rule = selected_worst(select, evaluate), selected_worst_rob_m(select, counts, k), min_rule(evaluate)
    means, lows, highs = mean_intervals(rob_m)
    for e in range(entries):
        assert np.array_equal(worst[e], selected_worst(select[e], evaluate[e]))
        assert np.array_equal(rob_m[e], selected_worst_rob_m(select[e], counts[e], k))
        assert np.array_equal(rule[e], min_rule(evaluate[e])) and rule[e].mean() == rule.mean(axis=1)[e]
        assert float(worst[e].mean()) == worst.mean(axis=1)[e]
        one = mean_intervals(rob_m[e])
        assert all(np.array_equal(a[e], b) for a, b in zip((means, lows, highs), one))
