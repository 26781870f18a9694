"""SCIM 2.0 at /scim/v2: the protocol, mounted on the web application (``connector.entrypoints.web``).

scim2-server parses and validates every request, applies PATCH operations, reads filters and
paging, and plans Bulk requests; this module adjusts its steps to what Okta and Entra ID send
and expect, holds every request to its limits, authenticates it, and gives each operation one
lean path: the storage is called once and the answer is the resource as ``scim.storage``
rendered it (no model rebuilt, validated and copied again just to be written out). A write that
meets a concurrent change of the same resource is read again and retried, unless the client
sent If-Match (then 412). The rules are connector's; the view only carries requests.

Sections: the view; authentication; the service (reading requests); the handler (the
operations); Entra ID's shapes.
"""

from __future__ import annotations

import functools
import hmac
import json
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, TypeVar, cast

from flask import Flask, Response, g, request
from pydantic import ValidationError
from pydantic_core import from_json, to_json
from scim2_models import (
    BulkOperation,
    Context,
    Error,
    InvalidFilterException,
    InvalidValueException,
    MutabilityException,
    NotFoundException,
    PatchOp,
    Resource,
    ResourceType,
    ResponseParameters,
    SCIMException,
    SearchRequest,
    UnauthorizedException,
)
from scim2_models.path import LogicalExpr, Not, ValuePath
from scim2_server.bulk import BulkPlan, BulkStep
from scim2_server.conditions import Conditions
from scim2_server.errors import UnsupportedMediaTypeException
from scim2_server.handler import ScimHandler
from scim2_server.requests import ScimRequest
from scim2_server.responses import ScimResponse
from scim2_server.routing import Operation, Target, match
from scim2_server.service import ScimService
from scim2_server.storage import search_page
from sqlalchemy.exc import DataError, OperationalError
from werkzeug.exceptions import HTTPException

from connector.bootstrap import Connector
from connector.domain import errors
from connector.domain.drafts import Actor
from connector.domain.model import Role, check_role_change, refuse_role_write
from connector.ports.schemas import ENTERPRISE_SCHEMA, SELLER_USER_SCHEMA
from connector.services.authentication import (
    BrakePolicy,
    brake_after_failure,
    read_token,
    verify_token,
)
from scim import library_caches
from scim.logs import log
from scim.schemas import build_models
from scim.storage import (
    ConcurrentChange,
    Renderer,
    RequestContext,
    SellerStorage,
    keep_list_response_model,
    scim_error,
)

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
    library_caches.install()
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


# -- Authentication ----------------------------------------------------------------------

UNAUTHORIZED_DETAIL = (
    "Missing or invalid bearer token. Send 'Authorization: Bearer <token>' with a token "
    "issued by 'seller-connector sellers token SELLER'."
)
_CACHE_LIMIT = 10_000


class TooManyFailures(SCIMException):
    """429: too many failed authentications from this client."""

    status = 429
    scim_type = None

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            detail=f"Too many failed authentications from this address. Retry in {retry_after} s."
        )
        self.retry_after = retry_after


@dataclass(frozen=True)
class Authenticated:
    """Who a SCIM request acts for."""

    seller_id: str
    token_id: str

    @property
    def actor(self) -> str:
        return f"token:{self.token_id}"


class Authenticator:
    """Verifies bearer tokens, remembering verified ones for a few seconds."""

    def __init__(self, connector: Connector, *, cache_seconds: float, brake: BrakePolicy) -> None:
        self.connector = connector
        self.cache_seconds = cache_seconds
        self.brake = brake
        self._verified: dict[str, tuple[str, str, float]] = {}
        self._lock = threading.Lock()

    def authenticate(self, header: str | None, client: str) -> Authenticated:
        """The seller a request's ``Authorization`` header stands for.

        The same 401 answers an unknown, malformed or revoked token, so that nobody learns
        whether a seller or a token exists; past the brake's bounds, failures get 429.

        :raises UnauthorizedException: the token is missing or invalid.
        :raises TooManyFailures: the same, once this client failed too often.
        """
        scheme, _, presented = (header or "").partition(" ")
        token = read_token(presented) if scheme.lower() == "bearer" else None
        if token is not None:
            cached = self._cached(token.token_id, token.secret_hash)
            if cached is not None:
                return cached
            stored = verify_token(self.connector.uow(), token)
            if stored is not None:
                found = Authenticated(stored.seller_id, stored.id)
                self._remember(token.token_id, token.secret_hash, found)
                return found
        retry_after = brake_after_failure(
            self.connector.uow(), self.brake, client, token.token_id if token else None
        )
        if retry_after is not None:
            raise TooManyFailures(retry_after)
        raise UnauthorizedException(detail=UNAUTHORIZED_DETAIL)

    def _cached(self, token_id: str, secret_hash: str) -> Authenticated | None:
        if self.cache_seconds <= 0:
            return None
        entry = self._verified.get(token_id)
        if entry is None:
            return None
        stored_hash, seller_id, until = entry
        if time.monotonic() >= until or not hmac.compare_digest(stored_hash, secret_hash):
            return None
        return Authenticated(seller_id, token_id)

    def _remember(self, token_id: str, secret_hash: str, found: Authenticated) -> None:
        if self.cache_seconds <= 0:
            return
        with self._lock:
            if len(self._verified) >= _CACHE_LIMIT:
                self._verified.clear()
            self._verified[token_id] = (
                secret_hash,
                found.seller_id,
                time.monotonic() + self.cache_seconds,
            )


# -- The service and the handler --------------------------------------------------------

LIST_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
MAX_PATCH_OPERATIONS = 500
"""Operations in one PATCH request; more are refused with 400 at once."""
MAX_FILTER_LENGTH = 100_000
"""Characters of one filter."""
MAX_FILTER_TERMS = 1000
"""Comparisons in one filter."""
MAX_FILTER_DEPTH = 32
"""Nesting of one filter (parentheses, not, value paths)."""
MAX_INDEX = 2**31 - 1
"""The largest startIndex or count a search may give."""
WRITE_ATTEMPTS = 12
"""Reads and writes of one resource before a write that keeps meeting concurrent changes
gives up with 412 (each attempt reads the newest version); the waits between add up to
0.63 s at most."""
HOLD_AFTER = 2
"""Optimistic attempts before a write holds its resource from read to write: a writer that
keeps losing to newer ones is not starved (it then waits for them, and they for it)."""

_ENTERPRISE = ENTERPRISE_SCHEMA.lower()
_MANAGER_PATH = f"{_ENTERPRISE}:manager"
_SELLER = SELLER_USER_SCHEMA.lower()

T = TypeVar("T")


@functools.lru_cache(maxsize=1024)
def _match(method: str, path: str) -> Target:
    return match(method, path)


class SellerScimService(ScimService):
    """scim2-server's protocol, with the answers Okta and Entra ID expect of us."""

    @staticmethod
    def match(request: ScimRequest) -> Target:
        """scim2-server's routing, remembered: a request is routed three times on its way
        (the operation, the handler, the operation's own route), and a Target is frozen."""
        return _match(request.method.upper(), request.path)

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

    @staticmethod
    def ensure_json(content_type: str | None) -> None:
        """A body must say it is JSON (application/scim+json or application/json): 415
        otherwise, a missing Content-Type included (the README's contract)."""
        ScimService.ensure_json(content_type)
        if not content_type or not content_type.strip():
            raise UnsupportedMediaTypeException(
                detail="Send the body with Content-Type: application/scim+json."
            )

    def read_creation(
        self, resource_type: ResourceType, body: bytes, content_type: str | None
    ) -> Resource[Any]:
        """Validate a POST body, once Entra ID's shapes are normalised."""
        return super().read_creation(resource_type, _normalised(body, _resource), content_type)

    def read_replacement(
        self, resource_type: ResourceType, body: bytes, content_type: str | None
    ) -> Resource[Any]:
        """Validate a PUT body, once Entra ID's shapes are normalised."""
        return super().read_replacement(resource_type, _normalised(body, _resource), content_type)

    def read_patch(
        self, resource_type: ResourceType, body: bytes, content_type: str | None
    ) -> PatchOp[Any]:
        """Validate a PATCH body (Entra ID's shapes normalised), within the operation cap."""
        patch_op = super().read_patch(resource_type, _normalised(body, _patch), content_type)
        operations = patch_op.operations or []
        if len(operations) > MAX_PATCH_OPERATIONS:
            raise InvalidValueException(
                detail=f"A PATCH request may hold at most {MAX_PATCH_OPERATIONS} operations; "
                f"this one holds {len(operations)}. Send them in several requests."
            )
        return patch_op

    def read_bulk(self, body: bytes, content_type: str | None) -> BulkPlan:
        """Validate a Bulk body, normalising each operation as a single request would be."""
        return super().read_bulk(_normalised(body, _bulk), content_type)

    def read_search(
        self, resource_types: list[ResourceType], payload: Any
    ) -> tuple[SearchRequest[Any], Any]:
        """Validate a search, within the limits of paging numbers and filter size."""
        if isinstance(payload, dict):
            text = next((v for k, v in payload.items() if k.lower() == "filter"), None)
            if isinstance(text, str) and len(text) > MAX_FILTER_LENGTH:
                raise InvalidFilterException(
                    detail=f"The filter is {len(text)} characters long: at most "
                    f"{MAX_FILTER_LENGTH} are accepted."
                )
        search_request, position = super().read_search(resource_types, payload)
        for name, value in (
            ("startIndex", search_request.start_index),
            ("count", search_request.count),
        ):
            if value is not None and value > MAX_INDEX:
                raise InvalidValueException(detail=f"{name} may be at most {MAX_INDEX}.")
        if search_request.filter is not None:
            check_filter_size(search_request.filter.ast)
        return search_request, position

    def bulk_success(
        self,
        base_url: str,
        operation: BulkOperation[Resource[Any]],
        outcome: dict[str, Any],
        resource: Resource[Any] | None,
    ) -> dict[str, Any]:
        """The outcome of a bulk operation: its location and version, read off the stored
        resource (no published copy of it is made just for two strings)."""
        assert operation.method is not None
        if resource is None or resource.meta is None:
            return super().bulk_success(base_url, operation, outcome, resource)
        outcome["status"] = {"POST": 201, "PUT": 200, "PATCH": 200, "DELETE": 204}[
            str(operation.method.value).upper()
        ]
        outcome["location"] = resource.meta.location or self.resource_location(
            base_url, self.get_resource_type_of(resource), str(resource.id)
        )
        outcome["version"] = resource.meta.version
        return outcome

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


def check_filter_size(node: Any, depth: int = 0, terms: list[int] | None = None) -> None:
    """Refuse a filter over the term or nesting limit (400 invalidFilter, at once)."""
    counted = [0] if terms is None else terms
    if depth > MAX_FILTER_DEPTH:
        raise InvalidFilterException(
            detail=f"The filter nests deeper than {MAX_FILTER_DEPTH} levels: simplify it."
        )
    if isinstance(node, LogicalExpr):
        for term in node.terms:
            check_filter_size(term, depth + 1, counted)
    elif isinstance(node, Not):
        check_filter_size(node.expr, depth + 1, counted)
    elif isinstance(node, ValuePath):
        check_filter_size(node.val_filter, depth + 1, counted)
    else:
        counted[0] += 1
        if counted[0] > MAX_FILTER_TERMS:
            raise InvalidFilterException(
                detail=f"The filter has more than {MAX_FILTER_TERMS} comparisons: split the "
                "search into several."
            )


def readable_validation_error(error: ValidationError) -> str:
    """``attribute: message`` for each error of a pydantic ValidationError, for a person."""
    parts = []
    for item in error.errors(include_url=False):
        location = ".".join(str(part) for part in item.get("loc", ()))
        parts.append(f"{location}: {item['msg']}" if location else str(item["msg"]))
    return "; ".join(parts) or "The request holds an invalid value."


class SellerScimHandler(ScimHandler):
    """scim2-server's handler with one lean path per operation (see the module docstring)."""

    storage: SellerStorage

    def __init__(
        self, service: ScimService, storage: SellerStorage, context: RequestContext | None
    ) -> None:
        super().__init__(service, storage)
        self.context = context
        self._bulk_roles: dict[int, Role] = {}

    # -- Answers ----------------------------------------------------------------------

    def _answer(self, document: dict[str, Any], status: HTTPStatus = HTTPStatus.OK) -> ScimResponse:
        meta = document["meta"]
        headers = {"Content-Location": meta["location"], "ETag": meta["version"]}
        if status == HTTPStatus.CREATED:
            headers["Location"] = meta["location"]
        return ScimResponse(status, document, headers)

    def _projected(
        self,
        resource_type: ResourceType,
        document: dict[str, Any],
        parameters: ResponseParameters[Any],
        context: Context,
        status: HTTPStatus = HTTPStatus.OK,
    ) -> ScimResponse:
        """A response that projects attributes: scim2-models does it, from our resource."""
        model = self.storage.model_of(resource_type, document)
        return self.service.resource_response(model, context, parameters, status=status)

    @staticmethod
    def _projects(parameters: Any) -> bool:
        return bool(parameters.attributes or parameters.excluded_attributes)

    # -- Reads ------------------------------------------------------------------------

    def query(self, request: ScimRequest) -> ScimResponse:
        """GET one resource: one read, rendered once."""
        with self.service.provider:
            target = self.service.route(request, Operation.query)
            resource_type = self.service.resource_type_at(cast(str, target.endpoint))
            self.service.authorize(request, target, resource_type)
            parameters = self.service.read_response_parameters(resource_type, request.query)
            with self.storage.operation():
                document = self.storage.document(resource_type, cast(str, target.resource_id))
            version = document["meta"]["version"]
            if not self.service.read_conditions(request).check(version, "GET"):
                return ScimResponse(HTTPStatus.NOT_MODIFIED, None, {"ETag": version})
            if self._projects(parameters):
                response = self._projected(
                    resource_type, document, parameters, Context.RESOURCE_QUERY_RESPONSE
                )
            else:
                response = self._answer(document)
            return self.service.me_response(request, target, response)

    def search(self, request: ScimRequest) -> ScimResponse:
        """GET a list or a filter."""
        with self.service.provider:
            target = self.service.route(request, Operation.search)
            resource_types = self.service.searched_types(target.endpoint)
            authorized = self.service.authorized_types(request, target, resource_types)
            search_request, position = self.service.read_search_query(resource_types, request.query)
            return self._search(request, resource_types, authorized, search_request, position)

    def search_with_body(self, request: ScimRequest) -> ScimResponse:
        """POST .search."""
        with self.service.provider:
            target = self.service.route(request, Operation.search_with_body)
            resource_types = self.service.searched_types(target.endpoint)
            authorized = self.service.authorized_types(request, target, resource_types)
            search_request, position = self.service.read_search_body(
                resource_types, request.body, request.header("Content-Type")
            )
            return self._search(request, resource_types, authorized, search_request, position)

    def _search(
        self,
        request: ScimRequest,
        resource_types: list[ResourceType],
        authorized: list[ResourceType],
        search_request: SearchRequest[Any],
        position: Any,
    ) -> ScimResponse:
        if self._projects(search_request):
            with self.storage.operation():
                page = search_page(self.storage, authorized, search_request, position=position)
            return self.service.search_response(
                request.base_url, resource_types, page, search_request
            )
        with self.storage.operation():
            found = self.storage.search_documents(authorized, search_request, position)
        body: dict[str, Any] = {"schemas": [LIST_RESPONSE], "totalResults": found.total}
        by_cursor = search_request.cursor is not None
        if not by_cursor:
            body["startIndex"] = search_request.start_index
        body["itemsPerPage"] = len(found.documents)
        if by_cursor and search_request.count != 0:
            seal = self.service._seal  # scim2-server's cursor sealing (signed, expiring)
            for key, where in (("nextCursor", found.next), ("previousCursor", found.previous)):
                sealed = seal(resource_types, search_request, where)
                if sealed is not None:
                    body[key] = sealed
        body["Resources"] = found.documents
        return ScimResponse(HTTPStatus.OK, body)

    # -- Writes -----------------------------------------------------------------------

    def create(self, request: ScimRequest) -> ScimResponse:
        """POST a resource: validated once, written once, rendered once."""
        with self.service.provider:
            target = self.service.route(request, Operation.create)
            resource_type = self.service.resource_type_at(cast(str, target.endpoint))
            self.service.authorize(request, target, resource_type)
            resource = self.service.read_creation(
                resource_type, request.body, request.header("Content-Type")
            )
            with self.storage.operation():
                document = self.storage.create_document(resource_type, resource)
            return self._answer(document, HTTPStatus.CREATED)

    def replace(self, request: ScimRequest) -> ScimResponse:
        """PUT a resource (the role it asks for checked by the seller rules)."""
        with self.service.provider:
            target = self.service.route(request, Operation.replace)
            resource_type = self.service.resource_type_at(cast(str, target.endpoint))
            self.service.authorize(request, target, resource_type)
            parameters = self.service.read_response_parameters(resource_type, request.query)
            replacement = self.service.read_replacement(
                resource_type, request.body, request.header("Content-Type")
            )
            if self.context is not None:
                self.context.requested_role = _role_in(request.body)
            conditions = self.service.read_conditions(request)
            resource_id = cast(str, target.resource_id)
            return self._write_and_answer(
                request,
                target,
                resource_type,
                parameters,
                conditions,
                lambda: self._replace(resource_type, resource_id, replacement, conditions),
            )

    def patch(self, request: ScimRequest) -> ScimResponse:
        """PATCH a resource: answered 200 with it (Okta and Entra read it back)."""
        with self.service.provider:
            target = self.service.route(request, Operation.patch)
            resource_type = self.service.resource_type_at(cast(str, target.endpoint))
            self.service.authorize(request, target, resource_type)
            parameters = self.service.read_response_parameters(resource_type, request.query)
            resource_id = cast(str, target.resource_id)
            try:
                patch_op = self.service.read_patch(
                    resource_type, request.body, request.header("Content-Type")
                )
            except MutabilityException as error:
                raise self._role_refusal(error, resource_type, resource_id) from error
            _refuse_removals(patch_op)
            conditions = self.service.read_conditions(request)
            return self._write_and_answer(
                request,
                target,
                resource_type,
                parameters,
                conditions,
                lambda: self._patch(resource_type, resource_id, patch_op, conditions),
            )

    def delete(self, request: ScimRequest) -> ScimResponse:
        """DELETE a resource (a user is deactivated and hidden, never destroyed)."""
        with self.service.provider:
            target = self.service.route(request, Operation.delete)
            resource_type = self.service.resource_type_at(cast(str, target.endpoint))
            self.service.authorize(request, target, resource_type)
            conditions = self.service.read_conditions(request)
            with self.storage.operation():
                self.delete_resource(resource_type, cast(str, target.resource_id), conditions)
            return self.service.me_response(request, target, self.service.deletion_response())

    def _write_and_answer(
        self,
        request: ScimRequest,
        target: Target,
        resource_type: ResourceType,
        parameters: ResponseParameters[Any],
        conditions: Conditions,
        write: Callable[[], dict[str, Any]],
    ) -> ScimResponse:
        """Write (retried on a concurrent change) and answer 200 with the resource as the
        client asked to see it (PUT and PATCH)."""
        with self.storage.operation():
            document = self._retrying(
                conditions, resource_type, cast(str, target.resource_id), write
            )
        if self._projects(parameters):
            response = self._projected(
                resource_type, document, parameters, Context.RESOURCE_REPLACEMENT_RESPONSE
            )
        else:
            response = self._answer(document)
        return self.service.me_response(request, target, response)

    def _retrying(
        self,
        conditions: Conditions,
        resource_type: ResourceType,
        resource_id: str,
        write: Callable[[], T],
    ) -> T:
        """Run a read-then-write again when the resource changed in between, unless the
        client made it conditional (If-Match): then the 412 is its answer. After
        ``HOLD_AFTER`` misses the resource is held from read to write."""
        for attempt in range(WRITE_ATTEMPTS):
            try:
                if attempt < HOLD_AFTER:
                    return write()
                with self.storage.held(resource_type, resource_id):
                    return write()
            except ConcurrentChange:
                if conditions.if_match or attempt == WRITE_ATTEMPTS - 1:
                    raise
                # Writers that met head-on try again apart (full jitter, growing to 100 ms):
                # in lockstep, the same ones would meet again.
                time.sleep(random.uniform(0, min(0.1, 0.002 * 2**attempt)))
        raise AssertionError("unreachable")

    def _patch(
        self,
        resource_type: ResourceType,
        resource_id: str,
        patch_op: PatchOp[Any],
        conditions: Conditions,
    ) -> dict[str, Any]:
        document = self.storage.document(resource_type, resource_id)
        current = self.storage.model_of(resource_type, document)
        patched = self.service.apply_patch(current, patch_op, conditions)
        if patched is None:
            return document
        return self.storage.update_document(
            resource_type, patched, expected_version=document["meta"]["version"]
        )

    def _replace(
        self,
        resource_type: ResourceType,
        resource_id: str,
        replacement: Resource[Any],
        conditions: Conditions,
    ) -> dict[str, Any]:
        document = self.storage.document(resource_type, resource_id)
        self._check_role(document)
        current = self.storage.model_of(resource_type, document)
        replaced = self.service.apply_replacement(current, replacement, conditions)
        if replaced is None:
            return document
        return self.storage.update_document(
            resource_type, replaced, expected_version=document["meta"]["version"]
        )

    def _check_role(self, document: dict[str, Any]) -> None:
        """The role is read-only: a PUT that asks for another one is refused by the rules."""
        current = (document.get(SELLER_USER_SCHEMA) or {}).get("role")
        if self.context is None or current not in (Role.primary.value, Role.secondary.value):
            return
        try:
            check_role_change(Role(current), self.context.requested_role)
        except errors.DomainError as error:
            raise scim_error(error) from error

    def _role_refusal(
        self, error: MutabilityException, resource_type: ResourceType, resource_id: str
    ) -> SCIMException:
        """A PATCH naming the read-only role is refused before anything is read; whose role
        it was decides how (the seller rules: 403 for the primary)."""
        if not _about_role(error.detail) or resource_type.name != "User":
            return error
        role = self.storage.role_of(resource_id)
        if role is None:
            return error
        return scim_error(refuse_role_write(role))

    # Bulk operations use scim2-server's steps; these keep them on the same rules.

    def patch_resource(
        self,
        resource_type: ResourceType,
        resource_id: str,
        patch_op: PatchOp[Any],
        conditions: Conditions,
    ) -> Resource[Any]:
        _refuse_removals(patch_op)
        document = self._retrying(
            conditions,
            resource_type,
            resource_id,
            lambda: self._patch(resource_type, resource_id, patch_op, conditions),
        )
        return self.storage.model_of(resource_type, document)

    def replace_resource(
        self,
        resource_type: ResourceType,
        current: Resource[Any],
        replacement: Resource[Any],
        conditions: Conditions,
    ) -> Resource[Any]:
        resource_id = str(current.id)
        document = self._retrying(
            conditions,
            resource_type,
            resource_id,
            lambda: self._replace(resource_type, resource_id, replacement, conditions),
        )
        return self.storage.model_of(resource_type, document)

    def delete_resource(
        self, resource_type: ResourceType, resource_id: str, conditions: Conditions
    ) -> None:
        def delete() -> None:
            document = self.storage.document(resource_type, resource_id)
            version = document["meta"]["version"]
            if self.service.etag_supported:
                conditions.check(version, "DELETE")
            self.storage.delete(resource_type, resource_id, expected_version=version)

        self._retrying(conditions, resource_type, resource_id, delete)

    def bulk(self, request: ScimRequest) -> ScimResponse:
        """Run a Bulk request; each PUT keeps the role its body asked for (validation drops it)."""
        self._bulk_roles = _bulk_roles_in(request.body)
        return super().bulk(request)

    def apply_bulk_operation(
        self, resource_type: ResourceType, operation: BulkOperation[Resource[Any]]
    ) -> Resource[Any] | None:
        """A Bulk POST is written as a single POST is; its outcome keeps only the new
        resource's id and version."""
        if operation.method == BulkOperation.Method.post:
            data = cast(Resource[Any], operation.data)
            document = self.storage.create_document(resource_type, data)
            return self.storage.created_reference(resource_type, document)
        return super().apply_bulk_operation(resource_type, operation)

    def run_bulk_step(
        self, request: ScimRequest, plan: BulkPlan, step: BulkStep
    ) -> tuple[dict[str, Any], Resource[Any] | None]:
        """Run one Bulk operation as the single request would run: a PUT with the role its
        body asked for, a PATCH of the read-only role refused by the seller rules."""
        operation = plan.operation(step)
        if self.context is not None:
            self.context.requested_role = (
                self._bulk_roles.get(step.index)
                if operation.method == BulkOperation.Method.put
                else None
            )
        result, resource = super().run_bulk_step(request, plan, step)
        response = result.get("response")
        if (
            operation.method == BulkOperation.Method.patch
            and isinstance(response, Error)
            and response.scim_type == "mutability"
            and _about_role(response.detail)
        ):
            resolved = plan.resolve(step)
            role = self.storage.role_of(str(resolved.resource_id or ""))
            if role is not None:
                outcome = {k: v for k, v in result.items() if k not in ("status", "response")}
                result = self.service.bulk_failure(outcome, scim_error(refuse_role_write(role)))
        return result, resource


def _refuse_removals(patch_op: PatchOp[Any]) -> None:
    """``active`` and the seller extension cannot be removed: a user is active or not, and
    always has a role. Refused with the reason, never a silent 200."""
    for operation in patch_op.operations or []:
        if str(getattr(operation.op, "value", operation.op)).lower() != "remove":
            continue
        path = str(operation.path or "").strip().lower()
        if path in ("active", "urn:ietf:params:scim:schemas:core:2.0:user:active", _SELLER):
            what = "active" if path.endswith("active") else "the seller extension"
            raise MutabilityException(
                detail=f"{what} cannot be removed: replace active with false to deactivate a "
                "user; permissions and notifications are removed one by one."
            )


def _about_role(detail: str | None) -> bool:
    """Whether a mutability error is about the seller extension's role."""
    return f"{SELLER_USER_SCHEMA}:role".lower() in (detail or "").lower()


# -- Reading the raw body: what validation drops ------------------------------------------


def _get(payload: Any, name: str) -> Any:
    """A member of a JSON object, whatever the case of its name (SCIM names are case-insensitive)."""
    if not isinstance(payload, dict):
        return None
    return next((v for k, v in payload.items() if k.lower() == name.lower()), None)


def _role_of(payload: Any) -> Role | None:
    """The role a User body asks for, if it names one."""
    extension = _get(payload, SELLER_USER_SCHEMA)
    role = _get(extension, "role")
    return Role(role) if role in (Role.primary.value, Role.secondary.value) else None


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


# -- Entra ID's shapes --------------------------------------------------------------------


def _manager(value: Any) -> Any:
    """The enterprise manager as the schema defines it, from what Entra ID sends: its id
    alone, or ``{"Value": id}`` without ``$ref`` (scim2-models requires ``$ref``)."""
    if isinstance(value, str):
        value = {"value": value}
    if not isinstance(value, dict):
        return value
    names = {"value": "value", "$ref": "$ref", "displayname": "displayName"}
    normalised = {names.get(k.lower(), k): v for k, v in value.items()}
    if normalised.get("value") and not normalised.get("$ref"):
        normalised["$ref"] = f"Users/{normalised['value']}"
    return normalised


def _enterprise(extension: Any) -> bool:
    changed = False
    if isinstance(extension, dict):
        for key, value in list(extension.items()):
            if key.lower() == "manager":
                fixed = _manager(value)
                if fixed != value:
                    extension[key] = fixed
                    changed = True
    return changed


def _resource(payload: Any) -> bool:
    """Normalise a User body (or a path-less PATCH value) in place; tell whether it changed."""
    changed = False
    if isinstance(payload, dict):
        for key, value in list(payload.items()):
            if key.lower() == _ENTERPRISE:
                changed = _enterprise(value) or changed
            elif key.lower() == _MANAGER_PATH:
                fixed = _manager(value)
                if fixed != value:
                    payload[key] = fixed
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
            fixed = _manager(value)
            if fixed != value:
                operation[value_key] = fixed
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
