"""Writes under concurrency and the limits every request is held to.

Eight clients patching the same user at once lose no update and see no 412 unless they sent
If-Match: the write is retried inside the service, and after two misses it holds the user,
so that newer writers cannot starve it (before that, a few PATCHes in a hundred lost twelve
times and answered 412). A PATCH over the operation cap and a filter over its limits are refused at once with a 400, never a 503 a client would retry.
Each test runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import threading
from typing import Any

from tests.conftest import user_body
from tests.http.conftest import assert_scim_error, patch_body

_WRITERS = "abcdefgh"


def test_concurrent_patches_of_one_user_lose_no_update(client: Any, make_seller: Any) -> None:
    handle = make_seller()
    created = client.post(
        "/scim/v2/Users", headers=handle.headers, json=user_body("busy@race.example.com")
    )
    user_id = created.json["id"]
    per_client = 15
    answers: list[int] = []
    errors: list[BaseException] = []

    def patcher(name: str) -> None:
        try:
            for n in range(per_client):
                response = client.patch(
                    f"/scim/v2/Users/{user_id}",
                    headers=handle.headers,
                    json=patch_body(
                        {"op": "add", "path": "phoneNumbers", "value": [{"value": f"{name}-{n}"}]}
                    ),
                )
                answers.append(response.status_code)
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=patcher, args=(name,)) for name in _WRITERS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    # No 412 for a client that sent no If-Match: the service read again and retried.
    assert answers == [200] * (len(_WRITERS) * per_client)
    stored = client.get(f"/scim/v2/Users/{user_id}", headers=handle.headers).json
    numbers = {p["value"] for p in stored["phoneNumbers"]}
    assert numbers == {f"{name}-{n}" for name in _WRITERS for n in range(per_client)}
    assert stored["meta"]["version"] == f'W/"{1 + len(_WRITERS) * per_client}"'


def test_a_stale_if_match_is_still_412(client: Any, make_seller: Any) -> None:
    handle = make_seller()
    created = client.post(
        "/scim/v2/Users", headers=handle.headers, json=user_body("etag@race.example.com")
    )
    user_id, version = created.json["id"], created.headers["ETag"]
    first = client.patch(
        f"/scim/v2/Users/{user_id}",
        headers={**handle.headers, "If-Match": version},
        json=patch_body({"op": "replace", "path": "title", "value": "first"}),
    )
    assert first.status_code == 200
    stale = client.patch(
        f"/scim/v2/Users/{user_id}",
        headers={**handle.headers, "If-Match": version},
        json=patch_body({"op": "replace", "path": "title", "value": "second"}),
    )
    assert_scim_error(stale, 412)
    assert client.get(f"/scim/v2/Users/{user_id}", headers=handle.headers).json["title"] == "first"


def test_a_patch_over_the_operation_cap_is_refused_at_once(client: Any, make_seller: Any) -> None:
    handle = make_seller()
    created = client.post(
        "/scim/v2/Users", headers=handle.headers, json=user_body("cap@limits.example.com")
    )
    user_id = created.json["id"]
    operation = {"op": "replace", "path": "title", "value": "t"}
    accepted = client.patch(
        f"/scim/v2/Users/{user_id}", headers=handle.headers, json=patch_body(*[operation] * 500)
    )
    assert accepted.status_code == 200
    refused = client.patch(
        f"/scim/v2/Users/{user_id}", headers=handle.headers, json=patch_body(*[operation] * 501)
    )
    assert_scim_error(refused, 400, "invalidValue", detail_has=("at most 500 operations",))


def _or_filter(terms: int) -> str:
    return " or ".join(f'userName eq "user{n}@limits.example.com"' for n in range(terms))


def test_filters_over_their_limits_are_invalid_filters(client: Any, make_seller: Any) -> None:
    handle = make_seller()
    client.post(
        "/scim/v2/Users", headers=handle.headers, json=user_body("user7@limits.example.com")
    )
    # 1,000 comparisons: within the limit, answered (not a 503 "database busy").
    wide = client.post(
        "/scim/v2/Users/.search",
        headers=handle.headers,
        json={
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
            "filter": _or_filter(1000),
        },
    )
    assert wide.status_code == 200, wide.get_data(as_text=True)
    assert wide.json["totalResults"] == 1
    too_wide = client.post(
        "/scim/v2/Users/.search",
        headers=handle.headers,
        json={
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
            "filter": _or_filter(1001),
        },
    )
    assert_scim_error(too_wide, 400, "invalidFilter", detail_has=("1000 comparisons",))
    nested = "not (" * 40 + 'userName eq "x"' + ")" * 40
    response = client.get("/scim/v2/Users", headers=handle.headers, query_string={"filter": nested})
    assert_scim_error(response, 400, "invalidFilter")


def test_paging_numbers_out_of_range_are_invalid(client: Any, make_seller: Any) -> None:
    handle = make_seller()
    for query in ({"startIndex": "99999999999999999999"}, {"startIndex": str(2**31)}):
        response = client.get("/scim/v2/Users", headers=handle.headers, query_string=query)
        assert_scim_error(response, 400, "invalidValue", detail_has=("startIndex",))
    # A count over the page size is brought down to it (RFC 7644 §3.4.2.4), not an error.
    huge = client.get(
        "/scim/v2/Users", headers=handle.headers, query_string={"count": "99999999999999999999"}
    )
    assert huge.status_code == 200 and huge.json["itemsPerPage"] == 1
