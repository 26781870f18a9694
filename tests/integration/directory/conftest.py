"""Fixtures for directory sync tests: a real slapd (from the LDAP tests) feeding the real
SQL store through ``StoreDirectoryTarget``, checked over SCIM and in the tables.

``connector`` is overridden to a fresh SQLite store (fast): ``make_seller`` and
``client`` from tests/conftest.py use it. Tests that must run on PostgreSQL too ask
for ``database_url`` themselves (test_postgres.py).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from connector.bootstrap import Connector, bootstrap
from tests.conftest import make_settings

# The LDAP tests' servers: a fresh slapd per test, seeded with the corp directory.
from tests.integration.ldap.conftest import corp, slapd, slapd_shared  # noqa: F401
from tests.support.slapd import Slapd


@pytest.fixture
def connector(sqlite_url: str, tmp_path: Path) -> Connector:
    """A fresh, migrated SQLite store (overrides the sqlite+postgres one here)."""
    return bootstrap(make_settings(sqlite_url, tmp_path), migrate=False)


@pytest.fixture
def another_store(sqlite_template: Path, tmp_path: Path) -> Callable[[str], Connector]:
    """More independent SQLite stores, by name (two stores can sync one directory:
    one seller's emails are never reused by another)."""

    def make(name: str) -> Connector:
        folder = tmp_path / name
        folder.mkdir()
        shutil.copy(sqlite_template, folder / "store.sqlite3")
        return bootstrap(
            make_settings(f"sqlite:///{folder / 'store.sqlite3'}", folder), migrate=False
        )

    return make


@pytest.fixture
def ldap_password(monkeypatch: pytest.MonkeyPatch, corp: Slapd) -> str:  # noqa: F811
    """The sync account's password in the variable the test configs name."""
    monkeypatch.setenv("SELLER_CONNECTOR_TEST_LDAP_PASSWORD", corp.sync_password)
    return corp.sync_password
