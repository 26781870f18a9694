"""Translate scim2-models filter ASTs into SQLAlchemy conditions, for SQLite and PostgreSQL.

Filters run in SQL, never by loading rows into Python. Attributes that the store keeps
in columns compare against those columns (indexed); the others are read from the JSON
columns with the database's own JSON functions. The semantics follow scim2-models'
reference evaluator (``ScimFilter.match``): a missing value equals only null, ``ne`` is
true when the value is missing, a multi-valued attribute matches when any value does
(and ``ne`` when none is equal), strings compare case-insensitively unless caseExact.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from scim2_models import InvalidFilterException, ScimFilter
from scim2_models.path import (
    AttrPath,
    CompareOperator,
    Comparison,
    FilterNode,
    LogicalExpr,
    LogicalOperator,
    Not,
    Present,
    ValuePath,
)
from sqlalchemy import (
    ColumnElement,
    LargeBinary,
    Numeric,
    and_,
    case,
    cast,
    false,
    func,
    literal,
    literal_column,
    not_,
    or_,
    select,
)

from connector.domain.model import identity_key, text_key

Op = CompareOperator


# -- How values are reached -------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """An attribute kept in a column. ``folded`` columns hold identity_key() of the value."""

    expr: Any
    kind: str  # "text", "bool", "number", "datetime"
    nullable: bool = True
    folded: bool = False


@dataclass(frozen=True)
class JsonScalar:
    """A single value inside a JSON column, at a path of SCIM attribute names."""

    column: Any
    path: tuple[str, ...]


@dataclass(frozen=True)
class Elements:
    """A multi-valued attribute: a set of rows, one per value, correlated to the resource.

    ``rows`` returns a FROM clause and a function giving, for a sub-attribute name
    (or None for the value itself), a Column to compare.
    """

    rows: Callable[[], tuple[Any, Callable[[str | None], Column | None]]]
    correlate: Callable[[Any], Any] | None = None
    """For rows of another table: the condition tying them to the resource."""
    first: Callable[[str | None], Any] | None = None
    """The first value's sub-attribute, for sorting."""
    document: Any = None
    """The JSON column that holds the values, when they are in one: for a cheap pre-check."""
    lookup: Callable[[str], Any] | None = None
    """For the ``value`` sub-attribute: given an operand, an indexed condition that every
    resource holding a value equal to it meets (or None when there is none), so that
    ``eq`` reads only those resources rather than every one."""


class Dialect:
    """The JSON functions of one database."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sqlite = name == "sqlite"

    @staticmethod
    def _sqlite_path(path: tuple[str, ...]) -> str:
        return "$" + "".join('."' + p.replace('"', '\\"') + '"' for p in path)

    def scalar(self, column: Any, path: tuple[str, ...], kind: str) -> Any:
        if self.sqlite:
            return func.json_extract(column, self._sqlite_path(path))
        value = func.jsonb_extract_path_text(column, *path)
        if kind == "number":
            return cast(value, Numeric)
        return value

    def bool_literal(self, value: bool) -> Any:
        if self.sqlite:
            return literal(1 if value else 0)
        return literal("true" if value else "false")

    def _path_node(self, column: Any, path: tuple[str, ...]) -> Any:
        return func.jsonb_extract_path(column, *path) if path else column

    def array(self, column: Any, path: tuple[str, ...]) -> Elements:
        def rows() -> tuple[Any, Callable[[str | None], Column | None]]:
            if self.sqlite:
                each = func.json_each(column, self._sqlite_path(path)).table_valued("value").alias()

                def sub(name: str | None) -> Column:
                    if name is None:
                        return Column(each.c.value, "any")
                    return Column(
                        func.json_extract(each.c.value, self._sqlite_path((name,))), "any"
                    )

                return each, sub
            each = (
                func.jsonb_array_elements(self._path_node(column, path))
                .table_valued("value")
                .alias()
            )

            def pg_sub(name: str | None) -> Column:
                if name is None:
                    # The element itself, as text ('{}' is the empty path).
                    return Column(each.c.value.op("#>>")(literal_column("'{}'")), "any")
                return Column(func.jsonb_extract_path_text(each.c.value, name), "any")

            return each, pg_sub

        def first(name: str | None) -> Any:
            if self.sqlite:
                tail = f'[0]."{name}"' if name else "[0]"
                return func.json_extract(column, self._sqlite_path(path) + tail)
            return func.jsonb_extract_path_text(column, *path, "0", *([name] if name else []))

        return Elements(rows, first=first, document=column)

    def mapping(self, column: Any, key_name: str, value_name: str) -> Elements:
        """A JSON object read as values {key_name: key, value_name: value} (permissions)."""

        def rows() -> tuple[Any, Callable[[str | None], Column | None]]:
            if self.sqlite:
                each = func.json_each(column).table_valued("key", "value").alias()
            else:
                each = func.jsonb_each_text(column).table_valued("key", "value").alias()

            def sub(name: str | None) -> Column | None:
                if name == key_name:
                    return Column(each.c.key, "text", nullable=False)
                if name in (value_name, None):
                    return Column(each.c.value, "text")
                return None

            return each, sub

        return Elements(rows)

    def array_length(self, column: Any) -> Any:
        if self.sqlite:
            return func.json_array_length(column)
        return func.jsonb_array_length(column)


# -- The translator ------------------------------------------------------------------


@dataclass
class Resolved:
    """Where one attribute of a filter lives."""

    source: Column | JsonScalar | Elements | None
    sub: str | None
    case_exact: bool
    kind: str


class FilterTranslator:
    """Turn one resource type's filters and sort keys into SQL over its table."""

    def __init__(
        self,
        dialect: Dialect,
        attribute_source: Callable[
            [str, tuple[str, ...], bool], Column | JsonScalar | Elements | None
        ],
    ) -> None:
        self.dialect = dialect
        self.attribute_source = attribute_source

    # Attribute resolution --------------------------------------------------------

    @staticmethod
    def _split(urn: str) -> tuple[str, tuple[str, ...]]:
        schema, _, attribute = urn.rpartition(":")
        return schema, tuple(attribute.split("."))

    @staticmethod
    def _kind(target: Any) -> str:
        if target is bool:
            return "bool"
        if isinstance(target, type) and issubclass(target, int | float) and target is not bool:
            return "number"
        if target is dt.datetime:
            return "datetime"
        return "text"

    def _resolve(
        self, scim_filter: ScimFilter[Any], attr_path: AttrPath, comparison: bool
    ) -> Resolved | None:
        binding = (
            scim_filter.resolve_comparison(attr_path, strict=False)
            if comparison
            else scim_filter.resolve(attr_path, strict=False)
        )
        if binding is None:
            return None
        schema, parts = self._split(binding.urn)
        kind = self._kind(binding.target_type)
        if binding.is_multivalued:
            source = self.attribute_source(schema, parts[:1], True)
            sub = parts[1] if len(parts) > 1 else None
            return Resolved(source, sub, binding.case_exact, kind)
        return Resolved(self.attribute_source(schema, parts, False), None, binding.case_exact, kind)

    # Visiting ---------------------------------------------------------------------

    def where(self, scim_filter: ScimFilter[Any]) -> ColumnElement[bool]:
        """The SQL condition of a filter bound to the resource model.

        :raises InvalidFilterException: for what the store cannot evaluate.
        """
        return self._visit(scim_filter, scim_filter.ast, None)

    def _visit(self, f: ScimFilter[Any], node: FilterNode, scope: Any) -> ColumnElement[bool]:
        if isinstance(node, LogicalExpr):
            terms = [self._visit(f, term, scope) for term in node.terms]
            return _balanced(and_ if node.op == LogicalOperator.and_ else or_, terms)
        if isinstance(node, Not):
            # A comparison with a missing value is NULL in SQL, false in SCIM: make it
            # false before negating, or "not" would drop the rows that lack the value.
            return not_(func.coalesce(self._visit(f, node.expr, scope), false()))
        if isinstance(node, ValuePath):
            return self._value_path(f, node, scope)
        if isinstance(node, Comparison | Present):
            if scope is not None:
                return scope(node)
            return self._leaf(f, node)
        raise InvalidFilterException(detail=f"Unsupported filter expression: {node}")

    def _leaf(self, f: ScimFilter[Any], node: Comparison | Present) -> ColumnElement[bool]:
        resolved = self._resolve(f, node.attr_path, isinstance(node, Comparison))
        if resolved is None or resolved.source is None:
            # An attribute that the resource type does not declare matches nothing.
            return false()
        source = resolved.source
        if isinstance(source, Elements):
            return self._over_elements(source, resolved, node)
        column = source if isinstance(source, Column) else self._json_column(source, resolved.kind)
        if isinstance(node, Present):
            return self._present(column)
        return self._compare(column, node.op, node.value, resolved.case_exact, resolved.kind)

    def _json_column(self, source: JsonScalar, kind: str) -> Column:
        return self._from_json(
            Column(self.dialect.scalar(source.column, source.path, kind), "any"), kind
        )

    def _from_json(self, column: Column, kind: str) -> Column:
        """A value read out of JSON, typed for comparison: JSON holds dates as ISO text,
        and PostgreSQL gives every JSON value as text."""
        if column.kind != "any":
            return column
        if kind == "datetime":
            return Column(column.expr, "isotext", column.nullable)
        if kind == "bool":
            return Column(column.expr, "jsonbool", column.nullable)
        if kind == "number" and not self.dialect.sqlite:
            return Column(cast(column.expr, Numeric), "number", column.nullable)
        return Column(column.expr, kind, column.nullable)

    @staticmethod
    def _exists(source: Elements, rows: Any, condition: Any) -> ColumnElement[bool]:
        query = select(literal(1)).select_from(rows).where(condition)
        if source.correlate is not None:
            query = query.where(source.correlate(rows))
        return query.exists()

    def _over_elements(
        self, source: Elements, resolved: Resolved, node: Comparison | Present
    ) -> ColumnElement[bool]:
        rows, sub = source.rows()
        column = sub(resolved.sub)
        if column is None:
            return false()
        column = self._from_json(column, resolved.kind)
        if isinstance(node, Present):
            return self._exists(source, rows, self._present(column))
        if node.op == Op.ne:
            # No value equals the operand (scim2-models' universal reading).
            equal = self._compare(column, Op.eq, node.value, resolved.case_exact, resolved.kind)
            return not_(self._exists(source, rows, equal))
        condition = self._compare(column, node.op, node.value, resolved.case_exact, resolved.kind)
        found = self._exists(source, rows, condition)
        hint = self._lookup(source, resolved.sub, node)
        if hint is None:
            hint = self._text_hint(source, resolved, node)
        return found if hint is None else and_(hint, found)

    @staticmethod
    def _lookup(source: Elements, sub: str | None, node: FilterNode) -> Any:
        """The indexed condition of ``value eq "..."`` on a source that has one, or None."""
        if (
            source.lookup is None
            or sub is None
            or sub.lower() != "value"
            or not isinstance(node, Comparison)
            or node.op != Op.eq
            or not isinstance(node.value, str)
        ):
            return None
        return source.lookup(node.value)

    def _text_hint(
        self, source: Elements, resolved: Resolved, node: Comparison
    ) -> ColumnElement[bool] | None:
        """On SQLite, a cheap condition that every match of a text comparison also meets.

        A value that contains the operand (co, sw, ew and eq all imply it) is in the JSON
        text of its column as it is, when that text is plain ASCII without escapes
        (SQLAlchemy writes JSON with ensure_ascii): an ASCII search of the whole text, in
        C, then rules out most rows before json_each and lower() run on each value. Text
        with escapes or other characters always goes on to the full comparison.
        """
        if (
            not self.dialect.sqlite
            or source.document is None
            or resolved.sub is None
            or resolved.kind != "text"
            or node.op not in (Op.co, Op.sw, Op.ew, Op.eq)
            or not isinstance(node.value, str)
            or not node.value
        ):
            return None
        text = source.document
        operand = self._operand(node.value, "text", resolved.case_exact)
        escaped = or_(
            func.instr(text, "\\") > 0,
            func.length(text) != func.length(cast(text, LargeBinary)),
        )
        if not operand.isascii():
            return escaped
        return or_(escaped, func.instr(func.upper(text), operand.upper()) > 0)

    def _value_path(self, f: ScimFilter[Any], node: ValuePath, scope: Any) -> ColumnElement[bool]:
        if scope is not None:
            raise InvalidFilterException(detail="Value filters cannot be nested.")
        resolved = self._resolve(f, node.attr_path, False)
        if resolved is None or resolved.source is None:
            return false()
        source = resolved.source
        if not isinstance(source, Elements):
            raise InvalidFilterException(detail=f"{node.attr_path} is not multi-valued.")
        rows, sub = source.rows()

        def inner(leaf: Comparison | Present) -> ColumnElement[bool]:
            path = AttrPath(
                attr=node.attr_path.attr, sub_attr=leaf.attr_path.attr, uri=node.attr_path.uri
            )
            try:
                binding = f.resolve(path, strict=False)
            except InvalidFilterException:
                binding = None
            name = leaf.attr_path.attr
            if binding is None:
                # A multi-valued attribute of plain values: "value" is the value itself.
                column = sub(None) if name.lower() == "value" else None
                case_exact, kind = resolved.case_exact, resolved.kind
            else:
                _, parts = self._split(binding.urn)
                column = sub(parts[-1])
                case_exact, kind = binding.case_exact, self._kind(binding.target_type)
            if column is None:
                return false()
            column = self._from_json(column, kind)
            if isinstance(leaf, Present):
                return self._present(column)
            return self._compare(column, leaf.op, leaf.value, case_exact, kind)

        condition = self._visit(f, node.val_filter, inner)
        found = self._exists(source, rows, condition)
        # emails[type eq "work" and value eq "..."]: every match has that value.
        terms = node.val_filter
        candidates = (
            terms.terms
            if isinstance(terms, LogicalExpr) and terms.op == LogicalOperator.and_
            else [terms]
        )
        for term in candidates:
            if isinstance(term, Comparison):
                hint = self._lookup(source, term.attr_path.attr, term)
                if hint is not None:
                    return and_(hint, found)
        return found

    # Comparisons -------------------------------------------------------------------

    def _present(self, column: Column) -> ColumnElement[bool]:
        if column.kind == "text":
            return and_(column.expr.is_not(None), column.expr != "")
        return column.expr.is_not(None)

    def _operand(self, value: Any, kind: str, case_exact: bool) -> Any:
        if kind == "bool":
            if isinstance(value, str):
                value = value.strip().lower() == "true"
            return bool(value)
        if kind == "number":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidFilterException(detail=f"{value!r} is not a number.")
            return value
        if kind == "datetime":
            if isinstance(value, dt.datetime):
                return value
            if isinstance(value, str):
                try:
                    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
                except ValueError:
                    pass
            raise InvalidFilterException(
                detail=f"{value!r} is not a date and time: compare it with a quoted "
                'ISO 8601 time, such as "2024-01-31T00:00:00Z".'
            )
        text = str(value)
        return text if case_exact else text_key(text)

    def _compare(
        self, column: Column, op: Op, value: Any, case_exact: bool, kind: str
    ) -> ColumnElement[bool]:
        expr = column.expr
        if value is None:
            if op == Op.eq:
                return expr.is_(None)
            if op == Op.ne:
                return expr.is_not(None)
            return false()
        if kind == "datetime" and op in (Op.co, Op.sw, Op.ew):
            # A date is not a string: substring operators match no date (as scim2-models'
            # evaluator answers), whatever the operand.
            return false()
        operand = self._operand(value, kind, case_exact)
        if column.folded and kind == "text" and not case_exact:
            # Key columns hold the identity key (the form uniqueness compares): a filter
            # finds exactly the holder of the key a create would collide with.
            operand = identity_key(str(value))
        if kind == "bool":
            if op not in (Op.eq, Op.ne):
                return false()
            target = self.dialect.bool_literal(operand) if column.kind == "jsonbool" else operand
            if op == Op.eq:
                return expr == target
            return or_(expr.is_(None), expr != target) if column.nullable else expr != target
        if column.kind == "isotext" and isinstance(operand, dt.datetime):
            operand = operand.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
        textual = kind == "text" or column.kind == "isotext"
        if kind == "text" and not case_exact and not column.folded:
            expr = func.lower(expr)
        if op in (Op.co, Op.sw, Op.ew):
            if not textual:
                return false()
            return {Op.co: self._contains, Op.sw: self._starts, Op.ew: self._ends}[op](
                expr, operand
            )
        if op == Op.ne:
            return or_(expr.is_(None), expr != operand) if column.nullable else expr != operand
        return {
            Op.eq: lambda: expr == operand,
            Op.gt: lambda: expr > operand,
            Op.ge: lambda: expr >= operand,
            Op.lt: lambda: expr < operand,
            Op.le: lambda: expr <= operand,
        }[op]()

    def _contains(self, expr: Any, operand: str) -> ColumnElement[bool]:
        # Not LIKE: its wildcards and SQLite's case folding would change the meaning.
        if self.dialect.sqlite:
            return func.instr(expr, operand) > 0
        return func.strpos(expr, operand) > 0

    def _starts(self, expr: Any, operand: str) -> ColumnElement[bool]:
        if self.dialect.sqlite:
            return func.substr(expr, 1, len(operand)) == operand
        return func.left(expr, len(operand)) == operand

    def _ends(self, expr: Any, operand: str) -> ColumnElement[bool]:
        if not operand:
            return expr.is_not(None)
        if self.dialect.sqlite:
            return func.substr(expr, -len(operand)) == operand
        return func.right(expr, len(operand)) == operand

    # Sorting ---------------------------------------------------------------------------

    def sort_key(self, scim_filter_type: type[ScimFilter[Any]], sort_by: str) -> tuple[Any, str]:
        """The SQL expression to sort by, and its kind. Multi-valued attributes sort by
        their first value (RFC 7644 §3.4.2.3 asks for the primary, which clients list first)."""
        probe = scim_filter_type(f"{sort_by} pr")
        resolved = self._resolve(probe, probe.ast.attr_path, False)  # type: ignore[attr-defined]
        if resolved is None or resolved.source is None:
            return literal(None), "text"
        source = resolved.source
        if isinstance(source, Elements):
            if source.first is None:
                return literal(None), "text"
            column = Column(source.first(resolved.sub or "value"), resolved.kind)
        else:
            column = (
                source if isinstance(source, Column) else self._json_column(source, resolved.kind)
            )
        expr = column.expr
        if resolved.kind == "text" and not resolved.case_exact and not column.folded:
            expr = func.lower(expr)
        return expr, resolved.kind


def _balanced(join: Callable[..., Any], terms: list[Any]) -> Any:
    """``a OR b OR c ...`` as a balanced tree of halves: SQLite parses a flat chain into a
    tree as deep as it is long, and refuses one deeper than 1,000 nodes. Each half is wrapped
    in ``coalesce(half, false)``, which SQLAlchemy does not flatten back into the chain, and
    which reads a missing value as false, as SCIM does (and as ``not`` already does here)."""
    if len(terms) <= 16:
        return join(*terms)
    middle = len(terms) // 2
    return join(
        func.coalesce(_balanced(join, terms[:middle]), false()),
        func.coalesce(_balanced(join, terms[middle:]), false()),
    )


def null_last(expr: Any) -> Any:
    """1 for a missing sort value, so that missing values sort last."""
    return case((expr.is_(None), 1), else_=0)
