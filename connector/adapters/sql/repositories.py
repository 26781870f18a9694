"""Repositories: domain objects in and out of the SQL tables.

SQLAlchemy Core with statements built once (their compiled form is cached): reads run in
the unit of work's snapshot, writes are staged through :meth:`SqlUnitOfWork.write` and run
in its short write transaction. Versioned UPDATEs (``WHERE version = :read``) make a change
made meanwhile by another request a :class:`VersionMismatch` instead of a lost update.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from sqlalchemy import (
    Result,
    bindparam,
    delete,
    func,
    insert,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from connector.adapters.sql.tables import (
    PENDING,
    AuditRow,
    AuthFailureRow,
    ChangeFeedRow,
    EmailRow,
    MarkerRow,
    MembershipRow,
    NotificationRecipientRow,
    OperatorRow,
    OutboxRow,
    PermissionSetRow,
    PrimaryChangeRow,
    SellerRow,
    TokenRow,
    UserRow,
)
from connector.domain.addresses import HeldAddress, address_changes
from connector.domain.catalogue import Level
from connector.domain.errors import Uniqueness, VersionMismatch
from connector.domain.model import (
    Email,
    Invitation,
    InvitationState,
    PermissionSet,
    Plan,
    Role,
    SellerAccount,
    SellerUser,
    email_key,
    identity_key,
    utcnow,
)
from connector.ports.store import (
    ApiToken,
    AuditEvent,
    EmailOwner,
    FeedEntry,
    OperatorCredential,
    OutboxEntry,
    PrimaryChange,
    Recipient,
)


class Statements(Protocol):
    """What a repository needs of its unit of work (``database.SqlUnitOfWork``)."""

    dialect: str
    immediate: bool

    def read(self, statement: Any, parameters: Any = None) -> Result[Any]: ...

    def write(
        self,
        statement: Any,
        parameters: Any = None,
        *,
        expected_rows: int | None = None,
        mismatch: Callable[[], Exception] | None = None,
        after: Callable[[Result[Any]], None] | None = None,
    ) -> None: ...


def _hold_row(uow: Statements, table: Any, seller_id: str, row_id: str) -> None:
    """Keep the other writers of one row waiting until ``uow`` ends. SQLite's immediate
    transaction already keeps every other writer out; PostgreSQL locks the row."""
    if not uow.immediate:
        raise RuntimeError("holding a row needs an immediate unit of work")
    if uow.dialect == "postgresql":
        uow.read(
            select(table.c.id)
            .where(table.c.id == row_id, table.c.seller_id == seller_id)
            .with_for_update()
        )


sellers = SellerRow.__table__
tokens = TokenRow.__table__
users = UserRow.__table__
emails = EmailRow.__table__
permission_sets = PermissionSetRow.__table__
memberships = MembershipRow.__table__
audit = AuditRow.__table__
outbox = OutboxRow.__table__
markers = MarkerRow.__table__
primary_changes = PrimaryChangeRow.__table__
auth_failures = AuthFailureRow.__table__


def chunks(values: list[str], size: int = 500) -> Iterator[list[str]]:
    """``values`` in slices small enough for an IN list."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


def upsert(dialect: str, table: Any, values: dict[str, Any], keys: list[str]) -> Any:
    """INSERT, or UPDATE the row with the same ``keys`` (SQLite and PostgreSQL)."""
    build = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = build(table).values(**values)
    changed = {k: statement.excluded[k] for k in values if k not in keys}
    return statement.on_conflict_do_update(index_elements=keys, set_=changed)


# -- Sellers ----------------------------------------------------------------------------

_SELLER_BY_ID = select(sellers).where(sellers.c.id == bindparam("id"))
_SELLER_BY_NAME = select(sellers).where(sellers.c.name_key == bindparam("key"))


def seller_to_domain(row: Any) -> SellerAccount:
    """A SellerAccount from its row."""
    return SellerAccount(
        id=row.id,
        name=row.name,
        plan=Plan(row.plan),
        partner_domains=list(row.partner_domains or []),
        created_at=row.created_at,
        primary_user_id=row.primary_user_id,
    )


def _seller_columns(seller: SellerAccount) -> dict[str, Any]:
    return {
        "name": seller.name,
        "name_key": identity_key(seller.name),
        "plan": seller.plan.value,
        "partner_domains": list(seller.partner_domains),
        "primary_user_id": seller.primary_user_id,
    }


class SqlSellers:
    def __init__(self, uow: Statements) -> None:
        self.uow = uow

    def add(self, seller: SellerAccount) -> None:
        self.uow.write(
            insert(sellers).values(
                id=seller.id, created_at=seller.created_at, **_seller_columns(seller)
            )
        )

    def get(self, seller_id: str) -> SellerAccount | None:
        row = self.uow.read(_SELLER_BY_ID, {"id": seller_id}).first()
        return seller_to_domain(row) if row else None

    def get_by_name(self, name: str) -> SellerAccount | None:
        row = self.uow.read(_SELLER_BY_NAME, {"key": identity_key(name)}).first()
        return seller_to_domain(row) if row else None

    def list(self) -> list[SellerAccount]:
        rows = self.uow.read(select(sellers).order_by(sellers.c.name_key))
        return [seller_to_domain(r) for r in rows]

    def save(self, seller: SellerAccount) -> None:
        self.uow.write(
            update(sellers).where(sellers.c.id == seller.id).values(**_seller_columns(seller))
        )


# -- Users ------------------------------------------------------------------------------


def user_to_domain(row: Any) -> SellerUser:
    """A SellerUser from its row."""
    invitation = None
    if row.invitation_state:
        invitation = Invitation(
            state=InvitationState(row.invitation_state),
            sent_at=row.invitation_sent_at,
            expires_at=row.invitation_expires_at,
        )
    return SellerUser(
        id=row.id,
        seller_id=row.seller_id,
        user_name=row.user_name,
        role=Role(row.role),
        emails=[Email(**e) for e in row.emails or []],
        given_name=row.given_name,
        family_name=row.family_name,
        display_name=row.display_name,
        external_id=row.external_id,
        active=row.active,
        deleted=row.deleted,
        permissions={k: Level(v) for k, v in (row.permissions or {}).items()},
        notifications=list(row.notifications or []),
        profile=dict(row.profile or {}),
        invitation=invitation,
        idp_id=row.idp_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
        last_login_at=row.last_login_at,
        version=row.version,
    )


def user_columns(user: SellerUser) -> dict[str, Any]:
    """The columns a user's state is written to (everything but id, seller and version)."""
    invitation = user.invitation
    return {
        "user_name": user.user_name,
        "user_name_key": identity_key(user.user_name),
        "external_id": user.external_id,
        "role": user.role.value,
        "active": user.active,
        "deleted": user.deleted,
        "given_name": user.given_name,
        "family_name": user.family_name,
        "display_name": user.display_name,
        "emails": [
            {k: v for k, v in vars(e).items() if v is not None and v is not False}
            for e in user.emails
        ],
        "permissions": {k: v.value for k, v in user.permissions.items()},
        "notifications": list(user.notifications),
        "profile": user.profile,
        "invitation_state": invitation.state.value if invitation else None,
        "invitation_sent_at": invitation.sent_at if invitation else None,
        "invitation_expires_at": invitation.expires_at if invitation else None,
        "updated_at": user.updated_at,
        "last_login_at": user.last_login_at,
    }


_USER_STATE = list(user_columns(SellerUser("", "", "", Role.secondary)))
_USER_BY_ID = select(users).where(
    users.c.id == bindparam("id"), users.c.seller_id == bindparam("seller")
)
_VISIBLE_USER_BY_ID = _USER_BY_ID.where(users.c.deleted.is_(False))
_USER_BY_NAME = select(users).where(
    users.c.seller_id == bindparam("seller"), users.c.user_name_key == bindparam("key")
)
_SAVE_USER = (
    update(users)
    .where(users.c.id == bindparam("w_id"), users.c.version == bindparam("w_version"))
    .values(version=bindparam("w_next"), **{c: bindparam(f"v_{c}") for c in _USER_STATE})
)
_PENDING_INVITATIONS = (
    select(func.count())
    .select_from(users)
    .where(
        users.c.seller_id == bindparam("seller"),
        PENDING,
        users.c.invitation_expires_at > bindparam("now"),
    )
)
_EXPIRED_INVITATIONS = (
    select(users)
    .where(
        PENDING,
        users.c.invitation_expires_at <= bindparam("now"),
        users.c.last_login_at.is_(None),
        users.c.active.is_(True),
    )
    .order_by(users.c.invitation_expires_at)
    .limit(bindparam("limit"))
)
_INSERT_USER = insert(users)
_USERS_BY_IDS = select(users).where(users.c.id.in_(bindparam("ids", expanding=True)))
_USER_IDS = select(users.c.id, users.c.seller_id, users.c.deleted).where(
    users.c.id.in_(bindparam("ids", expanding=True))
)
_EMAIL_OWNERS = (
    select(
        emails.c.email_key,
        emails.c.user_id,
        emails.c.seller_id,
        users.c.deleted,
        emails.c.released_at.is_not(None),
    )
    .join(users, users.c.id == emails.c.user_id)
    .where(emails.c.email_key.in_(bindparam("keys", expanding=True)))
)
_EMAILS_OF_USER = select(
    emails.c.email_key, emails.c.current, emails.c.released_at.is_not(None)
).where(emails.c.user_id == bindparam("user"))
_SET_EMAIL_CURRENT = (
    update(emails)
    .where(emails.c.email_key == bindparam("w_key"), emails.c.user_id == bindparam("w_user"))
    .values(current=bindparam("w_current"), released_at=None)
)


def _claimed(result: Result[Any], key: str) -> None:
    if result.first() is None:
        raise Uniqueness(f"The email address {key} was taken by another user meanwhile.")


@functools.cache
def address_claim_statement(dialect: str, returning: bool = True) -> Any:
    """INSERT an address, or take it over from a holder that released it (one held by anyone
    else is left as it is).

    ``returning``: the row written comes back, which tells whether it was (drivers disagree
    on an upsert's rowcount); without it, SQLAlchemy sends many rows in one statement.
    """
    build = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = build(emails).values(
        email_key=bindparam("c_key"),
        user_id=bindparam("c_user"),
        seller_id=bindparam("c_seller"),
        current=bindparam("c_current"),
        released_at=None,
    )
    upsert = statement.on_conflict_do_update(
        index_elements=["email_key"],
        set_={
            "user_id": statement.excluded.user_id,
            "seller_id": statement.excluded.seller_id,
            "current": statement.excluded.current,
            "released_at": None,
        },
        where=emails.c.released_at.is_not(None),
    )
    return upsert.returning(emails.c.email_key) if returning else upsert


class SqlUsers:
    def __init__(self, uow: Statements) -> None:
        self.uow = uow
        # Users whose recipient rows this unit of work already wrote (its staged writes are
        # not in what it reads: their rows are rewritten whatever the read says).
        self._indexed: set[str] = set()

    def add(self, user: SellerUser) -> None:
        self.uow.write(
            _INSERT_USER,
            {
                "id": user.id,
                "seller_id": user.seller_id,
                # Only at creation: afterwards the outbox worker alone writes it, so that a
                # save from a stale read cannot clear it.
                "idp_id": user.idp_id,
                "created_at": user.created_at,
                "version": user.version,
                **user_columns(user),
            },
        )
        self._reserve_emails(user, held={})
        write_recipients(self.uow, user, new=True)
        self._indexed.add(user.id)

    def _reserve_emails(self, user: SellerUser, held: dict[str, HeldAddress] | None = None) -> None:
        """Write what saving ``user`` changes in its reserved addresses (``address_changes``:
        the brand-new rule is the table's key); a claim another user won meanwhile fails."""
        if held is None:
            held = {
                key: HeldAddress(key, bool(current), bool(released))
                for key, current, released in self.uow.read(_EMAILS_OF_USER, {"user": user.id})
            }
        claims, flags = address_changes(user, held)
        for flag in flags:
            self.uow.write(
                _SET_EMAIL_CURRENT,
                {"w_key": flag.email_key, "w_user": user.id, "w_current": flag.current},
            )
        for claim in claims:
            self.uow.write(
                address_claim_statement(self.uow.dialect),
                {
                    "c_key": claim.email_key,
                    "c_user": user.id,
                    "c_seller": user.seller_id,
                    "c_current": claim.current,
                },
                after=lambda result, key=claim.email_key: _claimed(result, key),  # type: ignore[misc]
            )

    def get(
        self, seller_id: str, user_id: str, *, include_deleted: bool = False
    ) -> SellerUser | None:
        statement = _USER_BY_ID if include_deleted else _VISIBLE_USER_BY_ID
        row = self.uow.read(statement, {"id": user_id, "seller": seller_id}).first()
        return user_to_domain(row) if row else None

    def get_with_sets(
        self, seller_id: str, user_id: str
    ) -> tuple[SellerUser, list[PermissionSet]] | None:
        """A visible user and the permission sets it belongs to (by name, without their
        members or profile), read together."""
        rows = self.uow.read(_USER_WITH_SETS, {"id": user_id, "seller": seller_id}).all()
        if not rows:
            return None
        sets = [
            set_to_domain(_SetColumns(row), [], profile={})
            for row in rows
            if row._mapping[_SET_PREFIX + "id"] is not None
        ]
        return user_to_domain(rows[0]), sets

    def hold(self, seller_id: str, user_id: str) -> None:
        """Make other writers of this user wait until this unit of work ends."""
        _hold_row(self.uow, users, seller_id, user_id)

    def get_many(self, seller_id: str, user_ids: Iterable[str]) -> list[SellerUser]:
        ids = list(user_ids)
        found: dict[str, SellerUser] = {}
        for chunk in chunks(ids):
            # By primary key only, the seller checked on each row: with the seller in the
            # WHERE clause, SQLite may pick the seller's index and scan all its users.
            for row in self.uow.read(_USERS_BY_IDS, {"ids": chunk}):
                if row.seller_id == seller_id:
                    found[row.id] = user_to_domain(row)
        return [found[i] for i in ids if i in found]

    def ids_of(
        self, seller_id: str, user_ids: Iterable[str], *, visible_only: bool = True
    ) -> set[str]:
        found: set[str] = set()
        for chunk in chunks(list(dict.fromkeys(user_ids))):
            # By primary key only, as get_many.
            for user_id, row_seller, deleted in self.uow.read(_USER_IDS, {"ids": chunk}):
                if row_seller == seller_id and not (visible_only and deleted):
                    found.add(user_id)
        return found

    def by_user_name(self, seller_id: str, user_name_key: str) -> SellerUser | None:
        row = self.uow.read(_USER_BY_NAME, {"seller": seller_id, "key": user_name_key}).first()
        return user_to_domain(row) if row else None

    def by_external_id(self, seller_id: str, external_id: str) -> SellerUser | None:
        row = self.uow.read(
            select(users).where(
                users.c.seller_id == seller_id,
                users.c.external_id == external_id,
                users.c.deleted.is_(False),
            )
        ).first()
        return user_to_domain(row) if row else None

    def list(self, seller_id: str, *, include_deleted: bool = False) -> list[SellerUser]:
        query = (
            select(users)
            .where(users.c.seller_id == seller_id)
            .order_by(users.c.created_at, users.c.id)
        )
        if not include_deleted:
            query = query.where(users.c.deleted.is_(False))
        return [user_to_domain(r) for r in self.uow.read(query)]

    def save(self, user: SellerUser, *, expected_version: int | None = None) -> None:
        """Write the user back, bumping its version.

        :raises VersionMismatch: (at commit) when the stored version is not
            ``expected_version`` (by default the version the user was read at).
        """
        current = expected_version if expected_version is not None else user.version
        columns = user_columns(user)
        parameters = {f"v_{c}": columns[c] for c in _USER_STATE}
        parameters.update(w_id=user.id, w_version=current, w_next=current + 1)
        self.uow.write(
            _SAVE_USER,
            parameters,
            expected_rows=1,
            mismatch=lambda: VersionMismatch(
                f"User {user.id} changed since version {current}: read it again and retry."
            ),
        )
        user.version = current + 1
        self._reserve_emails(user)
        write_recipients(self.uow, user, rewrite=user.id in self._indexed)
        self._indexed.add(user.id)

    def record_login(self, seller_id: str, user_id: str, at: dt.datetime) -> None:
        """Set ``last_login_at`` to ``at`` when it is later, WITHOUT bumping the version: a
        login is not a change of the SCIM resource (its ETag must not move under a client)."""
        self.uow.write(
            update(users)
            .where(
                users.c.id == user_id,
                users.c.seller_id == seller_id,
                or_(users.c.last_login_at.is_(None), users.c.last_login_at < at),
            )
            .values(last_login_at=at)
        )

    def set_provider_id(self, user_id: str, provider_id: str) -> None:
        """Remember the identity provider's id of a user (bookkeeping: no new version)."""
        self.uow.write(
            update(users)
            .where(
                users.c.id == user_id,
                or_(users.c.idp_id.is_(None), users.c.idp_id != provider_id),
            )
            .values(idp_id=provider_id)
        )

    def find_by_provider_id(self, provider_user_id: str) -> tuple[str, str] | None:
        """(seller id, user id) of the user whose stored provider id this is."""
        row = self.uow.read(
            select(users.c.seller_id, users.c.id).where(users.c.idp_id == provider_user_id)
        ).first()
        return (str(row[0]), str(row[1])) if row else None

    def email_owners(self, email_keys: Iterable[str]) -> list[EmailOwner]:
        keys = sorted({email_key(k) for k in email_keys})
        if not keys:
            return []
        rows = self.uow.read(_EMAIL_OWNERS, {"keys": keys})
        return [EmailOwner(k, u, s, d, bool(r)) for k, u, s, d, r in rows]

    def release_addresses(self, user_id: str, at: dt.datetime) -> None:
        """Give up the user's addresses: another user of any seller may take them."""
        self.uow.write(
            update(emails)
            .where(emails.c.user_id == user_id, emails.c.released_at.is_(None))
            .values(released_at=at, current=False)
        )

    def pending_invitations(self, seller_id: str, now: dt.datetime) -> int:
        """How many of the seller's users have a pending invitation that has not expired."""
        return int(
            self.uow.read(_PENDING_INVITATIONS, {"seller": seller_id, "now": now}).scalar_one()
        )

    def expired_invitations(self, now: dt.datetime, limit: int) -> list[SellerUser]:
        """Active users whose invitation expired unaccepted, never having logged in."""
        rows = self.uow.read(_EXPIRED_INVITATIONS, {"now": now, "limit": limit})
        return [user_to_domain(r) for r in rows]

    def count(self, seller_id: str) -> int:
        """How many visible users the seller has."""
        return int(
            self.uow.read(
                select(func.count())
                .select_from(users)
                .where(users.c.seller_id == seller_id, users.c.deleted.is_(False))
            ).scalar_one()
        )


# -- Permission sets ----------------------------------------------------------------------

_MEMBERSHIPS_OF_USERS = select(memberships.c.user_id, memberships.c.permission_set_id).where(
    memberships.c.user_id.in_(bindparam("ids", expanding=True))
)
# What a user's groups need (no profile, no members): a page of 100 users reads each set once.
_SET_HEAD_COLUMNS = (
    permission_sets.c.id,
    permission_sets.c.seller_id,
    permission_sets.c.display_name,
    permission_sets.c.display_name_key,
    permission_sets.c.external_id,
    permission_sets.c.permissions,
    permission_sets.c.created_at,
    permission_sets.c.updated_at,
    permission_sets.c.version,
)
_SET_HEADS = select(*_SET_HEAD_COLUMNS).where(
    permission_sets.c.id.in_(bindparam("ids", expanding=True))
)
# One user's groups in one statement (a GET, a PATCH's read): no expanding IN to compile.
_SETS_OF_USER = (
    select(*_SET_HEAD_COLUMNS)
    .select_from(
        memberships.join(permission_sets, memberships.c.permission_set_id == permission_sets.c.id)
    )
    .where(memberships.c.user_id == bindparam("user"))
    .order_by(permission_sets.c.display_name_key)
)
_SETS_BY_IDS = select(permission_sets).where(
    permission_sets.c.id.in_(bindparam("ids", expanding=True))
)
_MEMBERS_OF_SETS = (
    select(memberships.c.permission_set_id, memberships.c.user_id)
    .where(memberships.c.permission_set_id.in_(bindparam("ids", expanding=True)))
    .order_by(memberships.c.position, memberships.c.user_id)
)
_SET_BY_ID = select(permission_sets).where(
    permission_sets.c.id == bindparam("id"), permission_sets.c.seller_id == bindparam("seller")
)
_SET_BY_NAME = select(permission_sets).where(
    permission_sets.c.seller_id == bindparam("seller"),
    permission_sets.c.display_name_key == bindparam("key"),
)
_MEMBERS_OF = (
    select(memberships.c.user_id)
    .where(memberships.c.permission_set_id == bindparam("set"))
    .order_by(memberships.c.position, memberships.c.user_id)
)
_STORED_MEMBERS = select(memberships.c.user_id, memberships.c.position).where(
    memberships.c.permission_set_id == bindparam("set")
)
_MOVE_MEMBER = (
    update(memberships)
    .where(
        memberships.c.permission_set_id == bindparam("w_set"),
        memberships.c.user_id == bindparam("w_user"),
    )
    .values(position=bindparam("w_position"))
)

# A user and its groups in one statement (a GET, a PATCH's read): one round trip on
# PostgreSQL instead of two. A user in no group comes back as one row of NULL set columns.
_SET_PREFIX = "set_"
_USER_WITH_SETS = (
    select(users, *(c.label(_SET_PREFIX + c.name) for c in _SET_HEAD_COLUMNS))
    .select_from(
        users.outerjoin(memberships, memberships.c.user_id == users.c.id).outerjoin(
            permission_sets, permission_sets.c.id == memberships.c.permission_set_id
        )
    )
    .where(
        users.c.id == bindparam("id"),
        users.c.seller_id == bindparam("seller"),
        users.c.deleted.is_(False),
    )
    .order_by(permission_sets.c.display_name_key)
)


class _SetColumns:
    """The set columns of a joined row, under their own names (for set_to_domain)."""

    __slots__ = ("_mapping",)

    def __init__(self, row: Any) -> None:
        self._mapping = row._mapping

    def __getattr__(self, name: str) -> Any:
        return self._mapping[_SET_PREFIX + name]


def _set_columns(permission_set: PermissionSet) -> dict[str, Any]:
    return {
        "display_name": permission_set.display_name,
        "display_name_key": identity_key(permission_set.display_name),
        "external_id": permission_set.external_id,
        "permissions": {k: v.value for k, v in permission_set.permissions.items()},
        "profile": permission_set.profile,
        "updated_at": permission_set.updated_at,
    }


def set_to_domain(
    row: Any, members: list[str], profile: dict[str, Any] | None = None
) -> PermissionSet:
    """A PermissionSet from its row and its members."""
    return PermissionSet(
        id=row.id,
        seller_id=row.seller_id,
        display_name=row.display_name,
        external_id=row.external_id,
        permissions={k: Level(v) for k, v in (row.permissions or {}).items()},
        member_ids=members,
        profile=dict(row.profile or {}) if profile is None else profile,
        created_at=row.created_at,
        updated_at=row.updated_at,
        version=row.version,
    )


class SqlPermissionSets:
    def __init__(self, uow: Statements) -> None:
        self.uow = uow

    def _members(self, set_id: str) -> list[str]:
        return list(self.uow.read(_MEMBERS_OF, {"set": set_id}).scalars())

    def add(self, permission_set: PermissionSet) -> None:
        self.uow.write(
            insert(permission_sets).values(
                id=permission_set.id,
                seller_id=permission_set.seller_id,
                created_at=permission_set.created_at,
                version=permission_set.version,
                **_set_columns(permission_set),
            )
        )
        self._write_members(permission_set, stored={})

    def _write_members(
        self, permission_set: PermissionSet, stored: dict[str, int] | None = None
    ) -> None:
        """Make the stored members (and their positions) those of ``permission_set``.

        Only the difference is written: adding 100 members to a group of thousands
        inserts 100 rows, rather than deleting and inserting them all.
        """
        set_id = permission_set.id
        if stored is None:
            stored = {u: p for u, p in self.uow.read(_STORED_MEMBERS, {"set": set_id})}
        wanted = {user_id: n for n, user_id in enumerate(dict.fromkeys(permission_set.member_ids))}
        gone = [user_id for user_id in stored if user_id not in wanted]
        for chunk in chunks(gone):
            self.uow.write(
                delete(memberships).where(
                    memberships.c.permission_set_id == set_id, memberships.c.user_id.in_(chunk)
                )
            )
        moved = [
            {"w_set": set_id, "w_user": user_id, "w_position": n}
            for user_id, n in wanted.items()
            if user_id in stored and stored[user_id] != n
        ]
        if moved:
            self.uow.write(_MOVE_MEMBER, moved)
        added = [
            {"permission_set_id": set_id, "user_id": user_id, "position": n}
            for user_id, n in wanted.items()
            if user_id not in stored
        ]
        if added:
            self.uow.write(insert(memberships), added)

    def get(self, seller_id: str, permission_set_id: str) -> PermissionSet | None:
        row = self.uow.read(_SET_BY_ID, {"id": permission_set_id, "seller": seller_id}).first()
        return set_to_domain(row, self._members(row.id)) if row else None

    def hold(self, seller_id: str, permission_set_id: str) -> None:
        """Make other writers of this set wait until this unit of work ends."""
        _hold_row(self.uow, permission_sets, seller_id, permission_set_id)

    def get_many(self, seller_id: str, ids: Iterable[str]) -> list[PermissionSet]:
        wanted = list(ids)
        rows: dict[str, Any] = {}
        for chunk in chunks(wanted):
            # By primary key only, as SqlUsers.get_many.
            for row in self.uow.read(
                select(permission_sets).where(permission_sets.c.id.in_(chunk))
            ):
                if row.seller_id == seller_id:
                    rows[row.id] = row
        members: dict[str, list[str]] = {i: [] for i in rows}
        for chunk in chunks(list(rows)):
            for set_id, user_id in self.uow.read(_MEMBERS_OF_SETS, {"ids": chunk}):
                members[set_id].append(user_id)
        return [set_to_domain(rows[i], members[i]) for i in wanted if i in rows]

    def by_display_name(self, seller_id: str, display_name: str) -> PermissionSet | None:
        row = self.uow.read(
            _SET_BY_NAME, {"seller": seller_id, "key": identity_key(display_name)}
        ).first()
        return set_to_domain(row, self._members(row.id)) if row else None

    def list(self, seller_id: str) -> list[PermissionSet]:
        ids = self.uow.read(
            select(permission_sets.c.id)
            .where(permission_sets.c.seller_id == seller_id)
            .order_by(permission_sets.c.display_name_key)
        ).scalars()
        return self.get_many(seller_id, list(ids))

    def of_user(self, user_id: str) -> list[PermissionSet]:
        """The permission sets of one user (by name), without their members or profile."""
        rows = self.uow.read(_SETS_OF_USER, {"user": user_id})
        return [set_to_domain(row, [], profile={}) for row in rows]

    def of_users(self, user_ids: Iterable[str]) -> dict[str, list[PermissionSet]]:
        """The permission sets of each user (by name), without their members or profile."""
        held: dict[str, list[str]] = {}
        for chunk in chunks(list(user_ids)):
            for user_id, set_id in self.uow.read(_MEMBERSHIPS_OF_USERS, {"ids": chunk}):
                held.setdefault(user_id, []).append(set_id)
        wanted = sorted({set_id for ids in held.values() for set_id in ids})
        sets: dict[str, tuple[str, PermissionSet]] = {}
        for chunk in chunks(wanted):
            for row in self.uow.read(_SET_HEADS, {"ids": chunk}):
                sets[row.id] = (row.display_name_key, set_to_domain(row, [], profile={}))
        return {
            user_id: [sets[i][1] for i in sorted(ids, key=lambda i: sets[i][0]) if i in sets]
            for user_id, ids in held.items()
            if any(i in sets for i in ids)
        }

    def save(self, permission_set: PermissionSet, *, expected_version: int | None = None) -> None:
        current = expected_version if expected_version is not None else permission_set.version
        self.uow.write(
            update(permission_sets)
            .where(permission_sets.c.id == permission_set.id, permission_sets.c.version == current)
            .values(version=current + 1, **_set_columns(permission_set)),
            expected_rows=1,
            mismatch=lambda: VersionMismatch(
                f"Group {permission_set.id} changed since version {current}: read it again "
                "and retry."
            ),
        )
        permission_set.version = current + 1
        self._write_members(permission_set)

    def delete(self, permission_set: PermissionSet) -> None:
        self.uow.write(
            delete(memberships).where(memberships.c.permission_set_id == permission_set.id)
        )
        self.uow.write(delete(permission_sets).where(permission_sets.c.id == permission_set.id))


# -- Tokens, audit, outbox, markers, primary changes --------------------------------------------

_INSERT_AUDIT = insert(audit)
_INSERT_OUTBOX = insert(outbox)
_TOKEN_BY_ID = select(tokens).where(tokens.c.id == bindparam("id"))


def _token(row: Any) -> ApiToken:
    return ApiToken(
        id=row.id,
        seller_id=row.seller_id,
        token_hash=row.token_hash,
        label=row.label,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )


class SqlTokens:
    def __init__(self, uow: Statements) -> None:
        self.uow = uow

    def add(self, token: ApiToken) -> None:
        self.uow.write(insert(tokens).values(**vars(token)))

    def get(self, token_id: str) -> ApiToken | None:
        row = self.uow.read(_TOKEN_BY_ID, {"id": token_id}).first()
        return _token(row) if row else None

    def list(self, seller_id: str) -> list[ApiToken]:
        rows = self.uow.read(
            select(tokens).where(tokens.c.seller_id == seller_id).order_by(tokens.c.created_at)
        )
        return [_token(r) for r in rows]

    def save(self, token: ApiToken) -> None:
        self.uow.write(
            update(tokens)
            .where(tokens.c.id == token.id)
            .values(revoked_at=token.revoked_at, last_used_at=token.last_used_at, label=token.label)
        )


def _audit_event(row: Any) -> AuditEvent:
    return AuditEvent(
        seller_id=row.seller_id,
        actor=row.actor,
        action=row.action,
        target=row.target,
        changes=row.changes,
        at=row.at,
        id=row.id,
    )


class SqlAudit:
    def __init__(self, uow: Statements) -> None:
        self.uow = uow

    def append(self, event: AuditEvent) -> None:
        self.uow.write(
            _INSERT_AUDIT,
            {
                "seller_id": event.seller_id,
                "at": event.at or utcnow(),
                "actor": event.actor,
                "action": event.action,
                "target": event.target,
                "changes": event.changes,
            },
        )

    def list(
        self, seller_id: str, limit: int | None = None, *, after: int | None = None
    ) -> list[AuditEvent]:
        """The seller's events, oldest first (after the event id ``after``)."""
        query = select(audit).where(audit.c.seller_id == seller_id).order_by(audit.c.id)
        if after is not None:
            query = query.where(audit.c.id > after)
        if limit:
            query = query.limit(limit)
        return [_audit_event(r) for r in self.uow.read(query)]


class SqlOutbox:
    def __init__(self, uow: Statements) -> None:
        self.uow = uow

    def add(self, entry: OutboxEntry) -> None:
        now = utcnow()
        self.uow.write(
            _INSERT_OUTBOX,
            {
                "seller_id": entry.seller_id,
                "topic": entry.topic,
                "aggregate_id": entry.aggregate_id,
                "payload": entry.payload,
                "state": "pending",
                "attempts": 0,
                "next_attempt_at": entry.next_attempt_at or now,
                "created_at": now,
            },
        )


class SqlMarkers:
    def __init__(self, uow: Statements) -> None:
        self.uow = uow

    def get(self, source: str) -> str | None:
        row = self.uow.read(select(markers.c.marker).where(markers.c.source == source)).first()
        return row[0] if row else None

    def set(self, source: str, marker: str | None) -> None:
        self.uow.write(
            upsert(
                self.uow.dialect,
                markers,
                {"source": source, "marker": marker, "updated_at": utcnow()},
                ["source"],
            )
        )

    def delete_before(self, prefix: str, before: dt.datetime) -> None:
        """Forget the markers of a kind (a source prefix) last set before ``before``."""
        self.uow.write(
            delete(markers).where(
                markers.c.source.startswith(prefix, autoescape=True),
                markers.c.updated_at < before,
            )
        )


class SqlPrimaryChanges:
    def __init__(self, uow: Statements) -> None:
        self.uow = uow

    def add(self, change: PrimaryChange) -> None:
        self.uow.write(
            insert(primary_changes).values(
                id=change.id,
                seller_id=change.seller_id,
                new_email=change.new_email,
                token_hash=change.token_hash,
                requested_at=change.requested_at,
                expires_at=change.expires_at,
            )
        )

    def by_token_hash(self, token_hash: str) -> PrimaryChange | None:
        row = self.uow.read(
            select(primary_changes).where(primary_changes.c.token_hash == token_hash)
        ).first()
        if row is None:
            return None
        return PrimaryChange(
            id=row.id,
            seller_id=row.seller_id,
            new_email=row.new_email,
            token_hash=row.token_hash,
            requested_at=row.requested_at,
            expires_at=row.expires_at,
            completed_at=row.completed_at,
        )

    def complete(self, change_id: str, at: dt.datetime) -> None:
        self.uow.write(
            update(primary_changes)
            .where(primary_changes.c.id == change_id, primary_changes.c.completed_at.is_(None))
            .values(completed_at=at),
            expected_rows=1,
            mismatch=lambda: VersionMismatch("This confirmation link was used meanwhile."),
        )


# -- The authentication brake ------------------------------------------------------------------


class SqlAuthFailures:
    """Failed authentications, shared by every worker and machine on the store."""

    def __init__(self, uow: Statements) -> None:
        self.uow = uow

    def record(self, client: str, token_id: str, at: dt.datetime) -> None:
        self.uow.write(insert(auth_failures).values(client=client, token_id=token_id, at=at))

    def count(self, client: str, since: dt.datetime, token_id: str | None = None) -> int:
        query = (
            select(func.count())
            .select_from(auth_failures)
            .where(auth_failures.c.client == client, auth_failures.c.at > since)
        )
        if token_id is not None:
            query = query.where(auth_failures.c.token_id == token_id)
        return int(self.uow.read(query).scalar_one())

    def oldest(
        self, client: str, since: dt.datetime, token_id: str | None = None
    ) -> dt.datetime | None:
        query = select(func.min(auth_failures.c.at)).where(
            auth_failures.c.client == client, auth_failures.c.at > since
        )
        if token_id is not None:
            query = query.where(auth_failures.c.token_id == token_id)
        return self.uow.read(query).scalar()

    def prune(self, before: dt.datetime) -> None:
        self.uow.write(delete(auth_failures).where(auth_failures.c.at <= before))


# -- Operators, notification recipients, the feed of changes -------------------------------------

operators = OperatorRow.__table__
recipients = NotificationRecipientRow.__table__
change_feed = ChangeFeedRow.__table__

EVERY_CATEGORY = "*"
"""The recipient index's category for the primary user, who receives every category."""


def _operator(row: Any) -> OperatorCredential:
    return OperatorCredential(
        id=row.id,
        name=row.name,
        scope=row.scope,
        secret_hash=row.secret_hash,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


class SqlOperators:
    """Operator credentials (hashed secrets, unique names compared case-insensitively)."""

    def __init__(self, uow: Statements) -> None:
        self.uow = uow

    def add(self, operator: OperatorCredential) -> None:
        self.uow.write(
            insert(operators).values(
                id=operator.id,
                name=operator.name,
                name_key=identity_key(operator.name),
                scope=operator.scope,
                secret_hash=operator.secret_hash,
                created_at=operator.created_at,
                revoked_at=operator.revoked_at,
            )
        )

    def get(self, operator_id: str) -> OperatorCredential | None:
        row = self.uow.read(select(operators).where(operators.c.id == operator_id)).first()
        return _operator(row) if row else None

    def by_name(self, name: str) -> OperatorCredential | None:
        row = self.uow.read(
            select(operators).where(operators.c.name_key == identity_key(name))
        ).first()
        return _operator(row) if row else None

    def list(self) -> list[OperatorCredential]:
        rows = self.uow.read(select(operators).order_by(operators.c.name_key))
        return [_operator(r) for r in rows]

    def save(self, operator: OperatorCredential) -> None:
        self.uow.write(
            update(operators)
            .where(operators.c.id == operator.id)
            .values(scope=operator.scope, revoked_at=operator.revoked_at)
        )

    def audit(self, after: int | None, limit: int) -> list[AuditEvent]:
        query = (
            select(audit)
            .where(audit.c.seller_id.is_(None), audit.c.id > (after or 0))
            .order_by(audit.c.id)
            .limit(limit)
        )
        return [_audit_event(r) for r in self.uow.read(query)]


def recipient_rows(user: SellerUser) -> list[dict[str, Any]]:
    """The rows of the recipient index a user stands for, as the seller rules say who
    receives what (:meth:`SellerUser.receives`): the primary one row for every category, an
    active secondary user one per category it subscribes to, anyone else none."""
    if not user.receives_notifications or user.primary_email is None:
        return []
    if user.is_primary:
        categories, sort_key = [EVERY_CATEGORY], "0:" + identity_key(user.user_name)
    else:
        categories = [c for c in user.notifications if user.receives(c)]
        sort_key = "1:" + identity_key(user.user_name)
    return [
        {
            "seller_id": user.seller_id,
            "category": category,
            "sort_key": sort_key[:320],
            "user_id": user.id,
            "email": user.primary_email,
            "role": user.role.value,
        }
        for category in dict.fromkeys(categories)
    ]


def rebuild_recipient_index(connection: Any) -> None:
    """Make the whole recipient index what the stored users say (for migrations): every
    row is written again from the users, in batches."""
    connection.execute(delete(recipients))
    rows: list[dict[str, Any]] = []
    for row in connection.execute(select(users).where(users.c.deleted.is_(False))):
        rows.extend(recipient_rows(user_to_domain(row)))
        if len(rows) >= 1000:
            connection.execute(insert(recipients), rows)
            rows = []
    if rows:
        connection.execute(insert(recipients), rows)


_DELETE_RECIPIENT = delete(recipients).where(recipients.c.user_id == bindparam("w_user"))
_RECIPIENTS_OF = (
    select(recipients.c.user_id, recipients.c.email, recipients.c.role)
    .where(
        recipients.c.seller_id == bindparam("seller"),
        recipients.c.category.in_([bindparam("category"), EVERY_CATEGORY]),
    )
    .order_by(recipients.c.sort_key, recipients.c.user_id)
)


_RECIPIENT_ROWS_OF_USER = select(
    recipients.c.seller_id,
    recipients.c.category,
    recipients.c.sort_key,
    recipients.c.user_id,
    recipients.c.email,
    recipients.c.role,
).where(recipients.c.user_id == bindparam("user"))


def write_recipients(
    uow: Statements, user: SellerUser, *, new: bool = False, rewrite: bool = False
) -> None:
    """Make a user's rows of the recipient index what its state says (in the transaction that
    saves it). Most saves change no recipient (a name, a phone number): those write nothing,
    so the short write transaction stays as short as before. ``rewrite`` writes them
    whatever is stored (the unit of work already staged rows of this user)."""
    rows = recipient_rows(user)
    if not new:
        if not rewrite:
            stored = {tuple(r) for r in uow.read(_RECIPIENT_ROWS_OF_USER, {"user": user.id})}
            columns = [c.name for c in _RECIPIENT_ROWS_OF_USER.selected_columns]
            if stored == {tuple(row[c] for c in columns) for row in rows}:
                return
        uow.write(_DELETE_RECIPIENT, {"w_user": user.id})
    if rows:
        uow.write(insert(recipients), rows)


class SqlRecipients:
    """The notification recipient index: one read of its primary key's range per lookup."""

    def __init__(self, uow: Statements) -> None:
        self.uow = uow

    def of(self, seller_id: str, category: str) -> list[Recipient]:
        rows = self.uow.read(_RECIPIENTS_OF, {"seller": seller_id, "category": category})
        return [Recipient(r.user_id, r.email, r.role) for r in rows]


FEED_LOOKBACK = 1000
"""SQLite: how many audit ids behind the newest one scanned the sequencer looks again
(SQLite commits in id order: a margin, not a need)."""
FEED_SCANNED = "change-feed:scanned"
"""The marker holding the newest audit id the sequencer scanned."""
FEED_HORIZON = "change-feed:horizon"
"""PostgreSQL: the marker holding the oldest transaction still running at the last scan;
events of that transaction and of later ones are looked at again, however long they ran."""
_SNAPSHOT_XMIN = text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")


class SqlChangeFeed:
    """The feed of changes: committed audit events given positions by one sequencer at a time."""

    def __init__(self, uow: Statements) -> None:
        self.uow = uow

    def _scanned(self) -> int:
        row = self.uow.read(select(markers.c.marker).where(markers.c.source == FEED_SCANNED))
        value = row.scalar()
        return int(value) if value else 0

    def pending(self) -> bool:
        """Whether events may be waiting for a position (always, where commits come late)."""
        if self.uow.dialect != "sqlite":
            return True
        newest = self.uow.read(select(func.max(audit.c.id))).scalar() or 0
        return int(newest) > self._scanned()

    def sequence(self, actions: Iterable[str], wanted: Callable[[AuditEvent], bool]) -> int:
        """Give positions, in id order, to the committed events of ``actions`` that ``wanted``
        accepts and that have none. Run it in an immediate unit of work: on PostgreSQL the
        table lock makes sequencers take turns; SQLite's write lock does it there."""
        postgres = self.uow.dialect == "postgresql"
        markers_ = SqlMarkers(self.uow)
        if postgres:
            self.uow.write(text("LOCK TABLE change_feed IN EXCLUSIVE MODE"))
            # Taken before the scan: every transaction older than it has ended, so the scan
            # (a later snapshot) sees all it committed; the others are looked at next time.
            horizon = int(self.uow.read(_SNAPSHOT_XMIN).scalar_one())
            # audit_events.txid (PostgreSQL only, migration feed1): the writing transaction.
            writer = literal_column("audit_events.txid")
            since = writer >= int(markers_.get(FEED_HORIZON) or 0)
        else:
            scanned = self._scanned()
            since = audit.c.id > max(scanned - FEED_LOOKBACK, 0)
        placed = select(change_feed.c.audit_id).where(change_feed.c.audit_id == audit.c.id)
        rows = self.uow.read(
            select(audit)
            .where(since, audit.c.action.in_(sorted(set(actions))), ~placed.exists())
            .order_by(audit.c.id)
        )
        events = [e for e in (_audit_event(r) for r in rows) if wanted(e)]
        if events:
            self.uow.write(
                insert(change_feed),
                [{"audit_id": e.id, "seller_id": e.seller_id} for e in events],
            )
        if postgres:
            markers_.set(FEED_HORIZON, str(horizon))
            return len(events)
        newest = self.uow.read(select(func.max(audit.c.id))).scalar() or 0
        if int(newest) > scanned:
            markers_.set(FEED_SCANNED, str(newest))
        return len(events)

    def page(self, after: int, limit: int, seller_id: str | None = None) -> list[FeedEntry]:
        query = (
            select(change_feed.c.position, audit)
            .join(audit, audit.c.id == change_feed.c.audit_id)
            .where(change_feed.c.position > after)
            .order_by(change_feed.c.position)
            .limit(limit)
        )
        if seller_id is not None:
            query = query.where(change_feed.c.seller_id == seller_id)
        return [FeedEntry(int(r.position), _audit_event(r)) for r in self.uow.read(query)]
