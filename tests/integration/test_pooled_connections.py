"""Pooled PostgreSQL connections (connector/adapters/sql/database.py): pinged before use only
after a rest, and a connection that died in the pool replaced without failing the request.

A real PostgreSQL server; its backends are killed with ``pg_terminate_backend``, as a server
restart or a dropped connection would leave them.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from connector.adapters.sql import database
from connector.adapters.sql.database import SqlUnitOfWork, make_engine
from tests.conftest import _fresh_database
from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.postgres

BACKEND = text("SELECT pg_backend_pid()")


@pytest.fixture
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Engine:
    built = make_engine(_fresh_database("postgres", request, tmp_path))
    request.addfinalizer(built.dispose)
    return built


def _kill(postgres: PostgresServer, pid: int) -> None:
    with psycopg.connect(postgres.dsn("postgres"), autocommit=True) as connection:
        killed = connection.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()
    assert killed == (True,)


def _backend(engine: Engine) -> int:
    with SqlUnitOfWork(engine) as uow:
        return int(uow.read(BACKEND).scalar_one())


def test_a_connection_that_died_in_the_pool_is_replaced_at_the_first_statement(
    engine: Engine, postgres: PostgresServer
) -> None:
    first = _backend(engine)
    _kill(postgres, first)
    # Checked out again at once (no rest, so no ping): the first read meets the dead
    # connection and runs again on a fresh one.
    second = _backend(engine)
    assert second != first
    assert _backend(engine) == second


def test_a_read_after_the_first_is_never_run_again_elsewhere(
    engine: Engine, postgres: PostgresServer
) -> None:
    # Its snapshot would silently change: the unit of work fails instead.
    with SqlUnitOfWork(engine) as uow:
        pid = int(uow.read(BACKEND).scalar_one())
        _kill(postgres, pid)
        with pytest.raises(DBAPIError):
            uow.read(BACKEND)
    assert _backend(engine) != pid


def test_a_rested_connection_is_pinged_and_replaced_before_a_write(
    engine: Engine, postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    _kill(postgres, _backend(engine))
    monkeypatch.setattr(database, "PING_AFTER_REST_SECONDS", 0.0)
    # A write is never run twice, so only the ping at checkout can save this one.
    with SqlUnitOfWork(engine) as uow:
        uow.markers.set("pooled-connections", "written")
        uow.commit()
    with SqlUnitOfWork(engine) as uow:
        assert uow.markers.get("pooled-connections") == "written"


def test_without_the_ping_a_write_on_a_dead_connection_fails_and_is_not_applied(
    engine: Engine, postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The counterpart of the test above: a write that meets a dead connection is refused
    # (the HTTP layer answers 503 with Retry-After), and the next unit of work is served.
    _kill(postgres, _backend(engine))
    monkeypatch.setattr(database, "PING_AFTER_REST_SECONDS", 3600.0)
    with SqlUnitOfWork(engine) as uow, pytest.raises(DBAPIError):
        uow.markers.set("pooled-connections", "lost")
        uow.commit()
    with SqlUnitOfWork(engine) as uow:
        assert uow.markers.get("pooled-connections") is None


def test_reads_open_no_transaction_and_writes_still_do(engine: Engine) -> None:
    # At READ COMMITTED a transaction gives a read nothing: each statement has its own
    # snapshot. Reads skip BEGIN and ROLLBACK; the staged writes commit in one transaction.
    with SqlUnitOfWork(engine) as uow:
        uow.read(BACKEND)
        driver = uow.connection.connection.driver_connection  # type: ignore[union-attr]
        assert driver.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        uow.markers.set("pooled-connections", "one")
        uow.markers.set("pooled-connections-2", "two")
        with pytest.raises(DBAPIError):
            uow.write(text("SELECT 1/0"))
            uow.commit()
    with SqlUnitOfWork(engine) as uow:
        assert uow.markers.get("pooled-connections") is None  # nothing of the failed commit


def test_a_connection_comes_back_from_a_read_with_transactions(engine: Engine) -> None:
    with SqlUnitOfWork(engine) as uow:
        pid = int(uow.read(BACKEND).scalar_one())
    with engine.connect() as connection:
        assert int(connection.execute(BACKEND).scalar_one()) == pid  # the same connection
        connection.execute(
            text(
                "INSERT INTO sync_markers (source, marker, updated_at) VALUES ('x', 'kept?', now())"
            )
        )
        connection.rollback()
    with SqlUnitOfWork(engine) as uow:
        assert uow.markers.get("x") is None
