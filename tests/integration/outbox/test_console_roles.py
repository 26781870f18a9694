"""Console role changes come back: seller-portal roles an IT administrator grants or removes
in Keycloak are adopted through the seller rules (audited as keycloak:console, an
administrator grant flagged), or put back when the rules forbid them; SCIM, the access
review and the token's ``seller`` claim then agree."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import Result

from connector.bootstrap import Connector
from connector.services.outbox import OutboxWorker
from tests.conftest import SELLER_GROUP, SELLER_USER, SellerHandle, user_body
from tests.integration.outbox.helpers import kc_user, scim_json, wait_until
from tests.support.keycloak import (
    KeycloakServer,
    RealmAdmin,
    claims,
    password_grant,
    set_group,
    set_password,
)

pytestmark = pytest.mark.keycloak


def _direct_roles(server: KeycloakServer, kc_id: str, portal_id: str) -> set[str]:
    mapped = server.admin_json("GET", f"users/{kc_id}/role-mappings/clients/{portal_id}")
    return {r["name"] for r in mapped}


def _permissions(user: dict[str, Any]) -> dict[str, str]:
    return {p["category"]: p["level"] for p in user[SELLER_USER].get("permissions") or []}


def test_console_role_changes_are_adopted_or_put_back(
    keycloak_server: KeycloakServer,
    connector: Connector,
    client: Any,
    make_seller: Callable[..., SellerHandle],
    make_worker: Callable[..., OutboxWorker],
    cli: Callable[..., Result],
) -> None:
    handle = make_seller()

    def new_user(prefix: str, **extra: Any) -> dict[str, Any]:
        body = user_body(f"{prefix}-{uuid.uuid4().hex[:8]}@roles.example.com", **extra)
        return scim_json(client.post("/scim/v2/Users", json=body, headers=handle.headers), 201)

    staff = new_user("staff")
    leaver = new_user("leaver", active=False)
    groups = scim_json(client.get("/scim/v2/Groups", headers=handle.headers), 200)["Resources"]
    order_handlers = next(g for g in groups if g["displayName"] == "Order handlers")
    joined = client.patch(
        f"/scim/v2/Groups/{order_handlers['id']}",
        headers=handle.headers,
        json={
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "add", "path": "members", "value": [{"value": staff["id"]}]}],
        },
    )
    assert joined.status_code == 200, joined.text
    worker = make_worker()
    report, _ = worker.run_once()  # everything in Keycloak; the console marker starts now
    assert report.poisoned == report.retried == 0, report.errors

    portal = keycloak_server.admin_json("GET", "clients", params={"clientId": "seller-portal"})[0]
    role_path = f"clients/{portal['id']}/roles"
    keycloak_server.admin_json("POST", role_path, json={"name": "bogus:edit"})

    def role(name: str) -> dict[str, Any]:
        return dict(keycloak_server.admin_json("GET", f"{role_path}/{name}"))

    kc_staff = kc_user(keycloak_server, staff["id"])
    kc_leaver = kc_user(keycloak_server, leaver["id"])
    kc_primary = kc_user(keycloak_server, handle.primary.id)
    assert kc_staff and kc_leaver and kc_primary
    group = set_group(keycloak_server, order_handlers["id"])
    # What an IT administrator of the realm does in the console.
    admin = RealmAdmin.create(keycloak_server, ("manage-users", "view-clients"))
    for kc_id, roles in (
        (kc_staff["id"], ["pricing:edit", "user-permissions:admin"]),
        (kc_leaver["id"], ["pricing:edit"]),
        (kc_primary["id"], ["bogus:edit"]),
    ):
        done = admin.request(
            "POST",
            f"users/{kc_id}/role-mappings/clients/{portal['id']}",
            json=[role(r) for r in roles],
        )
        assert done.status_code == 204, done.text
    done = admin.request(
        "POST",
        f"groups/{group['id']}/role-mappings/clients/{portal['id']}",
        json=[role("reports:edit")],
    )
    assert done.status_code == 204, done.text
    bogus = admin.request(
        "POST",
        f"users/{kc_staff['id']}/role-mappings/clients/{portal['id']}",
        json=[role("bogus:edit")],
    )
    assert bogus.status_code == 204, bogus.text

    # The poll (the webhook's fallback) takes them in.
    seen: list[dict[str, Any]] = []

    def polled() -> bool:
        result = cli("keycloak", "poll", "--once", "--format", "json")
        assert result.exit_code == 0, result.output
        seen.extend(
            c for c in json.loads(result.output)["changes"] if c["kind"].startswith("roles")
        )
        return len(seen) >= 5

    assert wait_until(polled, timeout=30, every=0.3), seen
    results = {(c["userId"] or "group", c["result"]) for c in seen}
    assert (staff["id"], "applied") in results
    assert (staff["id"], "reverted") in results  # the bogus role
    assert (leaver["id"], "reverted") in results
    assert (handle.primary.id, "reverted") in results
    assert ("group", "applied") in results

    # SCIM: the grant is the staff member's, an administrator now; the set grants reports:edit.
    staff_now = scim_json(client.get(f"/scim/v2/Users/{staff['id']}", headers=handle.headers), 200)
    assert _permissions(staff_now) == {"pricing": "edit", "user-permissions": "admin"}
    assert staff_now[SELLER_USER]["administrator"] is True
    leaver_now = scim_json(
        client.get(f"/scim/v2/Users/{leaver['id']}", headers=handle.headers), 200
    )
    assert _permissions(leaver_now) == {}
    set_now = scim_json(
        client.get(f"/scim/v2/Groups/{order_handlers['id']}", headers=handle.headers), 200
    )
    set_permissions = {p["category"]: p["level"] for p in set_now[SELLER_GROUP]["permissions"]}
    assert set_permissions["reports"] == "edit"

    # The audit: adopted as keycloak:console, the administrator grant flagged, refusals kept.
    audit = json.loads(cli("audit", handle.seller.id, "--format", "json").output)
    actions = [(e["actor"], e["action"], e["target"]) for e in audit]
    assert ("keycloak:console", "user.updated", f"user:{staff['id']}") in actions
    assert ("keycloak:console", "user.administrator-granted", f"user:{staff['id']}") in actions
    assert ("keycloak:console", "group.updated", f"group:{order_handlers['id']}") in actions
    reverted = [e for e in audit if e["action"] == "user.console-change-reverted"]
    assert {e["target"] for e in reverted} == {
        f"user:{staff['id']}",
        f"user:{leaver['id']}",
        f"user:{handle.primary.id}",
    }

    # The access review shows the privilege really in force.
    review = json.loads(cli("access-review", handle.seller.id, "--format", "json").output)
    line = next(u for u in review["users"] if u["id"] == staff["id"])
    assert line["administrator"] is True
    pricing = next(g for g in line["effective_permissions"] if g["category"] == "pricing")
    assert pricing["level"] == "edit" and "direct" in pricing["granted_by"]

    # The worker puts back what the rules refused, and keeps what was adopted.
    report = worker.drain()
    assert report.poisoned == 0, report.errors
    staff_roles = _direct_roles(keycloak_server, kc_staff["id"], portal["id"])
    assert {"pricing:edit", "user-permissions:admin"} <= staff_roles
    assert "bogus:edit" not in staff_roles
    assert "pricing:edit" not in _direct_roles(keycloak_server, kc_leaver["id"], portal["id"])
    assert "bogus:edit" not in _direct_roles(keycloak_server, kc_primary["id"], portal["id"])

    # The token's seller claim says the same as SCIM.
    set_password(keycloak_server, kc_staff["id"])
    keycloak_server.admin_json(
        "PUT",
        f"users/{kc_staff['id']}",
        json={**kc_staff, "requiredActions": [], "emailVerified": True},
    )
    token = password_grant(keycloak_server, kc_staff["username"])
    assert token.status_code == 200, token.text
    seller_claim = claims(token.json()["access_token"])["seller"]
    assert seller_claim["permissions"]["pricing"] == "edit"
    assert seller_claim["permissions"]["user-permissions"] == "admin"
    assert seller_claim["permissions"]["reports"] == "edit"  # through Order handlers
