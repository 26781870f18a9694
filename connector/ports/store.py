"""The store's ports: the unit of work the use cases run in, its repositories, and the
records they keep besides the aggregates (audit events, outbox entries, tokens)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from connector.domain.model import PermissionSet, SellerAccount, SellerUser


@dataclass(frozen=True)
class EmailOwner:
    """Who holds a reserved address."""

    email_key: str
    user_id: str
    seller_id: str
    deleted: bool
    released: bool = False
    """The holder never signed in and gave the address up: another user may take it."""


@dataclass
class AuditEvent:
    """One change, who made it and through which token or command."""

    seller_id: str | None
    actor: str
    action: str
    target: str
    changes: dict[str, Any] = field(default_factory=dict)
    at: dt.datetime | None = None
    id: int | None = None


@dataclass
class OutboxEntry:
    """A change that still has to reach the identity provider."""

    seller_id: str
    topic: str
    aggregate_id: str
    payload: dict[str, Any] = field(default_factory=dict)
    id: int | None = None
    state: str = "pending"
    attempts: int = 0
    next_attempt_at: dt.datetime | None = None
    created_at: dt.datetime | None = None
    last_error: str | None = None


@dataclass
class PrimaryChange:
    """An operator's request to make another address a seller's primary user."""

    id: str
    seller_id: str
    new_email: str
    token_hash: str
    requested_at: dt.datetime
    expires_at: dt.datetime
    completed_at: dt.datetime | None = None


@dataclass
class SearchPage:
    """One page of a search: the total, the (kind, id) of each match in order, and the
    positions of the next and previous pages when paging by cursor."""

    total: int
    found: list[tuple[str, str]]
    next: Any = None
    previous: Any = None


@dataclass(frozen=True)
class SearchQuery:
    """A search of one seller's resources, in SCIM terms (the filter and sort are
    scim2-models expressions bound to each kind's model)."""

    kinds: Sequence[tuple[str, Any]]
    """(``User`` or ``Group``, its SCIM model) for each kind searched."""
    filter: str | None = None
    """The filter's text (a scim2-models bound filter, itself a str, is used as parsed)."""
    sort_by: str | None = None
    descending: bool = False
    start: int = 0
    """Rows skipped (index paging), when ``cursor`` is False."""
    count: int | None = None
    cursor: bool = False
    position: Any = None
    """Where a cursor page starts (None: the first page)."""


@dataclass
class ApiToken:
    """A seller's bearer token, known only by its hash."""

    id: str
    seller_id: str
    token_hash: str
    label: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None = None
    last_used_at: dt.datetime | None = None


class SellerRepository(Protocol):
    def add(self, seller: SellerAccount) -> None: ...
    def get(self, seller_id: str) -> SellerAccount | None: ...
    def get_by_name(self, name: str) -> SellerAccount | None: ...
    def list(self) -> list[SellerAccount]: ...
    def save(self, seller: SellerAccount) -> None: ...


class UserRepository(Protocol):
    def add(self, user: SellerUser) -> None: ...
    def get(
        self, seller_id: str, user_id: str, *, include_deleted: bool = False
    ) -> SellerUser | None: ...
    def get_many(self, seller_id: str, user_ids: Iterable[str]) -> list[SellerUser]: ...
    def ids_of(
        self, seller_id: str, user_ids: Iterable[str], *, visible_only: bool = True
    ) -> set[str]:
        """Which of ``user_ids`` are users of this seller (and not deleted, unless
        ``visible_only`` is false): their rows are not read."""
        ...

    def get_with_sets(
        self, seller_id: str, user_id: str
    ) -> tuple[SellerUser, list[PermissionSet]] | None:
        """A visible user and its permission sets (without members or profile), together."""
        ...

    def hold(self, seller_id: str, user_id: str) -> None:
        """Make other writers of this user wait until this (immediate) unit of work ends."""
        ...

    def by_user_name(self, seller_id: str, user_name_key: str) -> SellerUser | None: ...
    def by_external_id(self, seller_id: str, external_id: str) -> SellerUser | None: ...
    def list(self, seller_id: str, *, include_deleted: bool = False) -> list[SellerUser]: ...
    def save(self, user: SellerUser, *, expected_version: int | None = None) -> None: ...
    def email_owners(self, email_keys: Iterable[str]) -> list[EmailOwner]: ...
    def record_login(self, seller_id: str, user_id: str, at: dt.datetime) -> None: ...
    def set_provider_id(self, user_id: str, provider_id: str) -> None: ...
    def find_by_provider_id(self, provider_user_id: str) -> tuple[str, str] | None: ...
    def count(self, seller_id: str) -> int: ...
    def pending_invitations(self, seller_id: str, now: dt.datetime) -> int: ...
    def expired_invitations(self, now: dt.datetime, limit: int) -> list[SellerUser]: ...
    def release_addresses(self, user_id: str, at: dt.datetime) -> None: ...


class PermissionSetRepository(Protocol):
    def add(self, permission_set: PermissionSet) -> None: ...
    def get(self, seller_id: str, permission_set_id: str) -> PermissionSet | None: ...
    def hold(self, seller_id: str, permission_set_id: str) -> None:
        """Make other writers of this set wait until this (immediate) unit of work ends."""
        ...

    def by_display_name(self, seller_id: str, display_name: str) -> PermissionSet | None: ...
    def list(self, seller_id: str) -> list[PermissionSet]: ...
    def of_user(self, user_id: str) -> list[PermissionSet]: ...
    def of_users(self, user_ids: Iterable[str]) -> dict[str, list[PermissionSet]]: ...
    def save(
        self, permission_set: PermissionSet, *, expected_version: int | None = None
    ) -> None: ...
    def delete(self, permission_set: PermissionSet) -> None: ...


class TokenRepository(Protocol):
    def add(self, token: ApiToken) -> None: ...
    def get(self, token_id: str) -> ApiToken | None: ...
    def list(self, seller_id: str) -> list[ApiToken]: ...
    def save(self, token: ApiToken) -> None: ...


class AuditLog(Protocol):
    def append(self, event: AuditEvent) -> None: ...
    def list(
        self, seller_id: str, limit: int | None = None, *, after: int | None = None
    ) -> list[AuditEvent]: ...


class Outbox(Protocol):
    def add(self, entry: OutboxEntry) -> None: ...


class Markers(Protocol):
    def get(self, source: str) -> str | None: ...
    def set(self, source: str, marker: str | None) -> None: ...
    def delete_before(self, prefix: str, before: dt.datetime) -> None: ...


class PrimaryChanges(Protocol):
    def add(self, change: PrimaryChange) -> None: ...
    def by_token_hash(self, token_hash: str) -> PrimaryChange | None: ...
    def complete(self, change_id: str, at: dt.datetime) -> None: ...


class AuthFailures(Protocol):
    """Failed authentications, counted across every worker and machine."""

    def record(self, client: str, token_id: str, at: dt.datetime) -> None: ...
    def count(self, client: str, since: dt.datetime, token_id: str | None = None) -> int: ...
    def oldest(
        self, client: str, since: dt.datetime, token_id: str | None = None
    ) -> dt.datetime | None: ...
    def prune(self, before: dt.datetime) -> None: ...


class Search(Protocol):
    def page(self, seller_id: str, query: SearchQuery) -> SearchPage:
        """The matching resources of one seller (never deleted users), in order."""
        ...


class UnitOfWork(Protocol):
    """One unit of work over the store, used as a context manager. Reads see one snapshot;
    writes are kept only when ``commit`` is called, and then all together or not at all
    (:class:`~connector.domain.errors.VersionMismatch` when a row changed since it was read,
    :class:`~connector.domain.errors.Uniqueness` when a unique value was taken meanwhile)."""

    sellers: SellerRepository
    users: UserRepository
    permission_sets: PermissionSetRepository
    tokens: TokenRepository
    audit: AuditLog
    outbox: Outbox
    markers: Markers
    primary_changes: PrimaryChanges
    search: Search
    auth_failures: AuthFailures
    operators: OperatorRepository
    recipients: RecipientIndex
    change_feed: ChangeFeedStore

    def __enter__(self) -> UnitOfWork: ...
    def __exit__(self, *exc: object) -> None: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...
    def savepoint(self) -> AbstractContextManager[None]:
        """What fails inside is undone alone; the rest of the unit of work stays."""
        ...


UnitOfWorkFactory = Callable[..., UnitOfWork]
"""Makes a fresh unit of work; ``immediate=True`` for batch writers that read their writes."""


# -- The marketplace's side: operators, notification recipients, the feed of changes ----------


@dataclass
class OperatorCredential:
    """A marketplace operator's credential for the operator API, known only by its hash.

    ``scope`` is ``read`` (look only) or ``admin`` (may also change sellers and tokens).
    """

    id: str
    name: str
    scope: str
    secret_hash: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None = None


class OperatorRepository(Protocol):
    def add(self, operator: OperatorCredential) -> None: ...
    def get(self, operator_id: str) -> OperatorCredential | None: ...
    def by_name(self, name: str) -> OperatorCredential | None: ...
    def list(self) -> list[OperatorCredential]: ...
    def save(self, operator: OperatorCredential) -> None: ...
    def audit(self, after: int | None, limit: int) -> list[AuditEvent]:
        """The operator audit: events that concern no seller, oldest first."""
        ...


@dataclass(frozen=True)
class Recipient:
    """Who receives a notification category of a seller: one row of the recipient index."""

    user_id: str
    email: str
    role: str


class RecipientIndex(Protocol):
    """The notification recipients of every seller, kept with the users (each save of a user
    rewrites its rows in the same transaction), so a lookup is one indexed read."""

    def of(self, seller_id: str, category: str) -> list[Recipient]:
        """The primary first, then the active subscribers by userName."""
        ...


@dataclass(frozen=True)
class FeedEntry:
    """An audit event as the feed of changes carries it, at its feed position."""

    position: int
    event: AuditEvent


class ChangeFeedStore(Protocol):
    """User and permission changes in the order they were committed.

    Audit event ids are handed out when a change is written, not when it commits: on a store
    with concurrent writers an event with a lower id can become visible after one with a
    higher id. ``sequence`` gives committed events their feed positions, one sequencer at a
    time, so that a reader who passed a position never misses an event behind it.
    """

    def sequence(self, wanted: Callable[[AuditEvent], bool]) -> int:
        """Give feed positions to the committed events ``wanted`` accepts that have none.

        :returns: how many were added.
        """
        ...

    def page(self, after: int, limit: int, seller_id: str | None = None) -> list[FeedEntry]:
        """The entries after position ``after``, in order (of one seller, or of all)."""
        ...
