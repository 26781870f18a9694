"""SQLite writers take turns (`WriterQueue`): a writer that cannot get its turn within the
busy timeout fails as SQLite itself would, and the turn passes on once a transaction has
ended, whether it committed or rolled back. Two engines on one file stand for two gunicorn
workers (each has its own file lock)."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from connector.adapters.sql.database import SqlUnitOfWork, make_engine

MARK = text(
    "INSERT INTO sync_markers (source, marker, updated_at) "
    "VALUES (:source, :marker, '2026-12-06 00:00:00') "
    "ON CONFLICT (source) DO UPDATE SET marker = excluded.marker"
)
READ = text("SELECT marker FROM sync_markers WHERE source = :source")


def _write(engine: Engine, marker: str) -> None:
    with SqlUnitOfWork(engine) as uow:
        uow.write(MARK, {"source": "turns", "marker": marker})
        uow.commit()


def test_a_writer_without_its_turn_fails_as_sqlite_busy_and_writes_once_it_passes(
    sqlite_url: str,
) -> None:
    first = make_engine(sqlite_url, busy_timeout_ms=300)
    second = make_engine(sqlite_url, busy_timeout_ms=300)
    try:
        with SqlUnitOfWork(first, immediate=True) as holder:
            holder.write(MARK, {"source": "turns", "marker": "first"})
            started = time.monotonic()
            with pytest.raises(OperationalError, match="database is locked"):
                _write(second, "second")
            waited = time.monotonic() - started
            assert 0.25 <= waited < 2.0
            holder.commit()
        # The holder committed: its turn passed on, and the writer that failed writes now
        # (had the turn stayed held, it would fail again after the busy timeout).
        _write(second, "second")
        with SqlUnitOfWork(first) as reader:
            assert reader.read(READ, {"source": "turns"}).scalar_one() == "second"
    finally:
        first.dispose()
        second.dispose()


@pytest.mark.parametrize("end", ["commit", "rollback", "leave"])
def test_the_turn_passes_on_however_the_transaction_ends(sqlite_url: str, end: str) -> None:
    first = make_engine(sqlite_url, busy_timeout_ms=300)
    second = make_engine(sqlite_url, busy_timeout_ms=300)
    try:
        for round_ in range(3):  # the same pooled connection, several transactions
            with SqlUnitOfWork(first, immediate=True) as holder:
                holder.write(MARK, {"source": "turns", "marker": f"first-{round_}"})
                if end == "commit":
                    holder.commit()
                elif end == "rollback":
                    holder.rollback()
                # "leave": the block ends with the transaction open; leaving rolls it back
            _write(second, f"second-{round_}")  # fails after the busy timeout if still held
        # A reading unit of work of the same pooled connection does not take the turn.
        with SqlUnitOfWork(first) as reader:
            assert reader.read(READ, {"source": "turns"}).scalar_one() == "second-2"
            _write(second, "while-reading")
    finally:
        first.dispose()
        second.dispose()
