"""Delta runs that see deletions and moves: OpenLDAP's content synchronization (RFC 4533,
the syncprov overlay) on a real slapd, with and without a session log, and the
fallback when the server offers none."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from connector.adapters.ldap.config import ChangeTracking
from connector.adapters.ldap.reader import Marker
from connector.ports.directory import ThresholdExceeded
from connector.services.directory.plan import DeactivationReason
from connector.services.directory.sync import SyncState
from tests.integration.ldap.ldap_helpers import dn, gdn, make_config, reader_for, seed_corp
from tests.integration.ldap.test_ldap_sync import by_email, sync
from tests.support.slapd import CONTRACTORS, Slapd, member_change, user_ldif
from tests.unit.directory.memory_target import MemoryTarget

pytestmark = pytest.mark.ldap

FORMER = "ou=former,dc=example,dc=com"
"""An OU outside the source's base DN (ou=people)."""


def _server(**options: object) -> Iterator[Slapd]:
    from tests.integration.ldap.conftest import _require_slapd

    _require_slapd()
    server = Slapd(**options)  # type: ignore[arg-type]
    server.start()
    try:
        server.seed_base()
        server.add(f"dn: {FORMER}\nobjectClass: organizationalUnit\nou: former\n")
        seed_corp(server)
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["session-log", "present-phase"])
def syncprov(request: pytest.FixtureRequest) -> Iterator[Slapd]:
    """slapd with syncprov: with a session log (a delta gets the deleted entries' ids),
    and without (a delta gets the ids of every entry still present)."""
    yield from _server(sessionlog=10_000 if request.param == "session-log" else None)


@pytest.fixture
def no_syncprov() -> Iterator[Slapd]:
    yield from _server(syncprov=False)


def stored(target: MemoryTarget) -> Marker:
    state = SyncState.load(target.markers["corp-openldap"])
    assert state is not None and state.marker is not None
    return Marker.load(state.marker)


def test_a_deletion_and_a_move_out_of_the_base_dn_are_deactivated_by_a_delta(
    syncprov: Slapd,
) -> None:
    target = MemoryTarget()
    assert sync(syncprov, target).full
    assert stored(target).tracking is ChangeTracking.syncrepl and stored(target).cookie
    erin, bob, gina = (by_email(target, f"{n}@example.com") for n in ("erin", "bob", "gina"))
    syncprov.delete(dn("erin"))
    syncprov.modrdn(dn("bob"), "uid=bob", new_superior=FORMER)  # still in catalog, out of scope
    syncprov.modrdn(dn("gina", CONTRACTORS), "uid=gina.k")  # a rename inside: nothing
    delta = sync(syncprov, target)
    assert not delta.full and delta.ok and delta.marker_stored
    assert sorted((d.user_id, d.reason) for d in delta.plan.deactivations) == sorted(
        [(erin.id, DeactivationReason.left_directory), (bob.id, DeactivationReason.left_directory)]
    )
    assert not target.users[erin.id].active and not target.users[bob.id].active
    assert target.users[gina.id].active
    assert len(target.users) == 7  # deactivated, never deleted
    # Nothing more to do: the next delta and a full run agree.
    assert sync(syncprov, target).plan.is_empty
    assert sync(syncprov, target, full=True).plan.is_empty

    # Moved back into the base DN: the same user, reactivated.
    syncprov.modrdn(f"uid=bob,{FORMER}", "uid=bob", new_superior=CONTRACTORS)
    back = sync(syncprov, target)
    assert [r.user_id for r in back.plan.reactivations] == [bob.id]
    assert target.users[bob.id].active


def test_the_threshold_applies_to_deltas(syncprov: Slapd) -> None:
    target = MemoryTarget()
    config = make_config(syncprov, deactivation_threshold=0.25)
    assert sync(syncprov, target, config).full
    before, marker = target.snapshot(), dict(target.markers)
    syncprov.delete(dn("alice"), dn("bob"), dn("carol"))
    with pytest.raises(ThresholdExceeded, match=r"deactivate 3 of 7"):
        sync(syncprov, target, config)
    assert target.snapshot() == before and target.markers == marker  # nothing changed
    forced = sync(syncprov, target, config, force=True)
    assert not forced.full and len(forced.plan.deactivations) == 3


def test_a_deleted_nested_group_is_seen_by_a_delta(syncprov: Slapd) -> None:
    """refint removes the group from catalog's members without changing catalog's
    entryCSN: the delta notices that catalog's nested groups changed."""
    target = MemoryTarget()
    assert sync(syncprov, target).full
    carol = by_email(target, "carol@example.com")
    syncprov.delete(gdn("catalog-seniors"))
    delta = sync(syncprov, target)
    assert not delta.full
    assert [(d.user_id, d.reason) for d in delta.plan.deactivations] == [
        (carol.id, DeactivationReason.left_groups)
    ]


def test_a_new_person_and_changes_in_the_same_delta(syncprov: Slapd) -> None:
    target = MemoryTarget()
    assert sync(syncprov, target).full
    syncprov.add(user_ldif("hank"))
    syncprov.modify(member_change(gdn("orders"), "add", dn("hank")))
    syncprov.delete(dn("frank"))
    delta = sync(syncprov, target)
    assert [c.email for c in delta.plan.creates] == ["hank@example.com"]
    assert [d.stable_id for d in delta.plan.deactivations] == [
        by_email(target, "frank@example.com").external_id
    ]


def test_a_cookie_the_server_cannot_resume_from_means_a_full_run(syncprov: Slapd) -> None:
    target = MemoryTarget()
    assert sync(syncprov, target).full
    state = SyncState.load(target.markers["corp-openldap"])
    assert state is not None and state.marker
    marker = Marker.load(state.marker)
    # A cookie from a server that was rebuilt since: newer than anything this one knows.
    from dataclasses import replace

    forged = replace(marker, cookie=b"rid=000,csn=29990101000000.000000Z#000000#000#000000")
    target.markers["corp-openldap"] = SyncState(marker=forged.dump(), full_at=state.full_at).dump()
    syncprov.delete(dn("erin"))
    lines: list[str] = []
    result = sync(syncprov, target, progress=lines.append)
    assert result.ok and result.full
    assert any("cannot resume the content synchronization" in line for line in lines)
    assert [d.stable_id for d in result.plan.deactivations] == [
        by_email(target, "erin@example.com").external_id
    ]


def test_without_syncprov_deltas_fall_back_and_deletions_wait_for_a_full_run(
    no_syncprov: Slapd,
) -> None:
    target = MemoryTarget()
    lines: list[str] = []
    first = sync(no_syncprov, target, progress=lines.append)
    assert first.full and first.ok
    assert any("does not offer syncrepl" in line and "modify_timestamp" in line for line in lines)
    assert stored(target).tracking is ChangeTracking.modify_timestamp
    erin = by_email(target, "erin@example.com")
    no_syncprov.delete(dn("erin"))
    delta = sync(no_syncprov, target)
    assert not delta.full and delta.plan.is_empty and target.users[erin.id].active
    full = sync(no_syncprov, target, full=True)
    assert [(d.user_id, d.reason) for d in full.plan.deactivations] == [
        (erin.id, DeactivationReason.left_directory)
    ]


def test_syncrepl_asked_for_on_a_server_without_it_is_an_error(no_syncprov: Slapd) -> None:
    from connector.ports.directory import DirectoryError

    config = make_config(no_syncprov, change_tracking="syncrepl")
    with (
        reader_for(no_syncprov, config) as reader,
        pytest.raises(DirectoryError, match=r"does not offer syncrepl.*syncprov"),
    ):
        reader.read_all()


def test_a_delta_reads_only_who_joined_or_left_a_changed_group(syncprov: Slapd) -> None:
    target = MemoryTarget()
    assert sync(syncprov, target).full
    assert gdn("catalog").lower() in target.groups["corp-openldap"]  # stored with the marker
    bob = by_email(target, "bob@example.com")
    syncprov.modify(member_change(gdn("catalog"), "delete", dn("bob")))
    syncprov.modify(member_change(gdn("orders"), "add", dn("bob")))
    delta = sync(syncprov, target)
    # bob alone is read again, not every member of both sets.
    assert delta.plan.directory_users == 1
    [change] = delta.plan.permission_changes
    assert (change.user_id, change.added, change.removed) == (
        bob.id,
        {"Order handlers"},
        {"Catalog editors"},
    )
    assert sync(syncprov, target, full=True).plan.is_empty


def test_without_stored_member_lists_a_delta_reads_every_member(syncprov: Slapd) -> None:
    """The first delta after the lists were introduced (or lost): as before them."""
    target = MemoryTarget()
    assert sync(syncprov, target).full
    target.groups.clear()
    bob = by_email(target, "bob@example.com")
    syncprov.modify(member_change(gdn("catalog"), "delete", dn("bob")))
    syncprov.modify(member_change(gdn("orders"), "add", dn("bob")))
    delta = sync(syncprov, target)
    assert delta.plan.directory_users > 1
    assert [c.user_id for c in delta.plan.permission_changes] == [bob.id]
    assert sync(syncprov, target).plan.directory_users <= 1  # the lists are back


def test_a_failed_delta_keeps_the_lists_of_its_marker(syncprov: Slapd) -> None:
    target = MemoryTarget()
    assert sync(syncprov, target).full
    stored_lists = dict(target.groups["corp-openldap"])
    syncprov.add(user_ldif("hank", mail="taken@example.com"))
    syncprov.modify(member_change(gdn("orders"), "add", dn("hank")))
    target.used_emails.add("taken@example.com")  # the create will be refused
    failed = sync(syncprov, target)
    assert failed.failures and not failed.marker_stored
    assert target.groups["corp-openldap"] == stored_lists
    target.used_emails.discard("taken@example.com")
    again = sync(syncprov, target)  # the same change, found again from the same lists
    assert [c.email for c in again.plan.creates] == ["taken@example.com"] and again.ok
