"""SCIM searches in SQL: filters, sorting, index and cursor paging over one seller's data.

Filters are scim2-models expressions translated into SQL (``filters``, ``scim_attributes``);
nothing is loaded into Python to be filtered. The result is the (kind, id) of each match in
order: the protocol layer loads and renders them.
"""

from __future__ import annotations

import datetime as dt
from functools import cache
from typing import Any

from scim2_models import InvalidCursorException, ScimFilter
from scim2_models.path import CompareOperator, Comparison
from scim2_server.utils import parametrize
from sqlalchemy import and_, bindparam, func, literal, null, or_, select, union_all

from connector.adapters.sql.filters import Dialect, FilterTranslator, null_last
from connector.adapters.sql.repositories import Statements
from connector.adapters.sql.scim_attributes import group_source, user_source
from connector.adapters.sql.tables import PermissionSetRow, UserRow
from connector.domain.model import identity_key
from connector.ports.schemas import USER_SCHEMA
from connector.ports.store import SearchPage, SearchQuery


@cache
def _translators(dialect_name: str) -> dict[str, FilterTranslator]:
    dialect = Dialect(dialect_name)
    return {
        "User": FilterTranslator(dialect, user_source(dialect)),
        "Group": FilterTranslator(dialect, group_source(dialect)),
    }


class SqlSearch:
    """:class:`connector.ports.store.Search` in SQL."""

    def __init__(self, uow: Statements) -> None:
        self.uow = uow
        self.translators = _translators(uow.dialect)
        # "No limit" as a bound value: SQLite takes -1, PostgreSQL NULL.
        self._no_limit = None if uow.dialect == "postgresql" else -1

    def page(self, seller_id: str, query: SearchQuery) -> SearchPage:
        fast = self._fast_page(seller_id, query)
        if fast is not None:
            return fast
        candidates = union_all(
            *(self._candidates(seller_id, kind, model, query) for kind, model in query.kinds)
        ).subquery("candidates")
        total = self.uow.read(select(func.count()).select_from(candidates)).scalar() or 0
        keys = _sort_keys(candidates, query)
        if not query.cursor:
            ordering = [k.desc() if query.descending else k.asc() for k in keys]
            statement = select(candidates.c.kind, candidates.c.id).order_by(*ordering)
            statement = statement.offset(query.start)
            if query.count is not None:
                statement = statement.limit(query.count)
            return SearchPage(total, [(r[0], r[1]) for r in self.uow.read(statement)])
        if query.count == 0:
            return SearchPage(total, [])
        return self._cursor_page(candidates, keys, query, total)

    def _fast_page(self, seller_id: str, query: SearchQuery) -> SearchPage | None:
        """The searches identity providers send all day, on statements built once: a page of
        one kind without a filter, and the lookup by userName (Okta and Entra match users by
        it before every create). The same answers as the general path, which does the rest."""
        if len(query.kinds) != 1 or query.sort_by is not None:
            return None
        kind, model = query.kinds[0]
        statements = _FAST[kind]
        if query.filter is None:
            total = self.uow.read(statements["count"], {"seller": seller_id}).scalar_one()
            if not query.cursor:
                limit = self._no_limit if query.count is None else query.count
                rows = self.uow.read(
                    statements["page"],
                    {"seller": seller_id, "limit": limit, "offset": query.start},
                )
                return SearchPage(total, [(kind, r[0]) for r in rows])
            return self._fast_cursor(seller_id, kind, query, total)
        if kind != "User" or query.cursor:
            return None
        key = _user_name_lookup(model, query.filter)
        if key is None:
            return None
        ids = [r[0] for r in self.uow.read(_USER_BY_NAME_KEY, {"seller": seller_id, "key": key})]
        stop = None if query.count is None else query.start + query.count
        return SearchPage(len(ids), [(kind, i) for i in ids[query.start : stop]])

    def _fast_cursor(
        self, seller_id: str, kind: str, query: SearchQuery, total: int
    ) -> SearchPage | None:
        if query.count == 0:
            return SearchPage(total, [])
        direction, anchor = _read_position(query.position)
        if anchor is not None and not anchor["m"]:
            return None  # a position of a sorted search: the general path knows it
        backwards = direction == "previous"
        name = "before" if backwards else "after"
        limit = self._no_limit if query.count is None else query.count + 1
        rows = [
            r[0]
            for r in self.uow.read(
                _FAST[kind][name],
                {"seller": seller_id, "anchor": anchor["i"] if anchor else "", "limit": limit},
            )
        ]
        if backwards and anchor is None:
            rows = []
        more = query.count is not None and len(rows) > query.count
        rows = rows[: query.count] if query.count is not None else rows
        if backwards:
            rows.reverse()
        page = SearchPage(total, [(kind, i) for i in rows])
        if not rows:
            return page
        has_next = more if not backwards else anchor is not None
        has_previous = (anchor is not None) if not backwards else more
        if has_next:
            page.next = {"d": "next", "m": True, "k": None, "i": rows[-1]}
        if has_previous:
            page.previous = {"d": "previous", "m": True, "k": None, "i": rows[0]}
        return page

    def _candidates(self, seller_id: str, kind: str, model: Any, query: SearchQuery) -> Any:
        """The matching resources of one kind, with their sort key, as a SELECT."""
        translator = self.translators[kind]
        table: Any = UserRow if kind == "User" else PermissionSetRow
        scope = [table.seller_id == seller_id]
        if kind == "User":
            scope.append(UserRow.deleted.is_(False))
        if query.filter is not None:
            # Bind the filter to this kind's model: at the root it names several.
            scope.append(translator.where(_bound(model, query.filter)))
        value: Any = null()
        if query.sort_by is not None:
            value, _ = translator.sort_key(parametrize(ScimFilter, model), query.sort_by)
        return select(
            literal(kind).label("kind"),
            table.id.label("id"),
            null_last(value).label("missing"),
            value.label("value"),
        ).where(and_(*scope))

    def _cursor_page(
        self, candidates: Any, keys: list[Any], query: SearchQuery, total: int
    ) -> SearchPage:
        """A page of a keyset (cursor) search: stable under concurrent writes."""
        direction, anchor = _read_position(query.position)
        backwards = direction == "previous"
        # Walking backwards means reading in the opposite order and reversing.
        reverse = query.descending != backwards
        statement = select(candidates.c.kind, candidates.c.id, candidates.c.value)
        if anchor is not None:
            statement = statement.where(
                _after(candidates.c.id, candidates.c.value, anchor, reverse)
            )
        statement = statement.order_by(*[k.desc() if reverse else k.asc() for k in keys])
        count = query.count
        if count is not None:
            statement = statement.limit(count + 1)
        rows = list(self.uow.read(statement))
        more = count is not None and len(rows) > count
        rows = rows[:count] if count is not None else rows
        if backwards:
            rows.reverse()
        page = SearchPage(total, [(r[0], r[1]) for r in rows])
        if not rows:
            return page
        has_next = more if not backwards else anchor is not None
        has_previous = (anchor is not None) if not backwards else more
        if has_next:
            page.next = _position("next", rows[-1])
        if has_previous:
            page.previous = _position("previous", rows[0])
        return page


def _sort_keys(candidates: Any, query: SearchQuery) -> list[Any]:
    """What results are ordered by: (missing, value, id), or the id alone without sortBy.

    Without sortBy every value is missing, so the id alone gives the same order; and
    only then can the database walk an index in order rather than sort every match.
    """
    if query.sort_by is None:
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


# -- Statements built once for the fast paths -----------------------------------------------


def _fast_statements(table: Any, visible: Any) -> dict[str, Any]:
    scope = and_(table.c.seller_id == bindparam("seller"), *visible)
    return {
        "count": select(func.count()).select_from(table).where(scope),
        "page": select(table.c.id)
        .where(scope)
        .order_by(table.c.id)
        .limit(bindparam("limit"))
        .offset(bindparam("offset")),
        "after": select(table.c.id)
        .where(scope, table.c.id > bindparam("anchor"))
        .order_by(table.c.id)
        .limit(bindparam("limit")),
        "before": select(table.c.id)
        .where(scope, table.c.id < bindparam("anchor"))
        .order_by(table.c.id.desc())
        .limit(bindparam("limit")),
    }


_users = UserRow.__table__
_sets = PermissionSetRow.__table__
_FAST = {
    "User": _fast_statements(_users, [_users.c.deleted.is_(False)]),
    "Group": _fast_statements(_sets, []),
}
_USER_BY_NAME_KEY = (
    select(_users.c.id)
    .where(
        _users.c.seller_id == bindparam("seller"),
        _users.c.user_name_key == bindparam("key"),
        _users.c.deleted.is_(False),
    )
    .order_by(_users.c.id)
)


def _bound(model: Any, text: str) -> Any:
    """The filter bound to ``model``: the request's own when it already is (a bound filter is
    a ``str`` that keeps its parsed and validated tree), else parsed now. Parsing a filter
    again validated its values again (an email through email-validator): a sixth of an
    Entra ID lookup by work email."""
    bound_type = parametrize(ScimFilter, model)
    return text if isinstance(text, bound_type) else bound_type(text)


def _user_name_lookup(model: Any, text: str) -> str | None:
    """The userName key of a filter that is exactly ``userName eq "<string>"``, else None."""
    if "userName" not in text and "username" not in text.lower():
        return None
    node = _bound(model, text).ast
    if not isinstance(node, Comparison) or node.op is not CompareOperator.eq:
        return None
    path = node.attr_path
    if str(path).lower() not in ("username", f"{USER_SCHEMA.lower()}:username") or not isinstance(
        node.value, str
    ):
        return None
    return identity_key(node.value)
