"""Helpers for the scale-out tests: a local PostgreSQL server and worker-process bodies."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

TINY = dict(defense="dp_ddim", attack="pgd_eot", n_samples=8, batch_size=2, eval_draws=2, seed=5,
            defense_options={"nfe": 5}, attack_options={"steps": 1, "eot": 2})


def per_sample(engine, run_id: str) -> dict[int, tuple[list[int], list[int], int]]:  # noqa: ANN001
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from bench.harness.store import SampleResult

    with Session(engine) as session:
        rows = session.scalars(select(SampleResult).where(SampleResult.run_id == run_id))
        return {r.sample_index: (list(r.clean_preds), list(r.adv_preds), r.position) for r in rows}


def uninterrupted_results(db_path: Path, **overrides: object) -> dict[int, tuple[list[int], list[int], int]]:
    """Per-sample results of an uninterrupted local run of ``TINY`` (plus overrides): the
    reference every distributed, sharded or crashed variant must reproduce."""
    from bench.harness.runner import RunRequest, execute_run, start_run
    from bench.harness.store import open_store

    engine = open_store(f"sqlite:///{db_path}")
    run_id, parts = start_run(engine, RunRequest(**{**TINY, **overrides}))
    execute_run(engine, run_id, parts=parts)
    return per_sample(engine, run_id)


def write_runs(url: str, count: int, worker: int) -> int:
    """Body of one concurrent writer process: ``count`` tiny complete runs into ``url``."""
    import torch

    from bench.harness.runner import RunRequest, execute_run, start_run
    from bench.harness.store import open_store

    torch.set_num_threads(1)
    engine = open_store(url)
    for i in range(count):
        request = RunRequest(defense="none", attack="pgd_eot", n_samples=2, batch_size=1, eval_draws=1,
                             seed=worker * 1000 + i, attack_options={"steps": 1, "eot": 1})
        run_id, parts = start_run(engine, request)
        execute_run(engine, run_id, parts=parts)
    engine.dispose()
    return count


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalPostgres:
    """A throwaway PostgreSQL server on 127.0.0.1 (Debian's postgresql package), trust auth."""

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not found:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
        self.bin = Path(found[-1]).parent
        self.root = Path(tempfile.mkdtemp(prefix="bench-pg-"))
        self.port = _free_port()
        self.as_postgres = os.geteuid() == 0  # the server refuses to run as root
        os.chmod(self.root, 0o755)
        if self.as_postgres:
            shutil.chown(self.root, "postgres", "postgres")

    def _run(self, *args: str) -> None:
        command = list(args)
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def start(self) -> str:
        data = self.root / "data"
        self._run(str(self.bin / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
        self._run(str(self.bin / "pg_ctl"), "-D", str(data), "-l", str(self.root / "log"), "-w", "-t", "60", "-o",
                  f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
