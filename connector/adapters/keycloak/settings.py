"""Where the Keycloak adapter finds Keycloak and the seller-connector client's credentials."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from connector.mappings import load_keycloak_names
from connector.settings import ConfigurationError

ENV_PREFIX = "SELLER_CONNECTOR_KEYCLOAK_"


class KeycloakSettingsError(ConfigurationError, ValueError):
    """The environment does not say enough to reach Keycloak."""


@dataclass(frozen=True)
class KeycloakSettings:
    """How to reach the realm as the ``seller-connector`` service account.

    The secret is kept out of ``repr()`` so that it never lands in a log line or a traceback.
    """

    url: str
    realm: str
    client_id: str
    client_secret: str = field(repr=False)
    timeout: float = 10.0
    verify: bool | str = True
    max_workers: int = 4
    """How many users the admin-API path (no plugin) syncs at once: Keycloak is slow per
    object, and a 2-core Keycloak saturates at a handful of concurrent admin calls."""
    bulk_endpoint: bool = True
    """Use the plugin's bulk endpoint (``/realms/{realm}/seller-connector/users``) when the
    Keycloak has it; False forces the admin-API path."""
    bulk_chunk: int = 50
    """Users per request to the plugin's bulk endpoint."""
    bulk_parallel: int = 4
    """Requests to the plugin's bulk endpoint in flight at once."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> KeycloakSettings:
        """Read ``SELLER_CONNECTOR_KEYCLOAK_*``.

        ``_URL`` (required), ``_REALM`` (default: the realm of mappings/idp.yaml),
        ``_CLIENT_ID`` (default ``seller-connector``), ``_CLIENT_SECRET`` or
        ``_CLIENT_SECRET_FILE`` (one is required; the file wins, as mounted secrets do),
        ``_TIMEOUT`` (seconds, default 10), ``_CA_BUNDLE`` (a CA file for TLS),
        ``_MAX_WORKERS`` (default 4), ``_BULK_ENDPOINT`` (``auto``, the default, or ``off``),
        ``_BULK_CHUNK`` (default 50) and ``_BULK_PARALLEL`` (default 4).

        :raises KeycloakSettingsError: naming the missing or wrong variable.
        """
        env = os.environ if environ is None else environ

        def get(name: str, default: str | None = None) -> str | None:
            value = env.get(ENV_PREFIX + name, "").strip()
            return value or default

        url = get("URL")
        if not url:
            raise KeycloakSettingsError(
                f"{ENV_PREFIX}URL is not set: give the base URL of Keycloak, "
                "e.g. http://127.0.0.1:8180"
            )
        secret_file = get("CLIENT_SECRET_FILE")
        if secret_file:
            try:
                secret = Path(secret_file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise KeycloakSettingsError(
                    f"{ENV_PREFIX}CLIENT_SECRET_FILE={secret_file}: cannot read it ({exc.strerror})"
                ) from exc
        else:
            secret = get("CLIENT_SECRET") or ""
        if not secret:
            raise KeycloakSettingsError(
                f"Neither {ENV_PREFIX}CLIENT_SECRET nor {ENV_PREFIX}CLIENT_SECRET_FILE is set: "
                "the seller-connector client needs its secret"
            )
        try:
            timeout = float(get("TIMEOUT", "10") or "10")
            max_workers = int(get("MAX_WORKERS", "4") or "4")
            bulk_chunk = int(get("BULK_CHUNK", "50") or "50")
            bulk_parallel = int(get("BULK_PARALLEL", "4") or "4")
        except ValueError as exc:
            raise KeycloakSettingsError(
                f"{ENV_PREFIX}TIMEOUT, _MAX_WORKERS, _BULK_CHUNK or _BULK_PARALLEL is not a number"
            ) from exc
        endpoint = (get("BULK_ENDPOINT", "auto") or "auto").lower()
        if endpoint not in ("auto", "off"):
            raise KeycloakSettingsError(f"{ENV_PREFIX}BULK_ENDPOINT must be auto or off")
        return cls(
            url=url.rstrip("/"),
            realm=get("REALM") or load_keycloak_names().realm,
            client_id=get("CLIENT_ID", "seller-connector") or "seller-connector",
            client_secret=secret,
            timeout=timeout,
            verify=get("CA_BUNDLE") or True,
            max_workers=max(1, max_workers),
            bulk_endpoint=endpoint == "auto",
            bulk_chunk=max(1, bulk_chunk),
            bulk_parallel=max(1, bulk_parallel),
        )
