"""Console changes: what an IT administrator changed in the identity provider comes back.

:func:`poll_console` reads :class:`~connector.ports.ProviderChange` s from the
:class:`~connector.ports.ChangeFeed` after the marker kept in the store (``uow.markers``, source
:data:`CONSOLE_SOURCE`), applies them through the ordinary use cases as the actor
``keycloak:console``, and stores the next marker **in the same transaction**: either all of a
batch is applied and the marker moves, or nothing is and the next poll reads it again.
Applying is idempotent by state besides (a user already inactive is not deactivated again, a
member already in a set is not added twice), so nothing is applied twice.

What each kind does:

* ``disabled``: the user is deactivated (``set_active``); its sessions already ended.
* ``enabled``: the user is reactivated.
* ``group-added`` / ``group-removed``: the member joins or leaves the permission set whose
  group it is (``replace_permission_set``), which also re-syncs the members' roles.
* ``login``: ``last_login_at`` (for the access review), without a new version.
* ``invitation-accepted``: the pending invitation is marked accepted (ignored otherwise).

**The store is the truth where the seller rules say so.** Such console changes are not
adopted but *reverted*: an audit event ``user.console-change-reverted`` records it and a
``user.sync`` goes into the outbox, which puts the provider back as the store has it:

* the primary user disabled in the console: the primary owns the seller account and changes
  only through the marketplace operator flow, so it is re-enabled;
* a user deleted through SCIM enabled again: deleted users stay disabled (restore them with a
  SCIM POST of the same userName or email);
* a user added to a group that is not a permission set of its own seller (another seller's,
  a deleted set's, or the seller's parent group).

The first poll ever (no marker) starts from *now* rather than replaying the provider's whole
event history, whose old ``disabled``/``enabled`` events could undo later SCIM changes; pass
``from_start=True`` to replay on purpose.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from connector.domain.catalogue import Catalogue, Level
from connector.domain.drafts import Actor, PermissionSetDraft
from connector.domain.errors import DomainError, InvalidValue, Uniqueness
from connector.domain.model import (
    InvitationState,
    PermissionSet,
    SellerAccount,
    SellerUser,
    utcnow,
    validate_permissions,
)
from connector.ports.identity import ChangeFeed, ProviderChange
from connector.ports.outbox import PERMISSION_SET_SYNC
from connector.ports.store import AuditEvent, OutboxEntry, UnitOfWork, UnitOfWorkFactory
from connector.services import permission_sets as set_cases
from connector.services import users as user_cases

log = logging.getLogger("seller_connector.console")

CONSOLE_SOURCE = "keycloak:console-changes"
"""The marker's name in ``sync_markers``."""
CONSOLE_ACTOR = Actor("keycloak:console")

APPLIED = "applied"
UNCHANGED = "unchanged"
REVERTED = "reverted"
IGNORED = "ignored"
REFUSED = "refused"


class ProviderUserIndex(Protocol):
    """Finds our user from the provider's user id (``users.idp_id``)."""

    def find(self, provider_user_id: str) -> tuple[str, str] | None:
        """(seller id, user id), or None."""
        ...


@dataclass
class ChangeOutcome:
    """What became of one console change."""

    kind: str
    provider_user_id: str
    at: dt.datetime
    result: str
    """``applied``, ``unchanged``, ``reverted``, ``ignored`` or ``refused``."""
    detail: str = ""
    seller_id: str | None = None
    user_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """For ``--format json``."""
        return {
            "kind": self.kind,
            "providerUserId": self.provider_user_id,
            "at": self.at.isoformat(),
            "result": self.result,
            "detail": self.detail,
            "sellerId": self.seller_id,
            "userId": self.user_id,
        }


@dataclass
class PollReport:
    """One poll of the console changes."""

    outcomes: list[ChangeOutcome] = field(default_factory=list)
    started: bool = False
    """True when this poll only set the first marker (no marker was stored yet)."""

    @property
    def counts(self) -> dict[str, int]:
        """Outcomes by result."""
        return dict(Counter(o.result for o in self.outcomes))

    def as_dict(self) -> dict[str, Any]:
        """For ``--format json``."""
        return {
            "started": self.started,
            "counts": self.counts,
            "changes": [o.as_dict() for o in self.outcomes],
        }


SEEN_PREFIX = "keycloak:webhook-event:"
"""Marker source prefix of a Keycloak event id that the plugin's webhook already applied."""


def seen_by_webhook(uow: UnitOfWork, event_id: str | None) -> bool:
    """Whether the webhook already applied the Keycloak event ``event_id``: the poller, the
    fallback for a webhook that is down, then skips it, so nothing is applied twice."""
    return bool(event_id) and uow.markers.get(SEEN_PREFIX + str(event_id)) is not None


STATEFUL_KINDS = frozenset(
    {"disabled", "enabled", "group-added", "group-removed", "roles-added", "roles-removed"}
)
"""Kinds that change state: a pushed event of these is remembered in the store (under
:data:`SEEN_PREFIX`), in the same transaction as its change, so it is applied once."""
MONOTONIC_KINDS = frozenset({"login", "invitation-accepted"})
"""Kinds a replay cannot change: remembered only briefly, in memory."""
REFUSAL_KINDS = frozenset({"delete-refused", "leave-refused", "identity-change-refused"})
"""What the provider's guard refused (deleting the primary, removing it from its
organization, changing its username, email or seller attributes): audited."""


class AlreadyApplied(Exception):
    """A pushed event that was applied before (a replay, or its twin delivered meanwhile)."""


def apply_pushed(
    uow_factory: UnitOfWorkFactory,
    catalogue: Catalogue,
    change: ProviderChange,
    *,
    prune_before: dt.datetime | None = None,
) -> ChangeOutcome:
    """Apply one change the provider pushed (the plugin's webhook), exactly as the poll
    applies it, and never twice: the poll skips what was pushed, and a replay is refused.

    :raises AlreadyApplied: for a state-changing event applied before.
    """
    if change.kind in REFUSAL_KINDS:
        return _record_refusal(uow_factory, change)
    if change.kind not in STATEFUL_KINDS | MONOTONIC_KINDS:
        return ChangeOutcome(
            change.kind, change.provider_user_id, change.at, IGNORED, "not modelled in the store"
        )
    with uow_factory(immediate=True) as uow:
        if change.kind in STATEFUL_KINDS:
            if seen_by_webhook(uow, change.event_id):
                raise AlreadyApplied(change.event_id)
            uow.markers.set(SEEN_PREFIX + str(change.event_id), change.at.isoformat())
        outcome = apply_change(uow, catalogue, change)
        if prune_before is not None:
            uow.markers.delete_before(SEEN_PREFIX, prune_before)
        try:
            uow.commit()
        except Uniqueness as error:  # the same event applied concurrently by another worker
            raise AlreadyApplied(change.event_id) from error
    return outcome


def _record_refusal(uow_factory: UnitOfWorkFactory, change: ProviderChange) -> ChangeOutcome:
    seller_id = change.details.get("seller_id")
    user_id = change.details.get("connector_user_id")
    outcome = ChangeOutcome(change.kind, change.provider_user_id, change.at, IGNORED)
    with uow_factory() as uow:
        if not (seller_id and user_id and uow.sellers.get(str(seller_id))):
            return outcome
        uow.audit.append(
            AuditEvent(
                str(seller_id),
                CONSOLE_ACTOR.name,
                "user.console-" + change.kind,
                f"user:{user_id}",
                {
                    "providerUserId": change.provider_user_id or None,
                    "eventId": change.event_id,
                    **(
                        {"attribute": change.details["attribute"]}
                        if change.details.get("attribute")
                        else {}
                    ),
                },
            )
        )
        uow.commit()
    outcome.result, outcome.seller_id, outcome.user_id = "recorded", str(seller_id), str(user_id)
    return outcome


def poll_console(
    uow_factory: UnitOfWorkFactory,
    catalogue: Catalogue,
    feed: ChangeFeed,
    index: ProviderUserIndex | None = None,
    *,
    source: str = CONSOLE_SOURCE,
    from_start: bool = False,
) -> PollReport:
    """Read the changes after the stored marker, apply them, and move the marker, atomically.

    :raises IdentityProviderUnavailable: when the feed cannot be read (nothing is applied).
    """
    with uow_factory() as uow:
        marker = uow.markers.get(source)
    start_at = getattr(feed, "marker_at", None)
    if marker is None and not from_start and start_at is not None:
        with uow_factory() as uow:
            if uow.markers.get(source) is None:
                uow.markers.set(source, start_at(utcnow()))
                uow.commit()
        return PollReport(started=True)
    changes, next_marker = feed.changes_since(marker)
    report = PollReport()
    if not changes and next_marker == marker:
        return report
    # Immediate: a batch may change one user twice (disabled, then enabled), and each
    # change must read the one before it.
    with uow_factory(immediate=True) as uow:
        if uow.markers.get(source) != marker:
            # Another poller applied this batch meanwhile: leave it to the next poll.
            log.info("console changes: the marker moved meanwhile; skipping this batch")
            return report
        for change in changes:
            if seen_by_webhook(uow, change.event_id):
                continue
            outcome = apply_change(uow, catalogue, change, index)
            report.outcomes.append(outcome)
            if outcome.result != UNCHANGED:
                log.info(
                    "console %s of %s: %s %s",
                    change.kind,
                    outcome.user_id or change.provider_user_id,
                    outcome.result,
                    outcome.detail,
                )
        uow.markers.set(source, next_marker)
        uow.commit()
    return report


@contextlib.contextmanager
def _savepoint(uow: UnitOfWork) -> Iterator[None]:
    """What one change writes is undone alone when it fails."""
    with uow.savepoint():
        yield


def apply_change(
    uow: UnitOfWork,
    catalogue: Catalogue,
    change: ProviderChange,
    index: ProviderUserIndex | None = None,
) -> ChangeOutcome:
    """Apply one console change to the store (see the module docstring)."""
    outcome = ChangeOutcome(change.kind, change.provider_user_id, change.at, IGNORED)
    if change.details.get("target") == "group":
        return _group_roles(uow, catalogue, change, outcome)
    found = _resolve(uow, change, index, outcome)
    if found is None:
        return outcome
    seller, user = found
    outcome.seller_id, outcome.user_id = seller.id, user.id
    handlers = {
        "disabled": _disabled,
        "enabled": _enabled,
        "group-added": _group_change,
        "group-removed": _group_change,
        "login": _login,
        "invitation-accepted": _invitation_accepted,
        "roles-added": _user_roles,
        "roles-removed": _user_roles,
    }
    handler = handlers.get(change.kind)
    if handler is None:
        outcome.detail = f"unknown kind {change.kind!r}"
        return outcome
    try:
        with _savepoint(uow):
            outcome.result, outcome.detail = handler(uow, catalogue, seller, user, change)
    except DomainError as error:
        outcome.result, outcome.detail = REFUSED, error.detail
    return outcome


def _resolve(
    uow: UnitOfWork,
    change: ProviderChange,
    index: ProviderUserIndex | None,
    outcome: ChangeOutcome,
) -> tuple[SellerAccount, SellerUser] | None:
    """Our seller and user for the provider's user: by its ``seller_connector_user_id`` and
    ``seller_id`` attributes, else by ``users.idp_id``."""
    user_id = change.details.get("connector_user_id")
    seller_id = change.details.get("seller_id")
    ref: tuple[str, str] | None = (seller_id, user_id) if user_id and seller_id else None
    if ref is None and change.provider_user_id:
        ref = (
            index.find(change.provider_user_id)
            if index is not None
            else uow.users.find_by_provider_id(change.provider_user_id)
        )
    if ref is None:
        outcome.detail = "not a user of this connector"
        return None
    seller = uow.sellers.get(ref[0])
    if seller is not None:
        # Two events about one user (its invitation accepted, its login) applied at once
        # must read each other: else both see a first sign-in and tell it twice.
        uow.users.hold(ref[0], ref[1])
    user = uow.users.get(ref[0], ref[1], include_deleted=True) if seller else None
    if seller is None or user is None:
        outcome.detail = f"no user {ref[1]} of seller {ref[0]} in the store"
        return None
    if user.idp_id and user.idp_id != change.provider_user_id:
        # The attributes were copied onto another provider user: it does not speak for ours.
        outcome.detail = (
            f"provider user {change.provider_user_id} claims to be {user.id}, which is "
            f"provider user {user.idp_id}"
        )
        return None
    return seller, user


def _revert(
    uow: UnitOfWork, seller: SellerAccount, user: SellerUser, change: ProviderChange, reason: str
) -> tuple[str, str]:
    """Record why the console change is not adopted, and have the provider put back."""
    uow.audit.append(
        AuditEvent(
            seller.id,
            CONSOLE_ACTOR.name,
            "user.console-change-reverted",
            f"user:{user.id}",
            {
                "kind": change.kind,
                "reason": reason,
                "providerUserId": change.provider_user_id,
                "byProviderUser": change.details.get("by_user_id"),
                "groupPath": change.details.get("group_path"),
                "eventId": change.event_id,
                "at": change.at.isoformat(),
            },
        )
    )
    user_cases.enqueue_user_sync(uow, user)
    return REVERTED, reason


def _disabled(
    uow: UnitOfWork,
    catalogue: Catalogue,
    seller: SellerAccount,
    user: SellerUser,
    change: ProviderChange,
) -> tuple[str, str]:
    if user.is_primary and not user.deleted:
        return _revert(
            uow,
            seller,
            user,
            change,
            "the primary user owns the seller account and cannot be deactivated; it changes "
            "only through the operator flow (seller-connector sellers change-primary)",
        )
    if user.deleted or not user.active:
        return UNCHANGED, "already inactive"
    user_cases.change_active(uow, seller, user, False, CONSOLE_ACTOR)
    return APPLIED, "deactivated"


def _enabled(
    uow: UnitOfWork,
    catalogue: Catalogue,
    seller: SellerAccount,
    user: SellerUser,
    change: ProviderChange,
) -> tuple[str, str]:
    if user.deleted:
        return _revert(
            uow,
            seller,
            user,
            change,
            "the user was deleted through SCIM and stays disabled; restore it with a SCIM "
            "POST of the same userName or email",
        )
    if user.active:
        return UNCHANGED, "already active"
    user_cases.change_active(uow, seller, user, True, CONSOLE_ACTOR)
    return APPLIED, "reactivated"


def _group_change(
    uow: UnitOfWork,
    catalogue: Catalogue,
    seller: SellerAccount,
    user: SellerUser,
    change: ProviderChange,
) -> tuple[str, str]:
    added = change.kind == "group-added"
    set_id = change.details.get("permission_set_id")
    group_seller = change.details.get("group_seller_id")
    path = change.details.get("group_path") or change.group_id
    if not set_id or group_seller != seller.id:
        if not added:
            return UNCHANGED, f"{path} is not a permission set of this seller"
        return _revert(uow, seller, user, change, f"{path} is not a permission set of this seller")
    permission_set = uow.permission_sets.get(seller.id, set_id)
    if permission_set is None:
        if not added:
            return UNCHANGED, f"permission set {set_id} no longer exists"
        return _revert(uow, seller, user, change, f"permission set {set_id} no longer exists")
    members = list(permission_set.member_ids)
    if added:
        if user.deleted:
            return _revert(uow, seller, user, change, "a deleted user joins no permission set")
        if user.id in members:
            return UNCHANGED, f"already in {permission_set.display_name}"
        members.append(user.id)
    else:
        if user.id not in members:
            return UNCHANGED, f"not in {permission_set.display_name}"
        members.remove(user.id)
    draft = PermissionSetDraft(
        display_name=permission_set.display_name,
        external_id=permission_set.external_id,
        permissions={k: v.value for k, v in permission_set.permissions.items()},
        member_ids=members,
        profile=dict(permission_set.profile),
    )
    set_cases.change_permission_set(uow, catalogue, seller, permission_set, draft, CONSOLE_ACTOR)
    verb = "joined" if added else "left"
    return APPLIED, f"{verb} {permission_set.display_name}"


def _login(
    uow: UnitOfWork,
    catalogue: Catalogue,
    seller: SellerAccount,
    user: SellerUser,
    change: ProviderChange,
) -> tuple[str, str]:
    if user.deleted:
        return UNCHANGED, "deleted user"
    if user.last_login_at is not None and user.last_login_at >= change.at:
        return UNCHANGED, "an equal or later login is recorded"
    # The first login of a user who never signed in is told to the "Secondary users" recipients.
    user_cases.sign_in(uow, seller, user, change.at, CONSOLE_ACTOR)
    return APPLIED, "login recorded"


def _invitation_accepted(
    uow: UnitOfWork,
    catalogue: Catalogue,
    seller: SellerAccount,
    user: SellerUser,
    change: ProviderChange,
) -> tuple[str, str]:
    if user.deleted or user.invitation is None:
        return UNCHANGED, "no invitation"
    if user.invitation.state is not InvitationState.pending:
        return UNCHANGED, f"invitation is {user.invitation.state.value}"
    user_cases.accept_invitation(uow, seller, user, CONSOLE_ACTOR)
    return APPLIED, "invitation accepted"


# -- Roles ------------------------------------------------------------------------------------


def _grants(catalogue: Catalogue, change: ProviderChange) -> list[tuple[str, Level]] | str:
    """The (category, level) pairs a role change names, or why it names something the
    catalogue does not offer."""
    unknown = change.details.get("unknown_roles") or []
    if unknown:
        return f"{', '.join(unknown)} is no permission of the catalogue"
    pairs: list[tuple[str, Level]] = []
    for category, level in change.details.get("grants") or []:
        try:
            typed = validate_permissions(catalogue, {str(category): str(level)})
        except InvalidValue as error:
            return f"{category}:{level} is no permission of the catalogue ({error.detail})"
        pairs.extend(typed.items())
    return pairs


def _with_roles(
    current: dict[str, Level], grants: list[tuple[str, Level]], added: bool
) -> dict[str, Level]:
    """The permissions after a console grant or removal. A role names one level; a higher
    level includes the lower ones (Keycloak composites), so a grant below the held level
    changes nothing, and removing a level the user holds leaves none in that category."""
    permissions = dict(current)
    for category, level in grants:
        held = permissions.get(category)
        if added:
            if held is None or level.rank > held.rank:
                permissions[category] = level
        elif held is level:
            del permissions[category]
    return permissions


def _administrator_granted(
    catalogue: Catalogue, added: bool, grants: list[tuple[str, Level]]
) -> bool:
    return added and (catalogue.administrator_category, Level.admin) in grants


def _user_roles(
    uow: UnitOfWork,
    catalogue: Catalogue,
    seller: SellerAccount,
    user: SellerUser,
    change: ProviderChange,
) -> tuple[str, str]:
    """Direct ``seller-portal`` roles granted or removed in the console: adopted as the
    user's direct permissions under the seller rules, or put back when they forbid it."""
    added = change.kind == "roles-added"
    grants = _grants(catalogue, change)
    if isinstance(grants, str):
        return _revert(uow, seller, user, change, grants)
    if user.is_primary:
        return _revert(
            uow,
            seller,
            user,
            change,
            "the primary user holds every permission at admin; its roles change only through "
            "the operator flow (seller-connector sellers change-primary)",
        )
    if added and (user.deleted or not user.active):
        return _revert(uow, seller, user, change, "a deactivated user is granted nothing")
    permissions = _with_roles(user.permissions, grants, added)
    if permissions == user.permissions:
        return UNCHANGED, "the store already holds this"
    draft = user.draft()
    draft.permissions = {k: v.value for k, v in permissions.items()}
    user_cases.change_user(uow, catalogue, seller, user, draft, CONSOLE_ACTOR)
    detail = ("granted " if added else "removed ") + ", ".join(
        f"{c}:{lv.value}" for c, lv in grants
    )
    if _administrator_granted(catalogue, added, grants):
        uow.audit.append(
            AuditEvent(
                seller.id,
                CONSOLE_ACTOR.name,
                "user.administrator-granted",
                f"user:{user.id}",
                {"byProviderUser": change.details.get("by_user_id"), "eventId": change.event_id},
            )
        )
        detail += " (administrator)"
    return APPLIED, detail


def _group_roles(
    uow: UnitOfWork, catalogue: Catalogue, change: ProviderChange, outcome: ChangeOutcome
) -> ChangeOutcome:
    """``seller-portal`` roles granted or removed on a permission set's group in the console:
    adopted as the set's permissions (its members follow), or put back."""
    seller_id = change.details.get("group_seller_id")
    set_id = change.details.get("permission_set_id")
    path = change.details.get("group_path") or change.group_id
    if not seller_id or not set_id:
        outcome.detail = f"{path} is not a permission set: its roles are not the seller's model"
        return outcome
    seller = uow.sellers.get(str(seller_id))
    permission_set = uow.permission_sets.get(str(seller_id), str(set_id)) if seller else None
    if seller is None or permission_set is None:
        outcome.detail = f"permission set {set_id} no longer exists"
        return outcome
    outcome.seller_id = seller.id
    added = change.kind == "roles-added"
    grants = _grants(catalogue, change)
    try:
        with _savepoint(uow):
            if isinstance(grants, str):
                outcome.result, outcome.detail = _revert_set(uow, permission_set, change, grants)
                return outcome
            permissions = _with_roles(permission_set.permissions, grants, added)
            if permissions == permission_set.permissions:
                outcome.result, outcome.detail = UNCHANGED, "the store already holds this"
                return outcome
            draft = PermissionSetDraft(
                display_name=permission_set.display_name,
                external_id=permission_set.external_id,
                permissions={k: v.value for k, v in permissions.items()},
                member_ids=list(permission_set.member_ids),
                profile=dict(permission_set.profile),
            )
            set_cases.change_permission_set(
                uow, catalogue, seller, permission_set, draft, CONSOLE_ACTOR
            )
            outcome.result = APPLIED
            outcome.detail = f"{permission_set.display_name}: " + ", ".join(
                f"{'+' if added else '-'}{c}:{lv.value}" for c, lv in grants
            )
            if _administrator_granted(catalogue, added, grants):
                uow.audit.append(
                    AuditEvent(
                        seller.id,
                        CONSOLE_ACTOR.name,
                        "group.administrator-granted",
                        f"group:{permission_set.id}",
                        {"members": permission_set.member_ids, "eventId": change.event_id},
                    )
                )
                outcome.detail += " (administrator for every member)"
    except DomainError as error:
        outcome.result, outcome.detail = REFUSED, error.detail
    return outcome


def _revert_set(
    uow: UnitOfWork, permission_set: PermissionSet, change: ProviderChange, reason: str
) -> tuple[str, str]:
    """Record why a console change of a set's roles is not adopted; the set's group is put
    back as the store has it."""
    uow.audit.append(
        AuditEvent(
            permission_set.seller_id,
            CONSOLE_ACTOR.name,
            "group.console-change-reverted",
            f"group:{permission_set.id}",
            {
                "kind": change.kind,
                "reason": reason,
                "roles": change.details.get("roles"),
                "byProviderUser": change.details.get("by_user_id"),
                "eventId": change.event_id,
            },
        )
    )
    uow.outbox.add(
        OutboxEntry(
            seller_id=permission_set.seller_id,
            topic=PERMISSION_SET_SYNC,
            aggregate_id=permission_set.id,
        )
    )
    return REVERTED, reason
