"""The feed of changes the marketplace's portal follows: user and permission changes, in order.

The feed is read from the audit trail. Each committed event that is a user or permission
change gets a **position** (see :class:`~connector.ports.store.ChangeFeedStore`: positions
follow commits, not the order ids were handed out, so a reader never misses an event that
committed late). A reader passes the position of the last event it has (``after``) and
gets what follows, oldest first; ``next`` is the position to pass the next time (the same
one when nothing is new). Positions are never reused, and an event's position never changes:
following the feed from any position gives every later change exactly once.

What the feed carries (``type``), from which audit actions:

=====================  ====================================================================
``created``            ``user.created`` (a new secondary user, invited at once), ``user.restored``
``invited``            ``user.invited`` (a new invitation after the last one expired)
``accepted``           ``user.invitation-accepted``
``deactivated``        ``user.deactivated``, ``user.deleted`` (deactivated and hidden),
                       ``user.invitation-expired`` (deactivated when its invitation lapsed)
``reactivated``        ``user.reactivated``
``permissions-changed`` ``user.updated`` that changed direct permissions; ``group.created``,
                       ``group.updated`` (permissions or members), ``group.deleted`` with
                       members: ``users`` lists whose effective permissions may have changed
``primary-changed``    ``primary.changed``
=====================  ====================================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from connector.domain.errors import InvalidValue
from connector.ports.store import AuditEvent, FeedEntry, UnitOfWorkFactory

MAX_PAGE = 1000
DEFAULT_PAGE = 100

KINDS: dict[str, str] = {
    "user.created": "created",
    "user.restored": "created",
    "user.invited": "invited",
    "user.invitation-accepted": "accepted",
    "user.deactivated": "deactivated",
    "user.deleted": "deactivated",
    "user.invitation-expired": "deactivated",
    "user.reactivated": "reactivated",
    "user.updated": "permissions-changed",
    "group.created": "permissions-changed",
    "group.updated": "permissions-changed",
    "group.deleted": "permissions-changed",
    "primary.changed": "primary-changed",
}
"""Feed type of each audit action the feed carries."""

_GROUP_PERMISSION_CHANGES = ("permissions", "membersAdded", "membersRemoved")


def carried(event: AuditEvent) -> bool:
    """Whether an audit event is a change the feed carries (a user.updated only when it
    changed permissions; a permission set only when someone's permissions may change)."""
    if event.seller_id is None or event.action not in KINDS:
        return False
    changes = event.changes or {}
    if event.action == "user.updated":
        return "permissions" in changes
    if event.action in ("group.created", "group.deleted"):
        return bool(changes.get("members")) and (
            event.action == "group.deleted" or bool(changes.get("permissions"))
        )
    if event.action == "group.updated":
        return any(key in changes for key in _GROUP_PERMISSION_CHANGES)
    return True


def affected_users(event: AuditEvent) -> list[str]:
    """The users whose state or effective permissions the event changed."""
    changes = event.changes or {}
    kind, _, ref = event.target.partition(":")
    if kind == "user":
        return [ref]
    if event.action == "group.updated":
        members = set(changes.get("membersAdded") or []) | set(changes.get("membersRemoved") or [])
        if "permissions" in changes:
            members |= set(changes.get("members") or [])
        return sorted(members)
    return sorted(changes.get("members") or [])


@dataclass
class FeedPage:
    """One page of the feed: its events, the cursor to pass next, whether more wait."""

    events: list[dict[str, Any]]
    next: int
    more: bool


def as_change(entry: FeedEntry) -> dict[str, Any]:
    """One feed event as the operator API and the CLI give it."""
    event = entry.event
    return {
        "cursor": str(entry.position),
        "type": KINDS[event.action],
        "action": event.action,
        "at": event.at.isoformat() if event.at else None,
        "seller_id": event.seller_id,
        "target": event.target,
        "users": affected_users(event),
        "actor": event.actor,
        "changes": event.changes,
    }


def parse_cursor(after: str | None) -> int:
    """The position a cursor names (none: the start of the feed).

    :raises InvalidValue: for anything but a cursor the feed gave.
    """
    if after is None or after == "":
        return 0
    if not after.isdigit() or len(after) > 18:
        raise InvalidValue(
            f"after={after!r} is not a cursor of this feed: pass the 'next' value of the "
            "previous page (or nothing, to start from the beginning)."
        )
    return int(after)


def changes_after(
    uow_factory: UnitOfWorkFactory,
    after: str | None,
    limit: int = DEFAULT_PAGE,
    seller_id: str | None = None,
) -> FeedPage:
    """The changes after the cursor ``after``, of every seller or of ``seller_id``.

    Newly committed events get their positions first (one short write, only when the store
    holds events not yet placed).
    """
    position = parse_cursor(after)
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidValue(f"limit must be between 1 and {MAX_PAGE}.")
    with uow_factory() as uow:
        pending = uow.change_feed.pending()
    if pending:
        with uow_factory(immediate=True) as uow:
            uow.change_feed.sequence(KINDS, carried)
            uow.commit()
    with uow_factory() as uow:
        entries = uow.change_feed.page(position, limit + 1, seller_id)
    more = len(entries) > limit
    entries = entries[:limit]
    return FeedPage(
        events=[as_change(e) for e in entries],
        next=entries[-1].position if entries else position,
        more=more,
    )
