"""Seller accounts, their users and permission sets, and the rules they live by.

Every seller rule is a method of the aggregate it protects: whichever way a change
arrives (SCIM, the command line, a directory sync, the Keycloak console), the use cases
ask the aggregate, which checks, changes itself, or raises a
:class:`~connector.domain.errors.DomainError` saying why not.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from connector.domain.catalogue import Catalogue, Level
from connector.domain.drafts import PermissionSetDraft, UserDraft
from connector.domain.errors import Forbidden, InvalidValue, Mutability
from connector.domain.values import Email, InvitationState, Plan, Role, utcnow

OPERATOR_FLOW = "the marketplace operator flow (seller-connector sellers change-primary)"

MAX_TEXT_LENGTH = 300
"""The longest userName, externalId, name or displayName the store keeps."""
MAX_EMAIL_LENGTH = 320
"""The longest email address the store reserves (RFC 5321 allows 64 + 1 + 255)."""
MAX_PROFILE_TEXT = 2048
"""The longest text of any other attribute (title, address lines, phone numbers...)."""
MAX_PROFILE_BYTES = 64 * 1024
"""The largest profile (every attribute the domain carries without reading), as JSON."""
MAX_NOTIFICATIONS = 100
"""More notification categories than any catalogue offers: a body beyond it is malformed."""

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# Control, format (zero-width, bidi), separators other than space, private-use,
# surrogates and unassigned code points: nobody types them on purpose, and they make
# look-alikes of identifiers.
_INVISIBLE = frozenset({"Cc", "Cf", "Zl", "Zp", "Co", "Cs", "Cn"})


def check_length(attribute: str, value: str | None, limit: int = MAX_TEXT_LENGTH) -> None:
    """Refuse a value longer than the store keeps, the same way on every database.

    :raises InvalidValue: naming the attribute and the limit.
    """
    if value is not None and len(value) > limit:
        raise InvalidValue(
            f"{attribute} is {len(value)} characters long: at most {limit} are accepted."
        )


def check_visible(attribute: str, value: str | None) -> None:
    """Refuse control, format (zero-width) and other invisible characters in an identifier.

    :raises InvalidValue: naming the attribute and the character's code point.
    """
    if not value:
        return
    for character in value:
        if unicodedata.category(character) in _INVISIBLE:
            raise InvalidValue(
                f"{attribute} contains the invisible or control character "
                f"U+{ord(character):04X}: remove it (identifiers may hold visible "
                "characters and spaces only)."
            )


def is_email(value: str) -> bool:
    """Tell whether a string reads as an email address."""
    return bool(_EMAIL.match(value))


def text_key(value: str) -> str:
    """How case-insensitive strings are compared in filters; the form scim2-models uses."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", value).lower())


def identity_key(value: str) -> str:
    """The one canonical form of an identifier (userName, a permission set's name), for
    uniqueness: trimmed, compatibility-normalised (NFKC) and case-folded, so that
    look-alikes (full-width letters, ligatures, case) are one and the same."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", value.strip()).casefold())


def email_key(value: str) -> str:
    """The canonical form in which email addresses are compared and reserved: the identity
    key, with the domain's trailing dots (the DNS root) dropped."""
    key = identity_key(value)
    local, at, domain = key.rpartition("@")
    return f"{local}@{domain.rstrip('.')}" if at else key


def email_domain(value: str) -> str:
    """The domain of an email address, in its canonical form."""
    return email_key(value).rpartition("@")[2]


def check_profile(profile: dict[str, Any]) -> None:
    """Bound the attributes the domain carries without reading: each text, and the whole.

    :raises InvalidValue: naming the first attribute that is too long.
    """

    def walk(value: Any, path: str) -> None:
        if isinstance(value, str):
            check_length(path, value, MAX_PROFILE_TEXT)
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{path}.{key}" if path else str(key))
        elif isinstance(value, list):
            for item in value:
                walk(item, path)

    walk(profile, "")
    size = len(json.dumps(profile, default=str))
    if size > MAX_PROFILE_BYTES:
        raise InvalidValue(
            f"The user's other attributes take {size} bytes: at most {MAX_PROFILE_BYTES} are kept."
        )


DEFAULT_INVITATION_LIFESPAN = dt.timedelta(days=7)
"""How long an invitation may wait for its first sign-in, unless the operator says otherwise."""


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

    @property
    def lifespan(self) -> dt.timedelta:
        """How long it was valid when sent (the default for one sent before that was kept)."""
        if self.sent_at is not None and self.expires_at is not None:
            return self.expires_at - self.sent_at
        return DEFAULT_INVITATION_LIFESPAN


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

    def partner_of(self, address: str) -> str | None:
        """The authorized partner domain an address belongs to (the domain or a subdomain)."""
        domain = email_domain(address)
        for partner in self.partner_domains:
            partner_key = email_domain(f"x@{partner}")
            if domain == partner_key or domain.endswith("." + partner_key):
                return partner_key
        return None

    def check_not_partner(self, emails: list[str]) -> None:
        """Third-party service providers are authorized partners, not users."""
        for address in emails:
            partner = self.partner_of(address)
            if partner is not None:
                raise InvalidValue(
                    f"{address} belongs to {partner}, an authorized partner of this seller. "
                    "Service providers act through partner (application) authorization, "
                    "not as users: authorize the partner application instead of "
                    "provisioning a user."
                )


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
    if len(categories) > MAX_NOTIFICATIONS:
        raise InvalidValue(f"At most {MAX_NOTIFICATIONS} notification categories are accepted.")
    for category_id in categories:
        if catalogue.notification(category_id) is None:
            raise InvalidValue(
                f"Unknown notification category {category_id!r}. Known categories: "
                + ", ".join(catalogue.notification_ids)
            )
    return list(dict.fromkeys(categories))


def check_role_change(current: Role, requested: Role | None) -> None:
    """The role is read-only: it changes only through the operator's change-primary flow.

    :raises Forbidden: when the primary would be demoted.
    :raises Mutability: when a secondary user would be promoted.
    """
    if requested is None or requested is current:
        return
    if current is Role.primary:
        raise Forbidden(
            f"The primary user cannot be demoted through SCIM: the primary changes only "
            f"through {OPERATOR_FLOW}."
        )
    raise Mutability(
        "role is read-only: a secondary user becomes primary only through the operator "
        "flow (seller-connector sellers change-primary), after being deactivated."
    )


def refuse_role_write(current: Role) -> Forbidden | Mutability:
    """Why a request that writes the read-only role (a PATCH naming it) is refused: the
    primary's role is the account's ownership (403); a secondary's is read-only (400)."""
    try:
        check_role_change(current, Role.secondary if current is Role.primary else Role.primary)
    except (Forbidden, Mutability) as error:
        return error
    raise AssertionError("a change of role is always refused")


def draft_email_keys(draft: UserDraft) -> set[str]:
    """Every address a draft would reserve: its emails, and its userName when an email."""
    keys = {email_key(e.value) for e in draft.emails if e.value}
    if is_email(draft.user_name.strip()):
        keys.add(email_key(draft.user_name))
    return keys


def check_user_draft(catalogue: Catalogue, draft: UserDraft) -> tuple[Permissions, list[str]]:
    """The checks of a user's desired state that need nothing but the catalogue.

    :returns: the permissions, typed, and the notification categories, deduplicated.
    :raises InvalidValue: naming the first attribute or value refused.
    """
    if not draft.user_name or not draft.user_name.strip():
        raise InvalidValue("userName is required and may not be blank.")
    for attribute, value in (
        ("userName", draft.user_name),
        ("externalId", draft.external_id),
        ("displayName", draft.display_name),
        ("name.givenName", draft.given_name),
        ("name.familyName", draft.family_name),
    ):
        check_length(attribute, value)
    check_visible("userName", draft.user_name)
    for email in draft.emails:
        check_length("emails.value", email.value, MAX_EMAIL_LENGTH)
        check_visible("emails.value", email.value)
    check_profile(draft.profile)
    return (
        validate_permissions(catalogue, draft.permissions),
        validate_notifications(catalogue, draft.notifications),
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
    """SCIM attributes the domain carries without reading (titles, phones, addresses...)."""
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
        if is_email(self.user_name.strip()):
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
    def receives_notifications(self) -> bool:
        """Whether notifications reach this user at all (README, rule 7): the primary always,
        a secondary user while active; never a deleted user, nor one without an address."""
        return (
            not self.deleted and self.primary_email is not None and (self.is_primary or self.active)
        )

    def receives(self, category: str) -> bool:
        """Whether this user receives a notification category: the primary every one, an
        active secondary user the ones it subscribes to (README, rule 7)."""
        return self.receives_notifications and (self.is_primary or category in self.notifications)

    @property
    def never_signed_in(self) -> bool:
        """Whether the user never accepted its invitation nor logged in: its addresses are
        not yet its own, and are released when it goes (see the README's rules)."""
        accepted = self.invitation is not None and self.invitation.state is InvitationState.accepted
        return not self.is_primary and not accepted and self.last_login_at is None

    def draft(self) -> UserDraft:
        """The user's whole current state as a draft: a replace changes only what is set."""
        return UserDraft(
            user_name=self.user_name,
            emails=[Email(e.value, e.type, e.primary, e.display) for e in self.emails],
            given_name=self.given_name,
            family_name=self.family_name,
            display_name=self.display_name,
            external_id=self.external_id,
            active=self.active,
            permissions={k: v.value for k, v in self.permissions.items()},
            notifications=list(self.notifications),
            profile=dict(self.profile),
        )

    # -- Seller rules ----------------------------------------------------------------

    def apply(self, draft: UserDraft, catalogue: Catalogue) -> dict[str, Any]:
        """Take a whole desired state (a SCIM PUT or PATCH, a directory entry).

        The role is read-only; the primary user stays active, and its userName and emails
        change only through the operator's change-primary flow.

        :returns: what changed, for the audit trail (empty when nothing did).
        :raises DomainError: naming the rule or the value refused; nothing is changed.
        """
        check_role_change(self.role, draft.requested_role)
        active = self.active if draft.active is None else bool(draft.active)
        if self.is_primary:
            self._check_primary_keeps(draft, active)
        permissions, notifications = check_user_draft(catalogue, draft)
        before = self._snapshot()
        self.user_name = draft.user_name
        self.emails = list(draft.emails)
        self.given_name = draft.given_name
        self.family_name = draft.family_name
        self.display_name = draft.display_name
        self.external_id = draft.external_id
        # The primary holds every permission at admin: direct grants would mean nothing.
        self.permissions = {} if self.is_primary else permissions
        self.notifications = notifications
        self.profile = dict(draft.profile)
        self.active = active
        after = self._snapshot()
        return {k: {"from": before[k], "to": after[k]} for k in after if before[k] != after[k]}

    def _check_primary_keeps(self, draft: UserDraft, active: bool) -> None:
        if not active:
            raise Forbidden(
                "The primary user cannot be deactivated or deleted through SCIM: it owns the "
                f"seller account and changes only through {OPERATOR_FLOW}."
            )
        same_name = identity_key(draft.user_name) == identity_key(self.user_name)
        drafted = {email_key(e.value) for e in draft.emails if e.value}
        if not same_name or drafted != {email_key(e.value) for e in self.emails if e.value}:
            raise Forbidden(
                "The primary user's userName and emails identify the owner of the seller "
                "account: they change only through the operator's verified flow "
                "(seller-connector sellers change-primary), never through SCIM or a "
                "directory sync."
            )

    def deactivate(self) -> bool:
        """Deactivate (never delete) the user. :returns: whether it was active.

        :raises Forbidden: for the primary user, which owns the account.
        """
        if self.is_primary:
            raise Forbidden(
                "The primary user cannot be deactivated or deleted through SCIM: it owns the "
                f"seller account and changes only through {OPERATOR_FLOW}."
            )
        was_active, self.active = self.active, False
        return was_active

    def reactivate(self) -> bool:
        """Reactivate the user. :returns: whether it was inactive."""
        was_active, self.active = self.active, True
        return not was_active

    def delete(self) -> None:
        """SCIM DELETE: deactivated and hidden, never destroyed (history stays).

        :raises Forbidden: for the primary user.
        """
        if self.is_primary:
            raise Forbidden(
                "The primary user cannot be deleted through SCIM: it owns the seller account "
                f"and changes only through {OPERATOR_FLOW}."
            )
        self.active = False
        self.deleted = True

    def check_may_become_primary(self) -> None:
        """A secondary user becomes primary only after being deactivated as a secondary.

        :raises Forbidden: while it is an active secondary user.
        """
        if not self.is_primary and self.active and not self.deleted:
            raise Forbidden(
                f"{self.primary_email or self.user_name} belongs to an active secondary user. "
                "Deactivate it first: a secondary user becomes primary only after being "
                "deactivated as a secondary."
            )

    def become_primary(self) -> None:
        """The operator's verified flow made this user the account's primary user."""
        self.check_may_become_primary()
        self.role = Role.primary
        self.active = True
        self.deleted = False
        # The primary holds every permission at admin: direct grants would mean nothing.
        self.permissions = {}

    def step_down(self) -> None:
        """The former primary stays, as a deactivated secondary user with its history."""
        self.role = Role.secondary
        self.active = False

    def start_invitation(self, lifespan: dt.timedelta, now: dt.datetime) -> None:
        """A new pending invitation, valid for ``lifespan`` (sent while the user is active)."""
        self.invitation = Invitation(
            InvitationState.pending, sent_at=now, expires_at=now + lifespan
        )

    def resend_invitation(self, lifespan: dt.timedelta, now: dt.datetime) -> None:
        """A new invitation after the last one expired.

        :raises Forbidden: for the primary, a deactivated user, or an accepted invitation.
        """
        if self.is_primary:
            raise Forbidden("The primary user is not invited: it registered the seller account.")
        if not self.active:
            raise Forbidden("The user is deactivated: reactivate it before sending an invitation.")
        if self.invitation is not None and self.invitation.state is InvitationState.accepted:
            raise Forbidden("The user already accepted its invitation.")
        self.start_invitation(lifespan, now)

    def lapse_invitation(self, now: dt.datetime) -> bool:
        """An invitation that expired unaccepted, from a user who never logged in, deactivates
        the user (its addresses are then released, see the README's rules).

        :returns: whether it lapsed now.
        """
        invitation = self.invitation
        if (
            invitation is None
            or invitation.current_state(now) is not InvitationState.expired
            or invitation.state is not InvitationState.pending
            or not self.never_signed_in
            or not self.active
        ):
            return False
        invitation.state = InvitationState.expired
        self.active = False
        return True

    def needs_new_invitation(self) -> bool:
        """Reactivated after its invitation lapsed: it needs a new one to sign in."""
        return (
            self.active
            and self.invitation is not None
            and self.invitation.state is InvitationState.expired
            and self.never_signed_in
        )

    def renew_lapsed_invitation(self, now: dt.datetime) -> dt.timedelta | None:
        """Reactivated after its invitation lapsed: a new one, as long as the lapsed one was
        (the lifespan the operator configured when it was sent). :returns: that lifespan, or
        None when no new invitation is needed."""
        if not self.needs_new_invitation():
            return None
        assert self.invitation is not None
        lifespan = self.invitation.lifespan
        self.start_invitation(lifespan, now)
        return lifespan

    def accept_invitation(self) -> bool:
        """The user set its password and verified its address. :returns: whether it was pending."""
        if self.invitation is None or self.invitation.state is InvitationState.accepted:
            return False
        self.invitation.state = InvitationState.accepted
        return True

    def _snapshot(self) -> dict[str, Any]:
        return {
            "userName": self.user_name,
            "emails": sorted(e.value for e in self.emails),
            "name": [self.given_name, self.family_name],
            "displayName": self.display_name,
            "externalId": self.external_id,
            "active": self.active,
            "permissions": {k: v.value for k, v in sorted(self.permissions.items())},
            "notifications": sorted(self.notifications),
            "profile": self.profile,
        }


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

    def apply(
        self, draft: PermissionSetDraft, catalogue: Catalogue, members: list[str]
    ) -> dict[str, Any]:
        """Take a whole desired state: name, permissions, members (already checked to be
        users of this seller).

        :returns: what changed, for the audit trail.
        """
        check_permission_set_draft(draft)
        permissions = validate_permissions(catalogue, draft.permissions)
        changes: dict[str, Any] = {}
        if self.display_name != draft.display_name:
            changes["displayName"] = {"from": self.display_name, "to": draft.display_name}
        if self.permissions != permissions:
            changes["permissions"] = {
                "from": {k: v.value for k, v in self.permissions.items()},
                "to": {k: v.value for k, v in permissions.items()},
            }
        added = set(members) - set(self.member_ids)
        removed = set(self.member_ids) - set(members)
        if added:
            changes["membersAdded"] = sorted(added)
        if removed:
            changes["membersRemoved"] = sorted(removed)
        if self.external_id != draft.external_id or self.profile != draft.profile:
            changes["profile"] = True
        if members != self.member_ids and not added and not removed:
            changes["membersReordered"] = True
        self.display_name = draft.display_name
        self.external_id = draft.external_id
        self.permissions = permissions
        self.member_ids = members
        self.profile = dict(draft.profile)
        return changes


def check_permission_set_draft(draft: PermissionSetDraft) -> None:
    """A permission set needs a visible name, and holds users only.

    :raises InvalidValue: naming what is refused.
    """
    if not draft.display_name or not draft.display_name.strip():
        raise InvalidValue("displayName is required and may not be blank.")
    check_length("displayName", draft.display_name)
    check_visible("displayName", draft.display_name)
    check_length("externalId", draft.external_id)
    if any(kind.lower() == "group" for kind in draft.member_types):
        raise InvalidValue(
            "A permission set (Group) can only contain users: nested groups are not supported."
        )


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


def is_administrator(
    catalogue: Catalogue, user: SellerUser, groups: Iterable[PermissionSet]
) -> bool:
    """Whether a user can manage other users: the primary, or admin on the catalogue's
    administrator category (``user-permissions``), directly or through a permission set.
    The one place this is decided: SCIM, the access review and the audit all ask it."""
    if user.is_primary:
        return True
    category = catalogue.administrator_category
    return user.permissions.get(category) is Level.admin or any(
        g.permissions.get(category) is Level.admin for g in groups
    )
