"""`seller-connector reconcile` finds what changed in Keycloak behind the connector's back and
repairs it through the outbox (never deleting a Keycloak user)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import Result

from connector.bootstrap import Connector
from connector.services.outbox import OutboxWorker
from tests.conftest import (
    GROUP_SCHEMA,
    SELLER_GROUP,
    SELLER_USER,
    USER_SCHEMA,
    SellerHandle,
    user_body,
)
from tests.integration.outbox.helpers import kc_group, kc_portal_roles, kc_user, scim_json
from tests.support.keycloak import KeycloakServer, seller_group

pytestmark = pytest.mark.keycloak


def test_reconcile_reports_then_repairs_differences_made_behind_the_connectors_back(
    keycloak_server: KeycloakServer,
    connector: Connector,
    client: Any,
    make_seller: Callable[..., SellerHandle],
    make_worker: Callable[..., OutboxWorker],
    cli: Callable[..., Result],
) -> None:
    handle = make_seller()
    body = user_body(f"r-{uuid.uuid4().hex[:8]}@reconcile.example.com")
    body["schemas"] = [USER_SCHEMA, SELLER_USER]
    body[SELLER_USER] = {"permissions": [{"category": "orders", "level": "view"}]}
    user = scim_json(client.post("/scim/v2/Users", json=body, headers=handle.headers), 201)
    team = scim_json(
        client.post(
            "/scim/v2/Groups",
            json={
                "schemas": [GROUP_SCHEMA, SELLER_GROUP],
                "displayName": "Stockists",
                "members": [{"value": user["id"]}],
                SELLER_GROUP: {"permissions": [{"category": "inventory", "level": "edit"}]},
            },
            headers=handle.headers,
        ),
        201,
    )
    with connector.uow() as uow:
        default_set = uow.permission_sets.by_display_name(handle.seller.id, "Finance viewers")
    assert default_set is not None
    make_worker().run_once()
    clean = cli("reconcile", "--seller", handle.seller.id, "--dry-run", "--format", "json")
    assert clean.exit_code == 0, clean.output
    assert json.loads(clean.output)["differences"] == []

    # Behind the connector's back, as the realm's admin.
    kc = kc_user(keycloak_server, user["id"])
    assert kc is not None
    portal = keycloak_server.admin_json("GET", "clients", params={"clientId": "seller-portal"})[0]
    role = keycloak_server.admin_json("GET", f"clients/{portal['id']}/roles/orders:view")
    keycloak_server.admin_json(
        "DELETE", f"users/{kc['id']}/role-mappings/clients/{portal['id']}", json=[role]
    )
    keycloak_server.admin_json("PUT", f"users/{kc['id']}", json={**kc, "firstName": "Mallory"})
    team_group = kc_group(keycloak_server, handle.seller.id, team["id"])
    edit = keycloak_server.admin_json("GET", f"clients/{portal['id']}/roles/inventory:edit")
    keycloak_server.admin_json(
        "DELETE", f"groups/{team_group['id']}/role-mappings/clients/{portal['id']}", json=[edit]
    )
    finance = kc_group(keycloak_server, handle.seller.id, default_set.id)
    keycloak_server.admin_json("DELETE", f"groups/{finance['id']}")
    parent = seller_group(keycloak_server, handle.seller.id)
    keycloak_server.admin_request(
        "POST", f"groups/{parent['id']}/children", json={"name": "stray-group"}
    )

    # A dry run lists every difference and changes nothing.
    dry = cli("reconcile", "--seller", handle.seller.id, "--dry-run", "--format", "json")
    assert dry.exit_code == 1, dry.output
    found = {
        (d["kind"], d["target"], d["field"], d["repair"])
        for d in json.loads(dry.output)["differences"]
    }
    assert found == {
        ("user", user["id"], "roles", "user.sync"),
        ("user", user["id"], "firstName", "user.sync"),
        ("permission_set", team["id"], "roles", "permission_set.sync"),
        ("permission_set", default_set.id, "missing", "permission_set.sync"),
        ("group", "stray-group", "stray", "permission_set.delete"),
    }
    assert kc_user(keycloak_server, user["id"])["firstName"] == "Mallory"  # type: ignore[index]
    table = cli("reconcile", "--seller", handle.seller.name, "--dry-run")
    assert "stray-group" in table.output and "dry run" in table.output

    # The real run repairs them all, through the outbox, and says Keycloak matches. (Without
    # --no-poll it would first adopt the role removals, which Keycloak's admin events record
    # as console changes: see test_console_roles. Drift is what no event explains.)
    fixed = cli("reconcile", "--seller", handle.seller.id, "--no-poll", "--format", "json")
    assert fixed.exit_code == 0, fixed.output
    result = json.loads(fixed.output)
    assert result["remaining"] == []
    assert {r["topic"] for r in result["repairsEnqueued"]} == {
        "user.sync",
        "permission_set.sync",
        "permission_set.delete",
    }
    kc = kc_user(keycloak_server, user["id"])
    assert kc is not None and kc["firstName"] == "Test" and kc["enabled"]
    assert kc_portal_roles(keycloak_server, f"users/{kc['id']}") == {"orders:view"}
    assert kc_portal_roles(keycloak_server, f"groups/{team_group['id']}") == {"inventory:edit"}
    assert kc_portal_roles(
        keycloak_server,
        f"groups/{kc_group(keycloak_server, handle.seller.id, default_set.id)['id']}",
    ) == {"payments:view", "reports:view"}
    children = keycloak_server.admin_json(
        "GET", f"groups/{parent['id']}/children", params={"max": 100}
    )
    assert "stray-group" not in {c["name"] for c in children}
    with connector.uow() as uow:
        assert any(e.action == "reconcile.repair" for e in uow.audit.list(handle.seller.id))
    again = cli("reconcile", "--seller", handle.seller.id, "--dry-run")
    assert again.exit_code == 0, again.output
