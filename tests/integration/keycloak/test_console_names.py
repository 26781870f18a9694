"""What an IT administrator sees in the Keycloak console, against a real Keycloak: sellers and
permission sets named by their display names (the connector's ids as attributes, found by them),
roles described in words; renames follow; names Keycloak would misread are made safe; realms
with the older id-named groups are adopted by the next sync."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from connector.adapters.keycloak import KeycloakIdentityProvider
from connector.domain.catalogue import Level
from connector.domain.model import PermissionSet, Plan, SellerAccount, SellerUser
from tests.support.keycloak import KeycloakServer, groups_tagged, seller_group, set_group

pytestmark = pytest.mark.keycloak


def named_seller(name: str) -> SellerAccount:
    return SellerAccount(id=f"s-{uuid.uuid4().hex[:10]}", name=name, plan=Plan.professional)


def user_groups(server: KeycloakServer, user_id: str) -> list[dict[str, Any]]:
    return list(server.admin_json("GET", f"users/{user_id}/groups"))


def test_what_an_admin_sees_after_provisioning(
    keycloak_server: KeycloakServer,
    idp: KeycloakIdentityProvider,
    make_user: Callable[..., SellerUser],
) -> None:
    seller = named_seller(f"Acme Trading {uuid.uuid4().hex[:6]}")
    handlers = PermissionSet(
        id=uuid.uuid4().hex,
        seller_id=seller.id,
        display_name="Order handlers",
        permissions={"orders": Level.edit, "reports": Level.view},
    )
    idp.sync_seller(seller)
    idp.sync_permission_set(seller, handlers)
    user = make_user(seller_id=seller.id)
    user_id = idp.sync_user(seller, user, [handlers])

    # Organizations: the seller's name (the alias stays id-based).
    orgs = keycloak_server.admin_json(
        "GET",
        "organizations",
        params={"q": f"seller_id:{seller.id}", "briefRepresentation": "false"},
    )
    assert [(o["name"], o["alias"]) for o in orgs] == [(seller.name, f"seller-{seller.id}")]

    # Groups: /sellers/<seller name>/<set name>, the ids kept as attributes.
    parent = seller_group(keycloak_server, seller.id)
    assert parent["name"] == seller.name
    assert parent["path"] == f"/sellers/{seller.name}"
    group = set_group(keycloak_server, handlers.id)
    assert group["name"] == "Order handlers"
    assert group["path"] == f"/sellers/{seller.name}/Order handlers"
    assert group["parentId"] == parent["id"]
    assert group["attributes"]["seller_id"] == [seller.id]
    assert group["attributes"]["permission_set_id"] == [handlers.id]
    assert "Order handlers" in group["description"]
    assert [g["path"] for g in user_groups(keycloak_server, user_id)] == [group["path"]]
    assert handlers.id not in group["path"] and seller.id not in group["path"]

    # Roles: described from the catalogue, category and level in words.
    portal = keycloak_server.admin_json("GET", "clients", params={"clientId": "seller-portal"})[0]
    # Roles an IT admin added in the console (other tests add one) may have no description.
    roles = {
        r["name"]: r.get("description", "")
        for r in keycloak_server.admin_json(
            "GET", f"clients/{portal['id']}/roles", params={"briefRepresentation": "false"}
        )
    }
    assert roles["pricing:edit"].startswith("Pricing: view and edit. Prices,")
    assert roles["orders:view"].startswith("Orders: view. Order management")
    assert roles["user-permissions:admin"].startswith(
        "User permissions: admin (view, edit and manage). Invite users"
    )
    catalogue = {f"{c.id}:{lv.value}" for c in idp.catalogue.permissions for lv in c.levels}
    assert {n for n in roles if n in catalogue} == {n for n in catalogue if not n.endswith(":none")}


def test_renames_follow_at_the_next_sync(
    keycloak_server: KeycloakServer,
    idp: KeycloakIdentityProvider,
    make_user: Callable[..., SellerUser],
) -> None:
    seller = named_seller(f"Rename Me {uuid.uuid4().hex[:6]}")
    team = PermissionSet(
        id=uuid.uuid4().hex,
        seller_id=seller.id,
        display_name="Catalog editors",
        permissions={"product-catalog": Level.edit},
    )
    idp.sync_seller(seller)
    idp.sync_permission_set(seller, team)
    user = make_user(seller_id=seller.id)
    user_id = idp.sync_user(seller, user, [team])
    before = set_group(keycloak_server, team.id)

    team.display_name = "Catalogue editors (EU)"
    idp.sync_permission_set(seller, team)
    after = set_group(keycloak_server, team.id)
    assert after["id"] == before["id"]  # the same group, renamed: members and roles stay
    assert after["name"] == "Catalogue editors (EU)"
    assert after["attributes"]["display_name"] == ["Catalogue editors (EU)"]
    assert [g["id"] for g in user_groups(keycloak_server, user_id)] == [before["id"]]

    seller.name += " Ltd"
    idp.sync_seller(seller)
    assert seller_group(keycloak_server, seller.id)["name"] == seller.name
    assert set_group(keycloak_server, team.id)["path"] == (
        f"/sellers/{seller.name}/Catalogue editors (EU)"
    )
    orgs = keycloak_server.admin_json(
        "GET", "organizations", params={"q": f"seller_id:{seller.id}"}
    )
    assert [o["name"] for o in orgs] == [seller.name]
    assert idp.differences(seller, [(user, [team])], [team]) == []


def test_names_keycloak_would_misread_are_made_safe(
    keycloak_server: KeycloakServer, idp: KeycloakIdentityProvider
) -> None:
    shared = f"Twin Sellers {uuid.uuid4().hex[:6]}"
    first, second = named_seller(shared), named_seller(shared)
    odd = PermissionSet(
        id=uuid.uuid4().hex,
        seller_id=first.id,
        display_name="Returns/Refunds\u200b\tteam",
        permissions={"orders": Level.view},
    )
    slash = PermissionSet(
        id=uuid.uuid4().hex,
        seller_id=first.id,
        display_name="A/B testers",
        permissions={"advertising": Level.view},
    )
    dash = PermissionSet(
        id=uuid.uuid4().hex,
        seller_id=first.id,
        display_name="A-B testers",
        permissions={"advertising": Level.edit},
    )
    for seller in (first, second):
        idp.sync_seller(seller)
    for permission_set in (odd, slash, dash):
        idp.sync_permission_set(first, permission_set)

    # "/" would read as a path step, a zero-width space or a tab as nothing.
    assert set_group(keycloak_server, odd.id)["name"] == "Returns-Refunds team"
    assert set_group(keycloak_server, odd.id)["attributes"]["display_name"] == [odd.display_name]
    # Two names that read the same once safe, two sellers of one name: the id tells them apart.
    assert set_group(keycloak_server, slash.id)["name"] == "A-B testers"
    assert set_group(keycloak_server, dash.id)["name"] == f"A-B testers ({dash.id})"
    assert seller_group(keycloak_server, first.id)["name"] == shared
    assert seller_group(keycloak_server, second.id)["name"] == f"{shared} ({second.id})"
    # Converging again changes nothing and still finds each by its attribute.
    idp.sync_permission_set(first, dash)
    assert set_group(keycloak_server, dash.id)["name"] == f"A-B testers ({dash.id})"
    assert idp.differences(first, [], [odd, slash, dash]) == []


def test_legacy_id_named_groups_are_adopted_by_the_next_sync(
    keycloak_server: KeycloakServer,
    idp: KeycloakIdentityProvider,
    make_user: Callable[..., SellerUser],
) -> None:
    """A realm provisioned before display names: /sellers/<seller id>/<set id>, the parent
    untagged, one set's group tagged (as the older code did) and one not."""
    seller = named_seller(f"Legacy Co {uuid.uuid4().hex[:6]}")
    tagged = PermissionSet(
        id=uuid.uuid4().hex,
        seller_id=seller.id,
        display_name="Finance viewers",
        permissions={"payments": Level.view},
    )
    untagged = PermissionSet(
        id=uuid.uuid4().hex,
        seller_id=seller.id,
        display_name="Shippers",
        permissions={"fulfillment": Level.edit},
    )
    root = keycloak_server.admin_json("GET", "group-by-path/sellers")

    def child(parent_id: str, rep: dict[str, Any]) -> str:
        response = keycloak_server.admin_request("POST", f"groups/{parent_id}/children", json=rep)
        assert response.status_code == 201, response.text
        return str(response.headers["Location"].rsplit("/", 1)[-1])

    parent_id = child(root["id"], {"name": seller.id})
    tagged_id = child(
        parent_id,
        {
            "name": tagged.id,
            "attributes": {"seller_id": [seller.id], "permission_set_id": [tagged.id]},
        },
    )
    untagged_id = child(parent_id, {"name": untagged.id})
    user = make_user(seller_id=seller.id)
    user_id = idp.sync_user(seller, user, [])
    keycloak_server.admin_json("PUT", f"users/{user_id}/groups/{tagged_id}")

    # The outbox's ordinary user sync adopts them: no second group, the same ids, renamed.
    idp.sync_user(seller, user, [tagged, untagged])
    assert seller_group(keycloak_server, seller.id)["id"] == parent_id
    assert seller_group(keycloak_server, seller.id)["name"] == seller.name
    adopted = {g["id"]: g for g in groups_tagged(keycloak_server, "seller_id", seller.id)}
    assert set(adopted) == {parent_id, tagged_id, untagged_id}
    assert adopted[tagged_id]["name"] == "Finance viewers"
    assert adopted[untagged_id]["name"] == "Shippers"
    assert adopted[untagged_id]["attributes"]["permission_set_id"] == [untagged.id]
    assert {g["id"] for g in user_groups(keycloak_server, user_id)} == {tagged_id, untagged_id}
    assert {g["path"] for g in user_groups(keycloak_server, user_id)} == {
        f"/sellers/{seller.name}/Finance viewers",
        f"/sellers/{seller.name}/Shippers",
    }


def test_reconcile_sees_a_renamed_group_and_a_stray_one(
    keycloak_server: KeycloakServer,
    idp: KeycloakIdentityProvider,
    make_set: Callable[..., PermissionSet],
    seller: SellerAccount,
) -> None:
    team = make_set({"orders": Level.view}, name="Night shift")
    idp.sync_seller(seller)
    idp.sync_permission_set(seller, team)
    group = set_group(keycloak_server, team.id)
    keycloak_server.admin_json("PUT", f"groups/{group['id']}", json={**group, "name": "Whatever"})
    parent = seller_group(keycloak_server, seller.id)
    stray = keycloak_server.admin_request(
        "POST", f"groups/{parent['id']}/children", json={"name": "Made by hand"}
    )
    stray_id = stray.headers["Location"].rsplit("/", 1)[-1]

    found = {(d.kind, d.target, d.field, d.repair) for d in idp.differences(seller, [], [team])}
    assert found == {
        ("permission_set", team.id, "name", ("permission_set.sync", team.id)),
        ("group", "Made by hand", "stray", ("permission_set.delete", stray_id)),
    }
    # The repairs the outbox would run.
    idp.sync_permission_set(seller, team)
    idp.remove_permission_set(seller, stray_id)
    assert set_group(keycloak_server, team.id)["name"] == "Night shift"
    assert keycloak_server.admin_request("GET", f"groups/{stray_id}").status_code == 404
    assert idp.differences(seller, [], [team]) == []
