"""One batch of directory changes, decided change by change and written in set operations.

:class:`Batch` is what :meth:`StoreDirectoryTarget.apply_batch
<connector.services.directory.target.StoreDirectoryTarget.apply_batch>` runs for each
batch of a plan, in three steps:

1. :meth:`Batch.load` reads everything the batch's changes need in a handful of
   statements (users, links, the reserved-address check of every address the batch
   touches, userNames, permission sets and memberships), in a read snapshot that
   takes no lock.
2. :meth:`Batch.apply` decides one change at a time, in order, in memory, as the use
   cases of :mod:`connector.services.users` decide them: the aggregates' own methods
   (``SellerUser.apply``, ``deactivate``, ``reactivate``, ``start_invitation``,
   ``SellerAccount.check_may_add_secondary_users``, ``check_not_partner``...), the
   brand-new rule (:func:`~connector.services.users.check_addresses_free`, released
   addresses free again), userName uniqueness, the primary user and the source's links.
   A refused change raises a ``DomainError`` before it touches the batch's state, so it
   leaves nothing of itself and the next changes see the state without it.
3. :meth:`Batch.stage` hands the writes of the accepted changes to the
   :class:`~connector.ports.directory.DirectoryStore` port as one statement per kind
   (users, reserved addresses, links, memberships, permission sets, audit, outbox);
   the unit of work runs them in its one short write transaction at ``commit``.

The audit trail and the outbox get what the single use cases give them: ``user.created``
or ``user.restored``, ``user.updated``, ``user.deactivated``/``user.reactivated``,
``directory.linked``, ``directory.deactivation-reason``, one ``group.updated`` per set
whose members changed, ``user.invite`` entries, one ``permission_set.sync`` per changed
set and one ``user.sync`` per changed user (the worker reads the current state).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from typing import Any

from connector.domain.addresses import AddressClaim, AddressFlag, HeldAddress, address_changes
from connector.domain.catalogue import Catalogue
from connector.domain.drafts import Actor, UserDraft
from connector.domain.errors import Forbidden, InvalidValue, NotFound, Uniqueness
from connector.domain.model import (
    DEFAULT_INVITATION_LIFESPAN,
    Email,
    InvitationState,
    PermissionSet,
    Role,
    SellerAccount,
    SellerUser,
    check_user_draft,
    draft_email_keys,
    email_key,
    identity_key,
    text_key,
    utcnow,
)
from connector.ports.directory import (
    DirectoryStore,
    Membership,
)
from connector.ports.outbox import PERMISSION_SET_SYNC, USER_INVITE, USER_SYNC
from connector.ports.store import AuditEvent, EmailOwner, OutboxEntry, UnitOfWork
from connector.services.directory.plan import (
    Action,
    CreateUser,
    Deactivate,
    Reactivate,
    SetPermissionSets,
    UpdateUser,
)
from connector.services.users import (
    check_addresses_free,
    check_manager,
    new_id,
)


@dataclass(frozen=True)
class Deactivation:
    """A deactivation asked for directly (``DirectoryTarget.deactivate``), its reason as text."""

    user_id: str
    reason: str


Change = Action | Deactivation


def _copy(user: SellerUser) -> SellerUser:
    """A working copy: a change is decided on it, and kept only if it is accepted."""
    return replace(
        user,
        emails=[replace(e) for e in user.emails],
        permissions=dict(user.permissions),
        notifications=list(user.notifications),
        profile=dict(user.profile),
        invitation=replace(user.invitation) if user.invitation is not None else None,
    )


def with_primary_email(emails: list[Email], address: str) -> list[Email]:
    """The emails with the primary one's value replaced (or ``address`` added as primary)."""
    index = next((n for n, e in enumerate(emails) if e.primary), 0 if emails else None)
    out: list[Email] = []
    for n, e in enumerate(emails):
        if n == index:
            out.append(Email(address, e.type or "work", True, None))
        elif email_key(e.value) != email_key(address):
            out.append(Email(e.value, e.type, e.primary, e.display))
    if index is None:
        out.append(Email(address, "work", True))
    return out


def _name_taken(user_name: str) -> Uniqueness:
    # The words of services.users.check_user_name_free: one rule, one message.
    return Uniqueness(f"userName {user_name!r} is already used by another user of this seller.")


@dataclass
class Batch:
    """The state of one batch: what was read, and what its accepted changes write."""

    uow: UnitOfWork
    store: DirectoryStore
    catalogue: Catalogue
    seller: SellerAccount
    source_id: str
    managed: dict[str, str]
    """text key -> the source's spelling of each permission set it maps."""
    actor: Actor
    invitation_lifespan: dt.timedelta = DEFAULT_INVITATION_LIFESPAN

    # -- what was read (and, as changes are accepted, what they made of it) ------------
    users: dict[str, SellerUser] = field(default_factory=dict)
    names: dict[str, SellerUser] = field(default_factory=dict)
    owners: dict[str, EmailOwner] = field(default_factory=dict)
    held: dict[str, dict[str, HeldAddress]] = field(default_factory=dict)
    link_of_user: dict[str, str] = field(default_factory=dict)
    user_of_entry: dict[str, str] = field(default_factory=dict)
    sets: dict[str, PermissionSet] = field(default_factory=dict)
    """text key -> the seller's managed permission set (members not loaded)."""
    member_of: dict[str, set[str]] = field(default_factory=dict)
    """user id -> ids of the managed sets it belongs to."""
    positions: dict[str, int] = field(default_factory=dict)

    # -- what the accepted changes write ------------------------------------------------
    created: dict[str, SellerUser] = field(default_factory=dict)
    saved: dict[str, SellerUser] = field(default_factory=dict)
    claims: dict[str, AddressClaim] = field(default_factory=dict)
    flags: dict[tuple[str, str], AddressFlag] = field(default_factory=dict)
    new_links: dict[str, str] = field(default_factory=dict)
    relinks: dict[str, str] = field(default_factory=dict)
    joins: dict[tuple[str, str], Membership] = field(default_factory=dict)
    leaves: dict[tuple[str, str], Membership] = field(default_factory=dict)
    audit: list[AuditEvent] = field(default_factory=list)
    invites: list[OutboxEntry] = field(default_factory=list)
    synced: dict[str, None] = field(default_factory=dict)
    created_for: dict[str, str] = field(default_factory=dict)
    """stable id -> the user a CreateUser of this batch made (or restored)."""

    # -- 1. load ---------------------------------------------------------------------

    def load(self, changes: list[Change]) -> None:
        """Read what ``changes`` need, in a few statements per kind."""
        store, seller = self.store, self.seller
        creates = [c for c in changes if isinstance(c, CreateUser)]
        user_ids = {c.user_id for c in changes if not isinstance(c, CreateUser)}
        self.user_of_entry = store.links_of_entries(self.source_id, [c.stable_id for c in creates])
        user_ids |= set(self.user_of_entry.values())
        name_keys = {identity_key(c.email) for c in creates}
        name_keys |= {
            identity_key(c.email) for c in changes if isinstance(c, UpdateUser) and c.email
        }
        named = store.users_by_name(seller.id, sorted(name_keys))
        self.names = {identity_key(u.user_name): u for u in named}
        self._remember(named)
        self._remember(self.uow.users.get_many(seller.id, sorted(user_ids - self.users.keys())))

        keys = {email_key(c.email) for c in creates}
        keys |= {email_key(c.email) for c in changes if isinstance(c, UpdateUser) and c.email}
        for user in self.users.values():
            keys |= user.email_keys
        self.owners = {o.email_key: o for o in self.uow.users.email_owners(sorted(keys))}
        # A user of this seller deleted with an address a new entry brings back is restored.
        restorable = {
            o.user_id for o in self.owners.values() if o.seller_id == seller.id and o.deleted
        }
        self._remember(self.uow.users.get_many(seller.id, sorted(restorable - self.users.keys())))

        ids = sorted(self.users)
        self.link_of_user = store.links_of_users(self.source_id, ids)
        self.held = {
            user_id: {a.email_key: a for a in rows}
            for user_id, rows in store.addresses_of(ids).items()
        }
        wanted = {identity_key(name): key for key, name in self.managed.items()}
        for found in store.permission_sets_named(seller.id, sorted(wanted)):
            key = wanted.get(identity_key(found.display_name))
            if key is not None:
                self.sets[key] = found
        set_ids = [s.id for s in self.sets.values()]
        for set_id, user_id in store.memberships(ids, set_ids):
            self.member_of.setdefault(user_id, set()).add(set_id)
        self.positions = store.next_positions(set_ids)

    def _remember(self, found: list[SellerUser]) -> None:
        for user in found:
            self.users.setdefault(user.id, user)

    # -- 2. decide, one change at a time ---------------------------------------------------

    def apply(self, change: Change) -> str | None:
        """Decide one change and record its writes; returns the user a creation made.

        :raises DomainError: the seller rules refuse it (nothing of it is recorded).
        """
        match change:
            case CreateUser():
                return self._create(change)
            case UpdateUser():
                self._update(change)
            case SetPermissionSets():
                self._set_permission_sets(change)
            case Deactivate():
                self._deactivate(change.user_id, change.reason.value)
            case Deactivation():
                self._deactivate(change.user_id, change.reason)
            case Reactivate():
                self._reactivate(change.user_id)
        return None

    def _linked_user(self, user_id: str) -> SellerUser:
        """The user, if this source may change it: linked to the source, not the primary.

        The plan already keeps to these rules; checking here too means that no plan
        (stale, or from another source) ever touches a SCIM-provisioned user.
        """
        user = self.users.get(user_id)
        if user is None or user.deleted:
            raise NotFound(f"User {user_id} not found.")
        if user.is_primary:
            raise Forbidden(
                "the primary user changes only through the marketplace team: a directory "
                "sync never changes it"
            )
        if self.link_of_user.get(user.id) is None:
            raise Forbidden(
                f"user {user.id} is not linked to directory source {self.source_id!r}: "
                "the sync changes only the users it provisioned"
            )
        return user

    def _resolve(self, name: str) -> PermissionSet:
        found = self.sets.get(text_key(name))
        if found is None:
            raise InvalidValue(
                f"seller {self.seller.name!r} has no permission set named {name!r}: "
                "create it (a SCIM Group) or fix the source's groups.map"
            )
        return found

    def _check_managed(self, names: frozenset[str]) -> None:
        foreign = sorted(n for n in names if text_key(n) not in self.managed)
        if foreign:
            raise InvalidValue(
                f"permission sets {', '.join(foreign)} are not mapped by directory source "
                f"{self.source_id!r}: it manages only its groups.map sets"
            )

    def _owners_of(self, keys: set[str]) -> list[EmailOwner]:
        return [self.owners[k] for k in sorted(keys) if k in self.owners]

    def _deleted_match(
        self, by_name: SellerUser | None, owners: list[EmailOwner]
    ) -> SellerUser | None:
        """The user this seller deleted that the entry names again, by userName or email."""
        if by_name is not None and by_name.deleted:
            return by_name
        for owner in owners:
            if owner.seller_id == self.seller.id and owner.deleted:
                return self.users.get(owner.user_id)
        return None

    def _addresses(self, user: SellerUser) -> tuple[list[AddressClaim], list[AddressFlag]]:
        """What saving ``user`` writes to the reserved addresses (``address_changes``, as
        every single save), its claims checked against the owners this batch read.

        :raises Uniqueness: an address it needs is held by someone else, unreleased.
        """
        claims, flags = address_changes(user, self.held.get(user.id, {}))
        for claim in claims:
            owner = self.owners.get(claim.email_key)
            if owner is not None and owner.user_id != user.id and not owner.released:
                raise Uniqueness(
                    f"The email address {claim.email_key} was taken by another user meanwhile."
                )
        return claims, flags

    def _keep(
        self,
        user: SellerUser,
        addresses: tuple[list[AddressClaim], list[AddressFlag]],
        *,
        new: bool = False,
        old_name: str | None = None,
    ) -> None:
        """Record an accepted change of ``user``: its row and its addresses."""
        self.users[user.id] = user
        (self.created if new else self.saved)[user.id] = user
        claims, flags = addresses
        rows = self.held.setdefault(user.id, {})
        for claim in claims:
            self.claims[claim.email_key] = claim
            rows[claim.email_key] = HeldAddress(claim.email_key, claim.current, False)
        for flag in flags:
            self.flags[(flag.email_key, flag.user_id)] = flag
            rows[flag.email_key] = HeldAddress(flag.email_key, flag.current, False)
        for key, row in rows.items():
            self.owners[key] = EmailOwner(key, user.id, user.seller_id, user.deleted, row.released)
        holder = self.names.get(old_name) if old_name is not None else None
        if holder is not None and holder.id == user.id:
            del self.names[old_name]  # type: ignore[arg-type]
        self.names[identity_key(user.user_name)] = user

    def _record(self, action: str, user: SellerUser, changes: dict[str, Any]) -> None:
        self.audit.append(
            AuditEvent(self.seller.id, self.actor.name, action, f"user:{user.id}", changes)
        )

    def _invite(self, user: SellerUser, lifespan: dt.timedelta) -> None:
        self.invites.append(
            OutboxEntry(
                seller_id=user.seller_id,
                topic=USER_INVITE,
                aggregate_id=user.id,
                payload={"lifespan_seconds": int(lifespan.total_seconds())},
            )
        )

    def _join(self, user_id: str, permission_set: PermissionSet) -> None:
        held = self.member_of.setdefault(user_id, set())
        if permission_set.id in held:
            return
        held.add(permission_set.id)
        key = (permission_set.id, user_id)
        if self.leaves.pop(key, None) is None:
            position = self.positions.get(permission_set.id, 0)
            self.positions[permission_set.id] = position + 1
            self.joins[key] = Membership(permission_set.id, user_id, position)

    def _leave(self, user_id: str, set_id: str) -> None:
        held = self.member_of.setdefault(user_id, set())
        if set_id not in held:
            return
        held.discard(set_id)
        key = (set_id, user_id)
        if self.joins.pop(key, None) is None:
            self.leaves[key] = Membership(set_id, user_id)

    def _link(self, stable_id: str, user_id: str, *, replace_any: bool) -> None:
        if self.user_of_entry.get(stable_id) == user_id and self.link_of_user.get(user_id) == (
            stable_id
        ):
            return  # exactly this link already exists
        previous_user = self.user_of_entry.get(stable_id)
        if previous_user is not None and self.link_of_user.get(previous_user) == stable_id:
            del self.link_of_user[previous_user]
        previous_entry = self.link_of_user.get(user_id)
        if previous_entry is not None:
            self.user_of_entry.pop(previous_entry, None)
        self.user_of_entry[stable_id] = user_id
        self.link_of_user[user_id] = stable_id
        if replace_any:
            self.relinks[stable_id] = user_id
        else:
            self.new_links[stable_id] = user_id

    def _create(self, action: CreateUser) -> str:
        seller = self.seller
        existing = self.user_of_entry.get(action.stable_id)
        linked = self.users.get(existing) if existing is not None else None
        if linked is not None and not linked.deleted:
            raise Uniqueness(
                f"directory entry {action.stable_id} is already linked to user {existing}"
            )
        self._check_managed(action.permission_sets)
        sets = [self._resolve(name) for name in sorted(action.permission_sets)]
        draft = UserDraft(
            user_name=action.email,
            emails=[Email(action.email, type="work", primary=True)],
            given_name=action.given_name,
            family_name=action.family_name,
            display_name=f"{action.given_name} {action.family_name}".strip(),
            active=True,
        )
        # What services.users.add_user checks, in its order.
        seller.check_may_add_secondary_users()
        check_user_draft(self.catalogue, draft)
        keys = draft_email_keys(draft)
        seller.check_not_partner(sorted(keys))
        restored, user, old_name, changes, invite = self._restore_or_new(draft, keys)
        action_name = "user.restored" if restored is not None else "user.created"
        addresses = self._addresses(user)

        # Accepted: from here on nothing raises.
        self._keep(user, addresses, new=restored is None, old_name=old_name)
        if invite:
            self._invite(user, self.invitation_lifespan)
        self._record(action_name, user, {**changes, "active": user.active})
        self.synced[user.id] = None
        self._link(
            action.stable_id,
            user.id,
            replace_any=restored is not None or existing is not None,
        )
        self.audit.append(
            AuditEvent(
                seller.id,
                self.actor.name,
                "directory.linked",
                f"user:{user.id}",
                {"source": self.source_id, "stableId": action.stable_id},
            )
        )
        for permission_set in sets:
            self._join(user.id, permission_set)
        self.created_for[action.stable_id] = user.id
        return user.id

    def _restore_or_new(
        self, draft: UserDraft, keys: set[str]
    ) -> tuple[SellerUser | None, SellerUser, str | None, dict[str, Any], bool]:
        """The user a create makes: a deleted user of this seller brought back when the name
        or address is its own, else a new secondary user; both invited unless accepted before.

        Returns (the deleted user restored or None, the user, its former name key, the
        changes, whether to invite)."""
        now = utcnow()
        owners = self._owners_of(keys)
        by_name = self.names.get(identity_key(draft.user_name))
        restored = self._deleted_match(by_name, owners)
        if restored is not None:
            if by_name is not None and by_name.id != restored.id:
                raise _name_taken(draft.user_name)
            check_addresses_free(self.uow, restored.id, keys, owners)
            user = _copy(restored)
            old_name: str | None = identity_key(user.user_name)
            user.deleted = False
            user.active = True
            changes = user.apply(draft, self.catalogue)
            invite = (
                user.invitation is None or user.invitation.state is not InvitationState.accepted
            )
            user.updated_at = now
        else:
            if by_name is not None:
                raise _name_taken(draft.user_name)
            check_addresses_free(self.uow, None, keys, owners)
            user = SellerUser(
                id=new_id(),
                seller_id=self.seller.id,
                user_name=draft.user_name,
                role=Role.secondary,
                created_at=now,
                updated_at=now,
            )
            old_name = None
            changes = user.apply(draft, self.catalogue)
            invite = True
        if invite:
            user.start_invitation(self.invitation_lifespan, now)
        return restored, user, old_name, changes, invite

    def _update(self, action: UpdateUser) -> None:
        current = self._linked_user(action.user_id)
        user = _copy(current)
        draft = user.draft()
        old_name = f"{user.given_name or ''} {user.family_name or ''}".strip()
        if action.email is not None and email_key(action.email) != email_key(
            user.primary_email or ""
        ):
            old = user.primary_email
            draft.emails = with_primary_email(user.emails, action.email)
            # A userName that was the old address follows it (the user signs in with it).
            if old is not None and email_key(user.user_name) == email_key(old):
                draft.user_name = action.email
        if action.given_name is not None:
            draft.given_name = action.given_name
        if action.family_name is not None:
            draft.family_name = action.family_name
        if user.display_name is None or user.display_name == old_name:
            draft.display_name = (
                f"{draft.given_name or ''} {draft.family_name or ''}".strip() or None
            )
        # What services.users.change_user checks, in its order.
        check_user_draft(self.catalogue, draft)
        keys = draft_email_keys(draft)
        new_keys = keys - current.email_keys
        if new_keys:
            self.seller.check_not_partner(sorted(new_keys))
            check_addresses_free(self.uow, current.id, new_keys, self._owners_of(new_keys))
        if identity_key(draft.user_name) != identity_key(current.user_name):
            holder = self.names.get(identity_key(draft.user_name))
            if holder is not None and holder.id != current.id:
                raise _name_taken(draft.user_name)
        check_manager(self.uow, self.seller, draft, current.id)
        was_active = current.active
        changes = user.apply(draft, self.catalogue)
        if not changes:
            return
        now = utcnow()
        user.updated_at = now
        lifespan = user.renew_lapsed_invitation(now)
        addresses = self._addresses(user)

        self._keep(user, addresses, old_name=identity_key(current.user_name))
        if lifespan is not None:
            self._invite(user, lifespan)
        action_name = "user.updated"
        if was_active and not user.active:
            action_name = "user.deactivated"
        elif not was_active and user.active:
            action_name = "user.reactivated"
        self._record(action_name, user, changes)
        self.synced[user.id] = None

    def _set_permission_sets(self, action: SetPermissionSets) -> None:
        user = self._linked_user(action.user_id)
        wanted = {text_key(n) for n in action.after if text_key(n) in self.managed}
        held = self.member_of.get(user.id, set())
        held_keys = {key for key, s in self.sets.items() if s.id in held}
        # Only the source's sets change: one granted in the portal (or by SCIM) stays.
        add = [self._resolve(self.managed[k]) for k in sorted(wanted - held_keys)]
        remove = [self.sets[k].id for k in sorted(held_keys - wanted)]
        for permission_set in add:
            self._join(user.id, permission_set)
        for set_id in remove:
            self._leave(user.id, set_id)

    def _deactivate(self, user_id: str, reason: str) -> None:
        current = self._linked_user(user_id)
        if not current.active:
            return
        user = _copy(current)
        user.deactivate()
        user.updated_at = utcnow()
        addresses = self._addresses(user)

        self._keep(user, addresses)
        self._record("user.deactivated", user, {"active": {"from": True, "to": False}})
        self.synced[user.id] = None
        self._record(
            "directory.deactivation-reason", user, {"reason": reason, "source": self.source_id}
        )

    def _reactivate(self, user_id: str) -> None:
        user = _copy(self._linked_user(user_id))
        if not user.reactivate():
            return
        now = utcnow()
        user.updated_at = now
        lifespan = user.renew_lapsed_invitation(now)
        addresses = self._addresses(user)

        self._keep(user, addresses)
        if lifespan is not None:
            self._invite(user, lifespan)
        self._record("user.reactivated", user, {"active": {"from": False, "to": True}})
        self.synced[user.id] = None

    # -- 3. stage the writes ------------------------------------------------------------

    def stage(self) -> None:
        """Stage every write of the accepted changes, one statement per kind, in an order
        the foreign keys accept (users before what points at them)."""
        store, seller, now = self.store, self.seller, utcnow()
        store.add_users(list(self.created.values()))
        store.save_users(list(self.saved.values()))
        # Claims before flags: a flag may mark a row that a claim of this batch writes.
        store.claim_addresses(list(self.claims.values()))
        store.flag_addresses(list(self.flags.values()))
        store.add_links(self.source_id, seller.id, list(self.new_links.items()), now)
        for stable_id, user_id in self.relinks.items():
            store.relink(self.source_id, seller.id, stable_id, user_id, now)
        store.remove_memberships(list(self.leaves.values()))
        store.add_memberships(list(self.joins.values()))

        changed: dict[str, dict[str, list[str]]] = {}
        for membership in self.joins.values():
            changed.setdefault(membership.permission_set_id, {"added": [], "removed": []})
            changed[membership.permission_set_id]["added"].append(membership.user_id)
        for membership in self.leaves.values():
            changed.setdefault(membership.permission_set_id, {"added": [], "removed": []})
            changed[membership.permission_set_id]["removed"].append(membership.user_id)
        set_ids = sorted(changed)
        store.touch_permission_sets(set_ids, now)
        for set_id in set_ids:
            what: dict[str, Any] = {}
            if changed[set_id]["added"]:
                what["membersAdded"] = sorted(changed[set_id]["added"])
            if changed[set_id]["removed"]:
                what["membersRemoved"] = sorted(changed[set_id]["removed"])
            self.audit.append(
                AuditEvent(seller.id, self.actor.name, "group.updated", f"group:{set_id}", what)
            )
        store.append_audit(self.audit)

        touched = dict(self.synced)
        for set_id in set_ids:
            touched.update(dict.fromkeys(changed[set_id]["added"] + changed[set_id]["removed"]))
        store.add_outbox(
            [
                *self.invites,
                *(OutboxEntry(seller.id, PERMISSION_SET_SYNC, set_id) for set_id in set_ids),
                *(OutboxEntry(seller.id, USER_SYNC, user_id) for user_id in touched),
            ]
        )
