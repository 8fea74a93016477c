"""Leaderboard tracks: which records rank, by which rule, and with which uncertainty.

A track is one dataset x threat model x protocol (``bench/protocols``; records without one are
the ``paper`` protocol). Its **ranking attacks** come from the protocol. Only White-box records
that were run exactly under the protocol rank (:mod:`bench.publish.conformance`); every other
record of a ranking attack is listed as *off-protocol* with its differences. For each entry, per
ranking attack, the on-protocol record with the lowest robust accuracy is taken; then:

- an entry is **ranked** only when every ranking attack has such a record on the track's images
  (the protocol's indices 0..n−1, else the most common index set); otherwise it is listed as
  *incomplete* with what is missing;
- its robust accuracy is the mean over images of the **per-sample worst case** over the ranking
  attacks, chosen per image by the attacker's selection draws and scored by the evaluation draws
  (:mod:`bench.publish.worstcase`: unbiased for the accuracy left when an attacker picks, per
  image, the attack its own queries say is strongest); Rob(M) uses the same choice;
- every accuracy carries the 95% Wilson interval over the images
  (:func:`bench.core.metrics.mean_interval`);
- ranked entries share their images, so they get **rank intervals** from a paired bootstrap and
  Holm-adjusted paired tests between every pair (:mod:`bench.publish.ranking`).
"""

from __future__ import annotations

import functools
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.core.attack import ATTACKS
from bench.core.metrics import mean_intervals, wilson_interval
from bench.protocols import PAPER, Protocol, load_protocol
from bench.publish.conformance import protocol_differences
from bench.publish.ranking import RANK_RESAMPLES, RANK_SEED, PairTests, coverage, rank_intervals, significant_pairs
from bench.publish.worstcase import min_rule, selected_worst, selected_worst_rob_m

PAPER_RANKING_ATTACKS = ("pgd_eot", "aa_rand_fixed", "diffhammer")  # tracks of the paper protocol (CIFAR)


@dataclass
class RankedEntry:
    entry: str
    slug: str
    records: dict[str, Any]  # ranking attack -> RecordRow (the strongest record of that attack)
    clean: tuple[float, float, float]
    robust: tuple[float, float, float]  # per-sample worst case (selected): mean, 95% CI
    n: int
    rank: tuple[int, int, int] = (0, 0, 0)  # point rank, interval low, high
    above: list[str] = field(default_factory=list)  # entries significantly better than this one
    below: list[str] = field(default_factory=list)
    rob_m: list[dict[str, float]] = field(default_factory=list)
    worst: list[float] = field(default_factory=list, repr=False)  # per-image worst-case accuracy
    cost_per_image: float = 0.0  # attack seconds per image, summed over the ranking attacks
    addt: bool = False
    paper: str = ""
    per_attack: dict[str, float | None] = field(default_factory=dict)  # mean robust accuracy per ranking attack
    min_rule: float = 0.0  # the replaced rule, mean over images of min over attacks (biased low; for reference)
    labels_checked: bool = True  # every record's labels were compared with the dataset

    @property
    def rank_label(self) -> str:
        _, low, high = self.rank
        return str(low) if low == high else f"{low}–{high}"


@dataclass
class IncompleteEntry:
    entry: str
    slug: str
    missing: str
    per_attack: dict[str, float | None]
    n: dict[str, int]
    addt: bool = False


@dataclass
class OffProtocol:
    """A White-box record of a ranking attack that was not run under the track's protocol."""

    entry: str
    attack: str
    path: str
    differences: list[str]

    @property
    def reason(self) -> str:
        return "off-protocol: " + "; ".join(self.differences)


@dataclass
class Track:
    dataset: str
    threat: str
    protocol: Protocol
    title: str
    ranking_attacks: tuple[str, ...]
    indices: list[int]
    ranked: list[RankedEntry] = field(default_factory=list)
    incomplete: list[IncompleteEntry] = field(default_factory=list)
    records: list[Any] = field(default_factory=list)  # every record of the track (diagnostics included)
    off_protocol: list[OffProtocol] = field(default_factory=list)
    pair_tests: PairTests | None = None

    @property
    def table_id(self) -> str:
        return f"{self.dataset}__{self.threat}__{self.protocol.key}"

    @functools.cached_property
    def record_paths(self) -> frozenset[str]:
        return frozenset(r.path for r in self.records)

    @property
    def cpu_seconds(self) -> float:
        """Wall time of the ranked entries' ranking records (what re-producing the table costs)."""
        return sum(r.attack_seconds for e in self.ranked for r in e.records.values())

    def budgets(self) -> list[tuple[str, str]]:
        """(attack, its configuration in the ranked records) for the protocol panel."""
        seen: dict[str, str] = {}
        for e in self.ranked:
            for attack, r in e.records.items():
                seen.setdefault(attack, r.attack_label)
        return [(a, seen.get(a, "no ranked record yet")) for a in self.ranking_attacks]


def _protocol(key: str | None) -> Protocol:
    try:
        return load_protocol(key or PAPER)
    except Exception:  # a record names a protocol this checkout does not have: group it as unknown
        return Protocol(key or PAPER, key or PAPER, None, "protocol file not in this checkout")


def _ranking_attacks(protocol: Protocol) -> tuple[str, ...]:
    attacks = protocol.ranking_attacks or PAPER_RANKING_ATTACKS
    return tuple(a for a in attacks if a in ATTACKS and ATTACKS.get(a).ranks)


def _score(entries: list[RankedEntry], bodies: list[list[Any]]) -> None:
    """Fill in each entry's per-sample worst case over its ranking attacks' records ``bodies``
    (:mod:`bench.publish.worstcase`), its robust and clean accuracy with their intervals, Rob(M) and
    the replaced min rule. All entries of one shape (dataset, images n, draws K) are computed at
    once as (entries, attacks, n, K) arrays: bit for bit what one entry at a time gives (each
    entry's reductions run over the same contiguous axes), and a fraction of the time of 1,668
    entries' small-array calls (a 10,000-record board)."""
    from bench.publish.records import decode_preds, pred_width

    groups: dict[tuple[str, int, int], list[int]] = defaultdict(list)
    for i, records in enumerate(bodies):
        groups[(records[0].dataset.name, len(records[0].samples.label), records[0].eval_draws)].append(i)
    for (dataset, n, k), members in groups.items():
        flat = [record for i in members for record in bodies[i]]
        shape = (len(members), len(bodies[members[0]]), n, k)  # (E, A, n, K)
        labels = np.asarray([record.samples.label for record in flat]).reshape(shape[:3] + (1,))
        width = pred_width(dataset)
        select = decode_preds([row for r in flat for row in r.samples.select_preds], width).reshape(shape) == labels
        evaluate = decode_preds([row for r in flat for row in r.samples.adv_preds], width).reshape(shape) == labels
        worst = selected_worst(select, evaluate)  # (E, n)
        rob_m = selected_worst_rob_m(select, np.asarray([r.samples.adv_correct for r in flat]).reshape(shape[:3]), k)
        clean = np.asarray([bodies[i][0].samples.clean_correct for i in members], dtype=float) / k  # (E, n)
        clean_means, worst_means = (clean.mean(axis=1), worst.mean(axis=1)) if n else (np.zeros(len(members)),) * 2
        min_rules = min_rule(evaluate).mean(axis=1) if n else np.zeros(len(members))
        means, lows, highs = mean_intervals(rob_m)  # (E, K) each: mean_interval of every column, at once
        for row, i in enumerate(members):
            entry = entries[i]
            entry.clean = (float(clean_means[row]), *wilson_interval(float(clean_means[row]), n))
            entry.robust = (float(worst_means[row]), *wilson_interval(float(worst_means[row]), n))
            entry.n, entry.worst, entry.min_rule = n, worst[row].tolist(), float(min_rules[row])
            entry.rob_m = [{"m": m + 1, "acc": float(means[row, m]), "ci_low": float(lows[row, m]),
                            "ci_high": float(highs[row, m])} for m in range(k)]


def build_tracks(rows: list[Any], parsed: Any, titles: dict[str, str]) -> list[Track]:
    """Group record rows into tracks and rank each (``parsed(row)`` gives the full record)."""
    groups: dict[tuple[str, str, str], list[Any]] = defaultdict(list)
    for row in rows:
        groups[(row.dataset, row.threat, parsed(row).protocol or PAPER)].append(row)
    tracks = []
    for (dataset, threat, key), records in groups.items():
        protocol = _protocol(key)
        attacks = _ranking_attacks(protocol)
        suffix = "" if key == PAPER else f", protocol {protocol.name}"
        track = Track(dataset, threat, protocol, f"{titles.get(dataset, dataset)} — {threat}{suffix}", attacks, [],
                      records=records)
        _rank(track, records, parsed)
        tracks.append(track)
    order = {"cifar10": 0, "cifar100": 1, "tinyimagenet": 2, "toy": 3}
    tracks.sort(key=lambda t: (order.get(t.dataset, 9), not t.threat.startswith("linf"), t.threat,
                               t.protocol.key == PAPER, t.protocol.key))
    return tracks


def _strongest(records: list[Any], attack: str) -> Any | None:
    candidates = [r for r in records if r.attack == attack]
    return min(candidates, key=lambda r: (r.robust_acc, r.path)) if candidates else None


def _rank(track: Track, records: list[Any], parsed: Any) -> None:
    by_entry: dict[str, list[Any]] = defaultdict(list)
    eligible: dict[str, list[Any]] = defaultdict(list)
    for r in records:
        by_entry[r.entry].append(r)
        if r.setting != "white" or r.attack not in track.ranking_attacks:
            continue
        differences = protocol_differences(parsed(r), track.protocol)
        if differences:
            track.off_protocol.append(OffProtocol(r.entry, r.attack, r.path, differences))
        else:
            eligible[r.entry].append(r)
    strongest = {entry: {a: _strongest(eligible.get(entry, []), a) for a in track.ranking_attacks}
                 for entry in by_entry}
    index_sets: Counter[tuple[int, ...]] = Counter()
    for entry, chosen in strongest.items():
        sets = {tuple(parsed(r).dataset.sample_indices) for r in chosen.values() if r is not None}
        if len(sets) == 1 and all(chosen.values()):
            index_sets[sets.pop()] += 1
    if track.protocol.n_samples:
        track.indices = list(range(track.protocol.n_samples))
    elif index_sets:
        track.indices = list(max(index_sets.items(), key=lambda kv: (kv[1], len(kv[0])))[0])
    off_by_entry: dict[str, Counter[str]] = defaultdict(Counter)
    for off in track.off_protocol:
        off_by_entry[off.entry][off.attack] += 1
    complete: list[RankedEntry] = []
    scored: list[list[Any]] = []  # each complete entry's records of the ranking attacks, in their order
    for entry in sorted(by_entry):
        chosen = strongest[entry]
        if not any(chosen.values()) and not any(r.setting == "white" for r in by_entry[entry]):
            continue  # diagnostics only (DW settings): shown on the entry page
        present = {a: list(parsed(r).dataset.sample_indices) for a, r in chosen.items() if r is not None}
        status = coverage(present, track.ranking_attacks)
        off_track = [a for a, idx in present.items() if idx != track.indices]
        slug = _slug(entry)
        first = next((r for r in chosen.values() if r is not None), None) or by_entry[entry][0]
        addt, paper = parsed(first).defense.addt, parsed(first).defense.paper
        per_attack = {a: (r.robust_acc if r is not None else None) for a, r in chosen.items()}
        draws = {parsed(r).eval_draws for r in chosen.values() if r is not None}
        if not status.complete or off_track or len(draws) > 1:
            reasons = [status.describe()] if not status.complete else []
            off = off_by_entry.get(entry)
            if off and not status.complete:
                reasons.append("off-protocol records: " + ", ".join(f"{a} ({c})" for a, c in sorted(off.items())))
            if off_track and status.complete:
                reasons.append(f"{len(present[off_track[0]])} images, not the track's {len(track.indices)} "
                               f"(indices {track.indices[0]}–{track.indices[-1]})" if track.indices else "")
            if len(draws) > 1:
                reasons.append(f"attacks with different evaluation draws ({sorted(draws)})")
            track.incomplete.append(IncompleteEntry(entry, slug, "; ".join(filter(None, reasons)), per_attack,
                                                    {a: r.n_samples for a, r in chosen.items() if r is not None}, addt))
            continue
        bodies = [parsed(chosen[a]) for a in track.ranking_attacks]
        complete.append(RankedEntry(
            entry, slug, chosen, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), len(track.indices), addt=addt, paper=paper,
            per_attack=per_attack, cost_per_image=sum(r.attack_seconds / max(r.n_samples, 1) for r in chosen.values()),
            labels_checked=all(getattr(b, "_labels_checked", False) for b in bodies)))
        scored.append(bodies)
    _score(complete, scored)
    if complete:
        intervals = rank_intervals({e.entry: e.worst for e in complete}, RANK_RESAMPLES, RANK_SEED)
        for e in complete:
            e.rank = intervals[e.entry]
        track.pair_tests = significant_pairs({e.entry: e.worst for e in complete})
        for e in complete:
            e.above, e.below = track.pair_tests.relations[e.entry]
    complete.sort(key=lambda e: (e.rank[0], -e.robust[0], -e.clean[0], e.entry))
    track.ranked = complete
    track.incomplete.sort(key=lambda e: e.entry)
    track.off_protocol.sort(key=lambda o: (o.entry, o.attack, o.path))


def _slug(entry: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.=,+-]+", "-", entry).strip("-") or "entry"


def ranking_summary(track: Track) -> dict[str, Any]:
    """The ranked table as plain data (for the CSV, tests and closing notes)."""
    return {
        "track": track.table_id, "ranking_attacks": list(track.ranking_attacks),
        "rank_resamples": RANK_RESAMPLES, "seed": RANK_SEED,
        "rows": [{"rank": e.rank_label, "entry": e.entry, "clean": e.clean, "robust": e.robust, "n": e.n,
                  "min_rule": e.min_rule} for e in track.ranked],
        "incomplete": [{"entry": e.entry, "missing": e.missing} for e in track.incomplete],
        "off_protocol": [{"entry": o.entry, "attack": o.attack, "path": o.path, "reason": o.reason}
                         for o in track.off_protocol],
    }


def markdown_table(track: Track, overestimates: dict[str, list[Any]] | None = None) -> str:
    """The ranked table as Markdown (the README's copy is generated from this and checked by a test).
    ``overestimates``: entry -> its other White-box records that beat the ranked worst case
    (:func:`bench.publish.overestimates.overestimates`), marked in the robust cell and listed below."""
    overestimates = overestimates or {}
    attacks = list(track.ranking_attacks)
    lines = ["| rank | entry | clean [95% CI] | robust, worst case [95% CI] | " + " | ".join(attacks) + " | n |",
             "|---|---|---|---|" + "---|" * len(attacks) + "---|"]

    def cell(value: tuple[float, float, float]) -> str:
        return f"{value[0]:.3f} [{value[1]:.3f}, {value[2]:.3f}]"

    for e in track.ranked:
        per_attack = " | ".join("" if e.per_attack[a] is None else f"{e.per_attack[a]:.3f}" for a in attacks)
        mark = " (!)" if overestimates.get(e.entry) else ""
        lines.append(f"| {e.rank_label} | `{e.entry}` | {cell(e.clean)} | **{cell(e.robust)}**{mark} | {per_attack} | {e.n} |")
    notes = [f"(!) `{e.entry}`: overestimated — `{x.attack}` reaches {x.robust:.3f}, "
             f"{x.difference['mean']:+.3f} [{x.difference['ci_low']:+.3f}, {x.difference['ci_high']:+.3f}] against "
             f"the ranked worst case on the same {x.difference['n']} images (it does not rank)."
             for e in track.ranked for x in overestimates.get(e.entry, [])]
    return "\n".join(lines + ([""] + notes if notes else []))
