"""Where each SCIM attribute of Users and Groups lives in the store, for filters and sorting."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sqlalchemy import and_, case, func, literal, select

from connector.adapters.sql.filters import Column, Dialect, Elements, JsonScalar
from connector.adapters.sql.tables import EmailRow, MembershipRow, PermissionSetRow, UserRow
from connector.domain.model import email_key, text_key, utcnow
from connector.ports.schemas import (
    ENTERPRISE_SCHEMA,
    GROUP_SCHEMA,
    SELLER_GROUP_SCHEMA,
    SELLER_USER_SCHEMA,
    USER_SCHEMA,
)

Source = Column | JsonScalar | Elements | None


def _email_holders(value: str) -> Any:
    """The user that reserved an address: every email of a user is reserved by that user
    (reserved_emails, keyed by email_key), so a user with an email equal to ``value`` is
    the one holding its key (one primary-key read). None for a value the key would not
    represent exactly (blank, or with surrounding spaces)."""
    key = email_key(value)
    if not key or key != text_key(value):
        return None
    return UserRow.id.in_(select(EmailRow.user_id).where(EmailRow.email_key == key))


def _memberships(correlated: Any, key: str, value_column: str) -> Elements:
    """Memberships seen from one side: a user's groups or a group's members."""

    def rows() -> tuple[Any, Any]:
        membership = MembershipRow.__table__.alias()
        groups = PermissionSetRow.__table__.alias()
        joined = membership.join(groups, groups.c.id == membership.c.permission_set_id)

        def sub(name: str | None) -> Column | None:
            if name in (None, "value"):
                return Column(membership.c[value_column], "text", nullable=False)
            if name == "display" and value_column == "permission_set_id":
                return Column(groups.c.display_name, "text", nullable=False)
            if name == "type":
                return Column(
                    literal("direct" if value_column == "permission_set_id" else "User"), "text"
                )
            return None

        return joined, sub

    def correlate(joined: Any) -> Any:
        membership = joined.left
        return membership.c[key] == correlated

    return Elements(rows, correlate)


def user_source(dialect: Dialect) -> Any:
    """The function the filter translator asks where a User attribute lives."""

    def source(schema: str, parts: tuple[str, ...], multivalued: bool) -> Source:
        head = parts[0]
        if schema == USER_SCHEMA:
            if multivalued:
                if head == "emails":
                    return replace(dialect.array(UserRow.emails, ()), lookup=_email_holders)
                if head == "groups":
                    return _memberships(UserRow.id, "user_id", "permission_set_id")
                if head == "schemas":
                    return None
                return dialect.array(UserRow.profile, (head,))
            columns = {
                ("id",): Column(UserRow.id, "text", nullable=False),
                ("userName",): Column(UserRow.user_name_key, "text", nullable=False, folded=True),
                ("externalId",): Column(UserRow.external_id, "text"),
                ("displayName",): Column(UserRow.display_name, "text"),
                ("name", "givenName"): Column(UserRow.given_name, "text"),
                ("name", "familyName"): Column(UserRow.family_name, "text"),
                ("active",): Column(UserRow.active, "bool", nullable=False),
                ("meta", "created"): Column(UserRow.created_at, "datetime", nullable=False),
                ("meta", "lastModified"): Column(UserRow.updated_at, "datetime", nullable=False),
                ("meta", "resourceType"): Column(literal("User"), "text", nullable=False),
                ("name",): Column(
                    func.coalesce(
                        UserRow.given_name,
                        UserRow.family_name,
                        dialect.scalar(UserRow.profile, ("name",), "text"),
                    ),
                    "text",
                ),
            }
            if parts in columns:
                return columns[parts]
            if head in ("meta", "password"):
                return None
            return JsonScalar(UserRow.profile, parts)
        if schema == SELLER_USER_SCHEMA:
            if head == "permissions":
                return dialect.mapping(UserRow.permissions, "category", "level")
            if head == "notifications":
                return dialect.array(UserRow.notifications, ())
            if head == "role":
                return Column(UserRow.role, "text", nullable=False)
            if head == "invitationState":
                return Column(
                    case(
                        (
                            and_(
                                UserRow.invitation_state == "pending",
                                UserRow.invitation_expires_at <= utcnow(),
                            ),
                            "expired",
                        ),
                        else_=UserRow.invitation_state,
                    ),
                    "text",
                )
            if head == "invitationExpires":
                return Column(UserRow.invitation_expires_at, "datetime")
            return None
        if schema == ENTERPRISE_SCHEMA:
            if multivalued:
                return dialect.array(UserRow.profile, (schema, head))
            return JsonScalar(UserRow.profile, (schema, *parts))
        return None

    return source


def group_source(dialect: Dialect) -> Any:
    """The function the filter translator asks where a Group attribute lives."""

    def source(schema: str, parts: tuple[str, ...], multivalued: bool) -> Source:
        head = parts[0]
        if schema == GROUP_SCHEMA:
            if multivalued:
                if head == "members":
                    return _memberships(PermissionSetRow.id, "permission_set_id", "user_id")
                if head == "schemas":
                    return None
                return dialect.array(PermissionSetRow.profile, (head,))
            columns = {
                ("id",): Column(PermissionSetRow.id, "text", nullable=False),
                ("displayName",): Column(
                    PermissionSetRow.display_name_key, "text", nullable=False, folded=True
                ),
                ("externalId",): Column(PermissionSetRow.external_id, "text"),
                ("meta", "created"): Column(
                    PermissionSetRow.created_at, "datetime", nullable=False
                ),
                ("meta", "lastModified"): Column(
                    PermissionSetRow.updated_at, "datetime", nullable=False
                ),
                ("meta", "resourceType"): Column(literal("Group"), "text", nullable=False),
            }
            if parts in columns:
                return columns[parts]
            if head == "meta":
                return None
            return JsonScalar(PermissionSetRow.profile, parts)
        if schema == SELLER_GROUP_SCHEMA and head == "permissions":
            return dialect.mapping(PermissionSetRow.permissions, "category", "level")
        return None

    return source
