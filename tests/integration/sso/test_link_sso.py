"""Enterprise SSO end to end in a real Keycloak: a second realm plays the seller's corporate
identity provider; ``seller-connector sellers link-sso`` links the seller's organization to it;
a user who exists only in the corporate realm (and was provisioned by SCIM in the sellers realm)
logs in to seller-portal through it, as a browser would, and gets the ``seller`` claim. Nobody
else gets an account, and a deactivated user cannot log in that way either."""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import pytest
import requests
from click.testing import CliRunner

from connector.adapters.keycloak import KeycloakIdentityProvider
from connector.bootstrap import Connector, bootstrap
from connector.domain.drafts import Actor, UserDraft
from connector.domain.model import Email, Plan, SellerAccount, SellerUser
from connector.entrypoints.cli import main
from connector.services import sellers as seller_cases
from connector.services import users as user_cases
from tests.conftest import make_settings
from tests.support.keycloak import KeycloakServer, claims

pytestmark = pytest.mark.keycloak

CALLBACK = "http://127.0.0.1/callback"
CORP_PASSWORD = "Corp-passw0rd-long"
ACTOR = Actor("test")


@dataclass
class Corp:
    """The corporate realm: its issuer, broker client and domain."""

    realm: str
    issuer: str
    client_id: str
    client_secret: str
    domain: str


def _user(server: KeycloakServer, realm: str, email: str, first: str) -> None:
    server.admin_json(
        "POST",
        f"/admin/realms/{realm}/users",
        json={
            "username": email,
            "email": email,
            "emailVerified": True,
            "firstName": first,
            "lastName": "Corp",
            "enabled": True,
            "credentials": [{"type": "password", "value": CORP_PASSWORD, "temporary": False}],
        },
    )


@pytest.fixture
def corp(keycloak_server: KeycloakServer) -> Iterator[Corp]:
    """A corporate realm with a confidential client for the sellers realm's broker."""
    short = uuid.uuid4().hex[:8]
    realm, domain, secret = f"corp-{short}", f"corp-{short}.example.com", secrets.token_urlsafe(24)
    keycloak_server.admin_json(
        "POST", "/admin/realms", json={"realm": realm, "enabled": True, "sslRequired": "none"}
    )
    keycloak_server.admin_json(
        "POST",
        f"/admin/realms/{realm}/clients",
        json={
            "clientId": "seller-broker",
            "publicClient": False,
            "secret": secret,
            "standardFlowEnabled": True,
            "directAccessGrantsEnabled": False,
            "redirectUris": [f"{keycloak_server.url}/realms/{keycloak_server.realm}/broker/*"],
        },
    )
    try:
        yield Corp(realm, f"{keycloak_server.url}/realms/{realm}", "seller-broker", secret, domain)
    finally:
        keycloak_server.admin_request("DELETE", f"/admin/realms/{realm}")


@pytest.fixture
def connector(sqlite_url: str, tmp_path: Path) -> Connector:
    """The connector on a fresh SQLite store."""
    return bootstrap(make_settings(sqlite_url, tmp_path), migrate=False)


def _provision(
    connector: Connector, seller: SellerAccount, address: str, permissions: dict[str, str]
) -> SellerUser:
    with connector.uow() as uow:
        user, _ = user_cases.provision_user(
            uow,
            connector.catalogue,
            seller,
            UserDraft(
                user_name=address,
                emails=[Email(address, primary=True)],
                given_name="Ann",
                family_name="Staff",
                permissions=permissions,
            ),
            ACTOR,
        )
        uow.commit()
    return user


def _deactivate(connector: Connector, idp: KeycloakIdentityProvider, user: SellerUser) -> None:
    """What a SCIM PATCH active=false does, then the outbox's sync."""
    with connector.uow() as uow:
        seller = uow.sellers.get(user.seller_id)
        assert seller is not None
        updated = user_cases.set_active(uow, seller, user.id, False, ACTOR)
        uow.commit()
    idp.sync_user(seller, updated, [])


class Browser:
    """Just enough of a browser for Keycloak's login pages: cookies and manual redirects."""

    def __init__(self) -> None:
        self.http = requests.Session()

    def _send(self, method: str, url: str, **kwargs: object) -> requests.Response:
        response = self.http.request(method, url, allow_redirects=False, timeout=20, **kwargs)  # type: ignore[arg-type]
        # Keycloak marks its cookies Secure; a browser sends them to http://127.0.0.1 anyway.
        for cookie in self.http.cookies:
            cookie.secure = False
        return response

    def follow(self, method: str, url: str, **kwargs: object) -> tuple[str, requests.Response]:
        """Send and follow redirects until a page, or the app's callback (not fetched)."""
        response = self._send(method, url, **kwargs)
        for _ in range(20):
            if response.status_code not in (301, 302, 303, 307):
                return url, response
            url = urljoin(url, response.headers["Location"])
            if url.startswith(CALLBACK):
                return url, response
            response = self._send("GET", url)
        raise AssertionError("too many redirects")


def sso_login(
    server: KeycloakServer, alias: str, username: str, password: str = CORP_PASSWORD
) -> tuple[dict[str, object] | None, str]:
    """Log in to seller-portal through the corporate IdP (authorization code with PKCE).

    :returns: the token response (None when Keycloak refused) and the last page's text.
    """
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    query = urlencode(
        {
            "client_id": "seller-portal",
            "response_type": "code",
            "redirect_uri": CALLBACK,
            "scope": "openid",
            "state": secrets.token_hex(8),
            "code_challenge": challenge.decode(),
            "code_challenge_method": "S256",
            "kc_idp_hint": alias,
        }
    )
    browser = Browser()
    url, page = browser.follow(
        "GET", f"{server.url}/realms/{server.realm}/protocol/openid-connect/auth?{query}"
    )
    assert "/realms/corp-" in url, f"not sent to the corporate login: {url}"
    action = html.unescape(re.findall(r'<form[^>]*action="([^"]+)"', page.text)[0])
    url, page = browser.follow("POST", action, data={"username": username, "password": password})
    if not url.startswith(CALLBACK):
        return None, page.text
    code = parse_qs(urlsplit(url).query)["code"][0]
    token = requests.post(
        f"{server.url}/realms/{server.realm}/protocol/openid-connect/token",
        data={
            "grant_type": "authorization_code",
            "client_id": "seller-portal",
            "code": code,
            "redirect_uri": CALLBACK,
            "code_verifier": verifier,
        },
        timeout=15,
    )
    assert token.status_code == 200, token.text
    return token.json(), ""


def test_staff_log_in_through_their_corporate_idp_and_nobody_else_does(
    keycloak_server: KeycloakServer,
    idp: KeycloakIdentityProvider,
    connector: Connector,
    corp: Corp,
    sqlite_url: str,
    tmp_path: Path,
) -> None:
    # The seller and its staff, provisioned by SCIM (the use cases) and synced to Keycloak.
    with connector.uow() as uow:
        seller, _ = seller_cases.create_seller(
            uow,
            connector.catalogue,
            f"Corp Seller {corp.realm}",
            Plan.professional,
            f"owner@{corp.realm}.owner.example",
            "Olive Owner",
            ACTOR,
        )
        uow.commit()
    ann = _provision(connector, seller, f"ann@{corp.domain}", {"inventory": "edit"})
    bob = _provision(connector, seller, f"bob@{corp.domain}", {"orders": "view"})
    idp.sync_seller(seller)
    for user in (ann, bob):
        idp.sync_user(seller, user, [])
    # In the corporate realm: Ann, Bob, and Mallory whom SCIM never provisioned.
    for first, address in (("Ann", ann.user_name), ("Bob", bob.user_name)):
        _user(keycloak_server, corp.realm, address, first)
    mallory = f"mallory@{corp.domain}"
    _user(keycloak_server, corp.realm, mallory, "Mallory")

    # The operator links the seller (twice: the second run converges, creates nothing).
    env = {
        "SELLER_CONNECTOR_DATABASE_URL": sqlite_url,
        "SELLER_CONNECTOR_HOME": str(tmp_path),
        "SELLER_CONNECTOR_SECRET_KEY": "test-secret",
        "SELLER_CONNECTOR_KEYCLOAK_URL": keycloak_server.url,
        "SELLER_CONNECTOR_KEYCLOAK_ADMIN_USERNAME": keycloak_server.admin_user,
        "SELLER_CONNECTOR_KEYCLOAK_ADMIN_PASSWORD": keycloak_server.admin_password,
        "CORP_BROKER_SECRET": corp.client_secret,
    }
    args = [
        "sellers",
        "link-sso",
        seller.id,
        "--issuer",
        corp.issuer,
        "--client-id",
        corp.client_id,
        "--client-secret-env",
        "CORP_BROKER_SECRET",
        "--domain",
        corp.domain,
    ]
    results = []
    for _ in range(2):
        run = CliRunner().invoke(main, args, env=env, catch_exceptions=False)
        assert run.exit_code == 0, run.output
        results.append(json.loads(run.output))
    assert [r["created"] for r in results] == [True, False]
    alias = results[0]["alias"]
    assert alias == f"seller-{seller.id}-sso"
    assert results[0]["redirectUri"].endswith(f"/realms/sellers/broker/{alias}/endpoint")
    org = keycloak_server.admin_json("GET", f"organizations/{results[0]['organizationId']}")
    assert [d["name"] for d in org["domains"]] == [corp.domain]
    linked = keycloak_server.admin_json("GET", f"organizations/{org['id']}/identity-providers")
    assert [p["alias"] for p in linked] == [alias]
    assert linked[0]["config"]["kc.org.domain"] == corp.domain
    assert linked[0]["config"]["kc.org.broker.redirect.mode.email-matches"] == "true"
    assert linked[0]["firstBrokerLoginFlowAlias"] == "seller-sso-first-login"

    # Ann logs in with her corporate password and gets her seller permissions.
    tokens, page = sso_login(keycloak_server, alias, ann.user_name)
    assert tokens is not None, page[:2000]
    claim = claims(str(tokens["access_token"]))
    assert claim["seller"] == {
        "id": seller.id,
        "role": "secondary",
        "permissions": {"inventory": "edit"},
    }
    assert claim["email"] == ann.user_name
    ann_kc = keycloak_server.admin_json(
        "GET", "users", params={"email": ann.user_name, "exact": "true"}
    )
    assert len(ann_kc) == 1
    links = keycloak_server.admin_json("GET", f"users/{ann_kc[0]['id']}/federated-identity")
    assert [link["identityProvider"] for link in links] == [alias]

    # Mallory exists only in the corporate realm: no account is created for her.
    tokens, page = sso_login(keycloak_server, alias, mallory)
    assert tokens is None
    assert keycloak_server.admin_json("GET", "users", params={"email": mallory}) == []

    # Bob, deactivated by SCIM before his first corporate login, cannot log in.
    _deactivate(connector, idp, bob)
    tokens, page = sso_login(keycloak_server, alias, bob.user_name)
    assert tokens is None
    assert "disabled" in page.lower()

    # Ann, deactivated after she linked her corporate login, cannot log in any more either.
    _deactivate(connector, idp, ann)
    tokens, page = sso_login(keycloak_server, alias, ann.user_name)
    assert tokens is None
