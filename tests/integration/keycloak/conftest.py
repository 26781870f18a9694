"""Fixtures for the Keycloak adapter's tests against a real Keycloak (no mocks).

ONE Keycloak per test session: the one named by ``SELLER_CONNECTOR_TEST_KEYCLOAK_URL`` (with
``SELLER_CONNECTOR_TEST_KEYCLOAK_ADMIN_USER``/``_ADMIN_PASSWORD``) when set, else a throwaway
one started through deploy/keycloak/keycloak.sh and stopped at the end. Every test works on
its own seller (a fresh id), so tests do not see each other's users, and a reused server does
not need to be empty.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from connector.adapters.keycloak import KeycloakChangeFeed, KeycloakIdentityProvider
from connector.domain.catalogue import Level
from connector.domain.model import (
    Email,
    PermissionSet,
    Plan,
    Role,
    SellerAccount,
    SellerUser,
)
from tests.support.keycloak import KeycloakServer
from tests.support.smtp import SmtpSink


@pytest.fixture(scope="session")
def idp(keycloak_server: KeycloakServer) -> KeycloakIdentityProvider:
    """The adapter, as the least-privilege seller-connector client, catalogue ensured."""
    provider = KeycloakIdentityProvider(keycloak_server.connector_settings())
    provider.ensure_catalogue()
    return provider


@pytest.fixture(scope="session")
def feed(keycloak_server: KeycloakServer) -> KeycloakChangeFeed:
    """The change feed, as the seller-connector client."""
    return KeycloakChangeFeed(keycloak_server.connector_settings())


@pytest.fixture
def seller() -> SellerAccount:
    """A seller of its own for each test."""
    short = uuid.uuid4().hex[:10]
    return SellerAccount(id=f"s-{short}", name=f"Seller {short}", plan=Plan.professional)


@pytest.fixture
def make_user(seller: SellerAccount) -> Callable[..., SellerUser]:
    """Build a secondary (by default) user of the test's seller with a unique email."""

    def make(
        role: Role = Role.secondary,
        permissions: dict[str, Level] | None = None,
        **fields: object,
    ) -> SellerUser:
        short = uuid.uuid4().hex[:8]
        address = f"user-{short}@{seller.id}.example.com"
        values: dict[str, object] = {
            "id": f"u-{short}",
            "seller_id": seller.id,
            "user_name": address,
            "role": role,
            "emails": [Email(address, primary=True)],
            "given_name": "Test",
            "family_name": short,
            "permissions": permissions or {},
        }
        values.update(fields)
        return SellerUser(**values)  # type: ignore[arg-type]

    return make


@pytest.fixture
def make_set(seller: SellerAccount) -> Callable[..., PermissionSet]:
    """Build a permission set of the test's seller."""

    def make(permissions: dict[str, Level], name: str = "Catalog editors") -> PermissionSet:
        return PermissionSet(
            id=f"ps-{uuid.uuid4().hex[:8]}",
            seller_id=seller.id,
            display_name=name,
            permissions=permissions,
        )

    return make


@pytest.fixture
def smtp(keycloak_server: KeycloakServer) -> Iterator[SmtpSink]:
    """An SMTP sink, with the realm's mail pointed at it for the test."""
    with SmtpSink() as sink:
        keycloak_server.set_smtp(sink.host, sink.port)
        yield sink
