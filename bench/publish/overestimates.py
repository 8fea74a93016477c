"""Overestimates: a ranked entry whose number another attack beats.

A ranked robust accuracy is the per-image worst case over the track's ranking attacks, all with
exact gradients (:mod:`bench.publish.tracks`). It is an upper bound on the entry's robustness, and
any other White-box record of the same entry on the same images — an approximate-gradient mode
(``gradient=detach_guidance`` on a guided purifier), a larger budget, another attack (AutoAttack
standard on a deterministic entry) — that leaves significantly less is evidence that the ranking
attacks missed something. Such records never rank (they are off the track's protocol); they flag
the ranked row instead, on the site and in the README's table.

Per image, the other record's expected accuracy over its K evaluation draws is paired with the
entry's worst-case accuracy (chosen by selection draws, scored on independent evaluation draws, so
both are unbiased per-image estimates); the flag needs the 95% paired bootstrap interval of the
difference (:func:`bench.core.metrics.paired_difference`) below zero. The interval is per record:
an entry with m extra records is flagged by chance with probability up to about m × 2.5% when none
is really stronger.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.core.metrics import paired_differences


@dataclass(frozen=True)
class Overestimate:
    entry: str
    attack: str  # the other record's attack label, e.g. "pgd_eot[gradient=detach_guidance]"
    robust: float  # its expected robust accuracy
    ranked_robust: float  # the entry's ranked worst case
    difference: dict[str, float]  # other − ranked, per image: mean, ci_low, ci_high, n
    path: str


def overestimates(track: Any, parsed: Any) -> dict[str, list[Overestimate]]:
    """entry -> the White-box records of ``track`` (rows with ``entry``, ``setting``, ``path``) that
    beat its ranked worst case on the same images, strongest first."""
    from bench.publish.records import attack_label

    ranked = {e.entry: e for e in track.ranked}
    chosen = {r.path for e in track.ranked for r in e.records.values()}
    candidates = []
    for row in track.records:
        entry = ranked.get(row.entry)
        if entry is None or row.setting != "white" or row.path in chosen:
            continue
        record = parsed(row)
        if list(record.dataset.sample_indices) != list(track.indices):
            continue
        candidates.append((row, record, entry, [c / record.eval_draws for c in record.samples.adv_correct]))
    found: dict[str, list[Overestimate]] = {}
    differences = paired_differences([(per_image, entry.worst) for *_, entry, per_image in candidates])
    for (row, record, entry, _), difference in zip(candidates, differences):
        if difference["ci_high"] < 0:
            label = attack_label(record.attack.name, record.attack.config, record.protocol)
            found.setdefault(row.entry, []).append(
                Overestimate(row.entry, label, record.robust.expected.acc, entry.robust[0], difference, row.path))
    for items in found.values():
        items.sort(key=lambda o: o.robust)
    return found
