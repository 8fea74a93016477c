"""The per-sample worst case over attacks, chosen with draws that do not score it.

**What it estimates.** For each image, an attacker who ran several attacks queries the deployed
defense with each attack's adversarial input (K *selection* draws each, keyed apart from the
evaluation's, see :meth:`bench.core.settings.Setting.selection_keys`) and submits the input its own
queries say is strongest (lowest selection accuracy; ties split evenly). The estimate is that
input's accuracy over the K *evaluation* draws:

    worst_i = mean_{a ∈ C_i} ê_{a,i},   C_i = argmin_a ŝ_{a,i},

where ŝ_{a,i} and ê_{a,i} are attack a's selection and evaluation accuracy on image i. Because the
evaluation draws are independent of the selection draws, E[worst_i | selection] = mean_{a ∈ C_i}
p_{a,i} exactly (p = the true accuracy): the estimator is unbiased for the accuracy left to that
attacker. Rob(M) uses the same choice C_i with the evaluation draws' unbiased Rob(M) estimates.

**The rule it replaces** (``min_rule``): min_a ê_{a,i}, the minimum of noisy estimates, which is
biased below min_a p_{a,i} (winner's curse); :func:`simulate_bias` measures both.

Written with numpy by hand: the choice per image over attacks and draws is a few array operations
that no statistics library packages.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.core.metrics import resubmission_estimates


def _choice(select_acc: np.ndarray) -> np.ndarray:
    """(..., A, n) selection accuracies -> (..., A, n) weights: 1/|C_i| for the attacks tied at the minimum."""
    chosen = select_acc == select_acc.min(axis=-2, keepdims=True)
    return chosen / chosen.sum(axis=-2, keepdims=True)


def selected_worst(select_correct: np.ndarray, eval_correct: np.ndarray) -> np.ndarray:
    """Per-image worst case chosen by the selection draws and scored by the evaluation draws.

    Args:
        select_correct: (..., A, n, K) bool, attack a's selection draw k on image i was correct
            (leading axes: independent entries, each computed as on its own, bit for bit).
        eval_correct: (..., A, n, K') bool, the same for the evaluation draws.
    Returns:
        (..., n) floats in [0, 1].
    """
    weights = _choice(np.asarray(select_correct, dtype=float).mean(axis=-1))
    return (weights * np.asarray(eval_correct, dtype=float).mean(axis=-1)).sum(axis=-2)


def selected_worst_rob_m(select_correct: np.ndarray, eval_counts: np.ndarray, draws: int) -> np.ndarray:
    """(..., n, K) per-image Rob(M), M = 1..K, of the attack chosen per image by the selection draws.

    Args:
        select_correct: (..., A, n, K) bool selection outcomes.
        eval_counts: (..., A, n) correct evaluation draws per attack and image (0..K).
    """
    weights = _choice(np.asarray(select_correct, dtype=float).mean(axis=-1))  # (..., A, n)
    estimates = resubmission_estimates(np.asarray(eval_counts), draws)  # (..., A, n, K)
    return (weights[..., None] * estimates).sum(axis=-3)


def min_rule(eval_correct: np.ndarray) -> np.ndarray:
    """The replaced rule: per image, the lowest evaluation accuracy over the attacks, (..., n)."""
    return np.asarray(eval_correct, dtype=float).mean(axis=-1).min(axis=-2)


@dataclass(frozen=True)
class BiasReport:
    """Mean over repeats of (estimate − its target), averaged over images.

    ``min_rule_bias``: min_a ê − min_a p (the replaced rule against the per-image minimum).
    ``selected_bias``: selected worst − mean_{a ∈ C} p (the estimator against what it estimates).
    ``selected_gap``: mean_{a ∈ C} p − min_a p (how much weaker the chosen attack is than the best
    one in hindsight: the price of choosing with K queries; not a bias of the estimator).
    The ``*_se`` fields are Monte-Carlo standard errors."""

    min_rule_bias: float
    min_rule_se: float
    selected_bias: float
    selected_se: float
    selected_gap: float
    repeats: int
    correlation: float


def simulate_bias(accuracies: np.ndarray, draws: int, repeats: int = 400, correlation: float = 0.0,
                  seed: int = 0) -> BiasReport:
    """Draw K selection and K evaluation outcomes per attack and image from known per-image
    accuracies and measure both rules' bias.

    Args:
        accuracies: (A, n) true accuracy of attack a's input on image i.
        draws: K.
        correlation: the probability that a draw's uniform is shared by every attack (draw k of
            every attack uses the same noise key in the harness, which correlates their outcomes;
            1 makes them comonotone, 0 independent).
    """
    p = np.asarray(accuracies, dtype=float)
    rng = np.random.default_rng(seed)
    attacks, n = p.shape
    target_min = p.min(axis=0).mean()
    old, new, gap = [], [], []
    for _ in range(repeats):
        select, evaluate = (_outcomes(rng, p, draws, correlation) for _ in range(2))
        weights = _choice(select.mean(axis=2))
        truth = (weights * p).sum(axis=0).mean()
        old.append(min_rule(evaluate).mean() - target_min)
        new.append(selected_worst(select, evaluate).mean() - truth)
        gap.append(truth - target_min)
    old_a, new_a = np.asarray(old), np.asarray(new)
    return BiasReport(float(old_a.mean()), float(old_a.std(ddof=1) / np.sqrt(repeats)), float(new_a.mean()),
                      float(new_a.std(ddof=1) / np.sqrt(repeats)), float(np.mean(gap)), repeats, correlation)


def _outcomes(rng: np.random.Generator, p: np.ndarray, draws: int, correlation: float) -> np.ndarray:
    """(A, n, K) Bernoulli(p) outcomes; each draw's uniform is shared across attacks with
    probability ``correlation``."""
    attacks, n = p.shape
    own = rng.random((attacks, n, draws))
    shared = rng.random((1, n, draws))
    use_shared = rng.random((1, n, draws)) < correlation
    return np.where(use_shared, shared, own) < p[:, :, None]
