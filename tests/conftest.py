"""Shared fixtures: a migrated database (SQLite file or real PostgreSQL), the wired
connector, sellers with tokens, and a SCIM client."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from connector.adapters.sql.database import upgrade
from connector.bootstrap import Connector, bootstrap
from connector.domain.drafts import Actor
from connector.domain.model import Plan, SellerAccount, SellerUser
from connector.entrypoints.web import create_app
from connector.services import sellers as seller_cases
from connector.settings import Settings
from tests.support.keycloak import keycloak_server_fixture
from tests.support.postgres import PostgresServer

SCIM = "application/scim+json"
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
BULK_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
SELLER_USER = "urn:seller-connector:scim:schemas:extension:seller:2.0:User"
SELLER_GROUP = "urn:seller-connector:scim:schemas:extension:seller:2.0:Group"


# ONE Keycloak per test session, for every test folder that needs it (started on first use).
keycloak_server = keycloak_server_fixture("session")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session, with a migrated template database."""
    server = PostgresServer().start()
    upgrade(server.create_database("template_sc"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file that each test copies, so migrations run once."""
    path = tmp_path_factory.mktemp("template") / "template.sqlite3"
    upgrade(f"sqlite:///{path}")
    return path


def _fresh_database(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if kind == "sqlite":
        template = request.getfixturevalue("sqlite_template")
        target = tmp_path / "store.sqlite3"
        shutil.copy(template, target)
        return f"sqlite:///{target}"
    server: PostgresServer = request.getfixturevalue("postgres")
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.dsn("postgres"), autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}" TEMPLATE template_sc')

    def drop() -> None:
        # Keeps the session server small, so that stopping it stays quick.
        with psycopg.connect(server.dsn("postgres"), autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    request.addfinalizer(drop)
    return server.url(name)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, migrated database: each test runs once on SQLite and once on PostgreSQL."""
    return _fresh_database(request.param, request, tmp_path)


@pytest.fixture
def sqlite_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, migrated SQLite database, for tests that need only one store."""
    return _fresh_database("sqlite", request, tmp_path)


def make_settings(database_url: str, home: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "public_url": "http://scim.test",
        "secret_key": "test-secret-" + uuid.uuid4().hex,
        "home": home,
        "auth_failures_per_minute": 1000,
        "auth_failures_per_address": 5000,
        # Tests revoke tokens and expect the next request refused: no verification cache
        # (tests/attack/test_auth.py measures the cache's bound on its own).
        "token_cache_seconds": 0,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def connector(database_url: str, tmp_path: Path) -> Iterator[Connector]:
    wired = bootstrap(make_settings(database_url, tmp_path), migrate=False)
    yield wired
    wired.engine.dispose()


@dataclass
class SellerHandle:
    """A seller created for a test, with a bearer token for its SCIM endpoint."""

    seller: SellerAccount
    primary: SellerUser
    token: str
    connector: Connector

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Content-Type": SCIM, "Accept": SCIM}


@pytest.fixture
def make_seller(connector: Connector) -> Callable[..., SellerHandle]:
    def make(
        name: str | None = None, plan: Plan = Plan.professional, primary: str | None = None
    ) -> SellerHandle:
        name = name or f"Seller {uuid.uuid4().hex[:6]}"
        primary = primary or f"owner-{uuid.uuid4().hex[:6]}@{name.split()[0].lower()}.example.com"
        with connector.uow() as uow:
            seller, owner = seller_cases.create_seller(
                uow, connector.catalogue, name, plan, primary, "Olive Owner", Actor("test")
            )
            _, token = seller_cases.issue_token(uow, seller, "test", Actor("test"))
            uow.commit()
        return SellerHandle(seller, owner, token, connector)

    return make


@pytest.fixture
def app(connector: Connector) -> Any:
    return create_app(connector)


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


def user_body(user_name: str, email: str | None = None, **extra: Any) -> dict[str, Any]:
    """A SCIM User body as Okta or Entra would send it."""
    body: dict[str, Any] = {
        "schemas": [USER_SCHEMA],
        "userName": user_name,
        "name": {"givenName": "Test", "familyName": "User"},
        "emails": [{"value": email or user_name, "type": "work", "primary": True}],
        "active": True,
    }
    body.update(extra)
    return body


def bulk_creates(bodies: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """A BulkRequest body that POSTs each of these User bodies (bulkIds u0, u1, ...)."""
    operations = [
        {"method": "POST", "path": "/Users", "bulkId": f"u{n}", "data": body}
        for n, body in enumerate(bodies)
    ]
    return {"schemas": [BULK_SCHEMA], "Operations": operations}


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests talk to loopback servers only.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
