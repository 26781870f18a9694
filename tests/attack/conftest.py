"""Attack and fault tests run on SQLite (the default store); the PostgreSQL path is covered
by the storage contract and HTTP tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, select

from connector.bootstrap import Connector, bootstrap
from tests.conftest import make_settings

NOT_DATA = {"alembic_version", "auth_failures"}
"""Tables whose rows a refused request may write: the schema version, and the brake's count
of failed authentications (a security log, written precisely when a request is refused)."""


@pytest.fixture
def connector(sqlite_url: str, tmp_path: Path) -> Connector:
    return bootstrap(make_settings(sqlite_url, tmp_path), migrate=False)


def dump_store(connector: Connector) -> dict[str, list[Any]]:
    """Every row of every table the schema has (read from the database itself, so that a
    table added later is covered too), in a stable order: to compare before and after."""
    metadata = MetaData()
    metadata.reflect(connector.engine)
    with connector.engine.connect() as connection:
        return {
            name: sorted(tuple(str(v) for v in row) for row in connection.execute(select(table)))
            for name, table in sorted(metadata.tables.items())
            if name not in NOT_DATA
        }


def test_the_dump_covers_every_table_of_the_schema(connector: Connector) -> None:
    """A positive control: the comparison sees all the data tables, and sees a change."""
    from connector.adapters.sql.tables import Base

    dumped = dump_store(connector)
    assert set(dumped) == set(Base.metadata.tables) - NOT_DATA
    with connector.uow() as uow:
        uow.markers.set("control", "x")
        uow.commit()
    assert dump_store(connector) != dumped
