"""No lost changes: a stream of SCIM writes while Keycloak is stopped for real mid-stream.

The session Keycloak (dev-file, so its data survives) is halted while the background worker
applies the stream, the writes go on against the store, Keycloak is started again, and the
worker drains what waited: Keycloak then matches the store exactly, with no duplicate users.
When the session Keycloak is one reused from the environment (it cannot be stopped from here),
a loopback TCP proxy between the connector and Keycloak is cut instead.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

import pytest

from connector.adapters.keycloak import KeycloakIdentityProvider
from connector.adapters.sql.outbox_queue import SqlOutboxQueue
from connector.bootstrap import Connector
from connector.domain.model import utcnow
from connector.entrypoints.worker import BackgroundWorker
from connector.services.outbox import OutboxWorker
from connector.services.reconcile import compare
from tests.conftest import (
    GROUP_SCHEMA,
    PATCH_SCHEMA,
    SELLER_USER,
    USER_SCHEMA,
    SellerHandle,
    bulk_creates,
    user_body,
)
from tests.integration.outbox.conftest import FAST
from tests.integration.outbox.helpers import (
    kc_group_paths,
    kc_org_member_ids,
    kc_users_of_seller,
    wait_until,
)
from tests.integration.outbox.proxy import TcpProxy
from tests.support.keycloak import KeycloakServer

pytestmark = [pytest.mark.keycloak, pytest.mark.slow]

LEVELS = ["view", "edit"]
CATEGORIES = ["orders", "inventory", "pricing", "reports"]


class WriteStream:
    """Random (seeded) SCIM writes of one seller, as an identity provider would send them."""

    def __init__(self, client: Any, handle: SellerHandle, seed: int = 7) -> None:
        self.client = client
        self.headers = handle.headers
        self.rng = random.Random(seed)
        self.live: list[str] = []
        self.deleted: list[str] = []
        self.groups: list[str] = []
        self.user_names: dict[str, str] = {}
        self.count = 0

    def _ok(self, response: Any, *statuses: int) -> dict[str, Any]:
        assert response.status_code in statuses, response.get_data(as_text=True)
        return response.get_json() if response.data else {}

    def step(self) -> None:
        """One write, chosen at random among those that make sense now."""
        self.count += 1
        choices = ["create"] * 3
        if self.live:
            choices += ["rename", "permissions", "toggle", "group", "members", "delete"]
        if self.deleted:
            choices.append("restore")
        getattr(self, "_" + self.rng.choice(choices))()

    def _create(self) -> None:
        address = f"o-{uuid.uuid4().hex[:8]}@outage.example.com"
        body = user_body(address)
        body["schemas"] = [USER_SCHEMA, SELLER_USER]
        body[SELLER_USER] = {
            "permissions": [
                {"category": self.rng.choice(CATEGORIES), "level": self.rng.choice(LEVELS)}
            ]
        }
        user = self._ok(self.client.post("/scim/v2/Users", json=body, headers=self.headers), 201)
        self.live.append(user["id"])
        self.user_names[user["id"]] = address

    def _patch_user(self, user_id: str, *operations: dict[str, Any]) -> None:
        body = {"schemas": [PATCH_SCHEMA], "Operations": list(operations)}
        self._ok(
            self.client.patch(f"/scim/v2/Users/{user_id}", json=body, headers=self.headers), 200
        )

    def _rename(self) -> None:
        self._patch_user(
            self.rng.choice(self.live),
            {"op": "replace", "path": "name.familyName", "value": f"F{self.count}"},
        )

    def _permissions(self) -> None:
        self._patch_user(
            self.rng.choice(self.live),
            {
                "op": "replace",
                "path": f"{SELLER_USER}:permissions",
                "value": [
                    {"category": self.rng.choice(CATEGORIES), "level": self.rng.choice(LEVELS)}
                ],
            },
        )

    def _toggle(self) -> None:
        user_id = self.rng.choice(self.live)
        current = self._ok(self.client.get(f"/scim/v2/Users/{user_id}", headers=self.headers), 200)
        self._patch_user(
            user_id, {"op": "replace", "path": "active", "value": not current["active"]}
        )

    def _group(self) -> None:
        members = self.rng.sample(self.live, k=min(len(self.live), 2))
        body = {
            "schemas": [GROUP_SCHEMA],
            "displayName": f"Team {self.count}",
            "members": [{"value": m} for m in members],
        }
        group = self._ok(self.client.post("/scim/v2/Groups", json=body, headers=self.headers), 201)
        self.groups.append(group["id"])

    def _members(self) -> None:
        if not self.groups:
            return self._group()
        group_id = self.rng.choice(self.groups)
        op = self.rng.choice(["add", "remove"])
        value = [{"value": self.rng.choice(self.live)}]
        body = {
            "schemas": [PATCH_SCHEMA],
            "Operations": [{"op": op, "path": "members", "value": value}],
        }
        self._ok(
            self.client.patch(f"/scim/v2/Groups/{group_id}", json=body, headers=self.headers),
            200,
            204,
        )
        return None

    def _delete(self) -> None:
        user_id = self.rng.choice(self.live)
        self._ok(self.client.delete(f"/scim/v2/Users/{user_id}", headers=self.headers), 204)
        self.live.remove(user_id)
        self.deleted.append(user_id)

    def _restore(self) -> None:
        user_id = self.deleted.pop(0)
        body = user_body(self.user_names[user_id])
        restored = self._ok(
            self.client.post("/scim/v2/Users", json=body, headers=self.headers), 201
        )
        assert restored["id"] == user_id
        self.live.append(user_id)


def test_no_change_is_lost_when_keycloak_stops_mid_stream(
    keycloak_server: KeycloakServer,
    idp: KeycloakIdentityProvider,
    connector: Connector,
    client: Any,
    make_seller: Callable[..., SellerHandle],
    make_worker: Callable[..., OutboxWorker],
) -> None:
    handle = make_seller()
    queue = SqlOutboxQueue(connector.engine)
    proxy: TcpProxy | None = None
    if keycloak_server.restartable:
        down, up = keycloak_server.halt, keycloak_server.resume
        worker = make_worker(timeout=5.0)
    else:
        target = urlparse(keycloak_server.url)
        proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 80)
        down, up = proxy.cut, proxy.restore
        worker = make_worker(timeout=5.0, url=proxy.url)
    stream = WriteStream(client, handle)
    background = BackgroundWorker(worker, interval=0.2).start()
    timings: dict[str, float] = {}
    try:
        for _ in range(8):
            stream.step()
        # Keycloak stops while the writes (and the worker) go on.
        started = time.monotonic()
        stopper = threading.Thread(target=down)
        stopper.start()
        while stopper.is_alive():
            stream.step()
            time.sleep(0.1)
        timings["stop"] = time.monotonic() - started
        for _ in range(8):
            stream.step()
        # The worker noticed: entries wait for a retry.
        assert wait_until(lambda: queue.stats(utcnow()).waiting_for_retry > 0, timeout=20)
        started = time.monotonic()
        starter = threading.Thread(target=up)
        starter.start()
        while starter.is_alive():
            if stream.count < 40:
                stream.step()
            time.sleep(0.3)
        timings["start"] = time.monotonic() - started
        for _ in range(4):
            stream.step()
        started = time.monotonic()

        def drained() -> bool:
            counts = queue.stats(utcnow()).counts
            return counts["pending"] == counts["in_progress"] == 0

        assert wait_until(drained, timeout=120, every=0.5), queue.stats(utcnow())
        timings["drain"] = time.monotonic() - started
    finally:
        background.stop()
        if proxy is not None:
            proxy.cut()
    print(f"outage test: {stream.count} writes, timings {timings}")

    stats = queue.stats(utcnow())
    assert stats.counts["poison"] == 0, queue.entries("poison")
    assert any(e.attempts > 0 for e in queue.entries(limit=10_000))  # the outage was felt

    # Keycloak matches the store exactly: every difference the reconciler knows of is absent.
    _, differences = compare(connector.uow, idp, handle.seller.id)
    assert differences == []
    # And, read plainly as the admin: one Keycloak user per connector user, no duplicates.
    with connector.uow() as uow:
        users = uow.users.list(handle.seller.id, include_deleted=True)
        memberships = uow.permission_sets.of_users([u.id for u in users])
    kc_users = kc_users_of_seller(keycloak_server, handle.seller.id)
    by_connector_id = {u["attributes"]["seller_connector_user_id"][0]: u for u in kc_users}
    assert len(kc_users) == len(by_connector_id) == len(users)
    assert kc_org_member_ids(keycloak_server, handle.seller.id) == {u["id"] for u in kc_users}
    for user in users:
        kc = by_connector_id[user.id]
        assert kc["id"] == user.idp_id
        assert kc["enabled"] is (user.active and not user.deleted)
        assert kc_group_paths(keycloak_server, kc["id"]) == {
            f"/sellers/{handle.seller.name}/{g.display_name}" for g in memberships.get(user.id, [])
        }


def test_no_change_is_lost_when_keycloak_stops_during_bulk_syncs(
    keycloak_server: KeycloakServer,
    idp: KeycloakIdentityProvider,
    connector: Connector,
    client: Any,
    make_seller: Callable[..., SellerHandle],
    make_worker: Callable[..., OutboxWorker],
) -> None:
    """The bulk path under an outage: 40 users arrive in one SCIM Bulk request, the worker
    syncs them in bulk rounds (chunks through the plugin's endpoint), Keycloak stops while it
    does, every user is renamed meanwhile, and Keycloak comes back: it then holds every user
    once, renamed, as the store has them; nothing is poison."""
    handle = make_seller()
    queue = SqlOutboxQueue(connector.engine)
    proxy: TcpProxy | None = None
    policy = dataclasses.replace(FAST, batch_size=10, bulk_threshold=4)
    if keycloak_server.restartable:
        down, up = keycloak_server.halt, keycloak_server.resume
        worker = make_worker(policy, timeout=5.0, bulk_chunk=4, bulk_parallel=2)
    else:
        target = urlparse(keycloak_server.url)
        proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 80)
        down, up = proxy.cut, proxy.restore
        worker = make_worker(policy, timeout=5.0, url=proxy.url, bulk_chunk=4, bulk_parallel=2)
    body = bulk_creates(
        user_body(f"b{n}-{uuid.uuid4().hex[:6]}@bulk-outage.example.com") for n in range(40)
    )
    response = client.post("/scim/v2/Bulk", json=body, headers=handle.headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    created = [op["location"].rsplit("/", 1)[-1] for op in response.get_json()["Operations"]]
    assert len(created) == 40

    background = BackgroundWorker(worker, interval=0.2).start()
    try:
        # Keycloak stops once the bulk rounds are under way.
        assert wait_until(lambda: len(kc_users_of_seller(keycloak_server, handle.seller.id)) > 4)
        stopper = threading.Thread(target=down)
        stopper.start()
        for n, user_id in enumerate(created):
            body = {
                "schemas": [PATCH_SCHEMA],
                "Operations": [{"op": "replace", "path": "name.familyName", "value": f"R{n}"}],
            }
            response = client.patch(f"/scim/v2/Users/{user_id}", json=body, headers=handle.headers)
            assert response.status_code == 200, response.get_data(as_text=True)
        stopper.join()
        assert wait_until(lambda: queue.stats(utcnow()).waiting_for_retry > 0, timeout=30)
        up()

        def drained() -> bool:
            counts = queue.stats(utcnow()).counts
            return counts["pending"] == counts["in_progress"] == 0

        assert wait_until(drained, timeout=180, every=0.5), queue.stats(utcnow())
    finally:
        background.stop()
        if proxy is not None:
            proxy.cut()

    assert worker.totals.bulk >= 40  # the bulk path did the work
    assert worker.totals.retried > 0  # and felt the outage
    assert queue.stats(utcnow()).counts["poison"] == 0, queue.entries("poison")
    _, differences = compare(connector.uow, idp, handle.seller.id)
    assert differences == []
    kc_users = kc_users_of_seller(keycloak_server, handle.seller.id)
    by_connector_id = {u["attributes"]["seller_connector_user_id"][0]: u for u in kc_users}
    assert len(kc_users) == len(by_connector_id) == 41  # and the primary: no duplicates
    for n, user_id in enumerate(created):
        assert by_connector_id[user_id]["lastName"] == f"R{n}"
