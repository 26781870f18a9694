"""Bad input (issue 3, point 11): a SCIM error with status, scimType where one applies and a
detail a person can act on; never a 500 or a traceback; nothing stored changes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from connector.bootstrap import Connector
from connector.domain.drafts import Actor
from connector.services import sellers as seller_cases
from scim.schemas import MAX_OPERATIONS, MAX_PAYLOAD_SIZE
from tests.conftest import (
    PATCH_SCHEMA,
    SCIM,
    USER_SCHEMA,
    SellerHandle,
    bulk_creates,
    user_body,
)
from tests.http.conftest import assert_scim_error, bulk_body, group_body, patch_body, store_dump

USERS = "/scim/v2/Users"
GROUPS = "/scim/v2/Groups"


@pytest.fixture
def seeded(client: Any, make_seller: Any) -> tuple[SellerHandle, str, str]:
    """A seller with a user in a group, so that a wrong change would have something to break."""
    seller = make_seller()
    user = client.post(USERS, json=user_body("kept@acme.example.com"), headers=seller.headers)
    user_id = user.get_json()["id"]
    group = client.post(GROUPS, json=group_body("Kept", [user_id]), headers=seller.headers)
    return seller, user_id, group.get_json()["id"]


def _send(client: Any, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> Any:
    return client.open(path, method=method, data=body, headers=headers)


MALFORMED = [
    b'{"userName": ',
    b"{'userName': 'single quotes'}",
    b"[" * 5000 + b"]" * 5000,
    b"\xff\xfe{}",
    b"",
    b"null",
    b"[]",
    b'"just a string"',
]


@pytest.mark.parametrize("body", MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_json_is_400_on_every_write(
    client: Any, seeded: tuple[SellerHandle, str, str], connector: Connector, body: bytes
) -> None:
    seller, user_id, group_id = seeded
    before = store_dump(connector)
    for method, path in (
        ("POST", USERS),
        ("PUT", f"{USERS}/{user_id}"),
        ("PATCH", f"{USERS}/{user_id}"),
        ("PATCH", f"{GROUPS}/{group_id}"),
        ("POST", "/scim/v2/Bulk"),
        ("POST", f"{USERS}/.search"),
    ):
        response = _send(client, method, path, body, seller.headers)
        assert response.status_code == 400, (method, path, response.get_data(as_text=True))
        error = assert_scim_error(response, 400, response.get_json().get("scimType"))
        assert error.get("scimType") in ("invalidSyntax", "invalidValue")
    assert store_dump(connector) == before


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/xml",
        "multipart/form-data; boundary=x",
    ],
)
def test_a_wrong_content_type_is_415(
    client: Any, seeded: tuple[SellerHandle, str, str], connector: Connector, content_type: str
) -> None:
    seller, user_id, _ = seeded
    headers = {**seller.headers, "Content-Type": content_type}
    before = store_dump(connector)
    for method, path, body in (
        ("POST", USERS, user_body("ct@acme.example.com")),
        ("PUT", f"{USERS}/{user_id}", user_body("kept@acme.example.com", displayName="X")),
        ("PATCH", f"{USERS}/{user_id}", patch_body({"op": "add", "path": "title", "value": "T"})),
        ("POST", "/scim/v2/Bulk", bulk_body()),
    ):
        response = _send(client, method, path, json.dumps(body).encode(), headers)
        assert_scim_error(response, 415, detail_has=("application/scim+json",))
    assert store_dump(connector) == before


def test_application_json_is_accepted_as_scim_json(client: Any, make_seller: Any) -> None:
    """RFC 7644 §8.1: servers accept application/json too (clients such as curl send it)."""
    seller = make_seller()
    response = client.post(
        USERS,
        data=json.dumps(user_body("json@acme.example.com")),
        headers={**seller.headers, "Content-Type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 201


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (user_body("u1@acme.example.com", favouriteColour="teal"), "favouriteColour"),
        (user_body("u2@acme.example.com", name={"givenName": "A", "nickName2": "B"}), "nickName2"),
        (
            user_body(
                "u3@acme.example.com", emails=[{"value": "u3@acme.example.com", "colour": "red"}]
            ),
            "colour",
        ),
    ],
    ids=["top-level", "sub-attribute", "in-multi-valued"],
)
def test_unknown_attributes_are_400_naming_them(
    client: Any, make_seller: Any, connector: Connector, body: dict[str, Any], named: str
) -> None:
    seller = make_seller()
    before = store_dump(connector)
    response = client.post(USERS, json=body, headers=seller.headers)
    error = assert_scim_error(
        response, 400, response.get_json().get("scimType"), detail_has=(named,)
    )
    assert error["scimType"] in ("invalidSyntax", "invalidValue")
    assert store_dump(connector) == before


def test_unknown_patch_paths_and_ops_are_400(
    client: Any, seeded: tuple[SellerHandle, str, str], connector: Connector
) -> None:
    seller, user_id, _ = seeded
    before = store_dump(connector)
    for operation, scim_type, named in (
        (
            {"op": "add", "path": "favouriteColour", "value": "teal"},
            "invalidPath",
            "favouriteColour",
        ),
        ({"op": "add", "path": "emails[type eq", "value": "x"}, "invalidPath", ""),
        ({"op": "frobnicate", "path": "title", "value": "x"}, "invalidValue", "frobnicate"),
        ({"path": "title", "value": "x"}, "invalidValue", "op"),
        ({"op": "replace", "path": "emails", "value": "not-a-list"}, "invalidValue", "emails"),
        ({"op": "replace", "path": "active", "value": "maybe"}, "invalidValue", "active"),
        ({"op": "remove", "path": "userName"}, "mutability", ""),
    ):
        response = client.patch(
            f"{USERS}/{user_id}", json=patch_body(operation), headers=seller.headers
        )
        error = assert_scim_error(response, 400, scim_type, detail_has=(named,) if named else ())
        assert "errors.pydantic.dev" not in error["detail"]
    assert store_dump(connector) == before


@pytest.mark.parametrize(
    "expression",
    [
        "userName eq",
        'userName equals "x"',
        '(userName eq "x"',
        'emails[type eq "work"',
        'favouriteColour eq "teal"',
        'active eq "maybe"',
        'meta.lastModified gt "yesterday"',
        '"x" eq userName',
    ],
)
def test_filters_that_do_not_parse_are_400_invalid_filter(
    client: Any, make_seller: Any, expression: str
) -> None:
    seller = make_seller()
    response = client.get(USERS, query_string={"filter": expression}, headers=seller.headers)
    assert_scim_error(response, 400, "invalidFilter")
    response = client.post(
        f"{USERS}/.search",
        json={
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
            "filter": expression,
        },
        headers=seller.headers,
    )
    assert_scim_error(response, 400, "invalidFilter")


@pytest.mark.parametrize(
    "query",
    [
        "count=many",
        "startIndex=first",
        "sortBy=userName&sortOrder=sideways",
        "sortBy=favouriteColour",
    ],
)
def test_bad_search_parameters_are_400(client: Any, make_seller: Any, query: str) -> None:
    seller = make_seller()
    response = client.get(f"{USERS}?{query}", headers=seller.headers)
    body = assert_scim_error(response, 400, response.get_json().get("scimType"))
    assert body["scimType"] in ("invalidValue", "invalidPath", "invalidFilter")


def test_values_too_long_for_the_store_are_400_not_500(
    client: Any, seeded: tuple[SellerHandle, str, str], connector: Connector
) -> None:
    """Both stores refuse the same way: PostgreSQL would otherwise fail on its column sizes."""
    seller, user_id, group_id = seeded
    long = "x" * 1000
    before = store_dump(connector)
    cases = [
        client.post(USERS, json=user_body(f"{long}@acme.example.com"), headers=seller.headers),
        client.post(USERS, json=user_body(long, "short@acme.example.com"), headers=seller.headers),
        client.post(
            USERS, json=user_body("ok@acme.example.com", externalId=long), headers=seller.headers
        ),
        client.post(
            USERS, json=user_body("ok@acme.example.com", displayName=long), headers=seller.headers
        ),
        client.post(
            USERS,
            json=user_body("ok@acme.example.com", name={"givenName": long}),
            headers=seller.headers,
        ),
        client.patch(
            f"{USERS}/{user_id}",
            json=patch_body({"op": "replace", "path": "displayName", "value": long}),
            headers=seller.headers,
        ),
        client.post(GROUPS, json=group_body(long), headers=seller.headers),
        client.patch(
            f"{GROUPS}/{group_id}",
            json=patch_body({"op": "replace", "path": "externalId", "value": long}),
            headers=seller.headers,
        ),
    ]
    for response in cases:
        assert_scim_error(response, 400, "invalidValue")
    assert store_dump(connector) == before


def test_a_huge_body_is_413_with_a_scim_error(
    client: Any, seeded: tuple[SellerHandle, str, str], connector: Connector
) -> None:
    seller, user_id, _ = seeded
    limit = connector.settings.max_body_bytes
    before = store_dump(connector)
    huge = json.dumps(user_body("big@acme.example.com", displayName="x" * (limit + 10))).encode()
    for method, path in (("POST", USERS), ("PUT", f"{USERS}/{user_id}"), ("POST", "/scim/v2/Bulk")):
        response = _send(client, method, path, huge, seller.headers)
        assert_scim_error(response, 413, detail_has=(str(limit),))
    # Bulk has its own, smaller, announced maxPayloadSize.
    operation = {
        "method": "POST",
        "path": "/Users",
        "bulkId": "b",
        "data": user_body("b@acme.example.com"),
    }
    padded = {**operation, "data": {**operation["data"], "displayName": "y" * MAX_PAYLOAD_SIZE}}
    response = client.post("/scim/v2/Bulk", json=bulk_body(padded), headers=seller.headers)
    assert_scim_error(response, 413, detail_has=("maxPayloadSize",))
    assert store_dump(connector) == before


def test_bulk_over_max_operations_is_413_and_runs_nothing(
    client: Any, make_seller: Any, connector: Connector
) -> None:
    seller = make_seller()
    config = client.get("/scim/v2/ServiceProviderConfig").get_json()
    assert config["bulk"]["maxOperations"] == MAX_OPERATIONS
    too_many = bulk_creates(
        {"schemas": [USER_SCHEMA], "userName": f"u{n}"} for n in range(MAX_OPERATIONS + 1)
    )
    before = store_dump(connector)
    response = client.post("/scim/v2/Bulk", json=too_many, headers=seller.headers)
    assert_scim_error(response, 413, detail_has=("maxOperations",))
    assert store_dump(connector) == before


def test_wrong_missing_or_revoked_tokens_are_the_same_401(
    client: Any, make_seller: Any, connector: Connector
) -> None:
    """401 without revealing whether the seller (or the token) exists."""
    seller = make_seller()
    revoked = make_seller()
    token_id = revoked.token.removeprefix("scn_").partition(".")[0]
    with connector.uow() as uow:
        account = uow.sellers.get(revoked.seller.id)
        seller_cases.revoke_token(uow, account, token_id, Actor("test"))
        uow.commit()
    user_id = seller.primary.id
    right_id_wrong_secret = seller.token.partition(".")[0] + ".wrong-secret"
    attempts = {
        "missing": {},
        "empty bearer": {"Authorization": "Bearer "},
        "basic": {"Authorization": "Basic dXNlcjpwYXNz"},
        "garbage": {"Authorization": "Bearer not-a-token"},
        "unknown token": {"Authorization": "Bearer scn_0123456789abcdef.secret"},
        "known token, wrong secret": {"Authorization": f"Bearer {right_id_wrong_secret}"},
        "revoked": {"Authorization": f"Bearer {revoked.token}"},
        "lower-case scheme, revoked": {"Authorization": f"bearer {revoked.token}"},
    }
    before = store_dump(connector)
    bodies = set()
    for name, auth in attempts.items():
        headers = {"Content-Type": SCIM, **auth}
        for method, path, body in (
            ("GET", f"{USERS}/{user_id}", None),
            ("GET", f"{USERS}?filter=userName%20pr", None),
            ("POST", USERS, user_body("intruder@evil.example.com")),
            ("DELETE", f"{USERS}/{user_id}", None),
            ("POST", "/scim/v2/Bulk", bulk_body()),
        ):
            response = _send(
                client, method, path, json.dumps(body).encode() if body else None, headers
            )
            assert_scim_error(response, 401)
            assert response.headers.get("WWW-Authenticate", "").startswith("Bearer"), name
            bodies.add(response.get_data(as_text=True))
    assert len(bodies) == 1, bodies
    assert store_dump(connector) == before
    # The revoked seller's other data is intact, and a good token still works.
    assert client.get(f"{USERS}/{user_id}", headers=seller.headers).status_code == 200


def test_a_failing_bulk_operation_leaves_the_others_and_nothing_half_written(
    client: Any, make_seller: Any, connector: Connector
) -> None:
    """Each SCIM write is one transaction: a failed operation of a Bulk request leaves no trace,
    the successful ones stay."""
    seller = make_seller()
    response = client.post(
        "/scim/v2/Bulk",
        json=bulk_body(
            {
                "method": "POST",
                "path": "/Users",
                "bulkId": "ok",
                "data": user_body("fine@acme.example.com"),
            },
            {
                "method": "POST",
                "path": "/Groups",
                "bulkId": "bad",
                "data": group_body("Half", ["bulkId:ok", "not-a-user"]),
            },
        ),
        headers=seller.headers,
    )
    statuses = [int(o["status"]) for o in response.get_json()["Operations"]]
    assert statuses == [201, 400]
    names = {
        g["displayName"]
        for g in client.get(f"{GROUPS}?count=100", headers=seller.headers).get_json()["Resources"]
    }
    assert "Half" not in names
    found = client.get(
        USERS,
        query_string={"filter": 'userName eq "fine@acme.example.com"'},
        headers=seller.headers,
    )
    assert found.get_json()["totalResults"] == 1


def test_patch_operations_are_all_or_nothing(
    client: Any, seeded: tuple[SellerHandle, str, str], connector: Connector
) -> None:
    """RFC 7644 §3.5.2: if one operation fails, the whole PATCH is not applied."""
    seller, user_id, _ = seeded
    before = store_dump(connector)
    response = client.patch(
        f"{USERS}/{user_id}",
        json={
            "schemas": [PATCH_SCHEMA],
            "Operations": [
                {"op": "replace", "path": "displayName", "value": "Changed"},
                {"op": "add", "path": "emails", "value": [{"value": "dup@acme.example.com"}]},
                {
                    "op": "add",
                    "path": "urn:seller-connector:scim:schemas:extension:seller:2.0:User:permissions",
                    "value": [{"category": "nope", "level": "view"}],
                },
            ],
        },
        headers=seller.headers,
    )
    assert_scim_error(response, 400, "invalidValue", detail_has=("nope",))
    assert store_dump(connector) == before
