"""Ranking rules (bench/publish/ranking.py): coverage, per-sample worst case, rank intervals."""

import itertools

import numpy as np
import pytest

from bench.publish.ranking import (
    coverage,
    holm_reject,
    paired_p_values,
    rank_intervals,
    resample_counts,
    resampled_means,
    significant_pairs,
)


def test_an_entry_missing_a_ranking_attack_is_not_ranked() -> None:
    ranking = ["aa_rand_fixed", "diffhammer", "pgd_eot"]
    full = coverage({a: range(4) for a in ranking}, ranking)
    assert full.complete and full.describe() == "complete"
    partial = coverage({"pgd_eot": range(4)}, ranking)
    assert not partial.complete and partial.missing == ("aa_rand_fixed", "diffhammer")
    other_images = coverage({"aa_rand_fixed": range(4), "diffhammer": range(4), "pgd_eot": range(1, 5)}, ranking)
    assert not other_images.complete and other_images.mismatched == ("pgd_eot",)


def test_rank_intervals_are_deterministic_and_contain_the_point_rank() -> None:
    rng = np.random.default_rng(2)
    entries = {f"e{i}": rng.random(64) * (1 + 0.05 * i) for i in range(5)}
    first, second = rank_intervals(entries), rank_intervals(entries)
    assert first == second
    for rank, low, high in first.values():
        assert low <= rank <= high
    assert sorted(r for r, _, _ in first.values()) == [1, 2, 3, 4, 5]


def test_identical_entries_overlap_and_a_dominated_entry_is_disjoint() -> None:
    rng = np.random.default_rng(3)
    base = rng.random(128)
    intervals = rank_intervals({"a": base, "b": base.copy(), "low": base * 0.2})
    (_, a_lo, a_hi), (_, b_lo, b_hi), (low_rank, low_lo, _) = intervals["a"], intervals["b"], intervals["low"]
    assert max(a_lo, b_lo) <= min(a_hi, b_hi)  # overlapping
    assert low_rank == 3 and low_lo > max(a_hi, b_hi)  # disjoint, below both


def test_point_ranks_equal_brute_force_ordering() -> None:
    values = {"x": [1.0, 0.0], "y": [0.5, 0.5], "z": [0.0, 0.0]}
    ranks = {k: v[0] for k, v in rank_intervals(values, resamples=50).items()}
    assert ranks == {"x": 1, "y": 1, "z": 3}  # ties share the best rank
    for a, b in itertools.permutations(values, 2):
        if np.mean(values[a]) > np.mean(values[b]):
            assert ranks[a] < ranks[b]


def test_shared_resamples_equal_resampling_by_index() -> None:
    """The matrix-product bootstrap means equal resampling images by index."""
    rng = np.random.default_rng(3)
    values = rng.integers(0, 11, size=(5, 40)) / 10
    picks = np.random.default_rng(7).integers(0, 40, size=(300, 40))
    counts = resample_counts(40, 300, 7)
    assert counts.sum(axis=1).tolist() == [40] * 300
    assert np.allclose(resampled_means(values, counts), values[:, picks].mean(axis=2))


def test_paired_p_values_equal_scipy_ttest_rel() -> None:
    from scipy.stats import ttest_rel

    rng = np.random.default_rng(4)
    values = np.clip(rng.normal([[0.8], [0.78], [0.2], [0.5]], 0.3, (4, 60)), 0, 1)
    values[3] = values[2] + 0.1  # every difference equal: degenerate, p = 0
    p, diff = paired_p_values(values)
    for i, j in itertools.combinations(range(3), 2):
        assert np.isclose(p[i, j], ttest_rel(values[i], values[j]).pvalue)
        assert np.isclose(diff[i, j], values[i].mean() - values[j].mean())
    assert p[2, 3] == 0.0 and p[0, 0] == 1.0


def test_holm_equals_its_definition() -> None:
    p = np.array([0.01, 0.04, 0.03, 0.005])
    # sorted: 0.005 <= .05/4, 0.01 <= .05/3, 0.03 > .05/2: stop; 0.04 not rejected either
    assert holm_reject(p).tolist() == [True, False, False, True]
    assert holm_reject(np.array([0.2, 0.01])).tolist() == [False, True]


def test_significance_is_holm_adjusted() -> None:
    """Many nearly equal entries: unadjusted tests flag some pairs by chance, Holm flags none of
    them, and a clearly worse entry is still below every other."""
    rng = np.random.default_rng(5)
    entries = {f"e{i}": np.clip(rng.normal(0.5, 0.3, 64), 0, 1) for i in range(12)}
    entries["low"] = np.clip(rng.normal(0.1, 0.1, 64), 0, 1)
    tests = significant_pairs(entries)
    assert tests.pairs == 13 * 12 // 2
    assert tests.raw_significant > 12  # the 12 true differences plus chance ones
    for name in entries:
        if name != "low":
            above, below = tests.relations[name]
            assert below == ["low"] and above == []
    assert len(tests.relations["low"][0]) == 12


def test_competition_ranks_equal_scipy_rankdata() -> None:
    from scipy.stats import rankdata

    from bench.publish.ranking import competition_ranks

    means = np.random.default_rng(2).integers(0, 5, size=(300, 17)) / 4  # many ties
    assert (competition_ranks(means) == rankdata(-means, method="min", axis=-1)).all()
    assert competition_ranks(np.array([0.5, 0.9, 0.5, 0.1])).tolist() == [2, 1, 2, 4]
