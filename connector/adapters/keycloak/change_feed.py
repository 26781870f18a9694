"""The ChangeFeed port on Keycloak's stored events: what administrators did in the console.

Two streams are polled, each in time order (``direction=asc``) from its own position:

* admin events (``GET /admin-events``): a user updated (``enabled``/``disabled``, read from
  the representation the realm stores with details), a group membership created or deleted
  (``group-added``/``group-removed``), ``seller-portal`` client roles mapped to or from a
  seller user or a group at or under the root (``roles-added``/``roles-removed``). The
  connector's own calls are skipped (their ``authDetails.userId`` is the seller-connector
  service account, read from the ``sub`` of its own token).
* user events (``GET /events``): ``LOGIN`` (``login``), and ``EXECUTE_ACTIONS`` (the
  invitation link was used), ``UPDATE_PASSWORD``, ``UPDATE_CREDENTIAL`` and ``VERIFY_EMAIL``
  (``invitation-accepted``; a consumer ignores it for a user with no pending invitation).

Only users carrying the ``seller_connector_user_id`` attribute are reported, and groups at or
under the root group (which seller and permission set a group is comes from its attributes).

**Role changes** (the same shape as the plugin's webhook gives,
:func:`~connector.adapters.keycloak.webhook.change_from_webhook`; only ``via`` differs,
``"poll"`` here and ``"webhook"`` there). On a seller user::

    ProviderChange(provider_user_id="<Keycloak user id>", kind="roles-added",
                   at=<event time>, group_id=None, event_id="<Keycloak admin event id>",
                   details={"target": "user", "roles": ["pricing:edit"],
                            "client": "seller-portal", "connector_user_id": "<user id>",
                            "seller_id": "<seller id>", "operation": "CREATE",
                            "resource_type": "CLIENT_ROLE_MAPPING",
                            "by_user_id": "<the administrator's Keycloak user id>",
                            "via": "poll"})

On a group (no user: ``provider_user_id`` is empty; reported only with
``include_group_roles``, on by default; the webhook always posts them)::

    ProviderChange(provider_user_id="", kind="roles-removed", at=..., event_id=...,
                   group_id="<Keycloak group id>",
                   details={"target": "group", "roles": ["orders:edit"],
                            "client": "seller-portal",
                            "group_path": "/sellers/Acme Trading/Order handlers",
                            "group_seller_id": "<seller id>",
                            "permission_set_id": "<set id>",
                            "connector_user_id": None, "seller_id": "<seller id>",
                            "operation": "DELETE", "resource_type": "CLIENT_ROLE_MAPPING",
                            "by_user_id": "...", "via": "poll"})

``permission_set_id`` is None for the seller's own group (its roles reach every set group
below it) and both ids are None for the root group (its roles reach every seller's sets).
``roles`` are the role names mapped or unmapped by that one request (composites not expanded:
``pricing:edit`` stands for itself and the ``pricing:view`` it contains).

The marker holds, per stream, the time of the last event read (epoch ms) and the ids of the
events read at that very millisecond: the next poll asks from that time (inclusive) and drops
what it has seen, so events sharing a millisecond are neither lost nor repeated.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass
from typing import Any

from connector.adapters.keycloak.api import AdminApi, seg
from connector.adapters.keycloak.naming import GroupLayout
from connector.adapters.keycloak.settings import KeycloakSettings
from connector.adapters.keycloak.webhook import role_details
from connector.mappings import KeycloakNames, load_keycloak_names
from connector.ports.identity import IdentityProviderRejected, ProviderChange

log = logging.getLogger(__name__)

_ACCEPTED = ("EXECUTE_ACTIONS", "UPDATE_PASSWORD", "UPDATE_CREDENTIAL", "VERIFY_EMAIL")
_USER_EVENT_TYPES = ("LOGIN", *_ACCEPTED)


@dataclass
class _Position:
    time: int | None = None
    ids: tuple[str, ...] = ()

    def to_json(self) -> list[Any]:
        return [self.time, list(self.ids)]

    @classmethod
    def from_json(cls, value: Any) -> _Position:
        if not value:
            return cls()
        time, ids = value
        return cls(int(time) if time is not None else None, tuple(str(i) for i in ids))


def _parse_marker(marker: str | None) -> tuple[_Position, _Position]:
    if not marker:
        return _Position(), _Position()
    try:
        data = json.loads(marker)
        return _Position.from_json(data.get("admin")), _Position.from_json(data.get("user"))
    except (ValueError, TypeError, AttributeError) as exc:
        raise IdentityProviderRejected(f"Not a Keycloak change feed marker: {marker!r}") from exc


def _at(millis: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(millis / 1000, dt.UTC)


class KeycloakChangeFeed:
    """Console changes read back from Keycloak's admin and user events."""

    def __init__(
        self,
        settings: KeycloakSettings,
        names: KeycloakNames | None = None,
        api: AdminApi | None = None,
        page_size: int = 100,
        max_events: int = 1000,
        include_group_roles: bool = True,
    ) -> None:
        self.settings = settings
        self.names = names or load_keycloak_names()
        self.api = api or AdminApi(settings)
        self.page_size = page_size
        self.max_events = max_events
        """Read at most this many events per stream and call; the marker resumes the rest."""
        self.include_group_roles = include_group_roles
        """Report role changes on groups (no user: ``provider_user_id`` is ``""``); the
        console use case adopts them into the permission set. Role changes on users are
        always reported."""
        self._realm = self.api.realm_path
        self._own_user_id: str | None = None
        self._portal_uuid: str | None = None
        self._attr_connector = self.names.attributes["connector_id"]
        self._attr_seller = self.names.attributes["seller_id"]
        self._managed_prefix = "/" + self.names.group_root + "/"
        self.layout = GroupLayout.from_names(self.names)

    def _service_account_user_id(self) -> str | None:
        """The connector's own user, whose admin events are not console changes: the subject
        of the connector's own token (the account may not view its own client, see
        deploy/keycloak/README.md)."""
        if self._own_user_id is None:
            self._own_user_id = self.api.own_user_id()
            if self._own_user_id is None:
                log.warning("the connector's token has no subject: own changes are reported")
        return self._own_user_id

    def _read(
        self, path: str, position: _Position, params: dict[str, Any]
    ) -> tuple[list[dict[str, Any]], _Position]:
        """Events after ``position`` in time order, and the position after them."""
        seen = set(position.ids)
        events: list[dict[str, Any]] = []
        first = 0
        while len(events) < self.max_events:
            query = {**params, "direction": "asc", "first": first, "max": self.page_size}
            if position.time is not None:
                query["dateFrom"] = str(position.time)
            page = self.api.get(f"{self._realm}/{path}", **query) or []
            for event in page:
                time = int(event.get("time", 0))
                if position.time is not None and (
                    time < position.time or (time == position.time and event.get("id") in seen)
                ):
                    continue
                events.append(event)
            if len(page) < self.page_size:
                break
            first += self.page_size
        if not events:
            return [], position
        events.sort(key=lambda e: int(e.get("time", 0)))  # stable: keeps Keycloak's tie order
        last = int(events[-1]["time"])
        ids = [str(e.get("id")) for e in events if int(e["time"]) == last]
        if position.time == last:
            ids = [*position.ids, *ids]
        return events, _Position(last, tuple(ids))

    def _user(self, user_id: str, cache: dict[str, dict[str, Any] | None]) -> dict[str, Any] | None:
        if user_id not in cache:
            cache[user_id] = self.api.get_or_none(f"{self._realm}/users/{seg(user_id)}")
        return cache[user_id]

    def _managed(
        self, user_id: str | None, cache: dict[str, dict[str, Any] | None]
    ) -> dict[str, str] | None:
        """The connector's attributes of a user it manages, or None for anyone else."""
        if not user_id:
            return None
        rep = self._user(user_id, cache)
        attributes = (rep or {}).get("attributes") or {}
        connector_ids = attributes.get(self._attr_connector) or []
        if not connector_ids:
            return None
        return {
            "connector_user_id": connector_ids[0],
            "seller_id": (attributes.get(self._attr_seller) or [""])[0],
        }

    def marker_at(self, when: dt.datetime) -> str:
        """A marker from which :meth:`changes_since` reports only events at ``when`` or later
        (a first poll that should not replay the realm's whole event history)."""
        millis = int(when.timestamp() * 1000)
        return json.dumps({"admin": [millis, []], "user": [millis, []]}, separators=(",", ":"))

    def _group(
        self, group_id: str, cache: dict[str, dict[str, Any] | None]
    ) -> dict[str, Any] | None:
        key = f"group:{group_id}"
        if key not in cache:
            cache[key] = self.api.get_or_none(f"{self._realm}/groups/{seg(group_id)}")
        return cache[key]

    def changes_since(self, marker: str | None) -> tuple[list[ProviderChange], str | None]:
        """Return the changes after ``marker``, and the marker to pass next time."""
        admin_position, user_position = _parse_marker(marker)
        admin_events, admin_position = self._read(
            "admin-events",
            admin_position,
            {"resourceTypes": ["USER", "GROUP_MEMBERSHIP", "CLIENT_ROLE_MAPPING"]},
        )
        user_events, user_position = self._read(
            "events", user_position, {"type": list(_USER_EVENT_TYPES)}
        )
        cache: dict[str, dict[str, Any] | None] = {}
        changes = [c for e in admin_events if (c := self._from_admin_event(e, cache))]
        accepted: set[str] = set()
        for event in user_events:
            change = self._from_user_event(event, cache)
            if change is None:
                continue
            if change.kind == "invitation-accepted":
                # One acceptance emits several events (link used, password, email verified).
                if change.provider_user_id in accepted:
                    continue
                accepted.add(change.provider_user_id)
            changes.append(change)
        changes.sort(key=lambda c: (c.at, c.event_id or ""))
        next_marker = json.dumps(
            {"admin": admin_position.to_json(), "user": user_position.to_json()},
            separators=(",", ":"),
        )
        return changes, next_marker

    def _from_admin_event(
        self, event: dict[str, Any], cache: dict[str, dict[str, Any] | None]
    ) -> ProviderChange | None:
        if event.get("error"):
            return None
        auth = event.get("authDetails") or {}
        own = self._service_account_user_id()
        if own is not None and auth.get("userId") == own:
            return None
        parts = str(event.get("resourcePath", "")).split("/")
        details: dict[str, Any] = {
            "operation": event.get("operationType"),
            "resource_type": event.get("resourceType"),
            "by_user_id": auth.get("userId"),
            "via": "poll",
        }
        try:
            representation = json.loads(event.get("representation") or "null")
        except ValueError:
            representation = None
        if event.get("resourceType") == "CLIENT_ROLE_MAPPING":
            return self._from_role_mapping(event, parts, representation, details, cache)
        if len(parts) < 2 or parts[0] != "users":
            return None
        user_id = parts[1]
        kind: str | None = None
        group_id: str | None = None
        if event.get("resourceType") == "USER" and event.get("operationType") == "UPDATE":
            if len(parts) != 2 or not isinstance(representation, dict):
                return None
            if "enabled" not in representation:
                return None
            kind = "enabled" if representation["enabled"] else "disabled"
        elif event.get("resourceType") == "GROUP_MEMBERSHIP" and len(parts) == 4:
            group_id = parts[3]
            operation = event.get("operationType")
            if operation == "CREATE":
                kind = "group-added"
            elif operation == "DELETE":
                kind = "group-removed"
            else:
                return None
            # The group as the event recorded it (with its attributes), else as it is now.
            group = representation if isinstance(representation, dict) else None
            if group is None or "attributes" not in group:
                group = self._group(group_id, cache) or group
            path = (group or {}).get("path")
            if path is not None:
                if not str(path).startswith(self._managed_prefix):
                    return None
                # Which permission set of which seller the group is, from its attributes
                # (None: not a set's group).
                details.update(self.layout.details(group, str(path)))
        else:
            return None
        managed = self._managed(user_id, cache)
        if managed is None:
            return None
        details.update(managed)
        return ProviderChange(
            provider_user_id=user_id,
            kind=kind,
            at=_at(int(event["time"])),
            group_id=group_id,
            event_id=str(event.get("id")),
            details=details,
        )

    def _from_role_mapping(
        self,
        event: dict[str, Any],
        parts: list[str],
        representation: Any,
        details: dict[str, Any],
        cache: dict[str, dict[str, Any] | None],
    ) -> ProviderChange | None:
        """``roles-added``/``roles-removed``: portal client roles mapped to or from a seller
        user (``users/ID/role-mappings/clients/CLIENT``) or a group at or under the root
        (``groups/ID/role-mappings/clients/CLIENT``)."""
        operation = event.get("operationType")
        if len(parts) != 5 or parts[2:4] != ["role-mappings", "clients"]:
            return None
        if operation not in ("CREATE", "DELETE") or parts[4] != self._portal_client_uuid():
            return None
        kind = "roles-added" if operation == "CREATE" else "roles-removed"
        roles = [
            str(r["name"])
            for r in (representation if isinstance(representation, list) else [])
            if isinstance(r, dict) and r.get("name")
        ]
        if parts[0] == "users":
            managed = self._managed(parts[1], cache)
            if managed is None:
                return None
            details.update(managed)
            details.update(role_details("user", roles, self.names.portal_client_id, self.names))
            provider_user_id, group_id = parts[1], None
        elif parts[0] == "groups":
            if not self.include_group_roles:
                return None
            group = self._group(parts[1], cache)
            path = (group or {}).get("path")
            # A group deleted since cannot be told apart; one outside the root is not ours.
            if not self.layout.under_root(path):
                return None
            group_details = self.layout.details(group, str(path))
            details.update(group_details)
            details.update(
                {"connector_user_id": None, "seller_id": group_details["group_seller_id"]}
            )
            details.update(role_details("group", roles, self.names.portal_client_id, self.names))
            provider_user_id, group_id = "", parts[1]
        else:
            return None
        return ProviderChange(
            provider_user_id=provider_user_id,
            kind=kind,
            at=_at(int(event["time"])),
            group_id=group_id,
            event_id=str(event.get("id")),
            details=details,
        )

    def _portal_client_uuid(self) -> str | None:
        """The internal id of the portal client, whose role mappings are permissions."""
        if self._portal_uuid is None:
            clients = self.api.get(f"{self._realm}/clients", clientId=self.names.portal_client_id)
            for client in clients or []:
                if client.get("clientId") == self.names.portal_client_id:
                    self._portal_uuid = str(client["id"])
        return self._portal_uuid

    def _from_user_event(
        self, event: dict[str, Any], cache: dict[str, dict[str, Any] | None]
    ) -> ProviderChange | None:
        event_type = event.get("type")
        if event.get("error") or event_type not in _USER_EVENT_TYPES:
            return None
        user_id = event.get("userId")
        managed = self._managed(user_id, cache)
        if managed is None or not user_id:
            return None
        details: dict[str, Any] = {
            "type": event_type,
            "client_id": event.get("clientId"),
            "via": "poll",
        }
        event_details = event.get("details") or {}
        if event_type == "UPDATE_CREDENTIAL" and event_details.get("credential_type") not in (
            None,
            "password",
        ):
            return None  # an OTP or passkey added later is not an invitation being accepted
        details.update(managed)
        return ProviderChange(
            provider_user_id=str(user_id),
            kind="login" if event_type == "LOGIN" else "invitation-accepted",
            at=_at(int(event["time"])),
            event_id=str(event.get("id")),
            details=details,
        )
