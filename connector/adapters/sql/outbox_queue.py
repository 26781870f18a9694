"""The outbox as a work queue: claiming due entries in order per aggregate, in SQL.

An *aggregate* is the object an entry is about (``aggregate_id``: a seller, a user or a
permission set; ids are random, so they never collide across kinds). Its *head* is its
lowest-id entry that is still ``pending`` or ``in_progress``. Only heads are claimed, and a
claim takes the head together with every other pending entry of the same aggregate, so that

* two entries of one aggregate are never applied at the same time, nor out of order, by any
  number of workers in any number of processes;
* duplicates collapse: ten pending ``user.sync`` of one user become one call.

A claim moves its entries to ``in_progress`` with ``next_attempt_at`` set to the end of a
lease; a worker that dies mid-way leaves them to be claimed again once the lease ends (every
call of the identity provider converges, so applying twice is harmless).

**Fencing.** The end of the lease is also the claim's token: an outcome given with
``lease=claim.lease_until`` changes only the rows that are still ``in_progress`` with that very
``next_attempt_at``, i.e. still held by this claim, and returns the ids it no longer holds. A
worker that overran its lease (a stalled machine) thus never marks done, or back to pending,
entries another worker has claimed since; it learns that it lost them, and queues one more
converging sync (the worker does), so that a write of older state it may have made is
followed by the current one. Claims in one round share ``now``, so no two claims of different
rounds share a token, even across machines (a re-claim happens only after the lease ended,
and sets a later end).

Concurrency per database:

* PostgreSQL: the heads are selected ``FOR UPDATE SKIP LOCKED``: concurrent claimers skip
  each other's rows instead of waiting, and the ``NOT EXISTS`` on earlier live entries keeps
  the second entry of an aggregate out while its head is locked or in progress.
* SQLite: one writer at a time. Writing transactions start with ``BEGIN IMMEDIATE`` (see
  ``database.make_engine``), so a claim's select-then-update holds the database's write lock
  from start to end: claims of several threads or processes are serialized.
* Both: the claiming ``UPDATE`` only moves rows that are still claimable and checks the row
  count; a lost race rolls the claim back instead of double-claiming.

States: ``pending`` -> ``in_progress`` -> ``done`` | ``pending`` (retry later) | ``poison``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Engine, and_, bindparam, func, or_, select, true, update
from sqlalchemy.orm import aliased

from connector.adapters.sql.database import read_transaction, write_transaction
from connector.adapters.sql.tables import OutboxRow, UserRow
from connector.ports.outbox import (
    ACTIVE_STATES,
    DONE,
    IN_PROGRESS,
    PENDING,
    POISON,
    UNAVAILABLE_PREFIX,
    Claim,
    OutboxBacklog,
    OutboxStats,
)
from connector.ports.store import OutboxEntry

_ERROR_LIMIT = 2000


def _entry(row: Any) -> OutboxEntry:
    return OutboxEntry(
        seller_id=row.seller_id,
        topic=row.topic,
        aggregate_id=row.aggregate_id,
        payload=dict(row.payload or {}),
        id=row.id,
        state=row.state,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        created_at=row.created_at,
        last_error=row.last_error,
    )


class _LostRace(Exception):
    """Another claimer took some of the rows first: this claim is rolled back."""


class SqlOutboxQueue:
    """:class:`connector.services.outbox.OutboxQueue` on the ``outbox`` table."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"

    # ------------------------------------------------------------------ claiming

    def claim(self, now: dt.datetime, limit: int, lease: dt.timedelta) -> list[Claim]:
        """Claim up to ``limit`` aggregates whose head is due, with all their pending entries."""
        try:
            return self._claim(now, limit, lease)
        except _LostRace:
            return []

    def _claim(self, now: dt.datetime, limit: int, lease: dt.timedelta) -> list[Claim]:
        with write_transaction(self.engine) as session:
            postgres = self.postgres
            earlier = aliased(OutboxRow)
            blocked = (
                select(earlier.id)
                .where(
                    earlier.aggregate_id == OutboxRow.aggregate_id,
                    earlier.id < OutboxRow.id,
                    earlier.state.in_(ACTIVE_STATES),
                )
                .exists()
            )
            heads_query = (
                select(OutboxRow.id, OutboxRow.aggregate_id)
                .where(
                    OutboxRow.state.in_(ACTIVE_STATES),
                    OutboxRow.next_attempt_at <= now,
                    ~blocked,
                )
                .order_by(OutboxRow.id)
                .limit(limit)
            )
            if postgres:
                heads_query = heads_query.with_for_update(skip_locked=True, of=OutboxRow)
            heads = list(session.execute(heads_query))
            if not heads:
                return []
            aggregates = [aggregate for _, aggregate in heads]
            first_id = {aggregate: head_id for head_id, aggregate in heads}
            # Everything else live of these aggregates: pending ones whatever their schedule
            # (they wait behind the head anyway), and in-progress ones whose lease ended.
            rows_query = (
                select(OutboxRow)
                .where(
                    OutboxRow.aggregate_id.in_(aggregates),
                    or_(
                        OutboxRow.state == PENDING,
                        and_(OutboxRow.state == IN_PROGRESS, OutboxRow.next_attempt_at <= now),
                    ),
                )
                .order_by(OutboxRow.id)
            )
            if postgres:
                rows_query = rows_query.with_for_update(of=OutboxRow)
            rows = [r for r in session.execute(rows_query) if r.id >= first_id[r.aggregate_id]]
            ids = [r.id for r in rows]
            claimed = session.execute(
                update(OutboxRow)
                .where(
                    OutboxRow.id.in_(ids),
                    or_(
                        OutboxRow.state == PENDING,
                        and_(OutboxRow.state == IN_PROGRESS, OutboxRow.next_attempt_at <= now),
                    ),
                )
                .values(state=IN_PROGRESS, next_attempt_at=now + lease)
            )
            if claimed.rowcount != len(ids):
                # Someone claimed some of them between our read and write: claim nothing now.
                raise _LostRace
            entries: dict[str, list[OutboxEntry]] = {a: [] for a in aggregates}
            for row in rows:
                entry = _entry(row)
                entry.state = IN_PROGRESS
                entries[row.aggregate_id].append(entry)
        return [
            Claim(
                aggregate_id=a,
                seller_id=entries[a][0].seller_id,
                entries=entries[a],
                lease_until=now + lease,
            )
            for a in aggregates
            if entries[a]
        ]

    # ------------------------------------------------------------------ outcomes

    def _set(self, ids: Sequence[int], lease: dt.datetime | None, **values: Any) -> list[int]:
        """Update the rows; with ``lease``, only those the claim still holds. Returns the ids
        that were not changed (lost to another claim)."""
        if not ids:
            return []
        statement = update(OutboxRow).where(OutboxRow.id.in_(list(ids)))
        if lease is not None:
            statement = statement.where(
                OutboxRow.state == IN_PROGRESS, OutboxRow.next_attempt_at == lease
            )
        with write_transaction(self.engine) as session:
            changed = {
                row[0]
                for row in session.execute(statement.values(**values).returning(OutboxRow.id))
            }
        return [i for i in ids if i not in changed]

    def complete(self, ids: Sequence[int], lease: dt.datetime | None = None) -> list[int]:
        """The entries reached the identity provider."""
        return self._set(ids, lease, state=DONE, last_error=None)

    def retry_later(
        self, ids: Sequence[int], when: dt.datetime, error: str, lease: dt.datetime | None = None
    ) -> list[int]:
        """Back to pending, one attempt more, not before ``when``."""
        return self._set(
            ids,
            lease,
            state=PENDING,
            attempts=OutboxRow.attempts + 1,
            next_attempt_at=when,
            last_error=error[:_ERROR_LIMIT],
        )

    def poison(self, ids: Sequence[int], error: str, lease: dt.datetime | None = None) -> list[int]:
        """Given up: kept with its error until an operator requeues it."""
        return self._set(
            ids,
            lease,
            state=POISON,
            attempts=OutboxRow.attempts + 1,
            last_error=error[:_ERROR_LIMIT],
        )

    def release(
        self, ids: Sequence[int], when: dt.datetime, lease: dt.datetime | None = None
    ) -> list[int]:
        """Back to pending, not tried (no attempt counted), due at ``when``: the time of the
        retry of the failed entries they follow."""
        return self._set(ids, lease, state=PENDING, next_attempt_at=when)

    # ------------------------------------------------------------------ operators

    def requeue(
        self, now: dt.datetime, *, poison: bool = False, ids: Sequence[int] | None = None
    ) -> int:
        """Make waiting entries due now; with ``poison`` also put poison ones back in line
        (attempts reset). ``ids`` limits it to those entries. Returns how many moved."""
        moved = 0
        with write_transaction(self.engine) as session:
            scope = OutboxRow.id.in_(list(ids)) if ids else true()
            result = session.execute(
                update(OutboxRow)
                .where(scope, OutboxRow.state == PENDING, OutboxRow.next_attempt_at > now)
                .values(next_attempt_at=now)
            )
            moved += result.rowcount or 0
            if poison:
                result = session.execute(
                    update(OutboxRow)
                    .where(scope, OutboxRow.state == POISON)
                    .values(state=PENDING, attempts=0, next_attempt_at=now)
                )
                moved += result.rowcount or 0
        return moved

    def expedite(self, now: dt.datetime) -> int:
        """The identity provider answers again: retry now what waits only for that."""
        with write_transaction(self.engine) as session:
            result = session.execute(
                update(OutboxRow)
                .where(
                    OutboxRow.state == PENDING,
                    OutboxRow.next_attempt_at > now,
                    OutboxRow.last_error.like(UNAVAILABLE_PREFIX + "%"),
                )
                .values(next_attempt_at=now)
            )
            return result.rowcount or 0

    def stats(self, now: dt.datetime) -> OutboxStats:
        """Counts by state, the oldest live entry's age, how many wait for a retry."""
        with read_transaction(self.engine) as session:
            counts = {
                state: int(count)
                for state, count in session.execute(
                    select(OutboxRow.state, func.count()).group_by(OutboxRow.state)
                )
            }
            oldest = session.scalar(
                select(func.min(OutboxRow.created_at)).where(OutboxRow.state.in_(ACTIVE_STATES))
            )
            waiting = session.scalar(
                select(func.count()).where(
                    OutboxRow.state == PENDING, OutboxRow.next_attempt_at > now
                )
            )
            next_retry = session.scalar(
                select(func.min(OutboxRow.next_attempt_at)).where(
                    OutboxRow.state == PENDING, OutboxRow.next_attempt_at > now
                )
            )
        if oldest is not None and oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=dt.UTC)
        if next_retry is not None and next_retry.tzinfo is None:
            next_retry = next_retry.replace(tzinfo=dt.UTC)
        return OutboxStats(
            counts={s: counts.get(s, 0) for s in (PENDING, IN_PROGRESS, DONE, POISON)},
            oldest_pending_age=(now - oldest).total_seconds() if oldest else None,
            waiting_for_retry=int(waiting or 0),
            next_retry_at=next_retry,
        )

    def backlog(self, now: dt.datetime) -> OutboxBacklog:
        """What waits (for ``/metrics``): counts of the live and poison states and the oldest
        live entry's age, each read through the ``(state, next_attempt_at)`` index, never
        counting the done entries (which only grow)."""
        waiting_states = (PENDING, IN_PROGRESS, POISON)
        with read_transaction(self.engine) as session:
            counts = {
                state: int(count)
                for state, count in session.execute(
                    select(OutboxRow.state, func.count())
                    .where(OutboxRow.state.in_(waiting_states))
                    .group_by(OutboxRow.state)
                )
            }
            oldest = session.scalar(
                select(func.min(OutboxRow.created_at)).where(OutboxRow.state.in_(ACTIVE_STATES))
            )
            waiting = session.scalar(
                select(func.count()).where(
                    OutboxRow.state == PENDING, OutboxRow.next_attempt_at > now
                )
            )
        if oldest is not None and oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=dt.UTC)
        return OutboxBacklog(
            pending=counts.get(PENDING, 0),
            in_progress=counts.get(IN_PROGRESS, 0),
            poison=counts.get(POISON, 0),
            waiting_for_retry=int(waiting or 0),
            oldest_age=max(0.0, (now - oldest).total_seconds()) if oldest else None,
        )

    def entries(self, state: str | None = None, limit: int = 50) -> list[OutboxEntry]:
        """The newest entries (in a state), newest first."""
        with read_transaction(self.engine) as session:
            query = select(OutboxRow).order_by(OutboxRow.id.desc()).limit(limit)
            if state:
                query = query.where(OutboxRow.state == state)
            return [_entry(r) for r in session.execute(query)]

    # ------------------------------------------------------------------ provider ids

    def set_provider_id(self, user_id: str, provider_id: str) -> None:
        """Remember the identity provider's id of a user, without bumping its version: it is
        bookkeeping, not a change of the SCIM resource (no new ETag for the client)."""
        with write_transaction(self.engine) as session:
            session.execute(
                update(UserRow)
                .where(
                    UserRow.id == user_id,
                    or_(UserRow.idp_id.is_(None), UserRow.idp_id != provider_id),
                )
                .values(idp_id=provider_id)
            )

    def set_provider_ids(self, provider_ids: Mapping[str, str]) -> None:
        """:meth:`set_provider_id` for many users, in one write transaction (the bulk path)."""
        if not provider_ids:
            return
        users = UserRow.__table__
        statement = (
            update(users)
            .where(
                users.c.id == bindparam("user_id"),
                or_(users.c.idp_id.is_(None), users.c.idp_id != bindparam("provider_id")),
            )
            .values(idp_id=bindparam("provider_id"))
        )
        with write_transaction(self.engine) as session:
            session.execute(
                statement,
                [{"user_id": u, "provider_id": p} for u, p in provider_ids.items()],
            )

    def find(self, provider_user_id: str) -> tuple[str, str] | None:
        """(seller id, user id) of the user whose stored provider id this is."""
        with read_transaction(self.engine) as session:
            row = session.execute(
                select(UserRow.seller_id, UserRow.id).where(UserRow.idp_id == provider_user_id)
            ).first()
        return (str(row[0]), str(row[1])) if row else None
