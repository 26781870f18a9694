"""Engines, sessions and schema migrations."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from connector.adapters.sql.repositories import (
    SqlAudit,
    SqlMarkers,
    SqlOutbox,
    SqlPermissionSets,
    SqlPrimaryChanges,
    SqlSellers,
    SqlTokens,
    SqlUsers,
)
from connector.domain.model import text_key

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SQLITE_MMAP_BYTES = 256 * 1024 * 1024

_writing: ContextVar[bool] = ContextVar("seller_connector_writing", default=True)


def _fold(value: Any) -> Any:
    return text_key(value) if isinstance(value, str) else value


def make_engine(url: str, *, busy_timeout_ms: int = 5000) -> Engine:
    """Create an engine. SQLite gets WAL, a busy timeout and foreign keys, so that several
    gunicorn workers can share one file; a write that waits longer than the busy timeout
    fails (and the HTTP layer answers 503 with Retry-After)."""
    parsed = make_url(url)
    kwargs: dict[str, Any] = {"future": True}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": busy_timeout_ms / 1000, "check_same_thread": False}
    else:
        kwargs["pool_pre_ping"] = True
        kwargs["pool_size"] = 5
    engine = create_engine(url, **kwargs)
    if parsed.get_backend_name() == "sqlite":

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            # Let SQLAlchemy, not pysqlite, open transactions: SAVEPOINTs need it.
            dbapi_connection.isolation_level = None
            # SQLite's lower() folds ASCII only; filters need the same folding as text_key().
            dbapi_connection.create_function("lower", 1, _fold, deterministic=True)
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            # Read pages through a shared memory map rather than copying each into every
            # connection's own cache: scans of a large seller read far fewer bytes.
            cursor.execute(f"PRAGMA mmap_size={SQLITE_MMAP_BYTES}")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin(connection: Any) -> None:
            # A writing unit of work takes the write lock up front (IMMEDIATE), so writers
            # queue on the busy timeout instead of failing half-way when a read lock cannot
            # be upgraded; readers stay DEFERRED and, with WAL, never wait for writers.
            connection.exec_driver_sql("BEGIN IMMEDIATE" if _writing.get() else "BEGIN")

    return engine


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str) -> None:
    """Bring the database at ``url`` to the latest migration."""
    command.upgrade(alembic_config(url), "head")


class SqlUnitOfWork:
    """One transaction over the store, with its repositories.

    Used as a context manager: leaving it without ``commit`` rolls everything back.
    """

    def __init__(self, session_factory: sessionmaker[Session], *, write: bool = True) -> None:
        self.session_factory = session_factory
        self.write = write
        self._intent: Token[bool] | None = None

    def __enter__(self) -> SqlUnitOfWork:
        self._intent = _writing.set(self.write)
        self.session = self.session_factory()
        self.sellers = SqlSellers(self.session)
        self.users = SqlUsers(self.session)
        self.permission_sets = SqlPermissionSets(self.session)
        self.tokens = SqlTokens(self.session)
        self.audit = SqlAudit(self.session)
        self.outbox = SqlOutbox(self.session)
        self.markers = SqlMarkers(self.session)
        self.primary_changes = SqlPrimaryChanges(self.session)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.session.rollback()
            self.session.close()
        finally:
            if self._intent is not None:
                _writing.reset(self._intent)
                self._intent = None

    def commit(self) -> None:
        self.session.commit()

    def rollback(self) -> None:
        self.session.rollback()

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A nested transaction: what fails inside is undone, the rest of the request stays."""
        with self.session.begin_nested():
            yield
