"""SCIM resources (validated by scim2-models) to the drafts the use cases take.

The other way, domain objects to SCIM JSON, is ``scim.render``.
"""

from __future__ import annotations

from typing import Any

from scim2_models import Resource

from connector.domain.drafts import PermissionSetDraft, UserDraft
from connector.domain.model import Email, Role
from connector.ports.schemas import SELLER_GROUP_SCHEMA, SELLER_USER_SCHEMA
from scim.render import MEMBER_DISPLAYS

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


def _permissions_of(entries: Any) -> dict[str, str]:
    """The permissions list of a SCIM body, as category -> level (the last one wins)."""
    result: dict[str, str] = {}
    for entry in entries or []:
        if isinstance(entry, dict) and entry.get("category") is not None:
            result[str(entry["category"])] = str(entry.get("level") or "none")
    return result


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
        member_types=[str(m.get("type") or "User") for m in members],
    )
