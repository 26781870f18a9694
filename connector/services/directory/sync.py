"""Run one directory sync: read, plan, guard, apply through a ``DirectoryTarget``.

The order of a run:

1. Read the stored state (high-water marker, last full run) and decide full or delta.
2. Read the directory (streamed) and plan against the store's users, a chunk of
   entries at a time. A read that cannot be complete raises before anything is
   planned, so nothing changes.
3. Check the deactivation threshold (``force`` overrides), deltas included.
4. Dry run: report the plan and stop. Otherwise apply it, least privilege first, in
   batches (``BatchDirectoryTarget``).
5. Store the new marker only when every action succeeded: a failed or interrupted
   run is read again from the old marker, and since each action sets a state
   (rather than toggling one), the re-run converges to the same result.

Memory stays flat in the directory's size: the reader streams, the plan asks the
store about one chunk at a time and spools its changes, and the changes are applied
a bounded batch at a time.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Protocol, runtime_checkable

from connector.domain.errors import DomainError
from connector.ports.directory import (
    DirectoryScan,
    DirectorySource,
    DirectoryUser,
    MarkerError,
    Problem,
    SyncSettings,
    ThresholdExceeded,
)
from connector.services.directory.plan import (
    Action,
    CreateUser,
    Deactivate,
    KnownUsers,
    Planner,
    Reactivate,
    SetPermissionSets,
    SyncPlan,
    UpdateUser,
)
from connector.services.directory.spool import IdSet, Spool

Progress = Callable[[str], None]


class DirectoryTarget(Protocol):
    """Where a directory sync writes: the store of seller users (the service layer).

    Every method sets a state and may be called again with the same arguments
    harmlessly (an interrupted run is re-run). A method refusing one change for a
    reason of the seller domain raises ``connector.domain.errors.DomainError``: the
    run records it and goes on with the other users (and does not advance the
    marker). Any other exception stops the run.
    """

    def resolve_seller(self, seller_id: str | None, seller_name: str | None) -> str:
        """The id of the seller account the source feeds, given its id or its name.

        :raises DomainError: (``NotFound``) when there is no such seller.
        """
        ...

    def known(self, seller_id: str) -> KnownUsers:
        """The store's users of the seller, as the plan asks about them: a chunk of
        entries at a time (``external_id`` set for the users linked to this source)."""
        ...

    def create_user(
        self,
        seller_id: str,
        *,
        external_id: str,
        email: str,
        given_name: str,
        family_name: str,
        permission_sets: frozenset[str],
    ) -> str:
        """Create an active secondary user linked to ``external_id``, member of
        exactly ``permission_sets`` (by name), and invite it. Atomic: afterwards the
        user exists with its ``external_id`` or not at all. Returns the user id.
        """
        ...

    def update_user(
        self,
        seller_id: str,
        user_id: str,
        *,
        email: str | None = None,
        given_name: str | None = None,
        family_name: str | None = None,
    ) -> None:
        """Set the given fields (``None``: unchanged). ``email`` replaces the primary
        address (the user keeps its id, external id and permission sets)."""
        ...

    def set_permission_sets(
        self, seller_id: str, user_id: str, permission_sets: frozenset[str]
    ) -> None:
        """Make the user a member of exactly these permission sets (by name)."""
        ...

    def deactivate(self, seller_id: str, user_id: str, *, reason: str) -> None:
        """Make the user inactive (never delete); ``reason`` is for the audit log.
        Already inactive: nothing to do."""
        ...

    def reactivate(self, seller_id: str, user_id: str) -> None:
        """Make an inactive user active again. Already active: nothing to do."""
        ...

    def get_marker(self, source_id: str) -> str | None:
        """The state ``set_marker`` stored for this directory source, or None."""
        ...

    def set_marker(
        self,
        source_id: str,
        marker: str,
        group_members: Iterable[tuple[str, frozenset[str]]] | None = None,
        *,
        every_group: bool = False,
    ) -> None:
        """Store the source's sync state (an opaque string of at most a few thousand
        characters) after a successful run and, in the same transaction, the groups'
        member lists read with it (``every_group``: in place of all stored lists)."""
        ...

    def group_members(self, source_id: str, group_keys: Sequence[str]) -> dict[str, frozenset[str]]:
        """The groups' member lists stored with the source's marker (absent: none)."""
        ...


@runtime_checkable
class BatchDirectoryTarget(Protocol):
    """A target that can apply many actions in one unit of work (optional).

    ``run_sync`` uses it when the target has it: one transaction per action is too
    slow for thousands of users. The guarantees are those of single calls, per batch:
    a refused action is undone alone and reported, and an interrupted batch leaves
    nothing of itself (the re-run plans it again).
    """

    def apply_batch(self, seller_id: str, actions: Sequence[Action]) -> list[str | None]:
        """Apply ``actions`` in order; for each, None when applied or why the seller
        rules refused it. Any other error stops the run.

        The target may handle only the first ones (at least one), e.g. to keep its
        transaction short: it returns results for those, and is given the rest again.
        """
        ...


@dataclass(frozen=True)
class SyncState:
    """What is stored between runs under the source id."""

    marker: str | None
    """The reader's high-water mark (opaque here)."""
    full_at: dt.datetime
    """When the last successful full run started."""
    runs_since_full: int = 0

    def dump(self) -> str:
        return json.dumps(
            {
                "v": 1,
                "marker": self.marker,
                "full_at": self.full_at.isoformat(),
                "runs_since_full": self.runs_since_full,
            }
        )

    @classmethod
    def load(cls, text: str | None) -> SyncState | None:
        """Read a stored state; ``None`` when there is none or it cannot be read."""
        if not text:
            return None
        try:
            data = json.loads(text)
            return cls(
                marker=data["marker"],
                full_at=dt.datetime.fromisoformat(data["full_at"]),
                runs_since_full=int(data["runs_since_full"]),
            )
        except (ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True)
class Failure:
    """An action the target refused; the run went on with the others."""

    action: Action
    message: str

    def __str__(self) -> str:
        return f"{self.action.describe()}: {self.message}"


@dataclass
class SyncResult:
    """What a run did (or, in a dry run, would do)."""

    plan: SyncPlan
    full: bool
    dry_run: bool
    applied: Spool[Action] = field(default_factory=Spool)
    failures: Spool[Failure] = field(default_factory=Spool)
    marker_stored: bool = False
    blocked: str | None = None
    """Dry run over the threshold: the error a real run would raise."""

    @property
    def problems(self) -> list[Problem]:
        return self.plan.problems

    @property
    def ok(self) -> bool:
        """Everything planned was applied (or, for a dry run, could be)."""
        return not self.failures and self.blocked is None


def _full_due(config: SyncSettings, state: SyncState, now: dt.datetime) -> str | None:
    runs, hours = config.reconcile_runs, config.reconcile_hours
    if runs is not None and state.runs_since_full + 1 >= runs:
        return f"{runs} runs since the last full run"
    if hours is not None and now - state.full_at >= dt.timedelta(hours=hours):
        return f"{hours} h since the last full run"
    return None


def run_sync(
    config: SyncSettings,
    reader: DirectorySource,
    target: DirectoryTarget,
    *,
    dry_run: bool = False,
    full: bool = False,
    force: bool = False,
    progress: Progress | None = None,
    now: dt.datetime | None = None,
    progress_every: int = 1000,
    describe: bool = True,
    batch_size: int = 500,
) -> SyncResult:
    """Sync one directory source into its seller account.

    ``full`` forces a full run (a full run is also made when there is no stored state,
    or ``full_reconcile_every`` is due). A delta run deactivates the entries the
    directory reports as gone (deleted, moved out of the base DN), when it can tell
    (``DirectoryScan.departed``). ``force`` lets a run exceed the deactivation
    threshold. ``progress`` gets one line at a time (the plan included). Directory
    errors (``DirectoryError``) and ``ThresholdExceeded`` raise before anything is
    changed.

    ``progress_every``: a line every so many entries read and changes applied (0:
    none). ``describe``: say every planned change, not only the summary.
    ``batch_size``: how many changes a ``BatchDirectoryTarget`` applies per unit of
    work (1: one call per change, as with any other target).
    """
    say: Progress = progress or (lambda _line: None)
    started = now or dt.datetime.now(dt.UTC)
    seller_id = target.resolve_seller(config.seller_id, config.seller_name)
    state = SyncState.load(target.get_marker(config.id))
    known = target.known(seller_id)

    run_full = full or _full_run_due(config, state, started, say)
    plan, scans, run_full = _make_plan(
        config, reader, target, known, seller_id, state, run_full, say, progress_every
    )
    result = SyncResult(plan=plan, full=run_full, dry_run=dry_run)
    for line in plan.lines() if describe else [plan.summary()]:
        say(line)

    try:
        plan.check_threshold(config.deactivation_threshold, force, floor=config.deactivation_floor)
    except ThresholdExceeded as exc:
        if not dry_run:
            raise
        result.blocked = str(exc)
        say(f"dry run: a real run would stop here: {exc}")
        return result
    if dry_run:
        say("dry run: nothing was changed")
        return result

    _apply(plan, target, seller_id, result, say, progress_every, batch_size)
    if result.failures:
        say(
            f"{len(result.failures)} changes failed: the marker stays where it was, so "
            "the next run tries them again"
        )
        return result
    new_state = SyncState(
        marker=scans[0].marker,
        full_at=started if run_full else state.full_at,  # type: ignore[union-attr]
        runs_since_full=0 if run_full else state.runs_since_full + 1,  # type: ignore[union-attr]
    )
    target.set_marker(config.id, new_state.dump(), scans[0].group_members, every_group=run_full)
    result.marker_stored = True
    say(f"{config.id}: done, {len(result.applied)} changes applied")
    return result


def _make_plan(
    config: SyncSettings,
    reader: DirectorySource,
    target: DirectoryTarget,
    known: KnownUsers,
    seller_id: str,
    state: SyncState | None,
    run_full: bool,
    say: Progress,
    progress_every: int,
) -> tuple[SyncPlan, list[DirectoryScan], bool]:
    """Read the directory (a delta where the stored marker allows, else everything) and
    plan the changes; returns the plan, the scans read and whether the run is full."""
    scans: list[DirectoryScan] = []
    users: Iterator[DirectoryUser]
    if not run_full:
        assert state is not None and state.marker is not None
        delta = _read_delta(config, reader, target, state.marker, say)
        if delta is None:
            run_full = True
        else:
            scans.append(delta)
    planner = Planner(
        known,
        seller_id=seller_id,
        full=run_full,
        managed_sets=config.managed_permission_sets,
        require_mapped_group=config.require_mapped_group,
    )
    if run_full:
        scan = reader.read_all()
        scans.append(scan)
        users = scan.users
    else:
        users = _delta_users(reader, scans[0], known, planner.seen, scans)
    for note in scans[0].notes:
        say(f"{config.id}: {note}")

    if progress_every > 0:
        users = _counted(users, progress_every, say)
    planner.read(users)
    # The users are consumed: every scan's problems, departures and final marker are known.
    for scan in scans:
        planner.depart(scan.departed)
        planner.present(scan.present_ids)
    plan = planner.finish(absent_left=run_full or scans[0].absent_left)
    plan.problems[:0] = [p for s in scans for p in s.problems]
    return plan, scans, run_full


def _full_run_due(
    config: SyncSettings, state: SyncState | None, started: dt.datetime, say: Progress
) -> bool:
    """Whether this run must read everything: no stored state, or a full run is due."""
    if state is None or state.marker is None:
        say(f"{config.id}: no stored sync state: full run")
        return True
    due = _full_due(config, state, started)
    if due:
        say(f"{config.id}: full run ({due})")
    return bool(due)


def _read_delta(
    config: SyncSettings,
    reader: DirectorySource,
    target: DirectoryTarget,
    marker: str,
    say: Progress,
) -> DirectoryScan | None:
    """What changed since ``marker``; None when the directory cannot resume from it."""
    try:
        return reader.read_changes(
            marker, previous_members=lambda keys: target.group_members(config.id, keys)
        )
    except MarkerError as exc:
        say(f"{config.id}: {exc}: full run")
        return None


def _delta_users(
    reader: DirectorySource,
    delta: DirectoryScan,
    known: KnownUsers,
    planned: IdSet,
    scans: list[DirectoryScan],
) -> Iterator[DirectoryUser]:
    """The changed users and the current members of changed groups' permission sets,
    then, read again by id, every known holder of such a set that was not among them:
    one who left a group no longer shows among its members."""
    seen = IdSet()
    for user in delta.users:
        seen.add(user.stable_id)
        yield user
    affected = delta.affected_permission_sets
    if not affected:
        return
    again = reader.read_users_by_id(
        s for s in known.holders(affected) if s not in seen and s not in planned
    )
    scans.append(again)
    yield from again.users


def _counted(users: Iterator[DirectoryUser], every: int, say: Progress) -> Iterator[DirectoryUser]:
    for count, user in enumerate(users, start=1):
        if count % every == 0:
            say(f"read {count} directory entries")
        yield user


def _apply(
    plan: SyncPlan,
    target: DirectoryTarget,
    seller_id: str,
    result: SyncResult,
    say: Progress,
    progress_every: int = 0,
    batch_size: int = 1,
) -> None:
    actions = plan.actions()
    total = len(actions)
    done = 0

    def record(action: Action, error: str | None) -> None:
        nonlocal done
        if error is None:
            result.applied.append(action)
        else:
            result.failures.append(Failure(action, error))
            say(f"failed     {action.describe()}: {error}")
        done += 1
        if progress_every > 0 and (done % progress_every == 0 or done == total):
            say(f"applied {done}/{total} changes")

    if batch_size > 1 and isinstance(target, BatchDirectoryTarget):
        # Streamed from the plan's spools, a batch at a time; a batch that took fewer
        # (its time ran out) is given the rest again.
        pending: list[Action] = []
        stream: Iterable[Action] = iter(actions)
        while True:
            pending.extend(islice(stream, batch_size - len(pending)))
            if not pending:
                return
            errors = target.apply_batch(seller_id, pending)
            if not errors or len(errors) > len(pending):
                raise RuntimeError(
                    f"apply_batch returned {len(errors)} results for {len(pending)} changes"
                )
            for action, error in zip(pending, errors, strict=False):
                record(action, error)
            pending = pending[len(errors) :]
    for action in actions:
        try:
            _apply_one(action, target, seller_id)
        except DomainError as exc:
            record(action, exc.detail)
        else:
            record(action, None)


def _apply_one(action: Action, target: DirectoryTarget, seller_id: str) -> None:
    match action:
        case Deactivate():
            target.deactivate(seller_id, action.user_id, reason=action.reason.value)
        case SetPermissionSets():
            target.set_permission_sets(seller_id, action.user_id, action.after)
        case UpdateUser():
            target.update_user(
                seller_id,
                action.user_id,
                email=action.email,
                given_name=action.given_name,
                family_name=action.family_name,
            )
        case Reactivate():
            target.reactivate(seller_id, action.user_id)
        case CreateUser():
            target.create_user(
                seller_id,
                external_id=action.stable_id,
                email=action.email,
                given_name=action.given_name,
                family_name=action.family_name,
                permission_sets=action.permission_sets,
            )
