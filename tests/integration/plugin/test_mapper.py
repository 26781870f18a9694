"""The plugin's seller claim mapper in a real Keycloak: the access token of a seller user says
who the seller is and the user's effective permissions, computed from its roles."""

from __future__ import annotations

import pytest

from connector.adapters.keycloak import KeycloakIdentityProvider
from connector.domain.catalogue import Level
from connector.domain.model import PermissionSet, Role, SellerAccount
from tests.integration.plugin.helpers import new_user
from tests.support.keycloak import KeycloakServer, claims, password_grant, set_password

pytestmark = pytest.mark.keycloak


def test_access_and_id_tokens_carry_the_seller_claim(
    keycloak_server: KeycloakServer, idp: KeycloakIdentityProvider, seller: SellerAccount
) -> None:
    # Direct inventory:edit, orders:view and reports:admin through a permission set (group),
    # pricing:none (no access): the claim keeps the highest level per category.
    team = PermissionSet(
        id="ps-team",
        seller_id=seller.id,
        display_name="Team",
        permissions={"orders": Level.view, "reports": Level.admin, "inventory": Level.view},
    )
    idp.sync_permission_set(seller, team)
    user = new_user(seller, permissions={"inventory": Level.edit, "pricing": Level.none})
    user_id = idp.sync_user(seller, user, [team])
    set_password(keycloak_server, user_id)

    response = password_grant(keycloak_server, user.user_name)
    assert response.status_code == 200, response.text
    expected = {
        "id": seller.id,
        "role": "secondary",
        "permissions": {"inventory": "edit", "orders": "view", "reports": "admin"},
    }
    assert claims(response.json()["access_token"])["seller"] == expected
    assert claims(response.json()["id_token"])["seller"] == expected


def test_the_primary_has_every_category_at_admin(
    keycloak_server: KeycloakServer, idp: KeycloakIdentityProvider, seller: SellerAccount
) -> None:
    primary = new_user(seller, Role.primary)
    user_id = idp.sync_user(seller, primary, [])
    set_password(keycloak_server, user_id)
    response = password_grant(keycloak_server, primary.user_name)
    assert response.status_code == 200, response.text
    claim = claims(response.json()["access_token"])["seller"]
    assert claim["role"] == "primary"
    assert claim["permissions"] == {c.id: "admin" for c in idp.catalogue.permissions}
