"""Ranking rules (bench/publish/ranking.py): coverage, per-sample worst case, rank intervals."""

import itertools

import numpy as np

from bench.publish.ranking import bootstrap_mean_interval, coverage, rank_intervals, worst_case


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
