"""Directory sync against a real OpenLDAP slapd, into the in-memory target."""

from __future__ import annotations

import pytest

from connector.adapters.ldap.config import DirectoryConfig
from connector.adapters.ldap.reader import DirectoryReader
from connector.ports.directory import DirectoryIncomplete, ThresholdExceeded
from connector.services.directory.plan import DeactivationReason
from connector.services.directory.sync import SyncResult, run_sync
from tests.integration.ldap.ldap_helpers import dn, gdn, make_config, reader_for
from tests.support.slapd import (
    CONTRACTORS,
    STAFF,
    Slapd,
    member_change,
    replace_attr,
    user_ldif,
)
from tests.unit.directory.memory_target import Crash, MemoryTarget

pytestmark = pytest.mark.ldap

CATALOG, ORDERS, FINANCE = "Catalog editors", "Order handlers", "Finance viewers"


def sync(
    server: Slapd, target: MemoryTarget, config: DirectoryConfig | None = None, **kwargs: object
) -> SyncResult:
    config = config or make_config(server)
    with reader_for(server, config) as reader:
        return run_sync(config, reader, target, **kwargs)  # type: ignore[arg-type]


def entry_uuid(server: Slapd, config: DirectoryConfig, uid: str, ou: str = STAFF) -> str:
    with reader_for(server, config) as reader:
        for _, attrs in reader.search(dn(uid, ou), "(objectClass=*)", ["entryUUID"], scope="BASE"):
            return attrs["entryuuid"][0].decode()
    raise AssertionError(uid)


@pytest.fixture
def synced(corp: Slapd) -> tuple[Slapd, MemoryTarget]:
    """The corp directory after a first successful sync."""
    target = MemoryTarget()
    result = sync(corp, target)
    assert result.ok and result.full
    return corp, target


def by_email(target: MemoryTarget, email: str):
    return next(u for u in target.users.values() if email in u.emails)


def test_first_sync(corp: Slapd) -> None:
    target = MemoryTarget()
    result = sync(corp, target)
    assert result.full and result.ok and result.marker_stored
    emails = sorted(u.emails[0] for u in target.users.values())
    assert emails == [
        f"{n}@example.com" for n in ("alice", "bob", "carol", "dave", "erin", "frank", "gina")
    ]
    assert by_email(target, "alice@example.com").permission_sets == {CATALOG}
    # carol is in catalog-seniors, nested in catalog.
    assert by_email(target, "carol@example.com").permission_sets == {CATALOG}
    assert by_email(target, "gina@example.com").permission_sets == {ORDERS}
    assert by_email(target, "frank@example.com").permission_sets == {FINANCE}
    # The entry without mail is skipped and reported; everyone else is synced.
    assert [p.subject for p in result.problems] == [dn("nomail")]
    # Identity is entryUUID.
    config = make_config(corp)
    assert by_email(target, "alice@example.com").external_id == entry_uuid(corp, config, "alice")


def test_second_run_is_a_delta_with_nothing_to_do(synced: tuple[Slapd, MemoryTarget]) -> None:
    server, target = synced
    result = sync(server, target)
    assert not result.full and result.plan.is_empty and result.marker_stored


def test_rename_with_modrdn(synced: tuple[Slapd, MemoryTarget]) -> None:
    server, target = synced
    before = target.snapshot()
    server.modrdn(dn("alice"), "uid=alice.smith")
    delta = sync(server, target)
    assert not delta.full
    assert delta.plan.directory_users >= 1  # the renamed entry was read...
    assert delta.plan.is_empty  # ...and changes nothing: identity is not the DN
    full = sync(server, target, full=True)
    assert full.plan.is_empty and target.snapshot() == before


def test_move_between_ous(synced: tuple[Slapd, MemoryTarget]) -> None:
    server, target = synced
    before = target.snapshot()
    server.modrdn(dn("bob"), "uid=bob", new_superior=CONTRACTORS)
    assert sync(server, target).plan.is_empty
    assert sync(server, target, full=True).plan.is_empty
    assert target.snapshot() == before
    assert by_email(target, "bob@example.com").permission_sets == {CATALOG}


def test_email_change(synced: tuple[Slapd, MemoryTarget]) -> None:
    server, target = synced
    alice = by_email(target, "alice@example.com")
    server.modify(replace_attr(dn("alice"), "mail", "alice.smith@example.com"))
    result = sync(server, target)
    assert not result.full
    [update] = result.plan.updates
    assert update.user_id == alice.id and update.email == "alice.smith@example.com"
    assert not result.plan.creates and not result.plan.deactivations
    assert target.users[alice.id].emails == ("alice.smith@example.com",)


def test_group_change_is_seen_by_a_delta(synced: tuple[Slapd, MemoryTarget]) -> None:
    server, target = synced
    bob = by_email(target, "bob@example.com")
    # Only the groups change (bob's own entryCSN does not).
    server.modify(member_change(gdn("catalog"), "delete", dn("bob")))
    server.modify(member_change(gdn("orders"), "add", dn("bob")))
    result = sync(server, target)
    assert not result.full
    [change] = result.plan.permission_changes
    assert change.user_id == bob.id
    assert (change.added, change.removed) == ({ORDERS}, {CATALOG})
    assert target.users[bob.id].permission_sets == {ORDERS} and target.users[bob.id].active


def test_leaving_every_mapped_group_deactivates_in_a_delta(
    synced: tuple[Slapd, MemoryTarget],
) -> None:
    server, target = synced
    frank = by_email(target, "frank@example.com")
    server.modify(member_change(gdn("finance"), "add", dn("alice")))  # keep finance non-empty
    server.modify(member_change(gdn("finance"), "delete", dn("frank")))
    result = sync(server, target)
    assert [(d.user_id, d.reason) for d in result.plan.deactivations] == [
        (frank.id, DeactivationReason.left_groups)
    ]
    assert not target.users[frank.id].active
    assert target.users[frank.id].permission_sets == frozenset()
    # Back in the group: reactivated with its set.
    server.modify(member_change(gdn("finance"), "add", dn("frank")))
    result = sync(server, target)
    assert [r.user_id for r in result.plan.reactivations] == [frank.id]
    assert target.users[frank.id].active and target.users[frank.id].permission_sets == {FINANCE}


def test_nested_group_membership_change(synced: tuple[Slapd, MemoryTarget]) -> None:
    server, target = synced
    server.modify(member_change(gdn("catalog-seniors"), "add", dn("dave")))
    result = sync(server, target)
    dave = by_email(target, "dave@example.com")
    assert target.users[dave.id].permission_sets == {CATALOG, ORDERS}
    assert [c.user_id for c in result.plan.permission_changes] == [dave.id]


def test_removal_is_deactivated_by_a_full_run_only_without_syncprov(corp: Slapd) -> None:
    """entryCSN deltas cannot see deleted entries: the next full run deactivates them."""
    config = make_config(corp, change_tracking="entry_csn")
    server, target = corp, MemoryTarget()
    assert sync(server, target, config).ok
    erin = by_email(target, "erin@example.com")
    server.delete(dn("erin"))
    delta = sync(server, target, config)
    assert not delta.full and delta.plan.is_empty and target.users[erin.id].active
    full = sync(server, target, config, full=True)
    assert [(d.user_id, d.reason) for d in full.plan.deactivations] == [
        (erin.id, DeactivationReason.left_directory)
    ]
    assert not target.users[erin.id].active
    assert erin.id in target.users  # deactivated, never deleted


def test_disable_and_enable(synced: tuple[Slapd, MemoryTarget]) -> None:
    server, target = synced
    dave = by_email(target, "dave@example.com")
    server.modify(replace_attr(dn("dave"), "employeeType", "disabled"))
    result = sync(server, target)
    assert [(d.user_id, d.reason) for d in result.plan.deactivations] == [
        (dave.id, DeactivationReason.disabled)
    ]
    assert not target.users[dave.id].active
    server.modify(replace_attr(dn("dave"), "employeeType", None))
    result = sync(server, target)
    assert [r.user_id for r in result.plan.reactivations] == [dave.id]
    assert target.users[dave.id].active


def test_new_user_in_a_delta(synced: tuple[Slapd, MemoryTarget]) -> None:
    server, target = synced
    server.add(user_ldif("hank"))
    assert sync(server, target).plan.is_empty  # in no mapped group: not provisioned
    server.modify(member_change(gdn("orders"), "add", dn("hank")))
    result = sync(server, target)
    assert [c.email for c in result.plan.creates] == ["hank@example.com"]
    assert by_email(target, "hank@example.com").permission_sets == {ORDERS}


def test_size_limit_is_refused_and_nothing_is_deactivated(
    synced: tuple[Slapd, MemoryTarget],
) -> None:
    server, target = synced
    before = target.snapshot()
    # The limited account gets at most 5 entries: 8 people do not fit.
    config = make_config(
        server, bind_dn=server.limited_dn, groups={"map": {}, "require_mapped_group": False}
    )
    with pytest.raises(DirectoryIncomplete, match="sizeLimitExceeded"):
        sync_as(server, target, config, server.limited_password, full=True, force=True)
    assert target.snapshot() == before


def sync_as(
    server: Slapd, target: MemoryTarget, config: DirectoryConfig, password: str, **kwargs: object
) -> SyncResult:
    with DirectoryReader(config, password=password) as reader:
        return run_sync(config, reader, target, **kwargs)  # type: ignore[arg-type]


def test_size_limit_in_the_reader_itself(corp: Slapd) -> None:
    config = make_config(corp, bind_dn=corp.limited_dn, page_size=2)
    with DirectoryReader(config, password=corp.limited_password) as reader:
        scan = reader.read_all()
        with pytest.raises(DirectoryIncomplete, match=r"after 5 entries.*nobody was\s+deactivated"):
            list(scan.users)


def test_referral_is_refused(synced: tuple[Slapd, MemoryTarget]) -> None:
    server, target = synced
    before = target.snapshot()
    server.add(
        "dn: ou=remote,ou=people,dc=example,dc=com\nobjectClass: referral\n"
        "objectClass: extensibleObject\nou: remote\n"
        "ref: ldap://other.example.com/ou=remote,dc=example,dc=com\n"
    )
    with pytest.raises(DirectoryIncomplete, match=r"referral to .*other\.example\.com"):
        sync(server, target, full=True)
    assert target.snapshot() == before


def test_threshold_refuses_then_force_applies(synced: tuple[Slapd, MemoryTarget]) -> None:
    server, target = synced
    server.delete(dn("alice"), dn("bob"))
    config = make_config(server, deactivation_threshold=0.10)
    before = target.snapshot()
    with pytest.raises(ThresholdExceeded, match=r"deactivate 2 of 7"):
        sync(server, target, config, full=True)
    assert target.snapshot() == before
    result = sync(server, target, config, full=True, force=True)
    assert len(result.plan.deactivations) == 2


def test_dry_run_changes_nothing(synced: tuple[Slapd, MemoryTarget]) -> None:
    server, target = synced
    server.delete(dn("gina", CONTRACTORS))
    server.modify(replace_attr(dn("alice"), "mail", "alice.new@example.com"))
    before, markers, calls = target.snapshot(), dict(target.markers), list(target.calls)
    lines: list[str] = []
    result = sync(server, target, full=True, dry_run=True, progress=lines.append)
    assert len(result.plan.deactivations) == 1 and len(result.plan.updates) == 1
    assert (target.snapshot(), target.markers, target.calls) == (before, markers, calls)
    assert any(line.startswith("deactivate") for line in lines)
    assert lines[-1] == "dry run: nothing was changed"


def test_interrupted_sync_rerun_converges(corp: Slapd) -> None:
    reference = MemoryTarget()
    assert sync(corp, reference).ok
    target = MemoryTarget(fail_after=3)
    with pytest.raises(Crash):
        sync(corp, target)
    assert len(target.users) == 3 and not target.markers  # partly applied, no marker
    target.fail_after = None
    result = sync(corp, target)
    assert result.full and result.ok and len(result.plan.creates) == 4
    assert target.snapshot() == reference.snapshot()
    assert sync(corp, target).plan.is_empty


def test_modify_timestamp_tracking(corp: Slapd) -> None:
    config = make_config(corp, change_tracking="modify_timestamp")
    target = MemoryTarget()
    assert sync(corp, target, config).full
    corp.modify(replace_attr(dn("carol"), "sn", "Jones"))
    corp.modify(member_change(gdn("orders"), "add", dn("alice")))
    result = sync(corp, target, config)
    assert not result.full
    assert [u.family_name for u in result.plan.updates] == ["Jones"]
    assert by_email(target, "alice@example.com").permission_sets == {CATALOG, ORDERS}


def test_group_loop_does_not_hang(corp: Slapd) -> None:
    corp.modify(member_change(gdn("catalog-seniors"), "add", gdn("catalog")))  # a loop
    target = MemoryTarget()
    result = sync(corp, target)
    assert result.ok and by_email(target, "carol@example.com").permission_sets == {CATALOG}


def test_users_are_streamed_page_by_page(corp: Slapd) -> None:
    config = make_config(corp, page_size=2)
    with reader_for(corp, config) as reader:
        scan = reader.read_all()
        pages: list[int] = []
        search = reader.connection.search

        def counting(*args: object, **kwargs: object) -> object:
            pages.append(1)
            return search(*args, **kwargs)

        reader.connection.search = counting  # type: ignore[method-assign]
        first = next(scan.users)
        assert first.email.endswith("@example.com")
        assert len(pages) == 1  # one page of 2 fetched, not the whole directory
        rest = list(scan.users)
        assert len(rest) == 6 and len(pages) == 4  # 8 entries (one skipped), 2 a page
