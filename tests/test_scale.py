"""Scale-out and fault tolerance: the store on SQLite and PostgreSQL, concurrent writers,
SIGKILL + resume, Ray shards (and a dying Ray worker) vs the local executor, grids."""

from __future__ import annotations

import dataclasses
import multiprocessing
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bench.harness.runner import RunRequest, execute_run, start_run
from bench.harness.store import Run, SampleResult, open_store
from tests.scale_helpers import TINY, LocalPostgres, per_sample, uninterrupted_results, write_runs


@pytest.fixture(scope="session")
def postgres_url():
    try:
        server = LocalPostgres()
        url = server.start()
    except Exception as err:  # noqa: BLE001 - any reason the server cannot start locally
        pytest.skip(f"no PostgreSQL server could be started locally ({err}); .ci/run installs one")
    yield url
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.sqlite'}"
    from sqlalchemy import text

    from bench.harness.store import Base

    url = request.getfixturevalue("postgres_url")
    engine = open_store(url)
    with engine.begin() as connection:  # each test starts from an empty schema
        Base.metadata.drop_all(connection)
        connection.execute(text("SELECT 1"))
    engine.dispose()
    return url


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return uninterrupted_results(tmp_path_factory.mktemp("ref") / "ref.sqlite")


def test_store_round_trip_and_resume_identity(store_url, reference) -> None:
    engine = open_store(store_url)
    run_id, parts = start_run(engine, RunRequest(**TINY))
    with Session(engine) as session:
        assert session.get(Run, run_id).status == "running"
    from bench.harness.runner import execute_shard

    execute_shard(engine, run_id, [0, 4])  # as if a crash happened after two batches
    execute_run(engine, run_id)  # resume
    assert per_sample(engine, run_id) == reference
    with Session(engine) as session:
        run = session.get(Run, run_id)
        assert run.status == "complete" and run.metrics["clean"]["n"] == 8 and run.defense_config["nfe"] == 5


def test_concurrent_writers_lose_nothing(store_url) -> None:
    processes, per_process = 4, 25
    open_store(store_url).dispose()  # create the schema once, before the writers race
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes) as pool:
        done = pool.starmap(write_runs, [(store_url, per_process, w) for w in range(processes)])
    assert sum(done) == processes * per_process
    engine = open_store(store_url)
    with Session(engine) as session:
        runs = session.scalar(select(func.count()).select_from(Run).where(Run.status == "complete"))
        rows = session.scalar(select(func.count()).select_from(SampleResult))
    assert runs == processes * per_process and rows == 2 * processes * per_process


def test_sigkill_mid_run_then_resume_is_identical(tmp_path) -> None:
    reference = uninterrupted_results(tmp_path / "uninterrupted.sqlite", n_samples=8, defense_options={"nfe": 10},
                                      attack_options={"steps": 3, "eot": 3})

    url = f"sqlite:///{tmp_path / 'killed.sqlite'}"
    command = [sys.executable, "-m", "bench.cli.main", "run", "--defense", "dp_ddim", "--defense-opt", "nfe=10",
               "--attack", "pgd_eot", "--steps", "3", "--eot", "3", "--n-samples", "8", "--batch-size", "2",
               "--draws", "2", "--seed", "5", "--db", url]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    engine = open_store(url)
    deadline = time.time() + 300
    stored = 0
    while time.time() < deadline and stored < 2 and process.poll() is None:
        time.sleep(0.05)
        with Session(engine) as session:
            stored = session.scalar(select(func.count()).select_from(SampleResult)) or 0
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    with Session(engine) as session:
        run = session.scalars(select(Run)).one()
        partial = session.scalar(select(func.count()).select_from(SampleResult))
    assert run.status == "running" and 2 <= partial < 8, (run.status, partial)
    result = subprocess.run([sys.executable, "-m", "bench.cli.main", "resume", run.id, "--db", url],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert per_sample(engine, run.id) == reference


def test_grid_skips_completed_runs(tmp_path) -> None:
    from bench.harness.grid import run_grid

    engine = open_store(f"sqlite:///{tmp_path / 'grid.sqlite'}")
    base = RunRequest(defense="dp_ddim", attack="pgd_eot", n_samples=4, batch_size=2, eval_draws=1,
                      defense_options={"nfe": 5}, attack_options={"steps": 1, "eot": 1})
    first = run_grid(engine, base, ["dp_ddim", "dp_ddpm"], ["pgd_eot"], ["white", "dw_both"])
    assert [c.action for c in first] == ["started"] * 4
    second = run_grid(engine, base, ["dp_ddim", "dp_ddpm"], ["pgd_eot"], ["white", "dw_both"])
    assert [c.action for c in second] == ["skipped"] * 4 and [c.run_id for c in second] == [c.run_id for c in first]
    from bench.harness.runner import execute_shard

    partial_id, _ = start_run(engine, dataclasses.replace(base, seed=9))
    execute_shard(engine, partial_id, [0])  # half done, as after a crash
    third = run_grid(engine, dataclasses.replace(base, seed=9), ["dp_ddim"], ["pgd_eot"], ["white"])
    assert [(c.action, c.run_id) for c in third] == [("resumed", partial_id)]
    with Session(engine) as session:
        assert session.get(Run, partial_id).status == "complete"
