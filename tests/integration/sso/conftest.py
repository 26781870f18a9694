"""Fixtures of the SSO tests: the plugin's link-only authenticator runs inside the session
Keycloak (the ``keycloak_server`` fixture installs its jar, building it first when missing)."""

from __future__ import annotations

import pytest

from connector.adapters.keycloak import KeycloakIdentityProvider
from connector.domain.model import SellerAccount
from tests.integration.plugin.helpers import new_seller
from tests.support.keycloak import KeycloakServer


@pytest.fixture(scope="session")
def idp(keycloak_server: KeycloakServer) -> KeycloakIdentityProvider:
    """The adapter as the least-privilege seller-connector client, catalogue ensured."""
    provider = KeycloakIdentityProvider(keycloak_server.connector_settings())
    provider.ensure_catalogue()
    return provider


@pytest.fixture
def seller() -> SellerAccount:
    """A seller of its own for each test."""
    return new_seller()
