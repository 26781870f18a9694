"""Authentication: tokens stored hashed, every kind of bad token answered alike, revocation
at once, and a brake (429 with Retry-After) on repeated failures from one address."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from connector.bootstrap import Connector, bootstrap
from connector.domain.drafts import Actor
from connector.domain.model import Plan
from connector.entrypoints.web import create_app
from connector.services import sellers as seller_cases
from tests.conftest import make_settings


def test_tokens_are_stored_only_as_hashes(
    connector: Connector, make_seller: Any, sqlite_url: str
) -> None:
    handle = make_seller()
    secret = handle.token.partition(".")[2]
    database = Path(sqlite_url.removeprefix("sqlite:///"))
    connector.engine.dispose()  # flush the WAL into the file we read
    stored = b"".join(p.read_bytes() for p in database.parent.glob(database.name + "*"))
    assert secret.encode() not in stored
    assert seller_cases.hash_secret(secret).encode() in stored


def test_every_bad_token_gets_the_same_answer(client: Any, make_seller: Any) -> None:
    handle = make_seller()
    token_id = handle.token.removeprefix("scn_").partition(".")[0]
    presented = [
        None,
        "Basic YWRtaW46YWRtaW4=",
        "Bearer",
        "Bearer nonsense",
        f"Bearer scn_{token_id}.wrong-secret",
        "Bearer scn_0000000000000000.wrong-secret",
        f"Bearer {handle.token}x",
        "Bearer " + "a" * 5000,
    ]
    bodies = set()
    for header in presented:
        headers = {"Authorization": header} if header else {}
        response = client.get("/scim/v2/Users", headers=headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        bodies.add(response.get_data(as_text=True))
    # Whether the seller, the token id or nothing exists, the answer says the same.
    assert len(bodies) == 1


def test_revocation_is_immediate(client: Any, make_seller: Any, connector: Connector) -> None:
    handle = make_seller()
    assert client.get("/scim/v2/Users", headers=handle.headers).status_code == 200
    token_id = handle.token.removeprefix("scn_").partition(".")[0]
    with connector.uow() as uow:
        seller_cases.revoke_token(uow, handle.seller, token_id, Actor("test"))
        uow.commit()
    assert client.get("/scim/v2/Users", headers=handle.headers).status_code == 401


@pytest.fixture
def braked_client(sqlite_url: str, tmp_path: Path) -> Any:
    connector = bootstrap(
        make_settings(sqlite_url, tmp_path, auth_failures_per_minute=5), migrate=False
    )
    return create_app(connector).test_client(), connector


def test_repeated_failures_are_braked(braked_client: Any) -> None:
    client, connector = braked_client
    with connector.uow() as uow:
        seller, _ = seller_cases.create_seller(
            uow,
            connector.catalogue,
            "Brake Test",
            Plan.professional,
            "o@brake.example.com",
            "O O",
            Actor("t"),
        )
        _, token = seller_cases.issue_token(uow, seller, "t", Actor("t"))
        uow.commit()
    attacker = {"REMOTE_ADDR": "192.0.2.10"}
    for _ in range(5):
        assert (
            client.get(
                "/scim/v2/Users", headers={"Authorization": "Bearer guess"}, environ_base=attacker
            ).status_code
            == 401
        )
    braked = client.get(
        "/scim/v2/Users", headers={"Authorization": "Bearer guess"}, environ_base=attacker
    )
    assert braked.status_code == 429
    assert int(braked.headers["Retry-After"]) > 0
    assert braked.json["status"] == "429"
    # Even the right token waits while its address is braked; other addresses are served.
    good = {"Authorization": f"Bearer {token}"}
    assert client.get("/scim/v2/Users", headers=good, environ_base=attacker).status_code == 429
    assert (
        client.get(
            "/scim/v2/Users", headers=good, environ_base={"REMOTE_ADDR": "192.0.2.11"}
        ).status_code
        == 200
    )
