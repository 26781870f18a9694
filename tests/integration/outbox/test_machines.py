"""Several machines on one PostgreSQL: two ``serve`` processes (each with its outbox worker)
against one Keycloak. SCIM writes go to both; every change reaches Keycloak once, in order per
user, also when one machine is killed (SIGKILL) in the middle of the run.

"In order, once" is read from Keycloak itself: the admin events the connector's writes leave
(with their representations) give, per user, the family names Keycloak was set to, in time
order. That sequence must only ever move forward through the names SCIM wrote (a later one may
stand for several, collapsed; an earlier one after a later one, or one twice, would be a change
applied out of order or again), and end on the last.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import psycopg
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine

from connector.adapters.sql.outbox_queue import SqlOutboxQueue
from connector.domain.model import utcnow
from tests.conftest import user_body
from tests.integration.outbox.helpers import kc_org_member_ids, kc_users_of_seller
from tests.integration.outbox.proxy import TcpProxy
from tests.support.keycloak import KeycloakServer
from tests.support.live_server import LiveServer
from tests.support.postgres import PostgresServer
from tests.support.smtp import SmtpSink

pytestmark = [pytest.mark.keycloak, pytest.mark.postgres, pytest.mark.slow]

USERS = 10
ROUNDS = 8
LEASE = 8


@pytest.fixture
def database(postgres: PostgresServer) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database that both machines share."""
    name = f"m_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres.dsn("postgres"), autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}" TEMPLATE template_sc')
    yield postgres.url(name)
    with psycopg.connect(postgres.dsn("postgres"), autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def keycloak_requests(server: LiveServer) -> float:
    """Keycloak calls made by this machine's processes (its outbox worker), from /metrics."""
    text = requests.get(f"{server.url}/metrics", timeout=30).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "seller_connector_keycloak_requests_total"
    )


def applied_names(server: KeycloakServer, kc_user_id: str, connector_user: str) -> list[str]:
    """The family names the connector set on a Keycloak user, in the order Keycloak applied
    them (its admin events, oldest first)."""
    events = server.admin_json(
        "GET",
        "admin-events",
        params={
            "resourcePath": f"users/{kc_user_id}",
            "operationTypes": ["CREATE", "UPDATE"],
            "authUser": connector_user,
            "direction": "asc",
            "max": 1000,
        },
    )
    names = []
    for event in sorted(events, key=lambda e: e["time"]):
        representation = json.loads(event.get("representation") or "{}")
        names.append(representation.get("lastName"))
    return names


@pytest.mark.parametrize("kill", [False, True], ids=["both-run", "one-killed"])
def test_two_machines_apply_every_change_once_in_order(
    keycloak_server: KeycloakServer,
    smtp: SmtpSink,
    database: str,
    tmp_path: Path,
    kill: bool,
) -> None:
    target = urlparse(keycloak_server.url)
    # Machine B reaches Keycloak over a slow link, so that its claims last: killing it then
    # leaves claims in the middle, which machine A must take over once their lease ends.
    slow = TcpProxy(target.hostname or "127.0.0.1", target.port or 80, latency=0.2)
    common = {
        "SELLER_CONNECTOR_DATABASE_URL": database,
        "SELLER_CONNECTOR_SECRET_KEY": "shared-" + uuid.uuid4().hex,
        "SELLER_CONNECTOR_KEYCLOAK_REALM": keycloak_server.realm,
        "SELLER_CONNECTOR_KEYCLOAK_CLIENT_SECRET": keycloak_server.connector_client_secret(),
        "SELLER_CONNECTOR_OUTBOX_LEASE_SECONDS": str(LEASE),
        "SELLER_CONNECTOR_OUTBOX_INTERVAL": "0.2",
        "SELLER_CONNECTOR_OUTBOX_POLL_INTERVAL": "2",
        "SELLER_CONNECTOR_OUTBOX_BATCH_SIZE": "6",
        "SELLER_CONNECTOR_OUTBOX_BULK_THRESHOLD": "3",
        "SELLER_CONNECTOR_OUTBOX_BACKOFF_BASE": "0.5",
        "SELLER_CONNECTOR_OUTBOX_BACKOFF_CAP": "2",
        "SELLER_CONNECTOR_OUTBOX_MAX_ATTEMPTS": "1000",
    }
    a = LiveServer(
        home=tmp_path / "a",
        workers=1,
        extra_env={**common, "SELLER_CONNECTOR_KEYCLOAK_URL": keycloak_server.url},
    )
    b = LiveServer(
        home=tmp_path / "b",
        workers=1,
        extra_env={**common, "SELLER_CONNECTOR_KEYCLOAK_URL": slow.url},
    )
    queue = SqlOutboxQueue(create_engine(database))
    try:
        a.start()
        b.start()
        tag = uuid.uuid4().hex[:6]
        seller = a.create_seller(f"Machines {tag}", f"owner-{tag}@machines.example.com")
        headers = {"Authorization": f"Bearer {seller['token']}"}
        machines = [a, b]

        def write(index: int, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
            server = machines[index % len(machines)]
            response = requests.request(
                method, f"{server.scim}{path}", json=body, headers=headers, timeout=30
            )
            assert response.status_code in (200, 201), response.text
            return dict(response.json())

        users = [
            write(n, "POST", "/Users", user_body(f"u{n}-{tag}@machines.example.com"))
            for n in range(USERS)
        ]
        names: dict[str, list[str]] = {u["id"]: [] for u in users}
        orphans: set[int] = set()
        for round_ in range(ROUNDS):
            paused: int | None = None
            if kill and round_ == ROUNDS // 2:
                # B has worked: its worker called Keycloak. Now hold A's outbox worker still
                # (SIGSTOP), so that the work this round brings can only be claimed by B.
                assert wait_for(lambda: keycloak_requests(b) > 0, 60), b.log_tail()
                paused = a.outbox_worker_pid()
                assert paused is not None
                os.kill(paused, signal.SIGSTOP)
                before = set(held(queue))  # whatever A's held worker holds
            try:
                for n, user in enumerate(users):
                    name = f"r{round_:02d}"
                    body = {
                        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                        "Operations": [{"op": "replace", "path": "name.familyName", "value": name}],
                    }
                    write(n + round_, "PATCH", f"/Users/{user['id']}", body)
                    names[user["id"]].append(name)
                if paused is not None:
                    # B claims this round's work; kill it whole while it holds the claims
                    # (gunicorn, its request worker and its outbox worker at once).
                    assert wait_for(lambda held_before=before: set(held(queue)) - held_before, 30)
                    b.kill()
                    machines = [a]
                    orphans = set(held(queue)) - before
            finally:
                if paused is not None:
                    os.kill(paused, signal.SIGCONT)
            time.sleep(0.3)

        def drained() -> bool:
            counts = queue.stats(utcnow()).counts
            return counts["pending"] == counts["in_progress"] == 0

        assert wait_for(drained, 240), (queue.stats(utcnow()), a.log_tail())
        stats = queue.stats(utcnow())
        assert stats.counts["poison"] == 0, queue.entries("poison")
        logs = "".join((m.home / "server.log").read_text(errors="replace") for m in (a, b))
        assert "synced in bulk" in logs  # the bulk path took part
        if not kill:
            # Both machines' workers took part.
            assert keycloak_requests(a) > 0 and keycloak_requests(b) > 0
        else:
            # B died holding claims; A took them over once their lease ended, and did them.
            assert orphans
            done = {e.id for e in queue.entries("done", limit=100_000)}
            assert orphans <= done

        # Keycloak matches the store: one user per connector user, the last name written.
        kc_users = kc_users_of_seller(keycloak_server, seller["id"])
        by_connector = {u["attributes"]["seller_connector_user_id"][0]: u for u in kc_users}
        assert len(kc_users) == len(by_connector) == USERS + 1  # and the primary
        assert kc_org_member_ids(keycloak_server, seller["id"]) == {u["id"] for u in kc_users}
        connector_account = service_account_id(keycloak_server)
        seen = 0
        for user in users:
            kc = by_connector[user["id"]]
            assert kc["lastName"] == names[user["id"]][-1]
            applied = applied_names(keycloak_server, kc["id"], connector_account)
            written = ["User", *names[user["id"]]]
            positions = [written.index(name) for name in applied]
            # Only forward, never the same twice, ending on the last write.
            assert positions == sorted(set(positions)), (user["id"], applied)
            assert positions[-1] == len(written) - 1, (user["id"], applied)
            seen += len(applied)
        # Not vacuous: Keycloak recorded the writes (creations and several renames each).
        assert seen >= 2 * USERS
        # Every new user was invited (at least once: an email may go twice after a kill).
        for user in users:
            smtp.wait_for_recipient(user["emails"][0]["value"], timeout=30)
    finally:
        b.kill()
        a.stop()
        slow.cut()
        queue.engine.dispose()


def in_progress(queue: SqlOutboxQueue) -> bool:
    return queue.stats(utcnow()).counts["in_progress"] > 0


def held(queue: SqlOutboxQueue) -> dict[int, Any]:
    """The entries in progress now, with the end of the lease that holds them."""
    return {e.id: e.next_attempt_at for e in queue.entries("in_progress", limit=10_000) if e.id}


def wait_for(check: Callable[[], Any], timeout: float, every: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(every)
    return True


def service_account_id(server: KeycloakServer) -> str:
    client = server.admin_json("GET", "clients", params={"clientId": "seller-connector"})[0]
    return str(server.admin_json("GET", f"clients/{client['id']}/service-account-user")["id"])
