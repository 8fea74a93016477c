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


def replay_request(record: Any, n_samples: int) -> RunRequest:
    """A :class:`RunRequest` for the record's first ``n_samples`` samples, from its stored configs
    and seed (options the attack has since retired are dropped, see ``Attack.retired_options``)."""
    indices = list(record.dataset.sample_indices[:n_samples])
    if indices != list(range(indices[0], indices[0] + len(indices))):
        raise ConfigError(f"record {record.run_id}: its first {n_samples} sample indices are not contiguous")
    attack_cls = ATTACKS.get(record.attack.name)
    return RunRequest(
        defense=record.defense.name, attack=record.attack.name, setting=record.setting,
        norm=record.threat_model.norm, eps=record.threat_model.eps, dataset=record.dataset.name,
        classifier=record.classifier, n_samples=len(indices), start_index=indices[0], seed=record.seed,
        eval_draws=record.eval_draws, batch_size=len(indices), defense_options=dict(record.defense.config),
        attack_options=attack_cls.stored_options(dict(record.attack.config)),
    )


def replay(record: Any, n_samples: int, db: str = "sqlite://") -> list[SampleOutcome]:
    """Re-run the record's first ``n_samples`` samples (stored in ``db``, in memory by default)."""
    engine = open_store(db)
    run_id, parts = start_run(engine, replay_request(record, n_samples))
    execute_run(engine, run_id, parts=parts)
    with Session(engine) as session:
        rows = sorted(get_run(session, run_id).samples, key=lambda r: r.position)
        return [SampleOutcome(r.sample_index, r.label, sum(int(p == r.label) for p in r.clean_preds),
                              sum(int(p == r.label) for p in r.adv_preds)) for r in rows]
