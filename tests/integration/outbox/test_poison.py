"""Poison: a change Keycloak refuses, or one that keeps failing, is set aside with its error;
it holds back nothing, and an operator can requeue it once the cause is fixed."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import Result

from connector.adapters.sql.outbox_queue import SqlOutboxQueue
from connector.bootstrap import Connector
from connector.domain.model import utcnow
from connector.services.outbox import OutboxPolicy, OutboxWorker
from tests.conftest import PATCH_SCHEMA, SellerHandle, user_body
from tests.integration.outbox.helpers import kc_user, scim_json
from tests.support.keycloak import KeycloakServer
from tests.support.smtp import SmtpSink, free_port

pytestmark = pytest.mark.keycloak


def test_a_refused_change_is_poison_holds_nothing_back_and_can_be_requeued(
    keycloak_server: KeycloakServer,
    connector: Connector,
    client: Any,
    make_seller: Callable[..., SellerHandle],
    make_worker: Callable[..., OutboxWorker],
    cli: Callable[..., Result],
    smtp: SmtpSink,
) -> None:
    handle = make_seller()
    clash = f"clash-{uuid.uuid4().hex[:8]}@poison.example.com"
    # Someone created this username in Keycloak by hand: not the connector's user.
    keycloak_server.admin_json("POST", "users", json={"username": clash, "enabled": True})
    clashing = scim_json(
        client.post("/scim/v2/Users", json=user_body(clash), headers=handle.headers), 201
    )
    fine = scim_json(
        client.post(
            "/scim/v2/Users",
            json=user_body(f"fine-{uuid.uuid4().hex[:8]}@poison.example.com"),
            headers=handle.headers,
        ),
        201,
    )
    worker = make_worker()
    report, _ = worker.run_once()
    assert report.poisoned == 2  # the clashing user's sync, then its invitation
    assert kc_user(keycloak_server, fine["id"]) is not None  # not held back
    status = cli("outbox", "status", "--format", "json")
    assert json.loads(status.output)["counts"]["poison"] == 2
    listed = json.loads(cli("outbox", "list", "--state", "poison", "--format", "json").output)
    assert {e["topic"] for e in listed} == {"user.sync", "user.invite"}
    assert all(e["aggregateId"] == clashing["id"] for e in listed)
    assert any("does not manage" in e["lastError"] for e in listed)

    # The client fixes the userName: the next sync is not blocked by the poison before it.
    fixed = f"fixed-{uuid.uuid4().hex[:8]}@poison.example.com"
    body = {
        "schemas": [PATCH_SCHEMA],
        "Operations": [
            {"op": "replace", "path": "userName", "value": fixed},
            {"op": "replace", "path": "emails", "value": [{"value": fixed, "primary": True}]},
        ],
    }
    scim_json(
        client.patch(f"/scim/v2/Users/{clashing['id']}", json=body, headers=handle.headers), 200
    )
    report = worker.drain()
    assert report.done == 1 and report.poisoned == 0
    assert kc_user(keycloak_server, clashing["id"])["username"] == fixed  # type: ignore[index]

    # The operator requeues the poison: the invitation now goes out.
    assert cli("outbox", "retry", "--poison").output.startswith("2 entries requeued")
    report = worker.drain()
    assert report.poisoned == 0 and report.done == 2
    smtp.wait_for_recipient(fixed, timeout=20)
    assert SqlOutboxQueue(connector.engine).stats(utcnow()).counts["poison"] == 0


def test_an_outage_poisons_nothing_until_it_outlasts_max_outage(
    connector: Connector,
    client: Any,
    make_seller: Callable[..., SellerHandle],
    make_worker: Callable[..., OutboxWorker],
) -> None:
    handle = make_seller()  # its organization, permission sets and primary wait in the outbox
    # A new user: its invitation is written BEFORE its sync, and must still wait behind it.
    scim_json(
        client.post(
            "/scim/v2/Users",
            json=user_body(f"down-{uuid.uuid4().hex[:8]}@poison.example.com"),
            headers=handle.headers,
        ),
        201,
    )
    # A Keycloak address where nothing listens: every call is refused (unavailable).
    # Retries wait 3 to 6 s: longer than one failing round takes even on a busy machine, so
    # each drain makes exactly one attempt of each (at 1 to 2 s, a drain that took over a
    # second under the full suite's load came back to an entry twice).
    policy = OutboxPolicy(
        max_attempts=2, backoff_base=6.0, backoff_cap=6.0, max_outage=3600, poll_interval=60
    )
    worker = make_worker(policy, url=f"http://127.0.0.1:{free_port()}", timeout=2.0)
    # The worker's round: the console poll (its health probe) fails too, then the entries.
    assert worker.poll_console(force=True).started  # a fresh store: it only starts its marker
    first, poll = worker.run_once()
    assert poll is None
    # One attempt each, then everything waits for its backoff (nothing spins).
    assert first.unavailable and (first.entries, first.retried, first.poisoned) == (7, 6, 0)
    time.sleep(6.1)
    # Past max_attempts, but Keycloak is down and the entries are young: kept.
    second = worker.drain()
    assert (second.retried, second.poisoned) == (6, 0)
    queue = SqlOutboxQueue(connector.engine)
    assert (
        sorted(e.attempts for e in queue.entries("pending") if e.topic != "user.invite") == [2] * 6
    )
    # An hour later (the worker's clock), the outage has outlasted max_outage: poison.
    later = worker.clock() + dt.timedelta(seconds=policy.max_outage + 5)
    worker.clock = lambda: later
    third = worker.drain()
    assert third.poisoned == 6
    poison = queue.entries("poison")
    assert len(poison) == 6
    for entry in poison:
        assert entry.attempts == 3
        assert (entry.last_error or "").startswith("gave up after 3 attempts: unavailable:")
    # The invitation behind the poison sync is not held back by it: it has its own attempts.
    [invite] = queue.entries("pending")
    assert (invite.topic, invite.attempts) == ("user.invite", 1)
