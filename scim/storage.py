"""The storage behind scim2-server: one seller's Users and Groups, and the two conversions
between SCIM and the domain (once each way per request).

SCIM resource in, domain draft out (``user_draft``, ``group_draft``); domain object in, SCIM
JSON out (:class:`Renderer`). Reads go through the store's ports; every write goes through
``connector.services``, so that every seller rule holds whichever way a change arrives.
Each call is its own unit of work: reads never wait for writers, and a write holds the
store's write lock only for its final statements.

The representation is the one scim2-server publishes for our models (attribute names,
absolute ``$ref`` and ``meta.location`` URLs, ``W/"<version>"`` entity tags, UTC times ending
in ``Z``), written directly: a page of 100 users costs a few milliseconds, not the hundred of
a model per resource. Requests that project attributes (``attributes`` /
``excludedAttributes``) still go through scim2-models, from this same representation. The
``*_document`` methods serve the handler's lean paths (plain JSON, no model); the
:class:`ScimStorage` methods wrap them in scim2-models resources for scim2-server and for its
storage contract.
"""

from __future__ import annotations

import datetime as dt
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
from connector.domain.catalogue import Catalogue
from connector.domain.drafts import Actor, PermissionSetDraft, UserDraft
from connector.domain.model import (
    Email,
    PermissionSet,
    Role,
    SellerAccount,
    SellerUser,
    is_administrator,
    utcnow,
)
from connector.ports.schemas import (
    ENTERPRISE_SCHEMA,
    GROUP_SCHEMA,
    SELLER_GROUP_SCHEMA,
    SELLER_USER_SCHEMA,
    USER_SCHEMA,
)
from connector.ports.store import SearchQuery, UnitOfWork
from connector.services import permission_sets as set_cases
from connector.services import sellers as seller_cases
from connector.services import users as user_cases

# -- SCIM JSON of domain objects ------------------------------------------------------------

MEMBER_DISPLAYS = "_memberDisplays"
"""Where a group's profile keeps the display names clients gave its members. Not a SCIM
attribute (the leading underscore cannot be one), so filters and responses never see it."""


def etag(version: int) -> str:
    """The weak entity tag of a stored version."""
    return f'W/"{version}"'


def version_of(tag: str | None) -> int | None:
    """The stored version an entity tag names, or None when it names none of ours."""
    if not tag:
        return None
    digits = tag.removeprefix("W/").strip('"')
    return int(digits) if digits.isdigit() and len(digits) < 18 else None


def timestamp(value: dt.datetime) -> str:
    """A time as scim2-models writes it: UTC, ISO 8601, ``Z``."""
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return timestamp(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def permissions_out(permissions: dict[str, Any]) -> list[dict[str, str]]:
    """A permissions map as the seller extension lists it."""
    return [{"category": c, "level": getattr(lv, "value", lv)} for c, lv in permissions.items()]


class Renderer:
    """Renders users and permission sets for one deployment's base URL and catalogue."""

    def __init__(
        self,
        base_url: str,
        catalogue: Catalogue,
        user_extensions: set[str],
        group_extensions: set[str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.catalogue = catalogue
        self.user_extensions = user_extensions
        self.group_extensions = (
            {SELLER_GROUP_SCHEMA} if group_extensions is None else group_extensions
        )
        self.seller_extension = SELLER_USER_SCHEMA in user_extensions

    def location(self, kind: str, resource_id: str) -> str:
        """The URL of a resource (``kind``: ``Users`` or ``Groups``)."""
        return f"{self.base_url}/{kind}/{resource_id}"

    def _meta(
        self, resource_type: str, resource_id: str, entity: SellerUser | PermissionSet
    ) -> dict[str, str]:
        return {
            "resourceType": resource_type,
            "created": timestamp(entity.created_at),
            "lastModified": timestamp(entity.updated_at),
            "location": self.location(f"{resource_type}s", resource_id),
            "version": etag(entity.version),
        }

    def user(
        self, user: SellerUser, groups: list[PermissionSet], now: dt.datetime | None = None
    ) -> dict[str, Any]:
        """The SCIM User of a seller user, with its groups and effective administrator flag."""
        profile = user.profile
        schemas = [USER_SCHEMA]
        schemas.extend(
            urn
            for urn in profile
            if urn.startswith("urn:") and urn in self.user_extensions and urn != SELLER_USER_SCHEMA
        )
        if self.seller_extension:
            schemas.append(SELLER_USER_SCHEMA)
        body: dict[str, Any] = {
            "schemas": schemas,
            "id": user.id,
            "meta": self._meta("User", user.id, user),
        }
        if user.external_id is not None:
            body["externalId"] = user.external_id
        body["userName"] = user.user_name
        name = dict(profile.get("name") or {})
        if user.given_name is not None:
            name["givenName"] = user.given_name
        if user.family_name is not None:
            name["familyName"] = user.family_name
        if name:
            body["name"] = name
        if user.display_name is not None:
            body["displayName"] = user.display_name
        for key, value in profile.items():
            if key == "name" or key.startswith("urn:"):
                continue
            body[key] = _jsonable(value)
        body["active"] = user.active
        if user.emails:
            # primary is a boolean the domain always holds: false is a value, not an absence.
            body["emails"] = [
                {k: v for k, v in vars(e).items() if v is not None} for e in user.emails
            ]
        if groups:
            body["groups"] = [
                {
                    "value": g.id,
                    "$ref": self.location("Groups", g.id),
                    "display": g.display_name,
                    "type": "direct",
                }
                for g in groups
            ]
        for urn in schemas[1:]:
            if urn != SELLER_USER_SCHEMA:
                body[urn] = self._extension(urn, profile[urn])
        if not self.seller_extension:
            return body
        extension: dict[str, Any] = {"role": user.role.value}
        if user.permissions:
            extension["permissions"] = permissions_out(user.permissions)
        if user.notifications:
            extension["notifications"] = list(user.notifications)
        extension["administrator"] = is_administrator(self.catalogue, user, groups)
        if user.invitation is not None:
            state = user.invitation.current_state(now or utcnow())
            extension["invitationState"] = state.value
            if user.invitation.expires_at:
                extension["invitationExpires"] = timestamp(user.invitation.expires_at)
        body[SELLER_USER_SCHEMA] = extension
        return body

    def _extension(self, urn: str, value: Any) -> Any:
        value = _jsonable(value)
        if urn == ENTERPRISE_SCHEMA and isinstance(value, dict):
            manager = value.get("manager")
            if isinstance(manager, dict) and manager.get("value"):
                value["manager"] = {
                    **manager,
                    "$ref": self.location("Users", str(manager["value"])),
                }
        return value

    def group(self, permission_set: PermissionSet) -> dict[str, Any]:
        """The SCIM Group of a permission set."""
        schemas = [GROUP_SCHEMA]
        extended = bool(permission_set.permissions) and SELLER_GROUP_SCHEMA in self.group_extensions
        if extended:
            schemas.append(SELLER_GROUP_SCHEMA)
        body: dict[str, Any] = {
            "schemas": schemas,
            "id": permission_set.id,
            "meta": self._meta("Group", permission_set.id, permission_set),
        }
        if permission_set.external_id is not None:
            body["externalId"] = permission_set.external_id
        body["displayName"] = permission_set.display_name
        for key, value in permission_set.profile.items():
            if key != MEMBER_DISPLAYS and not key.startswith("urn:"):
                body[key] = _jsonable(value)
        if permission_set.member_ids:
            displays = permission_set.profile.get(MEMBER_DISPLAYS) or {}
            body["members"] = [
                {"value": m, "$ref": self.location("Users", m), "type": "User"}
                | ({"display": displays[m]} if m in displays else {})
                for m in permission_set.member_ids
            ]
        if extended:
            body[SELLER_GROUP_SCHEMA] = {"permissions": permissions_out(permission_set.permissions)}
        return body


# -- Drafts of validated SCIM resources --------------------------------------------------

# Attributes the domain keeps in columns, or that are never stored (password) or derived (groups).
_USER_OWN = {
    "schemas",
    "id",
    "meta",
    "userName",
    "externalId",
    "displayName",
    "emails",
    "active",
    "groups",
    "password",
}
_GROUP_OWN = {"schemas", "id", "meta", "displayName", "externalId", "members"}


def _permissions_of(entries: Any) -> dict[str, str]:
    """The permissions list of a SCIM body, as category -> level (the last one wins)."""
    result: dict[str, str] = {}
    for entry in entries or []:
        if isinstance(entry, dict) and entry.get("category") is not None:
            result[str(entry["category"])] = str(entry.get("level") or "none")
    return result


def user_draft(resource: Resource[Any]) -> UserDraft:
    """Read a validated SCIM User into the draft the use cases take."""
    body = resource.model_dump()
    name = dict(body.get("name") or {})
    given = name.pop("givenName", None)
    family = name.pop("familyName", None)
    extension = body.get(SELLER_USER_SCHEMA) or {}
    profile = {k: v for k, v in body.items() if k not in _USER_OWN and k != SELLER_USER_SCHEMA}
    if name:
        profile["name"] = name
    else:
        profile.pop("name", None)
    role = extension.get("role")
    return UserDraft(
        user_name=body.get("userName") or "",
        emails=[
            Email(
                value=e["value"],
                type=e.get("type"),
                primary=bool(e.get("primary")),
                display=e.get("display"),
            )
            for e in body.get("emails") or []
            if e.get("value")
        ],
        given_name=given,
        family_name=family,
        display_name=body.get("displayName"),
        external_id=body.get("externalId"),
        # Absent means "unchanged" on a replace: a PUT that leaves it out must not
        # reactivate a user who left.
        active=None if body.get("active") is None else bool(body["active"]),
        permissions=_permissions_of(extension.get("permissions")),
        notifications=[str(n) for n in extension.get("notifications") or []],
        profile=profile,
        requested_role=Role(role) if role in ("primary", "secondary") else None,
    )


def group_draft(resource: Resource[Any]) -> PermissionSetDraft:
    """Read a validated SCIM Group into the draft the use cases take."""
    body = resource.model_dump()
    extension = body.get(SELLER_GROUP_SCHEMA) or {}
    members = [m for m in body.get("members") or [] if m.get("value")]
    profile = {k: v for k, v in body.items() if k not in _GROUP_OWN and k != SELLER_GROUP_SCHEMA}
    # Clients (Okta, Entra, scim2-tester) send a member's display and read it back.
    displays = {str(m["value"]): m["display"] for m in members if m.get("display")}
    if displays:
        profile[MEMBER_DISPLAYS] = displays
    return PermissionSetDraft(
        display_name=body.get("displayName") or "",
        external_id=body.get("externalId"),
        permissions=_permissions_of(extension.get("permissions")),
        member_ids=[str(m["value"]) for m in members],
        profile=profile,
        member_types=[str(m.get("type") or "User") for m in members],
    )


# -- The storage ----------------------------------------------------------------------


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
        self._invitations = user_cases.InvitationCap(connector.settings.max_pending_invitations)
        """The request's bound on the seller's pending invitations (a Bulk counts once)."""
        self._held: UnitOfWork | None = None
        """The unit of work of a ``held`` write, which reads and writes join."""

    # -- Helpers -----------------------------------------------------------------------

    @contextmanager
    def operation(self) -> Iterator[None]:
        """Domain refusals become SCIM errors (each call is its own unit of work)."""
        with domain_errors():
            yield

    def _uow(self) -> UnitOfWork:
        """The held write's unit of work, or a new one."""
        return self._held if self._held is not None else self.connector.uow()

    @contextmanager
    def held(self, resource_type: ResourceType, resource_id: str) -> Iterator[None]:
        """Read and write one resource with its other writers kept waiting, so that this
        write cannot meet a concurrent change: for a write that already met several.

        The lock lasts from the read to the commit (milliseconds); on SQLite it is the
        write lock, on PostgreSQL the resource's row.
        """
        with self.connector.uow(immediate=True) as uow:
            if _kind(resource_type) == "User":
                uow.users.hold(self.context.seller_id, resource_id)
            else:
                uow.permission_sets.hold(self.context.seller_id, resource_id)
            self._held = uow
            try:
                yield
            finally:
                self._held = None

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

    def created_reference(
        self, resource_type: ResourceType, document: dict[str, Any]
    ) -> Resource[Any]:
        """A resource just created, as a Bulk outcome and later bulkId references need it:
        its id and version only: the whole document validated back into a model was a
        tenth of a Bulk of creates. (A small validation is cheaper than pydantic's
        ``model_construct`` here: that one fills every default of the model.)"""
        meta = document["meta"]
        skeleton = {
            "id": document["id"],
            "meta": {"resourceType": meta["resourceType"], "version": meta.get("version")},
        }
        return self._model(resource_type).model_validate(skeleton)

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
        with self._uow() as uow:
            if kind == "User":
                found_user = uow.users.get_with_sets(seller_id, resource_id)
                if found_user is None:
                    raise NotFoundException(detail=f"User {resource_id} not found.")
                user, groups = found_user
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
            # Kept as parsed: a bound filter is a str the store need not parse again.
            filter=search_request.filter,
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
        with domain_errors(), self._uow() as uow:
            seller = self._seller(uow)
            if _kind(resource_type) == "User":
                user, restored = user_cases.provision_user(
                    uow,
                    self.catalogue,
                    seller,
                    user_draft(resource),
                    self.context.actor,
                    invitation_lifespan=self.connector.settings.invitation_lifespan,
                    invitations=self._invitations,
                )
                # A new user is in no permission set yet; a restored one may be.
                groups = uow.permission_sets.of_user(user.id) if restored else []
                return self.renderer.user(user, groups)
            created = set_cases.create_permission_set(
                uow, self.catalogue, seller, group_draft(resource), self.context.actor
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
        with domain_errors(), self._uow() as uow:
            seller = self._seller(uow)
            if _kind(resource_type) == "User":
                draft = user_draft(resource)
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
                group_draft(resource),
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
        with domain_errors(), self._uow() as uow:
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
