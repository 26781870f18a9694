"""Attack and fault tests run on SQLite (the default store); the PostgreSQL path is covered
by the storage contract and HTTP tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from connector.bootstrap import Connector, bootstrap
from tests.conftest import make_settings

# Every table a request could write; a rejected request must leave all of them unchanged.
TABLES = (
    "sellers",
    "api_tokens",
    "users",
    "reserved_emails",
    "permission_sets",
    "memberships",
    "audit_events",
    "outbox",
    "primary_changes",
)


@pytest.fixture
def connector(sqlite_url: str, tmp_path: Path) -> Connector:
    return bootstrap(make_settings(sqlite_url, tmp_path), migrate=False)


def dump_store(connector: Connector) -> dict[str, list[Any]]:
    """Every row of every table, in a stable order: to compare the store before and after."""
    with connector.engine.connect() as connection:
        return {
            table: sorted(
                (
                    tuple(str(v) for v in row)
                    for row in connection.execute(text(f"SELECT * FROM {table}"))  # noqa: S608
                ),
            )
            for table in TABLES
        }
