"""What the directory sync compares: users as the directory has them, users as the store has them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

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
