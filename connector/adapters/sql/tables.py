"""The tables of the store.

Columns that filters, uniqueness and the seller rules need are real columns with
indexes; SCIM attributes the domain does not read live in the ``profile`` JSON.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    literal_column,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# JSONB on PostgreSQL so that filters can use its operators; JSON text on SQLite.
JsonValue = JSON().with_variant(JSONB(), "postgresql")


class UtcDateTime(TypeDecorator[dt.datetime]):
    """A timestamp that always comes back timezone-aware in UTC (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)

    def result_processor(self, dialect: Any, coltype: Any) -> Any:
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)

        # SQLite keeps "YYYY-MM-DD HH:MM:SS[.ffffff]" text: the C parser reads it several
        # times faster than the generic regular expression (every row has three of them).
        def process(value: Any) -> dt.datetime | None:
            if value is None:
                return None
            parsed = dt.datetime.fromisoformat(value)
            if parsed.tzinfo is None:
                return parsed.replace(tzinfo=dt.UTC)
            return parsed.astimezone(dt.UTC)

        return process


naming = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=naming)


class SellerRow(Base):
    __tablename__ = "sellers"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    name_key: Mapped[str] = mapped_column(String(200), unique=True)
    plan: Mapped[str] = mapped_column(String(20))
    partner_domains: Mapped[list[str]] = mapped_column(JsonValue, default=list)
    primary_user_id: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class TokenRow(Base):
    __tablename__ = "api_tokens"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    seller_id: Mapped[str] = mapped_column(ForeignKey("sellers.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)


class UserRow(Base):
    __tablename__ = "users"
    __table_args__ = (
        UniqueConstraint("seller_id", "user_name_key"),
        Index("ix_users_seller_listing", "seller_id", "deleted", "id"),
        Index("ix_users_seller_external_id", "seller_id", "external_id"),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    seller_id: Mapped[str] = mapped_column(ForeignKey("sellers.id"))
    user_name: Mapped[str] = mapped_column(String(300))
    user_name_key: Mapped[str] = mapped_column(String(300))
    external_id: Mapped[str | None] = mapped_column(String(300))
    role: Mapped[str] = mapped_column(String(20))
    active: Mapped[bool] = mapped_column(Boolean)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    given_name: Mapped[str | None] = mapped_column(String(300))
    family_name: Mapped[str | None] = mapped_column(String(300))
    display_name: Mapped[str | None] = mapped_column(String(300))
    emails: Mapped[list[dict[str, Any]]] = mapped_column(JsonValue, default=list)
    permissions: Mapped[dict[str, str]] = mapped_column(JsonValue, default=dict)
    notifications: Mapped[list[str]] = mapped_column(JsonValue, default=list)
    profile: Mapped[dict[str, Any]] = mapped_column(JsonValue, default=dict)
    invitation_state: Mapped[str | None] = mapped_column(String(20))
    invitation_sent_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    invitation_expires_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    idp_id: Mapped[str | None] = mapped_column(String(64), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    last_login_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    version: Mapped[int] = mapped_column(Integer, default=1)


# Pending invitations are counted on every SCIM create (the per-seller cap) and swept by the
# worker: partial indexes hold only those rows, so neither reads a user row. The queries
# repeat PENDING literally (constants, not parameters), which lets both databases use them.
PENDING = (UserRow.invitation_state == literal_column("'pending'")) & (UserRow.deleted == false())
Index(
    "ix_users_pending",
    UserRow.seller_id,
    UserRow.invitation_expires_at,
    # Repeated so that SQLite counts from the index alone (it re-checks the predicate's terms).
    UserRow.invitation_state,
    UserRow.deleted,
    sqlite_where=PENDING,
    postgresql_where=PENDING,
)
Index(
    "ix_users_pending_expiry",
    UserRow.invitation_expires_at,
    sqlite_where=PENDING,
    postgresql_where=PENDING,
)


class EmailRow(Base):
    """Every address ever used by any user of any seller: the brand-new rule is a unique key."""

    __tablename__ = "reserved_emails"
    email_key: Mapped[str] = mapped_column(String(320), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    seller_id: Mapped[str] = mapped_column(ForeignKey("sellers.id"))
    # True while the address is among the user's current emails (filters look only at these).
    current: Mapped[bool] = mapped_column(Boolean, default=True)
    # Set when a user who never signed in gave the address up (deleted, or its invitation
    # expired): another user may take it; its own seller may still restore it while free.
    released_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)


class PermissionSetRow(Base):
    __tablename__ = "permission_sets"
    __table_args__ = (UniqueConstraint("seller_id", "display_name_key"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    seller_id: Mapped[str] = mapped_column(ForeignKey("sellers.id"), index=True)
    display_name: Mapped[str] = mapped_column(String(300))
    display_name_key: Mapped[str] = mapped_column(String(300))
    external_id: Mapped[str | None] = mapped_column(String(300))
    permissions: Mapped[dict[str, str]] = mapped_column(JsonValue, default=dict)
    profile: Mapped[dict[str, Any]] = mapped_column(JsonValue, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    version: Mapped[int] = mapped_column(Integer, default=1)


class MembershipRow(Base):
    __tablename__ = "memberships"
    permission_set_id: Mapped[str] = mapped_column(
        ForeignKey("permission_sets.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True, index=True)
    position: Mapped[int] = mapped_column(Integer, default=0)


class AuditRow(Base):
    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_seller_at", "seller_id", "id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    seller_id: Mapped[str | None] = mapped_column(String(32))
    at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    actor: Mapped[str] = mapped_column(String(300))
    action: Mapped[str] = mapped_column(String(100))
    target: Mapped[str] = mapped_column(String(300))
    changes: Mapped[dict[str, Any]] = mapped_column(JsonValue, default=dict)


class OutboxRow(Base):
    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_pending", "state", "next_attempt_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    seller_id: Mapped[str] = mapped_column(String(32), index=True)
    topic: Mapped[str] = mapped_column(String(50))
    aggregate_id: Mapped[str] = mapped_column(String(64), index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JsonValue, default=dict)
    state: Mapped[str] = mapped_column(String(20), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)


class PrimaryChangeRow(Base):
    """An operator's request to make another address the primary, waiting for its confirmation."""

    __tablename__ = "primary_changes"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    seller_id: Mapped[str] = mapped_column(ForeignKey("sellers.id"), index=True)
    new_email: Mapped[str] = mapped_column(String(320))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    requested_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    completed_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)


class MarkerRow(Base):
    """High-water marks of incremental readers (directory sources, identity provider events)."""

    __tablename__ = "sync_markers"
    source: Mapped[str] = mapped_column(String(200), primary_key=True)
    marker: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class DirectoryLinkRow(Base):
    """Which user a directory entry (by its stable id, per source) was provisioned as.

    Kept apart from the SCIM ``externalId``, which Okta and Entra set: a directory sync
    only ever manages the users linked here to its own source.
    """

    __tablename__ = "directory_links"
    __table_args__ = (
        UniqueConstraint("source_id", "user_id"),
        Index("ix_directory_links_seller", "seller_id", "source_id"),
    )
    # The primary key makes (source_id, stable_id) unique: one user per directory entry.
    source_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    stable_id: Mapped[str] = mapped_column(String(300), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    seller_id: Mapped[str] = mapped_column(ForeignKey("sellers.id"))
    linked_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class AuthFailureRow(Base):
    """A failed authentication, counted by every worker and machine for the brake."""

    __tablename__ = "auth_failures"
    __table_args__ = (
        Index("ix_auth_failures_client_at", "client", "at"),
        Index("ix_auth_failures_client_token_at", "client", "token_id", "at"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    client: Mapped[str] = mapped_column(String(64))
    token_id: Mapped[str] = mapped_column(String(32))
    at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class OperatorRow(Base):
    """A marketplace operator's credential for the operator API (its secret only hashed)."""

    __tablename__ = "operators"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    name_key: Mapped[str] = mapped_column(String(100), unique=True)
    scope: Mapped[str] = mapped_column(String(10))
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)


class NotificationRecipientRow(Base):
    """Who receives which notification category: rewritten with each save of a user, so the
    marketplace's lookup at send time is one read of this key's range.

    ``category`` is ``*`` for the primary user, who receives every category.
    """

    __tablename__ = "notification_recipients"
    seller_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    category: Mapped[str] = mapped_column(String(100), primary_key=True)
    # The primary first ("0"), then secondary users by userName: the key's own order.
    sort_key: Mapped[str] = mapped_column(String(320), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(32), primary_key=True, index=True)
    email: Mapped[str] = mapped_column(String(320))
    role: Mapped[str] = mapped_column(String(20))


class ChangeFeedRow(Base):
    """The feed of user and permission changes: committed audit events in feed order."""

    __tablename__ = "change_feed"
    __table_args__ = (Index("ix_change_feed_seller", "seller_id", "position"),)
    position: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    audit_id: Mapped[int] = mapped_column(Integer, unique=True)
    seller_id: Mapped[str | None] = mapped_column(String(32))


class DirectoryGroupMemberRow(Base):
    """The members of a directory group as the last successful run of a source read them.

    A delta compares a changed group's members with these to find who joined or left it,
    and reads only those people again (not every holder of the group's permission sets).
    Each stored group has a row with an empty ``member_key``, so that a group stored with
    no members is told from a group never stored. Written with the source's marker, in
    one transaction: the lists always describe the directory as of the stored marker.
    """

    __tablename__ = "directory_group_members"
    source_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    group_key: Mapped[str] = mapped_column(String(1024), primary_key=True)
    """The group's DN, normalized (``normalize_dn``)."""
    member_key: Mapped[str] = mapped_column(String(1024), primary_key=True)
    """A member's DN, normalized; empty for the group's own row."""
