"""The identity provider's ports: converging it to the store, reading its console changes,
comparing it with the store. ``connector.adapters.keycloak`` implements them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from connector.domain.model import PermissionSet, SellerAccount, SellerUser


class IdentityProviderUnavailable(Exception):
    """The identity provider cannot be reached or answered 429/5xx: try again later."""

    def __init__(self, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class IdentityProviderRejected(Exception):
    """The identity provider refused a change for good: retrying will not help."""


class IdentityProvider(Protocol):
    """An identity provider (Keycloak) that mirrors the seller accounts.

    Every method converges the provider to the state it is given, so calling it
    twice, or after a crash, does no harm: the outbox relies on that.
    """

    def sync_seller(self, seller: SellerAccount) -> None:
        """Make the seller's organization exist, with its name and id."""

    def sync_permission_set(self, seller: SellerAccount, permission_set: PermissionSet) -> None:
        """Make the permission set's group exist with exactly its roles."""

    def remove_permission_set(self, seller: SellerAccount, permission_set_id: str) -> None:
        """Remove the permission set's group (its members lose what it granted)."""

    def sync_user(
        self, seller: SellerAccount, user: SellerUser, groups: list[PermissionSet]
    ) -> str:
        """Make the user exist as the store has it: attributes, enabled, organization
        membership, direct roles and group memberships. A deactivated user is disabled
        and its sessions are ended. Never deletes. Returns the provider's user id."""
        ...

    def send_invitation(
        self, seller: SellerAccount, user: SellerUser, lifespan: dt.timedelta
    ) -> None:
        """Email the user a link to set a password and verify its address."""


@dataclass
class ProviderChange:
    """A change an administrator made in the identity provider's own console."""

    provider_user_id: str
    """The provider's user id; ``""`` for a role change on a group (then ``group_id``)."""
    kind: str
    """``enabled``, ``disabled``, ``group-added``, ``group-removed``, ``login``,
    ``invitation-accepted``, ``roles-added`` or ``roles-removed`` (``details``: ``target``,
    ``roles``, ``client``; shapes in connector/adapters/keycloak/change_feed.py)."""
    at: dt.datetime
    group_id: str | None = None
    event_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


class PushRejected(Exception):
    """A pushed event refused as it arrived: ``status`` says how (400, 401, 409, 503)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class ChangePush(Protocol):
    """The push side of the console changes: events the provider sends as they happen."""

    def receive(self, headers: Mapping[str, str], body: bytes) -> ProviderChange:
        """The change one delivery stands for (its signature checked).

        :raises PushRejected: when the delivery is not one to apply.
        """
        ...

    def delivered(self, event_id: str) -> None:
        """Remember that the event was applied (quick replays are refused)."""


class ChangeFeed(Protocol):
    """Where console changes come from: polled admin events, or the plugin's webhook."""

    def changes_since(self, marker: str | None) -> tuple[list[ProviderChange], str | None]:
        """Return the changes after ``marker``, and the marker to pass next time."""
        ...


@dataclass
class BulkSyncResult:
    """What :meth:`KeycloakIdentityProvider.bulk_sync_users` did, per connector user id."""

    provider_ids: dict[str, str] = field(default_factory=dict)
    errors: dict[str, Exception] = field(default_factory=dict)
    created: int = 0
    """How many of them the provider created (the others existed already)."""
    requests: int = 0
    """How many bulk requests carried them (0 on the one-user-at-a-time path)."""


@dataclass(frozen=True)
class Difference:
    """One way in which the provider differs from the store."""

    seller_id: str
    kind: str
    """``organization``, ``user``, ``permission_set``, ``group`` (a stray one) or
    ``unknown-user`` / ``duplicate-user`` (reported only)."""
    target: str
    """The connector id of the object (or the provider's id for unknown users)."""
    field: str
    """What differs: ``missing``, ``enabled``, ``email``, ``roles``, ``groups`` ..."""
    expected: Any = None
    actual: Any = None
    repair: tuple[str, str] | None = None
    """(outbox topic, aggregate id) that repairs it; None when it is reported only."""

    def as_dict(self) -> dict[str, Any]:
        """For ``--format json``."""
        return {
            "sellerId": self.seller_id,
            "kind": self.kind,
            "target": self.target,
            "field": self.field,
            "expected": _plain(self.expected),
            "actual": _plain(self.actual),
            "repair": self.repair[0] if self.repair else None,
        }


def _plain(value: Any) -> Any:
    if isinstance(value, set | frozenset | tuple):
        return sorted(value)
    return value


class ProviderInspector(Protocol):
    """Reads the provider and says how it differs from a seller's state in the store."""

    def differences(
        self,
        seller: SellerAccount,
        users: Sequence[tuple[SellerUser, list[PermissionSet]]],
        permission_sets: Sequence[PermissionSet],
    ) -> list[Difference]:
        """Every difference for this seller (read-only)."""
        ...
