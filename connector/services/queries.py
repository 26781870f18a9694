"""Read-only views for people and scripts: notification recipients, access review, audit."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from connector.domain.catalogue import Catalogue
from connector.domain.errors import InvalidValue
from connector.domain.model import (
    Grant,
    SellerAccount,
    SellerUser,
    effective_permissions,
    is_administrator,
    utcnow,
)
from connector.ports.store import AuditEvent, Recipient, UnitOfWork

STALE_AFTER = dt.timedelta(days=90)


def notification_recipients(
    uow: UnitOfWork, catalogue: Catalogue, seller: SellerAccount, category: str
) -> list[Recipient]:
    """Who receives a notification category: the primary always, active secondaries that
    subscribed (README, rule 7); the primary first, then by userName.

    The marketplace asks this at send time: it is one read of the recipient index, which each
    save of a user keeps up to date in the same transaction.
    """
    if catalogue.notification(category) is None:
        raise InvalidValue(
            f"Unknown notification category {category!r}. Known categories: "
            + ", ".join(catalogue.notification_ids)
        )
    with uow:
        return uow.recipients.of(seller.id, category)


@dataclass
class ReviewLine:
    """One user in an access review."""

    user: SellerUser
    grants: list[Grant]
    administrator: bool
    stale: bool


def access_review(
    uow: UnitOfWork, catalogue: Catalogue, seller: SellerAccount, now: dt.datetime | None = None
) -> list[ReviewLine]:
    """Every user with role, status, effective permissions and where they come from.

    Administrators (admin on the administrator category, or the primary) are flagged,
    and so are users with no change and no login for 90 days.
    """
    now = now or utcnow()
    with uow:
        users = uow.users.list(seller.id)
        groups = uow.permission_sets.of_users([u.id for u in users])
    lines = []
    for user in users:
        sets = groups.get(user.id, [])
        grants = effective_permissions(catalogue, user, sets)
        admin = is_administrator(catalogue, user, sets)
        last_seen = max(t for t in (user.updated_at, user.last_login_at, user.created_at) if t)
        lines.append(ReviewLine(user, grants, admin, now - last_seen > STALE_AFTER))
    lines.sort(key=lambda line: (not line.user.is_primary, line.user.user_name.casefold()))
    return lines


def audit_trail(
    uow: UnitOfWork, seller: SellerAccount, limit: int | None = None
) -> list[AuditEvent]:
    """Every recorded change of a seller account, oldest first."""
    with uow:
        return uow.audit.list(seller.id, limit=limit)


MAX_PAGE = 1000
"""The most events one page of the audit trail or of the feed of changes holds."""


def audit_page(
    uow: UnitOfWork, seller: SellerAccount, after: int | None = None, limit: int = 100
) -> tuple[list[AuditEvent], int | None]:
    """One page of a seller's audit trail, oldest first: the events after the event id
    ``after``, and the ``after`` of the next page (None when this page is the last)."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidValue(f"limit must be between 1 and {MAX_PAGE}.")
    with uow:
        events = uow.audit.list(seller.id, limit=limit + 1, after=after)
    if len(events) <= limit:
        return events, None
    events = events[:limit]
    return events, events[-1].id
