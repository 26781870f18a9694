"""The sync plan: identity by stable id, deactivate never delete, primary untouched."""

from __future__ import annotations

import pytest

from connector.domain.model import Role
from connector.ports.directory import DirectoryUser, KnownUser, ThresholdExceeded
from connector.services.directory.plan import DeactivationReason, plan_sync

MANAGED = frozenset({"Catalog editors", "Order handlers"})


def d(
    sid: str,
    *,
    dn: str | None = None,
    email: str | None = None,
    given: str = "Ann",
    family: str = "Lee",
    disabled: bool = False,
    sets: frozenset[str] = frozenset({"Catalog editors"}),
) -> DirectoryUser:
    return DirectoryUser(
        stable_id=sid,
        dn=dn or f"uid={sid},ou=staff,dc=example,dc=com",
        email=email or f"{sid}@example.com",
        given_name=given,
        family_name=family,
        disabled=disabled,
        permission_sets=sets,
    )


def k(
    uid: str,
    sid: str | None,
    *,
    email: str | None = None,
    given: str = "Ann",
    family: str = "Lee",
    active: bool = True,
    sets: frozenset[str] = frozenset({"Catalog editors"}),
    role: Role = Role.secondary,
) -> KnownUser:
    return KnownUser(
        id=uid,
        external_id=sid,
        emails=(email or f"{sid or uid}@example.com",),
        given_name=given,
        family_name=family,
        active=active,
        permission_sets=sets,
        role=role,
    )


def plan(dir_users, known, *, full=True, require=True):
    return plan_sync(
        dir_users,
        known,
        seller_id="s1",
        full=full,
        managed_sets=MANAGED,
        require_mapped_group=require,
    )


def test_new_directory_user_in_a_mapped_group_is_created():
    p = plan([d("a")], [])
    assert [c.stable_id for c in p.creates] == ["a"]
    assert p.creates[0].permission_sets == {"Catalog editors"}
    assert not p.deactivations


def test_unchanged_user_gives_an_empty_plan():
    p = plan([d("a")], [k("u1", "a")])
    assert p.is_empty
    assert p.unchanged == 1


def test_rename_and_move_change_nothing_identity_is_the_stable_id():
    moved = d("a", dn="uid=ann.lee,ou=contractors,dc=example,dc=com")
    p = plan([moved], [k("u1", "a")])
    assert p.is_empty


def test_email_change_is_an_update_of_the_same_user():
    p = plan([d("a", email="ann.lee@example.com")], [k("u1", "a")])
    assert not p.creates and not p.deactivations
    [update] = p.updates
    assert (update.user_id, update.email) == ("u1", "ann.lee@example.com")
    assert update.given_name is None and update.family_name is None


def test_email_case_change_is_not_a_change():
    p = plan([d("a", email="A@Example.COM")], [k("u1", "a")])
    assert p.is_empty


def test_name_change_is_an_update():
    p = plan([d("a", family="Smith")], [k("u1", "a")])
    [update] = p.updates
    assert update.family_name == "Smith" and update.email is None


def test_email_taken_by_another_user_is_a_problem_not_a_change():
    p = plan([d("a", email="b@example.com")], [k("u1", "a"), k("u2", None, email="b@example.com")])
    assert not p.updates
    assert "already has that address" in p.problems[0].message


def test_group_change_sets_permission_sets_and_keeps_unmanaged_ones():
    current = k("u1", "a", sets=frozenset({"Catalog editors", "Finance viewers"}))
    p = plan([d("a", sets=frozenset({"Order handlers"}))], [current])
    [change] = p.permission_changes
    assert change.after == {"Order handlers", "Finance viewers"}
    assert change.added == {"Order handlers"} and change.removed == {"Catalog editors"}
    assert not p.deactivations


def test_removal_from_the_directory_deactivates_on_a_full_run_only():
    known = [k("u1", "a"), k("u2", "b")]
    full = plan([d("a")], known, full=True)
    assert [(x.user_id, x.reason) for x in full.deactivations] == [
        ("u2", DeactivationReason.left_directory)
    ]
    delta = plan([d("a")], known, full=False)
    assert delta.is_empty


def test_leaving_every_mapped_group_deactivates_and_removes_managed_sets():
    p = plan([d("a", sets=frozenset())], [k("u1", "a")], full=False)
    assert [(x.user_id, x.reason) for x in p.deactivations] == [
        ("u1", DeactivationReason.left_groups)
    ]
    assert p.permission_changes[0].after == frozenset()


def test_without_require_mapped_group_users_without_groups_stay():
    p = plan([d("a", sets=frozenset())], [k("u1", "a", sets=frozenset())], require=False)
    assert p.is_empty


def test_disabled_in_the_directory_deactivates_and_is_not_created():
    p = plan([d("a", disabled=True), d("b", disabled=True)], [k("u1", "a")])
    assert [(x.user_id, x.reason) for x in p.deactivations] == [("u1", DeactivationReason.disabled)]
    assert not p.creates


def test_users_are_never_deleted_only_deactivated():
    p = plan([], [k("u1", "a")])
    assert not hasattr(p, "deletions")
    assert [x.user_id for x in p.deactivations] == ["u1"]


def test_back_in_the_directory_reactivates():
    p = plan([d("a")], [k("u1", "a", active=False)])
    assert [r.user_id for r in p.reactivations] == ["u1"]


def test_inactive_user_missing_from_the_directory_is_left_alone():
    p = plan([], [k("u1", "a", active=False)])
    assert p.is_empty


def test_primary_user_is_never_touched():
    primary = k("p1", "a", role=Role.primary, email="owner@example.com", sets=frozenset())
    p = plan([d("a", email="new@example.com", disabled=True)], [primary])
    assert p.is_empty
    assert "primary user" in p.problems[0].message
    missing = plan([], [primary])
    assert missing.is_empty


def test_directory_user_with_the_primary_users_email_is_not_created():
    primary = k("p1", None, role=Role.primary, email="owner@example.com")
    p = plan([d("a", email="Owner@example.com")], [primary])
    assert not p.creates
    assert "the primary user" in p.problems[0].message


def test_users_without_external_id_are_not_this_sources():
    manual = k("u9", None, email="manual@example.com")
    p = plan([d("a")], [manual])
    assert [c.stable_id for c in p.creates] == ["a"]
    assert not p.deactivations


def test_two_directory_entries_with_one_email_create_one_user():
    p = plan([d("a", email="x@example.com"), d("b", email="x@example.com")], [])
    assert [c.stable_id for c in p.creates] == ["a"]
    assert "also the address" in p.problems[0].message


def test_duplicate_stable_id_same_dn_is_read_once_silently():
    p = plan([d("a"), d("a")], [])
    assert len(p.creates) == 1 and not p.problems
    p = plan([d("a"), d("a", dn="uid=other,dc=example,dc=com")], [])
    assert len(p.creates) == 1 and "same stable id" in p.problems[0].message


def test_plan_consumes_the_directory_as_a_stream():
    def stream():
        yield d("a")
        yield d("b")

    p = plan(stream(), [])
    assert p.directory_users == 2


def test_order_is_least_privilege_first():
    known = [k("u1", "a"), k("u2", "b", active=False), k("u3", "c")]
    p = plan([d("b"), d("c", sets=frozenset({"Order handlers"}), family="X"), d("n")], known)
    kinds = [type(a).__name__ for a in p.actions()]
    assert kinds == ["Deactivate", "SetPermissionSets", "UpdateUser", "Reactivate", "CreateUser"]


def test_threshold_share_and_refusal():
    known = [k(f"u{i}", f"s{i}") for i in range(10)]
    p = plan([d(f"s{i}") for i in range(8)], known)
    assert p.active_managed == 10
    assert p.deactivation_share() == pytest.approx(0.2)
    assert p.deactivation_share(total_active=20) == pytest.approx(0.1)
    with pytest.raises(ThresholdExceeded, match=r"deactivate 2 of 10 .*20%.*--force"):
        p.check_threshold(0.10)
    p.check_threshold(0.10, force=True)
    p.check_threshold(0.25)
    p.check_threshold(0.10, floor=2)


def test_threshold_with_no_active_users():
    p = plan([], [])
    assert p.deactivation_share() == 0.0
    p.check_threshold(0.0)


def test_describe_lists_every_action():
    p = plan([d("a", email="n@example.com"), d("new")], [k("u1", "a"), k("u2", "gone")])
    lines = p.describe()
    assert lines[0].startswith("full sync of seller s1")
    assert any(line.startswith("deactivate u2") for line in lines)
    assert any(line.startswith("create") and "new@example.com" in line for line in lines)
    assert any(line.startswith("update     u1") for line in lines)
