"""Engines, sessions and schema migrations."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
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


class WriterQueue:
    """Where the writers of every process wait their turn for SQLite's write lock.

    A writer that finds the database locked lets SQLite sleep and retry, sleeping longer
    each time (up to 100 ms): under concurrent writes the lock often stands free while
    the next writer sleeps, and a writer that keeps losing to newcomers can wait past
    the busy timeout and fail. Here the writers of a process queue on a lock, and one of
    each process at a time on a file lock beside the database, tried every few hundred
    microseconds: the write lock passes on as soon as it is released, roughly in turn.
    SQLite's lock still guards the data (other programs take it as before); this only
    orders the writers of this service. A writer that cannot get its turn within the
    busy timeout fails as SQLite would ("database is locked": 503 over HTTP).
    """

    def __init__(self, path: Path, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self._pid = -1
        self._fd = -1
        self._lock = threading.Lock()
        self._opening = threading.Lock()

    def _descriptor(self) -> int:
        with self._opening:
            if self._pid != os.getpid():  # not inherited across a fork: open our own
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
                weakref.finalize(self, os.close, self._fd)
                self._lock = threading.Lock()
                self._pid = os.getpid()
            return self._fd

    def acquire(self) -> bool:
        """Wait for the turn, at most the timeout. :returns: whether it came."""
        deadline = time.monotonic() + self.timeout
        fd = self._descriptor()
        lock = self._lock
        if not lock.acquire(timeout=self.timeout):
            return False
        pause = 0.0002
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    lock.release()
                    return False
                time.sleep(pause)
                pause = min(pause * 2, 0.002)

    def release(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._lock.release()


_QUEUED = "seller_connector.writer_queued"


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
        queue: WriterQueue | None = None
        if parsed.database and parsed.database != ":memory:":
            queue = WriterQueue(Path(f"{parsed.database}-writers"), busy_timeout_ms / 1000)

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
            if not _writing.get():
                connection.exec_driver_sql("BEGIN")
                return
            if queue is not None:
                if not queue.acquire():
                    raise OperationalError(
                        "BEGIN IMMEDIATE", {}, sqlite3.OperationalError("database is locked")
                    )
                connection.info[_QUEUED] = queue
            try:
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            except BaseException:
                _leave_queue(connection.info)
                raise

        @event.listens_for(engine, "commit")
        @event.listens_for(engine, "rollback")
        def _end(connection: Any) -> None:
            _leave_queue(connection.info)

        @event.listens_for(engine.pool, "checkin")
        def _checkin(_dbapi_connection: Any, record: Any) -> None:
            # Should a connection come back without its transaction ending through the
            # events above, it still gives up its turn.
            _leave_queue(record.info)

    return engine


def _leave_queue(info: dict[str, Any]) -> None:
    queue = info.pop(_QUEUED, None)
    if queue is not None:
        queue.release()


def database_reachable(engine: Engine) -> bool:
    """Whether the database answers ``SELECT 1`` (never waits for writers)."""
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
    except DBAPIError:
        return False
    return True


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
