"""One pydantic adapter per attribute type for the values of filters.

scim2-models (0.12) converts each comparison value of a filter to its attribute's type with
``TypeAdapter(annotated_type)``, built again for every comparison. Building an adapter
generates a schema, and for an email attribute pydantic then reads email-validator's
package metadata from disk: about 2 ms of every ``emails[type eq "work"].value eq`` lookup,
the one Entra ID sends before each create. scim2-models caches the adapters of its Bulk
operations; this gives its filter values the same cache. Remove it once scim2-models
caches them itself (``tests/unit/test_coercion.py`` fails when the call it replaces moves).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic import TypeAdapter
from scim2_models.path import resolution


@lru_cache(maxsize=512)
def _cached_adapter(annotated_type: Any) -> TypeAdapter[Any]:
    return TypeAdapter(annotated_type)


def adapter(annotated_type: Any) -> TypeAdapter[Any]:
    """The adapter of ``annotated_type``, built once (a type that cannot be a cache key gets
    a fresh one, as before)."""
    try:
        return _cached_adapter(annotated_type)
    except TypeError:
        return TypeAdapter(annotated_type)


def cache_filter_value_adapters() -> None:
    """Make scim2-models build each filter value's adapter once per process (idempotent)."""
    resolution.TypeAdapter = adapter  # type: ignore[attr-defined,assignment]
