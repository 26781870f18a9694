"""The store-backed ``DirectoryTarget``: a directory sync's changes, with the seller rules.

Every change is decided with the seller rules of :mod:`connector.services.users` and
the aggregates (brand-new emails, released addresses free again, the primary user
protected, plan gating, partner domains), and reaches the identity provider through
the outbox. The decisions and the set operations that write them are in
:mod:`connector.services.directory.batch`; the SQL is behind the
:class:`~connector.ports.directory.DirectoryStore` port.

Identity is the directory's stable id, kept in a link table per directory source,
never the SCIM ``externalId`` (Okta and Entra set that). A source only ever sees, and
changes, the users linked to it: SCIM-provisioned users of the same seller are left
alone, even by a full run.

:meth:`StoreDirectoryTarget.apply_batch` applies a batch of changes with one write
transaction, all or nothing: the store's write lock is held only for that batch's
writes. The single calls (``create_user``, ``deactivate``...) are batches of one.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from connector.domain.catalogue import Catalogue
from connector.domain.drafts import Actor
from connector.domain.errors import DomainError, NotFound, Uniqueness, VersionMismatch
from connector.domain.model import (
    DEFAULT_INVITATION_LIFESPAN,
    SellerUser,
    email_key,
    identity_key,
    is_email,
    text_key,
)
from connector.ports.directory import DirectoryLinks, DirectoryStore, KnownUser, StoredUser
from connector.ports.store import UnitOfWork, UnitOfWorkFactory
from connector.services.directory.batch import Batch, Change, Deactivation
from connector.services.directory.plan import (
    CreateUser,
    KnownChunk,
    Reactivate,
    SetPermissionSets,
    UpdateUser,
)
from connector.services.sellers import find_seller

MARKER_PREFIX = "directory:"
"""Markers of directory sources are stored as ``directory:<source id>`` (the marker
table is shared with other incremental readers)."""

UowFactory = UnitOfWorkFactory
LinksFactory = Callable[[UnitOfWork], DirectoryLinks]
StoreFactory = Callable[[UnitOfWork], DirectoryStore]

ATTEMPTS = 3
"""Times a batch is read and decided again when its write finds that someone changed
one of its users or took one of its addresses meanwhile."""
PAGE = 1000
"""Rows per read when walking the source's linked users."""


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


@dataclass
class StoreKnownUsers:
    """What the plan asks of the store, a chunk of entries at a time (``KnownUsers``)."""

    target: StoreDirectoryTarget
    seller_id: str

    def _known(self, stored: StoredUser) -> KnownUser:
        canonical = self.target.managed_keys
        user = stored.user
        return KnownUser(
            id=user.id,
            external_id=stored.stable_id,
            emails=_addresses(user),
            given_name=user.given_name,
            family_name=user.family_name,
            active=user.active,
            # The source's spelling of a managed set, so that a case difference with the
            # store does not look like a change at every run.
            permission_sets=frozenset(
                canonical.get(text_key(name), name) for name in stored.permission_sets
            ),
            role=user.role,
        )

    def lookup(self, stable_ids: Sequence[str], email_keys: Sequence[str]) -> KnownChunk:
        target = self.target
        chunk = KnownChunk()
        wanted = set(email_keys)
        with target.uow_factory() as uow:
            store = target.store(uow)
            linked = [
                self._known(s)
                for s in store.linked_users(target.source_id, self.seller_id, stable_ids)
            ]
            for user in linked:
                chunk.by_external[user.external_id or ""] = user
            for user in linked:
                for address in user.emails:
                    if email_key(address) in wanted:
                        chunk.email_owner.setdefault(email_key(address), user)
            # Addresses not explained by the entries' own users (usually none): who holds them.
            rest = sorted(wanted - chunk.email_owner.keys())
            if rest:
                for stored in store.address_holders(target.source_id, self.seller_id, rest):
                    user = self._known(stored)
                    for address in user.emails:
                        if email_key(address) in wanted:
                            chunk.email_owner.setdefault(email_key(address), user)
        return chunk

    def active_managed(self) -> int:
        with self.target.uow_factory() as uow:
            store = self.target.store(uow)
            return store.count_active_linked(self.target.source_id, self.seller_id)

    def linked_active(self) -> Iterator[tuple[str, str]]:
        after = ""
        while True:
            with self.target.uow_factory() as uow:
                page = self.target.store(uow).active_linked(
                    self.target.source_id, self.seller_id, after=after, limit=PAGE
                )
            yield from page
            if len(page) < PAGE:
                return
            after = page[-1][0]

    def holders(self, permission_sets: frozenset[str]) -> Iterator[str]:
        with self.target.uow_factory() as uow:
            found = self.target.store(uow).permission_sets_named(
                self.seller_id, sorted({identity_key(n) for n in permission_sets})
            )
        set_ids = [s.id for s in found]
        if not set_ids:
            return
        after = ""
        while True:
            with self.target.uow_factory() as uow:
                page = self.target.store(uow).linked_holders(
                    self.target.source_id, self.seller_id, set_ids, after=after, limit=PAGE
                )
            yield from page
            if len(page) < PAGE:
                return
            after = page[-1]


@dataclass
class StoreDirectoryTarget:
    """Writes one directory source's sync into the store, every seller rule checked.

    ``managed_permission_sets`` are the sets the source maps (its groups.map values):
    the only ones it adds users to or removes them from.
    """

    uow_factory: UowFactory
    catalogue: Catalogue
    source_id: str
    managed_permission_sets: frozenset[str]
    links: LinksFactory
    store: StoreFactory
    invitation_lifespan: dt.timedelta = DEFAULT_INVITATION_LIFESPAN
    max_batch_seconds: float = 2.0
    """``apply_batch`` stops taking changes after deciding for this long, and hands the
    rest back: a batch's write stays short whatever the machine's speed."""

    @property
    def actor(self) -> Actor:
        """Who the audit trail says made the changes."""
        return Actor(f"directory:{self.source_id}")

    @property
    def managed_keys(self) -> dict[str, str]:
        """text key -> the source's spelling of each set it maps."""
        return {text_key(n): n for n in self.managed_permission_sets}

    # -- reading ---------------------------------------------------------------------

    def resolve_seller(self, seller_id: str | None, seller_name: str | None) -> str:
        ref = seller_id if seller_id is not None else seller_name
        if not ref:
            raise NotFound("the directory source names no seller (seller.id or seller.name)")
        with self.uow_factory() as uow:
            return find_seller(uow, ref).id

    def known(self, seller_id: str) -> StoreKnownUsers:
        return StoreKnownUsers(self, seller_id)

    def known_users(self, seller_id: str) -> list[KnownUser]:
        """Every visible user of the seller at once (reports and tests; a run asks
        :meth:`known` a chunk at a time instead)."""
        with self.uow_factory() as uow:
            seller = find_seller(uow, seller_id)
            users = uow.users.list(seller.id)
            sets = uow.permission_sets.of_users([u.id for u in users])
            linked = self.links(uow).for_source(self.source_id, seller.id)
        known = StoreKnownUsers(self, seller_id)
        return [
            known._known(
                StoredUser(u, linked.get(u.id), tuple(g.display_name for g in sets.get(u.id, [])))
            )
            for u in users
        ]

    def get_marker(self, source_id: str) -> str | None:
        with self.uow_factory() as uow:
            return uow.markers.get(MARKER_PREFIX + source_id)

    # -- writing -----------------------------------------------------------------------

    def set_marker(
        self,
        source_id: str,
        marker: str,
        group_members: Iterable[tuple[str, frozenset[str]]] | None = None,
        *,
        every_group: bool = False,
    ) -> None:
        """Store the source's state and, in the same transaction, the groups' member
        lists read with it (a full run's: all of them, streamed, so the transaction
        writes as it reads)."""
        with self.uow_factory(immediate=group_members is not None and every_group) as uow:
            if group_members is not None:
                self.store(uow).replace_group_members(
                    source_id, group_members, every_group=every_group
                )
            uow.markers.set(MARKER_PREFIX + source_id, marker)
            uow.commit()

    def group_members(self, source_id: str, group_keys: Sequence[str]) -> dict[str, frozenset[str]]:
        """The groups' member lists stored with the source's marker."""
        with self.uow_factory() as uow:
            return self.store(uow).group_members(source_id, group_keys)

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
        self._single(seller_id, Deactivation(user_id, reason))

    def reactivate(self, seller_id: str, user_id: str) -> None:
        self._single(seller_id, Reactivate(user_id, ""))

    def _single(self, seller_id: str, change: Change) -> str | None:
        [outcome], made = self._batch(seller_id, [change])
        if outcome is not None:
            raise outcome
        return made.get(change.stable_id) if isinstance(change, CreateUser) else None

    def apply_batch(self, seller_id: str, actions: Sequence[Change]) -> list[str | None]:
        """Apply ``actions`` in order, with one write transaction; for each, None when
        applied or the seller rule's refusal (``DomainError.detail``).

        The batch is read (a snapshot, no lock), decided change by change in memory
        (a refused change leaves nothing of itself, as a single call would), and its
        writes run as one statement per kind in one short write transaction. When the
        write finds that someone changed one of its users or took one of its addresses
        meanwhile, the batch is read and decided again (``ATTEMPTS`` times), then
        applied one change per transaction, so that a conflict that persists is
        reported against its own change. Nothing of a batch that fails is kept.

        After ``max_batch_seconds`` of deciding it stops taking changes and returns the
        results of those it took (the caller passes the rest again).
        """
        outcomes, _ = self._batch(seller_id, actions)
        return [None if o is None else o.detail for o in outcomes]

    def _batch(
        self, seller_id: str, changes: Sequence[Change]
    ) -> tuple[list[DomainError | None], dict[str, str]]:
        conflict: DomainError | None = None
        for _ in range(ATTEMPTS):
            try:
                return self._attempt(seller_id, list(changes))
            except (VersionMismatch, Uniqueness) as exc:  # raised by the write: read again
                conflict = exc
        assert conflict is not None
        if len(changes) == 1:
            return [conflict], {}
        outcomes: list[DomainError | None] = []
        made: dict[str, str] = {}
        for change in changes:
            [outcome], one = self._batch(seller_id, [change])
            outcomes.append(outcome)
            made.update(one)
        return outcomes, made

    def _attempt(
        self, seller_id: str, changes: list[Change]
    ) -> tuple[list[DomainError | None], dict[str, str]]:
        outcomes: list[DomainError | None] = []
        deadline = time.monotonic() + self.max_batch_seconds
        # Not immediate: reads take no lock; the writes are staged and run together in
        # one short write transaction at commit.
        with self.uow_factory() as uow:
            try:
                seller = find_seller(uow, seller_id)
            except DomainError as exc:  # as single calls would: each change refused
                return [exc] * len(changes), {}
            batch = Batch(
                uow=uow,
                store=self.store(uow),
                catalogue=self.catalogue,
                seller=seller,
                source_id=self.source_id,
                managed=self.managed_keys,
                actor=self.actor,
                invitation_lifespan=self.invitation_lifespan,
            )
            batch.load(changes)
            for change in changes:
                if outcomes and time.monotonic() > deadline:
                    break
                try:
                    self._apply(batch, change)
                except DomainError as exc:
                    outcomes.append(exc)
                else:
                    outcomes.append(None)
            batch.stage()
            uow.commit()
        return outcomes, batch.created_for

    def _apply(self, batch: Batch, change: Change) -> None:
        """Decide one change of a batch (see :meth:`Batch.apply`)."""
        batch.apply(change)
