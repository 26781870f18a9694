"""How the Keycloak adapter names sellers and permission sets so that the console reads well,
and how it tells them apart again: by attribute, never by name.

A seller's group and each permission set's group are named by display names
(``/sellers/Acme Inc/Order handlers``, per ``group_path`` of mappings/idp.yaml); the
connector's ids are group attributes (``seller_id`` on both, ``permission_set_id`` on a set's
group). Realms provisioned before this carry id-named groups (``/sellers/<seller id>/<set
id>``): :data:`LEGACY` paths are read as such when a group has no seller attributes, and the
next sync adopts and renames them.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from connector.mappings import KeycloakNames

MAX_NAME = 100
"""Longest display part of a group name (Keycloak stores names in 255 characters; a
disambiguating `` (<id>)`` suffix must still fit)."""

_SELLER_FIELDS = {"root", "seller_id", "seller_name"}
_SET_FIELDS = {"root", "seller_id", "permission_set", "permission_set_id", "permission_set_name"}


def safe_group_name(text: str | None, fallback: str) -> str:
    """``text`` as a Keycloak group name that reads as it does: ``/`` (the path separator,
    which Keycloak accepts in names but then cannot find by path) becomes ``-``; control and
    invisible format characters become spaces; runs of white space become one; at most
    :data:`MAX_NAME` characters. ``fallback`` (an id) when nothing readable is left (empty,
    blank, or only dots, which read as path steps)."""
    cleaned = "".join(
        " " if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch for ch in (text or "")
    ).replace("/", "-")
    cleaned = " ".join(cleaned.split())
    if len(cleaned) > MAX_NAME:
        cleaned = cleaned[: MAX_NAME - 1].rstrip() + "\u2026"
    return cleaned if cleaned.strip(".") else fallback


def with_id(name: str, object_id: str) -> str:
    """The name made unique by the connector's id: ``Order handlers (ps-1)``. Used when a
    sibling already holds the plain name (two sellers of the same name; two set names that
    read the same once made safe, such as ``A/B`` and ``A-B``)."""
    return f"{name} ({object_id})"


def _fields(template: str) -> set[str]:
    return {field for _, field, _, _ in string.Formatter().parse(template) if field}


@dataclass(frozen=True)
class GroupLayout:
    """The three levels of ``group_path``: the root group, a seller's group, a set's group."""

    root: str
    seller_template: str
    set_template: str
    seller_attribute: str
    set_attribute: str

    @classmethod
    def from_names(cls, names: KeycloakNames) -> GroupLayout:
        """Read ``group_path`` (``/{root}/{seller_name}/{permission_set_name}``).

        :raises ValueError: when it is not three levels or names an unknown placeholder.
        """
        parts = names.group_path.split("/")
        if len(parts) != 4 or parts[0] != "" or parts[1] != "{root}":
            raise ValueError(
                f"group_path {names.group_path!r} of mappings/idp.yaml must be "
                "/{root}/<seller group>/<permission set group>"
            )
        seller, permission_set = parts[2], parts[3]
        unknown = (_fields(seller) - _SELLER_FIELDS) | (_fields(permission_set) - _SET_FIELDS)
        if unknown or not seller or not permission_set:
            raise ValueError(
                f"group_path {names.group_path!r}: unknown placeholders {sorted(unknown)}"
            )
        return cls(
            root=names.group_root,
            seller_template=seller,
            set_template=permission_set,
            seller_attribute=names.attributes["seller_id"],
            set_attribute=names.attributes.get("permission_set_id", "permission_set_id"),
        )

    @property
    def root_path(self) -> str:
        """``/sellers``."""
        return "/" + self.root

    def seller_group_name(self, seller_id: str, seller_name: str) -> str:
        """The name of a seller's group (its display name by default)."""
        return safe_group_name(
            self.seller_template.format(
                root=self.root,
                seller_id=seller_id,
                seller_name=safe_group_name(seller_name, seller_id),
            ),
            seller_id,
        )

    def set_group_name(self, seller_id: str, set_id: str, display_name: str) -> str:
        """The name of a permission set's group (its display name by default)."""
        return safe_group_name(
            self.set_template.format(
                root=self.root,
                seller_id=seller_id,
                permission_set=set_id,
                permission_set_id=set_id,
                permission_set_name=safe_group_name(display_name, set_id),
            ),
            set_id,
        )

    def ids(self, group: Mapping[str, Any] | None) -> tuple[str | None, str | None]:
        """(seller id, permission set id) from a group's attributes; None where absent."""
        attributes = (group or {}).get("attributes") or {}

        def first(name: str) -> str | None:
            values = attributes.get(name) or []
            return str(values[0]) if values and values[0] else None

        return first(self.seller_attribute), first(self.set_attribute)

    def under_root(self, path: str | None) -> bool:
        """Whether ``path`` is the root group or below it."""
        return bool(path) and (path == self.root_path or str(path).startswith(self.root_path + "/"))

    def details(self, group: Mapping[str, Any] | None, path: str | None) -> dict[str, Any]:
        """What a console change says about its group: ``group_path``, ``group_seller_id``
        (the seller whose group it is, None for the root or a foreign group) and
        ``permission_set_id`` (None unless it is a permission set's group).

        Read from the group's attributes; a group without them is read by the legacy id-named
        layout (``/sellers/<seller id>/<set id>``), as realms provisioned before display names
        have it until their next sync.
        """
        path = path or (group or {}).get("path")
        seller_id, set_id = self.ids(group)
        if seller_id is None and set_id is None and path:
            match = LEGACY.fullmatch(str(path))
            if match and match.group("root") == self.root:
                seller_id = match.group("seller_id")
                set_id = match.group("permission_set")
        return {"group_path": path, "group_seller_id": seller_id, "permission_set_id": set_id}


LEGACY = re.compile(r"/(?P<root>[^/]+)/(?P<seller_id>[^/]+)/(?P<permission_set>[^/]+)")
"""The id-named layout of permission-set groups before display names."""
