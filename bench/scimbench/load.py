"""A small closed-loop HTTP load generator, the same for both servers.

Each virtual client is a forked process (so that the client side is not bound by one
GIL) holding one keep-alive ``http.client`` connection, sending the next request as
soon as the previous answer is read. Requests started during the warm-up are not
counted. Each cell stops by itself at its deadline or at its request budget.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import math
import multiprocessing
import os
import random
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from scimbench.seed import BULK_SCHEMA, TEAMS, Tenant, user_body

PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
HOST = "127.0.0.1"
RUN = f"{os.getpid():x}{random.getrandbits(24):06x}"
"""Makes the new users' addresses of this run unique (every address must be brand new)."""

Check = Callable[[int, bytes], bool]
MAX_OVERRUN = 60.0
"""At most this many seconds past a cell's deadline to reach its minimum of requests."""


@dataclass
class Client:
    """What one virtual client knows: the tenant's data, a random source, a unique tag."""

    tenant: Tenant
    prefix: str
    users: int
    rng: random.Random
    tag: str
    counter: itertools.count[int] = field(default_factory=itertools.count)
    cursor: str | None = None

    def fresh_email(self) -> str:
        n = next(self.counter)
        return f"new.{self.tag}.{n}@team{n % TEAMS:02d}.example.com"


@dataclass(frozen=True)
class Request:
    """One HTTP request and how to tell that its answer is a success."""

    method: str
    path: str
    body: bytes | None
    ok: Check


@dataclass(frozen=True)
class Operation:
    """One kind of request and how to build the next one."""

    name: str
    kind: str  # "read" or "write"
    build: Callable[[Client], Request]
    budget: int | None = None  # at most this many measured requests per cell
    note: str = ""


def _status(*expected: int) -> Check:
    return lambda status, _body: status in expected


def _one_result(status: int, body: bytes) -> bool:
    return status == 200 and json.loads(body).get("totalResults") == 1


def _full_page(status: int, body: bytes) -> bool:
    return status == 200 and len(json.loads(body).get("Resources") or []) == 100


def _bulk_ok(status: int, body: bytes) -> bool:
    if status != 200:
        return False
    return all(str(r.get("status", "")).startswith("2") for r in json.loads(body)["Operations"])


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def _query(**params: Any) -> str:
    return urllib.parse.urlencode(params, quote_via=urllib.parse.quote)


# -- The operations ----------------------------------------------------------------------


def get_user(c: Client) -> Request:
    return Request("GET", f"{c.prefix}/Users/{c.rng.choice(c.tenant.user_ids)}", None, _status(200))


def filter_eq(c: Client) -> Request:
    name = c.rng.choice(c.tenant.user_names)
    query = _query(filter=f'userName eq "{name}"')
    return Request("GET", f"{c.prefix}/Users?{query}", None, _one_result)


def filter_co(c: Client) -> Request:
    pages = max(1, min(5, c.users // TEAMS // 100))
    team = f"team{c.rng.randrange(TEAMS):02d}"
    start = 1 + 100 * c.rng.randrange(pages)
    query = _query(filter=f'emails.value co "{team}"', startIndex=start, count=100)
    return Request("GET", f"{c.prefix}/Users?{query}", None, _status(200))


def filter_work_email(c: Client) -> Request:
    """Entra ID's matching lookup by work email (a value filter)."""
    name = c.rng.choice(c.tenant.user_names)
    query = _query(filter=f'emails[type eq "work"].value eq "{name}"')
    return Request("GET", f"{c.prefix}/Users?{query}", None, _one_result)


def list_page(c: Client) -> Request:
    start = 1 + c.rng.randrange(max(1, c.users - 100))
    query = _query(startIndex=start, count=100)
    return Request("GET", f"{c.prefix}/Users?{query}", None, _full_page)


def cursor_page(c: Client) -> Request:
    """The next page of a walk through all users by cursor (RFC 9865), from the start again at the end."""
    query = _query(cursor=c.cursor or "", count=100)

    def ok(status: int, body: bytes) -> bool:
        if status != 200:
            return False
        c.cursor = json.loads(body).get("nextCursor")
        return True

    return Request("GET", f"{c.prefix}/Users?{query}", None, ok)


def patch_replace(c: Client) -> Request:
    n = next(c.counter)
    body = {
        "schemas": [PATCH_SCHEMA],
        "Operations": [
            {"op": "replace", "path": "displayName", "value": f"Renamed {c.tag} {n}"},
            {"op": "replace", "path": "name.givenName", "value": f"Given {c.tag} {n}"},
        ],
    }
    user = c.rng.choice(c.tenant.user_ids)
    return Request("PATCH", f"{c.prefix}/Users/{user}", _json(body), _status(200, 204))


def replace_user(c: Client) -> Request:
    """PUT the whole user back with new names (as Okta pushes profile updates)."""
    n = next(c.counter)
    index = c.rng.randrange(len(c.tenant.user_ids))
    user_id, name = c.tenant.user_ids[index], c.tenant.user_names[index]
    body = {**user_body(name, index), "id": user_id}
    body["name"] = {"givenName": f"Put {c.tag} {n}", "familyName": f"Family{index % 997}"}
    return Request("PUT", f"{c.prefix}/Users/{user_id}", _json(body), _status(200))


def patch_members(c: Client) -> Request:
    members = c.rng.sample(c.tenant.user_ids, min(100, len(c.tenant.user_ids)))
    body = {
        "schemas": [PATCH_SCHEMA],
        "Operations": [{"op": "add", "path": "members", "value": [{"value": m} for m in members]}],
    }
    group = c.rng.choice(c.tenant.group_ids)
    return Request("PATCH", f"{c.prefix}/Groups/{group}", _json(body), _status(200, 204))


def create_user(c: Client) -> Request:
    body = user_body(c.fresh_email(), next(c.counter))
    return Request("POST", f"{c.prefix}/Users", _json(body), _status(201))


def bulk_creates(c: Client) -> Request:
    ops = [
        {
            "method": "POST",
            "path": "/Users",
            "bulkId": f"b{n}",
            "data": user_body(c.fresh_email(), n),
        }
        for n in range(100)
    ]
    body = {"schemas": [BULK_SCHEMA], "Operations": ops}
    return Request("POST", f"{c.prefix}/Bulk", _json(body), _bulk_ok)


MIX: list[tuple[Callable[[Client], Request], int]] = [
    (get_user, 30),
    (filter_eq, 25),
    (list_page, 5),
    (filter_co, 5),
    (patch_replace, 20),
    (create_user, 10),
    (patch_members, 5),
]
"""The soak's mix: what an identity provider's sync does, mostly lookups and small changes."""


def mixed(c: Client) -> Request:
    build = c.rng.choices([b for b, _ in MIX], weights=[w for _, w in MIX])[0]
    return build(c)


def operations() -> list[Operation]:
    """The compared operations, reads first (so that writes do not change what reads see)."""
    return [
        Operation("get user by id", "read", get_user),
        Operation("filter userName eq", "read", filter_eq),
        Operation(
            "filter emails.value co, page of 100",
            "read",
            filter_co,
            note="1/20 of the users match; a random page among the first five",
        ),
        Operation(
            "list page of 100 (startIndex)",
            "read",
            list_page,
            note="a random startIndex over all the users",
        ),
        Operation("PATCH replace (2 attributes)", "write", patch_replace),
        Operation("PUT user (replace)", "write", replace_user, note="the whole user, new names"),
        Operation(
            "PATCH group add 100 members",
            "write",
            patch_members,
            budget=400,
            note="100 random users into a random group",
        ),
        Operation("create user", "write", create_user),
        Operation("Bulk of 100 creates", "write", bulk_creates, budget=60),
    ]


WORK_EMAIL = Operation(
    'filter emails[type eq "work"].value eq',
    "read",
    filter_work_email,
    note="Entra ID's matching lookup by work email",
)
CURSOR = Operation(
    "list page of 100 (cursor)", "read", cursor_page, note="walking all the users by cursor"
)
MIXED = Operation("mixed", "write", mixed)


# -- Running a cell --------------------------------------------------------------------------


@dataclass
class CellResult:
    """The figures of one operation at one concurrency against one server."""

    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]
    error_sample: str = ""

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile of the successful requests' latencies, in ms."""
        if not self.latencies_ms:
            return math.nan
        ordered = sorted(self.latencies_ms)
        rank = max(1, math.ceil(q / 100 * len(ordered)))
        return ordered[rank - 1]

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
            "rps": round(self.rps, 1),
            "p50_ms": round(self.percentile(50), 2),
            "p99_ms": round(self.percentile(99), 2),
            "error_sample": self.error_sample,
        }


def headers(token: str) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/scim+json",
        "Accept": "application/scim+json",
    }


def _client(
    index: int,
    port: int,
    client: Client,
    op: Operation,
    times: tuple[float, float, float],
    budget: int | None,
    minimum: int,
    results: Any,
) -> None:
    """One virtual client's closed loop (runs in a forked process)."""
    start_at, measure_from, stop_at = times
    # A slow operation goes on past the deadline until it has a few requests measured.
    hard_stop = stop_at + (MAX_OVERRUN if minimum else 0.0)
    sent = headers(client.tenant.token)
    connection = http.client.HTTPConnection(HOST, port, timeout=120)
    latencies: list[float] = []
    errors = 0
    sample = ""
    last_end = 0.0
    while time.monotonic() < start_at:
        time.sleep(0.001)
    while True:
        began = time.monotonic()
        done = len(latencies) + errors
        if budget is not None and done >= budget:
            break
        if began >= stop_at and (done >= minimum or began >= hard_stop):
            break
        request = op.build(client)
        t = time.perf_counter()
        try:
            connection.request(request.method, request.path, body=request.body, headers=sent)
            response = connection.getresponse()
            data = response.read()
            status = response.status
        except (OSError, http.client.HTTPException) as error:
            connection.close()
            connection = http.client.HTTPConnection(HOST, port, timeout=120)
            status, data = 0, repr(error).encode()
        elapsed = (time.perf_counter() - t) * 1000
        try:
            good = request.ok(status, data)
        except (ValueError, KeyError, TypeError):
            good = False
        if began < measure_from:
            continue
        last_end = time.monotonic()
        if good:
            latencies.append(elapsed)
        else:
            errors += 1
            sample = sample or f"{request.method} {request.path[:80]} -> {status} {data[:300]!r}"
    connection.close()
    results.put((index, latencies, errors, sample, last_end))


def run_cell(
    port: int,
    prefix: str,
    tenant: Tenant,
    users: int,
    op: Operation,
    concurrency: int,
    duration: float,
    warmup: float,
    seed: int,
    min_requests: int = 0,
) -> CellResult:
    """Run one operation with ``concurrency`` clients for ``duration`` s after ``warmup`` s.

    With ``min_requests``, the clients go on past the deadline (at most MAX_OVERRUN s)
    until they have measured that many requests between them.
    """
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    start_at = time.monotonic() + 0.3
    times = (start_at, start_at + warmup, start_at + warmup + duration)
    budget = None if op.budget is None else max(1, math.ceil(op.budget / concurrency))
    minimum = math.ceil(min_requests / concurrency)
    processes = []
    for index in range(concurrency):
        rng = random.Random(seed * 1000 + index)
        client = Client(tenant, prefix, users, rng, f"{RUN}x{seed}x{index}")
        process = context.Process(
            target=_client,
            args=(index, port, client, op, times, budget, minimum, results),
            daemon=True,
        )
        process.start()
        processes.append(process)
    collected = [results.get(timeout=duration + warmup + MAX_OVERRUN + 300) for _ in processes]
    for process in processes:
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
    latencies = [x for _, lat, _, _, _ in collected for x in lat]
    errors = sum(e for _, _, e, _, _ in collected)
    sample = next((s for _, _, _, s, _ in collected if s), "")
    last = max((end for *_, end in collected), default=0.0)
    seconds = max(0.0, last - times[1])
    return CellResult(len(latencies), errors, seconds, latencies, sample)


def smoke(
    port: int, prefix: str, tenant: Tenant, users: int, ops: list[Operation]
) -> dict[str, str]:
    """Send each operation once; the failures, by operation (an empty dict when all succeed)."""
    failures: dict[str, str] = {}
    client = Client(tenant, prefix, users, random.Random(7), f"{RUN}smoke")
    connection = http.client.HTTPConnection(HOST, port, timeout=120)
    for op in ops:
        request = op.build(client)
        connection.request(
            request.method, request.path, body=request.body, headers=headers(tenant.token)
        )
        response = connection.getresponse()
        data = response.read()
        with contextlib.suppress(Exception):
            if request.ok(response.status, data):
                continue
        failures[op.name] = (
            f"{request.method} {request.path[:100]} -> {response.status} {data[:500]!r}"
        )
    connection.close()
    return failures
