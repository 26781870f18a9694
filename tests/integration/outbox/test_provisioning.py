"""SCIM writes become real in Keycloak through the outbox worker (a real Keycloak, real SMTP)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
import requests

from connector.adapters.sql.outbox_queue import SqlOutboxQueue
from connector.bootstrap import Connector
from connector.domain.model import utcnow
from connector.services.outbox import OutboxWorker
from tests.conftest import (
    GROUP_SCHEMA,
    PATCH_SCHEMA,
    SELLER_GROUP,
    SELLER_USER,
    USER_SCHEMA,
    SellerHandle,
    user_body,
)
from tests.integration.outbox.helpers import (
    kc_group,
    kc_group_paths,
    kc_org_member_ids,
    kc_portal_roles,
    kc_user,
    scim_json,
)
from tests.support.keycloak import KeycloakServer
from tests.support.smtp import SmtpSink

pytestmark = pytest.mark.keycloak

PASSWORD = "Corr3ct-horse-battery"


def new_user(client: Any, handle: SellerHandle, **extension: Any) -> dict[str, Any]:
    """POST a secondary user through SCIM, as Okta would."""
    address = f"user-{uuid.uuid4().hex[:8]}@{handle.seller.id[:8]}.example.com"
    body = user_body(address)
    if extension:
        body["schemas"] = [USER_SCHEMA, SELLER_USER]
        body[SELLER_USER] = extension
    return scim_json(client.post("/scim/v2/Users", json=body, headers=handle.headers), 201)


def patch_active(client: Any, handle: SellerHandle, user_id: str, active: bool) -> None:
    body = {
        "schemas": [PATCH_SCHEMA],
        "Operations": [{"op": "replace", "path": "active", "value": active}],
    }
    scim_json(client.patch(f"/scim/v2/Users/{user_id}", json=body, headers=handle.headers), 200)


def token_grant(server: KeycloakServer, data: dict[str, str]) -> requests.Response:
    return requests.post(
        f"{server.url}/realms/{server.realm}/protocol/openid-connect/token",
        data={"client_id": "seller-portal", **data},
        timeout=15,
    )


def test_scim_post_becomes_a_keycloak_member_with_roles_groups_and_an_invitation(
    keycloak_server: KeycloakServer,
    connector: Connector,
    client: Any,
    make_seller: Callable[..., SellerHandle],
    make_worker: Callable[..., OutboxWorker],
    smtp: SmtpSink,
) -> None:
    handle = make_seller()
    created = new_user(client, handle, permissions=[{"category": "orders", "level": "view"}])
    group = scim_json(
        client.post(
            "/scim/v2/Groups",
            json={
                "schemas": [GROUP_SCHEMA, SELLER_GROUP],
                "displayName": "Pricing team",
                "members": [{"value": created["id"]}],
                SELLER_GROUP: {"permissions": [{"category": "pricing", "level": "edit"}]},
            },
            headers=handle.headers,
        ),
        201,
    )
    version_before = scim_json(
        client.get(f"/scim/v2/Users/{created['id']}", headers=handle.headers), 200
    )["meta"]["version"]

    worker = make_worker()
    report, _ = worker.run_once()
    assert report.poisoned == report.retried == 0, report.errors

    # The user is in Keycloak: once, enabled, in the seller's organization, with its direct
    # role and its permission set's group (whose group carries the set's roles).
    rep = kc_user(keycloak_server, created["id"])
    assert rep is not None
    assert rep["enabled"] is True
    assert rep["username"] == created["userName"].lower()
    assert rep["attributes"]["seller_id"] == [handle.seller.id]
    assert rep["attributes"]["seller_role"] == ["secondary"]
    assert rep["id"] in kc_org_member_ids(keycloak_server, handle.seller.id)
    assert kc_portal_roles(keycloak_server, f"users/{rep['id']}") == {"orders:view"}
    assert kc_group_paths(keycloak_server, rep["id"]) == {
        f"/sellers/{handle.seller.name}/{group['displayName']}"
    }
    kc_set = kc_group(keycloak_server, handle.seller.id, group["id"])
    assert kc_portal_roles(keycloak_server, f"groups/{kc_set['id']}") == {"pricing:edit"}
    # The primary too, with every permission at admin, and the default permission sets.
    primary = kc_user(keycloak_server, handle.primary.id)
    assert primary is not None and primary["attributes"]["seller_role"] == ["primary"]
    assert "orders:admin" in kc_portal_roles(keycloak_server, f"users/{primary['id']}")

    # The invitation email reached the user, with a link to set a password.
    mail = smtp.wait_for_recipient(created["emails"][0]["value"], timeout=20)
    assert "execute-actions" in mail.text or "action-token" in mail.text

    # Keycloak's id is stored, without a new version (no ETag change under the client).
    with connector.uow() as uow:
        stored = uow.users.get(handle.seller.id, created["id"])
    assert stored is not None and stored.idp_id == rep["id"]
    after = scim_json(client.get(f"/scim/v2/Users/{created['id']}", headers=handle.headers), 200)
    assert after["meta"]["version"] == version_before

    # Several changes of one user before the worker runs are ONE sync of its current state.
    for name in ("Ann", "Anna", "Annabel"):
        body = {
            "schemas": [PATCH_SCHEMA],
            "Operations": [{"op": "replace", "path": "name.givenName", "value": name}],
        }
        scim_json(
            client.patch(f"/scim/v2/Users/{created['id']}", json=body, headers=handle.headers),
            200,
        )
    report = worker.drain()
    assert (report.aggregates, report.entries, report.calls) == (1, 3, 1)
    assert kc_user(keycloak_server, created["id"])["firstName"] == "Annabel"  # type: ignore[index]
    stats = SqlOutboxQueue(connector.engine).stats(utcnow())
    assert stats.counts["pending"] == stats.counts["poison"] == 0


def test_deactivation_ends_sessions_and_delete_only_disables(
    keycloak_server: KeycloakServer,
    client: Any,
    make_seller: Callable[..., SellerHandle],
    make_worker: Callable[..., OutboxWorker],
) -> None:
    handle = make_seller()
    leaver = new_user(client, handle)
    deleted = new_user(client, handle)
    worker = make_worker()
    worker.run_once()
    kc_leaver = kc_user(keycloak_server, leaver["id"])
    assert kc_leaver is not None
    keycloak_server.admin_json(
        "PUT",
        f"users/{kc_leaver['id']}/reset-password",
        json={"type": "password", "value": PASSWORD, "temporary": False},
    )
    login = token_grant(
        keycloak_server,
        {"grant_type": "password", "username": leaver["userName"], "password": PASSWORD},
    )
    assert login.status_code == 200, login.text
    refresh_token = login.json()["refresh_token"]
    assert (
        token_grant(
            keycloak_server, {"grant_type": "refresh_token", "refresh_token": refresh_token}
        ).status_code
        == 200
    )

    patch_active(client, handle, leaver["id"], False)
    scim_json(client.delete(f"/scim/v2/Users/{deleted['id']}", headers=handle.headers), 204)
    report = worker.drain()
    assert report.poisoned == report.retried == 0, report.errors

    # Deactivated: disabled, and the refresh token obtained before no longer works.
    assert kc_user(keycloak_server, leaver["id"])["enabled"] is False  # type: ignore[index]
    refused = token_grant(
        keycloak_server, {"grant_type": "refresh_token", "refresh_token": refresh_token}
    )
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"] == "invalid_grant"

    # Deleted through SCIM: gone from SCIM, but in Keycloak only disabled (still a member).
    assert client.get(f"/scim/v2/Users/{deleted['id']}", headers=handle.headers).status_code == 404
    kc_deleted = kc_user(keycloak_server, deleted["id"])
    assert kc_deleted is not None and kc_deleted["enabled"] is False
    assert kc_deleted["id"] in kc_org_member_ids(keycloak_server, handle.seller.id)
