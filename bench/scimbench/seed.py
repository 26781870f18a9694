"""Seeding: the same users and groups in our SQLite store and in the reference server.

Our store is seeded in-process: sellers and their tokens through the use cases (as the
``sellers create`` command does), users, their reserved emails, groups and memberships
with bulk Core inserts built from the repositories' own column mapping, so that the rows
are those the SCIM API would write (with their audit and outbox rows), only much faster.
The reference server is in memory, so it is seeded over HTTP with Bulk requests.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from connector.adapters.sql.repositories import user_columns
from connector.adapters.sql.tables import (
    AuditRow,
    EmailRow,
    MembershipRow,
    OutboxRow,
    PermissionSetRow,
    UserRow,
)
from connector.bootstrap import Connector, bootstrap
from connector.domain.drafts import Actor
from connector.domain.model import (
    DEFAULT_INVITATION_LIFESPAN,
    Email,
    Invitation,
    InvitationState,
    Plan,
    Role,
    SellerUser,
    email_key,
    identity_key,
    utcnow,
)
from connector.services import sellers as seller_cases
from connector.services.users import new_id
from connector.settings import Settings

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
BULK_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
TEAMS = 20
"""Users are spread over this many e-mail domains: ``emails.value co "team07"`` matches 1/20."""
CHUNK = 5000


@dataclass
class Tenant:
    """One seeded seller (or the reference server's single tenant) as the load generator sees it."""

    token: str
    user_ids: list[str] = field(default_factory=list)
    user_names: list[str] = field(default_factory=list)
    group_ids: list[str] = field(default_factory=list)
    seller_id: str = ""


def email_of(index: int, seller: int = 0) -> str:
    """The address of seeded user ``index`` of seller ``seller``: unique across sellers."""
    return f"u{index:06d}.s{seller:04d}@team{index % TEAMS:02d}.example.com"


def user_body(email: str, index: int) -> dict[str, Any]:
    """A SCIM User body as Okta or Entra ID would send it (core attributes only)."""
    return {
        "schemas": [USER_SCHEMA],
        "userName": email,
        "name": {"givenName": f"Given{index}", "familyName": f"Family{index % 997}"},
        "displayName": f"Given{index} Family{index % 997}",
        "emails": [{"value": email, "type": "work", "primary": True}],
        "active": True,
    }


def group_members(group: int, groups: int, users: int) -> list[int]:
    """The user indexes in seeded group ``group``: users round robin over the groups."""
    return list(range(group, users, groups)) if groups else []


# -- Our store ------------------------------------------------------------------------


def database_path(home: Path) -> Path:
    """Where ``serve`` keeps its SQLite file when SELLER_CONNECTOR_HOME is ``home``."""
    return home / "seller-connector.sqlite3"


def open_store(home: Path, database_url: str | None = None) -> Connector:
    """Bootstrap (and migrate) a fresh store, as ``serve`` would: SQLite in ``home`` unless
    ``database_url`` names another database (PostgreSQL)."""
    url = database_url or f"sqlite:///{database_path(home)}"
    return bootstrap(Settings(database_url=url, home=home, secret_key="bench"))


def create_sellers(connector: Connector, count: int, prefix: str = "Bench seller") -> list[Tenant]:
    """Create ``count`` sellers on the professional plan, each with one token.

    Through the use cases, as ``seller-connector sellers create`` does, 100 per transaction.
    """
    actor = Actor("bench")
    tenants: list[Tenant] = []
    for start in range(0, count, 100):
        with connector.uow() as uow:
            for n in range(start, min(count, start + 100)):
                seller, _ = seller_cases.create_seller(
                    uow,
                    connector.catalogue,
                    f"{prefix} {n:04d}",
                    Plan.professional,
                    f"owner.s{n:04d}@seller{n:04d}.example.net",
                    "Olive Owner",
                    actor,
                )
                _, token = seller_cases.issue_token(uow, seller, "bench", actor)
                tenants.append(Tenant(token=token, seller_id=seller.id))
            uow.commit()
    return tenants


def seed_users(
    connector: Connector, tenant: Tenant, seller_index: int, users: int, groups: int
) -> None:
    """Insert ``users`` users and ``groups`` groups (users round robin) into one seller.

    Each user is a secondary user who accepted its invitation and signed in, with one
    reserved email, one ``user.created`` audit event and its two outbox entries: a seller's
    staff in steady state. (All of them pending would be a state the service refuses by
    default: 5,000 open invitations at most per seller.)
    """
    catalogue = connector.catalogue
    now = utcnow()
    invitation = Invitation(
        InvitationState.accepted, sent_at=now, expires_at=now + DEFAULT_INVITATION_LIFESPAN
    )
    lifespan = {"lifespan_seconds": int(DEFAULT_INVITATION_LIFESPAN.total_seconds())}
    ids = [new_id() for _ in range(users)]
    names = [email_of(i, seller_index) for i in range(users)]
    with connector.engine.begin() as connection:
        for start in range(0, users, CHUNK):
            user_rows: list[dict[str, Any]] = []
            email_rows: list[dict[str, Any]] = []
            audit_rows: list[dict[str, Any]] = []
            outbox_rows: list[dict[str, Any]] = []
            for i in range(start, min(users, start + CHUNK)):
                body = user_body(names[i], i)
                user = SellerUser(
                    id=ids[i],
                    seller_id=tenant.seller_id,
                    user_name=names[i],
                    role=Role.secondary,
                    emails=[Email(names[i], type="work", primary=True)],
                    given_name=body["name"]["givenName"],
                    family_name=body["name"]["familyName"],
                    display_name=body["displayName"],
                    invitation=invitation,
                    created_at=now,
                    updated_at=now,
                    last_login_at=now,
                )
                user_rows.append(
                    {
                        "id": user.id,
                        "seller_id": user.seller_id,
                        "created_at": now,
                        "version": 1,
                        **user_columns(user),
                    }
                )
                email_rows.append(
                    {
                        "email_key": email_key(names[i]),
                        "user_id": user.id,
                        "seller_id": user.seller_id,
                        "current": True,
                    }
                )
                audit_rows.append(
                    {
                        "seller_id": user.seller_id,
                        "at": now,
                        "actor": "bench",
                        "action": "user.created",
                        "target": f"user:{user.id}",
                        "changes": {"userName": {"from": None, "to": names[i]}, "active": True},
                    }
                )
                for topic, payload in (("user.invite", lifespan), ("user.sync", {})):
                    outbox_rows.append(_outbox(user.seller_id, topic, user.id, payload, now))
            connection.execute(insert(UserRow), user_rows)
            connection.execute(insert(EmailRow), email_rows)
            connection.execute(insert(AuditRow), audit_rows)
            connection.execute(insert(OutboxRow), outbox_rows)

        defaults = catalogue.default_permission_sets
        group_ids = [new_id() for _ in range(groups)]
        set_rows = [
            {
                "id": group_ids[g],
                "seller_id": tenant.seller_id,
                "display_name": f"Team {g:04d}",
                "display_name_key": identity_key(f"Team {g:04d}"),
                "external_id": None,
                "permissions": {k: v.value for k, v in defaults[g % len(defaults)].permissions}
                if defaults
                else {},
                "profile": {},
                "created_at": now,
                "updated_at": now,
                "version": 1,
            }
            for g in range(groups)
        ]
        if set_rows:
            connection.execute(insert(PermissionSetRow), set_rows)
        member_rows = [
            {"permission_set_id": group_ids[g], "user_id": ids[u], "position": n}
            for g in range(groups)
            for n, u in enumerate(group_members(g, groups, users))
        ]
        for chunk in _chunked(member_rows):
            connection.execute(insert(MembershipRow), chunk)
    tenant.user_ids.extend(ids)
    tenant.user_names.extend(names)
    tenant.group_ids.extend(group_ids)


def _outbox(
    seller_id: str, topic: str, aggregate: str, payload: dict[str, Any], now: dt.datetime
) -> dict[str, Any]:
    return {
        "seller_id": seller_id,
        "topic": topic,
        "aggregate_id": aggregate,
        "payload": payload,
        "state": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }


def _chunked(rows: list[dict[str, Any]], size: int = CHUNK) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def seed_store(
    home: Path,
    sellers: int,
    users: int,
    groups: int,
    *,
    first_users: int | None = None,
    first_groups: int | None = None,
    database_url: str | None = None,
) -> list[Tenant]:
    """A fresh store in ``home`` with ``sellers`` sellers of ``users`` users and ``groups`` groups.

    The first seller may have another size (``first_users``, ``first_groups``): the one
    measured among many.
    """
    connector = open_store(home, database_url)
    try:
        tenants = create_sellers(connector, sellers)
        for n, tenant in enumerate(tenants):
            if n == 0:
                seed_users(
                    connector,
                    tenant,
                    n,
                    users if first_users is None else first_users,
                    groups if first_groups is None else first_groups,
                )
            else:
                seed_users(connector, tenant, n, users, groups)
    finally:
        connector.engine.dispose()
    if database_url:
        return tenants
    # Leave the database file whole, not in a large write-ahead log.
    database = sqlite3.connect(database_path(home))
    try:
        database.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        database.close()
    return tenants


# -- The reference server ----------------------------------------------------------------


def bulk_seed(port: int, prefix: str, token: str, users: int, groups: int) -> Tenant:
    """Seed the reference server over HTTP: Bulk requests of up to 1,000 operations."""
    tenant = Tenant(token=token)
    names = [email_of(i) for i in range(users)]
    for start in range(0, users, 1000):
        operations = [
            {"method": "POST", "path": "/Users", "bulkId": f"u{i}", "data": user_body(names[i], i)}
            for i in range(start, min(users, start + 1000))
        ]
        tenant.user_ids.extend(_bulk(port, prefix, token, operations))
    tenant.user_names.extend(names)
    for start in range(0, groups, 250):
        operations = [
            {
                "method": "POST",
                "path": "/Groups",
                "bulkId": f"g{g}",
                "data": {
                    "schemas": [GROUP_SCHEMA],
                    "displayName": f"Team {g:04d}",
                    "members": [
                        {"value": tenant.user_ids[u], "type": "User"}
                        for u in group_members(g, groups, users)
                    ],
                },
            }
            for g in range(start, min(groups, start + 250))
        ]
        tenant.group_ids.extend(_bulk(port, prefix, token, operations))
    return tenant


def _bulk(port: int, prefix: str, token: str, operations: list[dict[str, Any]]) -> list[str]:
    """Send one Bulk request; the ids of what it created, in order."""
    body = json.dumps({"schemas": [BULK_SCHEMA], "Operations": operations})
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        connection.request(
            "POST",
            f"{prefix}/Bulk",
            body=body,
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/scim+json",
            },
        )
        response = connection.getresponse()
        payload = json.loads(response.read())
    finally:
        connection.close()
    if response.status != 200:
        raise RuntimeError(f"Bulk seeding failed: {response.status} {payload}")
    ids = []
    for result in payload["Operations"]:
        if not str(result.get("status")).startswith("201"):
            raise RuntimeError(f"Bulk seeding failed: {result}")
        ids.append(str(result["location"]).rstrip("/").rsplit("/", 1)[-1])
    return ids
