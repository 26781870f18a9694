"""POST /keycloak/events: console changes pushed at once by the seller-connector Keycloak plugin.

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
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, request
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException

from connector.adapters.keycloak.naming import GroupLayout
from connector.adapters.keycloak.webhook_events import change_from_webhook
from connector.domain.errors import Uniqueness
from connector.mappings import KeycloakNames, load_keycloak_names
from connector.ports.identity import ProviderChange
from connector.ports.store import AuditEvent
from connector.services.console import SEEN_PREFIX, apply_change, seen_by_webhook

log = logging.getLogger("seller_connector.webhook")

PATH = "/keycloak/events"
TIMESTAMP_HEADER = "X-Seller-Connector-Timestamp"
SIGNATURE_HEADER = "X-Seller-Connector-Signature"
SECRET_ENV = "SELLER_CONNECTOR_WEBHOOK_SECRET"  # noqa: S105 - a variable name
WINDOW = dt.timedelta(minutes=5)
"""How far the signed timestamp may be from the connector's clock, either way."""
KEEP_SEEN = dt.timedelta(days=31)
"""How long applied state-changing event ids are remembered (Keycloak keeps events 30 days)."""
STATEFUL_KINDS = frozenset(
    {"disabled", "enabled", "group-added", "group-removed", "roles-added", "roles-removed"}
)
MONOTONIC_KINDS = frozenset({"login", "invitation-accepted"})
REFUSAL_KINDS = frozenset({"delete-refused", "leave-refused", "identity-change-refused"})
"""What the plugin's guard refused (deleting the primary, removing it from its organization,
changing its username, email or seller attributes): recorded in the seller's audit trail."""
MAX_BODY = 64 * 1024
CONSOLE_ACTOR = "keycloak:console"
"""The audit actor of console changes (as connector.services.console names it)."""
_EVENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")


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


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json")


def _error(status: int, detail: str) -> Response:
    return _json(status, {"status": status, "detail": detail})


def to_change(event: dict[str, Any], layout: GroupLayout) -> ProviderChange:
    """The :class:`ProviderChange` of a webhook event, with the details the polled feed gives
    (parsed by the Keycloak adapter: :func:`change_from_webhook`).

    :raises ValueError: when a required member is missing or of the wrong type.
    """
    return change_from_webhook(event, layout)


def create_blueprint(
    secret: bytes | Callable[[], bytes | None] | None = read_secret,
    *,
    names: KeycloakNames | None = None,
    clock: Callable[[], float] = time.time,
) -> Blueprint:
    """The webhook's blueprint. The app must carry the connector in
    ``app.extensions["seller_connector"]`` (``scim.app.create_app`` does).

    :param secret: the shared secret, or a function reading it (default: the environment,
        read on each request so that a rotated secret file is picked up).
    """
    blueprint = Blueprint("keycloak_webhook", __name__)
    names = names or load_keycloak_names()
    layout = GroupLayout.from_names(names)
    recent = _RecentIds()
    last_prune = [0.0]

    def current_secret() -> bytes | None:
        return secret() if callable(secret) else secret

    def verify() -> tuple[dict[str, Any] | None, Response | None]:
        key = current_secret()
        if not key:
            return None, _error(503, f"The webhook is not configured: set {SECRET_ENV}.")
        body = request.get_data(cache=False)
        raw_ts = request.headers.get(TIMESTAMP_HEADER, "")
        signature = request.headers.get(SIGNATURE_HEADER, "")
        # ASCII digits only: str.isdigit() also takes other scripts' digits (and superscripts).
        if not (raw_ts.isascii() and raw_ts.isdigit()) or len(raw_ts) > 12 or not signature:
            return None, _error(401, "Missing or malformed signature headers.")
        expected = sign(key, int(raw_ts), body)
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            return None, _error(401, "Bad signature.")
        if abs(clock() - int(raw_ts)) > WINDOW.total_seconds():
            return None, _error(401, "Stale or future timestamp: check the clocks.")
        try:
            event = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return None, _error(400, "The body is not JSON.")
        if not isinstance(event, dict):
            return None, _error(400, "The body is not a JSON object.")
        event_id, kind = event.get("id"), event.get("kind")
        if not isinstance(event_id, str) or not _EVENT_ID.match(event_id):
            return None, _error(400, "The event has no valid id.")
        if not isinstance(kind, str) or not kind:
            return None, _error(400, "The event has no kind.")
        return event, None

    def prune(uow: Any) -> None:
        """Forget applied event ids older than KEEP_SEEN, at most every ten minutes."""
        if clock() - last_prune[0] < 600:
            return
        last_prune[0] = clock()
        uow.markers.delete_before(SEEN_PREFIX, dt.datetime.now(dt.UTC) - KEEP_SEEN)

    def handle(event: dict[str, Any]) -> Response:
        # Imported here so that the SCIM app starts even before the console module is there.
        connector = current_app.extensions["seller_connector"]
        event_id, kind = str(event["id"]), str(event["kind"])
        if kind in REFUSAL_KINDS:
            return record_refusal(connector, event)
        if kind not in STATEFUL_KINDS | MONOTONIC_KINDS:
            log.info("webhook %s %s: not modelled in the store", kind, event_id)
            return _json(202, {"id": event_id, "result": "ignored", "detail": "not modelled"})
        try:
            change = to_change(event, layout)
        except (ValueError, KeyError, TypeError) as error:
            return _error(400, f"Bad event: {error}.")
        if event_id in recent:
            return _error(409, f"Event {event_id} was already received.")
        with connector.uow(immediate=True) as uow:
            if kind in STATEFUL_KINDS:
                if seen_by_webhook(uow, event_id):
                    return _error(409, f"Event {event_id} was already applied.")
                uow.markers.set(SEEN_PREFIX + event_id, change.at.isoformat())
            outcome = apply_change(uow, connector.catalogue, change)
            prune(uow)
            try:
                uow.commit()
            except Uniqueness:
                # The same event applied concurrently by another worker.
                return _error(409, f"Event {event_id} was already applied.")
        recent.add(event_id)
        log.info("webhook %s of %s: %s %s", kind, outcome.user_id, outcome.result, outcome.detail)
        return _json(
            202,
            {"id": event_id, "result": outcome.result, "detail": outcome.detail},
        )

    def record_refusal(connector: Any, event: dict[str, Any]) -> Response:
        user = event.get("user") if isinstance(event.get("user"), dict) else {}
        seller_id, user_id = user.get("seller_id"), user.get("connector_user_id")
        if str(event["id"]) in recent:
            return _error(409, f"Event {event['id']} was already received.")
        with connector.uow() as uow:
            if not (seller_id and user_id and uow.sellers.get(str(seller_id))):
                return _json(202, {"id": event["id"], "result": "ignored"})
            uow.audit.append(
                AuditEvent(
                    str(seller_id),
                    CONSOLE_ACTOR,
                    "user.console-" + str(event["kind"]),
                    f"user:{user_id}",
                    {
                        "providerUserId": user.get("id"),
                        "eventId": event["id"],
                        **({"attribute": event["attribute"]} if event.get("attribute") else {}),
                    },
                )
            )
            uow.commit()
        recent.add(str(event["id"]))
        return _json(202, {"id": event["id"], "result": "recorded"})

    @blueprint.post(PATH)
    def keycloak_events() -> Response:
        """Receive one signed event from the Keycloak plugin."""
        if (request.content_length or 0) > MAX_BODY:
            return _error(400, f"The body exceeds {MAX_BODY} bytes.")
        try:
            event, refusal = verify()
            if refusal is not None:
                return refusal
            assert event is not None
            return handle(event)
        except HTTPException as error:
            return _error(400, error.description or error.name)
        except OperationalError:
            log.warning("webhook: database unavailable")
            response = _error(503, "The database is busy or unavailable. Retry shortly.")
            response.headers["Retry-After"] = "2"
            return response
        except Exception:
            log.exception("webhook: unexpected error")
            return _error(503, "The event could not be applied; the polled feed will catch up.")

    return blueprint


webhook = create_blueprint()
"""The blueprint with the secret from the environment (register it on the SCIM app)."""
