"""Use cases on users: provision, replace, deactivate, reactivate, delete, invite.

Each use case is one unit of work: ``with uow:`` load, ask the aggregate, save, record the
audit event and the outbox entry, commit. The *steps* (``add_user``, ``change_user``...)
do the same inside a unit of work the caller holds open, for batches (a directory sync,
the console poll) that apply many changes in one transaction.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any

from connector.domain.catalogue import Catalogue
from connector.domain.drafts import Actor, UserDraft
from connector.domain.errors import Forbidden, InvalidValue, NotFound, Uniqueness
from connector.domain.model import (
    DEFAULT_INVITATION_LIFESPAN,
    InvitationState,
    Role,
    SellerAccount,
    SellerUser,
    check_user_draft,
    draft_email_keys,
    identity_key,
    utcnow,
)
from connector.ports.outbox import USER_INVITE, USER_SYNC
from connector.ports.store import AuditEvent, EmailOwner, OutboxEntry, UnitOfWork
from connector.services.notifications import SecondaryUserEvent, tell_secondary_users


def new_id() -> str:
    """A fresh opaque identifier."""
    return uuid.uuid4().hex


@dataclass
class InvitationCap:
    """The bound on a seller's unaccepted invitations, for one request: nobody reserves
    thousands of addresses at once. Counted at the first create, then kept up to date by the
    invitations the request sends (a Bulk of 100 creates counts once, not 100 times)."""

    limit: int
    _pending: int | None = field(default=None, init=False, repr=False)

    def check(self, uow: UnitOfWork, seller: SellerAccount) -> None:
        """Refuse another invitation when the seller has ``limit`` pending.

        :raises Forbidden: at the limit.
        """
        if self._pending is None:
            self._pending = uow.users.pending_invitations(seller.id, utcnow())
        if self._pending >= self.limit:
            raise Forbidden(
                f"Seller {seller.name!r} has {self._pending} pending invitations, the most this "
                "service accepts at once: wait until some are accepted or expire, or ask the "
                "marketplace to raise the limit (SELLER_CONNECTOR_MAX_PENDING_INVITATIONS)."
            )

    def sent(self, user: SellerUser) -> None:
        """Count ``user``'s invitation, if it is pending."""
        invitation = user.invitation
        pending = invitation is not None and invitation.state is InvitationState.pending
        if self._pending is not None and pending:
            self._pending += 1


# -- Checks against the store -------------------------------------------------------------


def check_addresses_free(
    uow: UnitOfWork, user_id: str | None, keys: set[str], owners: list[EmailOwner] | None = None
) -> None:
    """The brand-new rule: an address used by any other user, of any seller, ever, is taken.

    The detail never names who holds it, so that no seller learns of another.
    """
    for owner in uow.users.email_owners(keys) if owners is None else owners:
        # A released address (its holder never signed in, then left) is free again.
        if owner.user_id != user_id and not owner.released:
            raise Uniqueness(
                f"The email address {owner.email_key} has already been used by a user of this "
                "service. Each user needs a brand-new address that was never used before."
            )


def check_user_name_free(
    uow: UnitOfWork, seller: SellerAccount, user_id: str | None, user_name: str
) -> None:
    """userName is unique within a seller (in its canonical form)."""
    holder = uow.users.by_user_name(seller.id, identity_key(user_name))
    if holder is not None and holder.id != user_id:
        raise Uniqueness(f"userName {user_name!r} is already used by another user of this seller.")


def check_manager(
    uow: UnitOfWork, seller: SellerAccount, draft: UserDraft, user_id: str | None
) -> None:
    """The enterprise ``manager`` names a user of the same seller (never another seller's)."""
    manager_id = draft.manager_id
    if manager_id is None:
        return
    if manager_id == user_id or uow.users.get(seller.id, manager_id) is None:
        raise InvalidValue(
            f"manager {manager_id!r} is not another user of this seller: give the id of one "
            "of the seller's users."
        )


def enqueue_user_sync(uow: UnitOfWork, user: SellerUser) -> None:
    """Tell the identity provider that this user changed. The worker reads the current state."""
    enqueue_sync_of(uow, user.seller_id, user.id)


def enqueue_sync_of(uow: UnitOfWork, seller_id: str, user_id: str) -> None:
    """:func:`enqueue_user_sync` by the user's id, for callers that did not read the user."""
    uow.outbox.add(OutboxEntry(seller_id=seller_id, topic=USER_SYNC, aggregate_id=user_id))


def _enqueue_invitation(uow: UnitOfWork, user: SellerUser, lifespan: dt.timedelta) -> None:
    uow.outbox.add(
        OutboxEntry(
            seller_id=user.seller_id,
            topic=USER_INVITE,
            aggregate_id=user.id,
            payload={"lifespan_seconds": int(lifespan.total_seconds())},
        )
    )


def _audit(
    uow: UnitOfWork,
    seller: SellerAccount,
    actor: Actor,
    action: str,
    user: SellerUser,
    changes: dict,
) -> None:
    uow.audit.append(AuditEvent(seller.id, actor.name, action, f"user:{user.id}", changes))


# -- Steps (inside an open unit of work) ------------------------------------------------------


def get_user(uow: UnitOfWork, seller: SellerAccount, user_id: str) -> SellerUser:
    """A visible (not deleted) user of this seller.

    :raises NotFound: for another seller's user too, as if it did not exist.
    """
    user = uow.users.get(seller.id, user_id)
    if user is None:
        raise NotFound(f"User {user_id} not found.")
    return user


def _deleted_match(
    uow: UnitOfWork,
    seller: SellerAccount,
    by_name: SellerUser | None,
    owners: list[EmailOwner],
) -> SellerUser | None:
    """The user this seller deleted that a new body names again, by userName or an email."""
    if by_name is not None and by_name.deleted:
        return by_name
    for owner in owners:
        if owner.seller_id == seller.id and owner.deleted:
            return uow.users.get(seller.id, owner.user_id, include_deleted=True)
    return None


def add_user(
    uow: UnitOfWork,
    catalogue: Catalogue,
    seller: SellerAccount,
    draft: UserDraft,
    actor: Actor,
    *,
    invitation_lifespan: dt.timedelta = DEFAULT_INVITATION_LIFESPAN,
    invitations: InvitationCap | None = None,
) -> tuple[SellerUser, bool]:
    """Add a secondary user, or restore the one this seller deleted (see provision_user).

    ``invitations`` bounds the seller's unaccepted invitations (SCIM clients).
    """
    seller.check_may_add_secondary_users()
    check_user_draft(catalogue, draft)  # before any look-up: what the store never sees
    if invitations is not None:
        invitations.check(uow, seller)
    keys = draft_email_keys(draft)
    seller.check_not_partner(sorted(keys))
    now = utcnow()
    owners = uow.users.email_owners(keys)
    by_name = uow.users.by_user_name(seller.id, identity_key(draft.user_name))
    restored = _deleted_match(uow, seller, by_name, owners)
    if restored is not None:
        user = restored
        check_user_name_free(uow, seller, user.id, draft.user_name)
        check_addresses_free(uow, user.id, keys, owners)
        check_manager(uow, seller, draft, user.id)
        user.deleted = False
        user.active = True
        changes = user.apply(draft, catalogue)
        if user.invitation is None or user.invitation.state is not InvitationState.accepted:
            user.start_invitation(invitation_lifespan, now)
            _enqueue_invitation(uow, user, invitation_lifespan)
        user.updated_at = now
        uow.users.save(user)
        action = "user.restored"
        # Deleted means deactivated: coming back is a reactivation, told as such.
        tell_secondary_users(uow, seller, user, SecondaryUserEvent.reactivated, actor)
    else:
        if by_name is not None:
            raise Uniqueness(
                f"userName {draft.user_name!r} is already used by another user of this seller."
            )
        check_addresses_free(uow, None, keys, owners)
        check_manager(uow, seller, draft, None)
        user = SellerUser(
            id=new_id(),
            seller_id=seller.id,
            user_name=draft.user_name,
            role=Role.secondary,
            created_at=now,
            updated_at=now,
        )
        changes = user.apply(draft, catalogue)
        user.start_invitation(invitation_lifespan, now)
        _enqueue_invitation(uow, user, invitation_lifespan)
        uow.users.add(user)
        action = "user.created"
    _audit(uow, seller, actor, action, user, {**changes, "active": user.active})
    enqueue_user_sync(uow, user)
    if invitations is not None:
        invitations.sent(user)
    return user, restored is not None


def change_user(
    uow: UnitOfWork,
    catalogue: Catalogue,
    seller: SellerAccount,
    user: SellerUser,
    draft: UserDraft,
    actor: Actor,
    *,
    expected_version: int | None = None,
) -> SellerUser:
    """Replace a user's state (SCIM PUT or PATCH, a directory entry) under the seller rules."""
    check_user_draft(catalogue, draft)  # before any look-up: what the store never sees
    keys = draft_email_keys(draft)
    new_keys = keys - user.email_keys
    if new_keys:
        seller.check_not_partner(sorted(new_keys))
        check_addresses_free(uow, user.id, new_keys)
    if identity_key(draft.user_name) != identity_key(user.user_name):
        check_user_name_free(uow, seller, user.id, draft.user_name)
    check_manager(uow, seller, draft, user.id)
    was_active = user.active
    changes = user.apply(draft, catalogue)
    if not changes:
        return user
    user.updated_at = utcnow()
    _reinvite_if_lapsed(uow, user)
    uow.users.save(user, expected_version=expected_version)
    action = "user.updated"
    if was_active != user.active:
        action = "user.reactivated" if user.active else "user.deactivated"
        tell_secondary_users(uow, seller, user, _activity(user.active), actor)
    _audit(uow, seller, actor, action, user, changes)
    enqueue_user_sync(uow, user)
    return user


def _activity(active: bool) -> SecondaryUserEvent:
    return SecondaryUserEvent.reactivated if active else SecondaryUserEvent.deactivated


def _reinvite_if_lapsed(uow: UnitOfWork, user: SellerUser) -> None:
    """A user reactivated after its invitation lapsed gets a new one (its addresses are
    taken back as it is saved, while no one else took them)."""
    lifespan = user.renew_lapsed_invitation(utcnow())
    if lifespan is not None:
        _enqueue_invitation(uow, user, lifespan)


def change_active(
    uow: UnitOfWork, seller: SellerAccount, user: SellerUser, active: bool, actor: Actor
) -> SellerUser:
    """Deactivate or reactivate a user (the command line, a directory sync, a console change)."""
    changed = user.reactivate() if active else user.deactivate()
    if not changed:
        return user
    user.updated_at = utcnow()
    _reinvite_if_lapsed(uow, user)
    uow.users.save(user)
    _audit(
        uow,
        seller,
        actor,
        "user.reactivated" if active else "user.deactivated",
        user,
        {"active": {"from": not active, "to": active}},
    )
    tell_secondary_users(uow, seller, user, _activity(active), actor)
    enqueue_user_sync(uow, user)
    return user


def remove_user(
    uow: UnitOfWork,
    seller: SellerAccount,
    user: SellerUser,
    actor: Actor,
    *,
    expected_version: int | None = None,
) -> None:
    """SCIM DELETE: the user is deactivated and hidden, never destroyed; its emails stay
    reserved (see the README's rules for addresses never signed in with)."""
    was_active = user.active
    user.delete()
    groups = uow.permission_sets.of_user(user.id)
    for group in groups:
        full = uow.permission_sets.get(seller.id, group.id)
        if full is None:
            continue
        full.member_ids = [m for m in full.member_ids if m != user.id]
        full.updated_at = utcnow()
        uow.permission_sets.save(full)
    now = utcnow()
    user.updated_at = now
    uow.users.save(user, expected_version=expected_version)
    changes: dict[str, Any] = {
        "active": {"from": True, "to": False},
        "removedFrom": [g.display_name for g in groups],
    }
    if user.never_signed_in:
        # Never the user's own (no invitation accepted, no login): free for anyone again, so
        # that no seller can reserve addresses by creating and deleting users.
        uow.users.release_addresses(user.id, now)
        changes["addressesReleased"] = sorted(user.email_keys)
    _audit(uow, seller, actor, "user.deleted", user, changes)
    if was_active:
        tell_secondary_users(uow, seller, user, SecondaryUserEvent.deactivated, actor)
    enqueue_user_sync(uow, user)


def accept_invitation(
    uow: UnitOfWork, seller: SellerAccount, user: SellerUser, actor: Actor
) -> bool:
    """The user set its password and verified its email in the identity provider (its first
    sign-in, unless it logged in before: then that login was)."""
    first = user.never_signed_in
    if not user.accept_invitation():
        return False
    uow.users.save(user)
    _audit(uow, seller, actor, "user.invitation-accepted", user, {})
    if first:
        tell_secondary_users(uow, seller, user, SecondaryUserEvent.first_sign_in, actor)
    return True


def record_login(uow: UnitOfWork, seller: SellerAccount, user_id: str, at: dt.datetime) -> None:
    """Remember the last login, for the access review's stale-user check.

    Written without a version bump: a login changes no SCIM attribute, so it must not make a
    client's If-Match fail nor race with its writes.
    """
    uow.users.record_login(seller.id, user_id, at)


def sign_in(
    uow: UnitOfWork, seller: SellerAccount, user: SellerUser, at: dt.datetime, actor: Actor
) -> None:
    """A login seen in the identity provider: recorded (see :func:`record_login`), and, when
    the user never signed in before (no login, no invitation accepted), told as its first."""
    first = user.never_signed_in and user.active and not user.deleted
    record_login(uow, seller, user.id, at)
    user.last_login_at = at if user.last_login_at is None else max(user.last_login_at, at)
    if first:
        tell_secondary_users(uow, seller, user, SecondaryUserEvent.first_sign_in, actor)


def lapse_invitations(
    uow: UnitOfWork, now: dt.datetime | None = None, limit: int = 500
) -> list[SellerUser]:
    """Deactivate the users whose invitation expired unaccepted (they never logged in) and
    release their addresses: an address is nobody's until someone signs in with it."""
    now = now or utcnow()
    lapsed = []
    for user in uow.users.expired_invitations(now, limit):
        seller = uow.sellers.get(user.seller_id)
        if seller is None or not user.lapse_invitation(now):
            continue
        user.updated_at = now
        uow.users.save(user)
        uow.users.release_addresses(user.id, now)
        _audit(
            uow,
            seller,
            Actor("invitation-expired"),
            "user.invitation-expired",
            user,
            {"active": {"from": True, "to": False}, "addressesReleased": sorted(user.email_keys)},
        )
        tell_secondary_users(
            uow, seller, user, SecondaryUserEvent.deactivated, Actor("invitation-expired")
        )
        enqueue_user_sync(uow, user)
        lapsed.append(user)
    return lapsed


# -- Use cases (each one unit of work) -----------------------------------------------------------


def provision_user(
    uow: UnitOfWork,
    catalogue: Catalogue,
    seller: SellerAccount,
    draft: UserDraft,
    actor: Actor,
    *,
    invitation_lifespan: dt.timedelta = DEFAULT_INVITATION_LIFESPAN,
    invitations: InvitationCap | None = None,
) -> tuple[SellerUser, bool]:
    """Add a secondary user to a seller account, or restore the one this seller deleted.

    A POST whose userName or any email matches a user that this seller deleted brings
    that user back (same id, history kept, active, attributes from the new body).

    :returns: the user, and whether it was restored rather than created.
    """
    with uow:
        result = add_user(
            uow,
            catalogue,
            seller,
            draft,
            actor,
            invitation_lifespan=invitation_lifespan,
            invitations=invitations,
        )
        uow.commit()
    return result


def replace_user(
    uow: UnitOfWork,
    catalogue: Catalogue,
    seller: SellerAccount,
    user_id: str,
    draft: UserDraft,
    actor: Actor,
    *,
    expected_version: int | None = None,
    current: SellerUser | None = None,
) -> SellerUser:
    """Replace a user's state (SCIM PUT or PATCH), keeping the seller rules.

    ``current`` is the user as the caller already read it (at ``expected_version``): it is
    not read again; the write still checks that nobody changed it meanwhile.
    """
    with uow:
        if current is None or current.id != user_id or current.seller_id != seller.id:
            current = get_user(uow, seller, user_id)
        user = change_user(
            uow, catalogue, seller, current, draft, actor, expected_version=expected_version
        )
        uow.commit()
    return user


def set_active(
    uow: UnitOfWork, seller: SellerAccount, user_id: str, active: bool, actor: Actor
) -> SellerUser:
    """Deactivate or reactivate a user."""
    with uow:
        user = change_active(uow, seller, get_user(uow, seller, user_id), active, actor)
        uow.commit()
    return user


def delete_user(
    uow: UnitOfWork,
    seller: SellerAccount,
    user_id: str,
    actor: Actor,
    *,
    expected_version: int | None = None,
) -> None:
    """SCIM DELETE (see :func:`remove_user`)."""
    with uow:
        remove_user(
            uow, seller, get_user(uow, seller, user_id), actor, expected_version=expected_version
        )
        uow.commit()


def resend_invitation(
    uow: UnitOfWork,
    seller: SellerAccount,
    user_id: str,
    actor: Actor,
    *,
    lifespan: dt.timedelta = DEFAULT_INVITATION_LIFESPAN,
) -> SellerUser:
    """Send a new invitation to a user who has not accepted one yet."""
    with uow:
        user = get_user(uow, seller, user_id)
        now = utcnow()
        user.resend_invitation(lifespan, now)
        _enqueue_invitation(uow, user, lifespan)
        user.updated_at = now
        uow.users.save(user)
        _audit(
            uow, seller, actor, "user.invited", user, {"expiresAt": (now + lifespan).isoformat()}
        )
        uow.commit()
    return user


def expire_invitations(uow: UnitOfWork, now: dt.datetime | None = None) -> int:
    """The housekeeping use case: lapse every invitation that expired unaccepted."""
    with uow:
        lapsed = lapse_invitations(uow, now)
        uow.commit()
    return len(lapsed)


def find_user(uow: UnitOfWork, seller: SellerAccount, ref: str) -> SellerUser:
    """A visible user of the seller by its id or its userName."""
    with uow:
        user = uow.users.get(seller.id, ref) or uow.users.by_user_name(seller.id, identity_key(ref))
    if user is None or user.deleted:
        raise NotFound(f"Seller {seller.name!r} has no user {ref!r}.")
    return user
