"""A held resource keeps its other writers waiting until the holder's write is in.

The SCIM service holds a resource after a write has met concurrent changes twice, so that a
writer that keeps losing to newer ones is not starved into a 412; two console events about
one user hold it, so that the second reads the first. Each test runs on SQLite (the held
write owns the write lock) and on PostgreSQL (the held row is locked).
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from typing import Any

import pytest

from connector.adapters.sql.outbox_queue import SqlOutboxQueue
from connector.domain.errors import VersionMismatch
from connector.ports.identity import ProviderChange
from connector.ports.outbox import MAIL_SEND
from connector.services.console import apply_change, apply_pushed
from tests.conftest import user_body


def test_a_writer_waits_for_the_holder_and_then_sees_its_change(
    connector: Any, make_seller: Any
) -> None:
    handle = make_seller()
    seller_id, user_id = handle.seller.id, handle.primary.id
    with connector.uow() as uow:
        stale = uow.users.get(seller_id, user_id)
    assert stale is not None
    outcome: list[BaseException | None] = []

    def other_writer() -> None:
        try:
            with connector.uow() as uow:
                stale.display_name = "Other writer"
                uow.users.save(stale)
                uow.commit()
            outcome.append(None)
        except BaseException as error:  # surfaced below
            outcome.append(error)

    with connector.uow(immediate=True) as held:
        held.users.hold(seller_id, user_id)
        current = held.users.get(seller_id, user_id)
        other = threading.Thread(target=other_writer)
        other.start()
        other.join(timeout=0.5)
        assert other.is_alive(), "the other writer did not wait for the held user"
        current.display_name = "Holder"
        held.users.save(current)
        held.commit()
    other.join(timeout=10)
    assert not other.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], VersionMismatch)
    with connector.uow() as uow:
        stored = uow.users.get(seller_id, user_id)
    assert stored.display_name == "Holder"
    assert stored.version == current.version


def test_holding_needs_a_write_transaction(connector: Any, make_seller: Any) -> None:
    handle = make_seller()
    with connector.uow() as uow, pytest.raises(RuntimeError, match="immediate"):
        uow.users.hold(handle.seller.id, handle.primary.id)


def test_an_acceptance_and_a_login_applied_at_once_tell_one_first_sign_in(
    connector: Any, client: Any, make_seller: Any
) -> None:
    handle = make_seller()
    address = f"newcomer-{uuid.uuid4().hex[:6]}@held.example.com"
    created = client.post("/scim/v2/Users", headers=handle.headers, json=user_body(address))
    assert created.status_code == 201
    user_id = created.json["id"]

    def change(kind: str) -> ProviderChange:
        return ProviderChange(
            provider_user_id=f"kc-{user_id}",
            kind=kind,
            at=dt.datetime.now(dt.UTC),
            event_id=uuid.uuid4().hex,
            details={"connector_user_id": user_id, "seller_id": handle.seller.id},
        )

    login_results: list[str] = []
    login = threading.Thread(
        target=lambda: login_results.append(
            apply_pushed(connector.uow, connector.catalogue, change("login")).result
        )
    )
    # The acceptance is applied and not yet committed when the login arrives.
    with connector.uow(immediate=True) as uow:
        accepted = apply_change(uow, connector.catalogue, change("invitation-accepted"))
        assert accepted.result == "applied"
        login.start()
        login.join(timeout=0.5)
        assert login.is_alive(), "the login did not wait for the acceptance in flight"
        uow.commit()
    login.join(timeout=10)
    assert login_results == ["applied"]
    told = [
        entry.payload["to"]
        for entry in SqlOutboxQueue(connector.engine).entries(limit=10_000)
        if entry.topic == MAIL_SEND
        and address in entry.payload["subject"]
        and "first time" in entry.payload["subject"]
    ]
    assert told == [handle.primary.user_name]
