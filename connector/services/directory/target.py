"""The store-backed ``DirectoryTarget``: a directory sync's changes, made through the use cases.

Every change goes through ``connector.services.users`` and
``connector.services.permission_sets``, so the seller rules hold exactly as for a
SCIM client (brand-new emails, the primary user protected, plan gating) and every
change reaches the identity provider through the outbox.

Identity is the directory's stable id, kept in a link table per directory source
(:class:`DirectoryLinks`), never the SCIM ``externalId`` (Okta and Entra set that).
A source only ever sees, and changes, the users linked to it: SCIM-provisioned users
of the same seller are left alone, even by a full run.

Each call is one unit of work, committed at its end: an interrupted run keeps what
it finished, and a re-run (planned again from the store) converges.
:meth:`StoreDirectoryTarget.apply_batch` applies many actions in one unit of work,
each in a savepoint, with one permission-set write per set: large runs need it (see
its docstring), and it keeps the same all-or-nothing guarantee per batch.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from connector.domain.catalogue import Catalogue
from connector.domain.drafts import Actor, PermissionSetDraft, UserDraft
from connector.domain.errors import DomainError, Forbidden, InvalidValue, NotFound, Uniqueness
from connector.domain.model import (
    DEFAULT_INVITATION_LIFESPAN,
    Email,
    PermissionSet,
    SellerAccount,
    SellerUser,
    email_key,
    is_email,
    text_key,
)
from connector.ports.directory import DirectoryLinks, KnownUser
from connector.ports.store import AuditEvent, UnitOfWork, UnitOfWorkFactory
from connector.services.directory.plan import (
    Action,
    CreateUser,
    Deactivate,
    Reactivate,
    SetPermissionSets,
    UpdateUser,
)
from connector.services.permission_sets import change_permission_set
from connector.services.sellers import find_seller
from connector.services.users import (
    add_user,
    change_active,
    change_user,
    get_user,
)

MARKER_PREFIX = "directory:"
"""Markers of directory sources are stored as ``directory:<source id>`` (the marker
table is shared with other incremental readers)."""


UowFactory = UnitOfWorkFactory
LinksFactory = Callable[[UnitOfWork], DirectoryLinks]


@dataclass
class _Memberships:
    """Permission-set membership changes of one unit of work, written once per set.

    Writing a set rewrites its whole member list (``replace_permission_set``), so a
    batch of 500 creates into one set costs one write, not 500.
    """

    uow: UnitOfWork
    catalogue: Catalogue
    seller: SellerAccount
    actor: Actor
    _by_key: dict[str, PermissionSet] = field(default_factory=dict)
    _adds: dict[str, list[str]] = field(default_factory=dict)
    _removes: dict[str, set[str]] = field(default_factory=dict)

    def resolve(self, name: str) -> PermissionSet:
        """The seller's permission set of this name.

        :raises InvalidValue: when the seller has none (a groups.map value is wrong).
        """
        key = text_key(name)
        if key not in self._by_key:
            found = self.uow.permission_sets.by_display_name(self.seller.id, name)
            if found is None:
                raise InvalidValue(
                    f"seller {self.seller.name!r} has no permission set named {name!r}: "
                    "create it (a SCIM Group) or fix the source's groups.map"
                )
            self._by_key[key] = found
        return self._by_key[key]

    def change(self, user_id: str, add: Sequence[PermissionSet], remove: Sequence[str]) -> None:
        """Record that the user joins ``add`` and leaves the sets with ids ``remove``."""
        for permission_set in add:
            self._adds.setdefault(permission_set.id, []).append(user_id)
            self._removes.get(permission_set.id, set()).discard(user_id)
        for set_id in remove:
            self._removes.setdefault(set_id, set()).add(user_id)
            if user_id in self._adds.get(set_id, []):
                self._adds[set_id].remove(user_id)

    def staged(self) -> _Memberships:
        """An empty change list sharing this one's set cache: an action's changes are
        merged only once the action succeeded."""
        return _Memberships(self.uow, self.catalogue, self.seller, self.actor, self._by_key)

    def merge(self, other: _Memberships) -> None:
        """Take over the changes recorded in ``other`` (in order)."""
        for set_id, users in other._adds.items():
            self._adds.setdefault(set_id, []).extend(users)
        for set_id, gone in other._removes.items():
            self._removes.setdefault(set_id, set()).update(gone)

    def flush(self) -> None:
        """Write every changed set through ``replace_permission_set`` (read fresh, so a
        concurrent SCIM change to other members is kept)."""
        for set_id in sorted(self._adds.keys() | self._removes.keys()):
            adds, removes = self._adds.get(set_id, []), self._removes.get(set_id, set())
            if not adds and not removes:
                continue
            current = self.uow.permission_sets.get(self.seller.id, set_id)
            if current is None:
                raise NotFound(f"permission set {set_id} was deleted during the sync")
            members = [m for m in current.member_ids if m not in removes]
            members += [m for m in dict.fromkeys(adds) if m not in set(members)]
            change_permission_set(
                self.uow,
                self.catalogue,
                self.seller,
                current,
                PermissionSetDraft(
                    display_name=current.display_name,
                    external_id=current.external_id,
                    permissions={k: v.value for k, v in current.permissions.items()},
                    member_ids=members,
                    profile=dict(current.profile),
                ),
                self.actor,
            )
        self._adds.clear()
        self._removes.clear()
        self._by_key.clear()


@dataclass
class StoreDirectoryTarget:
    """Writes one directory source's sync into the store through the use cases.

    ``managed_permission_sets`` are the sets the source maps (its groups.map values):
    the only ones it adds users to or removes them from.
    """

    uow_factory: UowFactory
    catalogue: Catalogue
    source_id: str
    managed_permission_sets: frozenset[str]
    links: LinksFactory
    invitation_lifespan: dt.timedelta = DEFAULT_INVITATION_LIFESPAN
    max_batch_seconds: float = 2.0
    """``apply_batch`` stops taking actions after this long: its transaction holds
    SQLite's write lock, and SCIM requests wait at most 5 s for it (busy timeout)."""

    @property
    def actor(self) -> Actor:
        """Who the audit trail says made the changes."""
        return Actor(f"directory:{self.source_id}")

    @property
    def _managed_keys(self) -> dict[str, str]:
        return {text_key(n): n for n in self.managed_permission_sets}

    # -- reading ---------------------------------------------------------------------

    def resolve_seller(self, seller_id: str | None, seller_name: str | None) -> str:
        ref = seller_id if seller_id is not None else seller_name
        if not ref:
            raise NotFound("the directory source names no seller (seller.id or seller.name)")
        with self.uow_factory() as uow:
            return find_seller(uow, ref).id

    def known_users(self, seller_id: str) -> list[KnownUser]:
        with self.uow_factory() as uow:
            seller = find_seller(uow, seller_id)
            users = uow.users.list(seller.id)
            sets = uow.permission_sets.of_users([u.id for u in users])
            linked = self.links(uow).for_source(self.source_id, seller.id)
        canonical = self._managed_keys
        known = []
        for user in users:
            names = frozenset(
                # The source's spelling of a managed set, so that a case difference
                # with the store does not look like a change at every run.
                canonical.get(text_key(g.display_name), g.display_name)
                for g in sets.get(user.id, [])
            )
            known.append(
                KnownUser(
                    id=user.id,
                    external_id=linked.get(user.id),
                    emails=_addresses(user),
                    given_name=user.given_name,
                    family_name=user.family_name,
                    active=user.active,
                    permission_sets=names,
                    role=user.role,
                )
            )
        return known

    def get_marker(self, source_id: str) -> str | None:
        with self.uow_factory() as uow:
            return uow.markers.get(MARKER_PREFIX + source_id)

    # -- writing: one unit of work per call --------------------------------------------

    def set_marker(self, source_id: str, marker: str) -> None:
        with self.uow_factory() as uow:
            uow.markers.set(MARKER_PREFIX + source_id, marker)
            uow.commit()

    def create_user(
        self,
        seller_id: str,
        *,
        external_id: str,
        email: str,
        given_name: str,
        family_name: str,
        permission_sets: frozenset[str],
    ) -> str:
        action = CreateUser(external_id, "", email, given_name, family_name, permission_sets)
        return self._single(seller_id, action) or ""

    def update_user(
        self,
        seller_id: str,
        user_id: str,
        *,
        email: str | None = None,
        given_name: str | None = None,
        family_name: str | None = None,
    ) -> None:
        self._single(seller_id, UpdateUser(user_id, "", email, given_name, family_name))

    def set_permission_sets(
        self, seller_id: str, user_id: str, permission_sets: frozenset[str]
    ) -> None:
        self._single(seller_id, SetPermissionSets(user_id, "", frozenset(), permission_sets))

    def deactivate(self, seller_id: str, user_id: str, *, reason: str) -> None:
        self._single(seller_id, _Deactivation(user_id, reason))

    def reactivate(self, seller_id: str, user_id: str) -> None:
        self._single(seller_id, Reactivate(user_id, ""))

    def _single(self, seller_id: str, action: Action | _Deactivation) -> str | None:
        with self.uow_factory(immediate=True) as uow:
            seller = find_seller(uow, seller_id)
            members = _Memberships(uow, self.catalogue, seller, self.actor)
            user_id = self._apply(uow, seller, self.links(uow), members, action)
            members.flush()
            uow.commit()
        return user_id

    def apply_batch(self, seller_id: str, actions: Sequence[Action]) -> list[str | None]:
        """Apply ``actions`` in order in ONE unit of work; for each, None when applied or
        the seller rule's refusal (``DomainError.detail``).

        Why: one unit of work per action costs a commit per user, and every membership
        change rewrites the whole permission set (thousands of members); a first sync of
        10,000 users would take many minutes. Here each action runs in a savepoint (a
        refused one is undone alone, as with single calls), memberships are written once
        per set, and everything commits together: an interrupted batch leaves nothing of
        itself, and the re-run plans it again. If writing the sets fails, the batch is
        rolled back and applied again one action per unit of work, so that each
        refusal is reported against its own action.

        After ``max_batch_seconds`` it stops taking actions and returns the results
        of those it took (the caller passes the rest again): a batch never holds the
        store's write lock long, whatever the machine's speed.
        """
        results: list[str | None] = []
        deadline = time.monotonic() + self.max_batch_seconds
        with self.uow_factory(immediate=True) as uow:
            savepoint = uow.savepoint
            try:
                seller = find_seller(uow, seller_id)
            except DomainError as exc:  # as single calls would: each action refused
                return [exc.detail] * len(actions)
            links = self.links(uow)
            members = _Memberships(uow, self.catalogue, seller, self.actor)
            for action in actions:
                if results and time.monotonic() > deadline:
                    break
                staged = members.staged()
                try:
                    with savepoint():
                        self._apply(uow, seller, links, staged, action)
                except DomainError as exc:
                    results.append(exc.detail)
                    continue
                members.merge(staged)  # the membership changes of applied actions only
                results.append(None)
            try:
                with savepoint():
                    members.flush()
            except DomainError:
                uow.rollback()
                fallback = True
            else:
                uow.commit()
                fallback = False
        if fallback:
            return self._one_by_one(seller_id, actions[: len(results)])
        return results

    def _one_by_one(self, seller_id: str, actions: Sequence[Action]) -> list[str | None]:
        results: list[str | None] = []
        for action in actions:
            try:
                self._single(seller_id, action)
            except DomainError as exc:
                results.append(exc.detail)
            else:
                results.append(None)
        return results

    # -- the changes -----------------------------------------------------------------

    def _apply(
        self,
        uow: UnitOfWork,
        seller: SellerAccount,
        links: DirectoryLinks,
        members: _Memberships,
        action: Action | _Deactivation,
    ) -> str | None:
        match action:
            case CreateUser():
                return self._create(uow, seller, links, members, action)
            case UpdateUser():
                self._update(uow, seller, links, action)
            case SetPermissionSets():
                self._set_permission_sets(uow, seller, links, members, action)
            case Deactivate():
                self._deactivate(uow, seller, links, action.user_id, action.reason.value)
            case _Deactivation():
                self._deactivate(uow, seller, links, action.user_id, action.reason)
            case Reactivate():
                user = self._linked_user(uow, seller, links, action.user_id)
                change_active(uow, seller, user, True, self.actor)
        return None

    def _linked_user(
        self, uow: UnitOfWork, seller: SellerAccount, links: DirectoryLinks, user_id: str
    ) -> SellerUser:
        """The user, if this source may change it: linked to the source, not the primary.

        The plan already keeps to these rules; checking here too means that no plan
        (stale, or from another source) ever touches a SCIM-provisioned user.
        """
        user = get_user(uow, seller, user_id)
        if user.is_primary:
            raise Forbidden(
                "the primary user changes only through the marketplace team: a directory "
                "sync never changes it"
            )
        if links.stable_id_of(self.source_id, user.id) is None:
            raise Forbidden(
                f"user {user.id} is not linked to directory source {self.source_id!r}: "
                "the sync changes only the users it provisioned"
            )
        return user

    def _create(
        self,
        uow: UnitOfWork,
        seller: SellerAccount,
        links: DirectoryLinks,
        members: _Memberships,
        action: CreateUser,
    ) -> str:
        existing = links.user_of(self.source_id, action.stable_id)
        if existing is not None and uow.users.get(seller.id, existing) is not None:
            raise Uniqueness(
                f"directory entry {action.stable_id} is already linked to user {existing}"
            )
        self._check_managed(action.permission_sets)
        sets = [members.resolve(name) for name in sorted(action.permission_sets)]
        draft = UserDraft(
            user_name=action.email,
            emails=[Email(action.email, type="work", primary=True)],
            given_name=action.given_name,
            family_name=action.family_name,
            display_name=f"{action.given_name} {action.family_name}".strip(),
            active=True,
        )
        # A user this seller deleted with the same address comes back (same id).
        user, restored = add_user(
            uow,
            self.catalogue,
            seller,
            draft,
            self.actor,
            invitation_lifespan=self.invitation_lifespan,
        )
        if restored or existing is not None:
            links.link(self.source_id, action.stable_id, user.id, seller.id)
        else:  # the usual case, made cheap: a new user, an entry never linked
            links.add(self.source_id, action.stable_id, user.id, seller.id)
        uow.audit.append(
            AuditEvent(
                seller.id,
                self.actor.name,
                "directory.linked",
                f"user:{user.id}",
                {"source": self.source_id, "stableId": action.stable_id},
            )
        )
        held = {g.id for g in uow.permission_sets.of_user(user.id)} if restored else set()
        members.change(user.id, [s for s in sets if s.id not in held], [])
        return user.id

    def _check_managed(self, names: frozenset[str]) -> None:
        keys = self._managed_keys
        foreign = sorted(n for n in names if text_key(n) not in keys)
        if foreign:
            raise InvalidValue(
                f"permission sets {', '.join(foreign)} are not mapped by directory source "
                f"{self.source_id!r}: it manages only its groups.map sets"
            )

    def _update(
        self, uow: UnitOfWork, seller: SellerAccount, links: DirectoryLinks, action: UpdateUser
    ) -> None:
        user = self._linked_user(uow, seller, links, action.user_id)
        draft = user.draft()
        old_name = f"{user.given_name or ''} {user.family_name or ''}".strip()
        if action.email is not None and email_key(action.email) != email_key(
            user.primary_email or ""
        ):
            old = user.primary_email
            draft.emails = _with_primary_email(user.emails, action.email)
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
        change_user(uow, self.catalogue, seller, user, draft, self.actor)

    def _set_permission_sets(
        self,
        uow: UnitOfWork,
        seller: SellerAccount,
        links: DirectoryLinks,
        members: _Memberships,
        action: SetPermissionSets,
    ) -> None:
        user = self._linked_user(uow, seller, links, action.user_id)
        managed = self._managed_keys
        wanted = {text_key(n) for n in action.after if text_key(n) in managed}
        held = {text_key(g.display_name): g for g in uow.permission_sets.of_user(user.id)}
        # Only the source's sets change: one granted in the portal (or by SCIM) meanwhile stays.
        add = [members.resolve(managed[k]) for k in sorted(wanted - held.keys())]
        remove = [g.id for k, g in held.items() if k in managed and k not in wanted]
        members.change(user.id, add, remove)

    def _deactivate(
        self,
        uow: UnitOfWork,
        seller: SellerAccount,
        links: DirectoryLinks,
        user_id: str,
        reason: str,
    ) -> None:
        user = self._linked_user(uow, seller, links, user_id)
        if not user.active:
            return
        change_active(uow, seller, user, False, self.actor)
        uow.audit.append(
            AuditEvent(
                seller.id,
                self.actor.name,
                "directory.deactivation-reason",
                f"user:{user.id}",
                {"reason": reason, "source": self.source_id},
            )
        )


@dataclass(frozen=True)
class _Deactivation:
    """``deactivate`` called directly, with its reason as text."""

    user_id: str
    reason: str


def _addresses(user: SellerUser) -> tuple[str, ...]:
    """The primary address first, then the other emails, then an email userName: every
    address the plan must not give to another directory entry."""
    first = user.primary_email
    values = [first] if first else []
    values += [e.value for e in user.emails if e.value and e.value != first]
    if is_email(user.user_name):
        values.append(user.user_name)
    seen: set[str] = set()
    out = []
    for value in values:
        if email_key(value) not in seen:
            seen.add(email_key(value))
            out.append(value)
    return tuple(out)


def _with_primary_email(emails: list[Email], address: str) -> list[Email]:
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
