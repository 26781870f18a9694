"""The push side of the console-change feed: events the seller-connector Keycloak plugin posts.

The plugin (deploy/keycloak/plugin) posts one JSON event per request, signed with the secret
it shares with the connector (``SELLER_CONNECTOR_WEBHOOK_SECRET`` or ``_FILE``)::

    X-Seller-Connector-Timestamp: <unix seconds>
    X-Seller-Connector-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>." + raw body)>

A request is applied only when the signature matches (compared in constant time), the
timestamp is within :data:`WINDOW` of the connector's clock, and its event id was not seen
before. It is then applied through :func:`connector.services.console.apply_change`, the same
code path as the polled admin events, which stay as the fallback when the webhook is down.

**Nothing applied twice.** The event id is Keycloak's own: the id that ``GET /admin-events``
and ``GET /events`` return for the same event. For the kinds that change state (``disabled``,
``enabled``, ``group-added``, ``group-removed``, ``roles-added``, ``roles-removed``) the id is remembered in the store, in the same
transaction as the change, under the marker source ``keycloak:webhook-event:<id>``
(:func:`seen_by_webhook`); so a replay is refused (409) and the poller can skip an event the
webhook applied (see :func:`seen_by_webhook`). Those rows live in ``sync_markers`` (no
migration) and are pruned after :data:`KEEP_SEEN` (Keycloak keeps events 30 days). ``login``
and ``invitation-accepted`` are monotonic (a replay changes nothing), so they are remembered
only in memory (per process) to refuse quick replays without a row per login.

``roles-added`` / ``roles-removed`` (portal client roles mapped to or from a seller user, or a
group at or under the root; the shapes are in :mod:`connector.adapters.keycloak.change_feed`)
are state-changing too and go to ``apply_change`` like the others. Kinds the store does not
model (organization membership) are acknowledged and logged; what the plugin's guard refused (deleting a primary user, removing it
from its organization, changing its username or email) is recorded in the seller's audit
trail as ``user.console-<kind>``.

Answers are JSON: 202 applied (or ignored, with the reason), 400 bad body, 401 bad or missing
signature or stale timestamp, 409 replay, 503 when the webhook has no secret or the database
is unavailable; never a 500.
"""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import hmac
import json
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from connector.adapters.keycloak.naming import GroupLayout
from connector.mappings import KeycloakNames, load_keycloak_names
from connector.ports.identity import ProviderChange, PushRejected

TIMESTAMP_HEADER = "X-Seller-Connector-Timestamp"
SIGNATURE_HEADER = "X-Seller-Connector-Signature"
SECRET_ENV = "SELLER_CONNECTOR_WEBHOOK_SECRET"  # noqa: S105 - a variable name
WINDOW = dt.timedelta(minutes=5)
"""How far the signed timestamp may be from the connector's clock, either way."""
KEEP_SEEN = dt.timedelta(days=31)
"""How long applied state-changing event ids are remembered (Keycloak keeps events 30 days)."""
_EVENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")
REFUSAL_KINDS = frozenset({"delete-refused", "leave-refused", "identity-change-refused"})
"""What the plugin's guard refused (deleting the primary, removing it from its organization,
changing its username, email or seller attributes)."""


def read_secret(environ: dict[str, str] | None = None) -> bytes | None:
    """The shared secret from ``SELLER_CONNECTOR_WEBHOOK_SECRET`` or the file named by
    ``SELLER_CONNECTOR_WEBHOOK_SECRET_FILE`` (which wins, as mounted secrets do)."""
    env = os.environ if environ is None else environ
    path = env.get(SECRET_ENV + "_FILE", "").strip()
    value = Path(path).read_text(encoding="utf-8").strip() if path else env.get(SECRET_ENV, "")
    return value.strip().encode() or None


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The signature the plugin sends: ``v1=`` + hex HMAC-SHA256 over ``"<ts>." + body``."""
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


class _RecentIds:
    """A bounded, thread-safe memory of recently seen event ids (per process)."""

    def __init__(self, size: int = 10_000) -> None:
        self._ids: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def __contains__(self, event_id: object) -> bool:
        with self._lock:
            return event_id in self._ids

    def add(self, event_id: str) -> None:
        """Remember ``event_id`` (the oldest is forgotten past the size)."""
        with self._lock:
            self._ids[event_id] = None
            if len(self._ids) > self._size:
                self._ids.popitem(last=False)


class KeycloakWebhook:
    """Reads the plugin's signed events (:class:`connector.ports.identity.ChangePush`)."""

    def __init__(
        self,
        secret: bytes | Callable[[], bytes | None] | None = read_secret,
        *,
        names: KeycloakNames | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._secret = secret
        self.names = names or load_keycloak_names()
        self.layout = GroupLayout.from_names(self.names)
        self.clock = clock
        self._recent = _RecentIds()

    def receive(self, headers: Mapping[str, str], body: bytes) -> ProviderChange:
        """The change a signed event stands for.

        :raises PushRejected: 503 no secret configured; 401 bad or missing signature, stale
            timestamp; 400 not a valid event; 409 an event received moments ago.
        """
        key = self._secret() if callable(self._secret) else self._secret
        if not key:
            raise PushRejected(503, f"The webhook is not configured: set {SECRET_ENV}.")
        raw_ts = headers.get(TIMESTAMP_HEADER, "")
        signature = headers.get(SIGNATURE_HEADER, "")
        # ASCII digits only: str.isdigit() also takes other scripts' digits (and superscripts).
        if not (raw_ts.isascii() and raw_ts.isdigit()) or len(raw_ts) > 12 or not signature:
            raise PushRejected(401, "Missing or malformed signature headers.")
        expected = sign(key, int(raw_ts), body)
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            raise PushRejected(401, "Bad signature.")
        if abs(self.clock() - int(raw_ts)) > WINDOW.total_seconds():
            raise PushRejected(401, "Stale or future timestamp: check the clocks.")
        try:
            event = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise PushRejected(400, "The body is not JSON.") from None
        if not isinstance(event, dict):
            raise PushRejected(400, "The body is not a JSON object.")
        event_id, kind = event.get("id"), event.get("kind")
        if not isinstance(event_id, str) or not _EVENT_ID.match(event_id):
            raise PushRejected(400, "The event has no valid id.")
        if not isinstance(kind, str) or not kind or len(kind) > 50:
            raise PushRejected(400, "The event has no kind.")
        if event_id in self._recent:
            raise PushRejected(409, f"Event {event_id} was already received.")
        if kind in REFUSAL_KINDS:
            return _refusal(event)
        try:
            return change_from_webhook(event, self.layout, self.names)
        except (ValueError, KeyError, TypeError) as error:
            raise PushRejected(400, f"Bad event: {error}.") from None

    def delivered(self, event_id: str) -> None:
        """Remember an applied event for a while, to refuse quick replays at once."""
        self._recent.add(event_id)


def _refusal(event: Mapping[str, Any]) -> ProviderChange:
    """A refusal of the plugin's guard, as a change for the audit trail."""
    user = event.get("user") if isinstance(event.get("user"), dict) else {}
    time_ms = event.get("time")
    at = (
        dt.datetime.fromtimestamp(time_ms / 1000, dt.UTC)
        if isinstance(time_ms, int) and not isinstance(time_ms, bool)
        else dt.datetime.now(dt.UTC)
    )
    return ProviderChange(
        provider_user_id=str(user.get("id") or ""),
        kind=str(event["kind"]),
        at=at,
        event_id=str(event["id"]),
        details={
            "seller_id": user.get("seller_id"),
            "connector_user_id": user.get("connector_user_id"),
            "attribute": event.get("attribute"),
            "via": "webhook",
        },
    )


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


def change_from_webhook(
    event: Mapping[str, Any], layout: GroupLayout, names: KeycloakNames | None = None
) -> ProviderChange:
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
            role_details("group" if about_group else "user", roles, event.get("client_id"), names)
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


def role_details(
    target: str, roles: list[str], client: Any, names: KeycloakNames | None = None
) -> dict[str, Any]:
    """What a role change adds to ``details``: ``target`` (``user`` or ``group``), ``roles``
    (sorted names such as ``pricing:edit``), ``client`` (the portal client's id), and the
    same roles read back into the seller's words: ``grants`` (``[category, level]`` pairs)
    and ``unknown_roles`` (names that are no catalogue permission)."""
    names = names or load_keycloak_names()
    grants: list[list[str]] = []
    unknown: list[str] = []
    for role in sorted(set(roles)):
        parsed = names.parse_role(role)
        if parsed is None:
            unknown.append(role)
        else:
            grants.append([parsed[0], parsed[1]])
    return {
        "target": target,
        "roles": sorted(set(roles)),
        "client": client,
        "grants": grants,
        "unknown_roles": unknown,
    }
