"""The plugin's guard in a real Keycloak: a seller's primary user cannot be deleted, removed
from its organization, or given another username or email by an administrator; the connector's
own service account still changes them (its change-primary flow); other users are left to
Keycloak."""

from __future__ import annotations

from typing import Any

import pytest

from connector.adapters.keycloak import KeycloakIdentityProvider
from connector.domain.model import Email, Role, SellerAccount
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


def _refusal(response: Any, seller: SellerAccount | None, label: str) -> None:
    """Keycloak answers a user profile refusal with 400 and the field, which the console shows
    next to it; one of the errors must be the guard's."""
    assert response.status_code == 400, (label, response.status_code, response.text)
    body = response.json()
    errors = body.get("errors") or [body]  # one error, or one per field
    marker = f"primary user of seller account {seller.id}" if seller else "set by seller-connector"
    ours = [e for e in errors if marker in e["errorMessage"]]
    assert ours, (label, body)
    assert all("seller-connector sellers change-primary" in e["errorMessage"] for e in ours)


def test_the_primaries_username_and_email_change_only_through_the_connector(
    keycloak_server: KeycloakServer, idp: KeycloakIdentityProvider, seller: SellerAccount
) -> None:
    primary = new_user(seller, Role.primary)
    primary_id = idp.sync_user(seller, primary, [])
    before = keycloak_server.admin_json("GET", f"users/{primary_id}")
    realm = keycloak_server.admin_json("GET", "")
    # The realm keeps usernames read-only for everyone (editUsernameAllowed false); allow edits
    # for this test so that the guard's own refusal of a new username is what is seen.
    keycloak_server.admin_json("PUT", "", json={"editUsernameAllowed": True})
    try:
        # What an administrator tries in the console (the master admin: not the connector).
        attempts = {
            "another email": {**before, "email": "thief@evil.example", "firstName": "Mallory"},
            "no email": {**before, "email": ""},
            "another username": {**before, "username": f"thief-{seller.id}"},
            "both": {**before, "username": "x-" + seller.id, "email": "x@evil.example"},
        }
        for label, rep in attempts.items():
            refused = keycloak_server.admin_request("PUT", f"users/{primary_id}", json=rep)
            _refusal(refused, seller, label)
            after = keycloak_server.admin_json("GET", f"users/{primary_id}")
            for key in ("username", "email", "firstName", "lastName", "enabled", "attributes"):
                assert after.get(key) == before.get(key), (label, key)  # nothing was applied

        # Demoting it first (to change its email next) is refused the same way.
        demoted = {**before, "attributes": {**before["attributes"], "seller_role": ["secondary"]}}
        refused = keycloak_server.admin_request("PUT", f"users/{primary_id}", json=demoted)
        _refusal(refused, None, "demote")
        assert (
            keycloak_server.admin_json("GET", f"users/{primary_id}")["attributes"]
            == (before["attributes"])
        )

        # The same address in another case is no change; other edits of the primary go through.
        same = {**before, "email": before["email"].upper(), "firstName": "Olive"}
        edited = keycloak_server.admin_request("PUT", f"users/{primary_id}", json=same)
        assert edited.status_code == 204, edited.text
        assert keycloak_server.admin_json("GET", f"users/{primary_id}")["firstName"] == "Olive"

        # The connector's own write, as its verified change-primary flow makes it, goes through.
        address = f"new-owner-{primary.id}@{seller.id}.example.com"
        primary.user_name = address
        primary.emails = [Email(address, primary=True)]
        assert idp.sync_user(seller, primary, []) == primary_id
    finally:
        keycloak_server.admin_json(
            "PUT", "", json={"editUsernameAllowed": realm["editUsernameAllowed"]}
        )
    changed = keycloak_server.admin_json("GET", f"users/{primary_id}")
    assert changed["username"] == address
    assert changed["email"] == address
    assert changed["firstName"] == primary.given_name  # and the console's edit converged back


def test_only_the_connector_sets_the_seller_attributes(
    keycloak_server: KeycloakServer, idp: KeycloakIdentityProvider, seller: SellerAccount
) -> None:
    """Otherwise an administrator could make any user a seller's primary, with its tokens."""
    staff = new_user(seller)
    staff_id = idp.sync_user(seller, staff, [])
    rep = keycloak_server.admin_json("GET", f"users/{staff_id}")
    promoted = {**rep, "attributes": {**rep["attributes"], "seller_role": ["primary"]}}
    _refusal(keycloak_server.admin_request("PUT", f"users/{staff_id}", json=promoted), None, "up")
    assert keycloak_server.admin_json("GET", f"users/{staff_id}")["attributes"]["seller_role"] == [
        "secondary"
    ]
    created = keycloak_server.admin_request(
        "POST",
        "users",
        json={
            "username": f"fake-owner-{seller.id}",
            "enabled": True,
            "attributes": {"seller_id": [seller.id], "seller_role": ["primary"]},
        },
    )
    _refusal(created, None, "create")
    found = keycloak_server.admin_json(
        "GET", "users", params={"username": f"fake-owner-{seller.id}", "exact": "true"}
    )
    assert found == []

    # A secondary user's address is the administrator's business (the connector adopts or
    # reverts it; the guard is about the seller's owner).
    moved = {**rep, "email": f"moved-{staff.id}@{seller.id}.example.com"}
    assert keycloak_server.admin_request("PUT", f"users/{staff_id}", json=moved).status_code == 204
