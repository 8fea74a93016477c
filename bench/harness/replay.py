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
    """One sample's outcome: how many of the K evaluation draws were correct."""

    index: int
    label: int
    clean_correct: int
    adv_correct: int


def stored_outcomes(record: Any) -> list[SampleOutcome]:
    """The per-sample outcomes a record (:class:`bench.publish.records.Record`) states."""
    s = record.samples
    return [SampleOutcome(i, lab, c, a) for i, lab, c, a in
            zip(record.dataset.sample_indices, s.label, s.clean_correct, s.adv_correct)]


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
                              sum(int(p == r.label) for p in r.adv_preds)) for r in rows]


@dataclass(frozen=True)
class Verification:
    """What ``bench verify`` found for one record."""

    path: str
    indices: list[int]
    mismatches: list[tuple[SampleOutcome, SampleOutcome]]  # (stated, re-run)
    seed: int

    @property
    def agreement(self) -> float:
        return 1 - len(self.mismatches) / len(self.indices)


def verify(record: Any, path: str, samples: int = 4, seed: int | None = None,
           indices: list[int] | None = None) -> Verification:
    """Re-run ``samples`` randomly chosen samples of ``record`` (or the given dataset ``indices``)
    from its stored configs and seeds and compare their per-sample outcomes with the record's.
    ``seed`` picks the subset (drawn from the OS when ``None``; reported so a check can be redone)."""
    import random
    import secrets

    stated = {o.index: o for o in stored_outcomes(record)}
    seed = secrets.randbits(32) if seed is None else seed
    if indices is None:
        pool = list(record.dataset.sample_indices)
        indices = sorted(random.Random(seed).sample(pool, min(samples, len(pool))))
    rerun = replay(record, indices=indices)
    mismatches = [(stated[o.index], o) for o in rerun if stated[o.index] != o]
    return Verification(path, list(indices), mismatches, seed)
