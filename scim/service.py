"""Our adjustments to scim2-server's protocol steps: PATCH answers 200, the role is guarded."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from pydantic_core import from_json
from scim2_models import (
    Context,
    ForbiddenException,
    MutabilityException,
    PatchOp,
    Resource,
    ResourceType,
    ResponseParameters,
)
from scim2_server.handler import ScimHandler
from scim2_server.requests import ScimRequest
from scim2_server.responses import ScimResponse
from scim2_server.routing import Operation
from scim2_server.service import ScimService

from connector.domain.model import Role
from scim.schemas import SELLER_USER_SCHEMA
from scim.storage import requested_role

PRIMARY_ROLE_DETAIL = (
    "The primary user's role cannot change through SCIM: the primary changes only through "
    "the marketplace operator flow (seller-connector sellers change-primary)."
)


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

    def read_replacement(
        self, resource_type: ResourceType, body: bytes, content_type: str | None
    ) -> Resource[Any]:
        """Validate a PUT body, remembering the role it asks for.

        The role is read-only, so validation drops it; a PUT that asks for another role
        must still be refused, so it is read from the raw body first.
        """
        replacement = super().read_replacement(resource_type, body, content_type)
        requested_role.set(_role_in(body))
        return replacement


def _role_in(body: bytes) -> Role | None:
    try:
        payload = from_json(body)
    except ValueError:
        return None
    if not isinstance(payload, dict):
        return None
    for key, value in payload.items():
        if key.lower() == SELLER_USER_SCHEMA.lower() and isinstance(value, dict):
            role = value.get("role")
            if role in (Role.primary.value, Role.secondary.value):
                return Role(role)
    return None


class SellerScimHandler(ScimHandler):
    """scim2-server's handler, with the primary user's role answered 403 rather than 400."""

    def patch(self, request: ScimRequest) -> ScimResponse:
        try:
            return super().patch(request)
        except MutabilityException as error:
            if "role" in str(error.detail or "") and self._targets_primary(request):
                raise ForbiddenException(detail=PRIMARY_ROLE_DETAIL) from error
            raise

    def _targets_primary(self, request: ScimRequest) -> bool:
        target = self.service.match(request)
        if target.operation is not Operation.patch or target.resource_id is None:
            return False
        resource_type = self.service.get_resource_type_by_endpoint(target.endpoint or "")
        if resource_type is None or resource_type.name != "User":
            return False
        try:
            resource = self.storage.get(resource_type, target.resource_id)
        except Exception:
            return False
        extension = resource.model_dump().get(SELLER_USER_SCHEMA) or {}
        return extension.get("role") == Role.primary.value


__all__ = ["PatchOp", "SellerScimHandler", "SellerScimService"]
