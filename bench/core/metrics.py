"""Accuracy summaries over K stochastic evaluation draws, with 95% Wilson intervals."""

from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import torch

Z_95 = 1.959963984540054


def wilson_interval(accuracy: float, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a proportion ``accuracy`` observed on ``n`` samples.

    Unlike the normal approximation it stays inside [0, 1] and is not degenerate at 0 or 1.
    For expected accuracy (a mean of per-sample fractions) it is applied with n = number of
    samples, which is conservative: per-sample means vary less than Bernoulli outcomes.
    """
    if n <= 0:
        return (0.0, 1.0)
    denom = 1 + z * z / n
    centre = (accuracy + z * z / (2 * n)) / denom
    half = z * math.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def wilson_intervals(accuracies: "np.ndarray", n: int, z: float = Z_95) -> tuple["np.ndarray", "np.ndarray"]:
    """:func:`wilson_interval` for an array of proportions on the same ``n`` samples, at once (a
    site build derives ~20 intervals for each of thousands of records). Returns (low, high)."""
    import numpy as np

    p = np.asarray(accuracies, dtype=float)
    if n <= 0:
        return np.zeros_like(p), np.ones_like(p)
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return np.maximum(0.0, centre - half), np.minimum(1.0, centre + half)


def majority_vote(predictions: torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
    """Most frequent class per row of (N, K) predictions; ties go to the smallest class."""
    classes = int(num_classes or int(predictions.max()) + 1)
    counts = torch.zeros(predictions.shape[0], classes, dtype=torch.long)
    counts.scatter_add_(1, predictions.long(), torch.ones_like(predictions, dtype=torch.long))
    return counts.argmax(dim=1)  # argmax returns the first maximal index


def summarize(labels: torch.Tensor, predictions: torch.Tensor) -> dict[str, Any]:
    """Expected (mean over draws), worst-of-K and majority-vote accuracy with 95% CIs.

    Args:
        labels: (N,) true classes.
        predictions: (N, K) predicted class of each sample under each of K noise draws.
    """
    n, k = predictions.shape
    correct = predictions == labels[:, None]
    values = {
        "expected": correct.float().mean(dim=1).mean().item() if n else 0.0,
        "worst": correct.all(dim=1).float().mean().item() if n else 0.0,
        "majority": (majority_vote(predictions) == labels).float().mean().item() if n else 0.0,
    }
    out: dict[str, Any] = {"n": n, "draws": k}
    for name, value in values.items():
        low, high = wilson_interval(value, n)
        out[name] = {"acc": value, "ci_low": low, "ci_high": high}
    return out


BOOTSTRAP_RESAMPLES = 10_000


def paired_difference(a: list[float], b: list[float], resamples: int = BOOTSTRAP_RESAMPLES,
                      seed: int = 0) -> dict[str, float]:
    """Mean per-item difference mean(a − b) of two paired samples (the same images) with a 95%
    paired percentile bootstrap interval (BCa is undefined when every difference is equal, e.g. all
    zero): ``resamples`` resamples of the n images drawn from ``seed``, so the interval is
    reproducible, and the same resamples for every pair of the same n (:func:`_resample_counts`)."""
    return paired_differences([(a, b)], resamples, seed)[0]


def paired_differences(pairs: Sequence[tuple[Sequence[float], Sequence[float]]],
                       resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> list[dict[str, float]]:
    """:func:`paired_difference` of every ``(a, b)`` pair, in order: pairs of the same n share one
    (resamples, n) count matrix, so m of them cost one (resamples, n) @ (n, m) product and one
    percentile over its columns (a site build computes thousands). The bounds equal one call per
    pair up to floating-point rounding (~1e-16: BLAS sums a matrix product in another order than a
    matrix-vector product); a lone pair of its n takes the matrix-vector path, bit for bit."""
    import numpy as np

    results: list[dict[str, float] | None] = [None] * len(pairs)
    spread: dict[int, list[tuple[int, np.ndarray]]] = {}
    for i, (a, b) in enumerate(pairs):
        if len(a) != len(b) or not len(a):
            raise ValueError(f"paired samples need equal, non-zero lengths (got {len(a)} and {len(b)})")
        d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
        mean = float(d.mean())
        if np.all(d == mean):
            # no spread: the bootstrap distribution is a point. Per-image differences of accuracies lie
            # in [-1, 1]; the fraction of images whose difference is not the observed one is at most the
            # 95% Wilson upper bound for 0 of n, and each moves the mean by at most 2: a conservative
            # interval that never has zero width.
            width = 2 * wilson_interval(0.0, len(d))[1]
            results[i] = {"mean": mean, "ci_low": max(-1.0, mean - width), "ci_high": min(1.0, mean + width),
                          "n": len(d), "resamples": resamples, "seed": seed}
        else:
            spread.setdefault(len(d), []).append((i, d))
    for n, items in spread.items():
        differences = np.stack([d for _, d in items], axis=1)  # (n, m)
        counts = _resample_counts(n, resamples, seed)
        # (m, resamples), each pair's resampled means contiguous: BLAS forms this product ~4x faster
        # than (resamples, m), and the partition along rows ~1.5x faster than along columns
        means = (counts @ differences[:, 0] / n)[None, :] if len(items) == 1 else differences.T @ counts.T / n
        low, high = percentiles(means, [2.5, 97.5], axis=1, overwrite_input=True)  # means: a temporary
        for column, (i, d) in enumerate(items):
            results[i] = {"mean": float(d.mean()), "ci_low": float(low[column]), "ci_high": float(high[column]),
                          "n": n, "resamples": resamples, "seed": seed}
    return results  # type: ignore[return-value]


def percentiles(values: "np.ndarray", q: Sequence[float], axis: int = 0, overwrite_input: bool = False) -> "np.ndarray":
    """``np.percentile(values, q, axis=axis)`` (the default linear method, Hyndman & Fan type 7),
    bit for bit, from the two order statistics around each percentile: one ``np.partition`` at the
    one nearer an end of the axis, the other then being the extreme of the short side.

    By hand because ``np.percentile`` over a (10,000 resamples, m) bootstrap matrix took three
    times as long (a site build takes a dozen such percentiles). One single-index partition per
    percentile rather than one ``np.partition`` at all the indices: numpy partitions the range
    again for every further index, and for the 2.5th and 97.5th percentiles of a (1,668, 10,000)
    matrix two single-index partitions plus an extreme over 250 values each took 0.10 s against
    0.25 s. ``overwrite_input``: partition ``values`` itself (as ``np.percentile``'s option; its order
    is then lost) rather than copies of it: a bootstrap matrix is a temporary, and copying it was a
    third of the time. ``tests/test_metrics.py`` checks equality with ``np.percentile``. Returns
    (len(q), *other axes)."""
    import numpy as np

    values = np.asarray(values)
    if overwrite_input and not (values.flags.writeable and values.flags.owndata):
        overwrite_input = False  # a view or read-only array: partition copies, as without the option
    n = values.shape[axis]
    quantiles = np.true_divide(np.asarray(q, dtype=float), 100)
    virtual = (n - 1) * quantiles  # numpy's virtual index of its 'linear' method
    below = np.clip(np.floor(virtual), 0, n - 1).astype(np.intp)
    above = np.clip(below + 1, 0, n - 1)
    gamma = np.where(virtual < 0, 0.0, np.where(virtual >= n - 1, 1.0, virtual - np.floor(virtual)))

    def along(part: slice) -> tuple[slice, ...]:
        return (slice(None),) * (axis % values.ndim) + (part,)

    def partitioned(kth: int) -> "np.ndarray":
        # in place, each partition leaves every earlier percentile's values where they were read
        # from (they are taken before the next one): still a valid input for the next
        if overwrite_input:
            values.partition(kth, axis=axis)
            return values
        return np.partition(values, kth, axis=axis)

    lows, highs = [], []
    for lower, upper in zip(below.tolist(), above.tolist()):
        # upper is lower + 1, or both are n - 1 (the top end, clipped). Partitioned at the one nearer
        # an end, the other is the extreme of the short side: the largest of the `upper` smallest
        # values, or the smallest of those after index `lower`.
        if upper <= n - 1 - lower:
            ordered = partitioned(upper)
            highs.append(np.take(ordered, upper, axis=axis))
            lows.append(highs[-1] if lower == upper else ordered[along(slice(0, upper))].max(axis=axis))
        else:
            ordered = partitioned(lower)
            lows.append(np.take(ordered, lower, axis=axis))
            highs.append(lows[-1] if lower == upper else ordered[along(slice(lower + 1, None))].min(axis=axis))
    low = np.stack(lows).astype(float)
    high = np.stack(highs).astype(float)
    t = gamma.reshape((-1,) + (1,) * (low.ndim - 1))
    difference = high - low
    out = low + difference * t  # numpy's _lerp, including its t >= 0.5 branch
    np.subtract(high, difference * (1 - t), out=out, where=np.broadcast_to(t >= 0.5, out.shape))
    return out


@functools.lru_cache(maxsize=8)
def _resample_counts(n: int, resamples: int, seed: int) -> "np.ndarray":
    """(resamples, n) read-only float64 counts: how often each of n items is drawn in each resample
    (n draws with replacement). Written here rather than calling ``scipy.stats.bootstrap``, which
    draws and gathers a fresh (resamples, n) index array on every call: the site computes thousands
    of paired intervals over the same image sets, and one shared count matrix turns each into a
    matrix-vector product (the same percentile bootstrap; ~20x faster per interval)."""
    import numpy as np

    indices = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    counts = np.zeros((resamples, n))
    np.add.at(counts, (np.arange(resamples)[:, None], indices), 1.0)
    counts.setflags(write=False)
    return counts


def resubmission_estimates(correct: "list[int] | np.ndarray", draws: int) -> "np.ndarray":
    """Per-sample unbiased estimates of Rob(M), M = 1..K: C(c, M) / C(K, M) for a sample with c
    of K draws correct (DiffHammer, Theorem 2: the fraction of the C(K, M) M-subsets of the K
    i.i.d. draws that are all correct). ``correct``: (N,) counts, or any shape (...). Returns
    (N, K) (or (..., K)) floats; column M−1 is Rob(M)."""
    import numpy as np

    counts = np.asarray(correct, dtype=int)
    if counts.size and (counts.min() < 0 or counts.max() > draws):
        raise ValueError(f"correct draws must lie in 0..{draws}; got {counts.min()}..{counts.max()}")
    return _estimate_table(draws)[counts]


@functools.lru_cache(maxsize=32)
def _estimate_table(draws: int) -> "np.ndarray":
    """(K+1, K) table of C(c, M) / C(K, M) for c = 0..K (one lookup per sample when thousands of
    records are validated), as the running product prod_{j<M} (c − j) / (K − j), which is 0 once
    j reaches c. Not ``scipy.special.comb``: importing it took 0.4 s of every build's two processes."""
    import numpy as np

    c = np.arange(draws + 1, dtype=float)[:, None]
    j = np.arange(draws, dtype=float)[None, :]
    factors = np.where(c > j, (c - j) / (draws - j), 0.0)  # (K+1, K): factor j of row c
    table = np.cumprod(factors, axis=1)
    table.setflags(write=False)
    return table


def resubmission_curve(correct: list[int], draws: int) -> list[dict[str, float]]:
    """Rob(M) for M = 1..K — the probability that a sample survives M independent
    resubmissions — averaged over samples, each with the 95% Wilson interval over the n images
    (:func:`mean_interval`: the same interval as every other accuracy, so Rob(1) carries exactly
    the expected accuracy's interval and Rob(K) the worst-of-K's). ``correct``: correct draws per
    sample (0..K)."""
    if not correct:
        return []
    means = resubmission_estimates(correct, draws).mean(axis=0)
    return [{"m": m + 1, "acc": float(means[m]), **dict(zip(("ci_low", "ci_high"), wilson_interval(float(means[m]), len(correct))))}
            for m in range(draws)]


def mean_intervals(columns: "np.ndarray") -> tuple["np.ndarray", "np.ndarray", "np.ndarray"]:
    """:func:`mean_interval` of every column of (n, M) per-image values at once: (means, lows,
    highs), each (M,), equal bit for bit to one call per column (each column is summed as a
    contiguous row, as numpy sums a 1-D array). Leading axes (..., n, M) are independent sets of
    columns, giving (..., M) each. A site build takes ~20,000 such intervals."""
    import numpy as np

    rows = np.ascontiguousarray(np.swapaxes(np.asarray(columns, dtype=float), -1, -2))  # (..., M, n)
    means = rows.mean(axis=-1) if rows.shape[-1] else np.zeros(rows.shape[:-1])
    low, high = wilson_intervals(means, rows.shape[-1])
    return means, low, high


def mean_interval(values: "np.ndarray | list[float]") -> tuple[float, float, float]:
    """(mean, low, high) of per-image values in [0, 1] with the 95% Wilson score interval, n =
    number of images. The one interval this project gives any accuracy: for 0/1 values it is
    Wilson's; for fractions (expected accuracy over K draws, Rob(M) estimates, a per-image worst
    case) it is conservative, because a [0, 1] variable with mean μ has variance at most
    μ(1 − μ); and it never has zero width, even when every image has the same value (all 0)."""
    import numpy as np

    x = np.asarray(values, dtype=float)
    mean = float(x.mean()) if x.size else 0.0
    return (mean, *wilson_interval(mean, int(x.size)))
