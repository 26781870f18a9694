"""Which model a SCIM path designates, worked out once per model and path.

scim2-models (0.12) asks, for every path it resolves, whether the whole path is the schema
URN of the resource or of one of its extensions (``_designated_model``): a PATCH of two
attributes asks it about thirty times (validating the operations, then patching and
comparing snapshots), each time lower-casing the URNs and listing the extensions again,
a tenth of the PATCH. The answer depends on the model class and the path only, so it is
kept here, for at most ``MAX_CACHED`` pairs. Remove this once scim2-models caches it
itself (``tests/unit/test_path_resolution.py`` fails when the calls it replaces move).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from scim2_models.path import access, path, resolution

MAX_CACHED = 1024
_UNCACHED = resolution._designated_model
_CALLERS = (resolution, path, access)


@lru_cache(maxsize=MAX_CACHED)
def _cached(model: Any, text: str) -> Any:
    return _UNCACHED(model, text)


def designated_model(model: Any, text: str) -> Any:
    """scim2-models' answer for ``model`` and ``text``, computed once (arguments that
    cannot be a cache key are answered afresh, as before)."""
    try:
        return _cached(model, text)
    except TypeError:
        return _UNCACHED(model, text)


def cache_designated_models() -> None:
    """Make scim2-models resolve each (model, path) pair once per process (idempotent)."""
    for module in _CALLERS:
        module._designated_model = designated_model  # type: ignore[attr-defined]
