"""A held resource keeps its other writers waiting until the holder's write is in.

The SCIM service holds a resource after a write has met concurrent changes twice, so that a
writer that keeps losing to newer ones is not starved into a 412. Each test runs on SQLite
(the held write owns the write lock) and on PostgreSQL (the held row is locked).
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from connector.domain.errors import VersionMismatch


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
