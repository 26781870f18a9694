"""An in-memory ``DirectoryTarget`` for tests and the benchmark (the store-backed one is
the service layer's). It keeps the seller rules the sync relies on: users are never
deleted, emails are unique and never reused, the primary user is not changed, and
unknown permission sets are refused."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from connector.domain.errors import InvalidValue, NotFound, Uniqueness
from connector.domain.model import Role, email_key
from connector.ports.directory import KnownUser
from connector.services.directory.plan import ListedKnownUsers


class Crash(RuntimeError):
    """Raised by ``fail_after`` to simulate a run killed halfway."""


@dataclass
class MemoryTarget:
    """One seller's users in memory, with a call log."""

    seller_id: str = "seller-1"
    seller_name: str = "Example Outdoor Gear"
    permission_sets: set[str] = field(
        default_factory=lambda: {"Catalog editors", "Order handlers", "Finance viewers"}
    )
    users: dict[str, KnownUser] = field(default_factory=dict)
    markers: dict[str, str] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    fail_after: int | None = None
    """Raise :class:`Crash` on the call after this many writes (None: never)."""
    used_emails: set[str] = field(default_factory=set)
    groups: dict[str, dict[str, frozenset[str]]] = field(default_factory=dict)
    """source id -> the groups' member lists stored with its marker."""
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    # -- setup helpers -------------------------------------------------------------

    def add(
        self,
        email: str,
        *,
        external_id: str | None = None,
        role: Role = Role.secondary,
        active: bool = True,
        permission_sets: frozenset[str] = frozenset(),
        given_name: str = "Pat",
        family_name: str = "Doe",
    ) -> KnownUser:
        """Put a user in the store directly (as the portal or SCIM would have)."""
        user = KnownUser(
            id=f"u{next(self._ids)}",
            external_id=external_id,
            emails=(email,),
            given_name=given_name,
            family_name=family_name,
            active=active,
            permission_sets=permission_sets,
            role=role,
        )
        self.users[user.id] = user
        self.used_emails.add(email_key(email))
        return user

    def by_external(self, external_id: str) -> KnownUser:
        return next(u for u in self.users.values() if u.external_id == external_id)

    def snapshot(self) -> dict[str, tuple[object, ...]]:
        """The state by external id (user ids differ between two targets)."""
        return {
            u.external_id or u.id: (
                u.emails,
                u.given_name,
                u.family_name,
                u.active,
                u.permission_sets,
                u.role,
            )
            for u in self.users.values()
        }

    def _write(self, name: str, subject: str) -> None:
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise Crash(f"simulated crash before {name} {subject}")
        self.calls.append((name, subject))

    def _user(self, seller_id: str, user_id: str) -> KnownUser:
        if seller_id != self.seller_id or user_id not in self.users:
            raise NotFound(f"no user {user_id} in seller {seller_id}")
        return self.users[user_id]

    def _check_sets(self, names: frozenset[str]) -> None:
        unknown = sorted(names - self.permission_sets)
        if unknown:
            raise InvalidValue(f"unknown permission sets: {', '.join(unknown)}")

    # -- DirectoryTarget -------------------------------------------------------------

    def resolve_seller(self, seller_id: str | None, seller_name: str | None) -> str:
        if seller_id == self.seller_id or (seller_id is None and seller_name == self.seller_name):
            return self.seller_id
        raise NotFound(f"no seller {seller_id or seller_name!r}")

    def known_users(self, seller_id: str) -> list[KnownUser]:
        if seller_id != self.seller_id:
            raise NotFound(f"no seller {seller_id}")
        return list(self.users.values())

    def known(self, seller_id: str) -> ListedKnownUsers:
        return ListedKnownUsers(self.known_users(seller_id))

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
        self._check_sets(permission_sets)
        if email_key(email) in self.used_emails:
            raise Uniqueness(f"{email} is already used")
        if any(u.external_id == external_id for u in self.users.values()):
            raise Uniqueness(f"external id {external_id} is already linked")
        self._write("create", external_id)
        user = KnownUser(
            id=f"u{next(self._ids)}",
            external_id=external_id,
            emails=(email,),
            given_name=given_name,
            family_name=family_name,
            active=True,
            permission_sets=permission_sets,
        )
        self.users[user.id] = user
        self.used_emails.add(email_key(email))
        return user.id

    def update_user(
        self,
        seller_id: str,
        user_id: str,
        *,
        email: str | None = None,
        given_name: str | None = None,
        family_name: str | None = None,
    ) -> None:
        user = self._user(seller_id, user_id)
        if user.role is Role.primary:
            raise InvalidValue("the primary user is not changed by the sync")
        emails = user.emails
        if email is not None and email_key(email) != email_key(user.emails[0]):
            if email_key(email) in self.used_emails:
                raise Uniqueness(f"{email} is already used")
            emails = (email,)
        self._write("update", user_id)
        if email is not None:
            self.used_emails.add(email_key(email))
        self.users[user_id] = replace(
            user,
            emails=emails,
            given_name=given_name if given_name is not None else user.given_name,
            family_name=family_name if family_name is not None else user.family_name,
        )

    def set_permission_sets(
        self, seller_id: str, user_id: str, permission_sets: frozenset[str]
    ) -> None:
        user = self._user(seller_id, user_id)
        self._check_sets(permission_sets)
        self._write("sets", user_id)
        self.users[user_id] = replace(user, permission_sets=frozenset(permission_sets))

    def deactivate(self, seller_id: str, user_id: str, *, reason: str) -> None:
        user = self._user(seller_id, user_id)
        if user.role is Role.primary:
            raise InvalidValue("the primary user cannot be deactivated")
        self._write("deactivate", user_id)
        self.users[user_id] = replace(user, active=False)

    def reactivate(self, seller_id: str, user_id: str) -> None:
        user = self._user(seller_id, user_id)
        self._write("reactivate", user_id)
        self.users[user_id] = replace(user, active=True)

    def get_marker(self, source_id: str) -> str | None:
        return self.markers.get(source_id)

    def set_marker(
        self,
        source_id: str,
        marker: str,
        group_members: Iterable[tuple[str, frozenset[str]]] | None = None,
        *,
        every_group: bool = False,
    ) -> None:
        self._write("marker", source_id)
        self.markers[source_id] = marker
        if group_members is not None:
            lists = self.groups.setdefault(source_id, {})
            if every_group:
                lists.clear()
            lists.update(group_members)

    def group_members(self, source_id: str, group_keys: Sequence[str]) -> dict[str, frozenset[str]]:
        lists = self.groups.get(source_id, {})
        return {k: lists[k] for k in group_keys if k in lists}
