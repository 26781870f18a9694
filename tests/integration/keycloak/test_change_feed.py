"""KeycloakChangeFeed against a real Keycloak: console changes come back as ProviderChanges."""

from __future__ import annotations

import datetime as dt
import html
import re
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from connector.adapters.keycloak import KeycloakChangeFeed, KeycloakIdentityProvider
from connector.domain.catalogue import Level
from connector.domain.model import PermissionSet, SellerAccount, SellerUser
from connector.ports.identity import ProviderChange
from tests.support.keycloak import KeycloakServer, seller_group, set_group
from tests.support.smtp import SmtpSink

pytestmark = pytest.mark.keycloak


def drain(feed: KeycloakChangeFeed) -> str | None:
    """Read everything there is, and return the marker after it."""
    marker = None
    while True:
        changes, marker = feed.changes_since(marker)
        if not changes:
            return marker


def poll(
    feed: KeycloakChangeFeed, marker: str | None, want: Callable[[list[ProviderChange]], bool]
) -> tuple[list[ProviderChange], str | None]:
    """Poll until ``want`` holds for everything read since ``marker`` (events are stored
    synchronously, but allow a little slack)."""
    seen: list[ProviderChange] = []
    deadline = time.monotonic() + 10
    while True:
        changes, marker = feed.changes_since(marker)
        seen.extend(changes)
        if want(seen) or time.monotonic() > deadline:
            return seen, marker
        time.sleep(0.2)


def test_console_disable_group_add_and_login_are_reported(
    keycloak_server: KeycloakServer,
    idp: KeycloakIdentityProvider,
    feed: KeycloakChangeFeed,
    seller: SellerAccount,
    make_user: Callable[..., SellerUser],
    make_set: Callable[..., PermissionSet],
) -> None:
    team = make_set({"orders": Level.view})
    idp.sync_permission_set(seller, team)
    user = make_user()
    user_id = idp.sync_user(seller, user, [])
    bystander_id = (
        keycloak_server.admin_request(
            "POST", "users", json={"username": f"unmanaged-{time.time_ns()}", "enabled": True}
        )
        .headers["Location"]
        .rsplit("/", 1)[-1]
    )
    marker = drain(feed)

    # What an administrator does in the console (as the master admin, not the connector).
    group = set_group(keycloak_server, team.id)
    keycloak_server.admin_json("PUT", f"users/{user_id}/groups/{group['id']}")
    rep = keycloak_server.admin_json("GET", f"users/{user_id}")
    keycloak_server.admin_json("PUT", f"users/{user_id}", json={**rep, "enabled": False})
    keycloak_server.admin_json("PUT", f"users/{bystander_id}", json={"enabled": False})
    # The connector's own change is not a console change.
    user.active = False
    idp.sync_user(seller, user, [team])

    changes, marker = poll(
        feed, marker, lambda seen: {"group-added", "disabled"} <= {c.kind for c in seen}
    )
    mine = [c for c in changes if c.provider_user_id == user_id]
    kinds = [c.kind for c in mine]
    assert kinds == ["group-added", "disabled"], changes
    added = mine[0]
    assert added.group_id == group["id"]
    assert added.details["group_path"] == f"/sellers/{seller.name}/{team.display_name}"
    assert added.details["group_seller_id"] == seller.id
    assert added.details["permission_set_id"] == team.id
    assert added.details["connector_user_id"] == user.id
    assert added.details["seller_id"] == seller.id
    assert all(c.provider_user_id != bystander_id for c in changes)

    # Nothing new: the marker holds.
    again, marker = feed.changes_since(marker)
    assert [c for c in again if c.provider_user_id == user_id] == []

    # Console enable, then a login: both reported, in order.
    keycloak_server.admin_json("PUT", f"users/{user_id}", json={**rep, "enabled": True})
    keycloak_server.admin_json(
        "PUT",
        f"users/{user_id}/reset-password",
        json={"type": "password", "value": "Secr3t-enough-pw", "temporary": False},
    )
    login = requests.post(
        f"{keycloak_server.url}/realms/sellers/protocol/openid-connect/token",
        data={
            "grant_type": "password",
            "client_id": "seller-portal",
            "username": user.user_name,
            "password": "Secr3t-enough-pw",
        },
        timeout=15,
    )
    assert login.status_code == 200, login.text
    changes, marker = poll(feed, marker, lambda seen: "login" in {c.kind for c in seen})
    kinds = [c.kind for c in changes if c.provider_user_id == user_id]
    assert kinds[0] == "enabled"
    assert "login" in kinds
    assert kinds.index("login") > 0


def test_markers_resume_exactly(
    keycloak_server: KeycloakServer,
    idp: KeycloakIdentityProvider,
    feed: KeycloakChangeFeed,
    seller: SellerAccount,
    make_user: Callable[..., SellerUser],
) -> None:
    users = [make_user() for _ in range(3)]
    ids = [idp.sync_user(seller, u, []) for u in users]
    marker = drain(feed)

    for user_id in ids:
        rep = keycloak_server.admin_json("GET", f"users/{user_id}")
        keycloak_server.admin_json("PUT", f"users/{user_id}", json={**rep, "enabled": False})

    small = KeycloakChangeFeed(feed.settings, page_size=1, max_events=1)
    seen: list[ProviderChange] = []
    for _ in range(10):
        changes, marker = small.changes_since(marker)
        seen.extend(changes)
    disabled = [c.provider_user_id for c in seen if c.kind == "disabled"]
    assert sorted(disabled) == sorted(ids)  # each once: none lost, none repeated


def test_accepting_the_invitation_is_reported(
    keycloak_server: KeycloakServer,
    idp: KeycloakIdentityProvider,
    feed: KeycloakChangeFeed,
    seller: SellerAccount,
    make_user: Callable[..., SellerUser],
    smtp: SmtpSink,
) -> None:
    """The whole invitation, as the invited person's browser does it."""
    user = make_user()
    user_id = idp.sync_user(seller, user, [])
    marker = drain(feed)
    idp.send_invitation(seller, user, dt.timedelta(days=4))
    assert user.primary_email is not None
    mail = smtp.wait_for_recipient(user.primary_email, timeout=20)
    link = re.findall(r"https?://\S+/login-actions/action-token\?\S+", mail.text)[0]

    browser = requests.Session()

    def get(url: str) -> requests.Response:
        response = browser.get(url, timeout=15)
        # Keycloak marks its cookies Secure (SameSite=None); browsers send those to
        # http://127.0.0.1, requests does not unless told.
        for cookie in browser.cookies:
            cookie.secure = False
        return response

    confirm = get(link)
    proceed = html.unescape(re.findall(r'href="([^"]*action-token[^"]*)"', confirm.text)[0])
    form_page = get(proceed)
    assert "password-new" in form_page.text
    action = html.unescape(re.findall(r'<form[^>]*action="([^"]+)"', form_page.text)[0])
    done = browser.post(
        action,
        data={"password-new": "Fresh-Passw0rd-1", "password-confirm": "Fresh-Passw0rd-1"},
        timeout=15,
    )
    assert done.status_code == 200
    assert "Your account has been updated" in done.text

    rep = keycloak_server.admin_json("GET", f"users/{user_id}")
    assert rep["emailVerified"] is True
    assert rep["requiredActions"] == []
    changes, _ = poll(feed, marker, lambda seen: "invitation-accepted" in {c.kind for c in seen})
    accepted = [c for c in changes if c.kind == "invitation-accepted"]
    assert [c.provider_user_id for c in accepted] == [user_id]  # one, though several events fired
    assert accepted[0].details["connector_user_id"] == user.id


def test_console_role_changes_are_read_for_portal_roles_of_seller_users_and_groups(
    keycloak_server: KeycloakServer,
    idp: KeycloakIdentityProvider,
    feed: KeycloakChangeFeed,
    seller: SellerAccount,
    make_user: Callable[..., SellerUser],
    make_set: Callable[..., PermissionSet],
) -> None:
    team = make_set({"orders": Level.view})
    idp.sync_seller(seller)
    idp.sync_permission_set(seller, team)
    user_id = idp.sync_user(seller, make_user(), [])
    seller_group_id = seller_group(keycloak_server, seller.id)["id"]
    root_id = keycloak_server.admin_json("GET", "group-by-path/sellers")["id"]
    outside = keycloak_server.admin_request(
        "POST", "groups", json={"name": f"not-a-seller-{time.time_ns()}"}
    )
    outside_id = outside.headers["Location"].rsplit("/", 1)[-1]
    bystander = keycloak_server.admin_request(
        "POST", "users", json={"username": f"unmanaged-{time.time_ns()}", "enabled": True}
    )
    bystander_id = bystander.headers["Location"].rsplit("/", 1)[-1]
    clients = {c["clientId"]: c["id"] for c in keycloak_server.admin_json("GET", "clients")}
    portal, account = clients["seller-portal"], clients["account"]
    reports = keycloak_server.admin_json("GET", f"clients/{portal}/roles/reports:view")
    manage_account = keycloak_server.admin_json("GET", f"clients/{account}/roles/manage-account")
    marker = drain(feed)

    def grant(owner: str, client: str, role: dict[str, Any], method: str = "POST") -> None:
        keycloak_server.admin_json(method, f"{owner}/role-mappings/clients/{client}", json=[role])

    grant(f"users/{user_id}", account, manage_account)  # another client's role: not a permission
    grant(f"users/{bystander_id}", portal, reports)  # not a seller user
    grant(f"groups/{outside_id}", portal, reports)  # not under /sellers
    grant(f"groups/{seller_group_id}", portal, reports)  # inherited by the seller's sets
    grant(f"groups/{root_id}", portal, reports)  # inherited by every seller's sets
    grant(f"groups/{root_id}", portal, reports, "DELETE")  # (put back at once)
    grant(f"users/{user_id}", portal, reports)

    grouped = KeycloakChangeFeed(feed.settings, include_group_roles=True)
    changes, _ = poll(grouped, marker, lambda seen: sum(c.kind == "roles-added" for c in seen) >= 3)
    roles = [c for c in changes if c.kind in ("roles-added", "roles-removed")]
    assert [(c.kind, c.details["target"], c.group_id or c.provider_user_id) for c in roles] == [
        ("roles-added", "group", seller_group_id),
        ("roles-added", "group", root_id),
        ("roles-removed", "group", root_id),
        ("roles-added", "user", user_id),
    ]
    on_seller_group, on_root = roles[0].details, roles[1].details
    assert (on_seller_group["group_seller_id"], on_seller_group["permission_set_id"]) == (
        seller.id,
        None,
    )
    assert on_seller_group["group_path"] == f"/sellers/{seller.name}"
    assert (on_root["group_seller_id"], on_root["permission_set_id"]) == (None, None)
    assert all(c.details["roles"] == ["reports:view"] for c in roles)
    assert all(c.details["via"] == "poll" for c in roles)
    # Without group roles (include_group_roles=False) only the user's change comes.
    users_only = KeycloakChangeFeed(feed.settings, include_group_roles=False)
    plain, _ = users_only.changes_since(marker)
    assert [
        (c.kind, c.provider_user_id) for c in plain if c.kind in ("roles-added", "roles-removed")
    ] == [("roles-added", user_id)]
