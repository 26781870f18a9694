"""Errors of the operator API as RFC 7807 problems: JSON with ``status`` and a ``detail`` a
person can act on, ``application/problem+json``; one mapping from every kind of failure."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from flask import Response
from sqlalchemy.exc import DataError, OperationalError
from werkzeug.exceptions import HTTPException

from connector.domain.errors import (
    DomainError,
    Forbidden,
    InvalidValue,
    Mutability,
    NotFound,
    Uniqueness,
    VersionMismatch,
)
from connector.ports.mail import MailUnavailable

PROBLEM = "application/problem+json"

_DOMAIN_STATUS: tuple[tuple[type[DomainError], int], ...] = (
    (NotFound, 404),
    (Forbidden, 403),
    (Uniqueness, 409),
    (VersionMismatch, 409),
    (InvalidValue, 400),
    (Mutability, 400),
)


class ProblemError(Exception):
    """Raised anywhere in the operator API: answered as the problem it describes."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}


def problem(
    status: int,
    detail: str,
    *,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """A problem response."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if errors:
        body["errors"] = errors
    return Response(json.dumps(body), status=status, mimetype=PROBLEM, headers=headers)


def as_problem(error: Exception, max_body_bytes: int) -> Response | None:
    """The problem an expected failure stands for; None for an unexpected one."""
    if isinstance(error, ProblemError):
        return problem(error.status, error.detail, errors=error.errors, headers=error.headers)
    if isinstance(error, DomainError):
        status = next((s for kind, s in _DOMAIN_STATUS if isinstance(error, kind)), 400)
        return problem(status, error.detail)
    if isinstance(error, MailUnavailable):
        return problem(
            503,
            f"The verification email could not be sent, so nothing was changed: {error} "
            "Retry once the mail server answers.",
            headers={"Retry-After": "30"},
        )
    if isinstance(error, DataError):
        return problem(
            400, "A value holds characters that cannot be stored (such as NUL): remove them."
        )
    if isinstance(error, OperationalError):
        return problem(
            503,
            "The database is busy or unavailable. Retry shortly.",
            headers={"Retry-After": "2"},
        )
    if isinstance(error, HTTPException):
        return problem(error.code or 400, http_detail(error, max_body_bytes))
    return None


def http_detail(error: HTTPException, max_body_bytes: int) -> str:
    """What a person can do about an HTTP-level error."""
    if error.code == 404:
        return "No such operator API resource: see /operator/v1/openapi.json for the paths."
    if error.code == 405:
        return "This method is not allowed on this path: see /operator/v1/openapi.json."
    if error.code == 413:
        return f"The request body exceeds {max_body_bytes} bytes."
    return error.description or error.name


def validation_problem(errors: list[dict[str, Any]]) -> ProblemError:
    """400 naming each field refused (pydantic's errors, without echoing the input back)."""
    cleaned = []
    for error in errors:
        where = ".".join(str(part) for part in error.get("loc", ())) or "body"
        cleaned.append({"field": where, "problem": str(error.get("msg", "invalid"))})
    detail = "; ".join(f"{e['field']}: {e['problem']}" for e in cleaned[:10])
    return ProblemError(400, f"Invalid input: {detail}.", errors=cleaned)
