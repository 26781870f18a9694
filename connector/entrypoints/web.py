"""The web application: SCIM at /scim/v2, the operator API at /operator/v1, the Keycloak
plugin's webhook, health at /healthz, Prometheus metrics at /metrics.

``create_app`` is the gunicorn entry point (``connector.entrypoints.web:create_app()``); it
asks the composition root for everything it serves.
"""

from __future__ import annotations

import json
import logging
import time
import uuid

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from connector.bootstrap import Connector, bootstrap
from connector.entrypoints import confirm_primary, metrics, operator_api, webhook
from scim.app import error_response, http_detail, register_scim
from scim.logs import configure_logging, log

logger = logging.getLogger("seller_connector.http")


def _loggable(path: str) -> str:
    """The path as logged: a confirmation link's secret never reaches a log line."""
    if path.startswith(confirm_primary.PREFIX):
        return confirm_primary.PREFIX + "<secret>"
    return path


def create_app(connector: Connector | None = None) -> Flask:
    """Build the application. Without a connector, bootstrap one from the environment."""
    configure_logging()
    connector = connector or bootstrap()
    settings = connector.settings

    app = Flask("seller_connector")
    if settings.trusted_proxies:
        # Only the proxies we run append to X-Forwarded-For: the client address is the one
        # they saw, never what a client wrote in the header itself.
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=settings.trusted_proxies, x_proto=settings.trusted_proxies
        )
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions["seller_connector"] = connector
    register_scim(app, connector)
    app.register_blueprint(webhook.create_blueprint(connector, connector.change_push()))
    app.register_blueprint(confirm_primary.create_blueprint(connector))
    app.register_blueprint(operator_api.create_blueprint(connector))
    app.register_blueprint(metrics.create_blueprint(connector))

    @app.before_request
    def _start() -> None:
        g.request_id = request.headers.get("X-Request-Id", "")[:64] or uuid.uuid4().hex
        g.started = time.perf_counter()
        g.seller_id = None

    @app.after_request
    def _finish(response: Response) -> Response:
        response.headers["X-Request-Id"] = g.request_id
        log(
            logger,
            logging.INFO,
            "request",
            request_id=g.request_id,
            method=request.method,
            path=_loggable(request.path),
            status=response.status_code,
            ms=round((time.perf_counter() - g.started) * 1000, 1),
            seller=g.seller_id,
        )
        return response

    @app.get("/healthz")
    def healthz() -> Response:
        if not connector.database_reachable():
            return Response(
                json.dumps({"status": "unavailable", "database": "unreachable"}),
                status=503,
                headers={"Content-Type": "application/json", "Retry-After": "5"},
            )
        return Response(json.dumps({"status": "ok"}), headers={"Content-Type": "application/json"})

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        if operator_api.is_operator_path(request.path):
            # Routing errors (404, 405) under /operator/v1 are problems, as its other errors.
            return operator_api.problem_for(error, settings.max_body_bytes)
        response = error_response(error.code or 500, http_detail(error, settings.max_body_bytes))
        for key, value in error.get_headers():
            if key.lower() == "allow":
                response.headers[key] = value
        return response

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> Response:
        logger.exception("unexpected error", extra={"fields": {"request_id": g.get("request_id")}})
        return error_response(500, "Internal error; see the server log.")

    return app
