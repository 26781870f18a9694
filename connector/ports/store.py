"""The unit of work and repository ports the use cases run against."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
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
    def by_user_name(self, seller_id: str, user_name_key: str) -> SellerUser | None: ...
    def by_external_id(self, seller_id: str, external_id: str) -> SellerUser | None: ...
    def list(self, seller_id: str, *, include_deleted: bool = False) -> list[SellerUser]: ...
    def save(self, user: SellerUser, *, expected_version: int | None = None) -> None: ...
    def email_owners(self, email_keys: Iterable[str]) -> list[EmailOwner]: ...
    def record_login(self, seller_id: str, user_id: str, at: dt.datetime) -> bool: ...


class PermissionSetRepository(Protocol):
    def add(self, permission_set: PermissionSet) -> None: ...
    def get(self, seller_id: str, permission_set_id: str) -> PermissionSet | None: ...
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
    def by_hash(self, token_hash: str) -> ApiToken | None: ...
    def get(self, token_id: str) -> ApiToken | None: ...
    def list(self, seller_id: str) -> list[ApiToken]: ...
    def save(self, token: ApiToken) -> None: ...


class AuditLog(Protocol):
    def append(self, event: AuditEvent) -> None: ...
    def list(self, seller_id: str, limit: int | None = None) -> list[AuditEvent]: ...


class Outbox(Protocol):
    def add(self, entry: OutboxEntry) -> None: ...


class Markers(Protocol):
    def get(self, source: str) -> str | None: ...
    def set(self, source: str, marker: str | None) -> None: ...


class PrimaryChanges(Protocol):
    def add(
        self,
        change_id: str,
        seller_id: str,
        new_email: str,
        token_hash: str,
        requested_at: dt.datetime,
        expires_at: dt.datetime,
    ) -> None: ...
    def by_token_hash(self, token_hash: str) -> dict[str, Any] | None: ...
    def complete(self, change_id: str, at: dt.datetime) -> None: ...


class UnitOfWork(Protocol):
    """One transaction over the store. Nothing is kept unless ``commit`` is called."""

    sellers: SellerRepository
    users: UserRepository
    permission_sets: PermissionSetRepository
    tokens: TokenRepository
    audit: AuditLog
    outbox: Outbox
    markers: Markers
    primary_changes: PrimaryChanges

    def commit(self) -> None: ...
    def rollback(self) -> None: ...
