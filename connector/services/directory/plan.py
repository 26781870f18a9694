"""Plan a directory sync: compare the directory with the store, decide what changes. Pure.

Rules the plan keeps:

* Identity is the directory's stable id (``KnownUser.external_id``), never the DN
  or the email: a rename or a move changes nothing; an email change is an update.
* Users are never deleted, only deactivated: when they left the directory (full runs
  only: a delta run cannot see who is missing), left every mapped group (when
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

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from connector.domain.model import Role, email_key
from connector.ports.directory import DirectoryUser, KnownUser, Problem, ThresholdExceeded


class DeactivationReason(StrEnum):
    """Why the sync deactivates a user."""

    left_directory = "left-directory"
    left_groups = "left-mapped-groups"
    disabled = "disabled-in-directory"


@dataclass(frozen=True)
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


@dataclass(frozen=True)
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


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class Deactivate:
    """Make a user inactive (never delete)."""

    user_id: str
    stable_id: str
    reason: DeactivationReason

    def describe(self) -> str:
        return f"deactivate {self.user_id} [{self.stable_id}] ({self.reason.value})"


@dataclass(frozen=True)
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
    creates: list[CreateUser] = field(default_factory=list)
    updates: list[UpdateUser] = field(default_factory=list)
    permission_changes: list[SetPermissionSets] = field(default_factory=list)
    deactivations: list[Deactivate] = field(default_factory=list)
    reactivations: list[Reactivate] = field(default_factory=list)
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

    def actions(self) -> list[Action]:
        """Every change, in the order they are applied.

        Least privilege first: deactivations and permission changes (which include
        removals) before updates, reactivations and, last, creations. Each action sets
        a state rather than toggling one, so an interrupted run, planned again from
        what the store then holds, converges to the same result.
        """
        return [
            *self.deactivations,
            *self.permission_changes,
            *self.updates,
            *self.reactivations,
            *self.creates,
        ]

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
        lines = [self.summary()]
        lines += [action.describe() for action in self.actions()]
        lines += [f"problem    {problem}" for problem in self.problems]
        return lines


def plan_sync(
    directory_users: Iterable[DirectoryUser],
    known_users: Iterable[KnownUser],
    *,
    seller_id: str = "",
    full: bool,
    managed_sets: frozenset[str] = frozenset(),
    require_mapped_group: bool = True,
) -> SyncPlan:
    """Compare the directory with the store and return what to change.

    ``directory_users`` is consumed once, as a stream: the plan keeps the known users
    and the stable ids it has seen, not the directory. In a delta run
    (``full=False``) it holds only the changed entries, and nobody is deactivated for
    being absent from it.
    """
    plan = SyncPlan(seller_id=seller_id, full=full)
    known = list(known_users)
    by_external: dict[str, KnownUser] = {}
    email_owner: dict[str, KnownUser] = {}
    for user in known:
        if user.external_id:
            by_external[user.external_id] = user
        for address in user.emails:
            email_owner.setdefault(email_key(address), user)
    plan.active_managed = sum(
        1 for u in known if u.external_id and u.role is Role.secondary and u.active
    )
    seen: dict[str, str] = {}
    new_emails: dict[str, str] = {}

    for entry in directory_users:
        if entry.stable_id in seen:
            # A delta run may read one entry twice (changed, and member of a changed
            # group): that is the same entry. Two DNs with one id is a directory problem.
            if seen[entry.stable_id] != entry.dn:
                plan.problems.append(
                    Problem(
                        entry.dn,
                        f"has the same stable id {entry.stable_id} as {seen[entry.stable_id]}: "
                        "skipped",
                    )
                )
            continue
        seen[entry.stable_id] = entry.dn
        plan.directory_users += 1
        wanted = not entry.disabled and (bool(entry.permission_sets) or not require_mapped_group)
        current = by_external.get(entry.stable_id)
        if current is None:
            _plan_create(plan, entry, wanted, email_owner, new_emails)
        elif current.role is Role.primary:
            plan.problems.append(
                Problem(
                    entry.dn,
                    f"is linked to the primary user {current.id}: the primary user changes "
                    "only through the marketplace team, the sync leaves it alone",
                )
            )
        else:
            _plan_existing(plan, entry, current, wanted, managed_sets, email_owner, new_emails)

    if full:
        for user in known:
            if (
                user.external_id
                and user.role is Role.secondary
                and user.active
                and user.external_id not in seen
            ):
                plan.deactivations.append(
                    Deactivate(user.id, user.external_id, DeactivationReason.left_directory)
                )
    return plan


def _plan_create(
    plan: SyncPlan,
    entry: DirectoryUser,
    wanted: bool,
    email_owner: dict[str, KnownUser],
    new_emails: dict[str, str],
) -> None:
    if not wanted:
        return  # disabled, or in no mapped group: not provisioned
    key = email_key(entry.email)
    owner = email_owner.get(key)
    if owner is not None:
        who = "the primary user" if owner.role is Role.primary else f"user {owner.id}"
        plan.problems.append(
            Problem(
                entry.dn,
                f"not created: {entry.email} already belongs to {who}, which is not "
                "linked to this directory entry (emails are unique and never reused)",
            )
        )
        return
    if key in new_emails:
        plan.problems.append(
            Problem(
                entry.dn,
                f"not created: {entry.email} is also the address of {new_emails[key]} "
                "in the directory",
            )
        )
        return
    new_emails[key] = entry.dn
    plan.creates.append(
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
    plan: SyncPlan,
    entry: DirectoryUser,
    current: KnownUser,
    wanted: bool,
    managed_sets: frozenset[str],
    email_owner: dict[str, KnownUser],
    new_emails: dict[str, str],
) -> None:
    changed = False
    changes: list[tuple[str, str | None, str]] = []
    email: str | None = None
    if email_key(entry.email) != email_key(current.email or ""):
        key = email_key(entry.email)
        owner = email_owner.get(key)
        if (owner is not None and owner.id != current.id) or key in new_emails:
            plan.problems.append(
                Problem(
                    entry.dn,
                    f"email of {current.id} not changed to {entry.email}: another user "
                    "already has that address",
                )
            )
        else:
            email = entry.email
            new_emails[key] = entry.dn
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
    after = (current.permission_sets - managed_sets) | entry.permission_sets
    if after != current.permission_sets:
        plan.permission_changes.append(
            SetPermissionSets(current.id, entry.stable_id, current.permission_sets, after)
        )
        changed = True

    if current.active and not wanted:
        reason = DeactivationReason.disabled if entry.disabled else DeactivationReason.left_groups
        plan.deactivations.append(Deactivate(current.id, entry.stable_id, reason))
        changed = True
    elif not current.active and wanted:
        plan.reactivations.append(Reactivate(current.id, entry.stable_id))
        changed = True
    if not changed:
        plan.unchanged += 1
