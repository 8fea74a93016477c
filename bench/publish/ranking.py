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
    """Mean of per-image values with a 95% percentile bootstrap interval over images."""
    from scipy.stats import bootstrap

    x = np.asarray(values, dtype=float)
    mean = float(x.mean())
    if np.all(x == x[0]):
        return mean, mean, mean
    result = bootstrap((x,), np.mean, vectorized=True, n_resamples=resamples, confidence_level=0.95,
                       method="percentile", rng=np.random.default_rng(seed))
    low, high = result.confidence_interval
    return mean, min(float(low), mean), max(float(high), mean)


def rank_intervals(per_entry: Mapping[str, Sequence[float]], resamples: int = RANK_RESAMPLES,
                   seed: int = RANK_SEED) -> dict[str, tuple[int, int, int]]:
    """``{entry: (rank, low, high)}``: the point rank by mean (1 = highest; ties share the best
    rank) and the 95% interval of its rank over paired bootstrap resamples of the images."""
    names = list(per_entry)
    values = np.asarray([list(per_entry[n]) for n in names], dtype=float)  # (entries, n)
    if len({len(per_entry[n]) for n in names}) > 1:
        raise ValueError("rank intervals need every entry on the same images")

    def ranks(means: np.ndarray) -> np.ndarray:  # (..., entries) -> competition ranks, 1 = best
        return 1 + (means[..., None, :] > means[..., :, None]).sum(axis=-1)

    point = ranks(values.mean(axis=1))
    boot = ranks(_resampled_means(values, resamples, seed).T)  # (resamples, entries)
    low = np.floor(np.percentile(boot, 2.5, axis=0)).astype(int)
    high = np.ceil(np.percentile(boot, 97.5, axis=0)).astype(int)
    return {n: (int(point[i]), int(min(low[i], point[i])), int(max(high[i], point[i]))) for i, n in enumerate(names)}


def _resampled_means(values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """(entries, resamples) means over the same image resamples for every entry (paired)."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, values.shape[1], size=(resamples, values.shape[1]))
    return values[:, picks].mean(axis=2)


def significant_pairs(per_entry: Mapping[str, Sequence[float]], resamples: int = RANK_RESAMPLES,
                      seed: int = RANK_SEED) -> dict[str, tuple[list[str], list[str]]]:
    """``{entry: (above, below)}``: the entries whose paired difference to it has a 95% percentile
    bootstrap interval (the same image resamples as :func:`rank_intervals`) entirely above / below 0."""
    names = list(per_entry)
    values = np.asarray([list(per_entry[n]) for n in names], dtype=float)
    boot = _resampled_means(values, resamples, seed)  # (entries, resamples)
    diffs = boot[:, None, :] - boot[None, :, :]  # [i, j] = entry i − entry j
    low, high = np.percentile(diffs, 2.5, axis=2), np.percentile(diffs, 97.5, axis=2)
    result: dict[str, tuple[list[str], list[str]]] = {}
    for j, name in enumerate(names):
        above = [names[i] for i in range(len(names)) if i != j and low[i, j] > 0]
        below = [names[i] for i in range(len(names)) if i != j and high[i, j] < 0]
        result[name] = (above, below)
    return result
