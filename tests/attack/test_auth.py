"""Authentication: tokens stored hashed, every kind of bad token answered alike, revocation
within the verification cache's bound, and a brake (429 with Retry-After) on repeated
failures, shared by every worker, that never refuses a valid token."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

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


def test_revocation_without_a_cache_is_immediate(
    client: Any, make_seller: Any, connector: Connector
) -> None:
    handle = make_seller()
    assert client.get("/scim/v2/Users", headers=handle.headers).status_code == 200
    token_id = handle.token.removeprefix("scn_").partition(".")[0]
    seller_cases.revoke_token(connector.uow(), handle.seller, token_id, Actor("test"))
    assert client.get("/scim/v2/Users", headers=handle.headers).status_code == 401


def test_a_revoked_token_stops_working_within_the_cache_bound(
    sqlite_url: str, tmp_path: Path
) -> None:
    """A worker trusts a token it verified for token_cache_seconds (the README's bound)."""
    bound = 1.0
    connector = bootstrap(
        make_settings(sqlite_url, tmp_path, token_cache_seconds=bound), migrate=False
    )
    client = create_app(connector).test_client()
    seller, token = _seller(connector, "Cache Test")
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/scim/v2/Users", headers=headers).status_code == 200  # now cached
    token_id = token.removeprefix("scn_").partition(".")[0]
    revoked_at = time.monotonic()
    seller_cases.revoke_token(connector.uow(), seller, token_id, Actor("test"))
    served_after_revocation = 0
    while client.get("/scim/v2/Users", headers=headers).status_code == 200:
        served_after_revocation += 1
        assert time.monotonic() - revoked_at < bound + 0.5, "still served past the bound"
        time.sleep(0.05)
    # The cache was really used (the bound is not vacuous), and no longer than it says.
    assert served_after_revocation > 0
    assert time.monotonic() - revoked_at < bound + 0.5
    # A wrong secret for a cached token id is never taken from the cache.
    assert (
        client.get("/scim/v2/Users", headers={"Authorization": f"Bearer {token}x"}).status_code
        == 401
    )


def _seller(connector: Connector, name: str) -> tuple[Any, str]:
    seller, _ = seller_cases.create_seller(
        connector.uow(),
        connector.catalogue,
        name,
        Plan.professional,
        f"o@{name.split()[0].lower()}.example.com",
        "O O",
        Actor("t"),
    )
    _, token = seller_cases.issue_token(connector.uow(), seller, "t", Actor("t"))
    return seller, token


def _braked_app(url: str, home: Path, **settings: Any) -> tuple[Any, Connector]:
    values = {"auth_failures_per_minute": 5, "auth_failures_per_address": 12, **settings}
    connector = bootstrap(make_settings(url, home, **values), migrate=False)
    return create_app(connector).test_client(), connector


def _get(client: Any, token: str, address: str, **headers: str) -> Any:
    return client.get(
        "/scim/v2/Users",
        headers={"Authorization": f"Bearer {token}", **headers},
        environ_base={"REMOTE_ADDR": address},
    )


def test_repeated_failures_are_braked_but_never_a_valid_token(
    sqlite_url: str, tmp_path: Path
) -> None:
    client, connector = _braked_app(sqlite_url, tmp_path)
    _, token = _seller(connector, "Brake Test")
    _, other = _seller(connector, "Other Seller")
    token_id = token.removeprefix("scn_").partition(".")[0]
    wrong = f"scn_{token_id}.guess"
    for _ in range(5):
        assert _get(client, wrong, "192.0.2.10").status_code == 401
    braked = _get(client, wrong, "192.0.2.10")
    assert braked.status_code == 429
    assert int(braked.headers["Retry-After"]) > 0
    assert braked.json["status"] == "429"
    # The valid token of the same id, and another seller's, are served from that address:
    # behind a shared egress, one client's mistakes lock nobody else out.
    assert _get(client, token, "192.0.2.10").status_code == 200
    assert _get(client, other, "192.0.2.10").status_code == 200
    # Another address guessing the same token id is counted on its own.
    assert _get(client, wrong, "192.0.2.11").status_code == 401


def test_a_spray_of_token_ids_meets_the_per_address_bound(sqlite_url: str, tmp_path: Path) -> None:
    client, connector = _braked_app(sqlite_url, tmp_path)
    _, token = _seller(connector, "Spray Test")
    statuses = [_get(client, f"scn_{n:016x}.guess", "192.0.2.20").status_code for n in range(14)]
    # Each id failed once (under the per-token bound); the address as a whole is braked.
    assert statuses[:12] == [401] * 12 and statuses[12:] == [429, 429]
    assert _get(client, token, "192.0.2.20").status_code == 200
    # Past the bound, failures are answered without being written (the table cannot grow).
    with connector.uow() as uow:
        since = uow.auth_failures.oldest("192.0.2.20", _long_ago())
        assert since is not None
        assert uow.auth_failures.count("192.0.2.20", _long_ago()) == 12


def _long_ago() -> Any:
    import datetime as dt

    return dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)


def test_the_count_is_shared_by_every_worker(sqlite_url: str, tmp_path: Path) -> None:
    """Two application instances on one store stand for two gunicorn workers (or machines)."""
    first, connector = _braked_app(sqlite_url, tmp_path / "one")
    second, _ = _braked_app(sqlite_url, tmp_path / "two")
    _seller(connector, "Shared Test")
    answers = [
        _get(worker, "scn_feedfacefeedface.guess", "192.0.2.30").status_code
        for worker in (first, second, first, second, first)
    ]
    assert answers == [401] * 5
    assert _get(second, "scn_feedfacefeedface.guess", "192.0.2.30").status_code == 429
    assert _get(first, "scn_feedfacefeedface.guess", "192.0.2.30").status_code == 429


def test_client_addresses_come_from_trusted_proxies_only(sqlite_url: str, tmp_path: Path) -> None:
    direct, connector = _braked_app(sqlite_url, tmp_path / "direct")
    behind, _ = _braked_app(sqlite_url, tmp_path / "proxy", trusted_proxies=1)
    _seller(connector, "Proxy Test")
    wrong = "scn_0123456789abcdef.guess"
    # Behind one trusted proxy, each client is counted by its forwarded address.
    for _ in range(5):
        _get(behind, wrong, "127.0.0.1", **{"X-Forwarded-For": "198.51.100.1"})
    assert (
        _get(behind, wrong, "127.0.0.1", **{"X-Forwarded-For": "198.51.100.1"}).status_code == 429
    )
    assert (
        _get(behind, wrong, "127.0.0.1", **{"X-Forwarded-For": "198.51.100.2"}).status_code == 401
    )
    # Without a trusted proxy the header is ignored: a client cannot pick its own address.
    for n in range(5):
        _get(direct, wrong, "203.0.113.9", **{"X-Forwarded-For": f"198.51.100.{10 + n}"})
    assert (
        _get(direct, wrong, "203.0.113.9", **{"X-Forwarded-For": "198.51.100.99"}).status_code
        == 429
    )
