"""Overestimate flags (bench/publish/overestimates.py): only White-box records of the ranked entry on
the track's images, significantly below its worst case, flag it."""

from __future__ import annotations

from types import SimpleNamespace as NS

import pytest

from bench.publish.overestimates import overestimates

N, K = 64, 10


def _record(correct: list[int], indices: list[int] | None = None) -> NS:
    return NS(dataset=NS(sample_indices=indices or list(range(N))), eval_draws=K, samples=NS(adv_correct=correct),
              attack=NS(name="pgd_eot", config={"steps": 200}), protocol=None,
              robust=NS(expected=NS(acc=sum(correct) / (K * len(correct)))))


def _track(extra_setting: str, extra_correct: list[int], indices: list[int] | None = None):
    ranked_row = NS(entry="d", setting="white", path="d__pgd_eot__white.json")
    extra_row = NS(entry="d", setting=extra_setting, path="d__extra.json")
    entry = NS(entry="d", records={"pgd_eot": ranked_row}, worst=[0.5] * N, robust=(0.5, 0.4, 0.6))
    bodies = {ranked_row.path: _record([5] * N), extra_row.path: _record(extra_correct, indices)}
    track = NS(ranked=[entry], records=[ranked_row, extra_row], indices=list(range(N)))
    return track, lambda row: bodies[row.path]


@pytest.mark.parametrize("setting, correct, indices, flagged", [
    ("white", [2] * N, None, True),                         # far below the worst case: flagged
    ("white", [5] * N, None, False),                        # equal: not
    ("white", [4, 6] * (N // 2), None, False),              # no significant difference
    ("dw_both", [0] * N, None, False),                      # a stronger attacker knowledge is not the threat model
    ("white", [0] * N, list(range(1, N + 1)), False),       # other images: not paired
])
def test_only_a_significantly_stronger_white_box_record_on_the_same_images_flags(setting, correct, indices,
                                                                                   flagged) -> None:
    track, parsed = _track(setting, correct, indices)
    found = overestimates(track, parsed)
    assert bool(found.get("d")) is flagged
    if flagged:
        (o,) = found["d"]
        assert o.attack == "pgd_eot[steps=200]" and o.robust == pytest.approx(0.2) and o.difference["ci_high"] < 0


def test_the_flag_rarely_fires_when_the_other_attack_is_no_stronger() -> None:
    """Simulation of the null: per image, the extra record's K evaluation draws and the worst case
    have the same success probability (drawn per image from the toy's spread). The flag needs the
    95% paired interval below zero, so it should fire in at most about 2.5% of repeats (one-sided);
    the bound allows for 300 repeats' sampling error. And it does fire when the other attack is
    really stronger by 0.1 per image."""
    import numpy as np

    from bench.core.metrics import paired_difference

    rng = np.random.default_rng(7)
    fired, power = 0, 0
    repeats = 300
    for _ in range(repeats):
        p = rng.beta(0.6, 2.5, N)  # per-image robust probabilities, mean ≈ 0.19 like the toy purifiers
        worst = rng.binomial(K, p) / K
        other = rng.binomial(K, p) / K
        stronger = rng.binomial(K, np.clip(p - 0.1, 0, 1)) / K
        fired += paired_difference(other.tolist(), worst.tolist())["ci_high"] < 0
        power += paired_difference(stronger.tolist(), worst.tolist())["ci_high"] < 0
    assert fired / repeats <= 0.05, f"false flags in {fired} of {repeats} null repeats"
    assert power / repeats >= 0.5, f"a 0.1 stronger attack flagged in only {power} of {repeats}"
