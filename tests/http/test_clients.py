"""Clients as they really are (issue 3, point 3), and the SCIM protocol features they use.

Each client test is written from the client's documented behaviour, cited in its docstring:

- [ENTRA-TUTORIAL] Microsoft, "Tutorial: Develop and plan provisioning for a SCIM endpoint in
  Microsoft Entra ID" (learn.microsoft.com/entra/identity/app-provisioning/
  use-scim-to-provision-users-and-groups), its request/response examples.
- [ENTRA-ISSUES] Microsoft, "Known issues and resolutions with SCIM 2.0 protocol compliance of
  the Microsoft Entra user provisioning service" (learn.microsoft.com/entra/identity/
  app-provisioning/application-provisioning-config-problem-scim-compatibility).
- [OKTA-SCIM] Okta, "SCIM 2.0 protocol reference" and "Build a SCIM provisioning integration"
  (developer.okta.com/docs/api/openapi/okta-scim/guides/scim-20, developer.okta.com/docs/
  guides/scim-provisioning-integration-prepare).
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote

import pytest

from connector.bootstrap import Connector
from tests.conftest import SCIM, SELLER_USER, SellerHandle, user_body
from tests.http.conftest import (
    ENTERPRISE,
    LIST_SCHEMA,
    assert_scim_error,
    bulk_body,
    group_body,
    patch_body,
    store_dump,
)

USERS = "/scim/v2/Users"
GROUPS = "/scim/v2/Groups"


def create(client: Any, seller: SellerHandle, user_name: str, **extra: Any) -> dict[str, Any]:
    response = client.post(USERS, json=user_body(user_name, **extra), headers=seller.headers)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


def patch(client: Any, seller: SellerHandle, path: str, *operations: dict[str, Any]) -> Any:
    return client.patch(path, json=patch_body(*operations), headers=seller.headers)


def search(client: Any, seller: SellerHandle, query: str) -> dict[str, Any]:
    response = client.get(f"{USERS}?{query}", headers=seller.headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["Content-Type"].startswith(SCIM)
    return response.get_json()


def by_user_name(user_name: str) -> str:
    """The query string of Okta's and Entra's lookup: ``filter=userName eq "<name>"``."""
    return "filter=" + quote('userName eq "' + user_name + '"')


def filtered(client: Any, seller: SellerHandle, expression: str) -> set[str]:
    body = search(client, seller, f"count=1000&attributes=userName&filter={quote(expression)}")
    return {r["userName"] for r in body["Resources"]}


# -- Microsoft Entra ID -----------------------------------------------------------------


def test_entra_capitalised_ops(client: Any, make_seller: Any) -> None:
    """[ENTRA-TUTORIAL] "Update User [Multi-valued properties]" and "[Single-valued properties]"
    send ``"op": "Replace"`` and ``"op": "Add"``; group updates send ``"op": "Remove"``."""
    seller = make_seller()
    user = create(client, seller, "entra.ops@acme.example.com")
    response = patch(
        client,
        seller,
        f"{USERS}/{user['id']}",
        {"op": "Replace", "path": "displayName", "value": "Edna Ops"},
        {"op": "Add", "path": "title", "value": "Buyer"},
        {"op": "Add", "path": 'phoneNumbers[type eq "work"].value', "value": "+1 555 0100"},
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["displayName"] == "Edna Ops"
    assert body["title"] == "Buyer"
    assert body["phoneNumbers"] == [{"type": "work", "value": "+1 555 0100"}]
    response = patch(client, seller, f"{USERS}/{user['id']}", {"op": "Remove", "path": "title"})
    assert response.status_code == 200
    assert "title" not in response.get_json()


@pytest.mark.parametrize(("sent", "expected"), [("False", False), ("True", True), ("false", False)])
def test_entra_booleans_as_strings(
    client: Any, make_seller: Any, sent: str, expected: bool
) -> None:
    """[ENTRA-ISSUES] lists PATCH requests that carry booleans as strings, e.g.
    ``{"op": "Replace", "path": "active", "value": "False"}``, on non-fixed jobs."""
    seller = make_seller()
    user = create(client, seller, f"entra.bool.{sent}@acme.example.com")
    if expected:
        patch(
            client,
            seller,
            f"{USERS}/{user['id']}",
            {"op": "replace", "path": "active", "value": False},
        )
    response = patch(
        client, seller, f"{USERS}/{user['id']}", {"op": "Replace", "path": "active", "value": sent}
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["active"] is expected
    stored = client.get(f"{USERS}/{user['id']}", headers=seller.headers).get_json()
    assert stored["active"] is expected


def test_entra_path_less_replace_with_a_dict_of_attributes(client: Any, make_seller: Any) -> None:
    """[ENTRA-ISSUES] "PATCH requests with no path": Entra sends one Replace whose value maps
    attribute paths, enterprise extension URN paths included, to values (strings for booleans)."""
    seller = make_seller()
    user = create(client, seller, "entra.dict@acme.example.com")
    response = patch(
        client,
        seller,
        f"{USERS}/{user['id']}",
        {
            "op": "Replace",
            "value": {
                "displayName": "Dora Dict",
                "name.givenName": "Dora",
                "active": "False",
                f"{ENTERPRISE}:department": "Sales",
                f"{ENTERPRISE}:employeeNumber": "4711",
            },
        },
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    stored = client.get(f"{USERS}/{user['id']}", headers=seller.headers).get_json()
    assert stored["displayName"] == "Dora Dict"
    assert stored["name"]["givenName"] == "Dora"
    assert stored["name"]["familyName"] == "User"  # untouched
    assert stored["active"] is False
    assert stored[ENTERPRISE] == {"department": "Sales", "employeeNumber": "4711"}
    assert ENTERPRISE in stored["schemas"]


def test_entra_enterprise_urn_paths_and_manager_as_a_plain_string(
    client: Any, make_seller: Any
) -> None:
    """[ENTRA-TUTORIAL] attribute mapping writes ``urn:...:enterprise:2.0:User:department``;
    [ENTRA-ISSUES] the manager is sent as ``{"op": "Add", "path": "urn:...:User:manager",
    "value": "<manager id>"}`` - the id alone, not ``{"value": id}``."""
    seller = make_seller()
    boss = create(client, seller, "entra.boss@acme.example.com")
    user = create(client, seller, "entra.report@acme.example.com")
    response = patch(
        client,
        seller,
        f"{USERS}/{user['id']}",
        {"op": "Add", "path": f"{ENTERPRISE}:department", "value": "Logistics"},
        {"op": "Add", "path": f"{ENTERPRISE}:manager", "value": boss["id"]},
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    stored = client.get(f"{USERS}/{user['id']}", headers=seller.headers).get_json()
    assert stored[ENTERPRISE]["department"] == "Logistics"
    assert stored[ENTERPRISE]["manager"]["value"] == boss["id"]

    # Replace it (path-less, as Entra does too), then remove it.
    other = create(client, seller, "entra.boss2@acme.example.com")
    response = patch(
        client,
        seller,
        f"{USERS}/{user['id']}",
        {"op": "Replace", "value": {f"{ENTERPRISE}:manager": other["id"]}},
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()[ENTERPRISE]["manager"]["value"] == other["id"]
    response = patch(
        client, seller, f"{USERS}/{user['id']}", {"op": "Remove", "path": f"{ENTERPRISE}:manager"}
    )
    assert response.status_code == 200
    assert "manager" not in response.get_json().get(ENTERPRISE, {})


def test_entra_member_add_and_removal_by_value_list(client: Any, make_seller: Any) -> None:
    """[ENTRA-TUTORIAL] "Update Group [Add Members]" / "[Remove Members]": ``{"op": "Add" |
    "Remove", "path": "members", "value": [{"value": "<user id>"}, ...]}``."""
    seller = make_seller()
    ids = [create(client, seller, f"entra.m{n}@acme.example.com")["id"] for n in range(4)]
    group = client.post(GROUPS, json=group_body("Entra group"), headers=seller.headers).get_json()
    path = f"{GROUPS}/{group['id']}"
    response = patch(
        client, seller, path, {"op": "Add", "path": "members", "value": [{"value": i} for i in ids]}
    )
    assert response.status_code == 200
    assert {m["value"] for m in response.get_json()["members"]} == set(ids)
    response = patch(
        client,
        seller,
        path,
        {"op": "Remove", "path": "members", "value": [{"value": ids[0]}, {"value": ids[2]}]},
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    stored = client.get(path, headers=seller.headers).get_json()
    assert {m["value"] for m in stored["members"]} == {ids[1], ids[3]}
    # The users left the group as the users see it too.
    removed = client.get(f"{USERS}/{ids[0]}", headers=seller.headers).get_json()
    assert not removed.get("groups")


def test_entra_probe_for_a_random_user_name_is_an_empty_list(client: Any, make_seller: Any) -> None:
    """[ENTRA-TUTORIAL] "Get User by query - Zero results": ``GET /Users?filter=userName eq
    "non-existent user"`` answers 200 with ``totalResults`` 0 - Entra's connection test."""
    seller = make_seller()
    create(client, seller, "someone@acme.example.com")
    probe = str(uuid.uuid4())
    body = search(client, seller, by_user_name(probe))
    assert body["schemas"] == [LIST_SCHEMA]
    assert body["totalResults"] == 0 and type(body["totalResults"]) is int
    assert body.get("Resources", []) == []
    assert body["itemsPerPage"] == 0 and body["startIndex"] == 1


def test_entra_matching_lookups(client: Any, make_seller: Any) -> None:
    """[ENTRA-TUTORIAL] "Get User by query": Entra matches users with ``userName eq``,
    ``externalId eq`` or, when mail is the matching attribute, ``emails[type eq "work"].value eq``.
    externalId is caseExact (RFC 7643 §3.1); the addresses are not."""
    seller = make_seller()
    user = create(client, seller, "match@acme.example.com", externalId="AAD-42")
    for expression, found in (
        ('emails[type eq "work"].value eq "MATCH@acme.example.com"', True),
        ('emails[type eq "home"].value eq "match@acme.example.com"', False),
        ('externalId eq "AAD-42"', True),
        ('externalId eq "aad-42"', False),
    ):
        body = search(client, seller, "filter=" + quote(expression))
        assert [r["id"] for r in body["Resources"]] == ([user["id"]] if found else []), expression


def test_entra_delete_after_soft_delete(client: Any, make_seller: Any) -> None:
    """[ENTRA-TUTORIAL] unassigned or soft-deleted users get PATCH ``active`` false; after the
    soft-delete period (30 days) Entra sends DELETE, answered 204 and 404 afterwards."""
    seller = make_seller()
    user = create(client, seller, "entra.leaver@acme.example.com")
    path = f"{USERS}/{user['id']}"
    response = patch(client, seller, path, {"op": "Replace", "path": "active", "value": "False"})
    assert response.status_code == 200
    response = client.delete(path, headers=seller.headers)
    assert response.status_code == 204
    assert not response.get_data()
    assert_scim_error(client.get(path, headers=seller.headers), 404)


# -- Okta -------------------------------------------------------------------------------


def test_okta_user_name_eq_is_case_insensitive(client: Any, make_seller: Any) -> None:
    """[OKTA-SCIM] "Retrieve Users": Okta checks that a user exists with ``filter=userName eq
    "..."`` and expects the match to be case-insensitive (userName is caseExact false)."""
    seller = make_seller()
    user = create(client, seller, "Okta.Person@Acme.example.com")
    for asked in ("okta.person@acme.example.com", "OKTA.PERSON@ACME.EXAMPLE.COM"):
        body = search(client, seller, by_user_name(asked))
        assert body["totalResults"] == 1
        assert body["Resources"][0]["id"] == user["id"]


def test_okta_updates_profiles_with_put(client: Any, make_seller: Any) -> None:
    """[OKTA-SCIM] "Update a specific User (PUT)": Okta GETs the user, then PUTs the whole
    user back with the changed profile; what the PUT omits is gone."""
    seller = make_seller()
    user = create(client, seller, "okta.put@acme.example.com", title="Clerk", displayName="Old")
    body = client.get(f"{USERS}/{user['id']}", headers=seller.headers).get_json()
    body["name"] = {"givenName": "Otto", "familyName": "Kta"}
    body["emails"] = [
        {"value": "okta.put@acme.example.com", "type": "work", "primary": True},
        {"value": "otto@home.example.org", "type": "home", "primary": False},
    ]
    body.pop("title")
    response = client.put(f"{USERS}/{user['id']}", json=body, headers=seller.headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    stored = client.get(f"{USERS}/{user['id']}", headers=seller.headers).get_json()
    assert stored["name"] == {"givenName": "Otto", "familyName": "Kta"}
    assert [(e["value"], e.get("primary")) for e in stored["emails"]] == [
        ("okta.put@acme.example.com", True),
        ("otto@home.example.org", False),
    ]
    assert "title" not in stored
    assert stored["displayName"] == "Old"


def test_okta_deactivates_with_patch_active_false(client: Any, make_seller: Any) -> None:
    """[OKTA-SCIM] "Update a specific User (PATCH)": deactivation is ``{"op": "replace",
    "value": {"active": false}}``; Okta never DELETEs users."""
    seller = make_seller()
    user = create(client, seller, "okta.off@acme.example.com")
    response = patch(
        client, seller, f"{USERS}/{user['id']}", {"op": "replace", "value": {"active": False}}
    )
    assert response.status_code == 200
    assert response.get_json()["active"] is False
    found = search(client, seller, by_user_name("okta.off@acme.example.com"))
    assert found["Resources"][0]["active"] is False


def test_okta_duplicate_is_409_uniqueness(
    client: Any, make_seller: Any, connector: Connector
) -> None:
    """[OKTA-SCIM] "Create the User": when the user already exists the SCIM server answers
    409 Conflict, with ``scimType`` ``uniqueness`` (RFC 7644 §3.3)."""
    seller = make_seller()
    create(client, seller, "okta.dup@acme.example.com")
    before = store_dump(connector)
    response = client.post(
        USERS, json=user_body("okta.dup@acme.example.com"), headers=seller.headers
    )
    assert_scim_error(response, 409, "uniqueness")
    assert store_dump(connector) == before


def test_okta_paging_metadata(client: Any, make_seller: Any) -> None:
    """[OKTA-SCIM] "Retrieve Users": Okta pages with ``startIndex`` and ``count`` and reads
    ``totalResults``, ``itemsPerPage`` and ``startIndex`` as integers."""
    seller = make_seller()
    made = {create(client, seller, f"page{n}@acme.example.com")["id"] for n in range(5)}
    expected = made | {seller.primary.id}
    seen: list[str] = []
    start = 1
    while True:
        body = search(client, seller, f"startIndex={start}&count=2&sortBy=userName")
        for key in ("totalResults", "itemsPerPage", "startIndex"):
            assert type(body[key]) is int, key
        assert body["totalResults"] == len(expected)
        assert body["startIndex"] == start
        resources = body.get("Resources", [])
        assert body["itemsPerPage"] == len(resources)
        if not resources:
            break
        assert len(resources) <= 2
        seen += [r["id"] for r in resources]
        start += len(resources)
    assert len(seen) == len(expected) and set(seen) == expected
    assert start == len(expected) + 1
    empty = search(client, seller, "count=0")
    assert empty["totalResults"] == len(expected) and empty.get("Resources", []) == []


# -- Protocol features clients use -----------------------------------------------------


def test_every_response_is_application_scim_json(client: Any, make_seller: Any) -> None:
    """RFC 7644 §3.1/§8.1: responses are ``application/scim+json`` - successes, errors of
    every kind, discovery, Bulk (a 304 has no body, so it has no content type)."""
    seller = make_seller()
    user = create(client, seller, "ct@acme.example.com")
    h = seller.headers
    responses = [
        client.get("/scim/v2/ServiceProviderConfig"),
        client.get("/scim/v2/ResourceTypes"),
        client.get("/scim/v2/Schemas"),
        client.get(USERS, headers=h),
        client.get(f"{USERS}/{user['id']}", headers=h),
        client.post(USERS, json=user_body("ct2@acme.example.com"), headers=h),
        client.patch(
            f"{USERS}/{user['id']}",
            json=patch_body({"op": "add", "path": "title", "value": "T"}),
            headers=h,
        ),
        client.put(f"{USERS}/{user['id']}", json=user_body("ct@acme.example.com"), headers=h),
        client.post("/scim/v2/Bulk", json=bulk_body(), headers=h),
        client.post(
            f"{USERS}/.search",
            json={"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"]},
            headers=h,
        ),
        client.get(f"{USERS}/nope", headers=h),  # 404
        client.get(USERS),  # 401
        client.post(USERS, json=user_body("ct@acme.example.com"), headers=h),  # 409
        client.post(USERS, data="{", headers=h),  # 400
        client.post(
            USERS, data="x=1", headers={**h, "Content-Type": "application/x-www-form-urlencoded"}
        ),  # 415
        client.open(USERS, method="OPTIONS", headers=h),  # 405
        client.get("/scim/v2/Nowhere", headers=h),  # 404
        client.get("/scim/v2/Me", headers=h),  # 501
        client.delete(f"{USERS}/{user['id']}", headers=h),  # 204
    ]
    for response in responses:
        assert response.headers.get("Content-Type", "").startswith(SCIM), (
            response.status_code,
            response.headers.get("Content-Type"),
        )
    assert {r.status_code for r in responses} >= {200, 201, 204, 400, 401, 404, 405, 409, 415, 501}


def test_attributes_and_excluded_attributes(client: Any, make_seller: Any) -> None:
    """RFC 7644 §3.4.2.5 and §3.9: ``attributes`` returns those (and ``id``, ``schemas``, and
    other "always" attributes); ``excludedAttributes`` leaves those out."""
    seller = make_seller()
    user = create(client, seller, "attr@acme.example.com", title="Attr")
    only = client.get(
        f"{USERS}/{user['id']}?attributes=userName,emails.value", headers=seller.headers
    ).get_json()
    assert set(only) == {"schemas", "id", "userName", "emails"}
    assert only["emails"] == [{"value": "attr@acme.example.com"}]
    without = client.get(
        f"{USERS}/{user['id']}?excludedAttributes=emails,title", headers=seller.headers
    ).get_json()
    assert "emails" not in without and "title" not in without
    assert without["userName"] == "attr@acme.example.com" and without["id"] == user["id"]
    listed = search(
        client,
        seller,
        "attributes=displayName&filter=" + quote('userName eq "attr@acme.example.com"'),
    )
    assert set(listed["Resources"][0]) == {"schemas", "id"}  # no displayName was set
    extension = client.get(
        f"{USERS}/{user['id']}?attributes={SELLER_USER}:role", headers=seller.headers
    ).get_json()
    assert extension[SELLER_USER] == {"role": "secondary"}


def test_etag_and_if_match(client: Any, make_seller: Any, connector: Connector) -> None:
    """RFC 7644 §3.14: a stale ``If-Match`` is 412 for PUT, PATCH and DELETE, and changes
    nothing; the current one passes; ``If-None-Match`` with the current one is 304."""
    seller = make_seller()
    user = create(client, seller, "etag@acme.example.com")
    path = f"{USERS}/{user['id']}"
    first = client.get(path, headers=seller.headers)
    stale = first.headers["ETag"]
    assert stale == first.get_json()["meta"]["version"]
    response = client.patch(
        path,
        json=patch_body({"op": "replace", "path": "displayName", "value": "One"}),
        headers={**seller.headers, "If-Match": stale},
    )
    assert response.status_code == 200
    current = response.headers["ETag"]
    assert current != stale

    before = store_dump(connector)
    for response in (
        client.patch(
            path,
            json=patch_body({"op": "replace", "path": "displayName", "value": "Two"}),
            headers={**seller.headers, "If-Match": stale},
        ),
        client.put(
            path,
            json=user_body("etag@acme.example.com", displayName="Two"),
            headers={**seller.headers, "If-Match": stale},
        ),
        client.delete(path, headers={**seller.headers, "If-Match": stale}),
    ):
        assert_scim_error(response, 412)
    assert store_dump(connector) == before

    assert client.get(path, headers={**seller.headers, "If-None-Match": current}).status_code == 304
    assert client.get(path, headers={**seller.headers, "If-None-Match": stale}).status_code == 200
    response = client.put(
        path,
        json=user_body("etag@acme.example.com", displayName="Two"),
        headers={**seller.headers, "If-Match": current},
    )
    assert response.status_code == 200 and response.get_json()["displayName"] == "Two"
    group = client.post(GROUPS, json=group_body("Versioned"), headers=seller.headers)
    response = client.delete(
        f"{GROUPS}/{group.get_json()['id']}", headers={**seller.headers, "If-Match": 'W/"999"'}
    )
    assert_scim_error(response, 412)


def test_sorting(client: Any, make_seller: Any) -> None:
    """RFC 7644 §3.4.2.3: ``sortBy`` and ``sortOrder``; resources without the attribute last
    when ascending."""
    seller = make_seller()
    names = ["mango", "apple", "kiwi", "banana", "cherry"]
    for n, name in enumerate(names):
        create(client, seller, f"{name}@fruit.example.com", title=f"t{(n * 3) % 5}")
    ascending = search(client, seller, "sortBy=userName&count=100")["Resources"]
    user_names = [r["userName"] for r in ascending]
    assert user_names == sorted(user_names)
    descending = search(client, seller, "sortBy=userName&sortOrder=descending&count=100")[
        "Resources"
    ]
    assert [r["userName"] for r in descending] == sorted(user_names, reverse=True)
    by_title = search(client, seller, "sortBy=title&count=100")["Resources"]
    assert [r.get("title") for r in by_title] == ["t0", "t1", "t2", "t3", "t4", None]


def test_index_and_cursor_paging(client: Any, make_seller: Any) -> None:
    """RFC 7644 §3.4.2.4 (index) and RFC 9865 (cursor): both walk every resource once, in
    the sort order; a cursor page links back with ``previousCursor``."""
    seller = make_seller()
    for n in range(7):
        create(client, seller, f"walk{n}@acme.example.com")
    everyone = [r["id"] for r in search(client, seller, "sortBy=userName&count=100")["Resources"]]
    assert len(everyone) == 8

    pages: list[list[str]] = []
    body = search(client, seller, "sortBy=userName&count=3&cursor=")
    while True:
        assert body["totalResults"] == 8 and "startIndex" not in body
        pages.append([r["id"] for r in body["Resources"]])
        if not body.get("nextCursor"):
            break
        body = search(client, seller, f"sortBy=userName&count=3&cursor={body['nextCursor']}")
    assert [i for page in pages for i in page] == everyone
    assert [len(p) for p in pages] == [3, 3, 2]
    back = search(client, seller, f"sortBy=userName&count=3&cursor={body['previousCursor']}")
    assert [r["id"] for r in back["Resources"]] == pages[1]
    # A cursor serves only the query it was issued for.
    response = client.get(
        f"{USERS}?sortBy=title&count=3&cursor={body['previousCursor']}", headers=seller.headers
    )
    assert_scim_error(response, 400, "invalidCursor")


def test_filters_with_and_or_not_and_value_paths(client: Any, make_seller: Any) -> None:
    """RFC 7644 §3.4.2.2: logical operators, grouping, ``not``, complex value paths, ``pr``,
    and case-insensitive comparison of caseExact=false attributes."""
    seller = make_seller()

    def person(name: str, home: str | None, title: str | None, active: bool = True) -> None:
        emails = [{"value": f"{name}@acme.example.com", "type": "work", "primary": True}]
        if home:
            emails.append({"value": home, "type": "home"})
        extra: dict[str, Any] = {"emails": emails, "active": active}
        if title:
            extra["title"] = title
        create(client, seller, f"{name}@acme.example.com", **extra)

    person("alice", "alice@home.example.org", "Buyer")
    person("albert", None, "Seller", active=False)
    person("bob", "bob@mail.example.net", None)
    person("carol", "CAROL@home.example.org", "buyer")
    a, al, b, c = (f"{n}@acme.example.com" for n in ("alice", "albert", "bob", "carol"))

    assert filtered(client, seller, 'userName sw "AL" and active eq true') == {a}
    assert filtered(client, seller, 'userName eq "bob@acme.example.com" or title eq "seller"') == {
        b,
        al,
    }
    assert filtered(client, seller, f'not (active eq true) or userName eq "{c}"') == {al, c}
    assert filtered(client, seller, 'emails[type eq "home" and value ew "home.example.org"]') == {
        a,
        c,
    }
    assert filtered(client, seller, 'emails[type eq "home"] and not (title pr)') == {b}
    assert filtered(
        client, seller, '(title eq "buyer" or title eq "seller") and emails.value co "l"'
    ) == {a, al, c}
    assert filtered(
        client, seller, 'emails.type eq "work" and userName gt "b" and userName lt "d"'
    ) == {b, c}
    body = search(client, seller, "filter=" + quote('userName eq "alice@acme.example.com"'))
    assert body["totalResults"] == 1


def test_patch_value_path_filters(client: Any, make_seller: Any) -> None:
    """RFC 7644 §3.5.2: ``emails[type eq "work"].value`` replaces one sub-attribute of the
    matching values only; a filtered remove removes only the matching values."""
    seller = make_seller()
    user = create(
        client,
        seller,
        "vp@acme.example.com",
        emails=[
            {"value": "vp@acme.example.com", "type": "work", "primary": True},
            {"value": "vp@home.example.org", "type": "home"},
        ],
    )
    path = f"{USERS}/{user['id']}"
    response = patch(
        client,
        seller,
        path,
        {"op": "replace", "path": 'emails[type eq "work"].value', "value": "vp2@acme.example.com"},
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    emails = {e["type"]: e for e in response.get_json()["emails"]}
    assert emails["work"]["value"] == "vp2@acme.example.com" and emails["work"]["primary"] is True
    assert emails["home"]["value"] == "vp@home.example.org"
    response = patch(client, seller, path, {"op": "remove", "path": 'emails[type eq "home"]'})
    assert [e["value"] for e in response.get_json()["emails"]] == ["vp2@acme.example.com"]


def test_bulk_with_bulk_id_references_and_fail_on_errors(
    client: Any, make_seller: Any, connector: Connector
) -> None:
    """RFC 7644 §3.7: ``bulkId:`` references resolve to resources created in the same
    request; ``failOnErrors`` stops after that many errors, leaving later operations unrun."""
    seller = make_seller()
    response = client.post(
        "/scim/v2/Bulk",
        json=bulk_body(
            {
                "method": "POST",
                "path": "/Groups",
                "bulkId": "g",
                "data": {**group_body("Bulk crew"), "members": [{"value": "bulkId:u"}]},
            },
            {
                "method": "POST",
                "path": "/Users",
                "bulkId": "u",
                "data": user_body("bulk.one@acme.example.com"),
            },
            {
                "method": "PATCH",
                "path": "/Users/bulkId:u",
                "data": patch_body({"op": "add", "path": "title", "value": "Packer"}),
            },
        ),
        headers=seller.headers,
    )
    assert response.status_code == 200
    outcomes = response.get_json()["Operations"]
    assert [int(o["status"]) for o in outcomes] == [201, 201, 200]
    user_location = outcomes[1]["location"]
    user_id = user_location.rsplit("/", 1)[1]
    group = client.get(
        outcomes[0]["location"].split("http://scim.test")[1], headers=seller.headers
    ).get_json()
    assert [m["value"] for m in group["members"]] == [user_id]
    assert client.get(f"{USERS}/{user_id}", headers=seller.headers).get_json()["title"] == "Packer"

    before = store_dump(connector)
    response = client.post(
        "/scim/v2/Bulk",
        json=bulk_body(
            {
                "method": "POST",
                "path": "/Users",
                "bulkId": "d",
                "data": user_body("bulk.one@acme.example.com"),
            },
            {
                "method": "POST",
                "path": "/Users",
                "bulkId": "n",
                "data": user_body("never@acme.example.com"),
            },
            fail_on_errors=1,
        ),
        headers=seller.headers,
    )
    assert response.status_code == 200
    outcomes = response.get_json()["Operations"]
    assert [int(o["status"]) for o in outcomes] == [409]
    assert outcomes[0]["response"]["scimType"] == "uniqueness"
    assert store_dump(connector) == before
