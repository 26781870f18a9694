"""The libraries' floor: what scim2-server and scim2-models cost a request by themselves.

The project leaves SCIM parsing, validation, PATCH and filters to scim2-server and
scim2-models (README, "Standards"). The bare ceiling (``bare.py``) does none of that. So
whatever else a request does, ours cannot be faster than the bare ceiling plus these steps:
if they alone cost more than an aim leaves above the ceiling, the aim is out of reach on
this stack, however lean the rest. This module runs, for one benchmark request, exactly the
steps our handler (``scim/app.py``) asks of the libraries for it, with the same service and
models, and nothing of ours (no storage, no rules, no rendering).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from scim2_server.requests import ScimRequest
from scim2_server.routing import Operation

PREFIX = "/scim/v2"


@dataclass(frozen=True)
class Budget:
    """What an aim of one compare cell leaves above the bare ceiling, per request."""

    operation: str
    concurrency: int
    aim_rps: float
    bare_rps: float
    ms: float  # latency (1 client) or CPU of the whole machine (more clients)
    basis: str


def scim_request(method: str, path: str, body: bytes | None, base_url: str) -> ScimRequest:
    """The framework-free request scim2-server's handler sees for a load-generator request."""
    parts = urllib.parse.urlsplit(path)
    query = dict(urllib.parse.parse_qsl(parts.query))
    return ScimRequest(
        method=method,
        base_url=base_url,
        path=parts.path.removeprefix(PREFIX) or "/",
        query=query,
        headers=[("Content-Type", "application/scim+json")],
        body=body or b"",
    )


def steps(operation: str) -> Callable[[Any, ScimRequest, dict[str, Any] | None], None] | None:
    """The library steps of one benchmark operation (None: not measured)."""
    return _STEPS.get(operation)


def _get(service: Any, req: ScimRequest, _document: dict[str, Any] | None) -> None:
    with service.provider:
        target = service.route(req, Operation.query)
        resource_type = service.resource_type_at(cast(str, target.endpoint))
        service.read_response_parameters(resource_type, req.query)
        service.read_conditions(req)


def _search(service: Any, req: ScimRequest, _document: dict[str, Any] | None) -> None:
    with service.provider:
        target = service.route(req, Operation.search)
        resource_types = service.searched_types(target.endpoint)
        service.read_search_query(resource_types, req.query)


def _create(service: Any, req: ScimRequest, _document: dict[str, Any] | None) -> None:
    with service.provider:
        target = service.route(req, Operation.create)
        resource_type = service.resource_type_at(cast(str, target.endpoint))
        service.read_creation(resource_type, req.body, "application/scim+json")


def _rewrite(
    service: Any,
    req: ScimRequest,
    document: dict[str, Any] | None,
    operation: Operation,
    read: str,
    apply: str,
) -> None:
    """A PUT or a PATCH: its body read, the stored resource validated back into a model,
    the change applied (``read`` and ``apply`` name the service's methods for it)."""
    with service.provider:
        target = service.route(req, operation)
        resource_type = service.resource_type_at(cast(str, target.endpoint))
        service.read_response_parameters(resource_type, req.query)
        change = getattr(service, read)(resource_type, req.body, "application/scim+json")
        conditions = service.read_conditions(req)
        current = service.get_model(resource_type).model_validate(document)
        getattr(service, apply)(current, change, conditions)


def _replace(service: Any, req: ScimRequest, document: dict[str, Any] | None) -> None:
    _rewrite(service, req, document, Operation.replace, "read_replacement", "apply_replacement")


def _patch(service: Any, req: ScimRequest, document: dict[str, Any] | None) -> None:
    _rewrite(service, req, document, Operation.patch, "read_patch", "apply_patch")


_STEPS: dict[str, Callable[[Any, ScimRequest, dict[str, Any] | None], None]] = {
    "get user by id": _get,
    "filter userName eq": _search,
    "PATCH replace (2 attributes)": _patch,
    "PUT user (replace)": _replace,
    "create user": _create,
}


def budgets(compare: dict[str, Any]) -> list[Budget]:
    """Per cell of a compare run: what its aim leaves above the bare ceiling.

    At 1 client a request's rate is the inverse of its round trip: the aim leaves
    ``1/aim - 1/bare`` of latency above the ceiling's. With more clients the machine is
    saturated (the bare ceiling is CPU-bound there), so the aim leaves
    ``cores x (1/aim - 1/bare)`` of the machine's CPU per request.
    """
    cores = int(compare.get("machine", {}).get("nproc") or 1)
    found = []
    for row in compare["compare"]:
        bare = (row.get("bare") or {}).get("rps")
        aim = row.get("aim_rps")
        if not bare or not aim:
            continue
        per = 1000 / aim - 1000 / bare
        single = row["concurrency"] == 1
        found.append(
            Budget(
                operation=row["operation"],
                concurrency=row["concurrency"],
                aim_rps=aim,
                bare_rps=bare,
                ms=per if single else per * cores,
                basis="latency" if single else f"CPU of {cores} cores",
            )
        )
    return found
