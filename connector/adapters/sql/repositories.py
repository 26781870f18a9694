"""Repositories: domain objects in and out of the SQL tables."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from sqlalchemy import bindparam, delete, insert, or_, select, update
from sqlalchemy.orm import Session

from connector.adapters.sql.tables import (
    AuditRow,
    EmailRow,
    MarkerRow,
    MembershipRow,
    OutboxRow,
    PermissionSetRow,
    PrimaryChangeRow,
    SellerRow,
    TokenRow,
    UserRow,
)
from connector.domain.catalogue import Level
from connector.domain.errors import VersionMismatch
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
    text_key,
    utcnow,
)
from connector.ports.store import ApiToken, AuditEvent, EmailOwner, OutboxEntry


def _chunks(values: list[str], size: int = 500) -> Iterable[list[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


class SqlSellers:
    def __init__(self, session: Session) -> None:
        self.session = session

    @staticmethod
    def _to_domain(row: SellerRow) -> SellerAccount:
        return SellerAccount(
            id=row.id,
            name=row.name,
            plan=Plan(row.plan),
            partner_domains=list(row.partner_domains or []),
            created_at=row.created_at,
            primary_user_id=row.primary_user_id,
        )

    def add(self, seller: SellerAccount) -> None:
        self.session.add(
            SellerRow(
                id=seller.id,
                name=seller.name,
                name_key=text_key(seller.name),
                plan=seller.plan.value,
                partner_domains=list(seller.partner_domains),
                primary_user_id=seller.primary_user_id,
                created_at=seller.created_at,
            )
        )
        self.session.flush()

    def get(self, seller_id: str) -> SellerAccount | None:
        row = self.session.get(SellerRow, seller_id)
        return self._to_domain(row) if row else None

    def get_by_name(self, name: str) -> SellerAccount | None:
        row = self.session.scalar(select(SellerRow).where(SellerRow.name_key == text_key(name)))
        return self._to_domain(row) if row else None

    def list(self) -> list[SellerAccount]:
        return [
            self._to_domain(r)
            for r in self.session.scalars(select(SellerRow).order_by(SellerRow.name_key))
        ]

    def save(self, seller: SellerAccount) -> None:
        row = self.session.get(SellerRow, seller.id)
        assert row is not None
        row.name = seller.name
        row.name_key = text_key(seller.name)
        row.plan = seller.plan.value
        row.partner_domains = list(seller.partner_domains)
        row.primary_user_id = seller.primary_user_id
        self.session.flush()


def user_to_domain(row: UserRow) -> SellerUser:
    """Build a SellerUser from its row."""
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


def _user_columns(user: SellerUser) -> dict[str, Any]:
    invitation = user.invitation
    return {
        "user_name": user.user_name,
        "user_name_key": text_key(user.user_name),
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


class SqlUsers:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, user: SellerUser) -> None:
        self.session.add(
            UserRow(
                id=user.id,
                seller_id=user.seller_id,
                # Only at creation: afterwards the outbox worker alone writes it, so that a
                # save from a stale read cannot clear it.
                idp_id=user.idp_id,
                created_at=user.created_at,
                version=user.version,
                **_user_columns(user),
            )
        )
        self.session.flush()
        self._reserve_emails(user)

    def _reserve_emails(self, user: SellerUser) -> None:
        keys = user.email_keys
        held = {
            row.email_key: row
            for row in self.session.scalars(select(EmailRow).where(EmailRow.user_id == user.id))
        }
        for key, row in held.items():
            row.current = key in keys and not user.deleted
        for key in keys - held.keys():
            self.session.add(
                EmailRow(
                    email_key=key,
                    user_id=user.id,
                    seller_id=user.seller_id,
                    current=not user.deleted,
                )
            )
        self.session.flush()

    def get(
        self, seller_id: str, user_id: str, *, include_deleted: bool = False
    ) -> SellerUser | None:
        query = select(UserRow).where(UserRow.id == user_id, UserRow.seller_id == seller_id)
        if not include_deleted:
            query = query.where(UserRow.deleted.is_(False))
        row = self.session.scalar(query)
        return user_to_domain(row) if row else None

    def get_many(self, seller_id: str, user_ids: Iterable[str]) -> list[SellerUser]:
        ids = list(user_ids)
        found: dict[str, SellerUser] = {}
        for chunk in _chunks(ids):
            # By primary key only, the seller checked on each row: with the seller in the
            # WHERE clause, SQLite may pick the seller's index and scan all its users.
            for row in self.session.scalars(select(UserRow).where(UserRow.id.in_(chunk))):
                if row.seller_id == seller_id:
                    found[row.id] = user_to_domain(row)
        return [found[i] for i in ids if i in found]

    def by_user_name(self, seller_id: str, user_name_key: str) -> SellerUser | None:
        row = self.session.scalar(
            select(UserRow).where(
                UserRow.seller_id == seller_id, UserRow.user_name_key == user_name_key
            )
        )
        return user_to_domain(row) if row else None

    def by_external_id(self, seller_id: str, external_id: str) -> SellerUser | None:
        row = self.session.scalar(
            select(UserRow).where(
                UserRow.seller_id == seller_id,
                UserRow.external_id == external_id,
                UserRow.deleted.is_(False),
            )
        )
        return user_to_domain(row) if row else None

    def list(self, seller_id: str, *, include_deleted: bool = False) -> list[SellerUser]:
        query = (
            select(UserRow)
            .where(UserRow.seller_id == seller_id)
            .order_by(UserRow.created_at, UserRow.id)
        )
        if not include_deleted:
            query = query.where(UserRow.deleted.is_(False))
        return [user_to_domain(r) for r in self.session.scalars(query)]

    def save(self, user: SellerUser, *, expected_version: int | None = None) -> None:
        """Write the user back, bumping its version.

        :raises VersionMismatch: when the stored version is not ``expected_version``.
        """
        current = expected_version if expected_version is not None else user.version
        result = self.session.execute(
            update(UserRow)
            .where(UserRow.id == user.id, UserRow.version == current)
            .values(version=current + 1, **_user_columns(user))
        )
        if result.rowcount != 1:
            raise VersionMismatch(
                f"User {user.id} changed since version {current}: read it again and retry."
            )
        user.version = current + 1
        self._reserve_emails(user)

    def record_login(self, seller_id: str, user_id: str, at: dt.datetime) -> bool:
        """Set ``last_login_at`` to ``at`` when it is later, WITHOUT bumping the version: a
        login is not a change of the SCIM resource (its ETag must not move under a client).

        :returns: whether it was written.
        """
        result = self.session.execute(
            update(UserRow)
            .where(
                UserRow.id == user_id,
                UserRow.seller_id == seller_id,
                or_(UserRow.last_login_at.is_(None), UserRow.last_login_at < at),
            )
            .values(last_login_at=at)
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)

    def email_owners(self, email_keys: Iterable[str]) -> list[EmailOwner]:
        keys = [email_key(k) for k in email_keys]
        if not keys:
            return []
        rows = self.session.execute(
            select(EmailRow.email_key, EmailRow.user_id, EmailRow.seller_id, UserRow.deleted)
            .join(UserRow, UserRow.id == EmailRow.user_id)
            .where(EmailRow.email_key.in_(keys))
        )
        return [EmailOwner(k, u, s, d) for k, u, s, d in rows]


class SqlPermissionSets:
    def __init__(self, session: Session) -> None:
        self.session = session

    def _to_domain(self, row: PermissionSetRow, members: list[str] | None = None) -> PermissionSet:
        if members is None:
            members = list(
                self.session.scalars(
                    select(MembershipRow.user_id)
                    .where(MembershipRow.permission_set_id == row.id)
                    .order_by(MembershipRow.position, MembershipRow.user_id)
                )
            )
        return PermissionSet(
            id=row.id,
            seller_id=row.seller_id,
            display_name=row.display_name,
            external_id=row.external_id,
            permissions={k: Level(v) for k, v in (row.permissions or {}).items()},
            member_ids=members,
            profile=dict(row.profile or {}),
            created_at=row.created_at,
            updated_at=row.updated_at,
            version=row.version,
        )

    def add(self, permission_set: PermissionSet) -> None:
        self.session.add(
            PermissionSetRow(
                id=permission_set.id,
                seller_id=permission_set.seller_id,
                display_name=permission_set.display_name,
                display_name_key=text_key(permission_set.display_name),
                external_id=permission_set.external_id,
                permissions={k: v.value for k, v in permission_set.permissions.items()},
                profile=permission_set.profile,
                created_at=permission_set.created_at,
                updated_at=permission_set.updated_at,
                version=permission_set.version,
            )
        )
        self.session.flush()
        self._write_members(permission_set)

    def _write_members(self, permission_set: PermissionSet) -> None:
        """Make the stored members (and their positions) those of ``permission_set``.

        Only the difference is written: adding 100 members to a group of thousands
        inserts 100 rows, rather than deleting and inserting them all.
        """
        table = MembershipRow.__table__
        set_id = permission_set.id
        self.session.flush()
        stored: dict[str, int] = {
            user_id: position
            for user_id, position in self.session.execute(
                select(table.c.user_id, table.c.position).where(table.c.permission_set_id == set_id)
            )
        }
        wanted = {user_id: n for n, user_id in enumerate(dict.fromkeys(permission_set.member_ids))}
        gone = [user_id for user_id in stored if user_id not in wanted]
        for chunk in _chunks(gone):
            self.session.execute(
                delete(table).where(table.c.permission_set_id == set_id, table.c.user_id.in_(chunk))
            )
        moved = [
            {"s": set_id, "u": user_id, "p": n}
            for user_id, n in wanted.items()
            if user_id in stored and stored[user_id] != n
        ]
        if moved:
            self.session.execute(
                update(table)
                .where(
                    table.c.permission_set_id == bindparam("s"), table.c.user_id == bindparam("u")
                )
                .values(position=bindparam("p")),
                moved,
            )
        added = [
            {"permission_set_id": set_id, "user_id": user_id, "position": n}
            for user_id, n in wanted.items()
            if user_id not in stored
        ]
        if added:
            self.session.execute(insert(table), added)

    def get(self, seller_id: str, permission_set_id: str) -> PermissionSet | None:
        row = self.session.scalar(
            select(PermissionSetRow).where(
                PermissionSetRow.id == permission_set_id, PermissionSetRow.seller_id == seller_id
            )
        )
        return self._to_domain(row) if row else None

    def get_many(self, seller_id: str, ids: Iterable[str]) -> list[PermissionSet]:
        wanted = list(ids)
        rows: dict[str, PermissionSetRow] = {}
        for chunk in _chunks(wanted):
            # By primary key only, as SqlUsers.get_many.
            for row in self.session.scalars(
                select(PermissionSetRow).where(PermissionSetRow.id.in_(chunk))
            ):
                if row.seller_id == seller_id:
                    rows[row.id] = row
        members: dict[str, list[str]] = {i: [] for i in rows}
        for chunk in _chunks(list(rows)):
            for set_id, user_id in self.session.execute(
                select(MembershipRow.permission_set_id, MembershipRow.user_id)
                .where(MembershipRow.permission_set_id.in_(chunk))
                .order_by(MembershipRow.position, MembershipRow.user_id)
            ):
                members[set_id].append(user_id)
        return [self._to_domain(rows[i], members[i]) for i in wanted if i in rows]

    def by_display_name(self, seller_id: str, display_name: str) -> PermissionSet | None:
        row = self.session.scalar(
            select(PermissionSetRow).where(
                PermissionSetRow.seller_id == seller_id,
                PermissionSetRow.display_name_key == text_key(display_name),
            )
        )
        return self._to_domain(row) if row else None

    def list(self, seller_id: str) -> list[PermissionSet]:
        ids = self.session.scalars(
            select(PermissionSetRow.id)
            .where(PermissionSetRow.seller_id == seller_id)
            .order_by(PermissionSetRow.display_name_key)
        )
        return self.get_many(seller_id, list(ids))

    def of_user(self, user_id: str) -> list[PermissionSet]:
        return self.of_users([user_id]).get(user_id, [])

    def of_users(self, user_ids: Iterable[str]) -> dict[str, list[PermissionSet]]:
        """The permission sets of each user, without their member lists (which can be long)."""
        result: dict[str, list[PermissionSet]] = {}
        for chunk in _chunks(list(user_ids)):
            rows = self.session.execute(
                select(MembershipRow.user_id, PermissionSetRow)
                .join(PermissionSetRow, PermissionSetRow.id == MembershipRow.permission_set_id)
                .where(MembershipRow.user_id.in_(chunk))
                .order_by(PermissionSetRow.display_name_key)
            )
            for user_id, row in rows:
                result.setdefault(user_id, []).append(self._to_domain(row, members=[]))
        return result

    def save(self, permission_set: PermissionSet, *, expected_version: int | None = None) -> None:
        current = expected_version if expected_version is not None else permission_set.version
        result = self.session.execute(
            update(PermissionSetRow)
            .where(PermissionSetRow.id == permission_set.id, PermissionSetRow.version == current)
            .values(
                version=current + 1,
                display_name=permission_set.display_name,
                display_name_key=text_key(permission_set.display_name),
                external_id=permission_set.external_id,
                permissions={k: v.value for k, v in permission_set.permissions.items()},
                profile=permission_set.profile,
                updated_at=permission_set.updated_at,
            )
        )
        if result.rowcount != 1:
            raise VersionMismatch(
                f"Group {permission_set.id} changed since version {current}: read it again and retry."
            )
        permission_set.version = current + 1
        self._write_members(permission_set)

    def delete(self, permission_set: PermissionSet) -> None:
        self.session.execute(
            delete(MembershipRow).where(MembershipRow.permission_set_id == permission_set.id)
        )
        self.session.execute(
            delete(PermissionSetRow).where(PermissionSetRow.id == permission_set.id)
        )
        self.session.flush()


class SqlTokens:
    def __init__(self, session: Session) -> None:
        self.session = session

    @staticmethod
    def _to_domain(row: TokenRow) -> ApiToken:
        return ApiToken(
            id=row.id,
            seller_id=row.seller_id,
            token_hash=row.token_hash,
            label=row.label,
            created_at=row.created_at,
            revoked_at=row.revoked_at,
            last_used_at=row.last_used_at,
        )

    def add(self, token: ApiToken) -> None:
        self.session.add(TokenRow(**vars(token)))
        self.session.flush()

    def by_hash(self, token_hash: str) -> ApiToken | None:
        row = self.session.scalar(select(TokenRow).where(TokenRow.token_hash == token_hash))
        return self._to_domain(row) if row else None

    def get(self, token_id: str) -> ApiToken | None:
        row = self.session.get(TokenRow, token_id)
        return self._to_domain(row) if row else None

    def list(self, seller_id: str) -> list[ApiToken]:
        rows = self.session.scalars(
            select(TokenRow).where(TokenRow.seller_id == seller_id).order_by(TokenRow.created_at)
        )
        return [self._to_domain(r) for r in rows]

    def save(self, token: ApiToken) -> None:
        row = self.session.get(TokenRow, token.id)
        assert row is not None
        row.revoked_at = token.revoked_at
        row.last_used_at = token.last_used_at
        row.label = token.label
        self.session.flush()


class SqlAudit:
    def __init__(self, session: Session) -> None:
        self.session = session

    def append(self, event: AuditEvent) -> None:
        self.session.add(
            AuditRow(
                seller_id=event.seller_id,
                at=event.at or utcnow(),
                actor=event.actor,
                action=event.action,
                target=event.target,
                changes=event.changes,
            )
        )

    def list(self, seller_id: str, limit: int | None = None) -> list[AuditEvent]:
        query = select(AuditRow).where(AuditRow.seller_id == seller_id).order_by(AuditRow.id)
        if limit:
            query = query.limit(limit)
        return [
            AuditEvent(
                seller_id=r.seller_id,
                actor=r.actor,
                action=r.action,
                target=r.target,
                changes=r.changes,
                at=r.at,
                id=r.id,
            )
            for r in self.session.scalars(query)
        ]


class SqlOutbox:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, entry: OutboxEntry) -> None:
        now = utcnow()
        self.session.add(
            OutboxRow(
                seller_id=entry.seller_id,
                topic=entry.topic,
                aggregate_id=entry.aggregate_id,
                payload=entry.payload,
                state="pending",
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
        )


class SqlMarkers:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, source: str) -> str | None:
        row = self.session.get(MarkerRow, source)
        return row.marker if row else None

    def set(self, source: str, marker: str | None) -> None:
        row = self.session.get(MarkerRow, source)
        if row is None:
            self.session.add(MarkerRow(source=source, marker=marker, updated_at=utcnow()))
        else:
            row.marker = marker
            row.updated_at = utcnow()
        self.session.flush()


class SqlPrimaryChanges:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(
        self,
        change_id: str,
        seller_id: str,
        new_email: str,
        token_hash: str,
        requested_at: dt.datetime,
        expires_at: dt.datetime,
    ) -> None:
        self.session.add(
            PrimaryChangeRow(
                id=change_id,
                seller_id=seller_id,
                new_email=new_email,
                token_hash=token_hash,
                requested_at=requested_at,
                expires_at=expires_at,
            )
        )
        self.session.flush()

    def by_token_hash(self, token_hash: str) -> dict[str, Any] | None:
        row = self.session.scalar(
            select(PrimaryChangeRow).where(PrimaryChangeRow.token_hash == token_hash)
        )
        if row is None:
            return None
        return {
            "id": row.id,
            "seller_id": row.seller_id,
            "new_email": row.new_email,
            "expires_at": row.expires_at,
            "completed_at": row.completed_at,
        }

    def complete(self, change_id: str, at: dt.datetime) -> None:
        row = self.session.get(PrimaryChangeRow, change_id)
        assert row is not None
        row.completed_at = at
        self.session.flush()
