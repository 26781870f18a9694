"""Tenant isolation, generated: for every endpoint and method, seller A's token is used
against seller B's ids, filters and group members. Nothing of B leaks and nothing changes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.attack.conftest import dump_store
from tests.conftest import BULK_SCHEMA, GROUP_SCHEMA, PATCH_SCHEMA, user_body

PATCH_ACTIVE = {
    "schemas": [PATCH_SCHEMA],
    "Operations": [{"op": "replace", "path": "active", "value": False}],
}


@pytest.fixture
def tenants(client: Any, make_seller: Any) -> dict[str, Any]:
    a = make_seller("Alpha Goods")
    b = make_seller("Beta Goods")
    b_user = client.post(
        "/scim/v2/Users", headers=b.headers, json=user_body("bob@beta.example.com")
    )
    assert b_user.status_code == 201
    b_group = client.post(
        "/scim/v2/Groups",
        headers=b.headers,
        json={
            "schemas": [GROUP_SCHEMA],
            "displayName": "Beta team",
            "members": [{"value": b_user.json["id"]}],
        },
    )
    assert b_group.status_code == 201
    return {"a": a, "b": b, "user": b_user.json, "group": b_group.json}


def _requests(t: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """Every endpoint and method, aimed at seller B's resources."""
    user, group = t["user"]["id"], t["group"]["id"]
    put_user = user_body("bob@beta.example.com", id=user)
    put_group = {"schemas": [GROUP_SCHEMA], "displayName": "Beta team", "members": []}
    return [
        ("GET", f"/scim/v2/Users/{user}", None),
        ("PUT", f"/scim/v2/Users/{user}", put_user),
        ("PATCH", f"/scim/v2/Users/{user}", PATCH_ACTIVE),
        ("DELETE", f"/scim/v2/Users/{user}", None),
        ("GET", f"/scim/v2/Groups/{group}", None),
        ("PUT", f"/scim/v2/Groups/{group}", put_group),
        (
            "PATCH",
            f"/scim/v2/Groups/{group}",
            {"schemas": [PATCH_SCHEMA], "Operations": [{"op": "remove", "path": "members"}]},
        ),
        ("DELETE", f"/scim/v2/Groups/{group}", None),
    ]


@pytest.mark.parametrize("index", range(8))
def test_direct_access_to_another_sellers_resources_is_not_found(
    client: Any, tenants: dict[str, Any], connector: Any, index: int
) -> None:
    method, path, body = _requests(tenants)[index]
    before = dump_store(connector)
    response = client.open(
        path, method=method, headers=tenants["a"].headers, data=json.dumps(body) if body else None
    )
    assert response.status_code == 404, response.json
    assert (
        tenants["user"]["id"] not in response.get_data(as_text=True)
        or "not found" in response.json["detail"]
    )
    assert dump_store(connector) == before


@pytest.mark.parametrize(
    "query",
    [
        'id eq "{user}"',
        'userName eq "bob@beta.example.com"',
        'emails.value eq "bob@beta.example.com"',
        'emails co "beta"',
        'groups.value eq "{group}"',
        "userName pr",
    ],
)
def test_filters_never_reach_another_seller(
    client: Any, tenants: dict[str, Any], query: str
) -> None:
    text = query.format(user=tenants["user"]["id"], group=tenants["group"]["id"])
    # The positive control: the same filter, with B's own token, does find B's user: a leak
    # would show up in A's answers below, not be hidden by a filter that matches nothing.
    control = client.get(
        "/scim/v2/Users", headers=tenants["b"].headers, query_string={"filter": text}
    )
    assert control.status_code == 200, control.get_data(as_text=True)
    assert tenants["user"]["id"] in control.get_data(as_text=True)
    for endpoint in ("/scim/v2/Users", "/scim/v2/Groups"):
        found = client.get(endpoint, headers=tenants["a"].headers, query_string={"filter": text})
        assert found.status_code in (200, 400)
        body = found.get_data(as_text=True)
        assert tenants["user"]["id"] not in body
        assert tenants["group"]["id"] not in body
        assert "beta.example.com" not in body
    searched = client.post(
        "/scim/v2/.search",
        headers=tenants["a"].headers,
        json={"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "filter": text},
    )
    assert tenants["user"]["id"] not in searched.get_data(as_text=True)


def test_another_sellers_user_cannot_join_a_group(
    client: Any, tenants: dict[str, Any], connector: Any
) -> None:
    a = tenants["a"]
    own_group = client.get("/scim/v2/Groups", headers=a.headers).json["Resources"][0]
    before = dump_store(connector)
    foreign = [{"value": tenants["user"]["id"]}]
    created = client.post(
        "/scim/v2/Groups",
        headers=a.headers,
        json={"schemas": [GROUP_SCHEMA], "displayName": "Poachers", "members": foreign},
    )
    patched = client.patch(
        f"/scim/v2/Groups/{own_group['id']}",
        headers=a.headers,
        json={
            "schemas": [PATCH_SCHEMA],
            "Operations": [{"op": "add", "path": "members", "value": foreign}],
        },
    )
    for response in (created, patched):
        assert response.status_code == 400
        assert response.json["scimType"] == "invalidValue"
    assert dump_store(connector) == before


def test_bulk_cannot_touch_another_seller(
    client: Any, tenants: dict[str, Any], connector: Any
) -> None:
    before = dump_store(connector)
    operations = [
        {"method": method, "path": path, **({"data": body} if body else {})}
        for method, path, body in _requests(tenants)
        if method != "GET"
    ]
    for operation in operations:
        operation["path"] = operation["path"].removeprefix("/scim/v2")
    response = client.post(
        "/scim/v2/Bulk",
        headers=tenants["a"].headers,
        json={"schemas": [BULK_SCHEMA], "Operations": operations},
    )
    assert response.status_code == 200
    assert [int(o["status"]) for o in response.json["Operations"]] == [404] * len(operations)
    assert dump_store(connector) == before


def test_root_search_sees_only_own_resources(client: Any, tenants: dict[str, Any]) -> None:
    everything = client.get("/scim/v2/", headers=tenants["a"].headers, query_string={"count": 1000})
    if everything.status_code == 405:
        everything = client.post(
            "/scim/v2/.search",
            headers=tenants["a"].headers,
            json={
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
                "count": 1000,
            },
        )
    assert everything.status_code == 200
    ids = {r["id"] for r in everything.json.get("Resources", [])}
    assert ids and tenants["user"]["id"] not in ids and tenants["group"]["id"] not in ids
