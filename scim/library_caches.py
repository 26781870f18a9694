"""Answers scim2-models (0.12) works out again and again, kept once per process.

Each is a pure function of hashable arguments that scim2-models calls through a module-level
name; :func:`install` (called by the app factory, idempotent) rebinds those names to a cached
twin. Remove one once scim2-models caches it itself: ``tests/unit/test_library_caches.py``
fails when the calls they replace move.

* **Filter values' adapters.** Each comparison value of a filter is converted with
  ``TypeAdapter(annotated_type)``, built again every time: for an email attribute pydantic
  then reads email-validator's package metadata from disk, about 2 ms of every
  ``emails[type eq "work"].value eq`` lookup, the one Entra ID sends before each create.
* **Which model a path designates** (``_designated_model``): whether the whole path is the
  schema URN of the resource or of an extension, asked about thirty times per PATCH of two
  attributes, each time lower-casing the URNs and listing the extensions again: a tenth of
  the PATCH.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache, wraps
from typing import Any, TypeVar

from pydantic import TypeAdapter
from scim2_models.path import access, path, resolution

R = TypeVar("R")

UNCACHED_DESIGNATED_MODEL = resolution._designated_model


def _cached_when_hashable(function: Callable[..., R], maxsize: int) -> Callable[..., R]:
    """``function`` with its answers kept (at most ``maxsize``); arguments that cannot be a
    cache key are answered afresh, as before."""
    cached = lru_cache(maxsize=maxsize)(function)

    @wraps(function)
    def call(*args: Any) -> R:
        try:
            return cached(*args)
        except TypeError:
            return function(*args)

    call.cache_info = cached.cache_info  # type: ignore[attr-defined]
    return call


filter_value_adapter = _cached_when_hashable(TypeAdapter, maxsize=512)
designated_model = _cached_when_hashable(UNCACHED_DESIGNATED_MODEL, maxsize=1024)


def install() -> None:
    """Make scim2-models use the cached twins, in every module that calls them."""
    resolution.TypeAdapter = filter_value_adapter  # type: ignore[attr-defined,assignment]
    for module in (resolution, path, access):
        module._designated_model = designated_model  # type: ignore[attr-defined]
