"""The outbox as a work queue: the port the worker claims from, and the words it speaks.

Every write use case appends an :class:`~connector.ports.store.OutboxEntry` in the same
transaction as its change; the worker (``connector.services.outbox``) claims them through
:class:`OutboxQueue` (implemented by ``connector.adapters.sql.outbox_queue``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from connector.ports.store import OutboxEntry

SELLER_SYNC = "seller.sync"
USER_SYNC = "user.sync"
USER_INVITE = "user.invite"
PERMISSION_SET_SYNC = "permission_set.sync"
PERMISSION_SET_DELETE = "permission_set.delete"
MAIL_SEND = "mail.send"
"""An email of the connector's own (payload: ``to``, ``subject``, ``text``, ``html``), its
aggregate ``mail-<id>``: sent at least once, retried while the mail server is down."""
TOPICS = (
    SELLER_SYNC,
    USER_SYNC,
    USER_INVITE,
    PERMISSION_SET_SYNC,
    PERMISSION_SET_DELETE,
    MAIL_SEND,
)

PENDING = "pending"
IN_PROGRESS = "in_progress"
DONE = "done"
POISON = "poison"
ACTIVE_STATES = (PENDING, IN_PROGRESS)
STATES = (PENDING, IN_PROGRESS, DONE, POISON)

UNAVAILABLE_PREFIX = "unavailable:"
"""``last_error`` of entries that wait only for the provider to answer again."""


@dataclass
class Claim:
    """The live entries of one aggregate, claimed together, in id order."""

    aggregate_id: str
    seller_id: str
    entries: list[OutboxEntry]
    state: Any = None
    """The object as read from the store once for the whole claim (set by the worker)."""
    lease_until: dt.datetime | None = None
    """When the claim's lease ends: another worker may take the entries over after that. Also
    the claim's fencing token: an outcome passed with ``lease=lease_until`` applies only to the
    entries this claim still holds (see :class:`OutboxQueue`)."""


@dataclass
class OutboxBacklog:
    """What waits, read cheaply enough for every metrics scrape (no count of done entries)."""

    pending: int
    in_progress: int
    poison: int
    waiting_for_retry: int
    oldest_age: float | None
    """Seconds since the oldest pending or in-progress entry was written (None: none)."""


@dataclass
class OutboxStats:
    """The queue at a glance."""

    counts: dict[str, int]
    oldest_pending_age: float | None
    """Seconds since the oldest pending or in-progress entry was written."""
    waiting_for_retry: int
    next_retry_at: dt.datetime | None


class OutboxQueue(Protocol):
    """The outbox as a work queue (``connector.adapters.sql.outbox_queue``).

    The outcome methods (``complete``, ``retry_later``, ``poison``, ``release``) take the
    claim's ``lease`` (:attr:`Claim.lease_until`): they then change only the entries that
    claim still holds, and return the ids it lost (its lease ended and another worker claimed
    them again), so that the worker can tell that another one may have applied newer state.
    """

    def claim(self, now: dt.datetime, limit: int, lease: dt.timedelta) -> list[Claim]:
        """Claim aggregates whose first live entry is due, with all their pending entries."""
        ...

    def complete(self, ids: Sequence[int], lease: dt.datetime | None = None) -> list[int]: ...
    def retry_later(
        self, ids: Sequence[int], when: dt.datetime, error: str, lease: dt.datetime | None = None
    ) -> list[int]: ...
    def poison(
        self, ids: Sequence[int], error: str, lease: dt.datetime | None = None
    ) -> list[int]: ...
    def release(
        self, ids: Sequence[int], when: dt.datetime, lease: dt.datetime | None = None
    ) -> list[int]: ...
    def requeue(
        self, now: dt.datetime, *, poison: bool = False, ids: Sequence[int] | None = None
    ) -> int: ...
    def expedite(self, now: dt.datetime) -> int: ...
    def stats(self, now: dt.datetime) -> OutboxStats: ...
    def backlog(self, now: dt.datetime) -> OutboxBacklog: ...
    def entries(self, state: str | None = None, limit: int = 50) -> list[OutboxEntry]: ...
    def set_provider_id(self, user_id: str, provider_id: str) -> None: ...
    def set_provider_ids(self, provider_ids: Mapping[str, str]) -> None: ...
