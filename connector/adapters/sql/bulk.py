"""Set operations on the store for a directory run (the ``DirectoryStore`` port).

A directory run plans a bounded chunk of entries at a time and applies its changes in
batches: here each read is one statement for the whole chunk (``IN`` lists of at most
:data:`CHUNK` values) and each kind of write one ``executemany`` for the whole batch,
staged through :meth:`SqlUnitOfWork.write` so that they all run in the unit of work's
one short write transaction at ``commit``.

The seller rules are checked by the use cases before anything is staged; what can only
be known under the write lock is checked here, by the statements themselves: a user
saved meanwhile fails its versioned UPDATE (``VersionMismatch``), an address taken
meanwhile fails its claim (``Uniqueness``), and the whole batch is then rolled back.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Result, and_, bindparam, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from connector.adapters.sql.repositories import (
    Statements,
    address_claim_statement,
    audit,
    chunks,
    emails,
    memberships,
    outbox,
    permission_sets,
    recipient_rows,
    recipients,
    set_to_domain,
    user_columns,
    user_to_domain,
    users,
)
from connector.adapters.sql.tables import DirectoryGroupMemberRow, DirectoryLinkRow
from connector.domain.addresses import AddressClaim, AddressFlag, HeldAddress
from connector.domain.errors import Uniqueness, VersionMismatch
from connector.domain.model import PermissionSet, Role, SellerUser, utcnow
from connector.ports.directory import Membership, StoredUser
from connector.ports.store import AuditEvent, OutboxEntry

links = DirectoryLinkRow.__table__
group_members = DirectoryGroupMemberRow.__table__

CHUNK = 500
"""Values per IN list (SQLite accepts 32,766 bound parameters per statement)."""

_VISIBLE = users.c.deleted.is_(False)

# -- Reads --------------------------------------------------------------------------------

_LINKED_USERS = (
    select(users, links.c.stable_id)
    .join(links, links.c.user_id == users.c.id)
    .where(
        links.c.source_id == bindparam("source"),
        links.c.stable_id.in_(bindparam("ids", expanding=True)),
        users.c.seller_id == bindparam("seller"),
        _VISIBLE,
    )
)
_HOLDER_IDS = (
    select(emails.c.user_id)
    .join(users, users.c.id == emails.c.user_id)
    .where(
        emails.c.email_key.in_(bindparam("keys", expanding=True)),
        users.c.seller_id == bindparam("seller"),
        _VISIBLE,
    )
)
_USERS_WITH_LINK = (
    select(users, links.c.stable_id)
    .outerjoin(links, and_(links.c.user_id == users.c.id, links.c.source_id == bindparam("source")))
    .where(users.c.id.in_(bindparam("ids", expanding=True)))
)
_SET_NAMES_OF_USERS = (
    select(memberships.c.user_id, permission_sets.c.display_name)
    .join(permission_sets, permission_sets.c.id == memberships.c.permission_set_id)
    .where(memberships.c.user_id.in_(bindparam("ids", expanding=True)))
)
_ACTIVE_LINKED = (
    links.join(users, users.c.id == links.c.user_id),
    (
        links.c.source_id == bindparam("source"),
        links.c.seller_id == bindparam("seller"),
        users.c.active.is_(True),
        users.c.role == Role.secondary.value,
        _VISIBLE,
    ),
)
_COUNT_ACTIVE_LINKED = select(func.count()).select_from(_ACTIVE_LINKED[0]).where(*_ACTIVE_LINKED[1])
_PAGE_ACTIVE_LINKED = (
    select(links.c.stable_id, links.c.user_id)
    .select_from(_ACTIVE_LINKED[0])
    .where(*_ACTIVE_LINKED[1], links.c.stable_id > bindparam("after"))
    .order_by(links.c.stable_id)
    .limit(bindparam("limit"))
)
_PAGE_HOLDERS = (
    select(links.c.stable_id)
    .distinct()
    .join(users, users.c.id == links.c.user_id)
    .join(memberships, memberships.c.user_id == links.c.user_id)
    .where(
        links.c.source_id == bindparam("source"),
        links.c.seller_id == bindparam("seller"),
        memberships.c.permission_set_id.in_(bindparam("sets", expanding=True)),
        links.c.stable_id > bindparam("after"),
        _VISIBLE,
    )
    .order_by(links.c.stable_id)
    .limit(bindparam("limit"))
)
_LINKS_OF_USERS = select(links.c.user_id, links.c.stable_id).where(
    links.c.source_id == bindparam("source"),
    links.c.user_id.in_(bindparam("ids", expanding=True)),
)
_LINKS_OF_ENTRIES = select(links.c.stable_id, links.c.user_id).where(
    links.c.source_id == bindparam("source"),
    links.c.stable_id.in_(bindparam("ids", expanding=True)),
)
_USERS_BY_NAME = select(users).where(
    users.c.seller_id == bindparam("seller"),
    users.c.user_name_key.in_(bindparam("keys", expanding=True)),
)
_ADDRESSES_OF = select(
    emails.c.user_id, emails.c.email_key, emails.c.current, emails.c.released_at.is_not(None)
).where(emails.c.user_id.in_(bindparam("ids", expanding=True)))
_SETS_NAMED = select(permission_sets).where(
    permission_sets.c.seller_id == bindparam("seller"),
    permission_sets.c.display_name_key.in_(bindparam("keys", expanding=True)),
)
_MEMBERSHIPS = select(memberships.c.permission_set_id, memberships.c.user_id).where(
    memberships.c.user_id.in_(bindparam("ids", expanding=True)),
    memberships.c.permission_set_id.in_(bindparam("sets", expanding=True)),
)
_LAST_POSITIONS = (
    select(memberships.c.permission_set_id, func.max(memberships.c.position))
    .where(memberships.c.permission_set_id.in_(bindparam("sets", expanding=True)))
    .group_by(memberships.c.permission_set_id)
)

# -- Writes -------------------------------------------------------------------------------

_USER_STATE = list(user_columns(SellerUser("", "", "", Role.secondary)))
_INSERT_USERS = insert(users)
_SAVE_USERS = (
    update(users)
    .where(users.c.id == bindparam("w_id"), users.c.version == bindparam("w_version"))
    .values(version=bindparam("w_next"), **{c: bindparam(f"v_{c}") for c in _USER_STATE})
)
_FLAG_ADDRESS = (
    update(emails)
    .where(emails.c.email_key == bindparam("w_key"), emails.c.user_id == bindparam("w_user"))
    .values(current=bindparam("w_current"), released_at=None)
)
_INSERT_LINKS = insert(links)
_REMOVE_MEMBERSHIP = delete(memberships).where(
    memberships.c.permission_set_id == bindparam("w_set"),
    memberships.c.user_id == bindparam("w_user"),
)
_TOUCH_SETS = (
    update(permission_sets)
    .where(permission_sets.c.id == bindparam("w_id"))
    .values(version=permission_sets.c.version + 1, updated_at=bindparam("w_at"))
)
_GROUP_MEMBERS = select(group_members.c.group_key, group_members.c.member_key).where(
    group_members.c.source_id == bindparam("source"),
    group_members.c.group_key.in_(bindparam("keys", expanding=True)),
)
_FORGET_GROUP = delete(group_members).where(
    group_members.c.source_id == bindparam("w_source"),
    group_members.c.group_key == bindparam("w_group"),
)
_FORGET_GROUPS = delete(group_members).where(group_members.c.source_id == bindparam("source"))
_INSERT_GROUP_MEMBERS = insert(group_members)
_INSERT_AUDIT = insert(audit)
_INSERT_OUTBOX = insert(outbox)


def _insert_for(dialect: str) -> Any:
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


_CLAIMED = select(emails.c.email_key, emails.c.user_id).where(
    emails.c.email_key.in_(bindparam("keys", expanding=True))
)


@functools.cache
def _add_memberships(dialect: str) -> Any:
    """INSERT memberships; one a concurrent request added meanwhile is left as it is."""
    return _insert_for(dialect)(memberships).on_conflict_do_nothing(
        index_elements=["permission_set_id", "user_id"]
    )


@functools.cache
def _relink(dialect: str) -> Any:
    statement = _insert_for(dialect)(links).values(
        source_id=bindparam("source"),
        stable_id=bindparam("stable"),
        user_id=bindparam("user"),
        seller_id=bindparam("seller"),
        linked_at=bindparam("at"),
    )
    return statement.on_conflict_do_update(
        index_elements=["source_id", "stable_id"],
        set_={
            "user_id": statement.excluded.user_id,
            "seller_id": statement.excluded.seller_id,
            "linked_at": statement.excluded.linked_at,
        },
    )


_UNLINK_OTHER = delete(links).where(
    links.c.source_id == bindparam("source"),
    links.c.user_id == bindparam("user"),
    links.c.stable_id != bindparam("stable"),
)


def _all_claimed(wanted: dict[str, str]) -> Any:
    """Check, under the write lock, that every claimed address is now its user's."""

    def check(result: Result[Any]) -> None:
        taken = sorted(k for k, user_id in result.all() if wanted.get(k) != user_id)
        if taken:
            raise Uniqueness(f"The email address {taken[0]} was taken by another user meanwhile.")

    return check


class SqlDirectoryStore:
    """The ``DirectoryStore`` port on the SQL store, inside one unit of work."""

    def __init__(self, uow: Statements) -> None:
        self.uow = uow

    # -- reads for planning ----------------------------------------------------------

    def _with_sets(self, found: list[tuple[SellerUser, str | None]]) -> list[StoredUser]:
        names: dict[str, list[str]] = {}
        ids = [u.id for u, _ in found]
        for chunk in chunks(ids, CHUNK):
            for user_id, name in self.uow.read(_SET_NAMES_OF_USERS, {"ids": chunk}):
                names.setdefault(user_id, []).append(name)
        return [StoredUser(u, s, tuple(names.get(u.id, ()))) for u, s in found]

    def linked_users(
        self, source_id: str, seller_id: str, stable_ids: Sequence[str]
    ) -> list[StoredUser]:
        found: list[tuple[SellerUser, str | None]] = []
        for chunk in chunks(list(stable_ids), CHUNK):
            rows = self.uow.read(
                _LINKED_USERS, {"source": source_id, "seller": seller_id, "ids": chunk}
            )
            found += [(user_to_domain(r), r.stable_id) for r in rows]
        return self._with_sets(found)

    def address_holders(
        self, source_id: str, seller_id: str, email_keys: Sequence[str]
    ) -> list[StoredUser]:
        ids: set[str] = set()
        for chunk in chunks(sorted(set(email_keys)), CHUNK):
            ids.update(self.uow.read(_HOLDER_IDS, {"keys": chunk, "seller": seller_id}).scalars())
        found: list[tuple[SellerUser, str | None]] = []
        for chunk in chunks(sorted(ids), CHUNK):
            rows = self.uow.read(_USERS_WITH_LINK, {"source": source_id, "ids": chunk})
            found += [(user_to_domain(r), r.stable_id) for r in rows]
        return self._with_sets(found)

    def count_active_linked(self, source_id: str, seller_id: str) -> int:
        return int(
            self.uow.read(
                _COUNT_ACTIVE_LINKED, {"source": source_id, "seller": seller_id}
            ).scalar_one()
        )

    def active_linked(
        self, source_id: str, seller_id: str, *, after: str, limit: int
    ) -> list[tuple[str, str]]:
        rows = self.uow.read(
            _PAGE_ACTIVE_LINKED,
            {"source": source_id, "seller": seller_id, "after": after, "limit": limit},
        )
        return [(stable_id, user_id) for stable_id, user_id in rows]

    def linked_holders(
        self,
        source_id: str,
        seller_id: str,
        permission_set_ids: Sequence[str],
        *,
        after: str,
        limit: int,
    ) -> list[str]:
        if not permission_set_ids:
            return []
        return list(
            self.uow.read(
                _PAGE_HOLDERS,
                {
                    "source": source_id,
                    "seller": seller_id,
                    "sets": list(permission_set_ids),
                    "after": after,
                    "limit": limit,
                },
            ).scalars()
        )

    # -- reads for a batch -----------------------------------------------------------

    def links_of_users(self, source_id: str, user_ids: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for chunk in chunks(sorted(set(user_ids)), CHUNK):
            found.update(
                (u, s)
                for u, s in self.uow.read(_LINKS_OF_USERS, {"source": source_id, "ids": chunk})
            )
        return found

    def links_of_entries(self, source_id: str, stable_ids: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for chunk in chunks(sorted(set(stable_ids)), CHUNK):
            found.update(
                (s, u)
                for s, u in self.uow.read(_LINKS_OF_ENTRIES, {"source": source_id, "ids": chunk})
            )
        return found

    def users_by_name(self, seller_id: str, user_name_keys: Sequence[str]) -> list[SellerUser]:
        found: list[SellerUser] = []
        for chunk in chunks(sorted(set(user_name_keys)), CHUNK):
            rows = self.uow.read(_USERS_BY_NAME, {"seller": seller_id, "keys": chunk})
            found += [user_to_domain(r) for r in rows]
        return found

    def addresses_of(self, user_ids: Sequence[str]) -> dict[str, list[HeldAddress]]:
        held: dict[str, list[HeldAddress]] = {}
        for chunk in chunks(sorted(set(user_ids)), CHUNK):
            for user_id, key, current, released in self.uow.read(_ADDRESSES_OF, {"ids": chunk}):
                held.setdefault(user_id, []).append(HeldAddress(key, bool(current), bool(released)))
        return held

    def permission_sets_named(
        self, seller_id: str, display_name_keys: Sequence[str]
    ) -> list[PermissionSet]:
        found = []
        for chunk in chunks(sorted(set(display_name_keys)), CHUNK):
            for row in self.uow.read(_SETS_NAMED, {"seller": seller_id, "keys": chunk}):
                found.append(set_to_domain(row, []))
        return found

    def memberships(
        self, user_ids: Sequence[str], permission_set_ids: Sequence[str]
    ) -> set[tuple[str, str]]:
        sets = sorted(set(permission_set_ids))
        found: set[tuple[str, str]] = set()
        if not sets:
            return found
        for chunk in chunks(sorted(set(user_ids)), CHUNK):
            found.update(
                (s, u) for s, u in self.uow.read(_MEMBERSHIPS, {"ids": chunk, "sets": sets})
            )
        return found

    def next_positions(self, permission_set_ids: Sequence[str]) -> dict[str, int]:
        sets = sorted(set(permission_set_ids))
        found = dict.fromkeys(sets, 0)
        if sets:
            for set_id, last in self.uow.read(_LAST_POSITIONS, {"sets": sets}):
                found[set_id] = 0 if last is None else int(last) + 1
        return found

    # -- writes ----------------------------------------------------------------------

    def add_users(self, new_users: Sequence[SellerUser]) -> None:
        if not new_users:
            return
        self.uow.write(
            _INSERT_USERS,
            [
                {
                    "id": user.id,
                    "seller_id": user.seller_id,
                    "idp_id": user.idp_id,
                    "created_at": user.created_at,
                    "version": user.version,
                    **user_columns(user),
                }
                for user in new_users
            ],
        )
        self._index_recipients(new_users, new=True)

    def _index_recipients(self, batch: Sequence[SellerUser], *, new: bool) -> None:
        """The recipient index follows the batch's users, as each single save keeps it
        (``write_recipients``): a user deactivated by the directory receives nothing more."""
        if not new:
            for chunk in chunks([user.id for user in batch]):
                self.uow.write(delete(recipients).where(recipients.c.user_id.in_(chunk)))
        rows = [row for user in batch for row in recipient_rows(user)]
        if rows:
            self.uow.write(insert(recipients), rows)

    def save_users(self, changed: Sequence[SellerUser]) -> None:
        if not changed:
            return
        parameters = []
        for user in changed:
            columns = user_columns(user)
            row = {f"v_{c}": columns[c] for c in _USER_STATE}
            row.update(w_id=user.id, w_version=user.version, w_next=user.version + 1)
            parameters.append(row)
        self.uow.write(
            _SAVE_USERS,
            parameters,
            expected_rows=len(parameters),
            mismatch=lambda: VersionMismatch(
                "A user of this batch changed meanwhile: read it again and retry."
            ),
        )
        self._index_recipients(changed, new=False)

    def claim_addresses(self, claims: Sequence[AddressClaim]) -> None:
        if not claims:
            return
        self.uow.write(
            address_claim_statement(self.uow.dialect, returning=False),
            [
                {
                    "c_key": c.email_key,
                    "c_user": c.user_id,
                    "c_seller": c.seller_id,
                    "c_current": c.current,
                }
                for c in claims
            ],
        )
        wanted = {c.email_key: c.user_id for c in claims}
        for chunk in chunks(sorted(wanted), CHUNK):
            self.uow.write(
                _CLAIMED,
                {"keys": chunk},
                after=_all_claimed({k: wanted[k] for k in chunk}),
            )

    def flag_addresses(self, flags: Sequence[AddressFlag]) -> None:
        if flags:
            self.uow.write(
                _FLAG_ADDRESS,
                [
                    {"w_key": f.email_key, "w_user": f.user_id, "w_current": f.current}
                    for f in flags
                ],
            )

    def add_links(
        self, source_id: str, seller_id: str, pairs: Sequence[tuple[str, str]], at: dt.datetime
    ) -> None:
        if pairs:
            self.uow.write(
                _INSERT_LINKS,
                [
                    {
                        "source_id": source_id,
                        "stable_id": stable_id,
                        "user_id": user_id,
                        "seller_id": seller_id,
                        "linked_at": at,
                    }
                    for stable_id, user_id in pairs
                ],
            )

    def relink(
        self, source_id: str, seller_id: str, stable_id: str, user_id: str, at: dt.datetime
    ) -> None:
        keys = {"source": source_id, "stable": stable_id, "user": user_id}
        self.uow.write(_UNLINK_OTHER, keys)
        self.uow.write(_relink(self.uow.dialect), {**keys, "seller": seller_id, "at": at})

    def add_memberships(self, added: Sequence[Membership]) -> None:
        if added:
            self.uow.write(
                _add_memberships(self.uow.dialect),
                [
                    {
                        "permission_set_id": m.permission_set_id,
                        "user_id": m.user_id,
                        "position": m.position,
                    }
                    for m in added
                ],
            )

    def remove_memberships(self, removed: Sequence[Membership]) -> None:
        if removed:
            self.uow.write(
                _REMOVE_MEMBERSHIP,
                [{"w_set": m.permission_set_id, "w_user": m.user_id} for m in removed],
            )

    def touch_permission_sets(self, permission_set_ids: Sequence[str], at: dt.datetime) -> None:
        if permission_set_ids:
            self.uow.write(_TOUCH_SETS, [{"w_id": i, "w_at": at} for i in permission_set_ids])

    def append_audit(self, events: Sequence[AuditEvent]) -> None:
        if events:
            now = utcnow()
            self.uow.write(
                _INSERT_AUDIT,
                [
                    {
                        "seller_id": e.seller_id,
                        "at": e.at or now,
                        "actor": e.actor,
                        "action": e.action,
                        "target": e.target,
                        "changes": e.changes,
                    }
                    for e in events
                ],
            )

    def add_outbox(self, entries: Sequence[OutboxEntry]) -> None:
        if entries:
            now = utcnow()
            self.uow.write(
                _INSERT_OUTBOX,
                [
                    {
                        "seller_id": e.seller_id,
                        "topic": e.topic,
                        "aggregate_id": e.aggregate_id,
                        "payload": e.payload,
                        "state": "pending",
                        "attempts": 0,
                        "next_attempt_at": e.next_attempt_at or now,
                        "created_at": now,
                    }
                    for e in entries
                ],
            )

    # -- the groups' members as of the source's marker ------------------------------------

    def group_members(self, source_id: str, group_keys: Sequence[str]) -> dict[str, frozenset[str]]:
        found: dict[str, set[str]] = {}
        for chunk in chunks(sorted(set(group_keys)), CHUNK):
            for group, member in self.uow.read(
                _GROUP_MEMBERS, {"source": source_id, "keys": chunk}
            ):
                members = found.setdefault(group, set())
                if member:
                    members.add(member)
        return {group: frozenset(members) for group, members in found.items()}

    def replace_group_members(
        self,
        source_id: str,
        lists: Iterable[tuple[str, frozenset[str]]],
        *,
        every_group: bool,
    ) -> None:
        if every_group:
            self.uow.write(_FORGET_GROUPS, {"source": source_id})
        else:
            lists = list(lists)  # a delta's changed groups: a few
            if lists:
                self.uow.write(
                    _FORGET_GROUP, [{"w_source": source_id, "w_group": g} for g, _ in lists]
                )
        rows: list[dict[str, str]] = []
        for group, members in lists:
            rows.append({"source_id": source_id, "group_key": group, "member_key": ""})
            rows += [{"source_id": source_id, "group_key": group, "member_key": m} for m in members]
            if len(rows) >= 5 * CHUNK:
                self.uow.write(_INSERT_GROUP_MEMBERS, rows)
                rows = []
        if rows:
            self.uow.write(_INSERT_GROUP_MEMBERS, rows)
