"""The rules sellers live by (issue 3, point 5), each proven through the SCIM API.

Every test runs on SQLite and on PostgreSQL (the ``database_url`` fixture).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from connector.domain.drafts import Actor
from connector.domain.model import Plan
from connector.services import sellers as seller_cases
from tests.conftest import SELLER_GROUP, SELLER_USER, SellerHandle, user_body
from tests.http.conftest import (
    assert_scim_error,
    audit,
    bulk_body,
    group_body,
    patch_body,
    review,
    store_dump,
)

PERMISSIONS = Path(__file__).resolve().parents[2] / "mappings" / "permissions.yaml"
USERS = "/scim/v2/Users"
GROUPS = "/scim/v2/Groups"
OPERATOR_FLOW = "change-primary"


def create_user(client: Any, seller: SellerHandle, user_name: str, **extra: Any) -> dict[str, Any]:
    response = client.post(USERS, json=user_body(user_name, **extra), headers=seller.headers)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


def get_user(client: Any, seller: SellerHandle, user_id: str) -> dict[str, Any]:
    response = client.get(f"{USERS}/{user_id}", headers=seller.headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def all_users(client: Any, seller: SellerHandle) -> list[dict[str, Any]]:
    response = client.get(f"{USERS}?count=1000", headers=seller.headers)
    assert response.status_code == 200
    return response.get_json()["Resources"]


# -- Exactly one primary ---------------------------------------------------------------


def test_a_seller_has_exactly_one_primary_whatever_clients_send(
    client: Any, make_seller: Any
) -> None:
    """The primary is the registration email; clients cannot add a second one."""
    seller = make_seller()
    create_user(client, seller, "ann@acme.example.com")
    # A client that asks for the primary role on creation gets a secondary user.
    create_user(
        client,
        seller,
        "bob@acme.example.com",
        schemas=["urn:ietf:params:scim:schemas:core:2.0:User", SELLER_USER],
        **{SELLER_USER: {"role": "primary"}},
    )
    roles = {u["userName"]: u[SELLER_USER]["role"] for u in all_users(client, seller)}
    assert roles == {
        seller.primary.user_name: "primary",
        "ann@acme.example.com": "secondary",
        "bob@acme.example.com": "secondary",
    }


# -- The primary cannot be deactivated, deleted or demoted -----------------------------


@pytest.mark.parametrize(
    "operation",
    [
        {"op": "replace", "path": "active", "value": False},
        {"op": "Replace", "path": "active", "value": "False"},  # Entra ID
        {"op": "replace", "value": {"active": False}},  # path-less
    ],
    ids=["rfc", "entra-string-boolean", "path-less"],
)
def test_primary_cannot_be_deactivated_by_patch(
    client: Any, make_seller: Any, connector: Any, operation: dict[str, Any]
) -> None:
    seller = make_seller()
    before = store_dump(connector)
    response = client.patch(
        f"{USERS}/{seller.primary.id}", json=patch_body(operation), headers=seller.headers
    )
    assert_scim_error(response, 403, detail_has=("primary", OPERATOR_FLOW))
    assert store_dump(connector) == before
    assert get_user(client, seller, seller.primary.id)["active"] is True


def test_primary_cannot_be_deactivated_by_put(client: Any, make_seller: Any) -> None:
    seller = make_seller()
    body = get_user(client, seller, seller.primary.id)
    body["active"] = False
    response = client.put(f"{USERS}/{seller.primary.id}", json=body, headers=seller.headers)
    assert_scim_error(response, 403, detail_has=("primary", OPERATOR_FLOW))
    assert get_user(client, seller, seller.primary.id)["active"] is True


def test_primary_cannot_be_deleted(client: Any, make_seller: Any, connector: Any) -> None:
    seller = make_seller()
    before = store_dump(connector)
    response = client.delete(f"{USERS}/{seller.primary.id}", headers=seller.headers)
    assert_scim_error(response, 403, detail_has=("primary", "deleted", OPERATOR_FLOW))
    assert store_dump(connector) == before
    assert get_user(client, seller, seller.primary.id)["active"] is True


def test_primary_cannot_be_demoted_by_patch_or_put(client: Any, make_seller: Any) -> None:
    seller = make_seller()
    path = f"{USERS}/{seller.primary.id}"
    response = client.patch(
        path,
        json=patch_body({"op": "replace", "path": f"{SELLER_USER}:role", "value": "secondary"}),
        headers=seller.headers,
    )
    assert_scim_error(response, 403, detail_has=("primary", OPERATOR_FLOW))

    body = get_user(client, seller, seller.primary.id)
    body[SELLER_USER]["role"] = "secondary"
    response = client.put(path, json=body, headers=seller.headers)
    assert_scim_error(response, 403, detail_has=("primary", OPERATOR_FLOW))
    assert get_user(client, seller, seller.primary.id)[SELLER_USER]["role"] == "primary"


def test_primary_cannot_be_deactivated_deleted_or_demoted_in_bulk(
    client: Any, make_seller: Any, connector: Any
) -> None:
    seller = make_seller()
    path = f"/Users/{seller.primary.id}"
    demoted = get_user(client, seller, seller.primary.id)
    demoted.pop("meta")
    demoted[SELLER_USER]["role"] = "secondary"
    before = store_dump(connector)
    response = client.post(
        "/scim/v2/Bulk",
        json=bulk_body(
            {
                "method": "PATCH",
                "path": path,
                "data": patch_body({"op": "replace", "path": "active", "value": False}),
            },
            {
                "method": "PATCH",
                "path": path,
                "data": patch_body(
                    {"op": "replace", "path": f"{SELLER_USER}:role", "value": "secondary"}
                ),
            },
            {"method": "PUT", "path": path, "data": demoted},
            {"method": "DELETE", "path": path},
        ),
        headers=seller.headers,
    )
    assert response.status_code == 200
    outcomes = response.get_json()["Operations"]
    assert [int(o["status"]) for o in outcomes] == [403, 403, 403, 403]
    assert all(OPERATOR_FLOW in o["response"]["detail"] for o in outcomes)
    assert store_dump(connector) == before


# -- Brand-new emails -------------------------------------------------------------------


def _other_sellers_address(kind: str, client: Any, other: SellerHandle) -> str:
    """An address that the other seller used: its primary's, or a user's in some state."""
    if kind == "primary":
        return other.primary.user_name
    address = f"taken-{kind}@mail.example.org"
    user = create_user(client, other, address)
    if kind == "deactivated":
        response = client.patch(
            f"{USERS}/{user['id']}",
            json=patch_body({"op": "replace", "path": "active", "value": False}),
            headers=other.headers,
        )
        assert response.status_code == 200
    elif kind == "deleted":
        # Signed in once, so the address was really theirs (see the squatting rule).
        _signed_in(other, user["id"])
        assert client.delete(f"{USERS}/{user['id']}", headers=other.headers).status_code == 204
    return address


def _signed_in(handle: SellerHandle, user_id: str) -> None:
    """The user logged in once (what the console poll or the webhook records)."""
    from connector.domain.model import utcnow

    connector = handle.connector
    with connector.uow() as uow:
        uow.users.record_login(handle.seller.id, user_id, utcnow())
        uow.commit()


@pytest.mark.parametrize("kind", ["active", "deactivated", "deleted", "primary"])
def test_an_email_used_by_another_seller_is_409_uniqueness_without_naming_it(
    client: Any, make_seller: Any, connector: Any, kind: str
) -> None:
    """Never used by any user, active or deactivated or deleted, of any seller; case-insensitive."""
    other = make_seller("Globex Holdings", primary="boss@mail.example.org")
    seller = make_seller("Acme Tools")
    taken = _other_sellers_address(kind, client, other)
    before = store_dump(connector)
    # As the userName (an address is reserved either way), and as a secondary email.
    for body in (
        user_body(taken.upper()),
        user_body(
            "new.person",
            emails=[
                {"value": "fresh@acme.example.com", "primary": True},
                {"value": taken.swapcase(), "type": "home"},
            ],
        ),
    ):
        response = client.post(USERS, json=body, headers=seller.headers)
        error = assert_scim_error(response, 409, "uniqueness")
        for leak in ("Globex", other.seller.id, other.seller.name):
            assert leak.lower() not in error["detail"].lower()
    assert store_dump(connector) == before


def test_an_email_used_inside_the_seller_is_taken_too_also_by_patch(
    client: Any, make_seller: Any
) -> None:
    seller = make_seller()
    first = create_user(client, seller, "ann@acme.example.com")
    second = create_user(client, seller, "bob@acme.example.com")
    response = client.post(
        USERS, json=user_body("ann2", "ANN@acme.example.com"), headers=seller.headers
    )
    assert_scim_error(response, 409, "uniqueness")
    response = client.patch(
        f"{USERS}/{second['id']}",
        json=patch_body(
            {"op": "add", "path": "emails", "value": [{"value": "Ann@Acme.example.com"}]}
        ),
        headers=seller.headers,
    )
    assert_scim_error(response, 409, "uniqueness")
    assert [e["value"] for e in get_user(client, seller, second["id"])["emails"]] == [
        "bob@acme.example.com"
    ]
    assert get_user(client, seller, first["id"])["active"] is True


# -- DELETE deactivates, hides, keeps ---------------------------------------------------


def test_delete_deactivates_hides_keeps_and_reserves_the_email(
    client: Any, make_seller: Any, connector: Any, run_cli: Callable[..., Any]
) -> None:
    seller = make_seller()
    other = make_seller()
    user = create_user(client, seller, "leaver@acme.example.com")
    group = client.post(GROUPS, json=group_body("Pickers", [user["id"]]), headers=seller.headers)
    assert group.status_code == 201
    _signed_in(seller, user["id"])  # it was theirs: its address stays reserved

    response = client.delete(f"{USERS}/{user['id']}", headers=seller.headers)
    assert response.status_code == 204

    # Hidden: 404 on every operation, absent from lists and filters (RFC 7644 §3.6).
    path = f"{USERS}/{user['id']}"
    assert_scim_error(client.get(path, headers=seller.headers), 404)
    assert_scim_error(client.delete(path, headers=seller.headers), 404)
    assert_scim_error(
        client.patch(
            path,
            json=patch_body({"op": "replace", "path": "active", "value": True}),
            headers=seller.headers,
        ),
        404,
    )
    assert_scim_error(
        client.put(path, json=user_body("leaver@acme.example.com"), headers=seller.headers), 404
    )
    assert user["id"] not in {u["id"] for u in all_users(client, seller)}
    found = client.get(
        f'{USERS}?filter=userName eq "leaver@acme.example.com"', headers=seller.headers
    ).get_json()
    assert found["totalResults"] == 0
    members = client.get(f"{GROUPS}/{group.get_json()['id']}", headers=seller.headers).get_json()
    assert not members.get("members")

    # Kept, deactivated, with its history.
    with connector.uow() as uow:
        kept = uow.users.get(seller.seller.id, user["id"], include_deleted=True)
    assert kept is not None and kept.deleted and not kept.active
    actions = [
        e["action"] for e in audit(run_cli, seller.seller.id) if e["target"] == f"user:{user['id']}"
    ]
    assert actions == ["user.created", "user.deleted"]

    # Its email stays reserved, for any other seller.
    response = client.post(USERS, json=user_body("LEAVER@acme.example.com"), headers=other.headers)
    assert_scim_error(response, 409, "uniqueness")


def test_active_false_deactivates_and_active_true_reactivates(
    client: Any, make_seller: Any, run_cli: Callable[..., Any]
) -> None:
    seller = make_seller()
    user = create_user(client, seller, "temp@acme.example.com")
    path = f"{USERS}/{user['id']}"

    response = client.patch(
        path,
        json=patch_body({"op": "replace", "path": "active", "value": False}),
        headers=seller.headers,
    )
    assert response.status_code == 200
    assert response.get_json()["active"] is False
    # Deactivated is not deleted: still visible, still found.
    assert get_user(client, seller, user["id"])["active"] is False

    response = client.patch(
        path,
        json=patch_body({"op": "replace", "path": "active", "value": True}),
        headers=seller.headers,
    )
    assert response.status_code == 200
    assert response.get_json()["active"] is True
    actions = [
        e["action"] for e in audit(run_cli, seller.seller.id) if e["target"] == f"user:{user['id']}"
    ]
    assert actions == ["user.created", "user.deactivated", "user.reactivated"]


# -- Plans -------------------------------------------------------------------------------


def test_individual_plan_cannot_add_secondary_users_but_may_hold_groups(
    client: Any, make_seller: Any, connector: Any
) -> None:
    seller = make_seller(plan=Plan.individual)
    before = store_dump(connector)
    response = client.post(USERS, json=user_body("x@solo.example.com"), headers=seller.headers)
    assert_scim_error(response, 403, detail_has=("individual", "professional"))
    response = client.post(
        "/scim/v2/Bulk",
        json=bulk_body(
            {
                "method": "POST",
                "path": "/Users",
                "bulkId": "u",
                "data": user_body("y@solo.example.com"),
            }
        ),
        headers=seller.headers,
    )
    assert int(response.get_json()["Operations"][0]["status"]) == 403
    assert store_dump(connector) == before

    # Permission sets are allowed on the individual plan (issue 8 #10).
    response = client.post(
        GROUPS,
        json=group_body(
            "Helpers", **{SELLER_GROUP: {"permissions": [{"category": "orders", "level": "view"}]}}
        ),
        headers=seller.headers,
    )
    assert response.status_code == 201


# -- Administrators ---------------------------------------------------------------------


def test_admin_on_user_permissions_makes_an_administrator_flagged_in_the_review(
    client: Any, make_seller: Any, run_cli: Callable[..., Any]
) -> None:
    seller = make_seller()
    clerk = create_user(client, seller, "clerk@acme.example.com")
    direct = create_user(client, seller, "deputy@acme.example.com")
    by_group = create_user(client, seller, "lead@acme.example.com")
    assert direct[SELLER_USER]["administrator"] is False

    response = client.patch(
        f"{USERS}/{direct['id']}",
        json=patch_body(
            {
                "op": "add",
                "path": f"{SELLER_USER}:permissions",
                "value": [{"category": "user-permissions", "level": "admin"}],
            }
        ),
        headers=seller.headers,
    )
    assert response.status_code == 200
    assert response.get_json()[SELLER_USER]["administrator"] is True

    response = client.post(
        GROUPS,
        json=group_body(
            "Team leads",
            [by_group["id"]],
            **{SELLER_GROUP: {"permissions": [{"category": "user-permissions", "level": "admin"}]}},
        ),
        headers=seller.headers,
    )
    assert response.status_code == 201
    assert get_user(client, seller, by_group["id"])[SELLER_USER]["administrator"] is True
    assert get_user(client, seller, clerk["id"])[SELLER_USER]["administrator"] is False

    flagged = {
        uid: line["administrator"] for uid, line in review(run_cli, seller.seller.id).items()
    }
    assert flagged == {
        seller.primary.id: True,
        clerk["id"]: False,
        direct["id"]: True,
        by_group["id"]: True,
    }
    # The grant is recorded.
    grants = [
        e
        for e in audit(run_cli, seller.seller.id)
        if e["target"] == f"user:{direct['id']}" and e["action"] == "user.updated"
    ]
    assert grants and grants[-1]["changes"]["permissions"]["to"] == {"user-permissions": "admin"}


# -- Partners are not users -------------------------------------------------------------


def test_a_partner_domain_is_refused_pointing_to_partner_authorization(
    client: Any, make_seller: Any, connector: Any
) -> None:
    seller = make_seller()
    user = create_user(client, seller, "staff@acme.example.com")
    with connector.uow() as uow:
        account = uow.sellers.get(seller.seller.id)
        seller_cases.set_partner_domains(uow, account, ["agency.example.net"], Actor("test"))
        uow.commit()
    before = store_dump(connector)
    response = client.post(
        USERS, json=user_body("consultant@Agency.Example.net"), headers=seller.headers
    )
    assert_scim_error(response, 400, "invalidValue", detail_has=("partner", "authoriz"))
    response = client.patch(
        f"{USERS}/{user['id']}",
        json=patch_body(
            {
                "op": "add",
                "path": "emails",
                "value": [{"value": "x@agency.example.net", "type": "other"}],
            }
        ),
        headers=seller.headers,
    )
    assert_scim_error(response, 400, "invalidValue", detail_has=("partner",))
    assert store_dump(connector) == before


# -- The catalogue ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "value", "named"),
    [
        (
            "user",
            {"permissions": [{"category": "warehouse-robots", "level": "view"}]},
            "warehouse-robots",
        ),
        ("user", {"permissions": [{"category": "inventory", "level": "superuser"}]}, "superuser"),
        ("user", {"notifications": ["weather"]}, "weather"),
        ("group", {"permissions": [{"category": "teleport", "level": "edit"}]}, "teleport"),
        ("group", {"permissions": [{"category": "orders", "level": "owner"}]}, "owner"),
    ],
)
def test_unknown_category_or_level_is_400_invalid_value_naming_it(
    client: Any, make_seller: Any, connector: Any, where: str, value: dict[str, Any], named: str
) -> None:
    seller = make_seller()
    before = store_dump(connector)
    if where == "user":
        body = user_body("cat@acme.example.com", **{SELLER_USER: value})
        body["schemas"].append(SELLER_USER)
        response = client.post(USERS, json=body, headers=seller.headers)
    else:
        response = client.post(
            GROUPS, json=group_body("Odd set", **{SELLER_GROUP: value}), headers=seller.headers
        )
    assert_scim_error(response, 400, "invalidValue", detail_has=(named,))
    assert store_dump(connector) == before


def test_effective_permission_is_the_highest_level_direct_or_by_any_group(
    client: Any, make_seller: Any, run_cli: Callable[..., Any]
) -> None:
    seller = make_seller()
    body = user_body(
        "mixed@acme.example.com",
        **{
            SELLER_USER: {
                "permissions": [
                    {"category": "inventory", "level": "view"},
                    {"category": "orders", "level": "edit"},
                    {"category": "pricing", "level": "edit"},
                    {"category": "reports", "level": "none"},
                ]
            }
        },
    )
    body["schemas"].append(SELLER_USER)
    response = client.post(USERS, json=body, headers=seller.headers)
    assert response.status_code == 201
    user_id = response.get_json()["id"]

    def permission_set(name: str, grants: dict[str, str]) -> None:
        permissions = [{"category": c, "level": lv} for c, lv in grants.items()]
        response = client.post(
            GROUPS,
            json=group_body(name, [user_id], **{SELLER_GROUP: {"permissions": permissions}}),
            headers=seller.headers,
        )
        assert response.status_code == 201

    permission_set("Stock", {"inventory": "edit", "orders": "view", "reports": "view"})
    permission_set("Boss", {"inventory": "admin", "pricing": "edit"})

    line = review(run_cli, seller.seller.id)[user_id]
    effective = {
        g["category"]: (g["level"], sorted(g["granted_by"])) for g in line["effective_permissions"]
    }
    assert effective == {
        "inventory": ("admin", ["group:Boss"]),  # view direct < edit Stock < admin Boss
        "orders": ("edit", ["direct"]),  # edit direct > view Stock
        "pricing": ("edit", ["direct", "group:Boss"]),  # a tie names both sources
        "reports": ("view", ["group:Stock"]),  # none direct < view Stock
    }
    assert line["administrator"] is False


def test_the_primary_has_every_permission_at_admin_whatever_its_groups(
    client: Any, make_seller: Any, run_cli: Callable[..., Any]
) -> None:
    """Issue 8 #10: a group is never the primary's only way to a permission."""
    seller = make_seller(plan=Plan.individual)
    response = client.post(
        GROUPS,
        json=group_body(
            "Viewers",
            [seller.primary.id],
            **{SELLER_GROUP: {"permissions": [{"category": "orders", "level": "view"}]}},
        ),
        headers=seller.headers,
    )
    assert response.status_code == 201
    line = review(run_cli, seller.seller.id)[seller.primary.id]
    categories = [c["id"] for c in yaml.safe_load(PERMISSIONS.read_text())["categories"]]
    assert {
        g["category"]: (g["level"], g["granted_by"]) for g in line["effective_permissions"]
    } == {c: ("admin", ["direct"]) for c in categories}
    assert line["administrator"] is True
    assert get_user(client, seller, seller.primary.id)[SELLER_USER]["administrator"] is True
