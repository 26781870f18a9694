"""The permission catalogue and the notification categories, as the domain sees them."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Level(StrEnum):
    """How much a user may do in one permission category, from least to most."""

    none = "none"
    view = "view"
    edit = "edit"
    admin = "admin"

    @property
    def rank(self) -> int:
        """The position of this level in the order none < view < edit < admin."""
        return _RANKS[self]


_RANKS = {Level.none: 0, Level.view: 1, Level.edit: 2, Level.admin: 3}


@dataclass(frozen=True)
class PermissionCategory:
    """One area of the seller console, such as inventory or pricing."""

    id: str
    display_name: str
    levels: tuple[Level, ...] = (Level.none, Level.view, Level.edit, Level.admin)
    description: str = ""


@dataclass(frozen=True)
class NotificationCategory:
    """One kind of notification the marketplace sends to a seller."""

    id: str
    display_name: str
    description: str = ""


@dataclass(frozen=True)
class Catalogue:
    """Every permission category and notification category this service knows."""

    permissions: tuple[PermissionCategory, ...]
    notifications: tuple[NotificationCategory, ...]
    administrator_category: str = "user-permissions"
    default_permission_sets: tuple[DefaultPermissionSet, ...] = field(default=())

    def category(self, category_id: str) -> PermissionCategory | None:
        """Return the permission category with this id, if any."""
        return next((c for c in self.permissions if c.id == category_id), None)

    def notification(self, category_id: str) -> NotificationCategory | None:
        """Return the notification category with this id, if any."""
        return next((c for c in self.notifications if c.id == category_id), None)

    @property
    def category_ids(self) -> list[str]:
        return [c.id for c in self.permissions]

    @property
    def notification_ids(self) -> list[str]:
        return [c.id for c in self.notifications]


@dataclass(frozen=True)
class DefaultPermissionSet:
    """A permission set every new seller account starts with."""

    name: str
    description: str
    permissions: tuple[tuple[str, Level], ...]
