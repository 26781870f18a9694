"""The store-backed directory sync on both stores (``database_url``: SQLite and PostgreSQL).

Savepoints, the link table's keys and the batched membership writes behave per
database: the main story runs on each.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from connector.adapters.sql.tables import OutboxRow
from connector.bootstrap import Connector, bootstrap
from connector.domain.drafts import Actor
from connector.domain.model import Plan
from connector.entrypoints.web import create_app
from connector.services import sellers as seller_cases
from tests.conftest import SellerHandle, make_settings
from tests.integration.directory.directory_helpers import (
    CATALOG,
    FINANCE,
    ORDERS,
    config_for,
    links,
    scim_get,
    scim_groups_of,
    scim_user,
    store_dump,
    sync,
)
from tests.integration.ldap.ldap_helpers import dn, gdn
from tests.support.slapd import Slapd, member_change, replace_attr, user_ldif

pytestmark = pytest.mark.ldap


@pytest.fixture
def store(database_url: str, tmp_path: Path) -> Connector:
    return bootstrap(make_settings(database_url, tmp_path), migrate=False)


@pytest.fixture
def acme(store: Connector) -> SellerHandle:
    with store.uow() as uow:
        seller, primary = seller_cases.create_seller(
            uow,
            store.catalogue,
            "Acme",
            Plan.professional,
            "owner@acme.example.com",
            "O O",
            Actor("t"),
        )
        _, token = seller_cases.issue_token(uow, seller, "test", Actor("t"))
        uow.commit()
    return SellerHandle(seller, primary, token, store)


def test_sync_story_on_each_store(corp: Slapd, store: Connector, acme: SellerHandle) -> None:
    client: Any = create_app(store).test_client()
    config = config_for(corp, acme.seller.id)

    first = sync(store, corp, config, batch_size=4)  # two batches
    assert first.ok and len(first.applied) == 7
    alice = scim_user(client, acme, "alice@example.com")
    assert alice and scim_groups_of(alice) == {CATALOG} and len(links(store)) == 7

    corp.modify(replace_attr(dn("alice"), "mail", "alice.new@example.com"))
    corp.modify(member_change(gdn("finance"), "add", dn("alice")))
    corp.modify(replace_attr(dn("dave"), "employeeType", "disabled"))
    corp.add(user_ldif("hank"))
    corp.modify(member_change(gdn("orders"), "add", dn("hank")))

    before = store_dump(store)
    dry = sync(store, corp, config, dry_run=True)
    assert len(dry.plan.actions()) == 4 and store_dump(store) == before

    with store.engine.connect() as connection:
        seen = connection.scalar(select(OutboxRow.id).order_by(OutboxRow.id.desc()).limit(1))
    second = sync(store, corp, config, batch_size=2)
    assert second.ok and not second.full and len(second.applied) == 4
    after = scim_get(client, acme, alice["id"])
    assert after["userName"] == "alice.new@example.com"
    assert scim_groups_of(after) == {CATALOG, FINANCE}
    dave = scim_user(client, acme, "dave@example.com")
    hank = scim_user(client, acme, "hank@example.com")
    assert dave and dave["active"] is False and hank and scim_groups_of(hank) == {ORDERS}
    with store.engine.connect() as connection:
        new = set(
            connection.execute(
                select(OutboxRow.topic, OutboxRow.aggregate_id).where(OutboxRow.id > seen)
            ).all()
        )
    assert {
        ("user.sync", alice["id"]),
        ("user.sync", dave["id"]),
        ("user.invite", hank["id"]),
    } <= new
    assert sync(store, corp, config, full=True).plan.is_empty
