"""What callers ask of the aggregates and use cases: plain data, free of any protocol."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from connector.domain.values import Email, Role

ENTERPRISE_EXTENSION = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
"""Where a user's profile keeps the enterprise attributes (its ``manager`` among them)."""


@dataclass(frozen=True)
class Actor:
    """Who makes a change: a token (``token:<id>``), an operator command or a directory source."""

    name: str


@dataclass
class UserDraft:
    """The whole desired state of a user, as a SCIM body or a directory entry gives it."""

    user_name: str
    emails: list[Email] = field(default_factory=list)
    given_name: str | None = None
    family_name: str | None = None
    display_name: str | None = None
    external_id: str | None = None
    active: bool | None = True
    """None leaves a user's current state (a replace that does not mention it)."""
    permissions: dict[str, str] = field(default_factory=dict)
    notifications: list[str] = field(default_factory=list)
    profile: dict[str, Any] = field(default_factory=dict)
    requested_role: Role | None = None
    """The role the client sent, if any: it is read-only, so a different one is refused."""

    @property
    def manager_id(self) -> str | None:
        """The id of the user named as this one's manager (enterprise extension), if any."""
        extension = self.profile.get(ENTERPRISE_EXTENSION)
        manager = extension.get("manager") if isinstance(extension, dict) else None
        value = manager.get("value") if isinstance(manager, dict) else None
        return str(value) if value else None


@dataclass
class PermissionSetDraft:
    """The whole desired state of a permission set (a SCIM Group)."""

    display_name: str
    external_id: str | None = None
    permissions: dict[str, str] = field(default_factory=dict)
    member_ids: list[str] = field(default_factory=list)
    profile: dict[str, Any] = field(default_factory=dict)
    member_types: list[str] = field(default_factory=list)
    """The declared type of each member, when the client declared one (``User``, ``Group``)."""
