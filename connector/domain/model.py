"""Seller accounts, their users and permission sets, and the rules they live by."""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from connector.domain.catalogue import Catalogue, Level
from connector.domain.errors import Forbidden, InvalidValue, Mutability


class Plan(StrEnum):
    """The selling plan of a seller account. Only professional sellers have secondary users."""

    professional = "professional"
    individual = "individual"


class Role(StrEnum):
    """A seller account has exactly one primary user; everyone else is secondary."""

    primary = "primary"
    secondary = "secondary"


class InvitationState(StrEnum):
    """Where a secondary user's invitation stands."""

    pending = "pending"
    accepted = "accepted"
    expired = "expired"


def utcnow() -> dt.datetime:
    """The current time, in UTC, to the microsecond."""
    return dt.datetime.now(dt.UTC)


_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

MAX_TEXT_LENGTH = 300
"""The longest userName, externalId, name or displayName the store keeps."""
MAX_EMAIL_LENGTH = 320
"""The longest email address the store reserves (RFC 5321 allows 64 + 1 + 255)."""


def check_length(attribute: str, value: str | None, limit: int = MAX_TEXT_LENGTH) -> None:
    """Refuse a value longer than the store keeps, the same way on every database.

    :raises InvalidValue: naming the attribute and the limit.
    """
    if value is not None and len(value) > limit:
        raise InvalidValue(
            f"{attribute} is {len(value)} characters long: at most {limit} are accepted."
        )


def is_email(value: str) -> bool:
    """Tell whether a string reads as an email address."""
    return bool(_EMAIL.match(value))


def text_key(value: str) -> str:
    """How case-insensitive strings are compared and indexed; the form scim2-models uses."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", value).lower())


def email_key(value: str) -> str:
    """The form in which email addresses are compared and reserved: case-insensitive."""
    return text_key(value.strip())


def email_domain(value: str) -> str:
    """The domain of an email address, lower-cased."""
    return text_key(value.rpartition("@")[2].strip())


@dataclass
class Email:
    """One email address of a user."""

    value: str
    type: str | None = None
    primary: bool = False
    display: str | None = None


@dataclass
class Invitation:
    """The invitation a secondary user gets to set a password and verify its email."""

    state: InvitationState = InvitationState.pending
    sent_at: dt.datetime | None = None
    expires_at: dt.datetime | None = None

    def current_state(self, now: dt.datetime) -> InvitationState:
        """A pending invitation past its expiry reads as expired."""
        if (
            self.state is InvitationState.pending
            and self.expires_at is not None
            and now >= self.expires_at
        ):
            return InvitationState.expired
        return self.state


Permissions = dict[str, Level]


@dataclass
class SellerAccount:
    """A marketplace seller: a tenant of this service."""

    id: str
    name: str
    plan: Plan
    partner_domains: list[str] = field(default_factory=list)
    created_at: dt.datetime = field(default_factory=utcnow)
    primary_user_id: str | None = None

    def check_may_add_secondary_users(self) -> None:
        """Secondary users are a professional selling plan feature."""
        if self.plan is not Plan.professional:
            raise Forbidden(
                f"Seller account {self.name!r} is on the {self.plan.value} plan: only "
                "sellers on the professional plan may add secondary users. Upgrade the "
                "plan first."
            )

    def check_not_partner(self, emails: list[str]) -> None:
        """Third-party service providers are authorized partners, not users."""
        partners = {d.casefold() for d in self.partner_domains}
        for address in emails:
            if email_domain(address) in partners:
                raise InvalidValue(
                    f"{address} belongs to {email_domain(address)}, an authorized "
                    "partner of this seller. Service providers act through partner "
                    "(application) authorization, not as users: authorize the partner "
                    "application instead of provisioning a user."
                )


@dataclass
class SellerUser:
    """A person who works in a seller account: its primary user or a secondary user."""

    id: str
    seller_id: str
    user_name: str
    role: Role
    emails: list[Email] = field(default_factory=list)
    given_name: str | None = None
    family_name: str | None = None
    display_name: str | None = None
    external_id: str | None = None
    active: bool = True
    deleted: bool = False
    permissions: Permissions = field(default_factory=dict)
    notifications: list[str] = field(default_factory=list)
    profile: dict[str, Any] = field(default_factory=dict)
    """SCIM attributes the domain carries without reading them (titles, phones, addresses...)."""
    invitation: Invitation | None = None
    idp_id: str | None = None
    created_at: dt.datetime = field(default_factory=utcnow)
    updated_at: dt.datetime = field(default_factory=utcnow)
    last_login_at: dt.datetime | None = None
    version: int = 1

    @property
    def is_primary(self) -> bool:
        return self.role is Role.primary

    @property
    def email_keys(self) -> set[str]:
        """Every address this user reserves: its emails, and its userName when it is an email."""
        keys = {email_key(e.value) for e in self.emails if e.value}
        if is_email(self.user_name):
            keys.add(email_key(self.user_name))
        return keys

    @property
    def primary_email(self) -> str | None:
        """The address notifications and invitations go to."""
        for email in self.emails:
            if email.primary:
                return email.value
        if self.emails:
            return self.emails[0].value
        return self.user_name if is_email(self.user_name) else None

    @property
    def is_administrator(self) -> bool:
        """Admin on user permissions makes a user another administrator of the account."""
        return self.is_primary or self.permissions.get("user-permissions") is Level.admin


@dataclass
class PermissionSet:
    """A named bundle of permissions (a SCIM Group), whose members inherit them."""

    id: str
    seller_id: str
    display_name: str
    external_id: str | None = None
    permissions: Permissions = field(default_factory=dict)
    member_ids: list[str] = field(default_factory=list)
    profile: dict[str, Any] = field(default_factory=dict)
    created_at: dt.datetime = field(default_factory=utcnow)
    updated_at: dt.datetime = field(default_factory=utcnow)
    version: int = 1


def validate_permissions(
    catalogue: Catalogue, permissions: Permissions | dict[str, str]
) -> Permissions:
    """Check every category and level against the catalogue, and return them typed.

    :raises InvalidValue: naming the first unknown category or level.
    """
    checked: Permissions = {}
    for category_id, level in permissions.items():
        category = catalogue.category(category_id)
        if category is None:
            raise InvalidValue(
                f"Unknown permission category {category_id!r}. Known categories: "
                + ", ".join(catalogue.category_ids)
            )
        try:
            typed = Level(level)
        except ValueError:
            raise InvalidValue(
                f"Unknown permission level {level!r} for {category_id!r}. Known levels: "
                + ", ".join(lv.value for lv in category.levels)
            ) from None
        if typed not in category.levels:
            raise InvalidValue(
                f"Level {typed.value!r} is not offered for {category_id!r}. Offered: "
                + ", ".join(lv.value for lv in category.levels)
            )
        checked[category_id] = typed
    return checked


def validate_notifications(catalogue: Catalogue, categories: list[str]) -> list[str]:
    """Check every notification category against the catalogue.

    :raises InvalidValue: naming the first unknown category.
    """
    for category_id in categories:
        if catalogue.notification(category_id) is None:
            raise InvalidValue(
                f"Unknown notification category {category_id!r}. Known categories: "
                + ", ".join(catalogue.notification_ids)
            )
    return list(dict.fromkeys(categories))


@dataclass(frozen=True)
class Grant:
    """A user's effective level in one category, and every source that grants it."""

    category: str
    level: Level
    granted_by: tuple[str, ...]


def effective_permissions(
    catalogue: Catalogue, user: SellerUser, groups: list[PermissionSet]
) -> list[Grant]:
    """The highest level per category granted directly or by any group.

    The primary user has every permission at admin, held directly: it is never left to
    groups. ``granted_by`` names ``direct`` or ``group:<displayName>`` for each source.
    """
    if user.is_primary:
        return [Grant(c.id, Level.admin, ("direct",)) for c in catalogue.permissions]
    sources: dict[str, list[tuple[Level, str]]] = {}
    for category, level in user.permissions.items():
        sources.setdefault(category, []).append((level, "direct"))
    for group in groups:
        for category, level in group.permissions.items():
            sources.setdefault(category, []).append((level, f"group:{group.display_name}"))
    grants = []
    for category in catalogue.category_ids:
        if category not in sources:
            continue
        best = max(level.rank for level, _ in sources[category])
        if best == 0:
            continue
        level = next(lv for lv, _ in sources[category] if lv.rank == best)
        granted_by = tuple(src for lv, src in sources[category] if lv.rank == best)
        grants.append(Grant(category, level, granted_by))
    return grants


def check_role_unchanged(user: SellerUser, requested: Role | None) -> None:
    """The role is read-only: it changes only through the operator's change-primary flow."""
    check_role_change(user.role, requested)


def check_role_change(current: Role, requested: Role | None) -> None:
    """Refuse a change of role: 403 for the primary, a mutability error for a secondary.

    :raises Forbidden: when the primary would be demoted.
    :raises Mutability: when a secondary user would be promoted.
    """
    if requested is None or requested is current:
        return
    if current is Role.primary:
        raise Forbidden(
            "The primary user cannot be demoted through SCIM: the primary changes only "
            "through the marketplace operator flow (seller-connector sellers change-primary)."
        )
    raise Mutability(
        "role is read-only: a secondary user becomes primary only through the operator "
        "flow (seller-connector sellers change-primary), after being deactivated."
    )


def check_primary_stays_active(user: SellerUser, active: bool) -> None:
    """The primary user owns the account: it cannot be deactivated through SCIM."""
    if user.is_primary and not active:
        raise Forbidden(
            "The primary user cannot be deactivated or deleted through SCIM: it owns the "
            "seller account and changes only through the marketplace operator flow "
            "(seller-connector sellers change-primary)."
        )
