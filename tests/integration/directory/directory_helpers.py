"""Helpers for the store-backed directory sync tests: run a sync, look over SCIM, read tables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner, Result
from sqlalchemy import MetaData, select

from connector.adapters.ldap.config import DirectoryConfig
from connector.adapters.sql.tables import DirectoryLinkRow, OutboxRow
from connector.bootstrap import Connector
from connector.entrypoints.cli import main
from connector.services.directory.sync import DirectoryTarget, SyncResult, run_sync
from tests.conftest import SellerHandle
from tests.integration.ldap.ldap_helpers import make_config, reader_for
from tests.support.slapd import Slapd

CATALOG, ORDERS, FINANCE = "Catalog editors", "Order handlers", "Finance viewers"
PASSWORD_ENV = "SELLER_CONNECTOR_TEST_LDAP_PASSWORD"
CORP_EMAILS = [
    f"{n}@example.com" for n in ("alice", "bob", "carol", "dave", "erin", "frank", "gina")
]


def config_for(server: Slapd, seller_id: str, **overrides: Any) -> DirectoryConfig:
    """The corp source (see ldap_helpers.make_config) feeding this seller."""
    return make_config(server, seller={"id": seller_id}, **overrides)


def sync(
    connector: Connector,
    server: Slapd,
    config: DirectoryConfig,
    target: DirectoryTarget | None = None,
    **kwargs: Any,
) -> SyncResult:
    """One run of ``config`` into the store (or through ``target``, e.g. a crashing wrapper)."""
    with reader_for(server, config) as reader:
        return run_sync(config, reader, target or connector.directory_target(config), **kwargs)


def scim_user(client: Any, seller: SellerHandle, user_name: str) -> dict[str, Any] | None:
    """The SCIM User with this userName, found with a filter as Okta or Entra would."""
    response = client.get(
        "/scim/v2/Users",
        query_string={"filter": f'userName eq "{user_name}"'},
        headers=seller.headers,
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["totalResults"] <= 1
    return body["Resources"][0] if body["totalResults"] else None


def scim_get(client: Any, seller: SellerHandle, user_id: str) -> dict[str, Any]:
    response = client.get(f"/scim/v2/Users/{user_id}", headers=seller.headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def scim_groups_of(user: dict[str, Any]) -> set[str]:
    return {g["display"] for g in user.get("groups", [])}


def scim_group_members(client: Any, seller: SellerHandle, name: str) -> set[str]:
    """The member ids of a permission set, read as a SCIM Group."""
    response = client.get(
        "/scim/v2/Groups",
        query_string={"filter": f'displayName eq "{name}"'},
        headers=seller.headers,
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    [group] = response.get_json()["Resources"]
    return {m["value"] for m in group.get("members", [])}


def outbox(connector: Connector) -> list[tuple[str, str]]:
    """(topic, aggregate id) of every outbox entry, in order."""
    with connector.engine.connect() as connection:
        rows = connection.execute(
            select(OutboxRow.topic, OutboxRow.aggregate_id).order_by(OutboxRow.id)
        )
        return [(t, a) for t, a in rows]


def links(connector: Connector, source_id: str = "corp-openldap") -> dict[str, str]:
    """stable id -> user id, for one source."""
    with connector.engine.connect() as connection:
        rows = connection.execute(
            select(DirectoryLinkRow.stable_id, DirectoryLinkRow.user_id).where(
                DirectoryLinkRow.source_id == source_id
            )
        )
        return dict(rows.all())


def store_dump(connector: Connector) -> dict[str, list[str]]:
    """Every row of every table, as sorted JSON strings: equal dumps, nothing changed."""
    metadata = MetaData()
    metadata.reflect(connector.engine)
    dump: dict[str, list[str]] = {}
    with connector.engine.connect() as connection:
        for name, table in sorted(metadata.tables.items()):
            rows = connection.execute(select(table)).mappings()
            dump[name] = sorted(json.dumps(dict(r), default=str, sort_keys=True) for r in rows)
    return dump


def state_by_stable_id(connector: Connector, config: DirectoryConfig) -> dict[str, tuple[Any, ...]]:
    """The users linked to the source, by stable id (user ids differ between two stores)."""
    target = connector.directory_target(config)
    seller_id = target.resolve_seller(config.seller_id, config.seller_name)
    return {
        u.external_id: (u.emails, u.given_name, u.family_name, u.active, u.permission_sets)
        for u in target.known_users(seller_id)
        if u.external_id
    }


def write_config(path: Path, config: DirectoryConfig) -> Path:
    """Write a source as the YAML file an operator would keep."""
    path.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_none=True)))
    return path


def cli(connector: Connector, home: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    """Run ``seller-connector`` on the test's store, as an operator would."""
    return CliRunner().invoke(
        main,
        list(args),
        env={
            "SELLER_CONNECTOR_DATABASE_URL": connector.settings.database_url,
            "SELLER_CONNECTOR_HOME": str(home),
            **(env or {}),
        },
        catch_exceptions=False,
    )
