"""Entra ID's shapes (the enterprise manager without $ref, names in any case), the core
schemas described as RFC 7643 §8.7.1 gives them, PATCH removals the rules forbid, a manager
only of the same seller, and the access review's stale flag."""

from __future__ import annotations

import datetime as dt
from typing import Any

from connector.bootstrap import Connector
from connector.domain.model import utcnow
from connector.services import queries
from tests.conftest import SELLER_USER, USER_SCHEMA, user_body
from tests.http.conftest import ENTERPRISE, assert_scim_error, patch_body


def _user(client: Any, headers: dict[str, str], name: str, **extra: Any) -> dict[str, Any]:
    created = client.post("/scim/v2/Users", headers=headers, json=user_body(name, **extra))
    assert created.status_code == 201, created.get_data(as_text=True)
    return dict(created.json)


def test_entra_posts_the_manager_without_ref_in_any_case(client: Any, make_seller: Any) -> None:
    handle = make_seller()
    boss = _user(client, handle.headers, "boss@entra.example.com")
    # As Microsoft's SCIM test collection (and Entra ID) send it.
    body = user_body("report@entra.example.com")
    body["schemas"] = [USER_SCHEMA, ENTERPRISE]
    body[ENTERPRISE] = {"Department": "Sales", "Manager": {"Value": boss["id"]}}
    created = client.post("/scim/v2/Users", headers=handle.headers, json=body)
    assert created.status_code == 201, created.get_data(as_text=True)
    manager = created.json[ENTERPRISE]["manager"]
    assert manager["value"] == boss["id"]
    assert manager["$ref"].endswith(f"/Users/{boss['id']}")
    assert created.json[ENTERPRISE]["department"] == "Sales"
    # And through PATCH, by the extension's URN path.
    other = _user(client, handle.headers, "other-boss@entra.example.com")
    patched = client.patch(
        f"/scim/v2/Users/{created.json['id']}",
        headers=handle.headers,
        json=patch_body(
            {"op": "Replace", "path": f"{ENTERPRISE}:manager", "value": {"Value": other["id"]}}
        ),
    )
    assert patched.status_code == 200, patched.get_data(as_text=True)
    assert patched.json[ENTERPRISE]["manager"]["value"] == other["id"]


def test_a_manager_is_a_user_of_the_same_seller(client: Any, make_seller: Any) -> None:
    first, second = make_seller(), make_seller()
    stranger = _user(client, second.headers, "stranger@b.example.com")
    for manager in (stranger["id"], "no-such-user"):
        body = user_body(f"m{manager[:6]}@a.example.com")
        body["schemas"] = [USER_SCHEMA, ENTERPRISE]
        body[ENTERPRISE] = {"manager": {"value": manager}}
        refused = client.post("/scim/v2/Users", headers=first.headers, json=body)
        assert_scim_error(refused, 400, "invalidValue", detail_has=("manager",))
    mine = _user(client, first.headers, "me@a.example.com")
    refused = client.patch(
        f"/scim/v2/Users/{mine['id']}",
        headers=first.headers,
        json=patch_body(
            {"op": "replace", "path": f"{ENTERPRISE}:manager", "value": {"value": stranger["id"]}}
        ),
    )
    assert_scim_error(refused, 400, "invalidValue", detail_has=("manager",))
    # The other seller's user id is never stored nor returned.
    assert ENTERPRISE not in client.get(f"/scim/v2/Users/{mine['id']}", headers=first.headers).json


def test_the_core_schemas_are_described_as_rfc_7643_gives_them(client: Any) -> None:
    schemas = {s["id"]: s for s in client.get("/scim/v2/Schemas").json["Resources"]}
    assert schemas[USER_SCHEMA]["description"] == "User Account"
    assert schemas["urn:ietf:params:scim:schemas:core:2.0:Group"]["description"] == "Group"
    assert schemas[ENTERPRISE]["description"] == "Enterprise User"
    user_name = next(a for a in schemas[USER_SCHEMA]["attributes"] if a["name"] == "userName")
    assert user_name["description"].startswith("Unique identifier for the User")
    assert "\n" not in user_name["description"]


def test_removing_active_or_the_seller_extension_is_refused(client: Any, make_seller: Any) -> None:
    handle = make_seller()
    user = _user(
        client,
        handle.headers,
        "keep@remove.example.com",
        **{SELLER_USER: {"permissions": [{"category": "orders", "level": "edit"}]}},
    )
    for path in ("active", SELLER_USER):
        refused = client.patch(
            f"/scim/v2/Users/{user['id']}",
            headers=handle.headers,
            json=patch_body({"op": "remove", "path": path}),
        )
        assert_scim_error(refused, 400, "mutability", detail_has=("cannot be removed",))
    after = client.get(f"/scim/v2/Users/{user['id']}", headers=handle.headers).json
    assert after["active"] is True
    assert after[SELLER_USER]["permissions"] == [{"category": "orders", "level": "edit"}]
    assert after["meta"]["version"] == user["meta"]["version"]
    # Removing the permissions themselves is a change like any other.
    removed = client.patch(
        f"/scim/v2/Users/{user['id']}",
        headers=handle.headers,
        json=patch_body({"op": "remove", "path": f"{SELLER_USER}:permissions"}),
    )
    assert removed.status_code == 200
    assert "permissions" not in removed.json[SELLER_USER]


def test_a_user_without_change_or_login_for_90_days_is_stale(
    client: Any, make_seller: Any, connector: Connector
) -> None:
    handle = make_seller()
    quiet = _user(client, handle.headers, "quiet@stale.example.com")
    busy = _user(client, handle.headers, "busy@stale.example.com")
    now = utcnow()

    def stale_at(moment: dt.datetime) -> dict[str, bool]:
        lines = queries.access_review(connector.uow(), connector.catalogue, handle.seller, moment)
        return {line.user.id: line.stale for line in lines}

    assert stale_at(now) == {handle.primary.id: False, quiet["id"]: False, busy["id"]: False}
    later = now + dt.timedelta(days=91)
    # A login 10 days before "later" keeps one of them fresh; the other is stale.
    with connector.uow() as uow:
        uow.users.record_login(handle.seller.id, busy["id"], later - dt.timedelta(days=10))
        uow.commit()
    review = stale_at(later)
    assert review[quiet["id"]] is True
    assert review[busy["id"]] is False
    assert review[handle.primary.id] is True
