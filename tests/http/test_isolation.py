"""Tenant isolation at the HTTP level: seller A's token can neither see nor touch seller B's
users and groups - by id, by filter, by group membership or through Bulk."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest

from connector.bootstrap import Connector
from tests.conftest import SELLER_USER, SellerHandle, user_body
from tests.http.conftest import assert_scim_error, bulk_body, group_body, patch_body, store_dump

USERS = "/scim/v2/Users"
GROUPS = "/scim/v2/Groups"


@dataclass
class Tenants:
    """Seller A (the caller) and seller B (the target), each with a user in a group."""

    a: SellerHandle
    b: SellerHandle
    a_user: dict[str, Any]
    b_user: dict[str, Any]
    b_group: dict[str, Any]


@pytest.fixture
def tenants(client: Any, make_seller: Any) -> Tenants:
    a = make_seller("Alpha Traders", primary="owner@alpha.example.com")
    b = make_seller("Beta Traders", primary="owner@beta.example.com")
    a_user = client.post(
        USERS, json=user_body("ann@alpha.example.com"), headers=a.headers
    ).get_json()
    b_user = client.post(
        USERS,
        json=user_body("bea@beta.example.com", externalId="beta-ext-1", displayName="Bea Beta"),
        headers=b.headers,
    ).get_json()
    b_group = client.post(
        GROUPS,
        json=group_body("Beta crew", [b_user["id"]], externalId="beta-group"),
        headers=b.headers,
    ).get_json()
    return Tenants(a, b, a_user, b_user, b_group)


def test_other_sellers_resources_are_404_on_every_method(
    client: Any, tenants: Tenants, connector: Connector
) -> None:
    a, b = tenants.a, tenants.b
    before = store_dump(connector)
    targets = [
        (f"{USERS}/{tenants.b_user['id']}", user_body("bea@beta.example.com")),
        (f"{USERS}/{b.primary.id}", user_body(b.primary.user_name)),
        (f"{GROUPS}/{tenants.b_group['id']}", group_body("Beta crew")),
    ]
    for path, replacement in targets:
        assert_scim_error(client.get(path, headers=a.headers), 404)
        assert_scim_error(client.put(path, json=replacement, headers=a.headers), 404)
        assert_scim_error(
            client.patch(
                path,
                json=patch_body({"op": "replace", "path": "externalId", "value": "stolen"}),
                headers=a.headers,
            ),
            404,
        )
        assert_scim_error(client.delete(path, headers=a.headers), 404)
        # Conditional requests learn nothing either.
        assert_scim_error(client.delete(path, headers={**a.headers, "If-Match": 'W/"1"'}), 404)
    assert store_dump(connector) == before
    # The same 404 as for an id that exists nowhere.
    unknown = client.get(f"{USERS}/0123456789abcdef0123456789abcdef", headers=a.headers)
    known = client.get(f"{USERS}/{tenants.b_user['id']}", headers=a.headers)
    assert known.get_json()["detail"].replace(tenants.b_user["id"], "ID") == unknown.get_json()[
        "detail"
    ].replace("0123456789abcdef0123456789abcdef", "ID")


@pytest.mark.parametrize(
    "expression",
    [
        'id eq "{b_user_id}"',
        'emails.value eq "bea@beta.example.com"',
        'emails[value ew "beta.example.com"]',
        'userName eq "bea@beta.example.com"',
        'userName co "beta"',
        'externalId eq "beta-ext-1"',
        'displayName eq "Bea Beta" or id eq "{b_primary_id}"',
        'not (userName eq "nobody")',
        'groups.value eq "{b_group_id}"',
    ],
)
def test_filters_never_reach_another_sellers_users(
    client: Any, tenants: Tenants, expression: str
) -> None:
    expression = expression.format(
        b_user_id=tenants.b_user["id"],
        b_primary_id=tenants.b.primary.id,
        b_group_id=tenants.b_group["id"],
    )
    b_ids = {tenants.b_user["id"], tenants.b.primary.id, tenants.b_group["id"]}
    found: set[str] = set()
    for path in (
        f"{USERS}?count=1000&filter={quote(expression)}",
        f"/scim/v2/?count=1000&filter={quote(expression)}",
    ):
        response = client.get(path, headers=tenants.a.headers)
        assert response.status_code == 200, response.get_data(as_text=True)
        found |= {r["id"] for r in response.get_json()["Resources"]}
    response = client.post(
        f"{USERS}/.search",
        json={
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
            "filter": expression,
        },
        headers=tenants.a.headers,
    )
    assert response.status_code == 200
    found |= {r["id"] for r in response.get_json()["Resources"]}
    assert not found & b_ids
    # The filter itself works: B finds its own user with it (a test that cannot pass by accident).
    if "nobody" not in expression and "groups.value" not in expression:
        mine = client.get(
            f"{USERS}?filter={quote(expression)}", headers=tenants.b.headers
        ).get_json()
        assert {r["id"] for r in mine["Resources"]} & b_ids


def test_group_filters_and_listings_stay_within_the_seller(client: Any, tenants: Tenants) -> None:
    for query in (
        f'members.value eq "{tenants.b_user["id"]}"',
        'displayName eq "Beta crew"',
        'externalId eq "beta-group"',
    ):
        body = client.get(f"{GROUPS}?filter={quote(query)}", headers=tenants.a.headers).get_json()
        assert body["totalResults"] == 0
        mine = client.get(f"{GROUPS}?filter={quote(query)}", headers=tenants.b.headers).get_json()
        assert mine["totalResults"] == 1
    listed = client.get("/scim/v2/?count=1000", headers=tenants.a.headers).get_json()
    b_ids = {tenants.b_user["id"], tenants.b.primary.id, tenants.b_group["id"]}
    assert not {r["id"] for r in listed["Resources"]} & b_ids
    assert tenants.a_user["id"] in {r["id"] for r in listed["Resources"]}


def test_a_group_cannot_take_another_sellers_user(
    client: Any, tenants: Tenants, connector: Connector
) -> None:
    a, stranger = tenants.a, tenants.b_user["id"]
    group = client.post(
        GROUPS, json=group_body("Alpha crew", [tenants.a_user["id"]]), headers=a.headers
    ).get_json()
    path = f"{GROUPS}/{group['id']}"
    before = store_dump(connector)
    assert_scim_error(
        client.post(GROUPS, json=group_body("Poached", [stranger]), headers=a.headers),
        400,
        "invalidValue",
    )
    assert_scim_error(
        client.put(
            path, json=group_body("Alpha crew", [tenants.a_user["id"], stranger]), headers=a.headers
        ),
        400,
        "invalidValue",
    )
    assert_scim_error(
        client.patch(
            path,
            json=patch_body({"op": "add", "path": "members", "value": [{"value": stranger}]}),
            headers=a.headers,
        ),
        400,
        "invalidValue",
    )
    assert_scim_error(
        client.patch(
            path,
            json=patch_body(
                {"op": "replace", "path": "members", "value": [{"value": tenants.b.primary.id}]}
            ),
            headers=a.headers,
        ),
        400,
        "invalidValue",
    )
    assert store_dump(connector) == before
    # B's user is still in B's group only.
    bea = client.get(f"{USERS}/{stranger}", headers=tenants.b.headers).get_json()
    assert [g["value"] for g in bea["groups"]] == [tenants.b_group["id"]]


def test_bulk_cannot_reach_another_seller(
    client: Any, tenants: Tenants, connector: Connector
) -> None:
    b_user, b_group = tenants.b_user["id"], tenants.b_group["id"]
    before = store_dump(connector)
    response = client.post(
        "/scim/v2/Bulk",
        json=bulk_body(
            {"method": "DELETE", "path": f"/Users/{b_user}"},
            {
                "method": "PUT",
                "path": f"/Users/{b_user}",
                "data": user_body("bea@beta.example.com", active=False),
            },
            {
                "method": "PATCH",
                "path": f"/Users/{b_user}",
                "data": patch_body({"op": "replace", "path": "active", "value": False}),
            },
            {
                "method": "PATCH",
                "path": f"/Groups/{b_group}",
                "data": patch_body({"op": "remove", "path": "members"}),
            },
            {"method": "DELETE", "path": f"/Groups/{b_group}"},
            {
                "method": "POST",
                "path": "/Groups",
                "bulkId": "g",
                "data": group_body("Bulk poach", [b_user]),
            },
            {
                "method": "PATCH",
                "path": f"/Users/{tenants.b.primary.id}",
                "data": patch_body(
                    {"op": "replace", "path": f"{SELLER_USER}:notifications", "value": []}
                ),
            },
        ),
        headers=tenants.a.headers,
    )
    assert response.status_code == 200
    statuses = [int(o["status"]) for o in response.get_json()["Operations"]]
    assert statuses == [404, 404, 404, 404, 404, 400, 404]
    assert store_dump(connector) == before
