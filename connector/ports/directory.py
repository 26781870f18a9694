"""The directory sync's ports: what a directory reader yields, what the store links, how a
run reads and writes the store in bulk, what can fail.

The LDAP adapter (``connector.adapters.ldap``) reads; the SQL adapter keeps the links
(``connector.adapters.sql.directory_links``) and does the bulk reads and writes
(``connector.adapters.sql.bulk``, the :class:`DirectoryStore` port); the use cases
(``connector.services.directory``) plan, check the seller rules and apply.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from connector.domain.addresses import AddressClaim, AddressFlag, HeldAddress
from connector.domain.model import PermissionSet, Role, SellerUser
from connector.ports.store import AuditEvent, OutboxEntry


@dataclass(frozen=True)
class DirectoryUser:
    """One person as the directory has them, already mapped to our terms.

    ``stable_id`` is the identity (entryUUID, objectGUID): the DN and the email may
    change, the stable id does not.
    """

    stable_id: str
    dn: str
    email: str
    given_name: str
    family_name: str
    disabled: bool = False
    permission_sets: frozenset[str] = field(default_factory=frozenset)
    """Names of the seller's permission sets the user's mapped groups grant."""


@dataclass(frozen=True)
class KnownUser:
    """One user of the seller account as the store has it.

    ``external_id`` is the directory's stable id for users this source manages;
    ``None`` for users created by other means, which the sync never touches.
    """

    id: str
    external_id: str | None
    emails: tuple[str, ...]
    given_name: str | None
    family_name: str | None
    active: bool
    permission_sets: frozenset[str]
    role: Role = Role.secondary

    @property
    def email(self) -> str | None:
        """The first (primary) address."""
        return self.emails[0] if self.emails else None


@dataclass(frozen=True)
class Problem:
    """Something the sync skipped, for a person to look at. The rest of the run goes on."""

    subject: str
    """What it is about: a DN, a stable id or a user id."""
    message: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.message}"


@dataclass
class DirectoryScan:
    """One read of the directory, streamed.

    ``users`` is a generator: iterate it once. ``problems``, ``departed`` and
    ``present_ids`` fill while it runs (entries skipped for a missing attribute,
    entries the directory says are gone...), and ``marker`` is final once it is
    exhausted. A read that cannot be complete raises ``DirectoryIncomplete`` from the
    iteration, so a plan is never made from a partial answer.
    """

    users: Iterator[DirectoryUser]
    problems: list[Problem] = field(default_factory=list)
    marker: str | None = None
    """The high-water mark to store after a successful run (next delta starts there)."""
    affected_permission_sets: frozenset[str] = field(default_factory=frozenset)
    """Delta runs: permission sets whose groups changed. Every user holding one must be
    read again (someone who left the group no longer shows among its members)."""
    departed: list[str] = field(default_factory=list)
    """Delta runs: stable ids of entries the directory says left the scope since the
    marker (deleted, moved out of the base DN, no longer matching the user filter).
    Ids the store never linked are simply ignored."""
    absent_left: bool = False
    """True when the scan names every entry in scope (a full read, or a content
    synchronization's present phase): a linked user it does not name has left."""
    present_ids: list[str] = field(default_factory=list)
    """With ``absent_left``: entries in scope that did not change, named without their
    attributes (a present phase). They are not ``users``, and have not left."""
    notes: list[str] = field(default_factory=list)
    """What the run should tell the operator about how it read (e.g. the change tracking
    it fell back to)."""
    group_members: Iterable[tuple[str, frozenset[str]]] | None = None
    """(group key, member keys) to store with the new marker, read before the users:
    every group of the index after a full read, the changed groups after a delta. None
    when the reader keeps no lists (DirSync)."""


# -- The ports ------------------------------------------------------------------------

PreviousMembers = Callable[[Sequence[str]], Mapping[str, frozenset[str]]]
"""group keys (normalized DNs) -> the member lists stored with the marker (absent: none)."""


class DirectorySource(Protocol):
    """What a sync reads from (``connector.adapters.ldap.reader.DirectoryReader``)."""

    def read_all(self) -> DirectoryScan:
        """Every user in scope, streamed, with the marker taken before reading."""
        ...

    def read_changes(
        self, since_marker: str, previous_members: PreviousMembers | None = None
    ) -> DirectoryScan:
        """Users changed since the marker, and the people who joined or left a changed
        group. ``previous_members`` gives the groups' member lists stored with the
        marker: without them (or for a group without one), every current member of a
        changed group is read, and its permission sets are affected."""
        ...

    def read_users_by_id(self, stable_ids: Iterable[str]) -> DirectoryScan:
        """The users with these stable ids that are still in scope (``stable_ids`` is
        consumed as a stream, a bounded number at a time)."""
        ...


class SyncSettings(Protocol):
    """What a run needs from a source's configuration
    (``connector.adapters.ldap.config.SyncSettings`` has it)."""

    @property
    def id(self) -> str: ...
    @property
    def seller_id(self) -> str | None: ...
    @property
    def seller_name(self) -> str | None: ...
    @property
    def deactivation_threshold(self) -> float: ...
    @property
    def deactivation_floor(self) -> int: ...
    @property
    def managed_permission_sets(self) -> frozenset[str]: ...
    @property
    def require_mapped_group(self) -> bool: ...
    @property
    def reconcile_runs(self) -> int | None: ...
    @property
    def reconcile_hours(self) -> float | None: ...


class DirectoryLinks(Protocol):
    """The link table: (source id, stable id) -> the user that entry was provisioned as."""

    def for_source(self, source_id: str, seller_id: str) -> dict[str, str]:
        """user id -> stable id, for the users of ``seller_id`` linked to ``source_id``."""
        ...

    def user_of(self, source_id: str, stable_id: str) -> str | None:
        """The user linked to this entry, or None."""
        ...

    def stable_id_of(self, source_id: str, user_id: str) -> str | None:
        """The entry this user is linked to in ``source_id``, or None."""
        ...

    def link(self, source_id: str, stable_id: str, user_id: str, seller_id: str) -> bool:
        """Link the entry to the user (replacing any other link of either in this
        source). Returns False when exactly this link already existed."""
        ...

    def add(self, source_id: str, stable_id: str, user_id: str, seller_id: str) -> None:
        """Link a brand-new user to an entry that has no link yet (a plain insert)."""
        ...


# -- The store, in bulk -------------------------------------------------------------


@dataclass(frozen=True)
class StoredUser:
    """A user as the store has it, with what a directory run needs beside it."""

    user: SellerUser
    stable_id: str | None
    """Its link in the directory source asked about (None: not linked to it)."""
    permission_sets: tuple[str, ...] = ()
    """The display names of the permission sets it belongs to."""


@dataclass(frozen=True)
class Membership:
    """A user in a permission set, at a position in its member list."""

    permission_set_id: str
    user_id: str
    position: int = 0


class DirectoryStore(Protocol):
    """The store as a directory run uses it: set operations, inside the unit of work it
    was made for (``Connector.directory_store(uow)``).

    Reads run in the unit of work's snapshot. Writes are staged and run together in the
    unit of work's one short write transaction at ``commit``; a user saved meanwhile by
    someone else is a ``VersionMismatch`` there, an address or a link taken meanwhile a
    ``Uniqueness``, and then nothing of the batch is written. The seller rules are not
    checked here: the use cases (``connector.services.directory``) check them first.
    """

    # -- reads for planning: a bounded chunk of entries at a time ------------------------

    def linked_users(
        self, source_id: str, seller_id: str, stable_ids: Sequence[str]
    ) -> list[StoredUser]:
        """The visible users of the seller linked to these entries of the source."""
        ...

    def address_holders(
        self, source_id: str, seller_id: str, email_keys: Sequence[str]
    ) -> list[StoredUser]:
        """The visible users of the seller holding a reserved row of one of these
        addresses (released or not, current or not: the caller checks)."""
        ...

    def count_active_linked(self, source_id: str, seller_id: str) -> int:
        """How many active, visible secondary users of the seller are linked to the source."""
        ...

    def active_linked(
        self, source_id: str, seller_id: str, *, after: str, limit: int
    ) -> list[tuple[str, str]]:
        """(stable id, user id) of active, visible secondary users linked to the source,
        by stable id, the first ``limit`` after ``after`` (keyset paging)."""
        ...

    def linked_holders(
        self,
        source_id: str,
        seller_id: str,
        permission_set_ids: Sequence[str],
        *,
        after: str,
        limit: int,
    ) -> list[str]:
        """Stable ids of visible users linked to the source that belong to one of these
        permission sets, in order, the first ``limit`` after ``after``."""
        ...

    # -- reads for a batch of changes -------------------------------------------------

    def links_of_users(self, source_id: str, user_ids: Sequence[str]) -> dict[str, str]:
        """user id -> stable id in the source, for those linked."""
        ...

    def links_of_entries(self, source_id: str, stable_ids: Sequence[str]) -> dict[str, str]:
        """stable id -> user id, for the entries of the source that are linked."""
        ...

    def users_by_name(self, seller_id: str, user_name_keys: Sequence[str]) -> list[SellerUser]:
        """The seller's users (deleted ones too) whose userName has one of these keys."""
        ...

    def addresses_of(self, user_ids: Sequence[str]) -> dict[str, list[HeldAddress]]:
        """The reserved-address rows each user holds."""
        ...

    def permission_sets_named(
        self, seller_id: str, display_name_keys: Sequence[str]
    ) -> list[PermissionSet]:
        """The seller's permission sets with these display name keys, without members."""
        ...

    def memberships(
        self, user_ids: Sequence[str], permission_set_ids: Sequence[str]
    ) -> set[tuple[str, str]]:
        """(permission set id, user id) of these users in these sets."""
        ...

    def next_positions(self, permission_set_ids: Sequence[str]) -> dict[str, int]:
        """The position after the last member of each set (0 for an empty one)."""
        ...

    # -- writes, staged for the unit of work's commit -----------------------------------

    def add_users(self, users: Sequence[SellerUser]) -> None: ...
    def save_users(self, users: Sequence[SellerUser]) -> None:
        """Versioned: each user's row must still be at ``user.version``; bumps it."""
        ...

    def claim_addresses(self, claims: Sequence[AddressClaim]) -> None:
        """Insert each address, or take it over from a holder that released it; one
        held by anyone else is a ``Uniqueness`` at commit."""
        ...

    def flag_addresses(self, flags: Sequence[AddressFlag]) -> None: ...
    def add_links(
        self, source_id: str, seller_id: str, links: Sequence[tuple[str, str]], at: dt.datetime
    ) -> None:
        """Insert (stable id, user id) links: entries and users never linked before."""
        ...

    def relink(
        self, source_id: str, seller_id: str, stable_id: str, user_id: str, at: dt.datetime
    ) -> None:
        """Link the entry to the user, replacing any other link of either in the source."""
        ...

    def add_memberships(self, memberships: Sequence[Membership]) -> None: ...
    def remove_memberships(self, memberships: Sequence[Membership]) -> None: ...
    def touch_permission_sets(self, permission_set_ids: Sequence[str], at: dt.datetime) -> None:
        """Bump each set's version (its members changed: ETags must move)."""
        ...

    def append_audit(self, events: Sequence[AuditEvent]) -> None: ...
    def add_outbox(self, entries: Sequence[OutboxEntry]) -> None:
        """Append entries in this order (the worker keeps it per aggregate)."""
        ...

    # -- the groups' members as of the source's marker -----------------------------------

    def group_members(self, source_id: str, group_keys: Sequence[str]) -> dict[str, frozenset[str]]:
        """The stored member lists of these groups (normalized DNs); a group never
        stored is absent."""
        ...

    def replace_group_members(
        self,
        source_id: str,
        lists: Iterable[tuple[str, frozenset[str]]],
        *,
        every_group: bool,
    ) -> None:
        """Store these groups' member lists in place of the stored ones (with
        ``every_group``, in place of every stored list of the source)."""
        ...


# -- What can stop a run -------------------------------------------------------------
# Every error stops the run before anything is changed in the store (reading and
# planning come first), so a failed run never deactivates anyone.


class DirectorySyncError(Exception):
    """A directory sync could not run. The message says what to check."""


class DirectoryError(DirectorySyncError):
    """The directory could not be read completely."""


class DirectoryUnreachable(DirectoryError):
    """The server cannot be reached, or stopped answering."""


class DirectoryAuthFailed(DirectoryError):
    """The server refused the sync account's bind (wrong DN or password, locked account)."""


class DirectoryBaseNotFound(DirectoryError):
    """The base DN (or a mapped group) does not exist on the server."""


class DirectoryTlsError(DirectoryError):
    """The TLS handshake failed: CA file, certificate, host name or TLS mode."""


class DirectoryIncomplete(DirectoryError):
    """The server returned only part of the answer (size or time limit, referral).

    Never read as "the missing users are gone": the run stops and changes nothing.
    """


class ThresholdExceeded(DirectorySyncError):
    """The plan would deactivate a larger share of users than the threshold allows."""


class MarkerError(DirectorySyncError):
    """The stored high-water marker cannot be read: run a full sync."""
