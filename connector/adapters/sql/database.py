"""Engines, transactions and the unit of work; schema migrations.

**Short write transactions.** A unit of work reads in an ordinary (deferred) transaction
that never waits for writers (on PostgreSQL in autocommit: see :func:`begin`), and *stages*
its writes; ``commit`` then opens one short
write transaction (``BEGIN IMMEDIATE`` on SQLite, in turn with the other writers), runs the
staged statements, checks that each versioned UPDATE hit its row, and commits. No lock is
held while Python decides what to write. A row that changed since it was read is reported
as :class:`~connector.domain.errors.VersionMismatch`, a unique key taken meanwhile as
:class:`~connector.domain.errors.Uniqueness`: the caller reads again and retries.

Batch writers that must read their own writes (a directory sync batch, the console poll)
open the unit of work with ``immediate=True``: the write transaction starts at once and
statements run as they come, as in a classic transaction.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from pydantic_core import from_json, to_json
from sqlalchemy import Connection, Engine, Result, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, IntegrityError
from sqlalchemy.sql.dml import Insert

from connector.adapters.sql import repositories as r
from connector.adapters.sql.search import SqlSearch
from connector.domain.errors import Uniqueness, VersionMismatch
from connector.domain.model import text_key

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SQLITE_MMAP_BYTES = 256 * 1024 * 1024
_IMMEDIATE = "seller_connector.immediate"
_QUEUED = "seller_connector.writer_queued"
_TURN_POLL_SECONDS = 0.0002
_RESTING_SINCE = "seller_connector.resting_since"
PING_AFTER_REST_SECONDS = 1.0

UNIQUE_TAKEN = (
    "A unique value (userName, email or displayName) was taken by a concurrent request. "
    "Read the resource again and retry."
)


def _json_text(value: Any) -> str:
    return to_json(value).decode()


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
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    lock.release()
                    return False
                # At most one waiter per process polls. Backing off to 2 ms left the lock
                # standing free between writers of different workers (writes at 8 clients:
                # 15-20% of the CPU idle, about a tenth fewer requests).
                time.sleep(_TURN_POLL_SECONDS)

    def release(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._lock.release()


def _private_sqlite_file(path: Path) -> None:
    """Create the database file (and its folder) readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))


def make_engine(url: str, *, busy_timeout_ms: int = 5000) -> Engine:
    """Create an engine. SQLite gets WAL, a busy timeout and foreign keys, so that several
    gunicorn workers can share one file; a write that waits longer than the busy timeout
    fails (and the HTTP layer answers 503 with Retry-After)."""
    parsed = make_url(url)
    kwargs: dict[str, Any] = {}
    sqlite = parsed.get_backend_name() == "sqlite"
    if sqlite:
        if parsed.database and parsed.database != ":memory:":
            _private_sqlite_file(Path(parsed.database))
        kwargs["connect_args"] = {"timeout": busy_timeout_ms / 1000, "check_same_thread": False}
    else:
        kwargs["pool_size"] = 8
    # pydantic-core's JSON codec: several times faster than the standard library's on the
    # small documents of every row (emails, permissions, profiles).
    kwargs["json_serializer"] = _json_text
    kwargs["json_deserializer"] = from_json
    engine = create_engine(url, **kwargs)
    if not sqlite:
        _ping_rested_connections(engine)
        return engine
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

    # BEGIN, COMMIT and ROLLBACK are this engine's dialect's own steps, not connection events
    # as in SQLAlchemy's SQLite recipe: any connection event makes SQLAlchemy dispatch events
    # around every transaction and statement (a read unit of work 90-100 -> 70-77 us, a
    # write one 160-170 -> 115-130 us; a statement 19 -> 15.6 us). The turn now also
    # passes on after COMMIT has run, not before (the commit event came first).
    dialect = engine.dialect
    driver_commit, driver_rollback = dialect.do_commit, dialect.do_rollback

    def _begin(dbapi_connection: Any) -> None:
        # A write transaction takes the write lock up front (IMMEDIATE), in turn with the
        # other writers; readers stay DEFERRED and, with WAL, never wait for writers.
        info = dbapi_connection.info
        if not info.get(_IMMEDIATE):
            dbapi_connection.driver_connection.execute("BEGIN")
            return
        if queue is not None:
            if not queue.acquire():
                # SQLAlchemy raises it as OperationalError, as SQLite's own busy error.
                raise sqlite3.OperationalError("database is locked")
            info[_QUEUED] = queue
        try:
            dbapi_connection.driver_connection.execute("BEGIN IMMEDIATE")
        except BaseException:
            _leave_queue(info)
            raise

    def _ended(end: Callable[[Any], None]) -> Callable[[Any], None]:
        def _end(dbapi_connection: Any) -> None:
            try:
                end(dbapi_connection)
            finally:
                # The next transaction of this pooled connection reads unless asked to
                # write; the turn passes on once the transaction has ended.
                info = _pool_info(dbapi_connection)
                info.pop(_IMMEDIATE, None)
                _leave_queue(info)

        return _end

    dialect.do_begin = _begin  # type: ignore[method-assign]
    dialect.do_commit = _ended(driver_commit)  # type: ignore[method-assign]
    dialect.do_rollback = _ended(driver_rollback)  # type: ignore[method-assign]

    @event.listens_for(engine.pool, "checkin")
    def _checkin(_dbapi_connection: Any, record: Any) -> None:
        # Should a connection come back without its transaction ending through the
        # events above, it still gives up its turn.
        record.info.pop(_IMMEDIATE, None)
        _leave_queue(record.info)

    return engine


def _ping_rested_connections(engine: Engine) -> None:
    """Check a pooled connection before use only when it rested a while.

    SQLAlchemy's ``pool_pre_ping`` pings at every checkout: on PostgreSQL a round trip more
    for every unit of work, as many as a GET's own. A connection in steady use was alive
    milliseconds ago; one that rested may have been dropped (a server restart, an idle
    timeout on the way) and is pinged, and replaced when dead. One that dies while in use
    fails its unit of work's first statement, which then runs again on a fresh connection
    (:meth:`SqlUnitOfWork.read`).
    """

    @event.listens_for(engine.pool, "checkin")
    def _rested(dbapi_connection: Any, record: Any) -> None:
        record.info[_RESTING_SINCE] = time.monotonic()
        # Whoever checks it out next gets transactions unless it asks otherwise (begin()).
        if dbapi_connection is not None and not dbapi_connection.closed:
            with contextlib.suppress(Exception):
                dbapi_connection.autocommit = False

    @event.listens_for(engine.pool, "checkout")
    def _ping(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get(_RESTING_SINCE)
        if since is None or time.monotonic() - since < PING_AFTER_REST_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as error:
            if engine.dialect.is_disconnect(error, dbapi_connection, None):
                # The pool discards this connection and checks out another.
                raise DisconnectionError() from error
            raise


def _pool_info(dbapi_connection: Any) -> dict[str, Any]:
    """The pooled connection's ``info``; empty for the engine's first connect, which has none."""
    try:
        return dbapi_connection.info
    except NotImplementedError:
        return {}


def _leave_queue(info: dict[str, Any]) -> None:
    queue = info.pop(_QUEUED, None)
    if queue is not None:
        queue.release()


def begin(connection: Connection, *, immediate: bool) -> Any:
    """Begin a transaction on ``connection``: a write transaction when ``immediate``.

    On PostgreSQL a read-only one runs its statements in autocommit: at READ COMMITTED
    every statement takes its own snapshot inside a transaction too, so BEGIN and ROLLBACK
    bought nothing but two round trips for every reading unit of work.
    """
    connection.info[_IMMEDIATE] = immediate
    if connection.dialect.name == "postgresql":
        connection.connection.driver_connection.autocommit = not immediate
    return connection.begin()


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """One short write transaction, committed when the block ends without error."""
    with engine.connect() as connection, begin(connection, immediate=True):
        yield connection


@contextmanager
def read_transaction(engine: Engine) -> Iterator[Connection]:
    """A read-only transaction that never waits for writers: one snapshot on SQLite; on
    PostgreSQL each statement its own (READ COMMITTED, as in any of its transactions)."""
    with engine.connect() as connection, begin(connection, immediate=False):
        yield connection


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
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        _private_sqlite_file(Path(parsed.database))
    command.upgrade(alembic_config(url), "head")


@dataclass
class _Write:
    """A staged statement, and what a wrong row count means."""

    statement: Any
    parameters: Any
    expected_rows: int | None
    mismatch: Callable[[], Exception] | None
    after: Callable[[Result[Any]], None] | None


class SqlUnitOfWork:
    """One unit of work over the store, with its repositories.

    Used as a context manager: leaving it without ``commit`` discards every staged write.
    """

    def __init__(self, engine: Engine, *, immediate: bool = False) -> None:
        self.engine = engine
        self.immediate = immediate
        self.dialect = engine.dialect.name
        self._staged: list[_Write] = []
        self.connection: Connection | None = None
        self._fresh = False  # nothing ran yet on this unit of work's connection
        self._depth = 0

    # -- Lifecycle ------------------------------------------------------------------

    def __enter__(self) -> SqlUnitOfWork:
        # Re-entrant: a use case given a unit of work its caller holds open joins it.
        self._depth += 1
        if self._depth > 1:
            return self
        self.connection = self.engine.connect()
        self._fresh = True
        self._staged = []
        self.sellers = r.SqlSellers(self)
        self.users = r.SqlUsers(self)
        self.permission_sets = r.SqlPermissionSets(self)
        self.tokens = r.SqlTokens(self)
        self.audit = r.SqlAudit(self)
        self.outbox = r.SqlOutbox(self)
        self.markers = r.SqlMarkers(self)
        self.primary_changes = r.SqlPrimaryChanges(self)
        self.search = SqlSearch(self)
        self.auth_failures = r.SqlAuthFailures(self)
        self.operators = r.SqlOperators(self)
        self.recipients = r.SqlRecipients(self)
        self.change_feed = r.SqlChangeFeed(self)
        if self.immediate:
            begin(self.connection, immediate=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth > 0:
            return
        connection, self.connection = self.connection, None
        self._staged = []
        if connection is None:
            return
        try:
            if connection.in_transaction():
                connection.rollback()
        finally:
            connection.close()

    def _live(self) -> Connection:
        if self.connection is None:
            raise RuntimeError("the unit of work is not open: use it in a with block")
        return self.connection

    # -- Reading and writing ----------------------------------------------------------

    def read(self, statement: Any, parameters: Any = None) -> Result[Any]:
        """Run a query (inside the read snapshot, or the write transaction).

        The first statement of a unit of work runs again, once, on a fresh connection when
        its pooled connection turns out dead (the database restarted): nothing ran yet.
        """
        connection = self._live()
        first = self._fresh
        self._fresh = False
        if not connection.in_transaction():
            begin(connection, immediate=self.immediate)
        try:
            return connection.execute(statement, parameters)
        except DBAPIError as error:
            if not (first and error.connection_invalidated):
                raise
        self._reconnect()
        return self.read(statement, parameters)

    def _reconnect(self) -> None:
        connection = self._live()
        with contextlib.suppress(DBAPIError):
            connection.close()
        self.connection = self.engine.connect()

    def write(
        self,
        statement: Any,
        parameters: Any = None,
        *,
        expected_rows: int | None = None,
        mismatch: Callable[[], Exception] | None = None,
        after: Callable[[Result[Any]], None] | None = None,
    ) -> None:
        """Stage a statement (or run it now, in an immediate unit of work).

        :param expected_rows: the row count it must have (a versioned UPDATE: 1);
            otherwise ``mismatch()`` is raised and nothing of the unit of work is kept.
        :param after: called with the result once it ran.
        """
        staged = _Write(statement, parameters, expected_rows, mismatch, after)
        if self.immediate:
            self._run(staged)
        else:
            self._staged.append(staged)

    def _run(self, staged: _Write) -> None:
        connection = self._live()
        self._fresh = False  # a write is never run again elsewhere: it may have applied
        if not connection.in_transaction():
            begin(connection, immediate=True)
        try:
            result = connection.execute(staged.statement, staged.parameters)
        except IntegrityError as error:
            raise Uniqueness(UNIQUE_TAKEN) from error
        if staged.expected_rows is not None and result.rowcount != staged.expected_rows:
            raise (staged.mismatch or _version_mismatch)()
        if staged.after is not None:
            staged.after(result)

    @property
    def has_writes(self) -> bool:
        """Whether anything is staged."""
        return bool(self._staged)

    def commit(self) -> None:
        """Write everything staged in one short write transaction, and end the snapshot.

        :raises VersionMismatch: a row changed since it was read (nothing is written).
        :raises Uniqueness: a unique value was taken meanwhile (nothing is written).
        """
        connection = self._live()
        if self.immediate:
            if connection.in_transaction():
                connection.commit()
            return
        staged, self._staged = self._staged, []
        if connection.in_transaction():
            connection.rollback()  # the read snapshot ends: writes see the newest state
        if not staged:
            return
        begin(connection, immediate=True)
        try:
            for write in _coalesced(staged):
                self._run(write)
        except BaseException:
            connection.rollback()
            raise
        connection.commit()

    def rollback(self) -> None:
        """Forget what is staged and end the transaction."""
        self._staged = []
        connection = self._live()
        if connection.in_transaction():
            connection.rollback()

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """What fails inside is undone alone; the rest of the unit of work stays."""
        if self.immediate:
            connection = self._live()
            self._fresh = False
            if not connection.in_transaction():
                begin(connection, immediate=True)
            with connection.begin_nested():
                yield
            return
        mark = len(self._staged)
        try:
            yield
        except BaseException:
            del self._staged[mark:]
            raise


def _coalesced(staged: list[_Write]) -> Iterator[_Write]:
    """The staged writes, with each run of plain inserts of one statement (nothing to check,
    one row each) sent as one ``executemany``: a group PATCH's hundred outbox entries, for
    instance. The order of the writes is kept."""
    run: list[_Write] = []
    for write in staged:
        if run and not (
            _plain_insert(write)
            and write.statement is run[0].statement
            and write.parameters.keys() == run[0].parameters.keys()
        ):
            yield _together(run)
            run = []
        if _plain_insert(write):
            run.append(write)
        else:
            yield write
    if run:
        yield _together(run)


def _plain_insert(write: _Write) -> bool:
    return (
        isinstance(write.statement, Insert)
        and isinstance(write.parameters, dict)
        and write.expected_rows is None
        and write.after is None
    )


def _together(run: list[_Write]) -> _Write:
    if len(run) == 1:
        return run[0]
    return _Write(run[0].statement, [w.parameters for w in run], None, None, None)


def _version_mismatch() -> Exception:
    return VersionMismatch("The resource changed since it was read: read it again and retry.")
