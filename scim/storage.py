"""The SQL storage behind scim2-server: one seller's Users and Groups.

Reads query the store directly (filters and sorting in SQL); writes go through the
use cases of connector.services, so that every seller rule holds whichever way a
change arrives.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Union, cast

from scim2_models import (
    ForbiddenException,
    InvalidCursorException,
    InvalidValueException,
    ListResponse,
    MutabilityException,
    NotFoundException,
    PreconditionFailedException,
    Resource,
    ResourceType,
    ResponseParameters,
    SCIMException,
    ScimFilter,
    ScimProvider,
    SearchRequest,
    UniquenessException,
)
from scim2_server.storage import ScimStorage, SearchPage
from scim2_server.utils import parametrize
from sqlalchemy import and_, func, literal, null, or_, select, union_all
from sqlalchemy.exc import IntegrityError

from connector.adapters.sql.database import SqlUnitOfWork
from connector.adapters.sql.filters import Dialect, FilterTranslator, null_last
from connector.adapters.sql.scim_attributes import group_source, user_source
from connector.adapters.sql.tables import PermissionSetRow, UserRow
from connector.domain import errors
from connector.domain.catalogue import Catalogue
from connector.domain.drafts import Actor
from connector.domain.model import Role, SellerAccount, utcnow
from connector.services import permission_sets as set_cases
from connector.services import users as user_cases
from scim import mapping

requested_role: ContextVar[Role | None] = ContextVar("requested_role", default=None)
"""The role a PUT body carried: read-only attributes are dropped before the storage sees them."""


def scim_error(error: errors.DomainError) -> SCIMException:
    """The SCIM error of a refused change; the detail is the domain's, for a person."""
    kinds: list[tuple[type[errors.DomainError], type[SCIMException]]] = [
        (errors.NotFound, NotFoundException),
        (errors.Forbidden, ForbiddenException),
        (errors.Uniqueness, UniquenessException),
        (errors.InvalidValue, InvalidValueException),
        (errors.Mutability, MutabilityException),
        (errors.VersionMismatch, PreconditionFailedException),
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


def _keep_list_response_model(provider: ScimProvider) -> None:
    """Keep the provider's ListResponse model alive for as long as the process runs.

    scim2-server builds ``ListResponse[Union[models]]`` for every search response, and
    pydantic caches parametrized models only weakly: once collected, the next search
    builds it again (milliseconds of schema generation). A strong reference keeps the
    cache hit; the model is the very one scim2-server would build.
    """
    if id(provider) not in _LIST_RESPONSES:
        models = tuple(provider.model_for(rt) for rt in provider.resource_types)
        _LIST_RESPONSES[id(provider)] = (provider, parametrize(ListResponse, Union[models]))  # noqa: UP007


@dataclass
class StorageContext:
    """Everything one request's storage needs: whose data, who asks, with what catalogue."""

    uow: SqlUnitOfWork
    seller: SellerAccount
    actor: Actor
    catalogue: Catalogue
    provider: ScimProvider
    invitation_lifespan: dt.timedelta = user_cases.DEFAULT_INVITATION_LIFESPAN


class SellerStorage(ScimStorage):
    """A ScimStorage scoped to one seller: it can neither see nor touch another seller's data."""

    supports_cursors = True

    def __init__(self, context: StorageContext) -> None:
        self.context = context
        self.uow = context.uow
        self.seller = context.seller
        dialect = Dialect(self.uow.session.get_bind().dialect.name)
        self.translators = {
            "User": FilterTranslator(dialect, user_source(dialect)),
            "Group": FilterTranslator(dialect, group_source(dialect)),
        }
        _keep_list_response_model(context.provider)

    # -- Transactions --------------------------------------------------------------

    @contextmanager
    def operation(self) -> Iterator[None]:
        """One SCIM operation in a savepoint: a failed Bulk operation leaves the others."""
        try:
            with self.uow.savepoint():
                yield
        except IntegrityError as error:
            # A concurrent request took the same unique value between check and write.
            raise UniquenessException(
                detail="A unique value (userName, email or displayName) was taken by a "
                "concurrent request. Read the resource again and retry."
            ) from error

    # -- Models ---------------------------------------------------------------------

    def _model(self, resource_type: ResourceType) -> type[Resource[Any]]:
        return cast(type[Resource[Any]], self.context.provider.model_for(resource_type))

    @staticmethod
    def _extensions(model: type[Resource[Any]]) -> set[str]:
        return {str(ext.__schema__) for ext in model.get_extension_models().values()}

    def _user_resources(self, resource_type: ResourceType, users: list[Any]) -> list[Resource[Any]]:
        model = self._model(resource_type)
        extensions = self._extensions(model)
        groups = self.uow.permission_sets.of_users([u.id for u in users])
        now = utcnow()
        return [
            model.model_validate(
                mapping.user_body(u, groups.get(u.id, []), self.context.catalogue, extensions, now)
            )
            for u in users
        ]

    def _group_resources(self, resource_type: ResourceType, sets: list[Any]) -> list[Resource[Any]]:
        model = self._model(resource_type)
        extensions = self._extensions(model)
        return [model.model_validate(mapping.group_body(s, extensions)) for s in sets]

    def _kind(self, resource_type: ResourceType) -> str:
        if resource_type.name in ("User", "Group"):
            return str(resource_type.name)
        raise NotFoundException(detail=f"Unknown resource type {resource_type.name}")

    # -- Reads ----------------------------------------------------------------------

    def get(
        self,
        resource_type: ResourceType,
        resource_id: str,
        *,
        response_parameters: ResponseParameters[Any] | None = None,
    ) -> Resource[Any]:
        with domain_errors():
            if self._kind(resource_type) == "User":
                user = user_cases.get_user(self.uow, self.seller, resource_id)
                return self._user_resources(resource_type, [user])[0]
            found = set_cases.get_permission_set(self.uow, self.seller, resource_id)
            return self._group_resources(resource_type, [found])[0]

    def search(
        self,
        resource_types: list[ResourceType],
        search_request: SearchRequest[Any],
        *,
        position: Any = None,
    ) -> SearchPage:
        descending = (
            search_request.sort_by is not None
            and search_request.sort_order == SearchRequest.SortOrder.descending
        )
        candidates = union_all(
            *(self._candidates(rt, search_request) for rt in resource_types)
        ).subquery("candidates")
        total = self.uow.session.scalar(select(func.count()).select_from(candidates)) or 0
        keys = _sort_keys(candidates, search_request)

        if search_request.cursor is None:
            ordering = [k.desc() if descending else k.asc() for k in keys]
            query = select(candidates.c.kind, candidates.c.id).order_by(*ordering)
            query = query.offset(search_request.start_index_0 or 0)
            if search_request.count is not None:
                query = query.limit(search_request.count)
            rows = list(self.uow.session.execute(query))
            return SearchPage(total, self._load(resource_types, rows))
        if search_request.count == 0:
            return SearchPage(total, [])
        return self._cursor_page(
            resource_types, candidates, keys, descending, search_request.count, position, total
        )

    def _candidates(self, resource_type: ResourceType, search_request: SearchRequest[Any]) -> Any:
        """The matching resources of one type, with their sort key, as a SELECT."""
        kind = self._kind(resource_type)
        model = self._model(resource_type)
        translator = self.translators[kind]
        table: Any = UserRow if kind == "User" else PermissionSetRow
        scope = [table.seller_id == self.seller.id]
        if kind == "User":
            scope.append(UserRow.deleted.is_(False))
        if search_request.filter is not None:
            # Bind the filter to this type's model: at the root it names several.
            bound = parametrize(ScimFilter, model)(str(search_request.filter))
            scope.append(translator.where(bound))
        value: Any = null()
        if search_request.sort_by is not None:
            value, _ = translator.sort_key(
                parametrize(ScimFilter, model), str(search_request.sort_by)
            )
        return select(
            literal(kind).label("kind"),
            table.id.label("id"),
            null_last(value).label("missing"),
            value.label("value"),
        ).where(and_(*scope))

    def _cursor_page(
        self,
        resource_types: list[ResourceType],
        candidates: Any,
        keys: list[Any],
        descending: bool,
        count: int | None,
        position: Any,
        total: int,
    ) -> SearchPage:
        """A page of a keyset (cursor) search: stable under concurrent writes."""
        direction, anchor = _read_position(position)
        backwards = direction == "previous"
        # Walking backwards means reading in the opposite order and reversing.
        reverse = descending != backwards
        query = select(candidates.c.kind, candidates.c.id, candidates.c.value)
        if anchor is not None:
            query = query.where(_after(candidates.c.id, candidates.c.value, anchor, reverse))
        query = query.order_by(*[k.desc() if reverse else k.asc() for k in keys])
        if count is not None:
            query = query.limit(count + 1)
        rows = list(self.uow.session.execute(query))
        more = count is not None and len(rows) > count
        rows = rows[:count] if count is not None else rows
        if backwards:
            rows.reverse()
        page = SearchPage(total, self._load(resource_types, rows))
        if not rows:
            return page
        has_next = more if not backwards else anchor is not None
        has_previous = (anchor is not None) if not backwards else more
        if has_next:
            page.next = _position("next", rows[-1])
        if has_previous:
            page.previous = _position("previous", rows[0])
        return page

    def _load(self, resource_types: list[ResourceType], rows: list[Any]) -> list[Resource[Any]]:
        """The resources of (kind, id) rows, in the rows' order."""
        by_kind = {self._kind(rt): rt for rt in resource_types}
        found: dict[str, Resource[Any]] = {}
        user_ids = [r[1] for r in rows if r[0] == "User"]
        if user_ids:
            users = self.uow.users.get_many(self.seller.id, user_ids)
            for resource in self._user_resources(by_kind["User"], users):
                found[str(resource.id)] = resource
        group_ids = [r[1] for r in rows if r[0] == "Group"]
        if group_ids:
            sets = self.uow.permission_sets.get_many(self.seller.id, group_ids)
            for resource in self._group_resources(by_kind["Group"], sets):
                found[str(resource.id)] = resource
        return [found[r[1]] for r in rows if r[1] in found]

    # -- Writes ---------------------------------------------------------------------

    def create(self, resource_type: ResourceType, resource: Resource[Any]) -> Resource[Any]:
        with domain_errors():
            if self._kind(resource_type) == "User":
                user, _ = user_cases.provision_user(
                    self.uow,
                    self.context.catalogue,
                    self.seller,
                    mapping.user_draft(resource),
                    self.context.actor,
                    invitation_lifespan=self.context.invitation_lifespan,
                )
                return self._user_resources(resource_type, [user])[0]
            self._refuse_nested_groups(resource)
            created = set_cases.create_permission_set(
                self.uow,
                self.context.catalogue,
                self.seller,
                mapping.group_draft(resource),
                self.context.actor,
            )
            return self._group_resources(resource_type, [created])[0]

    def update(
        self,
        resource_type: ResourceType,
        resource: Resource[Any],
        *,
        expected_version: str | None = None,
    ) -> Resource[Any]:
        version = mapping.version_of(expected_version)
        if expected_version is not None and version is None:
            raise PreconditionFailedException(
                detail=f"{expected_version} is not a version of this resource."
            )
        with domain_errors():
            if self._kind(resource_type) == "User":
                draft = mapping.user_draft(resource)
                requested = requested_role.get()
                if requested is not None:
                    draft.requested_role = requested
                user = user_cases.replace_user(
                    self.uow,
                    self.context.catalogue,
                    self.seller,
                    str(resource.id),
                    draft,
                    self.context.actor,
                    expected_version=version,
                )
                return self._user_resources(resource_type, [user])[0]
            self._refuse_nested_groups(resource)
            updated = set_cases.replace_permission_set(
                self.uow,
                self.context.catalogue,
                self.seller,
                str(resource.id),
                mapping.group_draft(resource),
                self.context.actor,
                expected_version=version,
            )
            return self._group_resources(resource_type, [updated])[0]

    def delete(
        self,
        resource_type: ResourceType,
        resource_id: str,
        *,
        expected_version: str | None = None,
    ) -> None:
        version = mapping.version_of(expected_version)
        with domain_errors():
            if self._kind(resource_type) == "User":
                user_cases.delete_user(
                    self.uow, self.seller, resource_id, self.context.actor, expected_version=version
                )
            else:
                set_cases.delete_permission_set(
                    self.uow, self.seller, resource_id, self.context.actor, expected_version=version
                )

    @staticmethod
    def _refuse_nested_groups(resource: Resource[Any]) -> None:
        if any(t.lower() == "group" for t in mapping.member_types(resource)):
            raise InvalidValueException(
                detail="A permission set (Group) can only contain users: nested groups are not supported."
            )


def _sort_keys(candidates: Any, search_request: SearchRequest[Any]) -> list[Any]:
    """What results are ordered by: (missing, value, id), or the id alone without sortBy.

    Without sortBy every value is missing, so the id alone gives the same order; and
    only then can the database walk an index in order rather than sort every match.
    """
    if search_request.sort_by is None:
        return [candidates.c.id]
    return [candidates.c.missing, candidates.c.value, candidates.c.id]


# -- Cursor positions ------------------------------------------------------------------


def _encode(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return {"datetime": value.isoformat()}
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        try:
            return dt.datetime.fromisoformat(value["datetime"])
        except (KeyError, TypeError, ValueError):
            raise InvalidCursorException from None
    return value


def _position(direction: str, row: Any) -> dict[str, Any]:
    value = row[2]
    return {"d": direction, "m": value is None, "k": _encode(value), "i": row[1]}


def _read_position(position: Any) -> tuple[str, dict[str, Any] | None]:
    if position is None:
        return "next", None
    if not isinstance(position, dict) or position.get("d") not in ("next", "previous"):
        raise InvalidCursorException
    if not isinstance(position.get("i"), str):
        raise InvalidCursorException
    return position["d"], {
        "m": bool(position.get("m")),
        "k": _decode(position.get("k")),
        "i": position["i"],
    }


def _after(id_column: Any, value: Any, anchor: dict[str, Any], reverse: bool) -> Any:
    """Rows strictly after the anchor in the walking order: (missing, value, id) compared as a tuple."""
    anchor_id = anchor["i"]
    missing = value.is_(None)
    present = value.is_not(None)
    if anchor["m"]:
        if reverse:
            return or_(present, and_(missing, id_column < anchor_id))
        return and_(missing, id_column > anchor_id)
    k = anchor["k"]
    if reverse:
        return and_(present, or_(value < k, and_(value == k, id_column < anchor_id)))
    return or_(missing, and_(present, or_(value > k, and_(value == k, id_column > anchor_id))))
