"""The result store: SQLAlchemy 2 models for runs and per-sample outcomes.

Any SQLAlchemy URL works (``--db postgresql://...``); the default is an SQLite file at
``results/bench.sqlite`` in the project checkout (``$BENCH_DB`` overrides it). The CLI and
runner own sessions and transactions; each batch of sample rows is written in one
transaction together with the run's progress, so a crash never leaves partial rows.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    create_engine,
    event,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DatabaseError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from bench.core.errors import StoreError
from bench.core.provenance import PROJECT_ROOT


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[int]: JSON, list[float]: JSON}


class Run(Base):
    """One evaluation of one defense against one attack under one setting."""

    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True)  # running|complete|failed|interrupted
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]

    defense: Mapped[str] = mapped_column(String(64), index=True)
    defense_config: Mapped[dict[str, Any]]
    attack: Mapped[str] = mapped_column(String(64), index=True)
    attack_config: Mapped[dict[str, Any]]
    setting: Mapped[str] = mapped_column(String(32))
    norm: Mapped[str] = mapped_column(String(8))
    eps: Mapped[float] = mapped_column(Float)
    dataset: Mapped[str] = mapped_column(String(32))
    classifier: Mapped[str] = mapped_column(String(512), default="")
    sample_indices: Mapped[list[int]]
    n_samples: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(Integer)
    eval_draws: Mapped[int] = mapped_column(Integer)
    batch_size: Mapped[int] = mapped_column(Integer)
    nfe: Mapped[int] = mapped_column(Integer)
    runtime: Mapped[dict[str, Any]]  # device, dtype, checkpoint policy, memory budget

    git_commit: Mapped[str | None] = mapped_column(String(64))
    package_versions: Mapped[dict[str, Any]]
    device: Mapped[str] = mapped_column(String(128))
    wall_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    attack_seconds: Mapped[float] = mapped_column(Float, default=0.0)  # inside attack.perturb only

    clean_acc: Mapped[float | None] = mapped_column(Float)
    clean_ci_low: Mapped[float | None] = mapped_column(Float)
    clean_ci_high: Mapped[float | None] = mapped_column(Float)
    robust_acc: Mapped[float | None] = mapped_column(Float)
    robust_ci_low: Mapped[float | None] = mapped_column(Float)
    robust_ci_high: Mapped[float | None] = mapped_column(Float)
    metrics: Mapped[dict[str, Any] | None]

    samples: Mapped[list[SampleResult]] = relationship(
        back_populates="run", cascade="all, delete-orphan", order_by="SampleResult.position"
    )


class SampleResult(Base):
    """The outcome of one sample: every evaluation draw's clean and adversarial prediction."""

    __tablename__ = "sample_results"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    sample_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    label: Mapped[int] = mapped_column(Integer)
    clean_preds: Mapped[list[int]]
    adv_preds: Mapped[list[int]]
    # the attacker's selection draws of the adversarial input (independent of the evaluation's);
    # None in stores written before they existed
    select_preds: Mapped[list[int] | None] = mapped_column(JSON, nullable=True)
    linf_norm: Mapped[float] = mapped_column(Float)
    l2_norm: Mapped[float] = mapped_column(Float)
    # the attack's own per-sample verdict, e.g. {"reported_correct": 0.35, "chosen_by": "apgd-ce"}
    attack_info: Mapped[dict[str, Any] | None]

    run: Mapped[Run] = relationship(back_populates="samples")


class Study(Base):
    """A diagnostic study (``bench study``): its runs plus study-level values (e.g. cosines)."""

    __tablename__ = "studies"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(32), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    config: Mapped[dict[str, Any]]
    run_ids: Mapped[list[str]] = mapped_column(JSON)
    results: Mapped[dict[str, Any]]
    plot_path: Mapped[str | None] = mapped_column(Text)


def default_url() -> str:
    if os.environ.get("BENCH_DB"):
        return os.environ["BENCH_DB"]
    return f"sqlite:///{PROJECT_ROOT / 'results' / 'bench.sqlite'}"


def open_store(url: str | None = None) -> Engine:
    """Connect to the store at ``url`` (a SQLAlchemy URL or a plain file path), creating the
    tables if needed. A file that is not a database raises :class:`StoreError` untouched."""
    url = url or default_url()
    if "://" not in url:
        url = f"sqlite:///{Path(url).expanduser().resolve()}"
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :])
        if path.is_dir():
            raise StoreError(f"--db {path} is a directory; give a file path such as {path / 'bench.sqlite'}")
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        engine = create_engine(url)
    except Exception as err:  # bad URL syntax or missing driver
        raise StoreError(f"cannot use database URL {url!r}: {err}") from None
    if engine.dialect.name == "sqlite":
        file_backed = url.startswith("sqlite:///") and url != "sqlite://"

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # Several processes may write one file (grids, shards): WAL lets readers proceed,
            # the busy timeout makes writers wait instead of failing, and BEGIN IMMEDIATE (below)
            # takes the write lock up front so a read-then-write transaction never hits
            # SQLITE_BUSY half-way (SQLAlchemy's documented pysqlite recipe).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=60000")
            if file_backed:
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin_immediate(connection: Any) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    try:
        Base.metadata.create_all(engine)
        _add_missing_columns(engine)
    except (DatabaseError, OperationalError) as err:
        engine.dispose()
        raise StoreError(
            f"{url} cannot be used as a result store: {err.orig}. If it is a file, it is not a "
            "bench database (it was left untouched); pass another --db."
        ) from None
    return engine


# columns added to existing tables after their first release: (table, column, SQL type)
_LATER_COLUMNS = (("sample_results", "select_preds", "JSON"),)


def _add_missing_columns(engine: Engine) -> None:
    """Bring a store written by an older version up to date (nullable columns only; no data
    changes). Hand-written because the project keeps no migration tool for one column."""
    from sqlalchemy import inspect

    with engine.begin() as connection:
        inspector = inspect(connection)
        for table, column, sql_type in _LATER_COLUMNS:
            if column not in {c["name"] for c in inspector.get_columns(table)}:
                connection.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}")


def write_with_retry(engine: Engine, work: Any, attempts: int = 5) -> Any:
    """Run ``work(session)`` in one transaction, retrying if the database stays locked beyond
    the busy timeout (another process holding a long write); the transaction is all or nothing."""
    import time

    for attempt in range(attempts):
        try:
            with Session(engine) as session, session.begin():
                return work(session)
        except OperationalError as err:
            if "locked" not in str(err.orig).lower() or attempt == attempts - 1:
                raise
            time.sleep(0.5 * 2**attempt)
    return None


def get_run(session: Session, run_id: str) -> Run:
    """The run with id ``run_id`` (a unique prefix is accepted)."""
    run = session.get(Run, run_id)
    if run is not None:
        return run
    matches = list(session.scalars(select(Run).where(Run.id.startswith(run_id))))
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise StoreError(f"no run with id {run_id!r} in the store; `bench results` lists them")
    raise StoreError(f"run id prefix {run_id!r} is ambiguous: {', '.join(m.id for m in matches)}")
