"""Ranking entries that were evaluated on the same images: coverage, rank intervals from a paired
bootstrap over images, and Holm-adjusted paired tests. (The per-image values ranked are the
per-sample worst case of :mod:`bench.publish.worstcase`.)

- **Coverage**: an entry is ranked only when every ranking attack of the track has a record for
  it on the same image indices (:func:`coverage`); otherwise it is listed with what is missing.
- **Significance** (:func:`significant_pairs`): a paired t-test per pair of entries, Holm-adjusted
  over all pairs of the track, so the whole list has a family-wise error of at most 5%. Rank
  intervals are marginal: two entries whose rank intervals overlap may still differ significantly.
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

from bench.core.metrics import percentiles

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
    order = np.argsort(values, axis=-1)  # the order within ties does not matter: they get the run's first place
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
    low_q, high_q = percentiles(boot, [2.5, 97.5], axis=0, overwrite_input=True)  # np.percentile's numbers, faster
    low, high = np.floor(low_q).astype(int), np.ceil(high_q).astype(int)
    return {n: (int(point[i]), int(min(low[i], point[i])), int(max(high[i], point[i]))) for i, n in enumerate(names)}


SIGNIFICANCE_LEVEL = 0.05


@dataclass(frozen=True)
class PairTests:
    """Paired comparisons of every pair of entries on the same images, Holm-adjusted.

    ``relations[entry] = (above, below)``: entries significantly better / worse than ``entry``;
    ``pairs`` the number of pairs tested (the family), ``raw_significant`` how many would be flagged
    at ``level`` without adjustment."""

    relations: dict[str, tuple[list[str], list[str]]]
    pairs: int
    raw_significant: int
    level: float = SIGNIFICANCE_LEVEL


def paired_p_values(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided paired t-test p-values for every pair of rows of (entries, n) per-image values:
    ((entries, entries) p-values, (entries, entries) mean differences row − column).

    All pairs at once from the entries' covariance over images (var(d) = var_i + var_j − 2 cov_ij),
    written by hand because ``scipy.stats.ttest_rel`` takes one pair per call and a 10,000-record
    board has ~10⁵ pairs; the t distribution's tail is :func:`bench.core.student_t.two_sided_p`
    (importing ``scipy.stats`` or ``scipy.special`` for it cost 0.3–1 s of every site build), on
    the upper triangle only (the matrix is symmetric). A pair whose per-image differences are all
    equal has p = 1 when they are 0 and p = 0 otherwise."""
    from bench.core.student_t import two_sided_p

    entries, n = values.shape
    means = values.mean(axis=1)
    centered = values - means[:, None]
    cov = centered @ centered.T / max(n - 1, 1)
    var_d = np.clip(np.diag(cov)[:, None] + np.diag(cov)[None, :] - 2 * cov, 0, None)
    diff = means[:, None] - means[None, :]
    se = np.sqrt(var_d / max(n, 1))
    degenerate = se <= 1e-12
    with np.errstate(divide="ignore", invalid="ignore"):
        t_stat = np.where(degenerate, 0.0, diff / np.where(degenerate, 1.0, se))
    upper = np.triu_indices(entries, k=1)
    p = np.ones((entries, entries))
    p[upper] = two_sided_p(t_stat[upper], max(n - 1, 1))
    p.T[upper] = p[upper]
    p = np.where(degenerate, np.where(np.abs(diff) > 1e-12, 0.0, 1.0), p)
    return p, diff


def holm_reject(p_values: np.ndarray, level: float = SIGNIFICANCE_LEVEL) -> np.ndarray:
    """Holm's step-down procedure (family-wise error ≤ ``level``): which of ``p_values`` (1-D) are
    rejected. Sorted ascending, p_(k) is rejected while p_(j) ≤ level / (m − j) for every j ≤ k."""
    m = p_values.size
    order = np.argsort(p_values, kind="stable")
    passes = p_values[order] <= level / (m - np.arange(m))
    first_fail = int(np.argmin(passes)) if not passes.all() else m
    rejected = np.zeros(m, dtype=bool)
    rejected[order[:first_fail]] = True
    return rejected


def significant_pairs(per_entry: Mapping[str, Sequence[float]], level: float = SIGNIFICANCE_LEVEL) -> PairTests:
    """Which entries differ significantly: a paired t-test per pair on the per-image values
    (the same images), Holm-adjusted over all pairs of the track."""
    names, values = _values(per_entry)
    p, diff = paired_p_values(values)
    upper = np.triu_indices(len(names), k=1)
    rejected = holm_reject(p[upper], level)
    relations: dict[str, tuple[list[str], list[str]]] = {name: ([], []) for name in names}
    for i, j, flagged in zip(*upper, rejected):
        if not flagged:
            continue
        better, worse = (i, j) if diff[i, j] > 0 else (j, i)
        relations[names[worse]][0].append(names[better])
        relations[names[better]][1].append(names[worse])
    for above, below in relations.values():
        above.sort(key=names.index)
        below.sort(key=names.index)
    return PairTests(relations, int(upper[0].size), int((p[upper] <= level).sum()), level)
