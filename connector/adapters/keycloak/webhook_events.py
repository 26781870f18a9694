"""The seller-connector plugin's webhook payloads read as :class:`ProviderChange` s, in the
same shape as :class:`~connector.adapters.keycloak.change_feed.KeycloakChangeFeed` gives for
the same Keycloak event (only ``details["via"]`` tells them apart).

The payload (deploy/keycloak/plugin, ``WebhookPayload``)::

    {"version": 1, "id": "<Keycloak event id>", "source": "admin-event|user-event|guard",
     "type": "USER/UPDATE|LOGIN|...", "kind": "disabled|...", "time": <epoch ms>,
     "realm": "sellers", "user": {"id", "username", "seller_id", "seller_role",
     "connector_user_id"}, "group": {"id", "path", "name", "seller_id", "permission_set_id"},
     "by": {"realm", "user_id", "client_id"}, ...}
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from connector.adapters.keycloak.naming import GroupLayout
from connector.ports.identity import ProviderChange


def _group_details(group: Mapping[str, Any], layout: GroupLayout) -> dict[str, Any]:
    """``group_path``, ``group_seller_id``, ``permission_set_id`` of the payload's group: the
    plugin sends the group's attributes; an older plugin sends only the path (legacy)."""
    path = str(group.get("path") or "")
    if "seller_id" in group or "permission_set_id" in group:
        rep = {
            "attributes": {
                layout.seller_attribute: [group.get("seller_id")] if group.get("seller_id") else [],
                layout.set_attribute: (
                    [group.get("permission_set_id")] if group.get("permission_set_id") else []
                ),
            }
        }
        seller_id, set_id = layout.ids(rep)
        return {"group_path": path, "group_seller_id": seller_id, "permission_set_id": set_id}
    return layout.details(None, path)


ROLE_KINDS = frozenset({"roles-added", "roles-removed"})
"""Portal client roles mapped to or from a seller user, or a group at or under the root."""


def change_from_webhook(event: Mapping[str, Any], layout: GroupLayout) -> ProviderChange:
    """The :class:`ProviderChange` of a webhook event, with the details the polled feed gives.

    A role change about a group has no user: its ``provider_user_id`` is ``""``, its
    ``group_id`` the group's, and ``details["target"]`` is ``"group"`` (see the shapes in
    :mod:`connector.adapters.keycloak.change_feed`).

    :raises ValueError: when a required member is missing or of the wrong type.
    """
    kind = str(event["kind"])
    group = event.get("group") if isinstance(event.get("group"), dict) else None
    user = event.get("user")
    about_group = kind in ROLE_KINDS and user is None and group is not None
    if about_group:
        if not isinstance(group.get("id"), str):
            raise ValueError("the event's group has no id")
        user = {"id": ""}
    if not isinstance(user, dict) or not isinstance(user.get("id"), str):
        raise ValueError("the event has no user")
    time_ms = event.get("time")
    if not isinstance(time_ms, int) or isinstance(time_ms, bool):
        raise ValueError("the event has no time")
    by = event.get("by") if isinstance(event.get("by"), dict) else {}
    source_type = str(event.get("type") or "")
    resource, _, operation = source_type.partition("/")
    details: dict[str, Any] = {
        "connector_user_id": user.get("connector_user_id"),
        "seller_id": user.get("seller_id"),
        "by_user_id": by.get("user_id"),
        "via": "webhook",
    }
    if event.get("source") == "admin-event":
        details.update({"operation": operation, "resource_type": resource})
    else:
        details.update({"type": source_type, "client_id": event.get("client_id")})
    if group is not None:
        details.update(_group_details(group, layout))
    if kind in ROLE_KINDS:
        roles = event.get("roles") or []
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise ValueError("the event's roles are not a list of names")
        details.update(
            role_details("group" if about_group else "user", roles, event.get("client_id"))
        )
        if about_group:
            details["seller_id"] = details.get("group_seller_id")
    return ProviderChange(
        provider_user_id=str(user["id"]),
        kind=kind,
        at=dt.datetime.fromtimestamp(time_ms / 1000, dt.UTC),
        group_id=str(group["id"]) if group and group.get("id") else None,
        event_id=str(event["id"]),
        details=details,
    )


def role_details(target: str, roles: list[str], client: Any) -> dict[str, Any]:
    """What a role change adds to ``details``: ``target`` (``user`` or ``group``), ``roles``
    (sorted names such as ``pricing:edit``) and ``client`` (the portal client's id)."""
    return {"target": target, "roles": sorted(set(roles)), "client": client}
