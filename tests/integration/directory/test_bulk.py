"""The bulk path: a batch is written in set operations, with the seller rules the single
use cases keep, and what only the write can see (a concurrent change, an address taken
meanwhile) is caught there and decided again."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, select

from connector.adapters.sql.tables import AuditRow, EmailRow
from connector.bootstrap import Connector
from connector.domain.drafts import Actor
from connector.domain.model import email_key
from connector.services import users as user_cases
from tests.conftest import SellerHandle, user_body
from tests.integration.directory.directory_helpers import (
    CATALOG,
    config_for,
    links,
    scim_get,
    scim_groups_of,
    scim_user,
    sync,
)
from tests.integration.ldap.ldap_helpers import dn, gdn
from tests.support.slapd import Slapd, member_change, replace_attr, user_ldif

pytestmark = pytest.mark.ldap


@pytest.fixture
def seller(make_seller: Callable[..., SellerHandle]) -> SellerHandle:
    return make_seller("Acme Outdoor")


@contextmanager
def statements(connector: Connector) -> Iterator[list[tuple[str, bool]]]:
    """(first words of each statement, executemany or not), as the database sees them."""
    seen: list[tuple[str, bool]] = []

    def record(_conn: Any, _cursor: Any, sql: str, _params: Any, _ctx: Any, many: bool) -> None:
        seen.append((" ".join(sql.split()[:3]), many))

    event.listen(connector.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(connector.engine, "before_cursor_execute", record)


def test_a_batch_is_written_in_set_operations(
    corp: Slapd, connector: Connector, seller: SellerHandle
) -> None:
    with statements(connector) as seen:
        result = sync(connector, corp, config_for(corp, seller.seller.id), batch_size=100)
    assert result.ok and len(result.applied) == 7
    writes = Counter(
        words for words, _ in seen if words.split()[0] in ("INSERT", "UPDATE", "DELETE")
    )
    # Seven users in one batch: one statement per kind, not one per user (the marker's
    # upsert is the run's own).
    assert writes["INSERT INTO users"] == 1
    assert writes["INSERT INTO reserved_emails"] == 1
    assert writes["INSERT INTO directory_links"] == 1
    assert writes["INSERT INTO memberships"] == 1
    assert writes["INSERT INTO audit_events"] == 1
    assert writes["INSERT INTO outbox"] == 1
    assert writes["UPDATE permission_sets SET"] == 1
    # ...and one write transaction for the whole batch, plus one for the marker.
    begins = [w for w, _ in seen if w.startswith("BEGIN IMMEDIATE")]
    assert len(begins) <= 2


def test_a_change_made_meanwhile_is_read_again_and_kept(
    corp: Slapd, connector: Connector, seller: SellerHandle, client: Any
) -> None:
    config = config_for(corp, seller.seller.id)
    assert sync(connector, corp, config).ok
    alice = scim_user(client, seller, "alice@example.com")
    assert alice
    corp.modify(replace_attr(dn("alice"), "sn", "Smith"))
    target = connector.directory_target(config)
    original, calls = target._apply, {"n": 0}

    def meanwhile(*args: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:  # a SCIM client changes alice between the batch's read and write
            response = client.patch(
                f"/scim/v2/Users/{alice['id']}",
                json={
                    "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                    "Operations": [{"op": "replace", "path": "title", "value": "Buyer"}],
                },
                headers=seller.headers,
            )
            assert response.status_code == 200, response.get_data(as_text=True)
        return original(*args)

    target._apply = meanwhile  # type: ignore[method-assign]
    result = sync(connector, corp, config, target)
    assert result.ok and len(result.applied) == 1
    assert calls["n"] == 2  # decided, refused by the write (version), decided again
    after = scim_get(client, seller, alice["id"])
    assert after["name"]["familyName"] == "Smith" and after["title"] == "Buyer"
    with connector.engine.connect() as connection:
        updates = connection.scalars(
            select(AuditRow.actor).where(
                AuditRow.action == "user.updated", AuditRow.target == f"user:{alice['id']}"
            )
        ).all()
    assert sorted(updates) == ["directory:corp-openldap", f"token:{_token_id(connector, seller)}"]


def _token_id(connector: Connector, seller: SellerHandle) -> str:
    with connector.uow() as uow:
        [token] = uow.tokens.list(seller.seller.id)
    return token.id


def test_an_address_released_by_another_sellers_user_can_be_taken(
    corp: Slapd,
    connector: Connector,
    make_seller: Callable[..., SellerHandle],
    client: Any,
) -> None:
    other = make_seller("Other Shop")
    # Another seller invited gina, who never signed in, then deleted her: released.
    created = client.post(
        "/scim/v2/Users", json=user_body("gina@example.com"), headers=other.headers
    ).get_json()
    assert (
        client.delete(f"/scim/v2/Users/{created['id']}", headers=other.headers).status_code == 204
    )
    seller = make_seller("Acme Outdoor")
    result = sync(connector, corp, config_for(corp, seller.seller.id))
    assert result.ok and len(result.plan.creates) == 7
    gina = scim_user(client, seller, "gina@example.com")
    assert gina and gina["active"] is True
    with connector.engine.connect() as connection:
        row = connection.execute(
            select(EmailRow.user_id, EmailRow.released_at).where(
                EmailRow.email_key == email_key("gina@example.com")
            )
        ).one()
    assert row == (gina["id"], None)


def test_a_reactivation_whose_address_was_taken_meanwhile_is_refused(
    corp: Slapd,
    connector: Connector,
    make_seller: Callable[..., SellerHandle],
    client: Any,
) -> None:
    seller = make_seller("Acme Outdoor")
    config = config_for(corp, seller.seller.id)
    assert sync(connector, corp, config).ok
    frank = scim_user(client, seller, "frank@example.com")
    assert frank
    # frank never signs in: his invitation lapses, he is deactivated, his address released.
    with connector.uow() as uow:
        later = user_cases.utcnow() + dt.timedelta(days=30)
        assert user_cases.expire_invitations(uow, later) == 7
    # Another seller's user takes frank's address; dave's stays free.
    other = make_seller("Other Shop")
    taken = client.post(
        "/scim/v2/Users", json=user_body("frank@example.com"), headers=other.headers
    )
    assert taken.status_code == 201, taken.get_data(as_text=True)

    result = sync(connector, corp, config, full=True, force=True)
    assert len(result.plan.reactivations) == 7
    assert [f.action.user_id for f in result.failures] == [frank["id"]]  # type: ignore[union-attr]
    assert "taken by another user" in result.failures[0].message
    assert scim_get(client, seller, frank["id"])["active"] is False
    dave = scim_user(client, seller, "dave@example.com")
    assert dave and dave["active"] is True
    # Reactivated after its invitation lapsed: a new invitation, its address taken back.
    assert (
        dave["urn:seller-connector:scim:schemas:extension:seller:2.0:User"]["invitationState"]
        == "pending"
    )
    with connector.engine.connect() as connection:
        row = connection.execute(
            select(EmailRow.user_id, EmailRow.released_at, EmailRow.current).where(
                EmailRow.email_key == email_key("dave@example.com")
            )
        ).one()
    assert row == (dave["id"], None, True)


def test_the_same_user_twice_in_one_batch(
    corp: Slapd, connector: Connector, seller: SellerHandle, client: Any
) -> None:
    """A user disabled AND moved between groups: its deactivation and its permission
    change land in one batch, and both are kept."""
    config = config_for(corp, seller.seller.id)
    assert sync(connector, corp, config).ok
    corp.modify(replace_attr(dn("bob"), "employeeType", "disabled"))
    corp.modify(replace_attr(dn("bob"), "mail", "bob.new@example.com"))
    corp.modify(member_change(gdn("orders"), "add", dn("bob")))
    result = sync(connector, corp, config, batch_size=10)
    assert result.ok and len(result.applied) == 3
    bob = scim_user(client, seller, "bob.new@example.com")
    assert bob and bob["active"] is False
    assert scim_groups_of(bob) == {CATALOG, "Order handlers"}
    assert sync(connector, corp, config, full=True).plan.is_empty


def test_new_people_join_sets_after_the_existing_members(
    corp: Slapd, connector: Connector, seller: SellerHandle, client: Any
) -> None:
    config = config_for(corp, seller.seller.id)
    assert sync(connector, corp, config).ok
    corp.add(user_ldif("hank"))
    corp.modify(member_change(gdn("catalog"), "add", dn("hank")))
    assert sync(connector, corp, config).ok
    response = client.get(
        "/scim/v2/Groups",
        query_string={"filter": f'displayName eq "{CATALOG}"'},
        headers=seller.headers,
    )
    [group] = response.get_json()["Resources"]
    members = [m["value"] for m in group["members"]]
    hank = scim_user(client, seller, "hank@example.com")
    assert hank and members[-1] == hank["id"] and len(members) == 4
    assert hank["id"] in links(connector).values()


@pytest.fixture
def any_store(database_url: str, tmp_path: Any) -> Connector:
    """A fresh store on SQLite and on PostgreSQL (the claims' check differs per database)."""
    from connector.bootstrap import bootstrap
    from tests.conftest import make_settings

    return bootstrap(make_settings(database_url, tmp_path), migrate=False)


def test_an_address_taken_between_read_and_write_is_refused(
    corp: Slapd, any_store: Connector
) -> None:
    from connector.domain.model import Plan
    from connector.services import sellers as seller_cases

    with any_store.uow() as uow:
        acme, _ = seller_cases.create_seller(
            uow,
            any_store.catalogue,
            "Acme",
            Plan.professional,
            "o@acme.example.com",
            "O O",
            Actor("t"),
        )
        uow.commit()
    config = config_for(corp, acme.id)
    target = any_store.directory_target(config)
    original, calls = target._apply, {"n": 0}

    def meanwhile(*args: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:  # another seller registers with carol's address right now
            with any_store.uow() as uow:
                seller_cases.create_seller(
                    uow,
                    any_store.catalogue,
                    "Other",
                    Plan.professional,
                    "carol@example.com",
                    "C C",
                    Actor("t"),
                )
                uow.commit()
        return original(*args)

    target._apply = meanwhile  # type: ignore[method-assign]
    result = sync(any_store, corp, config, target)
    assert calls["n"] == 14  # 7 decided, the write refused (carol's address), 7 decided again
    assert [f.action.email for f in result.failures] == ["carol@example.com"]  # type: ignore[union-attr]
    assert "already been used" in result.failures[0].message
    assert len(result.applied) == 6 and not result.marker_stored
