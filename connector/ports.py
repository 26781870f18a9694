"""The ports through which the use cases reach the outside world.

Adapters implement them: the SQL store (``connector.adapters.sql``), Keycloak
(``connector.adapters.keycloak``), LDAP (``connector.adapters.ldap``). The use
cases never import an adapter.
"""

from __future__ import annotations

import datetime as dt
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


class ChangeFeed(Protocol):
    """Where console changes come from: polled admin events, or the plugin's webhook."""

    def changes_since(self, marker: str | None) -> tuple[list[ProviderChange], str | None]:
        """Return the changes after ``marker``, and the marker to pass next time."""
        ...


class Mailer(Protocol):
    """Sends the connector's own emails (the primary-change verification)."""

    def send(self, to: str, subject: str, body: str) -> None:
        """Send a plain-text email.

        :raises MailUnavailable: when no mail server is configured or reachable.
        """


class MailUnavailable(Exception):
    """No mail server is configured, or it refused the message."""
