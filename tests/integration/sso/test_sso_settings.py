"""The SSO command's settings and checks that need no Keycloak."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.adapters.keycloak.settings import KeycloakSettingsError
from connector.adapters.keycloak.sso import OperatorCredentials, normalize_domains
from connector.ports.identity import IdentityProviderRejected


def test_domains_are_checked_and_normalised() -> None:
    assert normalize_domains(["Corp.Example.com", "@corp.example.com", "eu.corp.example"]) == [
        "corp.example.com",
        "eu.corp.example",
    ]
    for bad in ("corp", "http://corp.example", "corp..example", "-corp.example", ""):
        with pytest.raises(IdentityProviderRejected):
            normalize_domains([bad])


def test_operator_credentials_from_the_environment(tmp_path: Path) -> None:
    secret_file = tmp_path / "password"
    secret_file.write_text("from-file\n")
    creds = OperatorCredentials.from_env(
        {
            "SELLER_CONNECTOR_KEYCLOAK_URL": "http://127.0.0.1:8180/",
            "SELLER_CONNECTOR_KEYCLOAK_ADMIN_USERNAME": "ops",
            "SELLER_CONNECTOR_KEYCLOAK_ADMIN_PASSWORD": "ignored",
            "SELLER_CONNECTOR_KEYCLOAK_ADMIN_PASSWORD_FILE": str(secret_file),
        }
    )
    assert creds.url == "http://127.0.0.1:8180"
    assert (creds.realm, creds.auth_realm, creds.client_id) == ("sellers", "master", "admin-cli")
    assert (creds.username, creds.password) == ("ops", "from-file")
    assert "from-file" not in repr(creds)

    client = OperatorCredentials.from_env(
        {
            "SELLER_CONNECTOR_KEYCLOAK_URL": "http://kc",
            "SELLER_CONNECTOR_KEYCLOAK_ADMIN_REALM": "sellers",
            "SELLER_CONNECTOR_KEYCLOAK_ADMIN_CLIENT_ID": "sso-operator",
            "SELLER_CONNECTOR_KEYCLOAK_ADMIN_CLIENT_SECRET": "s",
        }
    )
    assert (client.auth_realm, client.client_id, client.client_secret) == (
        "sellers",
        "sso-operator",
        "s",
    )
    assert client.username is None


def test_the_service_account_secret_is_not_enough() -> None:
    with pytest.raises(KeycloakSettingsError, match="operator credential"):
        OperatorCredentials.from_env(
            {
                "SELLER_CONNECTOR_KEYCLOAK_URL": "http://kc",
                "SELLER_CONNECTOR_KEYCLOAK_CLIENT_SECRET": "service-account",
            }
        )
    with pytest.raises(KeycloakSettingsError, match="URL"):
        OperatorCredentials.from_env({})
