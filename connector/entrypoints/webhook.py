"""POST /keycloak/events: console changes pushed at once by the seller-connector Keycloak plugin.

The Keycloak adapter checks the signature and reads the event
(:class:`connector.adapters.keycloak.webhook.KeycloakWebhook`, built by the composition root);
:func:`connector.services.console.apply_pushed` applies it as polled admin events are applied,
without applying anything twice. Answers are JSON: 202 applied (or ignored, with the reason),
400 bad body, 401 bad or missing signature or stale timestamp, 409 replay, 503 when the
webhook has no secret or the database is unavailable; never a 500.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from typing import Any

from flask import Blueprint, Response, request
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException

from connector.bootstrap import Connector
from connector.ports.identity import ChangePush, PushRejected
from connector.services.console import AlreadyApplied, apply_pushed

log = logging.getLogger("seller_connector.webhook")

PATH = "/keycloak/events"
MAX_BODY = 64 * 1024
KEEP_SEEN = dt.timedelta(days=31)
"""How long applied state-changing event ids are remembered (Keycloak keeps events 30 days)."""
PRUNE_EVERY = 600.0
"""Seconds between two prunings of the remembered event ids."""


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json")


def _error(status: int, detail: str) -> Response:
    return _json(status, {"status": status, "detail": detail})


def create_blueprint(connector: Connector, push: ChangePush) -> Blueprint:
    """The webhook's blueprint, applying what ``push`` reads to ``connector``'s store."""
    blueprint = Blueprint("keycloak_webhook", __name__)
    last_prune = [0.0]

    def prune_before() -> dt.datetime | None:
        if time.monotonic() - last_prune[0] < PRUNE_EVERY:
            return None
        last_prune[0] = time.monotonic()
        return dt.datetime.now(dt.UTC) - KEEP_SEEN

    @blueprint.post(PATH)
    def keycloak_events() -> Response:
        """Receive one signed event from the Keycloak plugin."""
        if (request.content_length or 0) > MAX_BODY:
            return _error(400, f"The body exceeds {MAX_BODY} bytes.")
        try:
            change = push.receive(request.headers, request.get_data(cache=False))
            event_id = str(change.event_id)
            try:
                outcome = apply_pushed(
                    connector.uow, connector.catalogue, change, prune_before=prune_before()
                )
            except AlreadyApplied:
                return _error(409, f"Event {event_id} was already applied.")
            push.delivered(event_id)
            log.info(
                "webhook %s of %s: %s %s",
                change.kind,
                outcome.user_id,
                outcome.result,
                outcome.detail,
            )
            return _json(202, {"id": event_id, "result": outcome.result, "detail": outcome.detail})
        except PushRejected as rejected:
            return _error(rejected.status, rejected.detail)
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
