"""Where a run's batches are computed: in this process (default) or as Ray tasks.

Because every noise draw is seeded per sample and batches are a fixed partition of the run's
samples, any executor stores exactly the rows a local run would. The Ray executor splits the
pending batches into shards (round-robin), runs each shard as a Ray task that writes its batches
to the store as it goes (one transaction per batch), and finalizes the run when all are done.
A task whose worker dies is retried by Ray; the retry skips batches already stored, so no row
is written twice. Ray is an optional extra (``pip install -e ".[ray]"``).
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from bench.core.errors import ConfigError
from bench.harness.runner import (
    ProgressCallback,
    execute_run,
    finalize_run,
    pending_batches,
)
from bench.harness.store import SampleResult, get_run

log = logging.getLogger(__name__)
EXECUTORS = ("local", "ray")


def _shard_task(db_url: str, run_id: str, batch_starts: list[int], fail_marker: str | None = None) -> int:
    """Body of one Ray task (module-level so Ray can ship it by reference)."""
    import os

    import torch

    from bench.core.allocator import tune_glibc_malloc
    from bench.harness.runner import execute_shard
    from bench.harness.store import open_store

    tune_glibc_malloc()
    torch.set_num_threads(max(1, int(os.environ.get("BENCH_TASK_THREADS", "1"))))
    if fail_marker and not os.path.exists(fail_marker):
        # test hook: this attempt stores its first batch and then its worker dies
        open(fail_marker, "w").close()
        execute_shard(open_store(db_url), run_id, batch_starts[:1])
        os._exit(1)
    return execute_shard(open_store(db_url), run_id, batch_starts)


def _stored_count(engine: Engine, run_id: str) -> int:
    with Session(engine) as session:
        return int(session.scalar(select(func.count()).select_from(SampleResult).where(SampleResult.run_id == run_id)) or 0)


def execute_run_ray(engine: Engine, db_url: str, run_id: str, address: str | None = None, shards: int | None = None,
                    progress: ProgressCallback | None = None, fail_marker: str | None = None) -> dict[str, Any]:
    """Evaluate run ``run_id`` with Ray tasks (one GPU each when the cluster has GPUs)."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs Ray: pip install -e \".[ray]\" (or pip install ray)") from None
    if db_url.startswith("sqlite://") and address not in (None, "local", "auto"):
        log.warning("an SQLite store is only reachable from this machine; use PostgreSQL for a multi-machine cluster")
    if not ray.is_initialized():
        ray.init(address=None if address in (None, "local") else address, include_dashboard=False,
                 log_to_driver=False, ignore_reinit_error=True)
    with Session(engine) as session:
        run = get_run(session, run_id)
        run_id, total, status = run.id, run.n_samples, run.status
    if status == "complete":
        return run.metrics or {}
    batches = pending_batches(engine, run_id)
    gpus = ray.cluster_resources().get("GPU", 0)
    workers = shards or max(1, int(ray.cluster_resources().get("GPU" if gpus else "CPU", 1)))
    groups = [batches[i::workers] for i in range(workers) if batches[i::workers]]
    task = ray.remote(num_gpus=1 if gpus else 0, num_cpus=1, max_retries=3, retry_exceptions=False)(_shard_task)
    refs = [task.remote(db_url, run_id, group, fail_marker) for group in groups]
    log.info("run %s: %d batches in %d Ray tasks", run_id, len(batches), len(refs))
    remaining = list(refs)
    while remaining:
        _, remaining = ray.wait(remaining, num_returns=len(remaining), timeout=1.0)
        if progress:
            progress(_stored_count(engine, run_id), total)
    ray.get(refs)  # re-raise task errors
    if progress:
        progress(_stored_count(engine, run_id), total)
    return finalize_run(engine, run_id)


def execute(engine: Engine, run_id: str, executor: str = "local", db_url: str | None = None,
            address: str | None = None, progress: ProgressCallback | None = None, parts: Any = None) -> dict[str, Any]:
    """Evaluate (or resume) run ``run_id`` with ``executor``."""
    if executor == "local":
        return execute_run(engine, run_id, progress=progress, parts=parts)
    if executor == "ray":
        if db_url is None:
            raise ConfigError("the Ray executor needs the store's URL (--db) so that its tasks can write to it")
        return execute_run_ray(engine, db_url, run_id, address=address, progress=progress)
    raise ConfigError(f"--executor {executor!r} is not one of {', '.join(EXECUTORS)}")


