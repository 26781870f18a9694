"""Reading Keycloak back as its admin, and small waits, for the outbox tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tests.support.keycloak import KeycloakServer, set_group


def kc_users_of_seller(server: KeycloakServer, seller_id: str) -> list[dict[str, Any]]:
    """Every Keycloak user tagged with this seller, as the admin sees them."""
    return server.admin_json(
        "GET",
        "users",
        params={
            "q": f"seller_id:{seller_id}",
            "exact": "true",
            "briefRepresentation": "false",
            "max": 1000,
        },
    )


def kc_user(server: KeycloakServer, connector_user_id: str) -> dict[str, Any] | None:
    """The one Keycloak user of a connector user (asserting there is at most one)."""
    found = server.admin_json(
        "GET",
        "users",
        params={
            "q": f"seller_connector_user_id:{connector_user_id}",
            "exact": "true",
            "briefRepresentation": "false",
        },
    )
    assert len(found) <= 1, found
    return found[0] if found else None


def kc_org(server: KeycloakServer, seller_id: str) -> dict[str, Any]:
    found = server.admin_json(
        "GET",
        "organizations",
        params={"q": f"seller_id:{seller_id}", "briefRepresentation": "false"},
    )
    assert len(found) == 1, found
    return found[0]


def kc_org_member_ids(server: KeycloakServer, seller_id: str) -> set[str]:
    org = kc_org(server, seller_id)
    members = server.admin_json("GET", f"organizations/{org['id']}/members", params={"max": 1000})
    return {m["id"] for m in members}


def kc_group_paths(server: KeycloakServer, kc_user_id: str) -> set[str]:
    return {g["path"] for g in server.admin_json("GET", f"users/{kc_user_id}/groups")}


def kc_portal_roles(server: KeycloakServer, owner: str) -> set[str]:
    """Direct seller-portal roles of users/ID or groups/ID."""
    client = server.admin_json("GET", "clients", params={"clientId": "seller-portal"})[0]
    return {
        r["name"] for r in server.admin_json("GET", f"{owner}/role-mappings/clients/{client['id']}")
    }


def kc_group(server: KeycloakServer, seller_id: str, set_id: str) -> dict[str, Any]:
    """A permission set's group, found by its attribute (names are display names)."""
    group = set_group(server, set_id)
    assert group["attributes"]["seller_id"] == [seller_id]
    return group


def scim_json(response: Any, status: int) -> dict[str, Any]:
    """The SCIM response's JSON, after checking its status."""
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    return response.get_json() if response.data else {}


def wait_until(check: Callable[[], Any], timeout: float = 15.0, every: float = 0.2) -> Any:
    """Poll ``check`` until it returns something truthy (Keycloak stores events at once, but a
    little slack keeps the tests steady on a busy machine)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)
