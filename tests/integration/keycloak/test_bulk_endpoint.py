"""The plugin's bulk endpoint (``/realms/sellers/seller-connector``) against a real Keycloak:
who may call it, what it refuses, and that it never lets the connector do more than its roles
let it do one admin call at a time."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from connector.adapters.keycloak import KeycloakIdentityProvider
from connector.domain.model import SellerAccount, SellerUser
from tests.support.keycloak import KeycloakServer, RealmAdmin

pytestmark = pytest.mark.keycloak


def token_of(server: KeycloakServer, client_id: str, secret: str) -> str:
    response = requests.post(
        f"{server.url}/realms/{server.realm}/protocol/openid-connect/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
        timeout=15,
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


def endpoint(server: KeycloakServer, path: str = "") -> str:
    return f"{server.url}/realms/{server.realm}/seller-connector{path}"


def post_users(server: KeycloakServer, token: str | None, body: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.post(endpoint(server, "/users"), json=body, headers=headers, timeout=30)


@pytest.fixture
def connector_token(keycloak_server: KeycloakServer) -> str:
    return token_of(keycloak_server, "seller-connector", keycloak_server.connector_client_secret())


@pytest.fixture
def organization(
    keycloak_server: KeycloakServer, idp: KeycloakIdentityProvider, seller: SellerAccount
) -> str:
    idp.sync_seller(seller)
    found = keycloak_server.admin_json(
        "GET", "organizations", params={"q": f"seller_id:{seller.id}"}
    )
    return str(found[0]["id"])


def user_rep(seller: SellerAccount, user: SellerUser, **changes: Any) -> dict[str, Any]:
    rep: dict[str, Any] = {
        "connectorId": user.id,
        "username": user.user_name,
        "email": user.primary_email,
        "enabled": True,
        "attributes": {
            "seller_id": [seller.id],
            "seller_role": [user.role.value],
            "seller_connector_user_id": [user.id],
        },
        "roles": [],
        "groups": [],
    }
    rep.update(changes)
    return rep


def test_only_the_connectors_service_account_may_call_it(
    keycloak_server: KeycloakServer,
    connector_token: str,
    organization: str,
    seller: SellerAccount,
    make_user: Callable[..., SellerUser],
) -> None:
    body = {"organizationId": organization, "users": [user_rep(seller, make_user())]}
    ok = requests.get(
        endpoint(keycloak_server),
        headers={"Authorization": f"Bearer {connector_token}"},
        timeout=15,
    )
    assert ok.status_code == 200 and ok.json()["maxUsers"] >= 1

    # No token, a forged one, a master-realm administrator's: not a token of this realm.
    assert post_users(keycloak_server, None, body).status_code == 401
    assert post_users(keycloak_server, "not.a.token", body).status_code == 401
    assert post_users(keycloak_server, keycloak_server.admin_token(), body).status_code == 401

    # An IT administrator of the realm holding the very same roles: not the connector.
    admin = RealmAdmin.create(keycloak_server, ("manage-users", "manage-organizations"))
    refused = post_users(keycloak_server, admin.token(), body)
    assert refused.status_code == 403, refused.text
    assert "seller-connector" in refused.json()["errorMessage"]

    # Another client's service account with manage-users: not the connector either.
    client_id = f"imposter-{uuid.uuid4().hex[:8]}"
    secret = uuid.uuid4().hex
    keycloak_server.admin_json(
        "POST",
        "clients",
        json={
            "clientId": client_id,
            "secret": secret,
            "publicClient": False,
            "serviceAccountsEnabled": True,
            "standardFlowEnabled": False,
        },
    )
    client = keycloak_server.admin_json("GET", "clients", params={"clientId": client_id})[0]
    account = keycloak_server.admin_json("GET", f"clients/{client['id']}/service-account-user")
    management = keycloak_server.admin_json(
        "GET", "clients", params={"clientId": "realm-management"}
    )[0]
    manage_users = keycloak_server.admin_json(
        "GET", f"clients/{management['id']}/roles/manage-users"
    )
    keycloak_server.admin_json(
        "POST",
        f"users/{account['id']}/role-mappings/clients/{management['id']}",
        json=[manage_users],
    )
    try:
        assert (
            post_users(
                keycloak_server, token_of(keycloak_server, client_id, secret), body
            ).status_code
            == 403
        )
    finally:
        keycloak_server.admin_json("DELETE", f"clients/{client['id']}")
    # Nothing of it was written.
    assert (
        keycloak_server.admin_json(
            "GET", "users", params={"q": f"seller_id:{seller.id}", "exact": "true"}
        )
        == []
    )


@pytest.fixture
def without_manage_organizations(keycloak_server: KeycloakServer) -> Iterator[None]:
    """The connector's service account without manage-organizations, for one test."""
    client = keycloak_server.admin_json("GET", "clients", params={"clientId": "seller-connector"})[
        0
    ]
    account = keycloak_server.admin_json("GET", f"clients/{client['id']}/service-account-user")
    management = keycloak_server.admin_json(
        "GET", "clients", params={"clientId": "realm-management"}
    )[0]
    role = keycloak_server.admin_json(
        "GET", f"clients/{management['id']}/roles/manage-organizations"
    )
    mapping = f"users/{account['id']}/role-mappings/clients/{management['id']}"
    keycloak_server.admin_json("DELETE", mapping, json=[role])
    try:
        yield
    finally:
        keycloak_server.admin_json("POST", mapping, json=[role])


def test_it_checks_the_callers_roles_as_the_admin_api_does(
    keycloak_server: KeycloakServer,
    organization: str,
    seller: SellerAccount,
    make_user: Callable[..., SellerUser],
    without_manage_organizations: None,
) -> None:
    token = token_of(keycloak_server, "seller-connector", keycloak_server.connector_client_secret())
    body = {"organizationId": organization, "users": [user_rep(seller, make_user())]}
    assert post_users(keycloak_server, token, body).status_code == 403
    assert (
        keycloak_server.admin_json(
            "GET", "users", params={"q": f"seller_id:{seller.id}", "exact": "true"}
        )
        == []
    )


def test_it_refuses_what_would_widen_the_connectors_reach(
    keycloak_server: KeycloakServer,
    connector_token: str,
    organization: str,
    seller: SellerAccount,
    make_user: Callable[..., SellerUser],
) -> None:
    # Attributes other than the seller's: refused as a whole, before anything is read.
    extra = user_rep(seller, make_user())
    extra["attributes"]["is_admin"] = ["true"]
    response = post_users(
        keycloak_server, connector_token, {"organizationId": organization, "users": [extra]}
    )
    assert response.status_code == 400 and "only the seller attributes" in response.text
    # More users than one request may carry.
    many = [user_rep(seller, make_user()) for _ in range(501)]
    response = post_users(
        keycloak_server, connector_token, {"organizationId": organization, "users": many}
    )
    assert response.status_code == 413
    # An organization that does not exist.
    response = post_users(
        keycloak_server, connector_token, {"organizationId": uuid.uuid4().hex, "users": [extra]}
    )
    assert response.status_code in (400, 404)

    # A group outside the sellers' root (403), a role of another client (an administrator
    # role: not a role of seller-portal, 404) and a role that does not exist (404): each
    # refused for its user alone, nothing of it written.
    outside = (
        keycloak_server.admin_request(
            "POST", "groups", json={"name": f"outside-{uuid.uuid4().hex[:8]}"}
        )
        .headers["Location"]
        .rsplit("/", 1)[-1]
    )
    fine = make_user()
    wrong_group = make_user()
    admin_role = make_user()
    unknown_role = make_user()
    body = {
        "organizationId": organization,
        "users": [
            user_rep(seller, fine, roles=["orders:view"]),
            user_rep(seller, wrong_group, groups=[outside]),
            user_rep(seller, admin_role, roles=["realm-admin"]),
            user_rep(seller, unknown_role, roles=["orders:superpower"]),
        ],
    }
    response = post_users(keycloak_server, connector_token, body)
    assert response.status_code == 200, response.text
    results = {r["connectorId"]: r for r in response.json()["results"]}
    assert results[fine.id]["outcome"] == "created"
    assert results[wrong_group.id]["status"] == 403, results[wrong_group.id]
    for user in (admin_role, unknown_role):
        assert results[user.id]["status"] == 404, results[user.id]
    tagged = keycloak_server.admin_json(
        "GET", "users", params={"q": f"seller_id:{seller.id}", "exact": "true"}
    )
    assert [u["username"] for u in tagged] == [fine.user_name.lower()]
    assert keycloak_server.admin_json("GET", f"groups/{outside}/members") == []
    keycloak_server.admin_json("DELETE", f"groups/{outside}")
