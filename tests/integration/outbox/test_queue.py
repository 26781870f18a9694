"""The outbox queue on real SQLite and PostgreSQL: order per aggregate, collapsing, leases,
poison, concurrent claimers. No identity provider is involved."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest

from connector.adapters.sql.outbox_queue import SqlOutboxQueue
from connector.bootstrap import Connector, bootstrap
from connector.domain.model import utcnow
from connector.ports.store import OutboxEntry
from tests.conftest import SellerHandle, make_settings

LEASE = dt.timedelta(minutes=5)


@pytest.fixture
def store(database_url: str, tmp_path: Path) -> Connector:
    """The connector on SQLite and on PostgreSQL (the other tests here use SQLite only)."""
    return bootstrap(make_settings(database_url, tmp_path), migrate=False)


def enqueue(connector: Connector, *entries: tuple[str, str]) -> None:
    """Append (topic, aggregate) entries in one transaction, in this order."""
    with connector.uow() as uow:
        for topic, aggregate in entries:
            uow.outbox.add(OutboxEntry(seller_id="s1", topic=topic, aggregate_id=aggregate))
        uow.commit()


def test_claim_collapses_an_aggregate_and_holds_it_until_done(store: Connector) -> None:
    queue = SqlOutboxQueue(store.engine)
    enqueue(store, ("user.sync", "A"), ("user.invite", "A"), ("user.sync", "B"))
    enqueue(store, ("user.sync", "A"))

    claims = queue.claim(utcnow(), 10, LEASE)
    assert [(c.aggregate_id, [e.topic for e in c.entries]) for c in claims] == [
        ("A", ["user.sync", "user.invite", "user.sync"]),
        ("B", ["user.sync"]),
    ]
    ids_a = [e.id for e in claims[0].entries]
    assert ids_a == sorted(ids_a)

    # A new entry of A waits behind the claimed ones, even though it is due.
    enqueue(store, ("user.sync", "A"))
    assert queue.claim(utcnow(), 10, LEASE) == []

    queue.complete(ids_a)
    queue.complete([claims[1].entries[0].id])
    again = queue.claim(utcnow(), 10, LEASE)
    assert [(c.aggregate_id, len(c.entries)) for c in again] == [("A", 1)]
    assert queue.stats(utcnow()).counts == {"pending": 0, "in_progress": 1, "done": 4, "poison": 0}


def test_retry_later_keeps_order_and_poison_does_not_block(store: Connector) -> None:
    queue = SqlOutboxQueue(store.engine)
    enqueue(store, ("user.sync", "A"))
    [claim] = queue.claim(utcnow(), 10, LEASE)
    later = utcnow() + dt.timedelta(seconds=60)
    queue.retry_later([claim.entries[0].id], later, "unavailable: down")
    enqueue(store, ("user.invite", "A"))

    # The head waits for its retry: the invitation behind it waits too (order holds).
    assert queue.claim(utcnow(), 10, LEASE) == []
    stats = queue.stats(utcnow())
    assert stats.waiting_for_retry == 1 and stats.next_retry_at is not None

    # The provider answers again: what waited only for it is due now, in order.
    assert queue.expedite(utcnow()) == 1
    [claim] = queue.claim(utcnow(), 10, LEASE)
    assert [e.topic for e in claim.entries] == ["user.sync", "user.invite"]
    assert claim.entries[0].attempts == 1
    queue.poison([claim.entries[0].id], "rejected: conflict")
    queue.release([claim.entries[1].id], utcnow())

    # A poison entry does not hold back the entries after it.
    [claim] = queue.claim(utcnow(), 10, LEASE)
    assert [e.topic for e in claim.entries] == ["user.invite"]
    queue.complete([claim.entries[0].id])
    assert queue.stats(utcnow()).counts["poison"] == 1

    # An operator requeues it: it is pending again with its attempts reset.
    assert queue.requeue(utcnow(), poison=True) == 1
    [claim] = queue.claim(utcnow(), 10, LEASE)
    assert claim.entries[0].attempts == 0


def test_an_expired_lease_is_claimed_again(store: Connector) -> None:
    queue = SqlOutboxQueue(store.engine)
    enqueue(store, ("seller.sync", "S"))
    assert len(queue.claim(utcnow(), 10, dt.timedelta(seconds=-1))) == 1
    # The worker that claimed it died: its lease ended, another worker takes it over.
    [claim] = queue.claim(utcnow(), 10, LEASE)
    assert claim.aggregate_id == "S"
    assert queue.claim(utcnow(), 10, LEASE) == []


def test_set_provider_id_does_not_bump_the_version(
    connector: Connector, make_seller: Callable[..., SellerHandle]
) -> None:
    handle = make_seller()
    queue = SqlOutboxQueue(connector.engine)
    queue.set_provider_id(handle.primary.id, "kc-123")
    with connector.uow() as uow:
        user = uow.users.get(handle.seller.id, handle.primary.id)
    assert user is not None
    assert (user.idp_id, user.version) == ("kc-123", handle.primary.version)
    assert queue.find("kc-123") == (handle.seller.id, handle.primary.id)


@pytest.mark.slow
def test_concurrent_claimers_never_overlap_an_aggregate_nor_reorder_it(
    store: Connector,
) -> None:
    """Four claimers (threads with their own connections) and a writer adding entries meanwhile:
    no aggregate is ever held by two claimers, and each aggregate's entries are applied in id
    order, each exactly once."""
    queue = SqlOutboxQueue(store.engine)
    aggregates = [f"agg-{n}" for n in range(12)]
    total = 240
    in_flight: set[str] = set()
    applied: dict[str, list[int]] = defaultdict(list)
    overlaps: list[str] = []
    lock = threading.Lock()
    written = threading.Event()

    def writer() -> None:
        for n in range(total // 4):
            enqueue(store, *[("user.sync", aggregates[(n * 4 + k) % 12]) for k in range(4)])
        written.set()

    def claimer() -> None:
        idle_since: float | None = None
        while True:
            claims = queue.claim(utcnow(), 3, LEASE)
            if not claims:
                if written.is_set():
                    idle_since = idle_since or time.monotonic()
                    if time.monotonic() - idle_since > 0.5:
                        return
                time.sleep(0.005)
                continue
            idle_since = None
            for claim in claims:
                with lock:
                    if claim.aggregate_id in in_flight:
                        overlaps.append(claim.aggregate_id)
                    in_flight.add(claim.aggregate_id)
                time.sleep(0.002)  # "calling the provider"
                with lock:
                    applied[claim.aggregate_id].extend(e.id for e in claim.entries)  # type: ignore[misc]
                    in_flight.discard(claim.aggregate_id)
                queue.complete([e.id for e in claim.entries if e.id is not None])

    threads = [threading.Thread(target=writer)] + [
        threading.Thread(target=claimer, name=f"claimer-{n}") for n in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not overlaps
    assert sum(len(ids) for ids in applied.values()) == total
    for ids in applied.values():
        assert ids == sorted(ids) and len(ids) == len(set(ids))
    stats = queue.stats(utcnow())
    assert stats.counts["done"] == total and stats.counts["pending"] == 0


def test_an_overrun_claim_cannot_settle_what_another_claim_took_over(store: Connector) -> None:
    """Fencing: the first claim's lease ended and a second claim took the entries over; the
    first one's outcomes change nothing and name the ids it lost; the second one's apply."""
    queue = SqlOutboxQueue(store.engine)
    enqueue(store, ("user.sync", "A"), ("user.invite", "A"))
    [stale] = queue.claim(utcnow(), 10, dt.timedelta(seconds=-1))  # overran at once
    [fresh] = queue.claim(utcnow(), 10, LEASE)
    ids = [e.id for e in stale.entries]
    assert [e.id for e in fresh.entries] == ids
    assert stale.lease_until != fresh.lease_until

    assert queue.complete(ids, lease=stale.lease_until) == ids
    assert queue.retry_later(ids, utcnow(), "late", lease=stale.lease_until) == ids
    assert queue.poison(ids, "late", lease=stale.lease_until) == ids
    assert queue.release(ids, utcnow(), lease=stale.lease_until) == ids
    assert queue.stats(utcnow()).counts["in_progress"] == 2  # untouched: still the fresh claim's

    assert queue.complete(ids[:1], lease=fresh.lease_until) == []
    assert queue.release(ids[1:], utcnow(), lease=fresh.lease_until) == []
    # Settled or released: no longer held by the claim, so not settled again.
    assert queue.complete(ids, lease=fresh.lease_until) == ids
    counts = queue.stats(utcnow()).counts
    assert (counts["done"], counts["pending"], counts["in_progress"]) == (1, 1, 0)


def test_backlog_counts_what_waits(store: Connector) -> None:
    queue = SqlOutboxQueue(store.engine)
    before = queue.backlog(utcnow())
    enqueue(store, ("user.sync", "A"), ("user.sync", "B"), ("user.sync", "C"))
    [a, b, c] = queue.claim(utcnow(), 10, LEASE)
    queue.complete([e.id for e in a.entries if e.id is not None])
    queue.poison([e.id for e in b.entries if e.id is not None], "refused")
    queue.retry_later(
        [e.id for e in c.entries if e.id is not None],
        utcnow() + dt.timedelta(minutes=1),
        "unavailable: down",
    )
    backlog = queue.backlog(utcnow())
    assert backlog.pending == before.pending + 1
    assert backlog.poison == before.poison + 1
    assert backlog.waiting_for_retry == before.waiting_for_retry + 1
    assert backlog.oldest_age is not None and backlog.oldest_age >= 0


def test_provider_ids_in_bulk_do_not_bump_versions(
    connector: Connector, make_seller: Callable[..., SellerHandle]
) -> None:
    handle = make_seller()
    queue = SqlOutboxQueue(connector.engine)
    queue.set_provider_ids({handle.primary.id: "kc-bulk-1"})
    queue.set_provider_ids({handle.primary.id: "kc-bulk-1"})  # unchanged: fine
    with connector.uow() as uow:
        user = uow.users.get(handle.seller.id, handle.primary.id)
    assert user is not None
    assert (user.idp_id, user.version) == ("kc-bulk-1", handle.primary.version)
    assert queue.find("kc-bulk-1") == (handle.seller.id, handle.primary.id)
