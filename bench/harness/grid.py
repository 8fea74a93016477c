"""``bench grid``: the cross product of defenses x attacks x settings, skipping what is done.

A grid cell is skipped when the store already holds a complete run with the same normalized
request (defense and attack configs, setting, threat model, dataset and sample indices, seed,
draws, batch size, classifier); an incomplete one is resumed (only its missing batches run).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from bench.harness.executors import execute
from bench.harness.runner import RunRequest, normalized_request, start_run
from bench.harness.store import Run

log = logging.getLogger(__name__)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=list)


def find_equivalent(engine: Engine, request: RunRequest) -> Run | None:
    """The most advanced stored run equivalent to ``request`` (complete first), if any."""
    from bench.zoo.datasets import DATASETS  # noqa: F401  (validated in normalized_request)

    from bench.core.attack import ATTACKS
    from bench.core.config import canonical_config
    from bench.core.defense import DEFENSES

    wanted = normalized_request(request)
    defense_cls, attack_cls = DEFENSES.get(wanted.defense).config_cls, ATTACKS.get(wanted.attack).config_cls
    indices = list(range(request.start_index, request.start_index + request.n_samples)) if request.n_samples else None
    with Session(engine) as session:
        candidates = session.scalars(select(Run).where(
            Run.defense == wanted.defense, Run.attack == wanted.attack, Run.setting == wanted.setting,
            Run.dataset == wanted.dataset, Run.seed == wanted.seed, Run.norm == wanted.norm))
        matches = [
            run for run in candidates
            if abs(run.eps - wanted.eps) < 1e-12 and run.eval_draws == wanted.eval_draws
            and run.batch_size == wanted.batch_size and run.classifier == wanted.classifier
            and canonical_config(run.defense_config, defense_cls) == canonical_config(wanted.defense_config, defense_cls)
            and canonical_config(run.attack_config, attack_cls) == canonical_config(wanted.attack_config, attack_cls)
            and (indices is None or list(run.sample_indices) == indices)
        ]
        matches.sort(key=lambda r: (r.status != "complete", r.created_at))
        if matches:
            session.expunge(matches[0])
            return matches[0]
    return None


@dataclasses.dataclass
class GridCell:
    request: RunRequest
    run_id: str = ""
    action: str = ""  # skipped | resumed | started
    metrics: dict[str, Any] | None = None


def grid_cells(base: RunRequest, defenses: list[str], attacks: list[str], settings: list[str]) -> list[GridCell]:
    """The cross product as cells (an entry may carry options: ``dp_ddpm[votes=10]``)."""
    from bench.core.config import split_entry

    def cell(entry: str, attack: str, setting: str) -> GridCell:
        name, options = split_entry(entry)
        return GridCell(dataclasses.replace(base, defense=name, attack=attack, setting=setting,
                                            defense_options={**base.defense_options, **options}))

    return [cell(d, a, s) for d in defenses for a in attacks for s in settings]


def run_grid(engine: Engine, base: RunRequest, defenses: list[str], attacks: list[str], settings: list[str],
             executor: str = "local", db_url: str | None = None, address: str | None = None,
             progress: Callable[[int, int], None] | None = None) -> list[GridCell]:
    """Run every (defense, attack, setting) cell not already complete; returns the cells. Every
    cell is validated (:func:`bench.harness.runner.validate_request`) before the first one runs."""
    from bench.harness.runner import validate_request

    cells = grid_cells(base, defenses, attacks, settings)
    for cell in cells:
        validate_request(cell.request)
    total = sum(cell.request.n_samples or 0 for cell in cells)
    finished_before = 0
    for cell in cells:
        existing = find_equivalent(engine, cell.request)
        if existing is not None and existing.status == "complete":
            cell.run_id, cell.action, cell.metrics = existing.id, "skipped", existing.metrics
        elif existing is not None:
            cell.run_id, cell.action = existing.id, "resumed"
        else:
            cell.run_id, cell.action = "", "started"
        if cell.action == "skipped":
            finished_before += cell.request.n_samples or 0
            if progress:
                progress(finished_before, total)
            continue
        parts = None
        if cell.action == "started":
            cell.run_id, parts = start_run(engine, cell.request)
        offset = finished_before

        def cell_progress(done: int, _total: int, offset: int = offset) -> None:
            if progress:
                progress(offset + done, total)

        cell.metrics = execute(engine, cell.run_id, executor, db_url=db_url, address=address,
                               progress=cell_progress, parts=parts if executor == "local" else None)
        finished_before += cell.request.n_samples or 0
    return cells
