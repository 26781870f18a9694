"""The directory sync's port: what a directory reader yields, what the store links, what can fail.

The LDAP adapter (``connector.adapters.ldap``) reads; the SQL adapter keeps the links
(``connector.adapters.sql.directory_links``); the use cases (``connector.services.directory``)
plan and apply.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from connector.domain.model import Role


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

    ``users`` is a generator: iterate it once. ``problems`` fills while it runs
    (entries skipped for a missing attribute...), and ``marker`` is final once it is
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


# -- The ports ------------------------------------------------------------------------


class DirectorySource(Protocol):
    """What a sync reads from (``connector.adapters.ldap.reader.DirectoryReader``)."""

    def read_all(self) -> DirectoryScan:
        """Every user in scope, streamed, with the marker taken before reading."""
        ...

    def read_changes(self, since_marker: str) -> DirectoryScan:
        """Users changed since the marker, and members of changed mapped groups."""
        ...

    def read_users_by_id(self, stable_ids: Iterable[str]) -> DirectoryScan:
        """The users with these stable ids that are still in scope."""
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
