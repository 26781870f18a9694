"""The feed of changes misses no event that commits late, however many commit before it.

PostgreSQL hands out audit ids when a row is written, not when its transaction commits: a
long transaction (a directory batch, a Bulk) commits ids older than events already placed
in the feed. SQLite commits in id order (writers take turns), so the test runs on
PostgreSQL only.
"""

from __future__ import annotations

from typing import Any

import pytest

from connector.ports.store import AuditEvent
from connector.services.feed import changes_after

LATER = 1_200
"""Events that commit while the first is still open: more than any fixed look-back."""


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_an_event_committed_after_many_later_ones_still_reaches_the_feed(
    connector: Any, make_seller: Any
) -> None:
    seller_id = make_seller().seller.id
    start = changes_after(connector.uow, None, limit=1000)
    while start.more:
        start = changes_after(connector.uow, str(start.next), limit=1000)

    def invited(target: str) -> AuditEvent:
        return AuditEvent(seller_id, "test", "user.invited", f"user:{target}")

    with connector.uow(immediate=True) as long_running:
        long_running.audit.append(invited("late"))  # takes its id now, commits at the end
        with connector.uow() as uow:
            for n in range(LATER):
                uow.audit.append(invited(f"early-{n}"))
            uow.commit()
        early = changes_after(connector.uow, str(start.next), limit=1000)
        seen = [e["target"] for e in early.events]
        while early.more:
            early = changes_after(connector.uow, str(early.next), limit=1000)
            seen += [e["target"] for e in early.events]
        assert len(seen) == LATER and "user:late" not in seen
        long_running.commit()

    late = changes_after(connector.uow, str(early.next), limit=1000)
    assert [e["target"] for e in late.events] == ["user:late"]
    # Placed once: following again from there gives nothing more.
    assert changes_after(connector.uow, str(late.next)).events == []
