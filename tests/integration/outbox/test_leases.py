"""Leases against a real Keycloak: a worker that overran its lease (a stalled machine) cannot
leave Keycloak with older state than the store's, on the one-user path and the bulk path."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from connector.adapters.keycloak import KeycloakIdentityProvider
from connector.adapters.sql.outbox_queue import SqlOutboxQueue
from connector.bootstrap import Connector
from connector.domain.model import utcnow
from connector.services.outbox import OutboxPolicy, OutboxWorker
from tests.conftest import PATCH_SCHEMA, SellerHandle, user_body
from tests.integration.outbox.conftest import FAST
from tests.integration.outbox.helpers import kc_user, scim_json
from tests.support.keycloak import KeycloakServer

pytestmark = pytest.mark.keycloak

LEASE = 2.0


class Stalling:
    """The real adapter, whose next user write stalls until the caller's lease is over; while
    it stalls, ``meanwhile`` runs (another worker takes the claim over). Then it writes what it
    was given: the state its worker read before the stall."""

    def __init__(self, real: KeycloakIdentityProvider, meanwhile: Callable[[], None]) -> None:
        self.real = real
        self.meanwhile: Callable[[], None] | None = meanwhile

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def _stall(self) -> None:
        if self.meanwhile is not None:
            meanwhile, self.meanwhile = self.meanwhile, None
            time.sleep(LEASE + 0.3)
            meanwhile()

    def sync_user(self, *args: Any) -> str:
        self._stall()
        return self.real.sync_user(*args)

    def bulk_sync_users(self, *args: Any) -> Any:
        self._stall()
        return self.real.bulk_sync_users(*args)


@pytest.mark.parametrize("users", [1, 7], ids=["one-user", "bulk"])
def test_a_worker_that_overran_its_lease_leaves_the_current_state_last(
    keycloak_server: KeycloakServer,
    idp: KeycloakIdentityProvider,
    connector: Connector,
    client: Any,
    make_seller: Callable[..., SellerHandle],
    make_worker: Callable[..., OutboxWorker],
    users: int,
) -> None:
    handle = make_seller()
    created = [
        scim_json(
            client.post(
                "/scim/v2/Users",
                json=user_body(f"lease-{uuid.uuid4().hex[:8]}@leases.example.com"),
                headers=handle.headers,
            ),
            201,
        )
        for _ in range(users)
    ]
    steady = make_worker()
    assert steady.drain().poisoned == 0

    def rename(name: str) -> None:
        body = {
            "schemas": [PATCH_SCHEMA],
            "Operations": [{"op": "replace", "path": "name.familyName", "value": name}],
        }
        for user in created:
            scim_json(
                client.patch(f"/scim/v2/Users/{user['id']}", json=body, headers=handle.headers),
                200,
            )

    rename("Stale")
    taken_over: list[Any] = []

    def meanwhile() -> None:
        # The store moves on, and another worker takes the expired claim over and applies it.
        rename("Current")
        taken_over.append(steady.drain())

    queue = SqlOutboxQueue(connector.engine)
    stalled = OutboxWorker(
        connector.uow,
        queue,
        Stalling(idp, meanwhile),  # type: ignore[arg-type]
        policy=OutboxPolicy(**{**FAST.__dict__, "lease_seconds": LEASE, "bulk_threshold": 2}),
    )
    report = stalled.run_round()

    # The other worker applied the current state while this one stalled; this one then wrote
    # the state it had read ("Stale"), learnt that it had lost the claim, and queued a sync.
    [other] = taken_over
    assert other.done >= users
    assert report.released >= users and report.done == 0
    assert {kc_user(keycloak_server, u["id"])["lastName"] for u in created} == {"Stale"}  # type: ignore[index]
    assert queue.backlog(utcnow()).pending == users
    # Which the next round applies: the current state comes last.
    assert steady.drain().done == users
    assert {kc_user(keycloak_server, u["id"])["lastName"] for u in created} == {"Current"}  # type: ignore[index]
    stats = queue.stats(utcnow())
    assert stats.counts["pending"] == stats.counts["in_progress"] == stats.counts["poison"] == 0
