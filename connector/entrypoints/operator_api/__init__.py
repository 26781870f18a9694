"""The operator API at /operator/v1: the marketplace's own systems manage sellers and read
what they need over HTTP, with the same use cases as the command line.

JSON in and out, described by an OpenAPI 3.1 document that spectree generates from the
handlers and their pydantic models (``/operator/v1/openapi.json``, public like SCIM's
discovery endpoints). Every other call needs an operator credential (``Authorization: Bearer
sco_...``, issued by ``seller-connector operators create``); errors are RFC 7807 problems.
Every call is logged with the operator's name; what it changes or looks at is audited (see
``routes``).
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from flask import Blueprint, Response, g, jsonify, request
from spectree import SecurityScheme, SecuritySchemeData, SpecTree

from connector.bootstrap import Connector
from connector.entrypoints.operator_api import schemas
from connector.entrypoints.operator_api.auth import WRITE_METHODS, OperatorAuthenticator
from connector.entrypoints.operator_api.problems import (
    PROBLEM,
    ProblemError,
    as_problem,
    problem,
    validation_problem,
)
from connector.entrypoints.operator_api.routes import register_routes
from connector.services.authentication import BrakePolicy
from connector.services.operators import Scope, record_operator_call

PREFIX = "/operator/v1"
SPEC_PATH = f"{PREFIX}/openapi.json"
_PUBLIC = frozenset({"operator_api.openapi", "operator_api.openapi_docs"})

log = logging.getLogger("seller_connector.operator")


def is_operator_path(path: str) -> bool:
    """Whether a request path belongs to the operator API (its errors are problems)."""
    return path == PREFIX or path.startswith(PREFIX + "/")


def _refuse_invalid(
    req: Any, resp: Any, error: Exception | None, instance: Any, model_adapter: Any
) -> None:
    """spectree's hook after validating a request: invalid input is a 400 problem."""
    if error is not None:
        raise validation_problem(model_adapter.validation_errors(error))


def build_spec() -> SpecTree:
    """The OpenAPI document's generator (strict: only the operator API's own handlers)."""
    return SpecTree(
        "flask",
        title="seller-connector operator API",
        description=(
            "The marketplace's side of seller-connector: sellers, their SCIM tokens, "
            "notification recipients, the access review, the audit trail, the change of "
            "primary user, and the feed of user and permission changes. Authenticate with an "
            "operator credential (seller-connector operators create NAME --scope read|admin): "
            "read may call every GET, admin every operation. Errors are RFC 7807 problems."
        ),
        version="1.0.0",
        # Components named as the models are (the default adds a hash of the module).
        naming_strategy=lambda model: model.__name__,
        path="docs",
        mode="strict",
        page_templates={},
        before=_refuse_invalid,
        validation_error_status=400,
        validation_error_model=schemas.Problem,
        security_schemes=[
            SecurityScheme(
                name="operator",
                data=SecuritySchemeData(
                    type="http", scheme="bearer", bearer_format="sco_<id>.<secret>"
                ),
            )
        ],
        security={"operator": []},
    )


def create_blueprint(connector: Connector) -> Blueprint:
    """The operator API on ``connector``'s store, to mount on the web application."""
    settings = connector.settings
    blueprint = Blueprint("operator_api", __name__, url_prefix=PREFIX)
    spec = build_spec()
    authenticator = OperatorAuthenticator(
        connector,
        BrakePolicy(
            per_token=settings.auth_failures_per_minute,
            per_address=settings.auth_failures_per_address,
        ),
    )

    @blueprint.before_request
    def _authenticate() -> None:
        g.operator = None
        if request.endpoint in _PUBLIC:
            return
        g.operator = authenticator.authenticate(
            request.headers.get("Authorization"), request.remote_addr or "unknown"
        )
        if request.method in WRITE_METHODS:
            if g.operator.scope is not Scope.admin:
                # A read-only credential trying to change something: kept in the operator audit.
                record_operator_call(connector.uow(), g.operator, None, "operator.refused", _call())
            g.operator.check_may_change()
            _check_body()

    @blueprint.after_request
    def _log_call(response: Response) -> Response:
        operator = g.get("operator")
        log.info(
            "operator call",
            extra={
                "fields": {
                    "request_id": g.get("request_id"),
                    "operator": operator.name if operator else None,
                    "scope": operator.scope.value if operator else None,
                    "call": _call(),
                    "seller": g.get("seller_id"),
                    "status": response.status_code,
                }
            },
        )
        return response

    @blueprint.errorhandler(Exception)
    def _problem(error: Exception) -> Response:
        answer = as_problem(error, settings.max_body_bytes)
        if answer is not None:
            return answer
        log.exception("operator API: unexpected error", extra={"fields": {"call": _call()}})
        return problem(500, f"Internal error; reference {g.get('request_id')} in the server log.")

    register_routes(blueprint, spec, connector)
    spec.register(blueprint)

    document: dict[str, Any] = {}

    @blueprint.get("/openapi.json")
    def openapi() -> Response:
        """The OpenAPI document of this API (no credential needed)."""
        if not document:
            document.update(with_problem_media_type(spec.spec))
        return jsonify(document)

    return blueprint


def with_problem_media_type(generated: dict[str, Any]) -> dict[str, Any]:
    """The generated document, its error answers declared as ``application/problem+json``
    (what they are sent as; spectree writes every body as ``application/json``)."""
    document = copy.deepcopy(generated)
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            for status, answer in operation.get("responses", {}).items():
                content = answer.get("content", {})
                if int(status) >= 400 and "application/json" in content:
                    content[PROBLEM] = content.pop("application/json")
    return document


def _call() -> str:
    """The call as logged and audited: method and route (never a query string)."""
    rule = request.url_rule.rule if request.url_rule is not None else request.path
    return f"{request.method} {rule}"


def _check_body() -> None:
    """A write's body is JSON (415 otherwise), and well-formed (400 otherwise)."""
    if request.method == "DELETE" and not request.get_data(cache=True):
        return
    if request.mimetype != "application/json":
        raise ProblemError(415, "Send the body as JSON, with 'Content-Type: application/json'.")
    if request.get_json(silent=True) is None:
        raise ProblemError(
            400, "The body is not well-formed JSON: check quotes, commas and braces."
        )


def problem_for(error: Exception, max_body_bytes: int) -> Response:
    """The problem an error raised outside the operator API's handlers stands for (routing)."""
    return as_problem(error, max_body_bytes) or problem(500, "Internal error.")
