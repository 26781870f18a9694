"""SCIM 2.0 at /scim/v2, mounted on the web application (``connector.entrypoints.web``).

Flask only carries requests to scim2-server's handler and back; the protocol is
scim2-server's, the rules are connector's.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from flask import Flask, Response, g, request
from pydantic_core import to_json
from scim2_models import Error, NotFoundException, SCIMException
from scim2_server.requests import ScimRequest
from scim2_server.responses import ScimResponse
from scim2_server.routing import Operation
from sqlalchemy.exc import DataError, OperationalError
from werkzeug.exceptions import HTTPException

from connector.bootstrap import Connector
from connector.domain.drafts import Actor
from connector.services.authentication import BrakePolicy
from scim.auth import Authenticator, TooManyFailures
from scim.logs import log
from scim.render import Renderer
from scim.schemas import build_models
from scim.service import SellerScimHandler, SellerScimService
from scim.storage import RequestContext, SellerStorage, keep_list_response_model

logger = logging.getLogger("seller_connector.http")

SCIM_PREFIX = "/scim/v2"
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
DISCOVERY = {
    Operation.service_provider_config,
    Operation.resource_types,
    Operation.resource_type,
    Operation.schemas,
    Operation.schema,
}


def _error(status: int, detail: str, scim_type: str | None = None) -> ScimResponse:
    error = Error(status=status, detail=detail, scim_type=scim_type)
    return ScimResponse(HTTPStatus(status), error.model_dump())


def _to_flask(response: ScimResponse) -> Response:
    body = to_json(response.body) if response.body is not None else None
    return Response(body, status=int(response.status), headers=response.headers)


def error_response(status: int, detail: str) -> Response:
    """A SCIM error as a Flask response (for errors raised outside the SCIM handler)."""
    return _to_flask(_error(status, detail))


def http_detail(error: HTTPException, max_body_bytes: int) -> str:
    """What a person can do about an HTTP-level error (a body too large, a wrong method)."""
    if error.code == 413:
        return (
            f"The request body exceeds {max_body_bytes} bytes. Send smaller "
            "requests (split a Bulk request into several)."
        )
    return error.description or error.name


def register_scim(app: Flask, connector: Connector) -> None:
    """Serve SCIM at /scim/v2 on ``app``, for the sellers of ``connector``'s store."""
    settings = connector.settings
    models = build_models(connector.catalogue)
    service = SellerScimService(models.provider, secret=settings.secret_key)
    keep_list_response_model(models.provider)
    base_url = f"{settings.public_url}{SCIM_PREFIX}"
    renderer = Renderer(base_url, connector.catalogue, models.user_extensions)
    authenticator = Authenticator(
        connector,
        cache_seconds=settings.token_cache_seconds,
        brake=BrakePolicy(
            per_token=settings.auth_failures_per_minute,
            per_address=settings.auth_failures_per_address,
        ),
    )
    discovery = SellerScimHandler(service, _DISCOVERY_STORAGE, None)

    def serve(path: str) -> ScimResponse:
        scim_request = ScimRequest(
            method=request.method,
            base_url=base_url,
            path="/" + path,
            query=request.args.to_dict(),
            headers=list(request.headers.items()),
            body=request.get_data(cache=False),
        )
        try:
            operation = service.match(scim_request).operation
        except SCIMException:
            operation = None
        if operation in DISCOVERY:
            return discovery.handle(scim_request)
        auth = authenticator.authenticate(
            request.headers.get("Authorization"), request.remote_addr or "unknown"
        )
        g.seller_id = auth.seller_id
        context = RequestContext(seller_id=auth.seller_id, actor=Actor(auth.actor))
        storage = SellerStorage(connector, context, renderer, models.provider)
        return SellerScimHandler(service, storage, context).handle(scim_request)

    # No automatic OPTIONS answer: Flask's is an empty text/html 200; a 405 SCIM error
    # (with Allow) keeps every SCIM response application/scim+json.
    scim_route = {"methods": METHODS, "provide_automatic_options": False}

    @app.route(SCIM_PREFIX, defaults={"path": ""}, **scim_route)
    @app.route(f"{SCIM_PREFIX}/", defaults={"path": ""}, **scim_route)
    @app.route(f"{SCIM_PREFIX}/<path:path>", **scim_route)
    def scim(path: str) -> Response:
        try:
            response = serve(path)
        except TooManyFailures as error:
            response = service.error_response(error)
            response.headers["Retry-After"] = str(error.retry_after)
        except SCIMException as error:
            response = service.error_response(error)
        except DataError:
            # A value the database refuses outright (PostgreSQL keeps no NUL in text).
            response = _error(
                400,
                "A value holds characters that cannot be stored (such as NUL): remove them.",
                "invalidValue",
            )
        except OperationalError as error:
            log(
                logger,
                logging.WARNING,
                "database unavailable",
                request_id=g.request_id,
                error=str(error.orig),
            )
            response = _error(503, "The database is busy or unavailable. Retry shortly.")
            response.headers["Retry-After"] = "2"
        except HTTPException as error:
            response = _error(error.code or 400, http_detail(error, settings.max_body_bytes))
        except Exception:
            logger.exception("unexpected error", extra={"fields": {"request_id": g.request_id}})
            response = _error(500, f"Internal error; reference {g.request_id} in the server log.")
        return _to_flask(response)


class _DiscoveryStorage(SellerStorage):
    """Discovery needs no data: a storage that has none."""

    def __init__(self) -> None:
        pass

    def get(self, *args: Any, **kwargs: Any) -> Any:
        raise NotFoundException

    search = create = update = delete = document = get  # type: ignore[assignment]


_DISCOVERY_STORAGE = _DiscoveryStorage()
