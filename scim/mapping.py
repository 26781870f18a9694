"""SCIM resources to domain drafts, and domain objects back to SCIM resources."""

from __future__ import annotations

import datetime as dt
from typing import Any

from scim2_models import Resource

from connector.domain.catalogue import Catalogue
from connector.domain.drafts import PermissionSetDraft, UserDraft
from connector.domain.model import (
    Email,
    PermissionSet,
    Role,
    SellerUser,
    effective_permissions,
    utcnow,
)
from scim.schemas import SELLER_GROUP_SCHEMA, SELLER_USER_SCHEMA

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"

# Attributes the domain keeps in columns, or that are never stored (password) or derived (groups).
_USER_OWN = {
    "schemas",
    "id",
    "meta",
    "userName",
    "externalId",
    "displayName",
    "emails",
    "active",
    "groups",
    "password",
}
_GROUP_OWN = {"schemas", "id", "meta", "displayName", "externalId", "members"}


def etag(version: int) -> str:
    """The weak entity tag of a stored version."""
    return f'W/"{version}"'


def version_of(tag: str | None) -> int | None:
    """The stored version an entity tag names, or None when it names none of ours."""
    if not tag:
        return None
    digits = tag.removeprefix("W/").strip('"')
    return int(digits) if digits.isdigit() else None


def _permissions_of(entries: Any) -> dict[str, str]:
    """The permissions list of a SCIM body, as category -> level (the last one wins)."""
    result: dict[str, str] = {}
    for entry in entries or []:
        if isinstance(entry, dict) and entry.get("category") is not None:
            result[str(entry["category"])] = str(entry.get("level") or "none")
    return result


def _permissions_out(permissions: dict[str, Any]) -> list[dict[str, str]]:
    return [{"category": c, "level": getattr(lv, "value", lv)} for c, lv in permissions.items()]


def user_draft(resource: Resource[Any]) -> UserDraft:
    """Read a validated SCIM User into the draft the use cases take."""
    body = resource.model_dump()
    name = dict(body.get("name") or {})
    given = name.pop("givenName", None)
    family = name.pop("familyName", None)
    extension = body.get(SELLER_USER_SCHEMA) or {}
    profile = {k: v for k, v in body.items() if k not in _USER_OWN and k != SELLER_USER_SCHEMA}
    if name:
        profile["name"] = name
    else:
        profile.pop("name", None)
    role = extension.get("role")
    return UserDraft(
        user_name=body.get("userName") or "",
        emails=[
            Email(
                value=e["value"],
                type=e.get("type"),
                primary=bool(e.get("primary")),
                display=e.get("display"),
            )
            for e in body.get("emails") or []
            if e.get("value")
        ],
        given_name=given,
        family_name=family,
        display_name=body.get("displayName"),
        external_id=body.get("externalId"),
        # Absent means "unchanged" on a replace: a PUT that leaves it out must not
        # reactivate a user who left.
        active=None if body.get("active") is None else bool(body["active"]),
        permissions=_permissions_of(extension.get("permissions")),
        notifications=[str(n) for n in extension.get("notifications") or []],
        profile=profile,
        requested_role=Role(role) if role in ("primary", "secondary") else None,
    )


def user_body(
    user: SellerUser,
    groups: list[PermissionSet],
    catalogue: Catalogue,
    extensions: set[str],
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """The SCIM representation of a user, as a dict that the User model validates."""
    profile = dict(user.profile)
    name = dict(profile.pop("name", None) or {})
    if user.given_name is not None:
        name["givenName"] = user.given_name
    if user.family_name is not None:
        name["familyName"] = user.family_name
    body: dict[str, Any] = {
        "schemas": [USER_SCHEMA],
        "id": user.id,
        "userName": user.user_name,
        "active": user.active,
        **{k: v for k, v in profile.items() if not k.startswith("urn:") or k in extensions},
    }
    for urn in extensions:
        if urn in profile and urn != SELLER_USER_SCHEMA:
            body["schemas"].append(urn)
    if name:
        body["name"] = name
    if user.external_id is not None:
        body["externalId"] = user.external_id
    if user.display_name is not None:
        body["displayName"] = user.display_name
    if user.emails:
        # primary is a boolean the domain always holds: false is a value, not an absence.
        body["emails"] = [{k: v for k, v in vars(e).items() if v is not None} for e in user.emails]
    if groups:
        body["groups"] = [
            {"value": g.id, "display": g.display_name, "$ref": f"Groups/{g.id}", "type": "direct"}
            for g in groups
        ]
    if SELLER_USER_SCHEMA in extensions:
        grants = effective_permissions(catalogue, user, groups)
        extension: dict[str, Any] = {
            "role": user.role.value,
            "administrator": user.is_primary
            or any(
                g.category == catalogue.administrator_category and g.level.value == "admin"
                for g in grants
            ),
        }
        if user.permissions:
            extension["permissions"] = _permissions_out(user.permissions)
        if user.notifications:
            extension["notifications"] = list(user.notifications)
        if user.invitation is not None:
            extension["invitationState"] = user.invitation.current_state(now or utcnow()).value
            if user.invitation.expires_at:
                extension["invitationExpires"] = user.invitation.expires_at
        body["schemas"].append(SELLER_USER_SCHEMA)
        body[SELLER_USER_SCHEMA] = extension
    body["meta"] = {
        "resourceType": "User",
        "created": user.created_at,
        "lastModified": user.updated_at,
        "version": etag(user.version),
    }
    return body


MEMBER_DISPLAYS = "_memberDisplays"
"""Where a group's profile keeps the display names clients gave its members. Not a SCIM
attribute (the leading underscore cannot be one), so filters and responses never see it as such."""


def group_draft(resource: Resource[Any]) -> PermissionSetDraft:
    """Read a validated SCIM Group into the draft the use cases take."""
    body = resource.model_dump()
    extension = body.get(SELLER_GROUP_SCHEMA) or {}
    members = [m for m in body.get("members") or [] if m.get("value")]
    profile = {k: v for k, v in body.items() if k not in _GROUP_OWN and k != SELLER_GROUP_SCHEMA}
    # Clients (Okta, Entra, scim2-tester) send a member's display and read it back.
    displays = {str(m["value"]): m["display"] for m in members if m.get("display")}
    if displays:
        profile[MEMBER_DISPLAYS] = displays
    return PermissionSetDraft(
        display_name=body.get("displayName") or "",
        external_id=body.get("externalId"),
        permissions=_permissions_of(extension.get("permissions")),
        member_ids=[str(m["value"]) for m in members],
        profile=profile,
    )


def member_types(resource: Resource[Any]) -> list[str]:
    """The declared type of each member, to refuse nested groups."""
    return [str(m.get("type") or "User") for m in resource.model_dump().get("members") or []]


def group_body(permission_set: PermissionSet, extensions: set[str]) -> dict[str, Any]:
    """The SCIM representation of a permission set."""
    body: dict[str, Any] = {
        "schemas": [GROUP_SCHEMA],
        "id": permission_set.id,
        "displayName": permission_set.display_name,
        **{
            k: v
            for k, v in permission_set.profile.items()
            if (not k.startswith("urn:") or k in extensions) and k != MEMBER_DISPLAYS
        },
    }
    if permission_set.external_id is not None:
        body["externalId"] = permission_set.external_id
    if permission_set.member_ids:
        displays = permission_set.profile.get(MEMBER_DISPLAYS) or {}
        body["members"] = [
            {"value": m, "$ref": f"Users/{m}", "type": "User"}
            | ({"display": displays[m]} if m in displays else {})
            for m in permission_set.member_ids
        ]
    if SELLER_GROUP_SCHEMA in extensions:
        body["schemas"].append(SELLER_GROUP_SCHEMA)
        body[SELLER_GROUP_SCHEMA] = {"permissions": _permissions_out(permission_set.permissions)}
    body["meta"] = {
        "resourceType": "Group",
        "created": permission_set.created_at,
        "lastModified": permission_set.updated_at,
        "version": etag(permission_set.version),
    }
    return body
