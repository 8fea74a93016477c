"""Running, storing and resuming one evaluation (defense x attack x setting).

The request and its normalization live in :mod:`bench.harness.request`, building and checking the
components in :mod:`bench.harness.components`, the summary in :mod:`bench.harness.summary`; this
module stores a prepared run and evaluates its samples batch by batch.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bench.core.determinism import self_check
from bench.core.gradient_modes import parse_gradient_mode
from bench.core.memory import plan_gradient, plan_inference
from bench.core.noise import NoiseSource
from bench.core.provenance import collect_provenance, git_commit
from bench.core.target import StochasticTarget
from bench.harness.components import Components, PreparedRun, build_components, prepare_run
from bench.harness.request import (  # noqa: F401 - the names callers import from here
    DTYPES,
    THREAT_DEFAULTS,
    NormalizedRequest,
    RunRequest,
    normalized_request,
    validate_request,
)
from bench.harness.store import Run, SampleResult, get_run, utcnow, write_with_retry
from bench.harness.summary import finalize_run

log = logging.getLogger(__name__)


def store_run(engine: Engine, prepared: PreparedRun) -> str:
    """Store ``prepared`` as a new run row (status ``running``); returns its id."""
    request, wanted, parts = prepared.request, prepared.wanted, prepared.parts
    provenance = collect_provenance(parts.device)
    run_id = uuid.uuid4().hex[:12]
    run = Run(
        id=run_id, status="running", defense=prepared.defense_name, defense_config=wanted.defense_config,
        attack=request.attack, attack_config=wanted.attack_config, setting=wanted.setting, norm=str(request.norm),
        eps=float(wanted.eps), dataset=str(request.dataset), classifier=wanted.classifier,
        sample_indices=prepared.indices, n_samples=len(prepared.indices), seed=request.seed,
        eval_draws=request.eval_draws, batch_size=request.batch_size, nfe=parts.model.defense.nfe,
        runtime=prepared.runtime.to_dict(), git_commit=provenance["git_commit"], package_versions=provenance["packages"],
        device=provenance["device"], wall_seconds=0.0, attack_seconds=0.0,
    )
    write_with_retry(engine, lambda session: session.add(run))
    return run_id


def start_run(engine: Engine, request: RunRequest) -> tuple[str, Components]:
    """Validate and build ``request``, then store it as a run; returns its id and the built
    components (so that :func:`execute_run` does not load the models a second time)."""
    prepared = prepare_run(request)
    return store_run(engine, prepared), prepared.parts


def create_run(engine: Engine, request: RunRequest) -> str:
    """Validate ``request``, store a new run row (status ``running``) and return its id."""
    return start_run(engine, request)[0]


ProgressCallback = Callable[[float, int], None]  # (images done, possibly fractional; total)


def execute_run(
    engine: Engine, run_id: str, progress: ProgressCallback | None = None, parts: Components | None = None
) -> dict[str, Any]:
    """Evaluate every sample of run ``run_id`` not yet stored, then store its summary.

    Batches are the fixed partition of the run's samples by ``batch_size``; each batch's
    rows are committed in one transaction, so resuming after a crash recomputes exactly the
    missing batches and yields per-sample results identical to an uninterrupted run.
    """
    with Session(engine) as session:
        run = get_run(session, run_id)
        run_id = run.id
        if run.status == "complete":
            return run.metrics or {}
        spec = dict(
            defense=run.defense, defense_config=run.defense_config, attack=run.attack,
            attack_config=run.attack_config, setting=run.setting, dataset=run.dataset, runtime=run.runtime,
            classifier=run.classifier,
        )
        indices, batch_size, seed, draws = list(run.sample_indices), run.batch_size, run.seed, run.eval_draws
        done = set(session.scalars(select(SampleResult.sample_index).where(SampleResult.run_id == run_id)))
        stored_commit = run.git_commit
    current_commit = git_commit()
    if stored_commit and current_commit and stored_commit != current_commit:
        log.warning("run %s was started at commit %s; resuming at %s", run_id, stored_commit, current_commit)
    if parts is None:
        _require_registered(run_id, spec["defense"])
        parts = build_components(**spec)
    _set_status(engine, run_id, "running", None)
    noise = NoiseSource(seed)
    sample_shape = tuple(parts.split.images.shape[1:])
    try:
        _run_batches(engine, run_id, parts, noise, indices, batch_size, draws, done, sample_shape, progress)
    except KeyboardInterrupt:
        _set_status(engine, run_id, "interrupted", "interrupted by the user")
        raise
    except Exception as err:
        _set_status(engine, run_id, "failed", f"{type(err).__name__}: {err}")
        raise
    return finalize_run(engine, run_id)


def _require_registered(run_id: str, defense: str) -> None:
    """A run of a defense given as a Python object (``instance:…`` / ``foreign:…``) cannot be
    rebuilt from its row: it resumes only from Python, with the same object."""
    if ":" in defense:
        from bench.core.errors import StoreError

        raise StoreError(f"run {run_id} evaluated {defense}, a defense given as a Python object; it can only be "
                         "resumed from Python with the same object: bench.evaluate(..., resume=RUN_ID)")


def pending_batches(engine: Engine, run_id: str) -> list[int]:
    """Start positions of the run's batches (fixed partition) that are not fully stored."""
    with Session(engine) as session:
        run = get_run(session, run_id)
        indices, batch_size = list(run.sample_indices), run.batch_size
        done = set(session.scalars(select(SampleResult.sample_index).where(SampleResult.run_id == run.id)))
    return [s for s in range(0, len(indices), batch_size) if not all(i in done for i in indices[s : s + batch_size])]


def _stored(engine: Engine, run_id: str, sample_ids: list[int]) -> bool:
    with Session(engine) as session:
        count = session.scalar(select(func.count()).select_from(SampleResult).where(
            SampleResult.run_id == run_id, SampleResult.sample_index.in_(sample_ids)))
    return bool(count)


def execute_shard(engine: Engine, run_id: str, batch_starts: list[int]) -> int:
    """Evaluate only the batches starting at ``batch_starts`` of run ``run_id`` (skipping any
    already stored) without finalizing it: the unit of work of a distributed executor.
    Returns the number of samples this call stored."""
    with Session(engine) as session:
        run = get_run(session, run_id)
        spec = dict(
            defense=run.defense, defense_config=run.defense_config, attack=run.attack,
            attack_config=run.attack_config, setting=run.setting, dataset=run.dataset, runtime=run.runtime,
            classifier=run.classifier,
        )
        indices, batch_size, seed, draws = list(run.sample_indices), run.batch_size, run.seed, run.eval_draws
        done = set(session.scalars(select(SampleResult.sample_index).where(SampleResult.run_id == run.id)))
    _require_registered(run_id, spec["defense"])
    parts = build_components(**spec)
    before = len(done)
    _run_batches(engine, run_id, parts, NoiseSource(seed), indices, batch_size, draws, done,
                 tuple(parts.split.images.shape[1:]), None, only_batches=set(batch_starts))
    with Session(engine) as session:
        after = session.scalar(select(func.count()).select_from(SampleResult).where(SampleResult.run_id == run_id))
    return int(after or 0) - before


def _run_batches(
    engine: Engine, run_id: str, parts: Components, noise: NoiseSource, indices: list[int],
    batch_size: int, draws: int, done: set[int], sample_shape: tuple[int, ...],
    progress: ProgressCallback | None, only_batches: set[int] | None = None,
) -> None:
    model, device, dtype = parts.model, parts.device, parts.dtype
    # the largest batch this run attacks: a run with fewer samples than --batch-size never stacks more
    stacked = min(batch_size, max(len(indices), 1)) * max(parts.setting.attack_draws(parts.attack.eot), 1)
    grad_plan = plan_gradient(model, sample_shape, device, dtype, parts.checkpoint, parts.budget, stacked)
    eval_plan = plan_inference(model, sample_shape, device, dtype, parts.budget, batch_size * draws)
    log.info("memory plan: gradient %s, inference %s", grad_plan, eval_plan)
    total = len(indices)
    finished = sum(1 for i in indices if i in done)
    pending = [i for i in indices if i not in done]
    if pending and only_batches is None:  # one recomputed gradient per run, before a batch is stored
        first = pending[:1]
        probe = StochasticTarget(model, parts.setting, noise, first, grad_plan, eval_plan)
        self_check(probe, parts.split.images[first].to(device=device, dtype=dtype), parts.split.labels[first].to(device))
    if progress:
        progress(finished, total)
    for start in range(0, total, batch_size):
        batch_ids = indices[start : start + batch_size]
        if (only_batches is not None and start not in only_batches) or all(i in done for i in batch_ids):
            continue
        if only_batches is not None and _stored(engine, run_id, batch_ids):
            continue  # another shard (or an earlier attempt of this one) already stored it
        began = time.perf_counter()
        x = parts.split.images[batch_ids].to(device=device, dtype=dtype)
        y = parts.split.labels[batch_ids].to(device)
        target = StochasticTarget(model, parts.setting, noise, batch_ids, grad_plan, eval_plan)
        target.gradient_mode = parse_gradient_mode(getattr(parts.attack.config, "gradient", "exact"))
        planned = parts.attack.planned_draws()
        if progress and planned is not None:
            target.on_work = _within_batch_progress(progress, finished, len(batch_ids), total, planned, draws)
        clean_preds = target.eval_predictions(x, draws)
        attack_began = time.perf_counter()
        target.reset_cost()
        result = parts.attack.perturb(target, x, y)
        attack_elapsed = time.perf_counter() - attack_began
        x_adv = result.x_adv
        # every attack's cost per sample, counted by the target (chains differentiated / run forward)
        infos = [{**(info or {}), **target.cost(sid)}
                 for info, sid in zip(result.info or [None] * len(batch_ids), batch_ids)]
        adv_preds = target.eval_predictions(x_adv, draws)
        # the attacker's own queries of its final point: they choose each image's strongest attack
        # on the leaderboard, while the evaluation draws above score it
        select_preds = target.selection_predictions(x_adv, draws)
        delta = (x_adv - x).flatten(1).float()
        rows = [
            SampleResult(
                run_id=run_id, sample_index=sid, position=start + j, label=int(y[j]),
                clean_preds=clean_preds[j].tolist(), adv_preds=adv_preds[j].tolist(),
                select_preds=select_preds[j].tolist(),
                linf_norm=float(delta[j].abs().max()), l2_norm=float(delta[j].norm()), attack_info=infos[j],
            )
            for j, sid in enumerate(batch_ids)
        ]
        elapsed = time.perf_counter() - began

        def store_batch(session: Session) -> None:
            session.add_all(rows)
            run = session.get(Run, run_id)
            assert run is not None
            run.wall_seconds = (run.wall_seconds or 0.0) + elapsed
            run.attack_seconds = (run.attack_seconds or 0.0) + attack_elapsed
            run.updated_at = utcnow()

        try:
            write_with_retry(engine, store_batch)
        except IntegrityError:
            # a concurrent shard stored this batch first; its rows are identical (same seeds)
            log.warning("run %s: batch at %d was already stored by another worker", run_id, start)
        finished += len(batch_ids)
        if progress:
            progress(finished, total)


GRADIENT_COST = 3.0  # a gradient draw ≈ one forward and one backward pass ≈ 3 forward passes


def _within_batch_progress(progress: ProgressCallback, finished: int, batch: int, total: int,
                           planned: tuple[int, int], eval_draws: int) -> Callable[[str, int], None]:
    """Fractional progress inside a batch from the passes the target counts, against the attack's
    nominal plan (+ the clean and adversarial evaluation draws), so a one-batch run shows an ETA
    long before its batch ends. Attacks that stop early finish sooner: the ETA is an upper bound."""
    gradient, forward = planned
    budget = batch * (GRADIENT_COST * gradient + forward + 2 * eval_draws)
    spent = 0.0

    def on_work(kind: str, rows: int) -> None:
        nonlocal spent
        spent += rows * (GRADIENT_COST if kind == "gradient" else 1.0)
        progress(finished + batch * min(spent / budget, 0.99), total)

    return on_work


def _set_status(engine: Engine, run_id: str, status: str, error: str | None) -> None:
    with Session(engine) as session, session.begin():
        run = session.get(Run, run_id)
        if run is not None:
            run.status, run.error, run.updated_at = status, error, utcnow()

