"""Console changes come back: what an administrator does in Keycloak's admin console (here its
admin API, as the master admin) reaches the store through `seller-connector keycloak poll`."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import requests
from click.testing import Result

from connector.bootstrap import Connector
from connector.services.console import CONSOLE_SOURCE
from connector.services.outbox import OutboxWorker
from tests.conftest import GROUP_SCHEMA, SellerHandle, user_body
from tests.integration.outbox.helpers import kc_group, kc_user, scim_json, wait_until
from tests.support.keycloak import KeycloakServer

pytestmark = pytest.mark.keycloak

PASSWORD = "Corr3ct-horse-battery"


def poll_until(cli: Callable[..., Result], want: Callable[[dict[str, Any]], bool]) -> list[Any]:
    """Run `keycloak poll --once --format json` until the changes read so far satisfy ``want``."""
    seen: list[dict[str, Any]] = []

    def once() -> bool:
        result = cli("keycloak", "poll", "--once", "--format", "json")
        assert result.exit_code == 0, result.output
        seen.extend(json.loads(result.output)["changes"])
        return want({"changes": seen})

    assert wait_until(once, timeout=20, every=0.3), seen
    return seen


def test_console_disable_group_add_login_and_a_refused_primary_disable(
    keycloak_server: KeycloakServer,
    connector: Connector,
    client: Any,
    make_seller: Callable[..., SellerHandle],
    make_worker: Callable[..., OutboxWorker],
    cli: Callable[..., Result],
) -> None:
    handle = make_seller()
    users = [
        scim_json(
            client.post(
                "/scim/v2/Users",
                json=user_body(f"c-{uuid.uuid4().hex[:8]}@console.example.com"),
                headers=handle.headers,
            ),
            201,
        )
        for _ in range(2)
    ]
    leaver, joiner = users
    team = scim_json(
        client.post(
            "/scim/v2/Groups",
            json={"schemas": [GROUP_SCHEMA], "displayName": "Night shift", "members": []},
            headers=handle.headers,
        ),
        201,
    )
    worker = make_worker()
    report, first_poll = worker.run_once()
    assert report.poisoned == report.retried == 0, report.errors
    assert first_poll is not None and first_poll.started  # the marker starts now
    with connector.uow() as uow:
        assert uow.markers.get(CONSOLE_SOURCE) is not None

    # What an IT administrator does in the console.
    kc_leaver, kc_joiner = (
        kc_user(keycloak_server, leaver["id"]),
        kc_user(keycloak_server, joiner["id"]),
    )
    kc_primary = kc_user(keycloak_server, handle.primary.id)
    assert kc_leaver and kc_joiner and kc_primary
    keycloak_server.admin_json(
        "PUT", f"users/{kc_leaver['id']}", json={**kc_leaver, "enabled": False}
    )
    group = kc_group(keycloak_server, handle.seller.id, team["id"])
    keycloak_server.admin_json("PUT", f"users/{kc_joiner['id']}/groups/{group['id']}")
    keycloak_server.admin_json(
        "PUT", f"users/{kc_primary['id']}", json={**kc_primary, "enabled": False}
    )
    keycloak_server.admin_json(
        "PUT",
        f"users/{kc_joiner['id']}/reset-password",
        json={"type": "password", "value": PASSWORD, "temporary": False},
    )
    login = requests.post(
        f"{keycloak_server.url}/realms/{keycloak_server.realm}/protocol/openid-connect/token",
        data={
            "grant_type": "password",
            "client_id": "seller-portal",
            "username": joiner["userName"],
            "password": PASSWORD,
        },
        timeout=15,
    )
    assert login.status_code == 200, login.text
    version_before_login = scim_json(
        client.get(f"/scim/v2/Users/{joiner['id']}", headers=handle.headers), 200
    )["meta"]["version"]

    def done(seen: dict[str, Any]) -> bool:
        results = {(c["kind"], c["userId"], c["result"]) for c in seen["changes"]}
        return {
            ("disabled", leaver["id"], "applied"),
            ("group-added", joiner["id"], "applied"),
            ("disabled", handle.primary.id, "reverted"),
            ("login", joiner["id"], "applied"),
        } <= results

    changes = poll_until(cli, done)
    assert all(c["result"] != "refused" for c in changes), changes

    # SCIM shows the console's changes.
    got = scim_json(client.get(f"/scim/v2/Users/{leaver['id']}", headers=handle.headers), 200)
    assert got["active"] is False
    members = scim_json(client.get(f"/scim/v2/Groups/{team['id']}", headers=handle.headers), 200)
    assert [m["value"] for m in members.get("members", [])] == [joiner["id"]]
    joined = scim_json(client.get(f"/scim/v2/Users/{joiner['id']}", headers=handle.headers), 200)
    assert team["id"] in [g["value"] for g in joined.get("groups", [])]
    # The login is recorded for the access review without a new version of the user.
    assert joined["meta"]["version"] == version_before_login
    with connector.uow() as uow:
        stored = uow.users.get(handle.seller.id, joiner["id"])
        trail = uow.audit.list(handle.seller.id)
    assert stored is not None and stored.last_login_at is not None
    by_console = [(e.action, e.target) for e in trail if e.actor == "keycloak:console"]
    assert ("user.deactivated", f"user:{leaver['id']}") in by_console
    assert ("group.updated", f"group:{team['id']}") in by_console
    assert ("user.console-change-reverted", f"user:{handle.primary.id}") in by_console

    # Polling again applies nothing twice.
    again = cli("keycloak", "poll", "--once", "--format", "json")
    assert all(c["result"] != "applied" for c in json.loads(again.output)["changes"])

    # The primary is re-enabled through the outbox: the store is the truth for primaries.
    report = worker.drain()
    assert report.poisoned == report.retried == 0, report.errors
    assert kc_user(keycloak_server, handle.primary.id)["enabled"] is True  # type: ignore[index]
    # ...and the connector's own writes are not read back as console changes.
    worker.poll_console(force=True)
    with connector.uow() as uow:
        primary = uow.users.get(handle.seller.id, handle.primary.id)
        leaver_now = uow.users.get(handle.seller.id, leaver["id"])
    assert primary is not None and primary.active
    assert leaver_now is not None and not leaver_now.active
