"""Fixtures for the outbox, console and reconcile tests against the session's real Keycloak.

The store is SQLite here (one file per test; the queue's own tests also run on PostgreSQL).
Every test makes its own sellers, so the shared Keycloak needs no cleaning between tests.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from connector.adapters.keycloak import KeycloakIdentityProvider
from connector.adapters.sql.outbox_queue import SqlOutboxQueue
from connector.bootstrap import Connector, bootstrap
from connector.entrypoints.cli import main
from connector.services.outbox import OutboxPolicy, OutboxWorker
from tests.conftest import make_settings
from tests.support.keycloak import KeycloakServer
from tests.support.smtp import SmtpSink

# Fast retries: the outage test must drain within seconds once Keycloak is back.
FAST = OutboxPolicy(
    backoff_base=0.2,
    backoff_cap=2.0,
    max_attempts=1000,
    poll_interval=1.0,
    interval=0.2,
    bulk_threshold=6,
)


@pytest.fixture
def connector(sqlite_url: str, tmp_path: Path) -> Connector:
    """The connector on a fresh SQLite store (overrides the root fixture: SQLite only here)."""
    return bootstrap(make_settings(sqlite_url, tmp_path), migrate=False)


@pytest.fixture
def queue(connector: Connector) -> SqlOutboxQueue:
    return SqlOutboxQueue(connector.engine)


@pytest.fixture(scope="session")
def idp(keycloak_server: KeycloakServer) -> KeycloakIdentityProvider:
    """The adapter as the least-privilege seller-connector client (for reading back)."""
    provider = KeycloakIdentityProvider(keycloak_server.connector_settings())
    provider.ensure_catalogue()
    return provider


@pytest.fixture
def make_worker(
    connector: Connector,
    keycloak_server: KeycloakServer,
    smtp: SmtpSink,
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[..., OutboxWorker]:
    """A worker on the test's store and the session Keycloak (with the console poll); the
    realm's mail goes to the test's SMTP sink, so that invitations can be sent, and so do the
    connector's own emails (notices) unless the test named another mail server first."""
    if not os.environ.get("SELLER_CONNECTOR_SMTP_HOST"):
        monkeypatch.setenv("SELLER_CONNECTOR_SMTP_HOST", smtp.host)
        monkeypatch.setenv("SELLER_CONNECTOR_SMTP_PORT", str(smtp.port))

    def make(policy: OutboxPolicy = FAST, **settings: Any) -> OutboxWorker:
        wired = dataclasses.replace(
            connector, keycloak=keycloak_server.connector_settings(**settings)
        )
        return wired.outbox_worker(policy=policy)

    return make


@pytest.fixture
def smtp(keycloak_server: KeycloakServer) -> Iterator[SmtpSink]:
    """An SMTP sink, with the realm's mail pointed at it for the test."""
    with SmtpSink() as sink:
        keycloak_server.set_smtp(sink.host, sink.port)
        yield sink


@pytest.fixture
def cli(
    connector: Connector,
    keycloak_server: KeycloakServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Callable[..., Result]:
    """Run ``seller-connector ...`` on the test's store and the session Keycloak."""
    monkeypatch.setenv("SELLER_CONNECTOR_DATABASE_URL", str(connector.engine.url))
    monkeypatch.setenv("SELLER_CONNECTOR_HOME", str(tmp_path))
    monkeypatch.setenv("SELLER_CONNECTOR_KEYCLOAK_URL", keycloak_server.url)
    monkeypatch.setenv("SELLER_CONNECTOR_KEYCLOAK_REALM", keycloak_server.realm)
    monkeypatch.setenv(
        "SELLER_CONNECTOR_KEYCLOAK_CLIENT_SECRET", keycloak_server.connector_client_secret()
    )

    def run(*args: str) -> Result:
        return CliRunner().invoke(main, list(args), catch_exceptions=False)

    return run
