"""run_sync against a fake source and the in-memory target: order, dry run, threshold,
failures, crash and re-run, full/delta scheduling."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import pytest

from connector.adapters.ldap.config import DirectoryConfig
from connector.ports.directory import (
    DirectoryIncomplete,
    DirectoryScan,
    DirectoryUser,
    MarkerError,
    Problem,
    ThresholdExceeded,
)
from connector.services.directory.sync import SyncState, run_sync
from tests.unit.directory.memory_target import Crash, MemoryTarget

CATALOG = frozenset({"Catalog editors"})


def config(**extra: object) -> DirectoryConfig:
    data: dict[str, object] = {
        "id": "corp",
        "preset": "openldap",
        "url": "ldap://127.0.0.1:389",
        "bind_dn": "cn=sync,dc=example,dc=com",
        "bind_password_env": "UNUSED",
        "base_dn": "dc=example,dc=com",
        "groups": {
            "map": {
                "cn=catalog,dc=example,dc=com": "Catalog editors",
                "cn=orders,dc=example,dc=com": "Order handlers",
            }
        },
        "seller": {"id": "seller-1"},
        "deactivation_threshold": 0.5,
    }
    data.update(extra)
    return DirectoryConfig.model_validate(data)


def user(sid: str, *, sets: frozenset[str] = CATALOG, **kw: object) -> DirectoryUser:
    fields: dict[str, object] = {
        "stable_id": sid,
        "dn": f"uid={sid},dc=example,dc=com",
        "email": f"{sid}@example.com",
        "given_name": sid.capitalize(),
        "family_name": "Tester",
        "permission_sets": sets,
    }
    fields.update(kw)
    return DirectoryUser(**fields)  # type: ignore[arg-type]


class FakeSource:
    """A directory in a dict; markers count changes."""

    def __init__(self, users: list[DirectoryUser]) -> None:
        self.users = {u.stable_id: u for u in users}
        self.version = 1
        self.changed: set[str] = set()
        self.changed_sets: frozenset[str] = frozenset()
        self.calls: list[str] = []
        self.fail: Exception | None = None

    def change(self, u: DirectoryUser) -> None:
        self.users[u.stable_id] = u
        self.changed.add(u.stable_id)
        self.version += 1

    def _stream(self, users: Iterable[DirectoryUser]):
        for n, u in enumerate(users):
            if self.fail is not None and n == 1:
                raise self.fail
            yield u

    def read_all(self) -> DirectoryScan:
        self.calls.append("all")
        problems = [Problem("uid=broken,dc=example,dc=com", "skipped: no mail (email)")]
        return DirectoryScan(self._stream(list(self.users.values())), problems, f"v{self.version}")

    def read_changes(self, since_marker: str, previous_members: object = None) -> DirectoryScan:
        self.calls.append(f"changes:{since_marker}")
        if not since_marker.startswith("v"):
            raise MarkerError("unreadable")
        users = [self.users[i] for i in sorted(self.changed) if i in self.users]
        self.changed = set()
        return DirectoryScan(
            iter(users), [], f"v{self.version}", affected_permission_sets=self.changed_sets
        )

    def read_users_by_id(self, stable_ids: Iterable[str]) -> DirectoryScan:
        ids = sorted(stable_ids)
        self.calls.append(f"by-id:{','.join(ids)}")
        return DirectoryScan(iter([self.users[i] for i in ids if i in self.users]))


def test_first_run_creates_and_stores_the_marker() -> None:
    source = FakeSource([user("a"), user("b")])
    target = MemoryTarget()
    lines: list[str] = []
    result = run_sync(config(), source, target, progress=lines.append)
    assert result.full and result.ok and result.marker_stored
    assert {u.external_id for u in target.users.values()} == {"a", "b"}
    assert SyncState.load(target.markers["corp"]).marker == "v1"  # type: ignore[union-attr]
    assert any("no mail" in str(p) for p in result.problems)
    assert any(line.startswith("create") for line in lines)
    assert any("no stored sync state" in line for line in lines)


def test_dry_run_changes_nothing() -> None:
    source = FakeSource([user("a")])
    target = MemoryTarget()
    result = run_sync(config(), source, target, dry_run=True)
    assert [c.stable_id for c in result.plan.creates] == ["a"]
    assert not target.users and not target.markers and not target.calls


def test_threshold_stops_before_any_change_and_force_overrides() -> None:
    source = FakeSource([user("a"), user("b"), user("c")])
    target = MemoryTarget()
    run_sync(config(), source, target)
    del source.users["a"], source.users["b"]
    calls = len(target.calls)
    with pytest.raises(ThresholdExceeded, match="2 of 3"):
        run_sync(config(), source, target, full=True)
    assert len(target.calls) == calls
    dry = run_sync(config(), source, target, full=True, dry_run=True)
    assert dry.blocked and "2 of 3" in dry.blocked and not dry.ok
    forced = run_sync(config(), source, target, full=True, force=True)
    assert len(forced.plan.deactivations) == 2
    assert not target.by_external("a").active and target.by_external("c").active


def test_incomplete_read_raises_and_changes_nothing() -> None:
    source = FakeSource([user("a"), user("b"), user("c")])
    target = MemoryTarget()
    run_sync(config(), source, target)
    before = target.snapshot()
    source.fail = DirectoryIncomplete("sizeLimitExceeded")
    with pytest.raises(DirectoryIncomplete):
        run_sync(config(), source, target, full=True, force=True)
    assert target.snapshot() == before


def test_refused_change_is_recorded_the_rest_applied_marker_kept() -> None:
    source = FakeSource([user("a"), user("b", email="taken@example.com"), user("c")])
    target = MemoryTarget()
    target.used_emails.add("taken@example.com")  # used before, on another account
    result = run_sync(config(), source, target)
    assert [f.action.stable_id for f in result.failures] == ["b"]  # type: ignore[union-attr]
    assert {u.external_id for u in target.users.values()} == {"a", "c"}
    assert "corp" not in target.markers and not result.marker_stored


def test_interrupted_run_converges_on_rerun() -> None:
    initial = [user("a"), user("b"), user("c"), user("d", sets=frozenset({"Order handlers"}))]
    changed = [
        user("a", email="a.new@example.com"),
        user("b", sets=frozenset({"Order handlers"})),
        user("d", disabled=True),
        user("e"),
        user("f"),
    ]

    def prepared() -> tuple[FakeSource, MemoryTarget]:
        source, target = FakeSource(initial), MemoryTarget()
        run_sync(config(), source, target)
        source.users = {u.stable_id: u for u in changed}
        return source, target

    reference_source, reference = prepared()
    run_sync(config(), reference_source, reference, full=True)

    source, target = prepared()
    target.fail_after = len(target.calls) + 3
    with pytest.raises(Crash):
        run_sync(config(), source, target, full=True)
    assert target.snapshot() != reference.snapshot()
    target.fail_after = None
    result = run_sync(config(), source, target, full=True)
    assert result.ok
    assert target.snapshot() == reference.snapshot()
    again = run_sync(config(), source, target, full=True)
    assert again.plan.is_empty


def test_delta_reads_changes_and_holders_of_changed_sets() -> None:
    source = FakeSource([user("a"), user("b"), user("c", sets=frozenset({"Order handlers"}))])
    target = MemoryTarget()
    run_sync(config(), source, target)
    # b leaves the catalog group: the group changed, b's entry did not.
    source.users["b"] = user("b", sets=frozenset())
    source.version += 1
    source.changed_sets = CATALOG
    result = run_sync(config(), source, target)
    assert not result.full
    assert source.calls[-2:] == ["changes:v1", "by-id:a,b"]
    assert [d.stable_id for d in result.plan.deactivations] == ["b"]
    assert SyncState.load(target.markers["corp"]).runs_since_full == 1  # type: ignore[union-attr]


def test_delta_never_deactivates_missing_users() -> None:
    source = FakeSource([user("a"), user("b")])
    target = MemoryTarget()
    run_sync(config(), source, target)
    del source.users["b"]
    result = run_sync(config(), source, target)
    assert not result.full and result.plan.is_empty
    assert target.by_external("b").active


def test_full_reconcile_every_runs_and_hours() -> None:
    source = FakeSource([user("a")])
    target = MemoryTarget()
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    cfg = config(full_reconcile_every={"runs": 3})
    kinds = [run_sync(cfg, source, target, now=start).full for _ in range(6)]
    assert kinds == [True, False, False, True, False, False]
    cfg = config(full_reconcile_every={"hours": 1})
    assert run_sync(cfg, source, target, now=start, full=True).full
    assert not run_sync(cfg, source, target, now=start + dt.timedelta(minutes=30)).full
    assert run_sync(cfg, source, target, now=start + dt.timedelta(minutes=61)).full


def test_unreadable_state_or_marker_falls_back_to_full() -> None:
    source = FakeSource([user("a")])
    target = MemoryTarget()
    target.markers["corp"] = "not json"
    assert run_sync(config(), source, target).full
    state = SyncState(marker="garbage", full_at=dt.datetime.now(dt.UTC))
    target.markers["corp"] = state.dump()
    assert run_sync(config(), source, target).full


def test_seller_by_name() -> None:
    source = FakeSource([user("a")])
    target = MemoryTarget()
    result = run_sync(config(seller={"name": "Example Outdoor Gear"}), source, target)
    assert result.plan.seller_id == "seller-1"
