"""Ranking entries that were evaluated on the same images: coverage, per-sample worst case over
attacks, and rank intervals from a paired bootstrap over images.

- **Coverage**: an entry is ranked only when every ranking attack of the track has a record for
  it on the same image indices (:func:`coverage`); otherwise it is listed with what is missing.
- **Per-sample worst case** (AutoAttack's ensemble rule, per sample and per attack): an image's
  robust accuracy is the lowest expected accuracy any ranking attack leaves it
  (:func:`worst_case`); the entry's robust accuracy is the mean over images.
- **Rank intervals** (as Chatbot Arena shows rank bounds): resample the images with replacement
  (the same resample for every entry — they are paired by image), rank the entries' means in each
  resample, and report the 2.5 / 97.5 percentiles of each entry's rank (:func:`rank_intervals`).
  The resample count and seed are fixed, so a rebuild is byte-identical.

Written with numpy because the rank of an entry within a resample is a statistic of all entries
jointly, which scipy's ``bootstrap`` (one statistic of one or paired samples) does not express.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

RANK_RESAMPLES = 2_000
RANK_SEED = 0


@dataclass(frozen=True)
class Coverage:
    """Whether an entry can be ranked: ``missing`` ranking attacks, or ``mismatched`` ones whose
    records are on other image indices than the first ranking attack's."""

    missing: tuple[str, ...]
    mismatched: tuple[str, ...]

    @property
    def complete(self) -> bool:
        return not self.missing and not self.mismatched

    def describe(self) -> str:
        parts = []
        if self.missing:
            parts.append("no record for " + ", ".join(self.missing))
        if self.mismatched:
            parts.append("other images for " + ", ".join(self.mismatched))
        return "; ".join(parts) or "complete"


def coverage(indices_by_attack: Mapping[str, Sequence[int]], ranking_attacks: Sequence[str]) -> Coverage:
    """The coverage of one entry given the image indices of its record per attack."""
    missing = tuple(a for a in ranking_attacks if a not in indices_by_attack)
    present = [a for a in ranking_attacks if a in indices_by_attack]
    reference = list(indices_by_attack[present[0]]) if present else []
    mismatched = tuple(a for a in present if list(indices_by_attack[a]) != reference)
    return Coverage(missing, mismatched)


def worst_case(per_attack: Mapping[str, Sequence[float]]) -> np.ndarray:
    """Per image, the lowest expected accuracy over the attacks: (n,) from {attack: (n,) values}
    (all on the same images, in the same order)."""
    values = np.asarray([list(v) for v in per_attack.values()], dtype=float)
    if values.ndim != 2 or values.shape[0] == 0:
        raise ValueError("worst_case needs at least one attack with per-image values")
    return values.min(axis=0)


def bootstrap_mean_interval(values: Sequence[float], resamples: int = RANK_RESAMPLES * 5,
                            seed: int = RANK_SEED) -> tuple[float, float, float]:
    """Mean of per-image values with a 95% percentile bootstrap interval over images (scipy)."""
    from scipy.stats import bootstrap

    x = np.asarray(values, dtype=float)
    mean = float(x.mean())
    if np.all(x == x[0]):
        return mean, mean, mean
    result = bootstrap((x,), np.mean, vectorized=True, n_resamples=resamples, confidence_level=0.95,
                       method="percentile", rng=np.random.default_rng(seed))
    low, high = result.confidence_interval
    return mean, min(float(low), mean), max(float(high), mean)


def resample_counts(n: int, resamples: int = RANK_RESAMPLES, seed: int = RANK_SEED) -> np.ndarray:
    """(resamples, n): how often each of ``n`` images occurs in each bootstrap resample.

    Written by hand, with the means as one matrix product ``values @ counts.T / n``, because a
    track needs the *same* resamples for hundreds of entries (paired), and scipy's ``bootstrap``
    materialises an (entries, resamples, n) array for that (25 GB for a 10,000-record board)."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n, size=(resamples, n))
    flat = (picks + n * np.arange(resamples)[:, None]).ravel()
    return np.bincount(flat, minlength=resamples * n).reshape(resamples, n).astype(float)


def resampled_means(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(rows, resamples) bootstrap means of (rows, n) per-image values, paired by image."""
    return np.asarray(values, dtype=float) @ counts.T / counts.shape[1]


def mean_intervals(values: np.ndarray, counts: np.ndarray) -> list[tuple[float, float, float]]:
    """Per row of (rows, n) per-image values: (mean, low, high), the 95% percentile bootstrap
    interval over the shared resamples ``counts`` (constant rows get a zero-width interval)."""
    values = np.asarray(values, dtype=float)
    if values.shape[0] == 0:
        return []
    means = values.mean(axis=1)
    low, high = np.percentile(resampled_means(values, counts), [2.5, 97.5], axis=1)
    return [(float(m), min(float(lo), float(m)), max(float(hi), float(m)))
            for m, lo, hi in zip(means, low, high)]


def _values(per_entry: Mapping[str, Sequence[float]]) -> tuple[list[str], np.ndarray]:
    names = list(per_entry)
    if len({len(per_entry[n]) for n in names}) > 1:
        raise ValueError("paired statistics need every entry on the same images")
    return names, np.asarray([list(per_entry[n]) for n in names], dtype=float)  # (entries, n)


def competition_ranks(means: np.ndarray) -> np.ndarray:
    """(..., entries) means -> ranks, 1 = highest mean, ties share the best rank (as scipy's
    ``rankdata(-means, method="min")``).

    By hand from one argsort because ``rankdata`` over the (resamples, entries) matrix of a track
    took about a second per track; ``tests/test_ranking.py`` checks it against ``rankdata``."""
    values = -np.asarray(means, dtype=float)
    order = np.argsort(values, axis=-1, kind="stable")
    ordered = np.take_along_axis(values, order, axis=-1)
    position = np.broadcast_to(np.arange(values.shape[-1]), values.shape)
    starts = np.ones(values.shape, dtype=bool)
    starts[..., 1:] = ordered[..., 1:] != ordered[..., :-1]  # first of a run of equal means
    first = np.maximum.accumulate(np.where(starts, position, 0), axis=-1)  # where the run starts
    ranks = np.empty(values.shape, dtype=int)
    np.put_along_axis(ranks, order, first + 1, axis=-1)
    return ranks


def rank_intervals(per_entry: Mapping[str, Sequence[float]], resamples: int = RANK_RESAMPLES,
                   seed: int = RANK_SEED) -> dict[str, tuple[int, int, int]]:
    """``{entry: (rank, low, high)}``: the point rank by mean (1 = highest; ties share the best
    rank) and the 95% interval of its rank over paired bootstrap resamples of the images."""
    names, values = _values(per_entry)
    point = competition_ranks(values.mean(axis=1))
    boot = competition_ranks(resampled_means(values, resample_counts(values.shape[1], resamples, seed)).T)
    low = np.floor(np.percentile(boot, 2.5, axis=0)).astype(int)
    high = np.ceil(np.percentile(boot, 97.5, axis=0)).astype(int)
    return {n: (int(point[i]), int(min(low[i], point[i])), int(max(high[i], point[i]))) for i, n in enumerate(names)}


def significant_pairs(per_entry: Mapping[str, Sequence[float]], resamples: int = RANK_RESAMPLES,
                      seed: int = RANK_SEED) -> dict[str, tuple[list[str], list[str]]]:
    """``{entry: (above, below)}``: the entries whose paired difference to it has a 95% percentile
    bootstrap interval (the same image resamples as :func:`rank_intervals`) entirely above / below 0.

    One entry at a time (entries x resamples memory, not entries² x resamples), deciding each
    pair by counting instead of sorting (:func:`_percentile_signs`)."""
    names, values = _values(per_entry)
    boot = resampled_means(values, resample_counts(values.shape[1], resamples, seed))  # (entries, resamples)
    result: dict[str, tuple[list[str], list[str]]] = {}
    for j, name in enumerate(names):
        low_positive, high_negative = _percentile_signs(boot, boot[j])  # entry i − entry j
        above = [names[i] for i in np.flatnonzero(low_positive) if i != j]
        below = [names[i] for i in np.flatnonzero(high_negative) if i != j]
        result[name] = (above, below)
    return result


def _percentile_signs(boot: np.ndarray, reference: np.ndarray, q: tuple[float, float] = (2.5, 97.5)) -> tuple[np.ndarray, np.ndarray]:
    """Per row i of (rows, B) ``boot``: whether ``np.percentile(boot[i] - reference, q[0]) > 0`` and
    whether ``np.percentile(boot[i] - reference, q[1]) < 0``, exactly as numpy decides them.

    numpy's (linear) percentile lies between the order statistics ``floor(h)`` and ``ceil(h)``,
    h = q/100 · (B − 1), so the count of non-positive (negative) differences settles the sign
    unless it falls between the two; only those rows are sorted. Counting is an order of
    magnitude faster than the partial sort ``np.percentile`` does for every pair, which made a
    10,000-record site build spend most of its time here."""
    n = boot.shape[1]
    low_h, high_h = (qq / 100 * (n - 1) for qq in q)
    non_positive = np.count_nonzero(boot <= reference, axis=1)  # boot_i − ref ≤ 0 exactly when boot_i ≤ ref
    negative = np.count_nonzero(boot < reference, axis=1)
    # low > 0 iff order statistic floor(h) > 0 (count ≤ floor) ... unless between floor and ceil
    low_positive = non_positive <= np.floor(low_h)
    unsure_low = (non_positive > np.floor(low_h)) & (non_positive <= np.ceil(low_h))
    # high < 0 iff order statistic ceil(h) < 0 (count ≥ ceil + 1) ... unless between floor and ceil
    high_negative = negative >= np.ceil(high_h) + 1
    unsure_high = (negative > np.floor(high_h)) & (negative <= np.ceil(high_h))
    for rows, q_value, out, test in ((np.flatnonzero(unsure_low), q[0], low_positive, np.greater),
                                     (np.flatnonzero(unsure_high), q[1], high_negative, np.less)):
        if rows.size:
            out[rows] = test(np.percentile(boot[rows] - reference, q_value, axis=1), 0)
    return low_positive, high_negative
