"""The plugin's guard in a real Keycloak: a seller's primary user cannot be deleted, nor removed
from its organization, by an administrator; other users are left to Keycloak."""

from __future__ import annotations

import pytest

from connector.adapters.keycloak import KeycloakIdentityProvider
from connector.domain.model import Role, SellerAccount
from tests.integration.plugin.helpers import new_user
from tests.support.keycloak import KeycloakServer

pytestmark = pytest.mark.keycloak


def _org_id(server: KeycloakServer, seller: SellerAccount) -> str:
    found = server.admin_json("GET", "organizations", params={"q": f"seller_id:{seller.id}"})
    assert len(found) == 1, found
    return str(found[0]["id"])


def test_the_primary_cannot_be_deleted_nor_removed_from_its_organization(
    keycloak_server: KeycloakServer, idp: KeycloakIdentityProvider, seller: SellerAccount
) -> None:
    primary = new_user(seller, Role.primary)
    primary_id = idp.sync_user(seller, primary, [])
    org_id = _org_id(keycloak_server, seller)

    deleted = keycloak_server.admin_request("DELETE", f"users/{primary_id}")
    assert deleted.status_code == 403, deleted.text
    assert "primary user of seller account" in deleted.json()["errorMessage"]
    assert "change-primary" in deleted.json()["errorMessage"]
    assert keycloak_server.admin_request("GET", f"users/{primary_id}").status_code == 200

    removed = keycloak_server.admin_request(
        "DELETE", f"organizations/{org_id}/members/{primary_id}"
    )
    assert removed.status_code == 403, removed.text
    assert "cannot be removed from its organization" in removed.json()["errorMessage"]
    members = keycloak_server.admin_json("GET", f"organizations/{org_id}/members")
    assert primary_id in [m["id"] for m in members]  # the transaction was rolled back


def test_secondary_users_are_left_to_keycloak(
    keycloak_server: KeycloakServer, idp: KeycloakIdentityProvider, seller: SellerAccount
) -> None:
    """The connector itself never deletes; an administrator still may delete a secondary."""
    leaving = new_user(seller)
    leaving_id = idp.sync_user(seller, leaving, [])
    org_id = _org_id(keycloak_server, seller)
    removed = keycloak_server.admin_request(
        "DELETE", f"organizations/{org_id}/members/{leaving_id}"
    )
    assert removed.status_code == 204, removed.text

    gone = new_user(seller)
    gone_id = idp.sync_user(seller, gone, [])
    deleted = keycloak_server.admin_request("DELETE", f"users/{gone_id}")
    assert deleted.status_code == 204, deleted.text
    assert keycloak_server.admin_request("GET", f"users/{gone_id}").status_code == 404


def test_unmanaged_users_are_not_guarded(keycloak_server: KeycloakServer) -> None:
    """A user without the seller attributes is none of the guard's business."""
    created = keycloak_server.admin_request(
        "POST", "users", json={"username": "plain-user-guard-test", "enabled": True}
    )
    assert created.status_code in (201, 409)
    found = keycloak_server.admin_json(
        "GET", "users", params={"username": "plain-user-guard-test", "exact": "true"}
    )
    deleted = keycloak_server.admin_request("DELETE", f"users/{found[0]['id']}")
    assert deleted.status_code == 204
