import pytest
import torch

from bench.core.metrics import majority_vote, summarize, wilson_interval


def test_wilson_matches_reference_values() -> None:
    # 8 of 10: Wilson 95% interval (0.4902, 0.9433) (Agresti & Coull 1998 formula).
    low, high = wilson_interval(0.8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)


def test_wilson_is_not_degenerate_at_the_edges() -> None:
    low, high = wilson_interval(0.0, 64)
    assert low == 0.0 and 0.05 < high < 0.06
    low, high = wilson_interval(1.0, 64)
    assert 0.94 < low < 0.95 and high == 1.0


def test_majority_vote_breaks_ties_towards_smallest_class() -> None:
    preds = torch.tensor([[2, 1, 2, 1], [3, 3, 0, 5]])
    assert majority_vote(preds).tolist() == [1, 3]


def test_summarize_expected_worst_majority() -> None:
    labels = torch.tensor([0, 1, 2])
    preds = torch.tensor([[0, 0, 0, 0], [1, 1, 0, 0], [2, 5, 5, 2]])
    out = summarize(labels, preds)
    assert out["n"] == 3 and out["draws"] == 4
    assert out["expected"]["acc"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert out["worst"]["acc"] == pytest.approx(1 / 3)
    assert out["majority"]["acc"] == pytest.approx(2 / 3)  # sample 2 ties 2 vs 5 -> 2
    for part in ("expected", "worst", "majority"):
        assert out[part]["ci_low"] <= out[part]["acc"] <= out[part]["ci_high"]


def test_resubmission_estimator_equals_brute_force_over_subsets() -> None:
    """Rob(M) = C(c, M)/C(K, M) averaged over samples equals, by enumeration, the fraction of
    M-subsets of each sample's K draws that are all correct (DiffHammer, Theorem 2)."""
    import itertools

    from bench.core.metrics import resubmission_curve

    k = 5
    outcomes = [[1, 1, 0, 1, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0], [1, 0, 0, 0, 0], [0, 1, 1, 1, 1]]
    curve = resubmission_curve([sum(o) for o in outcomes], k)
    for m in range(1, k + 1):
        brute = sum(
            sum(all(o[i] for i in subset) for subset in itertools.combinations(range(k), m))
            / len(list(itertools.combinations(range(k), m)))
            for o in outcomes
        ) / len(outcomes)
        assert abs(curve[m - 1]["acc"] - brute) < 1e-12
        assert curve[m - 1]["ci_low"] <= curve[m - 1]["acc"] <= curve[m - 1]["ci_high"]
    assert curve[0]["acc"] == sum(map(sum, outcomes)) / (k * len(outcomes))  # Rob(1) = expected
    assert curve[-1]["acc"] == sum(all(o) for o in outcomes) / len(outcomes)  # Rob(K) = worst-of-K
    assert [p["acc"] for p in curve] == sorted((p["acc"] for p in curve), reverse=True)


@pytest.mark.parametrize("shape, axis", [((10_000, 40), 0), ((10_000,), 0), ((7, 3_001), 1), ((5, 4), 0), ((1, 9), 0)])
@pytest.mark.parametrize("dtype", [float, int])
def test_percentiles_equal_numpy_bit_for_bit(shape: tuple[int, ...], axis: int, dtype: type) -> None:
    import numpy as np

    from bench.core.metrics import percentiles

    values = (np.random.default_rng(len(shape) + axis).normal(size=shape) * 10).astype(dtype)
    for q in ([2.5, 97.5], [0, 50, 100], [33.3], [0.1, 99.9]):
        expected = np.percentile(values, q, axis=axis)
        got = percentiles(values, q, axis=axis)
        assert got.shape == expected.shape and np.array_equal(got, expected), q
        scratch = values.copy()
        assert np.array_equal(percentiles(scratch, q, axis=axis, overwrite_input=True), expected), q
        assert sorted(scratch.ravel().tolist()) == sorted(values.ravel().tolist())  # reordered, not changed


def test_paired_differences_in_one_batch_equal_one_call_each() -> None:
    import numpy as np

    from bench.core.metrics import paired_difference, paired_differences

    rng = np.random.default_rng(3)
    pairs = [(list(rng.integers(0, 11, n) / 10), list(rng.integers(0, 11, n) / 10)) for n in (64, 64, 64, 32, 17)]
    pairs.append(([0.5] * 64, [0.5] * 64))  # no spread: the conservative interval
    batch = paired_differences(pairs)
    for (a, b), got in zip(pairs, batch):
        one = paired_difference(a, b)
        assert got["mean"] == one["mean"] and got["n"] == one["n"]
        assert got["ci_low"] == pytest.approx(one["ci_low"], abs=1e-12)
        assert got["ci_high"] == pytest.approx(one["ci_high"], abs=1e-12)
    # a lone pair of its n is computed exactly as one call
    assert batch[3] == paired_difference(*pairs[3]) and batch[4] == paired_difference(*pairs[4])
    with pytest.raises(ValueError, match="equal, non-zero lengths"):
        paired_differences([([0.1, 0.2], [0.3])])


@pytest.mark.parametrize("draws", [1, 2, 10, 64, 500])
def test_resubmission_estimates_equal_exact_binomial_ratios(draws: int) -> None:
    """C(c, M) / C(K, M) for every c and M, against exact integer binomials (relative error of a
    few ulps even at K = 500, and exactly 0 when c < M)."""
    import math

    from bench.core.metrics import resubmission_estimates

    table = resubmission_estimates(list(range(draws + 1)), draws)
    for c in range(draws + 1):
        for m in range(1, draws + 1):
            exact = math.comb(c, m) / math.comb(draws, m)
            assert table[c, m - 1] == pytest.approx(exact, rel=1e-13, abs=0.0) if exact else table[c, m - 1] == 0.0
