"""Issue 8's contract details at the HTTP level: re-provisioning, reserved addresses,
errors, identifiers in /Schemas and the public URL."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from connector.bootstrap import Connector, bootstrap
from connector.domain.model import utcnow
from connector.entrypoints.web import create_app
from tests.conftest import SELLER_GROUP, SELLER_USER, SellerHandle, make_settings, user_body
from tests.http.conftest import (
    LIST_SCHEMA,
    assert_scim_error,
    audit,
    group_body,
    patch_body,
    store_dump,
)

USERS = "/scim/v2/Users"
GROUPS = "/scim/v2/Groups"
MAPPINGS = Path(__file__).resolve().parents[2] / "mappings"


def post_user(client: Any, seller: SellerHandle, body: dict[str, Any]) -> Any:
    return client.post(USERS, json=body, headers=seller.headers)


def with_extension(body: dict[str, Any], **extension: Any) -> dict[str, Any]:
    body["schemas"] = [*body["schemas"], SELLER_USER]
    body[SELLER_USER] = extension
    return body


# -- 1. Re-provisioning a deleted user -------------------------------------------------


def test_post_with_the_user_name_of_a_deleted_user_restores_it(
    client: Any, make_seller: Any, run_cli: Callable[..., Any]
) -> None:
    """Entra ID deletes after its soft-delete period and may assign the person again."""
    seller = make_seller()
    first = post_user(
        client,
        seller,
        with_extension(
            user_body("returning@acme.example.com", displayName="Old Name", externalId="e-1"),
            permissions=[{"category": "orders", "level": "edit"}],
        ),
    ).get_json()
    assert client.delete(f"{USERS}/{first['id']}", headers=seller.headers).status_code == 204

    again = post_user(
        client,
        seller,
        with_extension(
            user_body(
                "Returning@Acme.example.com",
                displayName="New Name",
                externalId="e-2",
                name={"givenName": "Rita", "familyName": "Turner"},
            ),
            permissions=[{"category": "inventory", "level": "view"}],
            notifications=["orders"],
        ),
    )
    assert again.status_code == 201, again.get_data(as_text=True)
    body = again.get_json()
    assert body["id"] == first["id"]
    assert body["active"] is True
    # Attributes come from the new body, nothing from the old one.
    assert body["userName"] == "Returning@Acme.example.com"
    assert body["displayName"] == "New Name"
    assert body["externalId"] == "e-2"
    assert body["name"] == {"givenName": "Rita", "familyName": "Turner"}
    assert body[SELLER_USER]["permissions"] == [{"category": "inventory", "level": "view"}]
    assert body[SELLER_USER]["notifications"] == ["orders"]
    assert again.headers["Location"] == body["meta"]["location"]
    # Visible again, with its history.
    assert client.get(f"{USERS}/{first['id']}", headers=seller.headers).status_code == 200
    history = [
        e["action"]
        for e in audit(run_cli, seller.seller.id)
        if e["target"] == f"user:{first['id']}"
    ]
    assert history == ["user.created", "user.deleted", "user.restored"]


def test_post_with_any_email_of_a_deleted_user_restores_it(client: Any, make_seller: Any) -> None:
    seller = make_seller()
    first = post_user(
        client,
        seller,
        user_body(
            "jdoe",
            emails=[
                {"value": "jane@acme.example.com", "type": "work", "primary": True},
                {"value": "jane.doe@home.example.org", "type": "home"},
            ],
        ),
    ).get_json()
    assert client.delete(f"{USERS}/{first['id']}", headers=seller.headers).status_code == 204
    again = post_user(
        client,
        seller,
        user_body("jane.doe", emails=[{"value": "JANE.DOE@home.example.org", "type": "work"}]),
    )
    assert again.status_code == 201
    assert again.get_json()["id"] == first["id"]
    assert again.get_json()["userName"] == "jane.doe"
    assert [e["value"] for e in again.get_json()["emails"]] == ["JANE.DOE@home.example.org"]


def test_a_deleted_users_email_from_another_seller_is_409_without_naming_the_seller(
    client: Any, make_seller: Any, connector: Connector
) -> None:
    owner = make_seller("Initech Supplies", primary="boss@initech-mail.example.org")
    other = make_seller("Umbrella Goods", primary="boss@umbrella-mail.example.org")
    first = post_user(client, owner, user_body("gone@shared.example.net")).get_json()
    # The user signed in once: the address was really theirs, and stays reserved.
    with connector.uow() as uow:
        uow.users.record_login(owner.seller.id, first["id"], utcnow())
        uow.commit()
    assert client.delete(f"{USERS}/{first['id']}", headers=owner.headers).status_code == 204
    before = store_dump(connector)
    response = post_user(client, other, user_body("gone@shared.example.net"))
    error = assert_scim_error(response, 409, "uniqueness")
    for leak in ("Initech", owner.seller.id, first["id"]):
        assert leak.lower() not in error["detail"].lower()
    assert store_dump(connector) == before


def test_a_deactivated_user_is_found_by_filter_reactivated_by_patch_and_post_is_409(
    client: Any, make_seller: Any
) -> None:
    """What Okta does on re-assignment: look the user up, then PATCH active=true."""
    seller = make_seller()
    user = post_user(client, seller, user_body("paused@acme.example.com")).get_json()
    client.patch(
        f"{USERS}/{user['id']}",
        json=patch_body({"op": "replace", "path": "active", "value": False}),
        headers=seller.headers,
    )
    found = client.get(
        f'{USERS}?filter=userName eq "PAUSED@acme.example.com"', headers=seller.headers
    ).get_json()
    assert found["totalResults"] == 1
    assert found["Resources"][0]["id"] == user["id"]
    assert found["Resources"][0]["active"] is False

    assert_scim_error(
        post_user(client, seller, user_body("paused@acme.example.com")), 409, "uniqueness"
    )

    response = client.patch(
        f"{USERS}/{user['id']}",
        json=patch_body({"op": "replace", "path": "active", "value": True}),
        headers=seller.headers,
    )
    assert response.status_code == 200
    assert response.get_json()["active"] is True


# -- 2. Reserved addresses ---------------------------------------------------------------


def test_a_user_name_that_is_an_email_is_reserved_and_user_names_are_unique_per_seller(
    client: Any, make_seller: Any
) -> None:
    seller = make_seller()
    other = make_seller()
    post_user(
        client,
        seller,
        user_body("login@acme.example.com", emails=[{"value": "inbox@acme.example.com"}]),
    )
    # The userName address is reserved for everyone, case-insensitively...
    response = post_user(client, other, user_body("someone", "LOGIN@acme.example.com"))
    assert_scim_error(response, 409, "uniqueness")
    # ... and a userName is unique within its seller, case-insensitively...
    response = post_user(
        client,
        seller,
        user_body("Login@Acme.example.com", emails=[{"value": "fresh@acme.example.com"}]),
    )
    assert_scim_error(response, 409, "uniqueness")
    # ... while a non-address userName may exist at two sellers.
    assert post_user(client, seller, user_body("sam", "sam@acme.example.com")).status_code == 201
    assert post_user(client, other, user_body("sam", "sam@other.example.com")).status_code == 201


# -- 3. Errors ---------------------------------------------------------------------------


def test_role_in_post_is_ignored_and_changing_it_is_400_for_a_secondary(
    client: Any, make_seller: Any, connector: Connector
) -> None:
    seller = make_seller()
    response = post_user(
        client, seller, with_extension(user_body("climber@acme.example.com"), role="primary")
    )
    assert response.status_code == 201
    user = response.get_json()
    assert user[SELLER_USER]["role"] == "secondary"

    before = store_dump(connector)
    response = client.patch(
        f"{USERS}/{user['id']}",
        json=patch_body({"op": "replace", "path": f"{SELLER_USER}:role", "value": "primary"}),
        headers=seller.headers,
    )
    assert_scim_error(response, 400, "mutability")
    body = client.get(f"{USERS}/{user['id']}", headers=seller.headers).get_json()
    body[SELLER_USER]["role"] = "primary"
    response = client.put(f"{USERS}/{user['id']}", json=body, headers=seller.headers)
    assert_scim_error(response, 400, "mutability", detail_has=("change-primary",))
    assert store_dump(connector) == before


def test_a_put_that_keeps_the_role_is_accepted(client: Any, make_seller: Any) -> None:
    """Okta PUTs back the whole user it read, read-only attributes included."""
    seller = make_seller()
    body = client.get(f"{USERS}/{seller.primary.id}", headers=seller.headers).get_json()
    body["displayName"] = "Olive O."
    response = client.put(f"{USERS}/{seller.primary.id}", json=body, headers=seller.headers)
    assert response.status_code == 200
    assert response.get_json()["displayName"] == "Olive O."
    assert response.get_json()[SELLER_USER]["role"] == "primary"


def test_patch_answers_200_with_the_resource(client: Any, make_seller: Any) -> None:
    seller = make_seller()
    user = post_user(client, seller, user_body("p@acme.example.com")).get_json()
    response = client.patch(
        f"{USERS}/{user['id']}",
        json=patch_body({"op": "replace", "path": "displayName", "value": "Pat"}),
        headers=seller.headers,
    )
    assert response.status_code == 200
    assert response.get_json()["displayName"] == "Pat"
    assert response.get_json()["id"] == user["id"]
    assert response.headers["ETag"] == response.get_json()["meta"]["version"]


# -- 4. Group members ---------------------------------------------------------------------


def test_a_group_member_that_is_not_a_user_of_this_seller_is_400_invalid_value(
    client: Any, make_seller: Any, connector: Connector
) -> None:
    seller = make_seller()
    other = make_seller()
    mine = post_user(client, seller, user_body("mine@acme.example.com")).get_json()
    deleted = post_user(client, seller, user_body("left@acme.example.com")).get_json()
    client.delete(f"{USERS}/{deleted['id']}", headers=seller.headers)
    theirs = post_user(client, other, user_body("theirs@other.example.com")).get_json()
    group = client.post(GROUPS, json=group_body("Crew", [mine["id"]]), headers=seller.headers)
    group_id = group.get_json()["id"]

    before = store_dump(connector)
    for stranger in (theirs["id"], deleted["id"], "no-such-user", other.primary.id):
        response = client.post(
            GROUPS, json=group_body(f"With {stranger}", [stranger]), headers=seller.headers
        )
        assert_scim_error(response, 400, "invalidValue", detail_has=(stranger,))
        response = client.patch(
            f"{GROUPS}/{group_id}",
            json=patch_body({"op": "add", "path": "members", "value": [{"value": stranger}]}),
            headers=seller.headers,
        )
        assert_scim_error(response, 400, "invalidValue")
    assert store_dump(connector) == before


# -- 5. Identifiers of the catalogue in /Schemas -----------------------------------------


def _attribute(schema: dict[str, Any], name: str) -> dict[str, Any]:
    return next(a for a in schema["attributes"] if a["name"] == name)


def test_schemas_list_the_catalogue_ids_as_canonical_values(client: Any) -> None:
    categories = [
        c["id"] for c in yaml.safe_load((MAPPINGS / "permissions.yaml").read_text())["categories"]
    ]
    notifications = [
        c["id"] for c in yaml.safe_load((MAPPINGS / "notifications.yaml").read_text())["categories"]
    ]
    kebab = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
    assert all(kebab.match(i) for i in categories + notifications)
    # The ids issue 8 #5 names.
    assert {
        "inventory",
        "pricing",
        "orders",
        "advertising",
        "reports",
        "payments",
        "settings",
        "user-permissions",
    } <= set(categories)
    assert notifications == [
        "orders",
        "supply-chain-sources",
        "product-catalog",
        "inventory",
        "locations",
        "accounts",
        "secondary-users",
        "deals",
    ]

    response = client.get("/scim/v2/Schemas")
    assert response.status_code == 200
    schemas = {s["id"]: s for s in response.get_json()["Resources"]}
    for urn in (SELLER_USER, SELLER_GROUP):
        permissions = _attribute(schemas[urn], "permissions")
        sub = {a["name"]: a for a in permissions["subAttributes"]}
        assert sub["category"]["canonicalValues"] == categories
        assert sub["level"]["canonicalValues"] == ["none", "view", "edit", "admin"]
    user_extension = schemas[SELLER_USER]
    assert _attribute(user_extension, "notifications")["canonicalValues"] == notifications
    assert _attribute(user_extension, "role")["mutability"] == "readOnly"
    assert _attribute(user_extension, "administrator")["mutability"] == "readOnly"


# -- 6. The public URL --------------------------------------------------------------------


@pytest.fixture
def public_client(database_url: str, tmp_path: Path) -> Any:
    connector = bootstrap(
        make_settings(database_url, tmp_path, public_url="https://id.market.example/connector"),
        migrate=False,
    )
    return create_app(connector).test_client()


def test_the_public_url_is_the_base_of_every_location(public_client: Any, make_seller: Any) -> None:
    base = "https://id.market.example/connector/scim/v2"
    seller = make_seller()
    created = public_client.post(
        USERS, json=user_body("loc@acme.example.com"), headers=seller.headers
    )
    user = created.get_json()
    assert user["meta"]["location"] == f"{base}/Users/{user['id']}"
    assert created.headers["Location"] == user["meta"]["location"]
    group = public_client.post(
        GROUPS, json=group_body("Located", [user["id"]]), headers=seller.headers
    ).get_json()
    assert group["meta"]["location"] == f"{base}/Groups/{group['id']}"
    assert group["members"][0]["$ref"] == f"{base}/Users/{user['id']}"
    listed = public_client.get(USERS, headers=seller.headers).get_json()
    assert listed["schemas"] == [LIST_SCHEMA]
    assert all(r["meta"]["location"].startswith(f"{base}/Users/") for r in listed["Resources"])
    config = public_client.get("/scim/v2/ServiceProviderConfig").get_json()
    assert config["meta"]["location"] == f"{base}/ServiceProviderConfig"
