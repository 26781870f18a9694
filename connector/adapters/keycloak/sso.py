"""Enterprise SSO: link a seller's organization to its corporate OpenID Connect provider.

:meth:`KeycloakSso.link` does, idempotently, in the realm of mappings/idp.yaml:

1. reads the corporate issuer's ``/.well-known/openid-configuration`` (endpoints, JWKS);
2. makes sure the first-broker-login flow :data:`FLOW_ALIAS` exists: its one step is the
   plugin's ``seller-sso-link-existing`` authenticator, which links the corporate login to the
   enabled user that SCIM or directory sync provisioned with the same email, for the same
   seller, in a linked domain, and **never creates an account**;
3. adds the domains to the seller's organization;
4. creates (or updates) the OIDC identity provider, linked to the organization, with
   "redirect when the email domain matches", PKCE, signature validation through the JWKS,
   ``trustEmail`` and ``syncMode=IMPORT`` (the connector's store, not the corporate IdP,
   stays the source of names and emails).

**Why an operator credential, not the connector's service account.** Linking changes how a
whole seller logs in: who holds ``manage-identity-providers`` can point a seller's logins at a
provider they control and so take over its accounts, and the flow needs ``manage-realm``. The
always-on SCIM service account keeps its four narrow roles (deploy/keycloak/README.md); this
rare, operator-initiated command runs with an administrator's credential given only to it:

=====================================================  ======================================
``SELLER_CONNECTOR_KEYCLOAK_URL``                       the Keycloak base URL (shared)
``SELLER_CONNECTOR_KEYCLOAK_REALM``                     default: mappings/idp.yaml's realm
``SELLER_CONNECTOR_KEYCLOAK_ADMIN_REALM``               where the operator logs in (``master``)
``SELLER_CONNECTOR_KEYCLOAK_ADMIN_CLIENT_ID``           default ``admin-cli``
``SELLER_CONNECTOR_KEYCLOAK_ADMIN_USERNAME``            with ``_ADMIN_PASSWORD`` (or ``_FILE``)
``SELLER_CONNECTOR_KEYCLOAK_ADMIN_CLIENT_SECRET``       or ``_FILE``: client credentials instead
=====================================================  ======================================

The least an operator account needs in the sellers realm: ``manage-identity-providers``,
``manage-organizations``, ``manage-realm`` (the flow) and ``view-realm``; ``realm-admin``
covers them. Nothing here logs a secret or a token.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from connector.adapters.keycloak.settings import ENV_PREFIX, KeycloakSettingsError
from connector.mappings import KeycloakNames, load_keycloak_names
from connector.ports.identity import IdentityProviderRejected, IdentityProviderUnavailable

FLOW_ALIAS = "seller-sso-first-login"
"""The first-broker-login flow that only links provisioned users."""
LINK_AUTHENTICATOR = "seller-sso-link-existing"
"""The plugin's authenticator (deploy/keycloak/plugin) that the flow runs."""
ANY_DOMAIN = "ANY"
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_ALIAS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def _seg(value: str) -> str:
    return quote(value, safe="")


def _env_secret(env: Mapping[str, str], name: str) -> str | None:
    path = env.get(name + "_FILE", "").strip()
    if path:
        try:
            return Path(path).read_text(encoding="utf-8").strip() or None
        except OSError as exc:
            raise KeycloakSettingsError(f"{name}_FILE={path}: cannot read it") from exc
    return env.get(name, "").strip() or None


@dataclass(frozen=True)
class OperatorCredentials:
    """An administrator's credential for the SSO commands (never the service account's)."""

    url: str
    realm: str
    auth_realm: str = "master"
    client_id: str = "admin-cli"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    client_secret: str | None = field(default=None, repr=False)
    timeout: float = 15.0
    verify: bool | str = True

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperatorCredentials:
        """Read ``SELLER_CONNECTOR_KEYCLOAK_URL``/``_REALM`` and ``_ADMIN_*`` (module docstring).

        :raises KeycloakSettingsError: naming the missing variable.
        """
        env = os.environ if environ is None else environ
        url = env.get(ENV_PREFIX + "URL", "").strip().rstrip("/")
        if not url:
            raise KeycloakSettingsError(f"{ENV_PREFIX}URL is not set: the Keycloak base URL")
        admin = ENV_PREFIX + "ADMIN_"
        username = env.get(admin + "USERNAME", "").strip() or None
        password = _env_secret(env, admin + "PASSWORD")
        client_secret = _env_secret(env, admin + "CLIENT_SECRET")
        if not (username and password) and not client_secret:
            raise KeycloakSettingsError(
                f"Linking SSO needs an operator credential: {admin}USERNAME and "
                f"{admin}PASSWORD[_FILE], or {admin}CLIENT_ID and {admin}CLIENT_SECRET[_FILE] "
                "(the seller-connector service account may not manage identity providers)"
            )
        return cls(
            url=url,
            realm=env.get(ENV_PREFIX + "REALM", "").strip() or load_keycloak_names().realm,
            auth_realm=env.get(admin + "REALM", "").strip() or "master",
            client_id=env.get(admin + "CLIENT_ID", "").strip() or "admin-cli",
            username=username if not client_secret else None,
            password=password if not client_secret else None,
            client_secret=client_secret,
            verify=env.get(ENV_PREFIX + "CA_BUNDLE", "").strip() or True,
        )


class OperatorApi:
    """The admin REST API of one realm as the operator; errors become the port's exceptions."""

    def __init__(self, credentials: OperatorCredentials, session: requests.Session | None = None):
        self.credentials = credentials
        self.http = session or requests.Session()
        self._token: str | None = None

    def _fetch_token(self) -> str:
        c = self.credentials
        data = {"client_id": c.client_id}
        if c.client_secret:
            data.update(grant_type="client_credentials", client_secret=c.client_secret)
        else:
            data.update(grant_type="password", username=c.username or "", password=c.password or "")
        url = f"{c.url}/realms/{_seg(c.auth_realm)}/protocol/openid-connect/token"
        try:
            response = self.http.post(url, data=data, timeout=c.timeout, verify=c.verify)
        except requests.RequestException as exc:
            raise IdentityProviderUnavailable(f"Cannot reach Keycloak at {c.url}") from exc
        if response.status_code != 200:
            raise IdentityProviderRejected(
                f"Keycloak refused the operator credential of {c.client_id!r} in realm "
                f"{c.auth_realm!r} ({response.status_code})"
            )
        return str(response.json()["access_token"])

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        ok: Sequence[int] = (200, 201, 204),
    ) -> requests.Response:
        """Call ``/admin/realms/{realm}/{path}``.

        :raises IdentityProviderRejected: on 4xx not in ``ok`` (with Keycloak's message).
        :raises IdentityProviderUnavailable: on connection errors, 429 and 5xx.
        """
        c = self.credentials
        url = f"{c.url}/admin/realms/{_seg(c.realm)}/{path.lstrip('/')}".rstrip("/")
        response: requests.Response | None = None
        for attempt in (0, 1):
            if self._token is None or attempt:
                self._token = self._fetch_token()
            try:
                response = self.http.request(
                    method,
                    url,
                    json=body,
                    headers={"Authorization": f"Bearer {self._token}"},
                    timeout=c.timeout,
                    verify=c.verify,
                )
            except requests.RequestException as exc:
                raise IdentityProviderUnavailable(
                    f"Cannot reach Keycloak ({method} {path})"
                ) from exc
            if response.status_code != 401:
                break
        assert response is not None
        if response.status_code in ok:
            return response
        try:
            payload = response.json()
            detail = payload.get("errorMessage") or payload.get("error") or ""
        except (ValueError, AttributeError):
            detail = response.text[:200]
        message = f"Keycloak answered {response.status_code} to {method} {path}: {detail}"
        if response.status_code == 429 or response.status_code >= 500:
            raise IdentityProviderUnavailable(message)
        raise IdentityProviderRejected(message)

    def get(self, path: str) -> Any:
        """GET and decode, or None on 404."""
        response = self.request("GET", path, ok=(200, 404))
        return None if response.status_code == 404 else response.json()


@dataclass
class SsoLinkResult:
    """What :meth:`KeycloakSso.link` set up."""

    alias: str
    organization_id: str
    domains: list[str]
    flow_alias: str
    created: bool
    redirect_uri: str
    """The broker endpoint to register as a redirect URI at the corporate identity provider."""

    def as_dict(self) -> dict[str, Any]:
        """For the command's JSON output."""
        return {
            "alias": self.alias,
            "organizationId": self.organization_id,
            "domains": self.domains,
            "firstBrokerLoginFlow": self.flow_alias,
            "created": self.created,
            "redirectUri": self.redirect_uri,
        }


def normalize_domains(domains: Sequence[str]) -> list[str]:
    """Lower-cased, de-duplicated domains, each checked.

    :raises IdentityProviderRejected: on a value that is not a domain name.
    """
    cleaned: list[str] = []
    for value in domains:
        domain = value.strip().lower().lstrip("@")
        if not _DOMAIN.match(domain):
            raise IdentityProviderRejected(f"{value!r} is not a domain name")
        if domain not in cleaned:
            cleaned.append(domain)
    return cleaned


class KeycloakSso:
    """Links sellers' organizations to corporate identity providers (module docstring)."""

    def __init__(
        self,
        api: OperatorApi,
        names: KeycloakNames | None = None,
        http: requests.Session | None = None,
    ) -> None:
        self.api = api
        self.names = names or load_keycloak_names()
        self.http = http or api.http

    def discover(self, issuer: str) -> dict[str, Any]:
        """The issuer's OpenID configuration; its ``issuer`` must be the one given.

        :raises IdentityProviderRejected: when it cannot be read or does not match.
        """
        issuer = issuer.rstrip("/")
        url = f"{issuer}/.well-known/openid-configuration"
        try:
            response = self.http.get(url, timeout=self.api.credentials.timeout)
            config = response.json() if response.status_code == 200 else None
        except (requests.RequestException, ValueError) as exc:
            raise IdentityProviderRejected(f"Cannot read {url}: {exc.__class__.__name__}") from exc
        if not isinstance(config, dict):
            raise IdentityProviderRejected(f"{url} answered {response.status_code}")
        if str(config.get("issuer", "")).rstrip("/") != issuer:
            raise IdentityProviderRejected(
                f"{url} names issuer {config.get('issuer')!r}, not {issuer!r}"
            )
        for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not config.get(key):
                raise IdentityProviderRejected(f"{url} has no {key}")
        return config

    def ensure_flow(self) -> str:
        """Create the link-only first-broker-login flow when it is missing; return its alias.

        :raises IdentityProviderRejected: when the plugin's authenticator is not installed.
        """
        flows = self.api.get("authentication/flows") or []
        if any(f.get("alias") == FLOW_ALIAS for f in flows):
            return FLOW_ALIAS
        providers = self.api.get("authentication/authenticator-providers") or []
        if not any(p.get("id") == LINK_AUTHENTICATOR for p in providers):
            raise IdentityProviderRejected(
                f"Keycloak has no {LINK_AUTHENTICATOR!r} authenticator: install the "
                "seller-connector plugin (deploy/keycloak/plugin) into Keycloak first"
            )
        self.api.request(
            "POST",
            "authentication/flows",
            body={
                "alias": FLOW_ALIAS,
                "description": "seller-connector: link a corporate login to the user SCIM "
                "provisioned with the same email; never create an account",
                "providerId": "basic-flow",
                "topLevel": True,
                "builtIn": False,
            },
            ok=(201, 409),
        )
        flow = _seg(FLOW_ALIAS)
        self.api.request(
            "POST",
            f"authentication/flows/{flow}/executions/execution",
            body={"provider": LINK_AUTHENTICATOR},
            ok=(201,),
        )
        for execution in self.api.get(f"authentication/flows/{flow}/executions") or []:
            if execution.get("providerId") == LINK_AUTHENTICATOR:
                execution["requirement"] = "REQUIRED"
                self.api.request("PUT", f"authentication/flows/{flow}/executions", body=execution)
        return FLOW_ALIAS

    def _organization(self, seller_id: str) -> dict[str, Any]:
        attribute = self.names.attributes["seller_id"]
        found = self.api.get(
            f"organizations?q={quote(f'{attribute}:{seller_id}')}&briefRepresentation=false"
        )
        matches = [
            o for o in found or [] if (o.get("attributes") or {}).get(attribute) == [seller_id]
        ]
        if not matches:
            raise IdentityProviderRejected(
                f"Seller {seller_id} has no organization in Keycloak yet: let the connector sync "
                "the seller first (its outbox worker does)"
            )
        return dict(matches[0])

    def link(
        self,
        seller_id: str,
        *,
        issuer: str,
        client_id: str,
        client_secret: str,
        domains: Sequence[str],
        alias: str | None = None,
        display_name: str | None = None,
    ) -> SsoLinkResult:
        """Link the seller's organization to the corporate OIDC provider (module docstring).

        :raises IdentityProviderRejected: on a bad issuer, domain, alias, or a refusal.
        :raises IdentityProviderUnavailable: when Keycloak cannot be reached.
        """
        wanted = normalize_domains(domains)
        if not wanted:
            raise IdentityProviderRejected("Give at least one --domain: the seller's email domain")
        alias = alias or f"{self.names.organization_alias.format(seller_id=seller_id)}-sso"
        if not _ALIAS.match(alias):
            raise IdentityProviderRejected(f"{alias!r} cannot be an identity provider alias")
        config = self.discover(issuer)
        flow = self.ensure_flow()
        org = self._organization(seller_id)
        org_id = str(org["id"])
        self._add_domains(org, wanted)

        path = f"identity-provider/instances/{_seg(alias)}"
        existing = self.api.get(path)
        if existing is not None and existing.get("organizationId") not in (None, org_id):
            raise IdentityProviderRejected(
                f"Identity provider {alias!r} belongs to another organization"
            )
        rep = _provider(
            existing,
            alias=alias,
            display_name=display_name or f"{org.get('name', seller_id)} corporate login",
            flow=flow,
            discovered=config,
            client_id=client_id,
            client_secret=client_secret,
        )
        if existing is None:
            self.api.request("POST", "identity-provider/instances", body=rep, ok=(201,))
        else:
            self.api.request("PUT", path, body=rep)
        self._attach(org_id, alias, path, rep, client_secret, wanted)
        c = self.api.credentials
        return SsoLinkResult(
            alias=alias,
            organization_id=org_id,
            domains=wanted,
            flow_alias=flow,
            created=existing is None,
            redirect_uri=f"{c.url}/realms/{_seg(c.realm)}/broker/{_seg(alias)}/endpoint",
        )

    def _add_domains(self, org: dict[str, Any], wanted: list[str]) -> None:
        """Give the organization the seller's email domains it lacks."""
        current = {str(d.get("name", "")).lower() for d in org.get("domains") or []}
        missing = [d for d in wanted if d not in current]
        if missing:
            org["domains"] = [*(org.get("domains") or []), *({"name": d} for d in missing)]
            self.api.request("PUT", f"organizations/{org['id']}", body=org)

    def _attach(
        self,
        org_id: str,
        alias: str,
        path: str,
        rep: dict[str, Any],
        client_secret: str,
        wanted: list[str],
    ) -> None:
        """Link the provider to the organization, then route the seller's domains to it.

        The domain is set only once linked: Keycloak checks it against the organization's
        domains then. ANY stands for every domain of the organization.
        """
        self.api.request(
            "POST",
            f"organizations/{org_id}/identity-providers",
            body=alias,
            ok=(204, 201, 409),
        )
        linked = self.api.get(path) or rep
        linked["config"] = {
            **(linked.get("config") or {}),
            "clientSecret": client_secret,
            "kc.org.domain": wanted[0] if len(wanted) == 1 else ANY_DOMAIN,
            "kc.org.broker.redirect.mode.email-matches": "true",
        }
        self.api.request("PUT", path, body=linked)


def _provider(
    existing: dict[str, Any] | None,
    *,
    alias: str,
    display_name: str,
    flow: str,
    discovered: dict[str, Any],
    client_id: str,
    client_secret: str,
) -> dict[str, Any]:
    """The OIDC identity provider's representation: the existing one, brought up to date."""
    rep: dict[str, Any] = dict(existing or {})
    rep.update(
        {
            "alias": alias,
            "displayName": display_name,
            "providerId": "oidc",
            "enabled": True,
            "trustEmail": True,
            "storeToken": False,
            "linkOnly": False,
            "hideOnLogin": True,
            "firstBrokerLoginFlowAlias": flow,
        }
    )
    rep["config"] = {
        **(rep.get("config") or {}),
        "issuer": str(discovered["issuer"]),
        "authorizationUrl": str(discovered["authorization_endpoint"]),
        "tokenUrl": str(discovered["token_endpoint"]),
        "jwksUrl": str(discovered["jwks_uri"]),
        "userInfoUrl": str(discovered.get("userinfo_endpoint") or ""),
        "logoutUrl": str(discovered.get("end_session_endpoint") or ""),
        "useJwksUrl": "true",
        "validateSignature": "true",
        "clientId": client_id,
        "clientSecret": client_secret,
        "clientAuthMethod": "client_secret_post",
        "defaultScope": "openid email profile",
        "pkceEnabled": "true",
        "pkceMethod": "S256",
        "syncMode": "IMPORT",
    }
    rep["config"].pop("kc.org.domain", None)  # set by _attach, once linked
    return rep


def describe(result: SsoLinkResult) -> str:
    """The command's JSON output."""
    return json.dumps(result.as_dict(), indent=2)
