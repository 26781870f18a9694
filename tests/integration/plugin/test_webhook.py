"""The plugin's webhook end to end: a console change in a real Keycloak reaches the connector's
POST /keycloak/events at once, signed, and is applied to the store; replays and forgeries are
refused; the polled feed sees the same event id and can skip it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from connector.adapters.keycloak import KeycloakChangeFeed, KeycloakIdentityProvider
from connector.bootstrap import Connector, bootstrap
from connector.domain.drafts import Actor, UserDraft
from connector.domain.model import Email, Plan
from connector.entrypoints.web import create_app
from connector.entrypoints.webhook import PATH, SECRET_ENV, seen_by_webhook, sign
from connector.services import sellers as seller_cases
from connector.services import users as user_cases
from tests.conftest import make_settings
from tests.integration.plugin.helpers import serve
from tests.support.keycloak import KeycloakServer

pytestmark = pytest.mark.keycloak

# The webhook applies events through the console module (built alongside): until it is in
# the tree these tests say so instead of failing on the import.
pytest.importorskip("connector.services.console", reason="connector/services/console.py missing")


@pytest.fixture
def connector(sqlite_url: str, tmp_path: Path) -> Connector:
    """The connector on a fresh SQLite store."""
    return bootstrap(make_settings(sqlite_url, tmp_path), migrate=False)


@pytest.fixture
def webhook_secret(keycloak_server: KeycloakServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """The secret the session Keycloak signs with, given to the connector's environment."""
    if not keycloak_server.webhook_url or not keycloak_server.webhook_secret:
        pytest.skip("the reused Keycloak names no webhook (SELLER_CONNECTOR_TEST_WEBHOOK_*)")
    monkeypatch.setenv(SECRET_ENV, keycloak_server.webhook_secret)
    monkeypatch.delenv(SECRET_ENV + "_FILE", raising=False)
    return keycloak_server.webhook_secret


@pytest.fixture
def live(
    connector: Connector, keycloak_server: KeycloakServer, webhook_secret: str
) -> Iterator[object]:
    """The SCIM app (with the webhook blueprint) served where the plugin posts."""
    assert keycloak_server.webhook_url is not None
    with serve(create_app(connector), keycloak_server.webhook_url, record_path=PATH) as recorded:
        yield recorded


def test_a_console_disable_is_applied_at_once_and_only_once(
    keycloak_server: KeycloakServer,
    idp: KeycloakIdentityProvider,
    connector: Connector,
    live: object,
    webhook_secret: str,
) -> None:
    actor = Actor("test")
    with connector.uow() as uow:
        seller, _ = seller_cases.create_seller(
            uow,
            connector.catalogue,
            "Webhook Test",
            Plan.professional,
            "owner@webhook.example.com",
            "Olive Owner",
            actor,
        )
        address = f"staff-{seller.id[:8]}@webhook.example.com"
        user, _ = user_cases.provision_user(
            uow,
            connector.catalogue,
            seller,
            UserDraft(user_name=address, emails=[Email(address, primary=True)]),
            actor,
        )
        uow.commit()
    idp.sync_seller(seller)
    provider_id = idp.sync_user(seller, user, [])

    # What an IT administrator does in the console.
    rep = keycloak_server.admin_json("GET", f"users/{provider_id}")
    since_ms = int(time.time() * 1000) - 1000
    started = time.monotonic()
    keycloak_server.admin_json("PUT", f"users/{provider_id}", json={**rep, "enabled": False})
    deadline = started + 10
    while True:
        with connector.uow() as uow:
            stored = uow.users.get(seller.id, user.id)
        assert stored is not None
        if not stored.active or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    latency = time.monotonic() - started
    assert stored.active is False, "the webhook did not deactivate the user"
    assert latency < 5, f"took {latency:.1f} s"
    with connector.uow() as uow:
        audit = [e for e in uow.audit.list(seller.id) if e.action == "user.deactivated"]
    assert [e.actor for e in audit] == ["keycloak:console"]

    recorded = live.requests  # type: ignore[attr-defined]
    mine = [(h, b) for h, b in recorded if json.loads(b)["user"]["id"] == provider_id]
    assert len(mine) == 1, recorded
    headers, body = mine[0]
    event = json.loads(body)
    assert event["kind"] == "disabled"
    assert event["source"] == "admin-event"
    assert event["user"]["connector_user_id"] == user.id
    assert event["by"]["client_id"] == "admin-cli"

    # The poller sees the same event id, and can tell the webhook applied it.
    feed = KeycloakChangeFeed(keycloak_server.connector_settings())
    marker = json.dumps({"admin": [since_ms, []], "user": [since_ms, []]})
    changes, _ = feed.changes_since(marker)
    polled = [c for c in changes if c.provider_user_id == provider_id and c.kind == "disabled"]
    assert [c.event_id for c in polled] == [event["id"]]
    with connector.uow() as uow:
        assert seen_by_webhook(uow, event["id"])

    url = keycloak_server.webhook_url
    assert url is not None
    send_headers = {
        "Content-Type": "application/json",
        "X-Seller-Connector-Timestamp": headers["X-Seller-Connector-Timestamp"],
        "X-Seller-Connector-Signature": headers["X-Seller-Connector-Signature"],
    }
    # A replay of the very request is refused.
    replay = requests.post(url, data=body, headers=send_headers, timeout=10)
    assert replay.status_code == 409, replay.text
    # So is a forged signature, a stale timestamp, and a signed body that is not an event.
    forged = requests.post(
        url,
        data=body,
        headers={**send_headers, "X-Seller-Connector-Signature": "v1=" + "0" * 64},
        timeout=10,
    )
    assert forged.status_code == 401
    assert forged.json()["detail"] == "Bad signature."
    old = int(time.time()) - 3600
    stale = requests.post(
        url,
        data=body,
        headers={
            **send_headers,
            "X-Seller-Connector-Timestamp": str(old),
            "X-Seller-Connector-Signature": sign(webhook_secret.encode(), old, body),
        },
        timeout=10,
    )
    assert stale.status_code == 401
    now = int(time.time())
    garbage = b"not json"
    bad = requests.post(
        url,
        data=garbage,
        headers={
            **send_headers,
            "X-Seller-Connector-Timestamp": str(now),
            "X-Seller-Connector-Signature": sign(webhook_secret.encode(), now, garbage),
        },
        timeout=10,
    )
    assert bad.status_code == 400
    unsigned = requests.post(
        url, data=body, headers={"Content-Type": "application/json"}, timeout=10
    )
    assert unsigned.status_code == 401
    with connector.uow() as uow:
        audit = [e for e in uow.audit.list(seller.id) if e.action == "user.deactivated"]
    assert len(audit) == 1  # applied once
