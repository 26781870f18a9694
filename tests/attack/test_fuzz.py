"""Property-based attacks on every endpoint: random methods, paths, bodies, filters, PATCH
operations and headers. Whatever arrives, the answer is never a 500 nor a traceback, every
error is a SCIM error, and a rejected request changes nothing in the store."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.attack.conftest import dump_store
from tests.conftest import PATCH_SCHEMA, SELLER_USER, USER_SCHEMA, user_body

ATTRIBUTES = [
    "userName",
    "displayName",
    "active",
    "emails",
    "emails.value",
    "emails.type",
    "name.givenName",
    "name",
    "meta.created",
    "meta.lastModified",
    "externalId",
    "id",
    "groups",
    "members",
    "members.value",
    "title",
    "phoneNumbers.value",
    f"{SELLER_USER}:role",
    f"{SELLER_USER}:permissions.category",
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
    "nonexistent",
    "emails[type",
    "x.y.z",
]
OPERATORS = [
    "eq",
    "ne",
    "co",
    "sw",
    "ew",
    "gt",
    "ge",
    "lt",
    "le",
    "pr",
    "EQ",
    "and",
    "or",
    "not",
    "bogus",
]
VALUES = [
    '"a"',
    '"A@B.example.com"',
    "true",
    "false",
    "null",
    "42",
    '"2024-01-01T00:00:00Z"',
    '"%"',
    '"_"',
    '"\\""',
    "(",
    ")",
    "[",
    "]",
]

filters = st.lists(st.sampled_from(ATTRIBUTES + OPERATORS + VALUES), min_size=1, max_size=8).map(
    " ".join
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False),
    st.text(max_size=30),
    st.sampled_from(["False", "True", "admin", "inventory", "primary"]),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.sampled_from(
                [a.split(".")[0] for a in ATTRIBUTES]
                + ["schemas", "Operations", "op", "path", "value", "method", "data", "bulkId"]
            ),
            children,
            max_size=5,
        ),
    ),
    max_leaves=12,
)
patch_ops = st.builds(
    lambda op, path, value: {
        k: v for k, v in {"op": op, "path": path, "value": value}.items() if v is not None
    },
    st.sampled_from(["add", "replace", "remove", "Add", "Replace", "Remove", "delete", ""]),
    st.one_of(
        st.none(),
        st.sampled_from(ATTRIBUTES),
        st.just('emails[type eq "work"].value'),
        st.just('members[value eq "x"]'),
    ),
    json_values,
)
bodies = st.one_of(
    json_values,
    st.builds(
        lambda ops: {"schemas": [PATCH_SCHEMA], "Operations": ops}, st.lists(patch_ops, max_size=4)
    ),
    st.builds(
        lambda extra: {**user_body("fuzz@fuzz.example.com"), **extra},
        st.dictionaries(st.sampled_from(ATTRIBUTES), json_values, max_size=3),
    ),
    st.builds(
        lambda ops: {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
            "Operations": ops,
        },
        st.lists(
            st.fixed_dictionaries(
                {
                    "method": st.sampled_from(["POST", "PUT", "PATCH", "DELETE", "GET"]),
                    "path": st.sampled_from(["/Users", "/Groups", "/Users/x", "/Bogus"]),
                    "data": json_values,
                }
            ),
            max_size=5,
        ),
    ),
)
raw_bodies = st.one_of(
    bodies.map(lambda b: json.dumps(b).encode()),
    st.binary(max_size=200),
    st.just(b"{"),
    st.just(b'{"schemas": ['),
    st.just(b"\xff\xfe"),
)
content_types = st.sampled_from(
    [
        "application/scim+json",
        "application/json",
        "text/plain",
        "application/xml",
        "",
        "application/scim+json; charset=utf-8",
        "multipart/form-data",
    ]
)


def _paths(user_id: str, group_id: str) -> st.SearchStrategy[str]:
    return st.sampled_from(
        [
            "/scim/v2/Users",
            f"/scim/v2/Users/{user_id}",
            "/scim/v2/Users/does-not-exist",
            "/scim/v2/Groups",
            f"/scim/v2/Groups/{group_id}",
            "/scim/v2/Bulk",
            "/scim/v2/.search",
            "/scim/v2/Users/.search",
            "/scim/v2/ServiceProviderConfig",
            "/scim/v2/Schemas",
            "/scim/v2/ResourceTypes",
            "/scim/v2/Me",
            "/scim/v2/Schemas/urn:bogus",
            "/scim/v2/",
            "/scim/v2/Users/../Groups",
            "/nowhere",
            "/healthz",
        ]
    )


def check_answer(response: Any) -> None:
    # 501 is a deliberate answer (/Me: a seller token stands for no user), never 500.
    assert response.status_code < 500 or response.status_code == 501, response.get_data(
        as_text=True
    )
    text = response.get_data(as_text=True)
    assert "Traceback" not in text
    # A HEAD answer has no body, by HTTP's rules.
    scim_error = response.status_code >= 400 and response.request.path.startswith("/scim/v2")
    if scim_error and response.request.method != "HEAD":
        assert response.headers["Content-Type"].startswith("application/scim+json")
        error = json.loads(text)
        assert error["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]
        assert str(error["status"]) == str(response.status_code)
        assert error.get("detail")


def test_random_requests_never_break_the_service(
    client: Any, make_seller: Any, connector: Any
) -> None:
    owner = make_seller()
    created = client.post(
        "/scim/v2/Users", headers=owner.headers, json=user_body("target@fuzz.example.com")
    )
    assert created.status_code == 201
    group = client.get("/scim/v2/Groups", headers=owner.headers).json["Resources"][0]["id"]
    user = created.json["id"]
    statuses: list[int] = []

    @settings(
        max_examples=250, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
    )
    @given(
        method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]),
        path=_paths(user, group),
        body=raw_bodies,
        content_type=content_types,
        query=st.dictionaries(
            st.sampled_from(
                [
                    "filter",
                    "sortBy",
                    "sortOrder",
                    "startIndex",
                    "count",
                    "cursor",
                    "attributes",
                    "excludedAttributes",
                ]
            ),
            st.one_of(filters, st.text(max_size=20), st.integers(-5, 10**6).map(str)),
            max_size=3,
        ),
        if_match=st.one_of(st.none(), st.sampled_from(['W/"1"', '"x"', "*", 'W/"999"', "garbage"])),
        authorized=st.booleans(),
    )
    def attack(
        method: str,
        path: str,
        body: bytes,
        content_type: str,
        query: dict[str, str],
        if_match: str | None,
        authorized: bool,
    ) -> None:
        headers = dict(owner.headers) if authorized else {}
        headers["Content-Type"] = content_type
        if if_match:
            headers["If-Match"] = if_match
        before = dump_store(connector)
        response = client.open(path, method=method, headers=headers, query_string=query, data=body)
        statuses.append(response.status_code)
        check_answer(response)
        if response.status_code >= 400:
            assert dump_store(connector) == before, (
                f"{method} {path} was refused but changed the store"
            )

    attack()
    # The attack reached both sides of the service: accepted and refused requests.
    assert len(statuses) >= 200
    assert any(s < 300 for s in statuses)
    assert any(400 <= s < 500 for s in statuses)


def test_random_user_bodies_are_accepted_or_refused_cleanly(
    client: Any, make_seller: Any, connector: Any
) -> None:
    owner = make_seller()

    @settings(
        max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
    )
    @given(
        extra=st.dictionaries(
            st.sampled_from([a for a in ATTRIBUTES if "[" not in a]), json_values, max_size=4
        ),
        extension=st.one_of(
            st.none(),
            st.dictionaries(
                st.sampled_from(["permissions", "notifications", "role", "administrator"]),
                json_values,
                max_size=3,
            ),
        ),
        local=st.text(alphabet="abcdefghij0123456789.-_", min_size=1, max_size=12),
    )
    def attack(extra: dict[str, Any], extension: dict[str, Any] | None, local: str) -> None:
        body = {**user_body(f"{local}@fuzz.example.com"), **extra}
        if extension is not None:
            body["schemas"] = [USER_SCHEMA, SELLER_USER]
            body[SELLER_USER] = extension
        before = dump_store(connector)
        response = client.post("/scim/v2/Users", headers=owner.headers, data=json.dumps(body))
        check_answer(response)
        if response.status_code >= 400:
            assert dump_store(connector) == before

    attack()


def test_the_store_comparison_covers_every_table(connector: Any) -> None:
    """A positive control of ``dump_store``: it sees every data table, and sees a change."""
    from connector.adapters.sql.tables import Base
    from tests.attack.conftest import NOT_DATA

    dumped = dump_store(connector)
    assert set(dumped) == set(Base.metadata.tables) - NOT_DATA
    with connector.uow() as uow:
        uow.markers.set("control", "x")
        uow.commit()
    assert dump_store(connector) != dumped


def test_authorized_bodies_reach_validation(client: Any, make_seller: Any, connector: Any) -> None:
    """With a valid token and a JSON content type, generated bodies get past authentication,
    routing and media type to the body's validation and the seller rules: the fuzzing above
    is not spent on 401s and 415s."""
    owner = make_seller()
    created = client.post(
        "/scim/v2/Users", headers=owner.headers, json=user_body("reach@fuzz.example.com")
    )
    user = created.json["id"]
    group = client.get("/scim/v2/Groups", headers=owner.headers).json["Resources"][0]["id"]
    statuses: list[int] = []
    validated: list[bool] = []

    @settings(
        max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
    )
    @given(
        target=st.sampled_from(
            [
                ("POST", "/scim/v2/Users"),
                ("PUT", f"/scim/v2/Users/{user}"),
                ("PATCH", f"/scim/v2/Users/{user}"),
                ("POST", "/scim/v2/Groups"),
                ("PATCH", f"/scim/v2/Groups/{group}"),
                ("POST", "/scim/v2/Bulk"),
                ("POST", "/scim/v2/.search"),
            ]
        ),
        body=bodies,
    )
    def attack(target: tuple[str, str], body: Any) -> None:
        method, path = target
        before = dump_store(connector)
        response = client.open(path, method=method, headers=owner.headers, data=json.dumps(body))
        statuses.append(response.status_code)
        check_answer(response)
        # Past authentication, routing and media type: a decision about the body itself.
        validated.append(response.status_code not in (401, 404, 405, 415, 429))
        if response.status_code >= 400:
            assert dump_store(connector) == before, f"{method} {path} refused but changed"

    attack()
    assert len(statuses) >= 150
    assert sum(validated) >= 0.9 * len(validated), statuses
    assert any(s < 300 for s in statuses) and any(400 <= s < 500 for s in statuses)


def test_the_webhook_endpoint_survives_fuzzing(
    sqlite_url: str, tmp_path: Any, monkeypatch: Any
) -> None:
    """Random, half-signed and well-signed deliveries to POST /keycloak/events: never a 500,
    always a JSON answer, and nothing stored for what is refused."""
    import time

    from connector.adapters.keycloak.webhook import (
        SECRET_ENV,
        SIGNATURE_HEADER,
        TIMESTAMP_HEADER,
        sign,
    )
    from connector.bootstrap import bootstrap
    from connector.entrypoints.web import create_app
    from tests.conftest import make_settings

    secret = b"fuzz-secret-" + b"x" * 20
    monkeypatch.setenv(SECRET_ENV, secret.decode())
    connector = bootstrap(make_settings(sqlite_url, tmp_path), migrate=False)
    client = create_app(connector).test_client()
    statuses: list[int] = []
    events = st.fixed_dictionaries(
        {
            "version": st.just(1),
            "id": st.one_of(st.text(max_size=20), st.uuids().map(str)),
            "kind": st.sampled_from(
                ["disabled", "enabled", "roles-added", "group-added", "login", "bogus", ""]
            ),
            "time": st.one_of(st.integers(0, 2**45), st.text(max_size=5), st.none()),
            "source": st.sampled_from(["admin-event", "user-event", "guard"]),
        },
        optional={"user": json_values, "group": json_values, "roles": json_values},
    )

    # Well-formed events about users this connector does not know: accepted and ignored.
    plausible = st.fixed_dictionaries(
        {
            "version": st.just(1),
            "id": st.uuids().map(str),
            "kind": st.sampled_from(["disabled", "login", "roles-added", "delete-refused"]),
            "time": st.integers(10**12, 2 * 10**12),
            "source": st.just("admin-event"),
            "type": st.just("USER/UPDATE"),
            "user": st.fixed_dictionaries({"id": st.uuids().map(str)}),
            "roles": st.lists(st.sampled_from(["pricing:edit", "bogus"]), max_size=2),
        }
    )

    @settings(
        max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
    )
    @given(
        body=st.one_of(
            plausible.map(lambda e: json.dumps(e).encode()),
            events.map(lambda e: json.dumps(e).encode()),
            raw_bodies,
        ),
        signing=st.sampled_from(["good", "bad", "none", "stale", "unicode"]),
    )
    def attack(body: bytes, signing: str) -> None:
        now = int(time.time())
        headers = {"Content-Type": "application/json"}
        if signing == "good":
            headers |= {TIMESTAMP_HEADER: str(now), SIGNATURE_HEADER: sign(secret, now, body)}
        elif signing == "bad":
            headers |= {TIMESTAMP_HEADER: str(now), SIGNATURE_HEADER: "v1=" + "0" * 64}
        elif signing == "stale":
            headers |= {
                TIMESTAMP_HEADER: str(now - 3600),
                SIGNATURE_HEADER: sign(secret, now - 3600, body),
            }
        elif signing == "unicode":
            headers |= {TIMESTAMP_HEADER: "\u0661\u0662\u0663", SIGNATURE_HEADER: "v1=0"}
        before = dump_store(connector)
        response = client.post("/keycloak/events", data=body, headers=headers)
        statuses.append(response.status_code)
        assert response.status_code in (202, 400, 401, 409), response.get_data(as_text=True)
        answer = response.get_json()
        assert isinstance(answer, dict) and "Traceback" not in response.get_data(as_text=True)
        if response.status_code != 202:
            assert dump_store(connector) == before

    attack()
    assert {202, 400, 401} <= set(statuses)
