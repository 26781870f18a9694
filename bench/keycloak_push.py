"""Benchmark pushing users into a real Keycloak: the connector's bulk path vs a plain loop.

Both paths create the same N users, each with the same shape (username, email, names, the
three connector attributes, enabled), make them members of their seller's organization, give
them one direct ``seller-portal`` client role and put them in one permission-set group that
carries two roles. Each path gets a seller (organization and group) of its own, so both create
everything from scratch, in the same run against the same Keycloak:

* ``connector bulk``: ``KeycloakIdentityProvider.bulk_sync_users`` as the least-privilege
  ``seller-connector`` client: organization, catalogue and groups converged once, then
  ``max_workers`` users in flight, each converged (read, then write only the difference).
  ``partialImport`` needs ``manage-realm``, which the default client lacks, so it is not used.
* ``python-keycloak loop``: the obvious script, one user after the other with python-keycloak's
  ``KeycloakAdmin`` as the same client: create the user, add it to the organization, assign the
  client role, add it to the group (4 calls, no reads).

Prints a table (users/s for each, and the ratio) and writes JSON to
bench/results/keycloak_push.json. It starts a throwaway Keycloak (dev-mem) through
tests/support/keycloak.py, or reuses the one named by SELLER_CONNECTOR_TEST_KEYCLOAK_URL (with
SELLER_CONNECTOR_TEST_KEYCLOAK_ADMIN_USER / _ADMIN_PASSWORD). Run:

    .venv/bin/python bench/keycloak_push.py [--users 1000] [--workers 4] [--warmup 50]
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
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

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
DIRECT = {"orders": Level.view}
GROUP_PERMISSIONS = {"inventory": Level.edit, "reports": Level.view}


def make_seller(tag: str) -> SellerAccount:
    short = uuid.uuid4().hex[:10]
    return SellerAccount(id=f"bench{short}", name=f"Bench {tag} {short}", plan=Plan.professional)


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


def connector_bulk(idp: KeycloakIdentityProvider, count: int) -> dict[str, Any]:
    """The connector's bulk path; returns timing and a check of what it created."""
    seller = make_seller("bulk")
    team = PermissionSet(
        id=uuid.uuid4().hex,
        seller_id=seller.id,
        display_name="Stock",
        permissions=GROUP_PERMISSIONS,
    )
    users = make_users(seller, count)
    started = time.perf_counter()
    result = idp.bulk_sync_users(seller, [(u, [team]) for u in users])
    seconds = time.perf_counter() - started
    if result.errors:
        first = next(iter(result.errors.values()))
        raise SystemExit(f"bulk path: {len(result.errors)} errors, e.g. {first!r}")
    return {
        "seller_id": seller.id,
        "seconds": seconds,
        "created": len(result.provider_ids),
        "partial_import": result.imported,
    }


def python_keycloak_loop(
    admin: KeycloakAdmin, idp: KeycloakIdentityProvider, count: int
) -> dict[str, Any]:
    """The plain sequential loop with python-keycloak, same user shape (setup timed too)."""
    seller = make_seller("loop")
    users = make_users(seller, count)
    names = idp.names
    started = time.perf_counter()
    # Setup: the organization, the group under /sellers/{seller}, its roles.
    org_id = admin.create_organization(
        {
            "name": seller.name,
            "alias": names.organization_alias.format(seller_id=seller.id),
            "attributes": {"seller_id": [seller.id]},
        }
    )
    if not org_id:
        org_id = admin.get_organizations({"search": seller.name})[0]["id"]
    root = admin.get_group_by_path(f"/{names.group_root}")
    seller_group = admin.create_group({"name": seller.id}, parent=root["id"])
    team_group = admin.create_group({"name": uuid.uuid4().hex}, parent=seller_group)
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
    return {"seller_id": seller.id, "seconds": seconds, "created": count, "org_id": org_id}


def org_member_count(server: KeycloakServer, seller_id: str) -> int:
    org = server.admin_json("GET", "organizations", params={"q": f"seller_id:{seller_id}"})[0]
    return int(server.admin_json("GET", f"organizations/{org['id']}/members/count"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1000, help="users per path (default 1000)")
    parser.add_argument(
        "--workers", type=int, default=4, help="requests in flight for the bulk path (default 4)"
    )
    parser.add_argument(
        "--warmup", type=int, default=50, help="untimed users per path first (default 50)"
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write the JSON")
    args = parser.parse_args()

    server = KeycloakServer.from_env()
    started_here = server is None
    if server is None:
        print("Starting a throwaway Keycloak (dev-mem)...", flush=True)
        begin = time.perf_counter()
        server = KeycloakServer.start(db="dev-mem")
        print(f"  ready after {time.perf_counter() - begin:.0f} s: {server.url}", flush=True)
    try:
        settings = server.connector_settings(max_workers=args.workers)
        idp = KeycloakIdentityProvider(settings)
        idp.ensure_catalogue()  # once, outside both timings
        admin = KeycloakAdmin(
            server_url=settings.url + "/",
            realm_name=settings.realm,
            user_realm_name=settings.realm,
            client_id=settings.client_id,
            client_secret_key=settings.client_secret,
            grant_type="client_credentials",
        )
        if args.warmup:
            # Untimed, through both paths: a fresh JVM is slow until its JIT has warmed up,
            # which would favour whichever path runs second.
            print(f"Warming up with {args.warmup} users per path...", flush=True)
            python_keycloak_loop(admin, idp, args.warmup)
            connector_bulk(idp, args.warmup)
        print(f"Pushing {args.users} users per path...", flush=True)
        loop = python_keycloak_loop(admin, idp, args.users)
        print(f"  python-keycloak loop: {loop['seconds']:.1f} s", flush=True)
        bulk = connector_bulk(idp, args.users)
        print(f"  connector bulk: {bulk['seconds']:.1f} s", flush=True)
        for name, run in (("bulk", bulk), ("loop", loop)):
            members = org_member_count(server, run["seller_id"])
            if members != args.users:
                raise SystemExit(f"{name}: {members} organization members, not {args.users}")
            run["organization_members"] = members
    finally:
        if started_here:
            server.stop()

    rows = [
        ("connector bulk_sync_users", bulk["seconds"], args.users / bulk["seconds"]),
        ("python-keycloak loop", loop["seconds"], args.users / loop["seconds"]),
    ]
    ratio = rows[0][2] / rows[1][2]
    print()
    print(f"{'path':<28} {'users':>6} {'seconds':>9} {'users/s':>9}")
    print(f"{'-' * 28} {'-' * 6} {'-' * 9} {'-' * 9}")
    for name, seconds, rate in rows:
        print(f"{name:<28} {args.users:>6} {seconds:>9.1f} {rate:>9.1f}")
    print(f"bulk / loop: {ratio:.2f}x")

    result = {
        "benchmark": "keycloak_push",
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "users": args.users,
        "bulk_workers": args.workers,
        "warmup_users_per_path": args.warmup,
        "keycloak": os.environ.get("KEYCLOAK_VERSION", "26.7.3"),
        "keycloak_started_here": started_here,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "shape": {
            "attributes": 3,
            "organization_member": True,
            "direct_roles": [idp.names.role(c, lv.value) for c, lv in DIRECT.items()],
            "groups": 1,
            "group_roles": [idp.names.role(c, lv.value) for c, lv in GROUP_PERMISSIONS.items()],
        },
        "connector_bulk": {**bulk, "users_per_second": rows[0][2]},
        "python_keycloak_loop": {**loop, "users_per_second": rows[1][2]},
        "ratio_bulk_over_loop": ratio,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"wrote {args.output.relative_to(ROOT) if args.output.is_relative_to(ROOT) else args.output}"
    )


if __name__ == "__main__":
    main()
