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
