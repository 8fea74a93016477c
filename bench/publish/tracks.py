"""Leaderboard tracks: which records rank, by which rule, and with which uncertainty.

A track is one dataset x threat model x protocol (``bench/protocols``; records without one are
the ``paper`` protocol). Its **ranking attacks** come from the protocol. For each entry, per
ranking attack, the White-box record with the lowest robust accuracy is taken; then
(:mod:`bench.publish.ranking`):

- an entry is **ranked** only when every ranking attack has such a record on the track's images
  (the protocol's indices 0..n−1, else the most common index set); otherwise it is listed as
  *incomplete* with what is missing;
- its robust accuracy is the mean over images of the **per-sample worst case** over the ranking
  attacks (each image's lowest expected accuracy), with a 95% bootstrap interval over images;
  Rob(M) uses the same rule on the per-sample Rob(M) estimates;
- ranked entries share their images, so they get **rank intervals** from a paired bootstrap and
  pairwise paired differences (significantly above / below when the 95% interval excludes 0).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.core.attack import ATTACKS
from bench.core.metrics import resubmission_estimates
from bench.protocols import PAPER, Protocol, load_protocol
from bench.publish.ranking import (
    RANK_RESAMPLES,
    RANK_SEED,
    coverage,
    mean_intervals,
    rank_intervals,
    resample_counts,
    significant_pairs,
)

PAPER_RANKING_ATTACKS = ("pgd_eot", "aa_rand_fixed", "diffhammer")  # tracks of the paper protocol (CIFAR)


@dataclass
class RankedEntry:
    entry: str
    slug: str
    records: dict[str, Any]  # ranking attack -> RecordRow (the strongest record of that attack)
    clean: tuple[float, float, float]
    robust: tuple[float, float, float]  # per-sample worst case: mean, 95% CI
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

    @property
    def table_id(self) -> str:
        return f"{self.dataset}__{self.threat}__{self.protocol.key}"

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


def _per_image(record: Any) -> np.ndarray:
    return np.asarray(record.samples.adv_correct, dtype=float) / record.eval_draws


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
    order = {"cifar10": 0, "cifar100": 1, "toy": 2}
    tracks.sort(key=lambda t: (order.get(t.dataset, 9), not t.threat.startswith("linf"), t.threat,
                               t.protocol.key == PAPER, t.protocol.key))
    return tracks


def _strongest(records: list[Any], attack: str) -> Any | None:
    candidates = [r for r in records if r.attack == attack and r.setting == "white"]
    return min(candidates, key=lambda r: (r.robust_acc, r.path)) if candidates else None


def _rank(track: Track, records: list[Any], parsed: Any) -> None:
    by_entry: dict[str, list[Any]] = defaultdict(list)
    for r in records:
        by_entry[r.entry].append(r)
    strongest = {entry: {a: _strongest(rs, a) for a in track.ranking_attacks} for entry, rs in by_entry.items()}
    index_sets: Counter[tuple[int, ...]] = Counter()
    for entry, chosen in strongest.items():
        sets = {tuple(parsed(r).dataset.sample_indices) for r in chosen.values() if r is not None}
        if len(sets) == 1 and all(chosen.values()):
            index_sets[sets.pop()] += 1
    if track.protocol.n_samples:
        track.indices = list(range(track.protocol.n_samples))
    elif index_sets:
        track.indices = list(max(index_sets.items(), key=lambda kv: (kv[1], len(kv[0])))[0])
    complete: list[RankedEntry] = []
    estimates: list[tuple[np.ndarray, np.ndarray | None]] = []
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
        if not status.complete or off_track:
            reasons = [status.describe()] if not status.complete else []
            if off_track and status.complete:
                reasons.append(f"{len(present[off_track[0]])} images, not the track's {len(track.indices)} "
                               f"(indices {track.indices[0]}–{track.indices[-1]})" if track.indices else "")
            track.incomplete.append(IncompleteEntry(entry, slug, "; ".join(filter(None, reasons)), per_attack,
                                                    {a: r.n_samples for a, r in chosen.items() if r is not None}, addt))
            continue
        bodies = {a: parsed(r) for a, r in chosen.items()}
        worst = np.min([_per_image(b) for b in bodies.values()], axis=0)
        first_body = bodies[track.ranking_attacks[0]]
        clean = np.asarray(first_body.samples.clean_correct, dtype=float) / first_body.eval_draws
        # per-sample worst case of Rob(M) over the attacks (same K in every record of a track entry)
        draws = {b.eval_draws for b in bodies.values()}
        rob_m = _worst_rob_m(bodies) if len(draws) == 1 else None
        complete.append(RankedEntry(
            entry, slug, chosen, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), len(worst),
            worst=worst.tolist(), addt=addt, paper=paper, per_attack=per_attack,
            cost_per_image=sum(r.attack_seconds / max(r.n_samples, 1) for r in chosen.values())))
        estimates.append((clean, rob_m))
    if complete:
        _intervals(complete, estimates)
        intervals = rank_intervals({e.entry: e.worst for e in complete}, RANK_RESAMPLES, RANK_SEED)
        for e in complete:
            e.rank = intervals[e.entry]
        pairs = significant_pairs({e.entry: e.worst for e in complete}, RANK_RESAMPLES, RANK_SEED)
        for e in complete:
            e.above, e.below = pairs[e.entry]
    complete.sort(key=lambda e: (e.rank[0], -e.robust[0], -e.clean[0], e.entry))
    track.ranked = complete
    track.incomplete.sort(key=lambda e: e.entry)


def _intervals(complete: list[RankedEntry], estimates: list[tuple[np.ndarray, np.ndarray | None]]) -> None:
    """Clean, worst-case robust and Rob(M) means with 95% percentile bootstrap intervals over the
    track's images: one shared set of ``RANK_RESAMPLES`` resamples (seed ``RANK_SEED``) for every
    entry and statistic, computed as one matrix product (ranked entries share their images)."""
    rows = []
    for entry, (clean, rob_m) in zip(complete, estimates):
        rows += [clean, np.asarray(entry.worst)] + ([] if rob_m is None else list(rob_m.T))
    counts = resample_counts(complete[0].n, RANK_RESAMPLES, RANK_SEED)
    stats = iter(mean_intervals(np.asarray(rows), counts))
    for entry, (_, rob_m) in zip(complete, estimates):
        entry.clean, entry.robust = next(stats), next(stats)
        if rob_m is not None:
            entry.rob_m = [{"m": m + 1, "acc": mean, "ci_low": low, "ci_high": high}
                           for m, (mean, low, high) in enumerate(next(stats) for _ in range(rob_m.shape[1]))]


def _worst_rob_m(bodies: dict[str, Any]) -> np.ndarray:
    """(n, K) per-image Rob(M) estimates, M = 1..K, under the per-sample worst case over the attacks."""
    k = next(iter(bodies.values())).eval_draws
    return np.min([resubmission_estimates(list(b.samples.adv_correct), k) for b in bodies.values()], axis=0)


def _slug(entry: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.=,+-]+", "-", entry).strip("-") or "entry"


def ranking_summary(track: Track) -> dict[str, Any]:
    """The ranked table as plain data (for the CSV, tests and closing notes)."""
    return {
        "track": track.table_id, "ranking_attacks": list(track.ranking_attacks),
        "rank_resamples": RANK_RESAMPLES, "seed": RANK_SEED,
        "rows": [{"rank": e.rank_label, "entry": e.entry, "clean": e.clean, "robust": e.robust, "n": e.n}
                 for e in track.ranked],
        "incomplete": [{"entry": e.entry, "missing": e.missing} for e in track.incomplete],
    }
