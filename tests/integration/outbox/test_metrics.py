"""``/metrics``: who may scrape, what is counted, and the outbox backlog draining on a live
``serve`` (gunicorn workers and the outbox worker process adding up in multiprocess mode)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from connector.bootstrap import Connector
from connector.services.directory.target import MARKER_PREFIX
from connector.services.monitoring import record_directory_run
from tests.conftest import SellerHandle, user_body
from tests.integration.outbox.helpers import kc_user, scim_json
from tests.integration.outbox.proxy import TcpProxy
from tests.support.keycloak import KeycloakServer
from tests.support.live_server import LiveServer
from tests.support.smtp import SmtpSink

TOKEN_ENV = "SELLER_CONNECTOR_METRICS_TOKEN"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, by (name, sorted labels)."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape_until(
    scrape: Callable[[], Samples], check: Callable[[Samples], bool], timeout: float
) -> Samples | None:
    """Scrape until ``check`` holds; the scrape that passed, or None after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        found = scrape()
        if check(found):
            return found
        if time.monotonic() > deadline:
            return None
        time.sleep(0.5)


def test_only_loopback_scrapes_by_default_and_anyone_with_the_token(
    client: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    monkeypatch.delenv(TOKEN_ENV + "_FILE", raising=False)
    assert client.get("/metrics").status_code == 200  # the test client is 127.0.0.1
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "10.0.0.7"}).status_code == 403
    # Through a reverse proxy on the same machine: refused, though the peer is loopback.
    forwarded = client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
    assert forwarded.status_code == 403

    monkeypatch.setenv(TOKEN_ENV, "s3cret-scrape-token")
    assert client.get("/metrics").status_code == 401  # now even loopback needs the token
    wrong = client.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"].startswith("Bearer")
    good = client.get(
        "/metrics",
        headers={"Authorization": "Bearer s3cret-scrape-token", "X-Forwarded-For": "203.0.113.9"},
        environ_base={"REMOTE_ADDR": "10.0.0.7"},
    )
    assert good.status_code == 200
    assert good.headers["Content-Type"].startswith("text/plain")

    secret = tmp_path / "token"
    secret.write_text("from-a-file\n")
    monkeypatch.delenv(TOKEN_ENV)
    monkeypatch.setenv(TOKEN_ENV + "_FILE", str(secret))
    assert (
        client.get("/metrics", headers={"Authorization": "Bearer from-a-file"}).status_code == 200
    )
    assert client.get("/metrics").status_code == 401


def test_requests_are_counted_by_operation_and_status_never_by_id(
    client: Any, make_seller: Callable[..., SellerHandle]
) -> None:
    handle = make_seller()
    created = scim_json(
        client.post(
            "/scim/v2/Users",
            json=user_body(f"m-{uuid.uuid4().hex[:8]}@metrics.example.com"),
            headers=handle.headers,
        ),
        201,
    )
    before = samples(client.get("/metrics").get_data(as_text=True))
    client.get(f"/scim/v2/Users/{created['id']}", headers=handle.headers)
    client.get(f"/scim/v2/Users/{uuid.uuid4().hex}", headers=handle.headers)
    client.get("/scim/v2/Users", headers=handle.headers)
    client.get("/scim/v2/Users")  # no token
    text = client.get("/metrics").get_data(as_text=True)
    after = samples(text)

    def grew(name: str, **labels: str) -> float:
        return (value(after, name, **labels) or 0) - (value(before, name, **labels) or 0)

    total = "seller_connector_http_requests_total"
    assert grew(total, operation="GET Users/{id}", status="200") == 1
    assert grew(total, operation="GET Users/{id}", status="404") == 1
    assert grew(total, operation="GET Users", status="200") == 1
    assert grew(total, operation="GET Users", status="401") == 1
    assert grew("seller_connector_http_request_duration_seconds_count", operation="GET Users") == 2
    # No id, seller or token in any label.
    assert created["id"] not in text and handle.seller.id not in text and handle.token not in text


def test_outbox_and_directory_figures_come_from_the_store(
    client: Any, connector: Connector, make_seller: Callable[..., SellerHandle]
) -> None:
    # The directory sync keeps its state under this prefix; the metrics read it back.
    from connector.adapters.sql.monitoring import DIRECTORY_STATE_PREFIX

    assert MARKER_PREFIX == DIRECTORY_STATE_PREFIX
    make_seller()  # its organization, permission sets and primary wait in the outbox
    record_directory_run(
        connector.uow,
        "corp-ldap",
        seconds=2.5,
        ok=False,
        full=True,
        counts={"created": 12, "deactivated": 1, "failed": 2},
    )
    with connector.uow() as uow:
        uow.markers.set(MARKER_PREFIX + "corp-ldap", '{"v": 1}')
        uow.commit()
    found = samples(client.get("/metrics").get_data(as_text=True))
    assert value(found, "seller_connector_store_up") == 1
    assert (value(found, "seller_connector_outbox_backlog") or 0) >= 1
    assert (value(found, "seller_connector_outbox_entries", state="pending") or 0) >= 1
    assert value(found, "seller_connector_outbox_entries", state="poison") == 0
    assert (value(found, "seller_connector_outbox_oldest_entry_age_seconds") or -1) >= 0
    source = {"source": "corp-ldap"}
    assert value(found, "seller_connector_directory_last_run_duration_seconds", **source) == 2.5
    assert value(found, "seller_connector_directory_last_run_success", **source) == 0
    assert value(found, "seller_connector_directory_last_run_full", **source) == 1
    assert (
        value(found, "seller_connector_directory_last_run_changes", kind="created", **source) == 12
    )
    ended = value(found, "seller_connector_directory_last_run_timestamp_seconds", **source)
    assert ended is not None and abs(ended - time.time()) < 60
    stored = value(found, "seller_connector_directory_state_timestamp_seconds", **source)
    assert stored is not None and abs(stored - time.time()) < 60


@pytest.mark.keycloak
@pytest.mark.slow
def test_metrics_of_a_live_server_show_the_backlog_draining(
    keycloak_server: KeycloakServer, smtp: SmtpSink, tmp_path: Path
) -> None:
    """``serve`` with 2 gunicorn workers and its outbox worker process, Keycloak behind a proxy
    that is cut first: the backlog grows and the Keycloak errors are counted (by the worker
    process), then Keycloak answers again and the backlog drains to 0 on /metrics."""
    host, port = keycloak_server.url.rsplit(":", 1)
    proxy = TcpProxy(host.removeprefix("http://"), int(port))
    proxy.cut()
    server = LiveServer(
        home=tmp_path / "live",
        workers=2,
        extra_env={
            "SELLER_CONNECTOR_KEYCLOAK_URL": proxy.url,
            "SELLER_CONNECTOR_KEYCLOAK_REALM": keycloak_server.realm,
            "SELLER_CONNECTOR_KEYCLOAK_CLIENT_SECRET": keycloak_server.connector_client_secret(),
            "SELLER_CONNECTOR_KEYCLOAK_TIMEOUT": "5",
            "SELLER_CONNECTOR_OUTBOX_INTERVAL": "0.2",
            "SELLER_CONNECTOR_OUTBOX_POLL_INTERVAL": "1",
            "SELLER_CONNECTOR_OUTBOX_BACKOFF_BASE": "0.5",
            "SELLER_CONNECTOR_OUTBOX_BACKOFF_CAP": "2",
            "SELLER_CONNECTOR_OUTBOX_MAX_ATTEMPTS": "1000",
        },
    )
    try:
        server.start()
        tag = uuid.uuid4().hex[:6]
        seller = server.create_seller(f"Metrics {tag}", f"owner-{tag}@metrics.example.com")
        headers = {"Authorization": f"Bearer {seller['token']}"}
        users = []
        for n in range(12):
            response = requests.post(
                f"{server.scim}/Users",
                json=user_body(f"m{n}-{uuid.uuid4().hex[:6]}@metrics.example.com"),
                headers=headers,
                timeout=30,
            )
            assert response.status_code == 201, response.text
            users.append(response.json())

        def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
            response = requests.get(f"{server.url}/metrics", timeout=30)
            assert response.status_code == 200, response.text
            return samples(response.text)

        # Keycloak is unreachable: the backlog waits, and the worker process's errors show.
        waiting = scrape_until(
            scrape,
            lambda f: (
                (value(f, "seller_connector_keycloak_errors_total", kind="unavailable") or 0) > 0
            ),
            timeout=60,
        )
        assert waiting, "the worker's Keycloak errors never showed on /metrics"
        assert (value(waiting, "seller_connector_outbox_backlog") or 0) >= 12
        assert (value(waiting, "seller_connector_outbox_oldest_entry_age_seconds") or 0) > 0
        # Requests served by both gunicorn workers add up (multiprocess mode).
        created = value(
            waiting, "seller_connector_http_requests_total", operation="POST Users", status="201"
        )
        assert created == 12

        proxy.restore()
        drained = scrape_until(
            scrape, lambda f: value(f, "seller_connector_outbox_backlog") == 0, timeout=180
        )
        assert drained, f"the backlog did not drain: {server.log_tail()}"
        assert value(drained, "seller_connector_outbox_oldest_entry_age_seconds") == 0
        assert value(drained, "seller_connector_outbox_entries", state="poison") == 0
        assert (value(drained, "seller_connector_keycloak_requests_total", method="POST") or 0) > 0
        for user in users:
            assert kc_user(keycloak_server, user["id"]) is not None
    finally:
        server.stop()
        proxy.cut()
