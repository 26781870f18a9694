"""The storage behind scim2-server: one seller's Users and Groups, through the use cases.

SCIM resource in, domain draft out; domain object in, SCIM JSON out (``scim.render``),
once each. Reads go through the store's ports; every write goes through
``connector.services``, so that every seller rule holds whichever way a change arrives.
Each call is its own unit of work: reads never wait for writers, and a write holds the
store's write lock only for its final statements.

The ``*_document`` methods serve our handler's lean paths (plain JSON, no model); the
:class:`ScimStorage` methods wrap them in scim2-models resources for scim2-server and for
its storage contract.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Union, cast

from scim2_models import (
    ForbiddenException,
    InvalidValueException,
    ListResponse,
    MutabilityException,
    NotFoundException,
    PreconditionFailedException,
    Resource,
    ResourceType,
    ResponseParameters,
    SCIMException,
    ScimProvider,
    SearchRequest,
    UniquenessException,
)
from scim2_server.storage import ScimStorage, SearchPage
from scim2_server.utils import parametrize

from connector.bootstrap import Connector
from connector.domain import errors
from connector.domain.drafts import Actor
from connector.domain.model import PermissionSet, Role, SellerAccount, SellerUser, utcnow
from connector.ports.store import SearchQuery, UnitOfWork
from connector.services import permission_sets as set_cases
from connector.services import sellers as seller_cases
from connector.services import users as user_cases
from scim import mapping
from scim.render import Renderer, version_of


class ConcurrentChange(PreconditionFailedException):
    """The resource changed between our read and our write (412 when the client sent
    If-Match; otherwise the handler reads it again and retries)."""


def scim_error(error: errors.DomainError) -> SCIMException:
    """The SCIM error of a refused change; the detail is the domain's, for a person."""
    kinds: list[tuple[type[errors.DomainError], type[SCIMException]]] = [
        (errors.NotFound, NotFoundException),
        (errors.Forbidden, ForbiddenException),
        (errors.Uniqueness, UniquenessException),
        (errors.InvalidValue, InvalidValueException),
        (errors.Mutability, MutabilityException),
        (errors.VersionMismatch, ConcurrentChange),
    ]
    for domain_kind, scim_kind in kinds:
        if isinstance(error, domain_kind):
            return scim_kind(detail=error.detail)
    return InvalidValueException(detail=error.detail)


@contextmanager
def domain_errors() -> Iterator[None]:
    """Raise domain refusals as SCIM errors."""
    try:
        yield
    except errors.DomainError as error:
        raise scim_error(error) from error


_LIST_RESPONSES: dict[int, tuple[ScimProvider, type[Any]]] = {}


def keep_list_response_model(provider: ScimProvider) -> None:
    """Keep the provider's ListResponse model alive for as long as the process runs.

    scim2-server builds ``ListResponse[Union[models]]`` for every search response it
    renders, and pydantic caches parametrized models only weakly: once collected, the next
    search builds it again (milliseconds of schema generation).
    """
    if id(provider) not in _LIST_RESPONSES:
        models = tuple(provider.model_for(rt) for rt in provider.resource_types)
        _LIST_RESPONSES[id(provider)] = (provider, parametrize(ListResponse, Union[models]))  # noqa: UP007


@dataclass
class RequestContext:
    """What one request carries besides its path and body, shared by the handler and the
    storage of that request (scim2-server's storage interface has no room for it)."""

    seller_id: str
    actor: Actor
    requested_role: Role | None = None
    """The role a PUT body asked for: validation drops read-only attributes, yet a PUT that
    asks for another role must be refused."""


@dataclass
class DocumentPage:
    """A page of rendered resources, with its paging positions."""

    total: int
    documents: list[dict[str, Any]]
    next: Any = None
    previous: Any = None


def _kind(resource_type: ResourceType) -> str:
    if resource_type.name in ("User", "Group"):
        return str(resource_type.name)
    raise NotFoundException(detail=f"Unknown resource type {resource_type.name}")


class SellerStorage(ScimStorage):
    """A ScimStorage scoped to one seller: it can neither see nor touch another seller's data."""

    supports_cursors = True

    def __init__(
        self,
        connector: Connector,
        context: RequestContext,
        renderer: Renderer,
        provider: ScimProvider,
    ) -> None:
        self.connector = connector
        self.context = context
        self.renderer = renderer
        self.provider = provider
        self.catalogue = connector.catalogue
        self._read: dict[str, SellerUser | PermissionSet] = {}
        """What ``document`` read, by id: a write of the same version need not read it again."""
        self._groups: dict[str, list[PermissionSet]] = {}
        """The permission sets of the users ``document`` read (a user's write keeps them)."""

    # -- Helpers -----------------------------------------------------------------------

    @contextmanager
    def operation(self) -> Iterator[None]:
        """Domain refusals become SCIM errors (each call is its own unit of work)."""
        with domain_errors():
            yield

    def _model(self, resource_type: ResourceType) -> type[Resource[Any]]:
        return cast(type[Resource[Any]], self.provider.model_for(resource_type))

    def model_of(self, resource_type: ResourceType, document: dict[str, Any]) -> Resource[Any]:
        """A rendered resource as scim2-models' model (for PATCH and projections)."""
        return self._model(resource_type).model_validate(document)

    def stored_model(self, resource_type: ResourceType, document: dict[str, Any]) -> Resource[Any]:
        """A resource as scim2-server expects a storage to return it: without a location
        (its service publishes it)."""
        meta = {k: v for k, v in document["meta"].items() if k != "location"}
        return self.model_of(resource_type, {**document, "meta": meta})

    def _seller(self, uow: UnitOfWork) -> SellerAccount:
        """The seller, read fresh in the write's own unit of work: writes apply its current
        plan and partners."""
        seller = uow.sellers.get(self.context.seller_id)
        if seller is None:
            raise NotFoundException(detail="The seller of this token no longer exists.")
        return seller

    def _render_users(
        self, users: list[SellerUser], groups: dict[str, Any]
    ) -> list[dict[str, Any]]:
        now = utcnow()
        return [self.renderer.user(u, groups.get(u.id, []), now) for u in users]

    # -- Reads -------------------------------------------------------------------------

    def document(self, resource_type: ResourceType, resource_id: str) -> dict[str, Any]:
        """One resource of this seller, rendered.

        :raises NotFoundException: for another seller's resource too.
        """
        kind = _kind(resource_type)
        seller_id = self.context.seller_id
        with self.connector.uow() as uow:
            if kind == "User":
                user = uow.users.get(seller_id, resource_id)
                if user is None:
                    raise NotFoundException(detail=f"User {resource_id} not found.")
                groups = uow.permission_sets.of_user(user.id)
                self._read[user.id] = user
                self._groups[user.id] = groups
                return self.renderer.user(user, groups)
            found = uow.permission_sets.get(seller_id, resource_id)
        if found is None:
            raise NotFoundException(detail=f"Group {resource_id} not found.")
        self._read[found.id] = found
        return self.renderer.group(found)

    def get(
        self,
        resource_type: ResourceType,
        resource_id: str,
        *,
        response_parameters: ResponseParameters[Any] | None = None,
    ) -> Resource[Any]:
        return self.stored_model(resource_type, self.document(resource_type, resource_id))

    def search_documents(
        self,
        resource_types: list[ResourceType],
        search_request: SearchRequest[Any],
        position: Any = None,
    ) -> DocumentPage:
        """A page of a search, rendered."""
        query = SearchQuery(
            kinds=[(_kind(rt), self._model(rt)) for rt in resource_types],
            filter=str(search_request.filter) if search_request.filter is not None else None,
            sort_by=str(search_request.sort_by) if search_request.sort_by is not None else None,
            descending=search_request.sort_by is not None
            and search_request.sort_order == SearchRequest.SortOrder.descending,
            start=search_request.start_index_0 or 0,
            count=search_request.count,
            cursor=search_request.cursor is not None,
            position=position,
        )
        seller_id = self.context.seller_id
        with self.connector.uow() as uow:
            page = uow.search.page(seller_id, query)
            user_ids = [i for k, i in page.found if k == "User"]
            set_ids = [i for k, i in page.found if k == "Group"]
            users = uow.users.get_many(seller_id, user_ids) if user_ids else []
            groups = uow.permission_sets.of_users(user_ids) if user_ids else {}
            sets = uow.permission_sets.get_many(seller_id, set_ids) if set_ids else []
        rendered: dict[str, dict[str, Any]] = {}
        for user, document in zip(users, self._render_users(users, groups), strict=True):
            rendered[user.id] = document
        for permission_set in sets:
            rendered[permission_set.id] = self.renderer.group(permission_set)
        documents = [rendered[i] for _, i in page.found if i in rendered]
        return DocumentPage(page.total, documents, page.next, page.previous)

    def search(
        self,
        resource_types: list[ResourceType],
        search_request: SearchRequest[Any],
        *,
        position: Any = None,
    ) -> SearchPage:
        page = self.search_documents(resource_types, search_request, position)
        by_name = {rt.name: rt for rt in resource_types}
        resources = [self.model_of(by_name[d["meta"]["resourceType"]], d) for d in page.documents]
        return SearchPage(page.total, resources, page.next, page.previous)

    # -- Writes ------------------------------------------------------------------------

    def create_document(
        self, resource_type: ResourceType, resource: Resource[Any]
    ) -> dict[str, Any]:
        """Create a resource from a validated body; the stored result, rendered."""
        with domain_errors(), self.connector.uow() as uow:
            seller = self._seller(uow)
            if _kind(resource_type) == "User":
                user, restored = user_cases.provision_user(
                    uow,
                    self.catalogue,
                    seller,
                    mapping.user_draft(resource),
                    self.context.actor,
                    invitation_lifespan=self.connector.settings.invitation_lifespan,
                    max_pending_invitations=self.connector.settings.max_pending_invitations,
                )
                # A new user is in no permission set yet; a restored one may be.
                groups = uow.permission_sets.of_user(user.id) if restored else []
                return self.renderer.user(user, groups)
            created = set_cases.create_permission_set(
                uow, self.catalogue, seller, mapping.group_draft(resource), self.context.actor
            )
            return self.renderer.group(created)

    def create(self, resource_type: ResourceType, resource: Resource[Any]) -> Resource[Any]:
        return self.stored_model(resource_type, self.create_document(resource_type, resource))

    def update_document(
        self,
        resource_type: ResourceType,
        resource: Resource[Any],
        *,
        expected_version: str | None = None,
    ) -> dict[str, Any]:
        """Replace a resource with a validated state; the stored result, rendered.

        :raises ConcurrentChange: when it changed since ``expected_version``.
        """
        version = version_of(expected_version)
        if expected_version is not None and version is None:
            raise PreconditionFailedException(
                detail=f"{expected_version} is not a version of this resource."
            )
        resource_id = str(resource.id)
        current = self._read.get(resource_id)
        if current is not None and current.version != version:
            current = None
        with domain_errors(), self.connector.uow() as uow:
            seller = self._seller(uow)
            if _kind(resource_type) == "User":
                draft = mapping.user_draft(resource)
                if self.context.requested_role is not None:
                    draft.requested_role = self.context.requested_role
                user = user_cases.replace_user(
                    uow,
                    self.catalogue,
                    seller,
                    resource_id,
                    draft,
                    self.context.actor,
                    expected_version=version,
                    current=current if isinstance(current, SellerUser) else None,
                )
                groups = self._groups.get(user.id)
                if groups is None:
                    groups = uow.permission_sets.of_user(user.id)
                return self.renderer.user(user, groups)
            updated = set_cases.replace_permission_set(
                uow,
                self.catalogue,
                seller,
                resource_id,
                mapping.group_draft(resource),
                self.context.actor,
                expected_version=version,
                current=current if isinstance(current, PermissionSet) else None,
            )
            return self.renderer.group(updated)

    def update(
        self,
        resource_type: ResourceType,
        resource: Resource[Any],
        *,
        expected_version: str | None = None,
    ) -> Resource[Any]:
        document = self.update_document(resource_type, resource, expected_version=expected_version)
        return self.stored_model(resource_type, document)

    def delete(
        self,
        resource_type: ResourceType,
        resource_id: str,
        *,
        expected_version: str | None = None,
    ) -> None:
        version = version_of(expected_version)
        with domain_errors(), self.connector.uow() as uow:
            seller = self._seller(uow)
            if _kind(resource_type) == "User":
                user_cases.delete_user(
                    uow,
                    seller,
                    resource_id,
                    self.context.actor,
                    expected_version=version,
                )
            else:
                set_cases.delete_permission_set(
                    uow,
                    seller,
                    resource_id,
                    self.context.actor,
                    expected_version=version,
                )

    def role_of(self, resource_id: str) -> Role | None:
        """The role of one of this seller's users (None for anything else)."""
        with self.connector.uow() as uow:
            user = uow.users.get(self.context.seller_id, resource_id)
        return user.role if user else None


def authenticate(connector: Connector, presented: str) -> tuple[str, str] | None:
    """(seller id, token id) of a presented bearer token, or None."""
    found = seller_cases.authenticate(connector.uow(), presented)
    return (found[0].id, found[1].id) if found else None
