"""The hand-written Student-t tail (bench.core.student_t) against closed forms and scipy."""

from __future__ import annotations

import numpy as np
import pytest

from bench.core.student_t import regularized_incomplete_beta, two_sided_p

T_GRID = np.concatenate([[0.0, 1e-9, 1e-6], np.logspace(-4, 3, 600), [1e6, np.inf]])


def test_closed_forms_for_one_and_two_degrees_of_freedom() -> None:
    """ν = 1 is the Cauchy distribution, ν = 2 has p = 1 − |t| / sqrt(2 + t²)."""
    t = T_GRID[np.isfinite(T_GRID)]
    cauchy = np.where(t > 0, 2 / np.pi * np.arctan(1 / np.where(t > 0, t, 1)), 1.0)  # 1 − (2/π) atan(t), no cancellation
    assert np.allclose(two_sided_p(t, 1), cauchy, rtol=1e-13, atol=0)
    two = 2 / (np.sqrt(2 + t * t) * (np.sqrt(2 + t * t) + t))  # 1 − t/sqrt(2 + t²) without cancellation
    assert np.allclose(two_sided_p(t, 2), two, rtol=1e-13, atol=0)


@pytest.mark.parametrize("dof", [3, 4, 10, 39, 63, 99, 639, 9_999, 100_000])
def test_equals_scipy_stdtr(dof: int) -> None:
    from scipy.special import stdtr

    reference = 2 * stdtr(dof, -T_GRID)
    got = two_sided_p(T_GRID, dof)
    shown = reference > 1e-300
    tolerance = 1e-12 if dof < 100 else 1e-9  # log B(ν/2, 1/2) loses digits to cancellation at large ν
    assert np.allclose(got[shown], reference[shown], rtol=tolerance, atol=0)
    assert got[0] == 1.0 and got[-1] == 0.0
    assert np.all(np.diff(got) <= 0)  # a tail: falls as |t| grows
    assert np.array_equal(two_sided_p(-T_GRID, dof), got)


def test_incomplete_beta_edges_and_bad_input() -> None:
    assert regularized_incomplete_beta(2.0, 3.0, np.array([0.0, 1.0])).tolist() == [0.0, 1.0]
    # I_x(1, 1) = x
    x = np.linspace(0.01, 0.99, 50)
    assert np.allclose(regularized_incomplete_beta(1.0, 1.0, x), x, rtol=1e-14)
    with pytest.raises(ValueError, match="0 <= x <= 1"):
        regularized_incomplete_beta(1.0, 1.0, np.array([1.5]))
    with pytest.raises(ValueError, match="degrees of freedom must be positive, got 0"):
        two_sided_p(np.array([1.0]), 0)
