"""KeycloakIdentityProvider against a real Keycloak: what a seller's users get, end to end."""

from __future__ import annotations

import datetime as dt
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import requests

from connector.adapters.keycloak import KeycloakIdentityProvider, KeycloakSettings
from connector.domain.catalogue import Level
from connector.domain.model import Email, PermissionSet, Role, SellerAccount, SellerUser
from connector.ports.identity import IdentityProviderRejected, IdentityProviderUnavailable
from tests.support.keycloak import (
    KeycloakServer,
    claims,
    password_grant,
    set_group,
    set_password,
)
from tests.support.smtp import SmtpSink, free_port

pytestmark = pytest.mark.keycloak


@pytest.fixture(scope="module", params=["plugin", "admin-api"])
def idp(
    request: pytest.FixtureRequest, keycloak_server: KeycloakServer
) -> KeycloakIdentityProvider:
    """The adapter on both of its user paths: the plugin's bulk endpoint (what a Keycloak with
    the plugin gets) and the admin API one call at a time (a Keycloak without it): each test
    that syncs users holds for both."""
    plugin = request.param == "plugin"
    provider = KeycloakIdentityProvider(keycloak_server.connector_settings(bulk_endpoint=plugin))
    provider.ensure_catalogue()
    assert (provider.bulk_endpoint() is not None) is plugin
    return provider


def refresh(server: KeycloakServer, refresh_token: str) -> requests.Response:
    return requests.post(
        f"{server.url}/realms/{server.realm}/protocol/openid-connect/token",
        data={
            "grant_type": "refresh_token",
            "client_id": "seller-portal",
            "refresh_token": refresh_token,
        },
        timeout=15,
    )


def portal_roles(server: KeycloakServer, owner: str) -> set[str]:
    """Direct seller-portal roles of users/ID or groups/ID, read as the admin."""
    client = server.admin_json("GET", "clients", params={"clientId": "seller-portal"})[0]
    return {
        r["name"] for r in server.admin_json("GET", f"{owner}/role-mappings/clients/{client['id']}")
    }


def org_of(server: KeycloakServer, seller: SellerAccount) -> dict[str, Any]:
    found = server.admin_json(
        "GET",
        "organizations",
        params={"q": f"seller_id:{seller.id}", "briefRepresentation": "false"},
    )
    assert len(found) == 1, found
    return found[0]


def test_sync_seller_creates_the_organization(
    keycloak_server: KeycloakServer, idp: KeycloakIdentityProvider, seller: SellerAccount
) -> None:
    idp.sync_seller(seller)
    idp.sync_seller(seller)  # converges: no second organization

    org = org_of(keycloak_server, seller)
    assert org["name"] == seller.name
    assert org["alias"] == f"seller-{seller.id}"
    assert org["attributes"]["seller_id"] == [seller.id]
    assert org["enabled"] is True

    seller.name += " renamed"
    idp.sync_seller(seller)
    assert org_of(keycloak_server, seller)["name"] == seller.name


def test_sync_user_creates_a_member_with_attributes_roles_and_groups(
    keycloak_server: KeycloakServer,
    idp: KeycloakIdentityProvider,
    seller: SellerAccount,
    make_user: Callable[..., SellerUser],
    make_set: Callable[..., PermissionSet],
) -> None:
    editors = make_set({"inventory": Level.edit, "reports": Level.view, "pricing": Level.none})
    idp.sync_seller(seller)
    idp.sync_permission_set(seller, editors)
    user = make_user(permissions={"orders": Level.view})

    user_id = idp.sync_user(seller, user, [editors])
    assert idp.sync_user(seller, user, [editors]) == user_id  # idempotent, found by attribute
    user.idp_id = user_id
    assert idp.sync_user(seller, user, [editors]) == user_id  # and by stored id

    rep = keycloak_server.admin_json("GET", f"users/{user_id}")
    assert rep["username"] == user.user_name.lower()
    assert rep["email"] == user.primary_email
    assert rep["enabled"] is True
    assert rep["attributes"]["seller_id"] == [seller.id]
    assert rep["attributes"]["seller_role"] == ["secondary"]
    assert rep["attributes"]["seller_connector_user_id"] == [user.id]

    org = org_of(keycloak_server, seller)
    members = keycloak_server.admin_json("GET", f"organizations/{org['id']}/members")
    assert [m["id"] for m in members] == [user_id]

    assert portal_roles(keycloak_server, f"users/{user_id}") == {"orders:view"}
    groups = keycloak_server.admin_json("GET", f"users/{user_id}/groups")
    assert [g["path"] for g in groups] == [f"/sellers/{seller.name}/{editors.display_name}"]
    assert portal_roles(keycloak_server, f"groups/{groups[0]['id']}") == {
        "inventory:edit",
        "reports:view",
    }

    # Leaving the permission set leaves its group.
    idp.sync_user(seller, user, [])
    assert keycloak_server.admin_json("GET", f"users/{user_id}/groups") == []


def test_a_second_sync_writes_nothing(
    keycloak_server: KeycloakServer,
    idp: KeycloakIdentityProvider,
    seller: SellerAccount,
    make_user: Callable[..., SellerUser],
    make_set: Callable[..., PermissionSet],
) -> None:
    """Converging reads first: an unchanged user (even with a mixed-case userName and email,
    which Keycloak lower-cases) causes no update, so no admin event."""
    team = make_set({"orders": Level.view})
    user = make_user(permissions={"pricing": Level.edit})
    user.user_name = user.user_name.upper()
    user.emails[0].value = user.emails[0].value.upper()
    user_id = idp.sync_user(seller, user, [team])

    def writes() -> list[dict[str, Any]]:
        events = keycloak_server.admin_json(
            "GET", "admin-events", params={"resourcePath": f"users/{user_id}*", "max": 500}
        )
        return [e for e in events if e["operationType"] in ("UPDATE", "CREATE", "DELETE")]

    before = len(writes())
    assert before > 0  # the first sync did write: the filter sees its events
    idp.sync_user(seller, user, [team])
    assert len(writes()) == before


def _rename(user: SellerUser, seller: SellerAccount, tag: str) -> str:
    """Give ``user`` a brand-new address as userName and email (mixed case, as clients send
    it), as a directory whose ``mail`` changed or Okta and Entra (PATCH userName) do."""
    address = f"{tag}-{uuid.uuid4().hex[:8]}@Renamed.{seller.id}.example.com"
    user.user_name = address
    user.emails = [Email(address, primary=True)]
    return address.lower()


def test_a_new_user_name_renames_the_same_keycloak_user(
    keycloak_server: KeycloakServer,
    idp: KeycloakIdentityProvider,
    seller: SellerAccount,
    make_user: Callable[..., SellerUser],
    make_set: Callable[..., PermissionSet],
) -> None:
    """Not only a change of case: a new userName reaches Keycloak on both paths (the realm lets
    admins, so the connector, edit usernames; with editUsernameAllowed off Keycloak 26.7.3
    refuses it on the admin API and the bulk endpoint alike). The same user is renamed: its
    id, password, roles, groups and membership stay, the old name no longer logs in."""
    team = make_set({"orders": Level.view})
    user = make_user(permissions={"pricing": Level.edit})
    user_id = idp.sync_user(seller, user, [team])
    user.idp_id = user_id
    set_password(keycloak_server, user_id)
    old_name = user.user_name
    address = _rename(user, seller, "moved")

    assert idp.sync_user(seller, user, [team]) == user_id
    rep = keycloak_server.admin_json("GET", f"users/{user_id}")
    assert (rep["username"], rep["email"]) == (address, address)
    assert rep["attributes"]["seller_connector_user_id"] == [user.id]
    assert portal_roles(keycloak_server, f"users/{user_id}") == {"pricing:edit"}
    groups = keycloak_server.admin_json("GET", f"users/{user_id}/groups")
    assert [g["path"] for g in groups] == [f"/sellers/{seller.name}/{team.display_name}"]
    org = org_of(keycloak_server, seller)
    members = keycloak_server.admin_json("GET", f"organizations/{org['id']}/members")
    assert [m["id"] for m in members] == [user_id]
    assert password_grant(keycloak_server, address).status_code == 200
    assert password_grant(keycloak_server, old_name).status_code in (400, 401)
    found = keycloak_server.admin_json(
        "GET", "users", params={"username": old_name, "exact": "true"}
    )
    assert found == []
    # Converged: found again by its connector id too (a store without the Keycloak id).
    user.idp_id = None
    assert idp.sync_user(seller, user, [team]) == user_id

    # Many at once (a directory whose mails changed): the bulk path renames each.
    others = [make_user() for _ in range(3)]
    first = idp.bulk_sync_users(seller, [(u, []) for u in others])
    assert first.errors == {}
    wanted = {u.id: _rename(u, seller, "bulk") for u in others}
    result = idp.bulk_sync_users(seller, [(u, []) for u in others])
    assert result.errors == {}, result.errors
    for connector_id, kc_id in result.provider_ids.items():
        assert first.provider_ids[connector_id] == kc_id
        rep = keycloak_server.admin_json("GET", f"users/{kc_id}")
        assert (rep["username"], rep["email"]) == (wanted[connector_id], wanted[connector_id])


def test_a_rename_taken_by_another_user_is_a_conflict_for_that_user_alone(
    keycloak_server: KeycloakServer,
    idp: KeycloakIdentityProvider,
    seller: SellerAccount,
    make_user: Callable[..., SellerUser],
) -> None:
    """Keycloak keeps usernames unique: a rename onto a name another Keycloak user holds (one
    the connector does not manage) is refused for that user, nothing of it written."""
    user = make_user()
    user_id = idp.sync_user(seller, user, [])
    before = keycloak_server.admin_json("GET", f"users/{user_id}")
    squatter = f"squatter-{uuid.uuid4().hex[:8]}@{seller.id}.example.com"
    keycloak_server.admin_json("POST", "users", json={"username": squatter, "enabled": True})
    user.user_name = squatter
    with pytest.raises(IdentityProviderRejected) as caught:
        idp.sync_user(seller, user, [])
    assert getattr(caught.value, "status", None) in (400, 409), caught.value
    after = keycloak_server.admin_json("GET", f"users/{user_id}")
    assert (after["username"], after["email"]) == (before["username"], before["email"])


def test_a_realm_that_keeps_usernames_read_only_says_what_to_change(
    keycloak_server: KeycloakServer,
    idp: KeycloakIdentityProvider,
    seller: SellerAccount,
    make_user: Callable[..., SellerUser],
) -> None:
    """A realm imported from an older realm-sellers.json (editUsernameAllowed false) refuses
    every rename, on both paths: the error names the step to take (deploy/keycloak/README.md)
    instead of Keycloak's bare error code."""
    user = make_user()
    user_id = idp.sync_user(seller, user, [])
    _rename(user, seller, "frozen")
    keycloak_server.admin_json("PUT", "", json={"editUsernameAllowed": False})
    try:
        with pytest.raises(IdentityProviderRejected) as caught:
            idp.sync_user(seller, user, [])
    finally:
        keycloak_server.admin_json("PUT", "", json={"editUsernameAllowed": True})
    message = str(caught.value)
    assert getattr(caught.value, "status", None) == 400, message
    assert "read-only" in message.lower() or "readonly" in message.lower(), message
    assert "editUsernameAllowed" in message and "outbox retry --poison" in message
    # Once the realm has the setting, the same sync goes through.
    assert idp.sync_user(seller, user, []) == user_id
    rep = keycloak_server.admin_json("GET", f"users/{user_id}")
    assert rep["username"] == user.user_name.lower()


def test_the_primary_user_gets_every_permission_at_its_highest_level(
    keycloak_server: KeycloakServer,
    idp: KeycloakIdentityProvider,
    seller: SellerAccount,
    make_user: Callable[..., SellerUser],
) -> None:
    primary = make_user(role=Role.primary)
    user_id = idp.sync_user(seller, primary, [])
    roles = portal_roles(keycloak_server, f"users/{user_id}")
    assert roles == {f"{c.id}:admin" for c in idp.catalogue.permissions}
    assert keycloak_server.admin_json("GET", f"users/{user_id}")["attributes"]["seller_role"] == [
        "primary"
    ]


def test_access_token_carries_seller_id_and_effective_permissions(
    keycloak_server: KeycloakServer,
    idp: KeycloakIdentityProvider,
    seller: SellerAccount,
    make_user: Callable[..., SellerUser],
    make_set: Callable[..., PermissionSet],
) -> None:
    finance = make_set({"payments": Level.view, "reports": Level.view}, name="Finance viewers")
    idp.sync_permission_set(seller, finance)
    user = make_user(permissions={"inventory": Level.edit})
    user_id = idp.sync_user(seller, user, [finance])
    set_password(keycloak_server, user_id)

    response = password_grant(keycloak_server, user.user_name)
    assert response.status_code == 200, response.text
    payload = claims(response.json()["access_token"])

    assert payload["seller_id"] == seller.id
    assert payload["seller_role"] == "secondary"
    # Direct (inventory:edit, which contains inventory:view) and through the group.
    assert set(payload["seller_permissions"]) == {
        "inventory:edit",
        "inventory:view",
        "payments:view",
        "reports:view",
    }
    assert set(payload["resource_access"]["seller-portal"]["roles"]) == set(
        payload["seller_permissions"]
    )


def test_deactivation_disables_and_ends_sessions_and_reactivation_enables(
    keycloak_server: KeycloakServer,
    idp: KeycloakIdentityProvider,
    seller: SellerAccount,
    make_user: Callable[..., SellerUser],
) -> None:
    user = make_user(permissions={"orders": Level.edit})
    user_id = idp.sync_user(seller, user, [])
    set_password(keycloak_server, user_id)
    tokens = password_grant(keycloak_server, user.user_name).json()
    assert refresh(keycloak_server, tokens["refresh_token"]).status_code == 200

    user.active = False
    assert idp.sync_user(seller, user, []) == user_id

    assert keycloak_server.admin_json("GET", f"users/{user_id}")["enabled"] is False
    assert keycloak_server.admin_json("GET", f"users/{user_id}/sessions") == []
    refused = refresh(keycloak_server, tokens["refresh_token"])
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"] == "invalid_grant"
    assert password_grant(keycloak_server, user.user_name).status_code in (400, 401)

    user.active = True
    idp.sync_user(seller, user, [])
    assert keycloak_server.admin_json("GET", f"users/{user_id}")["enabled"] is True
    assert password_grant(keycloak_server, user.user_name).status_code == 200


def test_removing_a_permission_removes_the_role(
    keycloak_server: KeycloakServer,
    idp: KeycloakIdentityProvider,
    seller: SellerAccount,
    make_user: Callable[..., SellerUser],
    make_set: Callable[..., PermissionSet],
) -> None:
    user = make_user(permissions={"orders": Level.edit, "pricing": Level.view})
    user_id = idp.sync_user(seller, user, [])
    assert portal_roles(keycloak_server, f"users/{user_id}") == {"orders:edit", "pricing:view"}

    user.permissions = {"orders": Level.view, "pricing": Level.none}
    idp.sync_user(seller, user, [])
    assert portal_roles(keycloak_server, f"users/{user_id}") == {"orders:view"}

    team = make_set({"advertising": Level.admin})
    idp.sync_permission_set(seller, team)
    team.permissions = {"advertising": Level.view}
    idp.sync_permission_set(seller, team)
    group = set_group(keycloak_server, team.id)
    assert portal_roles(keycloak_server, f"groups/{group['id']}") == {"advertising:view"}

    idp.remove_permission_set(seller, team.id)
    idp.remove_permission_set(seller, team.id)  # already gone: fine
    assert keycloak_server.admin_request("GET", f"groups/{group['id']}").status_code == 404


def test_invitation_email_arrives_and_its_link_works(
    keycloak_server: KeycloakServer,
    idp: KeycloakIdentityProvider,
    seller: SellerAccount,
    make_user: Callable[..., SellerUser],
    smtp: SmtpSink,
) -> None:
    user = make_user()
    idp.sync_user(seller, user, [])

    idp.send_invitation(seller, user, dt.timedelta(days=7))

    assert user.primary_email is not None
    mail = smtp.wait_for_recipient(user.primary_email, timeout=20)
    links = re.findall(r"https?://\S+/login-actions/action-token\?\S+", mail.text)
    assert links, mail.text
    assert links[0].startswith(keycloak_server.url)
    assert "Update Password, Verify Email" in mail.text
    assert "expire within 7 days" in mail.text
    page = requests.get(links[0], timeout=15)
    assert page.status_code == 200, page.text[:500]
    # Keycloak accepted the token and asks the user to go on with the actions.
    assert "Perform the following action(s)" in page.text


def test_invitation_needs_a_synced_enabled_user(
    idp: KeycloakIdentityProvider, seller: SellerAccount, make_user: Callable[..., SellerUser]
) -> None:
    with pytest.raises(IdentityProviderRejected, match="not in Keycloak"):
        idp.send_invitation(seller, make_user(), dt.timedelta(days=1))
    inactive = make_user(active=False)
    idp.sync_user(seller, inactive, [])
    with pytest.raises(IdentityProviderRejected, match="disabled"):
        idp.send_invitation(seller, inactive, dt.timedelta(days=1))


def test_a_username_taken_by_an_unmanaged_user_is_rejected(
    keycloak_server: KeycloakServer,
    idp: KeycloakIdentityProvider,
    seller: SellerAccount,
    make_user: Callable[..., SellerUser],
) -> None:
    user = make_user()
    keycloak_server.admin_json("POST", "users", json={"username": user.user_name, "enabled": True})
    with pytest.raises(IdentityProviderRejected, match="does not manage"):
        idp.sync_user(seller, user, [])


def test_bulk_sync_creates_many_users_then_converges_them(
    keycloak_server: KeycloakServer,
    idp: KeycloakIdentityProvider,
    seller: SellerAccount,
    make_user: Callable[..., SellerUser],
    make_set: Callable[..., PermissionSet],
) -> None:
    group = make_set({"orders": Level.edit})
    other = make_set({"pricing": Level.view}, name="Pricing")
    users = [make_user(permissions={"reports": Level.view}) for _ in range(12)]

    result = idp.bulk_sync_users(seller, [(u, [group]) for u in users])

    assert result.errors == {}
    assert result.created == 12
    plugin = idp.bulk_endpoint() is not None
    assert result.requests == (1 if plugin else 0)
    assert set(result.provider_ids) == {u.id for u in users}
    some = result.provider_ids[users[5].id]
    assert portal_roles(keycloak_server, f"users/{some}") == {"reports:view"}
    org = org_of(keycloak_server, seller)
    assert keycloak_server.admin_json("GET", f"organizations/{org['id']}/members/count") == 12

    # Again, with some changed: the same Keycloak users, now as the store has them.
    for user in users:
        user.idp_id = result.provider_ids[user.id] if user is not users[0] else None
    users[1].permissions = {"orders": Level.view}
    users[2].active = False
    users[3].family_name = "Renamed"
    again = idp.bulk_sync_users(seller, [(u, [other] if u is users[4] else [group]) for u in users])
    assert again.errors == {}
    assert again.provider_ids == result.provider_ids  # found by id, or by attribute
    assert again.created == 0
    assert portal_roles(keycloak_server, f"users/{result.provider_ids[users[1].id]}") == {
        "orders:view"
    }
    assert (
        keycloak_server.admin_json("GET", f"users/{result.provider_ids[users[2].id]}")["enabled"]
        is False
    )
    assert (
        keycloak_server.admin_json("GET", f"users/{result.provider_ids[users[3].id]}")["lastName"]
        == "Renamed"
    )
    paths = [
        g["path"]
        for g in keycloak_server.admin_json(
            "GET", f"users/{result.provider_ids[users[4].id]}/groups"
        )
    ]
    assert paths == [f"/sellers/{seller.name}/Pricing"]
    assert keycloak_server.admin_json("GET", f"organizations/{org['id']}/members/count") == 12
    assert (
        len(
            keycloak_server.admin_json(
                "GET", "users", params={"q": f"seller_id:{seller.id}", "max": 100}
            )
        )
        == 12
    )


def test_bulk_sync_through_the_plugin_sends_chunks_in_parallel_and_reports_per_user(
    keycloak_server: KeycloakServer,
    seller: SellerAccount,
    make_user: Callable[..., SellerUser],
    make_set: Callable[..., PermissionSet],
) -> None:
    provider = KeycloakIdentityProvider(
        keycloak_server.connector_settings(bulk_chunk=4, bulk_parallel=3)
    )
    group = make_set({"fulfillment": Level.view})
    users = [make_user(permissions={"orders": Level.view}) for _ in range(10)]
    # One of them clashes with a user the connector does not manage: refused alone.
    keycloak_server.admin_json(
        "POST", "users", json={"username": users[6].user_name, "enabled": True}
    )

    result = provider.bulk_sync_users(seller, [(u, [group]) for u in users])

    assert result.requests == 3  # 4 + 4 + 2
    assert set(result.errors) == {users[6].id}
    error = result.errors[users[6].id]
    assert isinstance(error, IdentityProviderRejected) and getattr(error, "status", None) == 409
    assert "does not manage" in str(error)
    assert result.created == 9
    some = result.provider_ids[users[0].id]
    assert portal_roles(keycloak_server, f"users/{some}") == {"orders:view"}
    groups = keycloak_server.admin_json("GET", f"users/{some}/groups")
    assert [g["path"] for g in groups] == [f"/sellers/{seller.name}/{group.display_name}"]
    attrs = keycloak_server.admin_json("GET", f"users/{some}")["attributes"]
    assert attrs["seller_connector_user_id"] == [users[0].id]
    org = org_of(keycloak_server, seller)
    assert keycloak_server.admin_json("GET", f"organizations/{org['id']}/members/count") == 9


def test_the_service_account_cannot_leave_its_roles(keycloak_server: KeycloakServer) -> None:
    """Least privilege: the seller-connector client can do its job and nothing more."""
    settings = keycloak_server.connector_settings()
    token = requests.post(
        f"{settings.url}/realms/{settings.realm}/protocol/openid-connect/token",
        data={
            "grant_type": "client_credentials",
            "client_id": settings.client_id,
            "client_secret": settings.client_secret,
        },
        timeout=15,
    ).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    base = f"{settings.url}/admin/realms"

    def call(method: str, path: str, body: Any = None) -> requests.Response:
        return requests.request(method, f"{base}{path}", json=body, headers=headers, timeout=15)

    def status(method: str, path: str, body: Any = None) -> int:
        return call(method, path, body).status_code

    # No realm-management role that reaches clients: the grant is fine-grained, on one client.
    assert set(claims(token)["resource_access"]["realm-management"]["roles"]) == {
        "manage-users",
        "manage-organizations",
        "query-clients",
        "view-events",
    }
    assert status("GET", "/sellers/users?max=1") == 200  # its job
    assert status("POST", "", {"realm": "evil", "enabled": True}) == 403
    assert status("PUT", "/sellers", {"registrationAllowed": True}) == 403
    assert status("PUT", "/sellers/events/config", {"eventsEnabled": False}) == 403
    assert status("POST", "/sellers/partialImport", {"users": []}) == 403
    assert status("GET", "/master/users") in (401, 403)

    # Clients: it sees seller-portal alone, and may only work on seller-portal's roles.
    listed = call("GET", "/sellers/clients")
    assert listed.status_code == 200
    assert {c["clientId"] for c in listed.json()} <= {"seller-portal"}
    for client_id, visible in (("seller-portal", True), ("account", False)):
        found = call("GET", f"/sellers/clients?clientId={client_id}")
        assert found.status_code == 200
        assert [c["clientId"] for c in found.json()] == ([client_id] if visible else [])
    clients = {
        c["clientId"]: c["id"] for c in keycloak_server.admin_json("GET", "clients", params={})
    }
    portal, account = clients["seller-portal"], clients["account"]
    probe = f"probe:{time.time_ns()}"
    assert status("POST", f"/sellers/clients/{portal}/roles", {"name": probe}) == 201
    keycloak_server.admin_json("DELETE", f"clients/{portal}/roles/{probe}")
    assert status("POST", f"/sellers/clients/{account}/roles", {"name": probe}) == 403
    account_rep = keycloak_server.admin_json("GET", f"clients/{account}")
    changed = {**account_rep, "redirectUris": ["https://evil.example/*"]}
    assert status("PUT", f"/sellers/clients/{account}", changed) == 403
    unchanged = keycloak_server.admin_json("GET", f"clients/{account}")
    assert unchanged["redirectUris"] == account_rep["redirectUris"]
    assert status("POST", "/sellers/clients", {"clientId": f"evil-{time.time_ns()}"}) == 403
    connector = clients["seller-connector"]
    assert status("GET", f"/sellers/clients/{connector}/client-secret") == 403
    assert status("POST", f"/sellers/clients/{connector}/client-secret") == 403
    # Nor may it widen its own fine-grained permissions.
    permissions = clients["admin-permissions"]
    assert status("GET", f"/sellers/clients/{permissions}/authz/resource-server/permission") == 403

    # It may not hand out an administrator role, its own missing ones included.
    management = keycloak_server.admin_json(
        "GET", "clients", params={"clientId": "realm-management"}
    )[0]
    own = keycloak_server.admin_json("GET", f"clients/{connector}/service-account-user")
    victim = (
        keycloak_server.admin_request(
            "POST", "users", json={"username": f"victim-{time.time_ns()}", "enabled": True}
        )
        .headers["Location"]
        .rsplit("/", 1)[-1]
    )
    for role_name, user_id in (("realm-admin", victim), ("manage-clients", own["id"])):
        role = keycloak_server.admin_json("GET", f"clients/{management['id']}/roles/{role_name}")
        mapping = f"/sellers/users/{user_id}/role-mappings/clients/{management['id']}"
        assert status("POST", mapping, [role]) == 403, role_name


def test_the_catalogue_sync_works_through_the_fine_grained_grant(
    keycloak_server: KeycloakServer,
) -> None:
    """What the narrowed account still does on seller-portal: create a missing role, give it
    its composite and put back a description an administrator changed."""
    provider = KeycloakIdentityProvider(keycloak_server.connector_settings())
    provider.ensure_catalogue()
    portal = keycloak_server.admin_json("GET", "clients", params={"clientId": "seller-portal"})[0]
    roles = f"clients/{portal['id']}/roles"
    keycloak_server.admin_json("DELETE", f"{roles}/advertising:admin")
    edit = keycloak_server.admin_json("GET", f"{roles}/advertising:edit")
    keycloak_server.admin_json(
        "PUT", f"{roles}/advertising:edit", json={**edit, "description": "x"}
    )

    fresh = KeycloakIdentityProvider(keycloak_server.connector_settings())
    fresh.ensure_catalogue()

    recreated = keycloak_server.admin_json("GET", f"{roles}/advertising:admin")
    assert recreated["composite"] is True
    composites = keycloak_server.admin_json("GET", f"{roles}/advertising:admin/composites")
    assert [c["name"] for c in composites] == ["advertising:edit"]
    assert keycloak_server.admin_json("GET", f"{roles}/advertising:edit")["description"] != "x"


def test_failures_map_to_the_port_exceptions(keycloak_server: KeycloakServer) -> None:
    down = KeycloakSettings(
        url=f"http://127.0.0.1:{free_port()}",
        realm="sellers",
        client_id="seller-connector",
        client_secret="x",
        timeout=2.0,
    )
    with pytest.raises(IdentityProviderUnavailable):
        KeycloakIdentityProvider(down).ensure_catalogue()

    wrong = keycloak_server.connector_settings(client_secret="not-the-secret")
    with pytest.raises(IdentityProviderRejected, match="client credentials") as caught:
        KeycloakIdentityProvider(wrong).ensure_catalogue()
    assert "not-the-secret" not in str(caught.value)
    assert "not-the-secret" not in repr(wrong)


def test_a_missing_catalogue_role_is_created_before_a_user_needs_it(
    keycloak_server: KeycloakServer,
    seller: SellerAccount,
    make_user: Callable[..., SellerUser],
) -> None:
    """The bulk endpoint names roles, it does not create them: the adapter makes the catalogue
    exist first (a fresh Keycloak's first sync is a primary user's, which needs every admin
    role), and reads it again when one vanished since (a 404 for that user, then a retry)."""
    portal = keycloak_server.admin_json("GET", "clients", params={"clientId": "seller-portal"})[0]
    roles = f"clients/{portal['id']}/roles"
    keycloak_server.admin_json("DELETE", f"{roles}/advertising:admin")
    fresh = KeycloakIdentityProvider(keycloak_server.connector_settings())
    primary = make_user(role=Role.primary)
    user_id = fresh.sync_user(seller, primary, [])
    assert "advertising:admin" in portal_roles(keycloak_server, f"users/{user_id}")

    # Deleted again behind the adapter's back (it holds the catalogue it read): this sync
    # fails for this user alone, and the next one heals.
    keycloak_server.admin_json("DELETE", f"{roles}/advertising:admin")
    other = make_user(role=Role.primary)
    with pytest.raises(IdentityProviderRejected) as caught:
        fresh.sync_user(seller, other, [])
    assert getattr(caught.value, "status", None) == 404
    other_id = fresh.sync_user(seller, other, [])
    assert "advertising:admin" in portal_roles(keycloak_server, f"users/{other_id}")
