"""Plan a directory sync: compare the directory with the store, decide what changes.

The plan is made a chunk of entries at a time (:class:`Planner`): for each chunk it asks
the store (:class:`KnownUsers`) only about those entries and their addresses, and it
keeps the planned changes in :class:`~connector.services.directory.spool.Spool` lists and
the entries seen in an :class:`~connector.services.directory.spool.IdSet`, so that its
memory does not grow with the directory.

Rules the plan keeps:

* Identity is the directory's stable id (``KnownUser.external_id``), never the DN
  or the email: a rename or a move changes nothing; an email change is an update.
* Users are never deleted, only deactivated: when they left the directory (a full
  run sees who is missing; a delta run only when the directory reports departures,
  see ``DirectoryScan.departed``), left every mapped group (when
  ``require_mapped_group``) or are disabled there. They are reactivated when they
  come back.
* The primary user is never touched: it changes only through the marketplace team.
* Only the permission sets this source maps are decided by it; other sets a user
  holds (granted in the portal) are left alone.
* Users the store has without an ``external_id`` are not this source's: never
  touched. A directory user whose email such a user already holds is reported, not
  created (emails are unique and never reused).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import chain, islice
from typing import Protocol

from connector.domain.model import Role, email_key
from connector.ports.directory import DirectoryUser, KnownUser, Problem, ThresholdExceeded
from connector.services.directory.spool import IdSet, Spool


class DeactivationReason(StrEnum):
    """Why the sync deactivates a user."""

    left_directory = "left-directory"
    left_groups = "left-mapped-groups"
    disabled = "disabled-in-directory"


@dataclass(frozen=True, slots=True)
class CreateUser:
    """Provision a new secondary user linked to a directory entry."""

    stable_id: str
    dn: str
    email: str
    given_name: str
    family_name: str
    permission_sets: frozenset[str]

    def describe(self) -> str:
        sets = ", ".join(sorted(self.permission_sets)) or "none"
        return (
            f"create     {self.email} ({self.given_name} {self.family_name}) "
            f"[{self.stable_id}] permission sets: {sets}"
        )


@dataclass(frozen=True, slots=True)
class UpdateUser:
    """Change a user's email or names. ``None`` fields stay as they are."""

    user_id: str
    stable_id: str
    email: str | None = None
    given_name: str | None = None
    family_name: str | None = None
    changes: tuple[tuple[str, str | None, str], ...] = ()
    """(field, old value, new value), for people to read."""

    def describe(self) -> str:
        what = "; ".join(f"{f}: {old!r} -> {new!r}" for f, old, new in self.changes)
        return f"update     {self.user_id} [{self.stable_id}] {what}"


@dataclass(frozen=True, slots=True)
class SetPermissionSets:
    """Give a user exactly ``after`` (sets not managed by the source are kept in it)."""

    user_id: str
    stable_id: str
    before: frozenset[str]
    after: frozenset[str]

    @property
    def added(self) -> frozenset[str]:
        return self.after - self.before

    @property
    def removed(self) -> frozenset[str]:
        return self.before - self.after

    def describe(self) -> str:
        parts = [f"+{n}" for n in sorted(self.added)] + [f"-{n}" for n in sorted(self.removed)]
        return f"sets       {self.user_id} [{self.stable_id}] {' '.join(parts)}"


@dataclass(frozen=True, slots=True)
class Deactivate:
    """Make a user inactive (never delete)."""

    user_id: str
    stable_id: str
    reason: DeactivationReason

    def describe(self) -> str:
        return f"deactivate {self.user_id} [{self.stable_id}] ({self.reason.value})"


@dataclass(frozen=True, slots=True)
class Reactivate:
    """Make an inactive user active again: it is back in the directory and its groups."""

    user_id: str
    stable_id: str

    def describe(self) -> str:
        return f"reactivate {self.user_id} [{self.stable_id}]"


Action = CreateUser | UpdateUser | SetPermissionSets | Deactivate | Reactivate


@dataclass
class SyncPlan:
    """What one sync run would change, and what it had to skip."""

    seller_id: str
    full: bool
    creates: Spool[CreateUser] = field(default_factory=Spool)
    updates: Spool[UpdateUser] = field(default_factory=Spool)
    permission_changes: Spool[SetPermissionSets] = field(default_factory=Spool)
    deactivations: Spool[Deactivate] = field(default_factory=Spool)
    reactivations: Spool[Reactivate] = field(default_factory=Spool)
    problems: list[Problem] = field(default_factory=list)
    active_managed: int = 0
    """Active secondary users linked to the directory before the run."""
    directory_users: int = 0
    """Directory entries the plan looked at."""
    unchanged: int = 0

    @property
    def is_empty(self) -> bool:
        """True when the run changes nothing."""
        return not (
            self.creates
            or self.updates
            or self.permission_changes
            or self.deactivations
            or self.reactivations
        )

    def actions(self) -> Actions:
        """Every change, in the order they are applied (iterate it; it has a length).

        Least privilege first: deactivations and permission changes (which include
        removals) before updates, reactivations and, last, creations. Each action sets
        a state rather than toggling one, so an interrupted run, planned again from
        what the store then holds, converges to the same result.
        """
        return Actions(
            (
                self.deactivations,
                self.permission_changes,
                self.updates,
                self.reactivations,
                self.creates,
            )
        )

    def deactivation_share(self, total_active: int | None = None) -> float:
        """The share of active users this plan deactivates (0.0 to 1.0).

        ``total_active`` defaults to the active users linked to the directory.
        """
        total = self.active_managed if total_active is None else total_active
        count = len(self.deactivations)
        if count == 0:
            return 0.0
        if total <= 0:
            return 1.0
        return count / total

    def check_threshold(self, threshold: float, force: bool = False, *, floor: int = 0) -> None:
        """Refuse a plan deactivating more than ``threshold`` of the active users.

        A wrong base DN, a deleted group or a truncated read looks like "everyone
        left": this is the last guard before such a run disables a whole seller.
        Up to ``floor`` deactivations always pass (small sellers).

        :raises ThresholdExceeded: unless ``force``.
        """
        count = len(self.deactivations)
        share = self.deactivation_share()
        if force or count <= floor or share <= threshold:
            return
        raise ThresholdExceeded(
            f"This sync would deactivate {count} of {self.active_managed} active "
            f"directory users of seller {self.seller_id} ({share:.0%}), more than the "
            f"deactivation_threshold of {threshold:.0%}. Nothing was changed. Check the "
            "directory and the source's base_dn, user_filter and group mapping (a "
            "renamed or deleted group looks like everyone leaving), then run again with "
            "--force if the deactivations are intended."
        )

    def summary(self) -> str:
        """One line with the counts."""
        kind = "full" if self.full else "delta"
        return (
            f"{kind} sync of seller {self.seller_id}: {self.directory_users} directory "
            f"users read; {len(self.creates)} to create, {len(self.updates)} to update, "
            f"{len(self.permission_changes)} permission changes, {len(self.deactivations)} "
            f"to deactivate, {len(self.reactivations)} to reactivate, {self.unchanged} "
            f"unchanged, {len(self.problems)} problems"
        )

    def describe(self) -> list[str]:
        """The summary, then one line per action and per problem."""
        return list(self.lines())

    def lines(self) -> Iterator[str]:
        """:meth:`describe`, one line at a time (a large plan is never held as text)."""
        yield self.summary()
        for action in self.actions():
            yield action.describe()
        for problem in self.problems:
            yield f"problem    {problem}"


class Actions:
    """The plan's changes in the order they are applied, read from its spools."""

    def __init__(self, parts: Sequence[Spool[Action]]) -> None:
        self._parts = parts

    def __iter__(self) -> Iterator[Action]:
        return chain.from_iterable(self._parts)

    def __len__(self) -> int:
        return sum(len(p) for p in self._parts)

    def __bool__(self) -> bool:
        return any(self._parts)


CHUNK = 500
"""Entries planned together: one look-up of the store for each chunk."""


@dataclass
class KnownChunk:
    """What the store knows of one chunk of entries."""

    by_external: dict[str, KnownUser] = field(default_factory=dict)
    """stable id -> the visible user of the seller linked to that entry in this source."""
    email_owner: dict[str, KnownUser] = field(default_factory=dict)
    """email key -> a visible user of the seller whose current addresses include it."""


class KnownUsers(Protocol):
    """What a plan needs to know of the store, asked a chunk of entries at a time, so
    that nothing the size of the seller's users is ever held at once."""

    def lookup(self, stable_ids: Sequence[str], email_keys: Sequence[str]) -> KnownChunk:
        """The users linked to these entries, and the users holding these addresses."""
        ...

    def active_managed(self) -> int:
        """How many active secondary users are linked to the source."""
        ...

    def linked_active(self) -> Iterator[tuple[str, str]]:
        """(stable id, user id) of every active secondary user linked to the source."""
        ...

    def holders(self, permission_sets: frozenset[str]) -> Iterator[str]:
        """Stable ids of the linked users holding one of these permission sets (by name)."""
        ...


class ListedKnownUsers:
    """:class:`KnownUsers` over a list held in memory (tests, small stores)."""

    def __init__(self, known: Iterable[KnownUser]) -> None:
        self.known = list(known)
        self._by_external: dict[str, KnownUser] = {}
        self._email_owner: dict[str, KnownUser] = {}
        for user in self.known:
            if user.external_id:
                self._by_external[user.external_id] = user
            for address in user.emails:
                self._email_owner.setdefault(email_key(address), user)

    def lookup(self, stable_ids: Sequence[str], email_keys: Sequence[str]) -> KnownChunk:
        return KnownChunk(
            {s: self._by_external[s] for s in stable_ids if s in self._by_external},
            {k: self._email_owner[k] for k in email_keys if k in self._email_owner},
        )

    def _managed_active(self) -> Iterator[KnownUser]:
        return (u for u in self.known if u.external_id and u.role is Role.secondary and u.active)

    def active_managed(self) -> int:
        return sum(1 for _ in self._managed_active())

    def linked_active(self) -> Iterator[tuple[str, str]]:
        for user in self._managed_active():
            yield user.external_id or "", user.id

    def holders(self, permission_sets: frozenset[str]) -> Iterator[str]:
        for user in self.known:
            if user.external_id and user.permission_sets & permission_sets:
                yield user.external_id


class Planner:
    """Plans a run from a stream of entries, a chunk at a time.

    ``read`` as many streams as the run has (a delta reads the changed entries, then
    holders of changed permission sets again), tell it of entries the directory says
    left (``depart``) or named as present (``present``), then ``finish``.
    """

    def __init__(
        self,
        known: KnownUsers,
        *,
        seller_id: str = "",
        full: bool,
        managed_sets: frozenset[str] = frozenset(),
        require_mapped_group: bool = True,
        chunk_size: int = CHUNK,
    ) -> None:
        self.known = known
        self.plan = SyncPlan(seller_id=seller_id, full=full)
        self.plan.active_managed = known.active_managed()
        self.managed_sets = managed_sets
        self.require_mapped_group = require_mapped_group
        self.chunk_size = chunk_size
        self.seen = IdSet()
        """Stable ids of the entries read."""
        self._seen_at = IdSet()  # stable id and DN: a second read of one entry is no clash
        self._present = IdSet()
        self._departed: list[str] = []
        self._taken = IdSet()  # email keys this run gives to an entry (created or changed)
        self._clashes: list[tuple[str, DirectoryUser]] = []

    def read(self, entries: Iterable[DirectoryUser]) -> None:
        """Plan these entries (a stream: consumed a chunk at a time)."""
        stream = iter(entries)
        while chunk := list(islice(stream, self.chunk_size)):
            self._plan_chunk(chunk)

    def depart(self, stable_ids: Iterable[str]) -> None:
        """The directory says these entries left the scope (delta runs)."""
        self._departed.extend(stable_ids)

    def present(self, stable_ids: Iterable[str]) -> None:
        """The directory names these entries as in scope and unchanged."""
        for stable_id in stable_ids:
            self._present.add(stable_id)

    def _plan_chunk(self, chunk: list[DirectoryUser]) -> None:
        plan = self.plan
        fresh: list[DirectoryUser] = []
        for entry in chunk:
            at = f"{entry.stable_id}\n{entry.dn}"
            if not self.seen.add(entry.stable_id):
                # A delta run may read one entry twice (changed, and member of a changed
                # group): that is the same entry. Two DNs with one id is a directory problem.
                if at not in self._seen_at:
                    plan.problems.append(
                        Problem(
                            entry.dn,
                            f"has the same stable id {entry.stable_id} as another entry "
                            "read in this run: skipped",
                        )
                    )
                continue
            self._seen_at.add(at)
            plan.directory_users += 1
            fresh.append(entry)
        if not fresh:
            return
        known = self.known.lookup(
            [e.stable_id for e in fresh], sorted({email_key(e.email) for e in fresh})
        )
        for entry in fresh:
            wanted = not entry.disabled and (
                bool(entry.permission_sets) or not self.require_mapped_group
            )
            current = known.by_external.get(entry.stable_id)
            if current is None:
                self._plan_create(entry, wanted, known.email_owner)
            elif current.role is Role.primary:
                plan.problems.append(
                    Problem(
                        entry.dn,
                        f"is linked to the primary user {current.id}: the primary user "
                        "changes only through the marketplace team, the sync leaves it alone",
                    )
                )
            else:
                self._plan_existing(entry, current, wanted, known.email_owner)

    def _plan_create(
        self, entry: DirectoryUser, wanted: bool, email_owner: dict[str, KnownUser]
    ) -> None:
        if not wanted:
            return  # disabled, or in no mapped group: not provisioned
        key = email_key(entry.email)
        owner = email_owner.get(key)
        if owner is not None:
            who = "the primary user" if owner.role is Role.primary else f"user {owner.id}"
            self.plan.problems.append(
                Problem(
                    entry.dn,
                    f"not created: {entry.email} already belongs to {who}, which is not "
                    "linked to this directory entry (emails are unique and never reused)",
                )
            )
            return
        if key in self._taken:
            self._clashes.append((key, entry))  # said at the end, naming the other entry
            return
        self._taken.add(key)
        self.plan.creates.append(
            CreateUser(
                stable_id=entry.stable_id,
                dn=entry.dn,
                email=entry.email,
                given_name=entry.given_name,
                family_name=entry.family_name,
                permission_sets=entry.permission_sets,
            )
        )

    def _plan_existing(
        self,
        entry: DirectoryUser,
        current: KnownUser,
        wanted: bool,
        email_owner: dict[str, KnownUser],
    ) -> None:
        plan = self.plan
        changed = False
        changes: list[tuple[str, str | None, str]] = []
        email: str | None = None
        if email_key(entry.email) != email_key(current.email or ""):
            key = email_key(entry.email)
            owner = email_owner.get(key)
            if (owner is not None and owner.id != current.id) or key in self._taken:
                plan.problems.append(
                    Problem(
                        entry.dn,
                        f"email of {current.id} not changed to {entry.email}: another user "
                        "already has that address",
                    )
                )
            else:
                email = entry.email
                self._taken.add(key)
                changes.append(("email", current.email, entry.email))
        given = entry.given_name if entry.given_name != current.given_name else None
        family = entry.family_name if entry.family_name != current.family_name else None
        if given is not None:
            changes.append(("given_name", current.given_name, given))
        if family is not None:
            changes.append(("family_name", current.family_name, family))
        if changes:
            plan.updates.append(
                UpdateUser(current.id, entry.stable_id, email, given, family, tuple(changes))
            )
            changed = True

        # Keep the sets this source does not manage; the managed ones follow the directory.
        after = (current.permission_sets - self.managed_sets) | entry.permission_sets
        if after != current.permission_sets:
            plan.permission_changes.append(
                SetPermissionSets(current.id, entry.stable_id, current.permission_sets, after)
            )
            changed = True

        if current.active and not wanted:
            reason = (
                DeactivationReason.disabled if entry.disabled else DeactivationReason.left_groups
            )
            plan.deactivations.append(Deactivate(current.id, entry.stable_id, reason))
            changed = True
        elif not current.active and wanted:
            plan.reactivations.append(Reactivate(current.id, entry.stable_id))
            changed = True
        if not changed:
            plan.unchanged += 1

    def finish(self, *, absent_left: bool) -> SyncPlan:
        """The plan, once every entry was read.

        ``absent_left``: the reads named every entry in scope (a full read, or a
        present phase), so a linked active user they did not name has left.
        """
        plan = self.plan
        left = DeactivationReason.left_directory
        if absent_left:
            for stable_id, user_id in self.known.linked_active():
                if stable_id not in self.seen and stable_id not in self._present:
                    plan.deactivations.append(Deactivate(user_id, stable_id, left))
        else:
            gone = [
                s
                for s in dict.fromkeys(self._departed)
                if s not in self.seen and s not in self._present
            ]
            for start in range(0, len(gone), self.chunk_size):
                known = self.known.lookup(gone[start : start + self.chunk_size], [])
                for stable_id in gone[start : start + self.chunk_size]:
                    user = known.by_external.get(stable_id)
                    if user is not None and user.role is Role.secondary and user.active:
                        plan.deactivations.append(Deactivate(user.id, stable_id, left))
        self._say_clashes()
        return plan

    def _say_clashes(self) -> None:
        if not self._clashes:
            return
        first: dict[str, str] = {}
        wanted = {key for key, _ in self._clashes}
        for create in self.plan.creates:
            key = email_key(create.email)
            if key in wanted:
                first.setdefault(key, create.dn)
        for update in self.plan.updates:
            if update.email is not None and email_key(update.email) in wanted:
                first.setdefault(email_key(update.email), f"entry {update.stable_id}")
        for key, entry in self._clashes:
            self.plan.problems.append(
                Problem(
                    entry.dn,
                    f"not created: {entry.email} is also the address of "
                    f"{first.get(key, 'another entry')} in the directory",
                )
            )


def plan_sync(
    directory_users: Iterable[DirectoryUser],
    known_users: Iterable[KnownUser] | KnownUsers,
    *,
    seller_id: str = "",
    full: bool,
    managed_sets: frozenset[str] = frozenset(),
    require_mapped_group: bool = True,
) -> SyncPlan:
    """Compare the directory with the store and return what to change.

    ``directory_users`` is consumed once, as a stream. In a delta run (``full=False``)
    it holds only the changed entries, and nobody is deactivated for being absent
    from it.
    """
    known = known_users if hasattr(known_users, "lookup") else ListedKnownUsers(known_users)  # type: ignore[arg-type]
    planner = Planner(
        known,  # type: ignore[arg-type]
        seller_id=seller_id,
        full=full,
        managed_sets=managed_sets,
        require_mapped_group=require_mapped_group,
    )
    planner.read(directory_users)
    return planner.finish(absent_left=full)
