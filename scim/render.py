"""Domain objects to SCIM JSON, once per response, without building pydantic models.

The representation is the one scim2-server publishes for our models (attribute names,
absolute ``$ref`` and ``meta.location`` URLs, ``W/"<version>"`` entity tags, UTC times
ending in ``Z``), written directly: a page of 100 users costs a few milliseconds, not the
hundred of a model per resource. Requests that project attributes (``attributes`` /
``excludedAttributes``) still go through scim2-models, from this same representation.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from connector.domain.catalogue import Catalogue
from connector.domain.model import (
    PermissionSet,
    SellerUser,
    effective_permissions,
    is_administrator,
    utcnow,
)
from connector.ports.schemas import (
    ENTERPRISE_SCHEMA,
    GROUP_SCHEMA,
    SELLER_GROUP_SCHEMA,
    SELLER_USER_SCHEMA,
    USER_SCHEMA,
)

MEMBER_DISPLAYS = "_memberDisplays"
"""Where a group's profile keeps the display names clients gave its members. Not a SCIM
attribute (the leading underscore cannot be one), so filters and responses never see it."""


def etag(version: int) -> str:
    """The weak entity tag of a stored version."""
    return f'W/"{version}"'


def version_of(tag: str | None) -> int | None:
    """The stored version an entity tag names, or None when it names none of ours."""
    if not tag:
        return None
    digits = tag.removeprefix("W/").strip('"')
    return int(digits) if digits.isdigit() and len(digits) < 18 else None


def timestamp(value: dt.datetime) -> str:
    """A time as scim2-models writes it: UTC, ISO 8601, ``Z``."""
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return timestamp(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def permissions_out(permissions: dict[str, Any]) -> list[dict[str, str]]:
    """A permissions map as the seller extension lists it."""
    return [{"category": c, "level": getattr(lv, "value", lv)} for c, lv in permissions.items()]


class Renderer:
    """Renders users and permission sets for one deployment's base URL and catalogue."""

    def __init__(
        self,
        base_url: str,
        catalogue: Catalogue,
        user_extensions: set[str],
        group_extensions: set[str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.catalogue = catalogue
        self.user_extensions = user_extensions
        self.group_extensions = (
            {SELLER_GROUP_SCHEMA} if group_extensions is None else group_extensions
        )
        self.seller_extension = SELLER_USER_SCHEMA in user_extensions

    def location(self, kind: str, resource_id: str) -> str:
        """The URL of a resource (``kind``: ``Users`` or ``Groups``)."""
        return f"{self.base_url}/{kind}/{resource_id}"

    def user(
        self, user: SellerUser, groups: list[PermissionSet], now: dt.datetime | None = None
    ) -> dict[str, Any]:
        """The SCIM User of a seller user, with its groups and effective administrator flag."""
        profile = user.profile
        schemas = [USER_SCHEMA]
        schemas.extend(
            urn
            for urn in profile
            if urn.startswith("urn:") and urn in self.user_extensions and urn != SELLER_USER_SCHEMA
        )
        if self.seller_extension:
            schemas.append(SELLER_USER_SCHEMA)
        body: dict[str, Any] = {
            "schemas": schemas,
            "id": user.id,
            "meta": {
                "resourceType": "User",
                "created": timestamp(user.created_at),
                "lastModified": timestamp(user.updated_at),
                "location": self.location("Users", user.id),
                "version": etag(user.version),
            },
        }
        if user.external_id is not None:
            body["externalId"] = user.external_id
        body["userName"] = user.user_name
        name = dict(profile.get("name") or {})
        if user.given_name is not None:
            name["givenName"] = user.given_name
        if user.family_name is not None:
            name["familyName"] = user.family_name
        if name:
            body["name"] = name
        if user.display_name is not None:
            body["displayName"] = user.display_name
        for key, value in profile.items():
            if key == "name" or key.startswith("urn:"):
                continue
            body[key] = _jsonable(value)
        body["active"] = user.active
        if user.emails:
            # primary is a boolean the domain always holds: false is a value, not an absence.
            body["emails"] = [
                {k: v for k, v in vars(e).items() if v is not None} for e in user.emails
            ]
        if groups:
            body["groups"] = [
                {
                    "value": g.id,
                    "$ref": self.location("Groups", g.id),
                    "display": g.display_name,
                    "type": "direct",
                }
                for g in groups
            ]
        for urn in schemas[1:]:
            if urn != SELLER_USER_SCHEMA:
                body[urn] = self._extension(urn, profile[urn])
        if not self.seller_extension:
            return body
        grants = effective_permissions(self.catalogue, user, groups)
        extension: dict[str, Any] = {"role": user.role.value}
        if user.permissions:
            extension["permissions"] = permissions_out(user.permissions)
        if user.notifications:
            extension["notifications"] = list(user.notifications)
        extension["administrator"] = is_administrator(self.catalogue, user, grants)
        if user.invitation is not None:
            state = user.invitation.current_state(now or utcnow())
            extension["invitationState"] = state.value
            if user.invitation.expires_at:
                extension["invitationExpires"] = timestamp(user.invitation.expires_at)
        body[SELLER_USER_SCHEMA] = extension
        return body

    def _extension(self, urn: str, value: Any) -> Any:
        value = _jsonable(value)
        if urn == ENTERPRISE_SCHEMA and isinstance(value, dict):
            manager = value.get("manager")
            if isinstance(manager, dict) and manager.get("value"):
                value["manager"] = {
                    **manager,
                    "$ref": self.location("Users", str(manager["value"])),
                }
        return value

    def group(self, permission_set: PermissionSet) -> dict[str, Any]:
        """The SCIM Group of a permission set."""
        schemas = [GROUP_SCHEMA]
        extended = bool(permission_set.permissions) and SELLER_GROUP_SCHEMA in self.group_extensions
        if extended:
            schemas.append(SELLER_GROUP_SCHEMA)
        body: dict[str, Any] = {
            "schemas": schemas,
            "id": permission_set.id,
            "meta": {
                "resourceType": "Group",
                "created": timestamp(permission_set.created_at),
                "lastModified": timestamp(permission_set.updated_at),
                "location": self.location("Groups", permission_set.id),
                "version": etag(permission_set.version),
            },
        }
        if permission_set.external_id is not None:
            body["externalId"] = permission_set.external_id
        body["displayName"] = permission_set.display_name
        for key, value in permission_set.profile.items():
            if key != MEMBER_DISPLAYS and not key.startswith("urn:"):
                body[key] = _jsonable(value)
        if permission_set.member_ids:
            displays = permission_set.profile.get(MEMBER_DISPLAYS) or {}
            body["members"] = [
                {"value": m, "$ref": self.location("Users", m), "type": "User"}
                | ({"display": displays[m]} if m in displays else {})
                for m in permission_set.member_ids
            ]
        if extended:
            body[SELLER_GROUP_SCHEMA] = {"permissions": permissions_out(permission_set.permissions)}
        return body
