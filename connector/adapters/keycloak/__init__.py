"""The Keycloak adapter: the IdentityProvider and ChangeFeed ports on one Keycloak realm.

See ``identity_provider`` for how sellers, users and permissions map onto Keycloak, and
deploy/keycloak/README.md for the realm and the service account's roles.
"""

from connector.adapters.keycloak.api import AdminApi
from connector.adapters.keycloak.change_feed import KeycloakChangeFeed
from connector.adapters.keycloak.identity_provider import KeycloakIdentityProvider
from connector.adapters.keycloak.settings import KeycloakSettings, KeycloakSettingsError
from connector.ports.identity import BulkSyncResult

__all__ = [
    "AdminApi",
    "BulkSyncResult",
    "KeycloakChangeFeed",
    "KeycloakIdentityProvider",
    "KeycloakSettings",
    "KeycloakSettingsError",
]
