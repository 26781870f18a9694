"""The operator API (issue 15): every endpoint over HTTP, its authorization (a read-only
operator cannot write, a seller's SCIM token is refused, an unknown operator is 401), its
problems for bad input (never a 500), its OpenAPI document (validated), the operator
credentials the CLI issues, the audit of every call, and the feed of changes of a scripted
scenario, each change once and in order.

Every test runs on SQLite and on PostgreSQL (the ``database_url`` fixture).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from click.testing import Result
from openapi_spec_validator import validate

from connector.bootstrap import Connector
from connector.domain.drafts import Actor
from connector.ports.identity import ProviderChange
from connector.services import operators as operator_cases
from connector.services import sellers as seller_cases
from connector.services.console import apply_pushed
from connector.services.users import expire_invitations
from tests.conftest import SELLER_USER, SellerHandle, user_body
from tests.http.conftest import patch_body, store_dump
from tests.support.smtp import SmtpSink

API = "/operator/v1"
PROBLEM = "application/problem+json"


@pytest.fixture
def credentials(connector: Connector) -> dict[str, str]:
    """An admin, a read-only and a revoked operator credential."""
    issued = {}
    with connector.uow() as uow:
        for name, scope in (("alice", "admin"), ("bob", "read"), ("gone", "admin")):
            _, issued[name] = operator_cases.create_operator(
                uow, name, operator_cases.Scope(scope), Actor("test")
            )
        operator_cases.revoke_operator(uow, "gone", Actor("test"))
    return issued


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def assert_problem(response: Any, status: int, *fragments: str) -> dict[str, Any]:
    """An RFC 7807 problem: the status in the line and the body, a detail a person can act on."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.headers["Content-Type"].startswith(PROBLEM)
    body = response.get_json(force=True)
    assert body["status"] == status and body["title"]
    assert body["detail"].strip() and "Traceback" not in body["detail"]
    for fragment in fragments:
        assert fragment.lower() in body["detail"].lower(), body["detail"]
    return body


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.headers["Content-Type"].startswith("application/json")
    return response.get_json()


def new_seller(client: Any, credential: str, **overrides: Any) -> dict[str, Any]:
    suffix = uuid.uuid4().hex[:6]
    body = {
        "name": f"Op Seller {suffix}",
        "plan": "professional",
        "primary_email": f"owner-{suffix}@op-{suffix}.example.com",
        "primary_name": "Olive Owner",
        **overrides,
    }
    return ok(client.post(f"{API}/sellers", json=body, headers=bearer(credential)), 201)


def scim(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"}


def calls(seller_id: str, token_id: str) -> list[tuple[str, str, Any]]:
    """Every operation of the API (method, path, body) against one seller."""
    base = f"{API}/sellers/{seller_id}"
    return [
        ("GET", f"{API}/sellers", None),
        (
            "POST",
            f"{API}/sellers",
            {
                "name": "X",
                "plan": "individual",
                "primary_email": "x@x.example.com",
                "primary_name": "X Y",
            },
        ),
        ("GET", base, None),
        ("PUT", f"{base}/plan", {"plan": "individual"}),
        ("PUT", f"{base}/partners", {"domains": ["partner.example.com"]}),
        ("POST", f"{base}/tokens", {"label": "okta"}),
        ("GET", f"{base}/tokens", None),
        ("DELETE", f"{base}/tokens/{token_id}", None),
        ("GET", f"{base}/notifications/orders/recipients", None),
        ("GET", f"{base}/access-review", None),
        ("GET", f"{base}/audit", None),
        ("POST", f"{base}/primary-change", {"new_email": "heir@x.example.com"}),
        ("GET", f"{API}/events", None),
    ]


def send(client: Any, method: str, path: str, body: Any, headers: dict[str, str]) -> Any:
    return client.open(path, method=method, json=body, headers=headers)


# -- The OpenAPI document ---------------------------------------------------------------------


def test_the_openapi_document_validates_and_describes_every_route(app: Any, client: Any) -> None:
    response = client.get(f"{API}/openapi.json")  # public, like SCIM discovery
    document = ok(response)
    validate(document)  # raises on any violation of the OpenAPI 3.1 schema
    assert document["openapi"].startswith("3.1")
    documented = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
    }
    served = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith(API) or rule.endpoint.startswith("operator_api.openapi"):
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        served |= {(m, path) for m in rule.methods - {"HEAD", "OPTIONS"}}
    assert served and documented == served
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert operation["summary"], (method, path)
            assert {"401", "403"} <= set(operation["responses"]), (method, path)
            assert set(operation["responses"]["401"]["content"]) == {PROBLEM}
    assert document["components"]["securitySchemes"]["operator"]["scheme"] == "bearer"
    schemas = document["components"]["schemas"]
    assert schemas["SellerCreate"]["additionalProperties"] is False


# -- Authorization ------------------------------------------------------------------------------


def test_authorization_on_every_endpoint(
    client: Any, connector: Connector, credentials: dict[str, str], make_seller: Any
) -> None:
    handle: SellerHandle = make_seller()
    token_id = handle.token.removeprefix("scn_").split(".")[0]
    operations = calls(handle.seller.id, token_id)
    before = store_dump(connector)
    unknown = "sco_0123456789abcdef.not-a-secret-anyone-was-given"
    for method, path, body in operations:
        assert_problem(send(client, method, path, body, {}), 401, "operators create")
        assert_problem(send(client, method, path, body, bearer(unknown)), 401)
        assert_problem(send(client, method, path, body, bearer(credentials["gone"])), 401)
        assert_problem(send(client, method, path, body, {"Authorization": "Basic abc"}), 401)
        # A seller's SCIM token is never an operator credential, valid or not.
        assert_problem(send(client, method, path, body, bearer(handle.token)), 403, "SCIM token")
        if method != "GET":
            assert_problem(
                send(client, method, path, body, bearer(credentials["bob"])), 403, "read scope"
            )
        else:
            assert send(client, method, path, body, bearer(credentials["bob"])).status_code == 200
    after = store_dump(connector)
    # Nothing changed but the audit of the looks and refused writes, and the feed's bookkeeping.
    bookkeeping = ("audit_events", "change_feed", "sync_markers")
    assert {k: v for k, v in after.items() if k not in bookkeeping} == {
        k: v for k, v in before.items() if k not in bookkeeping
    }
    with connector.uow() as uow:
        refused = [e for e in uow.operators.audit(None, 1000) if e.action == "operator.refused"]
    assert len(refused) == sum(1 for m, _, _ in operations if m != "GET")
    assert {e.actor for e in refused} == {"operator:bob"}
    # The SCIM token still works where it belongs.
    assert client.get("/scim/v2/Users", headers=scim(handle.token)).status_code == 200


def test_repeated_failures_are_braked(client: Any, connector: Connector, tmp_path: Any) -> None:
    from connector.entrypoints.web import create_app
    from tests.conftest import make_settings

    strict = create_app(
        type(connector)(
            settings=make_settings(str(connector.engine.url), tmp_path, auth_failures_per_minute=3),
            catalogue=connector.catalogue,
            engine=connector.engine,
        )
    ).test_client()
    statuses = [
        strict.get(f"{API}/sellers", headers=bearer("sco_abc.wrong")).status_code for _ in range(5)
    ]
    assert statuses[:3] == [401, 401, 401] and statuses[3:] == [429, 429]
    braked = strict.get(f"{API}/sellers", headers=bearer("sco_abc.wrong"))
    assert int(braked.headers["Retry-After"]) >= 1
    assert_problem(braked, 429, "retry in")


# -- Sellers and tokens -------------------------------------------------------------------------


def test_sellers_plan_partners_and_tokens(
    client: Any, connector: Connector, credentials: dict[str, str]
) -> None:
    admin, reader = credentials["alice"], credentials["bob"]
    created = new_seller(client, admin)
    seller, token = created["seller"], created["token"]
    assert seller["plan"] == "professional" and seller["users"] == 1
    assert seller["primary_user"]["email"].startswith("owner-")
    assert token["token"].startswith("scn_") and token["label"] == "initial"
    # The issued SCIM token works for this seller.
    users = client.get("/scim/v2/Users", headers=scim(token["token"]))
    assert users.status_code == 200 and users.get_json()["totalResults"] == 1

    # Read by id or by unique name; listed.
    assert (
        ok(client.get(f"{API}/sellers/{seller['id']}", headers=bearer(reader)))["id"]
        == seller["id"]
    )
    by_name = client.get(f"{API}/sellers/{seller['name']}", headers=bearer(reader))
    assert ok(by_name)["id"] == seller["id"]
    listed = ok(client.get(f"{API}/sellers", headers=bearer(reader)))["sellers"]
    assert seller["id"] in [s["id"] for s in listed]
    # The same name twice, or a used address: 409 with the reason.
    assert_problem(
        client.post(
            f"{API}/sellers",
            json={
                "name": seller["name"],
                "plan": "individual",
                "primary_email": "n@n.example.com",
                "primary_name": "N N",
            },
            headers=bearer(admin),
        ),
        409,
        "already exists",
    )

    # Plan: an individual seller may not add secondary users (SCIM says why).
    changed = ok(
        client.put(
            f"{API}/sellers/{seller['id']}/plan", json={"plan": "individual"}, headers=bearer(admin)
        )
    )
    assert changed["plan"] == "individual"
    refused = client.post(
        "/scim/v2/Users", json=user_body("sam@op.example.com"), headers=scim(token["token"])
    )
    assert refused.status_code == 403
    ok(
        client.put(
            f"{API}/sellers/{seller['id']}/plan",
            json={"plan": "professional"},
            headers=bearer(admin),
        )
    )

    # Partners: their people are not users.
    partners = ok(
        client.put(
            f"{API}/sellers/{seller['id']}/partners",
            json={"domains": ["Agency.Example.com"]},
            headers=bearer(admin),
        )
    )
    assert partners["partner_domains"] == ["agency.example.com"]
    partner_user = client.post(
        "/scim/v2/Users", json=user_body("pat@agency.example.com"), headers=scim(token["token"])
    )
    assert partner_user.status_code == 400 and "partner" in partner_user.get_data(as_text=True)

    # Tokens: issue (shown once), list (never secrets), revoke (refused at once).
    issued = ok(
        client.post(
            f"{API}/sellers/{seller['id']}/tokens", json={"label": "okta"}, headers=bearer(admin)
        ),
        201,
    )
    assert client.get("/scim/v2/Users", headers=scim(issued["token"])).status_code == 200
    listed_tokens = ok(client.get(f"{API}/sellers/{seller['id']}/tokens", headers=bearer(reader)))[
        "tokens"
    ]
    assert {t["label"] for t in listed_tokens} == {"initial", "okta"}
    assert "token" not in json.dumps(listed_tokens).replace('"tokens"', "")
    secret = issued["token"].split(".", 1)[1]
    assert secret not in json.dumps(listed_tokens)
    revoked = ok(
        client.delete(f"{API}/sellers/{seller['id']}/tokens/{issued['id']}", headers=bearer(admin))
    )
    assert revoked["revoked_at"] is not None
    assert client.get("/scim/v2/Users", headers=scim(issued["token"])).status_code == 401

    # Tenant isolation: another seller's token is not found through this seller.
    other = new_seller(client, admin)
    assert_problem(
        client.delete(
            f"{API}/sellers/{seller['id']}/tokens/{other['token']['id']}", headers=bearer(admin)
        ),
        404,
    )
    assert client.get("/scim/v2/Users", headers=scim(other["token"]["token"])).status_code == 200
    assert_problem(client.get(f"{API}/sellers/no-such-seller", headers=bearer(reader)), 404)

    # Every change is in the seller's audit trail under the operator's name; looks too.
    trail = ok(client.get(f"{API}/sellers/{seller['id']}/audit?limit=1000", headers=bearer(reader)))
    by_alice = {e["action"] for e in trail["events"] if e["actor"] == "operator:alice"}
    assert {
        "seller.created",
        "token.issued",
        "seller.plan",
        "seller.partners",
        "token.revoked",
    } <= by_alice
    looked = {
        e["changes"]["what"]
        for e in trail["events"]
        if e["actor"] == "operator:bob" and e["action"] == "operator.viewed"
    }
    assert {"seller", "tokens"} <= looked
    with connector.uow() as uow:
        across = [e for e in uow.operators.audit(None, 1000) if e.action == "operator.viewed"]
    assert ("operator:bob", "sellers") in {(e.actor, e.changes["what"]) for e in across}


# -- What the marketplace reads -----------------------------------------------------------------


def test_recipients_access_review_and_paged_audit(
    client: Any, credentials: dict[str, str], make_seller: Any
) -> None:
    reader = credentials["bob"]
    handle: SellerHandle = make_seller()
    ext = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", SELLER_USER]}

    def add(name: str, notifications: list[str], **extra: Any) -> dict[str, Any]:
        body = user_body(
            f"{name}@readers.example.com",
            **ext,
            **{SELLER_USER: {"notifications": notifications}},
            **extra,
        )
        response = client.post("/scim/v2/Users", json=body, headers=handle.headers)
        assert response.status_code == 201, response.get_data(as_text=True)
        return response.get_json()

    zoe = add("zoe", ["orders"])
    amy = add("amy", ["orders", "deals"])
    add("max", ["deals"])
    gone = add("gone", ["orders"])
    client.patch(
        f"/scim/v2/Users/{gone['id']}",
        json=patch_body({"op": "replace", "path": "active", "value": False}),
        headers=handle.headers,
    )

    url = f"{API}/sellers/{handle.seller.id}/notifications/orders/recipients"
    found = ok(client.get(url, headers=bearer(reader)))
    assert found == {
        "category": "orders",
        "recipients": [
            {"id": handle.primary.id, "email": handle.primary.user_name, "role": "primary"},
            {"id": amy["id"], "email": "amy@readers.example.com", "role": "secondary"},
            {"id": zoe["id"], "email": "zoe@readers.example.com", "role": "secondary"},
        ],
    }
    # A change of subscription shows at once (the index is written with the user).
    client.patch(
        f"/scim/v2/Users/{zoe['id']}",
        json=patch_body(
            {"op": "replace", "path": f"{SELLER_USER}:notifications", "value": ["deals"]}
        ),
        headers=handle.headers,
    )
    emails = [r["email"] for r in ok(client.get(url, headers=bearer(reader)))["recipients"]]
    assert emails == [handle.primary.user_name, "amy@readers.example.com"]
    assert_problem(
        client.get(
            f"{API}/sellers/{handle.seller.id}/notifications/weather/recipients",
            headers=bearer(reader),
        ),
        400,
        "weather",
    )

    review = ok(
        client.get(f"{API}/sellers/{handle.seller.id}/access-review", headers=bearer(reader))
    )
    assert review["seller"]["id"] == handle.seller.id
    primary = next(u for u in review["users"] if u["role"] == "primary")
    assert primary["administrator"] is True
    assert {g["level"] for g in primary["effective_permissions"]} == {"admin"}

    # The audit trail, paged: every event once, in order, however small the pages.
    seen: list[int] = []
    after: str | None = None
    while True:
        query = f"?limit=2&after={after}" if after else "?limit=2"
        page = ok(
            client.get(f"{API}/sellers/{handle.seller.id}/audit{query}", headers=bearer(reader))
        )
        seen.extend(e["id"] for e in page["events"])
        after = page["next"]
        if after is None:
            break
    assert seen == sorted(set(seen)) and len(seen) >= 6
    assert_problem(
        client.get(f"{API}/sellers/{handle.seller.id}/audit?limit=0", headers=bearer(reader)),
        400,
        "limit",
    )
    assert_problem(
        client.get(f"{API}/sellers/{handle.seller.id}/audit?after=x", headers=bearer(reader)),
        400,
        "after",
    )


def test_starting_a_change_of_primary(
    client: Any,
    connector: Connector,
    credentials: dict[str, str],
    make_seller: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    admin = credentials["alice"]
    handle: SellerHandle = make_seller()
    url = f"{API}/sellers/{handle.seller.id}/primary-change"
    # No mail server: 503, and nothing is kept.
    monkeypatch.delenv("SELLER_CONNECTOR_SMTP_HOST", raising=False)
    assert_problem(
        client.post(url, json={"new_email": "heir@op.example.com"}, headers=bearer(admin)),
        503,
        "nothing was changed",
    )
    with connector.uow() as uow:
        assert not [
            e for e in uow.audit.list(handle.seller.id) if e.action == "primary.change-requested"
        ]
    # An active secondary user must be deactivated first (the rule, as the CLI says it).
    heir = client.post(
        "/scim/v2/Users", json=user_body("heir@op.example.com"), headers=handle.headers
    ).get_json()
    with SmtpSink() as sink:
        monkeypatch.setenv("SELLER_CONNECTOR_SMTP_HOST", sink.host)
        monkeypatch.setenv("SELLER_CONNECTOR_SMTP_PORT", str(sink.port))
        assert_problem(
            client.post(url, json={"new_email": "heir@op.example.com"}, headers=bearer(admin)),
            403,
            "Deactivate it first",
        )
        client.patch(
            f"/scim/v2/Users/{heir['id']}",
            json=patch_body({"op": "replace", "path": "active", "value": False}),
            headers=handle.headers,
        )
        started = ok(
            client.post(url, json={"new_email": "heir@op.example.com"}, headers=bearer(admin)), 202
        )
        assert (
            started["status"] == "awaiting-confirmation"
            and started["new_email"] == "heir@op.example.com"
        )
        mail = sink.wait_for_recipient("heir@op.example.com")
        assert "/operator/confirm-primary/" in mail.text
        assert_problem(
            client.post(url, json={"new_email": "not an address"}, headers=bearer(admin)), 400
        )
    with connector.uow() as uow:
        requested = [
            e for e in uow.audit.list(handle.seller.id) if e.action == "primary.change-requested"
        ]
    assert [e.actor for e in requested] == ["operator:alice"]


# -- Bad input -----------------------------------------------------------------------------------


def test_bad_input_is_a_clear_problem_and_changes_nothing(
    client: Any, connector: Connector, credentials: dict[str, str], make_seller: Any
) -> None:
    admin = bearer(credentials["alice"])
    handle: SellerHandle = make_seller()
    base = f"{API}/sellers/{handle.seller.id}"
    before = store_dump(connector)
    cases = [
        (
            "POST",
            f"{API}/sellers",
            {
                "name": "A",
                "plan": "gold",
                "primary_email": "a@a.example.com",
                "primary_name": "A A",
            },
            400,
            "plan",
        ),
        (
            "POST",
            f"{API}/sellers",
            {
                "name": "A",
                "plan": "individual",
                "primary_email": "a@a.example.com",
                "primary_name": "A A",
                "owner": 1,
            },
            400,
            "owner",
        ),
        ("POST", f"{API}/sellers", {"plan": "individual"}, 400, "name"),
        (
            "POST",
            f"{API}/sellers",
            {
                "name": "x" * 500,
                "plan": "individual",
                "primary_email": "a@a.example.com",
                "primary_name": "A A",
            },
            400,
            "name",
        ),
        (
            "POST",
            f"{API}/sellers",
            {
                "name": "A\u200b",
                "plan": "individual",
                "primary_email": "a@a.example.com",
                "primary_name": "A A",
            },
            400,
            "invisible",
        ),
        (
            "POST",
            f"{API}/sellers",
            {"name": "A", "plan": "individual", "primary_email": "nobody", "primary_name": "A A"},
            400,
            "not an email",
        ),
        ("POST", f"{API}/sellers", [1, 2], 400, ""),
        ("PUT", f"{base}/plan", {"plan": None}, 400, "plan"),
        ("PUT", f"{base}/partners", {"domains": "x.example.com"}, 400, "domains"),
        ("PUT", f"{base}/partners", {"domains": ["a.example.com"] * 101}, 400, "domains"),
        ("POST", f"{base}/tokens", {"label": 7}, 400, "label"),
        ("POST", f"{base}/primary-change", {}, 400, "new_email"),
        ("DELETE", f"{base}/tokens/../../x", None, 404, ""),
        ("DELETE", f"{base}/tokens/nope-nope", None, 404, ""),
        ("GET", f"{API}/sellers/%00", None, 404, ""),
        ("GET", f"{API}/sellers/{'x' * 5000}", None, 404, ""),
        ("GET", f"{API}/events?after=-1", None, 400, "cursor"),
        ("GET", f"{API}/events?after=abc", None, 400, "cursor"),
        ("GET", f"{API}/events?limit=100000", None, 400, "limit"),
        ("GET", f"{API}/nowhere", None, 404, "openapi.json"),
        ("PATCH", f"{base}/plan", {"plan": "individual"}, 405, ""),
    ]
    for method, path, body, status, fragment in cases:
        response = send(client, method, path, body, admin)
        assert_problem(response, status, fragment)
    # Not JSON, or not well-formed JSON.
    as_text = client.put(
        f"{base}/plan", data="plan=individual", headers={**admin, "Content-Type": "text/plain"}
    )
    assert_problem(as_text, 415, "application/json")
    broken = client.put(
        f"{base}/plan", data='{"plan": ', headers={**admin, "Content-Type": "application/json"}
    )
    assert_problem(broken, 400, "well-formed")
    huge = client.post(
        f"{base}/tokens",
        data=b"{" + b" " * (3 * 1024 * 1024) + b"}",
        headers={**admin, "Content-Type": "application/json"},
    )
    assert_problem(huge, 413)
    assert store_dump(connector) == before


# -- The operators' credentials, from the command line ----------------------------------------


def test_operator_credentials_from_the_cli(client: Any, run_cli: Callable[..., Result]) -> None:
    created = json.loads(run_cli("operators", "create", "Carol.Ops", "--scope", "admin").stdout)
    assert created["name"] == "Carol.Ops" and created["scope"] == "admin"
    credential = created["credential"]
    assert credential.startswith("sco_")
    reader = json.loads(run_cli("operators", "create", "dave", "--scope", "read").stdout)
    assert ok(client.get(f"{API}/sellers", headers=bearer(credential)))["sellers"] == []
    new_seller(client, credential)
    assert_problem(
        client.post(f"{API}/sellers", json={}, headers=bearer(reader["credential"])), 403
    )

    again = run_cli("operators", "create", "carol.ops", "--scope", "read", ok=False)
    assert again.exit_code != 0 and "already exists" in again.output
    bad = run_cli("operators", "create", "not a name", "--scope", "read", ok=False)
    assert bad.exit_code != 0 and "operator name" in bad.output
    listed = json.loads(run_cli("operators", "list", "--format", "json").stdout)
    assert {o["name"] for o in listed} == {"Carol.Ops", "dave"}
    secret = credential.split(".", 1)[1]
    assert secret not in json.dumps(listed)

    run_cli("operators", "revoke", "Carol.Ops")
    assert_problem(client.get(f"{API}/sellers", headers=bearer(credential)), 401)
    audit = json.loads(run_cli("operators", "audit", "--format", "json").stdout)
    actions = [(e["action"], e["changes"].get("name")) for e in audit]
    assert ("operator.created", "Carol.Ops") in actions and (
        "operator.revoked",
        "Carol.Ops",
    ) in actions
    assert all(secret not in json.dumps(e) for e in audit)


# -- The feed of changes ---------------------------------------------------------------------------


def _follow(
    client: Any, credential: str, after: str | None = None, limit: int = 3, **params: str
) -> tuple[list[dict[str, Any]], str]:
    """Read the feed from ``after`` to its end, a page at a time."""
    events: list[dict[str, Any]] = []
    while True:
        query = {"limit": str(limit), **params, **({"after": after} if after else {})}
        page = ok(client.get(f"{API}/events", query_string=query, headers=bearer(credential)))
        events.extend(page["events"])
        assert page["next"] == (page["events"][-1]["cursor"] if page["events"] else (after or "0"))
        after = page["next"]
        if not page["more"]:
            return events, after


def test_the_feed_returns_every_change_of_a_scenario_once_in_order(
    client: Any,
    connector: Connector,
    credentials: dict[str, str],
    run_cli: Callable[..., Result],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    admin, reader = credentials["alice"], credentials["bob"]
    _, start = _follow(client, reader)
    seller = new_seller(client, admin)
    sid, token = seller["seller"]["id"], seller["token"]["token"]
    other = new_seller(client, admin)

    def post(name: str, **extra: Any) -> dict[str, Any]:
        response = client.post(
            "/scim/v2/Users",
            json=user_body(f"{name}@feed.example.com", **extra),
            headers=scim(token),
        )
        assert response.status_code == 201, response.get_data(as_text=True)
        return response.get_json()

    def patch(user: dict[str, Any], *operations: dict[str, Any]) -> None:
        response = client.patch(
            f"/scim/v2/Users/{user['id']}", json=patch_body(*operations), headers=scim(token)
        )
        assert response.status_code == 200, response.get_data(as_text=True)

    expected: list[tuple[str, str]] = []
    ann = post("ann")
    expected.append(("created", ann["id"]))
    ben = post("ben")
    expected.append(("created", ben["id"]))
    cid = post("cid")
    expected.append(("created", cid["id"]))
    patch(
        ann,
        {
            "op": "replace",
            "path": f"{SELLER_USER}:permissions",
            "value": [{"category": "pricing", "level": "edit"}],
        },
    )
    expected.append(("permissions-changed", ann["id"]))
    patch(ann, {"op": "replace", "path": "name.givenName", "value": "Annie"})  # not a feed change
    other_user = client.post(
        "/scim/v2/Users",
        json=user_body("noise@other.example.com"),
        headers=scim(other["token"]["token"]),
    )
    assert other_user.status_code == 201
    groups = client.get("/scim/v2/Groups", headers=scim(token)).get_json()["Resources"]
    handlers = next(g for g in groups if g["displayName"] == "Order handlers")
    joined = client.patch(
        f"/scim/v2/Groups/{handlers['id']}",
        json=patch_body({"op": "add", "path": "members", "value": [{"value": ben["id"]}]}),
        headers=scim(token),
    )
    assert joined.status_code == 200
    expected.append(("permissions-changed", f"group:{handlers['id']}"))
    accepted = apply_pushed(
        connector.uow,
        connector.catalogue,
        ProviderChange(
            provider_user_id=f"kc-{ben['id']}",
            kind="invitation-accepted",
            at=dt.datetime.now(dt.UTC),
            event_id=uuid.uuid4().hex,
            details={"connector_user_id": ben["id"], "seller_id": sid},
        ),
    )
    assert accepted.result == "applied"
    expected.append(("accepted", ben["id"]))
    patch(ben, {"op": "replace", "path": "active", "value": False})
    expected.append(("deactivated", ben["id"]))
    run_cli("users", "reactivate", sid, ben["id"])
    expected.append(("reactivated", ben["id"]))
    run_cli("users", "resend-invitation", sid, cid["id"])
    expected.append(("invited", cid["id"]))
    assert client.delete(f"/scim/v2/Users/{cid['id']}", headers=scim(token)).status_code == 204
    expected.append(("deactivated", cid["id"]))
    assert expire_invitations(connector.uow(), dt.datetime.now(dt.UTC) + dt.timedelta(days=30)) >= 1
    expected.append(("deactivated", ann["id"]))  # its invitation lapsed unaccepted
    with SmtpSink() as sink:
        monkeypatch.setenv("SELLER_CONNECTOR_SMTP_HOST", sink.host)
        monkeypatch.setenv("SELLER_CONNECTOR_SMTP_PORT", str(sink.port))
        ok(
            client.post(
                f"{API}/sellers/{sid}/primary-change",
                json={"new_email": "heir@feed.example.com"},
                headers=bearer(admin),
            ),
            202,
        )
        link = sink.wait_for_recipient("heir@feed.example.com").text
    secret = re.search(r"/operator/confirm-primary/([A-Za-z0-9_-]+)", link).group(1)  # type: ignore[union-attr]
    heir, _ = seller_cases.confirm_primary_change(
        connector.uow(), connector.catalogue, secret, Actor("primary:confirmation-link")
    )
    expected.append(("primary-changed", heir.id))

    # Every seller's feed, from before the scenario, in small pages.
    events, end = _follow(client, reader, start)
    ours = [e for e in events if e["seller_id"] == sid]
    keyed = [(e["type"], e["target"].removeprefix("user:")) for e in ours]
    assert keyed == expected
    assert [e["cursor"] for e in events] == sorted({e["cursor"] for e in events}, key=int)
    assert any(e["seller_id"] == other["seller"]["id"] for e in events)
    group_change = next(
        e for e in ours if e["type"] == "permissions-changed" and e["target"].startswith("group:")
    )
    assert group_change["users"] == [ben["id"]]
    deactivations = [e for e in ours if e["type"] == "deactivated"]
    assert [e["action"] for e in deactivations] == [
        "user.deactivated",
        "user.deleted",
        "user.invitation-expired",
    ]

    # One seller's feed is the same changes; following again from the end gives nothing.
    only, _ = _follow(client, reader, start, limit=100, seller=sid)
    assert [e["cursor"] for e in only] == [e["cursor"] for e in ours]
    again, still = _follow(client, reader, end)
    assert again == [] and still == end
    # A change made later comes next, once.
    patch(ben, {"op": "replace", "path": "active", "value": False})
    later, _ = _follow(client, reader, end)
    assert [(e["type"], e["target"]) for e in later] == [("deactivated", f"user:{ben['id']}")]


def test_the_cli_reads_the_same_feed(
    client: Any, credentials: dict[str, str], run_cli: Callable[..., Result]
) -> None:
    seller = new_seller(client, credentials["alice"])
    response = client.post(
        "/scim/v2/Users",
        json=user_body("eve@cli-feed.example.com"),
        headers=scim(seller["token"]["token"]),
    )
    assert response.status_code == 201
    api, _ = _follow(client, credentials["bob"], limit=100, seller=seller["seller"]["id"])
    cli = json.loads(run_cli("events", "--seller", seller["seller"]["id"]).stdout)
    assert cli["events"] == api and cli["more"] is False
    assert [e["type"] for e in api] == ["created"]


@pytest.fixture(autouse=True)
def _no_mail_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The connector's own SMTP only where a test sets it."""
    monkeypatch.delenv("SELLER_CONNECTOR_SMTP_HOST", raising=False)
    yield
