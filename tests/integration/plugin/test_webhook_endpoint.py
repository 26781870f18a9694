"""POST /keycloak/events without Keycloak: signatures, windows, bodies, replays, JSON errors.

The end-to-end path (a real Keycloak posting) is in test_webhook.py; here the requests are
forged by the test with the same signature as the plugin's (a vector shared with its JUnit
test), against the real SCIM app on a fresh SQLite store.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from connector.adapters.keycloak.naming import GroupLayout
from connector.adapters.keycloak.webhook import SECRET_ENV, sign
from connector.adapters.keycloak.webhook import change_from_webhook as to_change
from connector.bootstrap import Connector, bootstrap
from connector.domain.drafts import Actor, UserDraft
from connector.domain.model import Email, Plan
from connector.entrypoints.web import create_app
from connector.entrypoints.webhook import PATH
from connector.mappings import load_keycloak_names
from connector.services import sellers as seller_cases
from connector.services import users as user_cases
from connector.services.console import seen_by_webhook
from tests.conftest import make_settings

SECRET = "webhook-test-secret"

# The webhook applies events through the console module (built alongside): until it is in
# the tree these tests say so instead of failing on the import.
pytest.importorskip("connector.services.console", reason="connector/services/console.py missing")


@pytest.fixture
def connector(sqlite_url: str, tmp_path: Path) -> Connector:
    return bootstrap(make_settings(sqlite_url, tmp_path), migrate=False)


@pytest.fixture
def client(connector: Connector, monkeypatch: pytest.MonkeyPatch) -> FlaskClient:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    monkeypatch.delenv(SECRET_ENV + "_FILE", raising=False)
    return create_app(connector).test_client()


def post(
    client: FlaskClient, body: bytes, timestamp: int | None = None, secret: str = SECRET
) -> Any:
    ts = int(time.time()) if timestamp is None else timestamp
    return client.post(
        PATH,
        data=body,
        headers={
            "Content-Type": "application/json",
            "X-Seller-Connector-Timestamp": str(ts),
            "X-Seller-Connector-Signature": sign(secret.encode(), ts, body),
        },
    )


def event(user: dict[str, Any], kind: str = "disabled", **extra: Any) -> bytes:
    body = {
        "version": 1,
        "id": str(uuid.uuid4()),
        "source": "admin-event",
        "type": "USER/UPDATE",
        "kind": kind,
        "time": int(time.time() * 1000),
        "realm": "sellers",
        "user": user,
        "by": {"realm": "master", "user_id": "admin", "client_id": "admin-cli"},
    }
    body.update(extra)
    return json.dumps(body).encode()


def test_signature_matches_the_plugins() -> None:
    # The same vector as WebhookSignatureTest.java.
    assert sign(b"s3cret", 1_700_000_000, b'{"id":"e1"}') == (
        "v1=e584ea1bae10bbbc105c193bee45ee128f39b60803189b2673b3e878b94997c8"
    )


def test_applies_once_and_refuses_replays(client: FlaskClient, connector: Connector) -> None:
    actor = Actor("test")
    with connector.uow() as uow:
        seller, _ = seller_cases.create_seller(
            uow,
            connector.catalogue,
            "Endpoint Test",
            Plan.professional,
            "owner@endpoint.example.com",
            "Olive Owner",
            actor,
        )
        user, _ = user_cases.provision_user(
            uow,
            connector.catalogue,
            seller,
            UserDraft(
                user_name="staff@endpoint.example.com",
                emails=[Email("staff@endpoint.example.com", primary=True)],
            ),
            actor,
        )
        uow.commit()
    body = event({"id": "kc-1", "seller_id": seller.id, "connector_user_id": user.id})
    first = post(client, body)
    assert first.status_code == 202, first.json
    assert first.json["result"] == "applied"
    with connector.uow() as uow:
        stored = uow.users.get(seller.id, user.id)
        assert stored is not None and stored.active is False
    # The same event again, freshly signed: refused, not applied twice.
    again = post(client, body)
    assert again.status_code == 409
    # Another event for an unknown user is acknowledged and ignored.
    other = post(client, event({"id": "kc-2", "seller_id": "nope", "connector_user_id": "x"}))
    assert other.status_code == 202
    assert other.json["result"] == "ignored"


def test_a_refused_identity_change_is_audited(client: FlaskClient, connector: Connector) -> None:
    """The guard's report of a refused change of the primary's email (source ``guard``)."""
    with connector.uow() as uow:
        seller, primary = seller_cases.create_seller(
            uow,
            connector.catalogue,
            "Guard Report Test",
            Plan.professional,
            "owner@guard-report.example.com",
            "Olive Owner",
            Actor("test"),
        )
        uow.commit()
    body = event(
        {"id": "kc-9", "seller_id": seller.id, "connector_user_id": primary.id},
        kind="identity-change-refused",
        source="guard",
        type="identity-change-refused",
        attribute="email",
    )
    response = post(client, body)
    assert response.status_code == 202, response.json
    assert response.json["result"] == "recorded"
    with connector.uow() as uow:
        audit = [e for e in uow.audit.list(seller.id) if "refused" in e.action]
    assert [(e.action, e.actor, e.target) for e in audit] == [
        ("user.console-identity-change-refused", "keycloak:console", f"user:{primary.id}")
    ]
    assert audit[0].changes["attribute"] == "email"
    assert post(client, body).status_code == 409  # a replay is not recorded twice


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"X-Seller-Connector-Timestamp": "abc", "X-Seller-Connector-Signature": "v1=00"}, 401),
        ({"X-Seller-Connector-Timestamp": "1", "X-Seller-Connector-Signature": ""}, 401),
    ],
)
def test_unsigned_requests_are_refused(
    client: FlaskClient, headers: dict[str, str], status: int
) -> None:
    response = client.post(PATH, data=b"{}", headers=headers)
    assert response.status_code == status
    assert response.is_json and response.json["status"] == status


def test_wrong_secret_stale_and_bad_bodies(client: FlaskClient) -> None:
    body = event({"id": "kc-1", "seller_id": "s", "connector_user_id": "u"})
    assert post(client, body, secret="another").status_code == 401
    assert post(client, body, timestamp=int(time.time()) - 3600).status_code == 401
    assert post(client, body, timestamp=int(time.time()) + 3600).status_code == 401
    for bad in (b"not json", b"[]", b'{"kind": "disabled"}', b'{"id": "e", "kind": 3}'):
        response = post(client, bad)
        assert response.status_code == 400, bad
        assert response.is_json
    no_user = json.dumps({"id": "e-1", "kind": "disabled", "time": 1}).encode()
    assert post(client, no_user).status_code == 400
    not_modelled = post(client, event({"id": "kc-1"}, kind="organization-left"))
    assert not_modelled.status_code == 202
    assert not_modelled.json["result"] == "ignored"
    bad_roles = event({"id": "kc-1"}, kind="roles-added", roles="pricing:edit")
    assert post(client, bad_roles).status_code == 400


def test_role_changes_on_users_and_groups_are_read_and_remembered(
    client: FlaskClient, connector: Connector
) -> None:
    """``roles-added`` / ``roles-removed`` parse into ProviderChanges (a group's without a
    user) and, being state changes, are remembered so that the poller skips them."""
    group_event = json.loads(
        event(
            None,  # type: ignore[arg-type]
            kind="roles-removed",
            type="CLIENT_ROLE_MAPPING/DELETE",
            group={
                "id": "g-1",
                "path": "/sellers/Acme/Order handlers",
                "name": "Order handlers",
                "seller_id": "s-1",
                "permission_set_id": "ps-1",
            },
            roles=["orders:edit"],
            client_id="seller-portal",
        )
    )
    del group_event["user"]
    change = to_change(group_event, GroupLayout.from_names(load_keycloak_names()))
    assert (change.provider_user_id, change.group_id, change.kind) == ("", "g-1", "roles-removed")
    assert change.details == {
        "target": "group",
        "roles": ["orders:edit"],
        "client": "seller-portal",
        "grants": [["orders", "edit"]],
        "unknown_roles": [],
        "group_path": "/sellers/Acme/Order handlers",
        "group_seller_id": "s-1",
        "permission_set_id": "ps-1",
        "connector_user_id": None,
        "seller_id": "s-1",
        "operation": "DELETE",
        "resource_type": "CLIENT_ROLE_MAPPING",
        "by_user_id": "admin",
        "via": "webhook",
    }
    body = json.dumps(group_event).encode()
    response = post(client, body)
    assert response.status_code == 202, response.json
    with connector.uow() as uow:
        assert seen_by_webhook(uow, group_event["id"])
    assert post(client, body).status_code == 409
    # An older plugin's group (path only) is read by the legacy id-named layout.
    legacy = {**group_event, "group": {"id": "g-2", "path": "/sellers/s-2/ps-2"}}
    details = to_change(legacy, GroupLayout.from_names(load_keycloak_names())).details
    assert (details["group_seller_id"], details["permission_set_id"]) == ("s-2", "ps-2")


def test_without_a_secret_the_webhook_is_off(
    connector: Connector, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    monkeypatch.delenv(SECRET_ENV + "_FILE", raising=False)
    client = create_app(connector).test_client()
    response = post(client, event({"id": "kc-1"}))
    assert response.status_code == 503
    assert SECRET_ENV in response.json["detail"]
