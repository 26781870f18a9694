"""Directory sync from a real slapd into the real SQL store, through the use cases.

What is checked is what a seller's SCIM client (or the identity provider, through the
outbox) would see: users, their groups, active flags, the outbox and the audit trail.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from connector.adapters.sql.tables import AuditRow
from connector.bootstrap import Connector
from connector.domain.drafts import Actor, PermissionSetDraft
from connector.domain.model import Plan
from connector.services import permission_sets as set_cases
from connector.services import users as user_cases
from connector.services.directory.plan import DeactivationReason
from connector.services.directory.target import StoreDirectoryTarget
from tests.conftest import SellerHandle, user_body
from tests.integration.directory.directory_helpers import (
    CATALOG,
    CORP_EMAILS,
    FINANCE,
    ORDERS,
    config_for,
    links,
    outbox,
    scim_get,
    scim_group_members,
    scim_groups_of,
    scim_user,
    state_by_stable_id,
    store_dump,
    sync,
)
from tests.integration.ldap.ldap_helpers import GROUP_MAP, dn, gdn
from tests.support.slapd import (
    CONTRACTORS,
    GROUPS,
    Slapd,
    member_change,
    replace_attr,
    user_ldif,
)

pytestmark = pytest.mark.ldap


@pytest.fixture
def seller(make_seller: Callable[..., SellerHandle]) -> SellerHandle:
    return make_seller("Acme Outdoor")


@pytest.fixture
def synced(
    corp: Slapd, connector: Connector, seller: SellerHandle
) -> tuple[Slapd, Connector, SellerHandle]:
    """The corp directory after a first successful sync into the store."""
    result = sync(connector, corp, config_for(corp, seller.seller.id))
    assert result.ok and result.full and result.marker_stored, result.failures
    return corp, connector, seller


def test_first_sync_is_visible_over_scim(
    corp: Slapd, connector: Connector, seller: SellerHandle, client: Any
) -> None:
    config = config_for(corp, seller.seller.id)
    result = sync(connector, corp, config)
    assert result.ok and result.full and len(result.plan.creates) == 7
    assert [p.subject for p in result.problems] == [dn("nomail")]

    alice = scim_user(client, seller, "alice@example.com")
    assert alice is not None and alice["active"] is True
    assert alice["name"] == {"givenName": "Alice", "familyName": "Tester"}
    assert alice["emails"][0]["value"] == "alice@example.com"
    assert "externalId" not in alice  # the SCIM externalId stays Okta's / Entra's
    assert scim_groups_of(alice) == {CATALOG}
    carol = scim_user(client, seller, "carol@example.com")  # through a nested group
    gina = scim_user(client, seller, "gina@example.com")  # another OU
    assert carol and scim_groups_of(carol) == {CATALOG}
    assert gina and scim_groups_of(gina) == {ORDERS}

    catalog = scim_group_members(client, seller, CATALOG)
    assert catalog == {
        scim_user(client, seller, f"{n}@example.com")["id"]  # type: ignore[index]
        for n in ("alice", "bob", "carol")
    }
    # Identity is the directory's entryUUID, kept in the link table.
    assert len(links(connector)) == 7 and alice["id"] in links(connector).values()
    # Invited, and the audit trail names the source.
    assert (
        alice["urn:seller-connector:scim:schemas:extension:seller:2.0:User"]["invitationState"]
        == "pending"
    )
    with connector.engine.connect() as connection:
        actors = set(
            connection.scalars(select(AuditRow.actor).where(AuditRow.action == "user.created"))
        )
    assert actors == {"directory:corp-openldap"}


def test_second_run_is_an_empty_delta(synced: tuple[Slapd, Connector, SellerHandle]) -> None:
    server, connector, seller = synced
    before = store_dump(connector)
    result = sync(connector, server, config_for(server, seller.seller.id))
    assert not result.full and result.plan.is_empty and result.marker_stored
    after = store_dump(connector)
    before.pop("sync_markers"), after.pop("sync_markers")
    assert after == before


def test_outbox_has_an_entry_for_every_change(
    synced: tuple[Slapd, Connector, SellerHandle], client: Any
) -> None:
    server, connector, seller = synced
    entries = outbox(connector)
    user_ids = set(links(connector).values())
    topics = Counter(t for t, a in entries if a in user_ids)
    assert topics["user.invite"] == 7 and topics["user.sync"] >= 7
    sets = {a for t, a in entries if t == "permission_set.sync"}
    with connector.uow() as uow:
        managed = {
            uow.permission_sets.by_display_name(seller.seller.id, n).id
            for n in (CATALOG, ORDERS, FINANCE)
        }  # type: ignore[union-attr]
    assert managed <= sets

    frank = scim_user(client, seller, "frank@example.com")
    assert frank is not None
    seen = len(entries)
    server.modify(replace_attr(dn("frank"), "employeeType", "disabled"))
    server.modify(replace_attr(dn("alice"), "sn", "Smith"))
    alice = scim_user(client, seller, "alice@example.com")
    assert alice is not None
    assert sync(connector, server, config_for(server, seller.seller.id)).ok
    new = outbox(connector)[seen:]
    assert ("user.sync", frank["id"]) in new and ("user.sync", alice["id"]) in new


def test_rename_and_move_keep_the_scim_id(
    synced: tuple[Slapd, Connector, SellerHandle], client: Any
) -> None:
    server, connector, seller = synced
    alice = scim_user(client, seller, "alice@example.com")
    bob = scim_user(client, seller, "bob@example.com")
    assert alice and bob
    server.modrdn(dn("alice"), "uid=alice.smith")
    server.modrdn(dn("bob"), "uid=bob", new_superior=CONTRACTORS)
    config = config_for(server, seller.seller.id)
    assert sync(connector, server, config).plan.is_empty
    assert sync(connector, server, config, full=True).plan.is_empty
    after_alice = scim_get(client, seller, alice["id"])
    after_bob = scim_get(client, seller, bob["id"])
    assert after_alice["meta"]["version"] == alice["meta"]["version"]
    assert after_bob["meta"]["version"] == bob["meta"]["version"]
    assert scim_groups_of(after_bob) == {CATALOG}


def test_email_and_name_changes_are_updates(
    synced: tuple[Slapd, Connector, SellerHandle], client: Any
) -> None:
    server, connector, seller = synced
    alice = scim_user(client, seller, "alice@example.com")
    assert alice
    server.modify(replace_attr(dn("alice"), "mail", "alice.smith@example.com"))
    server.modify(replace_attr(dn("alice"), "sn", "Smith"))
    result = sync(connector, server, config_for(server, seller.seller.id))
    assert result.ok and not result.plan.creates and len(result.plan.updates) == 1
    after = scim_get(client, seller, alice["id"])
    assert after["userName"] == "alice.smith@example.com"
    assert [e["value"] for e in after["emails"]] == ["alice.smith@example.com"]
    assert after["name"]["familyName"] == "Smith" and after["displayName"] == "Alice Smith"
    assert after["active"] is True and scim_groups_of(after) == {CATALOG}
    assert scim_user(client, seller, "alice@example.com") is None
    # The old address stays reserved: never given to anyone again.
    response = client.post(
        "/scim/v2/Users", json=user_body("alice@example.com"), headers=seller.headers
    )
    assert response.status_code == 409


def test_leaving_groups_disabled_or_deleted_deactivates_never_deletes(
    synced: tuple[Slapd, Connector, SellerHandle], client: Any
) -> None:
    server, connector, seller = synced
    config = config_for(server, seller.seller.id)
    ids = {e: scim_user(client, seller, e)["id"] for e in CORP_EMAILS}  # type: ignore[index]
    server.modify(member_change(gdn("finance"), "add", dn("alice")))
    server.modify(member_change(gdn("finance"), "delete", dn("frank")))  # left every mapped group
    server.modify(replace_attr(dn("dave"), "employeeType", "disabled"))  # disabled
    server.delete(dn("erin"))  # gone: the delta sees it (syncprov), as a full run would
    delta = sync(connector, server, config)
    assert not delta.full
    assert {(d.user_id, d.reason) for d in delta.plan.deactivations} == {
        (ids["frank@example.com"], DeactivationReason.left_groups),
        (ids["dave@example.com"], DeactivationReason.disabled),
        (ids["erin@example.com"], DeactivationReason.left_directory),
    }
    assert sync(connector, server, config, full=True).plan.is_empty
    for email in ("frank@example.com", "dave@example.com", "erin@example.com"):
        user = scim_get(client, seller, ids[email])  # still there: 200
        assert user["active"] is False
    assert scim_groups_of(scim_get(client, seller, ids["frank@example.com"])) == set()
    assert scim_groups_of(scim_get(client, seller, ids["dave@example.com"])) == {ORDERS}
    assert scim_get(client, seller, ids["alice@example.com"])["active"] is True

    # Back in a group / enabled again: reactivated, same id.
    server.modify(member_change(gdn("finance"), "add", dn("frank")))
    server.modify(replace_attr(dn("dave"), "employeeType", None))
    result = sync(connector, server, config)
    assert {r.user_id for r in result.plan.reactivations} == {
        ids["frank@example.com"],
        ids["dave@example.com"],
    }
    frank = scim_get(client, seller, ids["frank@example.com"])
    assert frank["active"] is True and scim_groups_of(frank) == {FINANCE}
    with connector.engine.connect() as connection:
        reasons = list(
            connection.scalars(
                select(AuditRow.changes).where(AuditRow.action == "directory.deactivation-reason")
            )
        )
    assert sorted(r["reason"] for r in reasons) == [
        "disabled-in-directory",
        "left-directory",
        "left-mapped-groups",
    ]


def test_only_managed_permission_sets_change(
    synced: tuple[Slapd, Connector, SellerHandle], client: Any
) -> None:
    server, connector, seller = synced
    alice = scim_user(client, seller, "alice@example.com")
    assert alice
    # Granted in the portal: not a set the directory maps.
    with connector.uow() as uow:
        set_cases.create_permission_set(
            uow,
            connector.catalogue,
            seller.seller,
            PermissionSetDraft("Returns team", member_ids=[alice["id"]]),
            Actor("test"),
        )
        uow.commit()
    server.modify(member_change(gdn("catalog"), "delete", dn("alice")))
    server.modify(member_change(gdn("orders"), "add", dn("alice")))
    result = sync(connector, server, config_for(server, seller.seller.id))
    [change] = result.plan.permission_changes
    assert (change.added, change.removed) == ({ORDERS}, {CATALOG})
    assert scim_groups_of(scim_get(client, seller, alice["id"])) == {ORDERS, "Returns team"}
    assert sync(connector, server, config_for(server, seller.seller.id), full=True).plan.is_empty


def test_scim_users_and_other_sources_are_never_touched(
    synced: tuple[Slapd, Connector, SellerHandle], client: Any
) -> None:
    server, connector, seller = synced
    # A user Okta provisioned, with its own externalId; and one whose address the
    # directory gives to a new entry.
    okta = client.post(
        "/scim/v2/Users",
        json=user_body("pat@example.com", externalId="00u1okta"),
        headers=seller.headers,
    ).get_json()
    hank_scim = client.post(
        "/scim/v2/Users", json=user_body("hank@example.com"), headers=seller.headers
    ).get_json()
    server.add(user_ldif("hank"))
    server.modify(member_change(gdn("orders"), "add", dn("hank")))
    result = sync(connector, server, config_for(server, seller.seller.id), full=True)
    assert not result.plan.creates and not result.plan.deactivations
    assert any("hank@example.com already belongs to user" in p.message for p in result.problems)
    for user in (okta, hank_scim):
        after = scim_get(client, seller, user["id"])
        assert after["meta"]["version"] == user["meta"]["version"] and after["active"] is True

    # A second source on the same seller sees none of the first one's users as its own:
    # its full run deactivates nobody (every address is taken: reported, not created).
    other = config_for(server, seller.seller.id, id="second-source")
    before = store_dump(connector)
    second = sync(connector, server, other, full=True)
    assert not second.plan.creates and not second.plan.deactivations
    assert len(second.problems) >= 7
    after = store_dump(connector)
    for state in ("sync_markers", "directory_group_members"):  # the source's sync state
        before.pop(state), after.pop(state)
    assert after == before


def test_brand_new_rule_across_sellers(
    corp: Slapd, connector: Connector, make_seller: Callable[..., SellerHandle]
) -> None:
    # Another seller's primary registered with gina's address first.
    make_seller("Other Shop", primary="gina@example.com")
    seller = make_seller("Acme Outdoor")
    result = sync(connector, corp, config_for(corp, seller.seller.id))
    assert [f.action.email for f in result.failures] == ["gina@example.com"]  # type: ignore[union-attr]
    assert "already been used" in result.failures[0].message
    assert len(result.applied) == 6 and not result.marker_stored
    with connector.uow() as uow:
        emails = {u.primary_email for u in uow.users.list(seller.seller.id)}
    assert "gina@example.com" not in emails and "alice@example.com" in emails


def test_the_primary_is_untouched(
    corp: Slapd, connector: Connector, make_seller: Callable[..., SellerHandle], client: Any
) -> None:
    seller = make_seller("Acme Outdoor", primary="olive@example.com")
    before = scim_get(client, seller, seller.primary.id)
    corp.add(user_ldif("olive", given="Olivia", sn="Changed"))
    corp.modify(member_change(gdn("orders"), "add", dn("olive")))
    config = config_for(corp, seller.seller.id)
    result = sync(connector, corp, config)
    assert result.ok and len(result.plan.creates) == 7
    assert any(
        p.subject == dn("olive") and "the primary user" in p.message for p in result.problems
    )
    # Disabled or deleted in the directory: the primary stays as it is.
    corp.modify(replace_attr(dn("olive"), "employeeType", "disabled"))
    assert sync(connector, corp, config, full=True).ok
    corp.delete(dn("olive"))
    assert sync(connector, corp, config, full=True).ok
    after = scim_get(client, seller, seller.primary.id)
    assert after["meta"]["version"] == before["meta"]["version"] and after["active"] is True
    assert seller.primary.id not in links(connector).values()
    # Even a direct call cannot change it.
    target = connector.directory_target(config)
    with pytest.raises(Exception, match="primary user"):
        target.deactivate(seller.seller.id, seller.primary.id, reason="test")


def test_individual_plan_creates_nobody(
    corp: Slapd, connector: Connector, make_seller: Callable[..., SellerHandle]
) -> None:
    seller = make_seller("Solo Seller", plan=Plan.individual)
    before = store_dump(connector)
    result = sync(connector, corp, config_for(corp, seller.seller.id))
    assert len(result.failures) == 7 and not result.applied and not result.marker_stored
    assert all("professional plan" in f.message for f in result.failures)
    assert store_dump(connector) == before


def test_deleted_user_is_restored_with_its_id(
    synced: tuple[Slapd, Connector, SellerHandle], client: Any
) -> None:
    server, connector, seller = synced
    bob = scim_user(client, seller, "bob@example.com")
    assert bob
    assert client.delete(f"/scim/v2/Users/{bob['id']}", headers=seller.headers).status_code == 204
    result = sync(connector, server, config_for(server, seller.seller.id), full=True)
    assert [c.email for c in result.plan.creates] == ["bob@example.com"] and result.ok
    after = scim_get(client, seller, bob["id"])
    assert after["active"] is True and scim_groups_of(after) == {CATALOG}
    assert links(connector)[next(k for k, v in links(connector).items() if v == bob["id"])]


def test_dry_run_changes_nothing(synced: tuple[Slapd, Connector, SellerHandle]) -> None:
    server, connector, seller = synced
    server.delete(dn("gina", CONTRACTORS))
    server.modify(replace_attr(dn("alice"), "mail", "alice.new@example.com"))
    server.add(user_ldif("hank"))
    server.modify(member_change(gdn("orders"), "add", dn("hank")))
    before = store_dump(connector)
    result = sync(connector, server, config_for(server, seller.seller.id), full=True, dry_run=True)
    plan = result.plan
    assert (len(plan.creates), len(plan.updates), len(plan.deactivations)) == (1, 1, 1)
    assert store_dump(connector) == before


class Crash(RuntimeError):
    """A run killed halfway."""


class CrashingTarget:
    """Passes calls to a store target and dies before the write number ``after``."""

    def __init__(self, inner: StoreDirectoryTarget, after: int) -> None:
        self.inner, self.after, self.writes = inner, after, 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name in (
            "create_user",
            "update_user",
            "set_permission_sets",
            "deactivate",
            "reactivate",
        ):

            def write(*args: Any, **kwargs: Any) -> Any:
                if self.writes >= self.after:
                    raise Crash(f"killed before {name}")
                self.writes += 1
                return attr(*args, **kwargs)

            return write
        if name == "apply_batch":
            raise AttributeError(name)  # one call per change here
        return attr


def _seller(connector: Connector) -> None:
    from connector.services import sellers

    with connector.uow() as uow:
        sellers.create_seller(
            uow,
            connector.catalogue,
            "Acme",
            Plan.professional,
            "o@acme.example.com",
            "O O",
            Actor("t"),
        )
        uow.commit()


def _seller_id(connector: Connector) -> str:
    with connector.uow() as uow:
        return uow.sellers.get_by_name("Acme").id  # type: ignore[union-attr]


def _change_directory(server: Slapd) -> None:
    """Changes of every kind, for the second run."""
    server.modify(replace_attr(dn("alice"), "mail", "alice.new@example.com"))
    server.modify(member_change(gdn("orders"), "add", dn("bob")))
    server.modify(member_change(gdn("finance"), "add", dn("carol")))
    server.modify(member_change(gdn("finance"), "delete", dn("frank")))
    server.modify(replace_attr(dn("dave"), "employeeType", "disabled"))
    server.delete(dn("erin"))
    server.add(user_ldif("hank") + user_ldif("ivy"))
    server.modify(member_change(gdn("catalog"), "add", dn("hank"), dn("ivy")))


@pytest.mark.parametrize("batch_size", [1, 3])
def test_interrupted_sync_then_rerun_converges(
    corp: Slapd, another_store: Callable[[str], Connector], batch_size: int
) -> None:
    # The same history, uninterrupted, in a second store: the state to converge to.
    reference = another_store("reference")
    _seller(reference)
    reference_config = config_for(corp, _seller_id(reference))
    assert sync(reference, corp, reference_config).ok

    store = another_store("interrupted")
    _seller(store)
    config = config_for(corp, _seller_id(store))
    target = store.directory_target(config)

    # First run killed after 3 creates: 3 users kept, no marker.
    with pytest.raises(Crash):
        sync(store, corp, config, CrashingTarget(target, 3), batch_size=1)
    assert len(links(store)) == 3 and target.get_marker(config.id) is None
    assert sync(store, corp, config, batch_size=batch_size).ok

    # Second run (every kind of change) killed halfway, in the middle of a batch.
    _change_directory(corp)
    assert sync(reference, corp, reference_config, full=True, force=True).ok
    if batch_size == 1:
        crashing: Any = CrashingTarget(target, 4)
    else:
        calls = {"n": 0}
        original = target._apply

        def dying(*args: Any) -> Any:
            calls["n"] += 1
            if calls["n"] == 5:  # the second batch of 3 dies in its second action
                raise Crash("killed mid-batch")
            return original(*args)

        target._apply = dying  # type: ignore[method-assign]
        crashing = target
    marker = target.get_marker(config.id)
    with pytest.raises(Crash):
        sync(store, corp, config, crashing, full=True, force=True, batch_size=batch_size)
    assert target.get_marker(config.id) == marker
    fresh = store.directory_target(config)
    result = sync(store, corp, config, fresh, full=True, force=True, batch_size=batch_size)
    assert result.ok and result.marker_stored
    assert state_by_stable_id(store, config) == state_by_stable_id(reference, reference_config)
    assert sync(store, corp, config).plan.is_empty


def test_batches_apply_what_they_can(
    synced: tuple[Slapd, Connector, SellerHandle], client: Any
) -> None:
    """A refused change in a batch is undone alone; the others of the batch commit."""
    server, connector, seller = synced
    server.add(user_ldif("hank") + user_ldif("ivy") + user_ldif("jo"))
    server.modify(member_change(gdn("catalog"), "add", dn("hank"), dn("ivy"), dn("jo")))
    # ivy's address was already used by another seller's user.
    with connector.uow() as uow:
        from connector.services import sellers

        sellers.create_seller(
            uow,
            connector.catalogue,
            "Other",
            Plan.professional,
            "ivy@example.com",
            "I V",
            Actor("t"),
        )
        uow.commit()
    result = sync(connector, server, config_for(server, seller.seller.id), batch_size=10)
    assert [f.action.email for f in result.failures] == ["ivy@example.com"]  # type: ignore[union-attr]
    hank, jo = (
        scim_user(client, seller, "hank@example.com"),
        scim_user(client, seller, "jo@example.com"),
    )
    assert hank and jo and scim_groups_of(hank) == scim_groups_of(jo) == {CATALOG}
    assert scim_user(client, seller, "ivy@example.com") is None
    assert hank["id"] in scim_group_members(client, seller, CATALOG)


def test_unknown_permission_set_is_refused_per_user(
    corp: Slapd, connector: Connector, seller: SellerHandle
) -> None:
    config = config_for(
        corp,
        seller.seller.id,
        groups={"base_dn": GROUPS, "map": {**GROUP_MAP, gdn("finance"): "No such set"}},
    )
    result = sync(connector, corp, config)
    assert [f.action.email for f in result.failures] == ["frank@example.com"]  # type: ignore[union-attr]
    assert "no permission set named 'No such set'" in result.failures[0].message
    assert len(result.applied) == 6


def test_store_target_keeps_state_when_called_twice(
    synced: tuple[Slapd, Connector, SellerHandle],
) -> None:
    """Every call sets a state: calling it again changes nothing more."""
    server, connector, seller = synced
    config = config_for(server, seller.seller.id)
    target = connector.directory_target(config)
    sid = seller.seller.id
    frank = next(u for u in target.known_users(sid) if u.email == "frank@example.com")
    target.deactivate(sid, frank.id, reason="test")
    dump = store_dump(connector)
    target.deactivate(sid, frank.id, reason="test")
    target.set_permission_sets(sid, frank.id, frozenset({FINANCE}))
    assert store_dump(connector) == dump
    with connector.uow() as uow:
        assert user_cases.get_user(uow, seller.seller, frank.id).active is False


def test_batches_stop_at_their_time_limit_and_the_rest_follows(
    corp: Slapd, connector: Connector, seller: SellerHandle, client: Any
) -> None:
    config = config_for(corp, seller.seller.id)
    target = connector.directory_target(config)
    target.max_batch_seconds = 0  # every batch takes one change, then hands back
    calls: list[int] = []
    original = target.apply_batch

    def counting(seller_id: str, actions: Any) -> list[str | None]:
        results = original(seller_id, actions)
        calls.append(len(results))
        return results

    target.apply_batch = counting  # type: ignore[method-assign]
    result = sync(connector, corp, config, target, batch_size=50)
    assert result.ok and len(result.applied) == 7 and calls == [1] * 7
    assert scim_group_members(client, seller, ORDERS) == {
        scim_user(client, seller, f"{n}@example.com")["id"]  # type: ignore[index]
        for n in ("dave", "erin", "gina")
    }


def test_a_user_the_directory_deactivates_stops_receiving_notifications(
    synced: tuple[Slapd, Connector, SellerHandle], client: Any
) -> None:
    # The recipient index the marketplace reads at send time follows a directory run's
    # deactivation and reactivation as it follows a SCIM one.
    server, connector, seller = synced
    dave = scim_user(client, seller, "dave@example.com")
    assert dave is not None
    extension = "urn:seller-connector:scim:schemas:extension:seller:2.0:User"
    patched = client.patch(
        f"/scim/v2/Users/{dave['id']}",
        json={
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [
                {"op": "replace", "path": f"{extension}:notifications", "value": ["orders"]}
            ],
        },
        headers=seller.headers,
    )
    assert patched.status_code == 200, patched.get_data(as_text=True)

    def receivers() -> set[str]:
        with connector.uow() as uow:
            return {r.user_id for r in uow.recipients.of(seller.seller.id, "orders")}

    assert dave["id"] in receivers()
    server.modify(replace_attr(dn("dave"), "employeeType", "disabled"))
    sync(connector, server, config_for(server, seller.seller.id))
    assert scim_get(client, seller, dave["id"])["active"] is False
    assert dave["id"] not in receivers()
    server.modify(replace_attr(dn("dave"), "employeeType", None))
    sync(connector, server, config_for(server, seller.seller.id))
    assert dave["id"] in receivers()
