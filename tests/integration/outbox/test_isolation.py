"""One seller's SCIM token cannot change another seller's Keycloak organization: every attempt
is refused (404 or 400), nothing reaches the outbox for the other seller, and its users,
groups and roles in Keycloak stay exactly as they were."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from connector.adapters.sql.outbox_queue import SqlOutboxQueue
from connector.bootstrap import Connector
from connector.services.outbox import OutboxWorker
from tests.conftest import (
    BULK_SCHEMA,
    GROUP_SCHEMA,
    PATCH_SCHEMA,
    SellerHandle,
    user_body,
)
from tests.integration.outbox.helpers import (
    kc_group,
    kc_group_paths,
    kc_org_member_ids,
    kc_portal_roles,
    kc_users_of_seller,
    scim_json,
)
from tests.support.keycloak import KeycloakServer

pytestmark = pytest.mark.keycloak


def patch(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH_SCHEMA], "Operations": list(operations)}


def group(name: str, members: list[str]) -> dict[str, Any]:
    return {
        "schemas": [GROUP_SCHEMA],
        "displayName": name,
        "members": [{"value": m} for m in members],
    }


def keycloak_state(server: KeycloakServer, seller_id: str, set_ids: list[str]) -> dict[str, Any]:
    """Everything of one seller in Keycloak that a foreign token could try to change."""
    users = {}
    for rep in kc_users_of_seller(server, seller_id):
        users[rep["id"]] = {
            "username": rep["username"],
            "email": rep.get("email"),
            "enabled": rep["enabled"],
            "firstName": rep.get("firstName"),
            "attributes": {k: v for k, v in rep["attributes"].items() if k.startswith("seller")},
            "groups": kc_group_paths(server, rep["id"]),
            "roles": kc_portal_roles(server, f"users/{rep['id']}"),
        }
    groups = {
        set_id: kc_portal_roles(server, f"groups/{kc_group(server, seller_id, set_id)['id']}")
        for set_id in set_ids
    }
    return {"users": users, "members": kc_org_member_ids(server, seller_id), "groups": groups}


def test_a_token_cannot_touch_another_sellers_keycloak_organization(
    keycloak_server: KeycloakServer,
    connector: Connector,
    client: Any,
    make_seller: Callable[..., SellerHandle],
    make_worker: Callable[..., OutboxWorker],
) -> None:
    a, b = make_seller(), make_seller()

    def add_user(handle: SellerHandle) -> dict[str, Any]:
        body = user_body(f"i-{uuid.uuid4().hex[:8]}@isolation.example.com")
        return scim_json(client.post("/scim/v2/Users", json=body, headers=handle.headers), 201)

    a_user, b_user, b_other = add_user(a), add_user(b), add_user(b)
    a_set = scim_json(
        client.post("/scim/v2/Groups", json=group("A team", [a_user["id"]]), headers=a.headers),
        201,
    )
    b_set = scim_json(
        client.post("/scim/v2/Groups", json=group("B team", [b_user["id"]]), headers=b.headers),
        201,
    )
    worker = make_worker()
    worker.run_once()
    b_ids = [b_user["id"], b_other["id"], b.primary.id]
    before = keycloak_state(keycloak_server, b.seller.id, [b_set["id"]])
    assert len(before["users"]) == 3 and before["groups"][b_set["id"]] == set()
    queue = SqlOutboxQueue(connector.engine)
    outbox_before = [e.id for e in queue.entries(limit=10_000) if e.seller_id == b.seller.id]

    # A's token, aimed at B's users and permission set, every way SCIM allows.
    h = a.headers
    for target in b_ids:
        assert client.get(f"/scim/v2/Users/{target}", headers=h).status_code == 404
        off = patch({"op": "replace", "path": "active", "value": False})
        assert client.patch(f"/scim/v2/Users/{target}", json=off, headers=h).status_code == 404
        assert (
            client.put(
                f"/scim/v2/Users/{target}", json=user_body("x@isolation.example.com"), headers=h
            ).status_code
            == 404
        )
        assert client.delete(f"/scim/v2/Users/{target}", headers=h).status_code == 404
    listed = client.get(f'/scim/v2/Users?filter=id eq "{b_user["id"]}"', headers=h).get_json()
    assert listed["totalResults"] == 0
    # B's users as members of A's permission sets: refused as values A does not know.
    assert (
        client.post("/scim/v2/Groups", json=group("Poach", [b_user["id"]]), headers=h).status_code
        == 400
    )
    add = patch({"op": "add", "path": "members", "value": [{"value": b_other["id"]}]})
    assert client.patch(f"/scim/v2/Groups/{a_set['id']}", json=add, headers=h).status_code == 400
    # B's permission set: not found for A.
    for method in ("get", "delete"):
        assert (
            getattr(client, method)(f"/scim/v2/Groups/{b_set['id']}", headers=h).status_code == 404
        )
    empty = patch({"op": "replace", "path": "members", "value": []})
    assert client.patch(f"/scim/v2/Groups/{b_set['id']}", json=empty, headers=h).status_code == 404
    # A user with a B user's email: the address is taken (and nothing says by whom).
    taken = client.post("/scim/v2/Users", json=user_body(b_user["emails"][0]["value"]), headers=h)
    assert taken.status_code == 409
    # The same through Bulk.
    bulk = client.post(
        "/scim/v2/Bulk",
        json={
            "schemas": [BULK_SCHEMA],
            "Operations": [
                {"method": "DELETE", "path": f"/Users/{b_other['id']}"},
                {
                    "method": "PATCH",
                    "path": f"/Users/{b_user['id']}",
                    "data": patch({"op": "replace", "path": "active", "value": False}),
                },
                {
                    "method": "PATCH",
                    "path": f"/Groups/{b_set['id']}",
                    "data": patch(
                        {"op": "add", "path": "members", "value": [{"value": b_other["id"]}]}
                    ),
                },
                {
                    "method": "POST",
                    "path": "/Groups",
                    "bulkId": "g",
                    "data": group("Bulk poach", b_ids),
                },
                {"method": "DELETE", "path": f"/Groups/{b_set['id']}"},
            ],
        },
        headers=h,
    )
    assert bulk.status_code == 200, bulk.get_data(as_text=True)
    assert [int(o["status"]) for o in bulk.get_json()["Operations"]] == [404, 404, 404, 400, 404]

    # Nothing for B reached the outbox; whatever A's attempts queued is applied...
    outbox_after = [e.id for e in queue.entries(limit=10_000) if e.seller_id == b.seller.id]
    assert outbox_after == outbox_before
    report = worker.drain()
    assert report.poisoned == report.retried == 0, report.errors
    # ...and B's organization in Keycloak is exactly as it was.
    assert keycloak_state(keycloak_server, b.seller.id, [b_set["id"]]) == before
