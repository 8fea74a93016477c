"""Re-run samples of a stored record from its configs and seeds, sample by sample.

Possible because every noise draw is seeded per sample (``bench.core.noise``): a sample's
outcome does not depend on which other samples share its batch, so the first few samples of a
record re-run alone must give exactly the stored per-sample outcomes on the same machine type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from bench.core.attack import ATTACKS
from bench.core.errors import ConfigError
from bench.harness.runner import RunRequest, execute_run, start_run
from bench.harness.store import get_run, open_store


@dataclass(frozen=True)
class SampleOutcome:
    """One sample's outcome: how many of the K evaluation draws were correct and, for records
    with per-draw outcomes, every draw's predicted class (clean, adversarial, selection) and the
    attack's per-sample cost; fields a record lacks are None and not compared."""

    index: int
    label: int
    clean_correct: int
    adv_correct: int
    clean_preds: tuple[int, ...] | None = None
    adv_preds: tuple[int, ...] | None = None
    select_preds: tuple[int, ...] | None = None
    gradient_draws: int | None = None
    forward_draws: int | None = None

    def differences(self, other: SampleOutcome) -> list[str]:
        """The fields in which ``other`` (a re-run) differs, comparing only what both state."""
        names = ("label", "clean_correct", "adv_correct", "clean_preds", "adv_preds", "select_preds",
                 "gradient_draws", "forward_draws")
        return [n for n in names if getattr(self, n) is not None and getattr(other, n) is not None
                and getattr(self, n) != getattr(other, n)]


def stored_outcomes(record: Any) -> list[SampleOutcome]:
    """The per-sample outcomes a record (:class:`bench.publish.records.Record`) states."""
    s = record.samples
    n = len(s.label)

    def column(values: Any, convert: Any = int) -> list[Any]:
        return [None] * n if values is None else [convert(v) for v in values]

    def draws(name: str) -> list[Any]:
        decoded = record.preds(name)
        return [None] * n if decoded is None else [tuple(int(p) for p in row) for row in decoded]

    return [SampleOutcome(i, lab, c, a, cp, ap, sp, g, f) for i, lab, c, a, cp, ap, sp, g, f in
            zip(record.dataset.sample_indices, s.label, s.clean_correct, s.adv_correct, draws("clean_preds"),
                draws("adv_preds"), draws("select_preds"), column(s.gradient_draws), column(s.forward_draws))]


def replay_request(record: Any, n_samples: int | None = None, indices: list[int] | None = None) -> RunRequest:
    """A :class:`RunRequest` for the record's first ``n_samples`` samples (or the given dataset
    ``indices``, which must be among the record's), from its stored configs and seed (options the
    attack has since retired are dropped, see ``Attack.retired_options``)."""
    if indices is None:
        indices = list(record.dataset.sample_indices[:n_samples])
    missing = sorted(set(indices) - set(record.dataset.sample_indices))
    if missing:
        raise ConfigError(f"record {record.run_id} has no samples {missing}")
    attack_cls = ATTACKS.get(record.attack.name)
    return RunRequest(
        defense=record.defense.name, attack=record.attack.name, setting=record.setting,
        norm=record.threat_model.norm, eps=record.threat_model.eps, dataset=record.dataset.name,
        classifier=record.classifier, sample_indices=list(indices), seed=record.seed,
        eval_draws=record.eval_draws, batch_size=len(indices), defense_options=dict(record.defense.config),
        attack_options=attack_cls.stored_options(dict(record.attack.config)),
        protocol="paper",  # the stored configs are complete: nothing for a protocol to fill in
    )


def replay(record: Any, n_samples: int | None = None, db: str = "sqlite://",
           indices: list[int] | None = None) -> list[SampleOutcome]:
    """Re-run the record's first ``n_samples`` samples, or its samples ``indices`` (stored in
    ``db``, in memory by default)."""
    engine = open_store(db)
    run_id, parts = start_run(engine, replay_request(record, n_samples, indices))
    execute_run(engine, run_id, parts=parts)
    with Session(engine) as session:
        rows = sorted(get_run(session, run_id).samples, key=lambda r: r.position)
        return [SampleOutcome(r.sample_index, r.label, sum(int(p == r.label) for p in r.clean_preds),
                              sum(int(p == r.label) for p in r.adv_preds), tuple(r.clean_preds), tuple(r.adv_preds),
                              None if r.select_preds is None else tuple(r.select_preds),
                              (r.attack_info or {}).get("gradient_draws"), (r.attack_info or {}).get("forward_draws"))
                for r in rows]


@dataclass(frozen=True)
class Verification:
    """What ``bench verify`` found for one record."""

    path: str
    indices: list[int]
    mismatches: list[tuple[SampleOutcome, SampleOutcome]]  # (stated, re-run)
    seed: int
    strict: bool  # must every re-run sample be identical (toy records, whatever device they claim)

    @property
    def agreement(self) -> float:
        return 1 - len(self.mismatches) / len(self.indices)

    @property
    def passed(self) -> bool:
        return not (self.strict and self.mismatches)


def must_match_bitwise(record: Any) -> bool:
    """Toy records are re-run on this machine's CPU and must match exactly, whatever device they
    name: the toy suite is deterministic on CPU, and a toy record made on a GPU is re-run on CPU
    before it is submitted. No field of the record can switch this off. Records of other datasets
    (made on GPUs, with weights CI may not have) report their agreement rate instead."""
    return record.dataset.name == "toy"


def detection_samples(n: int, fraction: float = 0.05, power: float = 0.95) -> int:
    """The fewest samples S, drawn without replacement from a record's n, such that a record with at
    least ⌈fraction · n⌉ edited samples has one of them re-run with probability ≥ ``power``:
    1 − C(n − m, S) / C(n, S) ≥ power (hypergeometric)."""
    import math

    if n <= 0:
        return 0
    edited = max(1, math.ceil(fraction * n))
    miss = 1.0
    for s in range(n):
        miss *= (n - edited - s) / (n - s)  # P(the first s + 1 picks avoid every edited sample)
        if 1 - miss >= power:
            return s + 1
    return n


def detection_power(n: int, samples: int, fraction: float = 0.05) -> float:
    """The probability that re-running ``samples`` of n catches a record with ⌈fraction · n⌉ edits."""
    import math

    edited = max(1, math.ceil(fraction * n))
    miss = 1.0
    for s in range(min(samples, n)):
        miss *= max(n - edited - s, 0) / (n - s)
    return 1 - miss


def verify(record: Any, path: str, samples: int | None = None, seed: int | None = None,
           indices: list[int] | None = None) -> Verification:
    """Re-run ``samples`` randomly chosen samples of ``record`` (default: enough to catch edits of
    5% of its samples with probability 0.95, :func:`detection_samples`), or the given dataset
    ``indices``, from its stored configs and seeds, and compare each sample's outcome (per-draw
    classes, selection draws and cost where the record has them) with the record's. ``seed`` picks
    the subset; drawn from the OS when ``None`` and reported, so a check can be redone but no
    submitter can know the subset in advance."""
    import random
    import secrets

    stated = {o.index: o for o in stored_outcomes(record)}
    seed = secrets.randbits(32) if seed is None else seed
    if indices is None:
        pool = list(record.dataset.sample_indices)
        count = detection_samples(len(pool)) if samples is None else samples
        indices = sorted(random.Random(seed).sample(pool, min(count, len(pool))))
    rerun = replay(record, indices=indices)
    mismatches = [(stated[o.index], o) for o in rerun if stated[o.index].differences(o)]
    return Verification(path, list(indices), mismatches, seed, must_match_bitwise(record))
