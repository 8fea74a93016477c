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


def store_url(db: str | None) -> str:
    """``db`` (a SQLAlchemy URL or a file path; None = the default store) as a URL."""
    url = db or default_url()
    return url if "://" in url else f"sqlite:///{Path(url).expanduser().resolve()}"


BENCH_TABLES = frozenset({"runs", "sample_results", "studies"})


def _sqlite_tables(path: Path) -> dict[str, set[str]] | None:
    """``{table: its columns}`` of the SQLite file ``path``, read through a read-only connection
    (nothing is written, the journal mode is left alone); None if it is not an SQLite database."""
    import sqlite3

    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            names = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            return {name: {row[1] for row in connection.execute(f'PRAGMA table_info("{name}")')} for name in names}
        finally:
            connection.close()
    except sqlite3.DatabaseError:
        return None


def open_store(url: str | None = None, create: bool = True) -> Engine:
    """Connect to the store at ``url`` (a SQLAlchemy URL or a plain file path).

    Read-only first: an existing SQLite file is inspected through a read-only connection, and a
    file that is not an SQLite database, or one whose tables are not this project's, raises
    :class:`StoreError` with its bytes unchanged. ``create=False`` (commands that only read:
    ``results``, ``export``, ``compare``) never creates a file. A new file's folder must exist
    (only the default store's ``results/`` folder is created), so a typo never scatters folders."""
    url = url or default_url()
    if "://" not in url:
        url = f"sqlite:///{Path(url).expanduser().resolve()}"
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :])
        if path.is_dir():
            raise StoreError(f"--db {path} is a directory; give a file path such as {path / 'bench.sqlite'}")
        if path.exists():
            tables = _sqlite_tables(path) if path.stat().st_size else set()
            if tables is None:
                raise StoreError(f"{path} is not an SQLite database, so it is not a bench store; it was left "
                                 "untouched. Pass another --db.")
            ours = {name: set(table.columns.keys()) for name, table in Base.metadata.tables.items()}
            foreign = set(tables) - BENCH_TABLES - {"sqlite_sequence"}
            mismatched = [name for name in set(tables) & BENCH_TABLES
                          if not (ours[name] - {column for _, column, _ in _LATER_COLUMNS}) <= tables[name]]
            if foreign or mismatched or (tables and "runs" not in tables):
                raise StoreError(f"{path} is another program's SQLite database (tables: {', '.join(sorted(tables))}); "
                                 "it was left untouched. Pass a new file or an existing bench store as --db.")
        elif not create:
            raise StoreError(f"no bench store at {path}; nothing was created. Pass the --db a run was stored in "
                             "(default results/bench.sqlite, or $BENCH_DB).")
        elif not path.parent.is_dir():
            if url == f"sqlite:///{PROJECT_ROOT / 'results' / 'bench.sqlite'}":
                path.parent.mkdir(parents=True, exist_ok=True)
            else:
                raise StoreError(f"the folder {path.parent} does not exist; create it first (--db {path})")
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
                try:
                    cursor.execute("PRAGMA journal_mode=WAL")
                except Exception:  # noqa: BLE001 - a read-only file keeps its journal mode; reads still work
                    pass
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin_immediate(connection: Any) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    try:
        if create:
            Base.metadata.create_all(engine)
            _add_missing_columns(engine)
        else:
            with engine.connect() as connection:  # reachable, and a bench store
                from sqlalchemy import inspect

                if "runs" not in inspect(connection).get_table_names():
                    raise StoreError(f"{url} holds no bench runs (no 'runs' table); nothing was changed")
    except (DatabaseError, OperationalError) as err:
        engine.dispose()
        raise StoreError(_store_error(url, err)) from None
    return engine


def _store_error(url: str, err: Exception) -> str:
    """A message for a store that cannot be opened, by cause (not "not a bench database" when the
    server refused or the file is read-only)."""
    reason = str(getattr(err, "orig", err))
    lowered = reason.lower()
    if "readonly" in lowered or "read-only" in lowered or "read only" in lowered:
        return f"{url} is read-only here ({reason}); make it writable or pass another --db"
    if "unable to open" in lowered:
        return f"{url} cannot be opened ({reason}); check that its folder exists and is writable"
    if "connection" in lowered or "refused" in lowered or "could not connect" in lowered:
        return f"cannot reach the database server of {url} ({reason}); is it running and the URL right?"
    return f"{url} cannot be used as a result store: {reason}"


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
            if "locked" not in str(err.orig).lower():
                raise StoreError(_store_error(str(engine.url), err)) from None
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * 2**attempt)
    return None


def get_run(session: Session, run_id: str) -> Run:
    """The run with id ``run_id`` (a unique prefix is accepted)."""
    import re

    if not re.fullmatch(r"[0-9a-f]{1,32}", run_id or ""):
        raise StoreError(f"{run_id!r} is not a run id: ids are hexadecimal (e.g. 3f2a9c01b7de; a unique prefix "
                         "works); `bench results --all` lists them")
    run = session.get(Run, run_id)
    if run is not None:
        return run
    matches = list(session.scalars(select(Run).where(Run.id.startswith(run_id, autoescape=True))))
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise StoreError(f"no run with id {run_id!r} in the store; `bench results` lists them")
    raise StoreError(f"run id prefix {run_id!r} is ambiguous: {', '.join(m.id for m in matches)}")
