"""Use cases on users: provision, replace, deactivate, delete, restore, invite."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from connector.domain.catalogue import Catalogue
from connector.domain.drafts import Actor, UserDraft
from connector.domain.errors import Forbidden, InvalidValue, NotFound, Uniqueness
from connector.domain.model import (
    MAX_EMAIL_LENGTH,
    Invitation,
    InvitationState,
    Role,
    SellerAccount,
    SellerUser,
    check_length,
    check_primary_stays_active,
    check_role_unchanged,
    email_key,
    is_email,
    text_key,
    utcnow,
    validate_notifications,
    validate_permissions,
)
from connector.ports.store import AuditEvent, OutboxEntry, UnitOfWork

DEFAULT_INVITATION_LIFESPAN = dt.timedelta(days=7)


def new_id() -> str:
    """A fresh opaque identifier."""
    return uuid.uuid4().hex


def _draft_keys(draft: UserDraft) -> set[str]:
    keys = {email_key(e.value) for e in draft.emails if e.value}
    if is_email(draft.user_name):
        keys.add(email_key(draft.user_name))
    return keys


def _check_addresses_free(
    uow: UnitOfWork, seller: SellerAccount, user_id: str | None, keys: set[str]
) -> None:
    """The brand-new rule: an address used by any other user, of any seller, ever, is taken.

    The detail never names who holds it, so that no seller learns of another.
    """
    for owner in uow.users.email_owners(keys):
        if owner.user_id != user_id:
            raise Uniqueness(
                f"The email address {owner.email_key} has already been used by a user of this "
                "service. Each user needs a brand-new address that was never used before."
            )


def _check_user_name_free(
    uow: UnitOfWork, seller: SellerAccount, user_id: str | None, user_name: str
) -> None:
    holder = uow.users.by_user_name(seller.id, text_key(user_name))
    if holder is not None and holder.id != user_id:
        raise Uniqueness(f"userName {user_name!r} is already used by another user of this seller.")


def _apply_draft(catalogue: Catalogue, user: SellerUser, draft: UserDraft) -> dict[str, Any]:
    """Copy a draft onto a user and return what changed, for the audit trail."""
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
    for email in draft.emails:
        check_length("emails.value", email.value, MAX_EMAIL_LENGTH)
    permissions = validate_permissions(catalogue, draft.permissions)
    notifications = validate_notifications(catalogue, draft.notifications)
    before = _snapshot(user)
    user.user_name = draft.user_name
    user.emails = list(draft.emails)
    user.given_name = draft.given_name
    user.family_name = draft.family_name
    user.display_name = draft.display_name
    user.external_id = draft.external_id
    user.permissions = {} if user.is_primary else permissions
    user.notifications = notifications
    user.profile = dict(draft.profile)
    after = _snapshot(user)
    return {k: {"from": before[k], "to": after[k]} for k in after if before[k] != after[k]}


def _snapshot(user: SellerUser) -> dict[str, Any]:
    return {
        "userName": user.user_name,
        "emails": sorted(e.value for e in user.emails),
        "name": [user.given_name, user.family_name],
        "displayName": user.display_name,
        "externalId": user.external_id,
        "active": user.active,
        "permissions": {k: v.value for k, v in sorted(user.permissions.items())},
        "notifications": sorted(user.notifications),
        "profile": user.profile,
    }


def enqueue_user_sync(uow: UnitOfWork, user: SellerUser) -> None:
    """Tell the identity provider that this user changed. The worker reads the current state."""
    uow.outbox.add(OutboxEntry(seller_id=user.seller_id, topic="user.sync", aggregate_id=user.id))


def _invite(uow: UnitOfWork, user: SellerUser, lifespan: dt.timedelta, now: dt.datetime) -> None:
    user.invitation = Invitation(InvitationState.pending, sent_at=now, expires_at=now + lifespan)
    uow.outbox.add(
        OutboxEntry(
            seller_id=user.seller_id,
            topic="user.invite",
            aggregate_id=user.id,
            payload={"lifespan_seconds": int(lifespan.total_seconds())},
        )
    )


def provision_user(
    uow: UnitOfWork,
    catalogue: Catalogue,
    seller: SellerAccount,
    draft: UserDraft,
    actor: Actor,
    *,
    invitation_lifespan: dt.timedelta = DEFAULT_INVITATION_LIFESPAN,
) -> tuple[SellerUser, bool]:
    """Add a secondary user to a seller account, or restore the one this seller deleted.

    A POST whose userName or any email matches a user that this seller deleted brings
    that user back (same id, history kept, active, attributes from the new body).

    :returns: the user, and whether it was restored rather than created.
    """
    seller.check_may_add_secondary_users()
    keys = _draft_keys(draft)
    seller.check_not_partner(sorted(keys))
    restored = _deleted_match(uow, seller, draft, keys)
    now = utcnow()
    if restored is not None:
        user = restored
        _check_user_name_free(uow, seller, user.id, draft.user_name)
        _check_addresses_free(uow, seller, user.id, keys)
        changes = _apply_draft(catalogue, user, draft)
        user.deleted = False
        user.active = True if draft.active is None else bool(draft.active)
        user.updated_at = now
        if user.invitation is None or user.invitation.state is not InvitationState.accepted:
            _invite(uow, user, invitation_lifespan, now)
        uow.users.save(user)
        action = "user.restored"
    else:
        _check_user_name_free(uow, seller, None, draft.user_name)
        _check_addresses_free(uow, seller, None, keys)
        user = SellerUser(
            id=new_id(),
            seller_id=seller.id,
            user_name=draft.user_name,
            role=Role.secondary,
            created_at=now,
            updated_at=now,
        )
        changes = _apply_draft(catalogue, user, draft)
        user.active = draft.active is not False
        _invite(uow, user, invitation_lifespan, now)
        uow.users.add(user)
        action = "user.created"
    uow.audit.append(
        AuditEvent(
            seller.id, actor.name, action, f"user:{user.id}", {**changes, "active": user.active}
        )
    )
    enqueue_user_sync(uow, user)
    return user, restored is not None


def _deleted_match(
    uow: UnitOfWork, seller: SellerAccount, draft: UserDraft, keys: set[str]
) -> SellerUser | None:
    """The user this seller deleted that a new body names again, by userName or an email."""
    by_name = uow.users.by_user_name(seller.id, text_key(draft.user_name))
    if by_name is not None and by_name.deleted:
        return by_name
    for owner in uow.users.email_owners(keys):
        if owner.seller_id == seller.id and owner.deleted:
            return uow.users.get(seller.id, owner.user_id, include_deleted=True)
    return None


def get_user(uow: UnitOfWork, seller: SellerAccount, user_id: str) -> SellerUser:
    """A visible (not deleted) user of this seller.

    :raises NotFound: for another seller's user too, as if it did not exist.
    """
    user = uow.users.get(seller.id, user_id)
    if user is None:
        raise NotFound(f"User {user_id} not found.")
    return user


def replace_user(
    uow: UnitOfWork,
    catalogue: Catalogue,
    seller: SellerAccount,
    user_id: str,
    draft: UserDraft,
    actor: Actor,
    *,
    expected_version: int | None = None,
) -> SellerUser:
    """Replace a user's state (SCIM PUT or PATCH), keeping the seller rules."""
    user = get_user(uow, seller, user_id)
    check_role_unchanged(user, draft.requested_role)
    active = user.active if draft.active is None else draft.active
    check_primary_stays_active(user, active)
    keys = _draft_keys(draft)
    if keys - user.email_keys:
        seller.check_not_partner(sorted(keys - user.email_keys))
    _check_user_name_free(uow, seller, user.id, draft.user_name)
    _check_addresses_free(uow, seller, user.id, keys)
    was_active = user.active
    changes = _apply_draft(catalogue, user, draft)
    user.active = active
    if was_active != user.active:
        changes["active"] = {"from": was_active, "to": user.active}
    if not changes:
        return user
    user.updated_at = utcnow()
    uow.users.save(user, expected_version=expected_version)
    action = "user.updated"
    if was_active and not user.active:
        action = "user.deactivated"
    elif not was_active and user.active:
        action = "user.reactivated"
    uow.audit.append(AuditEvent(seller.id, actor.name, action, f"user:{user.id}", changes))
    enqueue_user_sync(uow, user)
    return user


def set_active(
    uow: UnitOfWork, seller: SellerAccount, user_id: str, active: bool, actor: Actor
) -> SellerUser:
    """Deactivate or reactivate a user (the command line, a directory sync, a console change)."""
    user = get_user(uow, seller, user_id)
    check_primary_stays_active(user, active)
    if user.active == active:
        return user
    user.active = active
    user.updated_at = utcnow()
    uow.users.save(user)
    uow.audit.append(
        AuditEvent(
            seller.id,
            actor.name,
            "user.reactivated" if active else "user.deactivated",
            f"user:{user.id}",
            {"active": {"from": not active, "to": active}},
        )
    )
    enqueue_user_sync(uow, user)
    return user


def delete_user(
    uow: UnitOfWork,
    seller: SellerAccount,
    user_id: str,
    actor: Actor,
    *,
    expected_version: int | None = None,
) -> None:
    """SCIM DELETE: the user is deactivated and hidden, never destroyed; its emails stay reserved."""
    user = get_user(uow, seller, user_id)
    if user.is_primary:
        raise Forbidden(
            "The primary user cannot be deleted through SCIM: it owns the seller account and "
            "changes only through the marketplace operator flow (seller-connector sellers "
            "change-primary)."
        )
    groups = uow.permission_sets.of_user(user.id)
    for group in groups:
        full = uow.permission_sets.get(seller.id, group.id)
        assert full is not None
        full.member_ids = [m for m in full.member_ids if m != user.id]
        full.updated_at = utcnow()
        uow.permission_sets.save(full)
    user.active = False
    user.deleted = True
    user.updated_at = utcnow()
    uow.users.save(user, expected_version=expected_version)
    uow.audit.append(
        AuditEvent(
            seller.id,
            actor.name,
            "user.deleted",
            f"user:{user.id}",
            {
                "active": {"from": True, "to": False},
                "removedFrom": [g.display_name for g in groups],
            },
        )
    )
    enqueue_user_sync(uow, user)


def resend_invitation(
    uow: UnitOfWork,
    seller: SellerAccount,
    user_id: str,
    actor: Actor,
    *,
    lifespan: dt.timedelta = DEFAULT_INVITATION_LIFESPAN,
) -> SellerUser:
    """Send a new invitation to a user who has not accepted one yet."""
    user = get_user(uow, seller, user_id)
    if user.is_primary:
        raise Forbidden("The primary user is not invited: it registered the seller account.")
    if not user.active:
        raise Forbidden("The user is deactivated: reactivate it before sending an invitation.")
    if user.invitation is not None and user.invitation.state is InvitationState.accepted:
        raise Forbidden("The user already accepted its invitation.")
    now = utcnow()
    _invite(uow, user, lifespan, now)
    user.updated_at = now
    uow.users.save(user)
    uow.audit.append(
        AuditEvent(
            seller.id,
            actor.name,
            "user.invited",
            f"user:{user.id}",
            {"expiresAt": (now + lifespan).isoformat()},
        )
    )
    return user


def mark_invitation_accepted(
    uow: UnitOfWork, seller: SellerAccount, user_id: str, actor: Actor
) -> None:
    """The user set its password and verified its email in the identity provider."""
    user = get_user(uow, seller, user_id)
    if user.invitation is None or user.invitation.state is InvitationState.accepted:
        return
    user.invitation.state = InvitationState.accepted
    uow.users.save(user)
    uow.audit.append(
        AuditEvent(seller.id, actor.name, "user.invitation-accepted", f"user:{user.id}", {})
    )


def record_login(uow: UnitOfWork, seller: SellerAccount, user_id: str, at: dt.datetime) -> None:
    """Remember the last login, for the access review's stale-user check.

    Written without a version bump: a login changes no SCIM attribute, so it must not make a
    client's If-Match fail nor race with its writes.
    """
    uow.users.record_login(seller.id, user_id, at)
