"""Our adjustments to scim2-server's protocol steps: PATCH answers 200, the role is guarded,
and Entra ID's plain-string manager is read as the complex attribute the schema defines."""

from __future__ import annotations

import json
from contextvars import ContextVar
from http import HTTPStatus
from typing import Any

from pydantic import ValidationError
from pydantic_core import from_json
from scim2_models import (
    BulkOperation,
    Context,
    Error,
    ForbiddenException,
    MutabilityException,
    PatchOp,
    Resource,
    ResourceType,
    ResponseParameters,
    SCIMException,
)
from scim2_server.bulk import BulkPlan, BulkStep
from scim2_server.conditions import Conditions
from scim2_server.handler import ScimHandler
from scim2_server.requests import ScimRequest
from scim2_server.responses import ScimResponse
from scim2_server.routing import match
from scim2_server.service import ScimService

from connector.domain import errors
from connector.domain.model import Role, check_role_change
from scim.schemas import ENTERPRISE_SCHEMA, SELLER_USER_SCHEMA
from scim.storage import requested_role, scim_error

PRIMARY_ROLE_DETAIL = (
    "The primary user's role cannot change through SCIM: the primary changes only through "
    "the marketplace operator flow (seller-connector sellers change-primary)."
)

_ENTERPRISE = ENTERPRISE_SCHEMA.lower()
_MANAGER_PATH = f"{_ENTERPRISE}:manager"

_bulk_roles: ContextVar[dict[int, Role]] = ContextVar("bulk_roles", default={})  # noqa: B039
"""The role each PUT of the current Bulk request carried, by operation index (never mutated)."""


class SellerScimService(ScimService):
    """scim2-server's protocol, with the answers Okta and Entra ID expect of us."""

    def patch_response(
        self,
        base_url: str,
        resource: Resource[Any],
        response_parameters: ResponseParameters[Any],
    ) -> ScimResponse:
        """PATCH answers 200 with the resource: Okta and Entra read it back."""
        return self.resource_response(
            self.publish(base_url, resource),
            Context.RESOURCE_REPLACEMENT_RESPONSE,
            response_parameters,
            status=HTTPStatus.OK,
        )

    def read_creation(
        self, resource_type: ResourceType, body: bytes, content_type: str | None
    ) -> Resource[Any]:
        """Validate a POST body, once Entra ID's plain-string manager is normalised."""
        return super().read_creation(resource_type, _normalised(body, _resource), content_type)

    def read_replacement(
        self, resource_type: ResourceType, body: bytes, content_type: str | None
    ) -> Resource[Any]:
        """Validate a PUT body, remembering the role it asks for.

        The role is read-only, so validation drops it; a PUT that asks for another role
        must still be refused, so it is read from the raw body first.
        """
        replacement = super().read_replacement(
            resource_type, _normalised(body, _resource), content_type
        )
        requested_role.set(_role_in(body))
        return replacement

    def read_patch(
        self, resource_type: ResourceType, body: bytes, content_type: str | None
    ) -> PatchOp[Any]:
        """Validate a PATCH body, once Entra ID's plain-string manager is normalised."""
        return super().read_patch(resource_type, _normalised(body, _patch), content_type)

    def read_bulk(self, body: bytes, content_type: str | None) -> BulkPlan:
        """Validate a Bulk body, normalising each operation as a single request would be,
        and remembering the role each PUT asks for (validation drops it)."""
        plan = super().read_bulk(_normalised(body, _bulk), content_type)
        _bulk_roles.set(_bulk_roles_in(body))
        return plan

    @staticmethod
    def error_of(exception: Exception) -> Error:
        """The SCIM error of an exception, with pydantic's validation text made readable.

        scim2-models reports a value that its model refuses with ``str()`` of pydantic's
        ValidationError (model names, ``[type=...]``, links to pydantic's site); the detail
        becomes ``attribute: message`` for each error instead.
        """
        error = ScimService.error_of(exception)
        cause = exception.__cause__
        if isinstance(cause, ValidationError) and "[type=" in (error.detail or ""):
            error = error.model_copy(update={"detail": readable_validation_error(cause)})
        return error

    def apply_replacement(
        self,
        current: Resource[Any],
        replacement: Resource[Any],
        conditions: Conditions,
    ) -> Resource[Any] | None:
        """Refuse a PUT that changes the role, before a replacement that changes nothing
        else is answered as a no-op (the read-only role is not in the validated body)."""
        current_role = (current.model_dump().get(SELLER_USER_SCHEMA) or {}).get("role")
        if current_role in (Role.primary.value, Role.secondary.value):
            try:
                check_role_change(Role(current_role), requested_role.get())
            except errors.DomainError as error:
                raise scim_error(error) from error
        return super().apply_replacement(current, replacement, conditions)


def readable_validation_error(error: ValidationError) -> str:
    """``attribute: message`` for each error of a pydantic ValidationError, for a person."""
    parts = []
    for item in error.errors(include_url=False):
        location = ".".join(str(part) for part in item.get("loc", ()))
        parts.append(f"{location}: {item['msg']}" if location else str(item["msg"]))
    return "; ".join(parts) or "The request holds an invalid value."


def _role_of(payload: Any) -> Role | None:
    """The role a User body asks for, if it names one."""
    if not isinstance(payload, dict):
        return None
    for key, value in payload.items():
        if key.lower() == SELLER_USER_SCHEMA.lower() and isinstance(value, dict):
            role = value.get("role")
            if role in (Role.primary.value, Role.secondary.value):
                return Role(role)
    return None


def _role_in(body: bytes) -> Role | None:
    try:
        return _role_of(from_json(body))
    except ValueError:
        return None


def _bulk_roles_in(body: bytes) -> dict[int, Role]:
    try:
        payload = from_json(body)
    except ValueError:
        return {}
    roles: dict[int, Role] = {}
    for index, operation in enumerate(_get(payload, "Operations") or []):
        if isinstance(operation, dict) and str(_get(operation, "method") or "").upper() == "PUT":
            role = _role_of(_get(operation, "data"))
            if role is not None:
                roles[index] = role
    return roles


# -- Entra ID's manager ------------------------------------------------------------------


def _get(payload: Any, name: str) -> Any:
    """A member of a JSON object, whatever the case of its name (SCIM names are case-insensitive)."""
    if not isinstance(payload, dict):
        return None
    return next((v for k, v in payload.items() if k.lower() == name.lower()), None)


def _manager(value: Any) -> Any:
    """Entra ID sends the enterprise manager as its id alone; the schema wants ``{"value": id}``."""
    return {"value": value} if isinstance(value, str) else value


def _enterprise(extension: Any) -> bool:
    changed = False
    if isinstance(extension, dict):
        for key, value in list(extension.items()):
            if key.lower() == "manager" and isinstance(value, str):
                extension[key] = _manager(value)
                changed = True
    return changed


def _resource(payload: Any) -> bool:
    """Normalise a User body (or a path-less PATCH value) in place; tell whether it changed."""
    changed = False
    if isinstance(payload, dict):
        for key, value in list(payload.items()):
            if key.lower() == _ENTERPRISE:
                changed = _enterprise(value) or changed
            elif key.lower() == _MANAGER_PATH and isinstance(value, str):
                payload[key] = _manager(value)
                changed = True
    return changed


def _patch(payload: Any) -> bool:
    """Normalise the operations of a PatchOp body in place; tell whether any changed."""
    changed = False
    for operation in _get(payload, "Operations") or []:
        if not isinstance(operation, dict):
            continue
        path = _get(operation, "path")
        value_key = next((k for k in operation if k.lower() == "value"), None)
        if value_key is None:
            continue
        value = operation[value_key]
        if isinstance(path, str) and path.strip().lower() == _MANAGER_PATH:
            if isinstance(value, str):
                operation[value_key] = _manager(value)
                changed = True
        elif isinstance(path, str) and path.strip().lower() == _ENTERPRISE:
            changed = _enterprise(value) or changed
        elif path is None:
            changed = _resource(value) or changed
    return changed


def _bulk(payload: Any) -> bool:
    """Normalise the data of each operation of a BulkRequest body in place."""
    changed = False
    for operation in _get(payload, "Operations") or []:
        data = _get(operation, "data")
        method = str(_get(operation, "method") or "").upper()
        if method == "PATCH":
            changed = _patch(data) or changed
        elif method in ("POST", "PUT"):
            changed = _resource(data) or changed
    return changed


def _normalised(body: bytes, normalise: Any) -> bytes:
    """The body, normalised by ``normalise`` when it is JSON it can read; else untouched,
    so that validation reports the client's own mistakes."""
    try:
        payload = from_json(body)
    except ValueError:
        return body
    if not normalise(payload):
        return body
    return json.dumps(payload).encode()


class SellerScimHandler(ScimHandler):
    """scim2-server's handler, with the primary user's role answered 403 rather than 400."""

    def patch(self, request: ScimRequest) -> ScimResponse:
        """A PATCH of the primary's role is a 403: the primary changes only by the operator flow.

        The role is read-only, so validation refuses the PATCH with a mutability error
        before any storage is read; whose role it was is looked up afterwards.
        """
        try:
            return super().patch(request)
        except MutabilityException as error:
            if _about_role(error.detail) and self._targets_primary("PATCH", request.path):
                raise ForbiddenException(detail=PRIMARY_ROLE_DETAIL) from error
            raise

    def run_bulk_step(
        self, request: ScimRequest, plan: BulkPlan, step: BulkStep
    ) -> tuple[dict[str, Any], Resource[Any] | None]:
        """Run one Bulk operation as the single request would run: a PUT with the role its
        body asked for, a PATCH of the primary's role answered 403."""
        operation = plan.operation(step)
        method = operation.method
        role = _bulk_roles.get().get(step.index) if method == BulkOperation.Method.put else None
        token = requested_role.set(role)
        try:
            result, resource = super().run_bulk_step(request, plan, step)
        finally:
            requested_role.reset(token)
        response = result.get("response")
        if (
            method == BulkOperation.Method.patch
            and isinstance(response, Error)
            and response.scim_type == "mutability"
            and _about_role(response.detail)
            and self._targets_primary("PATCH", plan.resolve(step).path or "")
        ):
            outcome = {k: v for k, v in result.items() if k not in ("status", "response")}
            result = self.service.bulk_failure(
                outcome, ForbiddenException(detail=PRIMARY_ROLE_DETAIL)
            )
        return result, resource

    def _targets_primary(self, method: str, path: str) -> bool:
        """Whether a request path names this seller's primary user."""
        try:
            target = match(method, path)
        except SCIMException:
            return False
        if target.resource_id is None or target.endpoint is None:
            return False
        resource_type = self.service.get_resource_type_by_endpoint(target.endpoint)
        if resource_type is None or resource_type.name != "User":
            return False
        try:
            resource = self.storage.get(resource_type, target.resource_id)
        except SCIMException:
            return False
        extension = resource.model_dump().get(SELLER_USER_SCHEMA) or {}
        return extension.get("role") == Role.primary.value


def _about_role(detail: str | None) -> bool:
    """Whether a mutability error is about the seller extension's role."""
    return f"{SELLER_USER_SCHEMA}:role".lower() in (detail or "").lower()


__all__ = ["PatchOp", "SellerScimHandler", "SellerScimService"]
