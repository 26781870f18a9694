"""The plugin's guard in a real Keycloak: a seller's primary user cannot be deleted or removed
from its organization; no seller user is given another username or email by an administrator
or by itself; the connector's own service account still changes them (a new userName or email
from SCIM or the directory, the change-primary flow); other users are left to Keycloak."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import requests

from connector.adapters.keycloak import KeycloakIdentityProvider
from connector.domain.model import Email, Role, SellerAccount
from tests.integration.plugin.helpers import new_user
from tests.support.keycloak import KeycloakServer, RealmAdmin, password_grant, set_password

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
    # The realm lets admins edit usernames (so that the connector renames users): the guard's
    # own refusal of a new username is what an administrator meets.
    assert keycloak_server.admin_json("GET", "")["editUsernameAllowed"] is True
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

    # The primary cannot rename itself either (the account console: its own token).
    set_password(keycloak_server, primary_id)
    token = password_grant(keycloak_server, before["username"]).json()["access_token"]
    account = _account(keycloak_server, token)
    _assert_self_rename_refused(keycloak_server, token, account, primary_id, f"self-{seller.id}")

    # The connector's own write, as its verified change-primary flow makes it, goes through.
    address = f"new-owner-{primary.id}@{seller.id}.example.com"
    primary.user_name = address
    primary.emails = [Email(address, primary=True)]
    assert idp.sync_user(seller, primary, []) == primary_id
    changed = keycloak_server.admin_json("GET", f"users/{primary_id}")
    assert changed["username"] == address
    assert changed["email"] == address
    assert changed["firstName"] == primary.given_name  # and the console's edit converged back


def _account(
    server: KeycloakServer, token: str, body: dict[str, Any] | None = None, method: str = "GET"
) -> Any:
    """The account REST API (what the account console calls) with a user's own token: GET
    answers the user's profile; POST ``body`` answers the response."""
    response = requests.request(
        method,
        f"{server.url}/realms/{server.realm}/account/",
        headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
        json=body,
        timeout=15,
    )
    if method == "GET":
        assert response.status_code == 200, response.text
        return response.json()
    return response


def _assert_self_change_refused(
    server: KeycloakServer,
    token: str,
    account: dict[str, Any],
    user_id: str,
    attribute: str,
    value: str,
    marker: str = "error-user-attribute-read-only",
) -> None:
    """A user's own change of ``attribute`` through the account API is refused (``marker`` in
    the answer) and changes nothing."""
    before = server.admin_json("GET", f"users/{user_id}")
    refused = _account(server, token, {**account, attribute: value}, "POST")
    # 400, or 403 with the guard's status: either way refused on the field.
    assert refused.status_code in (400, 403), refused.text
    assert marker in refused.text, refused.text
    after = server.admin_json("GET", f"users/{user_id}")
    for key in ("username", "email", "firstName", "lastName"):
        assert after.get(key) == before.get(key), key


def _assert_self_rename_refused(
    server: KeycloakServer, token: str, account: dict[str, Any], user_id: str, new_name: str
) -> None:
    """A user's own rename through the account API is refused (the user profile keeps the
    username read-only for users) and changes nothing."""
    _assert_self_change_refused(server, token, account, user_id, "username", new_name)


def _assert_console_change_refused(
    server: KeycloakServer,
    it_admin: RealmAdmin,
    user_id: str,
    change: dict[str, Any],
    marker: str,
) -> None:
    """The master admin's and a realm IT administrator's console change of a seller user
    (``change`` over its representation) is refused on the field and changes nothing."""
    before = server.admin_json("GET", f"users/{user_id}")
    changed = {**before, **change}
    for label, response in (
        ("master admin", server.admin_request("PUT", f"users/{user_id}", json=changed)),
        ("it admin", it_admin.request("PUT", f"users/{user_id}", json=changed)),
    ):
        assert response.status_code == 400, (label, response.text)
        body = response.json()
        errors = body.get("errors") or [body]
        assert any(marker in e["errorMessage"] for e in errors), (label, body)
        after = server.admin_json("GET", f"users/{user_id}")
        for key in ("username", "email", "firstName", "lastName", "enabled", "attributes"):
            assert after.get(key) == before.get(key), (label, key)  # nothing was applied


def test_a_secondary_users_username_changes_only_through_the_connector(
    keycloak_server: KeycloakServer, idp: KeycloakIdentityProvider, seller: SellerAccount
) -> None:
    """The connector owns the usernames it provisions: an IT administrator's rename of a
    seller user is refused (the store would put it back anyway), the user cannot rename itself
    in the account console, and the connector's rename (a new userName) goes through."""
    staff = new_user(seller)
    staff_id = idp.sync_user(seller, staff, [])
    before = keycloak_server.admin_json("GET", f"users/{staff_id}")
    marker = f"provisioned by seller-connector for seller account {seller.id}"

    # The master admin, and an IT administrator of the realm with manage-users.
    it_admin = RealmAdmin.create(keycloak_server, ("manage-users",))
    renamed = {"username": f"renamed-{staff.id}@{seller.id}.example.com"}
    _assert_console_change_refused(keycloak_server, it_admin, staff_id, renamed, marker)
    # The same username in another case is no change: other edits go through.
    same = {**before, "username": before["username"].upper(), "firstName": "Sam"}
    assert it_admin.request("PUT", f"users/{staff_id}", json=same).status_code == 204

    # The user itself, through the account API: its own profile edits work, a rename never.
    set_password(keycloak_server, staff_id)
    token = password_grant(keycloak_server, before["username"]).json()["access_token"]
    account = _account(keycloak_server, token)
    assert account["username"] == before["username"]
    edited = _account(keycloak_server, token, {**account, "firstName": "Samantha"}, "POST")
    assert edited.status_code == 204, edited.text
    _assert_self_rename_refused(
        keycloak_server, token, account, staff_id, f"me-{staff.id}@x.example.com"
    )

    # The connector's rename (its userName changed to a brand-new address) goes through.
    address = f"moved-{staff.id}@{seller.id}.example.com"
    staff.user_name = address
    staff.emails = [Email(address, primary=True)]
    assert idp.sync_user(seller, staff, []) == staff_id
    after = keycloak_server.admin_json("GET", f"users/{staff_id}")
    assert (after["username"], after["email"]) == (address, address)
    assert password_grant(keycloak_server, address).status_code == 200


def test_a_secondary_users_email_changes_only_through_the_connector(
    keycloak_server: KeycloakServer, idp: KeycloakIdentityProvider, seller: SellerAccount
) -> None:
    """The store owns a seller user's email as it owns its username: an IT administrator's new
    address (or none) is refused, so is the user's own in the account console (the realm leaves
    email editable there, its update-email required action being off), and the connector's
    new primary email goes through without a rename."""
    staff = new_user(seller)
    staff_id = idp.sync_user(seller, staff, [])
    before = keycloak_server.admin_json("GET", f"users/{staff_id}")
    marker = f"email is provisioned by seller-connector for seller account {seller.id}"

    it_admin = RealmAdmin.create(keycloak_server, ("manage-users",))
    for change in (
        {"email": f"elsewhere-{staff.id}@evil.example"},
        {"email": ""},
        {"email": f"x-{staff.id}@evil.example", "firstName": "Mallory"},
    ):
        _assert_console_change_refused(keycloak_server, it_admin, staff_id, change, marker)
    # The same address in another case is no change: other edits go through.
    same = {**before, "email": before["email"].upper(), "firstName": "Sam"}
    assert it_admin.request("PUT", f"users/{staff_id}", json=same).status_code == 204

    # The user itself, through the account API: its own name edits work, a new address never.
    set_password(keycloak_server, staff_id)
    token = password_grant(keycloak_server, before["username"]).json()["access_token"]
    account = _account(keycloak_server, token)
    assert account["email"] == before["email"]
    edited = _account(keycloak_server, token, {**account, "lastName": "Smith"}, "POST")
    assert edited.status_code == 204, edited.text
    _assert_self_change_refused(
        keycloak_server, token, account, staff_id, "email", f"me-{staff.id}@x.example", marker
    )

    # The connector's change (a new primary email, the same userName) goes through.
    address = f"new-mail-{staff.id}@{seller.id}.example.com"
    staff.emails = [Email(address, primary=True)]
    assert idp.sync_user(seller, staff, []) == staff_id
    after = keycloak_server.admin_json("GET", f"users/{staff_id}")
    assert (after["username"], after["email"]) == (before["username"], address)


def test_no_user_renames_itself_in_the_account_console(keycloak_server: KeycloakServer) -> None:
    """The user profile lets admins alone edit usernames (edit: admin): a user without seller
    attributes, which the guard leaves alone, cannot rename itself either."""
    name = f"plain-{uuid.uuid4().hex[:8]}"
    created = keycloak_server.admin_request(
        "POST",
        "users",
        json={
            "username": name,
            "enabled": True,
            "email": f"{name}@plain.example.com",
            "firstName": "Plain",
            "lastName": "User",
            "emailVerified": True,
        },
    )
    assert created.status_code == 201, created.text
    user_id = created.headers["Location"].rsplit("/", 1)[-1]
    try:
        set_password(keycloak_server, user_id)
        token = password_grant(keycloak_server, name).json()["access_token"]
        account = _account(keycloak_server, token)
        refused = _account(keycloak_server, token, {**account, "username": name + "-x"}, "POST")
        assert refused.status_code == 400, refused.text
        assert "read-only" in refused.text or "readOnly" in refused.text, refused.text
        assert keycloak_server.admin_json("GET", f"users/{user_id}")["username"] == name
        # An administrator still may: such users are Keycloak's business.
        rep = keycloak_server.admin_json("GET", f"users/{user_id}")
        moved = keycloak_server.admin_request(
            "PUT", f"users/{user_id}", json={**rep, "username": name + "-y"}
        )
        assert moved.status_code == 204, moved.text
    finally:
        keycloak_server.admin_request("DELETE", f"users/{user_id}")


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
