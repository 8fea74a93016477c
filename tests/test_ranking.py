"""Ranking rules (bench/publish/ranking.py): coverage, per-sample worst case, rank intervals."""

import itertools

import numpy as np
import pytest

from bench.publish.ranking import (
    _percentile_signs,
    bootstrap_mean_interval,
    coverage,
    mean_intervals,
    rank_intervals,
    resample_counts,
    resampled_means,
    significant_pairs,
    worst_case,
)


def test_an_entry_missing_a_ranking_attack_is_not_ranked() -> None:
    ranking = ["aa_rand_fixed", "diffhammer", "pgd_eot"]
    full = coverage({a: range(4) for a in ranking}, ranking)
    assert full.complete and full.describe() == "complete"
    partial = coverage({"pgd_eot": range(4)}, ranking)
    assert not partial.complete and partial.missing == ("aa_rand_fixed", "diffhammer")
    other_images = coverage({"aa_rand_fixed": range(4), "diffhammer": range(4), "pgd_eot": range(1, 5)}, ranking)
    assert not other_images.complete and other_images.mismatched == ("pgd_eot",)


def test_per_sample_worst_case_equals_brute_force() -> None:
    rng = np.random.default_rng(1)
    per_attack = {a: rng.integers(0, 11, 30) / 10 for a in ("a", "b", "c")}
    brute = [min(per_attack[a][i] for a in per_attack) for i in range(30)]
    assert worst_case(per_attack).tolist() == brute
    # never above the minimum over attacks of the attack means (the old ranking key)
    assert worst_case(per_attack).mean() <= min(v.mean() for v in per_attack.values())
    mean, low, high = bootstrap_mean_interval(worst_case(per_attack))
    assert low <= mean <= high


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


def test_shared_resample_intervals_equal_brute_force() -> None:
    """The matrix-product bootstrap equals resampling images by index and taking percentiles."""
    rng = np.random.default_rng(3)
    values = rng.integers(0, 11, size=(5, 40)) / 10
    picks = np.random.default_rng(7).integers(0, 40, size=(300, 40))
    counts = resample_counts(40, 300, 7)
    assert counts.sum(axis=1).tolist() == [40] * 300
    for row, (mean, low, high) in zip(values, mean_intervals(values, counts)):
        boot = row[picks].mean(axis=1)
        assert mean == row.mean()
        assert np.isclose(low, min(np.percentile(boot, 2.5), mean)) and np.isclose(high, max(np.percentile(boot, 97.5), mean))


def test_significant_pairs_equal_brute_force() -> None:
    rng = np.random.default_rng(4)
    entries = {name: np.clip(rng.normal(level, 0.3, 60), 0, 1) for name, level in (("a", 0.8), ("b", 0.78), ("c", 0.2))}
    pairs = significant_pairs(entries, resamples=400, seed=1)
    picks = np.random.default_rng(1).integers(0, 60, size=(400, 60))
    for j in entries:
        for i in entries:
            if i == j:
                continue
            diff = entries[i][picks].mean(axis=1) - entries[j][picks].mean(axis=1)
            assert (i in pairs[j][0]) == (np.percentile(diff, 2.5) > 0)
            assert (i in pairs[j][1]) == (np.percentile(diff, 97.5) < 0)
    assert "c" in pairs["a"][1] and "a" in pairs["c"][0] and "b" not in pairs["a"][0] + pairs["a"][1]


@pytest.mark.parametrize("resamples", [400, 2_000, 401])
def test_percentile_signs_equal_numpy_percentile(resamples: int) -> None:
    """The counting shortcut decides every pair as np.percentile does, ties and zeros included."""
    rng = np.random.default_rng(resamples)
    values = rng.integers(0, 4, size=(12, 30)) / 3  # coarse values: many ties between entries
    values[1] = values[0]  # identical entries: differences exactly 0
    values[2, :] = values[0] + 1 / 3 * (rng.random(30) < 0.05)
    boot = resampled_means(values, resample_counts(30, resamples, 5))
    for j in range(len(values)):
        low_positive, high_negative = _percentile_signs(boot, boot[j])
        low, high = np.percentile(boot - boot[j], [2.5, 97.5], axis=1)
        assert low_positive.tolist() == (low > 0).tolist()
        assert high_negative.tolist() == (high < 0).tolist()


def test_percentile_signs_between_order_statistics() -> None:
    """Counts that fall between floor(h) and ceil(h) are decided by numpy's interpolation."""
    rows = []
    for count in range(8, 13):  # B = 400: h = 9.975, the 2.5th percentile interpolates order stats 9 and 10
        for small in (-1.0, -100.0, 0.0):
            rows.append([small] * count + [1.0] * (400 - count))
            rows.append([-1.0] * (400 - count) + [-small or 1e-3] * count)
    boot = np.asarray(rows)
    low_positive, high_negative = _percentile_signs(boot, np.zeros(400))
    low, high = np.percentile(boot, [2.5, 97.5], axis=1)
    assert low_positive.tolist() == (low > 0).tolist() and high_negative.tolist() == (high < 0).tolist()
    assert low_positive.any() and not low_positive.all() and high_negative.any() and not high_negative.all()


def test_competition_ranks_equal_scipy_rankdata() -> None:
    from scipy.stats import rankdata

    from bench.publish.ranking import competition_ranks

    means = np.random.default_rng(2).integers(0, 5, size=(300, 17)) / 4  # many ties
    assert (competition_ranks(means) == rankdata(-means, method="min", axis=-1)).all()
    assert competition_ranks(np.array([0.5, 0.9, 0.5, 0.1])).tolist() == [2, 1, 2, 4]
