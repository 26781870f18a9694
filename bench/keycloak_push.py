"""Benchmark pushing users into a real Keycloak: the connector's path against a plain loop and
against parallel partial imports (the ceiling), from one run.

Every path creates users of the same shape in a seller of its own (organization and group
made first): username, email, names, the three connector attributes, enabled, member of the
seller's organization, two direct ``seller-portal`` client roles, and one permission-set group
(which carries a role of its own):

* ``connector``: ``KeycloakIdentityProvider.bulk_sync_users`` as the least-privilege
  ``seller-connector`` client, in rounds of ``--round`` users as the outbox worker claims them;
  with the plugin installed each round goes in chunks of ``--chunk`` users to its bulk
  endpoint, ``--parallel`` requests in flight.
* ``python-keycloak loop``: the obvious script, one user after the other with python-keycloak's
  ``KeycloakAdmin`` as the same client: create the user, add it to the organization, map its
  two client roles, add it to the group (4 calls).
* ``partial import`` (the ceiling, timed alone): ``POST /partialImport`` with the users, their
  client roles and groups, in chunks of ``--pi-chunk``, ``--pi-parallel`` in flight, then the
  organization memberships (which partial import cannot do), ``--pi-parallel`` calls in
  flight. It needs ``manage-realm``, which the connector's account does not get: it runs as the
  master realm's administrator, for this ceiling only.
* ``admin API, bounded concurrency`` (with ``--admin-api-users``): the connector's path
  without the plugin, ``--parallel`` users at once through the ordinary admin API.

Prints a table (users/s) and the ratios the issue asks for, and writes JSON to
bench/results/keycloak_push.json. It starts a throwaway Keycloak (dev-mem, with the plugin)
through tests/support/keycloak.py, or reuses the one named by SELLER_CONNECTOR_TEST_KEYCLOAK_URL
(with SELLER_CONNECTOR_TEST_KEYCLOAK_ADMIN_USER / _ADMIN_PASSWORD). Run:

    .venv/bin/python bench/keycloak_push.py                     # 10,000 users, loop on 1,000
    .venv/bin/python bench/keycloak_push.py --users 1000 --loop-users 300   # quicker

The loop's rate does not depend on how many users it creates (one user at a time), so it is
measured on fewer (``--loop-users``) to keep the run under ten minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
from keycloak import KeycloakAdmin  # noqa: E402

from connector.adapters.keycloak import KeycloakIdentityProvider  # noqa: E402
from connector.domain.catalogue import Level  # noqa: E402
from connector.domain.model import (  # noqa: E402
    Email,
    PermissionSet,
    Plan,
    Role,
    SellerAccount,
    SellerUser,
)
from tests.support.keycloak import KeycloakServer  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "keycloak_push.json"
DIRECT = {"orders": Level.view, "reports": Level.view}
GROUP_PERMISSIONS = {"inventory": Level.edit}


def make_seller(tag: str) -> SellerAccount:
    short = uuid.uuid4().hex[:10]
    return SellerAccount(id=f"bench{short}", name=f"Bench {tag} {short}", plan=Plan.professional)


def make_set(seller: SellerAccount) -> PermissionSet:
    return PermissionSet(
        id=uuid.uuid4().hex,
        seller_id=seller.id,
        display_name="Stock",
        permissions=GROUP_PERMISSIONS,
    )


def make_users(seller: SellerAccount, count: int) -> list[SellerUser]:
    users = []
    for n in range(count):
        address = f"u{n:05d}-{seller.id}@bench.example.com"
        users.append(
            SellerUser(
                id=uuid.uuid4().hex,
                seller_id=seller.id,
                user_name=address,
                role=Role.secondary,
                emails=[Email(address, primary=True)],
                given_name="Bench",
                family_name=f"User {n}",
                permissions=dict(DIRECT),
            )
        )
    return users


def connector_path(
    idp: KeycloakIdentityProvider, count: int, round_size: int, tag: str = "connector"
) -> dict[str, Any]:
    """The connector's bulk path, in rounds as the outbox worker sends them."""
    seller = make_seller(tag)
    team = make_set(seller)
    users = make_users(seller, count)
    started = time.perf_counter()
    requests_made = created = 0
    for first in range(0, count, round_size):
        batch = users[first : first + round_size]
        result = idp.bulk_sync_users(seller, [(u, [team]) for u in batch])
        if result.errors:
            example = next(iter(result.errors.values()))
            raise SystemExit(f"{tag}: {len(result.errors)} errors, e.g. {example!r}")
        requests_made += result.requests
        created += result.created
    seconds = time.perf_counter() - started
    if created != count:
        raise SystemExit(f"{tag}: {created} users created, not {count}")
    return {
        "seller_id": seller.id,
        "seconds": seconds,
        "users": count,
        "bulk_requests": requests_made,
    }


def python_keycloak_loop(
    admin: KeycloakAdmin, idp: KeycloakIdentityProvider, count: int
) -> dict[str, Any]:
    """The plain sequential loop with python-keycloak, same user shape (setup timed too)."""
    seller = make_seller("loop")
    users = make_users(seller, count)
    names = idp.names
    started = time.perf_counter()
    org_id = admin.create_organization(
        {
            "name": seller.name,
            "alias": names.organization_alias.format(seller_id=seller.id),
            "attributes": {"seller_id": [seller.id]},
        }
    )
    root = admin.get_group_by_path(f"/{names.group_root}")
    seller_group = admin.create_group({"name": seller.name}, parent=root["id"])
    team_group = admin.create_group({"name": "Stock"}, parent=seller_group)
    portal = admin.get_client_id(names.portal_client_id)
    client_roles = {r["name"]: r for r in admin.get_client_roles(portal)}
    admin.assign_group_client_roles(
        team_group,
        portal,
        [client_roles[names.role(c, lv.value)] for c, lv in GROUP_PERMISSIONS.items()],
    )
    direct = [client_roles[names.role(c, lv.value)] for c, lv in DIRECT.items()]
    for user in users:
        user_id = admin.create_user(
            {
                "username": user.user_name,
                "email": user.primary_email,
                "firstName": user.given_name,
                "lastName": user.family_name,
                "enabled": True,
                "attributes": {
                    "seller_id": [seller.id],
                    "seller_role": [user.role.value],
                    "seller_connector_user_id": [user.id],
                },
            }
        )
        admin.organization_user_add(user_id, org_id)
        admin.assign_client_role(user_id, portal, direct)
        admin.group_user_add(user_id, team_group)
    seconds = time.perf_counter() - started
    return {"seller_id": seller.id, "seconds": seconds, "users": count}


def partial_imports(
    server: KeycloakServer,
    idp: KeycloakIdentityProvider,
    count: int,
    chunk: int,
    parallel: int,
) -> dict[str, Any]:
    """Parallel partial imports as the master admin, then the organization memberships."""
    seller = make_seller("import")
    team = make_set(seller)
    users = make_users(seller, count)
    base = f"{server.url}/admin/realms/{server.realm}"
    session = requests.Session()
    started = time.perf_counter()
    # Setup, as for the other paths: the organization and the group with its role.
    org_id = idp._ensure_org(seller)
    group = idp._ensure_permission_set_group(seller, team, converge=True)
    roles = sorted(idp._permission_roles(DIRECT))

    def headers() -> dict[str, str]:
        # A fresh token per request: the master admin's expire after a minute.
        return {"Authorization": f"Bearer {server.admin_token(fresh=True)}"}

    def rep(user: SellerUser) -> dict[str, Any]:
        return {
            **idp._desired_user(seller, user),
            "groups": [group["path"]],
            "clientRoles": {idp.names.portal_client_id: roles},
        }

    def import_chunk(batch: list[SellerUser]) -> list[str]:
        response = session.post(
            f"{base}/partialImport",
            json={"ifResourceExists": "SKIP", "users": [rep(u) for u in batch]},
            headers=headers(),
            timeout=600,
        )
        response.raise_for_status()
        return [r["id"] for r in response.json()["results"] if r["action"] == "ADDED"]

    chunks = [users[i : i + chunk] for i in range(0, count, chunk)]
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        ids = [i for got in pool.map(import_chunk, chunks) for i in got]
    imported = time.perf_counter()
    if len(ids) != count:
        raise SystemExit(f"partial import: {len(ids)} users added, not {count}")
    token = {"value": server.admin_token(fresh=True), "at": time.monotonic()}

    def member(user_id: str) -> None:
        if time.monotonic() - token["at"] > 30:
            token.update(value=server.admin_token(fresh=True), at=time.monotonic())
        response = session.post(
            f"{base}/organizations/{org_id}/members",
            data=json.dumps(user_id),
            headers={
                "Authorization": f"Bearer {token['value']}",
                "Content-Type": "application/json",
            },
            timeout=120,
        )
        if response.status_code not in (201, 409):
            raise SystemExit(f"organization member: {response.status_code} {response.text[:200]}")

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        list(pool.map(member, ids))
    finished = time.perf_counter()
    return {
        "seller_id": seller.id,
        "seconds": finished - started,
        "import_seconds": imported - started,
        "membership_seconds": finished - imported,
        "users": count,
        "chunk": chunk,
        "parallel": parallel,
    }


def check(server: KeycloakServer, run: dict[str, Any], name: str) -> None:
    """Every user is there: a member of the organization, with its roles and group."""
    org = server.admin_json("GET", "organizations", params={"q": f"seller_id:{run['seller_id']}"})
    members = int(server.admin_json("GET", f"organizations/{org[0]['id']}/members/count"))
    if members != run["users"]:
        raise SystemExit(f"{name}: {members} organization members, not {run['users']}")
    some = server.admin_json(
        "GET", "organizations/" + org[0]["id"] + "/members", params={"first": 0, "max": 1}
    )[0]
    client = server.admin_json("GET", "clients", params={"clientId": "seller-portal"})[0]
    roles = {
        r["name"]
        for r in server.admin_json(
            "GET", f"users/{some['id']}/role-mappings/clients/{client['id']}"
        )
    }
    groups = [g["path"] for g in server.admin_json("GET", f"users/{some['id']}/groups")]
    if roles != {"orders:view", "reports:view"} or len(groups) != 1:
        raise SystemExit(f"{name}: a user has roles {roles} and groups {groups}")
    run["organization_members"] = members


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--users", type=int, default=10_000, help="users for the connector and the ceiling"
    )
    parser.add_argument("--loop-users", type=int, default=1_000, help="users for the loop")
    parser.add_argument(
        "--round", type=int, default=500, help="users per bulk_sync_users call (the worker's batch)"
    )
    parser.add_argument(
        "--chunk", type=int, default=50, help="users per request to the plugin's endpoint"
    )
    parser.add_argument(
        "--parallel", type=int, default=4, help="requests in flight for the connector"
    )
    parser.add_argument("--pi-chunk", type=int, default=100, help="users per partial import")
    parser.add_argument("--pi-parallel", type=int, default=6, help="partial imports in flight")
    parser.add_argument(
        "--admin-api-users",
        type=int,
        default=0,
        help="also time the admin-API path (no plugin) on this many users",
    )
    parser.add_argument("--warmup", type=int, default=200, help="untimed users per path first")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write the JSON")
    args = parser.parse_args()

    server = KeycloakServer.from_env()
    started_here = server is None
    if server is None:
        print("Starting a throwaway Keycloak (dev-mem, with the plugin)...", flush=True)
        begin = time.perf_counter()
        server = KeycloakServer.start(db="dev-mem")
        print(f"  ready after {time.perf_counter() - begin:.0f} s: {server.url}", flush=True)
    loads = {"start": load()}
    try:
        settings = server.connector_settings(
            bulk_chunk=args.chunk, bulk_parallel=args.parallel, max_workers=args.parallel
        )
        idp = KeycloakIdentityProvider(settings)
        idp.ensure_catalogue()  # once, outside every timing
        if idp.bulk_endpoint() is None:
            raise SystemExit(
                "this Keycloak has no seller-connector bulk endpoint: install the plugin"
            )
        plain = KeycloakIdentityProvider(
            server.connector_settings(bulk_endpoint=False, max_workers=args.parallel)
        )
        admin = KeycloakAdmin(
            server_url=settings.url + "/",
            realm_name=settings.realm,
            user_realm_name=settings.realm,
            client_id=settings.client_id,
            client_secret_key=settings.client_secret,
            grant_type="client_credentials",
        )
        if args.warmup:
            # Untimed, through every path: a fresh JVM is slow until its JIT has warmed up.
            print(f"Warming up with {args.warmup} users per path...", flush=True)
            python_keycloak_loop(admin, idp, min(args.warmup, 100))
            connector_path(idp, args.warmup, args.round, "warmup")
            partial_imports(server, idp, args.warmup, args.pi_chunk, args.pi_parallel)
        print(f"python-keycloak loop, {args.loop_users} users...", flush=True)
        loop = python_keycloak_loop(admin, idp, args.loop_users)
        print(f"  {loop['seconds']:.1f} s", flush=True)
        print(f"connector, {args.users} users...", flush=True)
        ours = connector_path(idp, args.users, args.round)
        print(f"  {ours['seconds']:.1f} s", flush=True)
        print(f"partial imports (ceiling), {args.users} users...", flush=True)
        ceiling = partial_imports(server, idp, args.users, args.pi_chunk, args.pi_parallel)
        print(f"  {ceiling['seconds']:.1f} s", flush=True)
        plain_run = None
        if args.admin_api_users:
            print(f"admin API, bounded concurrency, {args.admin_api_users} users...", flush=True)
            plain_run = connector_path(plain, args.admin_api_users, args.round, "admin-api")
            print(f"  {plain_run['seconds']:.1f} s", flush=True)
        loads["end"] = load()
        for name, run in (("loop", loop), ("connector", ours), ("ceiling", ceiling)):
            check(server, run, name)
        if plain_run:
            check(server, plain_run, "admin-api")
    finally:
        if started_here:
            server.stop()

    def rate(run: dict[str, Any], seconds: float | None = None) -> float:
        return run["users"] / (seconds if seconds is not None else run["seconds"])

    rows = [
        (
            f"connector (plugin, chunks of {args.chunk} x {args.parallel})",
            ours["users"],
            ours["seconds"],
            rate(ours),
        ),
        ("python-keycloak loop", loop["users"], loop["seconds"], rate(loop)),
        (
            f"partial imports ({args.pi_chunk} x {args.pi_parallel}) + memberships",
            ceiling["users"],
            ceiling["seconds"],
            rate(ceiling),
        ),
        (
            "  partial imports alone",
            ceiling["users"],
            ceiling["import_seconds"],
            rate(ceiling, ceiling["import_seconds"]),
        ),
    ]
    if plain_run:
        rows.append(
            (
                f"admin API, {args.parallel} users at once",
                plain_run["users"],
                plain_run["seconds"],
                rate(plain_run),
            )
        )
    over_loop = rate(ours) / rate(loop)
    over_ceiling = rate(ours) / rate(ceiling)
    over_import = rate(ours) / rate(ceiling, ceiling["import_seconds"])
    print()
    print(f"{'path':<52} {'users':>6} {'seconds':>8} {'users/s':>8}")
    print(f"{'-' * 52} {'-' * 6} {'-' * 8} {'-' * 8}")
    for name, users, seconds, per_second in rows:
        print(f"{name:<52} {users:>6} {seconds:>8.1f} {per_second:>8.1f}")
    print()
    print(f"connector / loop:                         {over_loop:.2f}x   (aim: at least 5x)")
    print(f"connector / partial imports + memberships: {over_ceiling:.2f}   (aim: at least 0.5)")
    print(f"connector / partial imports alone:         {over_import:.2f}")
    print(
        f"load average: {loads['start']} at start, {loads.get('end')} at the end ({os.cpu_count()} cores)"
    )

    result = {
        "benchmark": "keycloak_push",
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "keycloak": os.environ.get("KEYCLOAK_VERSION", "26.7.3"),
        "keycloak_started_here": started_here,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load": loads},
        "shape": {
            "attributes": 3,
            "organization_member": True,
            "direct_roles": [idp.names.role(c, lv.value) for c, lv in DIRECT.items()],
            "groups": 1,
            "group_roles": [idp.names.role(c, lv.value) for c, lv in GROUP_PERMISSIONS.items()],
        },
        "settings": vars(args) | {"output": str(args.output)},
        "connector": {**ours, "users_per_second": rate(ours)},
        "python_keycloak_loop": {**loop, "users_per_second": rate(loop)},
        "partial_imports": {
            **ceiling,
            "users_per_second": rate(ceiling),
            "import_users_per_second": rate(ceiling, ceiling["import_seconds"]),
        },
        "admin_api": {**plain_run, "users_per_second": rate(plain_run)} if plain_run else None,
        "ratio_connector_over_loop": over_loop,
        "ratio_connector_over_ceiling": over_ceiling,
        "ratio_connector_over_partial_import_alone": over_import,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    shown = args.output.relative_to(ROOT) if args.output.is_relative_to(ROOT) else args.output
    print(f"wrote {shown}")


if __name__ == "__main__":
    main()
